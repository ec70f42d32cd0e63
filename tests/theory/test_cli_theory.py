"""``cegeo theory``: tables, JSON, gamma grids, tuning, the figure, and one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cegeo.theory import ldt_step, seli_step


def as_json(cli, *args):
    r = cli("theory", *args, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_help_states_the_ratio_convention(cli):
    r = cli("theory", "--help")
    assert r.code == 0
    text = " ".join(r.out.split())
    assert "R = n_max/n_min >= 1" in text and "--gamma-grid" in text and "--tune" in text


def test_step_table(cli):
    r = cli("theory", "--step", "k=10,R=10,rho=0.5", "--loss", "ldt", "--gamma", "0.5")
    assert r.code == 0, r.err
    for text in ("per group", "majority", "minority", "classifiers W", "class means H", "ETF", "-0.1111"):
        assert text in r.out
    assert r.err == ""


def test_step_json_matches_the_section_4_4_vector(cli):
    d = as_json(cli, "--step", "k=10,R=10,rho=0.5")
    s = d["geometry"]["summary"]
    assert (round(s["W_ratio"], 4), round(s["W_cos_min_min"], 4), round(s["H_ratio"], 4)) == (
        2.6721,
        0.0334,
        0.3508,
    )
    assert d["profile"] == {"kind": "step", "k": 10, "R": 10.0, "rho": 0.5, "n_min": 1.0}
    assert d["groups"] == {"majority": [0, 1, 2, 3, 4], "minority": [5, 6, 7, 8, 9]}
    assert d["etf"]["cos"] == pytest.approx(-1 / 9)
    assert len(d["geometry"]["cos_W"]) == 10 and d["geometry"]["matrices_included"]


def test_balanced_step_keeps_two_groups_and_nan_becomes_null(cli):
    d = as_json(cli, "--step", "k=2,R=1,rho=0.5")
    assert d["groups"] == {"majority": [0], "minority": [1]}
    s = d["geometry"]["summary"]
    assert s["W_cos_maj_maj"] is None and s["W_ratio"] == pytest.approx(1.0)


def test_gamma_grid_matches_the_step_formulas(cli):
    d = as_json(cli, "--step", "k=10,R=10,rho=0.5", "--loss", "ldt", "--gamma-grid", "-1.5:1.5:13")
    grid = d["grid"]
    assert grid["param"] == "gamma" and len(grid["values"]) == 13
    for gamma, s in zip(grid["values"], grid["summaries"], strict=True):
        ref = ldt_step(10, 10.0, 0.5, (1.0, 10.0**-gamma)).summary
        for key, value in ref.items():
            assert s[key] == pytest.approx(value, rel=1e-8), (gamma, key)
    i = grid["values"].index(0.5)
    assert grid["distance_to_etf"][i] < 1e-9


def test_gamma_grid_json_hyper_does_not_claim_the_default_of_the_swept_parameter(cli):
    d = as_json(cli, "--step", "k=4,R=10,rho=0.5", "--loss", "ldt", "--gamma-grid", "0:1:3")
    assert d["hyper"] == {"gamma": None, "normalize": 1.0}  # was gamma 0.5, the unused default
    assert d["grid"]["values"] == [0.0, 0.5, 1.0]


def test_gamma_grid_table(cli):
    r = cli("theory", "--longtail", "k=10,R=100", "--loss", "cdt", "--gamma-grid", "-1,0,1")
    assert r.code == 0, r.err
    assert "classifiers W against gamma" in r.out and "class means H against gamma" in r.out


def test_tune_json(cli):
    d = as_json(cli, "--counts", "5000,2000,500,100,50", "--loss", "cdt", "--tune")
    results = {r["loss"]: r for r in d["tune"]["results"]}
    assert set(results) == {"cdt", "ldt"}
    assert results["ldt"]["value"] == pytest.approx(0.5, abs=1e-6) and results["ldt"]["residual"] < 1e-8
    assert results["cdt"]["residual"] > 0.05
    sym = np.array(d["tune"]["symmetric_temperatures"])
    n = np.array([5000, 2000, 500, 100, 50])
    assert np.allclose(sym, np.sqrt(n) / np.sqrt(n).mean())


def test_tune_table_for_a_flat_family(cli):
    r = cli("theory", "--step", "k=4,R=10,rho=0.5", "--loss", "la", "--tune")
    assert r.code == 0, r.err
    assert "any (flat)" in r.out and "symmetric setting" in r.out


def test_longtail_counts_and_per_class_table(cli):
    d = as_json(cli, "--longtail", "k=10,R=100")
    counts = np.array(d["class_counts"])
    assert counts[0] == pytest.approx(100) and counts[-1] == pytest.approx(1)
    assert np.allclose(counts[1:] / counts[:-1], 100 ** (-1 / 9))
    r = cli("theory", "--counts", "500,300,100,20")
    assert r.code == 0 and "per class" in r.out


def test_hyper_and_json_hyper_record(cli):
    d = as_json(
        cli,
        "--step",
        "k=10,R=10,rho=0.5",
        "--loss",
        "vs",
        "--gamma",
        "0.25",
        "--hyper",
        "tau=2",
        "--hyper",
        "normalize=0",
    )
    assert d["hyper"] == {"gamma": 0.25, "tau": 2.0, "normalize": 0.0}
    # VS's offsets drop out: CDT's geometry at the same gamma.
    cdt = as_json(cli, "--step", "k=10,R=10,rho=0.5", "--loss", "cdt", "--gamma", "0.25")
    assert d["geometry"]["summary"] == pytest.approx(cdt["geometry"]["summary"], rel=1e-10)


def test_non_integer_R_works(cli):
    d = as_json(cli, "--step", "k=4,R=2.5,rho=0.5")
    assert d["geometry"]["summary"]["W_ratio"] == pytest.approx(
        seli_step(4, 2.5, 0.5).summary["W_ratio"], rel=1e-10
    )


def test_plot_writes_a_figure(cli, tmp_path):
    out = tmp_path / "ldt.png"
    r = cli("theory", "--step", "k=10,R=10,rho=0.5", "--loss", "ldt", "--plot", str(out), "--json")
    assert r.code == 0, r.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "wrote" in r.err
    json.loads(r.out)  # stdout stays pure JSON


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--step", "k=10,R=10,rho=0.5", "--loss", "focal"],
            r"`--loss` must be a loss the theory covers \('ce', .*\); got 'focal'",
        ),
        (["--step", "k=10,R=10,rho=0.5", "--loss", "ldam"], r"`--loss` must be a loss the theory covers"),
        (["--step", "k=10,R=0.1,rho=0.5"], r"`R` must be a number >= 1"),
        (["--longtail", "k=10,R=0.01"], r"`R` must be a number >= 1"),
        (["--step", "k=10,R=10,rho=0.25"], r"`rho` must be a value with rho\*k a whole number"),
        (["--counts", "500,0,50"], r"`--counts` must be positive integers"),
        (["--counts", "500"], r"`--counts` must be at least 2"),
        (["--counts", "5,a"], r"`--counts` must be comma-separated positive integers"),
        (
            ["--step", "k=10,R=10,rho=0.5", "--loss", "ldt", "--gamma-grid", "1:0:5"],
            r"`--gamma-grid` must be START:STOP:NUM",
        ),
        (["--step", "k=10,R=10,rho=0.5", "--loss", "ldt", "--gamma-grid", "a,b"], r"`--gamma-grid` must be"),
        (
            ["--step", "k=10,R=10,rho=0.5", "--gamma-grid", "0:1:3"],
            r"`--gamma-grid` must be a loss with a family parameter",
        ),
        (
            ["--step", "k=10,R=10,rho=0.5", "--loss", "ldt", "--gamma", "1", "--gamma-grid", "0:1:3"],
            r"give gamma once",
        ),
        (
            ["--step", "k=10,R=10,rho=0.5", "--loss", "ldt", "--gamma", "1", "--hyper", "gamma=2"],
            r"give gamma once",
        ),
        (["--step", "k=10,R=10,rho=0.5", "--gamma", "1"], r"loss 'ce' takes no hyperparameters"),
        (
            ["--counts", "5,1", "--loss", "la", "--tau", "1", "--hyper", "tau=2"],
            r"give tau once: --tau or --hyper tau=\.\.\.; got both",
        ),
        (["--counts", "5,1", "--loss", "la", "--tau", "nan"], r"`--tau` must be a finite number"),
        (
            ["--counts", "5,1", "--loss", "ldt", "--tau", "1"],
            r"loss 'ldt' takes gamma, normalize; got unknown",
        ),
        (["--step", "k=10,R=10,rho=0.5", "--loss", "ldt", "--hyper", "tau"], r"`--hyper` must be name=value"),
        # names of theory_loss's own arguments are unknown hyperparameters (they were a TypeError)
        *(
            (
                ["--counts", "5,1", "--loss", "ldt", "--hyper", f"{name}=1"],
                rf"got unknown hyperparameter\(s\) {name}",
            )
            for name in ("name", "class_counts")
        ),
        (
            ["--step", "k=10,R=10,rho=0.5", "--loss", "ldt", "--plot", "fig.xyz"],
            r"`--plot` must be a file name ending",
        ),
        ([], r"give exactly one of --step \| --longtail \| --counts; got 0"),
        (
            ["--step", "k=1000000000000000000000000000000,R=10,rho=0.5"],
            r"`k` must be an integer in \[2, 2,147,483,647\]",
        ),
        (["--step", "k=4,R=2,rho=0.5", "--counts", "5,1"], r"give exactly one of .*; got 2"),
    ],
)
def test_errors_are_one_line_and_exit_2(cli, args, match):
    import re

    r = cli("theory", *args)
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert re.search(match, lines[0]), lines[0]
    assert r.out == ""


def test_nan_free_json_for_large_k_without_matrices(cli):
    counts = ",".join(str(c) for c in np.random.default_rng(0).integers(1, 100, 250))
    d = as_json(cli, "--counts", counts)
    assert not d["geometry"]["matrices_included"] and "cos_W" not in d["geometry"]
    assert len(d["geometry"]["w_norms"]) == 250
    assert all(v is None or math.isfinite(v) for v in d["geometry"]["summary"].values())


# ---------------------------------------------------------------------------------------------
# Extreme temperatures, two classes, balanced counts, huge R: right answers, no warnings
# ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("error")
def test_binary_cdt_far_apart_temperatures(cli):
    """The audit's repro: W cos maj-min -0.0010, W_ratio 1.0e12, cos_WH 0.50 before; THEORY.md §4.2
    (binary CDT: ||w_maj|| / ||w_min|| = Dc_maj / Dc_min, antipodal) says -1, 1e18, 1."""
    d = as_json(cli, "--step", "k=2,R=1e6,rho=0.5", "--loss", "cdt", "--gamma", "1.5")
    s = d["geometry"]["summary"]
    dc = d["geometry"]["delta_logit"]
    assert s["W_ratio"] == pytest.approx((dc[0] / dc[1]) ** 2, rel=1e-12)
    assert s["W_ratio"] == pytest.approx(1e18, rel=1e-6)
    assert s["W_cos_maj_min"] == pytest.approx(-1.0, abs=1e-14)
    assert s["cos_WH"] == pytest.approx(1.0, abs=1e-14)


@pytest.mark.filterwarnings("error")
def test_two_class_tune_is_explained(cli):
    r = cli("theory", "--counts", "1000,1", "--loss", "ldt", "--tune")
    assert r.code == 0 and r.err == "", r.err
    text = " ".join(r.out.split())
    assert "0.5 (any is symmetric)" in text and "every gamma gives ldt the symmetric geometry" in text
    assert "-1.52" not in text
    d = as_json(cli, "--counts", "10,1", "--loss", "cdt", "--tune")
    results = {x["loss"]: x for x in d["tune"]["results"]}
    assert results["cdt"]["value"] == 0.0 and "two classes" in results["cdt"]["note"]
    assert results["ldt"]["value"] == 0.5 and results["ldt"]["all_symmetric"]
    assert "drop out" not in results["ldt"]["note"]


@pytest.mark.filterwarnings("error")
def test_step_tune_at_R_1e6_prints_no_warning(cli):
    r = cli("theory", "--step", "k=2,R=1e6,rho=0.5", "--loss", "cdt", "--tune")
    assert r.code == 0 and r.err == "", r.err


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("R", ["1e13", "1e14", "1e100"])
def test_huge_long_tail_ratio(cli, R):
    """Real counts were scaled to int64 for grouping, which overflowed above R ~ 9e12."""
    r = cli("theory", "--longtail", f"k=4,R={R}", "--json")
    assert r.code == 0 and r.err == "", r.err
    d = json.loads(r.out)
    assert d["groups"] == {"majority": [0, 1], "minority": [2, 3]}  # cut: sqrt(n_max n_min) = sqrt(R)
    assert all(v is not None for v in d["geometry"]["summary"].values())


@pytest.mark.filterwarnings("error")
def test_huge_ratio_tune_searches_where_it_can(cli):
    d = as_json(cli, "--step", "k=4,R=1e150,rho=0.5", "--loss", "cdt", "--tune")
    ldt = next(x for x in d["tune"]["results"] if x["loss"] == "ldt")
    assert ldt["value"] == pytest.approx(0.5, abs=1e-6) and ldt["bounds"][1] < 3


@pytest.mark.parametrize("args", [["--counts", "5,5,5"], ["--longtail", "k=10,R=1"], ["--counts", "7,7"]])
def test_balanced_profiles_have_ratio_one_and_etf_cosines(cli, args):
    d = as_json(cli, *args, "--loss", "ldt", "--gamma", "0.7")
    k = len(d["class_counts"])
    s = d["geometry"]["summary"]
    assert d["balanced"] is True
    for tag in ("W", "H"):
        assert s[f"{tag}_ratio"] == 1.0
        for pair in ("maj_maj", "min_min", "maj_min"):
            assert s[f"{tag}_cos_{pair}"] == pytest.approx(-1 / (k - 1), abs=1e-12)
    r = cli("theory", *args)
    assert r.code == 0 and "balanced counts" in " ".join(r.out.split())
    assert "–" not in r.out.split("geometry vs the simplex ETF")[1].split("distance to ETF")[0]
    g = as_json(cli, *args, "--loss", "cdt", "--gamma-grid", "-1:1:3")
    assert g["balanced"] is True
    assert all(v is not None for s in g["grid"]["summaries"] for v in s.values())
    assert as_json(cli, "--counts", "5,5,1")["balanced"] is False


@pytest.mark.filterwarnings("error")
def test_gamma_grid_within_range_on_a_steep_long_tail(cli):
    d = as_json(cli, "--longtail", "k=10,R=1e6", "--loss", "cdt", "--gamma-grid", "-6:6:25")
    assert all(v is not None for s in d["grid"]["summaries"] for v in s.values())


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--longtail", "k=10,R=1e6", "--loss", "cdt", "--gamma-grid", "-60:60:3"],
            r"^error: `--gamma-grid` must be values of gamma that keep the cdt loss's .*\(gamma = -60 does not\)",
        ),
        (["--step", "k=4,R=1e6,rho=0.5", "--loss", "cdt", "--gamma", "1e3"], r"^error: `--gamma` must be"),
        (
            ["--step", "k=4,R=1e150,rho=0.5", "--loss", "cdt", "--gamma", "-2"],
            r"^error: `--gamma` must be a value",
        ),
        (
            ["--step", "k=4,R=1e6,rho=0.5", "--loss", "ldt", "--gamma", "nan"],
            r"^error: `--gamma` must be a finite",
        ),
        (
            ["--step", "k=4,R=1e150,rho=0.5", "--loss", "cdt", "--hyper", "gamma=-2"],
            r"^error: `--hyper` must be hyperparameters whose cdt limiting geometry fits in float64",
        ),
        (
            ["--step", "k=4,R=1e300,rho=0.5", "--loss", "cdt", "--plot", "{tmp}/x.png"],
            r"^error: `--plot` must be given a --gamma-grid for these counts",
        ),
        (
            ["--step", "k=4,R=1e6,rho=0.5", "--loss", "cdt", "--hyper", "normalize=0.5"],
            r"^error: `normalize` must be 0 or 1",
        ),
        (["--step", "k=10,R=10,rho=0.5,R=5"], r"^error: `--step` must be key=value pairs with each key once"),
        (
            ["--counts", "500,,50"],
            r"^error: `--counts` must be comma-separated positive integers with no empty",
        ),
        (
            ["--step", "k=4,R=10,rho=0.5", "--loss", "ldt", "--gamma-grid", "0:1:100000000"],
            r"^error: `--gamma-grid` must be START:STOP:NUM with NUM <= 10001",
        ),
    ],
)
@pytest.mark.filterwarnings("error")
def test_hyperparameter_and_grid_errors_name_the_option(cli, tmp_path, args, match):
    import re

    r = cli("theory", *[a.format(tmp=tmp_path) for a in args])
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and re.search(match, lines[0]), r.err
    assert r.out == "" and list(tmp_path.iterdir()) == []


def test_tau_option_is_the_hyper_tau(cli):
    """README: any registered loss with --gamma, --tau or --hyper; --tau 2 is --hyper tau=2."""
    a = cli("theory", "--counts", "100,10,1", "--loss", "la", "--tau", "2", "--json")
    b = cli("theory", "--counts", "100,10,1", "--loss", "la", "--hyper", "tau=2", "--json")
    c = cli("theory", "--counts", "100,10,1", "--loss", "la", "--json")
    assert a.code == b.code == c.code == 0, (a.err, b.err, c.err)
    assert a.out == b.out and a.out != c.out


def test_round_off_distances_to_the_etf_print_as_zero(cli, monkeypatch):
    # LDT at gamma = 1/2 is exactly the ETF; its distances are ~1e-16 of round-off, which read as
    # "1.841e-16" in the tables (as if the symmetric geometry were missed by a measurable amount).
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("theory", "--step", "k=4,R=10,rho=0.5", "--loss", "ldt", "--gamma-grid", "0,0.5", "--tune")
    assert r.code == 0, r.err
    assert "e-1" not in r.out
    r = cli("theory", "--step", "k=4,R=10,rho=0.5", "--loss", "ldt", "--gamma", "0.5")
    row = next(line for line in r.out.splitlines() if "distance to ETF" in line)
    assert row.count("0.0000") == 3 and "e-" not in row


def test_demo_theory_table_prints_round_off_residual_as_zero(monkeypatch):
    import io

    from rich.console import Console

    import cegeo.cli.cmd_demo as cmd_demo
    from cegeo.demo import theory_rows

    rows, tuned = theory_rows()
    assert min(r["etf_residual"] for r in rows) < 1e-12  # LDT at gamma = 1/2: the ETF up to round-off
    buf = io.StringIO()
    monkeypatch.setattr(cmd_demo, "wide_console", lambda: Console(file=buf, width=200, markup=False))
    cmd_demo._theory_table(rows, tuned)
    ldt = next(line for line in buf.getvalue().splitlines() if line.strip().startswith("LDT"))
    assert ldt.rstrip().endswith(" 0") and "e-" not in ldt
