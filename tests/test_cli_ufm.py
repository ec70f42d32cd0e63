"""`cegeo ufm` end to end on a tiny sweep, and every bad input (one line, exit status 2)."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from cegeo._io import read_toml
from cegeo.config import from_dict
from cegeo.ufm import PANEL_KEYS, UFMExperiment

TINY = [
    "--step", "k=4,R=4,rho=0.5", "--n-min", "2", "--d", "4", "--loss", "cdt,ldt",
    "--gamma-grid", "-1:0.5:4", "--epochs", "40", "--lr", "0.5", "--milestones", "30",
    "--log-every", "10", "--quiet",
]  # fmt: skip


def test_ufm_end_to_end(cli, tmp_path):
    out = tmp_path / "run"
    r = cli("ufm", *TINY, "--path", "--path-lams", "1e-2,1e-4,1e-6,1e-8", "--out", out)
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "8 configuration(s)" in text
    for loss in ("cdt", "ldt"):
        assert f"{loss}: largest gap to theory over gamma >= -0.5" in text
        assert f"{loss}: exact minimiser vs the lam -> 0 limit" in text
    for name in (
        "ufm.csv",
        "summary.json",
        "config.toml",
        "ufm_cdt.png",
        "ufm_ldt.png",
        "path.csv",
        "path_ldt.png",
    ):
        assert (out / name).is_file(), name
    with (out / "ufm.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 * 5  # configs x logged epochs (0, 10, 20, 30, 40)
    assert {r["loss"] for r in rows} == {"cdt", "ldt"} and {r["epoch"] for r in rows} == {
        "0",
        "10",
        "20",
        "30",
        "40",
    }
    assert float(rows[-1]["lr_now"]) == pytest.approx(0.05)
    summary = json.loads((out / "summary.json").read_text())
    ldt = summary["comparison"]["ldt"]
    assert ldt["param"] == "gamma" and [p["value"] for p in ldt["points"]] == [-1.0, -0.5, 0.0, 0.5]
    assert set(ldt["gaps"]) == set(PANEL_KEYS)
    gap = ldt["gaps"]["W_ratio"]
    assert gap["at"] >= -0.5 and gap["ufm_vs_theory"] > 0 and gap["regularisation"] > 0
    assert all(p["minimiser"]["converged"] for p in ldt["points"])
    with (out / "path.csv").open() as fh:
        path_rows = list(csv.DictReader(fh))
    assert len(path_rows) == 8 * 4 and {r["loss"] for r in path_rows} == {"cdt", "ldt"}
    path = summary["path"]["ldt"]
    assert path["lams"] == [1e-2, 1e-4, 1e-6, 1e-8] and path["panels"]["dist_W"]["monotone"]
    # The written config reproduces the experiment.
    again = from_dict(UFMExperiment, read_toml(out / "config.toml"))
    assert again.configs() == from_dict(UFMExperiment, summary["experiment"]).configs()


def test_ufm_config_with_overrides(cli, tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('counts = [6, 6, 2]\nlosses = ["ce", "wce"]\nepochs = 5000\nd = 3\nlog_every = 1000\n')
    r = cli("ufm", "--config", cfg, "--epochs", "20", "--seeds", "0,1", "--quiet", "--out", tmp_path / "o")
    assert r.code == 0, r.err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["experiment"]["epochs"] == 20 and len(summary["configs"]) == 4
    assert summary["comparison"]["ce"]["gap_filter"] == "all"
    assert not (tmp_path / "o" / "ufm_ce.png").exists()  # no grid, no figure against gamma
    # A profile option replaces the file's profile.
    r = cli("ufm", "--config", cfg, "--step", "k=4,R=2,rho=0.5", "--n-min", "1", "--epochs", "5", "--quiet")
    assert r.code == 0, r.err
    assert "step:k=4,R=2,rho=0.5,n_min=1" in " ".join(r.out.split())


@pytest.mark.parametrize(
    "args, match",
    [
        ([], "give a class profile: --step, --longtail or --counts"),
        (["--step", "k=4,R=4"], "`--step` must be key=value pairs"),
        (["--step", "k=4,R=0.5,rho=0.5"], "`R` must be a number >= 1"),
        (["--counts", "5"], "`counts` must be at least two class counts"),
        (["--step", "k=4,R=2.5,rho=0.5", "--n-min", "1"], "`n_min` must be a size with R \\* n_min a whole"),
        (["--step", "k=4,R=4,rho=0.5", "--counts", "4,2"], "give exactly one of step | longtail | counts"),
        (["--counts", "4,2", "--epochs", "abc"], "`--epochs` must be an integer >= 1"),
        (["--counts", "4,2", "--epochs", "0"], "`--epochs` must be an integer >= 1"),
        (["--counts", "4,2", "--d", "2.5"], "`--d` must be an integer"),
        (["--counts", "4,2", "--lr", "fast"], "`--lr` must be a finite number"),
        (["--counts", "4,2", "--lr", "-1"], "`lr` must be a number > 0"),
        (["--counts", "4,2", "--momentum", "1"], "`momentum` must be a number in \\[0, 1\\)"),
        (["--counts", "4,2", "--weight-decay", "nan"], "`--weight-decay` must be a finite number"),
        (["--counts", "4,2", "--loss", "ldam"], "`loss` must be a ParametricCE member"),
        (["--counts", "4,2", "--loss", "focal"], "unknown loss 'focal'"),
        (
            ["--counts", "4,2", "--loss", "ce", "--gamma-grid", "0:1:3"],
            "`losses` must be losses with a family",
        ),
        (
            ["--counts", "4,2", "--gamma-grid", "1:0:3"],
            "`--gamma-grid` must be START:STOP:NUM with START < STOP",
        ),
        (["--counts", "4,2", "--hyper", "tau=1"], "loss 'ldt' takes gamma, normalize; got unknown"),
        (["--counts", "4,2", "--milestones", "x"], "`--milestones` must be comma-separated integers"),
        (["--counts", "4,2", "--milestones", "30,20"], "`milestones` must be strictly increasing"),
        (["--counts", "4,2", "--seeds", "a"], "`--seeds` must be comma-separated integers"),
        (["--counts", "4,2", "--seeds", "-1"], "`--seeds` must be an integer >= 0"),
        (["--counts", "4,2", "--batch-size", "-2"], "`--batch-size` must be an integer >= 0"),
        (["--counts", "4,2", "--dtype", "float16"], "`dtype` must be 'float32' or 'float64'"),
        (["--counts", "4,2", "--device", "tpu"], "`device` must be"),
        (["--counts", "4,2", "--threads", "0"], "`--threads` must be an integer >= 1"),
        (["--counts", "4,2", "--path-lams", "1e-3,1e-2"], "`path_lams` must be a strictly decreasing"),
        (["--counts", "4,2", "--path-lams", "a"], "`--path-lams` must be comma-separated numbers"),
        (["--counts", "4,2", "--init-std", "0"], "`init_std` must be a number > 0"),
        (["--config", "no/such/file.toml"], "`--config` must be an existing TOML file"),
    ],
)
def test_ufm_bad_input_is_one_line_and_exit_2(cli, args, match):
    r = cli("ufm", *args, "--quiet")
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert match in lines[0] or re.search(match, lines[0]), lines[0]
    assert r.out == ""  # nothing ran


def test_ufm_bad_config_file(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("counts = [4, 2]\nepoch = 3\n")
    r = cli("ufm", "--config", bad)
    assert (
        r.code == 2 and "unknown key `epoch` in the config" in r.err and len(r.err.strip().splitlines()) == 1
    )
    bad.write_text("counts = [4, 2\n")
    r = cli("ufm", "--config", bad)
    assert r.code == 2 and "must be valid TOML" in r.err and len(r.err.strip().splitlines()) == 1


def test_ufm_out_must_be_a_folder(cli, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = cli("ufm", "--counts", "4,2", "--epochs", "2", "--out", f, "--quiet")
    assert r.code == 2 and "`--out` must be a folder" in r.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_ufm_cuda_without_gpu(cli):
    r = cli("ufm", "--counts", "4,2", "--device", "cuda", "--quiet")
    assert r.code == 2 and "`device` must be an available device" in r.err
