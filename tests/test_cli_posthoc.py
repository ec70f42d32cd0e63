"""Run-folder API, the test-data guard, ``cegeo evaluate`` and ``cegeo posthoc``.

Run folders are written here exactly per docs/run-folder.md with cegeo._io's writers: a bias-free
linear head whose majority rows are longer (what CE training produces), so the right corrections
are known.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from cegeo._io import write_json, write_npz
from cegeo.data.imbalance import step_groups
from cegeo.metrics import classification_summary
from cegeo.rebalance import (
    CV_FOLDS,
    RunFolder,
    RunSplit,
    best_method,
    create_rebalancer,
    list_rebalancers,
    run_posthoc,
)

K, D = 4, 6
COUNTS = [400, 400, 40, 40]  # (R=10, rho=0.5)-STEP, classes 0, 1 majority
W_NORMS = np.array([1.8, 1.8, 1.0, 1.0])  # majority classifiers longer: the CE bias


def _split(rng, per_class: list[int], W: np.ndarray) -> dict[str, np.ndarray]:
    y = np.repeat(np.arange(K), per_class)
    mu = np.zeros((K, D))
    mu[np.arange(K), np.arange(K)] = 2.0
    h = (mu[y] + rng.normal(size=(y.size, D))).astype(np.float32)  # (n, d)
    z = (h.astype(np.float64) @ W.T).astype(np.float32)  # (n, k) = features @ W.T
    return {"logits": z, "labels": y.astype(np.int64), "features": h}


def write_run(
    path: Path,
    *,
    seed: int = 0,
    loss: str = "ce",
    hyper: dict | None = None,
    classifier: bool = True,
    val_per_class: tuple[int, ...] = (60, 60, 60, 60),
    test_per_class: tuple[int, ...] = (150, 150, 150, 150),
) -> Path:
    """A finished run folder per docs/run-folder.md (only the files evaluate/posthoc read + final.json)."""
    rng = np.random.default_rng(seed)
    W = np.zeros((K, D))
    W[np.arange(K), np.arange(K)] = W_NORMS
    W[:, K:] = 0.05 * rng.normal(size=(K, D - K))
    path.mkdir(parents=True, exist_ok=True)
    grp = step_groups(K, 0.5)
    splits = {}
    for name, per_class in (("val", list(val_per_class)), ("test", list(test_per_class))):
        splits[name] = _split(rng, per_class, W)
        write_npz(path / f"logits_{name}.npz", **splits[name])
    if classifier:
        write_npz(path / "classifier.npz", W=W.astype(np.float32))
    summaries = {
        name: classification_summary(s["labels"], s["logits"].argmax(1), K, grp) for name, s in splits.items()
    }
    write_json(
        path / "final.json",
        {
            "finished": True,
            "epochs": 3,
            "wall_time_s": 1.0,
            "train_time_s": 0.8,
            "num_classes": K,
            "class_counts": COUNTS,
            "groups": grp.as_dict(),
            "loss": {"name": loss, "hyper": hyper or {}},
            "model": "mlp",
            "data": "synthetic",
            "imbalance": "step:R=10,rho=0.5",
            "seed": seed,
            **summaries,
            "geometry": None,
            "theory": None,
            "history": {},
            "environment": {},
        },
    )
    return path


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run")


# ------------------------------------------------------------------------------ RunFolder + guard


def test_run_folder_reads_the_contract(run):
    rf = RunFolder(run)
    assert rf.num_classes == K and rf.class_counts.tolist() == COUNTS and rf.loss == "ce"
    assert rf.groups.labels == ("majority", "majority", "minority", "minority")
    val = rf.val
    assert val.name == "val" and val.logits.shape == (240, K) and val.classifier.shape == (K, D)
    assert not val.logits.flags.writeable  # read-only views
    np.testing.assert_allclose(val.features @ val.classifier.T, val.logits, rtol=1e-5, atol=1e-5)


def test_fit_refuses_the_test_split(run):
    rf = RunFolder(run)
    for name in list_rebalancers():
        params = {"normal_class": 0, "max_false_alarm": 0.2} if name == "operating_point" else {}
        with pytest.raises(ValueError, match=r"`X` must be validation data; got the test split"):
            create_rebalancer(name, **params).fit(rf.test)


@pytest.mark.parametrize(
    "take",
    [
        lambda rf: rf.test.logits,
        lambda rf: rf.test.logits.astype(np.float64) + 0.0,
        lambda rf: rf.test.logits.astype(np.float16),
        lambda rf: rf.test.logits + 1e-6,
        lambda rf: rf.test.logits[:, [1, 0, 3, 2]],
        lambda rf: rf.test.logits[:25].copy(),
        lambda rf: rf.test.logits[[3, 1, 4]],
        lambda rf: np.concatenate([rf.val.logits, rf.test.logits[:10]]),
        lambda rf: np.round(rf.test.features @ rf.test.classifier.T, 3),
        lambda rf: list(rf.test.logits[:30]),
        lambda rf: replace(rf.test, name="val"),
    ],
    ids=[
        "array", "float64-copy", "float16", "plus-eps", "permuted-columns", "slice", "fancy-rows",
        "mixed-with-val", "from-test-features", "list-of-rows", "renamed-split",
    ],
)  # fmt: skip
def test_fit_refuses_arrays_taken_from_the_test_split(run, take):
    rf = RunFolder(run)
    z = take(rf)
    n = len(z.logits) if hasattr(z, "logits") else len(z)
    y = None if hasattr(z, "logits") else np.resize(rf.test.labels, n)
    counts = None if y is None else COUNTS
    with pytest.raises(
        ValueError, match=r"`X` must be validation data; got logits taken from the test split"
    ):
        create_rebalancer("posthoc_la").fit(z, y, counts)
    # ... while the validation split (and evaluating on test) is fine.
    la = create_rebalancer("posthoc_la").fit(rf.val)
    assert la.predict(rf.test).shape == (rf.test.labels.size,)
    assert type(la.transform(rf.test)) is np.ndarray  # outputs are plain arrays
    assert type(rf.test.logits.max()) is np.float32  # reductions are plain numbers


def _same_rows(p: Path, logits) -> None:
    """Make the val and test splits share their rows' values (as discrete inputs or a dead net do)."""
    for name in ("val", "test"):
        data = dict(np.load(p / f"logits_{name}.npz"))
        data["logits"] = logits(data["logits"])
        data.pop("features")
        write_npz(p / f"logits_{name}.npz", **data)


@pytest.mark.parametrize(
    "logits",
    [lambda z: np.zeros_like(z), lambda z: 3 * np.eye(K, dtype=z.dtype)[np.arange(len(z)) % K]],
    ids=["dead-network", "discrete"],
)
def test_validation_rows_equal_to_test_rows_are_accepted(run, logits):
    # The guard tracks where an array came from, not its values: genuine validation rows that
    # happen to equal test rows are validation data.
    _same_rows(run, logits)
    rf = RunFolder(run)
    assert np.array_equal(rf.val.logits[:K], rf.test.logits[:K])
    _ = rf.test  # loaded first, as run_posthoc does
    for X, y in ((rf.val, None), (np.array(rf.val.logits), rf.val.labels)):
        create_rebalancer("lws").fit(X, y)
        create_rebalancer("posthoc_la").fit(X, y, None if y is None else COUNTS)
    out = run_posthoc(run, "posthoc_la,lws", write=False)
    assert out["methods"] == ["posthoc_la", "lws"]


def test_the_guard_keeps_nothing_about_test_rows(run):
    import gc
    import weakref

    import cegeo.rebalance as rb

    rf = RunFolder(run)
    ref = weakref.ref(rf.test.logits.base if rf.test.logits.base is not None else rf.test.logits)
    del rf
    gc.collect()
    assert ref() is None  # the test split is not held anywhere once the caller drops it
    assert not [
        name
        for name, v in vars(rb).items()
        if isinstance(v, (dict, set, list)) and name.upper() == name and "TEST" in name
    ]


def test_run_posthoc_fits_on_validation_only(run, monkeypatch):
    from cegeo.rebalance import Rebalancer

    seen = []
    original = Rebalancer.fit

    def spy(self, X, *args, **kwargs):
        seen.append(X)
        return original(self, X, *args, **kwargs)

    monkeypatch.setattr(Rebalancer, "fit", spy)
    out = run_posthoc(run, "all", normal_class=0, max_false_alarm=0.1, write=False)
    assert all(isinstance(X, RunSplit) and X.name == "val" for X in seen)
    val = RunFolder(run).val.logits
    whole = [X for X in seen if X.logits.shape == val.shape]
    assert len(whole) == len(out["methods"]) == len(list_rebalancers())
    # and the cross-fitted scores' fits: CV_FOLDS per method, each on validation rows only
    folds = [X for X in seen if X.logits.shape != val.shape]
    assert len(folds) == CV_FOLDS * len(out["methods"])
    rows = {row.tobytes() for row in val}
    assert all(row.tobytes() in rows for X in folds for row in X.logits)
    # a method that learns nothing from validation scores the same out of fold
    geometry = out["results"]["geometry"]
    assert geometry["val_score_cv"] == geometry["val_score"]


def test_posthoc_on_one_validation_sample_a_class_has_no_cross_fitted_score(cli, tmp_path):
    """A validation split with one sample of each class cannot be cross-fitted: every method is
    fitted and reported without val_score_cv (it was StratifiedKFold's ValueError traceback)."""
    run = write_run(tmp_path / "run", val_per_class=(1, 1, 1, 1))
    out = run_posthoc(run, "all", write=False)
    assert out["methods"] and all(out["results"][m]["val_score_cv"] is None for m in out["methods"])
    # the best is then the best in-sample score, as before cross-fitting (not no method at all)
    in_sample = max(out["methods"], key=lambda m: out["results"][m]["val_score"])
    assert best_method(out) == in_sample
    r = cli("posthoc", run, "--no-write")
    assert r.code == 0, r.err
    assert sum(line.strip().startswith("> ") for line in r.out.splitlines()) == 1, r.out


def test_run_posthoc_uses_the_checked_budget(run):
    """max_false_alarm given as text (as from a config) is converted once and used as a number."""
    out = run_posthoc(run, "operating_point", normal_class=0, max_false_alarm="0.1", write=False)
    assert out["max_false_alarm"] == 0.1 and isinstance(out["max_false_alarm"], float)


def test_y_with_a_run_split_is_an_error(run):
    rf = RunFolder(run)
    with pytest.raises(ValueError, match=r"`y` must be None when X is a RunSplit"):
        create_rebalancer("lws").fit(rf.val, rf.val.labels)


def _remove(name):
    def go(p: Path):
        (p / name).unlink()

    return go


def _corrupt_final(p: Path):
    final = json.loads((p / "final.json").read_text())
    final["class_counts"] = [1, 2, 3]
    (p / "final.json").write_text(json.dumps(final))


def _bad_groups(p: Path):
    final = json.loads((p / "final.json").read_text())
    final["groups"] = {"majority": [0, 1], "minority": [1, 2, 3]}
    (p / "final.json").write_text(json.dumps(final))


def _final_loss(loss):
    def go(p: Path):
        final = json.loads((p / "final.json").read_text())
        final["loss"] = loss
        (p / "final.json").write_text(json.dumps(final))

    return go


def _string_logits(p: Path):
    data = dict(np.load(p / "logits_val.npz"))
    data["logits"] = data["logits"].astype("U8")
    write_npz(p / "logits_val.npz", **data)


def _drop_key(p: Path):
    data = dict(np.load(p / "logits_val.npz"))
    del data["labels"]
    write_npz(p / "logits_val.npz", **data)


@pytest.mark.parametrize(
    "breakage, match",
    [
        (_remove("final.json"), r"must be a finished run folder with final.json"),
        (_remove("logits_val.npz"), r"has no logits_val.npz"),
        (_drop_key, r"must hold the arrays logits, labels; missing labels"),
        (_corrupt_final, r"num_classes` must be 3 \(the length of class_counts\)"),
        (_bad_groups, r"groups` must be each class 0..3 in exactly one group"),
        (
            _final_loss({"name": "ldt", "hyper": [1]}),
            r"final.json: loss.hyper` must be a mapping of hyperparameter name -> value, .*; got \[1\]",
        ),
        (_final_loss({"name": 5}), r"final.json: loss` must be a loss name or"),
        (_final_loss(["ce"]), r"final.json: loss` must be a loss name or"),
        (_string_logits, r"logits_val.npz: logits` must be an array of real numbers; got 'str256'"),
    ],
    ids=[
        "no-final", "no-val", "no-labels", "bad-counts", "bad-groups", "hyper-list", "loss-int",
        "loss-list", "string-logits",
    ],
)  # fmt: skip
def test_broken_run_folders_are_one_clear_error(run, breakage, match, cli):
    breakage(run)
    with pytest.raises(ValueError, match=match):
        _ = RunFolder(run).val
    r = cli("posthoc", run, "--method", "posthoc_la")
    assert r.code == 2 and r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "text",
    ['[train]\nsampler = "class_balanced"\n', '[train]\nsampler = "uniform"\n', "[train\n"],
    ids=["class-balanced", "bad-sampler", "bad-toml"],
)
def test_posthoc_does_not_read_config_toml(run, text, cli):
    """Nothing post-hoc depends on the training sampler (it drops out of the theory's limit), so
    config.toml is not read: geometry's fit is the same whatever it holds, broken or not."""
    before = create_rebalancer("geometry").fit(RunFolder(run).val).predicted_w_norms_
    (run / "config.toml").write_text(text)
    np.testing.assert_array_equal(
        create_rebalancer("geometry").fit(RunFolder(run).val).predicted_w_norms_, before
    )
    assert not hasattr(RunFolder(run), "sampler") and not hasattr(RunFolder(run).val, "sampler")
    for method in ("posthoc_la", "geometry"):
        r = cli("posthoc", run, "--method", method, "--no-write")
        assert r.code == 0, r.err


def test_missing_run_dir_and_unknown_split(tmp_path, run):
    with pytest.raises(ValueError, match=r"`run_dir` must be an existing run folder"):
        RunFolder(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"`split` must be one of 'val', 'test'; got 'train'"):
        RunFolder(run).split("train")


def test_tau_norm_checks_the_linear_head(run):
    data = dict(np.load(run / "logits_val.npz"))
    data["logits"] = data["logits"] + 1.0  # a bias: logits != features @ W.T
    write_npz(run / "logits_val.npz", **data)
    with pytest.raises(ValueError, match=r"tau_norm cannot use run .*logits differ from features @ W.T"):
        create_rebalancer("tau_norm").fit(RunFolder(run).val)
    out = run_posthoc(run, "all", write=False)  # 'all' skips it with the reason instead
    assert "tau_norm" not in out["methods"] and "differ from features @ W.T" in out["skipped"]["tau_norm"]


def test_nan_features_fail_the_linear_head_check(run):
    # NaN makes the relative error NaN, and `NaN > tol` is False: the check must say "not <= tol".
    data = dict(np.load(run / "logits_val.npz"))
    data["features"][0, 0] = np.nan
    write_npz(run / "logits_val.npz", **data)
    with pytest.raises(ValueError, match=r"tau_norm cannot use run .*features hold non-finite values"):
        create_rebalancer("tau_norm").fit(RunFolder(run).val)
    out = run_posthoc(run, "all", write=False)
    assert "tau_norm" not in out["methods"] and "non-finite" in out["skipped"]["tau_norm"]


# ------------------------------------------------------------------------------ geometry + sampler


def _seli_w_norms(counts) -> np.ndarray:
    """CE's max-margin classifier norms written out from THEORY.md §4.1: M* = S = I - 11^T/k,
    G_W = (S N S)^(1/2); scaled to max 1."""
    n = np.asarray(counts, dtype=np.float64)
    S = np.eye(n.size) - 1.0 / n.size
    vals, vecs = np.linalg.eigh((S * n[None, :]) @ S)
    G_W = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    w = np.sqrt(np.diag(G_W))
    return w / w.max()


@pytest.mark.parametrize("sampler", ["none", "class_balanced", "sqrt", None])  # None: no config.toml
@pytest.mark.parametrize("loss, hyper", [("ce", {}), ("wce", {}), ("ldt", {"gamma": 0.5})])
def test_geometry_predicts_at_the_class_counts_whatever_the_sampler(tmp_path, sampler, loss, hyper):
    """Loss weights (wCE, DRW) and samplers (a per-sample weight: how often it is drawn) drop
    out of the max-margin limit (THEORY.md §4): the prediction is at the dataset's counts."""
    run = write_run(tmp_path / "run", loss=loss, hyper=hyper)
    if sampler is not None:  # the trainer's config.toml records it (and DRW)
        (run / "config.toml").write_text(f'[train]\nsampler = "{sampler}"\ndrw_epoch = 2\n')
    g = create_rebalancer("geometry").fit(RunFolder(run).val)
    if loss == "ldt":  # gamma = 1/2: an exact ETF classifier for any counts (THEORY.md §4.2)
        np.testing.assert_allclose(g.predicted_w_norms_, 1.0, rtol=1e-9)
    else:  # CE and wCE: SELI at the dataset's counts, minority classifiers shorter
        np.testing.assert_allclose(g.predicted_w_norms_, _seli_w_norms(COUNTS), rtol=1e-7)
        assert g.predicted_w_norms_[2] < 0.9  # not the ETF of a class-balanced sampler's draws
    for name in ("geometry", "geometry_tuned"):
        entry = run_posthoc(run, name, write=False)["results"][name]
        assert not {"sampler", "sampler_from", "effective_counts"} & set(entry)
        np.testing.assert_allclose(entry["predicted_w_norms"], g.predicted_w_norms_, rtol=1e-12)


def test_geometry_names_the_run_whose_loss_it_cannot_rebuild(tmp_path, cli):
    run = write_run(tmp_path / "run", loss="ldt", hyper={"gamma": "x"})
    r = cli("posthoc", run, "-m", "geometry")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert (
        f"run {str(run)!r} records a loss geometry cannot rebuild: `gamma` must be a finite number" in r.err
    )


# ------------------------------------------------------------------------------------- evaluate


def test_evaluate_json_matches_sklearn(run, cli):
    r = cli("evaluate", run, "--split", "test", "--normal-class", "0", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    test = np.load(run / "logits_test.npz")
    y, pred = test["labels"], test["logits"].argmax(1)
    assert out["split"] == "test" and out["n"] == y.size
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert out["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    recall = skm.recall_score(y, pred, average=None)
    assert out["group_recall"]["minority"] == pytest.approx(recall[2:].mean())
    assert out["minority_recall"] == out["group_recall"]["minority"]
    assert out["worst_class_recall"] == pytest.approx(recall.min())
    assert out["false_alarm"] == pytest.approx(np.mean(pred[y == 0] != 0))
    assert set(out["per_class"]) == {"support", "recall", "precision", "f1", "false_positive_rate"}


def test_evaluate_tables(run, cli):
    r = cli("evaluate", run, "--split", "val")
    assert r.code == 0, r.err
    for text in (
        "false-pos. rate",
        "balanced accuracy",
        "G-mean",
        "worst-class recall",
        "confusion matrix",
        "minority",
    ):
        assert text in r.out
    assert "false-alarm" not in r.out


@pytest.mark.parametrize(
    "args, match",
    [
        (["--normal-class", "7"], r"`--normal-class` must be a class name or index \(0, 1, 2, 3\); got '7'."),
        (
            ["--normal-class", "ok"],
            r"`--normal-class` must be a class name or index \(0, 1, 2, 3\); got 'ok'.",
        ),
        (["--split", "train"], r"`split` must be one of 'val', 'test'; got 'train'."),
    ],
)
def test_evaluate_errors(run, cli, args, match):
    import re

    r = cli("evaluate", run, *args)
    assert r.code == 2 and re.search(match, r.err), r.err


def _drop_class(p: Path, split: str, c: int) -> None:
    data = dict(np.load(p / f"logits_{split}.npz"))
    keep = data["labels"] != c
    write_npz(p / f"logits_{split}.npz", **{key: v[keep] for key, v in data.items()})


def test_evaluate_split_without_the_normal_class_reports_null(run, cli):
    _drop_class(run, "test", 0)
    r = cli("evaluate", run, "--normal-class", "0", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["false_alarm"] is None  # as the trainer's summaries report it
    assert out["notes"] == [
        "the test split has no sample of normal_class 0: its false-alarm rate is undefined (null)"
    ]
    r = cli("evaluate", run, "--normal-class", "0")
    assert r.code == 0, r.err
    assert "note: the test split has no sample of normal_class 0" in " ".join(r.out.split())
    # The validation split still has it: no note there.
    out = json.loads(cli("evaluate", run, "--split", "val", "--normal-class", "0", "--json").out)
    assert out["false_alarm"] is not None and "notes" not in out


def test_evaluate_missing_test_file(run, cli):
    (run / "logits_test.npz").unlink()
    r = cli("evaluate", run)
    assert r.code == 2 and "has no logits_test.npz" in r.err


# -------------------------------------------------------------------------------------- posthoc


def test_posthoc_all_writes_posthoc_json_and_helps(run, cli):
    r = cli("posthoc", run, "--method", "all")
    assert r.code == 0, r.err
    assert "raw (argmax)" in r.out and "skipped operating_point" in r.out
    out = json.loads((run / "posthoc.json").read_text())
    assert out["methods"] == ["posthoc_la", "tau_norm", "geometry", "geometry_tuned", "lws"]
    assert "operating_point" in out["skipped"] and out["warnings"] == []
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers
    raw = out["raw"]["test"]["balanced_accuracy"]
    # The head's majority rows are 1.8x longer; normalising them (tau = 1) undoes exactly that bias.
    tn = out["results"]["tau_norm"]
    assert tn["chosen"]["tau"] == pytest.approx(1.0, abs=0.3)
    assert tn["test"]["balanced_accuracy"] > raw + 0.05
    assert tn["test"]["minority_recall"] > out["raw"]["test"]["minority_recall"] + 0.1
    for name in out["methods"]:
        entry = out["results"][name]
        assert entry["val_score"] >= entry["val_score_raw"] - 1e-12 or name in ("geometry", "lws")
        assert set(entry["test"]) >= {"balanced_accuracy", "minority_recall", "confusion_matrix"}
    assert out["results"]["geometry"]["chosen"] == {"beta": 1.0}
    assert out["results"]["geometry"]["search"] is None


def test_posthoc_operating_point(run, cli):
    r = cli(
        "posthoc",
        run,
        "--method",
        "operating_point,posthoc_la",
        "--normal-class",
        "0",
        "--max-false-alarm",
        "0.05",
        "--json",
    )
    assert r.code == 0, r.err
    out = json.loads(r.out)
    op = out["results"]["operating_point"]
    assert op["val_false_alarm"] <= 0.05 and op["n_normal_val"] == 60
    assert op["test"]["false_alarm"] == pytest.approx(op["test_false_alarm"])
    assert out["raw"]["test"]["false_alarm"] is not None
    assert out["results"]["posthoc_la"]["test"]["false_alarm"] is not None


def test_posthoc_no_write_and_metric(run, cli):
    r = cli("posthoc", run, "-m", "posthoc_la", "--metric", "worst_class_recall", "--no-write")
    assert r.code == 0, r.err
    assert not (run / "posthoc.json").exists()
    assert "chosen on val for worst_class_recall" in r.out


def test_posthoc_skips_and_refuses_unsupported_methods(tmp_path, cli):
    bare = write_run(
        tmp_path / "bare", classifier=False, loss="ldam", hyper={"max_margin": 0.5, "scale": 30.0}
    )
    out = run_posthoc(bare, "all", write=False)
    assert out["methods"] == ["posthoc_la", "lws"]
    assert "no classifier.npz" in out["skipped"]["tau_norm"]
    assert "does not cover the run's loss 'ldam'" in out["skipped"]["geometry"]
    r = cli("posthoc", bare, "--method", "tau_norm")
    assert r.code == 2 and "rebalancer 'tau_norm' cannot run on" in r.err and "no classifier.npz" in r.err
    r = cli("posthoc", bare, "--method", "geometry")
    assert r.code == 2 and "does not cover the run's loss 'ldam'" in r.err


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--method", "platt"],
            r"`--method` must be a rebalancer name, one of 'posthoc_la', .*; got 'platt'",
        ),
        (["--metric", "accuracy"], r"`--metric` must be one of 'balanced_accuracy'"),
        (
            ["--method", "operating_point"],
            r"rebalancer 'operating_point' cannot run on .*needs a normal class",
        ),
        (["--max-false-alarm", "0.1"], r"`--max-false-alarm` needs --normal-class"),
        (["--normal-class", "4"], r"`--normal-class` must be a class name or index \(0, 1, 2, 3\); got '4'."),
        (
            ["--normal-class", "0", "--max-false-alarm", "1.5"],
            r"`--max-false-alarm` must be a number in \[0, 1\)",
        ),
        (
            ["-m", "operating_point", "--normal-class", "0", "--max-false-alarm", "0"],
            r"`max_false_alarm` 0 is impossible on validation",
        ),
    ],
    ids=[
        "method",
        "metric",
        "op-no-normal",
        "budget-no-normal",
        "normal-range",
        "budget-range",
        "impossible",
    ],
)
def test_posthoc_errors(run, cli, args, match):
    import re

    if "impossible" in match:
        _no_threshold_meets_zero_false_alarms(run)
    r = cli("posthoc", run, *args)
    assert r.code == 2 and re.search(match, r.err), r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not (run / "posthoc.json").exists()


def _no_threshold_meets_zero_false_alarms(run):
    """Make zero false alarms impossible: every defect scores above the least normal sample."""
    data = dict(np.load(run / "logits_val.npz"))
    z, y = data["logits"], data["labels"]
    z[y == 0, 0] = np.linspace(5.0, 50.0, int((y == 0).sum()))
    z[y == 0, 1:] = 0.0
    z[y != 0, 0] = 60.0
    write_npz(run / "logits_val.npz", logits=z, labels=y)


def test_posthoc_all_skips_an_operating_point_no_threshold_meets(run, cli):
    """With 'all' (the default) a method the run cannot support is skipped with the reason; an
    impossible false-alarm budget failed the whole command instead (and every run of a sweep's
    [posthoc] block), although the other five methods could run."""
    _no_threshold_meets_zero_false_alarms(run)
    r = cli("posthoc", run, "--normal-class", "0", "--max-false-alarm", "0")
    assert r.code == 0, r.err
    out = json.loads((run / "posthoc.json").read_text())
    assert "operating_point" not in out["methods"] and "posthoc_la" in out["methods"]
    assert out["skipped"]["operating_point"].startswith("`max_false_alarm` 0 is impossible on validation")


def test_posthoc_test_split_without_the_normal_class(run, cli):
    _drop_class(run, "test", 0)
    r = cli(
        "posthoc", run, "-m", "operating_point,posthoc_la", "--normal-class", "0", "--max-false-alarm", "0.1"
    )
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    # warnings go to stderr, as every command's do (they were mixed into the table's stdout)
    assert "warning: the test split has no sample of normal_class 0: its false-alarm rates are null" in r.err
    assert "warning:" not in r.out
    assert "test: false alarm -," in text
    out = json.loads((run / "posthoc.json").read_text())
    assert out["raw"]["test"]["false_alarm"] is None
    assert out["results"]["operating_point"]["test_false_alarm"] is None
    assert out["results"]["operating_point"]["val_false_alarm"] is not None


def test_posthoc_validation_split_without_the_normal_class(run, cli):
    _drop_class(run, "val", 0)
    out = run_posthoc(run, "all", normal_class=0, write=False)
    assert "operating_point" not in out["methods"]
    assert out["skipped"]["operating_point"] == (
        "the validation split has no sample of normal_class 0 to set a threshold on"
    )
    r = cli("posthoc", run, "-m", "operating_point", "--normal-class", "0")
    assert r.code == 2 and "validation split has no sample of normal_class 0" in r.err


def test_posthoc_warns_when_a_tuned_value_is_on_the_grid_edge(run, cli):
    # A prior bias 4x the log-prior on top of the head's own: the best tau lies beyond the grid's maximum 3.
    log_prior = np.log(np.array(COUNTS) / sum(COUNTS))
    for name in ("val", "test"):
        data = dict(np.load(run / f"logits_{name}.npz"))
        data["logits"] = (data["logits"] + 4 * log_prior).astype(np.float32)
        data.pop("features")
        write_npz(run / f"logits_{name}.npz", **data)
    r = cli("posthoc", run, "-m", "posthoc_la", "--no-write", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    entry = out["results"]["posthoc_la"]
    assert entry["chosen"] == {"tau": 3.0} and entry["search"]["at_edge"] == "upper"
    assert any(w.startswith("posthoc_la: the chosen tau = 3 is the upper end of its search grid [-1, 3]")
               for w in out["warnings"])  # fmt: skip
    assert entry["warnings"] and entry["warnings"][0] in out["warnings"][-1]
    r = cli("posthoc", run, "-m", "posthoc_la", "--no-write")
    assert "warning: posthoc_la: the chosen tau = 3 is the upper end" in r.err


def test_posthoc_json_not_writable_fails_before_fitting(run, cli, monkeypatch):
    from cegeo.rebalance import Rebalancer

    (run / "posthoc.json").mkdir()

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted before checking the output path")

    monkeypatch.setattr(Rebalancer, "fit", no_fit)
    with pytest.raises(ValueError, match=r"`posthoc.json` must be a file path \(not a folder\).*--no-write"):
        run_posthoc(run, "all")
    r = cli("posthoc", run, "-m", "posthoc_la")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert (
        r.err.startswith("error: `posthoc.json` must be a file path (not a folder)") and "--no-write" in r.err
    )
    monkeypatch.undo()
    r = cli("posthoc", run, "-m", "posthoc_la", "--no-write")
    assert r.code == 0, r.err


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--method", "posthoc_la", "lws"],
            r"`--method` takes one value per option: give several methods as --method posthoc_la,lws or "
            r"-m posthoc_la -m lws; got extra argument\(s\) 'lws'.",
        ),
        (["other_run"], r"`RUN_DIR` must be one run folder \(several methods: --method posthoc_la,lws"),
    ],
    ids=["method-nargs", "two-runs"],
)
def test_posthoc_extra_arguments_say_how_to_give_several_methods(run, cli, args, match):
    import re

    r = cli("posthoc", run, *args)
    assert r.code == 2 and re.search(match, r.err), r.err
    assert len(r.err.strip().splitlines()) == 1 and not (run / "posthoc.json").exists()


@pytest.mark.slow
def test_posthoc_on_a_real_trainer_run(tmp_path, cli):
    """The trainer's run folder satisfies everything the rebalancers read (contract end to end)."""
    run = tmp_path / "digits"
    r = cli(
        "train", "--data", "digits", "--imbalance", "step:R=10,rho=0.5", "--model", "mlp",
        "--model-option", "width=64", "--model-option", "depth=2", "--loss", "ce", "--epochs", "3",
        "--seed", "0", "--device", "cpu", "--no-progress", "--out", run,
    )  # fmt: skip
    assert r.code == 0, r.err
    r = cli("posthoc", run, "--method", "all", "--normal-class", "0", "--max-false-alarm", "0.1", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["skipped"] == {} and out["methods"] == list_rebalancers()
    # digits at the trainer's default val fraction keeps ~1 validation sample per minority class
    assert "validation has fewer than 5 samples in class(es) [5, 6, 7, 8, 9]" in out["warnings"][0]
    assert out["raw"]["test"]["n"] == json.loads((run / "final.json").read_text())["test"]["n"]
    assert out["raw"]["test"]["balanced_accuracy"] == pytest.approx(
        json.loads((run / "final.json").read_text())["test"]["balanced_accuracy"], abs=1e-6
    )
    r = cli("evaluate", run, "--json")
    assert r.code == 0 and json.loads(r.out)["group_recall"].keys() == {"majority", "minority"}


def test_a_budget_finer_than_validation_can_resolve_is_warned_and_overruns_are_marked(run, cli, monkeypatch):
    r = cli("posthoc", run, "-m", "posthoc_la,operating_point", "--normal-class", "0",
            "--max-false-alarm", "0.001", "--no-write", "--json")  # fmt: skip
    assert r.code == 0, r.err
    result = json.loads(r.out)
    n_normal = int(np.sum(RunFolder(run).val.labels == 0))
    assert any(
        f"validation has {n_normal} samples of normal_class 0: its false-alarm rate moves in steps of" in w
        for w in result["warnings"]
    )
    # the table marks every row whose test false-alarm rate is over the budget
    import io

    from rich.console import Console

    import cegeo.cli.cmd_posthoc as cmd_posthoc

    result["results"]["posthoc_la"]["test"]["false_alarm"] = 0.5
    buf = io.StringIO()
    wide = Console(file=buf, width=200, markup=False, highlight=False)
    monkeypatch.setattr(cmd_posthoc, "console", wide)
    monkeypatch.setattr(cmd_posthoc, "wide_console", lambda width=120: wide)
    cmd_posthoc.print_posthoc(result)
    text = buf.getvalue()
    row = next(line for line in text.splitlines() if line.strip().lstrip("> ").startswith("posthoc_la"))
    # the method with the best cross-fitted validation score is marked '>'
    marked = [line.split()[1] for line in text.splitlines() if line.strip().startswith("> ")]
    assert marked == [best_method(result)] and best_method(result) in ("posthoc_la", "operating_point")
    assert row.rstrip().endswith("0.500 !") and "! = test false-alarm rate over the budget 0.001" in text
    assert "the > row is chosen among the predictions whose validation false-alarm rate is within" in text
    # nothing within the budget on validation: no row is marked, and the output says why
    for entry in [result["raw"], *result["results"].values()]:
        entry["val"]["false_alarm"] = 0.5
    buf.truncate(0)
    buf.seek(0)
    cmd_posthoc.print_posthoc(result)
    text = buf.getvalue()
    assert not [line for line in text.splitlines() if line.strip().startswith("> ")]
    assert "within the budget 0.001: none is, so no row is marked" in " ".join(text.split())


@pytest.mark.parametrize("command", ["evaluate", "posthoc"])
def test_a_truncated_logits_file_is_a_one_line_error(cli, run, command):
    raw = (run / "logits_test.npz").read_bytes()
    (run / "logits_test.npz").write_bytes(raw[:100])
    r = cli(command, run, *(["--no-write"] if command == "posthoc" else []))
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert "logits_test.npz` must be a readable .npz file" in r.err


def _printed(result, monkeypatch) -> str:
    import io

    from rich.console import Console

    import cegeo.cli.cmd_posthoc as cmd_posthoc

    buf = io.StringIO()
    wide = Console(file=buf, width=200, markup=False, highlight=False)
    monkeypatch.setattr(cmd_posthoc, "console", wide)
    monkeypatch.setattr(cmd_posthoc, "wide_console", lambda width=120: wide)
    cmd_posthoc.print_posthoc(result)
    return buf.getvalue()


def test_no_method_is_marked_best_when_raw_scores_as_well_on_validation(run, cli, monkeypatch):
    r = cli("posthoc", run, "-m", "posthoc_la,lws", "--no-write", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    raw_val = result["raw"]["val"][result["metric"]]
    for name in result["methods"]:  # every correction worse than none by its cross-fitted score
        result["results"][name]["val_score_cv"] = raw_val - 0.1
    marked = [line for line in _printed(result, monkeypatch).splitlines() if line.strip().startswith("> ")]
    assert len(marked) == 1 and "raw (argmax)" in marked[0]
    result["results"]["lws"]["val_score_cv"] = raw_val + 0.01  # one beats it: that one is marked
    marked = [line for line in _printed(result, monkeypatch).splitlines() if line.strip().startswith("> ")]
    assert len(marked) == 1 and marked[0].split()[1] == "lws"


def test_false_alarm_column_keeps_decimal_points_aligned(run, cli, monkeypatch):
    r = cli("posthoc", run, "-m", "posthoc_la,lws", "--normal-class", "0", "--no-write", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    result["results"]["posthoc_la"]["test"]["false_alarm"] = 0.5  # over the budget: marked "!"
    result["results"]["lws"]["test"]["false_alarm"] = 0.0
    lines = _printed(result, monkeypatch).splitlines()
    la = next(line for line in lines if line.strip().lstrip("> ").startswith("posthoc_la"))
    lws = next(line for line in lines if line.strip().lstrip("> ").startswith("lws"))
    assert la.rstrip().endswith("0.500 !")
    assert la.index("0.500 !") == lws.rindex("0.000")  # same column, decimal points aligned


def test_the_table_with_false_alarm_columns_cuts_no_number_when_piped(run, cli):
    """Piped output (rich assumes 80 columns): the table with a normal class has two false-alarm
    columns and printed at 120 columns it cut numbers to '0.0…'."""
    r = cli("posthoc", run, "-m", "all", "--normal-class", "0", "--no-write")
    assert r.code == 0, r.err
    assert "…" not in r.out and "val f.a." in r.out, r.out
