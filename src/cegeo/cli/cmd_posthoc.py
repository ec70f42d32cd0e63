"""``cegeo posthoc``: fit post-hoc rebalancers on a run's validation split, report them on test."""

from __future__ import annotations

from typing import Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from .._io import dumps_json
from .._validation import InputError, check_fraction, fail
from ..data import class_index
from ..rebalance import (
    SELECTION_METRICS,
    RunFolder,
    best_method,
    false_alarm_budget,
    list_rebalancers,
    parse_methods,
    run_posthoc,
    within_budget,
)
from . import app
from ._common import console, err_console, wide_console
from .cmd_evaluate import _class_label


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _signed(after: Any, before: Any) -> str:
    return "" if after is None or before is None else f"{after - before:+.3f}"


def _chosen(entry: dict[str, Any]) -> str:
    chosen = entry["chosen"]
    if entry["name"] == "operating_point":
        return f"p>={chosen['threshold']:.3g}"
    if entry["name"] == "lws":
        s = chosen["scales"]
        return f"s {min(s):.2g}..{max(s):.2g}"
    return ", ".join(f"{key}={value:g}" for key, value in chosen.items()) + (
        "*" if entry.get("search") else ""
    )


def print_posthoc(result: dict[str, Any]) -> None:
    """Raw vs each method on test, side by side (changes vs raw in the Δ columns)."""
    metric = result["metric"]
    normal = result["normal_class"]
    budget = false_alarm_budget(result)  # None without a normal class
    raw_val, raw = result["raw"]["val"], result["raw"]["test"]
    console.print(f"run {result['run']} · loss {result['loss'] or '?'} · test n = {raw['n']}")
    console.print(
        f"chosen on val for {metric} (* = tuned); 'val' = {metric} on val, 'val cv' = the same with each "
        "sample predicted by a fit on the other folds (> = the best by it, raw argmax included)"
        + (", 'val f.a.' = false-alarm rate on val" if normal is not None else "")
        + "; the rest on test"
    )
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("method", no_wrap=True)
    table.add_column("chosen", no_wrap=True)
    table.add_column("val", justify="right", no_wrap=True)
    table.add_column("val cv", justify="right", no_wrap=True)
    for label in ("bal.acc", "Δ", "minority", "Δ", "worst", "G-mean"):
        table.add_column(label, justify="right", no_wrap=True)
    if normal is not None:
        table.add_column("val f.a.", justify="right", no_wrap=True)  # what '>' is chosen within
        table.add_column("f.alarm", justify="right", no_wrap=True)

    # Raw argmax is a choice too (nothing fitted: its out-of-fold score is its 'val'): a method
    # that does not beat it on validation is not marked best, whatever its test numbers. With a
    # normal class only predictions within the false-alarm budget on validation compete.
    best = best_method(result)
    if best is None and within_budget(raw_val.get("false_alarm"), budget):
        best = "raw (argmax)"

    def row(name: str, chosen: str, val: Any, val_cv: Any, test: dict[str, Any], val_fa: Any = None) -> None:
        cells: list[str | Text] = [
            ("> " if name == best else "  ") + name,
            chosen,
            _fmt(val),
            _fmt(val_cv),
            _fmt(test["balanced_accuracy"]),
            _signed(test["balanced_accuracy"], raw["balanced_accuracy"]) if test is not raw else "",
            _fmt(test["minority_recall"]),
            _signed(test["minority_recall"], raw["minority_recall"]) if test is not raw else "",
            _fmt(test["worst_class_recall"]),
            _fmt(test["g_mean"]),
        ]
        if normal is not None:
            cells.append(_fmt(val_fa))
            fa = test.get("false_alarm")
            over = fa is not None and budget is not None and fa > budget
            # a row within budget keeps two trailing spaces (overflow="ignore": rich would strip
            # them), so its decimal point lines up with the "0.075 !" rows
            cells.append(_fmt(fa) + " !" if over else Text(_fmt(fa) + "  ", overflow="ignore"))
        table.add_row(*cells)

    row("raw (argmax)", "-", raw_val[metric], raw_val[metric], raw, raw_val.get("false_alarm"))
    for name in result["methods"]:
        entry = result["results"][name]
        val_fa = (entry.get("val") or {}).get("false_alarm")
        row(name, _chosen(entry), entry["val_score"], entry.get("val_score_cv"), entry["test"], val_fa)
    # Numbers must never be cut to "0.…": below 120 columns (140 with the false-alarm columns;
    # e.g. output piped to a file, where rich assumes 80) print at that width and let a narrow
    # terminal wrap the lines.
    wide_console(140 if normal is not None else 120).print(table)  # two false-alarm columns
    tests = [raw, *(result["results"][m]["test"] for m in result["methods"])]
    if budget is not None and any((t.get("false_alarm") or 0) > budget for t in tests):
        console.print(f"! = test false-alarm rate over the budget {budget:g} (--max-false-alarm)")
    if budget is not None:
        console.print(
            f"the > row is chosen among the predictions whose validation false-alarm rate is within the budget "
            f"{budget:g}" + ("" if best is not None else ": none is, so no row is marked")
        )
    op = result["results"].get("operating_point")
    if op is not None:
        console.print(
            f"operating point: normal class {_class_label(op['normal_class'], result['class_names'])}, "
            f"budget {op['max_false_alarm']:g}, threshold p_normal >= {op['chosen']['threshold']:.6g} "
            f"(log-odds {op['chosen']['log_odds_threshold']:.4g}; below it, the most likely other "
            "class)\n"
            f"  val:  false alarm {_fmt(op['val_false_alarm'], 4)} ({op['n_normal_val']} normal samples), "
            f"non-normal recall {_fmt(op['val_recall'], 4)}, detection {_fmt(op['val_detection'], 4)}\n"
            f"  test: false alarm {_fmt(op['test_false_alarm'], 4)}, non-normal recall "
            f"{_fmt(op['test_recall'], 4)}, detection {_fmt(op['test_detection'], 4)}"
        )
    for name, reason in result["skipped"].items():
        console.print(f"skipped {name}: {reason}")
    for text in result["warnings"]:
        err_console.print(f"warning: {text}", soft_wrap=True)  # on stderr, as every command's warnings


# allow_extra_args: what click would reject as "unexpected extra argument" reaches ctx.args, so
# the error can say how to give several methods (typer options take one value each:
# `--method posthoc_la lws` leaves `lws` over).
@app.command("posthoc", context_settings={"allow_extra_args": True})
def posthoc_command(
    ctx: typer.Context,
    run_dir: str = typer.Argument(..., help="A finished run folder (with final.json, logits_val/test.npz)."),
    method: list[str] = typer.Option(
        ["all"],
        "--method",
        "-m",
        help="'all' or rebalancer names (repeat the option or separate with commas): "
        + ", ".join(list_rebalancers())
        + ". With 'all', methods the run cannot support are skipped with the reason.",
    ),
    metric: str = typer.Option(
        "balanced_accuracy",
        "--metric",
        help="Selection metric for the hyperparameter search on validation: "
        + ", ".join(SELECTION_METRICS)
        + ".",
    ),
    normal_class: str | None = typer.Option(
        None,
        "--normal-class",
        help="The normal class, by name (e.g. ok) or index: adds false-alarm rates and enables "
        "operating_point. Default: the run's own (data.normal_class), if it was trained with one.",
    ),
    max_false_alarm: float | None = typer.Option(
        None,
        "--max-false-alarm",
        help="The false-alarm budget on validation, in [0, 1) (default 0.01; needs a normal class): "
        "operating_point's target, and only the methods (or raw argmax) within it on validation "
        "can be marked best.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print posthoc.json's content instead of tables."),
    no_write: bool = typer.Option(False, "--no-write", help="Do not write posthoc.json into the run folder."),
) -> None:
    """Fit post-hoc rebalancers on a run's validation split and compare them on test.

    Every method's hyperparameter is chosen on validation only (never on test); the table shows
    the test metrics before (raw argmax) and after each correction. Writes RUN_DIR/posthoc.json
    (atomically) unless --no-write.

    Example: cegeo posthoc runs/ce_s0 --method all --normal-class 0 --max-false-alarm 0.05
    """

    extra = list(ctx.args)
    if extra:
        names = set(list_rebalancers()) | {"all"}
        got = " ".join(extra)
        if all(part.strip() in names for item in extra for part in item.split(",") if part.strip()):
            raise InputError(
                f"`--method` takes one value per option: give several methods as --method posthoc_la,lws "
                f"or -m posthoc_la -m lws; got extra argument(s) {got!r}."
            )
        raise InputError(
            f"`RUN_DIR` must be one run folder (several methods: --method posthoc_la,lws or -m posthoc_la "
            f"-m lws); got extra argument(s) {got!r}."
        )
    # The options checked under their own names before the run folder is read.
    parse_methods(method, "--method")
    if metric not in SELECTION_METRICS:
        raise fail("--metric", "one of " + ", ".join(repr(m) for m in SELECTION_METRICS), metric)
    if max_false_alarm is not None:
        check_fraction("--max-false-alarm", max_false_alarm, low_open=False, high_open=True)
    folder = RunFolder(run_dir)
    if normal_class is not None:
        normal: int | None = class_index("--normal-class", normal_class, folder.class_names)
    else:
        normal = folder.normal_class
    if max_false_alarm is not None and normal is None:
        raise InputError(
            f"`--max-false-alarm` needs --normal-class; got --max-false-alarm {max_false_alarm}."
        )
    result = run_posthoc(
        folder,
        method,
        metric=metric,
        normal_class=normal,
        max_false_alarm=0.01 if max_false_alarm is None else max_false_alarm,
        write=not no_write,
    )
    if as_json:
        typer.echo(dumps_json(result))
        return
    print_posthoc(result)
    if not no_write:
        console.print(f"wrote {result['run']}/posthoc.json")
