"""``cegeo evaluate``: minority-first metrics of one split of a finished run folder."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from .._io import dumps_json
from ..data import class_index
from ..rebalance import RunFolder, evaluate_split
from . import app
from ._common import console


def _fmt(v: Any, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _class_label(c: int, names: list[str]) -> str:
    """``"1 (ok)"``, or ``"1"`` when the name is the index itself."""
    return str(c) if names[c] == str(c) else f"{c} ({names[c]})"


def print_evaluation(report: dict[str, Any], groups_labels: tuple[str, ...], title: str) -> None:
    """Per-class table, group recalls, headline metrics and the confusion matrix."""
    pc = report["per_class"]
    k = len(pc["support"])
    table = Table(title=title)
    for col in ("class", "group", "support", "recall", "precision", "F1", "false-pos. rate"):
        table.add_column(col, justify="right" if col not in ("group",) else "left")
    names = report.get("class_names") or [str(c) for c in range(k)]
    for c in range(k):
        table.add_row(
            _class_label(c, names),
            groups_labels[c],
            str(pc["support"][c]),
            _fmt(pc["recall"][c]),
            _fmt(pc["precision"][c]),
            _fmt(pc["f1"][c]),
            _fmt(pc["false_positive_rate"][c]),
        )
    console.print(table)

    groups = Table(title="group recall")
    groups.add_column("group")
    groups.add_column("classes")
    groups.add_column("recall", justify="right")
    for name, value in report["group_recall"].items():
        members = [str(c) for c in range(k) if groups_labels[c] == name]
        groups.add_row(name, ",".join(members) or "-", _fmt(value))
    console.print(groups)

    head = Table(title="summary", show_header=False)
    head.add_column("metric")
    head.add_column("value", justify="right")
    rows = [
        ("samples", str(report["n"])),
        ("accuracy", _fmt(report["accuracy"])),
        ("balanced accuracy", _fmt(report["balanced_accuracy"])),
        ("macro F1", _fmt(report["macro_f1"])),
        ("worst-class recall", _fmt(report["worst_class_recall"])),
        ("G-mean", _fmt(report["g_mean"])),
        ("minority recall", _fmt(report["minority_recall"])),
    ]
    if "false_alarm" in report:
        rows.append(
            (
                f"false-alarm rate (normal class {_class_label(report['normal_class'], names)})",
                _fmt(report["false_alarm"]),
            )
        )
    for row in rows:
        head.add_row(*row)
    console.print(head)
    for text in report.get("notes", []):  # a metric undefined on this split ("-" above)
        console.print(f"note: {text}")

    cm = Table(title="confusion matrix (row: true, column: predicted)")
    cm.add_column("true \\ pred", justify="right")
    for c in range(k):
        cm.add_column(str(c), justify="right")
    for c, row in enumerate(report["confusion_matrix"]):
        cm.add_row(str(c), *(str(v) for v in row))
    console.print(cm)


@app.command("evaluate")
def evaluate_command(
    run_dir: str = typer.Argument(
        ..., help="A finished run folder (with final.json and logits_<split>.npz)."
    ),
    split: str = typer.Option("test", "--split", help="Which split to evaluate: test or val."),
    normal_class: str | None = typer.Option(
        None,
        "--normal-class",
        help="The normal class ('no defect', 'healthy'), by name (e.g. ok) or index: also report "
        "its false-alarm rate (share of its samples predicted as any other class). Default: the "
        "run's own (data.normal_class), if it was trained with one.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
) -> None:
    """Per-class and group metrics of a run's raw predictions (argmax of the logits).

    Prints support, recall, precision, F1 and false-positive rate per class; the recall of each
    group (majority/minority or many/medium/few, from final.json); accuracy, balanced accuracy,
    macro F1, worst-class recall, G-mean; the false-alarm rate with --normal-class; and the
    confusion matrix. A split without a sample of the normal class reports its false-alarm
    rate as "-" (null in --json) with a note, as the trainer's summaries do.

    Example: cegeo evaluate runs/ce_s0 --split test --normal-class 0
    """
    run = RunFolder(run_dir)
    data = run.split(split)
    normal = (
        run.normal_class
        if normal_class is None
        else class_index("--normal-class", normal_class, run.class_names)
    )
    report = evaluate_split(data, normal_class=normal)
    report = {
        "run": str(run.path),
        "split": split,
        "class_names": list(run.class_names),
        "normal_class": normal,
        **report,
    }
    if as_json:
        typer.echo(dumps_json(report))
        return
    title = f"{run.path} · {split} split · loss {run.loss or '?'} · k = {run.num_classes}"
    print_evaluation(report, run.groups.labels, title)
