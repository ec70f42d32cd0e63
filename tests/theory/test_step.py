"""STEP scalar formulas (THEORY.md §4.3) against the general closed form of §4.1.

The general closed form takes square roots numerically (SVD), the STEP formulas are algebra:
two independent routes to the same Grams.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cegeo.data.imbalance import step_groups
from cegeo.theory import (
    StepGeometry,
    cdt_step,
    class_logits,
    geometry,
    ldt_step,
    seli_step,
    step_geometry,
)


def general(k, R, rho, dc=(1.0, 1.0), dl=(1.0, 1.0)):
    k_min = round(rho * k)
    n = np.array([R] * (k - k_min) + [1.0] * k_min)
    rep = [k - k_min, k_min]
    params = {"delta_logit": np.repeat(dc, rep), "delta_label": np.repeat(dl, rep)}
    return geometry(class_logits(params, n), n, step_groups(k, rho))


def assert_same(step: StepGeometry, ref, rtol=1e-9):
    for G, Gr in ((step.G_W, ref.G_W), (step.G_H, ref.G_H)):
        assert np.abs(G - Gr).max() <= rtol * np.abs(Gr).max()
    for key, value in ref.summary.items():
        if math.isnan(value):
            assert math.isnan(step.summary[key]), key
        else:
            assert step.summary[key] == pytest.approx(value, rel=1e-7, abs=1e-9), key
    d = np.diag(ref.M)
    assert (step.m_maj, step.m_min) == pytest.approx((d[0], d[-1]), rel=1e-12)


def draws(seed: int, count: int):
    """Random (k, R, rho, Dc pair, Dl pair): k to 40, R to 1e6, temperatures e^-2.3..e^2.3."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        k = int(rng.integers(2, 41))
        k_min = int(rng.integers(1, k))
        R = float(np.exp(rng.uniform(0, np.log(1e6)))) if rng.random() > 0.1 else 1.0
        dc = tuple(np.exp(rng.uniform(-2.3, 2.3, 2)))
        dl = tuple(np.exp(rng.uniform(-2.3, 2.3, 2)))
        yield k, R, k_min / k, dc, dl


@pytest.mark.parametrize("k, R, rho, dc, dl", list(draws(0, 60)), ids=[f"draw{i}" for i in range(60)])
def test_scalars_match_general_closed_form(k, R, rho, dc, dl):
    assert_same(seli_step(k, R, rho), general(k, R, rho))
    assert_same(ldt_step(k, R, rho, dl), general(k, R, rho, dl=dl))
    assert_same(cdt_step(k, R, rho, dc), general(k, R, rho, dc=dc))
    assert_same(step_geometry(k, R, rho, dc, dl), general(k, R, rho, dc, dl))


def test_seli_literal_table_entries():
    # k = 10, rho = 1/2, R = 4: lam_r = sqrt(2.5); hand-evaluated §4.3 entries.
    g = seli_step(10, 4, 0.5)
    lam = math.sqrt(2.5)
    assert g.w_maj_sq == pytest.approx(2 * 0.8 + lam / 10)
    assert g.w_maj_min == pytest.approx(-lam / 10)
    assert g.h_min_min == pytest.approx(-0.2 + 1 / (10 * lam))
    assert g.h_maj_min == pytest.approx(-1 / (10 * lam))


@pytest.mark.parametrize("gamma", [-1.0, -0.25, 0.0, 0.3, 0.5, 0.75, 1.5])
def test_ldt_effective_ratio_statement(gamma):
    """THEORY.md §4.3: LDT's cosines and W ratio are SELI's at R_eff; H ratio times (Dl_min/Dl_maj)^2."""
    R, k, rho = 10.0, 10, 0.5
    dl = (1.0, R**-gamma)
    R_eff = R * (dl[1] / dl[0]) ** 2
    ldt = ldt_step(k, R, rho, dl).summary
    if R_eff >= 1:
        seli = general(k, R_eff, rho).summary
    else:  # the minorities are the effective majorities: compare with the groups swapped
        swapped = general(k, 1 / R_eff, 1 - rho).summary
        seli = {
            "W_ratio": 1 / swapped["W_ratio"],
            "H_ratio": 1 / swapped["H_ratio"],
            "W_cos_maj_maj": swapped["W_cos_min_min"],
            "W_cos_min_min": swapped["W_cos_maj_maj"],
            "W_cos_maj_min": swapped["W_cos_maj_min"],
            "H_cos_maj_maj": swapped["H_cos_min_min"],
            "H_cos_min_min": swapped["H_cos_maj_maj"],
            "H_cos_maj_min": swapped["H_cos_maj_min"],
        }
    for key in ("W_ratio", "W_cos_maj_maj", "W_cos_min_min", "W_cos_maj_min"):
        assert ldt[key] == pytest.approx(seli[key], rel=1e-9)
    for key in ("H_cos_maj_maj", "H_cos_min_min", "H_cos_maj_min"):
        assert ldt[key] == pytest.approx(seli[key], rel=1e-9)
    assert ldt["H_ratio"] == pytest.approx(seli["H_ratio"] * (dl[1] / dl[0]) ** 2, rel=1e-9)


@pytest.mark.parametrize(
    "fn, args, expected",
    [
        (cdt_step, (1.0, 10**-0.5), (1.200, -0.019, -0.222, -0.064, 0.120)),
        (cdt_step, (1.0, 10**0.5), (5.860, -0.241, 0.273, -0.055, 1.000)),
        (ldt_step, (1.0, 10**-0.5), (1.000, -0.111, -0.111, -0.111, 0.100)),
        (ldt_step, (1.0, 0.1), (0.374, 0.033, -0.144, -0.139, 0.029)),
    ],
)
def test_section_4_4_vectors(fn, args, expected):
    s = fn(10, 10, 0.5, args).summary
    got = (s["W_ratio"], s["W_cos_maj_maj"], s["W_cos_min_min"], s["W_cos_maj_min"], s["H_ratio"])
    assert got == pytest.approx(expected, abs=1.5e-3)


def test_cdt_binary_norm_ratio_and_scale_invariance():
    g = cdt_step(2, 7.0, 0.5, (1.3, 0.4))
    assert math.sqrt(g.w_maj_sq / g.w_min_sq) == pytest.approx(1.3 / 0.4, rel=1e-12)
    a, b = cdt_step(10, 7.0, 0.3, (1.3, 0.4)).summary, cdt_step(10, 7.0, 0.3, (2.6, 0.8)).summary
    assert a == pytest.approx(b, rel=1e-12)


def test_single_class_groups_are_nan():
    g = seli_step(5, 3.0, 0.2)  # one minority class
    assert math.isnan(g.w_min_min) and math.isnan(g.h_min_min)
    assert math.isnan(g.summary["W_cos_min_min"])
    assert not math.isnan(g.summary["W_cos_maj_maj"])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: seli_step(10, 0.5, 0.5), r"`R` must be a number >= 1"),
        (lambda: seli_step(10, float("inf"), 0.5), r"`R` must be a finite number"),
        (lambda: seli_step(1, 2.0, 0.5), r"`k` must be an integer >= 2"),
        (lambda: seli_step(10, 2.0, 0.25), r"`rho` must be a value with rho\*k a whole number"),
        (lambda: seli_step(10, 2.0, 1.0), r"`rho` must be a number in \(0, 1\)"),
        (lambda: ldt_step(10, 2.0, 0.5, (1.0, 0.0)), r"`delta_label` must be a \(majority, minority\) pair"),
        (lambda: cdt_step(10, 2.0, 0.5, 3.0), r"`delta_logit` must be a \(majority, minority\) pair"),
        (
            lambda: step_geometry(10, 2.0, 0.5, delta_logit=(1.0, "x")),
            r"`delta_logit` must be a finite number",
        ),
        # temperatures this far apart overflow the scalar formulas (predict still reaches them)
        (
            lambda: cdt_step(10, 10, 0.5, (1, 1e-110)),
            r"`delta_logit, delta_label` must be temperatures whose STEP",
        ),
        (
            lambda: cdt_step(10, 10, 0.5, (1e-160, 1)),
            r"`delta_logit, delta_label` must be temperatures whose STEP",
        ),
        (lambda: cdt_step(10, 1e40, 0.5, (1, 1e-120)), r"STEP geometry fits in float64"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
