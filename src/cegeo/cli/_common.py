"""Parsers and printers shared by the sub-commands.

Every parser raises :class:`InputError` with the option's name, so the CLI prints one line and
exits with status 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console

from .._validation import InputError, check_class_counts, check_finite, check_int, fail
from ..data.imbalance import _check_ratio, step_k_min

MAX_GRID = 10_001  # most points a START:STOP:NUM grid or a list may have (each one is a computation)

# markup=False: names from the user's data (class names, paths, loss labels) are printed as
# they are, never read as rich markup ("[/b]" would crash, "[link=...]" would hide a link).
console = Console(highlight=False, markup=False)
err_console = Console(stderr=True, highlight=False, markup=False)


def wide_console(width: int = 120) -> Console:
    """The shared console, or a ``width``-column one when output is narrower (pipes, CI logs)."""
    return console if console.width >= width else Console(width=width, highlight=False, markup=False)


def parse_kv(text: str, option: str, allowed: set[str], required: set[str] = frozenset()) -> dict[str, str]:
    """``"k=10,R=10,rho=0.5"`` -> ``{"k": "10", ...}``; unknown, missing or repeated keys are errors.

    Examples
    --------
    >>> parse_kv("k=10, R=2.5", "--longtail", {"k", "R"})
    {'k': '10', 'R': '2.5'}
    >>> parse_kv("k=10,R=10,R=5", "--longtail", {"k", "R"})
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `--longtail` must be key=value pairs with each key once (R is repeated); got 'k=10,R=10,R=5'.
    """
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise fail(option, "comma-separated key=value pairs, e.g. k=10,R=10,rho=0.5", text)
        key = key.strip()
        if key in out:
            raise fail(option, f"key=value pairs with each key once ({key} is repeated)", text)
        out[key] = value.strip()
    unknown = set(out) - allowed
    missing = set(required) - set(out)
    if unknown or missing:
        keys = ", ".join(sorted(allowed, key=str.lower))
        raise fail(
            option, f"key=value pairs with keys from {keys} (required: {', '.join(sorted(required))})", text
        )
    return out


@dataclass(frozen=True)
class StepSpec:
    """A parsed ``--step k=..,R=..,rho=..`` option (R = n_max/n_min >= 1)."""

    k: int
    R: float
    rho: float

    @property
    def k_min(self) -> int:
        return step_k_min(self.k, self.rho)

    @property
    def k_maj(self) -> int:
        return self.k - self.k_min

    def counts(self, n_min: float = 1.0) -> np.ndarray:
        """Class counts (float) with minority size ``n_min`` and majority size ``R * n_min``."""
        return np.array([self.R * n_min] * self.k_maj + [n_min] * self.k_min, dtype=np.float64)


def parse_step(text: str, option: str = "--step") -> StepSpec:
    kv = parse_kv(text, option, {"k", "R", "rho"}, {"k", "R", "rho"})
    k = check_int("k", _num(kv["k"], "k"), minimum=2)
    R = _check_ratio(kv["R"])
    rho = check_finite("rho", kv["rho"])
    step_k_min(k, rho)
    return StepSpec(k, R, rho)


def parse_longtail(text: str, option: str = "--longtail") -> tuple[int, float]:
    kv = parse_kv(text, option, {"k", "R"}, {"k", "R"})
    return check_int("k", _num(kv["k"], "k"), minimum=2), _check_ratio(kv["R"])


def longtail_float_counts(k: int, R: float) -> np.ndarray:
    """Scale-free long-tail counts ``R^(-i/(k-1))`` times R (so n_min = 1)."""
    i = np.arange(k, dtype=np.float64)
    return R * R ** (-i / (k - 1))


def parse_counts(text: str, option: str = "--counts") -> np.ndarray:
    """``"500,50,5"`` -> int64 counts; every entry must be a positive integer (none empty).

    Examples
    --------
    >>> parse_counts("500, 50,5").tolist()
    [500, 50, 5]
    >>> parse_counts("500,,50")
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `--counts` must be comma-separated positive integers with no empty entry; got '500,,50'.
    """
    parts = [x.strip() for x in text.split(",")]
    if not all(parts):
        raise fail(option, "comma-separated positive integers with no empty entry", text)
    try:
        values = [float(x) for x in parts]
    except ValueError:
        raise fail(option, "comma-separated positive integers", text) from None
    return check_class_counts(values, option)


def parse_grid(text: str, option: str = "--gamma-grid") -> np.ndarray:
    """``"start:stop:num"`` (inclusive, like numpy.linspace) or a comma-separated list.

    At most ``MAX_GRID`` points; no empty list entries.

    Examples
    --------
    >>> parse_grid("-1.5:1.5:13")[:3].tolist()
    [-1.5, -1.25, -1.0]
    >>> parse_grid("0,0.5").tolist()
    [0.0, 0.5]
    """
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise fail(option, "START:STOP:NUM (e.g. -1.5:1.5:13) or a comma-separated list", text)
        try:
            start, stop = float(parts[0]), float(parts[1])
            num = int(parts[2])
        except ValueError:
            raise fail(option, "START:STOP:NUM with numbers and an integer NUM >= 2", text) from None
        if num < 2 or not (math.isfinite(start) and math.isfinite(stop)) or start >= stop:
            raise fail(option, "START:STOP:NUM with START < STOP and NUM >= 2", text)
        if num > MAX_GRID:
            raise fail(option, f"START:STOP:NUM with NUM <= {MAX_GRID}", text)
        return np.linspace(start, stop, num)
    parts = [x.strip() for x in text.split(",")]
    if not all(parts):
        raise fail(option, "START:STOP:NUM or a comma-separated list with no empty entry", text)
    try:
        values = np.array([float(x) for x in parts])
    except ValueError:
        raise fail(option, "START:STOP:NUM or a comma-separated list of numbers", text) from None
    if not np.all(np.isfinite(values)):
        raise fail(option, "START:STOP:NUM or a comma-separated list of finite numbers", text)
    if values.size > MAX_GRID:
        raise fail(option, f"a list of at most {MAX_GRID} numbers", f"{values.size} numbers")
    return values


def parse_hyper(pairs: list[str] | None, option: str = "--hyper") -> dict[str, float]:
    """Repeated ``--hyper name=value`` options; a name given twice is an error."""
    out: dict[str, float] = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise fail(option, "name=value (e.g. tau=1.5)", item)
        if key in out:
            raise fail(option, f"name=value pairs with distinct names ({key} is given twice)", item)
        out[key] = check_finite(f"{option} {key}", value)
    return out


def loss_hyper(pairs: list[str] | None, **shortcuts: float | None) -> dict[str, float]:
    """``--hyper name=value`` pairs merged with shortcut flags such as ``--gamma``.

    A hyperparameter set both ways is an error, not a silent override:

    >>> loss_hyper(["tau=1"], gamma=0.5)
    {'tau': 1.0, 'gamma': 0.5}
    >>> loss_hyper(["gamma=1"], gamma=0.5)
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: give gamma once: --gamma or --hyper gamma=...; got both.
    """
    out = parse_hyper(pairs)
    for name, value in shortcuts.items():
        if value is not None:
            if name in out:
                raise InputError(f"give {name} once: --{name} or --hyper {name}=...; got both.")
            out[name] = value
    return out


def _num(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise fail(name, "a number", text) from None


def exactly_one(option_values: dict[str, Any]) -> str:
    """Name of the one option given among several mutually exclusive ones."""
    given = [name for name, value in option_values.items() if value not in (None, False)]
    if len(given) != 1:
        names = " | ".join(option_values)
        raise InputError(f"give exactly one of {names}; got {len(given)} ({', '.join(given) or 'none'}).")
    return given[0]
