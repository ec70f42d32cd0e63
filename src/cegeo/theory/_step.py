"""(R, rho)-STEP scalar formulas for the limiting geometry (THEORY.md §4.3).

At a STEP profile (``k_maj = (1 - rho) k`` majority classes of size ``R``, ``k_min = rho k``
minority classes of size 1; the geometry is scale-free, so ``n_min = 1``), every class of a group
has the same norm and every pair within/between groups the same inner product. Ten numbers then
describe the Grams of the classifiers ``W`` and of the class-mean embeddings ``H``:

* ``w_maj_sq = ||w_maj||^2``, ``w_maj_maj = <w_maj, w_maj'>``, ``w_min_sq``, ``w_min_min``,
  ``w_maj_min = <w_maj, w_min>`` and the same five for ``h``.

Three routes, each tested against the general closed form of §4.1 (eigh-based square roots):

* :func:`seli_step` (CE/wCE/LA, no temperatures): THEORY.md §4.3's table, literally.
* :func:`ldt_step`: LDT is SELI with effective counts ``n_c / Dl_c^2`` (§4.2). With
  ``R_eff = R (Dl_min/Dl_maj)^2``: ``G_W = G_W^SELI(R_eff) / Dl_min`` and
  ``<h_c, h_c'> = Dl_min <h_c, h_c'>^SELI(R_eff) / (Dl_c Dl_c')``; so every cosine and the W norm
  ratio are SELI's at ``R_eff`` and the H ratio is SELI's times ``(Dl_min/Dl_maj)^2``.
* :func:`cdt_step` and :func:`step_geometry` (any logit temperatures ``Dc`` and label temperatures
  ``Dl`` per group; CDT is ``Dl = 1``, VS has CDT's geometry): derived below.

Derivation (from §4.1, ``M = Dc^-1 (I - 1 a^T) Dl^-1``, ``a_c = Dc_c^-2 / sum_j Dc_j^-2``)
------------------------------------------------------------------------------------------
Write ``d1, d2`` for ``Dc`` on the majority/minority, ``l1, l2`` for ``Dl``, ``k1 = k_maj``,
``k2 = k_min``. Every matrix here is *block-structured*: ``X = diag(x_g) + sum_gh y_gh 1_g 1_h^T``.
Such a matrix acts as the scalar ``x_g`` on the vectors that sum to zero within group g, and as a
2 x 2 matrix ``T`` on the span of ``u_g = 1_g / sqrt(k_g)``, with
``T_gh = x_g delta_gh + sqrt(k_g k_h) y_gh``. Products and PSD square roots act on each part
separately, so ``X^(1/2)`` has scalar parts ``sqrt(x_g)`` and reduced part ``T^(1/2)``; back in
entries, ``X_ii = x_g + (T_gg - x_g)/k_g``, ``X_ij = (T_gg - x_g)/k_g`` (i != j in g) and
``X_ij = T_gh / sqrt(k_g k_h)`` (i in g, j in h).

1. Scalar parts. ``a`` is constant on each group, so ``(I - 1 a^T) v = v`` for a within-group
   zero-sum ``v`` and ``M v = v / (d_g l_g)``. Hence ``M N M^T`` has scalar part
   ``n_g / (d_g l_g)^2``: ``G_W`` has ``sqrt(n_g) / (d_g l_g)``, and ``G_H`` has
   ``1 / (sqrt(n_g) d_g l_g)``.
2. Reduced part. With ``a_maj = alpha = 1/(d1^2 s)``, ``a_min = beta = 1/(d2^2 s)``,
   ``s = k1/d1^2 + k2/d2^2`` (so ``k1 alpha + k2 beta = 1``), the reduced ``I - 1 a^T`` is
   ``I - e f^T`` with ``e = (sqrt k1, sqrt k2)``, ``f = (alpha sqrt k1, beta sqrt k2)``,
   ``f.e = 1``. It kills ``e`` and maps onto ``f``'s complement, so it is the rank-one
   ``g h^T`` with ``g = (beta sqrt k2, -alpha sqrt k1)``, ``h = (sqrt k2, -sqrt k1)``.
   The reduced logit matrix is ``M_r = p q^T``, ``p = Dc^-1 g``, ``q = Dl^-1 h``.
3. A rank-one PSD ``T`` has ``T^(1/2) = T / sqrt(tr T)``. ``T_W = M_r N M_r^T = (q.Nq) p p^T``
   gives ``G_W``'s reduced part ``sqrt(q.Nq) p p^T / |p|``; ``G_H = N^-1/2 (N^1/2 M^T M N^1/2)^(1/2)
   N^-1/2`` gives ``M_r^T M_r / sqrt(tr T_W) = |p| q q^T / sqrt(q.Nq)``.
4. With ``sigma = (1-rho)/d1^2 + rho/d2^2`` (``s = k sigma``, ``|p| = 1/(sqrt(s) d1 d2)``) and
   ``lam = sqrt(R rho / l1^2 + (1-rho) / l2^2)`` (``q.Nq = k lam^2``)::

     ||w_maj||^2     = sqrt(R)(1 - 1/k1)/(d1 l1) + lam rho/((1-rho) k sigma^1.5 d1 d2^3)
     <w_maj,w_maj'>  = -sqrt(R)/(k1 d1 l1)       + lam rho/((1-rho) k sigma^1.5 d1 d2^3)
     ||w_min||^2     = (1 - 1/k2)/(d2 l2)        + lam (1-rho)/(rho k sigma^1.5 d1^3 d2)
     <w_min,w_min'>  = -1/(k2 d2 l2)             + lam (1-rho)/(rho k sigma^1.5 d1^3 d2)
     <w_maj,w_min>   = -lam/(k sigma^1.5 d1^2 d2^2)
     ||h_maj||^2     = (1 - 1/k1)/(sqrt(R) d1 l1) + rho/((1-rho) k lam sqrt(sigma) d1 d2 l1^2)
     <h_maj,h_maj'>  = -1/(k1 sqrt(R) d1 l1)      + rho/((1-rho) k lam sqrt(sigma) d1 d2 l1^2)
     ||h_min||^2     = (1 - 1/k2)/(d2 l2)         + (1-rho)/(rho k lam sqrt(sigma) d1 d2 l2^2)
     <h_min,h_min'>  = -1/(k2 d2 l2)              + (1-rho)/(rho k lam sqrt(sigma) d1 d2 l2^2)
     <h_maj,h_min>   = -1/(k lam sqrt(sigma) d1 d2 l1 l2)

   and the own-class logits ``M_yy = (1 - a_y)/(d_y l_y)``. With ``d = l = 1`` (``sigma = 1``,
   ``lam = lam_r = sqrt(R rho + 1 - rho)``) these are §4.3's SELI table. CDT is ``l = 1``
   (``lam = lam_r``), where only the ratio ``d2/d1`` matters for any scale-free quantity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import OutOfRangeError, check_finite, check_int, fail
from ..data.imbalance import _check_ratio, step_k_min

__all__ = ["StepGeometry", "cdt_step", "ldt_step", "seli_step", "step_geometry"]

_ENTRIES = (
    "w_maj_sq",
    "w_maj_maj",
    "w_min_sq",
    "w_min_min",
    "w_maj_min",
    "h_maj_sq",
    "h_maj_maj",
    "h_min_sq",
    "h_min_min",
    "h_maj_min",
)


@dataclass(frozen=True)
class StepGeometry:
    """The limiting geometry at a (R, rho)-STEP profile with ``n_min = 1``, as ten Gram entries.

    Attributes
    ----------
    k, R, rho : int, float, float
        The profile (``R = n_maj / n_min >= 1``; classes ``0..k_maj-1`` are the majorities).
    w_maj_sq, w_maj_maj, w_min_sq, w_min_min, w_maj_min : float
        ``||w_maj||^2``, ``<w_maj, w_maj'>``, ``||w_min||^2``, ``<w_min, w_min'>``,
        ``<w_maj, w_min>``; a within-group product is NaN when the group has one class.
    h_maj_sq, h_maj_maj, h_min_sq, h_min_min, h_maj_min : float
        The same for the class-mean embeddings ``h``.
    m_maj, m_min : float
        Own-class logits ``M_yy = <w_y, h_y>`` of a majority and a minority class.
    """

    k: int
    R: float
    rho: float
    w_maj_sq: float
    w_maj_maj: float
    w_min_sq: float
    w_min_min: float
    w_maj_min: float
    h_maj_sq: float
    h_maj_maj: float
    h_min_sq: float
    h_min_min: float
    h_maj_min: float
    m_maj: float
    m_min: float

    @property
    def k_min(self) -> int:
        return round(self.rho * self.k)

    @property
    def k_maj(self) -> int:
        return self.k - self.k_min

    def entries(self) -> dict[str, float]:
        """The ten Gram entries by name."""
        return {name: getattr(self, name) for name in _ENTRIES}

    @property
    def summary(self) -> dict[str, float]:
        """Scale-free summary with the keys of :func:`cegeo.theory.group_summary`."""
        out: dict[str, float] = {}
        for tag in ("w", "h"):
            e = {name[2:]: getattr(self, name) for name in _ENTRIES if name.startswith(tag)}
            T = tag.upper()
            out[f"{T}_ratio"] = e["maj_sq"] / e["min_sq"]
            out[f"{T}_cos_maj_maj"] = e["maj_maj"] / e["maj_sq"]
            out[f"{T}_cos_min_min"] = e["min_min"] / e["min_sq"]
            out[f"{T}_cos_maj_min"] = e["maj_min"] / math.sqrt(e["maj_sq"] * e["min_sq"])
        cos_maj = self.m_maj / math.sqrt(self.w_maj_sq * self.h_maj_sq)
        cos_min = self.m_min / math.sqrt(self.w_min_sq * self.h_min_sq)
        out["cos_WH"] = (self.k_maj * cos_maj + self.k_min * cos_min) / self.k
        return out

    def _gram(self, tag: str) -> np.ndarray:
        k1, k2 = self.k_maj, self.k_min
        e = {name[2:]: getattr(self, name) for name in _ENTRIES if name.startswith(tag)}
        G = np.empty((self.k, self.k))
        G[:k1, :k1] = e["maj_maj"] if k1 > 1 else 0.0
        G[k1:, k1:] = e["min_min"] if k2 > 1 else 0.0
        G[:k1, k1:] = e["maj_min"]
        G[k1:, :k1] = e["maj_min"]
        G[np.arange(k1), np.arange(k1)] = e["maj_sq"]
        G[np.arange(k1, self.k), np.arange(k1, self.k)] = e["min_sq"]
        return G

    @property
    def G_W(self) -> np.ndarray:
        """The k x k classifier Gram ``W W^T`` (majorities first), shape (k, k)."""
        return self._gram("w")

    @property
    def G_H(self) -> np.ndarray:
        """The k x k class-mean Gram, shape (k, k)."""
        return self._gram("h")

    @property
    def class_counts(self) -> np.ndarray:
        """The counts these entries are for: ``R`` for majorities, 1 for minorities, shape (k,)."""
        return np.array([self.R] * self.k_maj + [1.0] * self.k_min)


def _profile(k: Any, R: Any, rho: Any) -> tuple[int, float, float, int, int]:
    k = check_int("k", k, minimum=2)
    R = _check_ratio(R)
    k_min = step_k_min(k, rho)
    return k, R, float(rho), k - k_min, k_min


def _pair(name: str, value: Any) -> tuple[float, float]:
    """A (majority, minority) pair of positive temperatures; None means (1, 1)."""
    if value is None:
        return 1.0, 1.0
    try:
        a, b = value
    except (TypeError, ValueError):
        raise fail(name, "a (majority, minority) pair of positive numbers", value) from None
    a, b = check_finite(name, a), check_finite(name, b)
    if a <= 0 or b <= 0:
        raise fail(name, "a (majority, minority) pair of positive numbers", value)
    return a, b


def _nan_if_single(value: float, size: int) -> float:
    return value if size > 1 else float("nan")


def seli_step(k: int, R: float, rho: float) -> StepGeometry:
    """SELI (CE, wCE, LA, Balanced Softmax) at a (R, rho)-STEP profile: THEORY.md §4.3's table.

    Parameters
    ----------
    k : int
        Number of classes, >= 2.
    R : float
        Imbalance ratio ``n_maj / n_min >= 1``.
    rho : float
        Share of minority classes; ``rho * k`` must be a whole number in 1..k-1.

    Returns
    -------
    StepGeometry
        With ``n_min = 1``.

    Raises
    ------
    ValueError
        k < 2, R < 1 or not finite, rho*k not a whole number in 1..k-1.

    Examples
    --------
    >>> g = seli_step(10, 10, 0.5)
    >>> round(g.summary["W_ratio"], 4), round(g.summary["W_cos_min_min"], 4)
    (2.6721, 0.0334)
    >>> seli_step(10, 0.1, 0.5)
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `R` must be a number >= 1 (R = n_max/n_min; cegeo does not use the factor 1/R); got 0.1.
    """
    k, R, rho, k_maj, k_min = _profile(k, R, rho)
    lam_r = math.sqrt(R * rho + 1 - rho)
    sR = math.sqrt(R)
    return StepGeometry(
        k=k,
        R=R,
        rho=rho,
        w_maj_sq=sR * (1 - 1 / k_maj) + lam_r * rho / ((1 - rho) * k),
        w_maj_maj=_nan_if_single(-sR / k_maj + lam_r * rho / ((1 - rho) * k), k_maj),
        w_min_sq=(1 - 1 / k_min) + lam_r * (1 - rho) / (rho * k),
        w_min_min=_nan_if_single(-1 / k_min + lam_r * (1 - rho) / (rho * k), k_min),
        w_maj_min=-lam_r / k,
        h_maj_sq=(1 - 1 / k_maj) / sR + rho / ((1 - rho) * k * lam_r),
        h_maj_maj=_nan_if_single(-1 / (k_maj * sR) + rho / ((1 - rho) * k * lam_r), k_maj),
        h_min_sq=(1 - 1 / k_min) + (1 - rho) / (rho * k * lam_r),
        h_min_min=_nan_if_single(-1 / k_min + (1 - rho) / (rho * k * lam_r), k_min),
        h_maj_min=-1 / (k * lam_r),
        m_maj=1 - 1 / k,
        m_min=1 - 1 / k,
    )


def ldt_step(k: int, R: float, rho: float, delta_label: tuple[float, float]) -> StepGeometry:
    """LDT at a (R, rho)-STEP profile via the effective ratio ``R_eff = R (Dl_min/Dl_maj)^2``.

    LDT equals SELI with effective counts ``n_c / Dl_c^2`` (THEORY.md §4.2), so
    ``G_W = G_W^SELI(R_eff) / Dl_min`` and ``<h_c, h_c'> = Dl_min <h_c, h_c'>^SELI(R_eff) /
    (Dl_c Dl_c')``: every cosine and the W norm ratio are SELI's at ``R_eff``, the H norm ratio is
    SELI's H ratio at ``R_eff`` times ``(Dl_min/Dl_maj)^2``. ``R_eff`` may fall below 1 (an
    over-correcting temperature makes the minorities the effective majority).

    Parameters
    ----------
    k, R, rho
        As in :func:`seli_step`.
    delta_label : (float, float)
        Label temperatures ``(Dl_maj, Dl_min)``, > 0. The registry's LDT has
        ``Dl_c ∝ (n_c / n_max)^gamma``, i.e. ``(1, R^-gamma)``.

    Examples
    --------
    >>> g = ldt_step(10, 10, 0.5, (1.0, 10**-0.5))  # gamma = 1/2: the symmetric setting
    >>> round(g.summary["W_ratio"], 12), round(g.summary["H_cos_maj_min"], 4)
    (1.0, -0.1111)
    """
    k, R, rho, _, _ = _profile(k, R, rho)
    l1, l2 = _pair("delta_label", delta_label)
    R_eff = R * (l2 / l1) ** 2
    if R_eff >= 1:
        base = seli_step(k, R_eff, rho)
        scale_w = 1 / l2  # G_W(N / Dl^2) with N / Dl^2 = (R_eff, 1) / l2^2
        hs = {"maj_sq": l2 / l1**2, "maj_maj": l2 / l1**2, "min_sq": 1 / l2, "min_min": 1 / l2}
        hs["maj_min"] = 1 / l1
    else:
        # Effective minorities are the real majorities: SELI with the groups swapped
        # (k' = k, rho' = 1 - rho, R' = 1/R_eff), effective counts (1, 1/R_eff) / l1^2 * R.
        swapped = seli_step(k, 1 / R_eff, 1 - rho)
        base = StepGeometry(
            k=k,
            R=R_eff,
            rho=rho,
            **{
                "w_maj_sq": swapped.w_min_sq,
                "w_maj_maj": swapped.w_min_min,
                "w_min_sq": swapped.w_maj_sq,
                "w_min_min": swapped.w_maj_maj,
                "w_maj_min": swapped.w_maj_min,
                "h_maj_sq": swapped.h_min_sq,
                "h_maj_maj": swapped.h_min_min,
                "h_min_sq": swapped.h_maj_sq,
                "h_min_min": swapped.h_maj_maj,
                "h_maj_min": swapped.h_maj_min,
                "m_maj": swapped.m_min,
                "m_min": swapped.m_maj,
            },
        )
        # Swapped effective counts are (1, 1/R_eff) with n_min' = R/l1^2: scale by sqrt(R)/l1.
        c = math.sqrt(R) / l1
        scale_w = c
        hs = {"maj_sq": 1 / (c * l1**2), "maj_maj": 1 / (c * l1**2), "min_sq": 1 / (c * l2**2)}
        hs["min_min"] = hs["min_sq"]
        hs["maj_min"] = 1 / (c * l1 * l2)
    return StepGeometry(
        k=k,
        R=R,
        rho=rho,
        w_maj_sq=base.w_maj_sq * scale_w,
        w_maj_maj=base.w_maj_maj * scale_w,
        w_min_sq=base.w_min_sq * scale_w,
        w_min_min=base.w_min_min * scale_w,
        w_maj_min=base.w_maj_min * scale_w,
        h_maj_sq=base.h_maj_sq * hs["maj_sq"],
        h_maj_maj=base.h_maj_maj * hs["maj_maj"],
        h_min_sq=base.h_min_sq * hs["min_sq"],
        h_min_min=base.h_min_min * hs["min_min"],
        h_maj_min=base.h_maj_min * hs["maj_min"],
        m_maj=(1 - 1 / k) / l1,
        m_min=(1 - 1 / k) / l2,
    )


def step_geometry(
    k: int,
    R: float,
    rho: float,
    delta_logit: tuple[float, float] | None = None,
    delta_label: tuple[float, float] | None = None,
) -> StepGeometry:
    """Any logit and label temperatures at a (R, rho)-STEP profile (the module's derivation).

    Parameters
    ----------
    k, R, rho
        As in :func:`seli_step`.
    delta_logit : (float, float), optional
        Logit temperatures ``(Dc_maj, Dc_min)`` (CDT, VS), > 0. Default (1, 1).
    delta_label : (float, float), optional
        Label temperatures ``(Dl_maj, Dl_min)`` (LDT), > 0. Default (1, 1).

    Returns
    -------
    StepGeometry

    Examples
    --------
    >>> g = step_geometry(10, 10, 0.5, delta_logit=(1.0, 10**-0.5))  # CDT, gamma = 1/2
    >>> round(g.summary["W_ratio"], 3), round(g.summary["H_ratio"], 3)
    (1.2, 0.12)
    """
    k, R, rho, k1, k2 = _profile(k, R, rho)
    d1, d2 = _pair("delta_logit", delta_logit)
    l1, l2 = _pair("delta_label", delta_label)
    try:
        g = _step_geometry(k, R, rho, k1, k2, d1, d2, l1, l2)
    except (OverflowError, ZeroDivisionError):
        g = None
    core = () if g is None else (g.w_maj_sq, g.w_min_sq, g.h_maj_sq, g.h_min_sq, g.w_maj_min, g.h_maj_min)
    if g is None or not all(math.isfinite(v) for v in core) or min(core[:4]) <= 0:
        raise OutOfRangeError(
            "delta_logit, delta_label",
            "temperatures whose STEP geometry fits in float64 (cegeo.theory.predict scales its "
            "Grams and reaches further)",
            {"delta_logit": (d1, d2), "delta_label": (l1, l2)},
        )
    return g


def _step_geometry(
    k: int, R: float, rho: float, k1: int, k2: int, d1: float, d2: float, l1: float, l2: float
) -> StepGeometry:
    sigma = (1 - rho) / d1**2 + rho / d2**2
    lam = math.sqrt(R * rho / l1**2 + (1 - rho) / l2**2)
    sR = math.sqrt(R)
    cw = lam / (k * sigma**1.5)  # reduced-part prefactor of G_W
    ch = 1 / (k * lam * math.sqrt(sigma) * d1 * d2)  # reduced-part prefactor of G_H
    w_maj_off = cw * rho / ((1 - rho) * d1 * d2**3)
    w_min_off = cw * (1 - rho) / (rho * d1**3 * d2)
    h_maj_off = ch * rho / ((1 - rho) * l1**2)
    h_min_off = ch * (1 - rho) / (rho * l2**2)
    a_maj, a_min = 1 / (d1**2 * k * sigma), 1 / (d2**2 * k * sigma)
    return StepGeometry(
        k=k,
        R=R,
        rho=rho,
        w_maj_sq=sR * (1 - 1 / k1) / (d1 * l1) + w_maj_off,
        w_maj_maj=_nan_if_single(-sR / (k1 * d1 * l1) + w_maj_off, k1),
        w_min_sq=(1 - 1 / k2) / (d2 * l2) + w_min_off,
        w_min_min=_nan_if_single(-1 / (k2 * d2 * l2) + w_min_off, k2),
        w_maj_min=-cw / (d1**2 * d2**2),
        h_maj_sq=(1 - 1 / k1) / (sR * d1 * l1) + h_maj_off,
        h_maj_maj=_nan_if_single(-1 / (k1 * sR * d1 * l1) + h_maj_off, k1),
        h_min_sq=(1 - 1 / k2) / (d2 * l2) + h_min_off,
        h_min_min=_nan_if_single(-1 / (k2 * d2 * l2) + h_min_off, k2),
        h_maj_min=-ch / (l1 * l2),
        m_maj=(1 - a_maj) / (d1 * l1),
        m_min=(1 - a_min) / (d2 * l2),
    )


def cdt_step(k: int, R: float, rho: float, delta_logit: tuple[float, float]) -> StepGeometry:
    """CDT (and VS, whose offsets drop out) at a (R, rho)-STEP profile.

    The module's derivation with ``Dl = 1``: with ``sigma = (1-rho)/Dc_maj^2 + rho/Dc_min^2``
    and ``lam_r = sqrt(R rho + 1 - rho)``, e.g.
    ``<w_maj, w_min> = -lam_r / (k sigma^1.5 Dc_maj^2 Dc_min^2)`` and
    ``<h_maj, h_min> = -1 / (k lam_r sqrt(sigma) Dc_maj Dc_min)``.

    Parameters
    ----------
    k, R, rho
        As in :func:`seli_step`.
    delta_logit : (float, float)
        Logit temperatures ``(Dc_maj, Dc_min)``, > 0. The registry's CDT has
        ``Dc_c ∝ (n_c / n_max)^gamma``, i.e. ``(1, R^-gamma)``.

    Examples
    --------
    >>> g = cdt_step(10, 10, 0.5, (1.0, 10**0.5))  # gamma = -1/2
    >>> round(g.summary["W_ratio"], 2), round(g.summary["H_ratio"], 3)
    (5.86, 1.0)
    """
    return step_geometry(k, R, rho, delta_logit=delta_logit)
