"""Data sources, addressed as ``NAME[:PATH]`` (one registry; see :func:`list_datasets`).

=================  ==============================================================================
spec               what it reads
=================  ==============================================================================
``digits``         scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, no test set);
                   stored as ``(n, 1, 8, 8)`` uint8, pixel values 0..16 rescaled to 0..255
``idx:DIR``        MNIST-format files in DIR (raw or gzipped): ``train-images-idx3-ubyte``,
                   ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
                   ``t10k-labels-idx1-ubyte`` (``.gz`` optional, ``-idx3`` or ``.idx3`` spellings)
``cifar10:DIR``    the CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``,
                   ``batches.meta``), DIR or its ``cifar-10-batches-py`` sub-folder
``cifar100:DIR``   the CIFAR-100 python files (``train``, ``test``, ``meta``); fine labels by
                   default, ``label_type="coarse"`` for the 20 super-classes
``npz:FILE``       ``x_train``, ``y_train`` (and optionally ``x_test``, ``y_test``,
                   ``class_names``), read with ``allow_pickle=False``
``csv:FILE``       a header row, numeric feature columns and one label column (tabular)
``folder:DIR``     one sub-folder of images per class (Pillow; ``pip install 'cegeo[images]'``),
                   or ``train/`` and ``test/`` folders laid out that way
``gaussian``       a seeded Gaussian mixture (tabular, with a test set) for tests and demos
=================  ==============================================================================

Nothing is downloaded: paths are local. Every file is validated (magic numbers, shapes, counts,
label range) and problems are one-line ``ValueError`` messages naming the file. Pickles are read
with a restricted unpickler (:mod:`cegeo.data._formats`), never with plain :mod:`pickle`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._registry import Registry
from .._validation import SEED_MAX, InputError, check_choice, check_finite, check_int, check_options, fail
from ._dataset import Dataset, described
from ._formats import _IDX_MAX_BYTES, read_idx, safe_unpickle

__all__ = ["DatasetInfo", "get_dataset_info", "list_datasets", "load_dataset", "parse_spec"]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered data source.

    Attributes
    ----------
    name : str
        The ``NAME`` part of a ``NAME[:PATH]`` spec.
    description : str
    path : str
        ``"none"`` (no path allowed), ``"dir"`` or ``"file"`` (a path is required).
    options : Mapping[str, Any]
        Keyword options of :func:`load_dataset` for this source and their defaults.
    load : callable
        ``load(path, seed, **options) -> Dataset`` (``path`` is ``None`` for path-less sources).
    path_options : tuple of str
        The options whose values are file paths (a run's ``config.toml`` records them absolute).
    """

    name: str
    description: str
    path: str
    options: Mapping[str, Any] = field(default_factory=dict)
    load: Callable[..., Dataset] = field(default=lambda *a, **k: None, repr=False)  # type: ignore[assignment,return-value]
    path_options: tuple[str, ...] = ()


_SOURCES: Registry[DatasetInfo] = Registry("dataset")


def list_datasets() -> list[str]:
    """Names of the registered data sources.

    Examples
    --------
    >>> list_datasets()
    ['digits', 'idx', 'cifar10', 'cifar100', 'npz', 'csv', 'folder', 'gaussian']
    """
    return _SOURCES.names()


def get_dataset_info(name: str, param: str | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of a source (ValueError listing valid names if unknown)."""
    return _SOURCES.get(name, param)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME[:PATH]`` into the source name and the path (``None`` when absent).

    Only the first colon separates, so paths may contain colons.

    Examples
    --------
    >>> parse_spec("idx:/data/mnist")
    ('idx', '/data/mnist')
    >>> parse_spec("digits")
    ('digits', None)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise fail("data", "a source spec NAME[:PATH] such as 'digits' or 'idx:/data/mnist'", spec)
    name, sep, path = spec.strip().partition(":")
    name = name.strip().lower()
    return name, (path.strip() if sep else None)


def load_dataset(spec: str, *, seed: int = 0, **options: Any) -> Dataset:
    """Load a dataset from a ``NAME[:PATH]`` spec.

    Parameters
    ----------
    spec : str
        ``digits``, ``idx:DIR``, ``cifar10:DIR``, ``cifar100:DIR``, ``npz:FILE``, ``csv:FILE``,
        ``folder:DIR`` or ``gaussian`` (see the module docstring). ``~`` is expanded.
    seed : int
        Only used by generated sources (``gaussian``); file sources are deterministic.
    **options
        Source options (``get_dataset_info(name).options`` lists them with defaults). Values
        may be strings (as they come from a command line or TOML) and are converted to the
        default's type. Unknown options are an error.

        * ``idx``: ``num_classes`` (default: largest training label + 1).
        * ``cifar100``: ``label_type`` = ``"fine"`` (100 classes) or ``"coarse"`` (20).
        * ``npz``: ``num_classes``, ``layout`` (of 4-D image arrays: ``"auto"``, the channel
          axis being the one of size 1, 3 or 4, an error where both could be, as in
          ``(n, 4, 4, 3)``; ``"nchw"`` or ``"nhwc"`` to say which).
        * ``csv``: ``label`` (the label column's name; default ``"label"`` if the header has
          it, else the last column), ``delimiter`` (default ``","``; ``\\t`` or ``tab`` for a
          tab), ``test`` (a second CSV
          with the same header used as the test set), ``num_classes``, ``drop`` (columns that
          are not features, e.g. ``"part_id,timestamp"``). Integer labels
          0..k-1 (or any, with ``num_classes``) are class indices; other labels (text, or
          integers such as 1..3 or -1/1) become classes in sorted order, named by the label.
        * ``folder``: ``size`` (``"H"`` or ``"HxW"``: resize every image; default: all images
          must have one size), ``mode`` (``"auto"``, ``"L"`` grey or ``"RGB"``; auto picks L
          when every image is grey). Class i is the i-th class folder name in sorted (code
          point) order; a class's images may lie in sub-folders; EXIF orientation is applied.
        * ``gaussian``: ``k`` (classes), ``d`` (dimension), ``n_per_class``,
          ``n_test_per_class``, ``separation`` (norm of each class mean; noise is N(0, I)).

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        Unknown source or option, a missing or unexpected path, any problem with the files
        (one line naming the file: bad magic number, truncated file, count mismatch, labels
        outside 0..k-1, a pickle with forbidden content, ...).

    Examples
    --------
    >>> ds = load_dataset("digits")
    >>> ds.x_train.shape, ds.x_train.dtype.name, ds.num_classes, ds.x_test is None
    ((1797, 1, 8, 8), 'uint8', 10, True)
    >>> load_dataset("gaussian", k=3, d=5, n_per_class=4).train_counts().tolist()
    [4, 4, 4]
    >>> load_dataset("mnist")
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `data` must be a dataset name, one of 'digits', 'idx', 'cifar10', 'cifar100', 'npz', 'csv', 'folder', 'gaussian'; got 'mnist'.
    """
    name, path = parse_spec(spec)
    info = _SOURCES.get(name, "data")
    seed = check_int("seed", seed, minimum=0, maximum=SEED_MAX)
    if info.path == "none" and path is not None:
        raise fail("data", f"'{name}' without a path (it is built in)", spec)
    if info.path != "none" and not path:
        what = "directory" if info.path == "dir" else "file"
        raise fail("data", f"'{name}:PATH' with the {what} to read", spec)
    check_options("options", options, info.options, repr(name))
    resolved = {
        key: _coerce(key, options.get(key, default), default) for key, default in info.options.items()
    }
    target: Path | None = None
    if path is not None:
        target = Path(os.path.expanduser(path))
        if info.path == "dir" and not target.is_dir():
            raise fail("data", f"'{name}:DIR' with an existing directory", spec)
        if info.path == "file" and not target.is_file():
            raise fail("data", f"'{name}:FILE' with an existing file", spec)
    ds = info.load(target, seed, **resolved)
    return ds if ds.name == spec else _renamed(ds, spec.strip())


def _renamed(ds: Dataset, name: str) -> Dataset:
    return Dataset(
        name, ds.kind, ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.num_classes, ds.class_names
    )


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert an option given as text (CLI, TOML) to its default's type."""
    if value is None:
        return None
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if isinstance(value, bool):
            return value
        raise fail(key, "true or false", value)
    if isinstance(default, int) or (default is None and key in _INT_OPTIONS):
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise fail(key, "an integer", value) from None
        return check_int(key, value, minimum=1)
    if isinstance(default, float):
        return check_finite(key, value)
    if isinstance(default, str) or default is None:
        if not isinstance(value, (str, int, os.PathLike)) or isinstance(value, bool):
            raise fail(key, "a string", value)
        return str(value) if not isinstance(value, os.PathLike) else os.fspath(value)
    return value


_INT_OPTIONS = {"num_classes"}


def _check_num_classes(param: str, y_all: list[np.ndarray], num_classes: int | None) -> int:
    """The class count: given, or the largest training label + 1 (``y_all[0]`` is the training
    labels); negative labels are errors here."""
    n_train = int(y_all[0].size)
    if n_train == 0:
        raise fail(param, "at least one training sample", described("an empty y_train"))
    lo = min(int(y.min()) for y in y_all if y.size)
    if lo < 0:
        raise fail(param, "labels >= 0", lo)
    # Inferred from the training labels only: a test label beyond them is an error.
    k = int(y_all[0].max()) + 1 if num_classes is None else num_classes
    if k > n_train:
        # Every class 0..k-1 needs a training sample: a huge label is an error, not k classes.
        what = f"num_classes = {k}" if num_classes is not None else f"largest training label + 1 = {k}"
        raise fail(param, f"at most as many classes as training samples ({n_train})", described(what))
    if num_classes is None:
        present = np.unique(y_all[0])
        if present.size != k:  # e.g. labels 1..k (EMNIST letters): class 0 would be empty
            missing = int(np.setdiff1d(np.arange(k), present)[0])
            raise fail(
                param,
                "training labels 0..k-1 with a sample of every class",
                described(
                    f"{present.size} distinct labels {int(present[0])}..{int(present[-1])} with no sample of "
                    f"class {missing}: renumber them 0..{present.size - 1}"
                ),
            )
    return k


def _checked(spec: str, make: Callable[[], Dataset]) -> Dataset:
    """Re-raise a Dataset validation error with the source spec in front."""
    try:
        return make()
    except InputError as exc:
        raise InputError(f"{spec}: {exc}") from None


# --------------------------------------------------------------------------------------------
# digits and gaussian (built in)
# --------------------------------------------------------------------------------------------


def _load_digits(path: Path | None, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap); rescale to the 0..255 image range.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]  # (n, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    return Dataset("digits", "image", x, y, None, None, 10, tuple(str(i) for i in range(10)))


def _load_gaussian(
    path: Path | None,
    seed: int,
    k: int,
    d: int,
    n_per_class: int,
    n_test_per_class: int,
    separation: float,
) -> Dataset:
    k = check_int("k", k, minimum=2)
    d = check_int("d", d, minimum=1)
    sep = check_finite("separation", separation)
    if sep < 0:
        raise fail("separation", "a number >= 0", separation)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((k, d))
    means = sep * directions / np.linalg.norm(directions, axis=1, keepdims=True)  # (k, d)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(k, dtype=np.int64), n)
        x = means[y] + rng.standard_normal((y.size, d))
        order = rng.permutation(y.size)
        return x[order].astype(np.float32), y[order]

    x_tr, y_tr = draw(n_per_class)
    x_te, y_te = draw(n_test_per_class)
    return Dataset("gaussian", "tabular", x_tr, y_tr, x_te, y_te, k, tuple(str(i) for i in range(k)))


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST, KMNIST, ...)
# --------------------------------------------------------------------------------------------


def _find_idx(root: Path, prefix: str, what: str, dims: int) -> Path:
    stems = [f"{prefix}-{what}-idx{dims}-ubyte", f"{prefix}-{what}.idx{dims}-ubyte"]
    for stem in stems:
        for suffix in ("", ".gz"):
            candidate = root / (stem + suffix)
            if candidate.is_file():
                return candidate
    raise fail(f"idx:{root}", f"a directory with {stems[0]}[.gz]", described("no such file"))


def _load_idx(path: Path, seed: int, num_classes: int | None) -> Dataset:
    spec = f"idx:{path}"
    parts: dict[str, np.ndarray] = {}
    for prefix in ("train", "t10k"):
        img_path = _find_idx(path, prefix, "images", 3)
        lab_path = _find_idx(path, prefix, "labels", 1)
        images = read_idx(img_path, ndim=3)  # (n, H, W)
        labels = read_idx(lab_path, ndim=1).astype(np.int64)  # (n,)
        if images.shape[0] != labels.shape[0]:
            raise fail(
                str(lab_path),
                f"one label per image of {img_path.name} ({images.shape[0]} images)",
                described(f"{labels.shape[0]} labels"),
            )
        if 0 in images.shape:
            raise fail(str(img_path), "a non-empty image array", images.shape)
        parts[prefix] = images[:, None, :, :]
        parts[prefix + "_y"] = labels
    if parts["train"].shape[1:] != parts["t10k"].shape[1:]:
        raise fail(
            spec, f"test images of the training size {parts['train'].shape[2:]}", parts["t10k"].shape[2:]
        )
    k = _check_num_classes(spec, [parts["train_y"], parts["t10k_y"]], num_classes)
    return _checked(
        spec,
        lambda: Dataset(
            spec,
            "image",
            parts["train"],
            parts["train_y"],
            parts["t10k"],
            parts["t10k_y"],
            k,
            tuple(str(i) for i in range(k)),
        ),
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 python batches
# --------------------------------------------------------------------------------------------


def _key(batch: dict[Any, Any], name: str) -> Any:
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    return None


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise fail(
            str(path.parent), f"a CIFAR directory with the file {path.name!r}", described("no such file")
        )
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise fail(str(path), "a CIFAR batch (a pickled dict)", type(batch).__name__)
    data, labels = _key(batch, "data"), _key(batch, label_key)
    if data is None or labels is None:
        keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in batch)
        raise fail(str(path), f"a CIFAR batch with keys 'data' and '{label_key}'", keys)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = described(f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__)
        raise fail(str(path), "'data' as a uint8 array of shape (n, 3072)", got)
    # A flat list of ints (or a 1-D array), checked before np.asarray: nested lists sharing memo
    # entries would make a few kilobytes of pickle expand to gigabytes.
    flat = isinstance(labels, np.ndarray) or (
        isinstance(labels, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in labels)
    )
    labels_arr = np.asarray(labels) if flat else np.zeros((0, 0))
    if labels_arr.ndim != 1 or not np.issubdtype(labels_arr.dtype, np.integer):
        raise fail(
            str(path),
            f"'{label_key}' as a list of integers",
            described(f"{labels_arr.dtype} {labels_arr.shape}"),
        )
    if labels_arr.size != data.shape[0]:
        raise fail(
            str(path), f"one label per image ({data.shape[0]} images)", described(f"{labels_arr.size} labels")
        )
    return data.reshape(-1, 3, 32, 32), labels_arr.astype(np.int64)  # (n, 3, 32, 32)


def _cifar_names(path: Path, key: str, k: int) -> tuple[str, ...]:
    if not path.is_file():
        return tuple(str(i) for i in range(k))
    meta = safe_unpickle(path)
    names = _key(meta, key) if isinstance(meta, dict) else None
    expected = f"a CIFAR meta file with {k} '{key}' (class names)"
    if not isinstance(names, list):
        raise fail(str(path), expected, described(f"a {type(names).__name__}"))
    if len(names) != k:
        raise fail(str(path), expected, described(f"{len(names)} names"))
    bad = next((n for n in names if not isinstance(n, (str, bytes)) or len(n) > 1000), None)
    if bad is not None:
        what = (
            f"a {type(bad).__name__}"
            if not isinstance(bad, (str, bytes))
            else f"a name of {len(bad)} characters"
        )
        raise fail(str(path), f"{expected}: strings of at most 1,000 characters", described(what))
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def _cifar_root(path: Path, sub: str, probe: str) -> Path:
    if (path / probe).is_file():
        return path
    if (path / sub / probe).is_file():
        return path / sub
    raise fail(
        f"{path}", f"a CIFAR directory containing {probe!r} (or {sub}/{probe})", described("no such file")
    )


def _load_cifar10(path: Path, seed: int) -> Dataset:
    spec = f"cifar10:{path}"
    root = _cifar_root(path, "cifar-10-batches-py", "data_batch_1")
    train = [_cifar_batch(root / f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_te, y_te = _cifar_batch(root / "test_batch", "labels")
    x_tr = np.concatenate([b[0] for b in train])
    y_tr = np.concatenate([b[1] for b in train])
    names = _cifar_names(root / "batches.meta", "label_names", 10)
    return _checked(spec, lambda: Dataset(spec, "image", x_tr, y_tr, x_te, y_te, 10, names))


def _load_cifar100(path: Path, seed: int, label_type: str) -> Dataset:
    spec = f"cifar100:{path}"
    check_choice("label_type", label_type, ("fine", "coarse"))
    root = _cifar_root(path, "cifar-100-python", "train")
    key = f"{label_type}_labels"
    x_tr, y_tr = _cifar_batch(root / "train", key)
    x_te, y_te = _cifar_batch(root / "test", key)
    k = 100 if label_type == "fine" else 20
    names = _cifar_names(root / "meta", f"{label_type}_label_names", k)
    return _checked(spec, lambda: Dataset(spec, "image", x_tr, y_tr, x_te, y_te, k, names))


# --------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------


_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA


def _as_image_or_tabular(param: str, x: np.ndarray, layout: str = "auto") -> tuple[str, np.ndarray]:
    """npz arrays: 4-D uint8 NCHW or NHWC (``layout``; ``auto`` tells them apart by which axis
    holds 1, 3 or 4 channels, and refuses a shape where both could) or 3-D uint8 (n, H, W) are
    images, 2-D numeric arrays are tabular (float32)."""
    if x.ndim == 3 and x.dtype == np.uint8:
        return "image", x[:, None]
    if x.ndim == 4:
        if x.dtype != np.uint8:
            raise fail(param, "uint8 pixels for a 4-D image array", str(x.dtype))
        if layout == "auto":
            first, last = x.shape[1] in _CHANNELS, x.shape[3] in _CHANNELS
            if first and last:
                # (n, 4, 4, 3): 4x4 RGB images, or 4-channel 4x3 ones? A guess would train on
                # scrambled pixels without a word.
                raise fail(
                    param,
                    "a shape whose channel axis is plain (here axis 1 and axis 3 could both be the "
                    "channels: pass --data-option layout=nchw or layout=nhwc)",
                    x.shape,
                )
            layout = "nhwc" if last else "nchw"
        if layout == "nhwc":
            x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        return "image", np.ascontiguousarray(x)
    if x.shape[0] == 0:
        raise fail(param, "at least one sample", described(f"{x.dtype} {x.shape}"))
    if x.ndim == 2:
        if x.dtype.kind not in "biuf":  # complex features would be cast to real silently
            raise fail(param, "real numbers", str(x.dtype))
        return "tabular", x.astype(np.float32)
    raise fail(param, "a 2-D (n, d) numeric or 3/4-D uint8 image array", described(f"{x.dtype} {x.shape}"))


def _check_npz_sizes(spec: str, path: Path) -> None:
    """Refuse a member whose .npy header claims more bytes than its zip entry holds or than
    the IDX reader's cap, before numpy allocates them (a tiny crafted file could otherwise
    ask for terabytes, or a compressed one fill the memory)."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as member:
                try:
                    version = np.lib.format.read_magic(member)
                    read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                        version, np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(member)
                except ValueError:
                    continue  # not a .npy member: np.load returns its bytes, refused by the caller
            if dtype.hasobject:
                continue  # a pickled object array: np.load refuses it (allow_pickle=False)
            nbytes = math.prod(int(n) for n in shape) * dtype.itemsize
            if nbytes > min(info.file_size, _IDX_MAX_BYTES):
                key = info.filename[: -len(".npy")]
                raise fail(
                    f"{spec}[{key}]",
                    f"an array no larger than its file entry ({info.file_size:,} bytes) and 16 GiB",
                    described(f"a header claiming {tuple(int(n) for n in shape)} {dtype}: {nbytes:,} bytes"),
                )


def _load_npz(path: Path, seed: int, num_classes: int | None, layout: str) -> Dataset:
    spec = f"npz:{path}"
    if layout not in ("auto", "nchw", "nhwc"):
        raise fail("layout", "'auto', 'nchw' or 'nhwc' (the axes of 4-D image arrays)", layout)
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise fail(
            spec,
            "an .npz file (a zip archive of .npy arrays, as numpy.savez writes)",
            described(f"a file starting with {magic!r}"),
        )
    try:
        _check_npz_sizes(spec, path)
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as f:  # fh closes on any error
            arrays = {key: f[key] for key in f.files}
    except InputError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise fail(
                spec, "an npz of plain arrays (object arrays are refused)", "a pickled object array"
            ) from None
        raise InputError(f"`{spec}` is not a readable npz file ({' '.join(str(exc).split())}).") from None
    except (OSError, EOFError, KeyError, __import__("zipfile").BadZipFile) as exc:
        raise InputError(f"`{spec}` is not a readable npz file ({' '.join(str(exc).split())}).") from None
    if "x_train" not in arrays or "y_train" not in arrays:
        raise fail(spec, "an npz with arrays x_train and y_train (x_test, y_test optional)", sorted(arrays))
    for key in ("x_train", "y_train", "x_test", "y_test", "class_names"):
        if key in arrays and not isinstance(arrays[key], np.ndarray):  # a member that is not .npy
            raise fail(f"{spec}[{key}]", "a .npy array", described("a member of other content"))
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise fail(spec, "both x_test and y_test, or neither", sorted(arrays))
    kind, x_tr = _as_image_or_tabular(f"{spec}[x_train]", arrays["x_train"], layout)
    x_te = y_te = None
    if "x_test" in arrays:
        kind_te, x_te = _as_image_or_tabular(f"{spec}[x_test]", arrays["x_test"], layout)
        if kind_te != kind:
            raise fail(f"{spec}[x_test]", f"{kind} data like x_train", kind_te)
    ys = []
    for key in ("y_train", "y_test"):
        if key not in arrays:
            continue
        y = arrays[key]
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]  # Keras' (n, 1) label column, e.g. keras.datasets.cifar10
        if y.ndim != 1 or not (
            np.issubdtype(y.dtype, np.integer)
            or (
                np.issubdtype(y.dtype, np.floating)
                and np.all(np.isfinite(y))
                and np.all(y == np.round(y))
                and np.all(np.abs(y) <= 2**53)  # larger would wrap around in the int64 cast
            )
        ):
            raise fail(
                f"{spec}[{key}]", "integer labels, 1-D or an (n, 1) column", described(f"{y.dtype} {y.shape}")
            )
        ys.append(y.astype(np.int64))
    y_tr = ys[0]
    y_te = ys[1] if len(ys) > 1 else None
    k = _check_num_classes(spec, ys, num_classes)
    names: tuple[str, ...] = tuple(str(i) for i in range(k))
    if "class_names" in arrays:
        cn = arrays["class_names"]
        if cn.ndim != 1 or cn.dtype.kind not in "US" or cn.size != k:
            raise fail(
                f"{spec}[class_names]", f"{k} strings (one per class)", described(f"{cn.dtype} {cn.shape}")
            )
        names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in cn.tolist())
    return _checked(spec, lambda: Dataset(spec, kind, x_tr, y_tr, x_te, y_te, k, names))


# --------------------------------------------------------------------------------------------
# CSV (tabular)
# --------------------------------------------------------------------------------------------


def _read_csv(
    path: Path, label: str | None, delimiter: str, drop: frozenset[str] = frozenset()
) -> tuple[list[str], np.ndarray, list[str], str]:
    """Header, float32 features (n, d), raw label strings, and the label column's name; the
    columns in ``drop`` (IDs, timestamps) are neither features nor read."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(str(path), "a UTF-8 text file", f"undecodable byte at position {exc.start}") from None
    # (line, fields) of the non-blank rows; the line is the file's (a quoted field may span lines).
    rows: list[list[str]] = []
    lines: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        start = 1
        for row in reader:
            if any(c.strip() for c in row):
                rows.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:  # e.g. a field longer than csv.field_size_limit()
        raise InputError(f"`{path}` must be a readable CSV file ({exc}).") from None
    if len(rows) < 2:
        raise fail(
            str(path),
            "a CSV file with a header row and at least one data row",
            described(f"{len(rows)} rows"),
        )
    header = [h.strip() for h in rows[0]]
    # pandas names the columns of a DataFrame made from an array 0, 1, ..., d: its to_csv header
    pandas_columns = header == [str(i) for i in range(len(header))]
    shown = ",".join(header[:8]) + (",..." if len(header) > 8 else "")
    if all(_is_number(h) for h in header) and not pandas_columns:
        # A file without a header: its first sample would become the column names (and be lost).
        raise fail(
            str(path),
            "a CSV file whose first row names the columns (add a header such as x1,x2,...,label)",
            described(f"a first row of numbers: {shown}"),
        )
    if "" in header:
        # pandas' to_csv writes its row index as a first column without a name (",0,1,...,m-1",
        # ",x1,x2,label"): read, the row number would become a feature.
        i = header.index("")
        raise fail(
            str(path),
            "a header naming every column (pandas writes its row index unnamed: save with "
            "to_csv(index=False))",
            described(f"column {i + 1} without a name: {shown}"),
        )
    if len(set(header)) != len(header):
        raise fail(str(path), "a header of distinct column names", header)
    label_col = label if label is not None else ("label" if "label" in header else header[-1])
    if label_col not in header:
        raise fail("label", f"a column of {path.name} ({', '.join(header)})", label_col)
    unknown = sorted(drop - set(header))
    if unknown or label_col in drop:
        raise fail(
            "drop",
            f"feature columns of {path.name} ({', '.join(header)}), not the label",
            unknown or label_col,
        )
    li = header.index(label_col)
    skip = {li} | {header.index(h) for h in drop}
    features = [h for i, h in enumerate(header) if i not in skip]
    if not features:
        raise fail(str(path), "at least one feature column besides the label", header)
    x = np.empty((len(rows) - 1, len(features)), dtype=np.float32)
    labels: list[str] = []
    top = float(np.finfo(np.float32).max)
    for n, (r, row) in enumerate(zip(lines[1:], rows[1:], strict=True)):
        if len(row) != len(header):
            raise fail(f"{path} line {r}", f"{len(header)} fields like the header", len(row))
        lab = row[li].strip()
        if not lab or lab.lower() == "nan":  # a missing label (pandas writes NaN as '')
            raise fail(f"{path} line {r}, column {label_col!r}", "a label", lab)
        labels.append(lab)
        j = 0
        for i, cell in enumerate(row):
            if i in skip:
                continue
            try:
                value = float(cell)
            except ValueError:
                raise fail(f"{path} line {r}, column {header[i]!r}", "a number", cell) from None
            if not math.isfinite(value):
                raise fail(f"{path} line {r}, column {header[i]!r}", "a finite number", cell)
            if abs(value) > top:
                raise fail(f"{path} line {r}, column {header[i]!r}", "a number within float32's range", cell)
            x[n, j] = value
            j += 1
    return features, x, labels, label_col


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _integer_labels(labels: list[str]) -> np.ndarray | None:
    try:
        values = [float(v) for v in labels]
    except ValueError:
        return None
    if not all(math.isfinite(v) and v == round(v) and abs(v) <= 2**53 for v in values):
        return None  # not integers a float holds exactly: the labels are text
    return np.array([round(v) for v in values], dtype=np.int64)


def _load_csv(
    path: Path,
    seed: int,
    label: str | None,
    delimiter: str,
    test: str | None,
    num_classes: int | None,
    drop: str | None,
) -> Dataset:
    spec = f"csv:{path}"
    # A tab typed on a command line arrives as the two characters backslash-t (or the word).
    delimiter = "\t" if delimiter in ("\\t", "tab") else delimiter
    if len(delimiter) != 1:
        raise fail("delimiter", "one character (or \\t or tab for a tab)", delimiter)
    dropped = frozenset(c.strip() for c in (drop or "").split(",") if c.strip())  # "id,time"
    features, x_tr, lab_tr, label_col = _read_csv(path, label, delimiter, dropped)
    x_te = lab_te = None
    if test is not None:
        test_path = Path(os.path.expanduser(test))
        if not test_path.is_file():
            raise fail("test", "an existing CSV file", test)
        features_te, x_te, lab_te, _ = _read_csv(test_path, label_col, delimiter, dropped)
        if features_te != features:
            raise fail(
                str(test_path), f"the feature columns of {path.name} ({', '.join(features)})", features_te
            )
    ints = _integer_labels(lab_tr + (lab_te or []))
    n_tr = len(lab_tr)
    if ints is not None and (
        num_classes is not None
        or (ints[:n_tr].min() == 0 and np.unique(ints[:n_tr]).size == int(ints[:n_tr].max()) + 1)
    ):
        # Integer labels 0..k-1 (or any labels with num_classes given) are class indices.
        y_tr, y_te = ints[:n_tr], (ints[n_tr:] if lab_te is not None else None)
        k = _check_num_classes(f"{spec} column {label_col!r}", [ints[:n_tr], ints[n_tr:]], num_classes)
        names = tuple(str(i) for i in range(k))
    else:
        # Text labels, or integers that are not 0..k-1 (e.g. 1, 2, 3): the classes are the
        # sorted distinct training labels (integers in numeric order); names keep the labels.
        if ints is not None:
            values = sorted(set(ints[:n_tr].tolist()))
            names = tuple(str(v) for v in values)
            lab_tr = [str(v) for v in ints[:n_tr].tolist()]
            lab_te = None if lab_te is None else [str(v) for v in ints[n_tr:].tolist()]
            warnings.warn(
                f"{spec}: the labels in column {label_col!r} are integers but not 0..k-1; class i is "
                f"the i-th smallest label ({', '.join(f'{i} = {n}' for i, n in enumerate(names[:4]))}"
                f"{', ...' if len(names) > 4 else ''}). Give num_classes to use them as indices.",
                UserWarning,
                stacklevel=2,
            )
        else:
            names = tuple(sorted(set(lab_tr)))
        index = {n: i for i, n in enumerate(names)}
        unseen = [v for v in (lab_te or []) if v not in index]
        if unseen:
            raise fail(
                f"{test} column {label_col!r}", f"labels seen in training ({', '.join(names)})", unseen[0]
            )
        y_tr = np.array([index[v] for v in lab_tr], dtype=np.int64)
        y_te = None if lab_te is None else np.array([index[v] for v in lab_te], dtype=np.int64)
        k = len(names) if num_classes is None else num_classes
        if k != len(names):
            raise fail("num_classes", f"{len(names)} (the distinct text labels)", num_classes)
    return _checked(spec, lambda: Dataset(spec, "tabular", x_tr, y_tr, x_te, y_te, k, names))


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------

_IMAGE_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
}
# Files the operating system leaves in folders: skipped without a warning (as hidden files are).
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})


def _parse_size(size: str | None) -> tuple[int, int] | None:
    if size is None:
        return None
    text = str(size).lower().replace(" ", "")
    parts = text.split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise fail("size", "'H' or 'HxW' in pixels, e.g. 32 or 28x28", size) from None
    if len(dims) not in (1, 2) or min(dims) < 1:
        raise fail("size", "'H' or 'HxW' in pixels, e.g. 32 or 28x28", size)
    return (dims[0], dims[-1])


def _class_folders(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


_SPLIT_NAMES = frozenset({"train", "test", "val", "valid", "validation"})


def _holds_only_folders(folder: Path) -> bool:
    """Whether ``folder`` has sub-folders and no files besides hidden and system ones (a split
    folder of class folders, not a class folder)."""
    entries = [
        p for p in folder.iterdir() if not p.name.startswith(".") and p.name.lower() not in _SYSTEM_FILES
    ]
    return bool(entries) and all(p.is_dir() for p in entries)


def _image_files(folder: Path, skipped: list[Path]) -> list[Path]:
    """The images of a class folder, its sub-folders included (at any depth, in name order).

    Hidden files and folders and the system's ``Thumbs.db``/``desktop.ini`` are left out;
    other files that are not images by their suffix (``.heic``, ``.txt``, a broken link) are
    added to ``skipped``, for a warning. Linked folders are followed, each real folder once.
    """
    found: list[Path] = []
    seen = {folder.resolve()}
    stack = [iter(sorted(folder.iterdir(), key=lambda p: p.name))]
    while stack:
        p = next(stack[-1], None)
        if p is None:
            stack.pop()
        elif p.name.startswith("."):
            continue
        elif p.is_dir():
            real = p.resolve()
            if real not in seen:
                seen.add(real)
                stack.append(iter(sorted(p.iterdir(), key=lambda q: q.name)))
        elif p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES:
            found.append(p)
        elif p.name.lower() not in _SYSTEM_FILES:
            skipped.append(p)
    return found


def _open_image(path: Path) -> Any:
    """Open an image lazily (header only); unreadable files are one-line errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(path, exc) from None


def _decode(im: Any, path: Path) -> None:
    """Decode an opened image's pixels; a broken file is a one-line error."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> InputError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return InputError(f"`{path}` is not a readable image ({detail}).")


_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})

# EXIF orientation (tag 0x0112) -> the transpose that shows the image upright, as
# PIL.ImageOps.exif_transpose does (5..8 swap width and height).
_EXIF_ORIENTATION = 0x0112
_ORIENT_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def _orientation(im: Any) -> int:
    """The EXIF orientation (1..8) of an opened, not yet decoded image; 1 when it has none.

    Cameras and phones store a portrait photo's pixels sideways and say so in EXIF; viewers
    (and a person sorting the photos into class folders) see it upright, so the loader does too.
    Read from the header only (the same answer before and after decoding): a PNG whose eXIf
    chunk follows its pixels, or an unreadable EXIF block, counts as upright. TIFF is left to
    Pillow, which reports a TIFF's size upright and turns its pixels itself when decoding.
    """
    if im.format == "TIFF":
        return 1
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # Pillow would decode the whole PNG to look for a late eXIf chunk
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a corrupt EXIF block: the pixels are still readable
        return 1
    return value if isinstance(value, int) and value in _ORIENT_TRANSPOSE else 1


def _load_folder(path: Path, seed: int, size: str | None, mode: str) -> Dataset:
    spec = f"folder:{path}"
    try:
        from PIL import Image
    except ImportError:
        raise InputError(
            "folder datasets need Pillow, which is not installed: pip install 'cegeo[images]'."
        ) from None
    check_choice("mode", mode, ("auto", "L", "RGB"))
    hw = _parse_size(size)
    split_roots = {"train": path / "train", "test": path / "test"}
    has_split = split_roots["train"].is_dir() and split_roots["test"].is_dir()
    roots = split_roots if has_split else {"train": path}
    class_names = [p.name for p in _class_folders(roots["train"])]
    if len(class_names) < 2:
        raise fail(spec, "a directory with one sub-folder of images per class (at least 2)", class_names)
    if not has_split:
        # Class folders are read with their sub-folders, so train/a/, train/b/ next to a val/
        # (and no test/) would become two classes named train and val: refuse that layout.
        splits = [c for c in class_names if c.lower() in _SPLIT_NAMES and _holds_only_folders(path / c)]
        if splits:
            raise fail(
                spec,
                "one sub-folder of images per class, or train/ and test/ folders laid out that way "
                "(validation is drawn from train/; a val/ folder is not read)",
                described(f"folders {', '.join(splits)} of class folders without both train/ and test/"),
            )
    if has_split:
        test_names = [p.name for p in _class_folders(roots["test"])]
        if test_names != class_names:
            raise fail(
                f"{roots['test']}", f"the class folders of train/ ({', '.join(class_names)})", test_names
            )

    # Pass 1: file list, labels, and headers (mode, size) without decoding pixels.
    files: dict[str, list[tuple[Path, int]]] = {}
    modes: set[str] = set()
    float_max = 0.0  # the largest value of the float (mode F) images: one scale for all of them
    skipped: list[Path] = []  # files in the class folders that are not images by their suffix
    first: tuple[tuple[int, int], Path] | None = None
    for split, root in roots.items():
        files[split] = []
        for label, cname in enumerate(class_names):
            found = _image_files(root / cname, skipped)
            if not found:
                raise fail(
                    str(root / cname), "a class folder with at least one image", described("no image files")
                )
            for f in found:
                with _open_image(f) as im:
                    modes.add(im.mode)
                    hw_f = (im.size[1], im.size[0])
                    if im.mode == "F":  # rare (float TIFFs): decoded twice, for their range
                        float_max = max(float_max, _float_max(im, f))
                    if _orientation(im) >= 5:  # shown rotated by 90 degrees
                        hw_f = hw_f[::-1]
                if hw is None:
                    if first is None:
                        first = (hw_f, f)
                    elif hw_f != first[0]:
                        raise fail(
                            str(f),
                            f"an image of size {first[0][0]}x{first[0][1]} like {first[1].name} (or pass size=HxW)",
                            described(f"{hw_f[0]}x{hw_f[1]}"),
                        )
                files[split].append((f, label))
    if skipped:
        warnings.warn(
            f"{spec}: {len(skipped)} file(s) in the class folders are not images by their suffix and "
            f"were not read (e.g. {skipped[0].relative_to(path)}); the images read are "
            f"{', '.join(sorted(_IMAGE_SUFFIXES))} files.",
            UserWarning,
            stacklevel=2,
        )
    if mode == "auto":
        mode = "L" if modes <= _GREY_MODES else "RGB"
    height, width = hw if hw is not None else first[0]  # type: ignore[index]
    channels = 1 if mode == "L" else 3

    # Pass 2: decode straight into one preallocated uint8 array per split.
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    dim: list[Path] = []  # 32-bit integer images whose values look 8-bit
    for split, items in files.items():
        x = np.empty((len(items), channels, height, width), dtype=np.uint8)  # (n, C, H, W)
        for i, (f, _) in enumerate(items):
            with _open_image(f) as im:
                orient = _orientation(im)
                _decode(im, f)
                out = _to_mode(im, mode, f, dim, float_top=1.0 if float_max <= 1.0 else 255.0)
                if orient != 1:
                    out = out.transpose(getattr(Image, _ORIENT_TRANSPOSE[orient]))
                if hw is None and out.size != (width, height):
                    # The header promised another size (Pillow 13 reports an uncompressed TIFF
                    # with an Orientation tag upright but decodes it sideways).
                    raise fail(
                        str(f),
                        f"an image that decodes to the size of its header ({height}x{width})",
                        described(f"{out.size[1]}x{out.size[0]}"),
                    )
                if hw is not None and out.size != (width, height):
                    out = out.resize((width, height), Image.BILINEAR)
                arr = np.asarray(out, dtype=np.uint8)
            x[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        arrays[split] = (x, np.array([label for _, label in items], dtype=np.int64))
    if dim:
        warnings.warn(
            f"{spec}: {len(dim)} image(s) of 32-bit integers hold values of at most 255 (e.g. {dim[0].name}); "
            "they are read as 16-bit (0..65535) and come out nearly black: save 8-bit data as 8-bit images.",
            UserWarning,
            stacklevel=2,
        )
    x_tr, y_tr = arrays["train"]
    x_te, y_te = arrays.get("test", (None, None))
    k = len(class_names)
    return _checked(spec, lambda: Dataset(spec, "image", x_tr, y_tr, x_te, y_te, k, tuple(class_names)))


def _float_max(im: Any, path: Path) -> float:
    """The largest value of a float (mode ``F``) image; non-finite values and values above 255
    are errors (float images hold 0..1 or 0..255)."""
    _decode(im, path)
    arr = np.asarray(im, dtype=np.float64)
    hi = float(arr.max()) if arr.size else 0.0
    if not np.all(np.isfinite(arr)) or hi > 255.0:
        raise fail(
            str(path), "a float image with values in 0..1 or 0..255", described(f"a maximum of {hi:g}")
        )
    return hi


def _to_mode(
    im: Any, mode: str, path: Path | None = None, dim: list[Path] | None = None, float_top: float = 255.0
) -> Any:
    """``im`` as an 8-bit ``mode`` image ("L" or "RGB").

    High-depth grey images are scaled to 0..255 by a fixed range, never by each image's own
    maximum (which would make a dark image as bright as a light one): integers (PNG ``I;16``,
    PGM/TIFF ``I``; Pillow maps a PGM's maxval to 65535) by 65535, the same for every image
    (an ``I`` image with values of at most 255 is added to ``dim``, for a warning); floats by
    ``float_top``, the folder's choice (1 when all its float images lie in 0..1, else 255; see
    :func:`_float_max`). The 8-bit grey result is then converted to RGB where the folder is colour.
    """
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        from PIL import Image

        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        if im.mode == "F":
            top = float_top
        else:
            top = 65535.0
            if hi > top:
                raise fail(str(path), "an image of 8 or 16 bits per pixel", described(f"a value of {hi:g}"))
            if im.mode == "I" and 0 < hi <= 255 and dim is not None and path is not None:
                dim.append(path)
        grey = Image.fromarray(np.clip(np.rint(arr * 255.0 / top), 0, 255).astype(np.uint8), "L")
        return grey if mode == "L" else grey.convert(mode)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite transparency on white (a common scan/icon convention) instead of dropping alpha.
        from PIL import Image

        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert(mode)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

for _info in (
    DatasetInfo(
        "digits", "scikit-learn's bundled 8x8 digits (1,797 images, 10 classes)", "none", {}, _load_digits
    ),
    DatasetInfo(
        "idx",
        "MNIST-format IDX files (raw or gzipped) in a directory",
        "dir",
        {"num_classes": None},
        _load_idx,
    ),
    DatasetInfo("cifar10", "CIFAR-10 python batches in a directory", "dir", {}, _load_cifar10),
    DatasetInfo(
        "cifar100", "CIFAR-100 python files in a directory", "dir", {"label_type": "fine"}, _load_cifar100
    ),
    DatasetInfo(
        "npz",
        "an .npz with x_train, y_train[, x_test, y_test]",
        "file",
        {"num_classes": None, "layout": "auto"},
        _load_npz,
    ),
    DatasetInfo(
        "csv",
        "a CSV with a header, numeric features and a label column (tabular)",
        "file",
        {"label": None, "delimiter": ",", "test": None, "num_classes": None, "drop": None},
        _load_csv,
        path_options=("test",),
    ),
    DatasetInfo(
        "folder",
        "one sub-folder of images per class (Pillow)",
        "dir",
        {"size": None, "mode": "auto"},
        _load_folder,
    ),
    DatasetInfo(
        "gaussian",
        "a seeded Gaussian mixture (tabular, with a test set)",
        "none",
        {"k": 4, "d": 16, "n_per_class": 100, "n_test_per_class": 100, "separation": 4.0},
        _load_gaussian,
    ),
):
    _SOURCES.register(_info)
