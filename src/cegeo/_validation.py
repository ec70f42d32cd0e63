"""Input validation shared by every module.

User errors raise :class:`InputError` (a :class:`ValueError`) whose one-line message names the
parameter, what was expected and what was got::

    `class_counts` must be positive integers; got [10, 0].

The CLI prints that line and exits with status 2. Internal invariants use ``assert``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "InputError",
    "OutOfRangeError",
    "check_choice",
    "check_class_counts",
    "check_finite",
    "check_fraction",
    "check_int",
    "check_positive",
    "fail",
    "renamed",
]


class InputError(ValueError):
    """Bad user input: one line naming the parameter, what was expected and what was got."""


class OutOfRangeError(InputError):
    """Values whose computation overflows or vanishes in float64 (e.g. ``gamma = 1e6`` at R = 5).

    ``param`` names what to change (``"gamma"``, ``"gamma, tau"``, or ``"loss"`` for temperatures
    whose limiting geometry float64 cannot hold), so callers can rename it for their own options
    without reading the message.
    """

    def __init__(self, param: str, expected: str, got: Any) -> None:
        super().__init__(str(fail(param, expected, got)))
        self.param = param


def renamed(err: InputError, names: Mapping[str, str]) -> InputError:
    """``err`` with its parameters named as the user set them: with ``{"lr": "--lr"}``,
    "`lr` must be ..." becomes "`--lr` must be ..." (every back-quoted name in the mapping is
    renamed, so "... (`val_fraction` needs ...)" too); an error naming none of them is returned
    as it is.

    Examples
    --------
    >>> str(renamed(InputError("`tau` must be a number; got 'x'."), {"tau": "--tau"}))
    "`--tau` must be a number; got 'x'."
    >>> str(renamed(InputError("class 3 is too small (`val_fraction` needs 2)."), {"val_fraction": "--val-fraction"}))
    'class 3 is too small (`--val-fraction` needs 2).'
    """
    message = str(err)
    parts = message.split("`")
    # back-quoted names are the odd parts of the message split at back quotes
    new = [names.get(p, p) if i % 2 else p for i, p in enumerate(parts)] if len(parts) > 2 else parts
    if new == parts:
        return err
    return InputError("`".join(new))


def check_options(param: str, given: Iterable[str], valid: Iterable[str], owner: str) -> None:
    """Refuse option names that ``owner`` does not take (``valid``), naming the first unknown one.

    Examples
    --------
    >>> check_options("model.options", {"width": 8, "dropout": 0.1}, ["width", "depth"], "'mlp'")
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `model.options` must be options of 'mlp' ('width', 'depth'); got 'dropout'.
    """
    valid = list(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        names = ", ".join(repr(o) for o in valid) or "none"
        raise fail(param, f"options of {owner} ({names})", unknown[0])


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, str):
        limit = 300  # what the user typed (a path, a spec) is shown whole unless absurdly long
    text = repr(value)
    if isinstance(value, np.ndarray):
        text = repr(value.tolist())
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(param: str, expected: str, got: Any) -> InputError:
    """Build the standard error (raise the result).

    Examples
    --------
    >>> str(fail("R", "a number >= 1", 0.5))
    '`R` must be a number >= 1; got 0.5.'
    """
    return InputError(f"`{param}` must be {expected}; got {_short(got)}.")


def check_finite(param: str, value: Any) -> float:
    """Return ``value`` as a finite float, else raise :class:`InputError`."""
    if isinstance(value, bool):
        raise fail(param, "a finite number", value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise fail(param, "a finite number", value) from None
    if not math.isfinite(out):
        raise fail(param, "a finite number", value)
    return out


def check_positive(param: str, value: Any, *, strict: bool = True) -> float:
    """Return ``value`` as a finite float that is > 0 (or >= 0 with ``strict=False``)."""
    out = check_finite(param, value)
    if out < 0 or (strict and out == 0):
        raise fail(param, "a number > 0" if strict else "a number >= 0", value)
    return out


def check_fraction(param: str, value: Any, *, low_open: bool = True, high_open: bool = True) -> float:
    """Return ``value`` as a float in the interval (0, 1) (ends per ``low_open``/``high_open``)."""
    out = check_finite(param, value)
    lo_ok = out > 0 if low_open else out >= 0
    hi_ok = out < 1 if high_open else out <= 1
    if not (lo_ok and hi_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise fail(param, f"a number in {interval}", value)
    return out


#: The largest integer a size, count or epoch number may be unless a caller says otherwise: a
#: huge one (10**30, 2**63) would otherwise overflow numpy or torch with a traceback.
INT_MAX = 2**31 - 1
#: The largest seed (numpy's generators take 32 bits; the trainer derives its own from it).
SEED_MAX = 2**32 - 1


def check_int(param: str, value: Any, *, minimum: int | None = None, maximum: int | None = INT_MAX) -> int:
    """Return ``value`` as an int (integral floats accepted), optionally ``>= minimum``, and at
    most ``maximum`` (default :data:`INT_MAX`; ``None``: unbounded)."""
    if isinstance(value, bool):
        raise fail(param, "an integer", value)
    if isinstance(value, (int, np.integer)):
        out = int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        out = int(value)
    else:
        raise fail(param, "an integer", value)
    if minimum is not None and out < minimum:
        raise fail(param, f"an integer >= {minimum}", value)
    if maximum is not None and out > maximum:
        lo = f"in [{minimum}, {maximum:_}]".replace("_", ",") if minimum is not None else f"<= {maximum:,}"
        raise fail(param, f"an integer {lo}", value)
    return out


def check_choice(param: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    options = list(choices)
    if value not in options:
        raise fail(param, "one of " + ", ".join(repr(c) for c in options), value)
    return value


def check_class_counts(class_counts: Any, param: str = "class_counts") -> np.ndarray:
    """Validate per-class training counts and return them as an int64 array of shape (k,).

    Counts must be a non-empty 1-D sequence of positive integers (a class with no samples would
    put ``log 0`` into logit adjustment and has no geometry).

    Examples
    --------
    >>> check_class_counts([50, 5]).tolist()
    [50, 5]
    >>> check_class_counts([5, 0])
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `class_counts` must be positive integers (no empty class); got [5, 0].
    """
    if isinstance(class_counts, (str, bytes)) or class_counts is None:
        raise fail(param, "a non-empty sequence of positive integers", class_counts)
    try:
        arr = np.asarray(class_counts)
    except (TypeError, ValueError):
        raise fail(param, "a non-empty sequence of positive integers", class_counts) from None
    if arr.ndim != 1 or arr.size == 0:
        raise fail(param, "a non-empty 1-D sequence of positive integers", class_counts)
    if arr.dtype == object and all(isinstance(v, int) and not isinstance(v, bool) for v in arr):
        arr = arr.astype(np.float64)  # Python ints beyond int64: refused by the size check below
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise fail(param, "integers", class_counts)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise fail(param, "integers", class_counts)
    if np.any(arr <= 0):
        raise fail(param, "positive integers (no empty class)", class_counts)
    if np.any(arr > 2**53):
        raise fail(param, "integers no larger than 2**53", class_counts)
    return arr.astype(np.int64)


def as_float_vector(param: str, value: Any, k: int | None = None) -> np.ndarray:
    """A finite float64 vector (of length ``k`` if given)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(param, "a sequence of finite numbers", value) from None
    if arr.ndim != 1 or arr.size == 0:
        raise fail(param, "a non-empty 1-D sequence of finite numbers", value)
    if not np.all(np.isfinite(arr)):
        raise fail(param, "finite numbers", value)
    if k is not None and arr.size != k:
        raise fail(param, f"a vector of length {k} (one entry per class)", value)
    return arr


def normalise_names(names: Sequence[str]) -> str:
    """Render names as ``'a', 'b', 'c'`` for messages."""
    return ", ".join(repr(n) for n in names)
