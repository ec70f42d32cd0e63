"""Imbalance profiles: per-class training counts, and majority/minority (or many/medium/few) groups.

Convention: the imbalance ratio is ``R = n_max / n_min >= 1`` (``R = 1`` is balanced). Other
repositories use the "imbalance factor" ``1/R`` (0.01 means R = 100); cegeo never does.

* (R, rho)-STEP (THEORY.md §3): ``k_min = rho * k`` minority classes of size ``n_min`` and
  ``k_maj = (1 - rho) * k`` majority classes of size ``R * n_min``; classes ``0..k_maj-1`` are the
  majorities.
* Long-tail (exponential, the CIFAR-LT rule): ``n_i = floor(n_max * R^(-i/(k-1)))``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_class_counts, check_finite, check_int, fail

__all__ = [
    "SAMPLERS",
    "Groups",
    "Profile",
    "explicit_counts",
    "groups",
    "imbalance_ratio",
    "longtail_counts",
    "majority_groups",
    "parse_profile",
    "sampling_probabilities",
    "step_counts",
    "step_groups",
]


def _check_ratio(R: Any) -> float:
    r = check_finite("R", R)
    if r < 1:
        raise fail("R", "a number >= 1 (R = n_max/n_min; cegeo does not use the factor 1/R)", R)
    return r


def _warn_if_rounded(counts: np.ndarray, r: float, kind: str) -> None:
    """Warn when whole-number counts move the realised ratio more than 10% off the requested R."""
    realised = float(counts.max() / counts.min())
    if abs(realised / r - 1) > 0.10:
        warnings.warn(
            f"{kind} profile: whole-number counts give R = {realised:.3g} (n_max = {counts.max()}, "
            f"n_min = {counts.min()}), not the requested R = {r:g}; use a larger n_max to get closer.",
            UserWarning,
            stacklevel=3,
        )


def step_k_min(k: int, rho: Any) -> int:
    """Number of minority classes ``rho * k``; must be a whole number in 1..k-1."""
    rho_f = check_finite("rho", rho)
    if not 0 < rho_f < 1:
        raise fail("rho", "a number in (0, 1) (the minority share of classes)", rho)
    k_min = rho_f * k
    if abs(k_min - round(k_min)) > 1e-9 or not 1 <= round(k_min) <= k - 1:
        raise fail("rho", f"a value with rho*k a whole number in 1..{k - 1} (k = {k})", rho)
    return round(k_min)


def step_counts(k: int, R: float, rho: float, n_max: int) -> np.ndarray:
    """(R, rho)-STEP class counts, majorities first.

    Parameters
    ----------
    k : int
        Number of classes, >= 2.
    R : float
        Imbalance ratio ``n_maj / n_min >= 1``.
    rho : float
        Share of minority classes; ``rho * k`` must be a whole number in 1..k-1.
    n_max : int
        Majority class size; ``n_min = floor(n_max / R)`` must be >= 1. A UserWarning says so
        when the whole-number counts put the realised ratio more than 10% off ``R``.

    Returns
    -------
    numpy.ndarray of shape (k,), int64

    Raises
    ------
    ValueError
        k < 2, R < 1, rho*k not whole, or n_max / R < 1.

    Examples
    --------
    >>> step_counts(4, R=10, rho=0.5, n_max=500).tolist()
    [500, 500, 50, 50]
    """
    k = check_int("k", k, minimum=2)
    r = _check_ratio(R)
    n_max = check_int("n_max", n_max, minimum=1)
    k_min = step_k_min(k, rho)
    n_min = math.floor(n_max / r + 1e-9)
    if n_min < 1:
        raise fail("n_max", f"a size with n_max / R >= 1 (R = {r:g})", n_max)
    counts = np.array([n_max] * (k - k_min) + [n_min] * k_min, dtype=np.int64)
    _warn_if_rounded(counts, r, "STEP")
    return counts


def longtail_counts(k: int, R: float, n_max: int) -> np.ndarray:
    """Exponential long-tail counts, the CIFAR-LT rule ``n_i = floor(n_max * R^(-i/(k-1)))``.

    Examples
    --------
    >>> longtail_counts(10, R=100, n_max=5000).tolist()
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    k = check_int("k", k, minimum=2)
    r = _check_ratio(R)
    n_max = check_int("n_max", n_max, minimum=1)
    i = np.arange(k, dtype=np.float64)
    # A tiny epsilon keeps exact products (e.g. 5000 * 100^-1 = 50) from flooring to 49.
    counts = np.floor(n_max * r ** (-i / (k - 1)) + 1e-9).astype(np.int64)
    if counts.min() < 1:
        raise fail("n_max", f"a size with n_max / R >= 1 (R = {r:g})", n_max)
    _warn_if_rounded(counts, r, "long-tail")
    return counts


def explicit_counts(counts: Sequence[int]) -> np.ndarray:
    """Validate user-given counts (positive integers) and return them as int64."""
    return check_class_counts(counts, "counts")


def imbalance_ratio(class_counts: Any) -> float:
    """``R = n_max / n_min >= 1``.

    Examples
    --------
    >>> imbalance_ratio([500, 50, 50])
    10.0
    """
    c = check_class_counts(class_counts)
    return float(c.max() / c.min())


#: The training samplers (``train.sampler``): every sample once per epoch, classes drawn
#: equally often, or in proportion to the square root of their counts. The theory ignores the
#: sampler: it weighs each sample's loss by how often it is drawn, and loss weights drop out of
#: the max-margin limit (THEORY.md §4), so runs are predicted at the dataset's class counts.
SAMPLERS = ("none", "class_balanced", "sqrt")


def sampling_probabilities(class_counts: Any, sampler: str) -> np.ndarray:
    """Probability of drawing each class under a sampler, shape (k,).

    ``none``: ``n_c / n`` (every sample once per epoch); ``class_balanced``: ``1 / k``;
    ``sqrt``: ``sqrt(n_c) / sum_j sqrt(n_j)``. Within a class, samples are equally likely.

    Examples
    --------
    >>> sampling_probabilities([9, 1], "sqrt").tolist()
    [0.75, 0.25]
    """
    n = check_class_counts(class_counts).astype(np.float64)
    if sampler not in SAMPLERS:
        raise fail("sampler", "one of " + ", ".join(map(repr, SAMPLERS)), sampler)
    if sampler == "none":
        q = n
    elif sampler == "class_balanced":
        q = np.ones_like(n)
    else:  # "sqrt"
        q = np.sqrt(n)
    return q / q.sum()


@dataclass(frozen=True)
class Groups:
    """Class groups of an imbalance profile.

    Attributes
    ----------
    names : tuple of str
        Group names, e.g. ``("majority", "minority")`` or ``("many", "medium", "few")``.
    labels : tuple of str
        The group of each class, length k.
    """

    names: tuple[str, ...]
    labels: tuple[str, ...]

    def members(self, name: str) -> np.ndarray:
        """Class indices in group ``name``."""
        if name not in self.names:
            raise fail("group", "one of " + ", ".join(map(repr, self.names)), name)
        return np.array([i for i, g in enumerate(self.labels) if g == name], dtype=np.int64)

    @property
    def balanced(self) -> bool:
        """Equal counts: the first group holds every class and the last none (see :func:`groups`);
        group summaries then pool every class."""
        return self.members(self.names[0]).size == len(self.labels) and self.members(self.names[-1]).size == 0

    @property
    def minority(self) -> np.ndarray:
        """Classes of the rarest group (``minority`` or ``few``)."""
        return self.members(self.names[-1])

    @property
    def majority(self) -> np.ndarray:
        """Classes of the most frequent group (``majority`` or ``many``)."""
        return self.members(self.names[0])

    def as_dict(self) -> dict[str, list[int]]:
        return {n: self.members(n).tolist() for n in self.names}


def majority_groups(counts: np.ndarray) -> Groups:
    """:func:`groups` without thresholds, for positive counts that may be real (effective counts,
    the theory's float profiles up to R ~ 1e300): all equal -> every class ``majority`` (balanced);
    two values -> the larger; else count >= the geometric mean of the extremes."""
    lo, hi = float(counts.min()), float(counts.max())
    if lo == hi:
        return Groups(("majority", "minority"), ("majority",) * counts.size)
    if np.unique(counts).size == 2:
        major = counts > lo
    else:
        prod = hi * lo
        cut = math.sqrt(prod) if math.isfinite(prod) else math.sqrt(hi) * math.sqrt(lo)
        major = counts >= cut
    return Groups(("majority", "minority"), tuple("majority" if m else "minority" for m in major))


def groups(class_counts: Any, thresholds: float | Sequence[float] | None = None) -> Groups:
    """Label classes majority/minority, or many/medium/few.

    Parameters
    ----------
    class_counts : array-like of shape (k,)
    thresholds : float or sequence of float, optional
        Without thresholds: classes whose count is the largest are the ``majority`` if the counts
        take exactly two values (a STEP profile), else classes with count >= the geometric mean of
        the extremes, sqrt(n_max * n_min), are the majority. With one threshold ``t``: count > t
        is majority, else minority. With two ``(t_many, t_few)``, ``t_many > t_few``:
        ``many`` (> t_many), ``medium``, ``few`` (< t_few) — the long-tail convention uses 100
        and 20.

    Raises
    ------
    ValueError
        Bad counts; thresholds not decreasing, or one threshold that leaves the majority or
        the minority empty. (With two thresholds a group may be empty: e.g. no ``few`` class in
        CIFAR-10-LT at R = 10; its recall is then NaN.)

    Examples
    --------
    >>> groups([50, 50, 5, 5]).labels
    ('majority', 'majority', 'minority', 'minority')
    >>> groups([500, 120, 50, 10], thresholds=(100, 20)).labels
    ('many', 'many', 'medium', 'few')
    """
    c = check_class_counts(class_counts)
    if thresholds is None:
        return majority_groups(c.astype(np.float64))
    if isinstance(thresholds, (str, bytes)):
        raise fail("thresholds", "one or two numbers", thresholds)
    if np.ndim(thresholds) == 0:
        thresholds = (thresholds,)  # type: ignore[assignment]
    ts = [check_finite("thresholds", t) for t in thresholds]  # type: ignore[union-attr]
    if len(ts) == 1:
        labels = tuple("majority" if n > ts[0] else "minority" for n in c)
        out = Groups(("majority", "minority"), labels)
    elif len(ts) == 2:
        hi, lo = ts
        if not hi > lo:
            raise fail("thresholds", "two decreasing numbers (t_many > t_few)", tuple(thresholds))
        labels = tuple("many" if n > hi else ("few" if n < lo else "medium") for n in c)
        out = Groups(("many", "medium", "few"), labels)
    else:
        raise fail("thresholds", "one or two numbers", tuple(thresholds))
    empty = [n for n in out.names if n not in out.labels]
    if empty and len(out.names) == 2:
        raise fail(
            "thresholds", f"a threshold that leaves both groups non-empty (counts {c.tolist()})", tuple(ts)
        )
    return out


def step_groups(k: int, rho: float) -> Groups:
    """Groups of a (R, rho)-STEP profile: classes 0..k_maj-1 majority, the rest minority.

    Unlike :func:`groups`, this also labels a balanced (R = 1) STEP profile.

    Examples
    --------
    >>> step_groups(4, 0.5).labels
    ('majority', 'majority', 'minority', 'minority')
    """
    k = check_int("k", k, minimum=2)
    k_min = step_k_min(k, rho)
    return Groups(("majority", "minority"), ("majority",) * (k - k_min) + ("minority",) * k_min)


@dataclass(frozen=True)
class Profile:
    """A parsed imbalance specification (see :func:`parse_profile`)."""

    kind: str  # "step", "longtail", "counts" or "none"
    R: float = 1.0
    rho: float = 0.5
    counts: tuple[int, ...] = ()

    def counts_for(self, k: int, n_max: int) -> np.ndarray:
        """Counts for ``k`` classes whose largest is ``n_max`` (ignored for explicit counts)."""
        if self.kind == "step":
            return step_counts(k, self.R, self.rho, n_max)
        if self.kind == "longtail":
            return longtail_counts(k, self.R, n_max)
        if self.kind == "counts":
            if len(self.counts) != k:
                raise fail("imbalance", f"{k} counts (one per class)", list(self.counts))
            return np.array(self.counts, dtype=np.int64)
        return np.full(k, n_max, dtype=np.int64)

    def groups_for(self, counts: Any, thresholds: Sequence[float] | None = None) -> Groups:
        """Groups of these counts: STEP's own layout, else :func:`groups` (with thresholds)."""
        c = check_class_counts(counts)
        if self.kind == "step" and thresholds is None:
            return step_groups(c.size, self.rho)
        return groups(c, thresholds)

    def describe(self) -> str:
        if self.kind == "step":
            return f"step:R={self.R:g},rho={self.rho:g}"
        if self.kind == "longtail":
            return f"longtail:R={self.R:g}"
        if self.kind == "counts":
            return "counts:" + ",".join(map(str, self.counts))
        return "none"


def _kv(text: str, param: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise fail(param, "comma-separated key=value pairs", text)
        key, value = (s.strip() for s in part.split("=", 1))
        if key in out:
            raise fail(param, f"each key once ({key} is given twice)", text)
        out[key] = value
    return out


def parse_profile(spec: str, param: str = "imbalance") -> Profile:
    """Parse ``step:R=10,rho=0.5``, ``longtail:R=100``, ``counts:500,50,50`` or ``none``.

    R is ``n_max / n_min >= 1``.

    Examples
    --------
    >>> parse_profile("step:R=10,rho=0.5")
    Profile(kind='step', R=10.0, rho=0.5, counts=())
    >>> parse_profile("longtail:R=0.01")
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `R` must be a number >= 1 (R = n_max/n_min; cegeo does not use the factor 1/R); got '0.01'.
    """
    if not isinstance(spec, str):
        raise fail(param, "a string such as 'step:R=10,rho=0.5'", spec)
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind in ("none", "balanced") and not rest:
        return Profile("none")
    if kind == "counts":
        try:
            counts = [int(x) for x in rest.split(",") if x.strip()]
        except ValueError:
            raise fail(param, "'counts:' followed by comma-separated integers", spec) from None
        return Profile("counts", counts=tuple(int(c) for c in explicit_counts(counts)))
    if kind not in ("step", "longtail"):
        raise fail(param, "'step:R=..,rho=..', 'longtail:R=..', 'counts:n1,n2,..' or 'none'", spec)
    kv = _kv(rest, param)
    allowed = {"step": {"R", "rho"}, "longtail": {"R"}}[kind]
    extra = set(kv) - allowed
    if extra or "R" not in kv:
        raise fail(param, f"'{kind}:' with keys {', '.join(sorted(allowed))}", spec)
    R = _check_ratio(kv["R"])
    rho = check_finite("rho", kv.get("rho", 0.5))
    if kind == "step" and not 0 < rho < 1:
        raise fail("rho", "a number in (0, 1) (the minority share of classes)", kv.get("rho"))
    return Profile(kind, R=R, rho=rho)
