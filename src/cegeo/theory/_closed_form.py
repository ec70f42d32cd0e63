"""Closed-form implicit geometry of the parameterized CE family (THEORY.md §4.1).

Symbols: ``Dc`` (``delta_logit``) logit temperatures, ``Dl`` (``delta_label``) label
temperatures, ``N = diag(n_c)`` class counts, ``M`` the k x k class-level logit matrix whose
column y holds the logits of class y's embedding.

Closed form (THEORY.md §4.1)::

    a_c = Dc_c^-2 / sum_j Dc_j^-2
    M*  = Dc^-1 (I - 1 a^T) Dl^-1
    G_W = (M N M^T)^(1/2)
    G_H = N^-1/2 (N^1/2 M^T M N^1/2)^(1/2) N^-1/2

Weights ``omega`` and offsets ``iota`` drop out of the max-margin limit, so wCE, LA and Balanced
Softmax share CE's geometry (SELI).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import InputError, as_float_vector, fail
from ..data.imbalance import Groups
from ..data.imbalance import groups as make_groups

__all__ = [
    "Geometry",
    "class_logits",
    "distance",
    "etf_geometry",
    "geometry",
    "group_summary",
    "predict",
    "psd_sqrt",
]


def _counts(class_counts: Any) -> np.ndarray:
    """Positive real counts (theory accepts effective, non-integer counts too)."""
    c = as_float_vector("class_counts", class_counts)
    if np.any(c <= 0):
        raise fail("class_counts", "positive numbers (no empty class)", class_counts)
    return c


def _temperatures(loss_or_params: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Dc, Dl) from a ParametricCE, a mapping with delta_logit/delta_label, or None (CE)."""
    from ..losses import ParametricCE, loss_temperatures

    if loss_or_params is None:
        return np.ones(k), np.ones(k)
    if isinstance(loss_or_params, ParametricCE) or hasattr(loss_or_params, "forward"):
        return loss_temperatures(loss_or_params, k)
    if isinstance(loss_or_params, Mapping):
        unknown = set(loss_or_params) - {"delta_logit", "delta_label", "omega", "iota"}
        if unknown:
            raise fail(
                "loss_or_params", "a mapping with keys delta_logit and/or delta_label", sorted(unknown)
            )
        out = []
        for key in ("delta_logit", "delta_label"):
            v = loss_or_params.get(key)
            if v is None:
                out.append(np.ones(k))
                continue
            arr = as_float_vector(key, v, k)
            if np.any(arr <= 0):
                raise fail(key, "positive temperatures", v)
            out.append(arr)
        return out[0], out[1]
    raise fail(
        "loss_or_params", "a ParametricCE, a mapping of temperatures, or None", type(loss_or_params).__name__
    )


def class_logits(loss_or_params: Any, class_counts: Any) -> np.ndarray:
    """The limiting class-level logit matrix ``M*`` (THEORY.md §4.1), shape (k, k).

    ``M*[c, y]`` is logit c of class y's embedding. CE/wCE/LA/Balanced Softmax give the SEL matrix
    ``S = I - 11^T/k``; temperatures give ``Dc^-1 (I - 1 a^T) Dl^-1``. (M* does not depend on the
    counts; they fix k and are checked.)

    Parameters
    ----------
    loss_or_params : ParametricCE, mapping or None
        A loss of the family (temperatures read from its buffers), a mapping with
        ``delta_logit`` / ``delta_label`` arrays, or None for CE.
    class_counts : array-like of shape (k,)

    Returns
    -------
    numpy.ndarray of shape (k, k), float64

    Examples
    --------
    >>> class_logits(None, [10, 1]).tolist()
    [[0.5, -0.5], [-0.5, 0.5]]
    >>> class_logits({"delta_label": [1.0, 0.5]}, [10, 1]).tolist()
    [[0.5, -1.0], [-0.5, 1.0]]
    """
    n = _counts(class_counts)
    k = n.size
    dc, dl = _temperatures(loss_or_params, k)
    a = dc**-2 / np.sum(dc**-2)  # (k,)
    core = np.eye(k) - np.outer(np.ones(k), a)  # (k, k)
    return core / dc[:, None] / dl[None, :]


def psd_sqrt(A: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via ``eigh`` (tiny negative eigenvalues clipped to 0)."""
    A = 0.5 * (A + A.T)
    vals, vecs = np.linalg.eigh(A)
    vals = np.clip(vals, 0.0, None)
    return (vecs * np.sqrt(vals)) @ vecs.T


def _norms(G: np.ndarray) -> np.ndarray:
    """The vectors' norms from their Gram matrix (its diagonal, clipped at 0 against rounding)."""
    return np.sqrt(np.clip(np.diag(G), 0, None))


def _cos(G: np.ndarray) -> np.ndarray:
    """The vectors' pairwise cosines from their Gram matrix."""
    d = np.sqrt(np.clip(np.diag(G), 1e-300, None))
    return G / np.outer(d, d)


def distance(G: Any, G_ref: Any) -> float:
    """Normalised-Gram distance ``|| G/||G||_F - G_ref/||G_ref||_F ||_F`` (THEORY.md §5).

    Scale-free; 0 for the same shape, at most 2.

    Examples
    --------
    >>> import numpy as np
    >>> round(distance(3 * np.eye(2), np.eye(2)), 12)
    0.0
    """
    A = np.asarray(G, dtype=np.float64)
    B = np.asarray(G_ref, dtype=np.float64)
    if A.shape != B.shape or A.ndim != 2:
        raise fail("G", f"a matrix of shape {B.shape}", A.shape)
    na, nb = np.linalg.norm(A), np.linalg.norm(B)
    if na == 0 or nb == 0:
        raise InputError("`G` must be a non-zero matrix; got all zeros.")
    return float(np.linalg.norm(A / na - B / nb))


def group_summary(G_W: np.ndarray, G_H: np.ndarray, M: np.ndarray | None, grp: Groups) -> dict[str, float]:
    """Scale-free group summaries of two Grams, shared by theory, UFM and the trained-model probes.

    Keys (``maj`` is the first group, ``min`` the last: majority/minority or many/few):

    * ``W_ratio``, ``H_ratio``: mean squared norm of the majority over that of the minority,
      ``mean ||w_maj||^2 / mean ||w_min||^2`` (THEORY.md §4.4's "ratio").
    * ``W_cos_maj_maj``, ``W_cos_min_min``, ``W_cos_maj_min`` and the same for ``H``: mean
      pairwise cosines within/between groups (NaN where a group has one class).
    * ``cos_WH``: mean over classes of cos(w_c, h_c) (needs ``M``'s diagonal, or G cross terms).
    """
    maj, mino = grp.members(grp.names[0]), grp.members(grp.names[-1])
    out: dict[str, float] = {}
    for tag, G in (("W", G_W), ("H", G_H)):
        sq = np.diag(G)
        out[f"{tag}_ratio"] = float(np.mean(sq[maj]) / np.mean(sq[mino])) if mino.size else float("nan")
        C = _cos(G)
        out[f"{tag}_cos_maj_maj"] = _mean_offdiag(C, maj, maj)
        out[f"{tag}_cos_min_min"] = _mean_offdiag(C, mino, mino)
        out[f"{tag}_cos_maj_min"] = _mean_offdiag(C, maj, mino)
    if M is not None:
        wn, hn = np.sqrt(np.diag(G_W)), np.sqrt(np.diag(G_H))
        out["cos_WH"] = float(np.mean(np.diag(M) / (wn * hn)))
    return out


def _mean_offdiag(C: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    if rows.size == 0 or cols.size == 0:
        return float("nan")
    block = C[np.ix_(rows, cols)]
    if rows is cols or np.array_equal(rows, cols):
        if rows.size < 2:
            return float("nan")
        mask = ~np.eye(rows.size, dtype=bool)
        return float(block[mask].mean())
    return float(block.mean())


@dataclass(frozen=True)
class Geometry:
    """Predicted (or measured) geometry of classifiers ``W`` and class-mean embeddings ``H``.

    Attributes
    ----------
    M : ndarray (k, k)
        Class-level logits ``W H`` (column y: class y's embedding).
    G_W, G_H : ndarray (k, k)
        Grams ``W W^T`` and ``[<h_c, h_c'>]``.
    class_counts : ndarray (k,)
    groups : Groups
    """

    M: np.ndarray
    G_W: np.ndarray
    G_H: np.ndarray
    class_counts: np.ndarray
    groups: Groups
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.M.shape[0])

    @property
    def w_norms(self) -> np.ndarray:
        """||w_c||, shape (k,)."""
        return _norms(self.G_W)

    @property
    def h_norms(self) -> np.ndarray:
        """||h_c||, shape (k,)."""
        return _norms(self.G_H)

    @property
    def cos_W(self) -> np.ndarray:
        """Cosines between classifiers, shape (k, k)."""
        return _cos(self.G_W)

    @property
    def cos_H(self) -> np.ndarray:
        """Cosines between class-mean embeddings, shape (k, k)."""
        return _cos(self.G_H)

    @property
    def cos_WH(self) -> np.ndarray:
        """cos(w_c, h_c) per class, shape (k,)."""
        return np.diag(self.M) / (self.w_norms * self.h_norms)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts, groups, per-class norms, cosine matrices, logits and summary."""
        return {
            "class_counts": self.class_counts.tolist(),
            "groups": self.groups.as_dict(),
            "w_norms": self.w_norms.tolist(),
            "h_norms": self.h_norms.tolist(),
            "cos_WH": self.cos_WH.tolist(),
            "cos_W": self.cos_W.tolist(),
            "cos_H": self.cos_H.tolist(),
            "M": self.M.tolist(),
            "summary": dict(self.summary),
        }


def geometry(M: Any, class_counts: Any, groups: Groups | None = None) -> Geometry:
    """Grams of classifiers and class means from a class-level logit matrix (THEORY.md §4.1).

    ``G_W = (M N M^T)^(1/2)`` and ``G_H = N^-1/2 (N^1/2 M^T M N^1/2)^(1/2) N^-1/2`` in float64,
    both square roots from one SVD of ``M N^(1/2)`` (accurate for the rank-deficient ``M*``). ``G_W`` scales as sqrt(n), ``G_H`` as 1/sqrt(n): compare the
    scale-free summaries.

    Parameters
    ----------
    M : array-like (k, k)
    class_counts : array-like (k,)
        Positive counts (real values allowed, e.g. effective counts).
    groups : Groups, optional
        Majority/minority grouping; default :func:`cegeo.data.imbalance.groups` of the counts.

    Examples
    --------
    >>> g = geometry(class_logits(None, [1, 1, 1]), [1, 1, 1])
    >>> round(g.summary["W_cos_maj_maj"], 4)  # balanced: simplex ETF, cos = -1/(k-1)
    -0.5
    """
    n = _counts(class_counts)
    k = n.size
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (k, k):
        raise fail("M", f"a ({k}, {k}) matrix (k from class_counts)", M.shape)
    grp = groups if groups is not None else make_groups(_integerish(n))
    sq = np.sqrt(n)
    # Both square roots from one SVD of M N^1/2 = U S V^T: (M N M^T)^1/2 = U S U^T and
    # (N^1/2 M^T M N^1/2)^1/2 = V S V^T. Same matrices as eigh + sqrt of the squared products,
    # but M* is rank k-1 and the sqrt of a rounding-level null eigenvalue (~sqrt(eps)) cost up
    # to 1e-2 relative error in G_H at R = 1e6; the SVD keeps it near machine precision.
    U, s, Vt = np.linalg.svd(M * sq[None, :])
    G_W = (U * s) @ U.T
    G_W = 0.5 * (G_W + G_W.T)
    inner = (Vt.T * s) @ Vt
    G_H = 0.5 * (inner + inner.T) / sq[:, None] / sq[None, :]
    return Geometry(M, G_W, G_H, n, grp, group_summary(G_W, G_H, M, grp))


def _integerish(n: np.ndarray) -> np.ndarray:
    """Counts for grouping: scale real counts so the smallest is >= 1, then round."""
    scaled = n / n.min() * 1e6 if n.min() < 1 or np.any(n != np.round(n)) else n
    return np.maximum(np.round(scaled), 1).astype(np.int64)


def predict(loss: Any, class_counts: Any, groups: Groups | None = None) -> Geometry:
    """``geometry(class_logits(loss, counts), counts)``: the geometry training converges to.

    Examples
    --------
    >>> from cegeo.losses import create_loss
    >>> counts = [500] * 5 + [50] * 5
    >>> g = predict(create_loss("ldt", counts, gamma=0.5), counts)
    >>> round(g.summary["W_ratio"], 6), round(g.summary["W_cos_maj_min"], 4)
    (1.0, -0.1111)
    """
    return geometry(class_logits(loss, class_counts), class_counts, groups)


def etf_geometry(k: int) -> Geometry:
    """The simplex-ETF reference (balanced CE): equal norms, all cosines -1/(k-1)."""
    ones = np.ones(k)
    return geometry(class_logits(None, ones), ones)
