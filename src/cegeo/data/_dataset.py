"""The :class:`Dataset` container every source returns, and its validation.

Layouts (the contract between the sources, :func:`~cegeo.data.make_splits` and the trainer):

* ``kind == "image"``: ``x`` is ``(n, C, H, W)`` ``uint8`` (channels first, raw pixels 0..255);
  the trainer converts to float and normalises on the device.
* ``kind == "tabular"``: ``x`` is ``(n, d)`` ``float32``, finite.
* ``y`` is ``(n,)`` ``int64`` with every label in ``0..num_classes-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_int, fail

__all__ = ["KINDS", "Dataset", "class_index", "described"]

KINDS = ("image", "tabular")


class described(str):
    """A ``got`` text shown as is (unquoted) in :func:`~cegeo._validation.fail` messages."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def _check_x(param: str, x: Any, kind: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise fail(param, "a numpy array", type(x).__name__)
    if kind == "image":
        if x.ndim != 4 or x.dtype != np.uint8:
            raise fail(
                param, "a uint8 array of shape (n, C, H, W) for image data", described(f"{x.dtype} {x.shape}")
            )
        return np.ascontiguousarray(x)
    if x.ndim != 2 or x.dtype != np.float32:
        raise fail(
            param, "a float32 array of shape (n, d) for tabular data", described(f"{x.dtype} {x.shape}")
        )
    if not np.all(np.isfinite(x)):
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise fail(param, "finite numbers (no NaN or inf)", described(f"a non-finite value in row {bad}"))
    return np.ascontiguousarray(x)


def _check_y(param: str, y: Any, n: int, k: int) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.ndim != 1:
        shape = y.shape if isinstance(y, np.ndarray) else type(y).__name__
        raise fail(param, "a 1-D numpy array of integer labels", shape)
    if not np.issubdtype(y.dtype, np.integer):
        raise fail(param, "integer class labels", described(str(y.dtype)))
    if y.shape[0] != n:
        raise fail(param, f"one label per sample ({n} samples)", described(f"{y.shape[0]} labels"))
    if y.size:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            raise fail(param, f"labels in 0..{k - 1} (num_classes = {k})", bad)
    return np.ascontiguousarray(y, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled dataset: a training set and, when the source has one, a test set.

    Constructing one validates it (a user may build a ``Dataset`` from their own arrays): shapes,
    dtypes (see the module docstring), label range, one label per sample, the same feature shape
    in train and test, and at least one training sample of every class (an empty class has no
    count to rebalance and no geometry). Labels are stored as ``int64``.

    Attributes
    ----------
    name : str
        The source spec it came from, e.g. ``"digits"`` or ``"idx:/data/mnist"``.
    kind : str
        ``"image"`` or ``"tabular"``.
    x_train : numpy.ndarray
        ``(n, C, H, W)`` uint8 (image) or ``(n, d)`` float32 (tabular).
    y_train : numpy.ndarray of shape (n,), int64
    x_test, y_test : numpy.ndarray or None
        Same layout, or both ``None`` when the source has no test set.
    num_classes : int
    class_names : tuple of str
        One name per class (``num_classes`` entries).

    Raises
    ------
    ValueError
        Any of the checks above, as a one-line message naming the field.

    Examples
    --------
    >>> import numpy as np
    >>> ds = Dataset("mine", "tabular", np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1]),
    ...              None, None, 2, ("neg", "pos"))
    >>> ds.in_shape, ds.train_counts().tolist()
    ((2,), [2, 2])
    >>> Dataset("mine", "tabular", np.zeros((2, 2), np.float32), np.array([0, 2]), None, None, 2, ("a", "b"))
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `y_train` must be labels in 0..1 (num_classes = 2); got 2.
    """

    name: str
    kind: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray | None = field(repr=False)
    y_test: np.ndarray | None = field(repr=False)
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise fail("kind", "'image' or 'tabular'", self.kind)
        k = check_int("num_classes", self.num_classes, minimum=2)
        x_train = _check_x("x_train", self.x_train, self.kind)
        y_train = _check_y("y_train", self.y_train, x_train.shape[0], k)
        if (self.x_test is None) != (self.y_test is None):
            raise fail("x_test/y_test", "both arrays or both None", described("only one of them"))
        x_test = y_test = None
        if self.x_test is not None:
            x_test = _check_x("x_test", self.x_test, self.kind)
            y_test = _check_y("y_test", self.y_test, x_test.shape[0], k)
            if x_test.shape[1:] != x_train.shape[1:]:
                raise fail(
                    "x_test", f"samples of the training shape {x_train.shape[1:]}", tuple(x_test.shape[1:])
                )
        counts = np.bincount(y_train, minlength=k)
        if np.any(counts == 0):
            missing = int(np.flatnonzero(counts == 0)[0])
            raise fail(
                "y_train",
                f"at least one training sample of every class 0..{k - 1} (set num_classes to the "
                "number of classes present)",
                described(f"no sample of class {missing}"),
            )
        names = tuple(str(n) for n in self.class_names)
        if len(names) != k:
            raise fail("class_names", f"{k} names (one per class)", len(names))
        for attr, value in (
            ("x_train", x_train),
            ("y_train", y_train),
            ("x_test", x_test),
            ("y_test", y_test),
            ("num_classes", k),
            ("class_names", names),
        ):
            object.__setattr__(self, attr, value)

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(C, H, W)`` for images, ``(d,)`` for tabular data."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def has_test(self) -> bool:
        """Whether the source came with its own test set."""
        return self.x_test is not None

    def train_counts(self) -> np.ndarray:
        """Per-class sample counts of the training set, ``(k,)`` int64."""
        return np.bincount(self.y_train, minlength=self.num_classes).astype(np.int64)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (name, kind, shape, classes, train/test sizes and counts)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "n_train": int(self.y_train.size),
            "train_counts": self.train_counts().tolist(),
            "n_test": None if self.y_test is None else int(self.y_test.size),
        }
        return out


def class_index(param: str, value: Any, class_names: Sequence[str]) -> int:
    """The index of a class given by its name (a label such as ``"ok"``) or by its index.

    A string is looked up among the names first (so with names ``("1", "2", "3")`` the text
    ``"1"`` is the class named 1, index 0), then read as an index; an int is an index.

    Examples
    --------
    >>> class_index("normal_class", "ok", ("crack", "ok", "scratch")), class_index("c", 2, ("a", "b", "c"))
    (1, 2)
    """
    names = [str(n) for n in class_names]
    k = len(names)
    shown = ", ".join(f"{i} = {n}" if n != str(i) else str(i) for i, n in enumerate(names[:12]))
    expected = f"a class name or index ({shown}{', ...' if k > 12 else ''})"
    index = value
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        try:
            index = int(value.strip())
        except ValueError:
            raise fail(param, expected, value) from None
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < k:
        raise fail(param, expected, value)
    return int(index)
