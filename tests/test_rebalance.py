"""Rebalancers on synthetic logits where the right answer is known, the estimator contract, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from cegeo import metrics as M
from cegeo.losses import create_loss
from cegeo.rebalance import (
    LWS,
    SELECTION_METRICS,
    GeometryRebalancer,
    OperatingPoint,
    PosthocLA,
    TauNorm,
    create_rebalancer,
    get_rebalancer_info,
    list_rebalancers,
    selection_score,
)
from cegeo.theory import predict


def gaussian_logits(rng, counts, n, sep=1.5):
    """Calibrated logits log p(c|x) = log p(x|c) + log pi_c for x ~ N(sep * e_y, I), y ~ pi.

    Means have equal norms, so log p(x|c) = sep * x_c + const and the balanced-error Bayes rule is
    argmax_c (z_c - log pi_c): post-hoc logit adjustment with tau = 1.
    """
    k = len(counts)
    pi = np.asarray(counts, float) / np.sum(counts)
    y = rng.choice(k, size=n, p=pi)
    x = sep * np.eye(k)[y] + rng.normal(size=(n, k))
    return sep * x + np.log(pi), y


COUNTS6 = [1000, 1000, 1000, 100, 100, 100]


# --------------------------------------------------------------------------- known right answers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_posthoc_la_picks_tau_near_one_on_gaussians(seed):
    rng = np.random.default_rng(seed)
    z_val, y_val = gaussian_logits(rng, COUNTS6, 20_000)
    la = PosthocLA().fit(z_val, y_val, COUNTS6)
    assert abs(la.tau_ - 1.0) <= 0.15
    assert la.val_score_ > la.val_score_raw_ + 0.05
    # ... and it generalises: on fresh data the chosen tau beats raw argmax.
    z_test, y_test = gaussian_logits(rng, COUNTS6, 20_000)
    raw = M.balanced_accuracy_score(y_test, z_test.argmax(1), 6)
    assert M.balanced_accuracy_score(y_test, la.predict(z_test), 6) > raw + 0.05
    np.testing.assert_allclose(la.offset_, -la.tau_ * np.log(np.array(COUNTS6) / sum(COUNTS6)))


def test_lws_recovers_known_scales():
    rng = np.random.default_rng(3)
    k = 4
    y = rng.integers(0, k, 8000)
    z_true = 2.0 * (2.0 * np.eye(k)[y] + rng.normal(size=(y.size, k)))  # balanced log-likelihoods
    s_true = np.array([1.0, 0.7, 0.4, 0.25])
    lws = LWS().fit(z_true * s_true, y)
    np.testing.assert_allclose(lws.scale_, 1.0 / s_true, rtol=0.06)
    assert lws.converged_ and np.all(lws.offset_ == 0)


def test_lws_reports_a_scale_on_its_lower_bound():
    """Class 1's logit is high exactly when the sample is *not* class 1: the best scale for it is
    0, the fit stops on the bound, and the warning says so."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 600)
    z = 3.0 * np.eye(3)[y] + rng.normal(size=(y.size, 3))
    z[:, 1] = np.where(y == 1, -4.0, 4.0)
    lws = LWS().fit(z, y)
    assert lws.scale_[1] <= 2e-6
    assert any("scale of class(es) [1] hit its lower bound" in w for w in lws.warnings_)
    assert not any(
        "lower bound" in w for w in LWS().fit(3.0 * np.eye(3)[y] + rng.normal(size=(y.size, 3)), y).warnings_
    )


def test_lws_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(50, 3)) * 3
    y = rng.integers(0, 3, 50)
    lws = LWS(alpha=0.1, max_iter=1).fit(z, y)  # one step: we only need the objective here
    from scipy.optimize import check_grad
    from scipy.special import logsumexp

    w = 1.0 / (3 * np.bincount(y, minlength=3)[y])

    def f(s):
        a = z * s
        return np.sum(w * (logsumexp(a, axis=1) - a[np.arange(50), y])) + 0.05 * np.sum((s - 1) ** 2)

    def g(s):
        a = z * s
        p = np.exp(a - logsumexp(a, axis=1)[:, None])
        p[np.arange(50), y] -= 1
        return (p * z * w[:, None]).sum(0) + 0.1 * (s - 1)

    assert check_grad(f, g, np.array([0.5, 1.3, 2.0])) < 1e-5
    full = LWS(alpha=0.1).fit(z, y)
    assert f(full.scale_) <= f(lws.scale_) + 1e-12
    # KKT for s >= 1e-6: zero gradient off the bound, non-negative at it.
    grad, at_bound = g(full.scale_), full.scale_ <= 1e-6 * (1 + 1e-9)
    assert np.all(np.abs(grad[~at_bound]) < 1e-4) and np.all(grad[at_bound] >= 0)


def test_tau_norm_undoes_classifier_norm_bias():
    rng = np.random.default_rng(5)
    k, d = 4, 8
    W = np.zeros((k, d))
    W[np.arange(k), np.arange(k)] = [2.0, 2.0, 1.0, 1.0]  # majority rows twice as long
    y = rng.integers(0, k, 6000)
    h = 2.0 * np.eye(k, d)[y] + rng.normal(size=(y.size, d))
    z = h @ W.T
    tn = TauNorm(classifier=W).fit(z, y)
    assert abs(tn.tau_ - 1.0) <= 0.2
    np.testing.assert_allclose(tn.w_norms_, [2, 2, 1, 1])
    # Same argmax as rescaling the classifier rows, as Kang et al. define it.
    W_tau = W / np.linalg.norm(W, axis=1, keepdims=True) ** tn.tau_
    np.testing.assert_array_equal(tn.predict(z), np.argmax(h @ W_tau.T, axis=1))


def test_geometry_uses_the_theory_norms():
    counts = [500] * 5 + [50] * 5  # (R=10, rho=1/2)-STEP, THEORY.md §4.4
    rng = np.random.default_rng(6)
    z = rng.normal(size=(200, 10))
    y = rng.integers(0, 10, 200)
    g = GeometryRebalancer(loss="ce").fit(z, y, counts)
    # SELI W ratio ||w_maj||^2/||w_min||^2 = 2.6721 at R = 10: majority logits shrink by sqrt of it.
    assert g.scale_[0] / g.scale_[-1] == pytest.approx(1 / np.sqrt(2.6721), rel=1e-4)
    norms = predict(create_loss("ce", counts), counts).w_norms
    np.testing.assert_allclose(g.predicted_w_norms_, norms / norms.max())
    # LDT gamma = 1/2 predicts an ETF: equal norms, so the correction is the identity.
    ldt = GeometryRebalancer(loss="ldt", loss_hyper={"gamma": 0.5}).fit(z, y, counts)
    np.testing.assert_allclose(ldt.scale_, 1.0, atol=1e-9)
    np.testing.assert_allclose(ldt.transform(z), z, atol=1e-9)


def test_ties_resolve_to_the_smallest_correction():
    # Huge margins: every grid value scores 1.0, so the chosen correction is the smallest.
    y = np.repeat(np.arange(3), 10)
    z = 100.0 * np.eye(3)[y]
    counts = [100, 10, 1]
    assert PosthocLA().fit(z, y, counts).tau_ == 0.0
    assert PosthocLA(grid=[-0.5, 0.5, 1.0]).fit(z, y, counts).tau_ == -0.5  # first of the |tau| ties
    assert create_rebalancer("geometry_tuned", loss="ce").fit(z, y, counts).beta_ == 0.0
    assert TauNorm(classifier=np.diag([3.0, 2.0, 1.0])).fit(z, y).tau_ == 0.0


# ------------------------------------------------------------------------------- operating point


def _op_case(rng, n_normal=200, n_defect=120, k=3):
    """Normal class 0 and defects whose log-odds overlap the normal ones."""
    y = np.r_[np.zeros(n_normal, int), rng.integers(1, k, n_defect)]
    z = rng.normal(size=(y.size, k))
    z[y == 0, 0] += 3.0
    z[y != 0, 0] += 0.5
    z[np.arange(y.size), y] += (y != 0) * 1.5  # defects' own class leads among the others
    return z, y


def _brute_force(z, y, c, target):
    """Best non-normal mean recall over every threshold meeting the budget, and its least FA."""
    from scipy.special import logsumexp

    s = z[:, c] - logsumexp(np.delete(z, c, 1), axis=1)
    cands = np.r_[np.unique(s), np.unique(s) + 1e-9, s.max() + 1, s.min() - 1]
    best = (-1.0, 2.0)
    for t in cands:
        other = np.delete(np.arange(z.shape[1]), c)[np.argmax(np.delete(z, c, 1), axis=1)]
        pred = np.where(s >= t, c, other)
        fa = np.mean(pred[y == c] != c)
        if fa > target:
            continue
        r = np.nanmean(np.delete(M.per_class_scores(y, pred, z.shape[1])["recall"], c))
        if r > best[0] + 1e-12 or (abs(r - best[0]) <= 1e-12 and fa < best[1]):
            best = (r, fa)
    return best


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("seed", [0, 1])
def test_operating_point_meets_the_budget_and_is_optimal(seed, target):
    rng = np.random.default_rng(seed)
    z, y = _op_case(rng)
    op = OperatingPoint(normal_class=0, max_false_alarm=target).fit(z, y)
    recall, fa = _brute_force(z, y, 0, target)
    assert op.val_false_alarm_ <= target
    assert op.val_recall_ == pytest.approx(recall)
    assert op.val_false_alarm_ == pytest.approx(fa)
    assert op.operating_metrics(z, y)["false_alarm"] == op.val_false_alarm_
    # transform's argmax is the rule
    np.testing.assert_array_equal(op.transform(z).argmax(1), op.predict(z))


def test_operating_point_exact_budget_as_constructed():
    # 100 normal samples with log-odds 1..100, defects with log-odds 0.5, 1.5, ..., 9.5: allowing
    # 5% false alarms (5 samples) catches exactly the defects below log-odds 6 (all 6 of them).
    s_normal = np.arange(1.0, 101.0)
    s_defect = np.arange(0.5, 10.0, 1.0)
    z = np.zeros((110, 2))
    z[:100, 0], z[100:, 0] = s_normal, s_defect
    y = np.r_[np.zeros(100, int), np.ones(10, int)]
    op = OperatingPoint(normal_class=0, max_false_alarm=0.05).fit(z, y)
    assert op.val_false_alarm_ == 0.05 and op.val_recall_ == 0.6
    assert op.log_odds_threshold_ == 5.75  # mid-way between the last defect caught and the next normal
    assert op.threshold_ == pytest.approx(1 / (1 + np.exp(-5.75)))
    assert op.val_detection_ == 0.6


# ------------------------------------------------------------------------------------- contract


def _fit_any(name, rng=None):
    rng = rng or np.random.default_rng(0)
    y = np.r_[np.zeros(40, int), rng.integers(0, 4, 80)]
    z = rng.normal(size=(y.size, 4)) + 2 * np.eye(4)[y]
    params = {
        "tau_norm": {"classifier": rng.normal(size=(4, 5))},
        "geometry": {"loss": "ce"},
        "geometry_tuned": {"loss": "ce"},
        "operating_point": {"normal_class": 0, "max_false_alarm": 0.1},
    }.get(name, {})
    est = create_rebalancer(name, **params)
    return est, est.fit(z, y, [400, 400, 40, 40]), z, y


@pytest.mark.parametrize("name", list_rebalancers())
def test_estimator_contract(name):
    est, fitted, z, y = _fit_any(name)
    assert fitted is est
    assert clone(est).get_params().keys() == est.get_params().keys()  # __init__ only stores
    learned = [a for a in vars(est) if a.endswith("_") and not a.startswith("_")]
    assert {"n_classes_", "metric_", "chosen_", "val_score_", "val_score_raw_"} <= set(learned)
    out = est.transform(z)
    assert out.shape == z.shape and out.dtype == np.float64
    np.testing.assert_array_equal(est.predict(z), out.argmax(1))
    assert est.val_score_ == pytest.approx(M.balanced_accuracy_score(y, est.predict(z), 4))
    json.dumps(est.to_dict(), allow_nan=False)
    assert get_rebalancer_info(name).estimator is type(est)
    assert est.to_dict()["name"] == name
    fresh = clone(est)
    for call in (lambda: fresh.transform(z), lambda: fresh.predict(z), fresh.to_dict):
        with pytest.raises(NotFittedError, match=r"is not fitted yet"):
            call()


@pytest.mark.parametrize(
    "est, bad",
    [
        (OperatingPoint(normal_class=5, max_false_alarm=0.1), {}),  # fails in _fit
        (PosthocLA(grid=[]), {}),  # fails in the search
        (PosthocLA(), {"metric": "accuracy"}),  # fails before any state
    ],
    ids=["operating-point", "empty-grid", "metric"],
)
def test_a_failed_first_fit_leaves_the_estimator_unfitted(est, bad):
    z = np.random.default_rng(0).normal(size=(20, 2))
    y = np.r_[np.zeros(15, int), np.ones(5, int)]
    with pytest.raises(ValueError):
        est.fit(z, y, [100, 10], **bad)
    for call in (lambda: est.predict(z), lambda: est.transform(z), est.to_dict):
        with pytest.raises(NotFittedError, match=r"is not fitted yet"):
            call()
    assert not [a for a in vars(est) if a.endswith("_") and not a.startswith("_")]


def test_a_failed_refit_drops_the_previous_fit():
    rng = np.random.default_rng(0)
    z2, y2 = rng.normal(size=(55, 2)), np.r_[np.zeros(50, int), np.ones(5, int)]
    op = OperatingPoint(normal_class=0, max_false_alarm=0.1).fit(z2, y2)
    z3, y3 = rng.normal(size=(30, 3)), rng.integers(1, 3, 30)  # k = 3, normal class absent
    with pytest.raises(ValueError, match=r"`normal_class` 0 has no samples in the validation labels"):
        op.fit(z3, y3)
    with pytest.raises(NotFittedError):  # not the old k = 2 threshold applied to k = 3 logits
        op.predict(z3)
    assert op.fit(z2, y2).predict(z2).shape == (55,)  # and it can be fitted again


def test_grid_edge_warning():
    rng = np.random.default_rng(2)
    z, y = gaussian_logits(rng, COUNTS6, 20_000)
    log_prior = np.log(np.array(COUNTS6) / sum(COUNTS6))
    # The logits carry 3.5x the prior (tau ~ 3.5 would be right): the search stops at the grid's end.
    la = PosthocLA().fit(z + 2.5 * log_prior, y, COUNTS6)
    assert la.tau_ == 3.0 and la.search_["at_edge"] == "upper"
    assert la.warnings_ == [
        "the chosen tau = 3 is the upper end of its search grid [-1, 3] and still improves "
        "balanced_accuracy there: the best value may lie beyond it (widen `grid`)"
    ]
    assert la.to_dict()["warnings"] == la.warnings_
    # Calibrated logits: tau ~ 1 inside the grid, no warning.
    la = PosthocLA().fit(z, y, COUNTS6)
    assert la.search_["at_edge"] is None and la.warnings_ == []
    # Ties at the no-correction end (0) are no warning either, nor a fixed value.
    y3 = np.repeat(np.arange(3), 10)
    z3 = 100.0 * np.eye(3)[y3]
    tn = TauNorm(classifier=np.diag([3.0, 2.0, 1.0])).fit(z3, y3)
    assert tn.tau_ == 0.0 and tn.warnings_ == [] and tn.search_["at_edge"] is None
    assert PosthocLA(tau=3.0).fit(z, y, COUNTS6).warnings_ == []
    # The lower end counts too (a grid that stops short of the answer from below).
    la = PosthocLA(grid=[-0.5, -0.25]).fit(z, y, COUNTS6)
    assert la.tau_ == -0.25 and la.search_["at_edge"] == "upper"
    la = PosthocLA(grid=[2.0, 2.5, 3.0]).fit(z, y, COUNTS6)
    assert la.tau_ == 2.0 and la.search_["at_edge"] == "lower"


@pytest.mark.parametrize("name", ["posthoc_la", "tau_norm", "geometry_tuned"])
def test_tuned_methods_never_lose_on_validation(name):
    est = _fit_any(name)[1]
    assert est.val_score_ >= est.val_score_raw_  # the grid contains the no-correction point
    assert est.search_ is not None and len(est.search_["grid"]) == len(est.search_["scores"])


@pytest.mark.parametrize("metric", list(SELECTION_METRICS))
def test_every_selection_metric(metric):
    rng = np.random.default_rng(1)
    z, y = gaussian_logits(rng, COUNTS6, 3000)
    la = PosthocLA().fit(z, y, COUNTS6, metric=metric)
    assert la.metric_ == metric
    assert la.val_score_ == pytest.approx(selection_score(metric, y, la.predict(z), 6))
    assert max(la.search_["scores"]) == la.val_score_


# --------------------------------------------------------------------------------------- errors

Z = np.array([[2.0, 0.0, 0.5], [0.0, 1.0, 0.2], [0.1, 0.0, 2.0], [1.0, 0.9, 0.0]])
Y = np.array([0, 1, 2, 0])
C3 = [100, 10, 10]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: create_rebalancer("platt"), r"unknown rebalancer 'platt'; valid names: 'posthoc_la'"),
        (
            lambda: create_rebalancer("posthoc_la", beta=1),
            r"rebalancer 'posthoc_la' takes grid, tau; got unknown parameter\(s\) beta",
        ),
        (
            lambda: PosthocLA().fit(Z, Y, C3, metric="accuracy"),
            r"`metric` must be one of 'balanced_accuracy'",
        ),
        (lambda: PosthocLA().fit(Z, Y), r"`class_counts` must be the 3 per-class training counts; got None"),
        (lambda: PosthocLA().fit(Z, Y, [1, 2]), r"`class_counts` must be 3 counts \(one per logit column\)"),
        (lambda: PosthocLA().fit(Z, Y, [5, 0, 1]), r"`class_counts` must be positive integers"),
        (lambda: PosthocLA().fit(Z, None, C3), r"`y` must be the validation labels"),
        (lambda: PosthocLA().fit(Z, Y[:3], C3), r"`y` must be a \(4,\) array of labels"),
        (lambda: PosthocLA().fit(Z, [0, 1, 2, 3], C3), r"`y` must be labels in 0..2; got 3"),
        (lambda: PosthocLA().fit(Z, [0.5, 1, 2, 0], C3), r"`y` must be integer class labels"),
        (lambda: PosthocLA().fit(Z * np.nan, Y, C3), r"`X` must be finite logits"),
        (lambda: PosthocLA().fit(Z[:, 0], Y, C3), r"`X` must be a non-empty \(n, k\) array of logits"),
        (lambda: PosthocLA().fit("logits", Y, C3), r"`X` must be a \(n, k\) array of logits or a RunSplit"),
        (
            lambda: PosthocLA(tau=float("inf")).fit(Z, Y, C3),
            r"`tau` must be None \(tune on validation\) or a finite number",
        ),
        (lambda: PosthocLA(grid=[]).fit(Z, Y, C3), r"`grid` must be a non-empty sequence of finite numbers"),
        (lambda: PosthocLA(tau=1.0).fit(Z, Y, C3).transform(Z[:, :2]), r"`X` must be logits with 3 columns"),
        (lambda: TauNorm().fit(Z, Y), r"`classifier` must be the \(k, d\) classifier weight W"),
        (
            lambda: TauNorm(classifier=np.ones((2, 4))).fit(Z, Y),
            r"`classifier` must be a finite \(3, d\) array",
        ),
        (
            lambda: TauNorm(classifier=np.zeros((3, 4))).fit(Z, Y),
            r"`classifier` must be rows with non-zero norm",
        ),
        (
            lambda: TauNorm(classifier="abc").fit(Z, Y),
            r"`classifier` must be a finite \(3, d\) array of numbers; got 'abc'",
        ),
        (lambda: GeometryRebalancer().fit(Z, Y, C3), r"`loss` must be the training loss name"),
        (
            lambda: GeometryRebalancer(loss="ldam").fit(Z, Y, C3),
            r"`loss` must be a loss the theory covers .*; got 'ldam'",
        ),
        (
            lambda: GeometryRebalancer(loss="ldt", loss_hyper={"tau": 1}).fit(Z, Y, C3),
            r"loss 'ldt' takes gamma, normalize",
        ),
        *(
            (
                lambda name=name: GeometryRebalancer(loss="ldt", loss_hyper={name: 1.0}).fit(Z, Y, C3),
                rf"loss 'ldt' takes gamma, normalize; got unknown hyperparameter\(s\) {name}\.",
            )
            for name in ("name", "class_counts", "reduction")  # create_loss's own arguments
        ),
        (
            lambda: GeometryRebalancer(loss="ldt", loss_hyper=[1]).fit(Z, Y, C3),
            r"`loss_hyper` must be a mapping of hyperparameter name -> value, .*; got \[1\]",
        ),
        (
            lambda: GeometryRebalancer(loss="ldt", loss_hyper={"gamma": "x"}).fit(Z, Y, C3),
            r"`gamma` must be a finite number; got 'x'",
        ),
        (
            # no sampler option: a sampler drops out of the theory's limit (THEORY.md §4)
            lambda: create_rebalancer("geometry", loss="ce", sampler="class_balanced"),
            r"rebalancer 'geometry' takes beta, grid, loss, loss_hyper; got unknown parameter\(s\) sampler\.",
        ),
        (lambda: LWS(alpha=-1).fit(Z, Y), r"`alpha` must be a finite number >= 0"),
        (lambda: LWS(max_iter=0).fit(Z, Y), r"`max_iter` must be an integer >= 1"),
        (
            lambda: OperatingPoint().fit(Z, Y),
            r"`normal_class` must be a class in 0..2 \(the operating point needs one\)",
        ),
        (lambda: OperatingPoint(normal_class=3).fit(Z, Y), r"`normal_class` must be a class in 0..2; got 3"),
        (
            lambda: OperatingPoint(normal_class=1).fit(Z, [0, 0, 2, 0]),
            r"`normal_class` 1 has no samples in the validation labels",
        ),
        (
            lambda: OperatingPoint(normal_class=0).fit(Z, [0, 0, 0, 0]),
            r"the validation labels hold only the normal class",
        ),
        (
            lambda: OperatingPoint(normal_class=0, max_false_alarm=1.0).fit(Z, Y),
            r"`max_false_alarm` must be a number in \[0, 1\); got 1.0",
        ),
        (
            lambda: OperatingPoint(normal_class=0, max_false_alarm=0.0).fit(
                np.array([[0.0, 0], [1.0, 0], [5.0, 0]]), [0, 0, 1]
            ),
            r"`max_false_alarm` 0 is impossible on validation: no threshold with at most 0 false alarm",
        ),
        (
            lambda: OperatingPoint(normal_class=0).fit(Z, Y).operating_metrics(Z),
            r"`y` must be labels \(n,\) when X is an array",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_operating_metrics_checks_labels_like_fit():
    """operating_metrics refuses fractional, non-finite or out-of-range labels (it truncated
    y + 0.7 to y silently) with the same messages as fit."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    z = rng.normal(size=(60, 3)) + 3 * np.eye(3)[y]
    op = OperatingPoint(normal_class=0, max_false_alarm=0.2).fit(z, y)
    assert op.operating_metrics(z, y.astype(np.float64)) == op.operating_metrics(z, y)
    for bad, match in (
        (y + 0.7, r"`y` must be integer class labels; got 'float64'"),
        (np.where(y == 0, np.nan, y), r"`y` must be integer class labels"),
        (y + 1, r"`y` must be labels in 0..2; got 3"),
        (y[:5], r"`y` must be a \(60,\) array of labels"),
    ):
        with pytest.raises(ValueError, match=match):
            op.operating_metrics(z, bad)


def test_lws_alpha_error_says_what_is_allowed():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 10)
    z = rng.normal(size=(20, 2))
    for alpha in (None, "x", -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"^`alpha` must be a finite number >= 0; got "):
            LWS(alpha=alpha).fit(z, y)


# ------------------------------------------------------------------------- cross-fitted scores


@pytest.mark.parametrize("name", ["posthoc_la", "lws"])
def test_cross_fitted_score_is_scikit_learns_out_of_fold_prediction(name):
    """Against scikit-learn's cross_val_predict with the same stratified folds: each validation
    sample is predicted by a fit on the other folds, and the metric is taken over all of them."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from cegeo.data.imbalance import groups
    from cegeo.rebalance import CV_FOLDS, RunSplit, cross_fitted_score

    rng = np.random.default_rng(3)
    z, y = gaussian_logits(rng, COUNTS6, 800)
    split = RunSplit("val", z, y, np.array(COUNTS6), groups(COUNTS6))
    folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=0)
    pred = cross_val_predict(
        create_rebalancer(name), z, y, cv=folds, params={"class_counts": np.array(COUNTS6)}
    )
    want = M.balanced_accuracy_score(y, pred, 6)
    assert cross_fitted_score(name, split) == pytest.approx(want, abs=1e-12)
    # the in-sample score of a fit with one scale per class is optimistic
    if name == "lws":
        assert create_rebalancer(name).fit(split).val_score_ > want


def test_cross_fitted_score_is_none_when_a_fold_cannot_be_fitted():
    """An operating point whose normal class is missing from a fold's fitting part has no score."""
    from cegeo.data.imbalance import groups
    from cegeo.rebalance import RunSplit, cross_fitted_score

    rng = np.random.default_rng(0)
    y = np.array([0] + [1] * 30 + [2] * 30)  # one normal sample: a fold fits without it
    z = rng.normal(size=(y.size, 3))
    split = RunSplit("val", z, y, np.array([100, 50, 50]), groups([100, 50, 50]))
    assert cross_fitted_score("operating_point", split, normal_class=0, max_false_alarm=0.5) is None
    assert cross_fitted_score("posthoc_la", split) is not None


@pytest.mark.parametrize("per_class", [[1, 1, 1, 1], [1, 1, 1]])
def test_cross_fitted_score_is_none_on_a_split_too_small_to_cross_fit(per_class):
    """Every class a single sample: StratifiedKFold cannot make two folds, and its ValueError
    was a traceback of cegeo posthoc (run_posthoc) on a validation split of <= k samples."""
    from cegeo.data.imbalance import groups
    from cegeo.rebalance import RunSplit, cross_fitted_score

    k = len(per_class)
    y = np.repeat(np.arange(k), per_class)
    z = np.random.default_rng(0).normal(size=(y.size, k))
    counts = np.array([100] * (k - 1) + [10])
    split = RunSplit("val", z, y, counts, groups(counts))
    assert cross_fitted_score("posthoc_la", split) is None
    assert create_rebalancer("posthoc_la").fit(split).val_score_ is not None  # the fit itself runs
