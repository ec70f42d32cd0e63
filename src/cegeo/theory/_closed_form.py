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

Numerics of :func:`predict`. With ``u = Dc^-1 1 / ||Dc^-1 1||`` (a unit vector) the closed form
factors as ``M* = (I - u u^T) Dc^-1 Dl^-1``, so ``A = M* N^1/2 = (I - u u^T) D`` with the diagonal
``D = N^1/2 Dc^-1 Dl^-1``. Its null vectors are known exactly: ``u^T A = 0`` (that is
``M*^T Dc^-1 1 = 0``) and ``A D^-1 u = 0`` (``M* Dl 1 = 0``). Classes with the same count and
temperatures span exact singular subspaces too: a vector that sums to zero over such a group is
mapped to ``d_g`` times itself. :func:`predict` splits both off exactly: the group subspaces in
closed form, and the null vectors by writing what is left as ``Q C`` with ``Q`` an exact
orthonormal (Householder) basis of ``u``'s complement, so that the thin SVD of the
``(g - 1) x g`` matrix ``C = Q^T D`` (``g`` distinct classes) has exactly the ``g - 1`` non-zero
singular values. (One SVD of ``A`` itself leaves a rounding-level singular value where the exact
one is 0; with temperatures far apart (R = 1e6, |gamma| >= 1) that swamped the small Gram entries
and cost up to all digits of the norm ratios and small cosines.) :func:`geometry` of an arbitrary
``M`` cannot know its null vectors and takes one SVD of ``M N^1/2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from .._validation import InputError, OutOfRangeError, as_float_vector, check_int, fail
from ..data._dataset import described
from ..data.imbalance import Groups, majority_groups

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
    if c.size < 2:
        raise fail("class_counts", "at least 2 classes", class_counts)
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
    dc, dl = _temperatures(loss_or_params, n.size)
    return _class_logits(dc, dl)


def _class_logits(dc: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """``Dc^-1 (I - 1 a^T) Dl^-1`` with every entry to a few ulps (no cancellation in ``1 - a_y``)."""
    k = dc.size
    w = (dc.min() / dc) ** 2  # Dc^-2 scaled to max 1 (a is scale-free), (k,)
    total = w.sum()
    rest = total - w  # sum_{j != y} w_j: exact enough unless w_y dominates the sum ...
    top = int(np.argmax(w))
    rest[top] = np.delete(w, top).sum()  # ... which only the largest term can do: sum the others
    core = -np.outer(np.ones(k), w / total)  # (k, k)
    core[np.diag_indices(k)] = rest / total  # 1 - a_y
    with np.errstate(over="ignore", under="ignore"):  # checked just below
        M = core / dc[:, None] / dl[None, :]
    if not np.all(np.isfinite(M)):
        raise _too_extreme(dc, dl, None, "a logit matrix M* beyond 1e308")
    return M


def _too_extreme(dc: np.ndarray, dl: np.ndarray, n: np.ndarray | None, got: str) -> OutOfRangeError:
    """The error for temperatures (and counts) whose limiting geometry float64 cannot hold."""
    counts = "" if n is None else f"n from {n.min():.3g} to {n.max():.3g}; "
    return OutOfRangeError(
        "loss",
        "temperatures whose limiting geometry fits in float64 for these counts "
        f"({counts}Dc from {dc.min():.3g} to {dc.max():.3g}, Dl from {dl.min():.3g} to {dl.max():.3g})",
        got,
    )


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
    """The vectors' pairwise cosines from their Gram matrix (clipped to [-1, 1] against rounding)."""
    d = np.sqrt(np.clip(np.diag(G), 1e-300, None))
    return np.clip(G / d[:, None] / d[None, :], -1.0, 1.0)  # no outer(d, d): it can overflow


def distance(G: Any, G_ref: Any) -> float:
    """Normalised-Gram distance ``|| G/||G||_F - G_ref/||G_ref||_F ||_F`` (THEORY.md §5).

    Scale-free; 0 for the same shape, at most 2.

    Examples
    --------
    >>> import numpy as np
    >>> round(distance(3 * np.eye(2), np.eye(2)), 12)
    0.0
    """
    for param, value in (("G", G), ("G_ref", G_ref)):
        if isinstance(value, Geometry):  # which Gram? the classifiers' or the class means'
            raise fail(
                param, "a (k, k) Gram matrix, e.g. geometry.G_W or geometry.G_H", described("a Geometry")
            )
    A = np.asarray(G, dtype=np.float64)
    B = np.asarray(G_ref, dtype=np.float64)
    if A.shape != B.shape or A.ndim != 2:
        raise fail("G", f"a matrix of shape {B.shape}", A.shape)
    if not (np.any(A) and np.any(B)):
        raise InputError("`G` must be a non-zero matrix; got all zeros.")
    A, B = A / np.abs(A).max(), B / np.abs(B).max()  # the norms of 1e200-sized entries overflow
    return float(np.linalg.norm(A / np.linalg.norm(A) - B / np.linalg.norm(B)))


def group_summary(G_W: np.ndarray, G_H: np.ndarray, M: np.ndarray | None, grp: Groups) -> dict[str, float]:
    """Scale-free group summaries of two Grams, shared by theory, UFM and the trained-model probes.

    Keys (``maj`` is the first group, ``min`` the last: majority/minority or many/few):

    * ``W_ratio``, ``H_ratio``: mean squared norm of the majority over that of the minority,
      ``mean ||w_maj||^2 / mean ||w_min||^2`` (THEORY.md §4.4's "ratio").
    * ``W_cos_maj_maj``, ``W_cos_min_min``, ``W_cos_maj_min`` and the same for ``H``: mean
      pairwise cosines within/between groups (NaN where a group has one class).
    * ``cos_WH``: mean over classes of cos(w_c, h_c) (needs ``M``'s diagonal, or G cross terms).

    Balanced counts (one group holds every class, as :func:`cegeo.data.imbalance.groups` labels
    equal counts): every class is both a majority and a minority, so ``*_ratio`` is 1 and the
    three mean cosines are the same mean over all pairs (-1/(k-1) for an ETF). Theory, UFM and
    probes summarise alike, so their gaps stay defined.
    """
    if len(grp.labels) != G_W.shape[0]:
        raise fail(
            "groups",
            f"a group label for each of the k = {G_W.shape[0]} classes",
            described(f"labels for {len(grp.labels)} classes"),
        )
    maj, mino = grp.members(grp.names[0]), grp.members(grp.names[-1])
    if grp.balanced:
        mino = maj
    out: dict[str, float] = {}
    for tag, G in (("W", G_W), ("H", G_H)):
        sq = np.diag(G)
        # a ratio beyond 1e308 is inf; zero norms (a network whose features died) give NaN
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            out[f"{tag}_ratio"] = float(np.mean(sq[maj]) / np.mean(sq[mino])) if mino.size else float("nan")
        C = _cos(G)
        out[f"{tag}_cos_maj_maj"] = _mean_offdiag(C, maj, maj)
        out[f"{tag}_cos_min_min"] = _mean_offdiag(C, mino, mino)
        out[f"{tag}_cos_maj_min"] = _mean_offdiag(C, maj, mino)
    if M is not None:
        wn, hn = _norms(G_W), _norms(G_H)
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero norm gives NaN, silently
            out["cos_WH"] = float(np.mean(np.clip(np.diag(M) / wn / hn, -1.0, 1.0)))
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
        """cos(w_c, h_c) per class (clipped to [-1, 1] against rounding), shape (k,)."""
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero norm gives NaN, silently
            return np.clip(np.diag(self.M) / self.w_norms / self.h_norms, -1.0, 1.0)

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
    both square roots from one SVD of ``M N^(1/2)``. ``G_W`` scales as sqrt(n), ``G_H`` as
    1/sqrt(n): compare the scale-free summaries. For the closed form ``M*`` of a loss use
    :func:`predict`, which knows ``M*``'s null vectors and stays accurate when temperatures are far
    apart (module docstring); this generic route leaves a rounding-level singular value in their
    place.

    Parameters
    ----------
    M : array-like (k, k)
    class_counts : array-like (k,)
        Positive counts (real values allowed, e.g. effective counts).
    groups : Groups, optional
        Majority/minority grouping; default: the rule of :func:`cegeo.data.imbalance.groups`,
        applied to the (possibly real) counts.

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
    if not np.all(np.isfinite(M)):
        raise fail("M", "a matrix of finite numbers", described("non-finite entries"))
    grp = groups if groups is not None else majority_groups(n)
    sq = np.sqrt(n)
    # Both square roots from one SVD of M N^1/2 = U S V^T: (M N M^T)^1/2 = U S U^T and
    # (N^1/2 M^T M N^1/2)^1/2 = V S V^T (the sqrt of squared products would lose half the digits).
    U, s, Vt = np.linalg.svd(M * sq[None, :])
    G_W = (U * s) @ U.T
    G_W = 0.5 * (G_W + G_W.T)
    inner = (Vt.T * s) @ Vt
    G_H = 0.5 * (inner + inner.T) / sq[:, None] / sq[None, :]
    return Geometry(M, G_W, G_H, n, grp, group_summary(G_W, G_H, M, grp))


def _exp_max1(log_x: np.ndarray) -> np.ndarray:
    """``exp(log_x)`` scaled so that its largest entry is 1."""
    return np.exp(log_x - log_x.max())


def _householder_complement(x: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the complement of ``x`` (k >= 2), shape (k, k - 1).

    The columns of a Householder reflector ``H = I - v v^T / (1 + |u_p|)``, ``u = x / |x|``,
    ``v = u + sign(u_p) e_p``, that maps ``u`` to ``-sign(u_p) e_p``, less column ``p``. Pivoting on
    the largest ``|u_p|`` makes every entry accurate to a few ulps, tiny ones included: ``H_ij =
    delta_ij - u_i u_j / (1 + |u_p|)`` off row and column ``p`` (no cancellation: the subtracted
    term is at most 1/2 on the diagonal), ``H_pj = -sign(u_p) u_j``.
    """
    u = x / np.linalg.norm(x)  # callers pass max |x| = 1: no overflow
    p = int(np.argmax(np.abs(u)))
    sign = 1.0 if u[p] >= 0 else -1.0
    H = -np.outer(u, u / (1.0 + abs(u[p])))  # (k, k)
    H[np.diag_indices(u.size)] += 1.0
    H[p, :] = -sign * u
    H[:, p] = -sign * u
    return np.delete(H, p, axis=1)


def _graded_svd(T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD ``T = V S U^T`` of a tall matrix whose rows differ widely in scale.

    Returns ``(U, s, V)``. Rows sorted by decreasing norm, then Householder QR with column pivoting
    ``T[:, piv] = Q1 R1`` and an SVD of the small ``R1``: QR preconditioning keeps the small rows'
    digits in the singular vectors, where an SVD of ``T`` itself lost up to 1e-5 relative in small
    cosines (random counts and temperatures e^-5..e^5, against 50-digit mpmath). Drmac and Veselic,
    "New fast and accurate Jacobi SVD algorithm", SIMAX 2008, use the same preconditioner.
    """
    order = np.argsort(-np.linalg.norm(T, axis=1), kind="stable")
    Q1, R1, piv = scipy.linalg.qr(T[order], mode="economic", pivoting=True)
    X, s, Yt = np.linalg.svd(R1)
    V = np.empty_like(Q1)
    V[order] = Q1 @ X
    U = np.empty_like(Yt.T)
    U[piv] = Yt.T
    return U, s, V


def _closed_form_grams(dc: np.ndarray, dl: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(G_W, G_H)`` of ``M* = (I - u u^T) Dc^-1 Dl^-1`` with its exact singular subspaces split off.

    See the module docstring. ``A = M* N^1/2 = (I - u u^T) D``, ``D = diag(d)``. Group the classes
    with equal ``(n, Dc, Dl)``; ``E`` (k x g) has the unit group indicators as columns, ``m_g`` the
    group sizes. Then ``A = E A_r E^T + sum_g d_g Pi_g`` with ``Pi_g`` the projector onto vectors
    that sum to zero over group g and ``A_r = (I - u_r u_r^T) D_r`` (g x g, ``u_r = E^T u`` a unit
    vector), so ``(A A^T)^1/2 = E (A_r A_r^T)^1/2 E^T + sum_g d_g Pi_g`` and the same for
    ``A^T A``. With ``Q`` (g x (g-1)) an orthonormal basis of ``u_r``'s complement,
    ``I - u_r u_r^T = Q Q^T``, so ``A_r = Q C`` with ``C = Q^T D_r`` ((g-1) x g, rank g-1: its
    row space is the complement of the null vector ``D_r^-1 u_r``). The thin SVD ``C = U S V^T``
    gives ``(A_r A_r^T)^1/2 = (Q U) S (Q U)^T`` and ``(A_r^T A_r)^1/2 = V S V^T``.
    """
    k = n.size
    # d = sqrt(n) / (Dc Dl) in logs: no overflow for extreme temperatures; scale restored at the end.
    log_d = 0.5 * np.log(n) - np.log(dc) - np.log(dl)
    scale = float(log_d.max())
    d = np.exp(log_d - scale)  # (k,), max 1
    _, first, inverse, m = np.unique(
        np.stack([n, dc, dl], axis=1), axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    g = m.size
    d_r = d[first]  # (g,)
    red_W = np.zeros((g, g))
    red_H = np.zeros((g, g))
    if g > 1:
        # A_r = (I - u_r u_r^T) D_r = Q C with Q an orthonormal basis of u_r's complement and
        # C = Q^T D_r, (g-1) x g: its thin SVD has exactly the g-1 non-zero singular values of A_r
        # (none at rounding level), and each entry Q_li d_i of C is exact to an ulp.
        # u_r ∝ sqrt(m) / Dc, from logs (no overflow at extreme temperatures).
        Q = _householder_complement(_exp_max1(0.5 * np.log(m) - np.log(dc[first])))  # (g, g-1)
        U, s, V = _graded_svd(d_r[:, None] * Q)  # C^T = D_r Q = V S U^T
        L = (Q @ U) * np.sqrt(s)  # (A_r A_r^T)^1/2 = (Q U) S (Q U)^T, (g, g-1)
        R = V * np.sqrt(s)  # (A_r^T A_r)^1/2 = V S V^T, (g, g-1)
        red_W = L @ L.T
        red_H = R @ R.T
    # Expand: entry (i, j) of E X E^T is X[g_i, g_j] / sqrt(m_gi m_gj); add d_g Pi_g within groups.
    inv_sqrt_m = 1.0 / np.sqrt(m[inverse])  # (k,)
    same = inverse[:, None] == inverse[None, :]  # (k, k)
    within = np.where(same, -(d[:, None] / m[inverse][:, None]), 0.0)
    within[np.diag_indices(k)] += d
    G_W = red_W[np.ix_(inverse, inverse)] * inv_sqrt_m[:, None] * inv_sqrt_m[None, :] + within
    inner = red_H[np.ix_(inverse, inverse)] * inv_sqrt_m[:, None] * inv_sqrt_m[None, :] + within
    # Restore the scale: G_W by e^scale, G_H by e^scale / sqrt(n_i n_j), each factor from logs.
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # checked just below
        G_W = 0.5 * (G_W + G_W.T) * np.exp(scale)
        f = np.exp(0.5 * scale - 0.5 * np.log(n))  # (k,)
        G_H = 0.5 * (inner + inner.T) * f[:, None] * f[None, :]
    for G in (G_W, G_H):
        diag = np.diag(G)
        if not (np.all(np.isfinite(G)) and np.all(diag > 0) and np.all(np.isfinite(1 / diag))):
            raise _too_extreme(dc, dl, n, f"norms of order 1e{scale / math.log(10):.0f}")
    return G_W, G_H


def predict(loss: Any, class_counts: Any, groups: Groups | None = None) -> Geometry:
    """The geometry training converges to: ``geometry(class_logits(loss, counts), counts)``.

    Computed from the factored closed form with its exact null vectors and group subspaces split
    off (module docstring), so small Gram entries keep their digits when temperatures are far apart
    (e.g. R = 1e6, |gamma| = 1.5).

    Examples
    --------
    >>> from cegeo.losses import create_loss
    >>> counts = [500] * 5 + [50] * 5
    >>> g = predict(create_loss("ldt", counts, gamma=0.5), counts)
    >>> round(g.summary["W_ratio"], 6), round(g.summary["W_cos_maj_min"], 4)
    (1.0, -0.1111)
    """
    n = _counts(class_counts)
    dc, dl = _temperatures(loss, n.size)
    M = _class_logits(dc, dl)
    grp = groups if groups is not None else majority_groups(n)
    G_W, G_H = _closed_form_grams(dc, dl, n)
    return Geometry(M, G_W, G_H, n, grp, group_summary(G_W, G_H, M, grp))


def etf_geometry(k: int) -> Geometry:
    """The simplex-ETF reference (balanced CE): equal norms, all cosines -1/(k-1)."""
    return predict(None, np.ones(check_int("k", k, minimum=2)))
