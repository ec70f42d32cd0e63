from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cegeo._io import writable_file, writable_folder
from cegeo.cli._common import parse_counts, parse_grid, parse_hyper, parse_kv, parse_step


def test_help_and_losses(cli):
    r = cli("--help")
    assert r.code == 0 and "R = n_max/n_min >= 1" in " ".join(r.out.split())
    r = cli("losses")
    assert r.code == 0 and "balanced_softmax" in r.out


def test_unknown_command_is_usage_error(cli):
    assert cli("no-such-command").code == 2


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "cegeo", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("cegeo ")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: parse_grid("-1.5:1.5"), r"`--gamma-grid` must be START:STOP:NUM"),
        (lambda: parse_grid("1:0:5"), r"`--gamma-grid` must be START:STOP:NUM with START < STOP"),
        (lambda: parse_grid("0:1:x"), r"`--gamma-grid` must be START:STOP:NUM with numbers"),
        (lambda: parse_grid("a,b"), r"`--gamma-grid` must be START:STOP:NUM or a comma-separated"),
        (lambda: parse_step("k=10,R=10"), r"`--step` must be key=value pairs"),
        (lambda: parse_step("k=10,R=0.1,rho=0.5"), r"`R` must be a number >= 1"),
        (lambda: parse_step("k=10,R=10,rho=0.25"), r"`rho` must be a value with rho\*k a whole number"),
        (lambda: parse_kv("k10", "--step", {"k"}), r"`--step` must be comma-separated key=value pairs"),
        (lambda: parse_hyper(["tau"]), r"`--hyper` must be name=value"),
        (lambda: parse_hyper(["tau=nan"]), r"`--hyper tau` must be a finite number"),
        (lambda: parse_grid("0:1:100000000"), r"`--gamma-grid` must be START:STOP:NUM with NUM <= 10001"),
        (lambda: parse_grid("0:1:10002"), r"NUM <= 10001"),
        (lambda: parse_grid("0,,1"), r"`--gamma-grid` must be .* with no empty entry"),
        (lambda: parse_grid("0,1,"), r"`--gamma-grid` must be .* with no empty entry"),
        (lambda: parse_grid(",".join(["0"] * 10_002)), r"`--gamma-grid` must be a list of at most 10001"),
        (
            lambda: parse_step("k=10,R=10,rho=0.5,R=5"),
            r"`--step` must be key=value pairs with each key once \(R",
        ),
        (lambda: parse_kv("k=10,,R=5", "--longtail", {"k", "R"}), r"`--longtail` must be comma-separated"),
        (
            lambda: parse_counts("500,,50"),
            r"`--counts` must be comma-separated positive integers with no empty",
        ),
        (lambda: parse_counts("500,50,"), r"`--counts` must be .* with no empty entry"),
        (lambda: parse_counts(" "), r"`--counts` must be .* with no empty entry"),
        (
            lambda: parse_hyper(["tau=1", "tau=2"]),
            r"`--hyper` must be name=value pairs with distinct names \(tau is given twice\)",
        ),
    ],
)
def test_parser_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "args, match",
    [
        (["train", "--epochs", "abc"], r"error: Invalid value for '--epochs'.*\(see `cegeo train --help`\)"),
        (["no-such-command"], r"error: No such command 'no-such-command'.*\(see `cegeo --help`\)"),
        (["theory", "--no-such-option"], r"error: No such option:? '?--no-such-option"),  # click 8.2+ quotes
    ],
)
def test_usage_errors_are_one_line_with_status_2(cli, args, match):
    r = cli(*args)
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1
    assert re.match(match, r.err.strip())


def test_no_arguments_prints_help(cli):
    r = cli()
    assert r.code == 0 and "Commands" in r.out


@pytest.mark.parametrize(
    "args",
    [
        [
            "train",
            "--data",
            "digits",
            "--imbalance",
            "step:R=10,rho=0.5",
            "--epochs",
            "1",
            "--out",
            "{f}/sub",
        ],
        ["sweep", "experiments/demo.toml", "--out", "{f}/sub"],
        ["demo", "--fast", "--out", "{f}/sub"],
        ["ufm", "--counts", "4,2", "--epochs", "3", "--out", "{f}/sub"],
        ["theory", "--counts", "4,2", "--loss", "ldt", "--plot", "{f}/x.png"],
        ["theory", "--counts", "4,2", "--loss", "ldt", "--plot", "{d}"],
    ],
    ids=["train", "sweep", "demo", "ufm", "theory-plot-under-a-file", "theory-plot-a-folder"],
)
def test_unusable_output_paths_fail_before_any_work(cli, tmp_path, monkeypatch, args):
    """An --out under a file (or a --plot that is a folder) is one line and status 2, before
    anything is trained or printed, and nothing is written."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    f = tmp_path / "f"
    f.write_text("a file, not a folder")
    d = tmp_path / "d.png"
    d.mkdir()
    r = cli(*[a.format(f=f, d=d) for a in args])
    assert r.code == 2, r.err
    err = r.err.strip()
    assert len(err.splitlines()) == 1 and re.match(r"error: `--(out|plot)` must be ", err), err
    assert r.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "f"]


def test_writable_helpers(tmp_path):
    assert writable_folder("out", tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert writable_file("--plot", tmp_path / "x.png") == tmp_path / "x.png"
    assert list(tmp_path.iterdir()) == []  # checks create nothing
    (tmp_path / "f").write_text("")
    with pytest.raises(
        ValueError,
        match=r"`out` must be a folder cegeo can create and write in \(.*/f is a file\); got '.*/f/a'\.$",
    ):
        writable_folder("out", tmp_path / "f" / "a")
    with pytest.raises(ValueError, match=r"`--plot` must be a path in an existing folder"):
        writable_file("--plot", tmp_path / "missing" / "x.png")
    with pytest.raises(ValueError, match=r"`--plot` must be a file path \(not a folder\)"):
        writable_file("--plot", tmp_path)


def test_os_errors_after_the_checks_are_one_line(cli, tmp_path, monkeypatch):
    """A write that fails mid-way (disk full) is not bad input: one line, status 1."""
    import cegeo.cli.cmd_ufm as cmd_ufm

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "summary.json"))

    monkeypatch.setattr(cmd_ufm, "write_json", full)
    r = cli("ufm", "--counts", "4,2", "--epochs", "3", "--quiet", "--out", tmp_path)
    assert r.code == 1
    assert r.err.strip() == f"error: No space left on device: {tmp_path / 'summary.json'}"


def test_strict_parsers_still_accept_good_input():
    assert parse_grid("0:1:10001").size == 10_001
    assert parse_grid(" 0, 0.5 ").tolist() == [0.0, 0.5]
    assert parse_step(" k=10, R=10 ,rho=0.5").R == 10.0
    assert parse_counts("500, 50,5").tolist() == [500, 50, 5]
    assert parse_hyper(["tau=1", "gamma=2"]) == {"tau": 1.0, "gamma": 2.0}


def test_cegeo_warnings_print_as_one_line(cli, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,label\n" + "".join(f"{i},{1 + (i % 3)}\n" for i in range(30)))  # labels 1..3
    r = cli("data", f"csv:{path}")
    assert r.code == 0, r.err
    lines = r.err.strip().splitlines()
    assert lines and all(line.startswith("warning: ") for line in lines), r.err


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_stops_a_command_as_ctrl_c_does(tmp_path, signame):
    """`kill PID` (a scheduler's preemption) killed `cegeo train` on the spot: a run stopped
    before its first checkpoint left config.toml and .lock, and a plain rerun was refused. A
    closed terminal or SSH session (SIGHUP) did the same."""
    import os
    import signal
    import time

    if not hasattr(signal, signame):
        pytest.skip(f"no {signame} on this platform")

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cegeo", "train", "--epochs", "400", "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}

    def as_a_terminal_starts_it():  # the test itself may run under nohup (SIGHUP ignored)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(getattr(signal, signame), signal.SIG_DFL)

    proc = subprocess.Popen(
        [*cmd, "--out", str(out)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_a_terminal_starts_it,
    )
    try:
        # (the default MLP, 6 x 512: the first epoch outlasts the signal)
        deadline = time.monotonic() + 120
        while not (out / "config.toml").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.002)
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
    finally:  # a run the signal did not stop would train its 400 epochs on after the test
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err  # as Ctrl-C
    left = {p.name for p in out.iterdir()}
    # before its first checkpoint: the folder as found; after it: resumable, unlocked
    assert left == set() or ("checkpoint.pt" in left and ".lock" not in left), left


COMMANDS = ["train", "data", "sweep", "demo", "evaluate", "losses", "posthoc", "report", "theory", "ufm"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_paragraphs_reflow_at_80_columns(cli, monkeypatch, command):
    # typer keeps a docstring's single line breaks: source lines of ~100 characters came out as
    # a full line and then a word or two ("others go on" / "(exit status 1 ..." / "command").
    monkeypatch.setenv("COLUMNS", "80")
    r = cli(command, "--help")
    assert r.code == 0
    description = r.out.split("╭")[0].splitlines()[3:]  # after the usage line and summary's start
    paragraphs: list[list[str]] = [[]]
    for line in description:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    for lines in paragraphs:
        for line in lines[:-1]:  # every line but a paragraph's last is filled to the width
            assert len(line) > 60, (command, line, lines)


def test_train_help_out_default_is_not_cut_at_80_columns(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = cli("train", "--help")
    out_help = r.out.split("--out", 1)[1].split("--resume", 1)[0]
    assert "…" not in out_help and "named after the data, model, loss and seed" in " ".join(
        w for line in out_help.splitlines() for w in line.strip("│ ").split()
    )
