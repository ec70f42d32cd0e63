"""``cegeo train``: train one run (a RunConfig) and write its run folder.

Options set the fields of :class:`cegeo.config.RunConfig`; with ``--config FILE.toml`` they
override the file's values. Under ``torchrun --nproc_per_node=N -m cegeo train ...`` the run is
data-parallel (DistributedDataParallel).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from .._io import read_toml, writable_folder
from .._validation import InputError, fail, renamed
from ..config import RunConfig, from_dict, load_run_config, override
from . import app
from ._common import console, loss_hyper

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_R_HELP = "R = n_max/n_min >= 1"


def _value(text: str) -> Any:
    """A TOML literal (``3``, ``0.5``, ``true``, ``[512, 256]``, ``"s"``) or else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):  # not a literal (or absurdly nested): a string
        return text


def parse_options(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """Repeated ``--xxx-option name=value``; values are read as TOML literals when they parse.

    Examples
    --------
    >>> parse_options(["width=512", "widths=[64, 32]", "label=y"], "--model-option")
    {'width': 512, 'widths': [64, 32], 'label': 'y'}
    """
    out: dict[str, Any] = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(option, "name=value (e.g. width=512)", item)
        out[key.strip()] = _value(value.strip())
    return out


def _milestones(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise fail("--milestones", "comma-separated epochs, e.g. 116,232", text) from None


def _default_out(config: RunConfig, config_file: Path | None) -> Path:
    if config_file is not None:
        stem = config_file.stem if config_file.name != "config.toml" else config_file.parent.name + "-copy"
        return Path("runs") / f"{stem}-seed{config.seed}"
    data = re.sub(r"[^A-Za-z0-9]+", "-", config.data.source.split(":")[0]).strip("-")
    return Path("runs") / f"{data}-{config.model.name}-{config.loss.name}-seed{config.seed}"


@app.command("train")
def train_command(
    config_file: Path | None = typer.Option(
        None, "--config", help="A RunConfig TOML (experiments/*.toml, or a run's config.toml)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="The run folder (default: a folder in runs/ named after the data, model, loss and seed, "
        "or after --config and seed). It must be new or empty unless --resume or --force is given.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in --out from its checkpoint (its config.toml is used; options given "
        "must agree). Starts the run if --out has none; does nothing if it finished.",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite a run that --out already holds."),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Data source NAME[:PATH]: digits | idx:DIR (MNIST files) | cifar10:DIR | cifar100:DIR | "
        "npz:FILE | csv:FILE | folder:DIR | gaussian. (default digits)",
    ),
    data_option: list[str] | None = typer.Option(
        None, "--data-option", help="A source option name=value (repeatable), e.g. k=4 for gaussian."
    ),
    imbalance: str | None = typer.Option(
        None,
        "--imbalance",
        help=f"Imbalance profile of the training subset: step:R=10,rho=0.5 | longtail:R=100 | "
        f"counts:n1,n2,... | none ({_R_HELP}; STEP majorities are classes 0..k_maj-1; rho, the share of "
        "minority classes, defaults to 0.5). (default none)",
    ),
    n_max: int | None = typer.Option(
        None, "--n-max", help="Size of the largest class (default: all the source has)."
    ),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="Share of each class held out for validation. (default 0.1)"
    ),
    test_fraction: float | None = typer.Option(
        None, "--test-fraction", help="Fixed test share for sources without a test set. (default 0.3)"
    ),
    split_seed: int | None = typer.Option(
        None, "--split-seed", help="Seed of the subset/validation draw (default: --seed)."
    ),
    normal_class: str | None = typer.Option(
        None,
        "--normal-class",
        help="The normal ('no defect') class, by name (e.g. ok) or index: report false-alarm rates.",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model: mlp | resnet18 | resnet32 | cnn. (default mlp)"
    ),
    model_option: list[str] | None = typer.Option(
        None,
        "--model-option",
        help="A model option name=value (repeatable): width=512, depth=6, widths=[512,256], "
        "cosine_classifier=true, ...",
    ),
    loss: str | None = typer.Option(
        None, "--loss", help="Loss: ce | wce | la | cdt | ldt | vs | balanced_softmax | ldam. (default ce)"
    ),
    gamma: float | None = typer.Option(None, "--gamma", help="The loss's gamma (wce, cdt, ldt, vs)."),
    tau: float | None = typer.Option(None, "--tau", help="The loss's tau (la, vs)."),
    hyper: list[str] | None = typer.Option(
        None, "--hyper", help="Another loss hyperparameter name=value (repeatable), e.g. max_margin=0.5."
    ),
    sampler: str | None = typer.Option(
        None,
        "--sampler",
        help="none (shuffle) | class_balanced | sqrt (class drawn ∝ sqrt(n_c)). (default none)",
    ),
    drw_epoch: int | None = typer.Option(
        None, "--drw-epoch", help="Deferred re-weighting: class-balanced loss weights after this many epochs."
    ),
    drw_beta: float | None = typer.Option(
        None, "--drw-beta", help="DRW's beta (effective number). (default 0.9999)"
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs. (default 30)"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Global batch size. (default 128)"),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate. (default 0.1)"),
    momentum: float | None = typer.Option(None, "--momentum", help="SGD momentum. (default 0.9)"),
    weight_decay: float | None = typer.Option(
        None, "--weight-decay", help="Weight decay on every parameter. (default 5e-4)"
    ),
    nesterov: bool | None = typer.Option(None, "--nesterov/--no-nesterov", help="Nesterov momentum."),
    schedule: str | None = typer.Option(
        None, "--schedule", help="multistep | cosine | constant. (default multistep)"
    ),
    milestones: str | None = typer.Option(
        None, "--milestones", help="Multistep epochs, e.g. 116,232 (lr x lr-decay after each)."
    ),
    lr_decay: float | None = typer.Option(None, "--lr-decay", help="Multistep factor. (default 0.1)"),
    warmup_epochs: int | None = typer.Option(
        None, "--warmup-epochs", help="Linear warm-up epochs. (default 0)"
    ),
    pad_crop: int | None = typer.Option(
        None, "--pad-crop", help="Random-crop augmentation: zero-pad this many pixels (4 on CIFAR); 0 = off."
    ),
    flip: bool | None = typer.Option(None, "--flip/--no-flip", help="Random horizontal flips."),
    probe_every: int | None = typer.Option(
        None,
        "--probe-every",
        help="Metrics + geometry probes every N epochs (and after the last). (default 1)",
    ),
    eval_batch_size: int | None = typer.Option(
        None,
        "--eval-batch-size",
        help="Probe batch size (on the CPU at most: fewer rows when a model's activations outgrow the caches). (default 1024)",
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of init, shuffling, sampling, augmentation. (default 0)"
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N. (default auto)"),
    amp: str | None = typer.Option(None, "--amp", help="bf16 autocast: auto (on for CUDA) | on | off."),
    channels_last: str | None = typer.Option(
        None, "--channels-last", help="Conv nets: auto (on) | on | off."
    ),
    compile_: str | None = typer.Option(
        None, "--compile", help="torch.compile: auto (on for CUDA) | on | off."
    ),
    compile_mode: str | None = typer.Option(
        None,
        "--compile-mode",
        help="default | max-autotune-no-cudagraphs (CUDA graphs come from --cuda-graph instead).",
    ),
    cuda_graph: str | None = typer.Option(
        None,
        "--cuda-graph",
        help="Replay each training step and the probes' forward from CUDA graphs: auto (on for one"
        " CUDA process; a failed capture falls back to plain steps) | on | off.",
    ),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a classifier on imbalanced data and write a run folder (metrics, probes, logits).

    Imbalance ratio R = n_max/n_min >= 1.

    Example: cegeo train --data digits --imbalance step:R=10,rho=0.5 --model mlp --loss ldt
    --gamma 0.5 --epochs 30 --seed 0 --out runs/ldt
    """
    from ..train import Trainer, _env_world

    updates: dict[str, Any] = {}
    given: dict[str, str] = {"out": "--out"}  # config key -> the flag that set it, for error messages
    flags: dict[str, str] = {}  # config key -> its flag
    for key, flag, value in (
        ("data.source", "--data", data),
        ("data.imbalance", "--imbalance", imbalance),
        ("data.n_max", "--n-max", n_max),
        ("data.val_fraction", "--val-fraction", val_fraction),
        ("data.test_fraction", "--test-fraction", test_fraction),
        ("data.split_seed", "--split-seed", split_seed),
        ("data.normal_class", "--normal-class", normal_class),
        ("model.name", "--model", model),
        ("loss.name", "--loss", loss),
        ("train.sampler", "--sampler", sampler),
        ("train.drw_epoch", "--drw-epoch", drw_epoch),
        ("train.drw_beta", "--drw-beta", drw_beta),
        ("train.epochs", "--epochs", epochs),
        ("train.batch_size", "--batch-size", batch_size),
        ("train.pad_crop", "--pad-crop", pad_crop),
        ("train.flip", "--flip", flip),
        ("train.probe_every", "--probe-every", probe_every),
        ("train.eval_batch_size", "--eval-batch-size", eval_batch_size),
        ("optim.lr", "--lr", lr),
        ("optim.momentum", "--momentum", momentum),
        ("optim.weight_decay", "--weight-decay", weight_decay),
        ("optim.nesterov", "--nesterov", nesterov),
        ("optim.schedule", "--schedule", schedule),
        ("optim.milestones", "--milestones", None if milestones is None else _milestones(milestones)),
        ("optim.lr_decay", "--lr-decay", lr_decay),
        ("optim.warmup_epochs", "--warmup-epochs", warmup_epochs),
        ("seed", "--seed", seed),
        ("runtime.device", "--device", device),
        ("runtime.amp", "--amp", amp),
        ("runtime.channels_last", "--channels-last", channels_last),
        ("runtime.compile", "--compile", compile_),
        ("runtime.compile_mode", "--compile-mode", compile_mode),
        ("runtime.cuda_graph", "--cuda-graph", cuda_graph),
        ("runtime.threads", "--threads", threads),
    ):
        flags[key] = flag
        if value is not None:
            updates[key] = value
            given[key] = flag
    for option, flag in ((data_option, "--data-option"), (model_option, "--model-option")):
        section = "data.options" if flag == "--data-option" else "model.options"
        for key, value in parse_options(option, flag).items():
            updates[f"{section}.{key}"] = value
            given[section] = flag
            given[f"{section}.{key}"] = given[key] = f"{flag} {key}"
    # The base: --config, else (resuming) the run folder's config, else the defaults.
    if config_file is not None:
        base_data = read_toml(config_file, "--config")
        base_data.pop("provenance", None)
        base = from_dict(RunConfig, base_data)
    elif out is not None and resume and (out / "config.toml").exists():
        base = load_run_config(out / "config.toml")
    else:
        base = RunConfig()
        # every setting comes from a flag or a default: errors name flags only
        given = {**flags, "model.options.cosine_classifier": "--model-option cosine_classifier", **given}
    shortcut = {"gamma": gamma, "tau": tau}
    hyper_given = loss_hyper(hyper, **shortcut)
    if loss is not None and loss != base.loss.name:
        updates["loss.hyper"] = {}  # another loss than the base's: start from its own defaults
    for key, value in hyper_given.items():
        updates[f"loss.hyper.{key}"] = value
        flag = f"--{key}" if shortcut.get(key) is not None else f"--hyper {key}"
        given[f"loss.hyper.{key}"] = given[key] = flag
    try:
        config = override(base, updates)
        target = writable_folder("--out", out if out is not None else _default_out(config, config_file))
        trainer = Trainer(config, target, resume=resume, force=force, progress=progress)
        rank0 = _env_world()[1] == 0  # under torchrun only rank 0 reports
        if trainer.action == "finished" and rank0:
            console.print(f"{target}: the run has finished already (nothing to do).")
        final = trainer.run()
    except InputError as err:  # name the flags the user typed, not the config keys they set
        raise renamed(err, given) from None
    if not final or not rank0:
        return
    _print_summary(final, target)


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def _print_summary(final: dict[str, Any], target: Path) -> None:
    test, geo = final["test"], final["geometry"]
    groups = list(test.get("group_recall", {}))
    table = Table(
        title=f"{final['loss']['name']} · {final['model']} · {final['data']} · seed {final['seed']}"
    )
    table.add_column("test metric")
    table.add_column("value", justify="right")
    table.add_row("balanced accuracy", _fmt(test["balanced_accuracy"]))
    for g in groups:
        if test["group_recall"][g] is not None and test["group_recall"][g] == test["group_recall"][g]:
            table.add_row(f"{g} recall", _fmt(test["group_recall"][g]))  # no row for an empty group
    table.add_row("worst-class recall", _fmt(test["worst_class_recall"]))
    if "false_alarm" in test:
        table.add_row("false-alarm rate", _fmt(test["false_alarm"]))
    table.add_row(
        "geometry dist_W / dist_H / dist_M",
        " / ".join(_fmt(geo[k]) for k in ("dist_W", "dist_H", "dist_M")),
    )
    table.add_row(
        "geometry dist_H_centred",
        _fmt(geo.get("dist_H_centred")),
    )
    table.add_row(
        "W_ratio / H_ratio", f"{_fmt(geo['summary']['W_ratio'])} / {_fmt(geo['summary']['H_ratio'])}"
    )
    table.add_row("NC1", _fmt(geo["nc1"]))
    secs = final["train_time_s"]
    table.add_row("training time (s)", f"{secs:.1f}" if secs >= 10 else f"{secs:.3g}")  # not 14.0464
    console.print(table)
    console.print(f"run folder: {target}")
