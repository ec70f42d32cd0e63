"""Post-hoc rebalancers: corrections fitted on validation outputs, applied to test (THEORY.md §7).

A trained classifier's logits ``z = W h`` (bias-free head, DESIGN.md) favour the majority classes.
Each rebalancer here is a cheap correction chosen on the **validation** split and applied to any
split; test data are for evaluation only, and the run-folder API refuses to fit on them.

Methods (registry: :func:`create_rebalancer`, :func:`list_rebalancers`):

=================  ==========================================================================
``posthoc_la``     ``z_c - tau log pi_c`` (Menon et al. 2021); tau chosen on validation.
``tau_norm``       ``w_c <- w_c / ||w_c||^tau`` (Kang et al. 2020); tau chosen on validation.
``geometry``       ``w_c <- w_c / ||w_c*||^beta`` with ``||w_c*||`` the classifier norm
                   :func:`cegeo.theory.predict` gives for the training loss and the class
                   counts (loss weights and samplers drop out of the limit, THEORY.md §4,
                   and are ignored); beta = 1, no tuning.
``geometry_tuned`` the same with beta chosen on validation.
``lws``            learnable weight scaling ``z_c <- s_c z_c``: s minimises the class-balanced
                   CE on validation (a smooth convex problem, L-BFGS-B).
``operating_point`` for a normal class N: predict N iff ``p_N >= t``, else the argmax among the
                   other classes; t maximises the non-normal classes' mean recall subject to a
                   false-alarm rate ``<= max_false_alarm`` on validation.
=================  ==========================================================================

Symbols: ``pi_c = n_c / n`` the training prior from the class counts, ``w_c`` row c of the
classifier ``W`` (k, d). Because the head is bias-free, rescaling ``w_c`` by ``s_c`` is the same as
rescaling logit c by ``s_c`` (``<s_c w_c, h> = s_c z_c``), so every classifier-side method is
applied to logits; the run folder's ``features`` and ``W`` are checked against its logits before
a classifier-side method trusts that identity.

Estimators follow scikit-learn: ``__init__`` only stores its arguments, ``fit`` validates and
returns ``self``, learned state ends in ``_``, and using an unfitted rebalancer raises
:class:`sklearn.exceptions.NotFittedError`. Every ``fit`` takes
``fit(X, y=None, class_counts=None, *, metric="balanced_accuracy")`` where ``X`` is a (n, k)
logit array or a :class:`RunSplit` from :class:`RunFolder` (labels, counts, classifier and the
training loss then come from the run). ``metric`` (one of :data:`SELECTION_METRICS`) selects the
hyperparameter; ties resolve to the smallest correction (smallest ``|tau|`` / ``|beta|``).

The test-data guard tracks provenance, not contents: :class:`RunFolder` hands out the test
split's ``logits`` and ``features`` as a marked array type, and every ``fit`` refuses a
:class:`RunSplit` named ``"test"`` and any marked array. Views, slices, fancy indexing, copies,
``astype`` casts (float16 included), arithmetic and numpy functions such as ``np.concatenate``
(validation rows with a few test rows appended) keep the mark; validation rows that merely equal
test rows (discrete inputs, a dead network's all-zero logits) are not refused, and nothing about
the test rows is kept in memory. ``np.asarray`` and ``np.array`` return plain arrays: the guard
stops mistakes, not someone stripping the mark or reading the ``.npz`` file by hand.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy import optimize
from scipy.special import logsumexp
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from . import metrics as _metrics
from ._io import read_json
from ._registry import Registry
from ._validation import InputError, check_class_counts, check_finite, check_fraction, check_int, fail
from .data._dataset import class_index
from .data.imbalance import Groups
from .data.imbalance import groups as make_groups

__all__ = [
    "LWS",
    "SELECTION_METRICS",
    "GeometryRebalancer",
    "GeometryTuned",
    "OperatingPoint",
    "PosthocLA",
    "Rebalancer",
    "RebalancerInfo",
    "RunFolder",
    "RunSplit",
    "TauNorm",
    "create_rebalancer",
    "evaluate_split",
    "get_rebalancer_info",
    "list_rebalancers",
    "parse_methods",
    "run_posthoc",
    "selection_score",
]

# ----------------------------------------------------------------------------- selection metrics

#: Metrics a rebalancer can be tuned for (all higher-is-better, from :mod:`cegeo.metrics`).
SELECTION_METRICS: dict[str, Callable[..., float]] = {
    "balanced_accuracy": _metrics.balanced_accuracy_score,
    "macro_f1": _metrics.macro_f1_score,
    "worst_class_recall": _metrics.worst_class_recall_score,
    "g_mean": _metrics.geometric_mean_score,
}


def _grid(start: float, stop: float, num: int) -> tuple[float, ...]:
    """An inclusive grid with clean decimal values (0.95, not 0.9500000000000002)."""
    return tuple(float(v) for v in np.round(np.linspace(start, stop, num), 10))


# Two grid scores closer than this are a tie (resolved to the smallest correction).
_TIE = 1e-12


def _check_metric(metric: Any) -> str:
    if not isinstance(metric, str) or metric not in SELECTION_METRICS:
        raise fail("metric", "one of " + ", ".join(repr(m) for m in SELECTION_METRICS), metric)
    return metric


def selection_score(metric: str, y_true: Any, y_pred: Any, num_classes: int) -> float:
    """The selection metric ``metric`` of predictions (higher is better).

    Examples
    --------
    >>> selection_score("balanced_accuracy", [0, 0, 0, 1], [0, 0, 1, 1], 2)
    0.8333333333333333
    >>> selection_score("accuracy", [0], [0], 1)
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `metric` must be one of 'balanced_accuracy', 'macro_f1', 'worst_class_recall', 'g_mean'; got 'accuracy'.
    """
    return float(SELECTION_METRICS[_check_metric(metric)](y_true, y_pred, num_classes))


# ------------------------------------------------------------------------------------ run folders


class _TestSplitArray(np.ndarray):
    """An array read from a run's test split, or computed from one: the guard's provenance mark.

    The mark is the type, so it travels with the array and nothing is kept anywhere else. numpy
    keeps a subclass through views, slices, fancy indexing, ``copy``, ``astype`` and ufuncs
    (arithmetic, rounding, ``@``); ``__array_function__`` below extends that to numpy functions
    (``np.concatenate`` of validation and test rows is marked). ``np.asarray``/``np.array``,
    ``.view(np.ndarray)``, ``.tolist()`` and conversions to other libraries (torch, pandas) drop
    it: the guard stops mistakes, not intent. The mark belongs to the whole array, so what is
    computed from a test array (``np.zeros_like`` included) is marked too. ``source`` is the
    run folder it was read from (kept through pickling).
    """

    source: str | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self.source = getattr(obj, "source", None)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        out = super().__array_function__(func, types, args, kwargs)
        if isinstance(out, np.ndarray) and not isinstance(out, _TestSplitArray) and out.ndim > 0:
            out = _mark_test(out, self.source)
        return out

    def __array_wrap__(self, arr: Any, context: Any = None, return_scalar: bool = False) -> Any:
        # A reduction to one number gives a plain scalar, not a marked 0-d array:
        # ``run.test.logits.max()`` prints as a number and serialises to JSON. numpy >= 2 asks
        # with return_scalar; numpy 1.x does not, so a 0-d result is unwrapped as well.
        if return_scalar or np.ndim(arr) == 0:
            return np.asarray(arr)[()]
        return super().__array_wrap__(arr, context)

    def __reduce__(self) -> tuple[Any, ...]:
        # ndarray's pickle state has no room for ``source``: carry it beside.
        constructor, args, state = super().__reduce__()  # type: ignore[misc]
        return constructor, args, (state, self.source)

    def __setstate__(self, state: Any) -> None:
        array_state, self.source = state
        super().__setstate__(array_state)


def _mark_test(a: np.ndarray | None, source: str | None) -> np.ndarray | None:
    if a is None:
        return None
    out = a.view(_TestSplitArray)
    out.source = source
    return out


def _is_real(a: np.ndarray) -> bool:
    return bool(np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer))


def _readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a.setflags(write=False)
    return a


def _check_loss_hyper(param: str, value: Any) -> dict[str, Any]:
    """The loss's hyperparameters as a dict (values are checked by :func:`cegeo.losses.create_loss`)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise fail(param, "a mapping of hyperparameter name -> value, e.g. {'gamma': 0.5}", value)
    return dict(value)


@dataclass(frozen=True, eq=False)
class RunSplit:
    """One split of a run: the model's outputs plus what a rebalancer needs from the run.

    Built by :class:`RunFolder` (``run.val``, ``run.test``); arrays are read-only.

    Attributes
    ----------
    name : str
        ``"val"`` or ``"test"``. Rebalancers refuse to fit on ``"test"``.
    logits : ndarray (n, k) float32
        Raw model outputs ``z = W h``.
    labels : ndarray (n,) int64
    features : ndarray (n, d) float32 or None
        Penultimate embeddings ``h``.
    classifier : ndarray (k, d) float32 or None
        The classifier weight ``W`` (None if the run has no ``classifier.npz``).
    class_counts : ndarray (k,) int64
        Training counts used by the loss (the prior ``pi_c = n_c / n``).
    groups : Groups
        Class groups (majority/minority or many/medium/few).
    loss : str or None
        Training loss name (registry of :mod:`cegeo.losses`).
    loss_hyper : Mapping[str, float]
    source : str or None
        The run folder it was read from.
    """

    name: str
    logits: np.ndarray
    labels: np.ndarray
    class_counts: np.ndarray
    groups: Groups
    features: np.ndarray | None = None
    classifier: np.ndarray | None = None
    loss: str | None = None
    loss_hyper: Mapping[str, float] = field(default_factory=dict)
    source: str | None = None

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def __repr__(self) -> str:
        return f"RunSplit(name={self.name!r}, n={self.logits.shape[0]}, k={self.num_classes}, source={self.source!r})"


def _groups_from_json(value: Any, k: int, counts: np.ndarray, where: str) -> Groups:
    if value is None:
        return make_groups(counts)
    if not isinstance(value, Mapping) or not value:
        raise fail(f"{where}: groups", "a mapping of group name -> list of classes", value)
    labels: list[str | None] = [None] * k
    for name, members in value.items():
        if not isinstance(members, list):
            raise fail(f"{where}: groups.{name}", "a list of class indices", members)
        for c in members:
            c = check_int(f"{where}: groups.{name}", c)
            if not 0 <= c < k or labels[c] is not None:
                raise fail(f"{where}: groups", f"each class 0..{k - 1} in exactly one group", value)
            labels[c] = str(name)
    if any(lab is None for lab in labels):
        raise fail(f"{where}: groups", f"each class 0..{k - 1} in exactly one group", value)
    return Groups(tuple(str(n) for n in value), tuple(labels))  # type: ignore[arg-type]


class RunFolder:
    """Read-only view of a finished run folder (``docs/run-folder.md``).

    The validation split (``run.val``) is what rebalancers are fitted on; the test split
    (``run.test``) is for evaluation only: passing it (or arrays taken from it) to any
    rebalancer's ``fit`` raises :class:`~cegeo._validation.InputError`.

    Parameters
    ----------
    path : str or Path
        A folder with ``final.json`` and ``logits_{val,test}.npz`` (``classifier.npz`` for the
        classifier-side methods).

    Raises
    ------
    ValueError
        The folder does not exist, has no ``final.json`` (unfinished run), or its files break the
        contract (missing key, wrong shape or dtype, counts that do not match the logits, a
        ``loss`` entry that is not a name with a mapping of hyperparameters).

    Examples
    --------
    >>> RunFolder("no/such/run")
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `run_dir` must be an existing run folder; got 'no/such/run'.
    """

    SPLITS: ClassVar[tuple[str, ...]] = ("val", "test")

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if not p.is_dir():
            raise fail("run_dir", "an existing run folder", str(path))
        if not (p / "final.json").is_file():
            raise InputError(
                f"`run_dir` must be a finished run folder with final.json; got {str(p)!r} "
                "(no final.json: the run did not finish)."
            )
        self.path = p
        final = read_json(p / "final.json")
        if not isinstance(final, Mapping):
            raise fail(f"{p / 'final.json'}", "a JSON object", type(final).__name__)
        self.final: dict[str, Any] = dict(final)
        where = str(p / "final.json")
        if "class_counts" not in final:
            raise InputError(f"`{where}` must have the key 'class_counts'; it is missing.")
        self.class_counts = check_class_counts(final["class_counts"], f"{where}: class_counts")
        k = self.class_counts.size
        if "num_classes" in final and check_int(f"{where}: num_classes", final["num_classes"]) != k:
            raise fail(f"{where}: num_classes", f"{k} (the length of class_counts)", final["num_classes"])
        self.num_classes = k
        names = final.get("class_names")  # absent in runs made before names were recorded
        if names is not None and (
            not isinstance(names, list) or len(names) != k or not all(isinstance(n, str) for n in names)
        ):
            raise fail(f"{where}: class_names", f"{k} strings (one per class)", names)
        self.class_names: tuple[str, ...] = tuple(names) if names is not None else tuple(map(str, range(k)))
        recorded = final.get("normal_class")
        #: The normal class the run was trained with (``data.normal_class``), as an index; None
        #: when it had none. The CLI's default for --normal-class.
        self.normal_class: int | None = (
            None if recorded is None else class_index(f"{where}: normal_class", recorded, self.class_names)
        )
        self.groups = _groups_from_json(final.get("groups"), k, self.class_counts, where)
        loss = final.get("loss")
        name, hyper = (loss.get("name"), loss.get("hyper")) if isinstance(loss, Mapping) else (loss, None)
        if name is not None and not isinstance(name, str):
            raise fail(f"{where}: loss", 'a loss name or {"name": NAME, "hyper": {...}}', loss)
        self.loss: str | None = name
        self.loss_hyper: dict[str, float] = _check_loss_hyper(f"{where}: loss.hyper", hyper)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, k={self.num_classes}, loss={self.loss!r})"

    def _npz(self, filename: str, keys: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
        f = self.path / filename
        if not f.is_file():
            raise InputError(f"run folder {str(self.path)!r} has no {filename} (see docs/run-folder.md).")
        try:
            with np.load(f, allow_pickle=False) as data:
                missing = [key for key in keys if key not in data.files]
                if missing:
                    raise InputError(
                        f"`{f}` must hold the arrays {', '.join(keys)}; missing {', '.join(missing)}."
                    )
                return {key: np.asarray(data[key]) for key in (*keys, *optional) if key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, InputError):
                raise
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"`{f}` must be a readable .npz file; got: {detail}.") from None

    def classifier(self) -> np.ndarray:
        """The classifier weight ``W`` (k, d) from ``classifier.npz``."""
        W = self._npz("classifier.npz", ["W"])["W"]
        if not _is_real(W) or W.ndim != 2 or W.shape[0] != self.num_classes or not np.all(np.isfinite(W)):
            raise fail(
                f"{self.path / 'classifier.npz'}: W", f"a finite ({self.num_classes}, d) array", W.shape
            )
        return W

    def split(self, name: str) -> RunSplit:
        """Load ``logits_{name}.npz`` as a :class:`RunSplit` (``name`` is ``"val"`` or ``"test"``)."""
        if name not in self.SPLITS:
            raise fail("split", "one of 'val', 'test'", name)
        data = self._npz(f"logits_{name}.npz", ["logits", "labels"], ["features"])
        where = str(self.path / f"logits_{name}.npz")
        z, y = data["logits"], data["labels"]
        k = self.num_classes
        if not _is_real(z):
            raise fail(f"{where}: logits", "an array of real numbers", z.dtype.name)
        if z.ndim != 2 or z.shape[1] != k or z.shape[0] == 0:
            raise fail(f"{where}: logits", f"a non-empty (n, {k}) array", z.shape)
        if not np.all(np.isfinite(z)):
            raise fail(f"{where}: logits", "finite numbers", "non-finite values")
        if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise fail(f"{where}: labels", f"({z.shape[0]},) integer labels", (y.shape, y.dtype.name))
        if y.min() < 0 or y.max() >= k:
            raise fail(f"{where}: labels", f"labels in 0..{k - 1}", int(y.min() if y.min() < 0 else y.max()))
        feats = data.get("features")
        if feats is not None and not _is_real(feats):
            raise fail(f"{where}: features", "an array of real numbers", feats.dtype.name)
        if feats is not None and (feats.ndim != 2 or feats.shape[0] != z.shape[0]):
            raise fail(f"{where}: features", f"a ({z.shape[0]}, d) array", feats.shape)
        W = self.classifier() if (self.path / "classifier.npz").is_file() else None
        if name == "test":  # the guard's mark: fit refuses these arrays and what is computed from them
            z, feats = _mark_test(z, str(self.path)), _mark_test(feats, str(self.path))
        return RunSplit(
            name=name,
            logits=_readonly(z),
            labels=_readonly(y.astype(np.int64)),
            class_counts=self.class_counts,
            groups=self.groups,
            features=_readonly(feats),
            classifier=_readonly(W),
            loss=self.loss,
            loss_hyper=dict(self.loss_hyper),
            source=str(self.path),
        )

    @cached_property
    def val(self) -> RunSplit:
        """The validation split: what rebalancers are fitted on."""
        return self.split("val")

    @cached_property
    def test(self) -> RunSplit:
        """The test split: for evaluation (``transform``/``predict``) only, never for ``fit``."""
        return self.split("test")


def evaluate_split(
    split: RunSplit, predictions: Any = None, normal_class: int | None = None
) -> dict[str, Any]:
    """Every metric of one split, JSON-ready (``cegeo evaluate``; ``cegeo posthoc`` per method).

    Parameters
    ----------
    split : RunSplit
    predictions : array-like (n,), optional
        Predicted classes (default: argmax of the split's raw logits).
    normal_class : int, optional
        Adds ``false_alarm`` (share of this class's samples predicted as another class); null
        (None) with a note when the split has no sample of that class, as in the trainer's
        summaries.

    Returns
    -------
    dict
        :func:`cegeo.metrics.summary_from_confusion` (with ``group_recall`` from the run's
        groups) plus ``minority_recall`` (recall of the last group), ``confusion_matrix``
        (rows: true class, columns: predicted) and, only when a metric is undefined on this
        split, ``notes`` (one line each).

    Raises
    ------
    ValueError
        ``normal_class`` out of range.
    """
    k = split.num_classes
    pred = np.argmax(np.asarray(split.logits), axis=1) if predictions is None else np.asarray(predictions)
    c = None
    if normal_class is not None:
        c = check_int("normal_class", normal_class)
        if not 0 <= c < k:
            raise fail("normal_class", f"a class in 0..{k - 1}", normal_class)
    cm = _metrics.confusion_matrix(split.labels, pred, k)  # (k, k)
    out = _metrics.summary_from_confusion(cm, split.groups, c)
    out["minority_recall"] = out["group_recall"][split.groups.names[-1]]
    out["confusion_matrix"] = cm.tolist()
    if c is not None and out["false_alarm"] is None:
        out["notes"] = [
            f"the {split.name} split has no sample of normal_class {c}: its false-alarm rate is "
            "undefined (null)"
        ]
    return out


def _refuse_test_data(X: Any) -> None:
    """The guard: neither a test split nor an array marked as computed from one reaches ``fit``."""
    if isinstance(X, RunSplit) and X.name == "test":
        raise InputError(
            f"`X` must be validation data; got the test split of run {X.source!r} "
            "(rebalancers are tuned on validation only; use the test split with transform/predict)."
        )
    z = X.logits if isinstance(X, RunSplit) else X
    parts = list(z) if isinstance(z, (list, tuple)) else [z]  # rows passed as a list of arrays
    marked = next((a for a in parts if isinstance(a, _TestSplitArray)), None)
    if marked is not None:
        raise InputError(
            f"`X` must be validation data; got logits taken from the test split of run {marked.source!r} "
            "(rebalancers are tuned on validation only; use the test split with transform/predict)."
        )


# ------------------------------------------------------------------------------------ estimators


@dataclass
class _FitData:
    logits: np.ndarray  # (n, k) float64
    labels: np.ndarray  # (n,) int64
    class_counts: np.ndarray | None  # (k,) int64
    split: RunSplit | None

    @property
    def k(self) -> int:
        return int(self.logits.shape[1])


def _as_logits(X: Any, k: int | None = None, param: str = "X") -> np.ndarray:
    z = X.logits if isinstance(X, RunSplit) else X
    try:
        z = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(param, "a (n, k) array of logits or a RunSplit", type(X).__name__) from None
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise fail(param, "a non-empty (n, k) array of logits with k >= 2", z.shape)
    if k is not None and z.shape[1] != k:
        raise fail(param, f"logits with {k} columns (the classes it was fitted on)", z.shape)
    if not np.all(np.isfinite(z)):
        raise fail(param, "finite logits", "non-finite values")
    return z


def _fit_data(X: Any, y: Any, class_counts: Any, *, counts_required: bool) -> _FitData:
    _refuse_test_data(X)
    z = _as_logits(X)
    k = z.shape[1]
    split = X if isinstance(X, RunSplit) else None
    if split is not None:
        if y is not None:
            raise InputError("`y` must be None when X is a RunSplit (its labels are used); got labels.")
        y = split.labels
        if class_counts is None:
            class_counts = split.class_counts
    if y is None:
        raise fail("y", "the validation labels (n,) when X is an array of logits", None)
    yy = _check_labels(y, z.shape[0], k)
    counts = None
    if class_counts is not None:
        counts = check_class_counts(class_counts)
        if counts.size != k:
            raise fail("class_counts", f"{k} counts (one per logit column)", counts.tolist())
    elif counts_required:
        raise fail("class_counts", f"the {k} per-class training counts", None)
    return _FitData(z, yy, counts, split)


def _check_labels(y: Any, n: int, k: int) -> np.ndarray:
    """``y`` as int64 class indices: one per row of the logits, whole numbers in 0..k-1."""
    yy = np.asarray(y)
    if yy.shape != (n,):
        raise fail("y", f"a ({n},) array of labels (one per row of X)", yy.shape)
    if not np.issubdtype(yy.dtype, np.integer):
        if not (
            np.issubdtype(yy.dtype, np.floating) and np.all(np.isfinite(yy)) and np.all(yy == np.round(yy))
        ):
            raise fail("y", "integer class labels", yy.dtype.name)
    yy = yy.astype(np.int64)
    if yy.size and (yy.min() < 0 or yy.max() >= k):
        raise fail("y", f"labels in 0..{k - 1}", int(yy.min() if yy.min() < 0 else yy.max()))
    return yy


def _check_grid(param: str, grid: Any) -> np.ndarray:
    try:
        g = np.asarray(grid, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise fail(param, "a non-empty sequence of finite numbers", grid) from None
    if g.size == 0 or not np.all(np.isfinite(g)):
        raise fail(param, "a non-empty sequence of finite numbers", grid)
    return g


def _check_param(param: str, value: Any) -> float | None:
    """None (tune on validation) or :func:`check_finite`'s float, with the error saying both."""
    if value is None:
        return None
    try:
        return check_finite(param, value)
    except InputError:
        raise fail(param, "None (tune on validation) or a finite number", value) from None


def _geo_normalise(scale: np.ndarray) -> np.ndarray:
    """Divide by the geometric mean: same argmax, logits keep their overall size."""
    return scale / np.exp(np.mean(np.log(scale)))


class Rebalancer(BaseEstimator):
    """Base class: fit on validation outputs, apply to any split.

    Subclasses set ``name`` and implement ``_fit``; fitted attributes common to all:

    Attributes
    ----------
    n_classes_ : int
    metric_ : str
        The selection metric.
    chosen_ : dict
        The chosen hyperparameter(s), e.g. ``{"tau": 1.0}``.
    val_score_raw_, val_score_ : float
        ``metric_`` on validation before and after the correction.
    search_ : dict or None
        ``{"param": name, "grid": [...], "scores": [...], "at_edge": None | "lower" | "upper"}``
        for tuned methods.
    warnings_ : list of str
        Caveats about the fit, e.g. a tuned value on the edge of its search grid (the best value
        may lie beyond it).

    A ``fit`` that raises leaves the estimator unfitted (no state from an earlier fit either):
    ``transform``/``predict`` then raise :class:`~sklearn.exceptions.NotFittedError`.
    """

    name: ClassVar[str] = ""
    _counts_required: ClassVar[bool] = False

    def fit(
        self, X: Any, y: Any = None, class_counts: Any = None, *, metric: str = "balanced_accuracy"
    ) -> Rebalancer:
        """Fit on validation outputs.

        Parameters
        ----------
        X : ndarray (n, k) or RunSplit
            Validation logits, or ``RunFolder(...).val`` (labels, counts, classifier and loss
            then come from the run). Test data are refused.
        y : array-like (n,), optional
            Validation labels (required when X is an array).
        class_counts : array-like (k,), optional
            Training class counts (required by ``posthoc_la`` and ``geometry`` with arrays).
        metric : str
            Selection metric, one of :data:`SELECTION_METRICS`.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Test data, unknown metric, shapes or labels that do not match, missing counts, and
            the method's own errors.
        """
        # Fitted state is dropped first and again on failure: a failed (re)fit never leaves a
        # half-fitted estimator, nor the previous fit's state under the new data's n_classes_.
        self._clear_fitted()
        try:
            metric = _check_metric(metric)
            data = _fit_data(X, y, class_counts, counts_required=self._counts_required)
            self.n_classes_ = data.k
            self.metric_ = metric
            raw_pred = np.argmax(data.logits, axis=1)
            self.val_score_raw_ = selection_score(metric, data.labels, raw_pred, data.k)
            self.search_: dict[str, Any] | None = None
            self.warnings_: list[str] = []
            self._fit(data, metric)
            self.val_score_ = selection_score(metric, data.labels, self._predict(data.logits), data.k)
        except BaseException:
            self._clear_fitted()
            raise
        return self

    def _fit(self, data: _FitData, metric: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _clear_fitted(self) -> None:
        for key in [key for key in vars(self) if key.endswith("_") and not key.startswith("_")]:
            delattr(self, key)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_classes_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit(val_logits, val_labels, "
                "class_counts) or fit(RunFolder(path).val) first."
            )

    def transform(self, X: Any) -> np.ndarray:
        """Corrected logits of any split, shape (n, k) float64 (argmax = :meth:`predict`)."""
        self._check_fitted()
        return self._transform(_as_logits(X, self.n_classes_))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted classes after the correction, shape (n,) int64."""
        self._check_fitted()
        return self._predict(_as_logits(X, self.n_classes_))

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return np.argmax(self._transform(z), axis=1).astype(np.int64)

    def _transform(self, z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description of the fitted rebalancer (what ``posthoc.json`` stores)."""
        self._check_fitted()
        params = {
            key: (np.asarray(v).tolist() if isinstance(v, (np.ndarray, list, tuple)) else v)
            for key, v in self.get_params().items()
            if key != "classifier"
        }
        out: dict[str, Any] = {
            "name": self.name,
            "params": params,
            "metric": self.metric_,
            "chosen": dict(self.chosen_),
            "val_score_raw": self.val_score_raw_,
            "val_score": self.val_score_,
            "search": self.search_,
            "warnings": list(self.warnings_),
        }
        out.update(self._extra_dict())
        return out

    def _extra_dict(self) -> dict[str, Any]:
        return {}


class _LogitAffine(Rebalancer):
    """Corrections of the form ``z'_c = scale_c * z_c + offset_c``."""

    def _transform(self, z: np.ndarray) -> np.ndarray:
        return z * self.scale_[None, :] + self.offset_[None, :]

    def _extra_dict(self) -> dict[str, Any]:
        return {"scale": self.scale_.tolist(), "offset": self.offset_.tolist()}

    def _search(
        self,
        data: _FitData,
        metric: str,
        param: str,
        grid: np.ndarray,
        make: Callable[[float], tuple[np.ndarray, np.ndarray]],
    ) -> float:
        """Best grid value for ``metric``; ties go to the smallest ``|value|``."""
        scores = np.array(
            [
                selection_score(
                    metric, data.labels, np.argmax(data.logits * s[None, :] + o[None, :], axis=1), data.k
                )
                for s, o in (make(float(v)) for v in grid)
            ]
        )
        best = scores.max()
        tied = np.flatnonzero(scores >= best - _TIE)
        i = int(tied[np.argmin(np.abs(grid[tied]))])
        choice = float(grid[i])
        # On the edge, and still improving there: the best value may lie outside the grid. The
        # no-correction value 0 is a natural end (beyond it the correction turns around).
        order = np.argsort(grid, kind="stable")
        edge = None
        if grid.size > 1 and choice != 0.0:
            if i == order[-1] and scores[i] > scores[order[-2]] + _TIE:
                edge = "upper"
            elif i == order[0] and scores[i] > scores[order[1]] + _TIE:
                edge = "lower"
        self.search_ = {"param": param, "grid": grid.tolist(), "scores": scores.tolist(), "at_edge": edge}
        if edge is not None:
            self.warnings_.append(
                f"the chosen {param} = {choice:g} is the {edge} end of its search grid "
                f"[{grid.min():g}, {grid.max():g}] and still improves {metric} there: the best value may "
                "lie beyond it (widen `grid`)"
            )
        return choice

    def _fit_family(
        self, data: _FitData, metric: str, param: str, make: Callable[[float], tuple[np.ndarray, np.ndarray]]
    ) -> float:
        """Fit a one-parameter family ``make(value) -> (scale, offset)``: the fixed value of
        ``self.<param>``, or the best over ``self.grid`` when it is None. Sets ``scale_``,
        ``offset_``, ``chosen_`` and returns the value."""
        value = _check_param(param, getattr(self, param))
        if value is None:
            value = self._search(data, metric, param, _check_grid("grid", self.grid), make)
        self.scale_, self.offset_ = make(value)
        self.chosen_ = {param: value}
        return value


class PosthocLA(_LogitAffine):
    """Post-hoc logit adjustment ``z_c - tau log pi_c`` (Menon et al. 2021, THEORY.md §7).

    With calibrated logits ``log p(c | x)``, tau = 1 gives ``log p(x | c)``: the Bayes rule for
    balanced error. The training prior ``pi_c = n_c / n`` comes from the class counts.

    Parameters
    ----------
    tau : float or None
        Fixed tau, or None to choose it on validation over ``grid``.
    grid : sequence of float
        Candidate taus (ties go to the smallest ``|tau|``).

    Attributes
    ----------
    tau_ : float
    scale_, offset_ : ndarray (k,)
        ``z' = scale_ * z + offset_`` (scale 1, offset ``-tau_ log pi``).

    Examples
    --------
    >>> z = np.array([[2.0, 1.5], [3.0, 0.0], [1.0, 0.9], [0.5, 2.0]])
    >>> la = PosthocLA(tau=1.0).fit(z, [0, 0, 1, 1], class_counts=[90, 10])
    >>> la.predict(z).tolist()
    [1, 0, 1, 1]
    >>> PosthocLA().predict(z)
    Traceback (most recent call last):
    ...
    sklearn.exceptions.NotFittedError: This PosthocLA is not fitted yet; call fit(val_logits, val_labels, class_counts) or fit(RunFolder(path).val) first.
    """

    name = "posthoc_la"
    _counts_required = True

    def __init__(self, tau: float | None = None, grid: Sequence[float] = _grid(-1, 3, 81)):
        self.tau = tau
        self.grid = grid

    def _fit(self, data: _FitData, metric: str) -> None:
        assert data.class_counts is not None
        log_prior = np.log(data.class_counts / data.class_counts.sum())  # (k,)
        ones = np.ones(data.k)

        def make(tau: float) -> tuple[np.ndarray, np.ndarray]:
            return ones, -tau * log_prior

        self.tau_ = self._fit_family(data, metric, "tau", make)


# Relative tolerance for logits == features @ W.T: bf16 autocast rounds logits at ~4e-3, while a
# bias or a cosine head breaks the identity by far more.
_HEAD_RTOL = 2e-2


def _linear_head_problem(split: RunSplit, W: np.ndarray) -> str | None:
    """Why ``logits == features @ W.T`` (the bias-free linear head) fails for this split, if it does."""
    if split.features is None:
        return None
    if split.features.shape[1] != W.shape[1]:
        return f"features have dimension {split.features.shape[1]} but W is {W.shape}"
    h = np.asarray(split.features, dtype=np.float64)  # (n, d)
    if not np.all(np.isfinite(h)):
        return "its features hold non-finite values (NaN or inf)"
    recon = h @ np.asarray(W, dtype=np.float64).T  # (n, k)
    z = np.asarray(split.logits, dtype=np.float64)  # (n, k)
    err = np.linalg.norm(recon - z) / max(float(np.linalg.norm(z)), 1e-12)
    if not err <= _HEAD_RTOL:  # written so that a NaN error fails too
        return (
            f"its logits differ from features @ W.T (relative error {err:.2g}): not the bias-free "
            "linear head of docs/run-folder.md (a bias or a cosine classifier?)"
        )
    return None


class TauNorm(_LogitAffine):
    """tau-normalisation ``w_c <- w_c / ||w_c||^tau`` (Kang et al. 2020, THEORY.md §7).

    Applied as ``z_c <- z_c / ||w_c||^tau`` (identical for a bias-free head), with the scale
    vector divided by its geometric mean (argmax unchanged, logits keep their overall size).

    Parameters
    ----------
    tau : float or None
        Fixed tau, or None to choose it on validation over ``grid``.
    grid : sequence of float
    classifier : ndarray (k, d), optional
        The classifier ``W``; by default taken from the :class:`RunSplit` passed to ``fit``.

    Attributes
    ----------
    tau_ : float
    w_norms_ : ndarray (k,)
        ``||w_c||`` of the trained classifier.
    scale_, offset_ : ndarray (k,)

    Examples
    --------
    >>> W = np.array([[2.0, 0.0], [0.0, 1.0]])
    >>> z = np.array([[2.0, 0.9], [1.0, 0.8], [0.4, 1.0]])  # features @ W.T
    >>> TauNorm(tau=1.0, classifier=W).fit(z, [0, 1, 1]).transform(z).round(3).tolist()
    [[1.414, 1.273], [0.707, 1.131], [0.283, 1.414]]
    """

    name = "tau_norm"

    def __init__(
        self,
        tau: float | None = None,
        grid: Sequence[float] = _grid(0, 2, 41),
        classifier: Any = None,
    ):
        self.tau = tau
        self.grid = grid
        self.classifier = classifier

    def _fit(self, data: _FitData, metric: str) -> None:
        W = self.classifier
        if W is None and data.split is not None:
            W = data.split.classifier
            if W is None:
                raise InputError(
                    f"run folder {data.split.source!r} has no classifier.npz; tau_norm needs the classifier W."
                )
        if W is None:
            raise fail("classifier", "the (k, d) classifier weight W (or fit on a RunSplit)", None)
        try:
            W = np.asarray(W, dtype=np.float64)
        except (TypeError, ValueError):
            raise fail("classifier", f"a finite ({data.k}, d) array of numbers", W) from None
        if W.ndim != 2 or W.shape[0] != data.k or not np.all(np.isfinite(W)):
            raise fail("classifier", f"a finite ({data.k}, d) array", W.shape)
        norms = np.linalg.norm(W, axis=1)  # (k,)
        if np.any(norms <= 0):
            raise fail("classifier", "rows with non-zero norm", norms.tolist())
        if data.split is not None and self.classifier is None:
            problem = _linear_head_problem(data.split, W)
            if problem is not None:
                raise InputError(f"tau_norm cannot use run {data.split.source!r}: {problem}.")
        zeros = np.zeros(data.k)

        def make(tau: float) -> tuple[np.ndarray, np.ndarray]:
            return _geo_normalise(norms**-tau), zeros

        self.tau_ = self._fit_family(data, metric, "tau", make)
        self.w_norms_ = norms

    def _extra_dict(self) -> dict[str, Any]:
        return {**super()._extra_dict(), "w_norms": self.w_norms_.tolist()}


class GeometryRebalancer(_LogitAffine):
    """Geometry-guided rescaling ``w_c <- w_c / ||w_c*||^beta`` (THEORY.md §7).

    ``||w_c*||`` is the classifier norm :func:`cegeo.theory.predict` gives for the training
    loss and the class counts (the max-margin limit, §4.1). Dividing by it
    (beta = 1) moves a model trained with that loss toward the symmetric geometry (LDT
    gamma = 1/2, equal norms) with no tuning; for a loss whose predicted norms are already equal
    it is the identity. Applied to logits (bias-free head); the scale is divided by its
    geometric mean.

    The loss is built as the trainer built it, and the geometry predicted, from the training
    class counts. Loss weights (wCE, deferred re-weighting) and training samplers (a
    class-balanced or square-root sampler weighs each sample's loss by how often it is drawn;
    every distinct sample still has one embedding) drop out of the max-margin limit
    (THEORY.md §4) and are ignored: the prediction is the same with or without them. Finite
    training with a sampler or with loss weights usually sits far from this limit (it is
    approached only slowly), so the prediction describes such runs less closely.

    Parameters
    ----------
    beta : float or None
        1.0 (default, no tuning), another fixed value, or None to choose it on validation
        over ``grid`` (ties go to the smallest ``|beta|``).
    grid : sequence of float
    loss : str, optional
        The training loss (a name from :func:`cegeo.losses.list_losses` that the theory
        covers); default: the run's loss when fitted on a :class:`RunSplit`.
    loss_hyper : mapping, optional
        The loss's hyperparameters (default: the run's, or the registry defaults).

    Attributes
    ----------
    beta_ : float
    predicted_w_norms_ : ndarray (k,)
        ``||w_c*||`` from the theory (scale-free: only ratios matter).
    scale_, offset_ : ndarray (k,)

    Raises
    ------
    ValueError
        A loss the theory does not cover (e.g. ``ldam``), or no loss known; ``loss_hyper`` not a
        mapping.

    Examples
    --------
    >>> z = np.array([[2.0, 1.5, 0.0], [3.0, 0.0, 1.0], [1.0, 0.9, 1.2], [0.5, 2.0, 0.1]])
    >>> g = GeometryRebalancer(loss="ce").fit(z, [0, 2, 2, 1], class_counts=[100, 100, 10])
    >>> g.predicted_w_norms_.round(4).tolist()  # CE (SELI): the minority's classifier is shorter
    [1.0, 1.0, 0.8345]
    >>> g.predict(z).tolist()
    [0, 0, 2, 1]
    >>> GeometryRebalancer(loss="wce").fit(  # loss weights drop out: SELI again
    ...     z, [0, 2, 2, 1], class_counts=[100, 100, 10]
    ... ).predicted_w_norms_.round(4).tolist()
    [1.0, 1.0, 0.8345]
    >>> GeometryRebalancer(loss="ldt", loss_hyper={"gamma": 0.5}).fit(  # temperatures count
    ...     z, [0, 2, 2, 1], class_counts=[100, 100, 10]
    ... ).predicted_w_norms_.round(4).tolist()
    [1.0, 1.0, 1.0]
    >>> GeometryRebalancer(loss="ldam").fit(z, [0, 2, 2, 1], class_counts=[100, 100, 10])
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `loss` must be a loss the theory covers ('ce', 'wce', 'la', 'cdt', 'ldt', 'vs', 'balanced_softmax'); got 'ldam'.
    """

    name = "geometry"
    _counts_required = True

    def __init__(
        self,
        beta: float | None = 1.0,
        grid: Sequence[float] = _grid(0, 2, 41),
        loss: str | None = None,
        loss_hyper: Mapping[str, float] | None = None,
    ):
        self.beta = beta
        self.grid = grid
        self.loss = loss
        self.loss_hyper = loss_hyper

    def _fit(self, data: _FitData, metric: str) -> None:
        from .losses import create_loss, get_loss_info, list_losses
        from .theory import predict

        loss = self.loss
        hyper = _check_loss_hyper("loss_hyper", self.loss_hyper)
        hyper_from = None  # the run folder the hyperparameters were read from, if any
        if loss is None and data.split is not None:
            loss = data.split.loss
            if self.loss_hyper is None:
                hyper, hyper_from = dict(data.split.loss_hyper), data.split.source
        if loss is None:
            raise fail("loss", "the training loss name (or fit on a RunSplit of a run that records it)", None)
        covered = [n for n in list_losses() if get_loss_info(n).theory]
        if loss not in covered:
            raise fail("loss", "a loss the theory covers (" + ", ".join(map(repr, covered)) + ")", loss)
        assert data.class_counts is not None
        try:
            # names first: a key named class_counts or reduction would bind to create_loss's own arguments
            get_loss_info(loss).hyperparameters(hyper)
            loss_fn = create_loss(loss, data.class_counts, **hyper)  # as the trainer built it
        except InputError as exc:
            if hyper_from is None:
                raise
            raise InputError(f"run {hyper_from!r} records a loss geometry cannot rebuild: {exc}") from None
        # The dataset's counts, whatever the sampler was (THEORY.md §4: loss weights drop out).
        norms = predict(loss_fn, data.class_counts, make_groups(data.class_counts)).w_norms  # (k,)
        norms = norms / norms.max()
        zeros = np.zeros(data.k)

        def make(beta: float) -> tuple[np.ndarray, np.ndarray]:
            return _geo_normalise(norms**-beta), zeros

        self.beta_ = self._fit_family(data, metric, "beta", make)
        self.loss_ = loss
        self.predicted_w_norms_ = norms

    def _extra_dict(self) -> dict[str, Any]:
        return {
            **super()._extra_dict(),
            "loss": self.loss_,
            "predicted_w_norms": self.predicted_w_norms_.tolist(),
        }


class GeometryTuned(GeometryRebalancer):
    """:class:`GeometryRebalancer` with beta chosen on validation (default ``beta=None``).

    Examples
    --------
    >>> GeometryTuned(loss="ce").beta is None
    True
    """

    name = "geometry_tuned"

    def __init__(
        self,
        beta: float | None = None,
        grid: Sequence[float] = _grid(0, 2, 41),
        loss: str | None = None,
        loss_hyper: Mapping[str, float] | None = None,
    ):
        super().__init__(beta=beta, grid=grid, loss=loss, loss_hyper=loss_hyper)


class LWS(_LogitAffine):
    """Learnable weight scaling ``z_c <- s_c z_c`` fitted by class-balanced CE on validation.

    Minimises ``(1/k') sum_c mean_{i: y_i = c} CE(s ⊙ z_i, c) + (alpha/2) ||s - 1||^2`` over
    ``s >= 1e-6`` (k' = classes present; a scale on that bound is reported in ``warnings_``). The objective is convex in s (CE is convex in the
    logits, which are linear in s); ``alpha`` > 0 makes it strictly convex and keeps s finite
    when validation is separable. Solved with L-BFGS-B and the exact gradient. No
    hyperparameter is searched; ``metric`` only scores the result. With k free scales and a
    handful of validation samples per class it can overfit validation (it did on digits with
    1-3 validation samples per minority class: ``bench/posthoc_digits.py``).

    Parameters
    ----------
    alpha : float
        Ridge strength toward s = 1 (>= 0).
    max_iter : int

    Attributes
    ----------
    scale_ : ndarray (k,)
        The fitted s.
    offset_ : ndarray (k,)
        Zeros.
    objective_ : float
        Final objective value.
    n_iter_ : int

    Examples
    --------
    Calibrated logits (Gaussian classes, equal priors) shrunk per class are restored:

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 3000)
    >>> z = 2.0 * (2.0 * np.eye(3)[y] + rng.normal(size=(3000, 3)))  # log-likelihoods + const
    >>> LWS().fit(z * [1.0, 0.5, 0.25], y).scale_.round(1).tolist()
    [1.0, 2.0, 3.9]
    """

    name = "lws"

    def __init__(self, alpha: float = 1e-4, max_iter: int = 500):
        self.alpha = alpha
        self.max_iter = max_iter

    def _fit(self, data: _FitData, metric: str) -> None:
        try:
            alpha = check_finite("alpha", self.alpha)
        except InputError:
            alpha = -1.0
        if alpha < 0:
            raise fail("alpha", "a finite number >= 0", self.alpha)
        max_iter = check_int("max_iter", self.max_iter, minimum=1)
        z, y, k = data.logits, data.labels, data.k
        counts = np.bincount(y, minlength=k).astype(np.float64)
        present = counts > 0
        w = 1.0 / (present.sum() * counts[y])  # (n,) class-balanced sample weights, sum 1
        onehot = np.zeros_like(z)
        onehot[np.arange(y.size), y] = 1.0

        def objective(s: np.ndarray) -> tuple[float, np.ndarray]:
            a = z * s[None, :]  # (n, k)
            lse = logsumexp(a, axis=1)  # (n,)
            f = float(np.sum(w * (lse - a[np.arange(y.size), y]))) + 0.5 * alpha * float(np.sum((s - 1) ** 2))
            p = np.exp(a - lse[:, None])  # (n, k)
            g = ((p - onehot) * z * w[:, None]).sum(axis=0) + alpha * (s - 1)
            return f, g

        res = optimize.minimize(
            objective,
            np.ones(k),
            jac=True,
            method="L-BFGS-B",
            bounds=[(_LWS_MIN_SCALE, None)] * k,
            options={"maxiter": max_iter},
        )
        self.scale_ = np.asarray(res.x, dtype=np.float64)
        floored = np.flatnonzero(self.scale_ <= 2 * _LWS_MIN_SCALE)
        if floored.size:
            self.warnings_.append(
                f"the scale of class(es) {floored.tolist()} hit its lower bound {_LWS_MIN_SCALE:g}: their "
                "logits are in effect zeroed (the fit found no use for them); check those classes' "
                "validation samples or use another method"
            )
        self.offset_ = np.zeros(k)
        self.objective_ = float(res.fun)
        self.n_iter_ = int(res.nit)
        self.converged_ = bool(res.success)
        self.chosen_ = {"scales": self.scale_.tolist()}

    def _extra_dict(self) -> dict[str, Any]:
        return {
            **super()._extra_dict(),
            "objective": self.objective_,
            "n_iter": self.n_iter_,
            "converged": self.converged_,
        }


_LWS_MIN_SCALE = 1e-6  # lws scales are bounded below (a scale of 0 would erase a class's logit)


def _normal_log_odds(z: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """``log p_c / (1 - p_c)`` (never saturates, unlike p_c) and the argmax among the others."""
    others = np.delete(z, c, axis=1)  # (n, k-1)
    s = z[:, c] - logsumexp(others, axis=1)  # (n,)
    idx = np.delete(np.arange(z.shape[1]), c)
    return s, idx[np.argmax(others, axis=1)]


class OperatingPoint(Rebalancer):
    """Threshold on the normal class's probability for a false-alarm budget (THEORY.md §7).

    Rule: predict the normal class N iff ``p_N >= threshold_``, else the argmax among the other
    classes. A false alarm is a normal sample predicted as any other class. The threshold
    maximises the mean recall of the non-normal classes subject to a validation false-alarm
    rate ``<= max_false_alarm``. Among thresholds with the same validation recall the one with
    the lowest validation false-alarm rate wins, placed mid-way (in log-odds) between the
    neighbouring validation scores. Works on log-odds ``log p_N/(1-p_N)``, which never
    saturate. ``fit``'s ``metric`` only scores the chosen point (``val_score_``); the
    threshold is always chosen by the recall-under-budget rule above.

    Parameters
    ----------
    normal_class : int
        The normal ("no defect", "healthy") class.
    max_false_alarm : float
        The false-alarm budget on validation, in [0, 1).

    Attributes
    ----------
    threshold_ : float
        On ``p_N`` (may print as 1.0 for a confident model; ``log_odds_threshold_`` is exact).
    log_odds_threshold_ : float
    val_false_alarm_, val_recall_, val_detection_ : float
        On validation: false-alarm rate, mean recall of the non-normal classes, share of
        non-normal samples flagged (predicted as any non-normal class).

    Raises
    ------
    ValueError
        ``normal_class`` out of range or absent from the validation labels; a budget outside
        [0, 1); a budget no threshold can meet with any non-normal recall (impossible target).

    Examples
    --------
    Four normal samples (log-odds 3, 2, 1, 0.5) and three defects (-1, 0.8, 2.5); one false
    alarm allowed buys the defect at 0.8:

    >>> z = np.array([[3.0, 0], [2.0, 0], [1.0, 0], [0.5, 0], [-1.0, 0], [0.8, 0], [2.5, 0]])
    >>> op = OperatingPoint(normal_class=0, max_false_alarm=0.25).fit(z, [0, 0, 0, 0, 1, 1, 1])
    >>> op.val_false_alarm_, round(op.val_recall_, 4), op.log_odds_threshold_
    (0.25, 0.6667, 0.9)
    >>> op.predict(z).tolist()
    [0, 0, 0, 1, 1, 1, 0]
    """

    name = "operating_point"

    def __init__(self, normal_class: int | None = None, max_false_alarm: float = 0.01):
        self.normal_class = normal_class
        self.max_false_alarm = max_false_alarm

    def _check_normal(self, k: int) -> int:
        if self.normal_class is None:
            raise fail("normal_class", f"a class in 0..{k - 1} (the operating point needs one)", None)
        c = check_int("normal_class", self.normal_class)
        if not 0 <= c < k:
            raise fail("normal_class", f"a class in 0..{k - 1}", self.normal_class)
        return c

    def _fit(self, data: _FitData, metric: str) -> None:
        k = data.k
        c = self._check_normal(k)
        target = check_fraction("max_false_alarm", self.max_false_alarm, low_open=False, high_open=True)
        y = data.labels
        normal = y == c
        if not normal.any():
            raise InputError(
                f"`normal_class` {c} has no samples in the validation labels; cannot set a threshold."
            )
        if normal.all():
            raise InputError(
                "the validation labels hold only the normal class; no minority recall to maximise."
            )
        s, other = _normal_log_odds(data.logits, c)
        a = np.sort(s[normal])  # (n_N,) normal scores, ascending
        n_n = a.size
        allowed = math.floor(target * n_n + 1e-9)  # false alarms allowed on validation
        # FA(t) = #{a_i < t} <= allowed  <=>  t <= a[allowed]  (any t if every alarm is allowed)
        t_max = a[allowed] if allowed < n_n else np.inf
        correct = ~normal & (other == y)  # non-normal samples the other-argmax gets right
        hit = correct & (s < t_max)
        if not hit.any():
            raise InputError(
                f"`max_false_alarm` {target:g} is impossible on validation: no threshold with at most "
                f"{allowed} false alarm(s) among {n_n} normal samples recovers any non-normal sample "
                f"(ask for a larger budget; the rate moves in steps of 1/{n_n} = {1 / n_n:.3g})."
            )
        # Same recall for every t in (low, t_max]; the lowest FA there is on (low, min(next, t_max)].
        low = float(s[hit].max())
        above = a[a > low]
        high = min(float(above[0]) if above.size else np.inf, float(t_max))
        if math.isinf(high):
            t = low + 1.0  # nothing normal above: one log-odds unit past the last hit
        else:
            t = 0.5 * (low + high)
        self.log_odds_threshold_ = float(t)
        self.threshold_ = float(1.0 / (1.0 + math.exp(-t))) if t > -700 else 0.0
        self.normal_class_ = c
        self.max_false_alarm_ = target
        self.n_normal_val_ = int(n_n)
        ops = self._operating(data.logits, y)
        self.val_false_alarm_ = ops["false_alarm"]
        self.val_recall_ = ops["recall"]
        self.val_detection_ = ops["detection"]
        assert self.val_false_alarm_ <= target + 1e-12
        self.chosen_ = {"threshold": self.threshold_, "log_odds_threshold": self.log_odds_threshold_}

    def _predict(self, z: np.ndarray) -> np.ndarray:
        s, other = _normal_log_odds(z, self.normal_class_)
        return np.where(s >= self.log_odds_threshold_, self.normal_class_, other).astype(np.int64)

    def _transform(self, z: np.ndarray) -> np.ndarray:
        """Decision logits: others unchanged, normal logit set so that argmax follows the rule."""
        c = self.normal_class_
        s, other = _normal_log_odds(z, c)
        top = z[np.arange(z.shape[0]), other]  # (n,) largest other logit
        zn = top + (s - self.log_odds_threshold_)
        yes = s >= self.log_odds_threshold_
        zn = np.where(
            yes, np.maximum(zn, np.nextafter(top, np.inf)), np.minimum(zn, np.nextafter(top, -np.inf))
        )
        out = z.copy()
        out[:, c] = zn
        return out

    def _operating(self, z: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
        c = self.normal_class_
        pred = self._predict(z)
        normal = y == c
        recall = _metrics.per_class_scores(y, pred, self.n_classes_)["recall"]
        rest = np.delete(recall, c)
        rest = rest[~np.isnan(rest)]
        return {
            # None (JSON null) where the split lacks the samples, as in evaluate_split
            "false_alarm": float(np.mean(pred[normal] != c)) if normal.any() else None,
            "recall": float(np.mean(rest)) if rest.size else None,
            "detection": float(np.mean(pred[~normal] != c)) if (~normal).any() else None,
        }

    def operating_metrics(self, X: Any, y: Any = None) -> dict[str, float | None]:
        """False-alarm rate, non-normal mean recall and detection rate on any split.

        Each is None when the split has no sample it is defined on (e.g. no normal sample for
        the false-alarm rate).

        Parameters
        ----------
        X : ndarray (n, k) or RunSplit
        y : array-like (n,), optional
            Labels (default: the RunSplit's).
        """
        self._check_fitted()
        z = _as_logits(X, self.n_classes_)
        if y is None:
            if not isinstance(X, RunSplit):
                raise fail("y", "labels (n,) when X is an array of logits", None)
            y = X.labels
        return self._operating(z, _check_labels(y, z.shape[0], self.n_classes_))

    def _extra_dict(self) -> dict[str, Any]:
        return {
            "normal_class": self.normal_class_,
            "max_false_alarm": self.max_false_alarm_,
            "n_normal_val": self.n_normal_val_,
            "val_false_alarm": self.val_false_alarm_,
            "val_recall": self.val_recall_,
            "val_detection": self.val_detection_,
        }


# --------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class RebalancerInfo:
    """A registered rebalancer.

    Attributes
    ----------
    name : str
    description : str
        One line: the correction and how it is chosen.
    estimator : type
        The :class:`Rebalancer` subclass.
    defaults : Mapping[str, Any]
        Constructor arguments this entry fixes (overridable in :func:`create_rebalancer`).
    needs : tuple of str
        What it needs beyond validation logits and labels: ``"class_counts"``,
        ``"classifier"``, ``"loss"`` (a loss the theory covers), ``"normal_class"``.
    tuned : str or None
        The hyperparameter chosen on validation, if any.
    reference : str
    """

    name: str
    description: str
    estimator: type[Rebalancer]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    tuned: str | None = None
    reference: str = ""


_REBALANCERS: Registry[RebalancerInfo] = Registry("rebalancer")

for _info in (
    RebalancerInfo(
        "posthoc_la",
        "z_c - tau log pi_c; tau chosen on validation",
        PosthocLA,
        {},
        ("class_counts",),
        "tau",
        "Menon et al. 2021",
    ),
    RebalancerInfo(
        "tau_norm",
        "w_c / ||w_c||^tau; tau chosen on validation",
        TauNorm,
        {},
        ("classifier",),
        "tau",
        "Kang et al. 2020",
    ),
    RebalancerInfo(
        "geometry",
        "w_c / ||w_c*||^beta with the theory's norms for the training loss; beta = 1, no tuning",
        GeometryRebalancer,
        {},
        ("class_counts", "loss"),
        None,
        "THEORY.md §7 (Behnia et al. 2023)",
    ),
    RebalancerInfo(
        "geometry_tuned",
        "w_c / ||w_c*||^beta with the theory's norms; beta chosen on validation",
        GeometryTuned,
        {},
        ("class_counts", "loss"),
        "beta",
        "THEORY.md §7 (Behnia et al. 2023)",
    ),
    RebalancerInfo(
        "lws",
        "z_c * s_c, s fitted by class-balanced CE on validation (convex)",
        LWS,
        {},
        (),
        None,
        "Kang et al. 2020 (learnable weight scaling)",
    ),
    RebalancerInfo(
        "operating_point",
        "predict normal iff p_normal >= t; t maximises minority recall at false-alarm <= target",
        OperatingPoint,
        {},
        ("normal_class",),
        "threshold",
        "THEORY.md §7",
    ),
):
    _REBALANCERS.register(_info)


def list_rebalancers() -> list[str]:
    """Names of the registered rebalancers.

    Examples
    --------
    >>> list_rebalancers()
    ['posthoc_la', 'tau_norm', 'geometry', 'geometry_tuned', 'lws', 'operating_point']
    """
    return _REBALANCERS.names()


def get_rebalancer_info(name: str, param: str | None = None) -> RebalancerInfo:
    """The :class:`RebalancerInfo` of a registered rebalancer (unknown name: ValueError)."""
    return _REBALANCERS.get(name, param)


def create_rebalancer(name: str, **params: Any) -> Rebalancer:
    """An unfitted rebalancer: the entry's estimator with its defaults updated by ``params``.

    Raises
    ------
    ValueError
        Unknown name (listing the valid ones) or a parameter the estimator does not take.

    Examples
    --------
    >>> create_rebalancer("posthoc_la", tau=1.0)
    PosthocLA(tau=1.0)
    >>> create_rebalancer("geometry_tuned").beta is None
    True
    >>> create_rebalancer("platt")
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: unknown rebalancer 'platt'; valid names: 'posthoc_la', 'tau_norm', 'geometry', 'geometry_tuned', 'lws', 'operating_point'.
    """
    info = _REBALANCERS.get(name)
    valid = sorted(info.estimator._get_param_names())
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise InputError(
            f"rebalancer {name!r} takes {', '.join(valid)}; got unknown parameter(s) {', '.join(unknown)}."
        )
    return info.estimator(**{**info.defaults, **params})


# ------------------------------------------------------------------------------ run-folder driver


def _method_tokens(methods: str | Sequence[str]) -> list[str]:
    items = [methods] if isinstance(methods, str) else list(methods)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def parse_methods(methods: str | Sequence[str], param: str = "methods") -> list[str]:
    """``"all"``, a name, a comma-separated string or a list of them -> registered names, in order
    (an unknown name is an error naming ``param``).

    Examples
    --------
    >>> parse_methods(["posthoc_la,lws", "lws"])
    ['posthoc_la', 'lws']
    >>> parse_methods("all")[:2]
    ['posthoc_la', 'tau_norm']
    >>> parse_methods("temperature")
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `methods` must be a rebalancer name, one of 'posthoc_la', 'tau_norm', 'geometry', 'geometry_tuned', 'lws', 'operating_point'; got 'temperature'.
    """
    out: list[str] = []
    for name in _method_tokens(methods):
        names = list_rebalancers() if name == "all" else [_REBALANCERS.get(name, param).name]
        out.extend(n for n in names if n not in out)
    if not out:
        raise fail(param, "'all' or one or more rebalancer names", methods)
    return out


def _unmet_need(info: RebalancerInfo, run: RunFolder, val: RunSplit, normal_class: int | None) -> str | None:
    from .losses import get_loss_info, list_losses

    if "classifier" in info.needs:
        if val.classifier is None:
            return f"run folder {str(run.path)!r} has no classifier.npz"
        problem = _linear_head_problem(val, val.classifier)
        if problem is not None:
            return problem
    if "loss" in info.needs:
        covered = [n for n in list_losses() if get_loss_info(n).theory]
        if run.loss not in covered:
            return f"the theory does not cover the run's loss {run.loss!r} (covered: {', '.join(covered)})"
    if "normal_class" in info.needs:
        if normal_class is None:
            return "needs a normal class (--normal-class)"
        if not np.any(val.labels == normal_class):
            return f"the validation split has no sample of normal_class {normal_class} to set a threshold on"
    return None


# Fewer validation samples than this in a class earns a warning in run_posthoc's result.
_FEW_VAL = 5

#: Folds of the cross-fitted validation score (:func:`cross_fitted_score`).
CV_FOLDS = 5


def cross_fitted_score(
    name: str,
    val: RunSplit,
    *,
    metric: str = "balanced_accuracy",
    folds: int = CV_FOLDS,
    seed: int = 0,
    **params: Any,
) -> float | None:
    """The selection metric of rebalancer ``name`` on validation, each sample predicted by a fit
    on the other folds (stratified, seeded), so that it measures the method, not how well it fits
    the samples it is scored on.

    ``val_score`` of a fitted rebalancer is in-sample: it rewards methods with more parameters
    (``lws`` fits one scale per class) on a small validation split. This score compares methods
    fairly; for a method that learns nothing from the data (``geometry``) it equals ``val_score``.
    None when a fold's fit fails (e.g. a fold without the normal class for ``operating_point``)
    or the split is too small to cross-fit (fewer than two samples a fold, every class one sample).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], [60, 20, 10])
    >>> z = rng.normal(size=(90, 3)) + 1.5 * np.eye(3)[y] + [1.0, 0.0, -0.5]
    >>> split = RunSplit("val", z, y, np.array([600, 200, 100]), make_groups([600, 200, 100]))
    >>> la = create_rebalancer("posthoc_la").fit(split)
    >>> round(la.val_score_, 3), round(cross_fitted_score("posthoc_la", split), 3)
    (0.728, 0.667)
    """
    import warnings

    from sklearn.model_selection import StratifiedKFold

    y = val.labels
    # StratifiedKFold needs a class with at least n_splits samples: with every class a single
    # sample (a validation split of <= k samples) there is nothing to cross-fit
    n_splits = min(check_int("folds", folds, minimum=2), int(np.bincount(y).max()))
    if n_splits < 2 or y.size < 2 * n_splits:
        return None
    pred = np.empty_like(y)
    with warnings.catch_warnings():  # a class with fewer samples than folds: expected on small splits
        warnings.simplefilter("ignore", UserWarning)
        parts = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(y, y))
    for fit_idx, held_idx in parts:
        sub = _subset(val, fit_idx)
        try:
            est = create_rebalancer(name, **params).fit(sub, metric=metric)
        except InputError:
            return None
        pred[held_idx] = est.predict(val.logits[held_idx])
    return selection_score(metric, y, pred, val.num_classes)


def best_method(result: Mapping[str, Any]) -> str | None:
    """The method of a :func:`run_posthoc` result with the best cross-fitted validation score
    (``val_score_cv``; a method without one, whose folds could not be fitted, is not ranked), or
    the best in-sample ``val_score`` where no method has one (a file written before
    cross-fitting, a validation split too small to fold). None when that score does not beat the
    uncorrected predictions' validation score (nothing is fitted for them: their out-of-fold
    score is their in-sample one), or when no method was fitted.

    With a normal class (false-alarm rates reported) only predictions whose validation
    false-alarm rate is within ``max_false_alarm`` compete: a method within the budget is
    preferred to uncorrected predictions over it whatever the scores, and None then means that
    no method keeps within the budget either (see :func:`within_budget`). The cross-fitted or
    in-sample ranking is then decided among the methods within the budget: where none of them
    has a cross-fitted score (an operating point whose folds could not all meet the budget), the
    in-sample score ranks them.

    Examples
    --------
    >>> best_method({"methods": ["lws", "posthoc_la"], "results": {
    ...     "lws": {"val_score": 0.98, "val_score_cv": 0.81},
    ...     "posthoc_la": {"val_score": 0.90, "val_score_cv": 0.86}}})
    'posthoc_la'
    >>> best_method({"metric": "balanced_accuracy", "raw": {"val": {"balanced_accuracy": 0.9}},
    ...     "methods": ["lws"], "results": {"lws": {"val_score": 0.98, "val_score_cv": 0.88}}}) is None
    True
    """
    entries = {m: result["results"][m] for m in result.get("methods", [])}
    raw_val = (result.get("raw") or {}).get("val") or {}
    raw = raw_val.get(result.get("metric", "balanced_accuracy"))
    scores = {m: (e.get("val_score_cv"), e.get("val_score")) for m, e in entries.items()}
    false_alarm = {m: (e.get("val") or {}).get("false_alarm") for m, e in entries.items()}
    false_alarm["raw"] = raw_val.get("false_alarm")
    return choose_best(raw, scores, budget=false_alarm_budget(result), false_alarm=false_alarm)


def false_alarm_budget(result: Mapping[str, Any]) -> float | None:
    """The false-alarm budget a :func:`run_posthoc` result's recommendation keeps on validation:
    its ``max_false_alarm`` where it has a normal class, else None (no budget)."""
    return result.get("max_false_alarm") if result.get("normal_class") is not None else None


def within_budget(false_alarm: float | None, budget: float | None) -> bool:
    """Whether a validation false-alarm rate keeps within the budget (no budget: True; an
    unknown rate, e.g. no normal sample on validation: False)."""
    return budget is None or (false_alarm is not None and false_alarm <= budget + 1e-12)


def choose_best(
    raw: float | None,
    scores: Mapping[str, tuple[float | None, float | None]],
    *,
    budget: float | None = None,
    false_alarm: Mapping[str, float | None] | None = None,
) -> str | None:
    """The rule of :func:`best_method` on ``method -> (val_score_cv, val_score)`` (the report
    applies it to means over runs): the best cross-fitted score, else the best in-sample one
    where no method has a cross-fitted score; None when it does not beat ``raw``, the
    uncorrected predictions' validation score. Ties go to the first method, then to ``raw``.

    With a false-alarm ``budget``, ``false_alarm`` maps each method (and ``"raw"``) to its
    validation false-alarm rate: methods over the budget do not compete, and uncorrected
    predictions over it lose to any method within it.

    Examples
    --------
    >>> choose_best(0.9, {"lws": (None, 0.98), "posthoc_la": (None, 0.95)})
    'lws'
    >>> choose_best(0.9, {"lws": (0.88, 0.98), "posthoc_la": (None, 0.95)}) is None
    True
    >>> choose_best(0.9, {"lws": (0.95, 0.98), "operating_point": (0.7, 0.7)}, budget=0.01,
    ...             false_alarm={"raw": 0.04, "lws": 0.03, "operating_point": 0.01})
    'operating_point'
    """
    if budget is not None:
        rates = false_alarm or {}
        scores = {m: s for m, s in scores.items() if within_budget(rates.get(m), budget)}
        if not within_budget(rates.get("raw"), budget):
            raw = None  # over the budget: any method within it is better
    i = 0 if any(cv is not None for cv, _ in scores.values()) else 1
    scored = {m: s[i] for m, s in scores.items() if s[i] is not None}
    if not scored:
        return None
    best = max(scored, key=lambda m: scored[m])
    return None if raw is not None and scored[best] <= raw else best


def _subset(split: RunSplit, idx: np.ndarray) -> RunSplit:
    """The samples ``idx`` of a split (same run, classifier and counts)."""
    from dataclasses import replace

    features = None if split.features is None else split.features[idx]
    return replace(split, logits=split.logits[idx], labels=split.labels[idx], features=features)


def run_posthoc(
    run: str | Path | RunFolder,
    methods: str | Sequence[str] = "all",
    *,
    metric: str = "balanced_accuracy",
    normal_class: int | None = None,
    max_false_alarm: float = 0.01,
    write: bool = True,
) -> dict[str, Any]:
    """Fit rebalancers on a run's validation split and evaluate them on its test split.

    Each method is fitted on ``run.val`` only; ``run.test`` is used for ``predict`` only. With
    ``methods="all"`` a method whose needs the run cannot meet (no ``classifier.npz``, a loss the
    theory does not cover, no normal class) is listed under ``skipped`` with the reason; asking
    for it by name is an error instead.

    Parameters
    ----------
    run : path or RunFolder
    methods : str or sequence of str
        ``"all"`` or registered names (see :func:`parse_methods`).
    metric : str
        Selection metric (:data:`SELECTION_METRICS`).
    normal_class : int or str, optional
        Adds false-alarm rates to every summary and enables ``operating_point``: a class index
        or name (``"ok"``, from the run's ``class_names``).
    max_false_alarm : float
        The operating point's validation false-alarm budget.
    write : bool
        Write the result to ``<run>/posthoc.json`` (atomically); the path is checked before any
        fitting.

    Returns
    -------
    dict
        ``run``, ``metric``, ``normal_class``, ``max_false_alarm``, ``methods`` (the fitted
        methods in order), ``raw`` and ``results[name]`` each with ``val``/``test`` summaries
        (:func:`evaluate_split`), the fitted description (:meth:`Rebalancer.to_dict`), ``skipped``
        (name -> reason), ``warnings`` (classes with very few validation samples, a split without
        the normal class, a tuned value on the edge of its grid), ``created`` and ``environment``.

    Raises
    ------
    ValueError
        Unknown method or metric, a method asked for by name whose needs are unmet, a normal
        class out of range, an impossible false-alarm budget, missing or malformed run files,
        ``posthoc.json`` not writable (with ``write=True``).
    """
    from datetime import datetime, timezone

    from ._io import environment_info, writable_file, write_json

    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    metric = _check_metric(metric)
    names = parse_methods(methods)
    explicit = "all" not in _method_tokens(methods)
    if normal_class is not None:
        normal_class = class_index("normal_class", normal_class, folder.class_names)
    max_false_alarm = check_fraction("max_false_alarm", max_false_alarm, low_open=False, high_open=True)
    if write:  # before any work: a run folder we cannot write in is known now, not after fitting
        try:
            writable_file("posthoc.json", folder.path / "posthoc.json")
        except InputError as exc:
            raise InputError(f"{exc} Pass --no-write (write=False) to fit and report without it.") from None
    val, test = folder.val, folder.test
    out: dict[str, Any] = {
        "run": str(folder.path),
        "metric": metric,
        "class_names": list(folder.class_names),
        "normal_class": normal_class,
        "max_false_alarm": max_false_alarm if normal_class is not None else None,
        "loss": folder.loss,
        "methods": [],
        "raw": {
            "val": evaluate_split(val, normal_class=normal_class),
            "test": evaluate_split(test, normal_class=normal_class),
        },
        "results": {},
        "skipped": {},
        "warnings": [],
    }
    support = np.bincount(val.labels, minlength=folder.num_classes)  # (k,)
    if support.min() < _FEW_VAL:
        few = np.flatnonzero(support < _FEW_VAL)
        out["warnings"].append(
            f"validation has fewer than {_FEW_VAL} samples in class(es) {few.tolist()} (min "
            f"{int(support.min())}): choices made on it are noisy; a larger validation split helps"
        )
    for split in (val, test):
        if normal_class is not None and not np.any(split.labels == normal_class):
            out["warnings"].append(
                f"the {split.name} split has no sample of normal_class {normal_class}: its false-alarm "
                "rates are null"
            )
    n_normal = int(support[normal_class]) if normal_class is not None else 0
    coarse = 0 < n_normal and 0 < max_false_alarm and n_normal * max_false_alarm < 1
    if "operating_point" in names and coarse:
        out["warnings"].append(
            f"validation has {n_normal} samples of normal_class {normal_class}: its false-alarm rate "
            f"moves in steps of {1 / n_normal:.3g}, coarser than the budget {max_false_alarm:g}, so the "
            "operating point holds it on validation only by allowing no false alarm there; test may exceed it"
        )
    for name in names:
        info = _REBALANCERS.get(name)
        reason = _unmet_need(info, folder, val, normal_class)
        if reason is not None:
            if explicit:
                raise InputError(f"rebalancer {name!r} cannot run on {str(folder.path)!r}: {reason}.")
            out["skipped"][name] = reason
            continue
        params: dict[str, Any] = {}
        if name == "operating_point":
            params = {"normal_class": normal_class, "max_false_alarm": max_false_alarm}
        try:
            est = create_rebalancer(name, **params).fit(val, metric=metric)
        except InputError as exc:
            # e.g. an operating point whose budget no threshold meets on this validation split:
            # with 'all' the run cannot support it, and the other methods still run
            if explicit:
                raise
            out["skipped"][name] = str(exc).rstrip(".")
            continue
        entry = est.to_dict()
        entry["val_score_cv"] = cross_fitted_score(name, val, metric=metric, **params)
        entry["val"] = evaluate_split(val, est.predict(val), normal_class)
        entry["test"] = evaluate_split(test, est.predict(test), normal_class)
        if isinstance(est, OperatingPoint):
            ops = est.operating_metrics(test)
            entry.update({f"test_{key}": value for key, value in ops.items()})
        out["results"][name] = entry
        out["methods"].append(name)
        out["warnings"].extend(f"{name}: {text}" for text in est.warnings_)
    out["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out["environment"] = environment_info()
    if write:
        write_json(folder.path / "posthoc.json", out)
    return out
