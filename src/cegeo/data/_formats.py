"""Readers for on-disk formats: IDX (MNIST family) and the CIFAR python-pickle batches.

Both formats arrive from the internet, so neither reader trusts its input:

* IDX files are parsed by hand: the magic number, the dimensions and the exact file size are
  checked before a single pixel is used (a truncated download is an error, not a short array).
* CIFAR batches are pickles. :class:`RestrictedUnpickler` builds plain data (dicts, lists,
  tuples, bytes, strings, numbers) and numpy arrays of plain numeric or string dtypes, and refuses
  every other global *before* anything is called: a pickle that would run ``os.system`` raises
  an error naming ``posix.system`` and never executes it.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._validation import InputError, fail
from ._dataset import described

__all__ = ["RestrictedUnpickler", "read_idx", "safe_unpickle"]

# IDX type codes (the third magic byte) -> numpy dtype; multi-byte types are big-endian.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# A safety cap on what an IDX header may claim, so a corrupt header cannot ask for terabytes.
_IDX_MAX_BYTES = 1 << 34


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """Raw bytes of ``path``, gunzipped when it is a gzip file (by content, not by name).

    With ``limit``, at most ``limit + 1`` decompressed bytes are produced (a gzip bomb stops
    there; the caller sees too many bytes and reports it).
    """
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        if limit is None:
            return gzip.decompress(raw)
        # Member after member (gzip files may be concatenated), never more than limit + 1 bytes.
        out = b""
        rest = raw
        while True:
            d = zlib.decompressobj(wbits=31)
            out += d.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                return out
            if not d.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            rest = d.unused_data
            if not rest.strip(b"\0"):  # trailing zero padding after the last member is allowed
                return out
            if rest[:2] != _GZIP_MAGIC:
                raise EOFError("trailing garbage after the compressed data")
    except (OSError, EOFError, zlib.error) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"`{path}` is a corrupt or truncated gzip file ({detail}).") from None


def read_idx(path: str | Path, *, ndim: int, type_code: int | None = 0x08) -> np.ndarray:
    """Read one IDX file (raw or gzipped), checking its magic number, dimensions and size.

    The IDX header is two zero bytes, a type byte (0x08 = uint8, ...), a byte with the number of
    dimensions, then one big-endian uint32 per dimension; the data follow in C order and must
    fill the rest of the file exactly.

    Parameters
    ----------
    path : str or Path
    ndim : int
        Expected number of dimensions (3 for images ``(n, H, W)``, 1 for labels).
    type_code : int or None
        Expected IDX element type (0x08 = uint8, as in MNIST); ``None`` accepts any IDX type.

    Returns
    -------
    numpy.ndarray
        Native byte order.

    Raises
    ------
    ValueError
        Bad magic number, wrong type or number of dimensions, a size that does not match the
        header (truncated or padded file), a corrupt gzip stream.

    Examples
    --------
    >>> import struct, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> _ = p.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([4, 0, 9]))
    >>> read_idx(p, ndim=1).tolist()
    [4, 0, 9]
    """
    path = Path(path)
    data = _read_bytes(path, limit=4 + 4 * 255)  # the header first: it bounds what to inflate
    if len(data) < 4:
        raise fail(str(path), "an IDX file (at least a 4-byte header)", described(f"{len(data)} bytes"))
    zero, found, dims = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or found not in _IDX_TYPES:
        raise fail(
            str(path), "an IDX file (magic number 0x0000TTDD)", described(f"magic number 0x{data[:4].hex()}")
        )
    want = type_code if type_code is not None else found
    if dims != ndim or found != want:
        raise fail(
            str(path),
            f"an IDX file with magic number 0x0000{want:02x}{ndim:02x} ({ndim}-D, {_IDX_TYPES[want].name})",
            described(f"magic number 0x{data[:4].hex()}"),
        )
    header = 4 + 4 * dims
    if len(data) < header:
        raise fail(
            str(path), f"an IDX file with a {header}-byte header", described(f"{len(data)} bytes (truncated)")
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    item = _IDX_TYPES[found]
    expected_bytes = math.prod(shape) * item.itemsize  # Python ints: no int64 wrap-around
    if expected_bytes > _IDX_MAX_BYTES:
        raise fail(str(path), "an IDX header with plausible dimensions", shape)
    data = _read_bytes(path, limit=header + expected_bytes)  # a gzip bomb stops one byte past it
    got = len(data) - header
    if got != expected_bytes:
        state = "truncated" if got < expected_bytes else "trailing bytes"
        raise fail(
            str(path),
            f"{expected_bytes} data bytes for dimensions {shape}",
            described(f"{got} bytes ({state})"),
        )
    arr = np.frombuffer(data, dtype=item, offset=header).reshape(shape)
    return arr.astype(item.newbyteorder("="), copy=True)


# --------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------

# dtype kinds an unpickled array may have: bool, signed/unsigned int, float, bytes, unicode.
_SAFE_DTYPE_KINDS = frozenset("biufSU")


class _Refused(pickle.UnpicklingError):
    """Raised for content the restricted unpickler will not build (as opposed to corrupt data)."""


def _check_dtype(dt: Any) -> np.dtype:
    if (
        not isinstance(dt, np.dtype)
        or dt.kind not in _SAFE_DTYPE_KINDS
        or dt.fields is not None
        or dt.subdtype is not None
        or dt.hasobject
    ):
        raise _Refused(f"refusing numpy dtype {dt!r}: only numeric and string arrays are allowed")
    return dt


def _safe_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """``numpy.dtype`` restricted to plain numeric and string type codes (no objects, no records).

    Always a fresh copy (``copy=True``), so the state applied by the pickle's BUILD can never
    touch numpy's shared builtin dtype instances.
    """
    if not isinstance(spec, (str, bytes)):
        raise _Refused(f"refusing numpy dtype {spec!r}: only plain type codes are allowed")
    try:
        dt = np.dtype(spec.decode("ascii") if isinstance(spec, bytes) else spec, bool(align), True)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise _Refused(f"refusing numpy dtype {spec!r}: not a plain type code") from None
    return _check_dtype(dt)


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` in a pickle: usable only as _reconstruct's first argument."""

    def __repr__(self) -> str:
        return "numpy.ndarray"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("refusing to call numpy.ndarray directly")


_NDARRAY = _NdarrayToken()


def _reconstruct_factory(real: Callable[..., Any]) -> Callable[..., Any]:
    def _reconstruct(cls: Any, shape: Any, typecode: Any) -> Any:
        # numpy always pickles arrays as _reconstruct(ndarray, (0,), b"b") followed by BUILD.
        if cls is not _NDARRAY or shape not in ((0,), [0]) or typecode not in (b"b", "b"):
            raise _Refused("refusing numpy _reconstruct with unexpected arguments")
        return real(np.ndarray, (0,), b"b")

    return _reconstruct


def _frombuffer_factory(real: Callable[..., Any]) -> Callable[..., Any]:
    def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> Any:
        _check_dtype(dtype)
        if not isinstance(buf, (bytes, bytearray)):
            raise _Refused("refusing numpy _frombuffer without a bytes buffer")
        return real(buf, dtype, shape, order)

    return _frombuffer


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise _Refused("refusing _codecs.encode with unexpected arguments")
    return text.encode(encoding)


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    allowed: dict[tuple[str, str], Callable[..., Any]] = {("_codecs", "encode"): _codecs_encode}
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    recon = _reconstruct_factory(multiarray._reconstruct)
    frombuf = _frombuffer_factory(numeric._frombuffer)
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = recon
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuf
    allowed[("numpy", "ndarray")] = _NDARRAY  # type: ignore[assignment]
    allowed[("numpy", "dtype")] = _safe_dtype
    # Protocols 0-1 (and Python 2 pickles) build sets through the builtin (elements checked).
    for mod in ("builtins", "__builtin__"):
        allowed[(mod, "set")] = _set_factory(set)
        allowed[(mod, "frozenset")] = _set_factory(frozenset)
    return allowed


# Dict keys and set elements must be of these types: hashing a nested tuple whose items are
# shared memo entries costs time exponential in its depth (a ~600-byte pickle ran for seconds,
# one a few levels deeper for hours), and no pickle cegeo reads has other keys.
_FLAT_KEYS = (str, bytes, int, float, type(None))


def _check_keys(keys: Any) -> None:
    for key in keys:
        if not isinstance(key, _FLAT_KEYS):
            raise _Refused(
                f"refusing a dict key or set element of type {type(key).__name__} (only strings, bytes and numbers)"
            )


def _set_factory(kind: type) -> Callable[..., Any]:
    def make(items: Any = ()) -> Any:
        if not isinstance(items, (list, tuple)):
            raise _Refused(f"refusing {kind.__name__}() of a {type(items).__name__} (only of a list)")
        _check_keys(items)
        return kind(items)

    return make


def _check_build(inst: Any, state: Any) -> None:
    """Allow BUILD (``__setstate__``) only on the dtypes and arrays numpy's pickles make."""
    if isinstance(inst, np.dtype):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not (isinstance(state, tuple) and len(state) >= 5 and state[2:5] == (None, None, None)):
            raise _Refused("refusing a numpy dtype state with sub-arrays or fields")
        # Only the byte order may differ from the dtype's own state: a state that resizes it
        # (elsize) would make an array built with it read past its buffer. This also makes a
        # second BUILD of a memoised dtype harmless.
        own = inst.__reduce__()[2]
        if not (
            len(state) == len(own)
            and state[1] in ("<", ">", "|", "=", b"<", b">", b"|", b"=")  # bytes: Python 2 pickles
            and state[0] == own[0]
            and state[2:] == own[2:]
        ):
            raise _Refused(f"refusing a numpy dtype state that does not match its type {inst.str!r}")
        return
    if isinstance(inst, np.ndarray):
        # (version, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], (bytes, bytearray))):
            raise _Refused("refusing a numpy array state without a raw byte buffer")
        _check_dtype(state[2])
        return
    raise _Refused(f"refusing to set the state of a {type(inst).__name__} (only numpy arrays and dtypes)")


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that only builds plain data and numeric/string numpy arrays.

    Dicts, lists, tuples, sets, bytes, strings, numbers, booleans and ``None`` come from pickle
    opcodes and need no globals. The only globals resolved are numpy's array reconstruction
    helpers and ``_codecs.encode``, each wrapped to accept exactly the arguments numpy's own
    pickles use, with dtypes restricted to bool/int/uint/float/bytes/str (no objects, no
    records); every ``__setstate__`` (BUILD) is checked the same way. Anything else
    (``os.system``, ``builtins.eval``, ``subprocess.Popen``, any class) raises
    :class:`pickle.UnpicklingError` when it is named, before it could be called.

    It extends the pure-Python unpickler (``pickle._Unpickler``), whose opcode table can be
    overridden; the C unpickler's cannot.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], Callable[..., Any]] | None] = None
    dispatch: ClassVar[dict[int, Callable[..., Any]]] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(
                f"refusing to load global '{module}.{name}' (only plain data and numpy arrays are allowed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refusing a persistent id (only plain data and numpy arrays are allowed)")

    def load_build(self) -> None:
        _check_build(self.stack[-2], self.stack[-1])
        inst = self.stack[-2]
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        if isinstance(inst, np.dtype):
            _check_dtype(inst)

    dispatch[pickle.BUILD[0]] = load_build

    # Every opcode that hashes what the pickle built checks the keys first (_FLAT_KEYS).
    def load_dict(self) -> None:
        items = self.pop_mark()
        _check_keys(items[0::2])
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})

    def load_setitem(self) -> None:
        _check_keys(self.stack[-2:-1])
        pickle._Unpickler.load_setitem(self)  # type: ignore[attr-defined]

    def load_setitems(self) -> None:
        items = self.pop_mark()
        _check_keys(items[0::2])
        target = self.stack[-1]
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        _check_keys(items)
        target = self.stack[-1]
        if isinstance(target, set):
            target.update(items)
        else:
            for item in items:
                target.add(item)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        _check_keys(items)
        self.append(frozenset(items))

    dispatch[pickle.DICT[0]] = load_dict
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.ADDITEMS[0]] = load_additems
    dispatch[pickle.FROZENSET[0]] = load_frozenset


def safe_unpickle(path: str | Path, *, encoding: str = "bytes") -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; any failure is one-line ValueError.

    ``encoding="bytes"`` reads Python 2 pickles (the CIFAR batches) with their ``str`` keys as
    ``bytes``, as the CIFAR web page's own snippet does.

    Raises
    ------
    ValueError
        A forbidden global (the message names it), a truncated or corrupt pickle.

    Examples
    --------
    >>> import os, pickle, tempfile, pathlib
    >>> class Evil:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo owned",))
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "batch"
    >>> _ = p.write_bytes(pickle.dumps(Evil()))
    >>> safe_unpickle(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `...batch` must be a pickle of plain data and numpy arrays; got refusing to load global 'posix.system' ...
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding=encoding).load()
    except _Refused as exc:
        raise InputError(
            f"`{path}` must be a pickle of plain data and numpy arrays; got {' '.join(str(exc).split())}."
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
    ) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"`{path}` is a truncated or corrupt pickle ({detail}).") from None
