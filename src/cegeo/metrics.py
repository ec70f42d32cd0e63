"""Minority-first classification metrics, with scikit-learn's definitions (tested against it).

Names follow scikit-learn: ``*_score`` is higher-is-better, ``*_error`` lower-is-better.

Missing classes (documented behaviour, tested):

* Pass ``num_classes`` so every class 0..k-1 is accounted for even when it is absent from
  ``y_true`` or ``y_pred``.
* A class absent from ``y_true`` has undefined recall: it is reported as NaN in per-class tables
  and left out of every recall average (balanced accuracy, group recall, worst-class recall,
  G-mean), as :func:`sklearn.metrics.balanced_accuracy_score` does.
* A class never predicted has precision 0 (scikit-learn's ``zero_division=0``), F1 0, and
  false-positive rate 0.
* G-mean is the geometric mean of the per-class recalls (imbalanced-learn's
  ``geometric_mean_score`` without correction): one class with recall 0 makes it 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._validation import InputError, check_int, fail
from .data.imbalance import Groups

__all__ = [
    "balanced_accuracy_score",
    "classification_summary",
    "confusion_matrix",
    "convergence_point",
    "false_alarm_error",
    "false_positive_rates",
    "geometric_mean_score",
    "group_recall_score",
    "macro_f1_score",
    "per_class_scores",
    "summary_from_confusion",
    "worst_class_recall_score",
]


def _labels(y_true: Any, y_pred: Any, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if yt.ndim != 1 or yp.ndim != 1:
        raise fail("y_true/y_pred", "1-D arrays of class labels", (yt.shape, yp.shape))
    if yt.shape != yp.shape:
        raise fail("y_pred", f"an array of the same length as y_true ({yt.size})", yp.size)
    if yt.size == 0:
        raise fail("y_true", "a non-empty array of labels", [])
    for name, y in (("y_true", yt), ("y_pred", yp)):
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
                continue
            raise fail(name, "integer class labels", y.dtype.name)
    yt = yt.astype(np.int64)
    yp = yp.astype(np.int64)
    if num_classes is None:
        k = int(max(yt.max(), yp.max())) + 1
    else:
        k = check_int("num_classes", num_classes, minimum=1)
    for name, y in (("y_true", yt), ("y_pred", yp)):
        if y.min() < 0 or y.max() >= k:
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise fail(name, f"labels in 0..{k - 1}", bad)
    return yt, yp, k


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Confusion matrix ``C[i, j]`` = samples of class i predicted j, shape (k, k).

    Examples
    --------
    >>> confusion_matrix([0, 0, 1], [0, 1, 1], num_classes=3).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    """
    yt, yp, k = _labels(y_true, y_pred, num_classes)
    return _confusion(yt, yp, k)


def _confusion(yt: np.ndarray, yp: np.ndarray, k: int) -> np.ndarray:
    # one bincount of checked labels: what scikit-learn computes, without its input validation,
    # which cost ~5 ms a call (post-hoc grid searches score hundreds of predictions)
    return np.bincount(yt * k + yp, minlength=k * k).reshape(k, k)


def per_class_scores(y_true: Any, y_pred: Any, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Per-class support, recall, precision, F1 and false-positive rate, each shape (k,).

    Recall is NaN for classes absent from ``y_true``; precision and F1 are 0 for classes never
    predicted.

    Examples
    --------
    >>> s = per_class_scores([0, 0, 1, 1], [0, 1, 1, 1], num_classes=3)
    >>> s["recall"].tolist()
    [0.5, 1.0, nan]
    >>> s["support"].tolist()
    [2, 2, 0]
    """
    yt, yp, k = _labels(y_true, y_pred, num_classes)
    return _scores(_confusion(yt, yp, k))


def _scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`per_class_scores` of a confusion matrix (scikit-learn's formulas, zero_division=0)."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        both = support + predicted
        f1 = np.where(tp > 0, 2 * tp / np.maximum(both, 1), 0.0)
        fp = predicted - tp
        negatives = cm.sum() - support
        fpr = np.where(negatives > 0, fp / np.maximum(negatives, 1), np.nan)
    return {
        "support": support.astype(np.int64),
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "false_positive_rate": fpr,
    }


def _recalls(y_true: Any, y_pred: Any, num_classes: int | None) -> np.ndarray:
    """Recalls of the classes present in y_true (absent classes dropped)."""
    r = per_class_scores(y_true, y_pred, num_classes)["recall"]
    return r[~np.isnan(r)]


def balanced_accuracy_score(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``y_true``.

    Equals :func:`sklearn.metrics.balanced_accuracy_score`.

    Examples
    --------
    >>> balanced_accuracy_score([0, 0, 0, 1], [0, 0, 1, 1])
    0.8333333333333333
    """
    return float(np.mean(_recalls(y_true, y_pred, num_classes)))


def macro_f1_score(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over the classes present in ``y_true`` or ``y_pred``.

    Equals ``sklearn.metrics.f1_score(average="macro", zero_division=0)``.
    """
    yt, yp, k = _labels(y_true, y_pred, num_classes)
    cm = _confusion(yt, yp, k)
    present = (cm.sum(axis=1) > 0) | (cm.sum(axis=0) > 0)
    return float(np.mean(_scores(cm)["f1"][present]))


def worst_class_recall_score(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Smallest per-class recall over the classes present in ``y_true``."""
    return float(np.min(_recalls(y_true, y_pred, num_classes)))


def geometric_mean_score(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Geometric mean of the per-class recalls (G-mean), classes present in ``y_true``.

    Examples
    --------
    >>> round(geometric_mean_score([0, 0, 1, 1], [0, 1, 1, 1]), 4)
    0.7071
    """
    r = _recalls(y_true, y_pred, num_classes)
    if np.any(r == 0):
        return 0.0
    return float(np.exp(np.mean(np.log(r))))


def group_recall_score(
    y_true: Any, y_pred: Any, groups: Groups, num_classes: int | None = None
) -> dict[str, float]:
    """Mean recall of each group's classes (classes absent from ``y_true`` are skipped).

    A group with no class present in ``y_true`` gets NaN.

    Examples
    --------
    >>> from cegeo.data.imbalance import groups
    >>> g = groups([10, 10, 1, 1])
    >>> group_recall_score([0, 1, 2, 3], [0, 1, 2, 0], g)
    {'majority': 1.0, 'minority': 0.5}
    """
    if not isinstance(groups, Groups):
        raise fail(
            "groups",
            "a cegeo.data.imbalance.Groups (e.g. groups(class_counts), or Groups(names, labels))",
            type(groups).__name__,
        )
    k = len(groups.labels)
    if num_classes is not None and check_int("num_classes", num_classes) != k:
        raise fail("groups", f"groups for {num_classes} classes", k)
    recall = per_class_scores(y_true, y_pred, k)["recall"]
    out: dict[str, float] = {}
    for name in groups.names:
        r = recall[groups.members(name)]
        r = r[~np.isnan(r)]
        out[name] = float(np.mean(r)) if r.size else float("nan")
    return out


def false_positive_rates(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Per-class false-positive rate ``FP_c / (FP_c + TN_c)``, shape (k,).

    The share of samples *not* of class c that were predicted c (NaN if every sample is of
    class c).
    """
    return _scores(confusion_matrix(y_true, y_pred, num_classes))["false_positive_rate"]


def false_alarm_error(y_true: Any, y_pred: Any, normal_class: int, num_classes: int | None = None) -> float:
    """False-alarm rate: share of ``normal_class`` samples predicted as any other class.

    In a factory or clinic the normal class is "no defect" / "healthy"; an alarm is a prediction
    of any defect or disease. Lower is better.

    Raises
    ------
    ValueError
        ``normal_class`` outside 0..k-1 or absent from ``y_true``.

    Examples
    --------
    >>> false_alarm_error([0, 0, 0, 0, 1], [0, 0, 1, 2, 1], normal_class=0, num_classes=3)
    0.5
    """
    yt, yp, k = _labels(y_true, y_pred, num_classes)
    c = check_int("normal_class", normal_class)
    if not 0 <= c < k:
        raise fail("normal_class", f"a class in 0..{k - 1}", normal_class)
    normal = yt == c
    if not normal.any():
        raise InputError(f"`normal_class` {c} has no samples in y_true; the false-alarm rate is undefined.")
    return float(np.mean(yp[normal] != c))


def _check_confusion(confusion: Any) -> np.ndarray:
    """A square (k, k) matrix of non-negative integer counts, as int64."""
    try:
        arr = np.asarray(confusion)
    except (TypeError, ValueError):
        raise fail("confusion", "a (k, k) matrix of non-negative integer counts", confusion) from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise fail("confusion", "a square (k, k) matrix", getattr(arr, "shape", confusion))
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise fail("confusion", "non-negative integer counts", arr.dtype)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any(arr < 0):
        raise fail("confusion", "non-negative integer counts", arr)
    return arr.astype(np.int64)


def summary_from_confusion(
    confusion: Any, groups: Any = None, normal_class: int | None = None
) -> dict[str, Any]:
    """Every metric of :func:`classification_summary`, from a confusion matrix.

    The trainer's probes count predictions on the device (all-reduced across ranks) and only this
    (k, k) matrix reaches the CPU. Same conventions as the functions above (recall NaN for classes
    absent from the truth, precision/F1 0 for classes never predicted); a ``normal_class`` absent
    from the split gives ``false_alarm = None``.

    Parameters
    ----------
    confusion : array-like of shape (k, k)
        ``C[i, j]`` = samples of class i predicted j.
    groups : cegeo.data.Groups, optional
    normal_class : int, optional

    Raises
    ------
    ValueError
        ``confusion`` not a square matrix of non-negative integer counts, ``groups`` not for k
        classes, ``normal_class`` outside 0..k-1.

    Examples
    --------
    >>> s = summary_from_confusion([[3, 1], [0, 2]])
    >>> s["accuracy"], s["balanced_accuracy"], s["per_class"]["recall"]
    (0.8333333333333334, 0.875, [0.75, 1.0])
    """
    cm = _check_confusion(confusion)
    k = cm.shape[0]
    if groups is not None and (not isinstance(groups, Groups) or len(groups.labels) != k):
        got = len(groups.labels) if isinstance(groups, Groups) else type(groups).__name__
        raise fail("groups", f"cegeo.data.Groups for {k} classes", got)
    if normal_class is not None:
        normal_class = check_int("normal_class", normal_class)
        if not 0 <= normal_class < k:
            raise fail("normal_class", f"a class in 0..{k - 1}", normal_class)
    n = int(cm.sum())
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        denom = 2 * tp + (predicted - tp) + (support - tp)
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
        negatives = n - support
        fpr = np.where(negatives > 0, (predicted - tp) / np.maximum(negatives, 1), np.nan)
    present = recall[~np.isnan(recall)]
    out: dict[str, Any] = {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "balanced_accuracy": float(np.mean(present)) if present.size else float("nan"),
        "macro_f1": float(np.mean(f1[(support > 0) | (predicted > 0)])) if n else float("nan"),
        "worst_class_recall": float(np.min(present)) if present.size else float("nan"),
        "g_mean": (0.0 if np.any(present == 0) else float(np.exp(np.mean(np.log(present)))))
        if present.size
        else float("nan"),
    }
    if groups is not None:
        gr = {}
        for name in groups.names:
            r = recall[groups.members(name)]
            r = r[~np.isnan(r)]
            gr[name] = float(np.mean(r)) if r.size else float("nan")
        out["group_recall"] = gr
    if normal_class is not None:
        c = int(normal_class)
        out["false_alarm"] = float(1.0 - recall[c]) if support[c] > 0 else None
    out["per_class"] = {
        "support": support.tolist(),
        "recall": [None if np.isnan(v) else float(v) for v in recall],
        "precision": precision.tolist(),
        "f1": f1.tolist(),
        "false_positive_rate": [None if np.isnan(v) else float(v) for v in fpr],
    }
    return out


def classification_summary(
    y_true: Any,
    y_pred: Any,
    num_classes: int,
    groups: Groups | None = None,
    normal_class: int | None = None,
) -> dict[str, Any]:
    """Every metric above in one JSON-ready dict (the trainer's and ``cegeo evaluate``'s table).

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``worst_class_recall``, ``g_mean``,
        ``group_recall`` (if groups), ``false_alarm`` (if normal_class), and ``per_class`` with
        lists of support, recall, precision, f1, false_positive_rate (NaN as None).
    """
    yt, yp, k = _labels(y_true, y_pred, num_classes)
    if normal_class is not None:
        false_alarm_error(yt, yp, normal_class, k)  # validates the class (in range, present)
    return summary_from_confusion(confusion_matrix(yt, yp, k), groups, normal_class)


def convergence_point(
    records: Sequence[Mapping[str, Any]], fraction: float = 0.95
) -> tuple[int, float] | None:
    """First probed ``(epoch, time_s)`` whose validation balanced accuracy reaches ``fraction``
    of the best one over the run (``final.json``'s history, ``summary.csv`` and the report all
    use this one definition; the best, not the final value, so that a run whose accuracy falls
    at the end is not credited with an early "convergence" to its fallen level).

    ``records`` are ``metrics.jsonl`` lines. ``time_s`` is the training time up to that epoch
    (probes excluded, docs/run-folder.md).

    Examples
    --------
    >>> recs = [{"epoch": e, "time_s": e * 2.0, "val": {"balanced_accuracy": a}}
    ...         for e, a in [(1, 0.5), (2, 0.86), (3, 0.95), (4, 0.9)]]
    >>> convergence_point(recs)  # 95% of the best 0.95 is 0.9025
    (3, 6.0)
    """
    pts = [
        (int(r["epoch"]), float(r.get("time_s", math.nan)), (r.get("val") or {}).get("balanced_accuracy"))
        for r in records
    ]
    pts = [p for p in pts if p[2] is not None]
    if not pts:
        return None
    target = fraction * max(p[2] for p in pts)
    return next((epoch, t) for epoch, t, score in pts if score >= target)
