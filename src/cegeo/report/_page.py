"""The report: figures, a self-contained HTML page and a Markdown summary from a results folder.

:func:`build_report` reads a run folder, a sweep folder (``cegeo sweep``) or a folder of run
folders, and writes

* an HTML page with every figure embedded as a base64 PNG, inline CSS, no scripts and no
  external resources (it opens offline, can be mailed or attached to a ticket);
* ``summary.md``: the headline and the tables in Markdown (for a pull request or a wiki).

Sections (HTML ids): ``headline`` (plain-language: which loss did best for the minority
classes, by how much, at what training cost), ``results`` (mean ± std over seeds per grid
point, with the cost), ``geometry-vs-gamma`` (the paper's figure: theory curve, ETF line and
UFM/model markers against gamma; when some loss ran over a gamma grid), ``learning-curves``
(balanced accuracy, minority recall and false-alarm rate per epoch, one line per loss, bands
of ± one std over seeds), ``geometry-convergence`` (normalised-Gram distance to theory per
epoch), ``per-class-recall``, ``geometry`` (measured vs predicted), ``posthoc`` (before/after,
when posthoc.json exists), ``ufm`` (when a UFM result exists), ``failures`` and
``provenance`` (hardware and versions). Both files are written atomically.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._io import cegeo_wrote_report, writable_folder, write_text
from .._validation import fail
from ..data._dataset import described
from ..data.imbalance import Groups
from ..theory import predict, theory_loss
from ._collect import ReportData, collect, curves, minority_curve
from .figures import band_curves_figure, figure_png_bytes, geometry_vs_gamma_figure, grouped_bars_figure

__all__ = ["Report", "build_report"]

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
background:#fafbfc;line-height:1.45}
main{max-width:1280px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:1.7em;margin:0.2em 0}h2{margin-top:2.2em;border-bottom:2px solid #dde3ea;padding-bottom:4px}
h3{margin-top:1.4em;color:#38465a}
.meta{color:#5b6778;font-size:0.92em}
.headline{background:#eef5ff;border-left:5px solid #2f6fd6;padding:10px 18px;margin:18px 0;font-size:1.07em}
.headline p{margin:0.5em 0}
nav{font-size:0.92em;margin:8px 0 0}nav a{margin-right:14px;color:#2f6fd6;text-decoration:none}
table{border-collapse:collapse;margin:10px 0 16px;font-size:0.88em;background:#fff}
th,td{border:1px solid #d5dbe3;padding:4px 8px;text-align:right;white-space:nowrap}
th{white-space:normal;vertical-align:bottom}td.text{text-align:left;white-space:normal;min-width:6em}
.scroll{overflow-x:auto;max-width:100%}
th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}
tr.selected td{background:#f3fbf1}
figure{margin:14px 0 22px;background:#fff;border:1px solid #e3e8ee;padding:8px}
figure img{max-width:100%;height:auto;display:block}
figcaption{color:#5b6778;font-size:0.88em;margin-top:6px}
.note{color:#5b6778;font-size:0.9em}
code{background:#f0f3f7;padding:1px 4px;border-radius:3px}
"""


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    html_path: Path
    markdown_path: Path
    headline: list[str]
    sections: list[str]  # section ids in page order
    figures: list[str]  # figure ids in page order
    data: ReportData = field(repr=False)


@dataclass
class _Section:
    id: str
    title: str
    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)


class _Page:
    def __init__(self) -> None:
        self.sections: list[_Section] = []
        self.figures: list[str] = []

    def section(self, id_: str, title: str) -> _Section:
        s = _Section(id_, title)
        self.sections.append(s)
        return s

    def figure(self, sec: _Section, fig_id: str, fig: Any, caption: str, dpi: int = 90) -> None:
        fig_id = re.sub(r"\s+", "_", fig_id)  # an HTML id has no spaces (setup labels have some)
        png = figure_png_bytes(fig, dpi=dpi)
        data = base64.b64encode(png).decode("ascii")
        sec.html.append(
            f'<figure id="fig-{_e(fig_id)}"><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
        sec.md.append(f"*Figure ({fig_id}): {caption} — see the HTML report.*\n")
        self.figures.append(fig_id)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    selected: Sequence[bool] = (),
    text_cols: Sequence[int] = (),
) -> str:
    """A table that scrolls sideways inside the page when it is wider (the results table with a
    false-alarm column is wider than a 1280-pixel window); ``text_cols`` (prose, such as error
    messages) are left-aligned and wrap."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="selected"' if i < len(selected) and selected[i] else ""
        cells = "".join(
            f'<td class="text">{_e(c)}</td>' if j in text_cols else f"<td>{_e(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


# Markdown's inline syntax: code, emphasis, links and images need these; '_' only where it
# can open or close emphasis (at a word's edge: class_balanced stays as it is).
_MD_SPECIAL = re.compile(r"[\\`*\[\]]|(?<!\w)_|_(?!\w)")


def _md(text: Any) -> str:
    """Text from runs (names, labels, errors) for summary.md: one line, drawn as written (no raw
    HTML, entities, links or emphasis)."""
    t = " ".join(str(text).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), t)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(c: Any) -> str:
        return _md(c).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _table(
    sec: _Section,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    selected: Sequence[bool] = (),
    text_cols: Sequence[int] = (),
) -> None:
    sec.html.append(_html_table(headers, rows, selected, text_cols))
    sec.md.append(_md_table(headers, rows))


def _para(sec: _Section, text: str, css: str = "") -> None:
    cls = f' class="{css}"' if css else ""
    sec.html.append(f"<p{cls}>{_e(text)}</p>")
    sec.md.append(_md(text) + "\n")


def _heading(sec: _Section, text: str) -> None:
    sec.html.append(f"<h3>{_e(text)}</h3>")
    sec.md.append(f"### {_md(text)}\n")


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _pm(pair: tuple[float | None, float | None], digits: int = 3) -> str:
    mean, std = pair
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _setup_title(setup: str) -> str:
    return setup or "all runs"


# ------------------------------------------------------------------------------------ sections


def _results(page: _Page, data: ReportData) -> None:
    started = [g for g in data.groups if g.finished or g.row["n_failed"]]
    if not started:
        return
    sec = page.section("results", "Results (test set, mean ± std over seeds)")
    _para(
        sec,
        "Test-set metrics of each configuration, mean ± sample standard deviation over seeds. Minority "
        "recall is the mean recall of the rarest group's classes. Cost: training time per run (probes "
        "excluded), wall time, and the first probed epoch at which validation balanced accuracy reached "
        "95% of its best value (validation, because the test split only grades the final models). "
        "dist W and dist H centred: distance of the classifiers and of the centred class means to the "
        "theory's geometry (0 = exactly the prediction; see below). "
        "Highlighted rows: the hyperparameter value each loss would pick on validation.",
        "note",
    )
    fa = data.normal_class_set
    headers = ["configuration", "seeds", "test bal. acc", "minority recall", "worst-class recall"]
    if fa:
        headers.append("false-alarm rate")
    headers += ["val bal. acc", "dist W", "dist H centred", "train s", "wall s", "95% epoch", "95% train s"]
    waiting = len(data.groups) - len(started)
    if waiting:
        _para(
            sec, f"{waiting} configuration(s) have no finished or failed run yet and are not listed.", "note"
        )
    for setup in data.setups:
        groups = [g for g in data.setup_groups(setup) if g in started]
        if not groups:
            continue
        chosen = {id(g) for g in data.best_per_loss(setup)}
        multi = len(groups) > len(chosen)
        if setup:
            _heading(sec, _setup_title(setup))
        rows, selected = [], []
        for g in groups:
            n = len(g.finished)
            extra = []
            if g.row["n_failed"]:
                extra.append(f"{g.row['n_failed']} failed")
            if g.row["n_unfinished"]:
                extra.append(f"{g.row['n_unfinished']} unfinished")
            row = [g.label, f"{n}" + (f" ({', '.join(extra)})" if extra else "")]
            row += [
                g.pm("test_balanced_accuracy"),
                g.pm("test_minority_recall"),
                g.pm("test_worst_class_recall"),
            ]
            if fa:
                row.append(g.pm("test_false_alarm", 4))
            row += [
                g.pm("val_balanced_accuracy"),
                g.pm("dist_W"),
                g.pm("dist_H_centred"),
                g.pm("train_time_s", 2),
                g.pm("wall_time_s", 1),
                g.pm("epoch_to_95pct_val_bal_acc", 1),
                g.pm("time_to_95pct_val_bal_acc_s", 2),
            ]
            rows.append(row)
            selected.append(multi and id(g) in chosen)
        _table(sec, headers, rows, selected)


def _gamma_figures(page: _Page, data: ReportData) -> None:
    families = data.gamma_families()
    if not families:
        return
    sec = page.section("geometry-vs-gamma", "Geometry against gamma: theory, ETF and measurements")
    _para(
        sec,
        "The paper's figure: for each loss family, the norm ratio (majority/minority, squared norms) and "
        "the mean cosines of the classifiers W (top) and of the class-mean embeddings H (bottom). Black: "
        "the closed-form max-margin limit (THEORY.md §4); dashed: the simplex ETF; markers: final "
        "geometry of the UFM simulation and of the trained models, mean ± std over seeds (CE runs mark "
        "gamma = 0; series are offset slightly along gamma so that they do not hide one another). Class means are uncentred (THEORY.md §5): the features after a ReLU are non-negative, "
        "so a network's uncentred class-mean cosines cannot reach the theory's negative values.",
        "note",
    )
    per_loss = [fam["loss"] for fam in families]
    for i, fam in enumerate(families):
        counts = np.asarray(fam["counts"], dtype=float)
        groups = None
        if fam["groups"]:
            names = list(fam["groups"])
            labels = [""] * counts.size
            for name, members in fam["groups"].items():
                for c in members:
                    labels[c] = name
            groups = Groups(tuple(names), tuple(labels))
        lo, hi = min(fam["gammas"]), max(fam["gammas"])
        grid = np.linspace(lo, hi, 121)
        theory = [
            predict(
                theory_loss(fam["loss"], counts, **{**fam["hyper"], "gamma": float(g)}), counts, groups
            ).summary
            for g in grid
        ]
        # Series at the same gammas are drawn side by side (offsets of 1% of the range).
        n_series = len(fam["markers"])
        step = 0.01 * (hi - lo)
        markers = {
            label: ([g + (i - (n_series - 1) / 2) * step for g in m[0]], m[1])
            for i, (label, m) in enumerate(fam["markers"].items())
        }
        errors = {label: m[2] for label, m in fam["markers"].items()}
        fig = geometry_vs_gamma_figure(
            grid,
            theory,
            counts.size,
            markers=markers,
            marker_err=errors,
            title=f"{fam['loss'].upper()} · {fam['profile']}",
        )
        page.figure(
            sec,
            f"gamma-{fam['loss']}"
            + (f"-{per_loss[:i].count(fam['loss']) + 1}" if per_loss.count(fam["loss"]) > 1 else ""),
            fig,
            f"{fam['loss'].upper()} over gamma in [{lo:g}, {hi:g}] ({fam['profile']}): theory curve, ETF "
            f"line, markers {', '.join(markers)}.",
            dpi=80,
        )


def _learning_curves(page: _Page, data: ReportData) -> None:
    if not data.finished:
        return
    sec = page.section("learning-curves", "Learning curves")
    _para(
        sec,
        "Per probed epoch on the test split: balanced accuracy, minority recall"
        + (" and false-alarm rate" if data.normal_class_set else "")
        + "; one line per loss (its validation-selected configuration), band = ± one std over seeds.",
        "note",
    )
    for setup in data.setups:
        best = data.best_per_loss(setup)
        if not best:
            continue
        panels = [("bal", "test balanced accuracy"), ("min", "test minority recall")]
        if data.normal_class_set:
            panels.append(("fa", "test false-alarm rate"))
        series: dict[str, dict[str, Any]] = {}
        for g in best:
            s: dict[str, Any] = {}
            for key, got in (
                ("bal", curves(g, ("test", "balanced_accuracy"))),
                ("min", minority_curve(g)),
                ("fa", curves(g, ("test", "false_alarm"))),
            ):
                if got is not None:
                    s[key] = got
            if s:
                series[g.label] = s
        if not series:
            continue
        fig = band_curves_figure(series, panels, title=_setup_title(setup) if setup else "", clip=(0.0, 1.0))
        page.figure(sec, f"curves-{setup or 'all'}", fig, f"Learning curves{': ' + setup if setup else ''}.")


def _geometry_convergence(page: _Page, data: ReportData) -> None:
    made = False
    sec = _Section("geometry-convergence", "Convergence of the geometry to the theory")
    for setup in data.setups:
        series: dict[str, dict[str, Any]] = {}
        for g in data.best_per_loss(setup):
            s = {}
            for key in ("dist_W", "dist_H", "dist_H_centred", "dist_M"):
                got = curves(g, ("geometry", key))
                if got is not None:
                    s[key] = got
            if s:
                series[g.label] = s
        if not series:
            continue
        if not made:
            page.sections.append(sec)
            _para(
                sec,
                "Normalised-Gram distance ‖G/‖G‖ − G*/‖G*‖‖_F between the measured geometry and the "
                "theory's prediction for the run's loss and class counts, per probed epoch: classifiers W, "
                "class means H, class-level logits M. 0 = the predicted geometry exactly. The theory's "
                "class means have no common offset; a network's usually do (features after a ReLU are all "
                "positive), which keeps dist H well above 0 however long it trains: dist H centred "
                "compares the class means after subtracting their global mean on both sides.",
                "note",
            )
            made = True
        panels = [
            (k, t)
            for k, t in (
                ("dist_W", "dist W"),
                ("dist_H", "dist H (class means)"),
                ("dist_H_centred", "dist H centred"),
                ("dist_M", "dist M (logits)"),
            )
            if any(k in s for s in series.values())
        ]
        fig = band_curves_figure(series, panels, title=_setup_title(setup) if setup else "")
        page.figure(
            sec,
            f"geometry-{setup or 'all'}",
            fig,
            f"Distance to theory per epoch{': ' + setup if setup else ''}.",
        )


def _per_class(page: _Page, data: ReportData) -> None:
    if not data.finished:
        return
    sec = page.section("per-class-recall", "Per-class recall")
    _para(
        sec,
        "Test recall of every class per loss (validation-selected configuration), mean ± std over seeds; "
        "shaded: the minority classes.",
        "note",
    )
    for setup in data.setups:
        best = data.best_per_loss(setup)
        if not best:
            continue
        series = {}
        k = 0
        minority: list[int] = []
        for g in best:
            recalls = [
                ((r.final or {}).get("test") or {}).get("per_class", {}).get("recall") for r in g.finished
            ]
            recalls = [
                np.array([np.nan if v is None else v for v in rc], dtype=float) for rc in recalls if rc
            ]
            if not recalls:
                continue
            stack = np.stack(recalls)  # (seeds, k)
            k = stack.shape[1]
            std = np.nanstd(stack, axis=0, ddof=1) if stack.shape[0] > 1 else None
            series[g.label] = (np.nanmean(stack, axis=0), std)
            groups = (g.finished[0].final or {}).get("groups") or {}
            if groups and not minority:
                minority = list(list(groups.values())[-1])
        if not series:
            continue
        fig = grouped_bars_figure(
            [str(c) for c in range(k)],
            series,
            ylabel="test recall",
            xlabel="class",
            title=_setup_title(setup) if setup else "",
            highlight=minority,
            highlight_label="minority classes",
        )
        page.figure(
            sec, f"per-class-{setup or 'all'}", fig, f"Per-class test recall{': ' + setup if setup else ''}."
        )


def _geometry_table(page: _Page, data: ReportData) -> None:
    rows_all = []
    for setup in data.setups:
        for g in data.best_per_loss(setup):
            finals = [r.final or {} for r in g.finished if (r.final or {}).get("geometry")]
            if not finals:
                continue
            meas = [f["geometry"].get("summary") or {} for f in finals]
            theory = (finals[0].get("theory") or {}).get("summary") or {}

            def m(key: str, meas: list[dict[str, Any]] = meas) -> str:
                vals = [x.get(key) for x in meas if x.get(key) is not None]
                return _f(float(np.mean(vals))) if vals else "–"

            def gm(key: str, finals: list[dict[str, Any]] = finals) -> str:
                vals = [f["geometry"].get(key) for f in finals if f["geometry"].get(key) is not None]
                return _f(float(np.mean(vals))) if vals else "–"

            rows_all.append(
                [
                    (setup + ": " if setup else "") + g.label,
                    f"{m('W_ratio')} / {_f(theory.get('W_ratio'))}",
                    f"{m('H_ratio')} / {_f(theory.get('H_ratio'))}",
                    f"{m('W_cos_min_min')} / {_f(theory.get('W_cos_min_min'))}",
                    f"{m('W_cos_maj_min')} / {_f(theory.get('W_cos_maj_min'))}",
                    gm("dist_W"),
                    gm("dist_H"),
                    gm("dist_H_centred"),
                    gm("dist_M"),
                    gm("nc1"),
                ]
            )
    if not rows_all:
        return
    sec = page.section("geometry", "Learned geometry against the theory")
    _para(
        sec,
        "Final geometry (measured / predicted, mean over seeds): squared-norm ratios majority/minority "
        "of the classifiers (W) and class means (H), mean cosines; distances as above; NC1 = within-class "
        "variability (0 = collapse). The theory is the max-margin limit, approached slowly "
        "(THEORY.md §6): finite training lands near, not on, it.",
        "note",
    )
    _table(
        sec,
        [
            "loss",
            "W ratio",
            "H ratio",
            "W cos min-min",
            "W cos maj-min",
            "dist W",
            "dist H",
            "dist H centred",
            "dist M",
            "NC1",
        ],
        rows_all,
    )


def _posthoc(page: _Page, data: ReportData) -> None:
    tables = []
    for setup in data.setups:
        for g in data.setup_groups(setup):
            t = data.posthoc_summary(g)
            if t is not None:
                tables.append((setup, g, t))
    if not tables:
        return
    sec = page.section("posthoc", "Post-hoc rebalancing: before and after")
    _para(
        sec,
        "Rebalancers fitted on each run's validation split only, applied to its test split (cegeo "
        "posthoc). Test metrics, mean ± std over runs; 'val' is the selection metric on the validation "
        "split the method was fitted on, 'val cross-fitted' the same with each validation sample "
        "predicted by a fit on the other folds (5-fold, stratified). The method the report names best "
        "(highlighted) has the highest mean 'val cross-fitted': the in-sample 'val' favours methods "
        "with many parameters, such as lws (one scale per class); where no method has a "
        "cross-fitted score (a posthoc.json written before cegeo cross-fitted, or a validation split "
        "too small to fold), the best is chosen by 'val'. When that score does not beat the raw "
        "predictions' (nothing is fitted for them), the raw row is highlighted: no correction is "
        "recommended. Runs with a normal class have a false-alarm budget (cegeo posthoc "
        "--max-false-alarm, default 0.01): only rows whose mean validation false-alarm rate is within "
        "it compete, and none is highlighted when no row is.",
        "note",
    )
    fa = any(row["false_alarm"][0] is not None for _, _, t in tables for row in t["rows"])
    for setup, g, t in tables:
        _heading(
            sec,
            f"{(setup + ': ') if setup else ''}{g.label} ({t['runs']} run{'s' if t['runs'] != 1 else ''})",
        )
        headers = [
            "method",
            "chosen on val",
            f"val {t['metric']}",
            "val cross-fitted",
            *(["val false alarm"] if fa else []),
            "test bal. acc",
            "minority recall",
            "worst-class",
        ]
        if fa:
            headers.append("false alarm")
        rows, selected = [], []
        for row in t["rows"]:
            cells = [
                row["method"],
                row["chosen"],
                _pm(row["val_score"]),
                _pm(row["val_score_cv"]),
                *([_pm(row["val_false_alarm"], 4)] if fa else []),
                _pm(row["balanced_accuracy"]),
                _pm(row["minority_recall"]),
                _pm(row["worst_class_recall"]),
            ]
            if fa:
                cells.append(_pm(row["false_alarm"], 4))
            rows.append(cells)
            selected.append(row["method"] == t["best"])
        _table(sec, headers, rows, selected)
        for w in t["warnings"][:3]:
            _para(sec, f"Warning from cegeo posthoc: {w}.", "note")
        if t["skipped"]:
            _para(sec, "Skipped: " + "; ".join(f"{k} ({v})" for k, v in t["skipped"].items()) + ".", "note")
        methods = [r["method"] for r in t["rows"]]
        series = {
            "test balanced accuracy": (
                [
                    r["balanced_accuracy"][0] if r["balanced_accuracy"][0] is not None else np.nan
                    for r in t["rows"]
                ],
                [r["balanced_accuracy"][1] or 0.0 for r in t["rows"]],
            ),
            "test minority recall": (
                [
                    r["minority_recall"][0] if r["minority_recall"][0] is not None else np.nan
                    for r in t["rows"]
                ],
                [r["minority_recall"][1] or 0.0 for r in t["rows"]],
            ),
        }
        fig = grouped_bars_figure(methods, series, ylabel="test score", title=f"post-hoc on {g.label}")
        page.figure(
            sec, f"posthoc-{g.key}", fig, f"Post-hoc rebalancing of {g.label}: before (raw) and after."
        )


def _ufm(page: _Page, data: ReportData) -> None:
    rows = data.ufm_rows()
    if not rows:
        return
    ufm = data.ufm or {}
    exp = ufm.get("experiment") or {}
    sec = page.section("ufm", "Unconstrained features model (UFM)")
    _para(
        sec,
        f"Batched UFM simulation on {ufm.get('profile', '?')}: d = {exp.get('d')}, {exp.get('epochs')} epochs, "
        f"lr {exp.get('lr')}, momentum {exp.get('momentum')}, weight decay {exp.get('weight_decay')} "
        f"({_f(ufm.get('train_time_s'), 1)} s). Final geometry, mean ± std over seeds, against the "
        "theory's max-margin limit (regularised gradient descent approaches it slowly).",
        "note",
    )
    _table(
        sec,
        [
            "loss",
            "seeds",
            "W ratio",
            "theory",
            "H ratio",
            "theory",
            "W cos min-min",
            "theory",
            "dist W",
            "dist H",
            "train acc",
        ],
        [
            [
                r["label"],
                r["seeds"],
                _pm(r["W_ratio"]),
                _f(r["theory_W_ratio"]),
                _pm(r["H_ratio"]),
                _f(r["theory_H_ratio"]),
                _pm(r["W_cos_min_min"]),
                _f(r["theory_W_cos_min_min"]),
                _pm(r["dist_W"]),
                _pm(r["dist_H"]),
                _pm(r["train_acc"]) + (" †" if _unfit(r) else ""),
            ]
            for r in rows
        ],
    )
    unfit = [r["label"] for r in rows if _unfit(r)]
    if unfit:
        _para(
            sec,
            f"† Training set not fit (train accuracy below 1) after the simulated epochs: {', '.join(unfit)}. "
            "The max-margin limit describes runs that separate their training data; these have not yet "
            "(too few epochs, or a temperature at which gradient descent stalls), so their gap to the "
            "theory does not test the prediction.",
            "note",
        )


def _unfit(row: dict[str, Any]) -> bool:
    """Whether a UFM row's mean train accuracy is below 1 (the training set is not separated)."""
    acc = (row.get("train_acc") or (None,))[0]
    return acc is not None and acc < 1.0


def _failures(page: _Page, data: ReportData) -> None:
    bad = data.failures + [r for r in data.unfinished if r.status == "unfinished"]
    pending = [r for r in data.unfinished if r.status == "pending"]
    if not bad and not pending:
        return
    sec = page.section("failures", "Failures and unfinished runs")
    if bad:
        rows = []
        for r in bad:
            err = r.error or {}
            rows.append([r.name, r.status, err.get("type", ""), err.get("error", "")])
        _table(sec, ["run", "status", "type", "error"], rows, text_cols=(1, 2, 3))
        _para(
            sec,
            "Tracebacks are in each run's error.json; re-running the sweep retries failed runs and resumes "
            "unfinished ones from their checkpoints.",
            "note",
        )
    if pending:
        _para(sec, f"{len(pending)} run(s) of the sweep have not started yet.", "note")


def _provenance(page: _Page, data: ReportData) -> None:
    envs = data.environments()
    if not envs:
        return
    sec = page.section("provenance", "Hardware and versions")
    headers = [
        "runs",
        "device",
        "GPU",
        "CPU",
        "cores",
        "platform",
        "python",
        "torch",
        "numpy",
        "cegeo",
        "git commit",
    ]
    rows = [
        [
            e["runs"],
            e.get("device") or "–",
            e.get("cuda") or "–",
            e.get("cpu") or "–",
            e.get("cpu_count") or "–",
            e.get("platform") or "–",
            e.get("python") or "–",
            e.get("torch") or "–",
            e.get("numpy") or "–",
            e.get("cegeo") or "–",
            (e.get("git_commit") or "–")[:19],
        ]
        for e in envs
    ]
    _table(sec, headers, rows)


# --------------------------------------------------------------------------------------- build


def build_report(
    folder: str | Path,
    out: str | Path | None = None,
    markdown: str | Path | None = None,
) -> Report:
    """Write the HTML report and ``summary.md`` for a run folder or a sweep folder.

    Parameters
    ----------
    folder : path
        A run folder, a sweep folder, or a folder of run folders (two levels deep).
    out : path, optional
        The HTML file (default ``<folder>/report.html``).
    markdown : path, optional
        The Markdown summary (default ``summary.md`` beside the HTML file).

    Returns
    -------
    Report

    Raises
    ------
    ValueError
        ``folder`` is not a folder or holds no run; ``out`` is a folder or not ``.html``.

    Examples
    --------
    >>> import tempfile
    >>> from cegeo.config import from_dict
    >>> from cegeo.sweep import SweepConfig, run_sweep
    >>> cfg = from_dict(SweepConfig, {"losses": [{"name": "ce"}, {"name": "la"}], "base": {
    ...     "data": {"source": "gaussian", "imbalance": "step:R=4,rho=0.5",
    ...              "options": {"k": 4, "d": 4, "n_per_class": 20, "n_test_per_class": 5}},
    ...     "model": {"options": {"width": 8, "depth": 1}}, "train": {"epochs": 2}}})
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = run_sweep(cfg, out)
    >>> report = build_report(out)
    >>> report.html_path.name, report.markdown_path.name, report.figures
    ('report.html', 'summary.md', ['curves-all', 'geometry-all', 'per-class-all'])
    >>> "did best for the minority classes" in report.headline[0] or "tied" in report.headline[0]
    True
    """
    root = Path(folder)
    data = collect(root)
    html_path = Path(out) if out is not None else root / "report.html"
    if html_path.is_dir() or html_path.suffix.lower() not in (".html", ".htm"):
        raise fail("--out", "an .html file path", str(html_path))
    md_path = Path(markdown) if markdown is not None else html_path.with_name("summary.md")
    if md_path.is_dir():
        raise fail("--markdown", "a file path", str(md_path))
    if md_path.resolve() == html_path.resolve():
        raise fail("--markdown", "a file other than the HTML report", str(md_path))
    writable_folder("--out", html_path.parent)
    writable_folder("--markdown", md_path.parent)
    # A report replaces only a report: a user's own report.html or summary.md is never overwritten.
    for option, path in (("--out", html_path), ("--markdown", md_path)):
        if path.exists() and not cegeo_wrote_report(path):
            raise fail(
                option,
                "a new file or a report cegeo wrote before",
                described(f"{path}, a file cegeo did not write (choose another {option})"),
            )

    page = _Page()
    headline = data.headline()
    for build in (
        _results,
        _gamma_figures,
        _learning_curves,
        _geometry_convergence,
        _per_class,
        _geometry_table,
        _posthoc,
        _ufm,
        _failures,
        _provenance,
    ):
        build(page, data)

    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_runs = len(data.runs)
    meta = (
        f"{data.kind} folder {root} · {len(data.finished)} of {n_runs} run(s) finished · "
        f"generated {created} by cegeo {__version__}"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="cegeo {_e(__version__)}">',
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(data.title)}</h1>",
        f'<p class="meta">{_e(meta)}</p>',
    ]
    if data.description:
        parts.append(f"<p>{_e(data.description)}</p>")
    parts.append(
        "<nav>"
        + "".join(f'<a href="#{s.id}">{_e(s.title.split(":")[0])}</a>' for s in page.sections)
        + "</nav>"
    )
    parts.append(
        '<section id="headline" class="headline">'
        + "".join(f"<p>{_e(t)}</p>" for t in headline)
        + "</section>"
    )
    for s in page.sections:
        parts.append(f'<section id="{s.id}"><h2>{_e(s.title)}</h2>{"".join(s.html)}</section>')
    parts.append("</main></body></html>")
    write_text(html_path, "\n".join(parts) + "\n")

    md = [f"# {_md(data.title)}\n", f"_{_md(meta)}_\n"]
    if data.description:
        md.append(_md(data.description) + "\n")
    md.append("## Headline\n")
    md += [f"- {_md(t)}" for t in headline]
    md.append("")
    for s in page.sections:
        if s.id.startswith(
            ("learning-curves", "geometry-convergence", "per-class-recall", "geometry-vs-gamma")
        ):
            md.append(f"## {s.title}\n\nFigures: see {html_path.name}.\n")
            continue
        md.append(f"## {_md(s.title)}\n")
        md.extend(s.md)
    write_text(md_path, "\n".join(md).rstrip() + "\n")
    return Report(
        html_path=html_path,
        markdown_path=md_path,
        headline=headline,
        sections=["headline", *(s.id for s in page.sections)],
        figures=page.figures,
        data=data,
    )
