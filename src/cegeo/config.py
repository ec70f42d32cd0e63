"""Typed configuration: frozen dataclasses read from and written to TOML.

Configs are parsed as data (``tomllib``), never executed. Every key must be a field of the target
dataclass: an unknown key is an error naming it and listing the valid keys; a value of the wrong
type is an error naming the key, the expected type and the value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from ._io import read_toml, to_toml
from ._validation import InputError

__all__ = ["from_dict", "load_toml", "to_dict", "to_toml_text"]

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
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except InputError as exc:
                errors.append(exc)
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
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"`{where}` must be a number; got {value!r}.")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"`{where}` must be an integer; got {value!r}.")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"`{where}` must be true or false; got {value!r}.")
        return value
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


def load_toml(cls: type[T], path: str | Path) -> T:
    """Read a TOML file into dataclass ``cls`` (parsed as data, never executed)."""
    return from_dict(cls, read_toml(path))
