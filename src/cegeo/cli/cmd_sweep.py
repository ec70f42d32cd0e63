"""``cegeo sweep``: run a grid of training runs (and a batched UFM block) into one sweep folder.

Examples::

    cegeo sweep experiments/demo.toml --out runs/demo --jobs 2
    cegeo sweep experiments/paper_figure.toml --out runs/paper \\
        --set mlp-mnist:data.source=idx:/data/mnist --set resnet18-cifar:data.source=cifar10:/data/cifar
    cegeo sweep experiments/paper_figure.toml --out runs/paper --list > jobs.txt   # for a scheduler
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table

from .._validation import InputError
from ..sweep import check_sources, expand, list_commands, load_sweep, run_sweep
from . import app
from ._common import wide_console
from .cmd_train import parse_options


def _pm(row: dict[str, Any], metric: str, digits: int = 3) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def print_summary(rows: list[dict[str, Any]]) -> None:
    """The summary rows as a table: mean ± std over seeds (test metrics, cost)."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    several = len({r["setup"] for r in rows}) > 1
    if several:
        table.add_column("setup", no_wrap=True)
    table.add_column("loss", no_wrap=True)
    table.add_column("runs", justify="right")
    table.add_column("test bal.acc", justify="right", no_wrap=True)
    table.add_column("minority recall", justify="right", no_wrap=True)
    table.add_column("worst class", justify="right", no_wrap=True)
    fa = any("test_false_alarm_mean" in r for r in rows)
    if fa:
        table.add_column("false alarm", justify="right", no_wrap=True)
    table.add_column("train s", justify="right", no_wrap=True)
    table.add_column("95% at epoch", justify="right", no_wrap=True)
    for r in rows:
        runs = f"{r['n_finished']}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else "")
        cells = [r["setup"]] if several else []
        cells += [
            r["label"],
            runs,
            _pm(r, "test_balanced_accuracy"),
            _pm(r, "test_minority_recall"),
            _pm(r, "test_worst_class_recall"),
        ]
        if fa:
            cells.append(_pm(r, "test_false_alarm"))
        # seconds to a precision that shows a fast run (0.02 s printed as 0.0 with one decimal)
        secs = r.get("train_time_s_mean")
        digits = 1 if secs is None or secs >= 10 else 2 if secs >= 1 else 3
        cells += [_pm(r, "train_time_s", digits), _pm(r, "epoch_to_95pct_val_bal_acc", 1)]
        table.add_row(*cells)
    wide_console().print(table)


@app.command("sweep")
def sweep_command(
    config_file: Path = typer.Argument(
        ..., help="The sweep TOML (see `cegeo.sweep`; an unknown key is an error)."
    ),
    out: Path | None = typer.Option(None, "--out", help="The sweep folder (default: runs/<config name>)."),
    jobs: int = typer.Option(
        1,
        "--jobs",
        help="Runs at a time: 1 = one after the other in this process; N > 1 = N worker processes "
        "with cores/N CPU threads each (GPUs shared round robin).",
    ),
    list_: bool = typer.Option(
        False,
        "--list",
        help="Write the per-run configs and print one `cegeo train` command per run (for a "
        "scheduler); train nothing.",
    ),
    set_: list[str] | None = typer.Option(
        None,
        "--set",
        help="Override a setting: KEY=VALUE for every run (e.g. optim.lr=0.05) or SETUP:KEY=VALUE "
        "for one setup (e.g. mlp-mnist:data.source=idx:/data/mnist). Repeatable.",
    ),
    only: str | None = typer.Option(
        None,
        "--only",
        help="Do only one part the sweep has: runs | ufm | posthoc (ufm leaves the run configs and "
        "run folders alone, so the --list lines may run in any order).",
    ),
) -> None:
    """Run a grid of losses x hyperparameters x seeds (x setups) as independent run folders.

    Finished runs are skipped on restart; a failing run writes error.json and the others go on
    (exit status 1 when a run failed or another process is training one: the same command
    retries them; 2 for bad input);
    summary.csv holds mean ± std over seeds and the cost of each loss. Imbalance ratio
    R = n_max/n_min >= 1.
    """
    sets = parse_options(set_, "--set")
    config = load_sweep(config_file, sets, param="CONFIG_FILE")
    target = out if out is not None else Path("runs") / config_file.stem
    text = config_file.read_text(encoding="utf-8")  # load_sweep read it: a UTF-8 file
    if list_:
        # The UFM line carries the --set options as typed, so it loads the very same sweep.
        for line in list_commands(config, target, text, str(config_file), sets=list(set_ or [])):
            typer.echo(line)
        try:
            check_sources(expand(config))
        except InputError as exc:  # the scheduler's machines may see other paths: a note, not an error
            typer.echo(f"note: {exc}", err=True)
        then = f"cegeo report {target}"
        if config.posthoc is not None:  # it needs the finished runs: after every line above
            args = ["cegeo", "sweep", str(config_file), "--out", str(target), "--only", "posthoc"]
            for item in set_ or []:
                args += ["--set", item]
            then = f"{shlex.join(args)}, then {then}"
        typer.echo(f"configs written to {target / 'configs'}; when the runs have finished: {then}", err=True)
        return
    out_console = wide_console()
    outcome = run_sweep(
        config,
        target,
        jobs=jobs,
        only=only,
        source_text=text,
        log=lambda line: out_console.print(line, soft_wrap=True),
    )
    if outcome.summary:
        print_summary(outcome.summary)
    busy = f", {len(outcome.busy)} being trained elsewhere" if outcome.busy else ""
    out_console.print(
        f"{len(outcome.finished)} trained, {len(outcome.skipped)} skipped, {len(outcome.failed)} failed{busy} "
        f"in {outcome.wall_time_s:.1f} s · {target / 'summary.csv'} · report: cegeo report {target}"
    )
    if outcome.failed:
        # typer.echo, not a rich console: one line however narrow the terminal (rich wraps).
        typer.echo(
            f"error: {len(outcome.failed)} run(s) failed (error.json in their folders); "
            "re-run the same command to retry them.",
            err=True,
        )
        raise typer.Exit(1)
    if outcome.busy:  # the summary lacks them: not a success to chain `cegeo report` on
        typer.echo(
            f"error: {len(outcome.busy)} run(s) are being trained by another process; re-run the "
            "same command when it has finished.",
            err=True,
        )
        raise typer.Exit(1)
