"""Tests for cegeo.ufm: batched simulator, measurements, exact minimiser, regularisation path."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cegeo.config import from_dict, load_toml
from cegeo.losses import create_loss
from cegeo.theory import distance, group_summary, predict
from cegeo.ufm import (
    METRIC_COLUMNS,
    PANEL_KEYS,
    UFMConfig,
    UFMExperiment,
    _seeds,
    fit_log_trend,
    initial_parameters,
    minimize_ufm,
    regularization_path,
    simulate,
    ufm_objective,
    write_rows_csv,
)

COUNTS = [6, 6, 2, 2]  # (R=3, rho=1/2)-STEP, n = 16
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

# One of every ParametricCE parameter kind: weights, offsets, logit and label temperatures.
MIXED = [
    UFMConfig("ce", {}, lam=1e-2, lr=0.5, momentum=0.9, milestones=(30,), seed=0),
    UFMConfig("wce", {"gamma": 1.0}, lam=5e-3, lr=0.3, momentum=0.5, seed=1),
    UFMConfig("la", {"tau": 1.0}, lam=1e-2, lr=0.5, momentum=0.0, seed=2),
    UFMConfig(
        "cdt", {"gamma": 0.5}, lam=2e-2, lr=0.4, momentum=0.9, milestones=(20, 40), lr_decay=0.5, seed=3
    ),
    UFMConfig("ldt", {"gamma": -0.5}, lam=1e-2, lr=0.5, momentum=0.9, seed=4),
    UFMConfig("vs", {"gamma": 0.3, "tau": 0.5}, lam=1e-2, lr=0.5, momentum=0.9, seed=5),
    UFMConfig("balanced_softmax", {}, lam=1e-2, lr=0.5, momentum=0.9, seed=6),
]


def _labels(counts):
    return torch.as_tensor(np.repeat(np.arange(len(counts)), counts))


# ------------------------------------------------------------------- batched == alone


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 5])
def test_batched_run_is_bitwise_identical_to_single_runs(dtype, batch_size):
    kw = dict(d=5, epochs=60, dtype=dtype, batch_size=batch_size, log_every=20)
    batched = simulate(MIXED, COUNTS, **kw)
    for b, cfg in enumerate(MIXED):
        alone = simulate(cfg, COUNTS, **kw)
        assert np.array_equal(batched.W[b], alone.W[0])
        assert np.array_equal(batched.H[b], alone.H[0])
        rows_b = [r for r in batched.rows if r["config"] == b]
        rows_a = alone.rows
        assert len(rows_b) == len(rows_a) == 4
        for rb, ra in zip(rows_b, rows_a, strict=True):
            for key in ra:
                if key != "config":
                    assert rb[key] == ra[key] or (
                        isinstance(ra[key], float) and math.isnan(ra[key]) and math.isnan(rb[key])
                    ), key


def test_batched_with_two_threads_agrees_to_rounding():
    one = simulate(MIXED, COUNTS, d=5, epochs=60, threads=1)
    two = simulate(MIXED[2:3], COUNTS, d=5, epochs=60, threads=2)
    np.testing.assert_allclose(two.W[0], one.W[2], rtol=0, atol=1e-12)


def test_batch_order_and_companions_do_not_matter():
    a = simulate(MIXED, COUNTS, d=5, epochs=40)
    b = simulate(MIXED[::-1], COUNTS, d=5, epochs=40)
    assert np.array_equal(a.W, b.W[::-1]) and np.array_equal(a.H, b.H[::-1])


# ------------------------------------------------------------------- correctness of the steps


@pytest.mark.parametrize("cfg", MIXED, ids=lambda c: c.loss)
def test_full_batch_gradient_equals_autograd_of_the_loss_module(cfg):
    """One plain GD step with lr = 1: W0 - W1 is grad F, compared with autograd of the loss itself."""
    k, d, n = len(COUNTS), 5, sum(COUNTS)
    step = UFMConfig(cfg.loss, cfg.hyper, lam=cfg.lam, lr=1.0, momentum=0.0, seed=cfg.seed)
    res = simulate(step, COUNTS, d=d, epochs=1)
    W0, H0 = initial_parameters(cfg.seed, k, d, n, 0.1)
    W = W0.clone().requires_grad_()
    H = H0.clone().requires_grad_()
    loss = create_loss(cfg.loss, COUNTS, **cfg.hyper)
    ufm_objective(loss, W, H, _labels(COUNTS), cfg.lam).backward()
    np.testing.assert_allclose(W0.numpy() - res.W[0], W.grad.numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(H0.numpy() - res.H[0], H.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_full_batch_run_matches_torch_sgd_and_multisteplr():
    cfg = MIXED[3]  # cdt, momentum 0.9, two milestones with decay 0.5
    k, d, n, epochs = len(COUNTS), 5, sum(COUNTS), 60
    res = simulate(cfg, COUNTS, d=d, epochs=epochs)
    W0, H0 = initial_parameters(cfg.seed, k, d, n, 0.1)
    W, H = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(H0.clone())
    loss = create_loss(cfg.loss, COUNTS, **cfg.hyper)
    opt = torch.optim.SGD([W, H], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.lam)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), cfg.lr_decay)
    y = _labels(COUNTS)
    for _ in range(epochs):
        opt.zero_grad()
        loss((W @ H).T, y).backward()
        opt.step()
        sched.step()
    np.testing.assert_allclose(res.W[0], W.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.H[0], H.detach().numpy(), rtol=0, atol=1e-12)
    assert res.rows[-1]["lr_now"] == pytest.approx(cfg.lr * 0.25)


def test_mini_batch_run_matches_a_plain_torch_loop():
    cfg = MIXED[5]  # vs: temperatures and offsets; momentum 0.9
    k, d, n, bs, epochs = len(COUNTS), 5, sum(COUNTS), 6, 4
    res = simulate(cfg, COUNTS, d=d, epochs=epochs, batch_size=bs)
    W0, H0 = initial_parameters(cfg.seed, k, d, n, 0.1)
    W, H = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(H0.clone())
    loss = create_loss(cfg.loss, COUNTS, **cfg.hyper)
    opt = torch.optim.SGD([W, H], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.lam)
    gen = torch.Generator().manual_seed(_seeds(cfg.seed)[1])
    y = _labels(COUNTS)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):  # batches of 6, 6 and 4
            idx = perm[start : start + bs]
            opt.zero_grad()
            loss((W @ H[:, idx]).T, y[idx]).backward()
            opt.step()
    np.testing.assert_allclose(res.W[0], W.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.H[0], H.detach().numpy(), rtol=0, atol=1e-12)
    assert res.rows[-1]["step"] == epochs * 3


# ------------------------------------------------------------------- logging


def test_logged_rows_columns_and_csv(tmp_path):
    res = simulate(MIXED[:3], COUNTS, d=5, epochs=50, log_every=20)
    epochs = sorted({r["epoch"] for r in res.rows})
    assert epochs == [0, 20, 40, 50]
    assert len(res.rows) == 3 * len(epochs)
    config_cols = [
        "config",
        "loss",
        "lam",
        "lr",
        "momentum",
        "milestones",
        "lr_decay",
        "seed",
        "batch_size",
        "d",
        "dtype",
    ]
    for col in [*config_cols, *METRIC_COLUMNS, "gamma", "tau"]:
        assert col in res.columns, col
    row = res.final_rows()[1]
    assert row["loss"] == "wce" and row["gamma"] == 1.0 and row["seed"] == 1 and row["lam"] == 5e-3
    assert row["finite"] is True and 0 <= row["train_acc"] <= 1
    path = res.to_csv(tmp_path / "t.csv")
    with path.open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == res.columns and len(table) == len(res.rows)
    assert float(table[-1]["W_ratio"]) == res.rows[-1]["W_ratio"]  # floats round-trip exactly


def test_csv_hyperparameter_columns_follow_loss_whatever_the_first_loss(tmp_path):
    """UFMResult.rows: config, loss, its hyperparameters, lam, ... then METRIC_COLUMNS, also when the
    first configuration's loss has no hyperparameter (ce before la/vs put tau after dist_M)."""
    res = simulate([MIXED[0], MIXED[2], MIXED[5]], COUNTS, d=5, epochs=2)
    with res.to_csv(tmp_path / "t.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header == res.columns
    lam = header.index("lam")
    assert header[:2] == ["config", "loss"] and set(header[2:lam]) == {"tau", "gamma", "normalize"}
    assert header[-len(METRIC_COLUMNS) :] == list(METRIC_COLUMNS)
    path = (
        regularization_path(MIXED[0], COUNTS, [1e-2], d=5).rows
        + regularization_path(MIXED[2], COUNTS, [1e-2], d=5).rows
    )
    write_rows_csv(tmp_path / "p.csv", path)
    with (tmp_path / "p.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[:3] == ["loss", "tau", "lam"] and header[-1] == "gap_H_cos_maj_min"


def _naive_nc1(H, labels, k):
    """tr(Sigma_W Sigma_B^+)/k: Sigma_W over all samples, Sigma_B equal class weights about the sample mean."""
    n = H.shape[1]
    means = np.stack([H[:, labels == c].mean(1) for c in range(k)], 1)
    within = H - means[:, labels]
    sigma_w = within @ within.T / n
    centred = means - H.mean(1, keepdims=True)
    sigma_b = centred @ centred.T / k
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / k)


def test_measurements_match_a_naive_recomputation():
    cfgs = [MIXED[1], MIXED[4]]
    res = simulate(cfgs, COUNTS, d=5, epochs=30)
    labels = np.repeat(np.arange(4), COUNTS)
    for b, cfg in enumerate(cfgs):
        row, W, H = res.final_rows()[b], res.W[b], res.H[b]
        loss = create_loss(cfg.loss, COUNTS, **cfg.hyper)
        Wt, Ht = torch.as_tensor(W), torch.as_tensor(H)
        assert row["train_loss"] == pytest.approx(float(loss((Wt @ Ht).T, _labels(COUNTS))), rel=1e-12)
        objective = float(ufm_objective(loss, Wt, Ht, _labels(COUNTS), cfg.lam))
        assert row["objective"] == pytest.approx(objective, rel=1e-12)
        pred = (W @ H).argmax(0)
        assert row["train_acc"] == pytest.approx(np.mean(pred == labels))
        assert row["train_bal_acc"] == pytest.approx(
            np.mean([np.mean(pred[labels == c] == c) for c in range(4)])
        )
        means = np.stack([H[:, labels == c].mean(1) for c in range(4)], 1)
        G_W, G_H, M = W @ W.T, means.T @ means, W @ means
        for key, value in group_summary(G_W, G_H, M, res.groups).items():
            assert row[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
        th = predict(loss, COUNTS, res.groups)
        assert row["dist_W"] == pytest.approx(distance(G_W, th.G_W), rel=1e-10)
        assert row["dist_H"] == pytest.approx(distance(G_H, th.G_H), rel=1e-10)
        assert row["dist_M"] == pytest.approx(distance(M, th.M), rel=1e-10)
        assert row["nc1"] == pytest.approx(_naive_nc1(H, labels, 4), rel=1e-8)
        assert row["W_norm_min"] == pytest.approx(np.linalg.norm(W[2:], axis=1).mean())
        assert row["H_norm_maj"] == pytest.approx(np.linalg.norm(means[:, :2], axis=0).mean())


def test_divergent_configuration_is_contained():
    cfgs = [UFMConfig("ce", lam=1e-2, lr=0.5), UFMConfig("ce", lam=1e-2, lr=1e6, momentum=0.0)]
    res = simulate(cfgs, COUNTS, d=5, epochs=30)
    good, bad = res.final_rows()
    assert good["finite"] and good["train_acc"] == 1.0
    assert not bad["finite"] and math.isnan(bad["W_ratio"])


def test_diverging_run_with_finite_but_huge_parameters_is_flagged_without_warnings():
    """Mid-divergence the parameters are finite but their Grams overflow: finite = False, and
    no numpy RuntimeWarning escapes (the audit's `--lr 60` CDT sweep)."""
    import warnings

    cfgs = [UFMConfig("cdt", {"gamma": g}, lam=5e-4, lr=60.0, momentum=0.0) for g in (-3.0, 0.0, 3.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = simulate(cfgs, [20, 20, 2, 2], d=6, epochs=300, log_every=10)
    assert not any(row["finite"] for row in res.final_rows())
    flagged = [r for r in res.rows if not r["finite"]]
    # Some logged rows were flagged while W and H were still finite (only too large to measure).
    assert any(math.isfinite(r["W_norm"]) for r in flagged)
    for r in flagged:
        assert all(math.isnan(r[key]) for key in (*PANEL_KEYS, "dist_W", "nc1"))


# ------------------------------------------------------------------- exact minimiser


@pytest.mark.parametrize("cfg", MIXED[:6], ids=lambda c: c.loss)
def test_gradient_descent_reaches_the_lbfgs_minimiser(cfg):
    """Plain GD at the same lam converges to the certified minimiser (small case)."""
    run = UFMConfig(cfg.loss, cfg.hyper, lam=1e-2, lr=1.0, momentum=0.9, seed=cfg.seed)
    gd = simulate(run, COUNTS, d=6, epochs=3000).final_rows()[0]
    best = minimize_ufm(run, COUNTS, d=6)
    assert best.converged and best.is_global
    assert gd["grad_rel"] < 1e-9 and gd["nc1"] < 1e-20  # stationary, classes collapsed
    assert gd["objective"] >= best.objective - 1e-12  # nothing beats the global minimum
    assert gd["objective"] == pytest.approx(best.objective, rel=1e-12)
    for key in (*PANEL_KEYS, "cos_WH", "dist_W", "dist_H", "dist_M"):
        assert gd[key] == pytest.approx(best.metrics[key], abs=1e-7), key


def test_class_level_minimiser_equals_the_sample_level_minimiser():
    """L-BFGS on every sample's embedding finds the collapsed class-level solution."""
    from scipy.optimize import minimize

    counts, d, lam = [4, 2, 1], 3, 0.05
    cfg = UFMConfig("ldt", {"gamma": 0.5}, lam=lam)
    loss = create_loss("ldt", counts, gamma=0.5)
    y, k, n = _labels(counts), 3, 7

    def fun(x):
        t = torch.as_tensor(x, dtype=torch.float64).requires_grad_()
        W, H = t[: k * d].view(k, d), t[k * d :].view(d, n)
        f = ufm_objective(loss, W, H, y, lam)
        f.backward()
        return f.item(), t.grad.numpy().copy()

    x0 = np.random.default_rng(1).standard_normal(k * d + d * n) * 0.3
    sample = minimize(
        fun, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 0, "maxiter": 5000}
    )
    best = minimize_ufm(cfg, counts, d)
    assert sample.fun == pytest.approx(best.objective, rel=1e-9)
    H = sample.x[k * d :].reshape(d, n)
    labels = y.numpy()
    spread = max(np.abs(H[:, labels == c] - H[:, labels == c].mean(1, keepdims=True)).max() for c in range(k))
    assert spread < 1e-5  # collapse
    W = sample.x[: k * d].reshape(k, d)
    means = np.stack([H[:, labels == c].mean(1) for c in range(k)], 1)
    assert distance(W @ W.T, best.W @ best.W.T) < 1e-5
    assert distance(means.T @ means, best.H.T @ best.H) < 1e-5


def test_certificate_flags_saddles_and_the_solver_leaves_them():
    from cegeo.ufm import _ClassLevel, loss_vectors

    cfg = UFMConfig("cdt", {"gamma": 0.5}, lam=1e-2)
    counts = np.array([10, 10, 1, 1])
    cold = minimize_ufm(cfg, counts, 4)
    assert cold.is_global and cold.escapes == 0
    # The origin is stationary (every gradient vanishes) but its certificate exceeds 1.
    prob = _ClassLevel(loss_vectors(cfg.build_loss(counts), 4), counts, 1e-2, 4)
    zero = np.zeros(2 * 4 * 4)
    assert np.all(prob(zero)[1] == 0) and prob.certificate(zero) > 1.5
    assert prob.certificate(cold.x) == pytest.approx(1.0, abs=1e-6)
    from_zero = minimize_ufm(cfg, counts, 4, x0=zero)
    assert from_zero.escapes >= 1 and from_zero.is_global
    assert from_zero.objective == pytest.approx(cold.objective, rel=1e-10)
    # From the lam = 0.1 minimiser (minority classifiers exactly 0) L-BFGS alone stops on a saddle
    # (the minority rows stay 0); the certificate sees it and the solver escapes.
    start = minimize_ufm(cfg, counts, 4, lam=0.1)
    assert start.is_global and np.allclose(start.W[2:], 0)
    warm = minimize_ufm(cfg, counts, 4, x0=start.x)
    assert warm.escapes >= 1 and warm.is_global
    assert warm.objective == pytest.approx(cold.objective, rel=1e-10)


def _zero_threshold(loss_name, hyper, counts):
    """||grad_Z L(0)||_2 at the sample level (autograd on the loss module): the smallest lam at
    which W = H = 0 minimises the UFM (the convex problem L(Z) + lam ||Z||_*)."""
    loss = create_loss(loss_name, counts, **hyper)
    Z = torch.zeros(sum(counts), len(counts), dtype=torch.float64, requires_grad=True)  # (n, k)
    loss(Z, _labels(counts)).backward()
    return float(torch.linalg.matrix_norm(Z.grad, ord=2))


@pytest.mark.parametrize(
    "loss, hyper", [("ldt", {"gamma": 0.0}), ("ldt", {"gamma": 0.5}), ("cdt", {"gamma": 1.0})]
)
def test_zero_minimiser_is_detected_and_has_no_geometry(loss, hyper):
    lam_star = _zero_threshold(loss, hyper, COUNTS)
    above = minimize_ufm(UFMConfig(loss, hyper, lam=1.05 * lam_star), COUNTS, d=4)
    assert above.zero and above.is_global and above.converged and above.iterations == 0
    assert not np.any(above.W) and not np.any(above.H)
    assert above.certificate == pytest.approx(1 / 1.05, rel=1e-9)
    assert above.objective == pytest.approx(math.log(4))  # all logits 0
    for key in (*PANEL_KEYS, "cos_WH", "dist_W", "dist_H", "dist_M"):
        assert math.isnan(above.metrics[key]), key
    assert above.metrics["W_norm"] == 0.0
    # Nothing near the origin does better (sample level, the loss module itself).
    labels = _labels(COUNTS)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        W, H = (
            torch.randn(4, 4, generator=gen, dtype=torch.float64),
            torch.randn(4, 16, generator=gen, dtype=torch.float64),
        )
        for t in (1e-1, 1e-2):
            f = float(ufm_objective(create_loss(loss, COUNTS, **hyper), t * W, t * H, labels, above.lam))
            assert f >= above.objective - 1e-15
    below = minimize_ufm(UFMConfig(loss, hyper, lam=0.9 * lam_star), COUNTS, d=4)
    assert not below.zero and below.is_global and np.linalg.norm(below.W) > 1e-3
    assert below.objective < math.log(4)


def test_path_through_zero_minimisers_restarts_and_reports_them():
    lam_star = _zero_threshold("ldt", {"gamma": 0.5}, COUNTS)
    lams = [0.9, 2 * lam_star, 0.5 * lam_star, 1e-2, 1e-4]
    path = regularization_path(UFMConfig("ldt", {"gamma": 0.5}), COUNTS, lams, d=4)
    assert [r["zero"] for r in path.rows] == [True, True, False, False, False]
    assert all(r["is_global"] and r["converged"] for r in path.rows)
    assert math.isnan(path.rows[0]["W_ratio"]) and math.isnan(path.rows[0]["gap_W_ratio"])
    cold = minimize_ufm(UFMConfig("ldt", {"gamma": 0.5}, lam=1e-2), COUNTS, d=4)
    assert path.minima[3].objective == pytest.approx(cold.objective, rel=1e-10)


def test_d_below_k_warns_and_the_minimiser_may_be_local():
    """Counts [6,6,2,2], d = 2, CE, lam = 1e-2: L-BFGS from seed 1 stops at a local optimum that
    gradient descent beats; nothing certifies it, and the user is warned."""
    from cegeo.ufm import LowRankWarning

    cfg = UFMConfig("ce", lam=1e-2, lr=1.0, momentum=0.9, seed=1)
    with pytest.warns(LowRankWarning, match=r"d = 2 < k = 4: .* may be a local optimum"):
        local = minimize_ufm(cfg, COUNTS, d=2)
    gd = simulate(cfg, COUNTS, d=2, epochs=4000).final_rows()[0]
    assert local.converged and not local.is_global
    assert gd["objective"] < local.objective - 1e-3  # GD found a lower point: the minimiser is local
    with pytest.warns(LowRankWarning) as record:
        regularization_path(cfg, COUNTS, [1e-2, 1e-3], d=2)
    assert len(record) == 1  # once per path, not once per lam
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert minimize_ufm(cfg, COUNTS, d=4).is_global  # d >= k: no warning


def test_theory_reference_numbers_k4():
    """THEORY.md §6: k = 4, R = 10, LDT gamma = 1/2, W norm ratio ~1.31, 1.21, 1.16, 1.08.

    Those numbers are the squared-norm ratio (THEORY's "ratio") of the sum-form objective
    sum_i loss_i + lam/2 (...) with n_min = 1 (n = 22): our mean-form objective with lam / n.
    Read as the mean form with lam itself they would be 1.95, 1.36, 1.24, 1.10 instead.
    """
    counts = [10, 10, 1, 1]
    lams_sum = [1e-2, 1e-3, 1e-4, 1e-8]
    cfg = UFMConfig("ldt", {"gamma": 0.5})
    path = regularization_path(cfg, counts, [lam / 22 for lam in lams_sum], d=4)
    np.testing.assert_allclose(path.values("W_ratio"), [1.31, 1.21, 1.16, 1.08], atol=0.005)
    mean_form = regularization_path(cfg, counts, lams_sum, d=4)
    np.testing.assert_allclose(mean_form.values("W_ratio"), [1.95, 1.36, 1.24, 1.10], atol=0.005)


# ------------------------------------------------------------------- regularisation path


@pytest.mark.parametrize(
    "loss, hyper",
    [
        ("ce", {}),
        ("ldt", {"gamma": 0.5}),
        ("ldt", {"gamma": 1.0}),
        ("cdt", {"gamma": 0.5}),
        ("cdt", {"gamma": -0.5}),
    ],
)
def test_path_approaches_the_theory_monotonically(loss, hyper):
    lams = [1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8, 1e-12, 1e-16]
    path = regularization_path(UFMConfig(loss, hyper), [10, 10, 1, 1], lams, d=4)
    assert all(m.is_global for m in path.minima)
    for key in ("dist_W", "dist_H", "dist_M"):
        v = path.values(key)
        assert path.is_monotone(key) and np.all(np.diff(v) < 0), key
        assert v[-1] < 0.06
        trend = path.trend(key, last=4)
        assert abs(trend.a) < 0.01 and trend.b > 0  # ~ b / log(1/lam), extrapolating to 0
        assert trend.rms < 1e-3
    rows = path.rows
    assert [r["lam"] for r in rows] == lams and all(r["converged"] for r in rows)
    assert all(r["loss"] == loss and r["train_loss"] > 0 for r in rows)
    assert rows[-1]["gap_W_ratio"] == pytest.approx(rows[-1]["W_ratio"] - path.theory.summary["W_ratio"])


def test_fit_log_trend_recovers_the_model_and_predicts():
    lams = np.logspace(-2, -20, 7)
    trend = fit_log_trend(lams, 0.02 + 1.5 / np.log(1 / lams))
    assert trend.a == pytest.approx(0.02) and trend.b == pytest.approx(1.5) and trend.rms < 1e-12
    assert trend.at(1e-30) == pytest.approx(0.02 + 1.5 / math.log(1e30))
    assert trend.log10_lam_for(0.05) == pytest.approx(-1.5 / 0.03 / math.log(10))
    assert math.isnan(trend.lam_for(0.01))  # below the asymptote: never reached
    last = fit_log_trend(lams, np.r_[5.0, 1.5 / np.log(1 / lams[1:])], last=6)
    assert last.a == pytest.approx(0, abs=1e-12) and last.n_points == 6


# ------------------------------------------------------------------- experiment config


def test_paper_config_is_the_theory_recipe():
    exp = load_toml(UFMExperiment, EXPERIMENTS / "ufm_paper.toml").validate()
    assert exp.class_counts().tolist() == [50] * 5 + [5] * 5
    assert exp.groups().minority.tolist() == [5, 6, 7, 8, 9]
    configs = exp.configs()
    assert len(configs) == 26 and {c.loss for c in configs} == {"cdt", "ldt"}
    np.testing.assert_allclose(sorted({c.hyper["gamma"] for c in configs}), np.linspace(-1.5, 1.5, 13))
    c = configs[0]
    assert (c.lam, c.lr, c.momentum, c.milestones, c.lr_decay) == (5e-4, 0.1, 0.9, (2000, 4000), 0.1)
    assert (exp.d, exp.epochs, exp.batch_size) == (20, 6000, 0)
    assert exp.lams()[0] == 5e-4 and len(exp.lams()) == 9


def test_zero_weight_decay_runs_without_a_path_grid():
    exp = from_dict(UFMExperiment, {"counts": [4, 2], "weight_decay": 0.0}).validate()
    assert exp.configs()[0].lam == 0.0
    with pytest.raises(ValueError, match=r"`weight_decay` must be a number in \(0, 1\) for the default"):
        exp.lams()
    given = from_dict(UFMExperiment, {"counts": [4, 2], "weight_decay": 0.0, "path_lams": [1e-2, 1e-3]})
    assert given.validate().lams() == [1e-2, 1e-3]
    res = simulate(UFMConfig("ce", lam=0.0, lr=1.0), [4, 2], d=2, epochs=50, dtype="float64")
    row = res.final_rows()[0]
    assert row["finite"] and row["train_acc"] == 1.0
    # Without weight decay grad_rel is ||grad L|| (it was NaN, divided by lam = 0): checked with
    # autograd on the final W, H and plain cross-entropy.
    W = torch.tensor(res.W[0], requires_grad=True)  # (k, d)
    H = torch.tensor(res.H[0], requires_grad=True)  # (d, n)
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    torch.nn.functional.cross_entropy((W @ H).T, y).backward()
    expected = math.sqrt(float((W.grad**2).sum() + (H.grad**2).sum()))
    assert row["grad_rel"] == pytest.approx(expected, rel=1e-6) and expected > 0


def test_experiment_profiles_and_round_trip():
    from cegeo._io import read_toml
    from cegeo.config import to_toml_text

    tail = from_dict(UFMExperiment, {"longtail": "k=5,R=10", "n_min": 2, "losses": ["ce", "la"]})
    assert tail.class_counts().tolist() == [20, 11, 6, 3, 2] and len(tail.configs()) == 2
    explicit = from_dict(UFMExperiment, {"counts": [7, 3, 3], "gamma_grid": "0:1:3", "losses": ["cdt"]})
    assert [c.hyper["gamma"] for c in explicit.configs()] == [0.0, 0.5, 1.0]
    text = to_toml_text(explicit)
    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "c.toml"
    path.write_text(text)
    assert from_dict(UFMExperiment, read_toml(path)) == explicit


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(configs=[]), r"`configs` must be at least one UFMConfig"),
        (dict(configs=["ce"]), r"`configs` must be UFMConfig objects"),
        (dict(configs=UFMConfig("ldam")), r"`loss` must be a ParametricCE member"),
        (dict(configs=UFMConfig("focal")), r"unknown loss 'focal'"),
        (dict(configs=UFMConfig("ldt", {"tau": 1.0})), r"loss 'ldt' takes gamma, normalize; got unknown"),
        (dict(class_counts=[5, 0]), r"`class_counts` must be positive integers"),
        (dict(class_counts=[5]), r"`class_counts` must be at least two classes"),
        (dict(d=0), r"`d` must be an integer >= 1"),
        (dict(epochs=0), r"`epochs` must be an integer >= 1"),
        (dict(batch_size=0), r"`batch_size` must be an integer >= 1"),
        (dict(init_std=0.0), r"`init_std` must be a number > 0"),
        (dict(dtype="float16"), r"`dtype` must be 'float32' or 'float64'"),
        (dict(device="tpu"), r"`device` must be a torch device|`device` must be 'cpu' or 'cuda"),
        (dict(threads=0), r"`threads` must be an integer >= 1"),
        (dict(threads=10**6), r"`threads` must be an integer in \[1, \d+\]"),
        (dict(log_every=0), r"`log_every` must be an integer >= 1"),
        (dict(configs=UFMConfig(lam=-1.0)), r"`lam` must be a number >= 0"),
        (dict(configs=UFMConfig(lr=0.0)), r"`lr` must be a number > 0"),
        (dict(configs=UFMConfig(momentum=1.0)), r"`momentum` must be a number in \[0, 1\)"),
        (dict(configs=UFMConfig(lr_decay=0.0)), r"`lr_decay` must be a number > 0"),
        (dict(configs=UFMConfig(milestones=(5, 3))), r"`milestones` must be strictly increasing"),
        (dict(configs=UFMConfig(seed=-1)), r"`seed` must be an integer >= 0"),
    ],
)
def test_simulate_errors(kwargs, match):
    args = dict(configs=UFMConfig(), class_counts=COUNTS, d=3, epochs=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate(args.pop("configs"), args.pop("class_counts"), **args)


def test_a_problem_larger_than_memory_is_refused_before_allocating(monkeypatch):
    """5.5 million samples x 100 classes: it used to allocate until the system killed it."""
    import cegeo.ufm as ufm_module

    allocated, original = [], ufm_module.initial_parameters
    monkeypatch.setattr(ufm_module, "initial_parameters", lambda *a: allocated.append(a))
    monkeypatch.setattr(ufm_module, "_memory_of", lambda dev: 64 * 2**30)
    with pytest.raises(ValueError, match=r"the 1 configuration\(s\) must fit in memory: the UFM needs at least "
                       r"170 GiB for k = 100 classes, n = 5550000 samples, d = 1000, more than the 64 GiB"):  # fmt: skip
        simulate(UFMConfig(), [110_000] * 50 + [1_000] * 50, 1000, 1)
    assert allocated == []
    monkeypatch.setattr(ufm_module, "initial_parameters", original)
    # the bound scales with the batch: a small problem passes, the same one x 4 on a small memory not
    monkeypatch.setattr(ufm_module, "_memory_of", lambda dev: 10_000_000)
    simulate(UFMConfig(), COUNTS, 3, 1)
    with pytest.raises(ValueError, match=r"the 4 configuration\(s\) must fit in memory"):
        simulate([UFMConfig(seed=s) for s in range(4)], [4000, 400], 200, 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_memory_estimate_counts_the_tensors_simulate_holds(monkeypatch, dtype):
    """The pre-check refuses what would not fit: its estimate is what simulate holds at its peak,
    a log (epoch 0's too), where the loss is recomputed in float64 beside the training arrays.
    Counting only the training step's arrays, it let through problems of twice the memory, which
    the system then killed. Counted here: every tensor alive (by storage) as the log's softmax
    is exponentiated (those alive before the call excluded), below the peak by one work array."""
    import gc

    import cegeo.ufm as ufm_module

    seen: list[int] = []
    exp = torch.exp

    def cpu_storages():
        storages = {}
        for obj in gc.get_objects():
            if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu":
                st = obj.untyped_storage()
                storages[st.data_ptr()] = st
        return storages

    # tensors other tests left alive are not simulate's: only storages new during the call count
    # (the old ones are held here, so their memory cannot be reused by simulate's)
    before = cpu_storages()

    def counting_exp(t):
        out = exp(t)
        seen.append(sum(st.nbytes() for ptr, st in cpu_storages().items() if ptr not in before))
        return out

    k, n, d = 20, 4000, 3
    monkeypatch.setattr(torch, "exp", counting_exp)
    simulate(UFMConfig(), [n // k] * k, d, 1, dtype=str(dtype).replace("torch.", ""))
    monkeypatch.setattr(torch, "exp", exp)
    need = ufm_module._memory_needed(1, k, n, d, dtype, torch.device("cpu"))
    held = max(seen)
    assert held <= need <= 1.25 * held, (held, need)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_an_input_error():
    with pytest.raises(ValueError, match=r"`device` must be an available device"):
        simulate(UFMConfig(), COUNTS, 3, 2, device="cuda")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: minimize_ufm(UFMConfig(lam=0.0), COUNTS, 3), r"`lam` must be a number > 0"),
        (lambda: minimize_ufm(UFMConfig(), COUNTS, 3, tol=0), r"`tol` must be a number > 0"),
        (lambda: minimize_ufm(UFMConfig(), COUNTS, 3, x0=np.zeros(3)), r"`x0` must be a vector of length 24"),
        (lambda: regularization_path(UFMConfig(), COUNTS, [], 3), r"`lams` must be a non-empty"),
        (
            lambda: regularization_path(UFMConfig(), COUNTS, [1e-3, 1e-2], 3),
            r"`lams` must be a strictly decreasing",
        ),
        (
            lambda: regularization_path(UFMConfig(), COUNTS, [1.0, 1e-2], 3),
            r"`lams` must be numbers in \(0, 1\)",
        ),
        (lambda: fit_log_trend([1e-2], [0.1]), r"`lams` must be at least two finite points"),
        (lambda: fit_log_trend([1e-2, 1e-3], [0.1]), r"`values` must be one value per lam"),
    ],
)
def test_minimiser_and_path_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "data, match",
    [
        ({"step": "k=4,R=10,rho=0.5", "epoch": 3}, r"unknown key `epoch` in the config"),
        ({}, r"give exactly one of step \| longtail \| counts; got 0"),
        (
            {"step": "k=4,R=10,rho=0.5", "counts": [3, 1]},
            r"give exactly one of step \| longtail \| counts; got 2",
        ),
        ({"step": "k=4,R=2.5,rho=0.5", "n_min": 1}, r"`n_min` must be a size with R \* n_min a whole number"),
        ({"step": "k=4,R=10"}, r"`step` must be key=value pairs"),
        (
            {"counts": [4, 2], "losses": ["ce"], "gamma_grid": [0.0]},
            r"`losses` must be losses with a family parameter",
        ),
        ({"counts": [4, 2], "gamma_grid": [0.0], "hyper": {"gamma": 1.0}}, r"give gamma once"),
        ({"counts": [4, 2], "gamma_grid": "1:0:3"}, r"`gamma_grid` must be START:STOP:NUM"),
        ({"counts": [4, 2], "losses": []}, r"`losses` must be at least one loss name"),
        ({"counts": [4, 2], "seeds": []}, r"`seeds` must be at least one seed"),
        ({"counts": [4, 2], "path_lams": [1e-3, 1e-2]}, r"`path_lams` must be a strictly decreasing"),
        ({"counts": [4, 2], "path_tol": 0.0}, r"`path_tol` must be a number > 0"),
        ({"counts": [4, 2], "dtype": "half"}, r"`dtype` must be 'float32' or 'float64'"),
        ({"counts": [4, 2], "epochs": "many"}, r"`epochs` must be an integer"),
        ({"counts": [4, 2], "batch_size": -1}, r"`batch_size` must be an integer >= 0"),
        ({"counts": [4], "losses": ["ce"]}, r"`counts` must be at least two class counts"),
        ({"counts": [4, 2], "seeds": [0, -1]}, r"`seeds` must be an integer >= 0"),
        ({"counts": [4, 2], "weight_decay": -1.0}, r"`weight_decay` must be a number >= 0"),
        ({"counts": [4, 2], "threads": 10**6}, r"`threads` must be an integer in \[1, \d+\]"),
        ({"counts": [4, 2], "threads": 0}, r"`threads` must be an integer >= 1"),
    ],
)
def test_experiment_errors(data, match):
    with pytest.raises(ValueError, match=match):
        from_dict(UFMExperiment, data).validate()


@pytest.mark.cuda
def test_cuda_batched_run_matches_cpu():
    cpu = simulate(MIXED, COUNTS, d=5, epochs=60, batch_size=5)
    gpu = simulate(MIXED, COUNTS, d=5, epochs=60, batch_size=5, device="cuda")
    np.testing.assert_allclose(gpu.W, cpu.W, rtol=0, atol=1e-10)
    alone = simulate(MIXED[3], COUNTS, d=5, epochs=60, batch_size=5, device="cuda")
    np.testing.assert_allclose(alone.W[0], gpu.W[3], rtol=0, atol=1e-12)


def test_balanced_counts_have_no_minority_group_and_no_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = simulate(UFMConfig("ce", lam=1e-2, lr=1.0), [5, 5, 5], d=3, epochs=2000)
        best = minimize_ufm(UFMConfig("ce", lam=1e-2), [5, 5, 5], d=3)
    row = res.final_rows()[0]
    # No minority group: per-group norms are NaN, the summaries pool every class (ratio 1).
    assert math.isnan(row["W_norm_min"]) and math.isnan(best.metrics["H_norm_min"])
    assert row["W_ratio"] == pytest.approx(1.0, abs=1e-6) and best.metrics["W_ratio"] == pytest.approx(1.0)
    # Balanced CE: the minimiser is a simplex ETF at every lam (cos = -1/(k-1) = -0.5).
    assert row["W_cos_maj_maj"] == pytest.approx(-0.5, abs=1e-9)
    assert best.metrics["dist_W"] < 1e-8 and row["dist_W"] < 1e-8
