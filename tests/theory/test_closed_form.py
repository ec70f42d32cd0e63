"""The closed form of THEORY.md §4.1: §4.2's facts, §4.4's test vectors, edge cases.

References here are independent of the code under test: the §4.3 table typed in below, the
defining equations of the square roots (G^2 = M N M^T), and direct constructions (effective counts).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cegeo.data.imbalance import step_groups
from cegeo.losses import ParametricCE, create_loss
from cegeo.theory import class_logits, distance, etf_geometry, geometry, predict


def naive_seli(k: int, R: float, rho: float) -> dict[str, float]:
    """THEORY.md §4.3's table, typed in independently of cegeo.theory._step."""
    lam = math.sqrt(R * rho + 1 - rho)
    km, kn = (1 - rho) * k, rho * k
    sR = math.sqrt(R)
    return {
        "w_maj_sq": sR * (1 - 1 / km) + lam * rho / ((1 - rho) * k),
        "w_maj_maj": -sR / km + lam * rho / ((1 - rho) * k),
        "w_min_sq": (1 - 1 / kn) + lam * (1 - rho) / (rho * k),
        "w_min_min": -1 / kn + lam * (1 - rho) / (rho * k),
        "w_maj_min": -lam / k,
        "h_maj_sq": (1 - 1 / km) / sR + rho / ((1 - rho) * k * lam),
        "h_maj_maj": -1 / (km * sR) + rho / ((1 - rho) * k * lam),
        "h_min_sq": (1 - 1 / kn) + (1 - rho) / (rho * k * lam),
        "h_min_min": -1 / kn + (1 - rho) / (rho * k * lam),
        "h_maj_min": -1 / (k * lam),
    }


def step_counts_float(k: int, R: float, rho: float) -> np.ndarray:
    k_min = round(rho * k)
    return np.array([R] * (k - k_min) + [1.0] * k_min)


def entries(G: np.ndarray, k_maj: int, tag: str) -> dict[str, float]:
    """The five distinct entries of a STEP Gram (majorities first)."""
    return {
        f"{tag}_maj_sq": G[0, 0],
        f"{tag}_maj_maj": G[0, 1] if k_maj > 1 else float("nan"),
        f"{tag}_min_sq": G[-1, -1],
        f"{tag}_min_min": G[-1, -2] if G.shape[0] - k_maj > 1 else float("nan"),
        f"{tag}_maj_min": G[0, -1],
    }


def S(k: int) -> np.ndarray:
    return np.eye(k) - np.full((k, k), 1 / k)


# ---------------------------------------------------------------------------------------------
# §4.4 test vectors
# ---------------------------------------------------------------------------------------------

SELI_VECTORS = {  # R: W ratio, cos w maj-maj, min-min, maj-min, H ratio, cos h maj-maj, min-min, maj-min
    1: (1.0000, -0.1111, -0.1111, -0.1111, 1.0000, -0.1111, -0.1111, -0.1111),
    10: (2.6721, -0.1440, 0.0334, -0.1387, 0.3508, -0.0697, -0.1867, -0.0854),
    100: (5.7662, -0.1480, 0.3380, -0.1959, 0.1156, -0.0630, -0.2284, -0.0509),
}
KEYS = (
    "W_ratio",
    "W_cos_maj_maj",
    "W_cos_min_min",
    "W_cos_maj_min",
    "H_ratio",
    "H_cos_maj_maj",
    "H_cos_min_min",
    "H_cos_maj_min",
)


@pytest.mark.parametrize("R", sorted(SELI_VECTORS))
@pytest.mark.parametrize("loss_name", ["ce", "wce", "la", "balanced_softmax"])
def test_seli_vectors(R, loss_name):
    counts = [50 * R] * 5 + [50] * 5
    g = predict(create_loss(loss_name, counts), counts, step_groups(10, 0.5))
    got = tuple(round(g.summary[key], 4) for key in KEYS)
    assert got == pytest.approx(SELI_VECTORS[R], abs=1.5e-4)


@pytest.mark.parametrize(
    "name, gamma, expected",
    [
        ("cdt", 0.5, (1.200, -0.019, -0.222, -0.064, 0.120)),
        ("cdt", -0.5, (5.860, -0.241, 0.273, -0.055, 1.000)),
        ("ldt", 0.5, (1.000, -0.111, -0.111, -0.111, 0.100)),
        ("ldt", 1.0, (0.374, 0.033, -0.144, -0.139, 0.029)),
    ],
)
@pytest.mark.parametrize("normalize", [0, 1])
def test_temperature_vectors(name, gamma, expected, normalize):
    counts = [500] * 5 + [50] * 5
    g = predict(create_loss(name, counts, gamma=gamma, normalize=normalize), counts)
    got = tuple(g.summary[key] for key in KEYS[:5])
    assert got == pytest.approx(expected, abs=1.5e-3)


# ---------------------------------------------------------------------------------------------
# §4.2 facts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 10, 57])
def test_balanced_ce_is_simplex_etf(k):
    g = predict(None, [7] * k)
    etf = -1 / (k - 1)
    off = ~np.eye(k, dtype=bool)
    for C in (g.cos_W, g.cos_H):
        assert np.allclose(C[off], etf, atol=1e-12)
    assert np.allclose(g.w_norms, g.w_norms[0], rtol=1e-12)
    assert np.allclose(g.h_norms, g.h_norms[0], rtol=1e-12)
    assert np.allclose(g.cos_WH, 1.0, atol=1e-12)
    assert distance(g.G_W, etf_geometry(k).G_W) < 1e-12


def test_ldt_is_ce_with_effective_counts(rng):
    for _ in range(20):
        k = int(rng.integers(2, 12))
        n = rng.integers(1, 2000, k).astype(float)
        dl = np.exp(rng.uniform(-2, 2, k))
        ldt = geometry(class_logits({"delta_label": dl}, n), n)
        eff = n / dl**2
        seli = geometry(class_logits(None, eff), eff)
        # G_W(N) = G_W^SELI(N / Dl^2); G_H = Dl^-1 G_H^SELI(N / Dl^2) Dl^-1 (THEORY.md §4.2).
        assert np.allclose(ldt.G_W, seli.G_W, rtol=1e-9, atol=1e-12 * np.abs(seli.G_W).max())
        expected_H = seli.G_H / dl[:, None] / dl[None, :]
        assert np.allclose(ldt.G_H, expected_H, rtol=1e-9, atol=1e-12 * np.abs(expected_H).max())


@pytest.mark.parametrize("k", [2, 3, 10, pytest.param(1000, marks=pytest.mark.slow)])
def test_ldt_sqrt_counts_is_symmetric_for_any_counts(k, rng):
    n = rng.integers(1, 5000, k).astype(float)
    g = predict(ParametricCE(delta_label=np.sqrt(n)), n)
    etf = -1 / (k - 1)
    off = ~np.eye(k, dtype=bool)
    assert np.allclose(g.w_norms, g.w_norms.mean(), rtol=1e-9)
    assert np.allclose(g.cos_W[off], etf, atol=1e-9)
    assert np.allclose(g.cos_H[off], etf, atol=1e-9)
    # ||h_y||^2 ∝ 1/n_y
    assert np.allclose(g.h_norms**2 * n, (g.h_norms**2 * n).mean(), rtol=1e-9)


def test_step_ldt_effective_ratio():
    # STEP: LDT gamma -> R_eff = R^(1 - 2 gamma); gamma > 1/2 over-corrects (ratio < 1).
    R = 10.0
    for gamma in (-0.5, 0.25, 0.75, 1.0):
        ldt = predict(create_loss("ldt", [500] * 5 + [50] * 5, gamma=gamma), [500] * 5 + [50] * 5).summary
        R_eff = R ** (1 - 2 * gamma)
        if R_eff >= 1:
            seli = predict(None, step_counts_float(10, R_eff, 0.5), step_groups(10, 0.5)).summary
            for key in ("W_ratio", "W_cos_maj_maj", "W_cos_min_min", "W_cos_maj_min", "H_cos_maj_min"):
                assert ldt[key] == pytest.approx(seli[key], rel=1e-9)
        assert (ldt["W_ratio"] < 1) == (gamma > 0.5)


def test_cdt_has_no_symmetric_setting_when_imbalanced():
    counts = [500] * 5 + [50] * 5
    etf = -1 / 9
    for gamma in np.linspace(-3, 3, 241):
        s = predict(create_loss("cdt", counts, gamma=gamma), counts).summary
        worst = max(
            abs(s["W_ratio"] - 1), *(abs(s[f"W_cos_{p}"] - etf) for p in ("maj_maj", "min_min", "maj_min"))
        )
        worst_h = max(abs(s[f"H_cos_{p}"] - etf) for p in ("maj_maj", "min_min", "maj_min"))
        assert max(worst, worst_h) > 1e-2


def test_seli_has_no_finite_R_minority_collapse():
    cos = [
        predict(None, step_counts_float(10, R, 0.5), step_groups(10, 0.5)).summary["W_cos_min_min"]
        for R in np.logspace(0, 12, 25)
    ]
    assert all(c < 1 for c in cos)
    assert np.all(np.diff(cos) > 0)  # increases with R ...
    assert cos[-1] > 0.99  # ... toward 1 (collapse only as R -> inf)


def test_binary_facts(rng):
    for _ in range(10):
        n = rng.integers(1, 1000, 2).astype(float)
        seli = predict(None, n)
        assert seli.w_norms[0] == pytest.approx(seli.w_norms[1], rel=1e-12)
        assert seli.cos_W[0, 1] == pytest.approx(-1.0, abs=1e-12)
        dc = np.exp(rng.uniform(-2, 2, 2))
        cdt = predict(ParametricCE(delta_logit=dc), n)
        assert cdt.w_norms[0] / cdt.w_norms[1] == pytest.approx(dc[0] / dc[1], rel=1e-10)
        dl = np.exp(rng.uniform(-2, 2, 2))
        ldt = predict(ParametricCE(delta_label=dl), n)
        assert ldt.h_norms[0] / ldt.h_norms[1] == pytest.approx(dl[1] / dl[0], rel=1e-10)


def test_weights_and_offsets_drop_out(rng):
    n = rng.integers(1, 1000, 6)
    ce = class_logits(None, n)
    for loss in (
        create_loss("wce", n, gamma=1.3),
        create_loss("la", n, tau=2.0),
        create_loss("balanced_softmax", n),
    ):
        assert np.array_equal(class_logits(loss, n), ce)
    vs, cdt = create_loss("vs", n, gamma=0.7, tau=1.5), create_loss("cdt", n, gamma=0.7)
    assert np.allclose(class_logits(vs, n), class_logits(cdt, n), rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# The square roots satisfy their defining equations; edge cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5, pytest.param(1000, marks=pytest.mark.slow)])
def test_grams_solve_their_defining_equations(k, rng):
    n = rng.integers(1, 5000, k).astype(float)
    params = {"delta_logit": np.exp(rng.uniform(-1, 1, k)), "delta_label": np.exp(rng.uniform(-1, 1, k))}
    g = predict(params, n)
    M = class_logits(params, n)
    target_W = M @ np.diag(n) @ M.T
    assert np.abs(g.G_W @ g.G_W - target_W).max() <= 1e-9 * np.abs(target_W).max()
    sq = np.sqrt(n)
    inner = (sq[:, None] * g.G_H) * sq[None, :]
    target_H = (sq[:, None] * (M.T @ M)) * sq[None, :]
    assert np.abs(inner @ inner - target_H).max() <= 1e-9 * np.abs(target_H).max()
    for G in (g.G_W, inner):  # PSD (up to rounding)
        assert np.linalg.eigvalsh(G).min() >= -1e-9 * np.abs(G).max()
    # M = W H: <w_c, h_y> from the Grams' square roots is the logit matrix (cos(w_c,h_c) <= 1).
    assert np.all(g.cos_WH <= 1 + 1e-9)


@pytest.mark.parametrize("R", [1.0, 2.5, 1e3, 1e6])
@pytest.mark.parametrize("k, k_min", [(2, 1), (10, 1), (10, 5), (10, 9)])
def test_step_edge_cases_against_the_table(k, k_min, R):
    """Including R = 1e6 with one minority class, where an eigh-based sqrt lost 1e-2 accuracy."""
    rho = k_min / k
    n = step_counts_float(k, R, rho)
    g = predict(None, n, step_groups(k, rho))
    got = {**entries(g.G_W, k - k_min, "w"), **entries(g.G_H, k - k_min, "h")}
    ref = naive_seli(k, R, rho)
    for key, value in ref.items():
        if math.isnan(got[key]):
            assert ("maj_maj" in key and k - k_min == 1) or ("min_min" in key and k_min == 1)
            continue
        scale = max(abs(ref[f"{key[0]}_maj_sq"]), abs(ref[f"{key[0]}_min_sq"]))
        assert abs(got[key] - value) <= 1e-10 * scale, key


def test_summary_nan_for_single_class_groups():
    g = predict(None, [10.0, 1.0], step_groups(2, 0.5))
    assert math.isnan(g.summary["W_cos_maj_maj"]) and math.isnan(g.summary["H_cos_min_min"])
    assert g.summary["W_cos_maj_min"] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: class_logits(None, [5, 0]), r"`class_counts` must be positive numbers"),
        (lambda: class_logits({"delta_label": [1.0, -1.0]}, [5, 1]), r"`delta_label` must be positive"),
        (lambda: class_logits({"delta_logit": [1.0]}, [5, 1]), r"`delta_logit` must be a vector of length 2"),
        (lambda: class_logits({"omega_typo": [1, 1]}, [5, 1]), r"`loss_or_params` must be a mapping"),
        (lambda: geometry(np.eye(3), [1, 2]), r"`M` must be a \(2, 2\) matrix"),
        (lambda: geometry(np.full((2, 2), np.nan), [1, 2]), r"`M` must be a matrix of finite numbers"),
        (lambda: distance(np.eye(2), np.eye(3)), r"`G` must be a matrix of shape \(3, 3\)"),
        (lambda: distance(np.zeros((2, 2)), np.eye(2)), r"`G` must be a non-zero matrix"),
        (lambda: predict(create_loss("ldam", [5, 1]), [5, 1]), r"`loss` must be a ParametricCE"),
        (lambda: predict(None, [5]), r"`class_counts` must be at least 2 classes; got \[5\]"),
        (lambda: etf_geometry(1), r"`k` must be an integer >= 2; got 1"),
        (lambda: etf_geometry(2.5), r"`k` must be an integer"),
        (
            lambda: predict(None, [10, 1, 1], groups=step_groups(2, 0.5)),
            r"`groups` must be a group label for each of the k = 3 classes; got labels for 2 classes\.",
        ),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# High-precision references: temperatures far apart (R = 1e6, |gamma| up to 1.5), random draws
# ---------------------------------------------------------------------------------------------


def mp_reference(n, dc, dl, dps: int = 50):
    """THEORY.md §4.1 written out naively in mpmath: M* entry by entry, then the PSD square roots
    of the squared products ``M N M^T`` and ``N^1/2 M^T M N^1/2`` by ``mpmath.eigsy``. At 50 digits
    squaring costs nothing that float64 could see. Returns float64 ``(M, G_W, G_H)``."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(dps):
        k = len(n)
        n, dc, dl = ([mp.mpf(float(x)) for x in v] for v in (n, dc, dl))
        total = mp.fsum(d**-2 for d in dc)
        a = [d**-2 / total for d in dc]
        M = mp.matrix(k, k)
        for c in range(k):
            for y in range(k):
                M[c, y] = ((1 if c == y else 0) - a[y]) / dc[c] / dl[y]

        def sqrtm(A):
            E, Q = mp.eigsy(A)
            return Q * mp.diag([mp.sqrt(max(e, 0)) for e in E]) * Q.T

        G_W = sqrtm(M * mp.diag(n) * M.T)
        root_n = mp.diag([mp.sqrt(x) for x in n])
        inner = sqrtm(root_n * M.T * M * root_n)
        G_H = mp.matrix(k, k)
        for i in range(k):
            for j in range(k):
                G_H[i, j] = inner[i, j] / mp.sqrt(n[i] * n[j])
        return tuple(np.array(X.tolist(), dtype=np.float64) for X in (M, G_W, G_H))


def cosines(G: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(G))
    return G / np.outer(d, d)


def assert_matches_reference(g, n, dc, dl, rtol: float = 1e-8) -> None:
    """Every Gram entry to ``rtol`` of its own size: norms (the diagonals) relative to themselves,
    cosines relative to themselves with an absolute floor of 1e-15 (a cosine that is a small
    difference of O(1) terms, e.g. 1e-7 at a STEP profile, is only that accurate in float64);
    ``M*`` entrywise and cos(w_c, h_c)."""
    M, G_W, G_H = mp_reference(n, dc, dl)
    for got, ref in ((g.G_W, G_W), (g.G_H, G_H)):
        assert np.all(np.abs(np.diag(got) / np.diag(ref) - 1) <= rtol)
        C, C_ref = cosines(got), cosines(ref)
        assert np.all(np.abs(C - C_ref) <= rtol * np.abs(C_ref) + 1e-15), np.abs(C - C_ref).max()
    assert np.all(np.abs(g.M - M) <= 1e-13 * np.abs(M))
    cos_wh = np.diag(M) / np.sqrt(np.diag(G_W) * np.diag(G_H))
    assert np.allclose(g.cos_WH, cos_wh, rtol=rtol, atol=0)


def registry_temperatures(loss, k):
    from cegeo.losses import loss_temperatures

    return loss_temperatures(loss, k)


@pytest.mark.parametrize("gamma", [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
@pytest.mark.parametrize("name", ["cdt", "ldt", "vs"])
@pytest.mark.parametrize("k", [2, 10])
def test_registry_losses_at_R_1e6_against_mpmath(k, name, gamma):
    """The audit's case: one SVD of M N^1/2 gave W_ratio 1e12 (exact 1e18) and cos maj-min -1e-3
    (exact -1) for CDT at k = 2, gamma = 1.5, and cos maj-min -2.6e-12 (exact -1.6e-14) at k = 10."""
    from cegeo.theory import theory_loss

    n = step_counts_float(k, 1e6, 0.5)
    for normalize in (0, 1):
        loss = theory_loss(name, n, gamma=gamma, normalize=normalize)
        g = predict(loss, n, step_groups(k, 0.5))
        assert_matches_reference(g, n, *registry_temperatures(loss, k))


@pytest.mark.parametrize("gamma", [-1.5, 1.5])
@pytest.mark.parametrize("name", ["cdt", "ldt"])
def test_long_tail_at_R_1e6_against_mpmath(name, gamma):
    """No two classes alike: the reduced SVD carries every class (rows graded over 1e9)."""
    from cegeo.theory import theory_loss

    n = 1e6 ** (1 - np.arange(10) / 9)
    loss = theory_loss(name, n, gamma=gamma)
    assert_matches_reference(predict(loss, n), n, *registry_temperatures(loss, 10))


@pytest.mark.parametrize("seed", range(12))
def test_random_draws_against_mpmath(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(2, 13))
    n = np.round(np.exp(rng.uniform(0, np.log(1e6), k)))
    dc, dl = np.exp(rng.uniform(-5, 5, k)), np.exp(rng.uniform(-5, 5, k))
    if seed % 3 == 0:  # some classes alike (same count and temperatures): the group subspaces
        twin = rng.integers(0, k, k // 2)
        n[twin], dc[twin], dl[twin] = n[0], dc[0], dl[0]
    g = predict({"delta_logit": dc, "delta_label": dl}, n)
    assert_matches_reference(g, n, dc, dl, rtol=1e-7)


def test_binary_cdt_at_extreme_temperatures_is_exact():
    """THEORY.md §4.2, binary: ||w_maj|| / ||w_min|| = Dc_maj / Dc_min, W and H antipodal, and
    (rank one) w_c parallel to h_c, for temperature ratios up to 1e18."""
    for R, gamma in ((1e6, 1.5), (1e6, -1.5), (1e12, 1.5), (1e6, 3.0)):
        dc = np.array([1.0, R**-gamma])
        g = predict(ParametricCE(delta_logit=dc), [R, 1.0], step_groups(2, 0.5))
        s = g.summary
        assert s["W_ratio"] == pytest.approx((dc[0] / dc[1]) ** 2, rel=1e-12)
        assert s["W_cos_maj_min"] == pytest.approx(-1.0, abs=1e-14)
        assert s["H_cos_maj_min"] == pytest.approx(-1.0, abs=1e-14)
        assert s["cos_WH"] == pytest.approx(1.0, abs=1e-14)


def test_predict_stays_finite_and_silent_at_extreme_temperatures():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for R in (1e14, 1e100):
            n = np.array([R, R, 1.0, 1.0])
            for dc in (np.array([1.0, 1.0, 1e-60, 1e-60]), np.array([1.0, 1e30, 1e-30, 1.0])):
                g = predict({"delta_logit": dc, "delta_label": dc[::-1]}, n)
                assert all(math.isfinite(v) for v in g.summary.values())
                assert np.all(g.w_norms > 0) and np.all(g.h_norms > 0)


# ---------------------------------------------------------------------------------------------
# Default groups of real counts; balanced counts
# ---------------------------------------------------------------------------------------------


def test_default_groups_follow_imbalance_groups_on_integer_counts(rng):
    from cegeo.data.imbalance import groups

    cases = [[5, 5, 5], [50, 5, 5], [100, 10, 1], [8, 4, 2], [7, 3]]
    cases += [rng.integers(1, 10_000, int(rng.integers(2, 30))).tolist() for _ in range(30)]
    for counts in cases:
        assert predict(None, counts).groups == groups(counts), counts


@pytest.mark.parametrize("R", [1e13, 1e14, 1e100])
def test_default_groups_of_huge_real_counts(R):
    """Counts are grouped as floats: scaling them to integers overflowed int64 above R ~ 9e12."""
    import warnings

    n = R ** (1 - np.arange(4) / 3)  # long tail, n_min = 1; the cut is sqrt(R)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = predict(None, n)
    assert g.groups.as_dict() == {"majority": [0, 1], "minority": [2, 3]}
    assert math.isfinite(g.summary["W_ratio"])
    h = predict(None, [2.5, 2.5, 1.0])
    assert h.groups.as_dict() == {"majority": [0, 1], "minority": [2]}


@pytest.mark.parametrize("k", [2, 3, 10])
def test_balanced_counts_make_every_class_both_majority_and_minority(k, rng):
    etf = -1 / (k - 1)
    s = predict(None, [5] * k).summary
    for tag in ("W", "H"):
        assert s[f"{tag}_ratio"] == 1.0
        for pair in ("maj_maj", "min_min", "maj_min"):
            assert s[f"{tag}_cos_{pair}"] == pytest.approx(etf, abs=1e-12)
    # Not an ETF (temperatures differ): the three cosines are the plain mean over all pairs.
    params = {"delta_logit": np.exp(rng.uniform(-1, 1, k))}
    g = predict(params, [5] * k)
    off = ~np.eye(k, dtype=bool)
    for tag, G in (("W", g.G_W), ("H", g.G_H)):
        mean_cos = cosines(G)[off].mean()
        for pair in ("maj_maj", "min_min", "maj_min"):
            assert g.summary[f"{tag}_cos_{pair}"] == pytest.approx(mean_cos, rel=1e-12)
        assert g.summary[f"{tag}_ratio"] == 1.0


def test_group_summary_pools_balanced_groups():
    """Equal counts: every class is a majority and a minority; the summary of an ETF (Grams
    written here) has ratio 1 and every mean cosine -1/(k-1)."""
    from cegeo.data.imbalance import groups
    from cegeo.theory import group_summary

    k = 3
    G = np.eye(k) - 1.0 / k  # the simplex ETF's Gram
    pooled = group_summary(G, G, G, groups([5, 5, 5]))
    assert pooled["W_ratio"] == pytest.approx(1.0) and pooled["H_ratio"] == pytest.approx(1.0)
    for key in ("W_cos_maj_maj", "W_cos_min_min", "W_cos_maj_min", "H_cos_maj_min"):
        assert pooled[key] == pytest.approx(-1.0 / (k - 1))
    assert pooled["cos_WH"] == pytest.approx(1.0)
    assert predict(None, [5, 5, 5]).summary == pytest.approx(pooled)
