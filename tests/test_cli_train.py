"""``cegeo train``: runs, --config (with overrides), --resume, and one line + exit 2 per bad option."""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from cegeo._io import read_jsonl
from cegeo.config import load_run_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model-option", "width=16", "--model-option", "depth=2", "--threads", "1", "--no-progress"]
GAUSS = ["--data", "gaussian", "--data-option", "k=3", "--data-option", "n_per_class=40", *TINY]


def _idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    """A tiny MNIST-format folder: 10 classes, 28x28, 60 train / 8 test images per class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for prefix, per in (("train", 60), ("t10k", 8)):
        y = np.repeat(np.arange(10), per)
        x = rng.integers(0, 50, size=(y.size, 28, 28))
        for c in range(10):  # a class-specific bright square, so there is something to learn
            x[y == c, 2 * c : 2 * c + 6, 4:10] = 250
        _idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        _idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


def test_train_digits_end_to_end(cli, tmp_path):
    out = tmp_path / "ldt"
    r = cli(
        "train",
        *("--data", "digits", "--imbalance", "step:R=10,rho=0.5", "--model", "mlp", "--loss", "ldt"),
        *("--gamma", "0.5", "--epochs", "2", "--seed", "0", "--out", out, *TINY),
    )
    assert r.code == 0, r.err
    assert "balanced accuracy" in r.out and "minority recall" in r.out and str(out) in r.out
    final = json.loads((out / "final.json").read_text())
    assert final["loss"]["hyper"]["gamma"] == 0.5 and final["imbalance"] == "step:R=10,rho=0.5"
    # the run's config.toml reproduces it exactly (CPU: bitwise)
    again = tmp_path / "again"
    r2 = cli("train", "--config", out / "config.toml", "--out", again, "--no-progress")
    assert r2.code == 0, r2.err
    assert json.loads((again / "final.json").read_text())["test"] == final["test"]
    np.testing.assert_array_equal(
        np.load(out / "classifier.npz")["W"], np.load(again / "classifier.npz")["W"]
    )


def test_experiment_config_with_a_user_data_path(cli, tmp_path, tiny_mnist):
    """experiments/mlp_mnist_step10.toml runs on MNIST-format files given by --data."""
    exp = ROOT / "experiments" / "mlp_mnist_step10.toml"
    cfg = load_run_config(exp)
    assert (cfg.model.options, cfg.optim.milestones, cfg.train.epochs) == (
        {"width": 2048, "depth": 6},
        (116, 232),
        350,
    )
    out = tmp_path / "run"
    r = cli(
        "train",
        *("--config", exp, "--data", f"idx:{tiny_mnist}", "--n-max", "50", "--epochs", "2"),
        *("--milestones", "1", "--model-option", "width=32", "--model-option", "depth=2"),
        *("--out", out, "--no-progress"),
    )
    assert r.code == 0, r.err
    final = json.loads((out / "final.json").read_text())
    assert final["data"] == f"idx:{tiny_mnist}" and final["test"]["n"] == 80
    assert final["class_counts"] == [45] * 5 + [4] * 5  # 50 / 5 per class minus 1/11 for validation
    used = load_run_config(out / "config.toml")
    assert (used.model.options, used.optim.milestones, used.train.epochs) == (
        {"width": 32, "depth": 2},
        (1,),
        2,
    )
    assert used.loss.name == "ldt" and used.loss.hyper == {"gamma": 0.5}  # from the file
    # without --data the file's placeholder path is named as the config key and the option
    r = cli("train", "--config", exp, "--out", tmp_path / "none", "--no-progress")
    assert r.code == 2 and r.err.strip() == (
        "error: `data.source` must be 'idx:DIR' with an existing directory; got 'idx:/path/to/mnist' "
        "(set it with --data NAME:PATH)."
    ), r.err


def test_experiment_configs_parse_and_follow_the_paper():
    for name, model in (("mlp_mnist_step10", "mlp"), ("resnet18_cifar10_step10", "resnet18")):
        cfg = load_run_config(ROOT / "experiments" / f"{name}.toml")
        assert cfg.model.name == model and cfg.data.imbalance == "step:R=10,rho=0.5"
        assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.1, 0.9, 5e-4)
        assert (cfg.train.batch_size, cfg.train.epochs, cfg.optim.milestones) == (128, 350, (116, 232))
        assert (cfg.train.pad_crop, cfg.train.flip) == (0, False)


def test_resume_continues_with_the_folder_config(cli, tmp_path):
    out = tmp_path / "r"
    assert cli("train", *GAUSS, "--epochs", "2", "--out", out).code == 0
    final = json.loads((out / "final.json").read_text())
    (out / "final.json").unlink()  # as if killed after the last checkpoint
    r = cli("train", "--resume", "--out", out, "--no-progress")
    assert r.code == 0, r.err
    assert json.loads((out / "final.json").read_text())["test"] == final["test"]
    assert [x["epoch"] for x in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    r = cli("train", "--resume", "--out", out)
    assert r.code == 0 and "finished already" in r.out
    r = cli("train", *GAUSS, "--epochs", "2", "--out", out, "--force")
    assert r.code == 0, r.err


def test_help_states_the_ratio_convention(cli):
    r = cli("train", "--help")
    assert r.code == 0 and "R = n_max/n_min >= 1" in " ".join(r.out.split())


@pytest.fixture
def finished(cli, tmp_path_factory):
    out = tmp_path_factory.mktemp("done") / "run"
    assert cli("train", *GAUSS, "--epochs", "1", "--out", out).code == 0
    return out


BAD = [
    (["--loss", "focal"], "`--loss` must be a loss name, one of 'ce'"),
    (["--model", "vgg"], "`--model` must be a model name, one of 'mlp'"),
    (["--data", "mnist"], "`--data` must be a dataset name, one of 'digits'"),
    (["--data", "idx:/nonexistent/mnist"], "idx:DIR' with an existing directory"),
    (["--imbalance", "step:R=0.1,rho=0.5"], "`R` must be a number >= 1"),
    (["--imbalance", "steep:R=10"], "`--imbalance` must be"),
    (["--epochs", "0"], "`--epochs` must be an integer >= 1"),
    (["--batch-size", "0"], "`--batch-size` must be an integer >= 1"),
    (["--imbalance", "counts:40,40,1"], "class 2 has 1 sample(s), too few for a validation split"),
    # make_splits' own argument names (n_max, imbalance) were printed instead of the flags
    (["--imbalance", "counts:40,40"], "`--imbalance` must be 3 counts (one per class of gaussian)"),
    (["--imbalance", "longtail:R=100", "--n-max", "20"], "`--n-max` must be a size with n_max / R >= 1"),
    (["--loss", "ldam"], "`--model-option cosine_classifier` must be true for loss 'ldam'"),
    (["--gamma", "0.5"], "loss 'ce' takes no hyperparameters; got unknown hyperparameter(s) gamma"),
    (["--loss", "ldt", "--hyper", "beta=2"], "loss 'ldt' takes gamma, normalize; got unknown"),
    (["--hyper", "gamma"], "`--hyper` must be name=value"),
    (["--model-option", "depth"], "`--model-option` must be name=value"),
    (["--model-option", "colour=red"], "`--model-option` must be options of 'mlp'"),
    (["--data-option", "colour=red"], "`--data-option` must be options of 'gaussian' ('k', 'd', "),
    # sizes beyond any machine overflowed numpy or torch with a traceback
    (
        ["--model-option", "width=9223372036854775808"],
        "`--model-option width` must be an integer in [1, 2,147,483,647]",
    ),
    (
        ["--data-option", "n_per_class=10000000000000000000000000000000"],
        "`--data-option n_per_class` must be an integer in [1, 2,147,483,647]",
    ),
    (
        ["--seed", "9223372036854775807"],
        "`--seed` must be an integer in [0, 2**32 - 1]; got 9223372036854775807.",
    ),
    (["--model-option", "depth=0"], "`--model-option depth` must be an integer >= 1"),
    (["--sampler", "oversample"], "`--sampler` must be one of 'none', 'class_balanced', 'sqrt'"),
    (["--epochs", "3", "--drw-epoch", "3"], "`--drw-epoch` must be an integer in 1..2"),
    (["--milestones", "a,b"], "`--milestones` must be comma-separated epochs"),
    (
        ["--epochs", "3", "--milestones", "5"],
        "`--milestones` must be epochs in 1..2 (train.epochs = 3); got [5] (fewer epochs need "
        "milestones of their own, e.g. --milestones 1,2 or optim.milestones = [1, 2]; [] for none).",
    ),
    (["--epochs", "1", "--milestones", "5"], "`--milestones` must be [] with train.epochs = 1; got [5]."),
    (["--lr", "0"], "`--lr` must be a number > 0"),
    (["--momentum", "1.5"], "`--momentum` must be a number in [0, 1)"),
    (["--schedule", "step"], "`--schedule` must be one of"),
    (["--pad-crop", "2"], "augmentation is for images"),
    (["--device", "tpu"], "`--device` must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (["--amp", "maybe"], "`--amp` must be one of 'auto', 'on', 'off'"),
    (
        ["--compile-mode", "reduce-overhead"],
        "`--compile-mode` must be one of 'default', 'max-autotune-no-cudagraphs'",
    ),
    (["--cuda-graph", "maybe"], "`--cuda-graph` must be one of 'auto', 'on', 'off'"),
    (["--val-fraction", "1.5"], "`--val-fraction` must be a number in (0, 1)"),
    (["--normal-class", "7"], "`--normal-class` must be a class name or index (0, 1, 2); got '7'"),
    (["--normal-class", "ok"], "`--normal-class` must be a class name or index (0, 1, 2); got 'ok'"),
    (["--config", "/nonexistent/run.toml"], "file not found"),
    # a hyperparameter given twice was silently taken from --gamma
    (["--loss", "ldt", "--gamma", "0.5", "--hyper", "gamma=1"], "give gamma once: --gamma or --hyper gamma"),
    (["--loss", "la", "--tau", "1", "--hyper", "tau=2"], "give tau once: --tau or --hyper tau"),
]


@pytest.mark.parametrize(("args", "match"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_exit_2_with_one_line(cli, tmp_path, args, match):
    base = TINY if "--data" in args else GAUSS
    r = cli("train", *base, *args, "--out", tmp_path / "x")
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert match in r.err, r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "x").exists()  # nothing written for a run that never started


def test_cuda_device_without_cuda_is_an_error(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli("train", *GAUSS, "--device", "cuda", "--out", tmp_path / "x")
    assert r.code == 2 and "`--device` must be 'cpu' or 'auto' on a machine without CUDA" in r.err


def test_cuda_graph_on_a_cpu_is_an_error(cli, tmp_path):
    r = cli("train", *GAUSS, "--device", "cpu", "--cuda-graph", "on", "--out", tmp_path / "x")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert "`--cuda-graph` must be 'auto' or 'off' on a CPU (CUDA graphs need a CUDA device)" in r.err
    assert not (tmp_path / "x").exists()


def test_bad_config_file(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoch = 3\n")
    r = cli("train", "--config", bad, "--out", tmp_path / "x")
    assert r.code == 2 and "unknown key `train.epoch`" in r.err
    bad.write_text("[train\n")
    r = cli("train", "--config", bad, "--out", tmp_path / "x")
    assert r.code == 2 and "must be valid TOML" in r.err


def test_errors_name_the_flag_or_the_config_key_that_set_the_value(cli, tmp_path):
    """A value the user typed as a flag is named as that flag; one read from --config keeps its
    TOML key (the user edits the file); --hyper and --data-option name the option."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 0\n")
    r = cli("train", "--config", cfg, "--out", tmp_path / "x")
    assert r.code == 2 and r.err.startswith("error: `train.epochs` must be an integer >= 1"), r.err
    cfg.write_text("[train]\nepochs = 2\n")
    r = cli("train", "--config", cfg, "--lr", "0", "--out", tmp_path / "x")
    assert r.code == 2 and r.err.startswith("error: `--lr` must be a number > 0"), r.err
    r = cli("train", *GAUSS, "--loss", "ldam", "--hyper", "max_margin=inf", "--out", tmp_path / "x")
    assert r.code == 2 and r.err.startswith("error: `--hyper max_margin` must be a finite"), r.err
    r = cli("train", *GAUSS, "--data-option", "d=0", "--out", tmp_path / "x")
    assert r.code == 2 and r.err.startswith("error: `--data-option d` must be an integer >= 1"), r.err
    r = cli("train", *GAUSS, "--loss", "ldam", "--out", tmp_path / "x")  # set by no flag, yet one fixes it
    assert r.err.startswith("error: `--model-option cosine_classifier` must be true for loss 'ldam'"), r.err
    assert not (tmp_path / "x").exists()


def test_out_holding_a_run(cli, tmp_path, finished):
    r = cli("train", *GAUSS, "--epochs", "2", "--out", finished)
    assert r.code == 2 and "holds a finished run (pass --force" in r.err
    assert r.err.startswith("error: `--out` must be "), r.err  # the flag, not the Python parameter
    r = cli("train", *GAUSS, "--epochs", "2", "--out", finished, "--resume")
    assert r.code == 2 and "`--epochs` must match the run being resumed" in r.err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    r = cli("train", *GAUSS, "--out", other)
    assert r.code == 2 and "which holds 'thesis.tex'" in r.err
    assert (other / "thesis.tex").read_text() == "x"


def test_diverging_run_is_one_line_naming_the_learning_rate(cli, tmp_path):
    """lr = 1e30 makes the run diverge: the probes do not crash on overflowed features (it
    used to end in a LinAlgError traceback), there is no final.json, and the checkpoint is one
    from before the epoch that went non-finite."""
    from cegeo.train import load_checkpoint

    out = tmp_path / "x"
    r = cli("train", *GAUSS, "--lr", "1e30", "--epochs", "4", "--out", out)
    assert r.code == 2, (r.out, r.err)
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    m = re.match(
        r"error: `--lr` must be a learning rate at which training stays finite \(the "
        r"(train loss became (nan|inf)|weights became non-finite) in epoch (\d+); "
        r"(the last checkpoint is from before it|nothing of the run was kept)\)",
        r.err,
    )
    assert m, r.err
    assert not (out / "final.json").exists()
    bad_epoch = int(m.group(3))
    if (out / "checkpoint.pt").exists():
        assert load_checkpoint(out / "checkpoint.pt")["epoch"] < bad_epoch
    else:
        assert bad_epoch == 1 and m.group(4) == "nothing of the run was kept"
    # a weight decay of order 1/lr is named as the cause, not the learning rate
    r = cli("train", *GAUSS, "--weight-decay", "1e30", "--epochs", "2", "--out", tmp_path / "wd")
    assert r.code == 2 and r.err.startswith(
        "error: `--weight-decay` must be a weight decay with lr * weight_decay < 1 ("
    ), r.err


@pytest.mark.parametrize(
    "option, value", [("--lr", "1e39"), ("--weight-decay", "1e300"), ("--lr-decay", "1e300")]
)
def test_optimiser_numbers_beyond_float32_are_one_line(cli, tmp_path, option, value):
    """They were a torch RuntimeError traceback in the first training step."""
    out = tmp_path / "x"
    r = cli("train", *GAUSS, "--epochs", "3", "--milestones", "1,2", option, value, "--out", out)
    assert r.code == 2 and r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    assert r.err.startswith(f"error: `{option}` must be "), r.err
    assert not out.exists()


def test_force_with_an_invalid_config_keeps_the_old_run(cli, tmp_path):
    """--force replaces a run only once the new one's data, model and loss are built: a bad
    profile leaves the finished run untouched (it used to be deleted first)."""
    out = tmp_path / "keep"
    assert cli("train", *GAUSS, "--epochs", "1", "--out", out).code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = cli("train", *GAUSS, "--imbalance", "counts:1,1,1000", "--epochs", "1", "--out", out, "--force")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_force_then_divergence_in_the_first_epoch_says_the_old_run_is_gone(cli, tmp_path):
    """--force removes the old run once the new one is built; a new run that diverges in its
    first epoch leaves neither, and its error line says so (it used to say only "nothing of the
    run was kept", as if the folder were as it was found)."""
    digits = ["--data", "digits", "--imbalance", "step:R=10,rho=0.5", "--epochs", "1", *TINY]
    out = tmp_path / "old"
    assert cli("train", *digits, "--out", out).code == 0
    r = cli("train", *digits, "--lr", "1e8", "--out", out, "--force")  # nan in epoch 1
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert (
        "in epoch 1; nothing of the run was kept; the run it replaced was removed before training)" in r.err
    )
    assert list(out.iterdir()) == []
    # a first run in a new folder says nothing about a replaced run
    r = cli("train", *digits, "--lr", "1e8", "--out", tmp_path / "new")
    assert r.code == 2 and "in epoch 1; nothing of the run was kept); got" in r.err, r.err


def test_batch_size_one_with_batchnorm_is_an_error_and_writes_nothing(cli, tmp_path):
    out = tmp_path / "bs1"
    r = cli("train", *GAUSS, "--batch-size", "1", "--epochs", "1", "--out", out)
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert (
        "`--batch-size` must be at least 2 (the model's BatchNorm needs 2 samples per batch); got 1" in r.err
    )
    assert not out.exists() or list(out.iterdir()) == []
    assert cli("train", *GAUSS, "--batch-size", "2", "--epochs", "1", "--out", out).code == 0
    # without BatchNorm one sample is a batch
    r = cli(
        "train",
        *GAUSS,
        "--model-option",
        "batchnorm=false",
        "--batch-size",
        "1",
        "--epochs",
        "1",
        "--out",
        tmp_path / "nobn",
    )
    assert r.code == 0, r.err


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(cli, tmp_path, monkeypatch):
    """A failure in epoch 1 (here: an injected error in the first step) leaves no config.toml
    that would make the next attempt ask for --resume or --force."""
    from cegeo import train as train_mod

    def boom(self, *args, **kwargs):
        raise RuntimeError("injected failure in the first step")

    monkeypatch.setattr(train_mod.Trainer, "_train_epoch", boom)
    out = tmp_path / "x"
    with pytest.raises(RuntimeError, match="injected"):
        cli("train", *GAUSS, "--epochs", "2", "--out", out)
    assert not out.exists() or list(out.iterdir()) == []
    monkeypatch.undo()
    assert cli("train", *GAUSS, "--epochs", "1", "--out", out).code == 0


def test_normal_class_by_name_is_recorded_and_is_the_default_downstream(cli, tmp_path):
    """Text labels sort alphabetically ("ok" is class 1 here): --normal-class takes the name;
    final.json records names and the index; evaluate and posthoc use it without being told."""
    rng = np.random.default_rng(0)
    y = np.array(["ok"] * 120 + ["dent"] * 30 + ["crack"] * 30)
    x = rng.normal(size=(y.size, 3)) + (y == "dent")[:, None] * 4.0 - (y == "crack")[:, None] * 4.0
    path = tmp_path / "parts.csv"
    path.write_text(
        "a,b,c,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},{lab}\n" for r, lab in zip(x, y, strict=True))
    )
    out = tmp_path / "run"
    r = cli("train", "--data", f"csv:{path}", "--normal-class", "ok", "--epochs", "10", *TINY, "--out", out)
    assert r.code == 0, r.err
    final = json.loads((out / "final.json").read_text())
    assert final["class_names"] == ["crack", "dent", "ok"] and final["normal_class"] == 2
    assert final["test"]["false_alarm"] is not None
    r = cli("evaluate", out, "--json")
    report = json.loads(r.out)
    assert report["normal_class"] == 2 and report["false_alarm"] == final["test"]["false_alarm"]
    r = cli("evaluate", out)
    assert "false-alarm rate (normal class 2 (ok))" in " ".join(r.out.split())
    r = cli("posthoc", out, "-m", "operating_point", "--max-false-alarm", "0.25", "--no-write", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["results"]["operating_point"]["normal_class"] == 2
    # an index works too, and overrides the run's own
    r = cli("evaluate", out, "--normal-class", "0", "--json")
    assert json.loads(r.out)["normal_class"] == 0


def test_class_index_prefers_names_then_indices():
    from cegeo.data import class_index

    assert class_index("c", "ok", ("crack", "ok")) == 1
    assert class_index("c", "1", ("1", "2", "3")) == 0  # the class named 1, not index 1
    assert class_index("c", "2", ("a", "b", "c")) == 2 and class_index("c", 0, ("a", "b")) == 0
    for bad in ("x", "5", -1, True, 2.0):
        with pytest.raises(ValueError, match=r"`c` must be a class name or index \(0 = a, 1 = b\)"):
            class_index("c", bad, ("a", "b"))


def test_force_never_clears_a_folder_cegeo_did_not_make(cli, tmp_path):
    """A user's own config.toml (no [provenance] from cegeo train) is not a run to replace."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.toml").write_text("[train]\nepochs = 1\n")
    (out / "metrics.jsonl").write_text("my own log\n")
    r = cli("train", *GAUSS, "--epochs", "1", "--out", out, "--force")
    assert r.code == 2 and "must be a cegeo run folder to be replaced with --force" in r.err, r.err
    assert (out / "metrics.jsonl").read_text() == "my own log\n"


@pytest.mark.parametrize("force", [False, True])
def test_user_files_named_like_run_files_are_never_overwritten(cli, tmp_path, force):
    """A folder without a cegeo config.toml holds no run: its metrics.jsonl or final.json are the
    user's (were overwritten by a new run without --force before)."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"my": "precious"}\n')
    (out / "final.json").write_text("{}")
    r = cli("train", *GAUSS, "--epochs", "1", "--out", out, *(["--force"] if force else []))
    assert r.code == 2 and "must be a new or empty folder, or a cegeo run folder" in r.err, r.err
    assert (out / "metrics.jsonl").read_text() == '{"my": "precious"}\n'
    assert sorted(p.name for p in out.iterdir()) == ["final.json", "metrics.jsonl"]


def test_names_from_the_data_are_printed_not_read_as_markup(cli, tmp_path):
    """Class names are user data: rich markup in them ("[/b]", "[link=...]") prints as text."""
    rng = np.random.default_rng(0)
    y = np.array(["[/b]ok"] * 60 + ["[link=http://x]dent[/link]"] * 20)
    x = rng.normal(size=(y.size, 2)) + (y != "[/b]ok")[:, None] * 3.0
    path = tmp_path / "m.csv"
    path.write_text("a,b,label\n" + "".join(f"{r[0]},{r[1]},{lab}\n" for r, lab in zip(x, y, strict=True)))
    r = cli("data", f"csv:{path}")  # used to end in a rich MarkupError traceback
    assert r.code == 0 and r.err == "", r.err
    out = tmp_path / "run"
    r = cli(
        "train", "--data", f"csv:{path}", "--normal-class", "[/b]ok", "--epochs", "1", *TINY, "--out", out
    )
    assert r.code == 0, r.err
    r = cli("evaluate", out)
    assert r.code == 0 and "[/b]ok" in r.out, r.err


def test_relative_data_path_is_recorded_absolute(cli, tmp_path, monkeypatch):
    """config.toml reproduces a run from any directory: a relative --data path is made absolute."""
    rng = np.random.default_rng(0)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    np.savez(data_dir / "d.npz", x_train=rng.normal(size=(60, 3)), y_train=np.repeat([0, 1, 2], 20))
    monkeypatch.chdir(data_dir)
    out = tmp_path / "run"
    assert cli("train", "--data", "npz:d.npz", "--epochs", "1", *TINY, "--out", out).code == 0
    assert f'source = "npz:{data_dir / "d.npz"}"' in (out / "config.toml").read_text()
    monkeypatch.chdir(tmp_path)
    assert cli("train", "--config", out / "config.toml", "--out", tmp_path / "again").code == 0
    # resuming with the relative spelling from the data folder is the same run
    monkeypatch.chdir(data_dir)
    r = cli("train", "--data", "npz:d.npz", "--epochs", "1", *TINY, "--out", out, "--resume")
    assert r.code == 0 and "finished already" in r.out, r.err


def test_relative_csv_test_path_is_recorded_absolute(cli, tmp_path, monkeypatch):
    """A file named in a data option (csv's `test=`) is recorded absolute like the source path."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train.csv", 20), ("test.csv", 6)):
        rows = ["a,b,label"] + [f"{rng.normal():.3f},{rng.normal():.3f},{i % 2}" for i in range(n)]
        (data_dir / name).write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(data_dir)
    out = tmp_path / "run"
    r = cli(
        "train",
        "--data",
        "csv:train.csv",
        "--data-option",
        "test=test.csv",
        "--epochs",
        "1",
        *TINY,
        "--out",
        out,
    )
    assert r.code == 0, r.err
    text = (out / "config.toml").read_text()
    assert f'test = "{data_dir / "test.csv"}"' in text
    monkeypatch.chdir(tmp_path)
    r = cli("train", "--config", out / "config.toml", "--out", tmp_path / "again")
    assert r.code == 0, r.err


def test_resume_with_normal_class_typed_on_the_command_line(cli, tmp_path):
    """A run whose config holds normal_class = 0 (a sweep's TOML) resumes with --normal-class 0
    (text on a command line); another class is still a different run."""
    out = tmp_path / "run"
    assert cli("train", *GAUSS, "--epochs", "1", "--out", out).code == 0
    text = (out / "config.toml").read_text()
    assert "normal_class" not in text
    cfg = tmp_path / "c.toml"
    cfg.write_text(text.replace("[data]\n", "[data]\nnormal_class = 0\n", 1).split("[provenance]")[0])
    out2 = tmp_path / "run2"
    assert cli("train", "--config", cfg, "--out", out2, "--no-progress").code == 0
    assert "normal_class = 0\n" in (out2 / "config.toml").read_text()
    r = cli("train", "--config", cfg, "--out", out2, "--resume", "--normal-class", "0", "--no-progress")
    assert r.code == 0 and "finished already" in r.out, r.err
    r = cli("train", "--config", cfg, "--out", out2, "--resume", "--normal-class", "1", "--no-progress")
    assert r.code == 2 and "`--normal-class` must match the run being resumed" in r.err, r.err


def test_a_file_name_config_toml_cannot_hold_is_refused_before_anything_is_cleared(cli, tmp_path):
    """A non-UTF-8 file name (a lone surrogate in Python) cannot be recorded in config.toml: a
    one-line error naming data.source, and --force leaves the old run in place (it was cleared,
    then the run died with a UnicodeEncodeError traceback)."""
    out = tmp_path / "run"
    assert cli("train", *GAUSS, "--epochs", "1", "--out", out).code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "w\udcff.csv"
    r = cli("train", *GAUSS[2:], "--data", f"csv:{bad}", "--epochs", "1", "--out", out, "--force")
    assert r.code == 2 and "`--data` must be a path or text in UTF-8 (rename the file)" in r.err, r.err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_temporary_files_of_killed_writes_are_removed_on_force_and_resume(cli, tmp_path):
    """A run killed mid-write leaves .checkpoint.pt.XXXX.tmp (as large as a checkpoint): --force
    and --resume remove the temporaries of run files, and nothing else."""
    out = tmp_path / "run"
    assert cli("train", *GAUSS, "--epochs", "1", "--out", out).code == 0
    stale = [out / ".checkpoint.pt.k3j9x2a1.tmp", out / ".metrics.jsonl.abcd1234.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 100)
    (out / ".my-notes.tmp").write_text("mine")
    assert cli("train", *GAUSS, "--epochs", "2", "--out", out, "--force").code == 0
    assert not any(p.exists() for p in stale) and (out / ".my-notes.tmp").exists()
    # resume of an unfinished run (a finished one without final.json looks like one)
    out2 = tmp_path / "run2"
    assert cli("train", *GAUSS, "--epochs", "1", "--out", out2).code == 0
    (out2 / ".checkpoint.pt.zz999999.tmp").write_bytes(b"x")
    (out2 / "final.json").unlink()
    r = cli("train", *GAUSS, "--epochs", "1", "--out", out2, "--resume")
    assert r.code == 0, r.err
    assert not (out2 / ".checkpoint.pt.zz999999.tmp").exists()


def test_a_report_of_the_run_goes_with_it_and_never_blocks_the_folder(cli, tmp_path):
    """`cegeo report RUN` writes report.html and summary.md into the run folder. A --force run
    that failed before its first checkpoint left only them, and every later `cegeo train` there
    was refused ("holds 'report.html'"); --force kept them, describing the run it removed."""
    digits = ["--data", "digits", "--imbalance", "step:R=10,rho=0.5", "--epochs", "1", *TINY]
    out = tmp_path / "run"
    assert cli("train", *digits, "--out", out).code == 0
    assert cli("report", out).code == 0
    assert (out / "report.html").exists() and (out / "summary.md").exists()
    r = cli("train", *digits, "--lr", "1e8", "--out", out, "--force")  # nan in epoch 1
    assert r.code == 2 and "the run it replaced was removed before training" in r.err, r.err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []
    # a report left from a run that is gone does not block the folder either
    (out / "report.html").write_text('<meta name="generator" content="cegeo 0.1.0">')
    assert cli("train", *GAUSS, "--epochs", "1", "--out", out).code == 0
    assert not (out / "report.html").exists()
    # a user's own report.html is theirs: the folder is refused, the file kept
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("<p>my notes</p>")
    r = cli("train", *GAUSS, "--epochs", "1", "--out", mine)
    assert r.code == 2 and "holds 'report.html'" in r.err, r.err
    assert (mine / "report.html").read_text() == "<p>my notes</p>"


def test_balanced_data_prints_no_minority_recall_rather_than_nan(cli, tmp_path):
    """With equal counts there is no minority class: the epoch lines and the summary said 'nan'."""
    args = [a for a in GAUSS if a != "--no-progress"]  # the epoch lines too
    r = cli("train", *args, "--epochs", "2", "--out", tmp_path / "x")
    assert r.code == 0, r.err
    assert "nan" not in (r.out + r.err).lower() and "minority recall" not in r.out + r.err, r.out
    assert "majority recall" in r.out and "epoch 2/2" in r.err
