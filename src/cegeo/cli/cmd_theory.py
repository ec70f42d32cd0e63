"""``cegeo theory``: the geometry a loss converges to, from class counts alone (THEORY.md §4).

Examples::

    cegeo theory --step k=10,R=10,rho=0.5 --loss ldt --gamma 0.5
    cegeo theory --longtail k=10,R=100 --loss cdt --gamma-grid -1.5:1.5:13
    cegeo theory --counts 5000,500,500 --loss vs --hyper tau=1 --tune --json
    cegeo theory --step k=10,R=10,rho=0.5 --loss ldt --plot ldt.png
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.table import Table

from .._io import dumps_json, writable_file
from .._validation import InputError, OutOfRangeError, fail, renamed
from ..data.imbalance import Groups, step_groups
from ..losses import get_loss_info
from ..theory import (
    Geometry,
    etf_residual,
    predict,
    symmetric_temperatures,
    theory_loss,
    theory_losses,
    tune,
)
from ..theory._tune import FLAT_TOL
from . import app
from ._common import (
    console,
    err_console,
    exactly_one,
    longtail_float_counts,
    loss_hyper,
    parse_counts,
    parse_grid,
    parse_longtail,
    parse_step,
)

DEFAULT_PLOT_GRID = np.linspace(-1.5, 1.5, 121)  # the paper's gamma range, finely for a smooth curve
PER_CLASS_MAX_K = 30  # print a per-class table up to this many classes
MATRICES_MAX_K = 200  # include k x k matrices in --json up to this many classes
_RESIDUAL_NOTE = (
    "(*) d_W: normalised-Gram distance of W to the ETF Gram; d_H: the same for the cosine matrix of "
    "the class means (their norms differ even in the symmetric geometry, ||h_c||^2 ∝ 1/n_c); "
    "ETF residual = sqrt(d_W^2 + d_H^2)."
)
_BALANCED_NOTE = (
    "balanced counts: every class is both a majority and a minority class, so the norm ratio is 1 "
    "and the three mean cosines are the same mean over all pairs of classes."
)
_SUMMARY_ROWS = (
    ("ratio", "norm² ratio maj/min"),
    ("cos_maj_maj", "mean cos maj-maj"),
    ("cos_min_min", "mean cos min-min"),
    ("cos_maj_min", "mean cos maj-min"),
)


def _fmt(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4f}"


def _fmt_distance(v: float) -> str:
    """A distance to the ETF: round-off below FLAT_TOL prints as 0 (it read "1.841e-16", as if
    the symmetric geometry were missed by a measurable amount)."""
    return _fmt(0.0 if v is not None and 0 <= v <= FLAT_TOL else v)


def _profile(
    step: str | None, longtail: str | None, counts: str | None
) -> tuple[np.ndarray, Groups | None, dict]:
    which = exactly_one({"--step": step, "--longtail": longtail, "--counts": counts})
    if which == "--step":
        spec = parse_step(step or "")
        desc = {"kind": "step", "k": spec.k, "R": spec.R, "rho": spec.rho, "n_min": 1.0}
        return spec.counts(1.0), step_groups(spec.k, spec.rho), desc
    if which == "--longtail":
        k, R = parse_longtail(longtail or "")
        return longtail_float_counts(k, R), None, {"kind": "longtail", "k": k, "R": R, "n_min": 1.0}
    n = parse_counts(counts or "")
    if n.size < 2:
        raise fail("--counts", "at least 2 comma-separated class counts", counts)
    return n.astype(np.float64), None, {"kind": "counts", "k": int(n.size), "R": float(n.max() / n.min())}


def _describe(desc: dict) -> str:
    if desc["kind"] == "step":
        return f"STEP k={desc['k']}, R={desc['R']:g}, rho={desc['rho']:g} (n_min = 1)"
    if desc["kind"] == "longtail":
        return f"long tail k={desc['k']}, R={desc['R']:g} (n_min = 1)"
    return f"{desc['k']} explicit counts, R={desc['R']:g}"


def _temperatures(loss: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    ones = np.ones(k)
    dc = ones if loss.delta_logit is None else loss.delta_logit.double().numpy()
    dl = ones if loss.delta_label is None else loss.delta_label.double().numpy()
    return dc, dl


def _geometry_dict(geo: Geometry, loss: Any) -> dict[str, Any]:
    dc, dl = _temperatures(loss, geo.k)
    out: dict[str, Any] = {
        "delta_logit": dc,
        "delta_label": dl,
        "w_norms": geo.w_norms,
        "h_norms": geo.h_norms,
        "cos_WH": geo.cos_WH,
        "summary": geo.summary,
        "distance_to_etf": etf_residual(geo)._asdict(),
        "matrices_included": geo.k <= MATRICES_MAX_K,
    }
    if geo.k <= MATRICES_MAX_K:
        out.update(cos_W=geo.cos_W, cos_H=geo.cos_H, M=geo.M)
    return out


def _group_table(geo: Geometry, loss: Any, title: str) -> Table:
    dc, dl = _temperatures(loss, geo.k)
    w, h = geo.w_norms / geo.w_norms.mean(), geo.h_norms / geo.h_norms.mean()
    table = Table(title=title)
    for col in ("group", "#", "mean n", "Dc", "Dl", "‖w‖/mean", "‖h‖/mean", "cos(w,h)"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for name in geo.groups.names:
        idx = geo.groups.members(name)
        if idx.size == 0:
            continue
        table.add_row(
            name,
            str(idx.size),
            f"{geo.class_counts[idx].mean():.4g}",
            _fmt(dc[idx].mean()),
            _fmt(dl[idx].mean()),
            _fmt(w[idx].mean()),
            _fmt(h[idx].mean()),
            _fmt(geo.cos_WH[idx].mean()),
        )
    return table


def _class_table(geo: Geometry, loss: Any) -> Table:
    dc, dl = _temperatures(loss, geo.k)
    w, h = geo.w_norms / geo.w_norms.mean(), geo.h_norms / geo.h_norms.mean()
    table = Table(title="per class")
    for col in ("class", "n", "group", "Dc", "Dl", "‖w‖/mean", "‖h‖/mean", "cos(w,h)"):
        table.add_column(col, justify="right")
    for c in range(geo.k):
        table.add_row(
            str(c),
            f"{geo.class_counts[c]:.4g}",
            geo.groups.labels[c],
            _fmt(dc[c]),
            _fmt(dl[c]),
            _fmt(w[c]),
            _fmt(h[c]),
            _fmt(geo.cos_WH[c]),
        )
    return table


def _summary_table(geo: Geometry) -> Table:
    s, k = geo.summary, geo.k
    etf_cos = -1.0 / (k - 1)
    table = Table(title="geometry vs the simplex ETF (ratio = mean ‖·_maj‖² / mean ‖·_min‖²)")
    for col in ("", "classifiers W", "class means H", "ETF"):
        table.add_column(col, justify="left" if not col else "right")
    for key, label in _SUMMARY_ROWS:
        table.add_row(
            label, _fmt(s[f"W_{key}"]), _fmt(s[f"H_{key}"]), _fmt(1.0 if key == "ratio" else etf_cos)
        )
    table.add_row("mean cos(w_c, h_c)", _fmt(s["cos_WH"]), "", _fmt(1.0))
    r = etf_residual(geo)
    table.add_row("distance to ETF (*)", _fmt_distance(r.W), _fmt_distance(r.H), _fmt(0.0))
    return table


def _grid_tables(param: str, grid: np.ndarray, geos: list[Geometry], k: int) -> list[Table]:
    etf_cos = -1.0 / (k - 1)
    tables = []
    for tag, title in (("W", "classifiers W"), ("H", "class means H")):
        table = Table(title=f"{title} against {param} (ETF: ratio 1, cos {etf_cos:.4f})")
        extra = "cos(w,h)" if tag == "W" else "ETF resid. (*)"
        for col in (param, "norm² ratio", "cos maj-maj", "cos min-min", "cos maj-min", extra):
            table.add_column(col, justify="right")
        for v, geo in zip(grid, geos, strict=True):
            s = geo.summary
            last = _fmt(s["cos_WH"]) if tag == "W" else _fmt_distance(etf_residual(geo).total)
            table.add_row(f"{v:g}", *(_fmt(s[f"{tag}_{key}"]) for key, _ in _SUMMARY_ROWS), last)
        tables.append(table)
    return tables


def _tune_table(results: list[Any]) -> Table:
    table = Table(title="closest to the symmetric (ETF) geometry (residual, d_W, d_H: see (*))")
    for col in ("loss", "parameter", "best value", "residual", "d_W", "d_H"):
        table.add_column(col, justify="right" if col != "loss" else "left")
    for r in results:
        value = (
            "any (flat)" if r.flat else f"{r.value:.6g}" + (" (any is symmetric)" if r.all_symmetric else "")
        )
        table.add_row(
            r.loss, r.param, value, *(_fmt_distance(x) for x in (r.residual, r.residual_W, r.residual_H))
        )
    return table


@app.command("theory")
def theory_command(
    step: str | None = typer.Option(
        None,
        "--step",
        help="(R, rho)-STEP profile 'k=10,R=10,rho=0.5': rho*k minority classes of size 1, the "
        "others of size R (majorities first). R = n_max/n_min >= 1.",
    ),
    longtail: str | None = typer.Option(
        None,
        "--longtail",
        help="Exponential long tail 'k=10,R=100', n_i ∝ R^(-i/(k-1)). R = n_max/n_min >= 1.",
    ),
    counts: str | None = typer.Option(
        None,
        "--counts",
        help="Explicit class counts '5000,500,500' (positive integers; R = n_max/n_min >= 1).",
    ),
    loss: str = typer.Option(
        "ce", "--loss", help="A registered loss (see `cegeo losses`); ldam is outside the theory."
    ),
    gamma: float | None = typer.Option(None, "--gamma", help="The loss's gamma (wce, cdt, ldt, vs)."),
    tau: float | None = typer.Option(None, "--tau", help="The loss's tau (la, vs)."),
    hyper: list[str] | None = typer.Option(
        None, "--hyper", help="Another hyperparameter as name=value, repeatable (e.g. --hyper tau=1)."
    ),
    gamma_grid: str | None = typer.Option(
        None,
        "--gamma-grid",
        help="Sweep the loss's family parameter (gamma; tau for la): START:STOP:NUM like "
        "numpy.linspace (e.g. -1.5:1.5:13) or a comma-separated list.",
    ),
    do_tune: bool = typer.Option(
        False, "--tune", help="Print the symmetric setting: Dl ∝ sqrt(n) and the best family parameter."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print machine-readable JSON to stdout instead of tables."
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Write the paper's 2 x 4 figure (W and class-mean rows; norm ratio and mean cosines "
        "against the family parameter; theory curve and ETF line) to this file (.png, .pdf, .svg). "
        "Uses --gamma-grid, else 121 points on [-1.5, 1.5].",
    ),
) -> None:
    """Predict the geometry a loss converges to (max-margin limit, THEORY.md §4) from class counts.

    Norms are scale-free (divided by their mean over classes); R = n_max/n_min >= 1.
    """
    class_counts, groups, desc = _profile(step, longtail, counts)
    k = class_counts.size
    if loss not in theory_losses():
        raise fail("--loss", f"a loss the theory covers ({', '.join(map(repr, theory_losses()))})", loss)
    info = get_loss_info(loss)
    shortcuts = {"gamma": gamma, "tau": tau}
    extra = loss_hyper(hyper, **shortcuts)
    param = info.family_param
    grid = None
    if gamma_grid is not None or plot is not None:
        if param is None:
            tunable = [n for n in theory_losses() if get_loss_info(n).family_param]
            option = "--gamma-grid" if gamma_grid is not None else "--plot"
            raise fail(option, f"a loss with a family parameter ({', '.join(map(repr, tunable))})", loss)
        if param in extra and gamma_grid is not None:
            raise InputError(f"give {param} once: --gamma-grid sweeps it; got a fixed {param} too.")
    if gamma_grid is not None:
        grid = parse_grid(gamma_grid)
    if plot is not None:
        _check_plot_path(plot)
    # Everything that can fail on the input runs before the first line is printed.
    try:
        base = theory_loss(loss, class_counts, **extra)  # validates the hyperparameters up front
        geo = predict(base, class_counts, groups) if grid is None else None
    except InputError as err:
        raise _hyper_error(err, loss, class_counts, shortcuts, hyper) from None
    geos: list[Geometry] = []
    if grid is not None:
        assert param is not None and gamma_grid is not None
        geos = [
            _grid_geometry(loss, class_counts, groups, extra, param, v, "--gamma-grid", gamma_grid)
            for v in grid
        ]
    plot_summaries = None
    if plot is not None:
        assert param is not None
        if grid is None:
            plot_summaries = [
                _grid_geometry(loss, class_counts, groups, extra, param, v, "--plot", str(plot)).summary
                for v in DEFAULT_PLOT_GRID
            ]
        else:
            plot_summaries = [g.summary for g in geos]
    results = []
    if do_tune:
        names = [loss] if param is not None else []
        if "ldt" not in names:
            names.append("ldt")
        own = {key: v for key, v in extra.items() if key != param}  # the loss's other hyperparameters
        results = [
            tune(name, class_counts, hyper=own if name == loss else None, groups=groups) for name in names
        ]

    out: dict[str, Any] = {
        "profile": desc,
        "class_counts": class_counts,
        "loss": loss,
        "hyper": {key: float(extra.get(key, v)) for key, v in info.defaults.items()},
        "etf": {"ratio": 1.0, "cos": -1.0 / (k - 1), "cos_WH": 1.0},
    }
    header = f"cegeo theory: {loss} on {_describe(desc)}; limiting geometry (THEORY.md §4)"
    if geo is not None:
        out["groups"] = geo.groups.as_dict()
        out["balanced"] = geo.groups.balanced
        out["geometry"] = _geometry_dict(geo, base)
        if not as_json:
            hyper_text = ", ".join(f"{key}={v:g}" for key, v in out["hyper"].items()) or "no hyperparameters"
            console.print(f"{header}\n{info.formula}; {hyper_text}")
            console.print(_group_table(geo, base, "per group"))
            if desc["kind"] != "step" and k <= PER_CLASS_MAX_K:
                console.print(_class_table(geo, base))
            console.print(_summary_table(geo))
            console.print(_RESIDUAL_NOTE)
            if out["balanced"]:
                console.print(_BALANCED_NOTE)
    else:
        assert param is not None and grid is not None
        out["groups"] = geos[0].groups.as_dict()
        out["balanced"] = geos[0].groups.balanced
        out["hyper"][param] = None  # swept: its values are grid.values, not the registry default
        out["grid"] = {
            "param": param,
            "values": grid,
            "summaries": [g.summary for g in geos],
            "distance_to_etf": [etf_residual(g).total for g in geos],
        }
        if not as_json:
            console.print(header)
            for table in _grid_tables(param, grid, geos, k):
                console.print(table)
            console.print(_RESIDUAL_NOTE)
            if out["balanced"]:
                console.print(_BALANCED_NOTE)

    if do_tune:
        sym = symmetric_temperatures(class_counts)
        out["tune"] = {"symmetric_temperatures": sym, "results": [r.to_dict() for r in results]}
        if not as_json:
            console.print(
                "symmetric setting: label temperatures Dl_c ∝ sqrt(n_c) (LDT with gamma = 1/2) give an "
                "ETF classifier and ETF-angled class means for any counts (THEORY.md §4.2)."
            )
            per_class = desc["kind"] != "step" and k <= PER_CLASS_MAX_K
            console.print(_sym_table(sym, class_counts, results[0].geometry.groups, per_class))
            console.print(_tune_table(results))
            for r in results:
                console.print(f"{r.loss}: {r.note}")

    if plot is not None:
        assert plot_summaries is not None
        _write_plot(plot, loss, plot_summaries, class_counts.size, grid, desc)
        (err_console if as_json else console).print(f"wrote {plot}")
    if as_json:
        typer.echo(dumps_json(out))


def _hyper_error(
    err: InputError,
    loss: str,
    counts: np.ndarray,
    shortcuts: dict[str, float | None],
    hyper: list[str] | None,
) -> InputError:
    """Name the option behind a hyperparameter error: --gamma or --tau when given that way."""
    given = {name: v for name, v in shortcuts.items() if v is not None}
    named = renamed(err, {name: f"--{name}" for name in given})  # the hyperparameter --gamma sets
    if named is not err:
        return named
    if isinstance(err, OutOfRangeError) and err.param == "loss":  # the Grams overflow, not the vectors
        if len(given) == 1 and not hyper:
            (name, value), what = next(iter(given.items())), "a value"
            option, got = f"--{name}", value
        else:
            option, what = "--hyper", "hyperparameters"
            got = [f"{n}={v:g}" for n, v in given.items()] + list(hyper or [])
        R = counts.max() / counts.min()
        return fail(
            option, f"{what} whose {loss} limiting geometry fits in float64 for counts with R = {R:g}", got
        )
    return err


def _grid_geometry(
    loss: str,
    counts: np.ndarray,
    groups: Groups | None,
    extra: dict,
    param: str,
    value: float,
    option: str,
    text: str,
) -> Geometry:
    """The geometry at one grid value; a value whose temperatures or Grams overflow names the option."""
    try:
        return predict(theory_loss(loss, counts, **{**extra, param: value}), counts, groups)
    except OutOfRangeError:
        R = counts.max() / counts.min()
        if option == "--gamma-grid":
            expected = (
                f"values of {param} that keep the {loss} loss's temperatures and limiting geometry "
                f"finite for counts with R = {R:g} ({param} = {value:g} does not)"
            )
        else:
            expected = (
                f"given a --gamma-grid for these counts (R = {R:g}): on the default grid -1.5:1.5, "
                f"{param} = {value:g} makes the {loss} loss's temperatures or geometry overflow"
            )
        raise fail(option, expected, text) from None


def _sym_table(sym: np.ndarray, counts: np.ndarray, groups: Groups, per_class: bool) -> Table:
    table = Table(title="symmetric label temperatures Dl_c ∝ sqrt(n_c) (mean 1)")
    for col in ("class" if per_class else "group", "n" if per_class else "mean n", "Dl"):
        table.add_column(col, justify="right")
    if per_class:
        for c in range(counts.size):
            table.add_row(str(c), f"{counts[c]:.4g}", _fmt(sym[c]))
        return table
    for name in groups.names:
        idx = groups.members(name)
        if idx.size:
            table.add_row(name, f"{counts[idx].mean():.4g}", _fmt(sym[idx].mean()))
    return table


def _check_plot_path(path: Path) -> None:
    from matplotlib.figure import Figure

    supported = Figure().canvas.get_supported_filetypes()
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in supported:
        raise fail("--plot", f"a file name ending in one of .{', .'.join(sorted(supported))}", str(path))
    writable_file("--plot", path)


def _write_plot(
    path: Path, loss: str, summaries: list[dict], k: int, grid: np.ndarray | None, desc: dict
) -> None:
    from ..report.figures import geometry_vs_gamma_figure, save_figure

    param = get_loss_info(loss).family_param
    fig = geometry_vs_gamma_figure(
        DEFAULT_PLOT_GRID if grid is None else grid,
        summaries,
        k,
        title=f"{loss}: {_describe(desc)} (theory, max-margin limit)",
        xlabel=param,
    )
    save_figure(fig, path)
