"""Symmetric temperatures, the ETF residual and one-parameter tuning."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cegeo.losses import ParametricCE, create_loss
from cegeo.theory import (
    etf_residual,
    predict,
    seli_step,
    step_geometry,
    symmetric_temperatures,
    theory_loss,
    tune,
)


def naive_residual(G_W: np.ndarray, G_H: np.ndarray) -> float:
    """The documented definition, written out: Gram distance of W, cosine distance of H, to S."""
    k = G_W.shape[0]
    E = np.eye(k) - 1.0 / k
    E = E / np.linalg.norm(E)
    dw = np.linalg.norm(G_W / np.linalg.norm(G_W) - E)
    C = G_H / np.sqrt(np.outer(np.diag(G_H), np.diag(G_H)))
    dh = np.linalg.norm(C / np.linalg.norm(C) - E)
    return math.sqrt(dw**2 + dh**2)


def test_symmetric_temperatures(rng):
    n = rng.integers(1, 10_000, 30)
    t = symmetric_temperatures(n)
    assert t.mean() == pytest.approx(1.0)
    assert np.allclose(t / np.sqrt(n), (t / np.sqrt(n))[0])
    g = predict(ParametricCE(delta_label=t), n)
    assert etf_residual(g).total < 1e-9


def test_residual_matches_its_definition(rng):
    for _ in range(10):
        n = rng.integers(1, 1000, int(rng.integers(2, 15)))
        loss = ParametricCE(
            delta_logit=np.exp(rng.uniform(-1, 1, n.size)), delta_label=np.exp(rng.uniform(-1, 1, n.size))
        )
        g = predict(loss, n)
        assert etf_residual(g).total == pytest.approx(naive_residual(g.G_W, g.G_H), rel=1e-12)


def test_residual_is_scale_free_and_zero_only_at_etf():
    step = seli_step(10, 1.0, 0.5)
    assert naive_residual(step.G_W, step.G_H) < 1e-12
    assert naive_residual(3 * step.G_W, 0.1 * step.G_H) < 1e-12
    assert naive_residual(seli_step(10, 10.0, 0.5).G_W, seli_step(10, 10.0, 0.5).G_H) > 0.1


@pytest.mark.parametrize("seed", range(5))
def test_ldt_tunes_to_one_half_for_any_counts(seed):
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 5000, int(rng.integers(2, 40)))
    if n.min() == n.max():
        n[0] += 1
    r = tune("ldt", n)
    assert r.value == pytest.approx(0.5, abs=1e-6)
    assert r.residual < 1e-8 and not r.flat and not r.at_bound
    assert r.hyper["gamma"] == r.value and "reaches" in r.note


def test_cdt_best_is_a_true_minimum_with_positive_residual():
    k, R, rho = 10, 10.0, 0.5
    counts = [R] * 5 + [1.0] * 5
    r = tune("cdt", counts)
    assert r.residual > 0.05 and not r.flat
    # Independent check: brute force over a fine grid with the STEP formulas and the naive residual.
    gammas = np.linspace(-3, 3, 6001)
    res = [
        naive_residual(*(lambda g: (g.G_W, g.G_H))(step_geometry(k, R, rho, delta_logit=(1.0, R**-g))))
        for g in gammas
    ]
    i = int(np.argmin(res))
    assert r.value == pytest.approx(gammas[i], abs=2e-3)
    assert r.residual <= res[i] + 1e-12
    assert "no gamma makes" in r.note


def test_cdt_residual_grows_with_imbalance_and_vanishes_when_balanced():
    resid = [tune("cdt", [R] * 5 + [1.0] * 5).residual for R in (1.5, 10, 100, 1e4)]
    assert all(a < b for a, b in itertools.pairwise(resid))
    balanced = tune("cdt", [5] * 4)
    assert balanced.flat and balanced.residual < 1e-12


def test_vs_has_cdt_geometry_at_any_tau():
    counts = [400, 400, 40, 40, 40]
    cdt = tune("cdt", counts)
    vs = tune("vs", counts, hyper={"tau": 2.5})
    assert vs.value == pytest.approx(cdt.value, abs=1e-8)
    assert vs.residual == pytest.approx(cdt.residual, rel=1e-10)
    assert vs.hyper["tau"] == 2.5


@pytest.mark.parametrize("name, param", [("wce", "gamma"), ("la", "tau")])
def test_weight_and_offset_families_are_flat(name, param):
    counts = [500, 500, 50, 50]
    r = tune(name, counts)
    assert r.flat and r.param == param
    assert r.value == create_loss(name, counts).spec.hyper[param]  # the default
    ce = etf_residual(predict(None, counts)).total
    assert r.residual == pytest.approx(ce, rel=1e-12)
    assert "CE's geometry" in r.note


def test_at_bound_is_reported():
    r = tune("ldt", [500, 500, 50, 50], bounds=(-1.0, 0.2))
    assert r.at_bound and r.value == pytest.approx(0.2)
    assert "widen bounds" in r.note


def test_to_dict_is_json_ready():
    import json

    d = tune("cdt", [100, 10, 10]).to_dict()
    json.dumps(d)
    assert {"loss", "param", "value", "residual", "summary", "flat", "at_bound"} <= set(d)


def test_theory_loss_accepts_real_counts_like_create_loss():
    a = theory_loss("ldt", [2.5, 1.0, 1.0], gamma=0.5)
    b = create_loss("ldt", [5, 2, 2], gamma=0.5)
    assert np.allclose(a.delta_label.numpy(), b.delta_label.numpy())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: tune("ce", [5, 1]), r"`loss` must be a loss with a family parameter"),
        (lambda: tune("balanced_softmax", [5, 1]), r"`loss` must be a loss with a family parameter"),
        (lambda: tune("ldam", [5, 1]), r"`loss` must be a loss with a family parameter"),
        (lambda: tune("focal", [5, 1]), r"unknown loss 'focal'"),
        (lambda: tune("ldt", [5, 1], target="nc"), r"`target` must be one of 'etf'"),
        (lambda: tune("ldt", [5, 1], bounds=(1, 0)), r"`bounds` must be a \(low, high\) pair"),
        (lambda: tune("ldt", [5, 1], num_grid=2), r"`num_grid` must be an integer >= 3"),
        (lambda: tune("ldt", [5, 1], hyper={"tau": 1}), r"loss 'ldt' takes gamma, normalize; got unknown"),
        (lambda: tune("ldt", [5]), r"`class_counts` must be at least 2 classes"),
        (lambda: tune("ldt", [5, 0]), r"`class_counts` must be positive numbers"),
        (lambda: symmetric_temperatures([3, -1]), r"`class_counts` must be positive numbers"),
        (lambda: theory_loss("ldam", [5, 1]), r"`loss` must be a loss the theory covers"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Two classes: the ETF is two antipodal vectors of equal norm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("counts", [[10, 1], [1000, 1], [1e6, 1.0], [3, 7]])
def test_two_class_ldt_is_symmetric_at_every_gamma_and_tunes_to_one_half(counts):
    # Independent of tune: the naive residual vanishes for every gamma (LDT is SELI with effective
    # counts, and binary SELI is symmetric, THEORY.md §4.2) ...
    for gamma in (-1.5, 0.0, 0.5, 2.0):
        g = predict(theory_loss("ldt", counts, gamma=gamma), counts)
        assert naive_residual(g.G_W, g.G_H) < 1e-12
    # ... so tune says so and returns the canonical gamma = 1/2, the one with ||h_c||^2 ∝ 1/n_c.
    r = tune("ldt", counts)
    assert r.all_symmetric and not r.flat and not r.at_bound
    assert r.value == 0.5 and r.residual < 1e-12
    assert "every gamma" in r.note and "1/n_c" in r.note and "two classes" in r.note
    h = r.geometry.h_norms
    n = np.asarray(counts, dtype=float)
    assert h[0] ** 2 * n[0] == pytest.approx(h[1] ** 2 * n[1], rel=1e-9)
    assert r.to_dict()["all_symmetric"] is True


def test_two_class_ldt_with_bounds_that_exclude_one_half():
    r = tune("ldt", [1000, 1], bounds=(-1.0, 0.2))
    assert r.all_symmetric and r.at_bound and r.value == pytest.approx(0.2)
    assert "widen bounds" in r.note


@pytest.mark.parametrize("name", ["cdt", "vs"])
def test_two_class_cdt_is_symmetric_only_at_gamma_zero(name):
    counts = [10, 1]
    # Independent of tune: gamma = 0 is CE (binary SELI, symmetric); any other gamma makes
    # ||w_maj|| / ||w_min|| = Dc_maj / Dc_min != 1 (THEORY.md §4.2).
    for gamma, symmetric in ((0.0, True), (0.1, False), (-0.1, False)):
        g = predict(theory_loss(name, counts, gamma=gamma), counts)
        assert (naive_residual(g.G_W, g.G_H) < 1e-12) == symmetric
    r = tune(name, counts)
    assert r.value == 0.0 and r.residual < 1e-12 and not r.all_symmetric and not r.flat
    assert "reaches the symmetric" in r.note and "two classes" in r.note


def test_flat_note_for_balanced_counts_names_the_reason():
    r = tune("cdt", [5, 5, 5])
    assert r.flat and "balanced" in r.note and "drop out" not in r.note
    r = tune("wce", [50, 5, 5])
    assert r.flat and "drop out" in r.note


def test_search_interval_narrows_where_temperatures_overflow():
    # R = 1e150: (n_c/n_max)^gamma or the Grams overflow float64 beyond |gamma| ~ 2.
    counts = [1e150, 1e150, 1.0, 1.0]
    r = tune("ldt", counts)
    assert r.value == pytest.approx(0.5, abs=1e-6) and r.residual < 1e-8
    assert -3 < r.bounds[0] < -1 and 1 < r.bounds[1] < 3
    with pytest.raises(
        ValueError,
        match=r"`bounds` must be an interval on which the ldt loss.s limiting geometry can be computed",
    ):
        tune("ldt", [1e6, 1.0, 1.0], bounds=(100.0, 200.0))


def test_tuned_values_are_rounded_to_the_tolerance():
    r = tune("ldt", [500, 500, 50, 50])
    assert r.value == 0.5  # not 0.50000000003
    r = tune("cdt", [500] * 5 + [50] * 5, xatol=1e-6)
    assert r.value == round(r.value, 6)
