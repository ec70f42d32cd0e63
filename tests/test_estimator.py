"""ImbalancedMLPClassifier: scikit-learn's estimator checks, composition, determinism, labels,
class-count bookkeeping, post-hoc corrections and every documented error."""

from __future__ import annotations

import inspect
import pickle
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from cegeo._validation import InputError
from cegeo.estimator import LOSS_HYPERPARAMETERS, ImbalancedMLPClassifier
from cegeo.losses import get_loss_info, list_losses
from cegeo.rebalance import list_rebalancers

FAST = {"epochs": 15, "hidden_layer_sizes": (32,), "device": "cpu"}


@pytest.fixture(scope="module")
def data():
    """An imbalanced 3-class problem: 200 / 60 / 20 samples, 6 features."""
    X, y = make_classification(
        n_samples=280,
        n_features=6,
        n_informative=4,
        n_classes=3,
        weights=[200 / 280, 60 / 280, 20 / 280],
        class_sep=1.5,
        random_state=0,
    )
    return X * 10 + 3, y  # off-scale features: the estimator standardises them


# --------------------------------------------------------------------------- scikit-learn checks


@parametrize_with_checks(
    [
        ImbalancedMLPClassifier(),
        ImbalancedMLPClassifier(loss="ldt", gamma=0.5, posthoc="posthoc_la", epochs=50),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------------- composition


def test_pipeline(data):
    X, y = data
    pipe = make_pipeline(PCA(n_components=4), ImbalancedMLPClassifier(**FAST, random_state=0))
    pipe.fit(X, y)
    assert pipe.predict(X).shape == (len(y),)
    assert pipe.predict_proba(X).shape == (len(y), 3)
    assert 0.0 <= pipe.score(X, y) <= 1.0


def test_grid_search_over_gamma(data):
    X, y = data
    search = GridSearchCV(
        ImbalancedMLPClassifier(loss="ldt", **FAST, random_state=0),
        {"gamma": [0.0, 0.5]},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    )
    search.fit(X, y)
    best = search.best_params_["gamma"]
    assert best in (0.0, 0.5)
    assert search.best_estimator_.loss_hyper_["gamma"] == best
    assert search.best_estimator_.loss_.spec.hyper["gamma"] == best
    # The default scoring is the estimator's score: balanced accuracy, not accuracy.
    est = search.best_estimator_
    assert est.score(X, y) == pytest.approx(balanced_accuracy_score(y, est.predict(X)))


def test_every_loss_hyperparameter_is_a_parameter():
    registry = {h for name in list_losses() for h in get_loss_info(name).defaults}
    assert set(LOSS_HYPERPARAMETERS) == registry
    params = ImbalancedMLPClassifier().get_params()
    assert all(params[h] is None for h in LOSS_HYPERPARAMETERS)


@pytest.mark.parametrize("loss", list_losses())
def test_every_registered_loss_trains(loss, data):
    X, y = data
    clf = ImbalancedMLPClassifier(loss, **{**FAST, "epochs": 3}, random_state=0).fit(X, y)
    assert clf.loss_.spec.name == loss
    assert clf.loss_.spec.class_counts == tuple(clf.train_class_counts_.tolist())
    assert clf.loss_hyper_ == dict(get_loss_info(loss).defaults)
    cosine = type(clf.model_.classifier).__name__ == "CosineClassifier"
    assert cosine == get_loss_info(loss).needs_cosine_classifier
    assert np.all(np.isfinite(clf.loss_curve_)) and len(clf.loss_curve_) == clf.n_iter_ == 3


# ------------------------------------------------------------------------- labels and counts


def test_string_labels_and_class_counts(data):
    X, y = data
    names = np.array(["spam", "ham", "eggs"])[y]
    clf = ImbalancedMLPClassifier(**FAST, random_state=0).fit(X, names.astype(object))
    assert clf.classes_.tolist() == ["eggs", "ham", "spam"]
    expected = [int(np.sum(names == c)) for c in ["eggs", "ham", "spam"]]
    assert clf.class_counts_.tolist() == expected
    assert clf.train_class_counts_.tolist() == expected
    pred = clf.predict(X)
    assert set(pred) <= {"eggs", "ham", "spam"}
    assert clf.n_features_in_ == 6


def test_counts_with_posthoc_holdout(data):
    X, y = data
    clf = ImbalancedMLPClassifier(**FAST, posthoc="posthoc_la", validation_fraction=0.25, random_state=0)
    clf.fit(X, y)
    counts = np.bincount(y)
    assert clf.class_counts_.tolist() == counts.tolist()
    # round(0.25 * n_c) of each class held out for the rebalancer
    held = np.floor(0.25 * counts + 0.5).astype(int)
    assert clf.train_class_counts_.tolist() == (counts - held).tolist()
    assert clf.loss_.spec.class_counts == tuple((counts - held).tolist())


def test_binary_decision_function_and_proba(data):
    X, y = data
    keep = y != 1
    clf = ImbalancedMLPClassifier(**FAST, random_state=0).fit(X[keep], np.where(y[keep] == 2, 1, -1))
    d = clf.decision_function(X[keep])
    assert d.shape == (keep.sum(),)
    np.testing.assert_array_equal(clf.predict(X[keep]), np.where(d > 0, 1, -1))
    p = clf.predict_proba(X[keep])
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.log(p[:, 1] / p[:, 0]), d, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(clf.predict_log_proba(X[keep]), np.log(p), atol=1e-9)


def test_bias_free_head_features_times_weights_give_the_logits(data):
    X, y = data
    clf = ImbalancedMLPClassifier(**FAST, random_state=0).fit(X, y)
    h = clf.features(X)
    W = clf.model_.classifier.weight.detach().double().numpy()
    assert h.shape == (len(y), 32)
    np.testing.assert_allclose(h @ W.T, clf.decision_function(X), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------- determinism


def test_deterministic_for_a_random_state(data):
    X, y = data
    rng_before = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    a = ImbalancedMLPClassifier(**FAST, posthoc="lws", random_state=3).fit(X, y)
    b = clone(a).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    for (name, ta), tb in zip(a.model_.state_dict().items(), b.model_.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name
    assert a.loss_curve_ == b.loss_curve_
    c = clone(a).set_params(random_state=4).fit(X, y)
    assert not torch.equal(a.model_.classifier.weight, c.model_.classifier.weight)
    # The global torch RNG and thread count are left as they were.
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads


def test_overlapping_fits_give_the_callers_thread_count_back():
    """Fits overlapping in threads: A sets 1 thread, B (auto) starts while A runs, A ends, B ends.
    Each restoring the count it found left the process on A's 1 thread."""
    from cegeo.estimator import _ONE_THREAD_WORK, _cpu_threads

    cpu, before = torch.device("cpu"), torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        a = _cpu_threads(cpu, 1, 0)
        b = _cpu_threads(cpu, None, 4 * _ONE_THREAD_WORK)  # auto, large work: the caller's count
        a.__enter__()
        assert torch.get_num_threads() == 1
        b.__enter__()
        assert torch.get_num_threads() == 3  # B runs on the caller's count, not on A's
        a.__exit__(None, None, None)
        b.__exit__(None, None, None)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_fits_in_concurrent_threads_give_the_models_of_fits_one_after_the_other(data, monkeypatch):
    """Initialisation draws from torch's global generator: two fits in two threads must not
    interleave their draws, nor give each other's generator state back to the caller."""
    import cegeo.models

    X, y = data
    create = cegeo.models.create_model

    def slow_create(*args, **kwargs):
        torch.rand(1)  # a draw from the global generator, then a pause that lets a thread switch
        time.sleep(0.05)
        return create(*args, **kwargs)

    monkeypatch.setattr(cegeo.models, "create_model", slow_create)
    fast = {**FAST, "epochs": 2}

    def fit(seed):
        return ImbalancedMLPClassifier(**fast, random_state=seed).fit(X, y).predict_proba(X)

    alone = [fit(seed) for seed in (0, 1, 2)]
    torch.manual_seed(7)
    rng_before = torch.random.get_rng_state()
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(fit, (0, 1, 2)))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_random_state_instance_and_none(data):
    X, y = data
    ImbalancedMLPClassifier(**{**FAST, "epochs": 2}, random_state=np.random.RandomState(0)).fit(X, y)
    ImbalancedMLPClassifier(**{**FAST, "epochs": 2}, random_state=None).fit(X, y)


def test_pickle_round_trip_keeps_predictions(data):
    X, y = data
    clf = ImbalancedMLPClassifier(**FAST, posthoc="tau_norm", random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.decision_function(X), clf.decision_function(X))
    assert next(clf.model_.parameters()).device.type == "cpu"


def test_predictions_do_not_depend_on_batching(data):
    X, y = data
    clf = ImbalancedMLPClassifier(**FAST, random_state=0).fit(X, y)
    full = clf.decision_function(X)
    parts = np.concatenate([clf.decision_function(X[i : i + 7]) for i in range(0, len(X), 7)])
    np.testing.assert_allclose(full, parts, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------ post hoc


@pytest.mark.parametrize("method", list_rebalancers())
def test_every_rebalancer_as_posthoc(method, data):
    X, y = data
    params = {"normal_class": 0, "max_false_alarm": 0.2} if method == "operating_point" else None
    clf = ImbalancedMLPClassifier(
        **FAST, loss="ce", posthoc=method, posthoc_params=params, random_state=0
    ).fit(X, y)
    assert clf.posthoc_.name == method
    assert clf.posthoc_.n_classes_ == 3
    z = clf.decision_function(X)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[np.argmax(z, axis=1)])
    W = clf.model_.classifier.weight.detach().double().numpy()
    raw = clf.features(X) @ W.T
    np.testing.assert_allclose(z, clf.posthoc_.transform(raw), rtol=1e-6, atol=1e-6)
    if clf.posthoc_.search_ is not None:  # tuned on validation: never worse than no correction there
        assert clf.posthoc_.val_score_ >= clf.posthoc_.val_score_raw_ - 1e-12


def test_posthoc_la_fixed_tau_subtracts_the_log_prior(data):
    X, y = data
    clf = ImbalancedMLPClassifier(
        **FAST, loss="ce", posthoc="posthoc_la", posthoc_params={"tau": 1.0}, random_state=0
    ).fit(X, y)
    W = clf.model_.classifier.weight.detach().double().numpy()
    raw = clf.features(X) @ W.T
    prior = clf.train_class_counts_ / clf.train_class_counts_.sum()
    np.testing.assert_allclose(clf.decision_function(X), raw - np.log(prior), rtol=1e-6, atol=1e-6)


def test_operating_point_normal_class_is_a_label(data):
    X, y = data
    labels = np.array(["ok", "defect_a", "defect_b"])[y]
    clf = ImbalancedMLPClassifier(
        **FAST,
        posthoc="operating_point",
        posthoc_params={"normal_class": "ok", "max_false_alarm": 0.1},
        random_state=0,
    ).fit(X, labels)
    assert clf.classes_[clf.posthoc_.normal_class_] == "ok"
    assert clf.posthoc_.val_false_alarm_ <= 0.1


def test_geometry_posthoc_uses_the_training_loss(data):
    X, y = data
    clf = ImbalancedMLPClassifier(**FAST, loss="cdt", gamma=0.3, posthoc="geometry", random_state=0)
    clf.fit(X, y)
    assert clf.posthoc_.loss_ == "cdt"
    assert clf.posthoc_.get_params()["loss_hyper"] == {"gamma": 0.3, "normalize": 1.0}


# -------------------------------------------------------------------------------------- errors


def test_not_fitted():
    with pytest.raises(NotFittedError):
        ImbalancedMLPClassifier().predict(np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"loss": "focal"}, r"`loss` must be one of 'ce'.*; got 'focal'"),
        ({"loss": "ldt", "tau": 1.0}, r"`tau` must be None for loss 'ldt' \(it takes gamma, normalize\)"),
        ({"loss": "ce", "gamma": 0.5}, r"`gamma` must be None for loss 'ce' \(it takes no hyperparameters\)"),
        ({"loss": "ldt", "gamma": float("nan")}, r"`gamma` must be a finite number; got nan"),
        ({"hidden_layer_sizes": ()}, r"`hidden_layer_sizes` must be a positive integer or a non-empty"),
        ({"hidden_layer_sizes": (8, 0)}, r"`hidden_layer_sizes` must be .*; got \(8, 0\)"),
        ({"batchnorm": "yes"}, r"`batchnorm` must be True or False; got 'yes'"),
        ({"epochs": 0}, r"`epochs` must be an integer >= 1; got 0"),
        ({"lr": 0.0}, r"`lr` must be a number > 0; got 0.0"),
        ({"batch_size": 1}, r"`batch_size` must be an integer >= 2; got 1"),
        ({"weight_decay": -1e-4}, r"`weight_decay` must be a number >= 0"),
        ({"optimizer": "adam"}, r"`optimizer` must be one of 'adamw', 'sgd'; got 'adam'"),
        ({"momentum": 1.0}, r"`momentum` must be a number in \[0, 1\); got 1.0"),
        ({"validation_fraction": 1.5}, r"`validation_fraction` must be a number in \(0, 1\); got 1.5"),
        ({"posthoc": "platt"}, r"`posthoc` must be one of 'posthoc_la'.*; got 'platt'"),
        (
            {"posthoc": "posthoc_la", "posthoc_metric": "accuracy"},
            r"`posthoc_metric` must be one of 'balanced_accuracy'",
        ),
        ({"posthoc_params": {"tau": 1.0}}, r"`posthoc_params` must be None when `posthoc` is None"),
        (
            {"posthoc": "tau_norm", "posthoc_params": {"classifier": [[1.0]]}},
            r"`posthoc_params` must be parameters the estimator does not supply itself \(it sets classifier\)",
        ),
        (
            {"posthoc": "geometry", "posthoc_params": {"loss": "ce"}},
            r"`posthoc_params` must be parameters the estimator does not supply itself \(it sets loss\)",
        ),
        (
            # geometry has no sampler option (a sampler drops out of the theory's limit)
            {"posthoc": "geometry", "posthoc_params": {"sampler": "class_balanced"}},
            r"`posthoc_params` must hold parameters of rebalancer 'geometry' \(beta, grid\); got unknown key\(s\) 'sampler'",
        ),
        (
            {"posthoc": "posthoc_la", "posthoc_params": {"beta": 1.0}},
            r"`posthoc_params` must hold parameters of rebalancer 'posthoc_la' \(grid, tau\); got unknown key\(s\) 'beta'",
        ),
        ({"loss": "ldam", "posthoc": "tau_norm"}, r"`posthoc` must be a method that works with loss 'ldam'"),
        (
            {"loss": "ldam", "posthoc": "geometry"},
            r"`posthoc` must be a method that does not need the theory of loss 'ldam'",
        ),
        (
            {"posthoc": "operating_point", "posthoc_params": {"normal_class": "nope"}},
            r"`posthoc_params\['normal_class'\]` must be a label of y \(one of 0, 1, 2; .*\); got 'nope'",
        ),
        ({"device": "tpu"}, r"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'tpu'"),
        (
            {"random_state": "seven"},
            r"`random_state` must be None, an integer in \[0, 2\*\*32 - 1\] or a numpy",
        ),
        (
            {"random_state": -1},
            r"`random_state` must be None, an integer in \[0, 2\*\*32 - 1\] .*; got -1\.$",
        ),
        ({"n_threads": 0}, r"`n_threads` must be an integer >= 1; got 0"),
    ],
)
def test_parameter_errors(params, match, data):
    X, y = data
    with pytest.raises(ValueError, match=match):
        ImbalancedMLPClassifier(**{**FAST, "epochs": 1, **params}).fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(data):
    X, y = data
    with pytest.raises(ValueError, match=r"`device` must be 'cpu' or 'auto' on a machine without CUDA"):
        ImbalancedMLPClassifier(**{**FAST, "device": "cuda"}).fit(X, y)


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match=r"`y` must hold at least 2 classes; got 1 class \('a'\)"):
        ImbalancedMLPClassifier(**FAST).fit(np.zeros((4, 2)), ["a"] * 4)


def test_posthoc_needs_two_samples_per_class(data):
    X, y = data
    y = np.array(["a", "b", "c"], dtype=object)[y]
    y[0] = "lonely"
    with pytest.raises(ValueError, match=r"class 'lonely' has 1 sample\(s\), too few for the post-hoc"):
        ImbalancedMLPClassifier(**FAST, posthoc="lws").fit(X, y)
    # Without a post-hoc method a one-sample class is fine.
    ImbalancedMLPClassifier(**{**FAST, "epochs": 1}).fit(X, y)


def test_failed_posthoc_fit_leaves_no_half_fitted_estimator(data, monkeypatch):
    """What only the real validation logits can refuse (an impossible false-alarm budget) fails
    after training: then no half-fitted estimator is left behind."""
    X, y = data
    clf = ImbalancedMLPClassifier(**FAST, random_state=0).fit(X, y)  # a previous, successful fit
    clf.set_params(posthoc="operating_point", posthoc_params={"normal_class": 0, "max_false_alarm": 0.0})

    def impossible(self, logits, y_val, params):
        raise InputError("`max_false_alarm` 0 is impossible on validation: no threshold ...")

    monkeypatch.setattr(ImbalancedMLPClassifier, "_fit_posthoc", impossible)
    with pytest.raises(ValueError, match=r"`max_false_alarm` 0 is impossible on validation"):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)


def test_failed_refit_on_new_data_leaves_an_unfitted_estimator(data):
    """A refit that fails on its data (here a class too small for the post-hoc split, with fewer
    features than the first fit) must not leave n_features_in_ from the new data beside the
    old model: predict then said NotFittedError-free nonsense (a numpy broadcast error)."""
    X, y = data
    clf = ImbalancedMLPClassifier(**FAST, posthoc="posthoc_la", random_state=0).fit(X, y)
    y2 = y.copy()
    y2[0] = 7  # a class of one sample
    with pytest.raises(ValueError, match=r"class 7 has 1 sample\(s\), too few for the post-hoc"):
        clf.fit(X[:, :3], y2)
    assert not hasattr(clf, "n_features_in_") and not hasattr(clf, "model_")
    with pytest.raises(NotFittedError):
        clf.predict(X[:, :3])


_LR_DIVERGES = r"^`lr` must be a learning rate at which training does not diverge \(the .*; got 1000000\.0\.$"


@pytest.mark.parametrize(
    ("params", "posthoc", "match"),
    [
        ({"lr": 1e6, "epochs": 5}, None, _LR_DIVERGES),
        ({"lr": 1e6, "epochs": 5}, "posthoc_la", _LR_DIVERGES),
        # AdamW's decay step alone is unstable once lr x weight_decay >= 1: blaming `lr` (as it
        # did) pointed away from the setting that was off
        (
            {"weight_decay": 1e30, "epochs": 3},
            None,
            r"^`weight_decay` must be a weight decay at which training does not diverge \(lr x "
            r"weight_decay = 1e\+27 >= 1; .*; got 1e\+30\.$",
        ),
    ],
    ids=["lr", "lr-posthoc", "weight_decay"],
)
def test_diverged_training_names_the_setting_that_is_off(data, params, posthoc, match):
    """A setting that makes the loss NaN is an error naming it, not NaN probabilities (nor, with
    a post-hoc method, an error blaming the user's X); the estimator stays unfitted."""
    X, y = data
    clf = ImbalancedMLPClassifier(**{**FAST, **params}, posthoc=posthoc, random_state=0)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)


@pytest.mark.parametrize(
    "params, name, got",
    [
        ({"lr": 1e39}, "lr", "1e+39"),
        ({"lr": 3e38}, "lr", "3e+38"),  # AdamW's first step is lr / (1 - beta1): past float32
        ({"lr": 1e39, "optimizer": "sgd"}, "lr", "1e+39"),
        ({"weight_decay": 1e39, "optimizer": "sgd"}, "weight_decay", "1e+39"),
    ],
)
def test_a_step_beyond_float32_is_an_error_naming_the_parameter(data, params, name, got):
    """A learning rate or weight decay whose step does not fit float32 weights used to end in
    torch's "RuntimeError: value cannot be converted to type float without overflow"."""
    X, y = data
    clf = ImbalancedMLPClassifier(**{**FAST, **params}, random_state=0)
    with pytest.raises(
        ValueError,
        match=rf"^`{name}` must be a number whose optimizer step fits float32 .*; got {re.escape(got)}\.$",
    ):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)


# Every check of posthoc_params comes before the network trains, names the parameter as the user
# set it, and speaks of labels of y, not class indices.
POSTHOC_ERRORS = [
    (
        "operating_point",
        None,
        r"^`posthoc_params\['normal_class'\]` must be a label of y \(one of 'defect_a', 'defect_b', 'ok'; "
        r"posthoc='operating_point' needs the normal class\); got None\.$",
    ),
    (
        "operating_point",
        {"max_false_alarm": 0.1},
        r"^`posthoc_params\['normal_class'\]` must be a label of y \(one of 'defect_a', 'defect_b', 'ok'",
    ),
    (
        "operating_point",
        {"normal_class": 0},  # an index, not a label of y
        r"^`posthoc_params\['normal_class'\]` must be a label of y .*; got 0\.$",
    ),
    (
        "operating_point",
        {"normal_class": "ok", "max_false_alarm": -1},
        r"^`posthoc_params\['max_false_alarm'\]` must be a number in \[0, 1\); got -1\.$",
    ),
    (
        "operating_point",
        {"normal_class": "ok", "max_false_alarm": 1.0},
        r"^`posthoc_params\['max_false_alarm'\]` must be a number in \[0, 1\); got 1\.0\.$",
    ),
    (
        "posthoc_la",
        {"tau": "x"},
        r"^`posthoc_params\['tau'\]` must be None \(tune on validation\) or a finite number",
    ),
    (
        "posthoc_la",
        {"grid": []},
        r"^`posthoc_params\['grid'\]` must be a non-empty sequence of finite numbers",
    ),
    ("tau_norm", {"tau": float("nan")}, r"^`posthoc_params\['tau'\]` must be None \(tune on validation\)"),
    ("geometry", {"beta": "one"}, r"^`posthoc_params\['beta'\]` must be None \(tune on validation\)"),
    ("lws", {"alpha": -1.0}, r"^`posthoc_params\['alpha'\]` must be a finite number >= 0"),
    ("lws", {"max_iter": 0}, r"^`posthoc_params\['max_iter'\]` must be an integer >= 1"),
    (
        "lws",
        {"bogus": 1, "alpha": 1e-3},
        r"^`posthoc_params` must hold parameters of rebalancer 'lws' \(alpha, max_iter\); got unknown key\(s\) 'bogus'\.$",
    ),
]


@pytest.mark.parametrize(("method", "params", "match"), POSTHOC_ERRORS)
def test_posthoc_params_errors_come_before_training_and_name_labels(method, params, match, data, monkeypatch):
    X, y = data
    labels = np.array(["ok", "defect_a", "defect_b"])[y]

    def no_training(*args, **kwargs):
        raise AssertionError("the network trained before posthoc_params were checked")

    monkeypatch.setattr(ImbalancedMLPClassifier, "_train", no_training)
    clf = ImbalancedMLPClassifier(**FAST, loss="ce", posthoc=method, posthoc_params=params)
    with pytest.raises(InputError, match=match):
        clf.fit(X, labels)


def test_posthoc_params_checked_up_front_still_fit(data):
    """The up-front check refuses nothing that fits: valid options train and correct as before."""
    X, y = data
    labels = np.array(["ok", "defect_a", "defect_b"])[y]
    clf = ImbalancedMLPClassifier(
        **FAST, loss="ce", posthoc="lws", posthoc_params={"alpha": 1e-3, "max_iter": 50}, random_state=0
    ).fit(X, labels)
    assert clf.posthoc_.get_params()["alpha"] == 1e-3 and clf.posthoc_.n_classes_ == 3


def test_rebalancer_errors_after_training_name_posthoc_params():
    from cegeo.estimator import _posthoc_error

    err = _posthoc_error(
        InputError("`max_false_alarm` 0 is impossible on validation: ..."), "operating_point"
    )
    assert str(err) == "`posthoc_params['max_false_alarm']` 0 is impossible on validation: ..."
    other = InputError("the validation labels hold only the normal class; no minority recall to maximise.")
    assert _posthoc_error(other, "operating_point") is other


def test_mixed_label_types_are_an_error(data):
    X, y = data
    mixed = y.astype(object)
    mixed[0] = "x"
    with pytest.raises(ValueError, match=r"`y` must be labels of one sortable type; got 'a mix of int, str'"):
        ImbalancedMLPClassifier(**FAST).fit(X, mixed)


def test_init_only_stores_parameters():
    sig = inspect.signature(ImbalancedMLPClassifier.__init__)
    est = ImbalancedMLPClassifier(loss="nope", epochs=-3)  # validated at fit, not here
    assert est.get_params()["loss"] == "nope"
    assert set(est.get_params()) == set(sig.parameters) - {"self"}


# ------------------------------------------------------------------------------------------ GPU


@pytest.mark.cuda
def test_cuda_fit_gives_a_portable_cpu_model(data):
    X, y = data
    clf = ImbalancedMLPClassifier(**{**FAST, "device": "cuda"}, random_state=0).fit(X, y)
    assert clf.device_.type == "cuda"
    assert next(clf.model_.parameters()).device.type == "cpu"
    again = clone(clf).fit(X, y)
    np.testing.assert_allclose(again.decision_function(X), clf.decision_function(X), rtol=1e-5, atol=1e-5)
    assert clf.score(X, y) > 0.5
