"""Metrics against scikit-learn and imbalanced-learn as references."""

from __future__ import annotations

import numpy as np
import pytest
from imblearn.metrics import geometric_mean_score as imb_gmean
from sklearn import metrics as skm

from cegeo.data.imbalance import groups, step_groups
from cegeo.metrics import (
    balanced_accuracy_score,
    classification_summary,
    confusion_matrix,
    false_alarm_error,
    false_positive_rates,
    geometric_mean_score,
    group_recall_score,
    macro_f1_score,
    per_class_scores,
    summary_from_confusion,
    worst_class_recall_score,
)


@pytest.fixture
def preds(rng):
    k = 6
    y = rng.integers(0, k, size=500)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, k, size=500))
    return y, p, k


def test_against_sklearn(preds):
    y, p, k = preds
    assert balanced_accuracy_score(y, p) == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert macro_f1_score(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"))
    rec = skm.recall_score(y, p, average=None)
    assert worst_class_recall_score(y, p) == pytest.approx(rec.min())
    s = per_class_scores(y, p, k)
    np.testing.assert_allclose(s["recall"], rec)
    np.testing.assert_allclose(s["precision"], skm.precision_score(y, p, average=None))
    np.testing.assert_allclose(s["f1"], skm.f1_score(y, p, average=None))
    np.testing.assert_array_equal(confusion_matrix(y, p, k), skm.confusion_matrix(y, p))


def test_gmean_against_imbalanced_learn(preds):
    y, p, _ = preds
    assert geometric_mean_score(y, p) == pytest.approx(imb_gmean(y, p, average="multiclass", correction=0.0))


def test_false_positive_rates_against_one_vs_rest_confusion(preds):
    y, p, k = preds
    fpr = false_positive_rates(y, p, k)
    for c in range(k):
        tn, fp, _fn, _tp = skm.confusion_matrix(y == c, p == c).ravel()
        assert fpr[c] == pytest.approx(fp / (fp + tn))


def test_false_alarm_rate_is_share_of_normal_predicted_otherwise(preds):
    y, p, _ = preds
    normal = y == 2
    assert false_alarm_error(y, p, normal_class=2) == pytest.approx(
        1 - skm.recall_score(y, p, average=None)[2]
    )
    assert false_alarm_error(y, p, normal_class=2) == pytest.approx(np.mean(p[normal] != 2))


def test_group_recall():
    g = groups([100, 100, 10, 10])
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    p = np.array([0, 0, 1, 0, 2, 0, 0, 0])
    assert group_recall_score(y, p, g) == {"majority": 0.75, "minority": 0.25}


def test_missing_classes_documented_behaviour():
    # class 3 never appears in y_true; class 2 never predicted
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 3, 1, 1, 0])
    s = per_class_scores(y, p, num_classes=4)
    assert np.isnan(s["recall"][3])
    assert s["precision"][2] == 0.0 and s["f1"][2] == 0.0
    assert s["support"].tolist() == [2, 2, 1, 0]
    # balanced accuracy averages over classes present in y_true, as scikit-learn does
    with pytest.warns(UserWarning):
        ref = skm.balanced_accuracy_score(y, p)
    assert balanced_accuracy_score(y, p, num_classes=4) == pytest.approx(ref)
    assert geometric_mean_score(y, p, 4) == 0.0
    summary = classification_summary(y, p, 4, groups=groups([5, 5, 1, 1]), normal_class=0)
    assert summary["per_class"]["recall"][3] is None
    assert summary["group_recall"]["minority"] == 0.0
    assert summary["false_alarm"] == 0.5


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: balanced_accuracy_score([0, 1], [0]), r"`y_pred` must be an array of the same length"),
        (lambda: balanced_accuracy_score([], []), r"`y_true` must be a non-empty array"),
        (
            lambda: balanced_accuracy_score([0, 5], [0, 1], num_classes=3),
            r"`y_true` must be labels in 0..2; got 5",
        ),
        (lambda: balanced_accuracy_score([0, 1], [0, -1]), r"`y_pred` must be labels in 0..1; got -1"),
        (lambda: balanced_accuracy_score([0.5, 1], [0, 1]), r"`y_true` must be integer class labels"),
        (
            lambda: false_alarm_error([0, 1], [0, 1], normal_class=4),
            r"`normal_class` must be a class in 0..1",
        ),
        (lambda: false_alarm_error([0, 0], [0, 1], normal_class=1), r"`normal_class` 1 has no samples"),
        (
            lambda: classification_summary([0, 1, 2, 3], [0, 1, 2, 0], 4, groups=groups([10, 1])),
            r"`groups` must be cegeo.data.Groups for 4 classes; got 2",
        ),
        (
            lambda: summary_from_confusion([[3, 1], [1, 2]], groups=[0, 1]),
            r"`groups` must be cegeo.data.Groups for 2 classes; got 'list'",
        ),
        (
            lambda: summary_from_confusion([[3, 1], [1, 2]], normal_class=-1),
            r"`normal_class` must be a class in 0..1; got -1",
        ),
        (lambda: summary_from_confusion([[3, 1], [1, 2]], normal_class=5), r"`normal_class` must be a class"),
        (lambda: summary_from_confusion([[3, 1, 0], [1, 2, 0]]), r"`confusion` must be a square"),
        (lambda: summary_from_confusion([[3, 1], [1, -2]]), r"`confusion` must be non-negative integer"),
        (lambda: summary_from_confusion([[3, 1.5], [1, 2]]), r"`confusion` must be non-negative integer"),
        (lambda: summary_from_confusion([]), r"`confusion` must be a square"),
    ],
)
def test_metric_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("seed", range(6))
def test_summary_against_sklearn_and_imbalanced_learn(seed):
    """Every number of the summary (also used by the trainer's probes) against the references."""
    r = np.random.default_rng(seed)
    k = 6
    y = r.integers(0, k, 300)
    pred = np.where(r.random(300) < 0.6, y, r.integers(0, k, 300))
    if seed % 2:
        y[y == 5] = 4  # a class absent from y_true
    if seed % 3 == 0:
        pred[pred == 2] = 1  # a class never predicted
    grp = step_groups(k, 0.5) if seed < 3 else groups([9, 9, 5, 5, 1, 1], thresholds=(6, 2))
    s = classification_summary(y, pred, k, grp, normal_class=0)
    present = np.unique(y)
    labels = np.arange(k)
    rec = skm.recall_score(y, pred, labels=labels, average=None, zero_division=0)
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert s["balanced_accuracy"] == pytest.approx(rec[present].mean())
    assert s["worst_class_recall"] == pytest.approx(rec[present].min())
    assert s["macro_f1"] == pytest.approx(
        skm.f1_score(y, pred, labels=np.union1d(y, pred), average="macro", zero_division=0)
    )
    assert s["g_mean"] == pytest.approx(
        imb_gmean(y, pred, labels=present, average="multiclass", correction=0.0)
    )
    assert s["false_alarm"] == pytest.approx(np.mean(pred[y == 0] != 0))
    for name in grp.names:
        members = [c for c in grp.members(name) if c in present]
        assert s["group_recall"][name] == pytest.approx(rec[members].mean())
    pc = s["per_class"]
    np.testing.assert_allclose(
        pc["precision"], skm.precision_score(y, pred, labels=labels, average=None, zero_division=0)
    )
    np.testing.assert_allclose(pc["f1"], skm.f1_score(y, pred, labels=labels, average=None, zero_division=0))
    assert [v is None for v in pc["recall"]] == [c not in present for c in labels]
    np.testing.assert_allclose([v for v in pc["recall"] if v is not None], rec[present])
    assert pc["support"] == np.bincount(y, minlength=k).tolist()
    # from a confusion matrix (the trainer's path): the same dict; an absent normal class -> None
    assert summary_from_confusion(confusion_matrix(y, pred, k), grp, normal_class=0) == s
    if seed % 2:
        assert summary_from_confusion(confusion_matrix(y, pred, k), None, 5)["false_alarm"] is None


def test_group_recall_needs_a_groups_object():
    from cegeo.metrics import group_recall_score

    with pytest.raises(ValueError, match=r"`groups` must be a cegeo.data.imbalance.Groups .*; got 'list'"):
        group_recall_score([0, 1, 2, 3], [0, 1, 2, 0], [[0, 1], [2, 3]])


def test_small_cases_with_absent_and_never_predicted_classes_match_sklearn():
    """The scores come from one bincount confusion matrix: every corner (a class absent from
    y_true, one never predicted, n = 1) against scikit-learn's own functions."""
    import warnings

    rng = np.random.default_rng(7)
    for _ in range(300):
        k = int(rng.integers(2, 7))
        n = int(rng.integers(1, 20))
        y = rng.integers(0, k - 1, size=n)  # class k - 1 never in y_true
        p = rng.integers(0, k, size=n)
        p[p == 0] = 1 % k if rng.random() < 0.5 else 0  # often class 0 is never predicted
        labels = np.arange(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prec, rec, f1, sup = skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
            ref_cm = skm.confusion_matrix(y, p, labels=labels)
            ref_macro = skm.f1_score(y, p, labels=np.union1d(y, p), average="macro", zero_division=0)
            ref_bal = skm.balanced_accuracy_score(y, p)
        s = per_class_scores(y, p, k)
        np.testing.assert_array_equal(s["support"], sup)
        np.testing.assert_allclose(s["recall"][sup > 0], rec[sup > 0], rtol=1e-15)
        assert np.all(np.isnan(s["recall"][sup == 0]))
        np.testing.assert_allclose(s["precision"], prec, rtol=1e-15)
        np.testing.assert_allclose(s["f1"], f1, rtol=1e-15)
        np.testing.assert_array_equal(confusion_matrix(y, p, k), ref_cm)
        fp = ref_cm.sum(axis=0) - np.diag(ref_cm)
        neg = n - ref_cm.sum(axis=1)
        want_fpr = np.array([fp[c] / neg[c] if neg[c] else np.nan for c in range(k)])
        np.testing.assert_allclose(s["false_positive_rate"], want_fpr, rtol=1e-15)
        assert macro_f1_score(y, p, k) == pytest.approx(ref_macro, rel=1e-14)
        assert balanced_accuracy_score(y, p, k) == pytest.approx(ref_bal, rel=1e-14)
