"""Imbalanced training subsets, stratified validation splits and the fixed test split.

:func:`make_splits` turns a (usually balanced) :class:`~cegeo.data.Dataset` into the arrays a
run trains, selects and evaluates on, in this order:

1. **Test split** — a source with its own test set keeps it untouched. A source without one
   (``digits``, a CSV without ``test=``) gets a *fixed* stratified split: per class, the samples are
   permuted with ``numpy.random.default_rng(0)`` (independent of ``seed``) and the first
   ``round(test_fraction * n_c)`` (at least 1, leaving at least 1) go to test. Every run on
   that source, whatever its seed or imbalance, is therefore evaluated on the same test set.
2. **Imbalanced subset** — the profile's counts (``Profile.counts_for(k, n_max)``) are drawn from
   the remaining training pool: per class, the pool is permuted with
   ``numpy.random.default_rng(seed)`` and the first ``counts[c]`` samples are kept. The subset
   follows the profile *exactly*; for one seed the subsets are nested (a larger ratio R keeps a
   subset of a smaller one's minority samples). ``n_max`` defaults to the largest value every
   class can supply. ``imbalance="none"`` keeps the pool as it is (capped at ``n_max`` per class
   if given), so naturally imbalanced data stay as they are.
3. **Validation split** — stratified from the imbalanced subset: ``round(val_fraction * n_c)``
   samples of each class, at least 1, and at least 1 left for training (else an error naming
   the class). The loss gets the counts of what is left (``Splits.class_counts``).

Sample order inside each split follows the source's order (the trainer shuffles).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import SEED_MAX, InputError, check_fraction, check_int, fail
from ._dataset import Dataset
from .imbalance import Groups, Profile, groups, parse_profile

__all__ = ["TEST_SPLIT_SEED", "Splits", "make_splits"]

#: Seed of the fixed test split for sources without a test set (documented; never the run seed).
TEST_SPLIT_SEED = 0


@dataclass(frozen=True, eq=False)
class Splits:
    """Train/validation/test arrays of one run, with the counts and groups the loss and metrics use.

    Attributes
    ----------
    x_train, y_train, x_val, y_val, x_test, y_test : numpy.ndarray
        Layout as in :class:`~cegeo.data.Dataset`; none is ``None``.
    class_counts : numpy.ndarray of shape (k,), int64
        Per-class counts of the final training split (what the loss is built with).
    groups : Groups
        Majority/minority (or many/medium/few) classes of the imbalance profile.
    num_classes : int
    kind : str
        ``"image"`` or ``"tabular"``.
    profile : str
        The imbalance profile, e.g. ``"step:R=10,rho=0.5"``.
    dataset : str
        The source spec.
    subset_counts : numpy.ndarray of shape (k,), int64
        Counts of the imbalanced subset before the validation split (they follow the profile
        exactly).
    n_max : int
        The largest class size the profile was instantiated with.
    seed : int
    train_index, val_index, test_index : numpy.ndarray
        Positions of each split's samples in the source's training set (``test_index`` is into
        the source's test set when it has one, else into its training set).
    class_names : tuple of str
        The source's class names.
    """

    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    class_counts: np.ndarray
    groups: Groups
    num_classes: int
    kind: str
    profile: str
    dataset: str
    subset_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    n_max: int = 0
    seed: int = 0
    train_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    val_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    test_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Splits made in code (a trainer given arrays already in memory) are checked like the
        # ones make_splits builds: labels in 0..k-1, counts that are the training labels' own.
        k = check_int("num_classes", self.num_classes, minimum=2)
        for name in ("train", "val", "test"):
            x, y = getattr(self, f"x_{name}"), getattr(self, f"y_{name}")
            if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
                raise fail(f"x_{name}/y_{name}", "numpy arrays", f"{type(x).__name__}/{type(y).__name__}")
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or x.shape[0] != y.shape[0]:
                raise fail(f"y_{name}", f"a 1-D integer array of one label per row of x_{name}", y.shape)
            if y.size and (y.min() < 0 or y.max() >= k):
                raise fail(f"y_{name}", f"labels in 0..{k - 1}", int(y.min() if y.min() < 0 else y.max()))
        counts = np.bincount(self.y_train, minlength=k)
        if np.shape(self.class_counts) != (k,) or not np.array_equal(self.class_counts, counts):
            raise fail(
                "class_counts",
                f"the training labels' counts {counts.tolist()}",
                np.asarray(self.class_counts).tolist(),
            )
        if not isinstance(self.groups, Groups) or len(self.groups.labels) != k:
            raise fail("groups", f"a Groups labelling the {k} classes", self.groups)

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(C, H, W)`` or ``(d,)``."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    def fingerprint(self) -> str:
        """A digest of every split's samples and labels (their bytes, dtypes and shapes).

        The same data give the same digest wherever they were read from (a moved file, another
        path) and whatever the labels' integer type or the arrays' byte order and memory layout;
        any other sample, label, order or split gives another. A checkpoint records it, so
        that a resumed run refuses data that changed under it.

        Examples
        --------
        >>> from cegeo.data import load_dataset, make_splits
        >>> ds = load_dataset("gaussian", k=4, d=2, n_per_class=40, n_test_per_class=5)
        >>> a, b = (make_splits(ds, "step:R=2,rho=0.5", seed=0) for _ in range(2))
        >>> a.fingerprint() == b.fingerprint(), len(a.fingerprint())
        (True, 32)
        >>> import dataclasses
        >>> y = a.y_test.copy()
        >>> y[0] = (y[0] + 1) % 4  # one test label
        >>> dataclasses.replace(a, y_test=y).fingerprint() == a.fingerprint()
        False
        >>> make_splits(ds, "step:R=2,rho=0.5", seed=1).fingerprint() == a.fingerprint()  # another subset
        False
        """
        h = hashlib.blake2b(digest_size=16)
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            a = getattr(self, name)
            # As the trainer reads them: labels as int64 (splits made in code may hold int32 or
            # big-endian ones), and samples in one byte order, so the same values hash alike.
            a = a.astype("<i8" if name[0] == "y" else a.dtype.newbyteorder("<"), copy=False)
            a = np.ascontiguousarray(a)
            h.update(f"{name} {a.dtype.str} {a.shape};".encode())
            h.update(a.reshape(-1).view(np.uint8) if a.size else b"")
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: sizes and per-class counts of every split, groups, profile."""
        k = self.num_classes
        return {
            "dataset": self.dataset,
            "profile": self.profile,
            "seed": self.seed,
            "n_max": self.n_max,
            "num_classes": k,
            "subset_counts": self.subset_counts.tolist(),
            "train_counts": self.class_counts.tolist(),
            "val_counts": np.bincount(self.y_val, minlength=k).tolist(),
            "test_counts": np.bincount(self.y_test, minlength=k).tolist(),
            "groups": self.groups.as_dict(),
        }


def _stratified_take(
    y: np.ndarray, take: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per class c, a random ``take[c]`` of its positions in ``y`` vs the rest (both sorted)."""
    chosen, rest = [], []
    # A stable sort groups positions by class, each group ascending (= np.flatnonzero(y == c)),
    # in O(n log n) rather than O(n k).
    order = np.argsort(y, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(y, minlength=take.size))])
    for c in range(take.size):
        idx = order[bounds[c] : bounds[c + 1]]
        perm = idx[rng.permutation(idx.size)]
        chosen.append(perm[: take[c]])
        rest.append(perm[take[c] :])
    return np.sort(np.concatenate(chosen)), np.sort(np.concatenate(rest))


def _split_rule(counts: np.ndarray, fraction: float) -> np.ndarray:
    """``round(fraction * n_c)`` per class, at least 1 and at most ``n_c - 1`` (counts >= 2)."""
    sizes = np.clip(np.floor(fraction * counts + 0.5).astype(np.int64), 1, None)
    return np.minimum(sizes, counts - 1)


def _split_sizes(counts: np.ndarray, fraction: float, what: str, param: str) -> np.ndarray:
    """:func:`_split_rule`, with an error naming the first class of fewer than 2 samples."""
    small = np.flatnonzero(counts < 2)
    if small.size:
        c = int(small[0])
        raise InputError(
            f"class {c} has {int(counts[c])} sample(s), too few for a {what} split (`{param}` needs at "
            "least 2 per class: one for each side)."
        )
    return _split_rule(counts, fraction)


def _largest_n_max(profile: Profile, available: np.ndarray) -> int:
    """The largest ``n_max`` whose profile counts every class can supply (binary search)."""
    k = available.size
    # Structural errors (rho * k not whole, ...) surface here; below, only "n too small" is caught.
    profile.counts_for(k, max(int(available.max()), 1) * max(int(np.ceil(profile.R)), 1))

    def fits(n: int) -> bool:
        try:
            with warnings.catch_warnings():  # a trial n's rounded ratio is not the user's business
                warnings.simplefilter("ignore", UserWarning)
                return bool(np.all(profile.counts_for(k, n) <= available))
        except InputError:  # n too small for the ratio (n_min < 1): asks for nothing unavailable
            return True

    # fits() is True up to the largest n the data can supply and False beyond: binary search.
    lo, hi = 0, int(available.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            profile.counts_for(k, lo)
        usable = lo > 0
    except InputError:  # even the largest n leaves the rarest class empty
        usable = False
    if not usable:
        raise fail(
            "imbalance",
            f"a profile the training data can supply (available per class: {available.tolist()})",
            profile.describe(),
        )
    return lo


def make_splits(
    dataset: Dataset,
    imbalance: str | Profile = "none",
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    n_max: int | None = None,
    test_fraction: float = 0.3,
) -> Splits:
    """Draw the imbalanced training subset and the validation/test splits of one run.

    See the module docstring for the exact procedure (fixed test split, seeded per-class draw,
    stratified validation split).

    Parameters
    ----------
    dataset : Dataset
    imbalance : str or Profile
        ``"step:R=10,rho=0.5"``, ``"longtail:R=100"``, ``"counts:500,50,..."`` or ``"none"``
        (R = n_max/n_min >= 1; in STEP profiles classes 0..k_maj-1 are the majorities).
    val_fraction : float in (0, 1)
        Share of each class of the imbalanced subset held out for validation (at least one
        sample per class).
    seed : int
        Seeds the subset and validation draws (not the fixed test split).
    n_max : int, optional
        Size of the largest class. Default: the largest size every class can supply under the
        profile. Ignored by ``counts:`` profiles.
    test_fraction : float in (0, 1)
        Share of each class held out as the fixed test set when the source has none.

    Returns
    -------
    Splits

    Raises
    ------
    ValueError
        Bad fractions or seed; a profile whose class count differs from the dataset's; counts
        larger than a class can supply (naming the class); a class too small to give a
        validation (or test) sample.

    Examples
    --------
    >>> from cegeo.data import load_dataset
    >>> s = make_splits(load_dataset("digits"), "step:R=10,rho=0.5", seed=0)
    >>> s.subset_counts.tolist()
    [124, 124, 124, 124, 124, 12, 12, 12, 12, 12]
    >>> s.class_counts.tolist(), s.groups.minority.tolist()
    ([112, 112, 112, 112, 112, 11, 11, 11, 11, 11], [5, 6, 7, 8, 9])
    >>> len(s.y_test)  # the fixed digits test split: 30% of each class
    539
    """
    if not isinstance(dataset, Dataset):
        raise fail("dataset", "a cegeo.data.Dataset (see load_dataset)", type(dataset).__name__)
    profile = imbalance if isinstance(imbalance, Profile) else parse_profile(imbalance)
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    seed = check_int("seed", seed, minimum=0, maximum=SEED_MAX)
    k = dataset.num_classes

    # 1. Test: as given, or the fixed stratified split (seed-independent).
    pool = np.arange(dataset.y_train.size)
    if dataset.x_test is not None:
        x_test, y_test = dataset.x_test, dataset.y_test
        test_index = np.arange(y_test.size)
    else:
        sizes = _split_sizes(dataset.train_counts(), test_fraction, "test", "test_fraction")
        test_index, pool = _stratified_take(dataset.y_train, sizes, np.random.default_rng(TEST_SPLIT_SEED))
        x_test, y_test = dataset.x_train[test_index], dataset.y_train[test_index]
    y_pool = dataset.y_train[pool]
    available = np.bincount(y_pool, minlength=k).astype(np.int64)

    # 2. The imbalanced subset, following the profile exactly.
    if profile.kind == "counts" and len(profile.counts) != k:
        raise fail("imbalance", f"{k} counts (one per class of {dataset.name})", list(profile.counts))
    if n_max is not None:
        n_max = check_int("n_max", n_max, minimum=1)
    if profile.kind == "none":
        counts = available if n_max is None else np.minimum(available, n_max)
    else:
        natural = float(available.max() / max(available.min(), 1))
        if profile.kind in ("step", "longtail") and natural > 3:
            warnings.warn(
                f"{dataset.name} is already imbalanced (R = {natural:.3g}); the {profile.kind} profile "
                "sizes classes by index (class 0 largest), not by their own frequencies: "
                "--imbalance none keeps those.",
                UserWarning,
                stacklevel=2,
            )
        if n_max is None:
            n_max = int(available.max()) if profile.kind == "counts" else _largest_n_max(profile, available)
        counts = profile.counts_for(k, n_max)
    short = np.flatnonzero(counts > available)
    if short.size:
        c = int(short[0])
        raise fail(
            "imbalance",
            f"counts the training data can supply (class {c} has {int(available[c])} samples"
            + (" after the fixed test split" if dataset.x_test is None else "")
            + ")",
            f"{profile.describe()} asks for {int(counts[c])}",
        )
    rng = np.random.default_rng(seed)
    chosen_pos, _ = _stratified_take(y_pool, counts, rng)
    subset = pool[chosen_pos]  # positions in dataset.x_train

    # 3. Stratified validation split from the imbalanced subset.
    y_subset = dataset.y_train[subset]
    val_sizes = _split_sizes(counts, val_fraction, "validation", "val_fraction")
    val_pos, train_pos = _stratified_take(y_subset, val_sizes, rng)
    train_index, val_index = subset[train_pos], subset[val_pos]

    class_counts = np.bincount(dataset.y_train[train_index], minlength=k).astype(np.int64)
    group_of = profile.groups_for(counts) if profile.kind != "none" else groups(counts)
    return Splits(
        x_train=dataset.x_train[train_index],
        y_train=dataset.y_train[train_index],
        x_val=dataset.x_train[val_index],
        y_val=dataset.y_train[val_index],
        x_test=x_test,
        y_test=y_test,
        class_counts=class_counts,
        groups=group_of,
        num_classes=k,
        kind=dataset.kind,
        profile=profile.describe(),
        dataset=dataset.name,
        subset_counts=counts.astype(np.int64),
        n_max=int(counts.max()),
        seed=seed,
        train_index=train_index,
        val_index=val_index,
        test_index=test_index,
        class_names=dataset.class_names,
    )
