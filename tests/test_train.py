"""The trainer end to end on tiny digits/gaussian runs: run folder, probes, resume, samplers, DRW."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cegeo._io import read_json, read_jsonl
from cegeo.config import RunConfig, load_run_config, override
from cegeo.geometry import classifier_weight
from cegeo.losses import class_balanced_weights
from cegeo.train import (
    Trainer,
    augment_batch,
    load_checkpoint,
    lr_at,
    prepare_run_folder,
    sampling_probabilities,
)

ROOT = Path(__file__).resolve().parents[1]

DIGITS = {
    "data.imbalance": "step:R=10,rho=0.5",
    "model.options": {"width": 32, "depth": 2},
    "train.batch_size": 64,
    "runtime.threads": 1,
}
GAUSS = {
    "data.source": "gaussian",
    "data.imbalance": "step:R=5,rho=0.5",
    "data.options": {"k": 4, "d": 6, "n_per_class": 60, "n_test_per_class": 20, "separation": 3.0},
    "model.options": {"width": 16, "depth": 2},
    "train.batch_size": 32,
    "runtime.threads": 1,
}


def cfg(base: dict, **dotted) -> RunConfig:
    return override(RunConfig(), {**base, **{k.replace("__", "."): v for k, v in dotted.items()}})


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One finished digits run (ldt, augmentation, probes every 2 epochs), shared by several tests."""
    out = tmp_path_factory.mktemp("runs") / "ldt"
    config = cfg(
        DIGITS,
        loss__name="ldt",
        loss__hyper={"gamma": 0.5},
        train__epochs=3,
        train__probe_every=2,
        train__pad_crop=1,
        train__flip=True,
        data__normal_class=0,
    )
    trainer = Trainer(config, out, progress=False)
    final = trainer.run()
    return trainer, final, out


# ------------------------------------------------------------------------------------ run folder


def test_run_folder_files_and_keys(digits_run):
    trainer, final, out = digits_run
    names = {p.name for p in out.iterdir()}
    assert names == {
        "config.toml",
        "metrics.jsonl",
        "checkpoint.pt",
        "final.json",
        "logits_val.npz",
        "logits_test.npz",
        "classifier.npz",
    }
    # config.toml reproduces the run's configuration; its [provenance] has versions and commit
    assert load_run_config(out / "config.toml") == trainer.config
    from cegeo._io import tomllib  # tomli on Python 3.10

    prov = tomllib.loads((out / "config.toml").read_text())["provenance"]
    assert {"cegeo", "torch", "numpy", "python", "platform", "device"} <= set(prov)
    assert prov["torch_threads"] == 1  # runtime.threads; the count torch used when it is unset
    # metrics.jsonl: the probed epochs (every 2, and the last)
    lines = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == [2, 3]
    steps = trainer.steps_per_epoch
    assert [r["step"] for r in lines] == [2 * steps, 3 * steps]
    for r in lines:
        assert {"epoch", "step", "time_s", "lr", "train_loss", "train", "val", "test", "geometry"} <= set(r)
        for split in ("train", "val", "test"):
            s = r[split]
            assert {"n", "accuracy", "balanced_accuracy", "macro_f1", "worst_class_recall", "g_mean"} <= set(
                s
            )
            assert set(s["group_recall"]) == {"majority", "minority"}
            assert "false_alarm" in s  # normal_class = 0
        g = r["geometry"]
        assert {
            "w_norms",
            "h_norms",
            "summary",
            "summary_centred",
            "nc1",
            "dist_W",
            "dist_H",
            "dist_M",
        } <= set(g)
        assert len(g["w_norms"]) == 10 and g["dist_W"] is not None
    assert lines[0]["time_s"] < lines[1]["time_s"]
    assert lines[0]["train"]["n"] == int(trainer.splits.class_counts.sum())
    # final.json per docs/run-folder.md
    assert final == read_json(out / "final.json")
    assert final["finished"] is True and final["epochs"] == 3
    assert final["class_counts"] == trainer.splits.class_counts.tolist()
    assert final["groups"] == {"majority": [0, 1, 2, 3, 4], "minority": [5, 6, 7, 8, 9]}
    assert final["loss"] == {"name": "ldt", "hyper": {"gamma": 0.5, "normalize": 1.0}}
    assert (final["model"], final["data"], final["imbalance"], final["seed"]) == (
        "mlp",
        "digits",
        "step:R=10,rho=0.5",
        0,
    )
    assert final["test"] == lines[-1]["test"] and final["geometry"]["cos_W"]
    assert final["theory"]["summary"]["W_ratio"] == pytest.approx(1.0)  # LDT gamma = 1/2: symmetric
    assert set(final["history"]) >= {"epoch_to_95pct_bal_acc", "time_to_95pct_bal_acc_s"}
    assert final["environment"]["torch"] == torch.__version__
    assert 0 < final["train_time_s"] <= final["wall_time_s"]


def test_logits_and_classifier_files(digits_run):
    trainer, final, out = digits_run
    W = np.load(out / "classifier.npz")["W"]
    assert W.shape == (10, 32) and W.dtype == np.float32
    for split, y in (("val", trainer.splits.y_val), ("test", trainer.splits.y_test)):
        with np.load(out / f"logits_{split}.npz") as f:
            logits, labels, feats = f["logits"], f["labels"], f["features"]
        assert logits.dtype == np.float32 and feats.dtype == np.float32 and labels.dtype == np.int64
        np.testing.assert_array_equal(labels, y)
        assert logits.shape == (y.size, 10) and feats.shape == (y.size, 32)
        np.testing.assert_allclose(logits, feats @ W.T, rtol=1e-4, atol=1e-4)
    # the predictions behind final["test"] are the argmax of logits_test
    from cegeo.metrics import classification_summary

    for split, y in (("val", trainer.splits.y_val), ("test", trainer.splits.y_test)):
        pred = np.load(out / f"logits_{split}.npz")["logits"].argmax(1)
        _close(final[split], classification_summary(y, pred, 10, trainer.splits.groups, normal_class=0))


def test_checkpoint_is_safe_to_load_and_complete(digits_run):
    trainer, _, out = digits_run
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 3 and ck["step"] == 3 * trainer.steps_per_epoch
    assert {"model", "optimizer", "rng", "normalization", "config_toml"} <= set(ck)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(ck["model"][key], value)


def test_probes_match_numpy_over_the_training_set(digits_run):
    """The logged geometry equals a direct NumPy computation on the trained model's features."""
    trainer, final, _ = digits_run
    model = trainer.model.eval()
    with torch.no_grad():
        h = model.features(trainer.inputs(trainer.x["train"])).double().numpy()
    y = trainer.splits.y_train
    W = classifier_weight(model).double().numpy()
    k = 10
    mu = np.stack([h[y == c].mean(0) for c in range(k)])
    cm = mu - h.mean(0)
    resid = h - mu[y]
    sigma_w = resid.T @ resid / len(y)
    sigma_b = cm.T @ cm / k
    vals, vecs = np.linalg.eigh(sigma_b)
    top = np.argsort(vals)[::-1][: k - 1]
    nc1 = np.trace(sigma_w @ (vecs[:, top] / vals[top]) @ vecs[:, top].T) / k
    g = final["geometry"]
    np.testing.assert_allclose(g["h_norms"], np.linalg.norm(mu, axis=1), rtol=1e-5)
    np.testing.assert_allclose(g["h_norms_centred"], np.linalg.norm(cm, axis=1), rtol=1e-5)
    np.testing.assert_allclose(g["w_norms"], np.linalg.norm(W, axis=1), rtol=1e-6)
    assert g["nc1"] == pytest.approx(nc1, rel=1e-4)
    sq_h = np.sum(mu**2, 1)
    assert g["summary"]["H_ratio"] == pytest.approx(sq_h[:5].mean() / sq_h[5:].mean(), rel=1e-5)
    from cegeo.theory import distance

    assert g["dist_M"] == pytest.approx(distance(W @ mu.T, np.array(final["theory"]["M"])), rel=1e-5)


def test_cpu_probes_forward_in_cache_sized_chunks_with_the_same_values(monkeypatch):
    """On the CPU the probes' forward runs in chunks whose largest activation fits the budget
    (1024-row batches of ResNet-32 run at memory speed, 3x slower per image); the probe is the
    one of whole eval_batch_size batches up to float rounding."""
    import cegeo.train as train_module

    t = Trainer(cfg(DIGITS, model__name="cnn", model__options={"width": 8}, train__epochs=1), progress=False)
    t.run()
    per_row = train_module._largest_activation_bytes(
        t.model, lambda: t._features_logits(t.inputs(t.x["train"][:1]))
    )
    assert per_row == 32 * 8 * 8 * 4  # the first convs' (32, 8, 8) float32 maps
    rows, calls = {}, []
    features = t.model.features
    monkeypatch.setattr(t.model, "features", lambda x: calls.append(x.shape[0]) or features(x))
    for name, budget in (("whole", 1 << 62), ("chunked", 16 * per_row)):
        monkeypatch.setattr(train_module, "_CPU_EVAL_BYTES", budget)
        t._cpu_eval_rows = None
        calls.clear()
        rows[name] = (t._probe(1, t.steps_per_epoch, 0.0, 0.0, final=False), max(calls))
    (whole, whole_rows), (chunked, chunked_rows) = rows["whole"], rows["chunked"]
    assert whole_rows == t.n_train and chunked_rows == 16  # eval_batch_size (1024) > n_train
    for split in ("train", "val", "test"):
        assert chunked[split] == whole[split]  # the same predictions
    assert chunked["train_loss_eval"] == pytest.approx(whole["train_loss_eval"], rel=1e-6)
    g, h = chunked["geometry"], whole["geometry"]
    np.testing.assert_allclose(g["h_norms"], h["h_norms"], rtol=1e-6)
    np.testing.assert_allclose(g["cos_wh"], h["cos_wh"], rtol=1e-6, atol=1e-7)
    assert g["nc1"] == pytest.approx(h["nc1"], rel=1e-5)
    assert g["dist_H_centred"] == pytest.approx(h["dist_H_centred"], rel=1e-5)


def test_cpu_probe_chunks_of_the_cifar_resnet_and_the_mlp():
    """ResNet-32's 16 x 32 x 32 maps (64 KiB a row) give 64-row chunks; an MLP keeps
    eval_batch_size rows; compiled and CUDA passes keep their static eval_batch_size."""
    from cegeo.models import create_model
    from cegeo.train import _CPU_EVAL_BYTES, _largest_activation_bytes

    m = create_model("resnet32", in_shape=(3, 32, 32), num_classes=10).eval()
    per_row = _largest_activation_bytes(m, lambda: m.features(torch.zeros(1, 3, 32, 32)))
    assert per_row == 16 * 32 * 32 * 4 and _CPU_EVAL_BYTES // per_row == 64
    mlp = Trainer(cfg(DIGITS, train__epochs=1), progress=False).setup()
    mlp.model.eval()
    assert mlp._eval_rows() == mlp.config.train.eval_batch_size == 1024


# ------------------------------------------------------------------------------------ resume


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    """A real subprocess killed with SIGKILL mid-run, resumed, ends with identical weights."""
    args = [
        *("--data", "digits", "--imbalance", "step:R=10,rho=0.5", "--model", "mlp"),
        *("--model-option", "width=64", "--model-option", "depth=2", "--loss", "ldt", "--gamma", "0.5"),
        *("--epochs", "14", "--batch-size", "64", "--pad-crop", "1", "--flip", "--sampler", "sqrt"),
        *("--drw-epoch", "8", "--milestones", "10", "--threads", "1", "--no-progress"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "cegeo", "train", *args]
    subprocess.run([*cmd, "--out", str(tmp_path / "A")], check=True, env=env, capture_output=True)
    b = tmp_path / "B"
    proc = subprocess.Popen(
        [*cmd, "--out", str(b)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (b / "metrics.jsonl").exists() and (b / "metrics.jsonl").read_text().count("\n") >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (b / "final.json").exists(), "the run finished before it could be killed"
    killed_at = load_checkpoint(b / "checkpoint.pt")["epoch"]
    assert 2 <= killed_at < 14
    subprocess.run([*cmd, "--out", str(b), "--resume"], check=True, env=env, capture_output=True)
    a_ck, b_ck = load_checkpoint(tmp_path / "A" / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert a_ck["model"].keys() == b_ck["model"].keys()
    for key in a_ck["model"]:
        assert torch.equal(a_ck["model"][key], b_ck["model"][key]), key
    for sa, sb in zip(a_ck["optimizer"]["state"].values(), b_ck["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    np.testing.assert_array_equal(
        np.load(tmp_path / "A" / "classifier.npz")["W"], np.load(b / "classifier.npz")["W"]
    )
    la, lb = read_jsonl(tmp_path / "A" / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert [r["epoch"] for r in lb] == list(range(1, 15))  # every epoch logged once
    assert [r["test"] for r in la] == [r["test"] for r in lb]


def _assert_resumed_equals_straight(config, resumed_run, straight_run):
    """The resumed run's checkpointed weights equal, bitwise, those of ``config`` trained
    uninterrupted into ``straight_run``."""
    straight = Trainer(config, straight_run, progress=False)
    straight.run()
    resumed = load_checkpoint(resumed_run / "checkpoint.pt")["model"]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed[key], value), key


class _CrashAfterProbe(Trainer):
    """Dies between writing an epoch's metrics line and saving its checkpoint."""

    crash_epoch = 2

    def _save_checkpoint(self, state):
        if state["epoch"] == self.crash_epoch:
            raise KeyboardInterrupt("simulated crash")
        super()._save_checkpoint(state)


def test_resume_redoes_epochs_logged_after_the_checkpoint(tmp_path):
    config = cfg(GAUSS, train__epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(config, tmp_path / "r", progress=False).run()
    assert [r["epoch"] for r in read_jsonl(tmp_path / "r" / "metrics.jsonl")] == [1, 2]
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1
    Trainer(None, tmp_path / "r", resume=True, progress=False).run()
    assert [r["epoch"] for r in read_jsonl(tmp_path / "r" / "metrics.jsonl")] == [1, 2, 3]
    _assert_resumed_equals_straight(config, tmp_path / "r", tmp_path / "s")


class _SGDWithoutFused(torch.optim.SGD):
    """SGD as torch 2.2 has it: no ``fused`` argument (a TypeError when given one)."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov)


def test_a_torch_whose_sgd_takes_no_fused_trains_and_resumes(monkeypatch, tmp_path):
    """pyproject allows torch 2.2, whose SGD takes no ``fused``: the trainer builds it without
    one (passing ``fused=None`` crashed every run there), and a run resumes."""
    monkeypatch.setattr(torch.optim, "SGD", _SGDWithoutFused)
    config = cfg(GAUSS, train__epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(config, tmp_path / "r", progress=False).run()
    resumed = Trainer(None, tmp_path / "r", resume=True, progress=False)
    resumed.run()
    assert isinstance(resumed.optimizer, _SGDWithoutFused)
    _assert_resumed_equals_straight(config, tmp_path / "r", tmp_path / "s")


def test_a_run_leaves_the_callers_random_stream_as_it_was(tmp_path):
    """Trainer draws its initialisation from a seeded generator and restores a checkpoint's
    generator states inside the run only: the caller's torch RNG is not reseeded (cegeo used
    as a library), and the weights depend on the run's seed alone."""
    config = cfg(GAUSS, train__epochs=2)
    torch.manual_seed(1)
    before = torch.random.get_rng_state()
    first = Trainer(config, progress=False)
    first.setup()
    assert torch.equal(torch.random.get_rng_state(), before)
    first.run()
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(2)  # another caller stream: the same run
    second = Trainer(config, progress=False)
    second.run()
    for key, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[key], value), key
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(config, tmp_path / "r", progress=False).run()
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    Trainer(None, tmp_path / "r", resume=True, progress=False).run()
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_run_gives_back_the_thread_count_it_set():
    """runtime.threads is process-wide (torch.set_num_threads): a run left it set, so the
    caller's own torch work (a notebook, a sweep run in process) went on with the run's count."""
    before = torch.get_num_threads()
    config = cfg(GAUSS, train__epochs=1, runtime__threads=1 if before != 1 else 2)
    trainer = Trainer(config, progress=False).setup()
    assert torch.get_num_threads() == config.runtime.threads
    trainer.run()
    assert torch.get_num_threads() == before


def test_resume_refuses_a_checkpoint_counted_with_other_batches_per_epoch(tmp_path):
    """The lr schedule is a function of the step: a checkpoint whose step count does not fit
    this run's batches per epoch (an earlier cegeo dropped other last batches) is refused, not
    resumed with a shifted schedule; the folder is left as it was."""
    config = cfg(GAUSS, train__epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(config, tmp_path / "r", progress=False).run()
    path = tmp_path / "r" / "checkpoint.pt"
    ck = load_checkpoint(path)
    assert ck["step"] == ck["epoch"] * ck["steps_per_epoch"]
    ck["step"] += 1  # as if one more batch per epoch had been trained
    del ck["steps_per_epoch"]
    torch.save(ck, path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    with pytest.raises(
        ValueError, match=r"checkpoint.pt` must come from a run of \d+ steps per epoch, as this one has; got"
    ):
        Trainer(None, tmp_path / "r", resume=True, progress=False).run()
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before


def test_resume_refuses_a_config_toml_edited_after_the_run_started(tmp_path):
    """A resume reads the folder's config.toml: edited after the checkpoint (lr 0.1 -> 0.05), it
    trained the rest of the run with the new rate, and the folder's config.toml then claimed a
    run it does not reproduce. The checkpoint's own config is the reference; [runtime] may change."""
    config = cfg(GAUSS, train__epochs=3, optim__schedule="cosine")
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(config, tmp_path / "r", progress=False).run()
    toml = tmp_path / "r" / "config.toml"
    text = toml.read_text()
    assert "\nlr = 0.1\n" in text and '\ndevice = "auto"\n' in text
    toml.write_text(text.replace("\nlr = 0.1\n", "\nlr = 0.05\n"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    with pytest.raises(
        ValueError,
        match=r"^`optim.lr` must match the run being resumed in .* \(its checkpoint was trained with "
        r"0.1\); got 0.05: was config.toml edited\? Use --force to start over.$",
    ):
        Trainer(None, tmp_path / "r", resume=True, progress=False).run()
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before
    # the hardware settings may change: the run resumes and ends as if never interrupted
    toml.write_text(text.replace('\ndevice = "auto"\n', '\ndevice = "cpu"\n'))
    Trainer(None, tmp_path / "r", resume=True, progress=False).run()
    _assert_resumed_equals_straight(config, tmp_path / "r", tmp_path / "s")


def test_resume_follows_data_that_moved_when_config_toml_points_at_them(tmp_path):
    """The checkpoint's config is the reference of a resume, but where the data lie is not part
    of the run: data moved after the run started (config.toml's data path edited to follow them,
    the only way to point a resume at them) resume as before, and end as a run never interrupted."""
    rng = np.random.default_rng(0)
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    x = rng.normal(size=(120, 3))
    lines = ["a,b,c,label"] + [f"{a:.5f},{b:.5f},{c:.5f},{int(a > 0)}" for a, b, c in x]
    (old / "x.csv").write_text("\n".join(lines) + "\n")
    base = {**GAUSS, "data.options": {}, "train.epochs": 3}
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(cfg(base, data__source=f"csv:{old / 'x.csv'}"), tmp_path / "r", progress=False).run()
    old.rename(new)
    toml = tmp_path / "r" / "config.toml"
    toml.write_text(toml.read_text().replace(str(old), str(new)))
    Trainer(None, tmp_path / "r", resume=True, progress=False).run()
    _assert_resumed_equals_straight(
        cfg(base, data__source=f"csv:{new / 'x.csv'}"), tmp_path / "r", tmp_path / "s"
    )
    # another source than the checkpoint's is still refused
    np.savez(tmp_path / "x.npz", x_train=x.astype(np.float32), y_train=(x[:, 0] > 0).astype(np.int64))
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(cfg(base, data__source=f"csv:{new / 'x.csv'}"), tmp_path / "t", progress=False).run()
    toml = tmp_path / "t" / "config.toml"
    toml.write_text(toml.read_text().replace(f"csv:{new / 'x.csv'}", f"npz:{tmp_path / 'x.npz'}"))
    with pytest.raises(ValueError, match=r"^`data.source` must match the run being resumed"):
        Trainer(None, tmp_path / "t", resume=True, progress=False).run()


def test_resume_refuses_other_data_at_the_path_config_toml_points_at(tmp_path):
    """A moved path is followed, other data are not: a config.toml pointed at another file of
    the same name (or a file rewritten in place) resumed the run silently on it, its first epochs
    trained on one dataset and the rest on another, final.json naming the second."""
    rng = np.random.default_rng(0)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    for folder in ("v1", "v2"):
        x = rng.normal(size=(120, 3))
        lines = ["a,b,c,label"] + [f"{a:.5f},{b:.5f},{c:.5f},{int(a > 0)}" for a, b, c in x]
        (tmp_path / folder / "x.csv").write_text("\n".join(lines) + "\n")
    base = {**GAUSS, "data.options": {}, "train.epochs": 3}
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(
            cfg(base, data__source=f"csv:{tmp_path / 'v1' / 'x.csv'}"), out, progress=False
        ).run()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    toml = out / "config.toml"
    toml.write_text(toml.read_text().replace(str(tmp_path / "v1"), str(tmp_path / "v2")))
    with pytest.raises(
        ValueError, match=r"^`data.source` must hold the data the run being resumed in .* was trained on"
    ):
        Trainer(None, out, resume=True, progress=False).run()
    assert (out / "checkpoint.pt").read_bytes() == before["checkpoint.pt"]
    assert not (out / "final.json").exists()


def _csv(path, x, labels) -> None:
    lines = ["a,b,c,label"] + [
        f"{a:.5f},{b:.5f},{c:.5f},{int(lab)}" for (a, b, c), lab in zip(x, labels, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("changed", ["train labels", "test file"])
def test_resume_refuses_data_whose_labels_changed_in_place(tmp_path, changed):
    """Same features, so the same normalisation, but other labels: a training file relabelled in
    place, or the csv's separate test file (``data.options.test``) rewritten, resumed silently
    when only the class count and the feature means and stds were compared. The checkpoint's
    data fingerprint (every split's samples and labels) refuses both."""
    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(120, 3)), rng.normal(size=(40, 3))
    train, test = tmp_path / "x.csv", tmp_path / "t.csv"
    _csv(train, x, x[:, 0] > 0)
    _csv(test, x_test, x_test[:, 0] > 0)
    base = {**GAUSS, "data.options": {"test": str(test)}, "train.epochs": 3}
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(cfg(base, data__source=f"csv:{train}"), out, progress=False).run()
    before = (out / "checkpoint.pt").read_bytes()
    if changed == "train labels":
        _csv(train, x, x[:, 1] > 0)
    else:
        _csv(test, x_test, x_test[:, 1] > 0)
    with pytest.raises(
        ValueError, match=r"^`data.source` must hold the data the run being resumed in .* was trained on"
    ):
        Trainer(None, out, resume=True, progress=False).run()
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not (out / "final.json").exists()


def test_resume_of_a_checkpoint_without_a_fingerprint(tmp_path):
    """An earlier cegeo's checkpoint (no data_fingerprint) resumes, checked on the rest."""
    config = cfg(GAUSS, train__epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(config, tmp_path / "r", progress=False).run()
    ck = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert isinstance(ck.pop("data_fingerprint"), str)
    torch.save(ck, tmp_path / "r" / "checkpoint.pt")
    Trainer(None, tmp_path / "r", resume=True, progress=False).run()
    _assert_resumed_equals_straight(config, tmp_path / "r", tmp_path / "s")


def test_resume_of_a_finished_run_does_nothing(digits_run):
    _, final, out = digits_run
    before = (out / "checkpoint.pt").stat().st_mtime_ns
    again = Trainer(None, out, resume=True, progress=False)
    assert again.action == "finished"
    assert again.run() == final
    assert (out / "checkpoint.pt").stat().st_mtime_ns == before


# ------------------------------------------------------------------------------------ run folder rules


def test_run_folder_rules(tmp_path, digits_run):
    _, _, finished = digits_run
    config = cfg(GAUSS, train__epochs=1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"which holds 'notes\.txt'"):
        prepare_run_folder(tmp_path / "other", config)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="got the file"):
        prepare_run_folder(tmp_path / "file", config)
    with pytest.raises(ValueError, match=r"holds a finished run \(pass --force"):
        prepare_run_folder(finished, config)
    with pytest.raises(ValueError, match="must match the run being resumed"):
        prepare_run_folder(finished, config, resume=True)
    with pytest.raises(ValueError, match="holds no run to resume"):
        prepare_run_folder(tmp_path / "empty", None, resume=True)
    assert prepare_run_folder(tmp_path / "new", config)[0] == "new"
    assert prepare_run_folder(tmp_path / "new2", config, resume=True)[0] == "new"  # nothing to resume yet
    # an unfinished run needs --resume or --force
    run = tmp_path / "unfinished"
    _CrashAfterProbe.crash_epoch = 1
    try:
        with pytest.raises(KeyboardInterrupt):
            _CrashAfterProbe(cfg(GAUSS, train__epochs=2), run, progress=False).run()
    finally:
        _CrashAfterProbe.crash_epoch = 2
    # an exception before the first checkpoint leaves nothing behind ...
    assert not run.exists() or list(run.iterdir()) == []
    # ... but a SIGKILL does: config.toml and a metrics line, no checkpoint
    from cegeo._io import to_toml
    from cegeo.config import to_dict

    run.mkdir(exist_ok=True)
    written = {**to_dict(cfg(GAUSS, train__epochs=2)), "provenance": {"cegeo": "0"}}
    (run / "config.toml").write_text(to_toml(written))
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(ValueError, match="an unfinished run"):
        prepare_run_folder(run, cfg(GAUSS, train__epochs=2))
    # the run died before its first checkpoint: resume starts over
    assert prepare_run_folder(run, cfg(GAUSS, train__epochs=2), resume=True)[0] == "new"
    assert (run / "metrics.jsonl").exists()  # removed by the trainer once its setup succeeded
    # runtime settings may change on resume; force overwrites
    action, resumed = prepare_run_folder(
        finished, override(load_run_config(finished / "config.toml"), {"runtime.threads": 2}), resume=True
    )
    assert action == "finished" and resumed.runtime.threads == 2
    assert prepare_run_folder(run, config, force=True)[0] == "new"


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="must be a cegeo checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")


# ------------------------------------------------------------------------------------ samplers, DRW


@pytest.mark.parametrize("sampler", ["none", "class_balanced", "sqrt"])
def test_samplers_draw_the_right_class_frequencies(sampler):
    t = Trainer(
        cfg(GAUSS, train__sampler=sampler, data__imbalance="step:R=10,rho=0.5"), progress=False
    ).setup()
    counts = t.counts
    y = t.y["train"]
    epochs = 300
    drawn = torch.cat([y[t.epoch_order()] for _ in range(epochs)])
    freq = np.bincount(drawn.numpy(), minlength=4) / drawn.numel()
    q = sampling_probabilities(counts, sampler)
    n = drawn.numel()
    assert np.all(np.abs(freq - q) < 5 * np.sqrt(q * (1 - q) / n) + 1e-12), (freq, q)
    if sampler == "none":
        order = t.epoch_order()
        assert torch.equal(order.sort().values, torch.arange(t.n_train))
    else:  # within a class, every sample is drawn about equally often
        idx = torch.cat([t.epoch_order() for _ in range(epochs)])
        per_sample = np.bincount(idx.numpy(), minlength=t.n_train)
        minority = np.flatnonzero(t.splits.y_train == 3)
        expect = q[3] / counts[3] * idx.numel()
        assert np.all(np.abs(per_sample[minority] - expect) < 6 * np.sqrt(expect))


def test_sampling_probabilities_values():
    np.testing.assert_allclose(sampling_probabilities([90, 10], "none"), [0.9, 0.1])
    np.testing.assert_allclose(sampling_probabilities([90, 10], "class_balanced"), [0.5, 0.5])
    np.testing.assert_allclose(sampling_probabilities([9, 1], "sqrt"), [0.75, 0.25])
    with pytest.raises(ValueError, match="`sampler` must be one of"):
        sampling_probabilities([9, 1], "random")


def test_deferred_reweighting_switches_at_the_epoch():
    plain = Trainer(cfg(GAUSS, train__epochs=4), progress=False)
    drw = Trainer(cfg(GAUSS, train__epochs=4, train__drw_epoch=2), progress=False)
    plain.run()
    drw.run()
    assert [r["reweighted"] for r in drw.records] == [False, False, True, True]
    assert not any(r["reweighted"] for r in plain.records)
    # identical until the switch, different after it
    assert [r["train_loss"] for r in drw.records[:2]] == [r["train_loss"] for r in plain.records[:2]]
    assert drw.records[2]["train_loss"] != plain.records[2]["train_loss"]
    weights = drw._loss_for(2).omega.numpy()
    np.testing.assert_allclose(weights, class_balanced_weights(drw.counts, 0.9999))
    assert drw._loss_for(1).omega is None


# ------------------------------------------------------------------------------------ pieces


def test_lr_schedule_matches_torch_multistep():
    from cegeo.config import OptimConfig

    opt = OptimConfig(lr=0.1, milestones=(3, 5), lr_decay=0.5)
    param = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(sgd, milestones=[3, 5], gamma=0.5)
    steps = 4
    for epoch in range(7):
        for s in range(steps):
            assert lr_at(epoch * steps + s, steps, 7, opt) == pytest.approx(sgd.param_groups[0]["lr"])
        sgd.step()
        sched.step()
    cos = OptimConfig(lr=0.2, schedule="cosine", warmup_epochs=2)
    values = [lr_at(s, 5, 10, cos) for s in range(50)]
    assert values[0] == pytest.approx(0.02) and values[9] == pytest.approx(0.2)
    assert values[10] == pytest.approx(0.2) and values[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
    assert lr_at(17, 5, 10, OptimConfig(lr=0.3, schedule="constant")) == 0.3


def _close(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    elif a is None or b is None or isinstance(a, int):
        assert a == b, (where, a, b)
    elif np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), (where, a, b)


def test_augment_batch_matches_per_sample_crops(rng):
    x = torch.from_numpy(rng.integers(0, 256, size=(16, 3, 5, 7), dtype=np.uint8))
    pad = 2
    shifts = torch.from_numpy(rng.integers(0, 2 * pad + 1, size=(16, 2)))
    flips = torch.from_numpy(rng.random(16) < 0.5)
    got = augment_batch(x, shifts, flips, pad).numpy()
    for i in range(16):
        p = np.pad(x[i].numpy(), ((0, 0), (pad, pad), (pad, pad)))
        dy, dx = shifts[i].tolist()
        want = p[:, dy : dy + 5, dx : dx + 7]
        if flips[i]:
            want = want[:, :, ::-1]
        np.testing.assert_array_equal(got[i], want)
    assert torch.equal(augment_batch(x, torch.full((16, 2), pad), None, pad), x)


def test_cuda_extras_are_off_on_cpu_by_default():
    t = Trainer(
        cfg(DIGITS, model__name="cnn", model__options={"width": 8}, train__epochs=1), progress=False
    ).setup()
    assert t.device.type == "cpu"
    assert (t.amp, t.compile) == (False, False)
    assert t.train_model is t.model
    # channels_last is a layout: on for conv nets on any device, off for the MLP or when asked
    assert t.channels_last and t.inputs(t.x["train"][:4]).is_contiguous(memory_format=torch.channels_last)
    assert not Trainer(cfg(DIGITS, train__epochs=1), progress=False).setup().channels_last
    off = cfg(DIGITS, model__name="cnn", model__options={"width": 8}, runtime__channels_last="off")
    assert not Trainer(off, progress=False).setup().channels_last


def test_a_torch_whose_compile_cannot_run_here_trains_eager_or_says_so(monkeypatch):
    """torch 2.2/2.3 on Python 3.12 (2.5 on 3.13) raise in torch.compile: ``auto`` (on for CUDA)
    trains eager there, and ``on`` is a one-line error instead of a traceback."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    monkeypatch.setattr("cegeo.train._switch", lambda value, device: value != "off")  # auto: as on CUDA
    assert Trainer(cfg(GAUSS, train__epochs=1), progress=False).setup().compile is False
    with pytest.raises(
        ValueError, match=r"`runtime.compile` must be 'auto' or 'off' with torch .* on Python 3\.\d+"
    ):
        Trainer(cfg(GAUSS, train__epochs=1, runtime__compile="on"), progress=False).setup()


def test_bf16_autocast_can_be_switched_on_on_cpu():
    t = Trainer(cfg(GAUSS, train__epochs=1, runtime__amp="on"), progress=False)
    final = t.run()
    assert final["amp"] is True and final["compile"] is False
    assert np.isfinite(final["train"]["balanced_accuracy"])


def test_in_memory_run_with_given_splits_and_tabular_model():
    from cegeo.data import load_dataset, make_splits

    ds = load_dataset("gaussian", k=3, d=4, n_per_class=30, n_test_per_class=5)
    splits = make_splits(ds, "longtail:R=3", seed=1)
    t = Trainer(cfg(GAUSS, train__epochs=2), splits=splits, progress=False)
    final = t.run()
    assert final["class_counts"] == splits.class_counts.tolist()
    assert t.out is None and len(t.records) == 2


@pytest.mark.parametrize(
    ("updates", "match"),
    [
        ({"train.pad_crop": 2}, "augmentation is for images"),
        (
            {"data.normal_class": 9},
            r"`data.normal_class` must be a class name or index \(0, 1, 2, 3\); got 9",
        ),
        ({"loss.name": "ldam"}, "`model.options.cosine_classifier` must be true for loss 'ldam'"),
        (
            {"data.imbalance": "none", "data.options": {"k": 4, "d": 6, "n_per_class": 1}},
            "too few for a validation split",
        ),
    ],
)
def test_setup_errors(updates, match):
    with pytest.raises(ValueError, match=match):
        Trainer(override(cfg(GAUSS), updates), progress=False).setup()


@pytest.mark.cuda
def test_cuda_run_uses_amp_channels_last_and_compile(tmp_path):
    t = Trainer(
        cfg(DIGITS, model__name="cnn", model__options={"width": 16}, train__epochs=2, runtime__device="cuda"),
        tmp_path / "cuda",
        progress=False,
    )
    final = t.run()
    assert (final["amp"], final["compile"], final["channels_last"]) == (True, True, True)
    assert final["compile_mode"] == "default"
    assert np.isfinite(final["geometry"]["nc1"])


@pytest.mark.parametrize("sampler", ["class_balanced", "sqrt"])
@pytest.mark.parametrize("loss, hyper", [("wce", {}), ("ldt", {"gamma": 0.5})])
def test_probe_theory_is_at_the_dataset_counts_whatever_the_sampler(tmp_path, sampler, loss, hyper):
    """A sampler weighs each sample's loss by how often it is drawn, and loss weights drop out of
    the max-margin limit (THEORY.md §4; wCE's too): the reference geometry is §4.1 at the dataset's
    counts, not at the sampler's expected draws. Checked against the formula written out here:
    M* = (I - 11^T/k) Dl^-1 (Dc = 1), G_W = (M N M^T)^1/2."""

    def psd_sqrt(A):
        vals, vecs = np.linalg.eigh((A + A.T) / 2)
        return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T

    config = cfg(GAUSS, loss__name=loss, loss__hyper=hyper, train__epochs=1, train__sampler=sampler)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    final = trainer.run()
    counts = final["class_counts"]
    n = np.asarray(counts, dtype=np.float64)
    assert np.unique(n).size > 1  # imbalanced: the sampler's draws differ from the counts
    q = np.ones_like(n) if sampler == "class_balanced" else np.sqrt(n)
    draws = n.sum() * q / q.sum()  # what the probes used to predict for
    delta_label = trainer.loss_base.delta_label
    dl = np.ones_like(n) if delta_label is None else delta_label.double().numpy()  # from the true counts
    M = (np.eye(n.size) - 1.0 / n.size) / dl[None, :]
    G_W = psd_sqrt((M * n[None, :]) @ M.T)
    G_W_draws = psd_sqrt((M * draws[None, :]) @ M.T)
    theory = final["theory"]
    assert theory["class_counts"] == [float(c) for c in counts]  # exactly, as in final.json
    w = np.asarray(theory["w_norms"])
    got = w[:, None] * np.asarray(theory["cos_W"]) * w[None, :]

    def unit(G):
        return G / np.linalg.norm(G)

    np.testing.assert_allclose(unit(got), unit(G_W), atol=1e-7)
    assert np.abs(unit(got) - unit(G_W_draws)).max() > 1e-3  # the sampler's draws would differ


def test_a_run_folder_is_trained_by_one_process_at_a_time(tmp_path):
    """Another process holding the folder's lock (a second sweep on the same --out, a re-run while
    old workers still train): a one-line error naming `out`, and nothing in the folder changes.
    The lock file is gone once a run ends."""
    from cegeo.sweep import run_one
    from cegeo.train import RunBusyError, _lock_run_folder

    config = cfg(GAUSS, train__epochs=2)
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(cfg(GAUSS, train__epochs=3), out, progress=False).run()
    held = _lock_run_folder(out)  # as another process would hold it
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    try:
        with pytest.raises(
            RunBusyError, match=r"^`out` must be a run folder no other process is training; got .*r, which"
        ):
            Trainer(None, out, resume=True, progress=False).run()
        with pytest.raises(RunBusyError):
            Trainer(config, out, force=True, progress=False).run()
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        status = run_one(cfg(GAUSS, train__epochs=3), out)
        assert status["status"] == "busy" and not (out / "error.json").exists()
        # a new run in a new folder someone else is starting
        (tmp_path / "n").mkdir()
        other = _lock_run_folder(tmp_path / "n")
        with pytest.raises(RunBusyError):
            Trainer(config, tmp_path / "n", progress=False).run()
        assert [p.name for p in (tmp_path / "n").iterdir()] == [".lock"]
        other.close()
    finally:
        held.close()
    (out / ".lock").unlink()
    Trainer(None, out, resume=True, progress=False).run()
    assert (out / "final.json").is_file() and not (out / ".lock").exists()


def test_a_file_system_without_locks_trains_unlocked(tmp_path, monkeypatch):
    """flock failing with ENOLCK (some network mounts) is not 'busy': the run trains, warned."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match=r"the run folder cannot be locked .*No locks available"):
        Trainer(cfg(GAUSS, train__epochs=1), tmp_path / "r", progress=False).run()
    assert (tmp_path / "r" / "final.json").is_file() and not (tmp_path / "r" / ".lock").exists()


def test_the_folder_is_looked_at_again_under_the_lock(tmp_path):
    """What to do is decided before the lock (in the constructor); if another process trains in
    the folder before this one takes the lock (finishes it, or writes a checkpoint), this one
    refuses instead of clearing that work."""
    from cegeo.train import RunBusyError

    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(cfg(GAUSS, train__epochs=3), out, progress=False).run()
    late = Trainer(None, out, resume=True, progress=False)  # decides: resume from epoch 1
    Trainer(None, out, resume=True, progress=False).run()  # meanwhile another one finishes it
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RunBusyError, match=r"where another process has trained since: run the command again"):
        late.run()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a new run decided on an empty folder where someone has started one since
    fresh = Trainer(cfg(GAUSS, train__epochs=1), tmp_path / "n", progress=False)
    Trainer(cfg(GAUSS, train__epochs=1), tmp_path / "n", progress=False).run()
    with pytest.raises(RunBusyError):
        fresh.run()
    assert (tmp_path / "n" / "final.json").is_file()


def test_training_on_splits_in_memory_checks_them_and_names_their_source():
    """Trainer(splits=) / train(splits=) take arrays already in memory: checked like
    make_splits' own (a wrong class_counts trained silently, a label out of range crashed), and
    final.json names their source and profile, not the config's."""
    import dataclasses

    from cegeo.data import Dataset, make_splits
    from cegeo.train import train

    y = np.repeat(np.arange(3), 60)
    X = np.random.default_rng(0).normal(size=(180, 6)).astype(np.float32)
    sp = make_splits(Dataset("mine", "tabular", X, y, None, None, 3, ("a", "b", "c")), "counts:40,20,5")
    config = cfg({"model.options": {"width": 8, "depth": 1}}, train__epochs=1)
    final = train(config, None, progress=False, splits=sp)
    assert (final["data"], final["imbalance"]) == ("mine", "counts:40,20,5")
    with pytest.raises(
        ValueError,
        match=r"`class_counts` must be the training labels' counts \[36, 18, 4\]; got \[4, 18, 36\]",
    ):
        dataclasses.replace(sp, class_counts=sp.class_counts[::-1].copy())
    with pytest.raises(ValueError, match=r"`y_train` must be labels in 0..2; got 3"):
        dataclasses.replace(sp, y_train=sp.y_train + 1)
    with pytest.raises(
        ValueError, match=r"`splits` must be a cegeo.data.Splits \(e.g. from make_splits\); got 'Dataset'"
    ):
        Trainer(
            config, splits=Dataset("mine", "tabular", X, y, None, None, 3, ("a", "b", "c")), progress=False
        )


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_the_folder_as_found(tmp_path):
    """A checkpoint write that fails (here: over RLIMIT_FSIZE, as a full disk fails) was torch's
    RuntimeError traceback; it is the OSError's one line naming checkpoint.pt, exit status 1."""
    import resource

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # the checkpoint: ~245 kB

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cegeo", "train", "--model-option", "width=64", "--epochs", "2"]
    cmd += ["--threads", "1", "--no-progress", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=small_files, timeout=300)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == f"error: File too large: {out / 'checkpoint.pt'}", r.stderr
    assert list(out.iterdir()) == []  # nothing of the run, no temporary file
