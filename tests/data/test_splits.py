"""make_splits: the fixed test split, the imbalanced subset and the stratified validation split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cegeo.data import (
    TEST_SPLIT_SEED,
    Dataset,
    Profile,
    Splits,
    load_dataset,
    longtail_counts,
    make_splits,
    parse_profile,
    step_counts,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def gauss():
    return load_dataset("gaussian", k=4, d=3, n_per_class=60, n_test_per_class=7)


def counts_of(y, k):
    return np.bincount(y, minlength=k).tolist()


def round_half_up(x):
    return int(np.floor(x + 0.5))


def test_digits_fixed_test_split_is_stratified_and_seed_independent(digits):
    a = make_splits(digits, "step:R=10,rho=0.5", seed=0)
    b = make_splits(digits, "longtail:R=5", seed=7, val_fraction=0.2)
    c = make_splits(digits, seed=3)
    for s in (b, c):
        np.testing.assert_array_equal(s.test_index, a.test_index)
        np.testing.assert_array_equal(s.x_test, a.x_test)
    # stratified: round(0.3 * n_c) of every class
    full = digits.train_counts()
    assert counts_of(a.y_test, 10) == [round_half_up(0.3 * n) for n in full]
    # the documented procedure: per class, permute with default_rng(TEST_SPLIT_SEED), take the first
    rng = np.random.default_rng(TEST_SPLIT_SEED)
    want = []
    for cls in range(10):
        idx = np.flatnonzero(digits.y_train == cls)
        want.append(idx[rng.permutation(idx.size)][: round_half_up(0.3 * idx.size)])
    np.testing.assert_array_equal(a.test_index, np.sort(np.concatenate(want)))
    np.testing.assert_array_equal(a.x_test, digits.x_train[a.test_index])
    # another test_fraction is another (still fixed) split
    d = make_splits(digits, test_fraction=0.5)
    assert d.y_test.size == sum(round_half_up(0.5 * n) for n in full)


def test_splits_are_disjoint_and_cover_the_subset(digits):
    s = make_splits(digits, "step:R=10,rho=0.5", seed=1)
    tr, va, te = set(s.train_index), set(s.val_index), set(s.test_index)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(tr) == s.y_train.size and len(va) == s.y_val.size
    np.testing.assert_array_equal(s.x_train, digits.x_train[s.train_index])
    np.testing.assert_array_equal(s.y_val, digits.y_train[s.val_index])
    assert s.x_train.dtype == np.uint8 and s.y_train.dtype == np.int64 and s.kind == "image"
    assert s.in_shape == (1, 8, 8) and s.dataset == "digits" and s.profile == "step:R=10,rho=0.5"
    assert isinstance(s, Splits)


def test_deterministic_for_a_seed_and_different_across_seeds(digits):
    a = make_splits(digits, "step:R=10,rho=0.5", seed=5)
    b = make_splits(digits, "step:R=10,rho=0.5", seed=5)
    c = make_splits(digits, "step:R=10,rho=0.5", seed=6)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "class_counts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.train_index, c.train_index)
    np.testing.assert_array_equal(a.class_counts, c.class_counts)  # same counts, other samples


@pytest.mark.parametrize(
    ("profile", "n_max", "want"),
    [
        ("step:R=10,rho=0.5", None, step_counts(10, 10, 0.5, 124)),
        ("step:R=10,rho=0.5", 100, step_counts(10, 10, 0.5, 100)),
        ("step:R=4,rho=0.2", 80, step_counts(10, 4, 0.2, 80)),
        ("longtail:R=10", 120, longtail_counts(10, 10, 120)),
        ("counts:100,90,80,70,60,50,40,30,20,10", None, np.arange(100, 0, -10)),
        ("none", 50, np.full(10, 50)),
    ],
)
def test_subset_follows_profile_exactly(digits, profile, n_max, want):
    s = make_splits(digits, profile, seed=2, n_max=n_max)
    assert s.subset_counts.tolist() == want.tolist()
    k = 10
    # the subset = train + val, per class
    assert (np.array(counts_of(s.y_train, k)) + counts_of(s.y_val, k)).tolist() == want.tolist()
    assert s.class_counts.tolist() == counts_of(s.y_train, k)
    # stratified validation: round(0.1 n_c), at least 1
    assert counts_of(s.y_val, k) == [max(1, round_half_up(0.1 * n)) for n in want]
    assert s.n_max == want.max()


def test_default_n_max_is_the_largest_the_classes_can_supply(digits):
    s = make_splits(digits, "step:R=10,rho=0.5")
    pool = digits.train_counts() - np.bincount(s.y_test, minlength=10)
    assert s.n_max == pool[:5].min()  # majorities are classes 0..4
    with pytest.raises(ValueError, match=r"class \d has \d+ samples after the fixed test split"):
        make_splits(digits, "step:R=10,rho=0.5", n_max=s.n_max + 1)
    lt = make_splits(digits, "longtail:R=10")
    want = longtail_counts(10, 10, lt.n_max)
    assert np.all(want <= pool) and not np.all(longtail_counts(10, 10, lt.n_max + 1) <= pool)


def test_largest_n_max_when_small_n_leave_the_rarest_class_empty(digits):
    """R = 50 on digits: n_max < 50 gives the rarest class no sample, larger n_max fit. The
    search used to give up (small n counted as "does not fit") and blame the whole profile."""
    pool = digits.train_counts() - np.bincount(make_splits(digits, "none").y_test, minlength=10)
    with pytest.warns(UserWarning, match="whole-number counts give R ="):
        s = make_splits(digits, "longtail:R=50")
    assert s.n_max == pool[0]  # class 0 is the head: its whole pool
    with pytest.warns(UserWarning, match="whole-number counts give R = 62.5"):
        assert np.all(longtail_counts(10, 50, s.n_max) <= pool)
    # R = 100: the largest n_max leaves the rarest class 1 sample: the error says that
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match=r"class 9 has 1 sample\(s\), too few for a validation split"),
    ):
        make_splits(digits, "longtail:R=100")


def test_groups_follow_the_profile(digits, gauss):
    s = make_splits(digits, "step:R=10,rho=0.2", n_max=100)
    assert s.groups.minority.tolist() == [8, 9] and s.groups.majority.tolist() == list(range(8))
    # balanced STEP still labels the minority classes by position
    s1 = make_splits(digits, parse_profile("step:R=1,rho=0.5"), n_max=40)
    assert s1.groups.minority.tolist() == [5, 6, 7, 8, 9]
    lt = make_splits(gauss, "longtail:R=10", n_max=60)
    assert lt.groups.labels == ("majority", "majority", "minority", "minority")


def test_source_test_set_is_left_as_given(gauss):
    s = make_splits(gauss, "step:R=5,rho=0.5", seed=4)
    np.testing.assert_array_equal(s.x_test, gauss.x_test)
    np.testing.assert_array_equal(s.y_test, gauss.y_test)
    assert s.subset_counts.tolist() == [60, 60, 12, 12]  # the whole training pool is available
    assert s.x_train.dtype == np.float32 and s.kind == "tabular"


def test_none_keeps_naturally_imbalanced_data():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [50, 20, 5])
    ds = Dataset(
        "mine", "tabular", rng.normal(size=(75, 2)).astype(np.float32), y, None, None, 3, ("a", "b", "c")
    )
    s = make_splits(ds, "none", test_fraction=0.2)
    assert counts_of(s.y_test, 3) == [10, 4, 1]
    assert s.subset_counts.tolist() == [40, 16, 4]
    assert s.class_counts.tolist() == [36, 14, 3]
    assert s.groups.minority.tolist() == [2]


def test_nested_subsets_for_one_seed(gauss):
    small = make_splits(gauss, "step:R=10,rho=0.5", seed=9, n_max=60)
    large = make_splits(gauss, "step:R=2,rho=0.5", seed=9, n_max=60)
    sub_small = set(small.train_index) | set(small.val_index)
    sub_large = set(large.train_index) | set(large.val_index)
    assert sub_small <= sub_large


@pytest.mark.parametrize(
    ("imbalance", "kw", "match"),
    [
        ("counts:5,5,5", {}, r"`imbalance` must be 4 counts \(one per class of gaussian\); got \[5, 5, 5\]"),
        ("counts:61,5,5,5", {}, r"class 0 has 60 samples\); got 'counts:61,5,5,5 asks for 61'"),
        ("step:R=10,rho=0.5", {"n_max": 61}, r"\(class 0 has 60 samples\)"),
        (
            "counts:10,10,1,10",
            {},
            r"class 2 has 1 sample\(s\), too few for a validation split \(`val_fraction` needs at least 2 per class",
        ),
        (
            "step:R=100,rho=0.5",
            {},
            r"`imbalance` must be a profile the training data can supply \(available per class: \[60, 60, 60, 60\]\); got 'step:R=100,rho=0.5'",
        ),
        ("step:R=10,rho=0.3", {}, r"`rho` must be a value with rho\*k a whole number in 1..3"),
        ("longtail:R=0.1", {}, r"`R` must be a number >= 1"),
        ("none", {"val_fraction": 0}, r"`val_fraction` must be a number in \(0, 1\); got 0"),
        ("none", {"val_fraction": 1.5}, r"`val_fraction` must be a number in \(0, 1\)"),
        ("none", {"test_fraction": 1}, r"`test_fraction` must be a number in \(0, 1\)"),
        ("none", {"seed": -2}, r"`seed` must be an integer >= 0"),
        ("none", {"n_max": 0}, r"`n_max` must be an integer >= 1"),
        (3, {}, r"`imbalance` must be a string such as 'step:R=10,rho=0.5'"),
    ],
)
def test_errors(gauss, imbalance, kw, match):
    with pytest.raises(ValueError, match=match):
        make_splits(gauss, imbalance, **kw)


def test_test_split_needs_two_per_class():
    x = np.zeros((5, 1), np.float32)
    ds = Dataset("tiny", "tabular", x, np.array([0, 0, 0, 0, 1]), None, None, 2, ("a", "b"))
    with pytest.raises(
        ValueError, match=r"class 1 has 1 sample\(s\), too few for a test split \(`test_fraction`"
    ):
        make_splits(ds)
    with pytest.raises(ValueError, match=r"`dataset` must be a cegeo.data.Dataset"):
        make_splits("digits")


def test_describe_is_json_ready(digits):
    import json

    d = make_splits(digits, "step:R=10,rho=0.5").describe()
    assert json.loads(json.dumps(d))["groups"]["minority"] == [5, 6, 7, 8, 9]
    assert sum(d["train_counts"]) + sum(d["val_counts"]) == sum(d["subset_counts"])


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(2, 30), min_size=2, max_size=6),
    val_fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31),
)
def test_property_stratified_and_exact(counts, val_fraction, seed):
    k = len(counts)
    pool = np.array(counts) + 3
    y = np.repeat(np.arange(k), pool)
    order = np.random.default_rng(1).permutation(y.size)
    x = np.arange(y.size, dtype=np.float32)[:, None]  # each row's feature is its own index
    x_test = np.zeros((k, 1), np.float32)
    ds = Dataset("p", "tabular", x, y[order], x_test, np.arange(k), k, tuple(map(str, range(k))))
    s = make_splits(ds, Profile("counts", counts=tuple(counts)), val_fraction=val_fraction, seed=seed)
    val = np.bincount(s.y_val, minlength=k)
    train = np.bincount(s.y_train, minlength=k)
    assert (val + train).tolist() == counts
    assert np.all(val >= 1) and np.all(train >= 1)
    want = np.clip(np.floor(val_fraction * np.array(counts) + 0.5), 1, np.array(counts) - 1)
    assert val.tolist() == want.astype(int).tolist()
    np.testing.assert_array_equal(s.x_train[:, 0], s.train_index)
    np.testing.assert_array_equal(s.x_val[:, 0], s.val_index)
    assert len(set(s.train_index) | set(s.val_index)) == sum(counts)


def test_a_profile_on_naturally_imbalanced_data_warns():
    from cegeo.data import Dataset

    y = np.repeat([0, 1, 2], [20, 100, 10])
    ds = Dataset("tab", "tabular", np.zeros((y.size, 2), np.float32), y, None, None, 3, ("a", "b", "c"))
    with pytest.warns(
        UserWarning,
        match=r"tab is already imbalanced \(R = .*\); the longtail profile sizes classes by index",
    ):
        make_splits(ds, "longtail:R=2")


def test_fingerprint_is_of_the_values_not_of_their_integer_type_byte_order_or_layout(gauss):
    """Splits made in code (``Trainer(splits=...)``) may hold int32 or big-endian labels, or
    Fortran-ordered features: the trainer trains on the same values (labels as int64), so a
    resume with them must not be refused as other data. Another label still changes the digest."""
    import dataclasses

    sp = make_splits(gauss, "step:R=2,rho=0.5", seed=0)
    names = ("train", "val", "test")
    as_int32 = dataclasses.replace(sp, **{f"y_{s}": getattr(sp, f"y_{s}").astype(np.int32) for s in names})
    big_endian = dataclasses.replace(
        sp,
        **{f"y_{s}": getattr(sp, f"y_{s}").astype(">i8") for s in names},
        **{
            f"x_{s}": getattr(sp, f"x_{s}").astype(getattr(sp, f"x_{s}").dtype.newbyteorder(">"))
            for s in names
        },
    )
    fortran = dataclasses.replace(sp, x_train=np.asfortranarray(sp.x_train))
    for same in (as_int32, big_endian, fortran):
        assert same.fingerprint() == sp.fingerprint()
    y = sp.y_val.astype(np.int32)
    y[0] = (y[0] + 1) % sp.num_classes
    assert dataclasses.replace(as_int32, y_val=y).fingerprint() != sp.fingerprint()
