"""`cegeo ufm` end to end on a tiny sweep, and every bad input (one line, exit status 2)."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
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
        (["--counts", "5"], "`--counts` must be at least two class counts"),
        # R * n_min beyond int64 was an OverflowError traceback; beyond 2**31 - 1 too large to simulate
        (
            ["--step", "k=4,R=1e300,rho=0.5"],
            r"`--step` must be a profile with R \* n_min .* at most 2,147,483,647",
        ),
        (["--step", "k=4,R=1e9,rho=0.5"], r"`--step` must be a profile with R \* n_min"),
        (
            ["--step", "k=4,R=2.5,rho=0.5", "--n-min", "1"],
            "`--n-min` must be a size with R \\* n_min a whole",
        ),
        (["--step", "k=4,R=4,rho=0.5", "--counts", "4,2"], "give exactly one of step | longtail | counts"),
        (["--counts", "4,2", "--epochs", "abc"], "`--epochs` must be an integer >= 1"),
        (["--counts", "4,2", "--epochs", "0"], "`--epochs` must be an integer >= 1"),
        (["--counts", "4,2", "--d", "2.5"], "`--d` must be an integer"),
        (["--counts", "4,2", "--lr", "fast"], "`--lr` must be a finite number"),
        (["--counts", "4,2", "--lr", "-1"], "`--lr` must be a number > 0"),
        (["--counts", "4,2", "--momentum", "1"], "`--momentum` must be a number in \\[0, 1\\)"),
        (["--counts", "4,2", "--weight-decay", "nan"], "`--weight-decay` must be a finite number"),
        (["--counts", "4,2", "--loss", "ldam"], "`--loss` must be a ParametricCE member"),
        (
            ["--counts", "4,2", "--loss", "focal"],
            "`--loss` must be a loss name, one of 'ce', 'wce', 'la', 'cdt', 'ldt', 'vs', 'balanced_softmax', 'ldam'; got 'focal'",
        ),
        (
            ["--counts", "4,2", "--loss", "ce", "--gamma-grid", "0:1:3"],
            "`--loss` must be losses with a family",
        ),
        (
            ["--counts", "4,2", "--gamma-grid", "1:0:3"],
            "`--gamma-grid` must be START:STOP:NUM with START < STOP",
        ),
        (["--counts", "4,2", "--hyper", "tau=1"], "loss 'ldt' takes gamma, normalize; got unknown"),
        # names of create_loss's own arguments are unknown hyperparameters too (name and
        # class_counts were a TypeError, reduction read as a hyperparameter that must be 'mean', ...)
        *(
            (["--counts", "4,2", "--hyper", f"{name}=1"], f"got unknown hyperparameter(s) {name}.")
            for name in ("name", "class_counts", "reduction")
        ),
        (["--counts", "4,2", "--milestones", "x"], "`--milestones` must be comma-separated integers"),
        (["--counts", "4,2", "--milestones", "30,20"], "`--milestones` must be strictly increasing"),
        (["--counts", "4,2", "--seeds", "a"], "`--seeds` must be comma-separated integers"),
        (["--counts", "4,2", "--seeds", "-1"], "`--seeds` must be an integer >= 0"),
        (["--counts", "4,2", "--seeds", "0,0"], "`--seeds` must be distinct seeds; got [0, 0]"),
        # a repeated loss or grid value ran the same configurations twice, and their (zero)
        # spread was reported as the std over seeds
        (["--counts", "4,2", "--loss", "ldt,cdt", "--loss", "ldt"], "`--loss` must be distinct loss names"),
        (
            ["--counts", "4,2", "--gamma-grid", "0,0.5,0"],
            "`--gamma-grid` must be distinct values; got [0.0, 0.5, 0.0]",
        ),
        (["--counts", "4,2", "--batch-size", "-2"], "`--batch-size` must be an integer >= 0"),
        (["--counts", "4,2", "--dtype", "float16"], "`--dtype` must be 'float32' or 'float64'"),
        (["--counts", "4,2", "--device", "tpu"], "`--device` must be"),
        (["--counts", "4,2", "--threads", "0"], "`--threads` must be an integer >= 1"),
        (["--counts", "4,2", "--threads", "1000000"], r"`--threads` must be an integer in \[1, \d+\]"),
        (["--counts", "4,2", "--weight-decay", "-1"], "`--weight-decay` must be a number >= 0"),
        (
            ["--counts", "4,2", "--weight-decay", "0", "--path"],
            r"`--weight-decay` must be a number in \(0, 1\) with --path",
        ),
        (
            ["--counts", "4,2", "--weight-decay", "2", "--path"],
            r"`--weight-decay` must be a number in \(0, 1\)",
        ),
        (["--counts", "4,2", "--path-lams", "1e-3,1e-2"], "`--path-lams` must be a strictly decreasing"),
        (["--counts", "4,2", "--path-lams", "a"], "`--path-lams` must be comma-separated numbers"),
        (["--counts", "4,2", "--init-std", "0"], "`--init-std` must be a number > 0"),
        (["--counts", "4,2", "--lr-decay", "0"], "`--lr-decay` must be a number > 0"),
        (["--counts", "4,2", "--loss", "ldt", "--hyper", "gamma=1e6"], "`--hyper gamma` must be a value"),
        (["--config", "no/such/file.toml"], "`--config` must be an existing TOML file"),
        # the options as typed, not the config keys gamma_grid and hyper
        (
            ["--counts", "4,2", "--loss", "ce", "--gamma-grid", "0:1:3"],
            "to sweep with `--gamma-grid` ('ce' has none)",
        ),
        (
            ["--counts", "4,2", "--loss", "ldt", "--gamma-grid", "0:1:3", "--hyper", "gamma=1"],
            "give gamma once: `--gamma-grid` sweeps it; got a fixed gamma in `--hyper` too.",
        ),
    ],
)
def test_ufm_bad_input_is_one_line_and_exit_2(cli, args, match):
    r = cli("ufm", *args, "--quiet")
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert match in lines[0] or re.search(match, lines[0]), lines[0]
    assert r.out == ""  # nothing ran


@pytest.mark.parametrize(
    "text, match",
    [
        ("counts = [4, 2]\nseeds = [-1]\n", "`seeds` must be an integer >= 0; got -1."),
        ("counts = [4, 2]\nweight_decay = -1\n", "`weight_decay` must be a number >= 0"),
        ("counts = [4, 2]\nthreads = 1000000\n", "`threads` must be an integer in [1, "),
        (
            "counts = [4, 2]\ngamma_grid = 5\n",
            "`gamma_grid` must be a list of numbers or a 'START:STOP:NUM' string",
        ),
        (
            "step = 'k=4,R=1e300,rho=0.5'\n",
            "`step` must be a profile with R * n_min (the majority class size)",
        ),
        # nan passed the decreasing-in-(0, 1) check: the simulation ran, then --path failed on `lams`
        ("counts = [4, 2]\npath_lams = [0.1, nan]\n", "`path_lams` must be a finite number; got nan."),
        (
            "counts = [4, 2]\ngamma_grid = [0.5, 0.5]\n",
            "`gamma_grid` must be distinct values; got [0.5, 0.5].",
        ),
        ("counts = [4, 2]\nlosses = ['cdt', 'cdt']\n", "`losses` must be distinct loss names"),
        ("[ufm]\ncounts = [4, 2]\n", "unknown key `ufm` in the config"),
        ("step = 'k=4,R=2,rho=0.5'\n[ufm]\nd = 3\n", "unknown key `ufm` in the config"),
    ],
)
def test_ufm_bad_config_values_name_the_key(cli, tmp_path, text, match):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    r = cli("ufm", "--config", bad, "--quiet")
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and match in lines[0], r.err
    assert r.out == ""


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
    assert r.code == 2 and "`--device` must be an available device" in r.err


# ------------------------------------------------------------------------ audit findings


def _gap(key, value, reference):
    """The documented gap (summary.json `gap_definition`), written out again for the test."""
    return abs(value / reference - 1) if key.endswith("ratio") else abs(value - reference)


def test_gap_split_is_taken_at_the_gamma_of_the_total(cli, tmp_path):
    """The optimisation and regularisation columns are those of the grid value named in `at`.

    Expected values come from the per-configuration rows of summary.json (GD, mean over seeds),
    their theory, and minimize_ufm called here, not from the table code.
    """
    from cegeo.ufm import UFMConfig, minimize_ufm

    out = tmp_path / "run"
    args = ["--step", "k=4,R=10,rho=0.5", "--n-min", "1", "--d", "4", "--loss", "cdt,ldt"]
    args += ["--gamma-grid", "-1:1.5:6", "--epochs", "300", "--lr", "0.5", "--seeds", "0,1", "--quiet"]
    r = cli("ufm", *args, "--out", out)
    assert r.code == 0, r.err
    summary = json.loads((out / "summary.json").read_text())
    counts, lam = summary["class_counts"], summary["experiment"]["weight_decay"]
    lines = r.out.splitlines()
    split_elsewhere = 0
    for loss in ("cdt", "ldt"):
        rows = [c for c in summary["configs"] if c["loss"] == loss]
        gammas = sorted({c["gamma"] for c in rows if c["gamma"] >= -0.5})
        minimiser = {
            g: minimize_ufm(UFMConfig(loss, {"gamma": g}, lam=lam), counts, 4).metrics for g in gammas
        }
        title = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{loss}: largest gap"))
        for key in PANEL_KEYS:
            total, opt, reg = {}, {}, {}
            for g in gammas:
                mine = [c for c in rows if c["gamma"] == g]
                ufm = float(np.mean([c[key] for c in mine]))
                theory = mine[0]["theory"][key]
                total[g] = _gap(key, ufm, theory)
                opt[g] = _gap(key, ufm, minimiser[g][key])
                reg[g] = _gap(key, minimiser[g][key], theory)
            at = max(gammas, key=lambda g: total[g])
            got = summary["comparison"][loss]["gaps"][key]
            assert got["at"] == at, (loss, key)
            assert got["ufm_vs_theory"] == pytest.approx(total[at], rel=1e-9)
            assert got["optimisation"] == pytest.approx(opt[at], rel=1e-6, abs=1e-9), (loss, key)
            assert got["regularisation"] == pytest.approx(reg[at], rel=1e-6, abs=1e-9), (loss, key)
            largest = max(gammas, key=lambda g: opt[g])
            assert got["largest_optimisation"]["at"] == largest
            split_elsewhere += largest != at or max(gammas, key=lambda g: reg[g]) != at
            # The printed row shows the same numbers.
            label = key.replace("_", ": ", 1).split(": ")[0] + ":"
            row = next(
                line for line in lines[title:] if line.startswith("│ " + label) and _panel_word(key) in line
            )
            cells = [c.strip() for c in row.strip("│").split("│")]
            assert float(cells[2]) == pytest.approx(at)
            assert float(cells[3]) == pytest.approx(opt[at], rel=1e-3, abs=1e-4)
            assert float(cells[4]) == pytest.approx(reg[at], rel=1e-3, abs=1e-4)
    assert split_elsewhere  # the case tells the two definitions apart


def _panel_word(key):
    return {"ratio": "ratio", "cos_maj_maj": "maj-maj", "cos_min_min": "min-min", "cos_maj_min": "maj-min"}[
        key.split("_", 1)[1]
    ]


def test_rerun_into_the_same_folder_leaves_no_stale_outputs(cli, tmp_path):
    out = tmp_path / "run"
    r = cli("ufm", *TINY, "--path", "--path-lams", "1e-2,1e-4", "--out", out)
    assert r.code == 0, r.err
    before = {p.name for p in out.iterdir()}
    assert {"path.csv", "path_cdt.png", "path_ldt.png", "ufm_cdt.png", "ufm_ldt.png"} <= before
    # Files that are not cegeo ufm's outputs stay, even when they look alike.
    keep = ["notes.txt", "ufm_mine.png", "path_old.csv", "ufm.csv.bak", "summary.md"]
    for name in keep:
        (out / name).write_text("mine")
    smaller = [a if a != "cdt,ldt" else "ldt" for a in TINY]
    r = cli("ufm", *smaller, "--out", out)
    assert r.code == 0, r.err
    assert {p.name for p in out.iterdir()} == {"ufm.csv", "summary.json", "config.toml", "ufm_ldt.png", *keep}
    text = " ".join(r.out.split())
    assert "removed from an earlier run: path.csv, path_cdt.png, path_ldt.png, ufm_cdt.png" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["path"] is None and list(summary["comparison"]) == ["ldt"]


def test_all_configurations_diverged_is_reported_and_exits_1(cli, tmp_path):
    import warnings

    args = ["--step", "k=4,R=10,rho=0.5", "--n-min", "2", "--d", "6", "--loss", "cdt"]
    args += ["--gamma-grid", "-3:3:7", "--lr", "60", "--momentum", "0", "--epochs", "300", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray numpy RuntimeWarning
        r = cli("ufm", *args, "--out", tmp_path / "x")
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: 7/7 configurations diverged (cdt gamma=-3,-2,-1,0,1,2,3); lower --lr (now 60)"
    )
    assert "RuntimeWarning" not in r.err
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())  # still written: the evidence
    assert summary["diverged"] == list(range(7))


def test_a_divergence_from_a_huge_weight_decay_names_the_weight_decay(cli):
    """lr x weight decay >= 1 makes the decay step itself unstable: 'lower --lr' pointed away
    from the setting that was off."""
    args = ["--counts", "4,2", "--d", "4", "--epochs", "20", "--weight-decay", "1e300", "--quiet"]
    r = cli("ufm", *args)
    assert r.code == 1
    assert r.err.startswith(
        "error: 1/1 configurations diverged (ldt); lower --weight-decay (now 1e+300; lr x weight decay "
        "= 1e+299 >= 1 makes the decay itself unstable)"
    ), r.err


def test_some_configurations_diverged_is_a_note_and_exits_0(cli):
    args = ["--step", "k=4,R=10,rho=0.5", "--n-min", "2", "--d", "6", "--loss", "cdt"]
    args += ["--gamma-grid", "-3:3:7", "--lr", "30", "--momentum", "0", "--epochs", "100", "--quiet"]
    r = cli("ufm", *args, "--seeds", "0,1")
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "note: 6/14 configurations diverged (cdt gamma=1,2,3); lower --lr (now 30)" in text


def test_zero_minimiser_is_reported_as_undefined_geometry(cli, tmp_path):
    out = tmp_path / "z"
    args = ["--counts", "6,6,2,2", "--d", "4", "--loss", "ldt", "--gamma-grid", "0,0.5"]
    args += ["--weight-decay", "0.9", "--path", "--path-lams", "0.9,0.5", "--epochs", "500", "--quiet"]
    r = cli("ufm", *args, "--out", out)
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "note: ldt at gamma = 0, 0.5: the exact minimiser at weight decay 0.9 is W = H = 0" in text
    assert "note: ldt path: at gamma=0 lam=9e-01, gamma=0 lam=5e-01, gamma=0.5 lam=9e-01" in text
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["comparison"]["ldt"]
    assert entry["zero_minimiser_at"] == [0.0, 0.5]
    for point in entry["points"]:
        assert point["minimiser"]["zero"] and point["minimiser"]["is_global"]
        assert point["minimiser"]["metrics"]["W_ratio"] is None and point["ufm"]["W_ratio"] is None
    assert all(g["ufm_vs_theory"] is None for g in entry["gaps"].values())
    with (out / "path.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert all(row["zero"] == "True" and row["W_ratio"] == "" for row in rows)


def test_d_below_k_is_noted_and_uncertified_minimisers_are_flagged(cli):
    import warnings

    args = ["--counts", "6,6,2,2", "--d", "2", "--loss", "ce", "--weight-decay", "1e-2", "--lr", "1"]
    args += ["--epochs", "300", "--seeds", "1", "--path", "--path-lams", "1e-2,1e-3", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the command says it once, as a note, not as a warning
        r = cli("ufm", *args)
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "note: d = 2 < k = 4: THEORY.md §4 assumes d >= k" in text
    assert "note: ce: the exact minimiser is not certified global (d < k)" in text
    assert "note: ce path: 2 point(s) not certified global (lam=1e-02, lam=1e-03)" in text
    r = cli("ufm", *[a if a != "2" else "4" for a in args])
    assert r.code == 0 and "note:" not in r.out


def test_zero_weight_decay_runs_without_a_split(cli):
    args = ["--counts", "6,6,2,2", "--d", "4", "--loss", "ldt", "--gamma-grid", "0,0.5"]
    r = cli("ufm", *args, "--weight-decay", "0", "--epochs", "200", "--quiet")
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "no split: without weight decay there is no regularised minimiser" in text
    assert "note: weight decay 0: no regularised minimiser" in text


def test_tables_keep_their_numbers_when_piped(cli):
    """Captured output is not a terminal (80 columns by default): nothing is cut to '…'."""
    r = cli("ufm", *TINY, "--path", "--path-lams", "1e-2,1e-4,1e-6,1e-8,1e-10")
    assert r.code == 0, r.err
    assert "…" not in r.out
    assert "regularisation" in r.out and "optimisation" in r.out


def test_out_must_be_new_empty_or_a_ufm_folder(cli, tmp_path):
    """cegeo ufm overwrites its own files and removes stale ones: never in a user's folder."""
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.toml").write_text("mine")
    r = cli("ufm", "--counts", "4,2", "--epochs", "3", "--quiet", "--out", out)
    assert r.code == 2 and "`--out` must be a new or empty folder, or one cegeo ufm wrote" in r.err, r.err
    assert (out / "config.toml").read_text() == "mine"
    fresh = tmp_path / "fresh"
    assert cli("ufm", "--counts", "4,2", "--epochs", "3", "--quiet", "--out", fresh).code == 0
    assert cli("ufm", "--counts", "4,2", "--epochs", "3", "--quiet", "--out", fresh).code == 0  # its own


def test_a_run_killed_while_writing_can_be_run_again_into_its_folder(cli, tmp_path, monkeypatch):
    """A kill between ufm.csv and summary.json left a folder the rerun refused as a user's, and
    the killed write's temporary file stayed for good."""
    import cegeo.cli.cmd_ufm as cmd_ufm

    out = tmp_path / "run"
    args = ["ufm", "--counts", "4,2", "--epochs", "3", "--quiet", "--out", out]

    def killed(out, *rest):
        (out / ".ufm_ldt.png.k1lled.tmp").write_bytes(b"half a png")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(cmd_ufm, "write_figures", killed)
        assert cli(*args).code == 130
    assert (out / "ufm.csv").is_file() and not (out / "summary.json").exists()
    r = cli(*args)
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "summary.json", "ufm.csv"]
