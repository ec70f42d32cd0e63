"""The closed forms against an independent convex solver (THEORY.md §8).

Needs cvxpy (the ``theory`` extra; CI installs it). The missing-dependency message is tested
without it.
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from cegeo.losses import create_loss, get_loss_info
from cegeo.theory import class_logits, geometry

CVXPY_REASON = "cvxpy (optional extra 'theory') is not installed; the convex cross-check needs it"


@pytest.fixture(scope="module")
def convex():
    pytest.importorskip("cvxpy", reason=CVXPY_REASON)
    from cegeo.theory import convex

    return convex


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def random_problems(seed: int, count: int):
    """Counts 1..1e4 (k = 2..10) with random logit/label temperatures e^-2..e^2 or a registry loss."""
    rng = np.random.default_rng(seed)
    names = ["cdt", "ldt", "vs", "wce", "la"]
    for i in range(count):
        k = int(rng.integers(2, 11))
        n = np.round(np.exp(rng.uniform(0, np.log(1e4), k))) + 1
        if i % 4 == 3:
            name = names[(i // 4) % len(names)]
            param = get_loss_info(name).family_param
            yield n, create_loss(name, n.astype(int), **{param: float(rng.uniform(-1.5, 1.5))})
            continue
        params = {}
        if i % 4 in (0, 2):
            params["delta_logit"] = np.exp(rng.uniform(-2, 2, k))
        if i % 4 in (1, 2):
            params["delta_label"] = np.exp(rng.uniform(-2, 2, k))
        yield n, params


def test_class_level_matches_closed_form_on_60_draws(convex):
    errors = []
    for n, params in random_problems(0, 60):
        sol = convex.solve_class_level(n, params)
        M_star = class_logits(params, n)
        ref = geometry(M_star, n)
        errors.append(max(rel(sol.M, M_star), rel(sol.G_W, ref.G_W), rel(sol.G_H, ref.G_H)))
        assert sol.gap <= 1e-8 and sol.violation <= 1e-8
        # The optimal value is the closed form's nuclear norm ||M* N^1/2||_*.
        nuc = np.linalg.svd(M_star * np.sqrt(n)[None, :], compute_uv=False).sum()
        assert sol.objective == pytest.approx(nuc, rel=1e-7)
    assert max(errors) <= 1e-6, f"worst relative error {max(errors):.2e}"


@pytest.mark.parametrize(
    "counts, params",
    [
        ([3, 2, 1], None),
        ([4, 4, 1, 1], {"delta_label": [1.0, 1.0, 0.5, 0.5]}),
        ([5, 3, 1], {"delta_logit": [1.0, 0.6, 0.3]}),
        ([6, 6, 6, 2, 2, 2], {"delta_logit": [1, 1, 1, 0.4, 0.4, 0.4], "delta_label": [1, 1, 1, 2, 2, 2]}),
        ([2, 7], {"delta_logit": [2.0, 0.5], "delta_label": [0.3, 1.2]}),
    ],
)
def test_sample_level_collapses_to_the_closed_form(convex, counts, params):
    sol = convex.solve_sample_level(counts, params)
    assert sol.within_class_spread <= 1e-6
    # every column of Z within a class is the same logit vector
    for y in range(len(counts)):
        cols = sol.Z[:, sol.labels == y]
        assert np.abs(cols - cols[:, :1]).max() <= 1e-7 * np.abs(sol.Z).max()
    ref = geometry(class_logits(params, counts), counts)
    assert rel(sol.M, ref.M) <= 1e-6
    assert rel(sol.G_W, ref.G_W) <= 1e-6
    assert rel(sol.G_H, ref.G_H) <= 1e-6
    assert sol.gap <= 1e-8


def test_uncertified_precision_raises(convex):
    with pytest.raises(convex.SolverError, match="certified relative gap"):
        convex.solve_class_level(
            [5, 3, 1],
            solver_options={"tol_gap_abs": 1e-3, "tol_gap_rel": 1e-3, "tol_feas": 1e-3},
            max_gap=1e-12,
        )


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda c: c.solve_class_level([5, 1], solver="NO_SUCH_SOLVER"),
            r"`solver` must be a solver installed",
        ),
        (lambda c: c.solve_class_level([5]), r"`class_counts` must be at least 2 classes"),
        (lambda c: c.solve_class_level([5, 0]), r"`class_counts` must be positive numbers"),
        (
            lambda c: c.solve_class_level([5, 1], {"delta_label": [1.0]}),
            r"`delta_label` must be a vector of length 2",
        ),
        (lambda c: c.solve_class_level([5, 1], max_gap=0), r"`max_gap` must be a number > 0"),
        (lambda c: c.solve_sample_level([300, 200]), r"`class_counts` must be tiny counts summing to <= 400"),
        (lambda c: c.solve_sample_level([2.5, 1]), r"`class_counts` must be integers"),
    ],
)
def test_errors(convex, call, match):
    with pytest.raises(ValueError, match=match):
        call(convex)


def test_clear_error_without_cvxpy(monkeypatch):
    from cegeo.theory import convex

    real_import = builtins.__import__

    def no_cvxpy(name, *args, **kwargs):
        if name == "cvxpy" or name.startswith("cvxpy."):
            raise ImportError("No module named 'cvxpy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cvxpy)
    with pytest.raises(ImportError, match=r"pip install 'cegeo\[theory\]'"):
        convex.solve_class_level([5, 1])
