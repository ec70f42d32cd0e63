"""Typed configuration: frozen dataclasses read from and written to TOML.

Configs are parsed as data (``tomllib``), never executed. Every key must be a field of the target
dataclass: an unknown key is an error naming it and listing the valid keys; a value of the wrong
type is an error naming the key, the expected type and the value.

:class:`RunConfig` is the configuration of one training run (``cegeo train``); it is written to
the run folder's ``config.toml`` and read back by ``cegeo train --config``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ._io import read_toml, to_toml
from ._validation import SEED_MAX, InputError, check_finite, check_int, check_options, fail
from .data.imbalance import SAMPLERS

__all__ = [
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "RuntimeConfig",
    "TrainConfig",
    "from_dict",
    "load_run_config",
    "load_toml",
    "override",
    "to_dict",
    "to_toml_text",
]

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotation ``tp`` (ints accepted for floats, lists for tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the precise one
            return _coerce(value, options[0], where)
        for arg in options:
            try:
                return _coerce(value, arg, where)
            except InputError:
                continue
        raise InputError(f"`{where}` must be {' or '.join(_type_name(a) for a in args)}; got {value!r}.")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise InputError(f"`{where}` must be a table of {tp.__name__} settings; got {value!r}.")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"`{where}` must be a list; got {value!r}.")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict,):
        if not isinstance(value, Mapping):
            raise InputError(f"`{where}` must be a table; got {value!r}.")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    # numpy scalars (a loop over np.arange) and whole floats (5.0 epochs) are taken as the
    # plain Python values they stand for
    if tp is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
            raise InputError(f"`{where}` must be a number; got {value!r}.")
        return float(value)
    if tp is int:
        return check_int(where, value, maximum=None)  # each setting checks its own range
    if tp is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise InputError(f"`{where}` must be true or false; got {value!r}.")
        return bool(value)
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"`{where}` must be a string; got {value!r}.")
        return value
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise InputError(f"`{where}` must be one of {', '.join(map(repr, args))}; got {value!r}.")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types are InputErrors.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Opt:
    ...     lr: float = 0.1  # learning rate
    ...     epochs: int = 10
    >>> from_dict(Opt, {"lr": 1})
    Opt(lr=1.0, epochs=10)
    >>> from_dict(Opt, {"lr": 0.1, "epoch": 3})
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: unknown key `epoch` in the config; valid keys: lr, epochs.
    """
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        section = f" [{where}]" if where else ""
        raise InputError(f"unknown key `{key}` in the config{section}; valid keys: {', '.join(fields)}.")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise InputError(
            f"the config must set `{missing[0]}`{f' in [{where}]' if where else ''}; got nothing."
        )
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain dicts/lists (tuples become lists, None values kept)."""
    return dataclasses.asdict(obj)


def to_toml_text(obj: Any) -> str:
    """A dataclass as TOML text (None values are omitted; they mean "default")."""
    return to_toml(to_dict(obj))


def load_toml(cls: type[T], path: str | Path, param: str | None = None) -> T:
    """Read a TOML file into dataclass ``cls`` (parsed as data, never executed).

    ``param`` (the option that gave the path) is named in the error of an unreadable file.
    """
    return from_dict(cls, read_toml(path, param))


# ------------------------------------------------------------------------------------ RunConfig

_SCHEDULES = ("multistep", "cosine", "constant")
_SWITCHES = ("auto", "on", "off")
# The CUDA-graph modes ("reduce-overhead", "max-autotune") are not offered: on an H100 (torch 2.11)
# the trainer's compiled step crashed in cudagraph trees ("accessing tensor output of CUDAGraphs
# that has been overwritten by a subsequent run") during its first backward, even with
# torch.compiler.cudagraph_mark_step_begin() before every call. The trainer captures its whole
# step with torch.cuda.graph instead (runtime.cuda_graph), which these modes would duplicate.
_COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


def _in_range(param: str, value: float, lo: float, hi: float, text: str) -> None:
    if not lo <= value <= hi:
        raise InputError(f"`{param}` must be {text}; got {value!r}.")


def _choice(param: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"`{param}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")


def _relative_existing(path: str) -> bool:
    target = Path(path).expanduser()
    return not target.is_absolute() and target.exists()


@dataclass(frozen=True)
class DataConfig:
    """Where the data come from and how they are made imbalanced and split ([data] in TOML)."""

    source: str = "digits"  # NAME[:PATH]: digits | idx:DIR | cifar10:DIR | cifar100:DIR | npz:FILE | csv:FILE | folder:DIR | gaussian
    imbalance: str = (
        "none"  # step:R=10,rho=0.5 | longtail:R=100 | counts:n1,n2,.. | none (R = n_max/n_min >= 1)
    )
    val_fraction: float = 0.1  # share of each class of the imbalanced subset held out for validation
    test_fraction: float = 0.3  # fixed stratified test share, only for sources without a test set
    n_max: int | None = (
        None  # size of the largest class before the validation split (None: all the source has)
    )
    split_seed: int | None = None  # seed of the imbalanced subset and validation split (None: the run's seed)
    # The "no defect" class for false-alarm rates, by name ("ok") or index (None: not reported).
    normal_class: int | str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # source options, e.g. gaussian: k, d

    def __post_init__(self) -> None:
        from .data.imbalance import parse_profile

        if not self.source.strip():
            raise InputError(f"`data.source` must be a source spec NAME[:PATH]; got {self.source!r}.")
        for param, text in [("data.source", self.source)] + [
            (f"data.options.{k}", v) for k, v in self.options.items() if isinstance(v, str)
        ]:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a file name in another encoding: config.toml cannot hold it
                raise fail(param, "a path or text in UTF-8 (rename the file)", text) from None
        from .data import get_dataset_info, parse_spec

        name, path = parse_spec(self.source)
        info = get_dataset_info(name, "data.source")
        check_options("data.options", self.options, info.options, repr(name))
        # A relative path is relative to where the command ran: config.toml records it absolute,
        # so `--config run/config.toml` reproduces the run from anywhere. The same holds for
        # options that name files (csv's `test`).
        if path and _relative_existing(path):
            object.__setattr__(self, "source", f"{name}:{Path(path).expanduser().resolve()}")
        moved = {
            key: str(Path(value).expanduser().resolve())
            for key, value in self.options.items()
            if key in info.path_options and isinstance(value, str) and value and _relative_existing(value)
        }
        if moved:
            object.__setattr__(self, "options", {**self.options, **moved})
        parse_profile(self.imbalance, "data.imbalance")
        _in_range("data.val_fraction", self.val_fraction, 1e-12, 1 - 1e-12, "a number in (0, 1)")
        _in_range("data.test_fraction", self.test_fraction, 1e-12, 1 - 1e-12, "a number in (0, 1)")
        if self.n_max is not None and self.n_max < 1:
            raise InputError(f"`data.n_max` must be an integer >= 1; got {self.n_max!r}.")
        if self.split_seed is not None and not 0 <= self.split_seed <= SEED_MAX:
            raise InputError(
                f"`data.split_seed` must be an integer in [0, 2**32 - 1]; got {self.split_seed!r}."
            )
        if isinstance(self.normal_class, int) and self.normal_class < 0:
            raise InputError(f"`data.normal_class` must be a class index >= 0; got {self.normal_class!r}.")
        if isinstance(self.normal_class, str) and not self.normal_class.strip():
            raise InputError("`data.normal_class` must be a class name or index; got ''.")


@dataclass(frozen=True)
class ModelConfig:
    """The network ([model] in TOML); see ``cegeo.models.list_models()``."""

    name: str = "mlp"  # mlp | resnet18 | resnet32 | cnn
    options: dict[str, Any] = dataclasses.field(
        default_factory=dict
    )  # e.g. width = 512, depth = 6, cosine_classifier = true

    def __post_init__(self) -> None:
        from .models import get_model_info

        info = get_model_info(self.name, "model.name")
        check_options("model.options", self.options, info.options, repr(self.name))


@dataclass(frozen=True)
class LossConfig:
    """The training loss ([loss] in TOML); see ``cegeo losses``."""

    name: str = "ce"  # ce | wce | la | cdt | ldt | vs | balanced_softmax | ldam
    hyper: dict[str, float] = dataclasses.field(
        default_factory=dict
    )  # e.g. gamma = 0.5 (unset: registry default)

    def __post_init__(self) -> None:
        from .losses import get_loss_info

        info = get_loss_info(self.name, "loss.name")
        unknown = sorted(set(self.hyper) - set(info.defaults))
        if unknown:
            expected = ", ".join(info.defaults) if info.defaults else "no hyperparameters"
            raise InputError(
                f"loss {self.name!r} takes {expected}; got unknown hyperparameter(s) {', '.join(unknown)}."
            )
        for key, value in self.hyper.items():
            check_finite(f"loss.hyper.{key}", value)  # TOML has nan, inf and booleans


#: The largest learning rate or weight decay SGD can apply to float32 weights.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class OptimConfig:
    """SGD and the learning-rate schedule ([optim] in TOML); defaults are the paper's recipe."""

    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # heavy-ball momentum
    weight_decay: float = 5e-4  # L2 penalty on every parameter (the paper regularises all)
    nesterov: bool = False
    schedule: str = "multistep"  # multistep | cosine (to 0 at the last step) | constant
    milestones: tuple[int, ...] = ()  # multistep: epochs after which lr is multiplied by lr_decay
    lr_decay: float = 0.1  # multistep factor
    warmup_epochs: int = 0  # linear warm-up from lr/steps to lr over this many epochs

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"`optim.lr` must be a number > 0; got {self.lr!r}.")
        # SGD passes lr and weight decay to float32 weights: a larger number is a torch
        # RuntimeError traceback in the first step, not a divergence
        if self.lr > _FLOAT32_MAX:
            raise fail("optim.lr", f"a number <= {_FLOAT32_MAX:.6g} (float32 weights)", self.lr)
        _in_range("optim.momentum", self.momentum, 0.0, 1 - 1e-12, "a number in [0, 1)")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise InputError(f"`optim.weight_decay` must be a number >= 0; got {self.weight_decay!r}.")
        if self.weight_decay > _FLOAT32_MAX:
            raise fail(
                "optim.weight_decay", f"a number <= {_FLOAT32_MAX:.6g} (float32 weights)", self.weight_decay
            )
        if self.nesterov and self.momentum == 0:
            raise InputError("`optim.nesterov` must be false when momentum is 0; got true.")
        _choice("optim.schedule", self.schedule, _SCHEDULES)
        ms = self.milestones
        if any(m < 1 for m in ms) or any(b <= a for a, b in itertools.pairwise(ms)):
            raise InputError(f"`optim.milestones` must be increasing epochs >= 1; got {list(ms)!r}.")
        if not (self.lr_decay > 0 and math.isfinite(self.lr_decay)):
            raise InputError(f"`optim.lr_decay` must be a number > 0; got {self.lr_decay!r}.")
        peak = math.log(self.lr) + len(ms) * math.log(max(self.lr_decay, 1.0))  # logs: no OverflowError
        if self.schedule == "multistep" and peak > math.log(_FLOAT32_MAX):
            raise fail(
                "optim.lr_decay",
                f"a factor that keeps lr x lr_decay ** {len(ms)} (milestones) <= {_FLOAT32_MAX:.6g} "
                f"(float32 weights; lr = {self.lr:g})",
                self.lr_decay,
            )
        if self.warmup_epochs < 0:
            raise InputError(f"`optim.warmup_epochs` must be an integer >= 0; got {self.warmup_epochs!r}.")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop ([train] in TOML)."""

    epochs: int = 30  # passes over the training split
    batch_size: int = 128  # global mini-batch (split across data-parallel ranks)
    sampler: str = "none"  # none (shuffle) | class_balanced (each class equally likely) | sqrt (∝ sqrt(n_c))
    drw_epoch: int | None = None  # deferred re-weighting: class-balanced loss weights after this many epochs
    drw_beta: float = 0.9999  # DRW weights ∝ (1 - beta) / (1 - beta^n_c) (Cui et al.), mean 1
    pad_crop: int = 0  # random-crop augmentation: zero-pad this many pixels, crop back (4 on CIFAR); 0 = off
    flip: bool = False  # random horizontal flips (images)
    probe_every: int = 1  # metrics + geometry probes every this many epochs (and after the last)
    eval_batch_size: int = 1024  # probe batch size (CPU: fewer rows if activations outgrow the caches)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"`train.epochs` must be an integer >= 1; got {self.epochs!r}.")
        if self.batch_size < 1:
            raise InputError(f"`train.batch_size` must be an integer >= 1; got {self.batch_size!r}.")
        _choice("train.sampler", self.sampler, SAMPLERS)
        if self.drw_epoch is not None and not 1 <= self.drw_epoch < self.epochs:
            raise InputError(
                f"`train.drw_epoch` must be an integer in 1..{self.epochs - 1} (epochs before the "
                f"switch); got {self.drw_epoch!r}."
            )
        _in_range("train.drw_beta", self.drw_beta, 0.0, 1 - 1e-15, "a number in [0, 1)")
        if self.pad_crop < 0:
            raise InputError(f"`train.pad_crop` must be an integer >= 0 (pixels); got {self.pad_crop!r}.")
        if self.probe_every < 1:
            raise InputError(f"`train.probe_every` must be an integer >= 1; got {self.probe_every!r}.")
        if self.eval_batch_size < 1:
            raise InputError(
                f"`train.eval_batch_size` must be an integer >= 1; got {self.eval_batch_size!r}."
            )


@dataclass(frozen=True)
class RuntimeConfig:
    """Hardware settings ([runtime] in TOML); they may change when a run is resumed."""

    device: str = "auto"  # auto (CUDA if available, else CPU) | cpu | cuda | cuda:N
    amp: str = "auto"  # bf16 autocast: auto = on for CUDA | on | off
    channels_last: str = (
        "auto"  # channels-last layout for conv nets: auto = on (CPU and CUDA; faster on both)
    )
    compile: str = "auto"  # torch.compile the training step: auto = on for CUDA
    compile_mode: str = "default"  # torch.compile mode: default | max-autotune-no-cudagraphs
    # Replay each training step from a CUDA graph: auto = on for one CUDA process | on | off.
    cuda_graph: str = "auto"
    sync_bn: bool = True  # under DDP, BatchNorm statistics over the global batch (as one process)
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def __post_init__(self) -> None:
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise InputError(f"`runtime.device` must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {dev!r}.")
        for name in ("amp", "channels_last", "compile", "cuda_graph"):
            _choice(f"runtime.{name}", getattr(self, name), _SWITCHES)
        _choice("runtime.compile_mode", self.compile_mode, _COMPILE_MODES)
        if self.threads is not None and self.threads < 1:
            raise InputError(f"`runtime.threads` must be an integer >= 1; got {self.threads!r}.")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run (``cegeo train``; the run folder's config.toml).

    Sections: ``data``, ``model``, ``loss``, ``optim``, ``train``, ``runtime``; ``seed`` seeds
    the model initialisation, shuffling, sampling, augmentation and (unless
    ``data.split_seed`` is set) the imbalanced subset and validation split.

    Examples
    --------
    >>> cfg = from_dict(RunConfig, {"seed": 1, "loss": {"name": "ldt", "hyper": {"gamma": 0.5}},
    ...                             "train": {"epochs": 3}})
    >>> cfg.loss.hyper, cfg.train.epochs, cfg.optim.lr
    ({'gamma': 0.5}, 3, 0.1)
    >>> from_dict(RunConfig, {"train": {"epochs": 0}})
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `train.epochs` must be an integer >= 1; got 0.
    """

    seed: int = 0  # seeds init, shuffling, sampling, augmentation (and the split unless data.split_seed)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= SEED_MAX:  # the trainer derives its generators' seeds from it
            raise InputError(f"`seed` must be an integer in [0, 2**32 - 1]; got {self.seed!r}.")
        late = [m for m in self.optim.milestones if m >= self.train.epochs]
        if late:
            e = self.train.epochs
            got = list(self.optim.milestones)
            if e == 1:
                raise InputError(f"`optim.milestones` must be [] with train.epochs = 1; got {got!r}.")
            example = sorted({m for m in (e // 2, 3 * e // 4) if 0 < m < e})
            raise InputError(
                f"`optim.milestones` must be epochs in 1..{e - 1} (train.epochs = {e}); got {got!r} "
                f"(fewer epochs need milestones of their own, e.g. --milestones "
                f"{','.join(map(str, example))} or optim.milestones = {example}; [] for none)."
            )
        if self.optim.warmup_epochs >= self.train.epochs and self.optim.warmup_epochs > 0:
            raise InputError(
                f"`optim.warmup_epochs` must be fewer than train.epochs ({self.train.epochs}); "
                f"got {self.optim.warmup_epochs!r}."
            )

    @property
    def split_seed(self) -> int:
        """The seed of the imbalanced subset and validation split."""
        return self.seed if self.data.split_seed is None else self.data.split_seed

    def to_toml(self) -> str:
        """This configuration as TOML text (``None`` values omitted: they mean the default)."""
        return to_toml_text(self)


def override(config: T, updates: Mapping[str, Any]) -> T:
    """A copy of a (nested) config dataclass with dotted keys replaced, validated again.

    Examples
    --------
    >>> cfg = override(RunConfig(), {"train.epochs": 5, "loss.name": "ldt", "loss.hyper.gamma": 0.5})
    >>> cfg.train.epochs, cfg.loss.name, cfg.loss.hyper
    (5, 'ldt', {'gamma': 0.5})
    """
    data = to_dict(config)
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise InputError(f"`{dotted}` must name a setting inside a table; `{part}` is a value.")
            node = child
        node[leaf] = value
    return from_dict(type(config), data)


def config_differences(a: RunConfig, b: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` wherever two run configs differ.

    The ``[runtime]`` section is ignored (hardware may change between a run and its resume);
    ``model.options`` and ``loss.hyper`` compare as whole tables.

    Examples
    --------
    >>> config_differences(RunConfig(), override(RunConfig(), {"train.epochs": 3, "runtime.threads": 1}))
    [('train.epochs', 30, 3)]
    """

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in d.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and key not in ("options", "hyper"):
                out.update(flat(value, name + "."))
            else:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def same(key: str, x: Any, y: Any) -> bool:
        if key == "data.normal_class" and x is not None and y is not None:
            # `--normal-class 0` arrives as text (a class name or an index); a config file's
            # 0 is an index: the same setting for a resume, which keeps the recorded value.
            return str(x) == str(y)
        return x == y

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    keys = [k for k in dict.fromkeys([*fa, *fb]) if not k.startswith("runtime.")]
    return [(k, fa.get(k), fb.get(k)) for k in keys if not same(k, fa.get(k), fb.get(k))]


def load_run_config(path: str | Path, param: str | None = None) -> RunConfig:
    """Read a run configuration (a run folder's ``config.toml`` or an experiment file).

    The ``[provenance]`` table that ``cegeo train`` writes is informational and ignored, so
    ``cegeo train --config RUN/config.toml --out NEW`` reproduces a run. ``param`` (the option
    that gave the path) is named in the error of an unreadable file.
    """
    data = read_toml(path, param)
    data.pop("provenance", None)
    return from_dict(RunConfig, data)
