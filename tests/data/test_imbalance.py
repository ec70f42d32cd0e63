from __future__ import annotations

import warnings

import numpy as np
import pytest

from cegeo.data.imbalance import (
    explicit_counts,
    groups,
    imbalance_ratio,
    longtail_counts,
    parse_profile,
    step_counts,
    step_groups,
)


def test_longtail_cifar10_lt_r100():
    counts = longtail_counts(10, R=100, n_max=5000)
    assert counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert counts.sum() == 12406


def test_longtail_matches_direct_formula():
    for k, R, n_max in [(100, 50, 500), (10, 10, 5000), (5, 1, 7)]:
        want = [int(np.floor(n_max * R ** (-i / (k - 1)) + 1e-9)) for i in range(k)]
        assert longtail_counts(k, R, n_max).tolist() == want


def test_step_majorities_first():
    c = step_counts(10, R=10, rho=0.5, n_max=5000)
    assert c.tolist() == [5000] * 5 + [500] * 5
    assert step_counts(10, R=1, rho=0.2, n_max=30).tolist() == [30] * 10
    assert step_counts(5, R=4, rho=0.6, n_max=100).tolist() == [100, 100, 25, 25, 25]
    assert imbalance_ratio(c) == 10.0


def test_groups_step_and_thresholds():
    assert groups([50, 50, 5]).labels == ("majority", "majority", "minority")
    g = groups(longtail_counts(10, 100, 5000), thresholds=(1000, 200))
    assert g.as_dict() == {"many": [0, 1, 2, 3], "medium": [4, 5, 6], "few": [7, 8, 9]}
    assert groups([300, 100, 30], thresholds=(99,)).minority.tolist() == [2]
    # Long-tail without thresholds: split at the geometric mean of the extremes.
    assert groups(longtail_counts(10, 100, 5000)).minority.tolist() == [5, 6, 7, 8, 9]
    assert step_groups(10, 0.3).majority.tolist() == list(range(7))


def test_parse_profile_roundtrip():
    for spec in ["step:R=10,rho=0.5", "longtail:R=100", "counts:5,3,1", "none"]:
        assert parse_profile(spec).describe() == spec
    p = parse_profile("step:R=10,rho=0.3")
    assert p.counts_for(10, 100).tolist() == [100] * 7 + [10] * 3
    assert p.groups_for(p.counts_for(10, 100)).minority.tolist() == [7, 8, 9]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: step_counts(10, R=0.1, rho=0.5, n_max=100), r"`R` must be a number >= 1 \(R = n_max/n_min"),
        (
            lambda: step_counts(10, R=10, rho=0.25, n_max=100),
            r"`rho` must be a value with rho\*k a whole number in 1..9",
        ),
        (lambda: step_counts(10, R=10, rho=0.0, n_max=100), r"`rho` must be a number in \(0, 1\)"),
        (lambda: step_counts(10, R=10, rho=1.0, n_max=100), r"`rho` must be a number in \(0, 1\)"),
        (lambda: step_counts(1, R=10, rho=0.5, n_max=100), r"`k` must be an integer >= 2"),
        (lambda: step_counts(10, R=1000, rho=0.5, n_max=100), r"`n_max` must be a size with n_max / R >= 1"),
        (lambda: longtail_counts(10, R=0.01, n_max=5000), r"`R` must be a number >= 1"),
        (lambda: longtail_counts(10, R=float("nan"), n_max=5000), r"`R` must be a finite number"),
        (lambda: explicit_counts([3, 0, 1]), r"`counts` must be positive integers"),
        (lambda: explicit_counts([]), r"`counts` must be a non-empty"),
        (lambda: groups([10, 10, 1], thresholds=(1, 10)), r"`thresholds` must be two decreasing numbers"),
        (
            lambda: groups([10, 10, 1], thresholds=(100,)),
            r"`thresholds` must be a threshold that leaves both groups",
        ),
        (lambda: groups([500, 50, 5], thresholds="10"), r"`thresholds` must be one or two numbers; got '10'"),
        (lambda: parse_profile("zipf:R=3"), r"`imbalance` must be 'step:R=..,rho=..'"),
        (lambda: parse_profile("step:R=10,k=3"), r"`imbalance` must be 'step:' with keys R, rho"),
        (
            lambda: parse_profile("step:R=10,rho=0.5,R=2"),
            r"`imbalance` must be each key once \(R is given twice\); got 'R=10,rho=0.5,R=2'",
        ),
        (
            lambda: parse_profile("counts:5,x"),
            r"`imbalance` must be 'counts:' followed by comma-separated integers",
        ),
        (lambda: step_groups(10, 0.55), r"`rho` must be a value with rho\*k a whole number"),
    ],
)
def test_profile_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_scalar_threshold_is_one_threshold():
    assert groups([500, 50], 100).labels == groups([500, 50], (100,)).labels == ("majority", "minority")


def test_two_thresholds_may_leave_a_group_empty():
    g = groups([5000, 2000, 500], thresholds=(100, 20))
    assert g.labels == ("many", "many", "many") and g.members("few").size == 0


@pytest.mark.parametrize(
    "call, realised",
    [
        (lambda: step_counts(4, R=2.5, rho=0.5, n_max=4), "R = 4 "),
        (lambda: longtail_counts(10, R=100, n_max=120), "R = 120 "),
    ],
)
def test_rounded_ratio_far_from_R_warns(call, realised):
    with pytest.warns(UserWarning, match=f"whole-number counts give {realised}"):
        call()


def test_ratio_within_rounding_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert step_counts(10, R=10, rho=0.5, n_max=124).tolist()[-1] == 12  # R = 10.33
        longtail_counts(10, R=100, n_max=5000)
