"""A small name -> info registry shared by losses, models, rebalancers and data sources.

Each kind defines a frozen dataclass with at least a ``name`` field and keeps one
:class:`Registry` of them; ``create_x(name, **kw)`` and ``list_x()`` are thin wrappers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from ._validation import InputError, fail


class _Named(Protocol):
    @property
    def name(self) -> str: ...


I = TypeVar("I", bound=_Named)


class Registry(Generic[I]):
    """Ordered mapping of names to frozen info objects.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Info:
    ...     name: str
    >>> reg = Registry("widget")
    >>> _ = reg.register(Info("a"))
    >>> reg.names()
    ['a']
    >>> reg.get("b")
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: unknown widget 'b'; valid names: 'a'.
    >>> reg.get("b", param="--widget")
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `--widget` must be a widget name, one of 'a'; got 'b'.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, I] = {}

    def register(self, info: I) -> I:
        assert info.name not in self._entries, f"{self.kind} {info.name!r} registered twice"
        self._entries[info.name] = info
        return info

    def get(self, name: str, param: str | None = None) -> I:
        """The entry called ``name``; an unknown name is an :class:`InputError` listing the valid
        ones, naming ``param`` (the option the name came from) where given."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            valid = ", ".join(repr(n) for n in self._entries)
            if param is not None:
                raise fail(param, f"a {self.kind} name, one of {valid}", name) from None
            raise InputError(f"unknown {self.kind} {name!r}; valid names: {valid}.") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[I]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
