"""Losses against naive float64 formulas written here (never the library's own code)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cegeo.losses import (
    LDAMLoss,
    ParametricCE,
    class_balanced_weights,
    create_loss,
    get_loss_info,
    list_losses,
)


def naive_loss(z, y, omega=None, dc=None, dl=None, iota=None, reduction="mean"):
    """loss(y, z) = -omega_y log softmax(Dl_y (Dc * z) + iota)_y, one sample at a time."""
    n, k = z.shape
    omega = np.ones(k) if omega is None else np.asarray(omega, float)
    dc = np.ones(k) if dc is None else np.asarray(dc, float)
    dl = np.ones(k) if dl is None else np.asarray(dl, float)
    iota = np.zeros(k) if iota is None else np.asarray(iota, float)
    vals, weights = [], []
    for i in range(n):
        u = [dl[y[i]] * dc[c] * z[i, c] + iota[c] for c in range(k)]
        m = max(u)
        lse = m + math.log(sum(math.exp(v - m) for v in u))
        vals.append(omega[y[i]] * (lse - u[y[i]]))
        weights.append(omega[y[i]])
    vals = np.array(vals)
    if reduction == "none":
        return vals
    if reduction == "sum":
        return vals.sum()
    return vals.sum() / np.sum(weights)


def naive_member(name, counts, **h):
    """Parameters of each registry member straight from THEORY.md §2's table."""
    c = np.asarray(counts, float)
    k = c.size
    pi = c / c.sum()

    def temp(g, normalize=True):
        t = (c / c.max()) ** g
        return t * k / t.sum() if normalize else t

    if name == "ce":
        return {}
    if name == "wce":
        w = (c.max() / c) ** h.get("gamma", 1.0)
        return {"omega": w / w.mean()}
    if name == "la":
        return {"iota": h.get("tau", 1.0) * np.log(pi)}
    if name == "balanced_softmax":
        return {"iota": np.log(pi)}
    if name == "cdt":
        return {"dc": temp(h.get("gamma", 0.5), bool(h.get("normalize", 1)))}
    if name == "ldt":
        return {"dl": temp(h.get("gamma", 0.5), bool(h.get("normalize", 1)))}
    if name == "vs":
        return {
            "dc": temp(h.get("gamma", 0.5), bool(h.get("normalize", 1))),
            "iota": h.get("tau", 1.0) * np.log(pi),
        }
    raise AssertionError(name)


FAMILY = ["ce", "wce", "la", "cdt", "ldt", "vs", "balanced_softmax"]
HYPER = {
    "ce": [{}],
    "wce": [{}, {"gamma": 0.5}, {"gamma": -0.3}],
    "la": [{}, {"tau": 2.0}, {"tau": -1.0}],
    "cdt": [{}, {"gamma": 1.2}, {"gamma": -0.7, "normalize": 0}],
    "ldt": [{}, {"gamma": 1.0}, {"gamma": -1.5, "normalize": 0}],
    "vs": [{}, {"gamma": 0.3, "tau": 1.5}, {"gamma": -0.2, "tau": 0.5, "normalize": 0}],
    "balanced_softmax": [{}],
}


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_member_equals_naive_formula(name, reduction, rng):
    for hyper in HYPER[name]:
        k = 7
        counts = rng.integers(1, 300, size=k)
        z = rng.normal(scale=3.0, size=(40, k))
        y = rng.integers(0, k, size=40)
        loss = create_loss(name, class_counts=counts, **hyper)
        loss.reduction = reduction
        got = loss(torch.tensor(z), torch.tensor(y)).numpy()
        want = naive_loss(z, y, reduction=reduction, **naive_member(name, counts, **hyper))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "name, hyper",
    [
        ("ce", {}),
        ("la", {"tau": 0.0}),
        ("vs", {"gamma": 0.0, "tau": 0.0}),
        ("cdt", {"gamma": 0.0}),
        ("ldt", {"gamma": 0.0}),
    ],
)
def test_reduces_to_cross_entropy(name, hyper, rng):
    counts = [100, 30, 7, 2]
    z = torch.tensor(rng.normal(size=(64, 4)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 4, size=64))
    loss = create_loss(name, class_counts=counts, **hyper)
    for reduction in ("mean", "sum", "none"):
        loss.reduction = reduction
        torch.testing.assert_close(loss(z, y), F.cross_entropy(z, y, reduction=reduction))


def test_balanced_softmax_equals_la_tau_one(rng):
    counts = [500, 120, 33, 9, 2]
    z = torch.tensor(rng.normal(size=(50, 5)))
    y = torch.tensor(rng.integers(0, 5, size=50))
    torch.testing.assert_close(
        create_loss("balanced_softmax", counts)(z, y), create_loss("la", counts, tau=1.0)(z, y)
    )


@pytest.mark.parametrize("gamma", [1.0, 0.5, 2.0])
def test_wce_equals_torch_weighted_cross_entropy(gamma, rng):
    counts = np.array([400, 100, 20, 5])
    z = torch.tensor(rng.normal(size=(80, 4)))
    y = torch.tensor(rng.integers(0, 4, size=80))
    w = (counts.max() / counts) ** gamma
    w = torch.tensor(w / w.mean())
    loss = create_loss("wce", counts, gamma=gamma)
    for reduction in ("mean", "sum", "none"):
        loss.reduction = reduction
        torch.testing.assert_close(loss(z, y), F.cross_entropy(z, y, weight=w, reduction=reduction))


def test_is_a_drop_in_module(rng):
    loss = ParametricCE(omega=[1.0, 2.0, 3.0])
    assert isinstance(loss, torch.nn.Module)
    assert set(dict(loss.named_buffers())) == {"omega"}
    assert "omega" in loss.state_dict()
    assert loss.omega.dtype == torch.float64  # exact parameters; cast to the logits' dtype per call


@pytest.mark.parametrize("name", FAMILY)
def test_gradcheck_float64(name, rng):
    counts = [50, 20, 5]
    loss = create_loss(name, class_counts=counts)
    z = torch.tensor(rng.normal(size=(6, 3)), dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,))


def test_ldam_equals_naive(rng):
    counts = np.array([100, 25, 4])
    z = rng.uniform(-1, 1, size=(30, 3))
    y = rng.integers(0, 3, size=30)
    loss = create_loss("ldam", counts, max_margin=0.5, scale=30.0)
    m = counts**-0.25
    m = m * 0.5 / m.max()
    zz = z.copy()
    zz[np.arange(30), y] -= m[y]
    want = naive_loss(30 * zz, y)
    np.testing.assert_allclose(float(loss(torch.tensor(z), torch.tensor(y))), want, rtol=1e-10)
    assert get_loss_info("ldam").needs_cosine_classifier
    assert isinstance(loss, LDAMLoss)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("which", ["delta_logit", "delta_label"])
def test_finite_with_extreme_logits_and_temperatures(scale, which):
    temps = np.array([1e-3, 1.0, 1e3, scale])
    loss = ParametricCE(**{which: temps}, iota=np.log([0.7, 0.2, 0.09, 0.01]))
    z = torch.tensor(
        [[1e4, -1e4, 0.0, 5.0], [-1e4, 1e4, 1e4, -1e4]] * 3, dtype=torch.float32, requires_grad=True
    )
    y = torch.tensor([1, 0, 2, 3, 0, 1])
    out = loss(z, y)
    out.backward()
    assert torch.isfinite(out)
    assert torch.isfinite(z.grad).all()


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(2, 8),
    n=st.integers(1, 20),
    seed=st.integers(0, 2**31 - 1),
    gamma=st.floats(-2, 2),
)
def test_ldt_never_changes_argmax(k, n, seed, gamma):
    r = np.random.default_rng(seed)
    counts = r.integers(1, 1000, size=k)
    dl = create_loss("ldt", counts, gamma=gamma).delta_label.double()
    z = torch.tensor(r.normal(size=(n, k)))
    y = torch.tensor(r.integers(0, k, size=n))
    scaled = z * dl[y].unsqueeze(1)
    assert torch.equal(scaled.argmax(1), z.argmax(1))


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(2, 6),
    seed=st.integers(0, 2**31 - 1),
    shift=st.floats(-100, 100),
    name=st.sampled_from(["ce", "wce", "la", "ldt", "balanced_softmax"]),
)
def test_shift_invariance_of_shift_invariant_members(k, seed, shift, name):
    """Adding a constant to every logit leaves CE, wCE, LA, LDT and Balanced Softmax unchanged.

    (CDT and VS scale logits per class, so they are not shift invariant.)
    """
    r = np.random.default_rng(seed)
    counts = r.integers(1, 500, size=k)
    loss = create_loss(name, counts)
    z = torch.tensor(r.normal(size=(10, k)))
    y = torch.tensor(r.integers(0, k, size=10))
    torch.testing.assert_close(loss(z, y), loss(z + shift, y), rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6))
def test_loss_is_nonnegative_and_equals_naive(seed, k):
    r = np.random.default_rng(seed)
    counts = r.integers(1, 100, size=k)
    z = r.normal(scale=5, size=(8, k))
    y = r.integers(0, k, size=8)
    g, tau = r.uniform(-1.5, 1.5), r.uniform(-2, 2)
    loss = create_loss("vs", counts, gamma=g, tau=tau)
    got = float(loss(torch.tensor(z), torch.tensor(y)))
    assert got >= 0
    assert got == pytest.approx(naive_loss(z, y, **naive_member("vs", counts, gamma=g, tau=tau)), rel=1e-9)


def test_registry_lists_every_member_with_formula_and_defaults():
    assert list_losses() == ["ce", "wce", "la", "cdt", "ldt", "vs", "balanced_softmax", "ldam"]
    for name in list_losses():
        info = get_loss_info(name)
        assert info.formula
        loss = create_loss(name, class_counts=[10, 5, 1])
        assert loss.spec.name == name
        assert dict(loss.spec.hyper) == dict(info.defaults)


def test_class_balanced_weights_limits():
    np.testing.assert_allclose(class_balanced_weights([100, 10, 1], beta=0.0), [1, 1, 1])
    w = class_balanced_weights([100, 10, 1], beta=1 - 1e-12)
    np.testing.assert_allclose(w / w[0], [1, 10, 100], rtol=1e-6)


def test_with_omega_keeps_temperatures():
    loss = create_loss("ldt", [10, 1], gamma=0.5)
    new = loss.with_omega([1.0, 3.0])
    torch.testing.assert_close(new.delta_label, loss.delta_label)
    assert new.omega.tolist() == [1.0, 3.0]


# --------------------------------------------------------------------------- documented errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"class_counts": []}, r"`class_counts` must be a non-empty"),
        ({"class_counts": [10, 2.5]}, r"`class_counts` must be integers"),
        ({"class_counts": [10, 0]}, r"`class_counts` must be positive integers"),
        ({"class_counts": [10, -3]}, r"`class_counts` must be positive integers"),
        ({"class_counts": "10,2"}, r"`class_counts` must be"),
        ({"class_counts": [10, 2], "tau": float("nan")}, r"`tau` must be a finite number"),
        ({"class_counts": [10, 2], "tau": float("inf")}, r"`tau` must be a finite number"),
        ({"class_counts": [10, 2], "gamma": 1.0}, r"loss 'la' takes tau; got unknown hyperparameter"),
        ({"class_counts": None}, r"`class_counts` must be the per-class training counts"),
        ({"class_counts": [10**20, 2]}, r"`class_counts` must be integers no larger than 2\*\*53"),
        ({"class_counts": [10**8, 1], "tau": 1e308}, r"`tau` must be a value that keeps the la loss's"),
    ],
)
def test_create_loss_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_loss("la", **kwargs)


@pytest.mark.parametrize(
    "name, counts, hyper, match",
    [
        # (5/1)^-1e6 underflows to 0: the message names gamma, not the broken delta_label.
        (
            "ldt",
            [5, 1],
            {"gamma": 1e6},
            r"^`gamma` must be a value that keeps the ldt loss's .* got 1000000.0\.$",
        ),
        (
            "wce",
            [10**8, 1],
            {"gamma": 100},
            r"^`gamma` must be a value that keeps the wce loss's .*R = 1e\+08",
        ),
        ("vs", [10, 1], {"tau": 1e308}, r"^`gamma, tau` must be values that keep the vs loss's"),
        ("cdt", [10, 1], {"normalize": -3}, r"^`normalize` must be 0 or 1"),
        ("ldt", [10, 1], {"normalize": 0.5}, r"^`normalize` must be 0 or 1"),
    ],
)
def test_hyperparameters_that_break_the_vectors_are_named(name, counts, hyper, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from the overflow reaches the user
        with pytest.raises(ValueError, match=match):
            create_loss(name, counts, **hyper)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown loss 'focal'; valid names: 'ce', 'wce'.*'ldam'"):
        create_loss("focal", [1, 2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"omega": [1.0, float("nan")]}, r"`omega` must be finite numbers"),
        ({"delta_logit": [1.0, 0.0]}, r"`delta_logit` must be positive numbers"),
        ({"delta_label": [1.0, -2.0]}, r"`delta_label` must be positive numbers"),
        ({"omega": [1.0, 1.0], "iota": [0.0, 0.0, 0.0]}, r"must be vectors of one length k"),
        ({"reduction": "avg"}, r"`reduction` must be one of 'mean', 'sum', 'none'"),
    ],
)
def test_parametric_ce_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParametricCE(**kwargs)


@pytest.mark.parametrize(
    "logits, target, match",
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), r"`logits` must be a 2-D tensor"),
        (torch.zeros(4, 3, 2), torch.zeros(4, dtype=torch.long), r"`logits` must be a 2-D tensor"),
        (
            torch.zeros(4, 3),
            torch.zeros(4, 1, dtype=torch.long),
            r"`target` must be a 1-D tensor of shape \(4,\)",
        ),
        (
            torch.zeros(4, 3),
            torch.zeros(5, dtype=torch.long),
            r"`target` must be a 1-D tensor of shape \(4,\)",
        ),
        (torch.zeros(4, 3), torch.zeros(4), r"`target` must be an integer tensor"),
        (torch.zeros(4, 3), torch.tensor([0, 1, 3, 0]), r"`target` must be labels in 0..2; got 3"),
        (torch.zeros(4, 3), torch.tensor([0, -1, 2, 0]), r"`target` must be labels in 0..2; got -1"),
        (torch.zeros(4, 5), torch.tensor([0, 1, 2, 0]), r"`logits` must be a tensor with k = 3 columns"),
    ],
)
@pytest.mark.parametrize("name", ["ldt", "ce", "balanced_softmax"])
def test_forward_errors(name, logits, target, match):
    loss = create_loss(name, [30, 10, 1])
    with pytest.raises(ValueError, match=match):
        loss(logits, target)


def test_num_classes_argument():
    assert ParametricCE(num_classes=3).num_classes == 3
    assert ParametricCE().num_classes is None
    assert create_loss("ce", [30, 10, 1]).with_omega([1.0, 2.0, 3.0]).num_classes == 3
    with pytest.raises(
        ValueError, match=r"`num_classes` must be the length of the per-class vectors \(2\); got 3"
    ):
        ParametricCE(iota=[0.0, 1.0], num_classes=3)


@pytest.mark.cuda
def test_cuda_matches_cpu(rng):
    counts = [500, 50, 5]
    z = torch.tensor(rng.normal(size=(32, 3)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, size=32))
    for name in FAMILY:
        loss = create_loss(name, counts)
        cpu = loss(z, y)
        gpu = loss.to("cuda")(z.cuda(), y.cuda())
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = create_loss("vs", counts).cuda()(z.cuda() @ torch.eye(3, device="cuda"), y.cuda())
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_create_loss_takes_a_reduction_as_nn_cross_entropy_does():
    """A drop-in for nn.CrossEntropyLoss takes reduction=; a bad one set later is an error
    (it averaged silently)."""
    logits, y = torch.randn(5, 2), torch.tensor([0, 1, 0, 0, 1])
    per_sample = create_loss("la", [5, 1], reduction="none")(logits, y)
    assert per_sample.shape == (5,)
    assert torch.allclose(create_loss("la", [5, 1], reduction="sum")(logits, y), per_sample.sum())
    assert torch.allclose(create_loss("la", [5, 1])(logits, y), per_sample.mean())
    with pytest.raises(ValueError, match=r"`reduction` must be one of 'mean', 'sum', 'none'; got 'avg'"):
        create_loss("la", [5, 1], reduction="avg")
    loss = create_loss("la", [5, 1])
    loss.reduction = "bogus"
    with pytest.raises(ValueError, match=r"`reduction` must be one of 'mean', 'sum', 'none'; got 'bogus'"):
        loss(logits, y)
