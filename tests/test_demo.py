"""``cegeo demo``: the five steps end to end (``--fast``), resume, and the demo's experiment file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cegeo._io import read_json
from cegeo.demo import demo_sweep, theory_rows
from cegeo.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_experiments_demo_toml_is_the_demo():
    assert load_sweep(ROOT / "experiments" / "demo.toml") == demo_sweep(fast=False)


def test_fast_demo_shrinks_sizes_but_keeps_every_step():
    full, fast = demo_sweep(False), demo_sweep(True)
    assert [r.name for r in expand(full)] == [r.name for r in expand(fast)]
    assert fast.base["train"]["epochs"] < full.base["train"]["epochs"]
    assert fast.ufm.epochs < full.ufm.epochs and fast.posthoc == full.posthoc
    assert [s.name for s in full.losses] == ["ce", "wce", "la", "cdt", "ldt"] and full.seeds == (0, 1)
    assert all(r.config.data.imbalance == "step:R=10,rho=0.5" for r in expand(full))
    assert {r.config.loss.hyper.get("gamma") for r in expand(full) if r.loss in ("cdt", "ldt")} == {0.5}


def test_theory_rows_match_theory_md_vectors():
    rows, tuned = theory_rows()
    by = {r["loss"]: r for r in rows}
    # THEORY.md §4.4, R = 10: SELI (CE, and LA: offsets drop out), CDT 0.5, LDT 0.5.
    for loss in ("CE", "LA"):
        assert by[loss]["W_ratio"] == pytest.approx(2.6721, abs=1e-4)
        assert by[loss]["H_ratio"] == pytest.approx(0.3508, abs=1e-4)
    assert by["CDT"]["W_ratio"] == pytest.approx(1.200, abs=1e-3)
    assert by["LDT"]["W_ratio"] == pytest.approx(1.0, abs=1e-9) and by["LDT"]["etf_residual"] < 1e-8
    assert tuned["ldt"]["value"] == pytest.approx(0.5, abs=1e-8)
    assert tuned["cdt"]["residual"] > 0.1  # no symmetric CDT when R > 1


@pytest.mark.slow
def test_demo_fast_end_to_end_then_resume(cli, tmp_path):
    out = tmp_path / "demo"
    r = cli("demo", "--fast", "--out", out)
    assert r.code == 0, r.err
    text = r.out
    for step in ("1/5 plan", "2/5 simulate", "3/5 train", "4/5 correct", "5/5 report"):
        assert step in text
    assert "LDT    gamma = 0.5 (tuned)" in text and "ldt reaches the symmetric (ETF) geometry" in text
    assert "ufm: 8 configurations x 300 epochs" in text
    assert text.count("[") >= 10 and "[10/10] ldt_gamma=0.5__seed1" in text
    for label in ("ce", "wce", "la", "cdt (gamma=0.5)", "ldt (gamma=0.5)"):
        assert f" {label} " in text
    assert "did best for the minority classes" in text
    assert f"report: {out / 'report.html'}" in text and "demo finished in" in text
    # Every step left its files.
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 10
    for name in runs:
        assert (out / "runs" / name / "final.json").is_file()
        assert (out / "runs" / name / "posthoc.json").is_file() == name.startswith("ce__")
    assert read_json(out / "ufm" / "summary.json")["experiment"]["epochs"] == 300
    for name in ("summary.csv", "summary.md", "report.html", "sweep.json"):
        assert (out / name).is_file()
    html = (out / "report.html").read_text()
    for sec in ("geometry-vs-gamma", "learning-curves", "per-class-recall", "posthoc", "ufm", "provenance"):
        assert f'<section id="{sec}"' in html
    stamps = {n: (out / "runs" / n / "final.json").stat().st_mtime_ns for n in runs}
    # Again into the same folder: nothing is retrained.
    again = cli("demo", "--fast", "--out", out)
    assert again.code == 0, again.err
    assert (
        "10 of 10 runs finished before: skipped" in again.out and "ufm: finished before, skipped" in again.out
    )
    assert {n: (out / "runs" / n / "final.json").stat().st_mtime_ns for n in runs} == stamps
    # The full demo into the fast demo's folder is refused before any work (the UFM step included).
    ufm_stamp = (out / "ufm" / "summary.json").stat().st_mtime_ns
    full = cli("demo", "--out", out)
    assert full.code == 2
    assert "must match the run already in" in full.err and len(full.err.strip().splitlines()) == 1
    assert "1/5 plan" not in full.out
    assert (out / "ufm" / "summary.json").stat().st_mtime_ns == ufm_stamp
    assert read_json(out / "ufm" / "summary.json")["experiment"]["epochs"] == 300


def test_demo_bad_jobs_is_one_line_error(cli, tmp_path):
    r = cli("demo", "--fast", "--out", tmp_path / "d", "--jobs", "0")
    assert r.code == 2 and "`--jobs` must be an integer >= 1; got 0." in r.err


def test_demo_failed_runs_error_is_one_line_on_a_narrow_terminal(cli, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import cegeo.cli.cmd_demo as cmd_demo

    def fake_run_demo(target, **kwargs):
        sweep = SimpleNamespace(summary=[], failed={"ce__seed0": "boom", "ce__seed1": "boom"})
        report = SimpleNamespace(
            headline=[], html_path=target / "report.html", markdown_path=target / "summary.md"
        )
        return SimpleNamespace(sweep=sweep, report=report, wall_time_s=1.0)

    monkeypatch.setattr(cmd_demo, "run_demo", fake_run_demo)
    monkeypatch.setenv("COLUMNS", "40")
    out = tmp_path / "a rather long folder name for the demo output"
    r = cli("demo", "--out", out)
    assert r.code == 1
    assert r.err == f"error: 2 run(s) failed; see {out / 'runs'}/*/error.json.\n"
