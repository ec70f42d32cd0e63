"""cegeo.report and ``cegeo report``: sections, figures, headline, tables, errors.

The sweep behind most tests is real and tiny: a 4-class Gaussian mixture at (R=4, rho=0.5)-STEP
with class 0 as the normal class, CE and LDT over a gamma grid, two seeds, a failing setup, a
short UFM block and post-hoc rebalancing of the CE runs.
"""

from __future__ import annotations

import base64
import io
import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cegeo
from cegeo.report import build_report, collect
from cegeo.report._collect import pretty
from cegeo.sweep import load_sweep, run_sweep

SWEEP = """
name = "report test"
description = "A tiny sweep with every section."
seeds = [0, 1]

[base.data]
source = "gaussian"
imbalance = "step:R=4,rho=0.5"
options = { k = 4, d = 6, n_per_class = 40, n_test_per_class = 12, separation = 2.0 }
val_fraction = 0.25
normal_class = 0

[base.model]
name = "mlp"
options = { width = 16, depth = 2 }

[base.train]
epochs = 4
batch_size = 32

[base.runtime]
threads = 1

[[setups]]
name = "ok"

[[setups]]
name = "bad"
data.n_max = 1000  # more than the source has: every run of this setup fails

[[losses]]
name = "ce"

[[losses]]
name = "ldt"
grid = { gamma = [0.0, 0.5, 1.0] }

[ufm]
step = "k=4,R=4,rho=0.5"
n_min = 2
d = 6
losses = ["ldt"]
gamma_grid = [0.0, 0.5, 1.0]
epochs = 40
milestones = [30]
seeds = [0, 1]

[posthoc]
losses = ["ce"]
"""

SECTIONS = [
    "headline",
    "results",
    "geometry-vs-gamma",
    "learning-curves",
    "geometry-convergence",
    "per-class-recall",
    "geometry",
    "posthoc",
    "ufm",
    "failures",
    "provenance",
]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg = root / "sweep.toml"
    cfg.write_text(SWEEP)
    out = root / "sweep"
    run_sweep(load_sweep(cfg), out, source_text=SWEEP)
    return out


@pytest.fixture(scope="module")
def report(sweep_dir):
    return build_report(sweep_dir)


def images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', html)]


def test_every_section_and_figure_is_present(report):
    assert report.sections == SECTIONS
    html = report.html_path.read_text()
    for sec in SECTIONS:
        assert f'<section id="{sec}"' in html
    assert report.figures == [
        "gamma-ldt",
        "curves-ok",
        "geometry-ok",
        "per-class-ok",
        "posthoc-ok__ce",
    ]
    for fig in report.figures:
        assert f'<figure id="fig-{fig}"' in html
    pngs = images(html)
    assert len(pngs) == len(report.figures) == html.count("<img ")
    for png in pngs:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        im = Image.open(io.BytesIO(png))
        assert im.width > 300 and im.height > 200


def test_html_is_self_contained(report):
    html = report.html_path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    for forbidden in ("<script", "<link", "@import", "url(", "http://", "https://", "<iframe", "<object"):
        assert forbidden not in html.lower()
    # Every src and href is a data URI or an in-page anchor.
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attr.startswith(("data:image/png;base64,", "#"))
    for anchor in re.findall(r'href="#([^"]+)"', html):
        assert f'id="{anchor}"' in html


def test_headline_names_the_best_loss_for_the_minority_classes_chosen_on_validation(report):
    data = report.data
    best = data.best_per_loss("ok")
    # One group per loss, each the configuration with the best mean validation balanced accuracy.
    assert sorted(g.loss for g in best) == ["ce", "ldt"]
    ldt = [g for g in data.setup_groups("ok") if g.loss == "ldt"]
    chosen = next(g for g in best if g.loss == "ldt")
    assert chosen.mean("val_balanced_accuracy") == max(g.mean("val_balanced_accuracy") for g in ldt)
    winner = max(best, key=lambda g: g.mean("test_minority_recall"))
    text = " ".join(report.headline)
    first = report.headline[0]
    if winner.loss == "ce" and len(best) > 1:
        other = next(g for g in best if g is not winner)
        assert first.startswith("CE did best") and pretty(other.label) in first
    else:
        assert first.startswith(f"{pretty(winner.label)} did best for the minority classes on ok")
        assert "plain CE" in first
    assert winner.pm("test_minority_recall") in first
    assert "Cost:" in text and "95% of its best validation balanced accuracy" in text
    assert "Post-hoc rebalancing of the CE runs" in text
    # normal_class = 0: the false-alarm cost is in the headline, for the losses and post-hoc
    if "tied for the minority classes" not in first:
        assert f"false-alarm rate {winner.pm('test_false_alarm')} against" in first
    posthoc_line = next(line for line in report.headline if line.startswith("Post-hoc rebalancing"))
    assert re.search(r"(raised|lowered|kept) test minority recall", posthoc_line)
    assert re.search(r"false-alarm rate \d\.\d{3} → \d\.\d{3}", posthoc_line)
    assert len(data.failures) == 8 and "8 run(s) failed" in text  # bad setup: 2 seeds x (ce + 3 ldt)


def test_summary_md_has_the_headline_and_the_tables(report, sweep_dir):
    md = report.markdown_path.read_text()
    assert report.markdown_path == sweep_dir / "summary.md"
    assert md.startswith("# report test\n")
    assert "## Headline\n" in md and report.headline[0] in md
    assert (
        "| configuration | seeds | test bal. acc | minority recall | worst-class recall | false-alarm rate |"
        in md
    )
    for label in ("ce", "ldt (gamma=0)", "ldt (gamma=0.5)", "ldt (gamma=1)"):
        assert f"\n| {label} | 2 | " in md
        assert f"\n| {label} | 0 (2 failed) | – |" in md
    assert "| method | chosen on val | val balanced_accuracy |" in md and "| operating_point |" in md
    assert "| raw (argmax) |" in md
    assert "| loss | seeds | W ratio | theory |" in md  # UFM
    assert "| run | status | type | error |" in md and "asks for 1000" in md
    assert "| runs | device |" in md
    assert "Figures: see report.html." in md
    assert "data:image" not in md


def test_results_numbers_match_the_summary(report):
    html = report.html_path.read_text()
    for g in report.data.setup_groups("ok"):
        assert g.pm("test_balanced_accuracy") in html
        assert g.pm("test_minority_recall") in html
        assert g.pm("test_false_alarm", 4) in html


def test_cli_report_with_out_and_markdown_paths(cli, sweep_dir, tmp_path):
    r = cli("report", sweep_dir, "--out", tmp_path / "r.html", "--markdown", tmp_path / "md" / "s.md")
    assert r.code == 0, r.err
    assert f"report: {tmp_path / 'r.html'} (5 figures)" in r.out
    assert (tmp_path / "r.html").is_file() and (tmp_path / "md" / "s.md").is_file()
    assert "did best for the minority classes" in r.out or "CE did best" in r.out


def test_report_never_overwrites_a_users_files(cli, sweep_dir, tmp_path):
    """report.html and summary.md are replaced only when cegeo wrote them: a user's own files of
    those names (e.g. summary.md beside --out in the working folder) are refused, untouched."""
    out = tmp_path / "r.html"
    (tmp_path / "summary.md").write_text("MINE\n")
    r = cli("report", sweep_dir, "--out", out)
    assert r.code == 2 and r.err.startswith(
        "error: `--markdown` must be a new file or a report cegeo wrote"
    ), r.err
    assert (tmp_path / "summary.md").read_text() == "MINE\n" and not out.exists()
    (tmp_path / "summary.md").unlink()
    assert cli("report", sweep_dir, "--out", out).code == 0
    first = out.read_text()
    assert '<meta name="generator" content="cegeo' in first
    assert cli("report", sweep_dir, "--out", out).code == 0  # a cegeo report is replaced
    own = tmp_path / "own.html"
    own.write_text("<html>my page</html>")
    r = cli("report", sweep_dir, "--out", own, "--markdown", tmp_path / "summary.md")
    assert r.code == 2 and "`--out` must be a new file or a report cegeo wrote" in r.err, r.err
    assert own.read_text() == "<html>my page</html>"
    r = cli("report", sweep_dir, "--out", out, "--markdown", out)
    assert r.code == 2 and "`--markdown` must be a file other than the HTML report" in r.err, r.err
    # a report written before the generator tag existed is recognised by its "generated" line
    old = out.read_text().replace('<meta name="generator" content="cegeo', '<meta name="x" content="')
    out.write_text(old)
    assert cli("report", sweep_dir, "--out", out).code == 0


def test_report_of_a_single_run_folder(sweep_dir, tmp_path):
    run = tmp_path / "one"
    shutil.copytree(sweep_dir / "runs" / "ok__ldt_gamma=0.5__seed0", run)
    rep = build_report(run)
    assert rep.html_path == run / "report.html"
    assert rep.sections == [
        "headline",
        "results",
        "learning-curves",
        "geometry-convergence",
        "per-class-recall",
        "geometry",
        "provenance",
    ]
    assert rep.headline[0].startswith("LDT (gamma=0.5): test balanced accuracy")
    # normal_class = 0: the false-alarm rate is in the headline of one run too (README)
    g = rep.data.groups[0]
    assert f"false-alarm rate {g.pm('test_false_alarm')} (1 seed)" in rep.headline[0]
    assert len(images(rep.html_path.read_text())) == 3


def test_headline_says_each_losss_seeds_and_the_runs_not_finished(sweep_dir, tmp_path):
    """A seed that failed or has not finished leaves its loss with fewer seeds: the headline says
    so per loss (not the largest count for all), and that the sweep is not complete."""
    folder = tmp_path / "half"
    shutil.copytree(sweep_dir, folder, ignore=shutil.ignore_patterns("report.html", "summary.md"))
    (folder / "runs" / "ok__ce__seed1" / "final.json").unlink()  # resumable: unfinished
    shutil.rmtree(folder / "runs" / "ok__ldt_gamma=1__seed1")  # not started
    rep = build_report(folder)
    first = rep.headline[0]
    assert "(test set, mean ± std over seeds: " in first and re.search(r"\bCE 1\b", first), first
    assert "over 2 seeds" not in first
    assert rep.headline[-1] == (
        "Only 6 of 16 runs have finished (1 unfinished, 1 not started, 8 failed): "
        "the numbers above come from the finished runs alone."
    )
    # a complete sweep says nothing of the kind
    assert not any(line.startswith("Only ") for line in build_report(sweep_dir).headline)


def test_a_tie_gives_each_tied_losss_own_balanced_accuracy():
    from types import SimpleNamespace

    from cegeo.report._collect import Group, ReportData

    def group(loss, bal):
        run = SimpleNamespace(
            status="finished", loss_label=loss, posthoc=None, final={}, metric=lambda m: None
        )
        row = {"test_minority_recall_mean": 0.0, "test_balanced_accuracy_mean": bal}
        return Group(key=loss, setup="", loss=loss, label=loss, runs=[run, run], row=row)

    groups = [group("ce", 0.484), group("ldt", 0.486)]
    data = ReportData(Path("."), "folder", "t", "", [r for g in groups for r in g.runs], groups, None, [""])
    first = data.headline()[0]
    assert first.startswith("CE and LDT tied for the minority classes: minority recall 0.000")
    assert "balanced accuracy CE 0.484, LDT 0.486" in first and "(test set, mean ± std over 2 seeds)" in first


def test_report_of_a_ufm_folder_alone(sweep_dir):
    rep = build_report(sweep_dir / "ufm", markdown=sweep_dir / "ufm" / "s.md")
    assert "geometry-vs-gamma" in rep.sections and "ufm" in rep.sections
    assert rep.figures == ["gamma-ldt"]
    assert rep.headline == ["This folder holds a UFM simulation only; see the geometry section."]


def test_ufm_rows_that_did_not_fit_the_training_set_are_marked(sweep_dir, tmp_path, monkeypatch):
    """A UFM configuration whose GD has not separated its training set (train accuracy < 1, as at
    extreme temperatures) is marked and named, not presented as slow convergence."""
    import cegeo.report._page as page

    data = collect(sweep_dir / "ufm")
    for row in data.ufm["configs"]:
        row["train_acc"] = 0.9 if row["hyper"].get("gamma") == 1.0 else 1.0
    monkeypatch.setattr(page, "collect", lambda folder: data)
    build_report(sweep_dir / "ufm", out=tmp_path / "r.html", markdown=tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    note = next(line for line in md.splitlines() if "Training set not fit" in line)
    assert "ldt (gamma=1)" in note and "ldt (gamma=0.5)" not in note, note
    assert "0.900 ± 0.000 †" in md and md.count("†") == 2


def test_report_of_a_folder_of_train_runs_groups_seeds(sweep_dir, tmp_path):
    folder = tmp_path / "runs"
    for name in ("ok__ce__seed0", "ok__ce__seed1", "ok__ldt_gamma=0.5__seed0", "ok__ldt_gamma=0.5__seed1"):
        shutil.copytree(sweep_dir / "runs" / name, folder / name.replace("=", ""))
    data = collect(folder)
    assert data.kind == "folder"
    assert [(g.label, len(g.finished)) for g in data.groups] == [("ce", 2), ("ldt (gamma=0.5)", 2)]
    rep = build_report(folder)
    assert "per-class-recall" in rep.sections and "geometry-vs-gamma" in rep.sections  # CE marks gamma = 0


def test_errors(cli, tmp_path, sweep_dir):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(
        ValueError, match=r"`FOLDER` must be a run folder, a sweep folder or a folder of run folders"
    ):
        build_report(empty)
    with pytest.raises(ValueError, match=r"`FOLDER` must be an existing run folder or sweep folder"):
        build_report(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"`--out` must be an \.html file path"):
        build_report(sweep_dir, tmp_path / "report.txt")
    for args, match in (
        ([empty], "holds no run"),
        ([tmp_path / "nope"], "must be an existing run folder"),
        ([sweep_dir, "--out", tmp_path], "`--out` must be an .html file path"),
        ([sweep_dir, "--markdown", tmp_path], "`--markdown` must be a file path"),
    ):
        r = cli("report", *args)
        assert r.code == 2, r.out
        assert r.err.startswith("error: ") and match in r.err and len(r.err.strip().splitlines()) == 1


def test_headline_epochs_to_95_are_whole_epochs(report):
    """Seeds that reached 95% at epochs 3 and 4 are "epochs 3–4", not "epoch 4" (a rounded mean)."""
    from types import SimpleNamespace

    from cegeo.report._collect import Group, _epochs_to_95

    def group(*epochs):
        runs = [SimpleNamespace(status="finished", metric=lambda m, e=e: e) for e in epochs]
        runs.append(SimpleNamespace(status="failed", metric=lambda m: 9.0))  # not counted
        return Group(key="g", setup="", loss="ce", label="ce", runs=runs, row={})

    assert _epochs_to_95(group(3.0, 4.0)) == "epochs 3–4"
    assert _epochs_to_95(group(4.0, 4.0)) == "epoch 4"
    assert _epochs_to_95(group(None)) is None
    cost = next(line for line in report.headline if line.startswith("Cost:"))
    assert re.search(r"95% of its best validation balanced accuracy at epochs? \d+(–\d+)? \(", cost), cost
    assert not re.search(r"epochs? \d+\.\d", cost)


def test_report_of_a_folder_holding_a_sweep_folder_includes_its_runs(sweep_dir, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(sweep_dir, folder / "tiny", ignore=shutil.ignore_patterns("report.html", "summary.md"))
    data = collect(folder)
    assert data.kind == "folder"
    assert len(data.finished) == 8 and len(data.failures) == 8  # 2 seeds x (ce + 3 ldt) each
    assert {g.label for g in data.groups if g.finished} == {
        "ce",
        "ldt (gamma=0)",
        "ldt (gamma=0.5)",
        "ldt (gamma=1)",
    }


def test_tables_scroll_inside_the_page_and_ids_have_no_spaces(sweep_dir, tmp_path):
    """Wide tables (the results with a false-alarm column, a failure's long error) widened the
    whole page; a setup label with spaces made figure ids that are not HTML ids."""
    html = build_report(sweep_dir).html_path.read_text()
    assert html.count("<table>") == html.count('<div class="scroll"><table>') > 0
    assert ".scroll{overflow-x:auto" in html
    failures = html[html.index('<section id="failures"') :]
    assert '<td class="text">failed</td>' in failures
    # a folder of two setups, whose labels have spaces ("mlp · gaussian · step:R=4,rho=0.5")
    folder = tmp_path / "runs"
    shutil.copytree(sweep_dir / "runs" / "ok__ce__seed0", folder / "a")
    shutil.copytree(sweep_dir / "runs" / "ok__ce__seed0", folder / "b")
    cfg = folder / "b" / "config.toml"
    cfg.write_text(cfg.read_text().replace('"step:R=4,rho=0.5"', '"step:R=4, rho=0.5"'))
    rep = build_report(folder)
    ids = re.findall(r'id="([^"]*)"', rep.html_path.read_text())
    assert any(" · " in s for s in rep.data.setups) and len(ids) > 5
    assert not [i for i in ids if re.search(r"\s", i)]


def test_summary_md_text_is_one_line_without_raw_html():
    from cegeo.report._page import _md, _md_table

    assert _md("a <script>x</script>\n# H1") == "a &lt;script&gt;x&lt;/script&gt; # H1"
    assert _md_table(["n|ame"], [["<b>x</b>\ny"]]).splitlines()[2] == "| &lt;b&gt;x&lt;/b&gt; y |"
    assert "\\|" in _md_table(["n|ame"], [])
    # links, emphasis, code and entities from a sweep's name or a label are shown as written
    assert _md("[y](http://evil.example) *x* _u_ `c` &lt;") == (
        "\\[y\\](http://evil.example) \\*x\\* \\_u\\_ \\`c\\` &amp;lt;"
    )
    assert _md("class_balanced ce__seed0 ldt (gamma=0.5)") == "class_balanced ce__seed0 ldt (gamma=0.5)"


def test_importing_and_drawing_leaves_the_callers_matplotlib_backend():
    """cegeo used from a notebook: importing the report switched matplotlib to Agg
    (``matplotlib.use("Agg")``), so the notebook's inline backend stopped showing figures; and
    its figures must not pile up in pyplot."""
    code = """
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
import cegeo.demo, cegeo.report
from cegeo.report.figures import figure_png_bytes, grouped_bars_figure
fig = grouped_bars_figure(["a", "b"], {"ce": ([0.9, 0.4], None)})
fig.canvas.draw()
assert figure_png_bytes(fig)[:4] == b"\\x89PNG"
print(matplotlib.get_backend(), plt.get_fignums())
"""
    src = str(Path(cegeo.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["svg", "[]"]


def test_figures_draw_names_with_dollar_signs_as_text():
    """A setup or loss named with $...$ must not be parsed as mathtext (it raised ValueError)."""
    import matplotlib.pyplot as plt

    from cegeo.report.figures import figure_png_bytes

    fig, ax = plt.subplots()
    ax.set_title(r"setup $\foo$")
    ax.plot([0, 1], [0, 1], label=r"$\bar$ loss")
    ax.legend()
    assert figure_png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_log_axis_ticks_keep_their_mathtext():
    """Names are drawn as text, but matplotlib's own tick labels keep mathtext: a log axis's
    $\\mathdefault{10^{0}}$ was drawn literally."""
    import matplotlib.pyplot as plt

    from cegeo.report.figures import _plain_text

    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.plot([1, 2, 3], [0.1, 1, 100], label="$x$ setup")
    ax.set_title("$y$ loss")
    ax.legend()
    _plain_text(fig)
    fig.canvas.draw()
    ticks = [t for t in ax.yaxis.get_majorticklabels() if t.get_text()]
    assert ticks and any("mathdefault" in t.get_text() for t in ticks)
    assert all(t.get_parse_math() for t in ticks)
    assert not ax.title.get_parse_math() and not ax.get_legend().get_texts()[0].get_parse_math()
    plt.close(fig)
    # tick labels the caller gives (class names) stay plain text
    from cegeo.report.figures import figure_png_bytes, grouped_bars_figure

    fig = grouped_bars_figure(["a$^$b", "$5-$10"], {"ce": ([0.9, 0.4], None)})
    assert figure_png_bytes(fig)[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("names", "n_series"),
    [
        ([str(c) for c in range(10)], 5),  # the demo's per-class recall: 10 classes x 5 losses
        (
            [
                "raw (argmax)",
                "posthoc_la",
                "tau_norm",
                "geometry",
                "geometry_tuned",
                "lws",
                "operating_point",
            ],
            2,
        ),
        ([f"class {c}" for c in range(100)], 3),
    ],
)
def test_bar_charts_fit_the_page_and_their_names_do_not_overlap(names, n_series):
    """The report shows a figure at the page's width (about 1200 px): the per-class chart of the
    demo was 29.5 inches wide, drawn at 40% (illegible ticks and legend), and post-hoc method
    names ran into one another (geometrygeometry_tuned)."""
    import matplotlib.pyplot as plt

    from cegeo.report.figures import grouped_bars_figure

    series = {f"loss {i}": (np.linspace(0.2, 0.9, len(names)), None) for i in range(n_series)}
    fig = grouped_bars_figure(names, series)
    assert fig.get_size_inches()[0] <= 14.0
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert 2 <= len(boxes) <= 40
    for a, b in itertools.pairwise(boxes):
        assert not a.overlaps(b), (a, b)
    plt.close(fig)


def test_learning_curve_bands_stay_within_the_rates_range():
    """mean ± std of a false-alarm rate near 0 drew a band below 0."""
    import matplotlib.pyplot as plt

    from cegeo.report.figures import band_curves_figure

    curve = {"ce": {"fa": ([1, 2, 3], [0.01, 0.02, 0.98], [0.05, 0.05, 0.05])}}
    fig = band_curves_figure(curve, [("fa", "false-alarm rate")], clip=(0.0, 1.0))
    band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() >= 0.0 and band.max() <= 1.0
    plt.close(fig)


def test_one_profile_string_on_different_class_counts_makes_two_theory_curves(tmp_path):
    """Setups on 4 and 6 classes with the same imbalance string are separate families: each set
    of markers is drawn against the theory for its own counts (the k = 6 runs were drawn
    against the k = 4 curve: W cosine -1/3 where -1/5 is right)."""
    text = """
seeds = [0]
[base.data]
source = "gaussian"
imbalance = "step:R=4,rho=0.5"
val_fraction = 0.25
[base.model]
name = "mlp"
options = { width = 8, depth = 1 }
[base.train]
epochs = 2
[base.runtime]
threads = 1
[[setups]]
name = "g4"
data.options = { k = 4, d = 6, n_per_class = 24, n_test_per_class = 4 }
[[setups]]
name = "g6"
data.options = { k = 6, d = 6, n_per_class = 24, n_test_per_class = 4 }
[[setups]]
name = "g4b"
data.options = { k = 4, d = 6, n_per_class = 32, n_test_per_class = 4 }
[[losses]]
name = "ce"
[[losses]]
name = "ldt"
grid = { gamma = [0.0, 0.5] }
"""
    (tmp_path / "s.toml").write_text(text)
    out = tmp_path / "sw"
    run_sweep(load_sweep(tmp_path / "s.toml"), out)
    families = collect(out).gamma_families()
    assert [len(f["counts"]) for f in families] == [4, 6, 4]
    assert [list(f["markers"]) for f in families] == [["g4"], ["g6"], ["g4b"]]
    # two on k = 4 with other counts: the labels give the counts (the figures told apart)
    labels = [f["profile"] for f in families]
    assert len(set(labels)) == 3 and all(lab.startswith("step:R=4,rho=0.5, counts ") for lab in labels), (
        labels
    )
    assert labels[0].endswith(",".join(f"{c:g}" for c in families[0]["counts"]))
    rep = build_report(out)
    assert [f for f in rep.figures if f.startswith("gamma-")] == ["gamma-ldt-1", "gamma-ldt-2", "gamma-ldt-3"]


@pytest.mark.parametrize(
    "index", ["[]", '{"runs": [{}]}', '{"runs": [{"name": "../elsewhere"}]}', '{"runs": "x"}']
)
def test_a_corrupt_sweep_index_is_a_one_line_error(cli, tmp_path, index):
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "sweep.json").write_text(index)
    r = cli("report", tmp_path / "sw")
    assert r.code == 2 and "sweep.json` must be the index cegeo sweep writes" in r.err, r.err


def test_posthoc_best_is_chosen_by_the_cross_fitted_validation_score():
    """lws fits one scale per class on the validation split it is then scored on: its in-sample
    'val' is the highest, its cross-fitted one is not, and the report names the other method."""
    from types import SimpleNamespace

    from cegeo.report._collect import Group, ReportData

    def entry(val, cv, bal):
        test = {"balanced_accuracy": bal, "minority_recall": bal, "worst_class_recall": bal}
        return {"val_score": val, "val_score_cv": cv, "chosen": {}, "search": None, "test": test}

    raw = {"balanced_accuracy": 0.90, "minority_recall": 0.85, "worst_class_recall": 0.8}
    posthoc = {
        "metric": "balanced_accuracy",
        "methods": ["posthoc_la", "lws"],
        "raw": {"val": {"balanced_accuracy": 0.9}, "test": raw},
        "results": {"posthoc_la": entry(0.95, 0.93, 0.92), "lws": entry(0.99, 0.91, 0.89)},
    }
    run = SimpleNamespace(
        status="finished", loss_label="ce", posthoc=posthoc, final={}, metric=lambda m: None
    )
    g = Group(key="ce", setup="", loss="ce", label="ce", runs=[run], row={})
    data = ReportData(Path("."), "folder", "t", "", [run], [g], None, [""])
    table = data.posthoc_summary(g)
    assert table["best"] == "posthoc_la" and table["cross_fitted"]
    assert [r["val_score_cv"][0] for r in table["rows"]] == [0.9, 0.93, 0.91]
    # a posthoc.json written before cross-fitting: the in-sample score decides, as it did
    for e in posthoc["results"].values():
        del e["val_score_cv"]
    table = data.posthoc_summary(g)
    assert table["best"] == "lws" and not table["cross_fitted"]


def test_a_lead_smaller_than_the_spread_over_seeds_names_the_runner_up():
    from types import SimpleNamespace

    from cegeo.report._collect import Group, ReportData

    def group(loss, recall, std):
        run = SimpleNamespace(
            status="finished", loss_label=loss, posthoc=None, final={}, metric=lambda m: None
        )
        row = {
            "test_minority_recall_mean": recall,
            "test_minority_recall_std": std,
            "test_balanced_accuracy_mean": recall,
        }
        return Group(key=loss, setup="", loss=loss, label=loss, runs=[run, run], row=row)

    def first_line(*groups):
        runs = [r for g in groups for r in g.runs]
        return ReportData(Path("."), "folder", "t", "", runs, list(groups), None, [""]).headline()[0]

    line = first_line(group("ce", 0.849, 0.005), group("cdt", 0.911, 0.008), group("la", 0.904, 0.019))
    assert line.startswith("CDT did best for the minority classes")
    assert line.endswith(
        "LA is within noise of it (minority recall 0.904 ± 0.019: the lead of 0.007 is smaller than a "
        "standard deviation over seeds)."
    )
    # a clear lead says nothing of the kind
    line = first_line(group("ce", 0.849, 0.005), group("cdt", 0.911, 0.008), group("la", 0.880, 0.010))
    assert "within noise" not in line


def test_no_posthoc_method_is_recommended_when_none_beats_the_raw_predictions():
    from types import SimpleNamespace

    from cegeo.report._collect import Group, ReportData

    test = {"balanced_accuracy": 0.9, "minority_recall": 0.85, "worst_class_recall": 0.8}
    posthoc = {
        "metric": "balanced_accuracy",
        "methods": ["lws"],
        "raw": {"val": {"balanced_accuracy": 0.95}, "test": test},
        "results": {
            "lws": {"val_score": 0.99, "val_score_cv": 0.93, "chosen": {}, "search": None, "test": test}
        },
    }
    run = SimpleNamespace(
        status="finished", loss_label="ce", posthoc=posthoc, final={}, metric=lambda m: None
    )
    g = Group(key="ce", setup="", loss="ce", label="ce", runs=[run], row={})
    data = ReportData(Path("."), "folder", "t", "", [run], [g], None, [""])
    assert data.posthoc_summary(g)["best"] == "raw (argmax)"
    assert data._posthoc_headline("", g) == [
        "Post-hoc rebalancing of the CE runs (fitted on validation only): no method beat the uncorrected "
        "predictions on validation (cross-fitted), so none is recommended (test minority recall stays 0.850)."
    ]
    from cegeo.rebalance import best_method

    assert best_method(posthoc) is None  # cegeo posthoc and the sweep agree


def test_with_a_normal_class_only_predictions_within_the_false_alarm_budget_are_recommended():
    """A defect detector with a 1% false-alarm budget: raw argmax and lws score higher on
    validation but raise 4% and 3% false alarms there; the operating point keeps the budget and is
    the recommendation (it was lws, by score alone). When nothing keeps it, nothing is recommended."""
    from types import SimpleNamespace

    from cegeo.rebalance import best_method
    from cegeo.report._collect import Group, ReportData

    def scores(acc, fa):
        return {
            "balanced_accuracy": acc,
            "minority_recall": acc,
            "worst_class_recall": acc,
            "false_alarm": fa,
        }

    def posthoc(op_fa):
        return {
            "metric": "balanced_accuracy",
            "normal_class": 0,
            "max_false_alarm": 0.01,
            "methods": ["lws", "operating_point"],
            "raw": {"val": scores(0.90, 0.04), "test": scores(0.88, 0.05)},
            "results": {
                "lws": {"val_score": 0.97, "val_score_cv": 0.95, "chosen": {}, "search": None,
                        "val": scores(0.97, 0.03), "test": scores(0.93, 0.03)},
                "operating_point": {"val_score": 0.80, "val_score_cv": 0.79, "chosen": {}, "search": None,
                                    "val": scores(0.80, op_fa), "test": scores(0.78, 0.012)},
            },
        }  # fmt: skip

    def report(p):
        run = SimpleNamespace(status="finished", loss_label="ce", posthoc=p, final={}, metric=lambda m: None)
        g = Group(key="ce", setup="", loss="ce", label="ce", runs=[run], row={})
        return ReportData(Path("."), "folder", "t", "", [run], [g], None, [""]), g

    within = posthoc(0.01)
    assert best_method(within) == "operating_point"
    assert best_method({**within, "normal_class": None}) == "lws"  # no normal class: no budget
    data, g = report(within)
    assert data.posthoc_summary(g)["best"] == "operating_point"
    line = data._posthoc_headline("", g)[0]
    assert (
        "operating_point, the best method on validation (cross-fitted) within the false-alarm budget 0.01"
        in line
    )
    # its test rate 0.012 is over the budget it kept on validation: the line says so
    assert line.endswith("rate 0.050 → 0.012 (on test: over the budget 0.01, which it kept on validation).")
    over = posthoc(0.02)
    assert best_method(over) is None
    data, g = report(over)
    assert data.posthoc_summary(g)["best"] is None
    assert data._posthoc_headline("", g) == [
        "Post-hoc rebalancing of the CE runs (fitted on validation only): no prediction, corrected or not, "
        "kept the validation false-alarm rate within the budget 0.01, so none is recommended."
    ]


def test_posthoc_headline_names_the_setup_of_its_runs():
    """With several setups, each setup's post-hoc line said only "the CE runs": two lines with
    opposite conclusions and nothing to tell which setup each one was about."""
    from types import SimpleNamespace

    from cegeo.report._collect import Group, ReportData

    def group(setup, before, after):
        def scores(v):
            return {"balanced_accuracy": v, "minority_recall": v, "worst_class_recall": v}

        posthoc = {
            "metric": "balanced_accuracy",
            "methods": ["lws"],
            "raw": {"val": {"balanced_accuracy": 0.5}, "test": scores(before)},
            "results": {
                "lws": {
                    "val_score": 0.9,
                    "val_score_cv": 0.8,
                    "chosen": {},
                    "search": None,
                    "test": scores(after),
                }
            },
        }
        run = SimpleNamespace(
            status="finished", loss_label="ce", posthoc=posthoc, final={}, metric=lambda m: None
        )
        row = {"test_minority_recall_mean": before, "test_balanced_accuracy_mean": before}
        return Group(key=f"ce {setup}", setup=setup, loss="ce", label="ce", runs=[run], row=row)

    groups = [group("mlp · digits", 0.5, 0.7), group("mlp · gaussian", 0.8, 0.6)]
    runs = [r for g in groups for r in g.runs]
    data = ReportData(Path("."), "folder", "t", "", runs, groups, None, [g.setup for g in groups])
    lines = [line for line in data.headline() if line.startswith("Post-hoc")]
    assert [line.split(" (fitted")[0] for line in lines] == [
        "Post-hoc rebalancing of the CE runs on mlp · digits",
        "Post-hoc rebalancing of the CE runs on mlp · gaussian",
    ]
    assert "raised test minority recall 0.500 → 0.700" in lines[0]
    assert "lowered test minority recall 0.800 → 0.600" in lines[1]
