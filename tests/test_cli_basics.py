from __future__ import annotations

import re
import subprocess
import sys

import pytest

from cegeo.cli._common import parse_grid, parse_hyper, parse_kv, parse_step


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
        (lambda: parse_hyper(["tau=nan"]), r"`tau` must be a finite number"),
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
        (["theory", "--no-such-option"], r"error: No such option: --no-such-option"),
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
