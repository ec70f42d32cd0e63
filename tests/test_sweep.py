"""cegeo.sweep and ``cegeo sweep``: grid expansion, skip on restart, failures, --jobs, --list, summary.csv.

Runs are tiny (a 4-class Gaussian mixture, a 2-layer MLP of width 16, 2 epochs, one CPU thread),
so every test trains for real.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from cegeo._io import read_json, read_jsonl
from cegeo.config import from_dict, load_run_config
from cegeo.sweep import (
    SUMMARY_METRICS,
    SweepConfig,
    convergence_point,
    expand,
    load_runs,
    load_sweep,
    load_ufm,
    run_sweep,
    summarize,
)

GAUSSIAN_OPTIONS = "options = { k = 4, d = 6, n_per_class = 40, n_test_per_class = 12, separation = 2.0 }\n"
BASE = """
[base.data]
source = "gaussian"
imbalance = "step:R=4,rho=0.5"
options = { k = 4, d = 6, n_per_class = 40, n_test_per_class = 12, separation = 2.0 }
val_fraction = 0.25
[base.model]
name = "mlp"
options = { width = 16, depth = 2 }
[base.train]
epochs = 3
batch_size = 32
[base.runtime]
threads = 1
"""

SWEEP = (
    'name = "tiny"\nseeds = [0, 1]\n'
    + BASE
    + """
[[losses]]
name = "ce"
[[losses]]
name = "ldt"
grid = { gamma = [0.0, 0.5] }
"""
)


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def tiny(**extra) -> SweepConfig:
    from cegeo._io import tomllib  # tomli on Python 3.10

    data = tomllib.loads(SWEEP)
    data.update(extra)
    return from_dict(SweepConfig, data)


# ------------------------------------------------------------------------------- expansion


def test_grid_expansion_order_names_and_configs(tmp_path):
    text = (
        "seeds = [3, 1]\n"
        + BASE
        + """
[[setups]]
name = "small"
model.options = { width = 8, depth = 1 }
[[setups]]
name = "wide"
label = "wide MLP"
train.epochs = 4
[[losses]]
name = "ce"
[[losses]]
name = "cdt"
grid = { gamma = "-0.5:0.5:3" }
hyper = { normalize = 0 }
[[losses]]
name = "ldt"
label = "ldt-sym"
hyper = { gamma = 0.5 }
[grid]
"data.imbalance" = ["step:R=4,rho=0.5", "step:R=2,rho=0.5"]
"""
    )
    runs = expand(load_sweep(write(tmp_path, text)))
    # 2 setups x 2 imbalance values x (1 + 3 + 1) loss points x 2 seeds
    assert len(runs) == 2 * 2 * 5 * 2
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    assert names[:6] == [
        "small__ce_imbalance=step-R=4-rho=0.5__seed3",
        "small__ce_imbalance=step-R=4-rho=0.5__seed1",
        "small__cdt_gamma=-0.5_imbalance=step-R=4-rho=0.5__seed3",
        "small__cdt_gamma=-0.5_imbalance=step-R=4-rho=0.5__seed1",
        "small__cdt_gamma=0_imbalance=step-R=4-rho=0.5__seed3",
        "small__cdt_gamma=0_imbalance=step-R=4-rho=0.5__seed1",
    ]
    assert names[-1] == "wide__ldt-sym_imbalance=step-R=2-rho=0.5__seed1"
    by_name = {r.name: r for r in runs}
    r = by_name["small__cdt_gamma=0.5_imbalance=step-R=2-rho=0.5__seed1"]
    assert r.config.seed == 1 and r.seed == 1
    assert r.config.loss.name == "cdt" and r.config.loss.hyper == {"normalize": 0.0, "gamma": 0.5}
    assert r.config.data.imbalance == "step:R=2,rho=0.5"
    assert r.config.model.options == {"width": 8, "depth": 1} and r.config.train.epochs == 3
    assert r.group == "small__cdt_gamma=0.5_imbalance=step-R=2-rho=0.5" and r.setup_label == "small"
    w = by_name["wide__ldt-sym_imbalance=step-R=4-rho=0.5__seed3"]
    assert w.config.train.epochs == 4 and w.config.model.options == {"width": 16, "depth": 2}
    assert w.config.loss.hyper == {"gamma": 0.5} and w.loss_label == "ldt-sym" and w.setup_label == "wide MLP"
    # Setups and axes never leak into one another (deep copies).
    assert by_name["small__ce_imbalance=step-R=4-rho=0.5__seed3"].config.data.imbalance == "step:R=4,rho=0.5"
    # The expansion is stable: the same file gives the same names.
    assert [r.name for r in expand(load_sweep(write(tmp_path, text)))] == names


def test_grid_values_beyond_the_rounding_range_stay_as_given(tmp_path):
    """Grid values are rounded to 12 decimals (0.7500000000000001 -> 0.75) by scaling by 1e12:
    a value above ~1e296 overflowed to inf, with a numpy RuntimeWarning on stderr and an error
    saying the file held inf."""
    import warnings

    text = SWEEP.replace("[0.0, 0.5]", "[0.7500000000000001, 1e300, -1e300]")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs = expand(load_sweep(write(tmp_path, text)))
    gammas = [r.hyper["gamma"] for r in runs if r.loss == "ldt" and r.seed == 0]
    assert gammas == [0.75, 1e300, -1e300]


def test_set_overrides_base_setups_and_sweep_keys(tmp_path):
    text = SWEEP + '\n[[setups]]\nname = "a"\n[[setups]]\nname = "b"\n'
    cfg = load_sweep(
        write(tmp_path, text),
        {"train.epochs": 5, "b:data.options.k": 3, "seeds": [7], "b:model.options.width": 4},
    )
    runs = expand(cfg)
    assert {r.seed for r in runs} == {7}
    a = [r for r in runs if r.setup == "a"]
    b = [r for r in runs if r.setup == "b"]
    assert all(r.config.train.epochs == 5 for r in runs)
    assert {r.config.data.options["k"] for r in b} == {3}
    assert {r.config.data.options["k"] for r in a} == {4}
    assert b[0].config.model.options["width"] == 4 and a[0].config.model.options["width"] == 16


def test_setup_source_with_options_of_another_source_is_refused_before_any_run(tmp_path):
    """A setup that swaps the source keeps the base's source options: refused when the sweep
    is loaded, naming the option, instead of failing every run of that setup."""
    text = SWEEP + '\n[[setups]]\nname = "a"\n[[setups]]\nname = "b"\n'
    with pytest.raises(
        ValueError,
        match=r"setup 'b'.*`data.options` must be options of 'npz' \('num_classes', 'layout'\); got 'd'",
    ):
        load_sweep(write(tmp_path, text), {"b:data.source": "npz:/nowhere.npz"})


@pytest.mark.parametrize(
    ("text", "sets", "match"),
    [
        ("foo = 1\n" + SWEEP, None, r"unknown key `foo` in the config; valid keys"),
        (
            SWEEP.replace('name = "ce"', 'name = "ce"\nbogus = 1'),
            None,
            r"unknown key `losses\[0\]\.bogus`|bogus",
        ),
        (SWEEP + "\n[base.train.extra]\nx = 1\n", None, r"unknown key `train\.extra`"),
        (SWEEP.replace("seeds = [0, 1]", "seeds = []"), None, r"`seeds` must be a non-empty list"),
        (SWEEP.replace("seeds = [0, 1]", "seeds = [1, 1]"), None, r"`seeds` must be distinct integers"),
        (SWEEP + "\n[base.loss]\nname = 'ce'\n", None, r"`base\.loss` must be unset"),
        (SWEEP.replace("[base.runtime]", "[base.foo]"), None, r"unknown key `base\.foo`"),
        (SWEEP + '\n[[setups]]\nname = "a b"\n', None, r"`setups\.name` must be a name"),
        (
            SWEEP + '\n[[setups]]\nname = "a"\n[[setups]]\nname = "a"\n',
            None,
            r"`setups\.name` must be distinct",
        ),
        (SWEEP + '\n[[losses]]\nname = "ce"\n', None, r"both named 'ce__seed0'.*label"),
        (SWEEP.replace("[0.0, 0.5]", "[0.0, 'x']"), None, r"`losses\[ldt\]\.grid\.gamma` must be"),
        (SWEEP.replace("[0.0, 0.5]", "[0.5, 0.5]"), None, r"must be distinct values"),
        (SWEEP.replace("[0.0, 0.5]", '"1:0:3"'), None, r"START < STOP"),
        (
            SWEEP.replace("grid = { gamma", "grid = { tau"),
            None,
            r"sweep run ldt_tau=0__seed0.*unknown hyperparameter",
        ),
        (SWEEP.replace("epochs = 3", "epochs = 0"), None, r"`train\.epochs` must be an integer >= 1"),
        (SWEEP + '\n[grid]\n"seed" = [1]\n', None, r"`grid` must be dotted keys inside"),
        (SWEEP + '\n[grid]\n"train.epochs" = []\n', None, r"`grid\.train\.epochs` must be a non-empty list"),
        (SWEEP + "\n[ufm]\nstep = 'k=4,R=4,rho=0.5'\nbogus = 2\n", None, r"unknown key `ufm\.bogus`"),
        (
            SWEEP + "\n[posthoc]\nmethods = 'magic'\n",
            None,
            r"`posthoc.methods` must be a rebalancer name, one of 'posthoc_la', .*; got 'magic'",
        ),
        (SWEEP + "\n[posthoc]\nmetric = 'accuracy'\n", None, r"`posthoc\.metric` must be one of"),
        # a trailing newline passed the name check ($ matches before it): jobs.txt broke apart
        (SWEEP + '\n[[setups]]\nname = "a\\n"\n', None, r"`setups\.name` must be a name of letters"),
        (
            SWEEP.replace('name = "ldt"', 'name = "ldt"\nlabel = "L\\n"'),
            None,
            r"`losses\.label` must be a name",
        ),
        (
            SWEEP.replace('name = "ce"\n', 'name = "la"\n') + "\n[posthoc]\n",
            None,
            r"`posthoc\.losses` must be names or labels of \[\[losses\]\] entries \(la, ldt\): set it in \[posthoc\], its default is \['ce'\]; got 'ce'",
        ),
        (
            SWEEP + '\n[[setups]]\nname = "a"\nlabel = "_hidden"\n',
            None,
            r"`setups\.label` must be one line of text, not starting with '_'",
        ),
        (
            SWEEP
            + '\n[[setups]]\nname = "'
            + "a" * 64
            + '"\n[grid]\n"data.imbalance" = ["counts:'
            + ",".join(["5"] * 80)
            + '"]\n',
            None,
            r"sweep run name a{60}\.\.\. must be at most 200 characters \(a file name\); got \d+",
        ),
        (
            SWEEP + "\n[posthoc]\nlosses = ['LDT']\n",
            None,
            r"`posthoc\.losses` must be names or labels of \[\[losses\]\] entries \(ce, ldt\); got 'LDT'",
        ),
        (SWEEP + "\n[posthoc]\nlosse = ['ce']\n", None, r"unknown key `posthoc\.losse`"),
        # [ufm] errors named its keys bare: "`seeds` must be distinct" pointed at the sweep's seeds
        (
            SWEEP + "\n[ufm]\nstep = 'k=4,R=4,rho=0.5'\nseeds = [0, 0]\n",
            None,
            r"^`ufm\.seeds` must be distinct seeds; got \[0, 0\]\.$",
        ),
        (
            SWEEP + "\n[ufm]\nstep = 'k=4,R=4,rho=0.5'\n",
            {"ufm.epochs": 0},
            r"^`ufm\.epochs` must be an integer >= 1",
        ),
        (
            SWEEP + "\n[ufm]\nd = 4\n",
            None,
            r"^\[ufm\]: give exactly one of step \| longtail \| counts; got 0",
        ),
        # a misspelt loss name was blamed on posthoc.losses ("... entries (cee, ldt) ...; got 'ce'"),
        # and a name with a newline split that message over two lines
        (
            SWEEP.replace('name = "ce"', 'name = "cee"') + "\n[posthoc]\nlosses = ['ldt']\n",
            None,
            r"^`losses\.name` must be a registered loss \(ce, wce, .*\); got 'cee'\.$",
        ),
        (SWEEP.replace('name = "ce"', 'name = "c\\ne"'), None, r"^`losses\.name` must be .*; got 'c\\ne'\.$"),
        # the budget was only checked by each run's post-hoc step, after the whole sweep trained
        (
            SWEEP + "\n[posthoc]\nmax_false_alarm = nan\n",
            None,
            r"^`posthoc\.max_false_alarm` must be a finite number; got nan\.$",
        ),
        (
            SWEEP + "\n[posthoc]\nmax_false_alarm = 1\n",
            None,
            r"^`posthoc\.max_false_alarm` must be a number in \[0, 1\); got 1\.0\.$",
        ),
        (
            SWEEP + "\n[posthoc]\n",
            {"posthoc.max_false_alarm": -0.1},
            r"`posthoc\.max_false_alarm` must be a number in",
        ),
        (SWEEP, {"nosuch:data.source": "x"}, r"`--set` must be a setup name"),
        (SWEEP, {"epochs": 3}, r"`--set` must be KEY=VALUE or SETUP:KEY=VALUE"),
        ("seeds = [0]\n[base.train]\nepochs = 2\n", None, r"at least one \[\[losses\]\].*; got none\.$"),
        # A key written after a [table] header belongs to that table: say where it went.
        (
            "seeds = [0]\n[base.train]\nepochs = 2\nlosses = 'ce'\n",
            None,
            r"at least one \[\[losses\]\].*; got none, but a `losses` key inside \[base\.train\]",
        ),
        ("losses = 'ce'\n", None, r"`losses` must be a list; got 'ce'"),
        # nan and inf are TOML: refused when the file is read, not by every run when it starts.
        (
            SWEEP.replace("grid = { gamma = [0.0, 0.5] }", "hyper = { gamma = nan }"),
            None,
            r"^`losses\[ldt\]\.hyper\.gamma` must be a finite number; got nan\.$",
        ),
        (
            SWEEP.replace("grid = { gamma = [0.0, 0.5] }", "hyper = { normalize = -inf }"),
            None,
            r"^`losses\[ldt\]\.hyper\.normalize` must be a finite number; got -inf\.$",
        ),
    ],
)
def test_sweep_file_errors(tmp_path, text, sets, match):
    with pytest.raises(ValueError, match=match):
        load_sweep(write(tmp_path, text), sets)


# ------------------------------------------------------------------------------- execution

FAILING = SWEEP + '\n[[setups]]\nname = "ok"\n[[setups]]\nname = "bad"\ndata.n_max = 1000\n'


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A sweep with 6 good runs and 6 failing ones (the 'bad' setup asks for more data than exist)."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    cfg_path = out.parent / "failing.toml"
    cfg_path.write_text(FAILING)
    lines: list[str] = []
    outcome = run_sweep(load_sweep(cfg_path), out, log=lines.append, source_text=FAILING)
    return cfg_path, out, outcome, lines


def test_failed_runs_are_recorded_and_the_others_finish(finished_sweep):
    _, out, outcome, lines = finished_sweep
    good = [r.name for r in outcome.runs if r.setup == "ok"]
    bad = [r.name for r in outcome.runs if r.setup == "bad"]
    assert sorted(outcome.finished) == sorted(good) and len(good) == 6
    assert sorted(outcome.failed) == sorted(bad) and len(bad) == 6
    for name in good:
        assert (out / "runs" / name / "final.json").is_file()
        assert not (out / "runs" / name / "error.json").exists()
    for name in bad:
        err = read_json(out / "runs" / name / "error.json")
        assert set(err) == {"error", "type", "traceback"}
        assert err["type"] == "InputError" and "asks for 1000" in err["error"] and "\n" not in err["error"]
        assert "Traceback" in err["traceback"]
        assert not (out / "runs" / name / "final.json").exists()
    assert any("FAILED" in line and bad[0] in line for line in lines)
    # The folder: the file as given, the resolved index, one config per run.
    assert (out / "sweep.toml").read_text() == FAILING
    index = read_json(out / "sweep.json")
    assert [r["name"] for r in index["runs"]] == [r.name for r in outcome.runs]
    for run in outcome.runs:
        assert load_run_config(out / "configs" / f"{run.name}.toml") == run.config


def test_restart_skips_finished_runs_and_retries_failed_ones(finished_sweep):
    cfg_path, out, outcome, _ = finished_sweep
    good = sorted(outcome.finished)
    stamps = {n: (out / "runs" / n / "final.json").stat().st_mtime_ns for n in good}
    again = run_sweep(load_sweep(cfg_path), out)
    assert sorted(again.skipped) == good and again.finished == []
    assert sorted(again.failed) == sorted(outcome.failed)  # tried again, failed again
    assert {n: (out / "runs" / n / "final.json").stat().st_mtime_ns for n in good} == stamps


def test_a_changed_config_is_refused_before_anything_runs(finished_sweep, tmp_path):
    _, out, _, _ = finished_sweep
    changed = write(tmp_path, FAILING.replace("epochs = 3", "epochs = 4"))
    with pytest.raises(ValueError, match=r"`train\.epochs` of run ok__ce__seed0 must match the run already"):
        run_sweep(load_sweep(changed), out)


def test_summary_csv_columns_and_mean_std_against_a_direct_computation(finished_sweep):
    out = finished_sweep[1]
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0])
    assert header[:8] == ["group", "setup", "data", "imbalance", "model", "loss", "label", "hyper"]
    for m in SUMMARY_METRICS:
        if m != "test_false_alarm":  # no normal class configured
            assert f"{m}_mean" in header and f"{m}_std" in header
    assert "test_false_alarm_mean" not in header
    assert {"gamma", "normalize", "seeds", "n_finished", "n_failed", "n_unfinished"} <= set(header)
    assert len(rows) == 6  # (ce, ldt 0, ldt 0.5) x (ok, bad)
    by_group = {r["group"]: r for r in rows}
    bad = by_group["bad__ce"]
    assert bad["n_finished"] == "0" and bad["n_failed"] == "2" and bad["test_balanced_accuracy_mean"] == ""
    for group in ("ok__ce", "ok__ldt_gamma=0", "ok__ldt_gamma=0.5"):
        row = by_group[group]
        assert row["n_finished"] == "2" and row["seeds"] == "0 1" and row["n_failed"] == "0"
        finals = [read_json(out / "runs" / f"{group}__seed{s}" / "final.json") for s in (0, 1)]
        records = [read_jsonl(out / "runs" / f"{group}__seed{s}" / "metrics.jsonl") for s in (0, 1)]
        direct = {
            "test_balanced_accuracy": [f["test"]["balanced_accuracy"] for f in finals],
            "test_minority_recall": [f["test"]["group_recall"]["minority"] for f in finals],
            "test_worst_class_recall": [f["test"]["worst_class_recall"] for f in finals],
            "val_balanced_accuracy": [f["val"]["balanced_accuracy"] for f in finals],
            "dist_W": [f["geometry"]["dist_W"] for f in finals],
            "train_time_s": [f["train_time_s"] for f in finals],
            "wall_time_s": [f["wall_time_s"] for f in finals],
        }
        # 95% point by a plain loop over metrics.jsonl: first epoch with val bal. acc >= 0.95 * best,
        # the same point as final.json's history
        epochs, times = [], []
        for recs, f in zip(records, finals, strict=True):
            best = max(r["val"]["balanced_accuracy"] for r in recs)
            first = next(r for r in recs if r["val"]["balanced_accuracy"] >= 0.95 * best)
            epochs.append(first["epoch"])
            times.append(first["time_s"])
            assert (f["history"]["epoch_to_95pct_bal_acc"], f["history"]["time_to_95pct_bal_acc_s"]) == (
                first["epoch"],
                first["time_s"],
            )
        direct["epoch_to_95pct_val_bal_acc"] = epochs
        direct["time_to_95pct_val_bal_acc_s"] = times
        for metric, values in direct.items():
            assert float(row[f"{metric}_mean"]) == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
            assert float(row[f"{metric}_std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-12)
    assert by_group["ok__ldt_gamma=0.5"]["gamma"] == "0.5" and by_group["ok__ce"]["gamma"] == ""
    assert by_group["ok__ldt_gamma=0.5"]["label"] == "ldt (gamma=0.5)"


def test_ldt_at_gamma_zero_is_ce(finished_sweep):
    """A built-in check that the sweep runs what it says: LDT with gamma = 0 is CE, bit for bit."""
    _, out, _, _ = finished_sweep
    for s in (0, 1):
        ce = read_json(out / "runs" / f"ok__ce__seed{s}" / "final.json")
        ldt = read_json(out / "runs" / f"ok__ldt_gamma=0__seed{s}" / "final.json")
        assert ce["test"] == ldt["test"] and ce["geometry"]["w_norms"] == ldt["geometry"]["w_norms"]


def test_convergence_point_edge_cases():
    rec = [{"epoch": 2, "time_s": 1.0, "val": {"balanced_accuracy": 0.0}}]
    assert convergence_point(rec) == (2, 1.0)
    assert convergence_point([]) is None
    recs = [
        {"epoch": e, "time_s": float(e), "val": {"balanced_accuracy": a}} for e, a in [(5, 0.9), (10, 0.5)]
    ]
    assert convergence_point(recs) == (5, 5.0)  # the best, at once
    # a run that peaks and falls is not credited with "converging" early to its fallen level
    recs = [
        {"epoch": e, "time_s": float(e), "val": {"balanced_accuracy": a}}
        for e, a in [(1, 0.46), (2, 0.58), (3, 0.78), (4, 0.87), (5, 0.90), (6, 0.79)]
    ]
    assert convergence_point(recs) == (4, 4.0)  # 0.87 >= 0.95 * 0.90; 95% of the final 0.79 was epoch 3


@pytest.mark.slow
def test_jobs_2_runs_worker_processes_with_limited_threads_and_matches_jobs_1(finished_sweep, tmp_path):

    out1 = finished_sweep[1]
    text = FAILING.replace("seeds = [0, 1]", "seeds = [0]").replace("[0.0, 0.5]", "[0.5]")
    out2 = tmp_path / "jobs2"
    outcome = run_sweep(load_sweep(write(tmp_path, text)), out2, jobs=2)
    assert len(outcome.finished) == 2 and len(outcome.failed) == 2
    for run in outcome.runs:
        log = (out2 / "logs" / f"{run.name}.log").read_text()
        assert "with 1 CPU thread(s)" in log  # the sweep's runtime.threads, whatever the cores
        if run.setup == "ok":
            # One thread per run on the CPU: worker processes reproduce the in-process runs exactly.
            a = read_json(out1 / "runs" / run.name / "final.json")
            b = read_json(out2 / "runs" / run.name / "final.json")
            assert a["test"] == b["test"] and a["geometry"]["summary"] == b["geometry"]["summary"]
        else:
            err = read_json(out2 / "runs" / run.name / "error.json")
            assert err["type"] == "InputError" and "Traceback" in err["traceback"]


@pytest.mark.slow
def test_a_worker_run_records_its_threads_so_its_config_reproduces_it(tmp_path):
    """A --jobs worker trains on cores // jobs threads: without runtime.threads in the sweep, the
    run's config.toml must say so, or `cegeo train --config RUN/config.toml` (on torch's default
    thread count) sums floats in another order and ends with other weights."""
    import os

    import torch

    from cegeo.train import train

    text = SWEEP.replace("[base.runtime]\nthreads = 1\n", "").replace("[0.0, 0.5]", "[0.5]")
    text = text.replace("seeds = [0, 1]", "seeds = [0]")
    assert "threads" not in text
    out = tmp_path / "jobs2"
    outcome = run_sweep(load_sweep(write(tmp_path, text)), out, jobs=2)
    assert len(outcome.finished) == 2
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for run in outcome.runs:
        folder = out / "runs" / run.name
        assert f"with {threads} CPU thread(s)" in (out / "logs" / f"{run.name}.log").read_text()
        config = load_run_config(folder / "config.toml")
        assert config.runtime.threads == threads
        again = tmp_path / f"again-{run.name}"
        train(config, again, progress=False)
        for name in ("logits_val.npz", "logits_test.npz", "classifier.npz"):
            a, b = np.load(folder / name), np.load(again / name)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{run.name} {name} {key}")
        weights = [torch.load(f / "checkpoint.pt", weights_only=True)["model"] for f in (folder, again)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_worker_that_dies_is_recorded(tmp_path, monkeypatch):
    """A worker that ends without writing error.json (killed, out of memory) still leaves one."""
    from cegeo import sweep

    cfg = tiny(seeds=[0], losses=[{"name": "ce"}, {"name": "la"}])
    monkeypatch.setattr(
        sweep, "_worker_command", lambda cfg_file, run_dir: [sys.executable, "-c", "import os; os._exit(9)"]
    )
    outcome = run_sweep(cfg, tmp_path / "out", jobs=2)
    assert sorted(outcome.failed) == ["ce__seed0", "la__seed0"]
    err = read_json(tmp_path / "out" / "runs" / "ce__seed0" / "error.json")
    assert err["type"] == "WorkerDied" and "exit status 9" in err["error"]


# ------------------------------------------------------------------------------------- CLI


def test_list_prints_commands_that_really_run(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, SWEEP)
    r = cli("sweep", cfg, "--out", "sw", "--list")
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert len(lines) == 6
    names = [r.name for r in expand(load_sweep(cfg))]
    for line, name in zip(lines, names, strict=True):
        args = shlex.split(line)
        assert args[:2] == ["cegeo", "train"] and args[args.index("--out") + 1] == f"sw/runs/{name}"
        res = cli(*args[1:])
        assert res.code == 0, res.err
        assert (tmp_path / "sw" / "runs" / name / "final.json").is_file()
    # The same commands again do nothing (a scheduler may retry them); the sweep then only summarises.
    again = cli(*shlex.split(lines[0])[1:])
    assert again.code == 0 and "finished already" in again.out
    r = cli("sweep", cfg, "--out", "sw")
    assert r.code == 0, r.err
    assert "0 trained, 6 skipped, 0 failed" in r.out
    assert (tmp_path / "sw" / "summary.csv").is_file()
    assert cli("sweep", cfg, "--out", "sw", "--list").out == "\n".join(lines) + "\n"  # stable


UFM_BLOCK = """
[ufm]
step = "k=4,R=4,rho=0.5"
n_min = 2
d = 6
losses = ["ldt"]
gamma_grid = [0.0, 0.5]
epochs = 20
"""


@pytest.mark.parametrize("order", ["train lines first", "ufm line first"])
def test_list_ufm_line_carries_the_set_options_and_the_lines_run_in_any_order(
    cli, tmp_path, monkeypatch, order
):
    """The UFM line of --list sees the same sweep as the train lines (the --set options, shell-quoted),
    and `--only ufm` neither rewrites configs/ nor checks the run folders, whichever line runs first."""
    monkeypatch.chdir(tmp_path)
    text = (
        SWEEP.replace("seeds = [0, 1]", "seeds = [0]")
        .replace('source = "gaussian"', 'source = "npz:/placeholder.npz"')
        .replace(GAUSSIAN_OPTIONS, "")
        + UFM_BLOCK
    )
    cfg = write(tmp_path, text)
    sets = ["data.source=gaussian", 'name=it\'s a "sweep" $HOME; rm -rf x', "train.epochs=2"]
    r = cli("sweep", cfg, "--out", "my sw", "--list", *[a for s in sets for a in ("--set", s)])
    assert r.code == 0, r.err
    assert "note: `data.source`" not in r.err  # the placeholder was overridden
    lines = r.out.strip().splitlines()
    assert len(lines) == 4  # ce, ldt x 2 gammas, the UFM block
    ufm_line = shlex.split(lines[-1])
    assert ufm_line == ["cegeo", "sweep", str(cfg), "--out", "my sw", "--only", "ufm"] + [
        a for s in sets for a in ("--set", s)
    ]
    configs = {p.name: p.read_bytes() for p in (tmp_path / "my sw" / "configs").iterdir()}
    index = (tmp_path / "my sw" / "sweep.json").read_bytes()
    todo = lines if order == "train lines first" else lines[::-1]
    for line in todo:
        res = cli(*shlex.split(line)[1:])
        assert res.code == 0, (line, res.err)
    for name in ("ce__seed0", "ldt_gamma=0__seed0", "ldt_gamma=0.5__seed0"):
        final = read_json(tmp_path / "my sw" / "runs" / name / "final.json")
        assert (
            final["data"] == "gaussian"
            and len(read_jsonl(tmp_path / "my sw" / "runs" / name / "metrics.jsonl")) == 2
        )
    assert (tmp_path / "my sw" / "ufm" / "summary.json").is_file()
    # The UFM line left the run configs and the sweep's index alone.
    assert {p.name: p.read_bytes() for p in (tmp_path / "my sw" / "configs").iterdir()} == configs
    assert (tmp_path / "my sw" / "sweep.json").read_bytes() == index
    # Even the UFM line without the --set options (as --list printed it before) no longer clashes
    # with the finished runs nor rewrites their configs with the placeholder.
    res = cli("sweep", cfg, "--out", "my sw", "--only", "ufm")
    assert res.code == 0, res.err
    assert {p.name: p.read_bytes() for p in (tmp_path / "my sw" / "configs").iterdir()} == configs
    assert read_json(tmp_path / "my sw" / "sweep.json")["config"]["name"] == sets[1][len("name=") :]


def test_only_ufm_into_a_new_folder_writes_the_sweep_index(tmp_path):
    cfg = load_sweep(write(tmp_path, SWEEP + UFM_BLOCK))
    outcome = run_sweep(cfg, tmp_path / "o", only="ufm")
    assert outcome.ufm == "done" and (tmp_path / "o" / "sweep.json").is_file()
    assert len(list((tmp_path / "o" / "configs").iterdir())) == 6
    with pytest.raises(
        ValueError, match=r"`--only` must be a part the sweep has \('runs', 'ufm'\); got 'posthoc"
    ):
        run_sweep(cfg, tmp_path / "o", only="posthoc")


def test_cli_sweep_runs_prints_the_summary_and_fails_with_status_1_on_failed_runs(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal: the error line must not wrap
    cfg = write(
        tmp_path,
        SWEEP.replace("seeds = [0, 1]", "seeds = [0]")
        + '\n[[setups]]\nname = "ok"\n[[setups]]\nname = "bad"\ndata.n_max = 1000\n',
    )
    r = cli("sweep", cfg, "--out", tmp_path / "o", "--set", "train.epochs=2")
    assert r.code == 1
    assert r.err.strip().splitlines()[-1] == (
        "error: 3 run(s) failed (error.json in their folders); re-run the same command to retry them."
    )
    assert "ldt (gamma=0.5)" in r.out and "3 trained, 0 skipped, 3 failed" in r.out
    assert load_run_config(tmp_path / "o" / "configs" / "ok__ce__seed0.toml").train.epochs == 2


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["nosuch.toml"], r"file not found: nosuch.toml"),
        (["{cfg}", "--jobs", "0"], r"`--jobs` must be an integer >= 1; got 0"),
        (["{cfg}", "--only", "plots"], r"`--only` must be one of 'runs', 'ufm', 'posthoc'"),
        (["{cfg}", "--set", "epochs"], r"`--set` must be name=value"),
        (["{cfg}", "--set", "x:train.epochs=3"], r"`--set` must be a setup name of the sweep"),
        (["{bad}"], r"`CONFIG_FILE` must be valid TOML; got '.*bad\.toml': "),
        (["{folder}"], r"`CONFIG_FILE` must be a TOML file; got the folder '.*folder\.toml'"),
        (["{latin}"], r"`CONFIG_FILE` must be a UTF-8 TOML file; got '.*latin\.toml' with a non-UTF-8 byte"),
        (["{folder}", "--list"], r"`CONFIG_FILE` must be a TOML file"),
        (["{nan}", "--list"], r"`losses\[ldt\]\.hyper\.gamma` must be a finite number; got nan"),
        (
            ["{cfg}", "--only", "ufm"],
            r"`--only` must be a part the sweep has \('runs'\); got 'ufm \(the sweep has no \[ufm\] block\)'",
        ),
        (["{cfg}", "--only", "posthoc"], r"`--only` must be a part the sweep has .*no \[posthoc\] block"),
        (["{path}"], r"`data\.source` of run ce__seed0 must name an existing path.*--set data\.source=npz:"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(cli, tmp_path, args, match):
    cfg = write(tmp_path, SWEEP)
    bad = write(tmp_path, "seeds = [0\n", "bad.toml")
    path = write(
        tmp_path,
        SWEEP.replace('source = "gaussian"', 'source = "npz:/no/such/file.npz"').replace(
            GAUSSIAN_OPTIONS, ""
        ),
        "path.toml",
    )
    (tmp_path / "folder.toml").mkdir()
    (tmp_path / "latin.toml").write_bytes(SWEEP.replace("tiny", "tiny café").encode("latin-1"))
    nan = write(
        tmp_path, SWEEP.replace("grid = { gamma = [0.0, 0.5] }", "hyper = { gamma = nan }"), "nan.toml"
    )
    args = [
        a.format(
            cfg=cfg,
            bad=bad,
            path=path,
            folder=tmp_path / "folder.toml",
            latin=tmp_path / "latin.toml",
            nan=nan,
        )
        for a in args
    ]
    r = cli("sweep", *args, "--out", tmp_path / "o")
    assert r.code == 2
    assert r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1
    assert re.search(match, r.err), r.err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_list_refuses_an_out_that_is_a_file_before_writing_anything(cli, tmp_path):
    cfg = write(tmp_path, SWEEP)
    (tmp_path / "afile").write_text("x")
    r = cli("sweep", cfg, "--out", tmp_path / "afile", "--list")
    assert r.code == 2 and r.out == ""
    assert r.err.startswith("error: `--out` must be a folder cegeo can create and write in")
    assert len(r.err.strip().splitlines()) == 1
    assert (tmp_path / "afile").read_text() == "x"


# ------------------------------------------------------------------------------------- UFM


def test_ufm_block_writes_the_cegeo_ufm_layout_and_is_skipped_on_restart(tmp_path):
    text = (
        SWEEP
        + "\n[ufm]\nstep = 'k=4,R=4,rho=0.5'\nn_min = 2\nd = 6\nlosses = ['ldt']\ngamma_grid = [0.0, 0.5]\nepochs = 30\nmilestones = [20]\nseeds = [0, 1]\n"
    )
    cfg = load_sweep(write(tmp_path, text))
    lines: list[str] = []
    outcome = run_sweep(cfg, tmp_path / "o", only="ufm", log=lines.append)
    assert outcome.ufm == "done" and outcome.finished == [] and not (tmp_path / "o" / "runs").exists()
    for name in ("ufm.csv", "summary.json", "config.toml"):
        assert (tmp_path / "o" / "ufm" / name).is_file()
    data = load_ufm(tmp_path / "o" / "ufm")
    assert [(c["loss_name"], c["hyper"]["gamma"], c["seed"]) for c in data["configs"]] == [
        ("ldt", 0.0, 0),
        ("ldt", 0.0, 1),
        ("ldt", 0.5, 0),
        ("ldt", 0.5, 1),
    ]
    assert data["class_counts"] == [8, 8, 2, 2] and data["configs"][0]["epoch"] == 30
    assert run_sweep(cfg, tmp_path / "o", only="ufm").ufm == "skipped"
    # A folder written by `cegeo ufm` has no loss_name: it is reconstructed from the experiment.
    raw = json.loads((tmp_path / "o" / "ufm" / "summary.json").read_text())
    for c in raw["configs"]:
        del c["loss_name"], c["hyper"]
    (tmp_path / "o" / "ufm" / "summary.json").write_text(json.dumps(raw))
    again = load_ufm(tmp_path / "o" / "ufm")
    assert [(c["loss_name"], c["hyper"]["gamma"]) for c in again["configs"]] == [
        (c["loss_name"], c["hyper"]["gamma"]) for c in data["configs"]
    ]


def test_load_runs_groups_folders_outside_sweeps(finished_sweep, tmp_path):
    """A folder of `cegeo train` run folders is grouped by configuration, over seeds."""
    import shutil

    _, out, _, _ = finished_sweep
    adhoc = tmp_path / "runs"
    for name in ("ok__ce__seed0", "ok__ce__seed1", "ok__ldt_gamma=0.5__seed0"):
        shutil.copytree(out / "runs" / name, adhoc / name.replace("=", "-"))
    runs = load_runs(adhoc)
    assert [r.group for r in runs] == ["ce", "ce", "ldt_gamma=0.5"]
    rows = summarize(runs)
    assert [(r["label"], r["n_finished"]) for r in rows] == [("ce", 2), ("ldt (gamma=0.5)", 1)]
    single = load_runs(adhoc / "ok__ce__seed0")
    assert len(single) == 1 and single[0].status == "finished"
    with pytest.raises(ValueError, match=r"`FOLDER` must be an existing run folder"):
        load_runs(tmp_path / "nothing")


def test_load_runs_includes_sweep_folders_nested_in_a_folder(finished_sweep, tmp_path):
    """`cegeo report runs/` reads the run folders of sweeps inside runs/ (one or two levels deep)."""
    import shutil

    _, out, _, _ = finished_sweep
    folder = tmp_path / "runs"
    for name in ("ok__ce__seed0", "ok__ce__seed1", "bad__ce__seed0"):
        shutil.copytree(out / "runs" / name, folder / "sweep-a" / "runs" / name)
    shutil.copy(out / "sweep.json", folder / "sweep-a" / "sweep.json")
    shutil.copytree(out / "runs" / "ok__ldt_gamma=0.5__seed0", folder / "group" / "sweep-b" / "runs" / "x")
    shutil.copy(out / "sweep.json", folder / "group" / "sweep-b" / "sweep.json")
    shutil.copytree(out / "runs" / "ok__ldt_gamma=0__seed1", folder / "single")
    runs = load_runs(folder)
    assert sorted(r.path.relative_to(folder).as_posix() for r in runs) == [
        "group/sweep-b/runs/x",
        "single",
        "sweep-a/runs/bad__ce__seed0",
        "sweep-a/runs/ok__ce__seed0",
        "sweep-a/runs/ok__ce__seed1",
    ]
    assert sorted(r.status for r in runs) == ["failed", "finished", "finished", "finished", "finished"]


def test_posthoc_refits_when_the_posthoc_block_changes(tmp_path):
    """posthoc.json made with other [posthoc] settings is refitted, not silently reused."""
    import json

    text = (
        'name = "ph"\nseeds = [0]\n'
        + BASE.replace("val_fraction = 0.25", "val_fraction = 0.25\nnormal_class = 0")
        + '[[losses]]\nname = "ce"\n[posthoc]\nmethods = "posthoc_la,operating_point"\nmax_false_alarm = 0.5\n'
    )
    out = tmp_path / "o"
    first = run_sweep(load_sweep(write(tmp_path, text)), out)
    assert first.posthoc == {"ce__seed0": "done"}
    ph = out / "runs" / "ce__seed0" / "posthoc.json"
    assert json.loads(ph.read_text())["max_false_alarm"] == 0.5
    assert run_sweep(load_sweep(write(tmp_path, text)), out).posthoc == {"ce__seed0": "skipped"}
    changed = run_sweep(
        load_sweep(write(tmp_path, text.replace("max_false_alarm = 0.5", "max_false_alarm = 0.6"))), out
    )
    assert changed.posthoc == {"ce__seed0": "done"} and json.loads(ph.read_text())["max_false_alarm"] == 0.6
    fewer = run_sweep(
        load_sweep(write(tmp_path, text.replace("posthoc_la,operating_point", "posthoc_la"))), out
    )
    assert fewer.posthoc == {"ce__seed0": "done"} and json.loads(ph.read_text())["methods"] == ["posthoc_la"]


def test_posthoc_json_of_an_older_cegeo_with_sampler_fields(tmp_path):
    """An older cegeo wrote geometry's `sampler`, `sampler_from` and `effective_counts` into
    posthoc.json and predicted at a sampler's expected draws. Such a file still reads (sweep's
    done check, report); without a sampler it is reused, with one it is refitted at the counts."""
    import json

    from cegeo.report import build_report

    text = (
        'name = "ph"\nseeds = [0]\n'
        + BASE
        + '[[losses]]\nname = "ce"\n[posthoc]\nmethods = "posthoc_la,geometry"\n'
    )
    out = tmp_path / "o"
    assert run_sweep(load_sweep(write(tmp_path, text)), out).posthoc == {"ce__seed0": "done"}
    ph = out / "runs" / "ce__seed0" / "posthoc.json"
    fresh = json.loads(ph.read_text())
    assert not {"sampler", "sampler_from", "effective_counts"} & set(fresh["results"]["geometry"])

    def older(sampler: str, effective: list[float]) -> None:
        done = json.loads(ph.read_text())
        done["results"]["geometry"].update(
            sampler=sampler, sampler_from="config.toml", effective_counts=effective
        )
        ph.write_text(json.dumps(done))

    counts = json.loads((out / "runs" / "ce__seed0" / "final.json").read_text())["class_counts"]
    older("none", [float(c) for c in counts])  # the class counts: the same prediction as now
    assert run_sweep(load_sweep(write(tmp_path, text)), out).posthoc == {"ce__seed0": "skipped"}
    assert "sampler" in json.loads(ph.read_text())["results"]["geometry"]
    assert "posthoc" in build_report(out, tmp_path / "r.html").sections
    older("class_balanced", [sum(counts) / len(counts)] * len(counts))
    assert run_sweep(load_sweep(write(tmp_path, text)), out).posthoc == {"ce__seed0": "done"}
    refit = json.loads(ph.read_text())["results"]["geometry"]
    assert (
        "sampler" not in refit
        and refit["predicted_w_norms"] == fresh["results"]["geometry"]["predicted_w_norms"]
    )


def test_out_must_be_new_empty_or_a_sweep_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.csv").write_text("my numbers")
    with pytest.raises(
        ValueError,
        match=r"`--out` must be a new or empty folder, or a sweep folder \(with sweep.json\); got .*mine, which holds 'summary.csv'",
    ):
        run_sweep(tiny(), out)
    assert (out / "summary.csv").read_text() == "my numbers" and sorted(p.name for p in out.iterdir()) == [
        "summary.csv"
    ]


def test_list_names_the_posthoc_step_to_run_after_the_runs(cli, tmp_path, monkeypatch):
    """--list prints one line per run; a [posthoc] block needs every run finished, so the hint
    gives its command (with the --set options) rather than leaving it out."""
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, SWEEP.replace("seeds = [0, 1]", "seeds = [0]") + "\n[posthoc]\nlosses = ['ce']\n")
    r = cli("sweep", cfg, "--out", "sw", "--list", "--set", "train.epochs=2")
    assert r.code == 0, r.err
    hint = f"when the runs have finished: cegeo sweep {cfg} --out sw --only posthoc --set train.epochs=2, then cegeo report sw"
    assert hint in r.err, r.err
    for line in r.out.strip().splitlines():
        assert cli(*shlex.split(line)[1:]).code == 0
    posthoc = shlex.split(hint.split("finished: ")[1].split(", then")[0])
    res = cli(*posthoc[1:])
    assert res.code == 0, res.err
    assert (tmp_path / "sw" / "runs" / "ce__seed0" / "posthoc.json").is_file()


def test_a_run_another_process_trains_is_skipped_as_busy(cli, tmp_path):
    """A run whose folder another process holds: the sweep skips it (no error.json, not counted
    as trained or failed), says so, and exits 1 (its summary lacks that run)."""
    from cegeo.sweep import _BUSY_EXIT, _worker_status
    from cegeo.train import _lock_run_folder

    cfg = write(tmp_path, SWEEP.replace("seeds = [0, 1]", "seeds = [0]"))
    assert cli("sweep", cfg, "--out", tmp_path / "sw", "--list").code == 0
    folder = tmp_path / "sw" / "runs" / "ce__seed0"
    folder.mkdir(parents=True, exist_ok=True)
    held = _lock_run_folder(folder)
    try:
        r = cli("sweep", cfg, "--out", tmp_path / "sw")
    finally:
        held.close()
    assert r.code == 1 and "ce__seed0: being trained by another process, skipped" in r.out, (r.out, r.err)
    assert "2 trained, 0 skipped, 0 failed, 1 being trained elsewhere" in r.out
    assert "error: 1 run(s) are being trained by another process" in r.err
    assert not (folder / "error.json").exists()
    # a worker that found the run busy (exit 75) is busy even if the other process has finished
    (folder / "final.json").write_text("{}")
    run = expand(load_sweep(cfg))[0]
    assert (
        _worker_status(run, _BUSY_EXIT, tmp_path / "sw" / "runs", tmp_path / "sw" / "logs")["status"]
        == "busy"
    )


def _workers_of(out: Path) -> list[int]:
    """PIDs of live `python -m cegeo.sweep` workers writing into ``out`` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if b"cegeo.sweep" in cmd and any(str(out).encode() in c for c in cmd) and state != "Z":
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_signal_to_the_sweep_stops_its_workers_unless_ignored(tmp_path, sig):
    """`kill PARENT` (or a closed terminal) stops the --jobs workers too instead of leaving them
    training as orphans; under nohup (SIGHUP ignored) the sweep and its workers go on."""
    import os
    import signal
    import subprocess
    import time

    text = SWEEP.replace("seeds = [0, 1]", "seeds = [0]").replace("epochs = 3", "epochs = 100000")
    cfg = write(tmp_path, text)
    out = tmp_path / "sw"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for ignored in [False, True] if sig == "SIGHUP" else [False]:
        cmd = [sys.executable, "-m", "cegeo", "sweep", str(cfg), "--out", str(out), "--jobs", "2"]

        def pre(ignored=ignored):
            # as a terminal's shell would start it (the test itself may run under nohup)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN if ignored else signal.SIG_DFL)

        parent = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pre
        )
        try:
            deadline = time.time() + 60
            while len(_workers_of(out)) < 2 and time.time() < deadline:
                time.sleep(0.2)
            workers = _workers_of(out)
            assert len(workers) == 2
            while len(list(out.glob("runs/*/.lock"))) < 2 and time.time() < deadline:
                time.sleep(0.05)  # both runs training (their folders locked) when the signal comes
            parent.send_signal(getattr(signal, sig))
            time.sleep(3)
            if ignored:  # nothing stopped (cleaned up below)
                assert parent.poll() is None and sorted(_workers_of(out)) == sorted(workers)
                continue
            assert parent.wait(timeout=60) != 0
            deadline = time.time() + 20
            while _workers_of(out) and time.time() < deadline:
                time.sleep(0.2)
            assert _workers_of(out) == []
            # each worker stopped as on Ctrl-C: its run folder unlocked, no temporary file left
            left = [p.name for p in (out / "runs").glob("*/.*")]
            assert left == [], left
        finally:  # never leave a sweep training (100,000 epochs) behind a failed assertion
            parent.kill()
            parent.wait(timeout=30)
            for pid in _workers_of(out):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def test_worker_env_puts_only_a_source_checkout_on_pythonpath(monkeypatch):
    """Workers must import this very cegeo: a source checkout goes on PYTHONPATH, an installed
    one (in site-packages) does not, since PYTHONPATH comes before the standard library."""
    import os
    from pathlib import Path

    import cegeo.sweep as sweep_mod

    src = str(Path(sweep_mod.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", "/mine")
    monkeypatch.setattr(sweep_mod, "_site_packages", lambda: set())
    assert sweep_mod._worker_env(1, 0)["PYTHONPATH"].split(os.pathsep) == [src, "/mine"]
    monkeypatch.setattr(sweep_mod, "_site_packages", lambda: {src})
    assert sweep_mod._worker_env(1, 0)["PYTHONPATH"] == "/mine"


def test_a_sweep_beyond_max_runs_is_refused_before_anything_is_built(cli, tmp_path):
    """Two 3,000-value axes (9 million runs) made --list churn for hours with growing memory."""
    from cegeo.sweep import MAX_RUNS

    lrs = ", ".join(str(0.001 * (i + 1)) for i in range(400))
    text = f"""seeds = [0, 1]
[base.train]
epochs = 1
[[losses]]
name = "ldt"
grid = {{ gamma = "-1:1:200" }}
[grid]
"optim.lr" = [{lrs}]
"""
    cfg = write(tmp_path, text)
    r = cli("sweep", cfg, "--list", "--out", tmp_path / "o")
    assert r.code == 2 and r.err == (
        f"error: `sweep` must be at most {MAX_RUNS:,} runs (setups x grid x losses x "
        "hyperparameter values x seeds; split a larger study into several sweeps); got '160,000 runs'.\n"
    ), r.err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("secs", "shown"), [(0.0156, "0.016 ± 0.002"), (3.14159, "3.14 ± 0.00"), (41.26, "41.3 ± 0.0")]
)
def test_summary_table_shows_fast_training_times(monkeypatch, secs, shown):
    """A run of 0.02 s was printed as '0.0 ± 0.0' (one decimal for every time)."""
    import io

    from rich.console import Console

    import cegeo.cli.cmd_sweep as cmd_sweep

    buf = io.StringIO()
    monkeypatch.setattr(cmd_sweep, "wide_console", lambda: Console(file=buf, width=200))
    row = {"setup": "", "label": "ce", "n_finished": 2, "n_failed": 0}
    row.update({"train_time_s_mean": secs, "train_time_s_std": 0.002 if secs < 1 else 0.001})
    cmd_sweep.print_summary([row])
    assert shown in buf.getvalue(), buf.getvalue()


def test_summary_csv_without_runs_has_the_header_of_one_with_runs(finished_sweep, tmp_path):
    """A sweep of a [ufm] block only wrote an empty summary.csv (no header: pandas.read_csv
    raises EmptyDataError); it now has the columns a sweep with runs writes, in the same order."""
    import csv

    from cegeo.sweep import write_summary

    out = finished_sweep[1]
    with (out / "summary.csv").open() as fh:
        full = next(csv.reader(fh))
    write_summary(tmp_path / "summary.csv", [])
    with (tmp_path / "summary.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 1
    hyper_and_axes = [c for c in full if c not in rows[0]]
    assert [c for c in full if c not in hyper_and_axes] == rows[0]
    assert all(not c.endswith(("_mean", "_std")) for c in hyper_and_axes), hyper_and_axes


def test_run_one_frees_the_trainer_it_ran_even_in_a_reference_cycle(tmp_path, monkeypatch):
    """`cegeo sweep --jobs 1` trains its runs one after another in one process. A trainer sits in
    reference cycles (CUDA graphs' steps and the compiled forward call back into it), so its model,
    device data and graph memory stayed held after run_one returned, until Python's cyclic
    collector happened to run; several runs' worth could pile up on one GPU."""
    import gc
    import weakref

    import cegeo.train
    from cegeo.sweep import run_one

    made = []

    class Cyclic(cegeo.train.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.me = self  # the cycle a CUDA graph's step makes
            made.append(weakref.ref(self))

    monkeypatch.setattr(cegeo.train, "Trainer", Cyclic)
    (tmp_path / "sweep.toml").write_text(SWEEP)
    config = expand(load_sweep(tmp_path / "sweep.toml"))[0].config
    gc.disable()
    try:
        status = run_one(config, tmp_path / "r")
        assert status["status"] == "finished", status
        assert made and made[0]() is None
    finally:
        gc.enable()
