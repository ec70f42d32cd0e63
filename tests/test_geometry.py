"""Geometry probes against a direct NumPy computation written here (THEORY.md §5)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from cegeo.data.imbalance import step_groups
from cegeo.geometry import FeatureStats, classifier_weight, feature_stats, measure
from cegeo.losses import create_loss
from cegeo.models import create_model


def _features(rng, counts, d, spread=1.0, scale=3.0):
    k = len(counts)
    means = rng.normal(size=(k, d)) * scale
    y = np.repeat(np.arange(k), counts)
    h = means[y] + spread * rng.normal(size=(y.size, d))
    order = rng.permutation(y.size)
    return h[order], y[order]


def _direct(h, y, W, k):
    """Everything the probe reports, the textbook way (two passes, explicit pinv)."""
    counts = np.bincount(y, minlength=k).astype(float)
    mu = np.stack([h[y == c].mean(0) for c in range(k)])
    mu_g = h.mean(0)
    resid = h - mu[y]
    sigma_w = resid.T @ resid / h.shape[0]
    cm = mu - mu_g
    sigma_b = cm.T @ cm / k
    # rank k-1 pseudo-inverse of Sigma_B
    vals, vecs = np.linalg.eigh(sigma_b)
    top = np.argsort(vals)[::-1][: k - 1]
    pinv = (vecs[:, top] / vals[top]) @ vecs[:, top].T
    nc1 = np.trace(sigma_w @ pinv) / k
    return {"counts": counts, "mu": mu, "mu_g": mu_g, "scatter": resid.T @ resid, "nc1": nc1, "W": W}


def _pair_means(C, a, b, same):
    vals = [C[i, j] for i in a for j in b if not (same and i == j)]
    return float(np.mean(vals))


def _summary(G_W, G_H, M, maj, mino):
    out = {}
    for tag, G in (("W", G_W), ("H", G_H)):
        d = np.sqrt(np.diag(G))
        C = G / np.outer(d, d)
        out[f"{tag}_ratio"] = np.mean(np.diag(G)[maj]) / np.mean(np.diag(G)[mino])
        out[f"{tag}_cos_maj_maj"] = _pair_means(C, maj, maj, True)
        out[f"{tag}_cos_min_min"] = _pair_means(C, mino, mino, True)
        out[f"{tag}_cos_maj_min"] = _pair_means(C, maj, mino, False)
    out["cos_WH"] = float(np.mean(np.diag(M) / np.sqrt(np.diag(G_W) * np.diag(G_H))))
    return out


@pytest.mark.parametrize("batch", [1, 7, 64, 10_000])
def test_stats_in_batches_match_numpy(rng, batch):
    counts = [50, 50, 5, 5]
    h, y = _features(rng, counts, d=6)
    st = FeatureStats.zeros(4, 6)
    for i in range(0, y.size, batch):  # batches often miss classes
        st.update(torch.from_numpy(h[i : i + batch]), torch.from_numpy(y[i : i + batch]))
    ref = _direct(h, y, None, 4)
    counts_, sums, scatter = st.to_numpy()
    np.testing.assert_array_equal(counts_, ref["counts"])
    np.testing.assert_allclose(sums / counts_[:, None], ref["mu"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scatter, ref["scatter"], rtol=1e-10, atol=1e-10)


def test_merge_equals_one_pass(rng):
    h, y = _features(rng, [30, 20, 3], d=5)
    whole = feature_stats(h, y, 3)
    a = feature_stats(h[:17], y[:17], 3)
    b = feature_stats(h[17:], y[17:], 3)
    merged = a.merge(b)
    for x, z in zip(whole.to_numpy(), merged.to_numpy(), strict=True):
        np.testing.assert_allclose(x, z, rtol=1e-11, atol=1e-11)


def test_measure_matches_direct_numpy(rng):
    counts = [40, 40, 40, 4, 4, 4]
    k, d = 6, 9
    h, y = _features(rng, counts, d)
    W = rng.normal(size=(k, d))
    grp = step_groups(k, 0.5)
    loss = create_loss("cdt", counts, gamma=0.5)
    p = measure(feature_stats(h, y, k), W, loss=loss, class_counts=counts, groups=grp)
    ref = _direct(h, y, W, k)
    mu, cm = ref["mu"], ref["mu"] - ref["mu_g"]
    np.testing.assert_allclose(p.w_norms, np.linalg.norm(W, axis=1), rtol=1e-12)
    np.testing.assert_allclose(p.h_norms, np.linalg.norm(mu, axis=1), rtol=1e-12)
    np.testing.assert_allclose(p.h_norms_centred, np.linalg.norm(cm, axis=1), rtol=1e-10)
    cos_wh = np.sum(W * mu, 1) / np.linalg.norm(W, axis=1) / np.linalg.norm(mu, axis=1)
    np.testing.assert_allclose(p.cos_wh, cos_wh, rtol=1e-10)
    maj, mino = [0, 1, 2], [3, 4, 5]
    want = _summary(W @ W.T, mu @ mu.T, W @ mu.T, maj, mino)
    want_c = _summary(W @ W.T, cm @ cm.T, W @ cm.T, maj, mino)
    for key, value in want.items():
        assert p.summary[key] == pytest.approx(value, rel=1e-10), key
        assert p.summary_centred[key] == pytest.approx(want_c[key], rel=1e-9), key
    assert p.nc1 == pytest.approx(ref["nc1"], rel=1e-8)
    # Distances to theory, computed here from THEORY.md §4.1 with scipy's sqrtm.
    dc = loss.delta_logit.numpy()
    a = dc**-2 / np.sum(dc**-2)
    M_star = (np.eye(k) - np.outer(np.ones(k), a)) / dc[:, None]
    N = np.diag(np.asarray(counts, float))
    Nh = np.sqrt(N)
    GW_star = np.real(scipy.linalg.sqrtm(M_star @ N @ M_star.T))
    Ninv = np.diag(1 / np.sqrt(np.asarray(counts, float)))
    GH_star = Ninv @ np.real(scipy.linalg.sqrtm(Nh @ M_star.T @ M_star @ Nh)) @ Ninv

    def dist(A, B):
        return np.linalg.norm(A / np.linalg.norm(A) - B / np.linalg.norm(B))

    rec = p.to_dict(matrices=True)
    assert rec["dist_W"] == pytest.approx(dist(W @ W.T, GW_star), rel=1e-6)
    assert rec["dist_H"] == pytest.approx(dist(mu @ mu.T, GH_star), rel=1e-6)
    assert rec["dist_M"] == pytest.approx(dist(W @ mu.T, M_star), rel=1e-8)
    # centred: both sides minus their sample-weighted mean (pi = n / sum n); H* factored from G_H*
    vals, vecs = np.linalg.eigh(GH_star)
    H_star = vecs * np.sqrt(np.clip(vals, 0, None))  # rows h*_c, H* H*^T = G_H*
    pi = np.asarray(counts, float) / sum(counts)
    Hc_star = H_star - pi @ H_star
    assert rec["dist_H_centred"] == pytest.approx(dist(cm @ cm.T, Hc_star @ Hc_star.T), rel=1e-6)
    assert np.allclose(rec["cos_W"], (W @ W.T) / np.outer(p.w_norms, p.w_norms))
    assert set(rec) >= {"w_norms", "h_norms", "summary", "summary_centred", "nc1", "cos_H", "M"}


def test_exact_theory_geometry_has_zero_distance():
    """Features and classifier built from the LDT prediction itself measure as that prediction."""
    counts = np.array([50, 50, 5, 5])
    loss = create_loss("ldt", counts, gamma=1.0)
    from cegeo.theory import predict

    g = predict(loss, counts)
    # Factor the Grams: W = U diag(sqrt) rows, H from G_H; both consistent with M = W H^T.
    k = 4
    # W H^T = M with W W^T = G_W: take W = G_W^(1/2), H^T = G_W^(-1/2) M (pinv on the range).
    vals, vecs = np.linalg.eigh(g.G_W)
    half = vecs @ np.diag(np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    W = half
    H = (np.linalg.pinv(half) @ g.M).T  # (k, d): class means
    y = np.arange(k)
    p = measure(feature_stats(H, y, k), W, loss=loss, class_counts=counts)
    d = p.distances()
    assert d["dist_W"] < 1e-8 and d["dist_M"] < 1e-8 and d["dist_H"] < 1e-6
    assert d["dist_H_centred"] < 1e-6
    # An offset shared by every class mean (post-ReLU features are all positive) moves the
    # uncentred distance far from 0 and leaves the centred one where it was.
    shifted = measure(feature_stats(H + 3.0 * np.abs(H).max(), y, k), W, loss=loss, class_counts=counts)
    assert shifted.distances()["dist_H"] > 0.3
    assert shifted.distances()["dist_H_centred"] == pytest.approx(d["dist_H_centred"], abs=1e-6)
    assert p.nc1 == pytest.approx(0.0, abs=1e-12)  # one sample per class: no within-class spread


def test_nc1_is_accurate_when_features_have_collapsed(rng):
    """Large means and tiny spread: no cancellation in the within-class scatter."""
    counts = [200, 200, 20]
    h, y = _features(rng, counts, d=4, spread=1e-6, scale=1e3)
    st = FeatureStats.zeros(3, 4)
    for i in range(0, y.size, 32):
        st.update(torch.from_numpy(h[i : i + 32]), torch.from_numpy(y[i : i + 32]))
    ref = _direct(h, y, None, 3)
    p = measure(st, np.eye(3, 4), class_counts=counts)
    assert p.nc1 == pytest.approx(ref["nc1"], rel=1e-6)
    assert 0 < p.nc1 < 1e-10


def test_ldam_has_no_theory_distance(rng):
    counts = [20, 2]
    h, y = _features(rng, counts, d=3)
    p = measure(feature_stats(h, y, 2), rng.normal(size=(2, 3)), loss=create_loss("ldam", counts))
    assert p.theory is None
    assert p.to_dict()["dist_W"] is None and p.to_dict()["dist_M"] is None


def test_classifier_weight_of_cosine_head_is_normalised():
    m = create_model("mlp", in_shape=(5,), num_classes=3, width=4, depth=1, cosine_classifier=True)
    W = classifier_weight(m)
    np.testing.assert_allclose(W.norm(dim=1).numpy(), 1.0, rtol=1e-6)
    plain = create_model("mlp", in_shape=(5,), num_classes=3, width=4, depth=1)
    assert torch.equal(classifier_weight(plain), plain.classifier.weight.detach())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: measure(feature_stats(np.eye(3), [0, 1, 1], 3), np.eye(3)), "none of class 2"),
        (
            lambda: measure(feature_stats(np.eye(3), [0, 1, 2], 3), np.eye(2, 3)),
            "`W` must be a classifier of shape",
        ),
        (
            lambda: measure(feature_stats(np.eye(3), [0, 1, 2], 3), np.eye(3), class_counts=[1, 2]),
            "`class_counts` must be 3 counts",
        ),
        (lambda: feature_stats(np.eye(3), [0, 1, 3], 3), r"`labels` must be labels in 0\.\.2"),
        (lambda: FeatureStats.zeros(2, 3).update(torch.zeros(4, 2), torch.zeros(4)), "`features` must be"),
        (lambda: FeatureStats.zeros(2, 3).update(torch.zeros(4, 3), torch.zeros(3)), "`labels` must be"),
        (lambda: FeatureStats.zeros(0, 3), "`num_classes` must be an integer >= 1"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_nc1_of_overflowed_features_is_nan_not_an_error():
    """A diverging run's features overflow; the probe reports NaN instead of failing in eigh."""
    from cegeo.geometry import _nc1

    means = np.array([[np.inf, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert np.isnan(_nc1(means, np.array([3, 2, 1]), np.eye(2)))
    means[0, 0] = 1.0
    assert np.isnan(_nc1(means, np.array([3, 2, 1]), np.full((2, 2), np.inf)))


def test_natural_misuse_is_a_one_line_error():
    """Fractional or text labels (0.7 was truncated to class 0), a loss given by name (the
    theory was silently switched off), a Geometry where a Gram matrix is expected."""
    from cegeo.geometry import feature_stats, measure
    from cegeo.theory import distance, predict

    for labels, match in (
        (np.array([0.7, 1.7, 1.2]), r"`labels` must be integer class labels; got 'float64'"),
        (np.array(["a", "b", "a"]), r"`labels` must be integer class labels"),
        (np.array([0, 1]), r"`labels` must be a 1-D array of 3 labels"),
    ):
        with pytest.raises(ValueError, match=match):
            feature_stats(np.eye(3), labels, 2)
    assert feature_stats(np.eye(3), np.array([0.0, 1.0, 1.0]), 2).counts.tolist() == [1.0, 2.0]
    rng = np.random.default_rng(0)
    h, y, W = rng.normal(size=(12, 4)), np.repeat([0, 1, 2], 4), rng.normal(size=(3, 4))
    with pytest.raises(
        ValueError, match=r"`loss` must be the training loss module \(cegeo.losses.create_loss"
    ):
        measure(feature_stats(h, y, 3), W, loss="ldt")
    g = predict(None, [5, 1])
    with pytest.raises(
        ValueError,
        match=r"`G` must be a \(k, k\) Gram matrix, e.g. geometry.G_W or geometry.G_H; got a Geometry",
    ):
        distance(g, g)
