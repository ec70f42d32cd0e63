"""``cegeo ufm``: simulate the unconstrained features model and compare it with the theory.

Examples::

    cegeo ufm --step k=10,R=10,rho=0.5 --n-min 5 --d 20 --loss ldt --gamma-grid -1.5:1.5:13 --out runs/ufm
    cegeo ufm --config experiments/ufm_paper.toml --out runs/ufm_paper
    cegeo ufm --config experiments/ufm_paper.toml --path --out runs/ufm_paper   # + regularisation path
    cegeo ufm --config experiments/ufm_paper.toml --epochs 300 --seeds 0,1,2    # quick look

Every configuration (loss x grid value x seed) trains in one batched tensor program
(:func:`cegeo.ufm.simulate`); the exact regularised minimiser at the same weight decay
(:func:`cegeo.ufm.minimize_ufm`) splits the gap to the theory into an optimisation part
(GD vs minimiser) and a regularisation part (minimiser vs the lam -> 0 limit), both taken at the
grid value where the total gap is largest.

Output folder (``--out``): ``ufm.csv``, ``summary.json``, ``config.toml``, ``ufm_<loss>.png`` (for
each loss swept over a gamma grid) and, with ``--path``, ``path.csv`` and ``path_<loss>.png``. The
gaps of ``summary.json`` and the tables are ``|a/b - 1|`` for norm ratios and ``|a - b|`` for
cosines; ``path.csv``'s ``gap_<panel>`` columns are the signed ``value - theory`` of every panel,
ratios included (:class:`cegeo.ufm.PathResult`). After a successful write, files of those
names that this run did not write (left by an earlier run into the same folder) are removed, so
the folder always describes one run; no other file is touched.

Exit status: 0 when the run finished (notes name diverged configurations, ``d < k``, zero or
uncertified minimisers), 1 when every configuration diverged (the outputs are still written) or
a write failed, 2 for bad input (one ``error:`` line, nothing run).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .._io import (
    environment_info,
    read_json,
    read_toml,
    remove_temporaries,
    writable_folder,
    write_json,
    write_text,
)
from .._validation import InputError, check_finite, check_int, fail, renamed
from ..config import from_dict, to_dict, to_toml_text
from ..data._dataset import described
from ..theory import predict
from ..ufm import (
    PANEL_KEYS,
    SCALE_FREE_COLUMNS,
    LowRankWarning,
    PathResult,
    UFMConfig,
    UFMExperiment,
    UFMMinimum,
    UFMResult,
    check_threads,
    minimize_ufm,
    regularization_path,
    write_rows_csv,
)
from . import app
from ._common import (
    err_console,
    parse_counts,
    parse_grid,
    parse_hyper,
    parse_longtail,
    parse_step,
    wide_console,
)

GAP_FROM = -0.5  # the paper's comparison range: gamma >= -0.5
THEORY_POINTS = 121  # points of the theory curve in the figure
_PANEL_NAMES = {
    "ratio": "norm² ratio maj/min (rel.)",
    "cos_maj_maj": "cos maj-maj",
    "cos_min_min": "cos min-min",
    "cos_maj_min": "cos maj-min",
}


def panel_label(key: str) -> str:
    row, _, rest = key.partition("_")
    return f"{row}: {_PANEL_NAMES[rest]}"


def gap(key: str, value: float, reference: float) -> float:
    """Panel gap: relative for norm ratios (they span decades), absolute for cosines."""
    if key.endswith("ratio"):
        return abs(value / reference - 1.0)
    return abs(value - reference)


# ------------------------------------------------------------------------------------ options


def _int_list(text: str, option: str, minimum: int = 0) -> list[int]:
    if text.strip().lower() in ("", "none"):
        return []
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise fail(option, "comma-separated integers", text) from None
        out.append(check_int(option, value, minimum=minimum))
    return out


def _float_list(text: str, option: str) -> list[float]:
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise fail(option, "comma-separated numbers", text) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise fail(option, "comma-separated finite numbers", text)
    return values


def _int(text: str, option: str, minimum: int) -> int:
    try:
        value = float(text)
    except ValueError:
        raise fail(option, f"an integer >= {minimum}", text) from None
    return check_int(option, value, minimum=minimum)


def _float(text: str, option: str) -> float:
    try:
        return check_finite(option, float(text))
    except ValueError:
        raise fail(option, "a finite number", text) from None


def _overrides(opts: dict[str, Any]) -> dict[str, Any]:
    """Experiment keys from the command-line options given (each checked with its flag's name)."""
    out: dict[str, Any] = {}
    if opts["step"] is not None:
        parse_step(opts["step"])
        out["step"] = opts["step"]
    if opts["longtail"] is not None:
        parse_longtail(opts["longtail"])
        out["longtail"] = opts["longtail"]
    if opts["counts"] is not None:
        out["counts"] = [int(c) for c in parse_counts(opts["counts"])]
    ints = {"n_min": 1, "d": 1, "epochs": 1, "batch_size": 0, "threads": 1, "log_every": 1}
    for key, minimum in ints.items():
        if opts[key] is not None:
            out[key] = _int(opts[key], "--" + key.replace("_", "-"), minimum)
    if "threads" in out:
        check_threads("--threads", out["threads"])
    for key in ("lr", "momentum", "weight_decay", "lr_decay", "init_std", "path_tol"):
        if opts[key] is not None:
            out[key] = _float(opts[key], "--" + key.replace("_", "-"))
    if out.get("weight_decay", 0.0) < 0:
        raise fail("--weight-decay", "a number >= 0", opts["weight_decay"])
    if opts["loss"]:
        out["losses"] = [name.strip() for item in opts["loss"] for name in item.split(",") if name.strip()]
        if not out["losses"]:
            raise fail("--loss", "one or more loss names", opts["loss"])
    if opts["gamma_grid"] is not None:
        parse_grid(opts["gamma_grid"])
        out["gamma_grid"] = opts["gamma_grid"]
    if opts["hyper"]:
        out["hyper"] = parse_hyper(opts["hyper"])
    if opts["milestones"] is not None:
        out["milestones"] = _int_list(opts["milestones"], "--milestones", minimum=1)
    if opts["seeds"] is not None:
        out["seeds"] = _int_list(opts["seeds"], "--seeds")
        if not out["seeds"]:
            raise fail("--seeds", "one or more comma-separated seeds >= 0", opts["seeds"])
    if opts["path_lams"] is not None:
        out["path_lams"] = _float_list(opts["path_lams"], "--path-lams")
    for key in ("dtype", "device"):
        if opts[key] is not None:
            out[key] = opts[key]
    return out


def build_experiment(config: Path | None, opts: dict[str, Any]) -> UFMExperiment:
    """The experiment: the TOML file (if any) with the command-line options on top."""
    data: dict[str, Any] = {}
    if config is not None:
        if not config.is_file():
            raise fail("--config", "an existing TOML file", str(config))
        data = read_toml(config)
    over = _overrides(opts)
    if any(key in over for key in ("step", "longtail", "counts")):
        for key in ("step", "longtail", "counts"):
            data.pop(key, None)
    data.update(over)
    grid = data.get("gamma_grid")
    if grid is not None and not isinstance(grid, (str, list, tuple)):
        raise fail("gamma_grid", "a list of numbers or a 'START:STOP:NUM' string, e.g. \"-1.5:1.5:13\"", grid)
    exp = from_dict(UFMExperiment, data)  # unknown keys and wrong types first, e.g. a [ufm] table
    if not any(key in data for key in ("step", "longtail", "counts")):
        raise InputError("give a class profile: --step, --longtail or --counts (or --config FILE); got none.")
    try:
        return exp.validate()
    except InputError as err:
        raise _as_flag_error(err, over) from None


def _as_flag_error(err: InputError, over: dict[str, Any]) -> InputError:
    """An experiment error about a setting given on the command line, named by its flag:
    "`lr` must be ..." becomes "`--lr` must be ..." (a setting from --config keeps its key)."""
    flags = {key: "--" + key.replace("_", "-") for key in over}
    flags.update({name: f"--hyper {name}" for name in over.get("hyper", {})})
    if "losses" in over:
        flags.update(loss="--loss", losses="--loss")
    return renamed(err, flags)


# --------------------------------------------------------------------------------- comparisons


def _group_key(cfg: UFMConfig, param: str | None) -> tuple[str, float | None]:
    return cfg.loss, (None if param is None else float(cfg.full_hyper()[param]))


def _mean_std(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    keys = [*PANEL_KEYS, "cos_WH", "dist_W", "dist_H", "dist_M", "nc1", "grad_rel", "train_acc"]
    mean, std = {}, {}
    for key in keys:
        v = np.array([r[key] for r in rows], dtype=float)
        v = v[np.isfinite(v)]  # NaN where a group has one class, or a run diverged
        mean[key] = float(v.mean()) if v.size else float("nan")
        # the sample std over seeds (ddof = 1, as summary.csv's), undefined for one seed
        std[key] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return mean, std


def compare(exp: UFMExperiment, result: UFMResult, tol: float) -> dict[str, Any]:
    """Per loss: theory, UFM (mean over seeds) and minimiser summaries per grid value, and gaps.

    Per panel, ``gaps`` holds the largest UFM-theory gap over the compared grid values
    (``ufm_vs_theory``, ``at``) and its two parts *at that same value*: ``optimisation`` (UFM vs
    the exact minimiser at the run's weight decay) and ``regularisation`` (that minimiser vs the
    ``lam -> 0`` limit). The largest of each part over the grid, wherever it is, is kept
    separately (``largest_optimisation``, ``largest_regularisation``: ``{"value", "at"}``).

    Without weight decay there is no minimiser (``minimiser`` is None, the parts are None).
    Where the minimiser is ``W = H = 0`` (too much weight decay) the geometry is undefined:
    the minimiser's and the UFM's panels are NaN there and listed in ``zero_minimiser_at``;
    minimisers that are not certified global are listed in ``not_global_at``.
    """
    counts, groups = result.class_counts, result.groups
    finals = result.final_rows()
    lam = float(exp.weight_decay)
    out: dict[str, Any] = {}
    for loss in dict.fromkeys(c.loss for c in result.configs):
        param = exp.family_param(loss)
        members: dict[float | None, list[int]] = {}
        for b, cfg in enumerate(result.configs):
            if cfg.loss == loss:
                members.setdefault(_group_key(cfg, param)[1], []).append(b)
        points = []
        for value, idx in members.items():
            cfg = result.configs[idx[0]]
            ufm_mean, ufm_std = _mean_std([finals[b] for b in idx])
            minimum = None
            if lam > 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", LowRankWarning)  # the command prints a note
                    minimum = minimize_ufm(cfg, counts, result.d, tol=tol, groups=groups)
                if minimum.zero:
                    # GD heads to 0 as well: what it shows is the shape of vanishing noise.
                    for key in SCALE_FREE_COLUMNS:
                        ufm_mean[key] = ufm_std[key] = float("nan")
            points.append(
                {
                    "value": value,
                    "configs": idx,
                    "diverged": sum(not finals[b]["finite"] for b in idx),
                    "theory": result.theory[idx[0]].summary,
                    "ufm": ufm_mean,
                    "ufm_std": ufm_std,
                    "minimiser": None if minimum is None else _minimum_dict(minimum),
                }
            )
        selected = [p for p in points if p["value"] is None or p["value"] >= GAP_FROM]
        panels = {}
        for key in PANEL_KEYS:
            nan = float("nan")
            total = [gap(key, p["ufm"][key], p["theory"][key]) for p in selected]
            opt = [
                nan if p["minimiser"] is None else gap(key, p["ufm"][key], p["minimiser"]["metrics"][key])
                for p in selected
            ]
            reg = [
                nan if p["minimiser"] is None else gap(key, p["minimiser"]["metrics"][key], p["theory"][key])
                for p in selected
            ]
            i = _nanargmax(total)
            panels[key] = {
                "ufm_vs_theory": None if i is None else total[i],
                "at": None if i is None else selected[i]["value"],
                "optimisation": None if i is None else _finite_or_none(opt[i]),
                "regularisation": None if i is None else _finite_or_none(reg[i]),
                "largest_optimisation": _largest(opt, selected),
                "largest_regularisation": _largest(reg, selected),
            }
        minimised = [p for p in points if p["minimiser"] is not None]
        out[loss] = {
            "param": param,
            "points": points,
            "gap_filter": f"{param} >= {GAP_FROM:g}" if param else "all",
            "gaps": panels,
            "zero_minimiser_at": [p["value"] for p in minimised if p["minimiser"]["zero"]],
            "not_global_at": [p["value"] for p in minimised if not p["minimiser"]["is_global"]],
        }
    return out


def _nanargmax(values: Sequence[float]) -> int | None:
    arr = np.asarray(values, dtype=float)
    return None if arr.size == 0 or np.all(np.isnan(arr)) else int(np.nanargmax(arr))


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _largest(values: Sequence[float], points: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    i = _nanargmax(values)
    return None if i is None else {"value": float(values[i]), "at": points[i]["value"]}


def _nanmax(values: Sequence[float]) -> float | None:
    arr = np.asarray(values, dtype=float)
    return None if arr.size == 0 or np.all(np.isnan(arr)) else float(np.nanmax(arr))


def _minimum_dict(m: UFMMinimum) -> dict[str, Any]:
    return {
        "lam": m.lam,
        "objective": m.objective,
        "grad_rel": m.grad_rel,
        "certificate": m.certificate,
        "converged": m.converged,
        "is_global": m.is_global,
        "zero": m.zero,
        "iterations": m.iterations,
        "metrics": m.metrics,
    }


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    v = float(v)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.2e}"
    return f"{v:.4f}"


_SHORT = {"ratio": "ratio", "cos_maj_maj": "maj-maj", "cos_min_min": "min-min", "cos_maj_min": "maj-min"}


def _short(key: str) -> str:
    row, _, rest = key.partition("_")
    return f"{row} {_SHORT.get(rest, rest)}"


def gap_table(loss: str, entry: dict[str, Any], lam: float) -> Table:
    """Per panel: largest UFM-theory gap, where it is, and its split there."""
    param = entry["param"] or ""
    table = Table(title=f"{loss}: largest gap to theory over {entry['gap_filter']}")
    table.add_column("panel", no_wrap=True)
    table.add_column("UFM - theory", justify="right", no_wrap=True)
    table.add_column(f"at {param}".strip(), justify="right", no_wrap=True)
    table.add_column("optimisation", justify="right", no_wrap=True)
    table.add_column("regularisation", justify="right", no_wrap=True)
    for key, g in entry["gaps"].items():
        at = "" if g["at"] is None else f"{g['at']:g}"
        table.add_row(
            panel_label(key), _fmt(g["ufm_vs_theory"]), at, _fmt(g["optimisation"]), _fmt(g["regularisation"])
        )
    where = f"at the same {param}" if param else "for the same configuration"
    if lam > 0:
        split = (
            f"split {where}: optimisation = GD vs the exact minimiser at lam = {lam:g} (L-BFGS); "
            "regularisation = that minimiser vs the lam -> 0 limit"
        )
    else:
        split = "no split: without weight decay there is no regularised minimiser"
    blank = any(
        g[col] is None
        for g in entry["gaps"].values()
        for col in ("ufm_vs_theory", "optimisation", "regularisation")
    )
    table.caption = f"{split}. Ratios: |a/b - 1|; cosines: |a - b|." + (
        " – = undefined (see the notes)." if blank else ""
    )
    return table


def _g(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{float(v):.3g}"


def path_table(loss: str, entry: dict[str, Any], shown: int = 5) -> Table:
    """Rows = panels and Gram distances; columns = some lams of the path and the trend fit."""
    lams = entry["lams"]
    m = min(shown, len(lams))
    cols = sorted({round(j * (len(lams) - 1) / max(m - 1, 1)) for j in range(m)})
    table = Table(
        title=f"{loss}: exact minimiser vs the lam -> 0 limit, largest gap over {entry['gap_filter']}"
    )
    table.add_column("panel", no_wrap=True)
    for j in cols:
        table.add_column(f"{lams[j]:.0e}", justify="right", no_wrap=True)
    for col in ("fit a", "fit b", "0.01 at"):
        table.add_column(col, justify="right", no_wrap=True)
    for key, row in entry["panels"].items():
        t = row["trend"]
        v = None if t is None else t["log10_lam_for_0.01"]
        last = row["max_gap"][-1]
        if last is not None and last <= 0.01:
            at = "reached"
        else:
            at = "–" if v is None or not math.isfinite(v) else f"1e{v:.0f}"
        label = _short(key).replace("dist_", "d_") + ("" if row["monotone"] else " (!)")
        table.add_row(
            label,
            *(_g(row["max_gap"][j]) for j in cols),
            "–" if t is None else _g(t["a"]),
            "–" if t is None else _g(t["b"]),
            at,
        )
    table.caption = (
        f"fit over the {entry['fit_points']} smallest lams: gap ≈ a + b/log(1/lam); a = extrapolated gap at "
        "lam -> 0, '0.01 at' = lam where the fit reaches 0.01. Ratios |a/b - 1|, cosines |a - b|, "
        "d_* normalised-Gram distances; (!) = not monotone in lam. All lams: summary.json, and path.csv "
        "(whose gap_* columns are signed differences value - theory, ratios included)."
    )
    return table


def _theory_curve(
    base: UFMConfig, param: str, xs: Sequence[float], counts: np.ndarray, groups: Any
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """The closed-form summaries on a fine grid spanning ``xs`` (the figure's black curve)."""
    dense = np.linspace(min(xs), max(xs), THEORY_POINTS) if len(xs) > 1 else np.asarray(xs, dtype=float)
    theory = []
    for v in dense:
        cfg = UFMConfig(base.loss, {**dict(base.hyper), param: float(v)})
        theory.append(predict(cfg.build_loss(counts), counts, groups).summary)
    return dense, theory


def write_figures(out: Path, exp: UFMExperiment, result: UFMResult, comparison: dict[str, Any]) -> list[Path]:
    from ..report.figures import geometry_vs_gamma_figure, save_figure

    written = []
    k = int(result.class_counts.size)
    for loss, entry in comparison.items():
        param = entry["param"]
        if param is None:
            continue
        xs = [p["value"] for p in entry["points"]]
        base = next(c for c in result.configs if c.loss == loss)
        dense, theory = _theory_curve(base, param, xs, result.class_counts, result.groups)
        lam = base.lam
        seeds = len(exp.seeds)
        ufm_label = f"UFM, GD {exp.epochs} epochs, lam={lam:g}" + (
            f" (mean ± std of {seeds} seeds)" if seeds > 1 else ""
        )
        markers = {ufm_label: (xs, [p["ufm"] for p in entry["points"]])}
        if all(p["minimiser"] is not None for p in entry["points"]):
            markers[f"exact minimiser at lam={lam:g} (L-BFGS)"] = (
                xs,
                [p["minimiser"]["metrics"] for p in entry["points"]],
            )
        fig = geometry_vs_gamma_figure(
            dense,
            theory,
            k,
            markers=markers,
            marker_err={ufm_label: [p["ufm_std"] for p in entry["points"]]} if seeds > 1 else None,
            title=f"UFM vs theory: {loss}, {exp.describe()}, d={exp.d}",
            xlabel=param,
        )
        written.append(save_figure(fig, out / f"ufm_{loss}.png"))
    return written


# --------------------------------------------------------------------------------------- path


def run_paths(exp: UFMExperiment, configs: Sequence[UFMConfig], progress: Any = None) -> list[PathResult]:
    """One regularisation path per distinct (loss, hyperparameters) (seeds do not matter)."""
    seen: dict[tuple, UFMConfig] = {}
    for c in configs:
        seen.setdefault((c.loss, tuple(sorted(c.full_hyper().items()))), c)
    counts, groups = exp.class_counts(), exp.groups()
    paths = []
    for i, cfg in enumerate(seen.values()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LowRankWarning)  # the command prints a note
            paths.append(regularization_path(cfg, counts, exp.lams(), exp.d, tol=exp.path_tol, groups=groups))
        if progress is not None:
            progress(i + 1, len(seen))
    return paths


def path_summary(exp: UFMExperiment, paths: Sequence[PathResult]) -> dict[str, Any]:
    """Per loss and panel: the largest minimiser-vs-theory gap at each lam, and its trend fit."""
    from ..ufm import fit_log_trend

    lams = exp.lams()
    # Fit the asymptotic regime only: the smallest half of the grid (at least 3 points).
    fit_points = min(len(lams), max(3, len(lams) // 2 + 1))
    out: dict[str, Any] = {}
    for loss in dict.fromkeys(p.config.loss for p in paths):
        param = exp.family_param(loss)
        mine = [p for p in paths if p.config.loss == loss]
        chosen = [p for p in mine if param is None or p.config.full_hyper()[param] >= GAP_FROM]
        rows = {}
        for key in (*PANEL_KEYS, "dist_W", "dist_H", "dist_M"):
            per_lam = []
            for j in range(len(lams)):
                if key.startswith("dist_"):
                    vals = [p.rows[j][key] for p in chosen]
                else:
                    vals = [gap(key, p.rows[j][key], p.theory.summary[key]) for p in chosen]
                per_lam.append(_nanmax(vals))
            finite = [(lam, v) for lam, v in zip(lams, per_lam, strict=True) if v is not None]
            trend = (
                fit_log_trend([f[0] for f in finite], [f[1] for f in finite], last=fit_points)
                if len(finite) >= 2
                else None
            )
            monotone = all(
                b <= a * (1 + 1e-9) + 1e-15
                for a, b in itertools.pairwise(per_lam)
                if a is not None and b is not None
            )
            rows[key] = {
                "max_gap": per_lam,
                "monotone": monotone,
                "trend": None
                if trend is None
                else {
                    "a": trend.a,
                    "b": trend.b,
                    "rms": trend.rms,
                    "log10_lam_for_0.01": trend.log10_lam_for(0.01),
                },
            }
        out[loss] = {
            "param": param,
            "gap_filter": f"{param} >= {GAP_FROM:g}" if param else "all",
            "lams": lams,
            "fit_points": fit_points,
            "panels": rows,
            "all_converged": all(r["converged"] for p in chosen for r in p.rows),
            "max_certificate": max(r["certificate"] for p in chosen for r in p.rows) if chosen else None,
            # Over every path of the loss (not only the compared range): {param value, lam}.
            "not_global": [_path_point(p, param, r) for p in mine for r in p.rows if not r["is_global"]],
            "zero": [_path_point(p, param, r) for p in mine for r in p.rows if r["zero"]],
        }
    return out


def _path_point(p: PathResult, param: str | None, row: dict[str, Any]) -> dict[str, Any]:
    return {"value": None if param is None else p.config.full_hyper()[param], "lam": row["lam"]}


def write_path_figures(out: Path, exp: UFMExperiment, paths: Sequence[PathResult]) -> list[Path]:
    from ..report.figures import geometry_vs_gamma_figure, save_figure

    written = []
    lams = exp.lams()
    show = sorted({0, len(lams) // 2, len(lams) - 1})
    for loss in dict.fromkeys(p.config.loss for p in paths):
        param = exp.family_param(loss)
        if param is None:
            continue
        chosen = [p for p in paths if p.config.loss == loss]
        xs = [p.config.full_hyper()[param] for p in chosen]
        markers = {f"exact minimiser, lam={lams[j]:.0e}": (xs, [p.rows[j] for p in chosen]) for j in show}
        dense, theory = _theory_curve(chosen[0].config, param, xs, exp.class_counts(), exp.groups())
        fig = geometry_vs_gamma_figure(
            dense,
            theory,
            int(exp.class_counts().size),
            markers=markers,
            title=f"regularisation path: {loss}, {exp.describe()} (theory = lam -> 0 limit)",
            xlabel=param,
        )
        written.append(save_figure(fig, out / f"path_{loss}.png"))
    return written


# ---------------------------------------------------------------------------------- command


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=quiet or not err_console.is_terminal,
    )


@app.command("ufm")
def ufm_command(
    config: Path | None = typer.Option(
        None,
        "--config",
        help="A TOML experiment (e.g. experiments/ufm_paper.toml; keys = the long options with "
        "underscores). Options given on the command line override its keys.",
    ),
    step: str | None = typer.Option(
        None,
        "--step",
        help="(R, rho)-STEP profile 'k=10,R=10,rho=0.5': rho*k minority classes of n_min samples, "
        "the others R*n_min (majorities first). R = n_max/n_min >= 1.",
    ),
    longtail: str | None = typer.Option(
        None,
        "--longtail",
        help="Exponential long tail 'k=10,R=100' with n_min samples in the smallest class.",
    ),
    counts: str | None = typer.Option(None, "--counts", help="Explicit class counts '50,50,5,5'."),
    n_min: str | None = typer.Option(None, "--n-min", help="Samples in the smallest class (default: 5)."),
    d: str | None = typer.Option(None, "--d", help="Embedding dimension (default: 20)."),
    loss: list[str] | None = typer.Option(
        None,
        "--loss",
        help="Loss(es), repeat or comma-separate (e.g. cdt,ldt) (default: ldt). ParametricCE members only.",
    ),
    gamma_grid: str | None = typer.Option(
        None,
        "--gamma-grid",
        help="Sweep each loss's family parameter (gamma; tau for la): START:STOP:NUM (inclusive, "
        "e.g. -1.5:1.5:13) or a comma-separated list.",
    ),
    hyper: list[str] | None = typer.Option(
        None, "--hyper", help="A fixed hyperparameter name=value, repeatable (e.g. --hyper normalize=0)."
    ),
    epochs: str | None = typer.Option(None, "--epochs", help="Epochs (default: 6000)."),
    lr: str | None = typer.Option(None, "--lr", help="Learning rate (default: 0.1)."),
    momentum: str | None = typer.Option(None, "--momentum", help="Momentum (default: 0.9); 0 = plain GD."),
    weight_decay: str | None = typer.Option(
        None,
        "--weight-decay",
        help="lam >= 0 on W and H (default: 5e-4): F = mean loss + lam/2 (|W|² + |H|²). 0 = plain GD on "
        "the loss (no regularised minimiser, no split; --path then needs --path-lams).",
    ),
    milestones: str | None = typer.Option(
        None,
        "--milestones",
        help="Epochs where lr *= --lr-decay, e.g. 2000,4000 (default: 2000,4000); 'none' for none.",
    ),
    lr_decay: str | None = typer.Option(
        None, "--lr-decay", help="lr multiplier at each milestone (default: 0.1)."
    ),
    batch_size: str | None = typer.Option(
        None, "--batch-size", help="Mini-batch size; 0 = full batch (default: 0)."
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Comma-separated seeds, one run each (default: 0)."
    ),
    init_std: str | None = typer.Option(
        None, "--init-std", help="W, H start i.i.d. N(0, s²) (default: 0.1)."
    ),
    dtype: str | None = typer.Option(None, "--dtype", help="float64 or float32 (default: float64)."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda[:i] (default: cpu)."),
    threads: str | None = typer.Option(
        None,
        "--threads",
        help="CPU intra-op threads, at most 1024 (default: 1: bitwise-reproducible batches, no "
        "OpenMP stalls).",
    ),
    log_every: str | None = typer.Option(
        None, "--log-every", help="Epochs between table rows (default: 100)."
    ),
    path: bool = typer.Option(
        False,
        "--path",
        help="Also follow the exact minimiser along a decreasing lam grid (regularisation path).",
    ),
    path_lams: str | None = typer.Option(
        None,
        "--path-lams",
        help="Comma-separated decreasing lams for --path (default: weight decay x 10^(0,-2,..,-16)).",
    ),
    path_tol: str | None = typer.Option(
        None, "--path-tol", help="Relative gradient tolerance of L-BFGS (default: 1e-9)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for ufm.csv (one row per config per logged epoch), ufm_<loss>.png (the paper's "
        "figure, for a loss swept over a gamma grid), summary.json, config.toml (+ path.csv, path_<loss>.png with --path). Files of these "
        "names left by an earlier run and not rewritten are removed; other files are kept.",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Simulate the regularised UFM for many losses/settings at once and compare with the theory.

    All configurations (loss x grid value x seed) train in one batched tensor program. Prints, per panel of the paper's figure, the largest gap between the UFM and the theory for gamma >= -0.5 and, at that gamma, its split into optimisation (GD vs the exact minimiser at the same weight decay) and regularisation (that minimiser vs the lam -> 0 limit). R = n_max/n_min >= 1. The theory assumes d >= k. Exit status: 0 done, 1 every configuration diverged (lower --lr), 2 bad input.
    """
    opts = dict(
        step=step,
        longtail=longtail,
        counts=counts,
        n_min=n_min,
        d=d,
        loss=loss,
        gamma_grid=gamma_grid,
        hyper=hyper,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        milestones=milestones,
        lr_decay=lr_decay,
        batch_size=batch_size,
        seeds=seeds,
        init_std=init_std,
        dtype=dtype,
        device=device,
        threads=threads,
        log_every=log_every,
        path_lams=path_lams,
        path_tol=path_tol,
    )
    exp = build_experiment(config, opts)
    if path and not exp.path_lams and not 0 < exp.weight_decay < 1:
        raise fail(
            "--weight-decay" if weight_decay is not None else "weight_decay",
            "a number in (0, 1) with --path (the default path is weight decay x 10^(0,-2,..,-16)), "
            "or give --path-lams",
            exp.weight_decay,
        )
    if out is not None:
        writable_folder("--out", out)
        _check_ufm_folder(out)
    con = wide_console()  # tables keep their numbers when piped (80 columns)
    configs = exp.configs()
    k = int(exp.class_counts().size)
    con.print(
        f"cegeo ufm: {len(configs)} configuration(s) on {exp.describe()} (n = {int(exp.class_counts().sum())}), "
        f"d = {exp.d}, {exp.epochs} epochs, lr {exp.lr:g}, momentum {exp.momentum:g}, weight decay "
        f"{exp.weight_decay:g}, {'full batch' if not exp.batch_size else f'batch {exp.batch_size}'}, "
        f"{exp.dtype} on {exp.device}",
        soft_wrap=True,
    )
    t0 = time.perf_counter()
    with _progress(quiet) as bar:
        task = bar.add_task("UFM epochs", total=exp.epochs)
        result = exp.run(progress=lambda done, total: bar.update(task, completed=done))
    sim_s = time.perf_counter() - t0
    con.print(f"trained in {result.train_time_s:.2f} s ({sim_s:.2f} s with logging)")
    comparison = compare(exp, result, exp.path_tol)
    for name, entry in comparison.items():
        con.print(gap_table(name, entry, exp.weight_decay))
    finals = result.final_rows()
    diverged = [b for b, row in enumerate(finals) if not row["finite"]]
    all_diverged = len(diverged) == len(configs)
    notes = _run_notes(exp, configs, comparison, diverged, k)
    paths: list[PathResult] = []
    summary_path: dict[str, Any] | None = None
    if path:
        with _progress(quiet) as bar:
            task = bar.add_task("regularisation paths", total=None)
            paths = run_paths(exp, configs, lambda i, total: bar.update(task, completed=i, total=total))
        summary_path = path_summary(exp, paths)
        for name, entry in summary_path.items():
            con.print(path_table(name, entry))
            notes += _path_notes(name, entry, exp.path_tol)
    for line in notes:
        con.print(f"note: {line}", soft_wrap=True)
    if out is not None:
        # Until summary.json is written, the marker keeps the folder cegeo ufm's: a run killed
        # while writing (ufm.csv written, summary.json not) can be run again into it.
        out.mkdir(parents=True, exist_ok=True)
        (out / _WRITING).touch()
        remove_temporaries(out, output_names())
        result.to_csv(out / "ufm.csv")
        figures = write_figures(out, exp, result, comparison)
        write_text(out / "config.toml", to_toml_text(exp))
        summary = {
            "experiment": to_dict(exp),
            "profile": exp.describe(),
            "class_counts": result.class_counts,
            "groups": result.groups.as_dict(),
            "objective": "F = mean_i omega_{y_i} loss_i / mean omega + weight_decay/2 (||W||^2 + ||H||^2)",
            "gap_definition": "norm ratios |a/b - 1|, cosines |a - b|",
            "train_time_s": result.train_time_s,
            "wall_time_s": sim_s,
            "configs": [{**row, "theory": result.theory[b].summary} for b, row in enumerate(finals)],
            "diverged": diverged,
            "comparison": comparison,
            "path": summary_path,
            "notes": notes,
            "environment": environment_info(),
        }
        write_json(out / "summary.json", summary)
        written = [out / "ufm.csv", out / "summary.json", out / "config.toml", *figures]
        if paths:
            write_rows_csv(out / "path.csv", [row for p in paths for row in p.rows])
            written += [out / "path.csv", *write_path_figures(out, exp, paths)]
        con.print("wrote " + ", ".join(str(p) for p in written), soft_wrap=True)
        removed = remove_stale_outputs(out, written)
        if removed:
            con.print("removed from an earlier run: " + ", ".join(p.name for p in removed), soft_wrap=True)
        (out / _WRITING).unlink(missing_ok=True)
    if all_diverged:
        err_console.print(
            f"error: {_diverged_line(exp, configs, diverged)}; nothing to compare (exit status 1).",
            soft_wrap=True,
        )
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------ notes


def _config_list(exp: UFMExperiment, configs: Sequence[UFMConfig], idx: Sequence[int]) -> str:
    """The named configurations, compactly: ``cdt gamma=-3,-2 (seed 1); ldt gamma=1.5``."""
    by_loss: dict[str, dict[str, list[int]]] = {}
    for b in idx:
        c = configs[b]
        param = exp.family_param(c.loss)
        value = "" if param is None else f"{c.full_hyper()[param]:g}"
        by_loss.setdefault(c.loss, {}).setdefault(value, []).append(c.seed)
    parts = []
    for loss, values in by_loss.items():
        items = [
            value
            + (f" (seed{'s' * (len(ss) > 1)} {','.join(map(str, ss))})" if len(ss) < len(exp.seeds) else "")
            for value, ss in values.items()
        ]
        param = exp.family_param(loss)
        parts.append(f"{loss} {param}=" + ",".join(items) if param else loss + items[0])
    return "; ".join(parts)


def _diverged_line(exp: UFMExperiment, configs: Sequence[UFMConfig], diverged: Sequence[int]) -> str:
    # a step that scales the weights by (1 - lr * weight_decay) <= 0 diverges by the decay alone
    # (lowering lr is still a cure, but the weight decay is the setting that is off)
    fix = (
        f"lower --weight-decay (now {exp.weight_decay:g}; lr x weight decay = "
        f"{exp.lr * exp.weight_decay:g} >= 1 makes the decay itself unstable)"
        if exp.weight_decay >= 1 and exp.lr * exp.weight_decay >= 1
        else f"lower --lr (now {exp.lr:g})"
    )
    return f"{len(diverged)}/{len(configs)} configurations diverged ({_config_list(exp, configs, diverged)}); {fix}"


def _values(values: Sequence[Any], param: str | None) -> str:
    if param is None:
        return ""
    return f" at {param} = " + ", ".join(f"{v:g}" for v in values)


def _run_notes(
    exp: UFMExperiment,
    configs: Sequence[UFMConfig],
    comparison: dict[str, Any],
    diverged: Sequence[int],
    k: int,
) -> list[str]:
    """What the tables cannot show: divergence, d < k, zero and uncertified minimisers."""
    notes = []
    if diverged and len(diverged) < len(configs):
        notes.append(_diverged_line(exp, configs, diverged) + "; they are left out of the means (–)")
    if exp.d < k:
        notes.append(
            f"d = {exp.d} < k = {k}: THEORY.md §4 assumes d >= k, so the theory is not this model's "
            "lam -> 0 limit, and the exact minimiser may be a local optimum (no global certificate)"
        )
    if exp.weight_decay == 0:
        notes.append("weight decay 0: no regularised minimiser, so the gap is not split (–)")
    for loss, entry in comparison.items():
        param = entry["param"]
        if entry["zero_minimiser_at"]:
            notes.append(
                f"{loss}{_values(entry['zero_minimiser_at'], param)}: the exact minimiser at weight decay "
                f"{exp.weight_decay:g} is W = H = 0 (certified: ||grad L(0)||_2 <= lam), so its geometry "
                "and that of the runs, which shrink to 0 too, is undefined (–); lower --weight-decay"
            )
        uncertified = entry["not_global_at"]  # a zero minimiser is certified: never in this list
        if uncertified:
            why = "d < k" if exp.d < k else f"not converged to --path-tol {exp.path_tol:g}"
            notes.append(
                f"{loss}{_values(uncertified, param)}: the exact minimiser is not certified global "
                f"({why}); the optimisation/regularisation split there may be against a local optimum"
            )
    return notes


def _path_notes(loss: str, entry: dict[str, Any], tol: float) -> list[str]:
    notes = []
    if not entry["all_converged"]:
        notes.append(f"some {loss} path points stopped above the tolerance {tol:g}")
    zero = entry["zero"]
    if zero:
        notes.append(
            f"{loss} path: at {_points(zero, entry['param'])} the minimiser is W = H = 0 (lam too large); "
            "no geometry there (–)"
        )
    uncertified = entry["not_global"]
    if uncertified:
        notes.append(
            f"{loss} path: {len(uncertified)} point(s) not certified global ({_points(uncertified, entry['param'])})"
        )
    return notes


def _points(points: Sequence[dict[str, Any]], param: str | None) -> str:
    shown = [
        ("" if param is None else f"{param}={p['value']:g} ") + f"lam={p['lam']:.0e}" for p in points[:6]
    ]
    return ", ".join(shown) + (f", ... ({len(points)} in all)" if len(points) > 6 else "")


# ------------------------------------------------------------------------------ output folder


def output_names() -> set[str]:
    """Every file name ``cegeo ufm --out`` can write (figures for every registered loss)."""
    from ..losses import list_losses

    names = {"ufm.csv", "path.csv", "summary.json", "config.toml"}
    for loss in list_losses():
        names |= {f"ufm_{loss}.png", f"path_{loss}.png"}
    return names


#: Present in ``--out`` while cegeo ufm writes its outputs (a killed run leaves it behind).
_WRITING = ".cegeo-ufm-writing"


def _check_ufm_folder(out: Path) -> None:
    """``--out`` must be new, empty, or a folder cegeo ufm wrote (its summary.json, or the marker
    of a run killed while writing): its files are overwritten and stale ones removed, which must
    never hit a user's own files."""
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if not foreign or (out / _WRITING).is_file():
        return
    try:
        summary = read_json(out / "summary.json")
        ours = isinstance(summary, dict) and "experiment" in summary and "comparison" in summary
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise fail(
            "--out",
            "a new or empty folder, or one cegeo ufm wrote (with its summary.json)",
            described(f"{out}, which holds {foreign[0]!r}"),
        )


def remove_stale_outputs(out: Path, written: Sequence[Path]) -> list[Path]:
    """Remove this command's output files that this run did not write (from an earlier run).

    Only the exact names of :func:`output_names` are candidates, so a folder shared with other
    files keeps them; summary.json never describes a file that is not this run's.
    """
    keep = {Path(p).name for p in written}
    removed = []
    for name in sorted(output_names() - keep):
        target = out / name
        if target.is_file() and not target.is_symlink():
            target.unlink()
            removed.append(target)
    return removed
