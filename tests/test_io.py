"""Atomic writes."""

from __future__ import annotations

import os
import re

import pytest


def test_atomic_writes_leave_no_temporary_file_and_use_normal_permissions(tmp_path):
    import stat

    from cegeo._io import atomic_open, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "a.json") as fh:
        fh.write("half")
        raise RuntimeError("interrupted")
    assert (tmp_path / "a.json").read_text().strip() == '{\n  "x": 1\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_write_removes_what_a_killed_writer_of_that_file_left(tmp_path):
    """A process killed mid-write (a sweep's summary.csv, posthoc.json, a report) left its
    temporary file for good; the next write of that file removes it, and nothing that a live
    process, another host or another file's writer may still be writing."""
    import subprocess
    import sys

    from cegeo._io import _HOST, atomic_open

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid whose process is gone
    dead = tmp_path / f".summary.csv.{_HOST}.{child.pid}.k1lled00.tmp"
    live = tmp_path / f".summary.csv.{_HOST}.{os.getppid()}.wr1t1ng0.tmp"
    other_host = tmp_path / f".summary.csv.elsewhere.{child.pid}.abcdefgh.tmp"
    other_file = tmp_path / f".posthoc.json.{_HOST}.{child.pid}.abcdefgh.tmp"
    older_cegeo = tmp_path / ".summary.csv.k3j9x2a1.tmp"
    for f in (dead, live, other_host, other_file, older_cegeo):
        f.write_text("half")
    with atomic_open(tmp_path / "summary.csv") as fh:
        fh.write("whole")
    assert (tmp_path / "summary.csv").read_text() == "whole"
    assert not dead.exists()
    assert all(f.exists() for f in (live, other_host, other_file, older_cegeo))


@pytest.mark.parametrize("name", ["r" * 245 + ".json", "é" * 120 + ".json"])
def test_a_name_near_the_file_name_limit_is_written_atomically(tmp_path, name):
    """Host and pid in the temporary name (up to 90 more bytes) must not make a name the file
    system takes (255 bytes) unwritable: a 240-byte report name wrote before they came, then
    failed with 'File name too long'. A killed writer's temporary of such a name is still
    found and removed by the next write."""
    import subprocess
    import sys

    from cegeo._io import _HOST, _temp_head, write_text

    target = tmp_path / name
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid whose process is gone
    dead = tmp_path / f"{_temp_head(target)}{child.pid}.k1lled00.tmp"
    assert _HOST in dead.name and len(os.fsencode(dead.name)) <= 255
    dead.write_text("half")
    write_text(target, "whole")
    assert target.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("pid", ["99999999999999999999", "\u00b23", "0x10"])
def test_a_temporary_with_no_pid_in_its_name_is_left_alone(tmp_path, pid):
    """A file that only looks like a temporary of NAME (another tool's, or one dropped in a
    shared folder) must not make every write of NAME fail: os.kill raised OverflowError on a
    huge number and int() a ValueError on '\u00b2', which str.isdigit accepts."""
    from cegeo._io import _HOST, write_text

    stray = tmp_path / f".summary.csv.{_HOST}.{pid}.abcdefgh.tmp"
    stray.write_text("not ours")
    write_text(tmp_path / "summary.csv", "whole")
    assert (tmp_path / "summary.csv").read_text() == "whole"
    assert stray.exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="no Linux pid namespaces here")
def test_temporary_names_tell_containers_that_share_a_host_name_apart():
    """Containers that share a host name (Docker's --network host, a Kubernetes pod) see only
    their own processes: a live writer in one looked dead to the other, which removed its
    temporary file mid-write. The token names the pid namespace too."""
    import socket

    from cegeo._io import _HOST

    ns = os.stat("/proc/self/ns/pid").st_ino
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
    assert _HOST == f"{host}_{ns}"


# ------------------------------------------------------------------------------------- read_toml


@pytest.mark.parametrize(
    ("make", "param", "match"),
    [
        (lambda p: p.mkdir(), None, r"^`{p}` must be a TOML file; got the folder '{p}'\.$"),
        (lambda p: p.mkdir(), "--config", r"^`--config` must be a TOML file; got the folder '{p}'\.$"),
        (
            lambda p: p.write_bytes(b'name = "\xff"\n'),
            "--config",
            r"^`--config` must be a UTF-8 TOML file; got '{p}' with a non-UTF-8 byte \(b'\\xff' at byte 8\)\.$",
        ),
        (
            lambda p: p.write_bytes(b'name = "\xff"\n'),
            None,
            r"^`{p}` must be a UTF-8 TOML file; got a file with a non-UTF-8 byte",
        ),
        (lambda p: p.write_text("seeds = [0\n"), None, r"^`{p}` must be valid TOML; got: Unclosed array"),
        (
            lambda p: p.write_text("seeds = [0\n"),
            "CONFIG_FILE",
            r"^`CONFIG_FILE` must be valid TOML; got '{p}': ",
        ),
    ],
)
def test_read_toml_errors_are_one_line_input_errors(tmp_path, make, param, match):
    import re

    from cegeo._io import read_toml
    from cegeo._validation import InputError

    path = tmp_path / "c.toml"
    make(path)
    with pytest.raises(InputError) as info:
        read_toml(path, param)
    assert "\n" not in str(info.value)
    assert re.search(match.format(p=re.escape(str(path))), str(info.value)), str(info.value)


def test_read_toml_missing_file_and_unreadable_file(tmp_path, monkeypatch):
    from pathlib import Path

    from cegeo._io import read_toml
    from cegeo._validation import InputError

    with pytest.raises(FileNotFoundError):  # the CLI prints "file not found: PATH"
        read_toml(tmp_path / "nope.toml", "--config")
    path = tmp_path / "c.toml"
    path.write_text("x = 1\n")
    assert read_toml(path) == {"x": 1}

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)  # root ignores file modes: simulate the refusal
    with pytest.raises(
        InputError, match=r"`--config` must be a readable TOML file; got '.*c\.toml' \(Permission"
    ):
        read_toml(path, "--config")


@pytest.mark.parametrize("kind", ["folder", "latin-1"])
def test_cli_train_config_that_is_a_folder_or_not_utf8_is_one_line_status_2(cli, tmp_path, kind):
    path = tmp_path / "c.toml"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes("[train]\nepochs = 2 # café\n".encode("latin-1"))
    r = cli("train", "--config", path, "--out", tmp_path / "run")
    assert r.code == 2, r.err
    assert r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1
    assert (
        "`--config` must be a TOML file; got the folder"
        if kind == "folder"
        else "`--config` must be a UTF-8 TOML file"
    ) in r.err
    assert not (tmp_path / "run").exists()


def test_git_commit_never_runs_git_in_the_working_directory(tmp_path, monkeypatch):
    """A repository's own config can make git run commands (core.fsmonitor): provenance asks
    only cegeo's source folder, with fsmonitor off."""
    import shutil
    import subprocess

    from cegeo._io import git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "evil"
    repo.mkdir()
    marker = tmp_path / "PWNED"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "f").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "f"], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a", "-c", "core.fsmonitor=false",
         "commit", "-qm", "x"],
        check=True,
    )  # fmt: skip
    subprocess.run(["git", "-C", str(repo), "config", "core.fsmonitor", f"touch {marker}"], check=True)
    (repo / "f").write_text("changed")  # a dirty tree: `git status` would consult fsmonitor
    monkeypatch.chdir(repo)
    git_commit()  # cegeo's own source, wherever the user runs it from
    assert not marker.exists()
    git_commit(repo)  # even asked explicitly, fsmonitor stays off
    assert not marker.exists()


def test_git_commit_of_an_installed_cegeo_is_not_the_surrounding_projects(tmp_path, monkeypatch):
    """pip installs cegeo into site-packages, often a project's .venv inside the project's git
    repository: that repository's commit (and dirty state) is not cegeo's, so provenance is None."""
    import shutil
    import subprocess

    import cegeo._io as io_mod

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "project"
    pkg = repo / ".venv" / "lib" / "site-packages" / "cegeo"
    pkg.mkdir(parents=True)
    (repo / ".gitignore").write_text(".venv/\n")
    (repo / "notes.txt").write_text("x")
    (pkg / "_io.py").write_text("# installed copy\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"],
        check=True,
    )
    (repo / "notes.txt").write_text("changed")
    monkeypatch.setattr(io_mod, "__file__", str(pkg / "_io.py"))
    assert io_mod.git_commit() is None
    assert io_mod.git_commit(repo) is not None  # asked explicitly, the project's own commit
    # cegeo's source tracked by the repository (a checkout, an editable install): its commit
    subprocess.run(["git", "-C", str(repo), "add", "-f", str(pkg / "_io.py")], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "y"],
        check=True,
    )
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert io_mod.git_commit() == head.stdout.strip() + "-dirty"


def test_deeply_nested_toml_and_json_are_one_line_errors(tmp_path):
    from cegeo._io import read_json, read_toml

    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"must be TOML of reasonable nesting"):
        read_toml(deep)
    deep_json = tmp_path / "deep.json"
    deep_json.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"must be JSON of reasonable nesting"):
        read_json(deep_json)


def test_to_toml_strings_round_trip_every_character_toml_allows():
    """Quotes, backslashes, newlines, control characters and DEL (which json.dumps leaves raw and
    TOML forbids: config.toml could not be read back) round-trip exactly."""
    from cegeo._io import to_toml, tomllib  # tomllib: tomli on Python 3.10

    data = {"t": {"s": 'la"b\\el\x7f é[b]\n\t\x01\x1f\u2028', "p": "C:\\data\\x.csv"}}
    assert tomllib.loads(to_toml(data)) == data
    with pytest.raises(ValueError, match=r"cannot be written to a TOML file: it is not valid Unicode"):
        to_toml({"t": {"s": "w\udcff.csv"}})


def test_read_jsonl_lines_must_be_objects_with_the_integer_keys(tmp_path):
    from cegeo._io import read_jsonl

    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": 1}\n\n{"epoch": 2, "x": [1]}\n')
    assert read_jsonl(p, ints=("epoch",)) == [{"epoch": 1}, {"epoch": 2, "x": [1]}]
    for text, match in (
        ("[1]\n", r"line 1 must be one JSON object; got '\[1\]'"),
        ('{"epoch": 1}\n{"epoch": "x"}\n', r"line 2 must hold an integer 'epoch'; got 'x'"),
        ('{"epoch": true}\n', r"line 1 must hold an integer 'epoch'; got True"),
        ("{nope\n", r"line 1 must be one JSON object"),
        ('{"epoch": ' + "1" * 5000 + "}\n", r"line 1 must be one JSON object"),
    ):
        p.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_jsonl(p, ints=("epoch",))


def test_read_json_with_a_huge_integer_is_a_one_line_error(tmp_path):
    from cegeo._io import read_json

    p = tmp_path / "sweep.json"
    p.write_text('{"runs": ' + "1" * 5000 + "}")
    with pytest.raises(ValueError, match=r"sweep.json` must be valid JSON; got Exceeds the limit"):
        read_json(p)
