"""Atomic file writes, TOML in/out and provenance (versions, git commit, hardware).

Results are never half-written: every writer writes a temporary file in the target's folder,
flushes and fsyncs it, then renames it over the target (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._validation import InputError, fail

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "append_jsonl",
    "atomic_open",
    "csv_columns",
    "environment_info",
    "read_json",
    "read_jsonl",
    "read_toml",
    "remove_temporaries",
    "to_toml",
    "write_csv",
    "write_json",
    "write_npz",
    "write_text",
    "write_toml",
]


# Temporary files are named ``.NAME.HOST.PID.XXXXXXXX.tmp``: a later write of NAME on the same
# host removes those whose process is gone (killed mid-write), and no other process's.


def _host_token() -> str:
    """The host name (file-name safe) and, on Linux, the process-id namespace: containers that
    share a host name (Docker's --network host, a Kubernetes pod) each see only their own
    processes, so a writer in another one must never look dead to this one."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
    with contextlib.suppress(OSError):
        host += f"_{os.stat('/proc/self/ns/pid').st_ino}"
    return host


_HOST = _host_token()


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (PermissionError): alive
        return True  # (OverflowError: no pid, a file atomic_open did not name: left alone)
    return True


# A file name's limit (NAME_MAX) in bytes, and what a temporary name adds to NAME: the dots, the
# host, a pid of up to 10 digits, mkstemp's 8 random characters and ".tmp".
_NAME_MAX = 255
_TEMP_EXTRA = len(f"..{_HOST}.{'0' * 10}.XXXXXXXX.tmp")


def _temp_head(target: Path) -> str:
    """``.NAME.HOST.``, NAME shortened (the same way in every process) where the temporary name
    would pass the file-name limit: a name the file system takes must be writable atomically."""
    name = target.name
    while name and len(os.fsencode(name)) > _NAME_MAX - _TEMP_EXTRA:
        name = name[:-1]
    return f".{name}.{_HOST}."


def _remove_dead_writers_temporaries(folder: Path, head: str) -> None:
    """Remove the temporary files ``folder/HEAD PID.*.tmp`` (``head``: :func:`_temp_head`) that
    killed processes of this host left."""
    for tmp in folder.glob(f"{glob.escape(head)}*.tmp"):
        pid = tmp.name[len(head) :].split(".", 1)[0]
        # ASCII digits only: str.isdigit takes '²', which int() refuses
        if not (pid.isascii() and pid.isdigit()) or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is untouched. Temporary files of
    ``path`` that killed processes left behind (``kill -9`` mid-write) are removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    head = _temp_head(target)
    _remove_dead_writers_temporaries(target.parent, head)
    fd, tmp = tempfile.mkstemp(prefix=f"{head}{os.getpid()}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # a failed write (a full disk) names no file: name the one that was being written
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise


def remove_temporaries(folder: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Remove the temporary files that :func:`atomic_open` writes of ``names`` in ``folder`` and
    a killed process left behind (``.NAME.HOST.PID.XXXXXXXX.tmp``, or an earlier cegeo's
    ``.NAME.XXXXXXXX.tmp``; a checkpoint's is as large as it), whichever process or host wrote
    them: for a caller that holds the folder's lock."""
    where = Path(folder)
    for name in names:
        for tmp in where.glob(f".{glob.escape(name)}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def writable_folder(param: str, path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is, or can be created as, a folder that takes files; create nothing.

    Called before any work, so an output folder that cannot be used is a one-line
    :class:`InputError` naming ``param`` rather than a traceback after a long run. The nearest
    existing folder on the way (``path`` itself or an ancestor) is probed with a temporary file.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise fail(param, f"a folder cegeo can create and write in ({existing} is a file)", str(folder))
    _probe(param, existing, "a folder cegeo can create and write in", folder)
    return folder


def writable_file(param: str, path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` can be written (atomically) without creating it: its folder exists
    and takes files, and ``path`` is not a folder."""
    target = Path(path)
    if target.is_dir():
        raise fail(param, "a file path (not a folder)", str(target))
    if not target.parent.is_dir():
        raise fail(param, "a path in an existing folder", str(target))
    _probe(param, target.parent, "a path in a folder cegeo can write in", target)
    return target


def _probe(param: str, folder: Path, expected: str, shown: Path) -> None:
    """Create and remove a temporary file in ``folder``; an OSError names ``param`` and ``shown``."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".cegeo-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise fail(param, f"{expected} ({exc.strerror or exc})", str(shown)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    """Replace NaN/inf by None so the output is strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON (NaN/inf written as null)."""
    return json.dumps(_clean(obj), indent=indent, default=_json_default, allow_nan=False)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, dumps_json(obj) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"`{p}` must be valid JSON; got a parse error at line {exc.lineno}.") from None
    except RecursionError:
        raise InputError(f"`{p}` must be JSON of reasonable nesting; got one nested too deeply.") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InputError(f"`{p}` must be valid JSON; got {' '.join(str(exc).split())}.") from None


def append_jsonl(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append one JSON line, rewriting the file atomically (files stay small: one line per epoch)."""
    p = Path(path)
    old = p.read_text() if p.exists() else ""
    write_text(p, old + dumps_json(record, indent=None) + "\n")


def read_jsonl(path: str | os.PathLike[str], ints: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One JSON object per non-blank line; each must hold an integer under every key in ``ints``
    (e.g. ``epoch`` in ``metrics.jsonl``), else a one-line error naming the file and line."""
    p = Path(path)
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # JSONDecodeError is a ValueError, as are huge ints
                record = None
            if not isinstance(record, dict):
                raise InputError(f"`{p}` line {i} must be one JSON object; got {line[:60]!r}.")
            for key in ints:
                value = record.get(key)
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InputError(f"`{p}` line {i} must hold an integer {key!r}; got {value!r}.")
            out.append(record)
    return out


def csv_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The union of the rows' keys, each key placed right after the key that precedes it in the
    first row that has it: rows with different middle columns (a loss's hyperparameters) keep
    every row's own order, e.g. ``[a, c]`` and ``[a, b, c]`` give ``[a, b, c]``, not ``[a, c, b]``.

    >>> csv_columns([{"loss": 0, "lam": 0}, {"loss": 0, "tau": 0, "lam": 0}])
    ['loss', 'tau', 'lam']
    """
    cols: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for row in rows:
        keys = tuple(row)
        if keys in seen:  # most rows repeat an earlier row's keys
            continue
        seen.add(keys)
        at = 0  # insertion point: just after this row's previous key
        for key in keys:
            if key in cols:
                at = cols.index(key) + 1
            else:
                cols.insert(at, key)
                at += 1
    return cols


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV, atomically: the header is :func:`csv_columns` of the rows; floats
    in full precision (``repr``, so they round-trip); None, NaN and inf empty.
    """
    cols = csv_columns(rows)
    p = Path(path)
    with atomic_open(p, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row.get(k)) for k in cols})
    return p


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return v


def write_npz(path: str | os.PathLike[str], **arrays: Any) -> None:
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


# ------------------------------------------------------------------------------------------ TOML


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return json.dumps(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if isinstance(v, Path):
        v = str(v)
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: a file name in another encoding
            raise InputError(
                f"{v!r} cannot be written to a TOML file: it is not valid Unicode text (a file name "
                "in another encoding than UTF-8? rename it)."
            ) from None
        # json escapes every control character TOML forbids but DEL
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """Serialise nested dicts of scalars, strings and lists (None values are omitted).

    Examples
    --------
    >>> print(to_toml({"seed": 0, "train": {"lr": 0.1, "milestones": [116, 232]}}))
    seed = 0
    <BLANKLINE>
    [train]
    lr = 0.1
    milestones = [116, 232]
    <BLANKLINE>
    """
    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if v is not None and not isinstance(v, Mapping)}
        tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        if scalars or (prefix and not tables):
            lines.append("")
        for k, v in tables.items():
            emit(v, f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k))

    emit(data, "")
    return "\n".join(lines)


def write_toml(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    write_text(path, to_toml(data))


def read_toml(path: str | os.PathLike[str], param: str | None = None) -> dict[str, Any]:
    """Parse a TOML file as data (never executed); bad input is a one-line InputError.

    Parameters
    ----------
    path : path
        The TOML file (UTF-8).
    param : str, optional
        The option or argument that gave ``path`` (e.g. ``"--config"``), named in the error;
        without it the error names the path itself.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (the CLI prints ``file not found: PATH``).
    InputError
        ``path`` is a folder or cannot be read, is not UTF-8 text, or is not valid TOML.
    """
    p = Path(path)
    name = param if param is not None else str(p)
    where = f" {str(p)!r}" if param is not None else ""  # the path, when the message names the param
    if p.is_dir():
        raise InputError(f"`{name}` must be a TOML file; got the folder {str(p)!r}.")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"`{name}` must be valid TOML; got{where}: {exc}.") from None
    except RecursionError:
        raise InputError(
            f"`{name}` must be TOML of reasonable nesting; got{where or ' a file'} nested too deeply."
        ) from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"`{name}` must be a UTF-8 TOML file; got{where or ' a file'} with a non-UTF-8 byte "
            f"({exc.object[exc.start : exc.start + 1]!r} at byte {exc.start})."
        ) from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(
            f"`{name}` must be a readable TOML file; got {str(p)!r} ({exc.strerror or exc})."
        ) from None


# ------------------------------------------------------------------------------------ provenance


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The git commit of cegeo's own source (or of ``cwd``), with ``-dirty`` for local changes.

    Only cegeo's source folder is asked by default, never the working directory: git runs
    commands named in a repository's own config (``core.fsmonitor``, clean filters), so running
    it inside an untrusted folder could execute them. fsmonitor is switched off for the query.
    The source folder must be tracked by the repository it lies in: a cegeo installed into a
    virtual environment inside some project (``project/.venv/.../site-packages/cegeo``) is not
    that project's code, so it has no commit (None), and ``git status`` never runs there.
    """
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    git = ["git", "-c", "core.fsmonitor=false", "--no-optional-locks"]
    try:
        if cwd is None:
            tracked = subprocess.run(
                [*git, "ls-files", "--error-unmatch", "--", Path(__file__).name],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if tracked.returncode != 0:
                return None
        out = subprocess.run(
            [*git, "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode != 0:
            return None
        commit = out.stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def environment_info() -> dict[str, Any]:
    """Versions, hardware and git commit, stored with every result."""
    import sklearn
    import torch

    from . import __version__

    info: dict[str, Any] = {
        "cegeo": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
    }
    return info


#: The files ``cegeo report`` writes by default into the folder it reports on.
REPORT_FILES = ("report.html", "summary.md")


def cegeo_wrote_report(path: Path) -> bool:
    """Whether ``path`` is a report cegeo wrote: the HTML's generator tag, or the
    "generated ... by cegeo" line every HTML page and Markdown summary carries near the top."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 16).decode("utf-8", "replace")
    except OSError:
        return False
    if '<meta name="generator" content="cegeo' in head:
        return True
    return any("generated " in line and " by cegeo " in line for line in head.splitlines())
