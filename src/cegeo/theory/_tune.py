"""Symmetric temperatures and one-parameter tuning toward the simplex ETF (THEORY.md §4.2).

The *symmetric* geometry: classifiers ``W`` form a simplex ETF (equal norms, all cosines
``-1/(k-1)``) and class-mean embeddings ``H`` have ETF angles; their norms may differ. LDT with
``Dl ∝ sqrt(n)`` (gamma = 1/2) reaches it exactly for any counts, with ``||h_y||^2 ∝ 1/n_y``.

Residual to the ETF (what :func:`tune` minimises), with ``E = S / ||S||_F`` the normalised ETF
Gram (``S = I - 11^T/k``) and :func:`cegeo.theory.distance` the normalised-Gram distance::

    d_W = || G_W / ||G_W||_F - E ||_F           (norms and angles of the classifiers)
    d_H = || C_H / ||C_H||_F - E ||_F           (angles of the class means; C_H = cosine matrix)
    residual = sqrt(d_W^2 + d_H^2)

``residual = 0`` exactly for the symmetric geometry; each part lies in [0, 2].

Two classes. The ETF for k = 2 is two antipodal vectors of equal norm. The limiting ``W`` and ``H``
are always antipodal (``M*`` has rank k - 1 = 1), so the residual only compares ``||w_0||`` with
``||w_1||``. CE's geometry (SELI) is then symmetric for any counts (THEORY.md §4.2), CDT and VS are
symmetric only at gamma = 0, where they are CE, and LDT is symmetric at every gamma, because LDT is
SELI with effective counts. The residual cannot choose among LDT's values, so :func:`tune` returns
the value whose class means satisfy ``||h_c||^2 ∝ 1/n_c``, which is gamma = 1/2: the symmetric
temperatures ``Dl ∝ sqrt(n)``, as for any k. It flags that case ``all_symmetric``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar
from torch import nn

from .._validation import OutOfRangeError, check_choice, check_finite, check_int, fail
from ..data.imbalance import Groups
from ._closed_form import Geometry, _counts, distance, predict

__all__ = [
    "EtfResidual",
    "TuneResult",
    "etf_residual",
    "symmetric_temperatures",
    "theory_loss",
    "theory_losses",
    "tune",
]

TARGETS = ("etf",)
FLAT_TOL = 1e-10  # Gram change (or residual spread) over the grid below which it counts as constant


def symmetric_temperatures(class_counts: Any) -> np.ndarray:
    """Label temperatures ``Dl_c ∝ sqrt(n_c)``, normalised to mean 1 (THEORY.md §4.2).

    With these, LDT's limiting geometry is the symmetric one for any class counts: an ETF
    classifier and ETF-angled class means with ``||h_c||^2 ∝ 1/n_c``. For the registry's LDT this
    is ``gamma = 1/2``.

    Parameters
    ----------
    class_counts : array-like of shape (k,)
        Positive counts (real values allowed).

    Returns
    -------
    numpy.ndarray of shape (k,)

    Examples
    --------
    >>> symmetric_temperatures([400, 100, 100]).round(4).tolist()
    [1.5, 0.75, 0.75]
    >>> symmetric_temperatures([4, 0])
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `class_counts` must be positive numbers (no empty class); got [4, 0].
    """
    n = _counts(class_counts)
    t = np.sqrt(n)
    return t / t.mean()


def theory_losses() -> list[str]:
    """Registered losses whose limiting geometry :mod:`cegeo.theory` predicts.

    Examples
    --------
    >>> "ldam" in theory_losses(), "ldt" in theory_losses()
    (False, True)
    """
    from ..losses import get_loss_info, list_losses

    return [name for name in list_losses() if get_loss_info(name).theory]


def theory_loss(name: str, class_counts: Any, /, **hyper: Any) -> nn.Module:
    """Build a registered loss for real-valued (e.g. STEP ``(R, ..., 1)``) class counts.

    :func:`cegeo.losses.create_loss` needs integer training counts; the theory is scale-free and
    accepts any positive counts (``R = 2.5`` with ``n_min = 1``), so this calls the registry's
    builder directly, with the same hyperparameter checks.

    Parameters
    ----------
    name : str
        A loss of :func:`theory_losses`.
    class_counts : array-like of shape (k,)
    **hyper
        The loss's hyperparameters (``get_loss_info(name).defaults``).

    Raises
    ------
    ValueError
        Unknown loss, a loss the theory does not cover (``ldam``), unknown or non-finite
        hyperparameters, bad counts.

    Examples
    --------
    >>> loss = theory_loss("ldt", [2.5, 1.0], gamma=0.5, normalize=0)
    >>> [round(t, 4) for t in loss.delta_label.tolist()]
    [1.0, 0.6325]
    >>> theory_loss("ldam", [2.5, 1.0])
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `loss` must be a loss the theory covers ('ce', 'wce', 'la', 'cdt', 'ldt', 'vs', 'balanced_softmax'); got 'ldam'.
    """
    from ..losses import get_loss_info

    info = get_loss_info(name)
    if not info.theory:
        raise fail("loss", f"a loss the theory covers ({', '.join(map(repr, theory_losses()))})", name)
    params = info.hyperparameters(hyper)
    counts = _counts(class_counts)
    return info.make(counts, params)


class EtfResidual(NamedTuple):
    """Distance of a geometry to the symmetric (ETF) target; see the module docstring."""

    total: float
    W: float
    H: float


def etf_residual(geo: Geometry) -> EtfResidual:
    """``(residual, d_W, d_H)`` of a geometry to the simplex ETF (module docstring).

    Examples
    --------
    >>> from cegeo.theory import predict
    >>> counts = [500, 500, 50, 50]
    >>> r = etf_residual(predict(theory_loss("ldt", counts, gamma=0.5), counts))
    >>> r.total < 1e-12
    True
    >>> round(etf_residual(predict(None, counts)).W, 4)  # CE (SELI) is not symmetric
    0.3875
    """
    k = geo.k
    S = np.eye(k) - np.full((k, k), 1.0 / k)
    d_w = distance(geo.G_W, S)
    d_h = distance(geo.cos_H, S)
    return EtfResidual(math.hypot(d_w, d_h), d_w, d_h)


@dataclass(frozen=True)
class TuneResult:
    """The family member closest to the target geometry.

    Attributes
    ----------
    loss : str
        Registered loss name.
    param : str
        The family parameter that was tuned (``get_loss_info(loss).family_param``).
    value : float
        Its best value. For a family whose geometry does not depend on it (``flat``), the given
        or default value.
    residual, residual_W, residual_H : float
        :func:`etf_residual` at ``value``.
    hyper : dict
        All hyperparameters of the loss at the optimum (``value`` included).
    geometry : Geometry
        The predicted geometry at the optimum.
    target : str
    bounds : (float, float)
        The searched interval: the requested one, narrowed where the loss's temperatures or
        Grams would overflow float64 for these counts (R ~ 1e100 and beyond).
    flat : bool
        The family's limiting geometry is the same for every value (wce, la: weights and offsets
        drop out of the max-margin limit, THEORY.md §4, so they all give CE's SELI; any family on
        balanced counts, whose temperatures are then all equal).
    all_symmetric : bool
        Every value reaches the target but the geometry still depends on the value (LDT with two
        classes, module docstring). ``value`` is then the one with ``||h_c||^2 ∝ 1/n_c``
        (gamma = 1/2 for LDT).
    at_bound : bool
        The optimum lies on the searched interval's edge: widen ``bounds``.
    note : str
        A sentence for people (why flat, at a bound, or the exact/inexact reach of the target).
    """

    loss: str
    param: str
    value: float
    residual: float
    residual_W: float
    residual_H: float
    hyper: Mapping[str, float]
    geometry: Geometry = field(repr=False)
    target: str = "etf"
    bounds: tuple[float, float] = (-3.0, 3.0)
    flat: bool = False
    at_bound: bool = False
    note: str = ""
    all_symmetric: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no matrices)."""
        return {
            "loss": self.loss,
            "param": self.param,
            "value": self.value,
            "residual": self.residual,
            "residual_W": self.residual_W,
            "residual_H": self.residual_H,
            "hyper": dict(self.hyper),
            "target": self.target,
            "bounds": list(self.bounds),
            "flat": self.flat,
            "all_symmetric": self.all_symmetric,
            "at_bound": self.at_bound,
            "note": self.note,
            "summary": dict(self.geometry.summary),
        }


def tune(
    loss_name: str,
    class_counts: Any,
    target: str = "etf",
    *,
    hyper: Mapping[str, Any] | None = None,
    bounds: tuple[float, float] = (-3.0, 3.0),
    num_grid: int = 61,
    xatol: float = 1e-10,
    groups: Groups | None = None,
) -> TuneResult:
    """The value of a loss's family parameter whose limiting geometry is closest to the ETF.

    A grid over ``bounds`` (``num_grid`` points) finds the best cell; a bounded Brent search
    (scipy ``minimize_scalar``) refines it between the neighbouring grid points to ``xatol``, and
    the value is rounded to ``xatol``'s decimals.
    The search costs about 70 closed-form :func:`cegeo.theory.predict` calls: 30 ms in all for
    k = 10, about 1 s for k = 200 and 20-40 s for k = 1000 on a 2-core CPU.

    Parameters
    ----------
    loss_name : str
        A registered loss with a family parameter that the theory covers: ``ldt`` (reaches the
        target exactly at gamma = 1/2; with two classes at every gamma, and 1/2 is returned with
        ``all_symmetric``), ``cdt`` and ``vs`` (gamma, at the given tau; VS's offsets drop out, so
        it has CDT's geometry; no value is symmetric when R > 1 and k >= 3; with two classes
        gamma = 0, which is CE, is), ``wce`` and ``la`` (flat: CE's geometry for every value).
    class_counts : array-like of shape (k,)
        Positive counts, k >= 2 (real values allowed).
    target : {"etf"}
        The symmetric geometry of the module docstring.
    hyper : mapping, optional
        The loss's other hyperparameters (e.g. ``{"tau": 1.0}`` for vs, ``{"normalize": 0}``).
    bounds : (float, float)
        Search interval for the family parameter.
    num_grid : int
        Grid points, >= 3.
    xatol : float
        Absolute tolerance of the refinement.
    groups : Groups, optional
        Majority/minority groups for the result's summary (default from the counts).

    Returns
    -------
    TuneResult

    Raises
    ------
    ValueError
        Unknown loss, a loss without a family parameter (ce, balanced_softmax) or outside the
        theory (ldam), bad counts, bounds or grid size, an unknown target.

    Examples
    --------
    >>> counts = [500] * 5 + [50] * 5
    >>> r = tune("ldt", counts)
    >>> round(r.value, 6), r.residual < 1e-8
    (0.5, True)
    >>> r = tune("cdt", counts)
    >>> round(r.value, 3), round(r.residual, 3)  # CDT cannot reach the ETF when R > 1 and k > 2
    (0.428, 0.299)
    >>> r = tune("ldt", [1000, 1])  # two classes: every gamma is symmetric; 1/2 gives ||h||^2 ∝ 1/n
    >>> r.value, r.all_symmetric, r.residual < 1e-12
    (0.5, True, True)
    >>> tune("ce", counts)
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `loss` must be a loss with a family parameter to tune ('wce', 'la', 'cdt', 'ldt', 'vs'); got 'ce'.
    """
    from ..losses import get_loss_info

    check_choice("target", target, TARGETS)
    info = get_loss_info(loss_name)
    tunable = [n for n in theory_losses() if get_loss_info(n).family_param]
    if loss_name not in tunable:
        raise fail(
            "loss", f"a loss with a family parameter to tune ({', '.join(map(repr, tunable))})", loss_name
        )
    param = info.family_param
    assert param is not None
    lo, hi = _bounds(bounds)
    num_grid = check_int("num_grid", num_grid, minimum=3)
    xatol = check_finite("xatol", xatol)
    if xatol <= 0:
        raise fail("xatol", "a number > 0", xatol)
    counts = _counts(class_counts)
    if counts.size < 2:
        raise fail("class_counts", "at least 2 classes", class_counts)
    base = dict(hyper or {})
    theory_loss(loss_name, counts, **base)  # validates the other hyperparameters once

    def geo_at(v: float) -> Geometry:
        return predict(theory_loss(loss_name, counts, **{**base, param: v}), counts, groups)

    def objective(v: float) -> float:
        return etf_residual(geo_at(v)).total

    grid, geos = _computable(geo_at, param, loss_name, np.linspace(lo, hi, num_grid), (lo, hi))
    narrowed = grid.size < num_grid
    if narrowed:
        lo, hi = float(grid[0]), float(grid[-1])
    num_grid = grid.size
    values = np.array([etf_residual(g).total for g in geos])
    if all(_same_geometry(g, geos[0]) for g in geos[1:]):
        value = float(base.get(param, info.defaults[param]))
        if counts.min() == counts.max():
            note = (
                f"{loss_name}'s limiting geometry does not depend on {param}: the counts are balanced, "
                "so every class gets the same temperature, weight and offset, and every value gives "
                "CE's geometry, the simplex ETF."
            )
        else:
            note = (
                f"{loss_name}'s limiting geometry does not depend on {param}: weights and offsets drop "
                "out of the max-margin limit (THEORY.md §4), so every value gives CE's geometry (SELI)."
            )
        return _result(loss_name, param, value, geo_at(value), base, target, (lo, hi), True, False, note)
    if values.max() <= FLAT_TOL:
        return _all_symmetric(loss_name, param, counts, geo_at, geos, base, target, (lo, hi), grid, xatol)
    i = int(np.argmin(values))
    value = _refine(objective, grid, values, i, xatol)
    at_bound = (i == 0 and value - lo <= 10 * xatol) or (i == num_grid - 1 and hi - value <= 10 * xatol)
    geo = geo_at(value)
    res = etf_residual(geo)
    if at_bound and narrowed:
        note = (
            f"the best {param} lies on the edge of the searched interval [{lo:g}, {hi:g}]; beyond it "
            f"the {loss_name} loss's temperatures or Grams overflow for these counts."
        )
    elif at_bound:
        note = f"the best {param} lies on the search bound; widen bounds={lo, hi} to look further."
    elif res.total < 1e-6:
        note = f"{loss_name} reaches the symmetric (ETF) geometry at {param} = {value:.6g}"
        if counts.size == 2:
            note += " (with two classes CE's geometry is already symmetric, THEORY.md §4.2)"
        note += "."
    else:
        note = (
            f"no {param} makes {loss_name}'s geometry symmetric for these counts; "
            f"{param} = {value:.6g} is the closest (residual {res.total:.3g})."
        )
    return _result(loss_name, param, value, geo, base, target, (lo, hi), False, at_bound, note)


def _computable(
    geo_at: Any, param: str, loss: str, grid: np.ndarray, bounds: Any
) -> tuple[np.ndarray, list[Geometry]]:
    """The grid points where the loss and its geometry can be computed, with their geometries.

    With extreme counts (R ~ 1e100 and beyond) temperatures such as ``(n_c/n_max)^-3``, or the
    Grams they give, overflow float64; the search then runs on the interval where they do not (it
    contains 0, and the temperatures grow with ``|param|``).
    """
    geos: list[Geometry | None] = []
    for v in grid:
        try:
            geos.append(geo_at(float(v)))
        except OutOfRangeError:
            geos.append(None)
    idx = np.array([j for j, g in enumerate(geos) if g is not None], dtype=np.int64)
    if idx.size < 3 or idx[-1] - idx[0] + 1 != idx.size:
        bad = float(grid[next(j for j, g in enumerate(geos) if g is None)])
        raise fail(
            "bounds",
            f"an interval on which the {loss} loss's limiting geometry can be computed for these "
            f"counts (at {param} = {bad:g} its temperatures or Grams overflow)",
            bounds,
        )
    return grid[idx], [geos[j] for j in idx]  # type: ignore[misc]


def _same_geometry(a: Geometry, b: Geometry) -> bool:
    """The same limiting geometry up to scale: normalised Grams of W and H within FLAT_TOL."""
    return distance(a.G_W, b.G_W) <= FLAT_TOL and distance(a.G_H, b.G_H) <= FLAT_TOL


def _refine(objective: Any, grid: np.ndarray, values: np.ndarray, i: int, xatol: float) -> float:
    """Bounded Brent search between grid[i]'s neighbours; keeps grid[i] unless Brent does better.

    The result is rounded to the decimals of ``xatol`` (it is only that accurate), so an exact
    optimum such as 0.5 or 0 prints as such.
    """
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    opt = minimize_scalar(
        objective, bounds=(a, b), method="bounded", options={"xatol": xatol, "maxiter": 500}
    )
    value = float(opt.x) if opt.fun < values[i] else float(grid[i])
    digits = max(0, -math.floor(math.log10(xatol)))
    return float(min(max(round(value, digits), grid[0]), grid[-1]))


def _all_symmetric(
    loss: str,
    param: str,
    counts: np.ndarray,
    geo_at: Any,
    geos: list[Geometry],
    base: Mapping[str, Any],
    target: str,
    bounds: tuple[float, float],
    grid: np.ndarray,
    xatol: float,
) -> TuneResult:
    """Every value is symmetric (LDT with two classes): choose ``||h_c||^2 ∝ 1/n_c``."""

    def h_distance(geo: Geometry) -> float:  # scale-free distance of ||h_c||^2 n_c to a constant
        return distance(np.diag(geo.h_norms**2 * counts), np.eye(counts.size))

    def h_objective(v: float) -> float:
        return h_distance(geo_at(v))

    values = np.array([h_distance(g) for g in geos])
    i = int(np.argmin(values))
    value = _refine(h_objective, grid, values, i, xatol)
    two = "with two classes, " if counts.size == 2 else ""
    at_bound = values.max() - values.min() > FLAT_TOL and (
        (i == 0 and value - bounds[0] <= 10 * xatol)
        or (i == grid.size - 1 and bounds[1] - value <= 10 * xatol)
    )
    note = (
        f"{two}every {param} gives {loss} the symmetric geometry (equal-norm ETF classifiers, "
        "ETF-angled class means; THEORY.md §4.2), so the ETF residual cannot choose; "
    )
    if at_bound:
        note += (
            f"{param} = {value:.6g} comes closest to ||h_c||^2 ∝ 1/n_c on the search interval, on its "
            f"bound; widen bounds={bounds} to look further."
        )
    else:
        note += (
            f"{param} = {value:.6g} is the one that also gives ||h_c||^2 ∝ 1/n_c, the symmetric label "
            "temperatures Dl ∝ sqrt(n) of any k."
        )
    out = _result(loss, param, value, geo_at(value), base, target, bounds, False, at_bound, note)
    return dataclasses.replace(out, all_symmetric=True)


def _bounds(bounds: Any) -> tuple[float, float]:
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise fail("bounds", "a (low, high) pair with low < high", bounds) from None
    lo, hi = check_finite("bounds", lo), check_finite("bounds", hi)
    if not lo < hi:
        raise fail("bounds", "a (low, high) pair with low < high", bounds)
    return lo, hi


def _result(
    loss: str,
    param: str,
    value: float,
    geo: Geometry,
    base: Mapping[str, Any],
    target: str,
    bounds: tuple[float, float],
    flat: bool,
    at_bound: bool,
    note: str,
) -> TuneResult:
    from ..losses import get_loss_info

    defaults = get_loss_info(loss).defaults
    hyper = {key: float(base.get(key, default)) for key, default in defaults.items()}
    hyper[param] = value
    res = etf_residual(geo)
    return TuneResult(
        loss=loss,
        param=param,
        value=value,
        residual=res.total,
        residual_W=res.W,
        residual_H=res.H,
        hyper=hyper,
        geometry=geo,
        target=target,
        bounds=bounds,
        flat=flat,
        at_bound=at_bound,
        note=note,
    )
