"""Run-folder API, the test-data guard, ``cegeo evaluate`` and ``cegeo posthoc``.

Run folders are written here exactly per docs/run-folder.md with cegeo._io's writers: a bias-free
linear head whose majority rows are longer (what CE training produces), so the right corrections
are known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from cegeo._io import write_json, write_npz
from cegeo.data.imbalance import step_groups
from cegeo.metrics import classification_summary
from cegeo.rebalance import RunFolder, create_rebalancer, list_rebalancers, run_posthoc

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
        lambda t: t.logits,
        lambda t: t.logits.astype(np.float64) + 0.0,
        lambda t: t.logits[:25].copy(),
        lambda t: np.concatenate([t.logits[:100], np.zeros((100, K), np.float32)]),
    ],
    ids=["array", "float64-copy", "slice", "half-mixed"],
)
def test_fit_refuses_arrays_taken_from_the_test_split(run, take):
    test = RunFolder(run).test
    z = take(test)
    y = np.resize(test.labels, z.shape[0])
    with pytest.raises(ValueError, match=r"`X` must be validation data; got logits of which \d+ of \d+ rows"):
        create_rebalancer("posthoc_la").fit(z, y, COUNTS)
    # ... while the validation split (and evaluating on test) is fine.
    rf = RunFolder(run)
    la = create_rebalancer("posthoc_la").fit(rf.val)
    assert la.predict(rf.test).shape == (rf.test.labels.size,)


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
    ],
    ids=["no-final", "no-val", "no-labels", "bad-counts", "bad-groups"],
)
def test_broken_run_folders_are_one_clear_error(run, breakage, match, cli):
    breakage(run)
    with pytest.raises(ValueError, match=match):
        _ = RunFolder(run).val
    r = cli("posthoc", run, "--method", "posthoc_la")
    assert r.code == 2 and r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1


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
        (["--normal-class", "7"], r"`normal_class` must be a class in 0..3; got 7."),
        (["--split", "train"], r"`split` must be one of 'val', 'test'; got 'train'."),
    ],
)
def test_evaluate_errors(run, cli, args, match):
    import re

    r = cli("evaluate", run, *args)
    assert r.code == 2 and re.search(match, r.err), r.err


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
        (["--method", "platt"], r"unknown rebalancer 'platt'; valid names: 'posthoc_la'"),
        (["--metric", "accuracy"], r"`metric` must be one of 'balanced_accuracy'"),
        (
            ["--method", "operating_point"],
            r"rebalancer 'operating_point' cannot run on .*needs a normal class",
        ),
        (["--max-false-alarm", "0.1"], r"`--max-false-alarm` needs --normal-class"),
        (["--normal-class", "4"], r"`normal_class` must be a class in 0..3; got 4."),
        (
            ["--normal-class", "0", "--max-false-alarm", "1.5"],
            r"`max_false_alarm` must be a number in \[0, 1\)",
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
        # Make zero false alarms impossible: every defect scores above the least normal sample.
        data = dict(np.load(run / "logits_val.npz"))
        z, y = data["logits"], data["labels"]
        z[y == 0, 0] = np.linspace(5.0, 50.0, int((y == 0).sum()))
        z[y == 0, 1:] = 0.0
        z[y != 0, 0] = 60.0
        write_npz(run / "logits_val.npz", logits=z, labels=y)
    r = cli("posthoc", run, *args)
    assert r.code == 2 and re.search(match, r.err), r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not (run / "posthoc.json").exists()


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
