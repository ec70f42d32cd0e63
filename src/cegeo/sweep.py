"""Sweeps: a grid of independent training runs, an optional batched UFM block, and their summary.

A sweep file is TOML, parsed as data (never executed; an unknown key is an error)::

    name = "digits: five losses"          # title of the report (optional)
    seeds = [0, 1]                         # every grid point runs once per seed

    [base]                                 # a RunConfig, as for `cegeo train --config`
    data = {source = "digits", imbalance = "step:R=10,rho=0.5"}   # R = n_max/n_min >= 1
    model = {name = "mlp", options = {width = 256, depth = 3}}
    train = {epochs = 30}

    [[setups]]                             # optional named variants of the base (data, model, recipe)
    name = "mlp-mnist"                     # a run-name component: letters, digits, '-', '_', '.'
    label = "MLP"                          # the marker label in the report's figures
    data.source = "idx:/path/to/mnist"     # any RunConfig table: data, model, optim, train, runtime
    train.epochs = 350

    [[losses]]                             # one entry per loss; `grid` crosses hyperparameter values
    name = "ldt"
    grid = {gamma = "-1.5:1.5:13"}         # a list, or START:STOP:NUM (inclusive, numpy.linspace)
    hyper = {normalize = 1}                # fixed hyperparameters (unset ones: the registry default)

    [grid]                                 # optional extra crossed axes: dotted RunConfig keys
    "data.imbalance" = ["step:R=10,rho=0.5", "step:R=100,rho=0.5"]

    [ufm]                                  # optional: a cegeo.ufm.UFMExperiment, simulated as one batch
    step = "k=10,R=10,rho=0.5"
    losses = ["cdt", "ldt"]
    gamma_grid = "-1.5:1.5:13"

    [posthoc]                              # optional: cegeo posthoc on the finished runs of these losses
    losses = ["ce"]

The grid is setups x [grid] axes x losses x loss-hyperparameter values x seeds. Each point is one
run folder ``OUT/runs/<name>`` (``docs/run-folder.md``) with a stable, readable name::

    [<setup>__]<loss>[_<hyper>=<value>...][_<axis>=<value>...]__seed<seed>

e.g. ``mlp-mnist__ldt_gamma=-1.25__seed0``. The sweep folder also holds ``sweep.toml`` (the file
as given), ``sweep.json`` (the resolved configuration and the run list), ``configs/<name>.toml``
(each run's RunConfig: ``cegeo train --config configs/<name>.toml --out runs/<name> --resume``
runs it, which is what ``cegeo sweep --list`` prints), ``logs/<name>.log`` (output of runs
executed in worker processes), ``ufm/`` (``ufm.csv``, ``summary.json``, ``config.toml``, the
layout ``cegeo ufm --out`` writes) and ``summary.csv``.

Execution (:func:`run_sweep`): finished runs (``final.json`` present) are skipped; an unfinished
run resumes from its checkpoint; a run that fails writes ``error.json`` (message, type,
traceback) and the others go on (a failed run is tried again by the next ``cegeo sweep``). With
``jobs = 1`` the runs execute one after the other in this process; with ``jobs = N > 1`` in N
worker processes at a time (``python -m cegeo.sweep CONFIG OUT``), each limited to
``cores // N`` CPU threads (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``) so that N runs do not
oversubscribe the cores (a run's ``runtime.threads`` records them unless the sweep sets it: float
sums depend on the thread count, so set ``base.runtime.threads`` for results that do not depend on
``--jobs``); with several visible GPUs each worker slot gets one
(``CUDA_VISIBLE_DEVICES``, round robin).

``summary.csv`` (:func:`summarize`) has one row per grid point without the seed: identity columns
(``group``: the grid point's name, in a sweep the run name without ``__seed<seed>``; ``setup``,
``data``, ``imbalance``, ``model``, ``loss``, ``label``, ``hyper``, one column per hyperparameter,
one per extra axis), ``seeds`` (of the finished runs, space-separated), ``n_finished``,
``n_failed``, ``n_unfinished``, then, for each metric, ``<metric>_mean`` and ``<metric>_std`` over the seeds' finished runs (std: sample standard deviation, ddof = 1;
empty with a single seed): test balanced accuracy, minority recall (the last group's recall),
worst-class recall, false-alarm rate (when ``data.normal_class`` is set), validation balanced
accuracy, the final normalised-Gram distances of W, H and the logits to the theory (``dist_W``,
``dist_H``, ``dist_M``, and ``dist_H_centred`` for the globally centred class means; empty for
losses the theory does not cover), and the cost: wall time,
training time, and the first probed epoch (and the training time up to it) at which the
**validation** balanced accuracy reached 95% of its best value (:func:`cegeo.metrics.convergence_point`,
also ``final.json``'s ``history``). Validation, because the test
split is for the final evaluation only: how many epochs a loss needs is a training-budget
decision, and decisions are made on validation (as the post-hoc rebalancers are tuned). Its
resolution is ``train.probe_every`` epochs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _signals
from ._io import (
    environment_info,
    read_json,
    read_jsonl,
    read_toml,
    writable_folder,
    write_csv,
    write_json,
    write_text,
)
from ._validation import InputError, check_finite, check_fraction, fail, renamed
from .config import RunConfig, RuntimeConfig, config_differences, from_dict, load_run_config, to_dict
from .data._dataset import described
from .metrics import convergence_point
from .ufm import UFMExperiment

__all__ = [
    "SUMMARY_METRICS",
    "LossSpec",
    "PosthocSpec",
    "RunResult",
    "Setup",
    "SweepConfig",
    "SweepOutcome",
    "SweepRun",
    "aggregate",
    "check_run_folders",
    "check_sources",
    "convergence_point",
    "expand",
    "list_commands",
    "load_runs",
    "load_sweep",
    "load_ufm",
    "run_one",
    "run_sweep",
    "summarize",
    "write_summary",
]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # fullmatch: a run-name part
_RUN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")  # what expand() makes: no '/', no '..'
_MAX_RUN_NAME = 200  # characters: a run's files (configs/NAME.toml, its temporary twin) stay under 255
_RUN_TABLES = ("data", "model", "optim", "train", "runtime")
_SWEEP_KEYS = ("seeds", "name", "description", "ufm", "posthoc")  # settable with --set KEY=VALUE


# ------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class LossSpec:
    """One ``[[losses]]`` entry: a registered loss, fixed hyperparameters and a grid of others."""

    name: str  # a registered loss: ce | wce | la | cdt | ldt | vs | balanced_softmax | ldam
    hyper: dict[str, float] = field(default_factory=dict)  # fixed hyperparameters
    grid: dict[str, Any] = field(default_factory=dict)  # name -> [values] or "START:STOP:NUM"
    label: str | None = None  # replaces the loss name in run names and legends

    def __post_init__(self) -> None:
        from .losses import list_losses

        if self.name not in list_losses():
            # here, before [posthoc] lists the names (a misspelt loss was blamed on posthoc.losses)
            raise fail("losses.name", f"a registered loss ({', '.join(list_losses())})", self.name)
        for key, value in self.hyper.items():
            # TOML has nan and inf: refused here, not by every run when it starts training.
            check_finite(f"losses[{self.display}].hyper.{key}", value)

    def grid_values(self) -> list[tuple[str, list[float]]]:
        """The hyperparameter axes as ``(name, values)`` in file order."""
        from .cli._common import parse_grid

        axes = []
        for key, spec in self.grid.items():
            where = f"losses[{self.display}].grid.{key}"
            if key in self.hyper:
                raise InputError(f"`{where}` must not also be a fixed hyperparameter; got both.")
            if isinstance(spec, str):
                values = parse_grid(spec, where).tolist()
            elif isinstance(spec, (list, tuple)) and spec:
                values = []
                for v in spec:
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                        raise fail(where, "a list of finite numbers or START:STOP:NUM", spec)
                    values.append(float(v))
            else:
                raise fail(where, "a non-empty list of numbers or START:STOP:NUM", spec)
            with np.errstate(over="ignore"):  # |v| > ~1e296 overflows: such a value stays as given
                rounded = [float(np.round(v, 12)) + 0.0 for v in values]  # 0.7500000000000001 -> 0.75
            values = [r if math.isfinite(r) else v for r, v in zip(rounded, values, strict=True)]
            if len(set(values)) != len(values):
                raise fail(where, "distinct values", spec)
            axes.append((key, values))
        return axes

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Setup:
    """One ``[[setups]]`` entry: a named variant of the base run configuration."""

    name: str  # run-name component and table label
    label: str | None = None  # marker label in figures (default: name)
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        label = self.label
        if isinstance(label, str) and not label.strip():
            object.__setattr__(self, "label", None)  # an empty label: the name, as documented
        elif label is not None and (not isinstance(label, str) or label.startswith("_") or "\n" in label):
            # matplotlib leaves labels starting with '_' out of legends
            raise fail("setups.label", "one line of text, not starting with '_'", label)


@dataclass(frozen=True)
class PosthocSpec:
    """``[posthoc]``: fit post-hoc rebalancers (``cegeo posthoc``) on finished runs."""

    losses: tuple[str, ...] = ("ce",)  # loss names (or labels) whose runs are rebalanced
    methods: str = "all"  # rebalancer names, comma-separated, or "all"
    metric: str = "balanced_accuracy"  # selection metric on validation
    max_false_alarm: float = 0.01  # operating point budget (runs with data.normal_class)


@dataclass(frozen=True)
class SweepConfig:
    """A sweep file (module docstring). Build with :func:`load_sweep` or :func:`cegeo.config.from_dict`.

    Examples
    --------
    >>> cfg = from_dict(SweepConfig, {"seeds": [0, 1], "losses": [{"name": "ce"},
    ...     {"name": "ldt", "grid": {"gamma": [0.0, 0.5]}}], "base": {"train": {"epochs": 2}}})
    >>> [r.name for r in expand(cfg)]
    ['ce__seed0', 'ce__seed1', 'ldt_gamma=0__seed0', 'ldt_gamma=0__seed1', 'ldt_gamma=0.5__seed0', 'ldt_gamma=0.5__seed1']
    """

    name: str = ""  # title (reports)
    description: str = ""  # a sentence for the report
    seeds: tuple[int, ...] = (0,)
    base: dict[str, Any] = field(default_factory=dict)  # a RunConfig without seed and loss
    setups: tuple[Setup, ...] = ()
    losses: tuple[LossSpec, ...] = ()
    grid: dict[str, list[Any]] = field(default_factory=dict)  # dotted RunConfig key -> values
    # A table is converted in __post_init__, so that a bad key there gets its own message.
    ufm: UFMExperiment | Mapping[str, Any] | None = None  # a batched UFM simulation (cegeo ufm's settings)
    posthoc: PosthocSpec | Mapping[str, Any] | None = None  # post-hoc rebalancing of finished runs

    def __post_init__(self) -> None:
        if not self.seeds:
            raise fail("seeds", "a non-empty list of integers >= 0", list(self.seeds))
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise fail("seeds", "distinct integers >= 0", list(self.seeds))
        if not self.losses and self.ufm is None:
            raise InputError(
                "the sweep must list at least one [[losses]] entry (or a [ufm] block); got "
                + _stray_key_hint(self, "losses")
                + "."
            )
        for key in ("seed", "loss"):
            if key in self.base:
                where = "seeds" if key == "seed" else "[[losses]]"
                raise fail(f"base.{key}", f"unset (the sweep sets it through {where})", self.base[key])
        unknown = sorted(set(self.base) - set(_RUN_TABLES))
        if unknown:
            raise InputError(
                f"unknown key `base.{unknown[0]}` in the config [base]; valid keys: {', '.join(_RUN_TABLES)}."
            )
        names = [s.name for s in self.setups]
        for name in names:
            if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or "__" in name:
                raise fail(
                    "setups.name",
                    "a name of letters, digits, '.', '-' or single '_' (a run-name part)",
                    name,
                )
        if len(set(names)) != len(names):
            raise fail("setups.name", "distinct names", names)
        for spec in self.losses:
            if spec.label is not None and (not _NAME_RE.fullmatch(spec.label) or "__" in spec.label):
                raise fail("losses.label", "a name of letters, digits, '.', '-' or single '_'", spec.label)
        for key, values in self.grid.items():
            if key.split(".")[0] not in _RUN_TABLES:
                raise fail(
                    "grid",
                    f"dotted keys inside {', '.join(_RUN_TABLES)} (seeds and losses have their own)",
                    key,
                )
            if not isinstance(values, list) or not values:
                raise fail(f"grid.{key}", "a non-empty list of values", values)
        if isinstance(self.ufm, Mapping):
            object.__setattr__(self, "ufm", from_dict(UFMExperiment, self.ufm, "ufm"))
        if isinstance(self.posthoc, Mapping):
            object.__setattr__(self, "posthoc", from_dict(PosthocSpec, self.posthoc, "posthoc"))
        if self.ufm is not None:
            try:
                self.ufm.validate()
            except InputError as err:
                # "`seeds` must be distinct" would point at the sweep's own seeds, "`epochs`" at train's
                keys = {f.name: f"ufm.{f.name}" for f in dataclasses.fields(UFMExperiment)}
                named = renamed(err, keys)
                raise (named if named is not err else InputError(f"[ufm]: {err}")) from None
        if self.posthoc is not None:
            from .rebalance import SELECTION_METRICS, parse_methods

            parse_methods(self.posthoc.methods, "posthoc.methods")
            known = list(dict.fromkeys(n for spec in self.losses for n in (spec.name, spec.label) if n))
            unknown = [n for n in self.posthoc.losses if n not in known]
            if unknown:
                default = self.posthoc.losses == PosthocSpec().losses
                raise fail(
                    "posthoc.losses",
                    f"names or labels of [[losses]] entries ({', '.join(known) or 'none'})"
                    + (": set it in [posthoc], its default is ['ce']" if default else ""),
                    unknown[0],
                )
            if self.posthoc.metric not in SELECTION_METRICS:
                raise fail(
                    "posthoc.metric", "one of " + ", ".join(map(repr, SELECTION_METRICS)), self.posthoc.metric
                )
            # checked here, not by every run's post-hoc step after the whole sweep has trained
            check_fraction(
                "posthoc.max_false_alarm", self.posthoc.max_false_alarm, low_open=False, high_open=True
            )


def _stray_key_hint(config: SweepConfig, key: str) -> str:
    """What the file holds instead of top-level ``key``: a key of that name that TOML put into a
    table (a line written after a ``[table]`` header belongs to that table), else "none"."""

    def find(node: Any, where: str) -> str | None:
        if not isinstance(node, Mapping):
            return None
        if key in node:
            return where
        for name, child in node.items():
            found = find(child, f"{where}.{name}")
            if found is not None:
                return found
        return None

    tables = [("base", config.base)] + [
        (f"setups[{s.name}]", {t: getattr(s, t) for t in _RUN_TABLES}) for s in config.setups
    ]
    for where, table in tables:
        found = find(table, where)
        if found is not None:
            return (
                f"none, but a `{key}` key inside [{found}] (TOML puts a key written after a [table] "
                f"header into that table: write [[{key}]] tables, or move the key above the first header)"
            )
    return "none"


def load_sweep(
    path: str | os.PathLike[str], sets: Mapping[str, Any] | None = None, *, param: str | None = None
) -> SweepConfig:
    """Read a sweep file, apply ``sets`` overrides, validate every grid point.

    Parameters
    ----------
    path : path
        The sweep TOML (parsed as data).
    sets : mapping, optional
        ``{"KEY": value}`` sets the dotted RunConfig key ``KEY`` in ``[base]`` (all runs);
        ``{"SETUP:KEY": value}`` sets it in the setup named ``SETUP`` only, e.g.
        ``{"mlp-mnist:data.source": "idx:/data/mnist"}``; ``seeds``, ``name``, ``ufm.KEY`` and
        ``posthoc.KEY`` set the sweep's own settings (``{"seeds": [0]}``).
    param : str, optional
        The argument that gave ``path`` (e.g. ``"CONFIG_FILE"``), named when the file cannot be
        read as TOML.

    Raises
    ------
    ValueError
        Unreadable TOML (a folder, not UTF-8, a syntax error), unknown keys, bad values
        (non-finite hyperparameters included), duplicate run names, an unknown setup in ``sets``.
    """
    data = read_toml(path, param)
    for key, value in (sets or {}).items():
        setup, sep, dotted = key.rpartition(":")
        head = dotted.split(".")[0]
        if not sep and head in _SWEEP_KEYS:
            _set_dotted(data, dotted, value)
            continue
        if not dotted or head not in _RUN_TABLES:
            raise fail(
                "--set",
                f"KEY=VALUE or SETUP:KEY=VALUE with KEY a dotted setting in {', '.join(_RUN_TABLES)} "
                f"(or one of {', '.join(_SWEEP_KEYS)})",
                key,
            )
        if sep:
            entries = [s for s in data.get("setups", []) if isinstance(s, dict) and s.get("name") == setup]
            if not entries:
                names = [s.get("name") for s in data.get("setups", []) if isinstance(s, dict)]
                raise fail(
                    "--set", f"a setup name of the sweep ({', '.join(map(str, names)) or 'none'})", setup
                )
            _set_dotted(entries[0], dotted, value)
        else:
            _set_dotted(data.setdefault("base", {}), dotted, value)
    config = from_dict(SweepConfig, data)
    expand(config)
    return config


def _set_dotted(table: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = table
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(f"`{dotted}` must name a setting inside a table; `{part}` is a value.")
        node = child
    node[leaf] = value


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts (``b`` wins)."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _fmt_value(v: Any) -> str:
    """A grid value in a run name: numbers in %g, other values with unsafe characters replaced.

    Examples
    --------
    >>> _fmt_value(-1.25), _fmt_value(0.5), _fmt_value("step:R=100,rho=0.5")
    ('-1.25', '0.5', 'step-R=100-rho=0.5')
    """
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return f"{v:g}"
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", str(v)).strip("-") or "x"


@dataclass(frozen=True)
class SweepRun:
    """One grid point and seed: its run name, configuration and what identifies it in tables."""

    name: str  # run folder name (OUT/runs/<name>)
    group: str  # the name without the seed: runs of one group are averaged over seeds
    setup: str  # setup name ("" without [[setups]])
    setup_label: str
    loss: str  # registered loss name
    loss_label: str  # LossSpec.label or the name
    hyper: dict[str, float]  # hyperparameters set by the sweep (fixed + grid)
    axes: dict[str, Any]  # extra [grid] axis values
    seed: int
    config: RunConfig

    def meta(self) -> dict[str, Any]:
        """JSON-ready description (sweep.json)."""
        return {
            "name": self.name,
            "group": self.group,
            "setup": self.setup,
            "setup_label": self.setup_label,
            "loss": self.loss,
            "loss_label": self.loss_label,
            "hyper": self.hyper,
            "axes": self.axes,
            "seed": self.seed,
        }


#: The most runs one sweep may hold (each is a folder and a process; --list writes a config each).
MAX_RUNS = 100_000


def expand(config: SweepConfig) -> list[SweepRun]:
    """Every run of the sweep, in order: setups x axes x losses x hyperparameter values x seeds.

    Raises
    ------
    ValueError
        A grid point whose RunConfig is invalid (the message names the setup), two grid points
        with the same run name (give the losses distinct ``label``).
    """
    setups = list(config.setups) or [Setup(name="")]
    axes = list(config.grid.items())
    # Counted before anything is built: two 3,000-value axes (9 million runs) churned for hours
    points = math.prod(len(values) for _, values in axes)
    per_point = sum(math.prod(len(v) for _, v in spec.grid_values()) for spec in config.losses)
    total = len(setups) * points * per_point * len(config.seeds)
    if total > MAX_RUNS:
        raise fail(
            "sweep",  # the product of every axis, not [grid] alone
            f"at most {MAX_RUNS:,} runs (setups x grid x losses x hyperparameter values x "
            "seeds; split a larger study into several sweeps)",
            f"{total:,} runs",
        )
    runs: list[SweepRun] = []
    seen: dict[str, int] = {}
    for setup in setups:
        setup_tables = {t: getattr(setup, t) for t in _RUN_TABLES if getattr(setup, t)}
        base = _merge(config.base, setup_tables)
        for axis_values in itertools.product(*(values for _, values in axes)):
            point = copy.deepcopy(base)
            axis_map = {}
            for (key, _), value in zip(axes, axis_values, strict=True):
                _set_dotted(point, key, value)
                axis_map[key] = value
            for spec in config.losses:
                hyper_axes = spec.grid_values()
                for values in itertools.product(*(vals for _, vals in hyper_axes)):
                    grid_hyper = {name: v for (name, _), v in zip(hyper_axes, values, strict=True)}
                    hyper = {**{k: float(v) for k, v in spec.hyper.items()}, **grid_hyper}
                    parts = [spec.display]
                    parts += [f"{k}={_fmt_value(v)}" for k, v in grid_hyper.items()]
                    parts += [f"{key.split('.')[-1]}={_fmt_value(v)}" for key, v in axis_map.items()]
                    group = "_".join(parts)
                    if setup.name:
                        group = f"{setup.name}__{group}"
                    for seed in config.seeds:
                        name = f"{group}__seed{seed}"
                        data = _merge(point, {"seed": seed, "loss": {"name": spec.name, "hyper": hyper}})
                        try:
                            run_config = from_dict(RunConfig, data)
                        except InputError as exc:
                            where = f"setup {setup.name!r}, " if setup.name else ""
                            raise InputError(
                                f"sweep run {name} ({where}loss {spec.display!r}): {exc}"
                            ) from None
                        if len(name) > _MAX_RUN_NAME:
                            raise InputError(
                                f"sweep run name {name[:60]}... must be at most {_MAX_RUN_NAME} characters "
                                f"(a file name); got {len(name)}: shorten setup names or loss labels, or "
                                "sweep fewer grid keys."
                            )
                        if name in seen:
                            raise InputError(
                                f"two grid points of the sweep are both named {name!r}: give the "
                                "[[losses]] entries distinct `label`s."
                            )
                        seen[name] = len(runs)
                        runs.append(
                            SweepRun(
                                name=name,
                                group=group,
                                setup=setup.name,
                                setup_label=setup.label or setup.name,
                                loss=spec.name,
                                loss_label=spec.display,
                                hyper=hyper,
                                axes=axis_map,
                                seed=seed,
                                config=run_config,
                            )
                        )
    return runs


# ------------------------------------------------------------------------------------ execution


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did."""

    out: Path
    runs: list[SweepRun]
    finished: list[str] = field(default_factory=list)  # trained to the end in this call
    skipped: list[str] = field(default_factory=list)  # finished before this call
    failed: dict[str, str] = field(default_factory=dict)  # name -> one-line error
    busy: list[str] = field(default_factory=list)  # trained by another process during this call
    ufm: str | None = None  # "done", "skipped" or None (no [ufm] block or not asked)
    posthoc: dict[str, str] = field(default_factory=dict)  # run name -> "done" | "skipped" | error
    summary: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def check_run_folders(runs: Sequence[SweepRun], runs_dir: str | os.PathLike[str]) -> None:
    """Raise when a run folder under ``runs_dir`` holds a run made with another configuration.

    Called before any work (a sweep, the demo), so that nothing is half-written.
    """
    runs_dir = Path(runs_dir)
    for run in runs:
        cfg_file = runs_dir / run.name / "config.toml"
        if not cfg_file.is_file():
            continue
        try:
            old = load_run_config(cfg_file)
        except InputError:
            continue  # unreadable: the run restarts (the trainer reports it if it cannot)
        diffs = config_differences(old, run.config)
        if diffs:
            key, was, now = diffs[0]
            raise InputError(
                f"`{key}` of run {run.name} must match the run already in {runs_dir / run.name} (it has "
                f"{was!r}); got {now!r}. Use another --out, or delete that run folder to redo it."
            )


def check_sources(runs: Sequence[SweepRun]) -> None:
    """Raise when a run's data source names a path that does not exist (with the --set to fix it)."""
    from .data import parse_spec

    seen = set()
    for run in runs:
        spec = run.config.data.source
        if spec in seen:
            continue
        seen.add(spec)
        _, path = parse_spec(spec)
        if path is not None and not Path(path).expanduser().exists():
            key = f"{run.setup}:data.source" if run.setup else "data.source"
            name = spec.partition(":")[0]
            raise InputError(
                f"`data.source` of run {run.name} must name an existing path; got {spec!r} "
                f"(give it with --set {key}={name}:/path/to/data)."
            )


def _error_record(exc: BaseException) -> dict[str, str]:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return {
        "error": lines[0] if lines else type(exc).__name__,
        "type": type(exc).__name__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def run_one(config: RunConfig, out: str | os.PathLike[str], *, progress: bool = False) -> dict[str, Any]:
    """Train (or resume, or skip if finished) one run; on failure write ``error.json``.

    Returns
    -------
    dict
        ``{"status": "finished" | "skipped" | "failed", "error": message or None}``.
    """
    from .train import RunBusyError, Trainer

    path = Path(out)
    with contextlib.suppress(OSError):  # missing, or a folder we cannot write: found out below
        (path / "error.json").unlink()
    trainer = None
    try:
        trainer = Trainer(config, path, resume=True, progress=progress)
        if trainer.action == "finished":
            return {"status": "skipped", "error": None}
        trainer.run()
        return {"status": "finished", "error": None}
    except RunBusyError as exc:  # trained by another process right now: not a failure of this run
        return {"status": "busy", "error": str(exc)}
    except Exception as exc:
        record = _error_record(exc)
        _write_error(path, record)
        return {"status": "failed", "error": record["error"]}
    finally:
        trainer = None
        _release_memory()


def _release_memory() -> None:
    """Free what a finished run held before the next one in this process (``--jobs 1``).

    A trainer sits in reference cycles (its CUDA graphs' steps and its compiled forward call back
    into it), so reference counting alone never frees it: its model, its data on the device and
    its graphs' memory pools stayed held until Python's cyclic collector happened to run.
    """
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _write_error(path: Path, record: dict[str, Any]) -> None:
    """error.json of a failed run; where even that cannot be written (a read-only folder, a full
    disk) the message says so, and the sweep goes on with its other runs."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / "error.json", record)
    except OSError as exc:
        record["error"] += f" (and error.json could not be written: {' '.join(str(exc).split())})"


def check_sweep_out(path: Path) -> None:
    """``--out`` must be a folder cegeo can write in (checked before any work, creating nothing)
    that is new, empty or a sweep folder (with sweep.json): never a folder of the user's whose
    summary.csv or sweep.toml a sweep would overwrite."""
    writable_folder("--out", path)
    if path.is_dir() and not (path / "sweep.json").is_file():
        foreign = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        if foreign:
            raise fail(
                "--out",
                "a new or empty folder, or a sweep folder (with sweep.json)",
                described(f"{path}, which holds {foreign[0]!r}"),
            )


def _write_folder(config: SweepConfig, runs: Sequence[SweepRun], out: Path, source_text: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if source_text is not None:
        _write_if_changed(out / "sweep.toml", source_text)
    meta = {
        "format": 1,
        "config": _jsonable_config(config),
        "runs": [r.meta() for r in runs],
    }
    write_json(out / "sweep.json", meta)
    for run in runs:
        _write_if_changed(out / "configs" / f"{run.name}.toml", run.config.to_toml())


def _jsonable_config(config: SweepConfig) -> dict[str, Any]:
    data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    data["setups"] = [dataclasses.asdict(s) for s in config.setups]
    data["losses"] = [dataclasses.asdict(s) for s in config.losses]
    data["ufm"] = None if config.ufm is None else to_dict(config.ufm)
    data["posthoc"] = None if config.posthoc is None else dataclasses.asdict(config.posthoc)
    data["seeds"] = list(config.seeds)
    return data


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    write_text(path, text)


def _train_command(run: SweepRun, out: Path) -> list[str]:
    return [
        "cegeo",
        "train",
        "--config",
        str(out / "configs" / f"{run.name}.toml"),
        "--out",
        str(out / "runs" / run.name),
        "--resume",
        "--no-progress",
    ]


def list_commands(
    config: SweepConfig,
    out: str | os.PathLike[str],
    source_text: str | None = None,
    sweep_file: str | None = None,
    sets: Sequence[str] = (),
) -> list[str]:
    """Write the sweep folder's configs and return one shell command per run (and the UFM block).

    Each ``cegeo train --config OUT/configs/<name>.toml --out OUT/runs/<name> --resume`` line
    trains one run, resumes it if it was interrupted and does nothing if it finished, so a
    scheduler may run (and re-run) the lines in any order. With a ``[ufm]`` block and
    ``sweep_file``, a last line runs it: ``cegeo sweep FILE --out OUT --only ufm`` followed by
    ``--set S`` for each of ``sets`` (the ``--set`` options ``config`` was loaded with, as typed),
    so that it sees the same sweep as the train lines; ``--only ufm`` neither rewrites the run
    configs nor looks at the run folders, so it too may run before, after or between them.

    Examples
    --------
    >>> import tempfile
    >>> cfg = from_dict(SweepConfig, {"seeds": [0], "losses": [{"name": "ldt", "grid": {"gamma": [0, 0.5]}}]})
    >>> out = Path(tempfile.mkdtemp())
    >>> for line in list_commands(cfg, out):
    ...     print(line.replace(str(out), "OUT"))
    cegeo train --config OUT/configs/ldt_gamma=0__seed0.toml --out OUT/runs/ldt_gamma=0__seed0 --resume --no-progress
    cegeo train --config OUT/configs/ldt_gamma=0.5__seed0.toml --out OUT/runs/ldt_gamma=0.5__seed0 --resume --no-progress
    """
    path = Path(out)
    runs = expand(config)
    check_sweep_out(path)
    _write_folder(config, runs, path, source_text)
    lines = [shlex.join(_train_command(run, path)) for run in runs]
    if config.ufm is not None and sweep_file is not None:
        args = ["cegeo", "sweep", sweep_file, "--out", str(path), "--only", "ufm"]
        for item in sets:
            args += ["--set", item]
        lines.append(shlex.join(args))
    return lines


def run_sweep(
    config: SweepConfig,
    out: str | os.PathLike[str],
    *,
    jobs: int = 1,
    only: str | None = None,
    source_text: str | None = None,
    log: Callable[[str], None] | None = None,
    check_paths: bool = True,
) -> SweepOutcome:
    """Run a sweep into ``out``: the UFM block, the runs (``jobs`` at a time), post-hoc, summary.csv.

    Parameters
    ----------
    config : SweepConfig
    out : path
        The sweep folder (created; re-running into it skips finished work).
    jobs : int
        Runs at a time: 1 runs them in this process, N > 1 in N worker processes with
        ``cores // N`` CPU threads each.
    only : {"runs", "ufm", "posthoc"}, optional
        Do only this part (``summary.csv`` is always rewritten); the sweep must have it
        (``[[losses]]``, ``[ufm]``, ``[posthoc]``). ``"ufm"`` neither checks the run folders
        against the configuration nor rewrites ``configs/`` and ``sweep.json`` (it writes
        them only into a new sweep folder), so the UFM line of :func:`list_commands` cannot
        disturb the train lines, whichever runs first.
    source_text : str, optional
        The sweep file's text, kept as ``sweep.toml``.
    log : callable, optional
        Receives one line per event (run finished, skipped, failed ...).
    check_paths : bool
        Refuse to start when a data source's path does not exist (the message says how to set it).

    Returns
    -------
    SweepOutcome

    Raises
    ------
    ValueError
        ``jobs < 1``, an unknown ``only`` or one naming a part the sweep does not have, a run
        folder holding a run made with another configuration, a data path that does not exist.

    Examples
    --------
    >>> import tempfile
    >>> cfg = from_dict(SweepConfig, {"seeds": [0, 1], "losses": [{"name": "ce"}], "base": {
    ...     "data": {"source": "gaussian", "imbalance": "step:R=4,rho=0.5",
    ...              "options": {"k": 4, "d": 4, "n_per_class": 20, "n_test_per_class": 5}},
    ...     "model": {"options": {"width": 8, "depth": 1}}, "train": {"epochs": 2}}})
    >>> out = Path(tempfile.mkdtemp()) / "sweep"
    >>> outcome = run_sweep(cfg, out)
    >>> outcome.finished, outcome.failed
    (['ce__seed0', 'ce__seed1'], {})
    >>> row = outcome.summary[0]
    >>> row["label"], row["n_finished"], row["seeds"], 0 <= row["test_balanced_accuracy_mean"] <= 1
    ('ce', 2, '0 1', True)
    >>> run_sweep(cfg, out).skipped  # a second call skips finished runs
    ['ce__seed0', 'ce__seed1']
    """
    t0 = time.perf_counter()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise fail("--jobs", "an integer >= 1", jobs)
    if only is not None and only not in ("runs", "ufm", "posthoc"):
        raise fail("--only", "one of 'runs', 'ufm', 'posthoc'", only)
    if only is not None:
        parts = {
            "runs": bool(config.losses),
            "ufm": config.ufm is not None,
            "posthoc": config.posthoc is not None,
        }
        if not parts[only]:
            has = ", ".join(repr(p) for p, present in parts.items() if present)
            block = {"runs": "no [[losses]] entry", "ufm": "no [ufm] block", "posthoc": "no [posthoc] block"}
            raise fail("--only", f"a part the sweep has ({has})", f"{only} (the sweep has {block[only]})")
    say = log or (lambda line: None)
    path = Path(out)
    runs = expand(config)
    runs_dir = path / "runs"
    if only != "ufm":
        check_run_folders(runs, runs_dir)
    do_runs = only in (None, "runs")
    if do_runs and check_paths:
        check_sources(runs)
    check_sweep_out(path)
    if only != "ufm" or not (path / "sweep.json").is_file():
        # The UFM block alone leaves an existing sweep folder's run configs as they are: the
        # scheduler's train lines (cegeo sweep --list) read them, maybe at this very moment.
        _write_folder(config, runs, path, source_text)
    outcome = SweepOutcome(out=path, runs=runs)

    if config.ufm is not None and only in (None, "ufm"):
        outcome.ufm = _run_ufm(config.ufm, path / "ufm", say)

    if do_runs and runs:
        pending = []
        for run in runs:
            if (runs_dir / run.name / "final.json").is_file():
                outcome.skipped.append(run.name)
                # a worker that died after finishing left an error.json that is not true
                with contextlib.suppress(OSError):
                    (runs_dir / run.name / "error.json").unlink()
            else:
                pending.append(run)
        if outcome.skipped:
            say(f"{len(outcome.skipped)} of {len(runs)} runs finished before: skipped")
        if jobs == 1 or len(pending) <= 1:
            _run_here(pending, runs_dir, outcome, say)
        else:
            _run_workers(pending, path, jobs, outcome, say)

    if config.posthoc is not None and only in (None, "posthoc"):
        _run_posthoc_block(config.posthoc, runs, runs_dir, outcome, say)

    results = load_runs(path)
    outcome.summary = summarize(results)
    write_summary(path / "summary.csv", outcome.summary)
    outcome.wall_time_s = time.perf_counter() - t0
    return outcome


def _describe_final(final: Mapping[str, Any]) -> str:
    test = final.get("test") or {}
    groups = list((final.get("groups") or {}).keys())
    minority = (test.get("group_recall") or {}).get(groups[-1]) if groups else None
    parts = [f"test bal. acc {_num(test.get('balanced_accuracy'))}"]
    if minority is not None:
        parts.append(f"minority recall {_num(minority)}")
    parts.append(f"{_num(final.get('wall_time_s'), 1)} s")
    return ", ".join(parts)


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _run_here(
    pending: Sequence[SweepRun], runs_dir: Path, outcome: SweepOutcome, say: Callable[[str], None]
) -> None:
    for i, run in enumerate(pending, 1):
        status = run_one(run.config, runs_dir / run.name)
        _record(run, status, runs_dir, outcome, say, f"[{i}/{len(pending)}]")


def _record(
    run: SweepRun,
    status: Mapping[str, Any],
    runs_dir: Path,
    outcome: SweepOutcome,
    say: Callable[[str], None],
    prefix: str,
) -> None:
    if status["status"] == "failed":
        outcome.failed[run.name] = status["error"]
        say(f"{prefix} {run.name}: FAILED: {status['error']} (see {runs_dir / run.name / 'error.json'})")
    elif status["status"] == "skipped":
        outcome.skipped.append(run.name)
        say(f"{prefix} {run.name}: finished before, skipped")
    elif status["status"] == "busy":
        outcome.busy.append(run.name)
        say(f"{prefix} {run.name}: being trained by another process, skipped")
    else:
        outcome.finished.append(run.name)
        final = read_json(runs_dir / run.name / "final.json")
        say(f"{prefix} {run.name}: {_describe_final(final)}")


def _worker_env(threads: int, slot: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["CEGEO_SWEEP_THREADS"] = str(threads)
    gpus = _visible_gpus()
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    # The worker must import this very cegeo (an editable install or PYTHONPATH=src). An
    # installed one lies in site-packages, which the worker's Python searches anyway: put on
    # PYTHONPATH it would come before the standard library.
    src = str(Path(__file__).resolve().parents[1])
    if src not in _site_packages():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _site_packages() -> set[str]:
    import site

    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return {str(Path(f).resolve()) for f in folders}


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - torch without a working CUDA runtime
        return []


def _run_workers(
    pending: Sequence[SweepRun], out: Path, jobs: int, outcome: SweepOutcome, say: Callable[[str], None]
) -> None:
    cores = _cores()
    threads = max(1, cores // jobs)
    if jobs > cores:
        say(f"note: {jobs} jobs on {cores} cores: runs will share cores (1 thread each)")
    runs_dir = out / "runs"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    queue = deque(pending)
    free = list(range(jobs))
    running: dict[int, tuple[subprocess.Popen[bytes], SweepRun, Any]] = {}
    done = 0
    # `kill PARENT` (SIGTERM) or a closed terminal (SIGHUP) stops the workers too, as Ctrl-C
    # does, instead of leaving them training as orphans.
    installed = _signals.install()
    try:
        while queue or running:
            while queue and free:
                slot = free.pop(0)
                run = queue.popleft()
                with contextlib.suppress(OSError):  # a folder we cannot write: the worker says so
                    (runs_dir / run.name).mkdir(parents=True, exist_ok=True)
                    (runs_dir / run.name / "error.json").unlink()
                fh = open(logs / f"{run.name}.log", "wb")  # closed when the worker ends
                cmd = _worker_command(out / "configs" / f"{run.name}.toml", runs_dir / run.name)
                proc = subprocess.Popen(
                    cmd, stdout=fh, stderr=subprocess.STDOUT, env=_worker_env(threads, slot)
                )
                running[slot] = (proc, run, fh)
            time.sleep(0.05)
            for slot, (proc, run, fh) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                fh.close()
                del running[slot]
                free.append(slot)
                done += 1
                status = _worker_status(run, code, runs_dir, logs)
                _record(run, status, runs_dir, outcome, say, f"[{done}/{len(pending)}]")
    finally:
        _signals.uninstall(installed)
        for proc, _, _fh in running.values():
            proc.terminate()
        for proc, _, fh in running.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()
            fh.close()


_BUSY_EXIT = 75  # a worker's exit status for "the run is being trained by another process"


def _worker_command(config_file: Path, run_dir: Path) -> list[str]:
    """The worker process of one run (this interpreter, this cegeo)."""
    return [sys.executable, "-m", "cegeo.sweep", str(config_file), str(run_dir)]


def _worker_status(run: SweepRun, code: int, runs_dir: Path, logs: Path) -> dict[str, Any]:
    folder = runs_dir / run.name
    if code == _BUSY_EXIT:  # another process trains it (or has just finished it): not ours
        return {"status": "busy", "error": "trained by another process"}
    if (folder / "final.json").is_file():  # finished, even if the worker died on its way out
        return {"status": "finished", "error": None}
    error_file = folder / "error.json"
    if error_file.is_file():
        return {"status": "failed", "error": read_json(error_file).get("error", "unknown error")}
    # The worker died without writing error.json (killed, out of memory, crashed interpreter).
    tail = ""
    log_file = logs / f"{run.name}.log"
    if log_file.is_file():
        tail = log_file.read_text(errors="replace")[-4000:]
    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    record = {
        "error": f"the worker process ended without a result ({how})",
        "type": "WorkerDied",
        "traceback": tail,
    }
    _write_error(folder, record)
    return {"status": "failed", "error": record["error"]}


def _worker_main(argv: Sequence[str]) -> int:
    """``python -m cegeo.sweep CONFIG.toml RUN_DIR``: one run, error.json on failure."""
    if len(argv) != 2:
        print("usage: python -m cegeo.sweep CONFIG.toml RUN_DIR", file=sys.stderr)
        return 2
    import torch

    try:
        config = load_run_config(argv[0])
    except Exception as exc:
        _write_error(Path(argv[1]), _error_record(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threads = os.environ.get("CEGEO_SWEEP_THREADS")
    if threads and config.runtime.threads is None:
        # The run trains on this worker's share of the cores. Float sums depend on the thread
        # count, so the run's config.toml records it: `cegeo train --config RUN/config.toml`
        # then reproduces the run bitwise, as it does for a run of `--jobs 1`.
        runtime = dataclasses.replace(config.runtime, threads=int(threads))
        config = dataclasses.replace(config, runtime=runtime)
    torch.set_num_threads(config.runtime.threads or torch.get_num_threads())
    print(f"cegeo sweep worker: {argv[1]} with {torch.get_num_threads()} CPU thread(s)", flush=True)
    # The sweep stops its workers with SIGTERM (Ctrl-C, `kill PARENT`, a closed terminal): the
    # run then cleans up as on Ctrl-C (.lock, temporary files, a folder without a checkpoint yet)
    # instead of dying on the spot.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _signals.interrupt)
    try:
        status = run_one(config, argv[1])
    except KeyboardInterrupt:
        print("stopped by a signal", file=sys.stderr)
        return 130
    if status["status"] == "failed":
        print(f"error: {status['error']}", file=sys.stderr)
        return 1
    if status["status"] == "busy":
        print(f"note: {status['error']}", file=sys.stderr)
        return _BUSY_EXIT
    return 0


# ------------------------------------------------------------------------------------- UFM block


def _run_ufm(exp: Any, folder: Path, say: Callable[[str], None]) -> str:
    """Simulate the [ufm] block as one batch; write the ``cegeo ufm --out`` layout into ``folder``."""
    from .config import to_toml_text

    expected = to_dict(exp)
    summary_file = folder / "summary.json"
    if summary_file.is_file():
        with contextlib.suppress(Exception):
            if read_json(summary_file).get("experiment") == json.loads(json.dumps(expected)):
                say("ufm: finished before, skipped")
                return "skipped"
    t0 = time.perf_counter()
    result = exp.run()
    wall = time.perf_counter() - t0
    configs = exp.configs()
    folder.mkdir(parents=True, exist_ok=True)
    result.to_csv(folder / "ufm.csv")
    write_text(folder / "config.toml", to_toml_text(exp))
    rows = []
    for b, row in enumerate(result.final_rows()):
        cfg = configs[b]
        rows.append(
            {
                **row,
                "loss_name": cfg.loss,
                "hyper": cfg.full_hyper(),
                "seed": cfg.seed,
                "theory": result.theory[b].summary,
            }
        )
    write_json(
        summary_file,
        {
            "experiment": expected,
            "profile": exp.describe(),
            "class_counts": result.class_counts,
            "groups": result.groups.as_dict(),
            "train_time_s": result.train_time_s,
            "wall_time_s": wall,
            "configs": rows,
            "environment": environment_info(),
        },
    )
    say(f"ufm: {len(configs)} configurations x {exp.epochs} epochs in {wall:.1f} s")
    return "done"


def load_ufm(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read a UFM result folder (a sweep's ``ufm/`` or ``cegeo ufm --out``); None if absent.

    Returns
    -------
    dict or None
        ``summary.json`` with, in every ``configs`` entry, ``loss_name``, ``hyper`` (all
        hyperparameters) and ``seed`` (reconstructed from the experiment when missing).
    """
    p = Path(folder) / "summary.json"
    if not p.is_file():
        return None
    data = read_json(p)
    if not isinstance(data, dict) or not isinstance(data.get("configs"), list):
        raise fail(str(p), "a UFM summary.json with a 'configs' list", type(data).__name__)
    rows = data["configs"]
    if rows and any("loss_name" not in r for r in rows):
        from .ufm import UFMExperiment

        configs = from_dict(UFMExperiment, data["experiment"]).configs()
        if len(configs) != len(rows):
            raise fail(str(p), f"{len(configs)} configs (as its experiment lists)", len(rows))
        for row, cfg in zip(rows, configs, strict=True):
            row.update(loss_name=cfg.loss, hyper=cfg.full_hyper(), seed=cfg.seed)
    return data


# --------------------------------------------------------------------------------------- posthoc


def _posthoc_matches(folder: Path, spec: PosthocSpec, run: SweepRun) -> bool:
    """Whether ``folder/posthoc.json`` answers this ``[posthoc]`` block (methods, metric, normal
    class, budget); an unreadable or older file does not, nor one whose geometry an older cegeo
    predicted at a training sampler's expected draws (cegeo predicts at the class counts now)."""
    from .data import class_index
    from .rebalance import RunFolder, parse_methods

    try:
        done = read_json(folder / "posthoc.json")
        normal = run.config.data.normal_class
        if normal is not None:
            normal = class_index("normal_class", normal, RunFolder(folder).class_names)
        return (
            isinstance(done, Mapping)
            and done.get("metric") == spec.metric
            and done.get("normal_class") == normal
            and done.get("max_false_alarm") == (spec.max_false_alarm if normal is not None else None)
            and set(done.get("methods", [])) | set(done.get("skipped", {}))
            == set(parse_methods(spec.methods))
            and not _geometry_at_sampler_draws(done)
        )
    except (InputError, OSError, ValueError):
        return False


def _geometry_at_sampler_draws(done: Mapping[str, Any]) -> bool:
    """Whether a posthoc.json records a geometry fit an older cegeo made at the expected draws of
    a sampler (its entry has ``sampler`` other than ``"none"``), not at the class counts."""
    results = done.get("results")
    if not isinstance(results, Mapping):
        return False
    return any(
        isinstance(entry, Mapping) and entry.get("sampler", "none") != "none"
        for name, entry in results.items()
        if name in ("geometry", "geometry_tuned")
    )


def _run_posthoc_block(
    spec: PosthocSpec,
    runs: Sequence[SweepRun],
    runs_dir: Path,
    outcome: SweepOutcome,
    say: Callable[[str], None],
) -> None:
    from .rebalance import best_method, false_alarm_budget, run_posthoc, within_budget

    for run in runs:
        if run.loss not in spec.losses and run.loss_label not in spec.losses:
            continue
        folder = runs_dir / run.name
        if not (folder / "final.json").is_file():
            continue
        if (folder / "posthoc.json").is_file():
            if _posthoc_matches(folder, spec, run):
                outcome.posthoc[run.name] = "skipped"
                continue
            say(
                f"posthoc {run.name}: posthoc.json was made with other [posthoc] settings "
                "or by an older cegeo: refitting"
            )
        try:
            result = run_posthoc(
                folder,
                spec.methods,
                metric=spec.metric,
                normal_class=run.config.data.normal_class,
                max_false_alarm=spec.max_false_alarm,
            )
        except InputError as exc:
            outcome.posthoc[run.name] = f"failed: {exc}"
            say(f"posthoc {run.name}: FAILED: {exc}")
            continue
        outcome.posthoc[run.name] = "done"
        raw = result["raw"]["test"]
        best = best_method(result)  # chosen on validation
        if best is not None:
            after = result["results"][best]["test"]
            say(
                f"posthoc {run.name}: {best} (best on val) test minority recall "
                f"{_num(raw.get('minority_recall'))} -> {_num(after.get('minority_recall'))}"
            )
        elif result["methods"]:
            budget = false_alarm_budget(result)
            if within_budget(result["raw"]["val"].get("false_alarm"), budget):
                say(f"posthoc {run.name}: no method beat the uncorrected predictions on val")
            else:
                say(f"posthoc {run.name}: nothing kept the val false-alarm rate within the budget {budget:g}")


# ---------------------------------------------------------------------------------- reading runs


@dataclass
class RunResult:
    """A run folder as read back (finished or not): files, status and its place in the grid."""

    path: Path
    name: str
    status: str  # "finished" | "failed" | "unfinished" | "pending"
    group: str
    setup: str
    setup_label: str
    loss: str
    loss_label: str
    hyper: dict[str, float]  # all hyperparameters (final.json or the config, defaults filled in)
    sweep_hyper: dict[str, float]  # those the sweep set (empty outside sweeps)
    axes: dict[str, Any]
    seed: int | None
    config: RunConfig | None
    final: dict[str, Any] | None
    records: list[dict[str, Any]]
    error: dict[str, Any] | None
    posthoc: dict[str, Any] | None

    @property
    def minority_group(self) -> str | None:
        groups = list(((self.final or {}).get("groups") or {}).keys())
        return groups[-1] if groups else None

    def metric(self, key: str) -> float | None:
        """A final metric by summary key (see :data:`SUMMARY_METRICS`); None when unavailable."""
        return _METRIC_GETTERS[key](self)


def _is_run_folder(p: Path) -> bool:
    if not p.is_dir() or (p / "ufm.csv").is_file():  # a UFM result folder also holds a config.toml
        return False
    return any((p / f).is_file() for f in ("final.json", "config.toml", "error.json", "metrics.jsonl"))


def load_runs(folder: str | os.PathLike[str]) -> list[RunResult]:
    """Every run of a sweep folder, a run folder, or a folder of run folders (two levels deep).

    A sweep folder (``sweep.json``) lists its runs in grid order, including those not started
    (status ``pending``). Elsewhere, runs are grouped over seeds by their configuration without
    the seed; a sweep folder found inside (one or two levels deep) contributes the run folders
    under its ``runs/``.

    Raises
    ------
    ValueError
        ``folder`` does not exist or is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise fail("FOLDER", "an existing run folder or sweep folder", str(folder))
    index = root / "sweep.json"
    if index.is_file():
        meta = read_json(index)
        runs = meta.get("runs", []) if isinstance(meta, dict) else None
        if not isinstance(runs, list) or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and _RUN_NAME_RE.fullmatch(m["name"])
            for m in runs
        ):
            raise InputError(
                f"`{index}` must be the index cegeo sweep writes (a 'runs' list of {{'name': ...}}); "
                "got another structure."
            )
        return [_read_run(root / "runs" / m["name"], m) for m in runs]
    if _is_run_folder(root):
        return _group_adhoc([_read_run(root, None)])
    found: list[Path] = []
    for child in sorted(root.iterdir()):
        if _is_run_folder(child):
            found.append(child)
        elif (child / "sweep.json").is_file():
            found.extend(_sweep_run_folders(child))
        elif child.is_dir():
            for g in sorted(child.iterdir()):
                if _is_run_folder(g):
                    found.append(g)
                elif (g / "sweep.json").is_file():
                    found.extend(_sweep_run_folders(g))
    return _group_adhoc([_read_run(p, None) for p in found])


def _sweep_run_folders(sweep: Path) -> list[Path]:
    """The run folders a sweep folder holds (those started: ``runs/<name>``)."""
    runs = sweep / "runs"
    return [p for p in sorted(runs.iterdir()) if _is_run_folder(p)] if runs.is_dir() else []


def _read_run(path: Path, meta: Mapping[str, Any] | None) -> RunResult:
    final = _maybe_json(path / "final.json")
    error = _maybe_json(path / "error.json")
    posthoc = _maybe_json(path / "posthoc.json")
    records: list[dict[str, Any]] = []
    if (path / "metrics.jsonl").is_file():
        with contextlib.suppress(InputError):
            records = read_jsonl(path / "metrics.jsonl", ints=("epoch",))
    config = None
    candidates = [path / "config.toml"]
    if meta is not None:  # a sweep run not started yet: the sweep wrote its config
        candidates.append(path.parent.parent / "configs" / f"{meta['name']}.toml")
    for cfg_file in candidates:
        if config is None and cfg_file.is_file():
            with contextlib.suppress(InputError, OSError):
                config = load_run_config(cfg_file)
    if final is not None:
        status = "finished"
    elif error is not None:
        status = "failed"
    elif path.exists():
        status = "unfinished"
    else:
        status = "pending"
    loss_info = (final or {}).get("loss") or {}
    loss = loss_info.get("name") or (config.loss.name if config else (meta or {}).get("loss", "?"))
    hyper = dict(loss_info.get("hyper") or {})
    if not hyper and config is not None:
        hyper = _full_hyper(config.loss.name, config.loss.hyper)
    if not hyper and meta is not None:
        hyper = _full_hyper(meta["loss"], meta.get("hyper") or {})
    seed = (final or {}).get("seed", config.seed if config else (meta or {}).get("seed"))
    if meta is not None:
        return RunResult(
            path=path,
            name=meta["name"],
            status=status,
            group=meta["group"],
            setup=meta.get("setup", ""),
            setup_label=meta.get("setup_label") or meta.get("setup", ""),
            loss=meta["loss"],
            loss_label=meta.get("loss_label") or meta["loss"],
            hyper=hyper,
            sweep_hyper=dict(meta.get("hyper") or {}),
            axes=dict(meta.get("axes") or {}),
            seed=meta.get("seed"),
            config=config,
            final=final,
            records=records,
            error=error,
            posthoc=posthoc,
        )
    return RunResult(
        path=path,
        name=path.name,
        status=status,
        group="",
        setup="",
        setup_label="",
        loss=loss,
        loss_label=loss,
        hyper=hyper,
        sweep_hyper={},
        axes={},
        seed=seed,
        config=config,
        final=final,
        records=records,
        error=error,
        posthoc=posthoc,
    )


def _full_hyper(loss: str, hyper: Mapping[str, float]) -> dict[str, float]:
    from .losses import get_loss_info

    try:
        defaults = dict(get_loss_info(loss).defaults)
    except InputError:
        defaults = {}
    return {**{k: float(v) for k, v in defaults.items()}, **{k: float(v) for k, v in hyper.items()}}


def _maybe_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (InputError, OSError):
        return None
    return data if isinstance(data, dict) else None


def _group_adhoc(runs: list[RunResult]) -> list[RunResult]:
    """Group runs outside a sweep: the same configuration except the seed is one group."""

    def key(r: RunResult) -> str:
        if r.config is not None:
            d = to_dict(dataclasses.replace(r.config, seed=0, runtime=RuntimeConfig()))
        else:
            f = r.final or {}
            d = {k: f.get(k) for k in ("data", "imbalance", "model", "loss", "epochs")}
        return json.dumps(d, sort_keys=True, default=str)

    def setup_of(r: RunResult) -> tuple[str, str, str]:
        if r.config is not None:
            return r.config.model.name, r.config.data.source, r.config.data.imbalance
        f = r.final or {}
        return str(f.get("model", "?")), str(f.get("data", "?")), str(f.get("imbalance", "?"))

    several = len({setup_of(r) for r in runs}) > 1
    loss_labels: dict[str, str] = {}  # config key -> loss label
    taken: dict[tuple[str, str], int] = {}
    for r in runs:
        model, data, imbalance = setup_of(r)
        source = data.split(":")[0]
        r.setup = f"{model}-{source}-{_fmt_value(imbalance)}" if several else ""
        r.setup_label = f"{model} · {source} · {imbalance}" if several else ""
        r.sweep_hyper = {h: v for h, v in r.hyper.items() if h != "normalize"}
        k = key(r)
        if k not in loss_labels:
            shown = (r.setup, r.loss + json.dumps(r.sweep_hyper, sort_keys=True))
            taken[shown] = taken.get(shown, 0) + 1
            loss_labels[k] = r.loss if taken[shown] == 1 else f"{r.loss}#{taken[shown]}"
        r.loss_label = loss_labels[k]
        name = r.loss_label + "".join(f"_{h}={_fmt_value(v)}" for h, v in r.sweep_hyper.items())
        r.group = f"{r.setup}__{name}" if r.setup else name
    return runs


# -------------------------------------------------------------------------------------- summary


def _test(r: RunResult, key: str) -> float | None:
    test = (r.final or {}).get("test") or {}
    return test.get(key)


def _minority(r: RunResult, split: str = "test") -> float | None:
    s = (r.final or {}).get(split) or {}
    g = r.minority_group
    return (s.get("group_recall") or {}).get(g) if g else None


def _geo(r: RunResult, key: str) -> float | None:
    return ((r.final or {}).get("geometry") or {}).get(key)


def _conv(r: RunResult, i: int) -> float | None:
    point = convergence_point(r.records)
    return None if point is None else float(point[i])


_METRIC_GETTERS: dict[str, Callable[[RunResult], float | None]] = {
    "test_balanced_accuracy": lambda r: _test(r, "balanced_accuracy"),
    "test_minority_recall": _minority,
    "test_worst_class_recall": lambda r: _test(r, "worst_class_recall"),
    "test_false_alarm": lambda r: _test(r, "false_alarm"),
    "val_balanced_accuracy": lambda r: ((r.final or {}).get("val") or {}).get("balanced_accuracy"),
    "dist_W": lambda r: _geo(r, "dist_W"),
    "dist_H": lambda r: _geo(r, "dist_H"),
    "dist_M": lambda r: _geo(r, "dist_M"),
    "dist_H_centred": lambda r: _geo(r, "dist_H_centred"),
    "wall_time_s": lambda r: (r.final or {}).get("wall_time_s"),
    "train_time_s": lambda r: (r.final or {}).get("train_time_s"),
    "epoch_to_95pct_val_bal_acc": lambda r: _conv(r, 0),
    "time_to_95pct_val_bal_acc_s": lambda r: _conv(r, 1),
}

#: Metrics of summary.csv (each as ``<name>_mean`` and ``<name>_std`` over seeds).
SUMMARY_METRICS: tuple[str, ...] = tuple(_METRIC_GETTERS)


def aggregate(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (ddof = 1; None below two values) and count of the non-missing values.

    Examples
    --------
    >>> mean, std, n = aggregate([0.8, None, 0.9])
    >>> round(mean, 6), round(std, 6), n
    (0.85, 0.070711, 2)
    >>> aggregate([None])
    (None, None, 0)
    """
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if xs.size == 0:
        return None, None, 0
    mean = float(xs.mean())
    std = float(xs.std(ddof=1)) if xs.size > 1 else None
    return mean, std, int(xs.size)


def summarize(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per group (grid point without the seed): identity columns, counts, mean/std per metric.

    Columns: ``group`` (the grid point's name; in a sweep the run name without
    ``__seed<seed>``), ``setup``, ``data``, ``imbalance``, ``model``, ``loss``, ``label``, ``hyper``
    (``name=value;...``, all hyperparameters), one column per hyperparameter name, one per extra
    grid axis, ``seeds`` (of the finished runs), ``n_finished``, ``n_failed``,
    ``n_unfinished``, then ``<metric>_mean``, ``<metric>_std`` for :data:`SUMMARY_METRICS`
    (``test_false_alarm`` only when some run reports it).
    """
    groups: dict[str, list[RunResult]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    hyper_names: list[str] = []
    axis_names: list[str] = []
    for r in runs:
        for h in r.hyper:
            if h not in hyper_names:
                hyper_names.append(h)
        for a in r.axes:
            if a not in axis_names:
                axis_names.append(a)
    with_fa = any(r.metric("test_false_alarm") is not None for r in runs)
    metrics = [m for m in SUMMARY_METRICS if with_fa or m != "test_false_alarm"]
    rows = []
    for group, members in groups.items():
        first = members[0]
        done = [r for r in members if r.status == "finished"]
        ref = done[0] if done else first
        cfg = ref.config
        final = ref.final or {}
        row: dict[str, Any] = {
            "group": group,
            "setup": first.setup_label or first.setup,
            "data": cfg.data.source if cfg else final.get("data"),
            "imbalance": cfg.data.imbalance if cfg else final.get("imbalance"),
            "model": cfg.model.name if cfg else final.get("model"),
            "loss": first.loss,
            "label": _group_label(first),
            "hyper": ";".join(f"{k}={_fmt_value(v)}" for k, v in ref.hyper.items()),
        }
        for h in hyper_names:
            row[h] = ref.hyper.get(h)
        for a in axis_names:
            row[a] = first.axes.get(a)
        row["seeds"] = " ".join(str(r.seed) for r in done)
        row["n_finished"] = len(done)
        row["n_failed"] = sum(r.status == "failed" for r in members)
        row["n_unfinished"] = sum(r.status in ("unfinished", "pending") for r in members)
        for m in metrics:
            mean, std, _ = aggregate(r.metric(m) for r in done)
            row[f"{m}_mean"] = mean
            row[f"{m}_std"] = std
        rows.append(row)
    return rows


def _group_label(r: RunResult) -> str:
    """``ldt (gamma=0.5)``: the loss label and the hyperparameters the sweep varied or set."""
    shown = {k: v for k, v in r.sweep_hyper.items()}
    text = r.loss_label
    if shown:
        text += " (" + ", ".join(f"{k}={_fmt_value(v)}" for k, v in shown.items()) + ")"
    if r.axes:
        text += " [" + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r.axes.items()) + "]"
    return text


#: summary.csv's columns other than the hyperparameters, axes and metrics, in order.
_SUMMARY_IDENTITY = ("group", "setup", "data", "imbalance", "model", "loss", "label", "hyper")
_SUMMARY_COUNTS = ("seeds", "n_finished", "n_failed", "n_unfinished")


def write_summary(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write summary rows as CSV (atomically; floats in full precision, missing values empty).
    Without rows (a sweep of a [ufm] block only) the file still has its header, so CSV readers
    (``pandas.read_csv``) read an empty table rather than fail on an empty file."""
    if rows:
        return write_csv(path, rows)
    metrics = [f"{m}_{s}" for m in SUMMARY_METRICS if m != "test_false_alarm" for s in ("mean", "std")]
    write_text(path, ",".join([*_SUMMARY_IDENTITY, *_SUMMARY_COUNTS, *metrics]) + "\n")
    return Path(path)


if __name__ == "__main__":  # the worker of `cegeo sweep --jobs N`
    sys.exit(_worker_main(sys.argv[1:]))
