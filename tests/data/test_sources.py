"""Data sources: every format is written here in tmp_path, read back, and broken in every documented way."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import shutil
import struct
import sys
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from sklearn.datasets import load_digits

from cegeo.data import (
    Dataset,
    RestrictedUnpickler,
    get_dataset_info,
    list_datasets,
    load_dataset,
    parse_spec,
    read_idx,
    safe_unpickle,
)

# --------------------------------------------------------------------------------------------
# writers for tiny datasets
# --------------------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, arr.ndim) + b"".join(
        struct.pack(">I", s) for s in arr.shape
    )
    return header + arr.astype(np.uint8).tobytes()


def write_idx(root: Path, *, gz: bool, n_train=12, n_test=6, size=(5, 4), k=3, seed=0, dot=False) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, *size), dtype=np.uint8)
        labels = (np.arange(n) % k).astype(np.uint8)
        for what, arr, dims in (("images", images, 3), ("labels", labels, 1)):
            name = f"{prefix}-{what}.idx{dims}-ubyte" if dot else f"{prefix}-{what}-idx{dims}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (root / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        out[prefix] = (images, labels)
    return out


def cifar_batch(n: int, k: int, rng, *, label_key=b"labels", extra=None) -> dict:
    batch = {
        b"batch_label": b"training batch",
        label_key: [int(v) for v in rng.integers(0, k, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    batch.update(extra or {})
    return batch


def dump(path: Path, obj, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def write_cifar10(root: Path, n_per_batch=4, protocol=2, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i in range(1, 6):
        b = cifar_batch(n_per_batch, 10, rng)
        # every class present in training: give the first batches labels 0..9 in turn
        b[b"labels"] = [int((i * n_per_batch + j) % 10) for j in range(n_per_batch)]
        batches[f"data_batch_{i}"] = b
        dump(root / f"data_batch_{i}", b, protocol)
    batches["test_batch"] = cifar_batch(5, 10, rng)
    dump(root / "test_batch", batches["test_batch"], protocol)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    dump(root / "batches.meta", {b"label_names": names, b"num_cases_per_batch": n_per_batch}, protocol)
    return batches


def write_cifar100(root: Path, n=250, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    fine = np.arange(n) % 100
    coarse = fine // 5
    train = {
        b"filenames": [b"x"] * n,
        b"batch_label": b"training batch 1 of 1",
        b"fine_labels": fine.tolist(),
        b"coarse_labels": coarse.tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
    }
    test = dict(train)
    test[b"data"] = train[b"data"][:7]
    test[b"fine_labels"] = fine[:7].tolist()
    test[b"coarse_labels"] = coarse[:7].tolist()
    dump(root / "train", train)
    dump(root / "test", test)
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    dump(root / "meta", meta)
    return {"train": train, "test": test}


class Evil:
    """Unpickling this would run a shell command that creates the sentinel file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


# --------------------------------------------------------------------------------------------
# registry and specs
# --------------------------------------------------------------------------------------------


def test_registry_lists_every_source():
    assert list_datasets() == ["digits", "idx", "cifar10", "cifar100", "npz", "csv", "folder", "gaussian"]
    assert get_dataset_info("idx").path == "dir"
    assert get_dataset_info("digits").path == "none"
    assert parse_spec("csv:C:/data/x.csv") == ("csv", "C:/data/x.csv")


@pytest.mark.parametrize(
    ("spec", "options", "match"),
    [
        ("mnist", {}, r"`data` must be a dataset name, one of 'digits', 'idx', .*; got 'mnist'"),
        ("", {}, r"`data` must be a source spec NAME\[:PATH\]"),
        ("digits:/tmp/x", {}, r"`data` must be 'digits' without a path"),
        ("idx", {}, r"`data` must be 'idx:PATH' with the directory to read"),
        ("npz:", {}, r"`data` must be 'npz:PATH' with the file to read"),
        ("idx:/no/such/dir", {}, r"`data` must be 'idx:DIR' with an existing directory"),
        ("npz:/no/such/file.npz", {}, r"`data` must be 'npz:FILE' with an existing file"),
        ("digits", {"k": 3}, r"`options` must be options of 'digits' \(none\); got 'k'"),
        ("gaussian", {"classes": 3}, r"`options` must be options of 'gaussian' \('k', 'd'"),
        ("gaussian", {"k": "three"}, r"`k` must be an integer; got 'three'"),
        ("gaussian", {"k": 1}, r"`k` must be an integer >= 2; got 1"),
        ("gaussian", {"separation": "inf"}, r"`separation` must be a finite number"),
        ("gaussian", {"separation": -1.0}, r"`separation` must be a number >= 0"),
        ("digits", {"seed": -1}, r"`seed` must be an integer >= 0"),
    ],
)
def test_spec_and_option_errors(spec, options, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(spec, **options)


# --------------------------------------------------------------------------------------------
# digits and gaussian
# --------------------------------------------------------------------------------------------


def test_digits_layout_and_values():
    ds = load_dataset("digits")
    ref = load_digits()
    assert ds.kind == "image" and ds.name == "digits"
    assert ds.x_train.shape == (1797, 1, 8, 8) and ds.x_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.y_train.tolist() == ref.target.tolist()
    assert ds.x_test is None and ds.y_test is None and not ds.has_test
    assert ds.num_classes == 10 and ds.class_names == tuple("0123456789")
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0
    # rescaled 0..16 -> 0..255 and back recovers the bundled values exactly
    back = np.rint(ds.x_train[:, 0].astype(np.float64) * 16 / 255)
    np.testing.assert_array_equal(back, ref.images)


def test_gaussian_is_seeded_and_takes_text_options():
    a = load_dataset("gaussian", seed=3, k="3", d="5", n_per_class="7", separation="2.5")
    b = load_dataset("gaussian", seed=3, k=3, d=5, n_per_class=7, separation=2.5)
    c = load_dataset("gaussian", seed=4, k=3, d=5, n_per_class=7, separation=2.5)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.kind == "tabular" and a.x_train.dtype == np.float32 and a.x_train.shape == (21, 5)
    assert a.train_counts().tolist() == [7, 7, 7] and a.y_test.size == 300
    assert a.in_shape == (5,)


def test_gaussian_separation_controls_class_means():
    ds = load_dataset("gaussian", k=3, d=8, n_per_class=4000, separation=6.0)
    means = np.stack([ds.x_train[ds.y_train == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 6.0, atol=0.15)
    # within-class covariance is the identity
    resid = ds.x_train - means[ds.y_train]
    np.testing.assert_allclose(np.cov(resid.T), np.eye(8), atol=0.08)


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dot", [False, True])
def test_idx_roundtrip(tmp_path, gz, dot):
    written = write_idx(tmp_path / "mnist", gz=gz, dot=dot)
    ds = load_dataset(f"idx:{tmp_path / 'mnist'}")
    assert ds.kind == "image" and ds.x_train.shape == (12, 1, 5, 4) and ds.x_test.shape == (6, 1, 5, 4)
    np.testing.assert_array_equal(ds.x_train[:, 0], written["train"][0])
    np.testing.assert_array_equal(ds.y_test, written["t10k"][1])
    assert ds.num_classes == 3 and ds.name == f"idx:{tmp_path / 'mnist'}"


def test_idx_num_classes_option(tmp_path):
    write_idx(tmp_path, gz=False)
    assert load_dataset(f"idx:{tmp_path}", num_classes="3").num_classes == 3
    with pytest.raises(ValueError, match=r"`y_train` must be labels in 0..1 \(num_classes = 2\); got 2"):
        load_dataset(f"idx:{tmp_path}", num_classes=2)
    with pytest.raises(
        ValueError, match=r"at least one training sample of every class 0..4.*no sample of class 3"
    ):
        load_dataset(f"idx:{tmp_path}", num_classes=5)


def _corrupt(root: Path, name: str, data: bytes) -> None:
    for p in root.glob(name + "*"):
        p.unlink()
    (root / name).write_bytes(data)


@pytest.mark.parametrize(
    ("name", "make", "match"),
    [
        # labels file where images are expected: magic 0x00000801 instead of 0x00000803
        (
            "train-images-idx3-ubyte",
            lambda: idx_bytes(np.zeros(12, np.uint8)),
            r"must be an IDX file with magic number 0x00000803 \(3-D, uint8\); got magic number 0x00000801",
        ),
        (
            "train-images-idx3-ubyte",
            lambda: b"\x12\x34\x08\x03" + b"\0" * 40,
            r"must be an IDX file \(magic number",
        ),
        (
            "train-images-idx3-ubyte",
            lambda: idx_bytes(np.zeros((12, 5, 4), np.uint8), type_code=0x0C)[:16] + b"\0" * 960,
            r"magic number 0x00000803 \(3-D, uint8\); got magic number 0x00000c03",
        ),
        (
            "train-images-idx3-ubyte",
            lambda: idx_bytes(np.zeros((12, 5, 4), np.uint8))[:-7],
            r"must be 240 data bytes for dimensions \(12, 5, 4\); got 233 bytes \(truncated\)",
        ),
        (
            "train-images-idx3-ubyte",
            lambda: idx_bytes(np.zeros((12, 5, 4), np.uint8)) + b"xx",
            r"got 242 bytes \(trailing bytes\)",
        ),
        (
            "train-images-idx3-ubyte",
            lambda: b"\0\0\x08\x03\0\0",
            r"must be an IDX file with a 16-byte header",
        ),
        ("train-images-idx3-ubyte", lambda: b"\0\0", r"must be an IDX file \(at least a 4-byte header\)"),
        (
            "train-labels-idx1-ubyte",
            lambda: idx_bytes(np.zeros(11, np.uint8)),
            r"train-labels-idx1-ubyte` must be one label per image of train-images-idx3-ubyte \(12 images\); got 11 labels",
        ),
        (
            "t10k-images-idx3-ubyte",
            lambda: idx_bytes(np.zeros((6, 5, 5), np.uint8)),
            r"must be test images of the training size \(5, 4\); got \(5, 5\)",
        ),
        (
            "train-images-idx3-ubyte.gz",
            lambda: gzip.compress(idx_bytes(np.zeros((12, 5, 4), np.uint8)))[:-12],
            r"is a corrupt or truncated gzip file",
        ),
        (
            "train-images-idx3-ubyte.gz",
            lambda: gzip.compress(idx_bytes(np.zeros((12, 5, 4), np.uint8))) + b"garbage",
            r"is a corrupt or truncated gzip file \(trailing garbage after the compressed data\)",
        ),
        (
            "t10k-labels-idx1-ubyte",
            lambda: idx_bytes(np.array([0, 1, 2, 0, 1, 7], np.uint8)),
            r"`y_test` must be labels in 0..2 \(num_classes = 3\); got 7",
        ),
        (
            # 2^31 x 2^31 x 4 bytes: the size check must not wrap around in int64
            "train-images-idx3-ubyte",
            lambda: struct.pack(">BBBBIII", 0, 0, 0x08, 3, 2**31, 2**31, 4),
            r"must be an IDX header with plausible dimensions; got \(2147483648, 2147483648, 4\)",
        ),
    ],
)
def test_idx_errors(tmp_path, name, make, match):
    write_idx(tmp_path, gz=False)
    _corrupt(tmp_path, name.removesuffix(".gz"), b"")
    (tmp_path / name.removesuffix(".gz")).unlink()
    (tmp_path / name).write_bytes(make())
    with pytest.raises(ValueError, match=match) as info:
        load_dataset(f"idx:{tmp_path}")
    assert "\n" not in str(info.value)


def test_idx_multi_member_gzip(tmp_path):
    """A gzip file of several members (concatenated .gz files, as pigz or `cat a.gz b.gz` make)
    is one stream; zero padding after the last member is allowed."""
    images, _ = write_idx(tmp_path, gz=False)["train"]
    name = "train-images-idx3-ubyte"
    raw = (tmp_path / name).read_bytes()
    (tmp_path / name).unlink()
    half = len(raw) // 2
    (tmp_path / (name + ".gz")).write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + b"\0" * 8)
    np.testing.assert_array_equal(load_dataset(f"idx:{tmp_path}").x_train[:, 0], images)


def test_idx_missing_file(tmp_path):
    write_idx(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        ValueError, match=r"must be a directory with t10k-labels-idx1-ubyte\[.gz\]; got no such file"
    ):
        load_dataset(f"idx:{tmp_path}")


def test_read_idx_other_types(tmp_path):
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    p = tmp_path / "ints"
    p.write_bytes(struct.pack(">BBBBII", 0, 0, 0x0C, 2, 2, 3) + arr.tobytes())
    out = read_idx(p, ndim=2, type_code=None)
    assert out.dtype == np.int32 and out.dtype.isnative and out.tolist() == [[0, 1, 2], [3, 4, 5]]


# --------------------------------------------------------------------------------------------
# CIFAR pickles and the restricted unpickler
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_roundtrip(tmp_path, protocol):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):  # parent or the batch folder itself
        ds = load_dataset(f"cifar10:{root}")
        assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (5, 3, 32, 32)
        first = batches["data_batch_1"]
        np.testing.assert_array_equal(ds.x_train[:4].reshape(4, -1), first[b"data"])
        assert ds.y_train[:4].tolist() == first[b"labels"]
        assert ds.class_names[0] == "airplane" and ds.num_classes == 10
        # CHW layout: channel 0 is the first 1024 bytes (red plane, row-major)
        assert ds.x_train[0, 1, 0, 0] == first[b"data"][0, 1024]


def test_cifar100_fine_and_coarse(tmp_path):
    written = write_cifar100(tmp_path)
    fine = load_dataset(f"cifar100:{tmp_path}")
    coarse = load_dataset(f"cifar100:{tmp_path}", label_type="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert fine.y_train.tolist() == written["train"][b"fine_labels"]
    assert coarse.y_test.tolist() == written["test"][b"coarse_labels"]
    assert fine.class_names[3] == "fine3" and coarse.class_names[19] == "coarse19"
    with pytest.raises(ValueError, match=r"`label_type` must be one of 'fine', 'coarse'; got 'super'"):
        load_dataset(f"cifar100:{tmp_path}", label_type="super")


def test_malicious_pickle_is_refused_without_running(tmp_path):
    write_cifar10(tmp_path)
    sentinel = tmp_path / "SENTINEL"
    dump(tmp_path / "data_batch_3", {b"data": Evil(sentinel), b"labels": [0]})
    # sanity: plain pickle would run it
    assert not sentinel.exists()
    with pytest.raises(
        ValueError,
        match=r"data_batch_3` must be a pickle of plain data and numpy arrays; got refusing to load global '(posix|os|nt)\.system'",
    ):
        load_dataset(f"cifar10:{tmp_path}")
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (lambda: {b"x": np.array([1, "a", None], dtype=object)}, r"refusing numpy dtype dtype\('O'\)"),
        (lambda: {b"x": np.zeros(2, dtype=[("a", "f4")])}, r"refusing numpy dtype"),
        (lambda: {b"x": eval}, r"refusing to load global 'builtins.eval'"),
        (lambda: {b"x": Path("/etc")}, r"refusing to load global 'pathlib"),
        (
            lambda: {b"x": __import__("collections").OrderedDict()},
            r"refusing to load global 'collections.OrderedDict'",
        ),
    ],
)
def test_restricted_unpickler_refuses(tmp_path, payload, match):
    p = tmp_path / "batch"
    dump(p, payload(), protocol=4)
    with pytest.raises(ValueError, match=match):
        safe_unpickle(p)


class _Reduce:
    """Pickles as ``func(*args)`` (+ optional BUILD state): crafts pickles a normal object would not."""

    def __init__(self, func, args, state=None):
        self.rv = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.rv


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        # numpy.ndarray may only appear as _reconstruct's first argument, never be called
        (lambda: _Reduce(np.ndarray, ((3,), "f8")), r"refusing to call numpy.ndarray directly"),
        (
            lambda: _Reduce(_reconstruct(), (np.ndarray, (0,), b"O")),
            r"refusing numpy _reconstruct with unexpected arguments",
        ),
        (lambda: _Reduce(_reconstruct(), (np.ndarray, (10**12,), b"b")), r"refusing numpy _reconstruct"),
        # a dtype whose BUILD state would add (object) fields
        (
            lambda: _Reduce(np.dtype, ("V8", False, True), (3, "|", None, ("a",), {"a": ("f8", 0)}, 8, 1, 0)),
            r"refusing numpy dtype dtype\('V8'\)|refusing a numpy dtype state with sub-arrays or fields",
        ),
        (
            lambda: _Reduce(np.dtype, ("f8", False, True), (3, "<", None, ("a",), {"a": ("f8", 0)}, 8, 1, 0)),
            r"refusing a numpy dtype state with sub-arrays or fields",
        ),
        # an array state that is a list (the object-array path) instead of raw bytes
        (
            lambda: _Reduce(
                _reconstruct(), (np.ndarray, (0,), b"b"), (1, (2,), np.dtype("f8"), False, [1.0, 2.0])
            ),
            r"refusing a numpy array state without a raw byte buffer",
        ),
        # BUILD on anything but arrays and dtypes
        (lambda: _Reduce(set, ([1, 2],), {"x": 1}), r"refusing to set the state of a set"),
        (
            lambda: _Reduce(__import__("subprocess").Popen, (["true"],)),
            r"refusing to load global '(subprocess|commands).Popen'",
        ),
    ],
)
def test_restricted_unpickler_refuses_crafted_numpy_pickles(tmp_path, payload, match):
    p = tmp_path / "crafted"
    dump(p, payload(), protocol=2)
    with pytest.raises(ValueError, match=match):
        safe_unpickle(p)
    # shared dtype singletons are untouched
    assert np.dtype("f8").fields is None and np.dtype("f8").byteorder == "="


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (BINSTRING), as the original CIFAR files were made."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("utf-8") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def test_cifar10_python2_style_batches(tmp_path):
    import io

    batches = write_cifar10(tmp_path)
    for name, batch in batches.items():
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(batch)
        raw = buf.getvalue()
        assert b"_codecs" not in raw  # really the Python 2 layout
        (tmp_path / name).write_bytes(raw)
    ds = load_dataset(f"cifar10:{tmp_path}")
    np.testing.assert_array_equal(ds.x_test.reshape(5, -1), batches["test_batch"][b"data"])
    assert ds.y_train[:4].tolist() == batches["data_batch_1"][b"labels"]


def _hash_bomb(depth: int, fanout: int) -> tuple:
    """A tuple of ``fanout`` references to one tuple of ``fanout`` references ... ``depth`` deep:
    tiny as a pickle (memo), but hashing it touches fanout**depth leaves."""
    t: tuple = ("x",)
    for _ in range(depth):
        t = (t,) * fanout
    return t


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("container", ["dict key", "set", "frozenset"])
def test_restricted_unpickler_refuses_keys_that_hash_forever(tmp_path, protocol, container):
    """Hashing a shared-memo nested tuple costs fanout**depth (60**4 here, about a second; two
    levels more take hours); dict keys and set elements must be strings, bytes or numbers,
    refused before anything is hashed."""
    bomb = _hash_bomb(4, 60)
    body = pickle.dumps(bomb, protocol=protocol)
    body = body[2:-1] if protocol >= 2 else body[:-1]  # without PROTO and STOP
    head = pickle.PROTO + bytes([protocol]) if protocol >= 2 else b""
    if container == "dict key":
        raw = head + pickle.EMPTY_DICT + body + pickle.NONE + pickle.SETITEM + pickle.STOP
    elif protocol >= 4:
        op = pickle.EMPTY_SET if container == "set" else b""
        tail = pickle.ADDITEMS if container == "set" else pickle.FROZENSET
        raw = head + op + pickle.MARK + body + tail + pickle.STOP
    else:  # protocols 0-3 call the builtin on a list
        name = b"set" if container == "set" else b"frozenset"
        raw = head + b"c__builtin__\n" + name + b"\n" + pickle.MARK + pickle.EMPTY_LIST + pickle.MARK
        raw += body + pickle.APPENDS + pickle.TUPLE + pickle.REDUCE + pickle.STOP
    assert len(raw) < 2000
    p = tmp_path / "batch"
    p.write_bytes(raw)
    with pytest.raises(ValueError, match=r"refusing a dict key or set element of type tuple"):
        safe_unpickle(p)


def test_cifar_meta_names_must_be_short_strings(tmp_path):
    write_cifar10(tmp_path, n_per_batch=2)
    meta = tmp_path / "batches.meta"
    deep: list = ["x"]
    for _ in range(50):  # a nested list, not a name
        deep = [deep]
    for names, match in (
        ([deep] + [b"n"] * 9, r"strings of at most 1,000 characters; got a list"),
        ([b"n" * 5000] + [b"n"] * 9, r"got a name of 5000 characters"),
        ([b"n"] * 3, r"with 10 'label_names' \(class names\); got 3 names"),
    ):
        dump(meta, {b"label_names": names}, protocol=4)
        with pytest.raises(ValueError, match=match):
            load_dataset(f"cifar10:{tmp_path}")


def test_restricted_unpickler_builds_plain_data(tmp_path):
    obj = {
        b"a": [1, 2.5, True, None, b"x", "y"],
        "t": (1, {2}),
        "arr": np.arange(12, dtype=np.float64).reshape(3, 4),
        "s": np.array([b"ab", b"c"]),
    }
    for protocol in (0, 2, 4, 5):
        p = tmp_path / f"p{protocol}"
        dump(p, obj, protocol=protocol)
        back = safe_unpickle(p)
        assert back[b"a"] == obj[b"a"] and back["t"] == obj["t"]
        np.testing.assert_array_equal(back["arr"], obj["arr"])
        np.testing.assert_array_equal(back["s"], obj["s"])
    assert RestrictedUnpickler.find_class.__qualname__.startswith("RestrictedUnpickler")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda b: b.pop(b"labels"),
            r"must be a CIFAR batch with keys 'data' and 'labels'; got \['batch_label', 'data', 'filenames'\]",
        ),
        (
            lambda b: b.__setitem__(b"labels", b[b"labels"][:-1]),
            r"must be one label per image \(4 images\); got 3 labels",
        ),
        (
            lambda b: b.__setitem__(b"data", b[b"data"][:, :100]),
            r"must be 'data' as a uint8 array of shape \(n, 3072\); got uint8 \(4, 100\)",
        ),
        (lambda b: b.__setitem__(b"data", b[b"data"].astype(np.float32)), r"got float32 \(4, 3072\)"),
        (
            lambda b: b.__setitem__(b"labels", [0, 1, 2, 10]),
            r"`y_train` must be labels in 0..9 \(num_classes = 10\); got 10",
        ),
        (lambda b: b.__setitem__(b"labels", ["a", "b", "c", "d"]), r"must be 'labels' as a list of integers"),
    ],
)
def test_cifar_batch_errors(tmp_path, mutate, match):
    batches = write_cifar10(tmp_path)
    b = batches["data_batch_2"]
    mutate(b)
    dump(tmp_path / "data_batch_2", b)
    with pytest.raises(ValueError, match=match):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar_truncated_and_missing(tmp_path):
    write_cifar10(tmp_path)
    raw = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"test_batch` is a truncated or corrupt pickle"):
        load_dataset(f"cifar10:{tmp_path}")
    (tmp_path / "test_batch").unlink()
    with pytest.raises(ValueError, match=r"must be a CIFAR directory with the file 'test_batch'"):
        load_dataset(f"cifar10:{tmp_path}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"must be a CIFAR directory containing 'data_batch_1'"):
        load_dataset(f"cifar10:{tmp_path / 'empty'}")


def test_cifar_not_a_dict(tmp_path):
    write_cifar10(tmp_path)
    dump(tmp_path / "data_batch_5", [1, 2, 3])
    with pytest.raises(
        ValueError, match=r"data_batch_5` must be a CIFAR batch \(a pickled dict\); got 'list'"
    ):
        load_dataset(f"cifar10:{tmp_path}")


# --------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------


def test_npz_image_layout_is_asked_for_where_the_shape_cannot_tell(tmp_path):
    """(n, 4, 4, 3) is 4x4 RGB images (NHWC) or 4-channel 4x3 ones (NCHW): read as NCHW before,
    without a word, so a user's 4x4 RGB images trained as scrambled 4-channel pixels."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(4, 4, 4, 3), dtype=np.uint8)
    p = tmp_path / "small.npz"
    np.savez(p, x_train=x, y_train=np.array([0, 1, 0, 1]))
    with pytest.raises(
        ValueError,
        match=rf"^`npz:{re.escape(str(p))}\[x_train\]` must be a shape whose channel axis is plain "
        r"\(here axis 1 and axis 3 could both be the channels: pass --data-option layout=nchw or "
        r"layout=nhwc\); got \(4, 4, 4, 3\)\.$",
    ):
        load_dataset(f"npz:{p}")
    nhwc = load_dataset(f"npz:{p}", layout="nhwc")
    assert nhwc.x_train.shape == (4, 3, 4, 4)
    np.testing.assert_array_equal(nhwc.x_train[2, 1], x[2, :, :, 1])
    nchw = load_dataset(f"npz:{p}", layout="nchw")
    assert nchw.x_train.shape == (4, 4, 4, 3)
    np.testing.assert_array_equal(nchw.x_train, x)
    # an explicit layout overrides the guess where there is one
    y = rng.integers(0, 256, size=(4, 3, 8, 8), dtype=np.uint8)
    np.savez(p, x_train=y, y_train=np.array([0, 1, 0, 1]))
    assert load_dataset(f"npz:{p}").x_train.shape == (4, 3, 8, 8)
    assert load_dataset(f"npz:{p}", layout="nhwc").x_train.shape == (4, 8, 3, 8)
    with pytest.raises(
        ValueError,
        match=r"^`layout` must be 'auto', 'nchw' or 'nhwc' \(the axes of 4-D image arrays\); got 'NHWC'\.$",
    ):
        load_dataset(f"npz:{p}", layout="NHWC")


def test_npz_tabular_and_images(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "tab.npz"
    np.savez(
        p,
        x_train=rng.normal(size=(6, 3)),
        y_train=np.array([0, 1, 2, 0, 1, 2]),
        class_names=np.array(["a", "b", "c"]),
    )
    ds = load_dataset(f"npz:{p}")
    assert ds.kind == "tabular" and ds.x_train.dtype == np.float32 and ds.x_test is None
    assert ds.class_names == ("a", "b", "c")

    x = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)  # NHWC
    p2 = tmp_path / "img.npz"
    np.savez_compressed(
        p2, x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x[:2], y_test=np.array([1.0, 0.0])
    )
    ds2 = load_dataset(f"npz:{p2}")
    assert ds2.kind == "image" and ds2.x_train.shape == (4, 3, 8, 8)
    np.testing.assert_array_equal(ds2.x_train[1, 2], x[1, :, :, 2])
    assert ds2.y_test.dtype == np.int64 and ds2.y_test.tolist() == [1, 0]

    p3 = tmp_path / "grey.npz"
    np.savez(p3, x_train=x[..., 0], y_train=np.array([0, 1, 0, 1]))
    assert load_dataset(f"npz:{p3}").x_train.shape == (4, 1, 8, 8)
    # Keras' layout: labels as an (n, 1) column (keras.datasets.cifar10.load_data())
    p4 = tmp_path / "keras.npz"
    np.savez(p4, x_train=x, y_train=np.array([[0], [1], [1], [0]], np.uint8), x_test=x[:2], y_test=[[1], [0]])
    ds4 = load_dataset(f"npz:{p4}")
    assert ds4.y_train.tolist() == [0, 1, 1, 0] and ds4.y_test.tolist() == [1, 0]
    np.savez(p4, x_train=x, y_train=np.zeros((4, 2), np.int64))  # two columns: not labels
    with pytest.raises(
        ValueError, match=r"must be integer labels, 1-D or an \(n, 1\) column; got int64 \(4, 2\)"
    ):
        load_dataset(f"npz:{p4}")


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((2, 2))}, r"must be an npz with arrays x_train and y_train"),
        (
            {"x_train": np.zeros((2, 2)), "y_train": np.array([0, 1]), "x_test": np.zeros((1, 2))},
            r"both x_test and y_test, or neither",
        ),
        (
            {"x_train": np.zeros((2, 2)), "y_train": np.array([0.5, 1])},
            r"\[y_train\]` must be integer labels, 1-D or an \(n, 1\) column",
        ),
        ({"x_train": np.zeros((2, 2)), "y_train": np.array([0, -1])}, r"must be labels >= 0; got -1"),
        (
            {"x_train": np.zeros((2, 2)), "y_train": np.array([0, 1, 1])},
            r"`y_train` must be one label per sample \(2 samples\); got 3 labels",
        ),
        (
            {"x_train": np.zeros((2, 2, 2, 2), np.float32), "y_train": np.array([0, 1])},
            r"must be uint8 pixels for a 4-D image array",
        ),
        (
            {
                "x_train": np.zeros((2, 2)),
                "y_train": np.array([0, 1]),
                "x_test": np.zeros((1, 3)),
                "y_test": np.array([0]),
            },
            r"`x_test` must be samples of the training shape \(2,\); got \(3,\)",
        ),
        (
            {"x_train": np.array([[0.0, np.nan], [1, 1]]), "y_train": np.array([0, 1])},
            r"`x_train` must be finite numbers \(no NaN or inf\); got a non-finite value in row 0",
        ),
        (
            {"x_train": np.zeros((2, 2)), "y_train": np.array([0, 1]), "class_names": np.array(["a"])},
            r"\[class_names\]` must be 2 strings",
        ),
        (
            # one huge label: an error, not 2^40 classes (it used to exhaust the memory)
            {"x_train": np.zeros((10, 3)), "y_train": np.array([0, 1, 2] * 3 + [2**40])},
            r"must be at most as many classes as training samples \(10\); got largest training label \+ 1 = 1099511627777",
        ),
        (
            {"x_train": np.zeros((0, 3)), "y_train": np.zeros(0, np.int64)},
            r"\[x_train\]` must be at least one sample; got float64 \(0, 3\)",
        ),
        (
            # labels 1..k: the error says to renumber them (num_classes = k could not help)
            {"x_train": np.zeros((6, 3)), "y_train": np.array([1, 2, 3] * 2)},
            r"must be training labels 0..k-1 with a sample of every class; got 3 distinct labels 1..3 "
            r"with no sample of class 0: renumber them 0..2",
        ),
        (
            # a float label too large for an int64 is not wrapped around to a negative label
            {"x_train": np.zeros((2, 3)), "y_train": np.array([0.0, 1e20])},
            r"\[y_train\]` must be integer labels, 1-D or an \(n, 1\) column; got float64 \(2,\)",
        ),
        (
            {
                "x_train": np.zeros((2, 2)),
                "y_train": np.array([0, 1]),
                "x_test": np.zeros((0, 2)),
                "y_test": np.zeros(0, np.int64),
            },
            r"\[x_test\]` must be at least one sample",
        ),
        (
            {"x_train": np.zeros((2, 2), complex), "y_train": np.array([0, 1])},
            r"\[x_train\]` must be real numbers; got 'complex128'",
        ),
    ],
)
def test_npz_errors(tmp_path, arrays, match):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    with pytest.raises(ValueError, match=match):
        load_dataset(f"npz:{p}")


def test_npz_refuses_object_arrays_and_garbage(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x_train=np.array([[1, None]], dtype=object), y_train=np.array([0]))
    with pytest.raises(ValueError, match=r"must be an npz of plain arrays \(object arrays are refused\)"):
        load_dataset(f"npz:{p}")
    # many references to one object pickle smaller than n * 8 bytes: still the object-array error
    np.savez(p, x_train=np.array([None] * 10000, dtype=object).reshape(-1, 1), y_train=np.zeros(10000, int))
    with pytest.raises(ValueError, match=r"must be an npz of plain arrays \(object arrays are refused\)"):
        load_dataset(f"npz:{p}")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(
        ValueError,
        match=r"must be an .npz file \(a zip archive of .npy arrays, as numpy.savez writes\); got a file starting with b'this'",
    ):
        load_dataset(f"npz:{bad}")


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_npz_header_claiming_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    """A 200-byte member whose header claims a (1e6, 1e6) float32 array (4 TB) is refused from
    its header; numpy would try to allocate it first."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    p = tmp_path / "big.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x_train.npy", header.getvalue() + b"\0" * 64)
        z.writestr("y_train.npy", _npy(np.zeros(3, np.int64)))
    with pytest.raises(
        ValueError,
        match=r"big.npz\[x_train\]` must be an array no larger than its file entry \(\d+ bytes\) and 16 GiB; got a header claiming \(1000000, 1000000\) float32: 4,000,000,000,000 bytes\.$",
    ):
        load_dataset(f"npz:{p}")


def test_npz_member_that_is_not_npy_is_named(tmp_path):
    p = tmp_path / "raw.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x_train.npy", b"garbage")
        z.writestr("y_train.npy", _npy(np.zeros(3, np.int64)))
    with pytest.raises(
        ValueError, match=r"raw.npz\[x_train\]` must be a .npy array; got a member of other content"
    ):
        load_dataset(f"npz:{p}")


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def test_csv_label_column_defaults(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("f1,label,f2\n1,0,2\n3,1,4\n5,1,6.5\n")
    ds = load_dataset(f"csv:{p}")
    assert ds.kind == "tabular" and ds.x_train.tolist() == [[1, 2], [3, 4], [5, 6.5]]
    assert ds.y_train.tolist() == [0, 1, 1] and ds.class_names == ("0", "1")
    q = tmp_path / "b.csv"
    q.write_text("f1,f2,y\n1,2,cat\n3,4,dog\n5,6,cat\n")  # no 'label' column: the last one
    ds2 = load_dataset(f"csv:{q}")
    assert ds2.class_names == ("cat", "dog") and ds2.y_train.tolist() == [0, 1, 0]
    ds3 = load_dataset(f"csv:{p}", label="f2")
    assert ds3.x_train.tolist() == [[1, 0], [3, 1], [5, 1]] and ds3.class_names == ("2", "4", "6.5")
    with pytest.warns(
        UserWarning,
        match=r"integers but not 0..k-1; class i is the i-th smallest label \(0 = 1, 1 = 3, 2 = 5\)",
    ):
        ds4 = load_dataset(f"csv:{p}", label="f1")  # labels 1, 3, 5
    assert ds4.class_names == ("1", "3", "5") and ds4.y_train.tolist() == [0, 1, 2]
    with pytest.raises(
        ValueError, match=r"a.csv: `y_train` must be labels in 0..2 \(num_classes = 3\); got 5"
    ):
        load_dataset(f"csv:{p}", label="f1", num_classes=3)  # indices on request
    with pytest.raises(
        ValueError, match=r"must be at most as many classes as training samples \(3\); got num_classes = 6"
    ):
        load_dataset(f"csv:{p}", label="f1", num_classes=6)


def test_csv_one_based_integer_labels_with_a_test_file(tmp_path):
    """Labels 1..3 (as in the UCI wine data) map to classes 0..2 in numeric order, also
    10 after 9; a test label unseen in training is an error."""
    tr, te = tmp_path / "tr.csv", tmp_path / "te.csv"
    tr.write_text("a,label\n0.1,1\n0.2,10\n0.3,9\n0.4,1\n")
    te.write_text("a,label\n0.5,10\n0.6,9\n")
    with pytest.warns(UserWarning):
        ds = load_dataset(f"csv:{tr}", test=str(te))
    assert ds.class_names == ("1", "9", "10") and ds.y_train.tolist() == [0, 2, 1, 0]
    assert ds.y_test.tolist() == [2, 1]
    pm = tmp_path / "pm.csv"
    pm.write_text("a,label\n0.1,1\n0.2,-1\n")  # the -1/+1 convention of binary tasks
    with pytest.warns(UserWarning):
        assert load_dataset(f"csv:{pm}").class_names == ("-1", "1")
    te.write_text("a,label\n0.5,7\n")
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match=r"must be labels seen in training \(1, 9, 10\); got '7'"),
    ):
        load_dataset(f"csv:{tr}", test=str(te))


def test_csv_named_label_and_test_file(tmp_path):
    tr = tmp_path / "train.tsv"
    tr.write_text("cls\tx\ty\nb\t1\t2\na\t3\t4\n\nb\t0\t0\n")
    te = tmp_path / "test.tsv"
    te.write_text("cls\tx\ty\na\t9\t9\n")
    ds = load_dataset(f"csv:{tr}", label="cls", delimiter="\t", test=str(te))
    assert ds.class_names == ("a", "b") and ds.y_train.tolist() == [1, 0, 1]
    assert ds.x_test.tolist() == [[9, 9]] and ds.y_test.tolist() == [0]


def test_csv_with_the_column_names_pandas_gives_an_array_is_read(tmp_path):
    """``pd.DataFrame(np.c_[X, y]).to_csv(index=False)`` writes the header 0,1,...,d: all
    numbers, yet a header (the rule that refuses a file without one must not refuse it)."""
    f = tmp_path / "d.csv"
    f.write_text("0,1,2\n0.5,1.5,0.0\n1.0,2.0,1.0\n3.0,4.0,0.0\n")
    ds = load_dataset(f"csv:{f}")
    assert ds.x_train.tolist() == [[0.5, 1.5], [1.0, 2.0], [3.0, 4.0]]
    assert ds.y_train.tolist() == [0, 1, 0]
    assert load_dataset(f"csv:{f}", label="0").y_train.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("text", "options", "match"),
    [
        ("a,label\n1,0\nx,1\n", {}, r"line 3, column 'a'` must be a number; got 'x'"),
        ("a,label\n1,0\n2\n", {}, r"line 3` must be 2 fields like the header; got 1"),
        ("a,label\n1,0\n", {"label": "cls"}, r"`label` must be a column of .* \(a, label\); got 'cls'"),
        ("a,label\n", {}, r"must be a CSV file with a header row and at least one data row; got 1 rows"),
        ("label\n1\n", {}, r"must be at least one feature column besides the label"),
        ("a,a,label\n1,2,0\n", {}, r"must be a header of distinct column names"),
        # no header: the first sample is not silently taken for the column names
        (
            "0.5,1.5,0\n1,2,1\n3,4,0\n",
            {},
            r"d.csv` must be a CSV file whose first row names the columns .*; got a first row of numbers: 0.5,1.5,0",
        ),
        ("1,1,0\n1,2,1\n", {}, r"first row names the columns"),
        # pandas' to_csv(index=True) writes the row index as an unnamed first column: it would
        # silently become a feature
        (
            ",0,1,2\n0,0.5,1.5,0.0\n1,1.0,2.0,1.0\n",
            {},
            r"must be a header naming every column \(pandas writes its row index unnamed: save with "
            r"to_csv\(index=False\)\); got column 1 without a name: ,0,1,2",
        ),
        (",x,label\n0,0.5,0\n1,1.0,1\n", {}, r"got column 1 without a name: ,x,label"),
        ("x,,label\n0,0.5,0\n1,1.0,1\n", {}, r"got column 2 without a name"),
        ("a,label\ninf,0\n", {}, r"must be a finite number; got 'inf'"),
        (
            "a,label\n1,0\n2,3\n",
            {"num_classes": 2},
            r"`y_train` must be labels in 0..1 \(num_classes = 2\); got 3",
        ),
        ("a,label\n1,0\n2,-1\n", {"num_classes": 2}, r"must be labels >= 0; got -1"),
        ("a,label\n1,0\n", {"delimiter": ";;"}, r"`delimiter` must be one character"),
        ("a,label\n1,x\n2,y\n", {"num_classes": 3}, r"`num_classes` must be 2 \(the distinct text labels\)"),
        ("a,label\n1,0\n2,1\n", {"test": "/no/such.csv"}, r"`test` must be an existing CSV file"),
        # a missing label is an error, not a class '' (which would renumber the others)
        ("a,label\n1,0\n2,1\n3,\n4,0\n", {}, r"line 4, column 'label'` must be a label; got ''"),
        ("a,label\n1,0\n2,NaN\n", {}, r"line 3, column 'label'` must be a label; got 'NaN'"),
        # line numbers are the file's: blank lines and quoted multi-line fields count
        ("a,label\n\n\n1,0\n\n2,1\nx,0\n", {}, r"line 7, column 'a'` must be a number; got 'x'"),
        ('a,b,label\n1,"x\ny",0\n2,3,1\nz,3,1\n', {}, r"line 2, column 'b'` must be a number"),
        ('a,b,label\n1,"x\ny",0\n2,3,1\nz,3,1\n'.replace('"x\ny"', '"4\n"'), {}, r"line 5, column 'a'"),
        ("a,label\n1e39,0\n2,1\n", {}, r"line 2, column 'a'` must be a number within float32's range"),
    ],
)
def test_csv_errors(tmp_path, text, options, match):
    p = tmp_path / "d.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_dataset(f"csv:{p}", **options)


def test_csv_test_file_mismatch(tmp_path):
    tr = tmp_path / "tr.csv"
    tr.write_text("a,b,label\n1,2,x\n3,4,y\n")
    te = tmp_path / "te.csv"
    te.write_text("a,c,label\n1,2,x\n")
    with pytest.raises(ValueError, match=r"te.csv` must be the feature columns of tr.csv \(a, b\)"):
        load_dataset(f"csv:{tr}", test=te)
    # integer labels: k comes from the training file; the test file's unseen class is its error
    tr.write_text("a,label\n1,0\n2,1\n3,2\n")
    te.write_text("a,label\n1,0\n2,3\n")
    with pytest.raises(ValueError, match=r"`y_test` must be labels in 0..2 \(num_classes = 3\); got 3"):
        load_dataset(f"csv:{tr}", test=te)
    tr.write_text("a,b,label\n1,2,x\n3,4,y\n")
    te.write_text("a,b,label\n1,2,z\n")
    with pytest.raises(
        ValueError, match=r"column 'label'` must be labels seen in training \(x, y\); got 'z'"
    ):
        load_dataset(f"csv:{tr}", test=te)


# --------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------

Image = pytest.importorskip("PIL.Image")


def _save(path: Path, arr: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def test_folder_grey_rgb_and_split(tmp_path):
    rng = np.random.default_rng(0)
    grey = {
        c: [rng.integers(0, 256, (6, 5), dtype=np.uint8) for _ in range(n)]
        for c, n in (("cat", 3), ("dog", 2))
    }
    for c, imgs in grey.items():
        for i, a in enumerate(imgs):
            _save(tmp_path / "g" / c / f"{i}.png", a)
    (tmp_path / "g" / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "g" / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf")  # skipped without a word
    (tmp_path / "g" / ".hidden").mkdir()
    with pytest.warns(
        UserWarning, match=r"1 file\(s\) in the class folders are not images .* \(e.g. cat/notes.txt\)"
    ):
        ds = load_dataset(f"folder:{tmp_path / 'g'}")
    assert ds.class_names == ("cat", "dog") and ds.x_train.shape == (5, 1, 6, 5) and ds.x_test is None
    np.testing.assert_array_equal(ds.x_train[3, 0], grey["dog"][0])
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1]

    for split in ("train", "test"):
        for c in ("a", "b"):
            _save(tmp_path / "s" / split / c / "x.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    _save(tmp_path / "s" / "train" / "a" / "y.jpg", rng.integers(0, 256, (4, 4), dtype=np.uint8), "JPEG")
    ds2 = load_dataset(f"folder:{tmp_path / 's'}")
    assert ds2.x_train.shape == (3, 3, 4, 4) and ds2.x_test.shape == (2, 3, 4, 4)  # grey jpg promoted to RGB
    ds3 = load_dataset(f"folder:{tmp_path / 's'}", mode="L", size="8x6")
    assert ds3.x_train.shape == (3, 1, 8, 6)


@pytest.mark.parametrize(
    ("setup", "options", "match"),
    [
        (
            lambda r: _save(r / "b" / "1.png", np.zeros((3, 3), np.uint8)),
            {},
            r"1.png` must be an image of size 4x4 like 0.png \(or pass size=HxW\); got 3x3",
        ),
        (lambda r: (r / "b" / "2.png").write_bytes(b"not a png"), {}, r"2.png` is not a readable image"),
        (
            lambda r: (r / "c").mkdir(),
            {},
            r"/c` must be a class folder with at least one image; got no image files",
        ),
        (lambda r: None, {"size": "big"}, r"`size` must be 'H' or 'HxW' in pixels"),
        (lambda r: None, {"mode": "CMYK"}, r"`mode` must be one of 'auto', 'L', 'RGB'"),
        (
            lambda r: [p.unlink() for p in (r / "b").iterdir()] and (r / "b").rmdir(),
            {},
            r"must be a directory with one sub-folder of images per class",
        ),
    ],
)
def test_folder_errors(tmp_path, setup, options, match):
    _save(tmp_path / "a" / "0.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "b" / "0.png", np.zeros((4, 4), np.uint8))
    setup(tmp_path)
    with pytest.raises(ValueError, match=match):
        load_dataset(f"folder:{tmp_path}", **options)


def test_folder_reads_sub_folders_of_a_class(tmp_path):
    """Images in sub-folders of a class folder (cat/2019/...) belong to the class (they were
    silently left out); .jfif is a JPEG; hidden folders are skipped and a linked folder that
    loops back is read once."""
    _save(tmp_path / "cat" / "a.png", np.full((4, 4), 1, np.uint8))
    _save(tmp_path / "cat" / "2019" / "b.png", np.full((4, 4), 2, np.uint8))
    _save(tmp_path / "cat" / "2019" / "deep" / "c.png", np.full((4, 4), 3, np.uint8))
    _save(tmp_path / "cat" / "d.jfif", np.full((4, 4), 4, np.uint8), "JPEG")
    _save(tmp_path / "cat" / ".cache" / "e.png", np.full((4, 4), 5, np.uint8))
    _save(tmp_path / "dog" / "a.png", np.full((4, 4), 6, np.uint8))
    (tmp_path / "cat" / "2019" / "loop").symlink_to(tmp_path / "cat", target_is_directory=True)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.train_counts().tolist() == [4, 1]
    assert ds.x_train[:, 0, 0, 0].tolist() == [2, 3, 1, 4, 6]  # name order: 2019/, a.png, d.jfif
    # A class may be called train if it holds images; train/ and val/ of class folders are refused
    _save(tmp_path / "train" / "x.png", np.full((4, 4), 7, np.uint8))
    assert load_dataset(f"folder:{tmp_path}").class_names == ("cat", "dog", "train")
    for split in ("train", "val"):
        for c in ("a", "b"):
            _save(tmp_path / "s" / split / c / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(
        ValueError, match=r"got folders train, val of class folders without both train/ and test/"
    ):
        load_dataset(f"folder:{tmp_path / 's'}")
    for extra in ("train", "s"):
        shutil.rmtree(tmp_path / extra)
    (tmp_path / "dog" / "IMG_1.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    with pytest.warns(UserWarning, match=r"1 file\(s\) .* were not read \(e.g. dog/IMG_1.HEIC\)"):
        assert load_dataset(f"folder:{tmp_path}").train_counts().tolist() == [4, 1]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_folder_applies_exif_orientation(tmp_path, fmt):
    """A phone's portrait photo: pixels stored sideways plus EXIF orientation 6. It is read
    upright, as viewers show it, so it has the size of the upright pictures (no size error and,
    with size=, no squashed sideways copy)."""
    upright = np.zeros((16, 8), np.uint8)
    upright[:8] = 255  # white top half
    suffix = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
    _save(tmp_path / "a" / f"0.{suffix}", upright, fmt)
    _save(tmp_path / "b" / f"0.{suffix}", upright, fmt)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    sideways = Image.fromarray(upright).transpose(Image.ROTATE_90)  # 8 high, 16 wide
    sideways.save(tmp_path / "a" / f"1.{suffix}", format=fmt, exif=exif)
    for options in ({}, {"size": "16x8"}):
        ds = load_dataset(f"folder:{tmp_path}", mode="L", **options)  # WebP stores grey as RGB
        assert ds.x_train.shape == (3, 1, 16, 8)
        np.testing.assert_allclose(ds.x_train[1, 0], upright, atol=8)  # JPEG is lossy


def test_folder_image_decoding_to_another_size_is_a_clear_error(tmp_path):
    """An uncompressed TIFF with an Orientation tag: Pillow (13) reports its size upright but
    decodes it sideways. Either it is read at its reported size or the error names the file,
    never a numpy broadcast traceback."""
    upright = np.zeros((16, 8), np.uint8)
    _save(tmp_path / "a" / "0.tif", upright, "TIFF")
    _save(tmp_path / "b" / "0.tif", upright, "TIFF")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(upright.T.copy()).save(tmp_path / "a" / "1.tif", exif=exif)
    try:
        ds = load_dataset(f"folder:{tmp_path}")
    except ValueError as exc:
        assert re.search(
            r"1.tif` must be an image that decodes to the size of its header \(16x8\); got 8x16", str(exc)
        )
    else:
        assert ds.x_train.shape == (3, 1, 16, 8)


def test_folder_without_pillow(tmp_path, monkeypatch):
    _save(tmp_path / "a" / "0.png", np.zeros((4, 4), np.uint8))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ValueError, match=r"folder datasets need Pillow.*pip install 'cegeo\[images\]'"):
        load_dataset(f"folder:{tmp_path}")


# --------------------------------------------------------------------------------------------
# Dataset validation (users may build one from their own arrays)
# --------------------------------------------------------------------------------------------


def _ds(**kw):
    base = dict(
        name="m",
        kind="tabular",
        x_train=np.zeros((4, 2), np.float32),
        y_train=np.array([0, 1, 0, 1]),
        x_test=None,
        y_test=None,
        num_classes=2,
        class_names=("a", "b"),
    )
    base.update(kw)
    return Dataset(**base)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "text"}, r"`kind` must be 'image' or 'tabular'; got 'text'"),
        ({"x_train": np.zeros((4, 2))}, r"`x_train` must be a float32 array of shape \(n, d\)"),
        ({"kind": "image"}, r"`x_train` must be a uint8 array of shape \(n, C, H, W\)"),
        ({"x_train": [[0.0]]}, r"`x_train` must be a numpy array; got 'list'"),
        ({"y_train": np.array([0.0, 1, 0, 1])}, r"`y_train` must be integer class labels; got float64"),
        ({"y_train": np.array([[0, 1, 0, 1]])}, r"`y_train` must be a 1-D numpy array of integer labels"),
        ({"num_classes": 1}, r"`num_classes` must be an integer >= 2; got 1"),
        ({"class_names": ("a",)}, r"`class_names` must be 2 names \(one per class\); got 1"),
        ({"x_test": np.zeros((1, 2), np.float32)}, r"`x_test/y_test` must be both arrays or both None"),
        ({"y_train": np.array([0, 0, 0, 0])}, r"no sample of class 1"),
    ],
)
def test_dataset_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        _ds(**kw)


def test_dataset_describe_and_int64():
    ds = _ds(y_train=np.array([0, 1, 0, 1], dtype=np.uint8))
    assert ds.y_train.dtype == np.int64
    d = ds.describe()
    assert d["train_counts"] == [2, 2] and d["n_test"] is None and d["in_shape"] == [2]


def test_folder_truncated_image_and_16_bit(tmp_path):
    _save(tmp_path / "a" / "0.png", np.full((4, 4), 7, np.uint8))
    (tmp_path / "b").mkdir()
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "b" / "0.png")  # 16-bit grey
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.x_train.shape == (2, 1, 4, 4) and ds.x_train[0].max() == 7 and ds.x_train[1].min() == 255
    rng = np.random.default_rng(0)
    _save(tmp_path / "b" / "1.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    raw = (tmp_path / "b" / "1.png").read_bytes()
    (tmp_path / "b" / "1.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"1.png` is not a readable image"):
        load_dataset(f"folder:{tmp_path}", size=4)


def _pgm16(path: Path, values: np.ndarray) -> None:
    """A binary 16-bit PGM (maxval 65535; Pillow opens it in mode I)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = values.shape
    path.write_bytes(f"P5\n{w} {h}\n65535\n".encode() + values.astype(">u2").tobytes())


def test_folder_16_bit_images_share_one_scale(tmp_path):
    """Each 16-bit image is scaled by 65535, not by its own maximum (which made every image of
    a uniform value 255): 60000, 30000, 1000 and 500 stay distinct, in order."""
    for i, v in enumerate((60000, 30000)):
        _pgm16(tmp_path / "a" / f"{i}.pgm", np.full((4, 4), v))
    for i, v in enumerate((1000, 500)):
        _pgm16(tmp_path / "b" / f"{i}.pgm", np.full((4, 4), v))
    assert Image.open(tmp_path / "a" / "0.pgm").mode == "I"
    ds = load_dataset(f"folder:{tmp_path}")
    expected = [round(v * 255 / 65535) for v in (60000, 30000, 1000, 500)]  # 233, 117, 4, 2
    assert ds.x_train[:, 0, 0, 0].tolist() == expected and ds.x_train.shape[1] == 1
    # A folder that also holds colour images: the grey 16-bit ones are scaled, then made RGB,
    # instead of being clipped to white by Pillow's convert("RGB").
    _save(tmp_path / "b" / "2.png", np.full((4, 4, 3), (10, 20, 30), np.uint8))
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(tmp_path / "b" / "3.png")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.x_train.shape == (6, 3, 4, 4)
    assert ds.x_train[:, :, 0, 0].tolist() == [[v] * 3 for v in expected] + [[10, 20, 30], [128] * 3]
    # float images: values in 0..1 are scaled by 255; anything past 255 is refused
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "a" / "2.tif")
    ds = load_dataset(f"folder:{tmp_path}", mode="L")
    assert ds.x_train[2, 0, 0, 0] == 128
    # 32-bit integer images whose values look 8-bit: read as 16-bit, with one warning
    (tmp_path / "a" / "2.tif").unlink()
    Image.fromarray(np.full((4, 4), 200, np.int32), "I").save(tmp_path / "a" / "2.tif")
    with pytest.warns(
        UserWarning, match=r"1 image\(s\) of 32-bit integers hold values of at most 255 \(e.g. 2.tif\)"
    ):
        ds = load_dataset(f"folder:{tmp_path}", mode="L")
    assert ds.x_train[2, 0, 0, 0] == round(200 * 255 / 65535)
    Image.fromarray(np.full((4, 4), 300.0, np.float32)).save(tmp_path / "a" / "2.tif")
    with pytest.raises(
        ValueError, match=r"2.tif` must be a float image with values in 0..1 or 0..255; got a maximum of 300"
    ):
        load_dataset(f"folder:{tmp_path}")


def test_folder_float_images_share_one_scale(tmp_path):
    """Float images are scaled by one range for the whole folder: a nearly black image of a
    0..255 folder (maximum 0.8) stays nearly black instead of being read as 0..1 and made
    brighter than every other image."""
    for name, v in (("a/bright.tif", 200.0), ("a/dark.tif", 0.8), ("b/0.tif", 100.0)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((4, 4), v, np.float32), "F").save(tmp_path / name)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.x_train[:, 0, 0, 0].tolist() == [200, 1, 100]
    Image.fromarray(np.full((4, 4), 0.5, np.float32), "F").save(tmp_path / "b" / "0.tif")
    Image.fromarray(np.full((4, 4), 1.0, np.float32), "F").save(tmp_path / "a" / "bright.tif")
    ds = load_dataset(f"folder:{tmp_path}")  # every float image in 0..1: scaled by 255
    assert ds.x_train[:, 0, 0, 0].tolist() == [255, 204, 128]


def test_npz_truncated_zip(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x_train=np.zeros((50, 20)), y_train=np.arange(50) % 2)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"is not a readable npz file"):
        load_dataset(f"npz:{p}")


def test_folder_decompression_bomb_is_a_clear_error(tmp_path):
    """A small PNG that decodes to 2e8 pixels: Pillow's DecompressionBombError is one line."""
    from PIL import Image

    _save(tmp_path / "a" / "0.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "b" / "0.png", np.zeros((4, 4), np.uint8))
    Image.new("1", (20000, 10000)).save(tmp_path / "b" / "9.png")
    with pytest.raises(ValueError, match=r"9.png` is not a readable image \(Image size \(200000000 pixels\)"):
        load_dataset(f"folder:{tmp_path}")


def test_csv_labels_too_large_for_a_float_are_text(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,label\n1,1e20\n2,0\n3,0\n4,1e20\n")
    ds = load_dataset(f"csv:{p}", test=None)
    assert ds.class_names == ("0", "1e20") and ds.y_train.tolist() == [1, 0, 0, 1]


def test_restricted_unpickler_refuses_resizing_a_built_dtype(tmp_path):
    """A pickle that builds an S4 array on a 4-byte buffer, then re-BUILDs the memoised dtype
    with elsize = 256, would make the array read 252 bytes past its buffer (heap memory into a
    class name, or a segfault). Only the byte order of a dtype's state may differ from its own."""
    import pickletools

    def op(obj):
        return pickletools.optimize(pickle.dumps(obj, protocol=3))[2:-1]

    dt = b"cnumpy\ndtype\n" + op("S4") + op(False) + op(True) + b"\x87R"
    dt += op((3, "|", None, None, None, 4, 1, 0)) + b"b" + b"q\xc8"  # BUILD, memo 200
    arr = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + op((0,)) + op(b"b") + b"\x87R"
    arr += b"(" + op(1) + op((1,)) + dt + op(False) + op(b"ABCD") + b"tb" + b"q\xc9"
    rebuild = b"h\xc8" + op((3, "|", None, None, None, 256, 1, 0)) + b"b" + b"0"
    p = tmp_path / "rebuild"
    p.write_bytes(b"\x80\x03" + arr + rebuild + b"h\xc9" + b".")
    with pytest.raises(ValueError, match=r"refusing a numpy dtype state that does not match its type '\|S4'"):
        safe_unpickle(p)
    # the same pickle without the second BUILD loads
    p.write_bytes(b"\x80\x03" + arr + b"h\xc9" + b".")
    assert safe_unpickle(p).tolist() == [b"ABCD"]


def test_cifar_labels_must_be_a_flat_list(tmp_path):
    """Nested label lists sharing memo entries would expand a tiny pickle into gigabytes in
    np.asarray: anything but a flat list of ints (or a 1-D array) is refused first."""
    root = tmp_path / "c"
    write_cifar10(root)
    batch = pickle.loads((root / "data_batch_1").read_bytes(), encoding="bytes")
    inner = [0, 1]
    batch[b"labels"] = [inner, inner, inner, inner]
    dump(root / "data_batch_1", batch)
    with pytest.raises(ValueError, match=r"'labels' as a list of integers"):
        load_dataset(f"cifar10:{root}")


def test_csv_drop_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("part_id,a,b,label\n7,1,2,ok\n8,3,4,bad\n9,5,6,ok\n")
    ds = load_dataset(f"csv:{p}", drop="part_id")
    assert ds.x_train.tolist() == [[1, 2], [3, 4], [5, 6]] and ds.class_names == ("bad", "ok")
    assert load_dataset(f"csv:{p}", drop="part_id, b").x_train.tolist() == [[1], [3], [5]]
    with pytest.raises(
        ValueError,
        match=r"`drop` must be feature columns of d.csv \(part_id, a, b, label\), not the label; got \['zz'\]",
    ):
        load_dataset(f"csv:{p}", drop="zz")
    with pytest.raises(ValueError, match=r"not the label; got 'label'"):
        load_dataset(f"csv:{p}", drop="label")
    with pytest.raises(ValueError, match=r"must be at least one feature column besides the label"):
        load_dataset(f"csv:{p}", drop="part_id,a,b")
