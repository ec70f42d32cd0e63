"""Convex cross-check of the closed forms: the max-margin programs of THEORY.md §4, solved by cvxpy.

Needs the optional dependency cvxpy (``pip install 'cegeo[theory]'``); it is imported on first use,
so ``import cegeo.theory`` works without it.

Two programs, both the lam -> 0 limit of the regularised UFM with the temperatures of the
parameterized CE family (weights ``omega`` and offsets ``iota`` drop out):

* class level (embeddings of a class already collapsed), :func:`solve_class_level`::

      min ||M N^(1/2)||_*   s.t.  Dl_y (Dc_y M_yy - Dc_c M_cy) >= 1   for all y, c != y

  whose minimiser the closed form ``M* = Dc^-1 (I - 1 a^T) Dl^-1`` (§4.1) claims to be.
* sample level (free ``W`` and one ``h_i`` per sample), :func:`solve_sample_level`: with
  ``Z = W H`` (k x n), ``min ||W||^2/2 + ||H||^2/2 = min ||Z||_*`` subject to the same margins per
  sample. Grams from ``Z``: ``G_W = (Z Z^T)^(1/2)``, ``G_H(samples) = (Z^T Z)^(1/2)``. At the
  optimum, embeddings of one class collapse to one vector (``within_class_spread`` ~ 0) and the
  class-level Grams equal the closed form's.

Precision. cvxpy turns the nuclear norm into a semidefinite program. The default solver is
Clarabel (interior point) with gap and feasibility tolerances of 1e-12: on 60 random draws
(k <= 10, counts 1..1e4, temperatures e^-2..e^2) the largest relative error of ``M`` against the
closed form was 8e-9 (Clarabel's defaults: 2e-4; 1e-10: 6e-7). Clarabel may then report "almost
solved" (cvxpy: ``optimal_inaccurate``) because it stops at its reduced tolerances; rather than
trust a status, each solve is certified here: a feasible primal point (the solution rescaled to
meet every margin) and a feasible dual point (the solver's multipliers rescaled to meet the
dual's spectral-norm bound) bracket the optimal value, and the relative gap between them must be
below ``max_gap`` (default 1e-8) or :class:`SolverError` is raised. SCS (first order) also works
but is slower to reach the same gap.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_int, check_positive, fail
from ..data.imbalance import Groups
from ._closed_form import Geometry, _counts, _temperatures, geometry

__all__ = ["ConvexSolution", "SampleSolution", "SolverError", "solve_class_level", "solve_sample_level"]

_DEFAULT_OPTIONS: dict[str, dict[str, float]] = {
    "CLARABEL": {
        "tol_gap_abs": 1e-12,
        "tol_gap_rel": 1e-12,
        "tol_feas": 1e-12,
        "tol_ktratio": 1e-10,
        "max_iter": 500,
    },
    "SCS": {"eps_abs": 1e-11, "eps_rel": 1e-11, "max_iters": 1_000_000},
}
_OK_STATUS = ("optimal", "optimal_inaccurate")
MAX_SAMPLES = 400  # the sample-level SDP has (k + n) x (k + n) PSD blocks: keep n tiny
# Singular values of Z below RANK_TOL * max are the solver's noise (the optimum has rank k - 1);
# left in, their square roots (~1e-6) would masquerade as within-class spread of the embeddings.
RANK_TOL = 1e-8


class SolverError(RuntimeError):
    """The convex solver failed or could not certify the requested precision."""


def _cvxpy() -> Any:
    try:
        import cvxpy
    except ImportError as exc:  # pragma: no cover - exercised only without cvxpy
        raise ImportError(
            "cegeo.theory.convex needs cvxpy, an optional dependency: pip install 'cegeo[theory]' "
            "(or pip install cvxpy)."
        ) from exc
    return cvxpy


@dataclass(frozen=True)
class _Solve:
    X: np.ndarray  # (k, m) logits, column j: the embedding of column j
    objective: float  # certified upper bound on the optimal value, original scale
    gap: float  # relative duality gap of the certificate
    violation: float  # largest margin shortfall of the raw solver output (>= 0)
    status: str
    solver: str
    seconds: float


def _solve(
    labels: np.ndarray,
    weights: np.ndarray,
    dc: np.ndarray,
    dl: np.ndarray,
    solver: str,
    solver_options: Mapping[str, Any] | None,
    max_gap: float,
) -> _Solve:
    """min ||X diag(w)||_* s.t. Dl_{y_j} (Dc_{y_j} X[y_j, j] - Dc_c X[c, j]) >= 1, c != y_j."""
    cp = _cvxpy()
    k, m = dc.size, labels.size
    solver = str(solver).upper()
    if solver not in cp.installed_solvers():
        raise fail("solver", "a solver installed for cvxpy: " + ", ".join(cp.installed_solvers()), solver)
    options = dict(_DEFAULT_OPTIONS.get(solver, {}))
    options.update(solver_options or {})

    cols = np.arange(m)
    rows_c, cols_j = np.nonzero(np.arange(k)[:, None] != labels[None, :])  # off-label pairs
    lab = labels[cols_j]
    coef_own = dl[lab] * dc[lab]  # multiplies X[y_j, j]
    coef_other = dl[lab] * dc[rows_c]  # multiplies X[c, j]

    X = cp.Variable((k, m))
    own = X[labels, cols]  # (m,)
    margins = cp.multiply(coef_own, own[cols_j]) - cp.multiply(coef_other, X[rows_c, cols_j])
    constraint = margins >= 1
    w_scale = weights / weights.max()  # conditioning; the minimiser does not depend on the scale
    problem = cp.Problem(cp.Minimize(cp.normNuc(X @ np.diag(w_scale))), [constraint])
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # "Solution may be inaccurate": the certificate below decides instead.
            warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
            problem.solve(solver=solver, **options)
    except cp.error.SolverError as exc:
        raise SolverError(f"{solver} failed: {exc}") from exc
    seconds = time.perf_counter() - t0
    if problem.status not in _OK_STATUS or X.value is None:
        raise SolverError(f"{solver} returned status {problem.status!r}")
    Xv = np.asarray(X.value, dtype=np.float64)

    # Certificate. Primal: margins are homogeneous in X, so X / min(margin) is feasible.
    marg = coef_own * Xv[lab, cols_j] - coef_other * Xv[rows_c, cols_j]
    m0 = float(marg.min())
    if m0 <= 0:
        raise SolverError(f"{solver} returned a point that violates a margin (min margin {m0:.3g})")
    X_feas = Xv / min(m0, 1.0)
    upper = float(np.linalg.svd(X_feas * w_scale[None, :], compute_uv=False).sum())
    # Dual: max sum(lam) s.t. lam >= 0, ||A*(lam) diag(1/w)||_2 <= 1, where A* puts
    # -lam Dl_y Dc_c at (c, j) and Dl_y Dc_y * sum_c lam at (y_j, j).
    lam = np.clip(np.asarray(constraint.dual_value, dtype=np.float64).reshape(-1), 0.0, None)
    adj = np.zeros((k, m))
    np.add.at(adj, (rows_c, cols_j), -lam * coef_other)
    np.add.at(adj, (lab, cols_j), lam * coef_own)
    spec = float(np.linalg.norm(adj / w_scale[None, :], 2))
    lower = float(lam.sum() / spec) if spec > 0 else 0.0
    gap = (upper - lower) / upper
    if not gap <= max_gap:
        raise SolverError(
            f"{solver} reached a certified relative gap of {gap:.2e} > max_gap = {max_gap:.0e} "
            f"(status {problem.status!r}); tighten the solver options or raise max_gap"
        )
    return _Solve(
        X=Xv,
        objective=upper * float(weights.max()),
        gap=gap,
        violation=max(0.0, 1.0 - m0),
        status=str(problem.status),
        solver=solver,
        seconds=seconds,
    )


@dataclass(frozen=True)
class ConvexSolution:
    """Solution of the class-level program (see the module docstring).

    Attributes
    ----------
    geometry : Geometry
        ``M`` from the solver and its Grams ``G_W = (M N M^T)^(1/2)``,
        ``G_H = N^-1/2 (N^1/2 M^T M N^1/2)^(1/2) N^-1/2``, with group summaries.
    objective : float
        ``||M N^(1/2)||_*`` at the (rescaled, feasible) solution, for the given counts.
    gap : float
        Certified relative duality gap (the optimum lies within ``objective * (1 - gap, 1)``).
    violation : float
        Largest margin shortfall of the raw solver output (its feasibility error).
    status, solver : str
        cvxpy's status and the solver used.
    seconds : float
        Wall time of ``problem.solve`` (compile and solve).
    """

    geometry: Geometry
    objective: float
    gap: float
    violation: float
    status: str
    solver: str
    seconds: float

    @property
    def M(self) -> np.ndarray:
        """The class-level logit matrix, shape (k, k)."""
        return self.geometry.M

    @property
    def G_W(self) -> np.ndarray:
        return self.geometry.G_W

    @property
    def G_H(self) -> np.ndarray:
        return self.geometry.G_H


def solve_class_level(
    class_counts: Any,
    loss_or_params: Any = None,
    *,
    groups: Groups | None = None,
    solver: str = "CLARABEL",
    solver_options: Mapping[str, Any] | None = None,
    max_gap: float = 1e-8,
) -> ConvexSolution:
    """Solve ``min ||M N^(1/2)||_* s.t. Dl_y (Dc_y M_yy - Dc_c M_cy) >= 1`` (THEORY.md §4).

    Parameters
    ----------
    class_counts : array-like of shape (k,)
        Positive counts (real values allowed), k >= 2.
    loss_or_params : ParametricCE, mapping or None
        As in :func:`cegeo.theory.class_logits`: a loss of the family, a mapping with
        ``delta_logit`` / ``delta_label``, or None (CE).
    groups : Groups, optional
        For the summaries; default from the counts.
    solver : str
        A cvxpy solver that handles semidefinite cones ("CLARABEL", default, or "SCS").
    solver_options : mapping, optional
        Overrides of the solver options (defaults: see the module docstring).
    max_gap : float
        Largest accepted certified relative duality gap.

    Returns
    -------
    ConvexSolution

    Raises
    ------
    ImportError
        cvxpy is not installed.
    ValueError
        Bad counts or temperatures, k < 2, a solver that is not installed.
    SolverError
        The solver failed or its certified gap exceeds ``max_gap``.

    Examples
    --------
    >>> import numpy as np, pytest
    >>> _ = pytest.importorskip("cvxpy")
    >>> from cegeo.theory import class_logits
    >>> counts = [50, 50, 5]
    >>> params = {"delta_label": [1.0, 1.0, 0.5]}
    >>> sol = solve_class_level(counts, params)
    >>> bool(np.allclose(sol.M, class_logits(params, counts), atol=1e-7)), sol.gap < 1e-8
    (True, True)
    """
    n = _counts(class_counts)
    if n.size < 2:
        raise fail("class_counts", "at least 2 classes", class_counts)
    dc, dl = _temperatures(loss_or_params, n.size)
    max_gap = check_positive("max_gap", max_gap)
    res = _solve(np.arange(n.size), np.sqrt(n), dc, dl, solver, solver_options, max_gap)
    geo = geometry(res.X, n, groups)
    return ConvexSolution(geo, res.objective, res.gap, res.violation, res.status, res.solver, res.seconds)


@dataclass(frozen=True)
class SampleSolution:
    """Solution of the sample-level program (free ``W`` and one embedding per sample).

    Attributes
    ----------
    Z : ndarray (k, n)
        Logits of every sample, column i for sample i.
    labels : ndarray (n,)
        Class of each sample.
    G_W : ndarray (k, k)
        ``(Z Z^T)^(1/2)``.
    G_H_samples : ndarray (n, n)
        ``(Z^T Z)^(1/2)``: the Gram of the per-sample embeddings. Both from the SVD of ``Z``
        with singular values below ``RANK_TOL = 1e-8`` times the largest set to 0 (solver noise:
        the optimum has rank k - 1).
    objective, gap, violation, status, solver, seconds
        As in :class:`ConvexSolution` (objective is ``||Z||_*``).
    class_counts : ndarray (k,)
    """

    Z: np.ndarray
    labels: np.ndarray
    G_W: np.ndarray
    G_H_samples: np.ndarray
    objective: float
    gap: float
    violation: float
    status: str
    solver: str
    seconds: float
    class_counts: np.ndarray = field(repr=False)

    @property
    def M(self) -> np.ndarray:
        """Class-mean logits: column y is the mean of class y's columns of ``Z``, shape (k, k)."""
        k = self.class_counts.size
        return np.stack([self.Z[:, self.labels == y].mean(axis=1) for y in range(k)], axis=1)

    @property
    def G_H(self) -> np.ndarray:
        """Gram of the class-mean embeddings (block means of ``G_H_samples``), shape (k, k)."""
        k = self.class_counts.size
        onehot = (self.labels[None, :] == np.arange(k)[:, None]) / self.class_counts[:, None]  # (k, n)
        return onehot @ self.G_H_samples @ onehot.T

    @property
    def within_class_spread(self) -> float:
        """``max_i ||h_i - mean h of its class|| / max_c ||mean h_c||``: 0 under collapse."""
        G, k = self.G_H_samples, self.class_counts.size
        onehot = (self.labels[None, :] == np.arange(k)[:, None]) / self.class_counts[:, None]
        cross = (G @ onehot.T)[np.arange(self.labels.size), self.labels]  # <h_i, mean h_{y_i}>
        means = np.diag(self.G_H)  # ||mean h_c||^2
        dev = np.diag(G) - 2 * cross + means[self.labels]
        return float(np.sqrt(np.clip(dev, 0, None).max() / means.max()))


def solve_sample_level(
    class_counts: Any,
    loss_or_params: Any = None,
    *,
    solver: str = "CLARABEL",
    solver_options: Mapping[str, Any] | None = None,
    max_gap: float = 1e-8,
) -> SampleSolution:
    """Solve the sample-level program ``min ||Z||_*`` with per-sample margins (tiny n only).

    Samples are laid out class by class (``labels = [0]*n_0 + [1]*n_1 + ...``); every sample has
    its own free embedding, so within-class collapse is a result, not an assumption.

    Parameters
    ----------
    class_counts : array-like of shape (k,)
        Positive integer counts with ``sum <= 400`` (the SDP grows as (k + n)^2).
    loss_or_params, solver, solver_options, max_gap
        As in :func:`solve_class_level`.

    Returns
    -------
    SampleSolution

    Raises
    ------
    ImportError, ValueError, SolverError
        As in :func:`solve_class_level`; also counts that are not integers or sum above 400.

    Examples
    --------
    >>> import pytest
    >>> _ = pytest.importorskip("cvxpy")
    >>> sol = solve_sample_level([3, 2, 1])
    >>> sol.within_class_spread < 1e-6
    True
    """
    from .._validation import check_class_counts

    n = check_class_counts(class_counts)
    if n.size < 2:
        raise fail("class_counts", "at least 2 classes", class_counts)
    total = check_int("sum(class_counts)", int(n.sum()), maximum=None)
    if total > MAX_SAMPLES:
        raise fail("class_counts", f"tiny counts summing to <= {MAX_SAMPLES} (sample-level SDP)", n.tolist())
    dc, dl = _temperatures(loss_or_params, n.size)
    max_gap = check_positive("max_gap", max_gap)
    labels = np.repeat(np.arange(n.size), n)
    res = _solve(labels, np.ones(total), dc, dl, solver, solver_options, max_gap)
    U, s, Vt = np.linalg.svd(res.X, full_matrices=False)
    s = np.where(s > RANK_TOL * s.max(), s, 0.0)
    G_W = (U * s) @ U.T
    G_Hs = (Vt.T * s) @ Vt
    return SampleSolution(
        Z=res.X,
        labels=labels,
        G_W=0.5 * (G_W + G_W.T),
        G_H_samples=0.5 * (G_Hs + G_Hs.T),
        objective=res.objective,
        gap=res.gap,
        violation=res.violation,
        status=res.status,
        solver=res.solver,
        seconds=res.seconds,
        class_counts=n.astype(np.float64),
    )
