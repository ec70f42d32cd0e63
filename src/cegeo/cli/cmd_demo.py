"""``cegeo demo``: plan, simulate, train, correct and report on the bundled digits data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table

from ..demo import run_demo
from ..theory._tune import FLAT_TOL
from . import app
from ._common import wide_console
from .cmd_sweep import print_summary


def _theory_table(rows: list[dict[str, Any]], tuned: dict[str, Any]) -> None:
    out = wide_console()
    table = Table(
        title="predicted limiting geometry, (R=10, rho=0.5)-STEP, k = 10",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
    )
    for col in (
        "loss",
        "setting",
        "W ratio",
        "cos w maj-maj",
        "cos w min-min",
        "cos w maj-min",
        "H ratio",
        "ETF residual",
    ):
        table.add_column(col, justify="left" if col in ("loss", "setting") else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["loss"],
            r["setting"],
            f"{r['W_ratio']:.4f}",
            f"{r['W_cos_maj_maj']:.4f}",
            f"{r['W_cos_min_min']:.4f}",
            f"{r['W_cos_maj_min']:.4f}",
            f"{r['H_ratio']:.4f}",
            "0" if r["etf_residual"] <= FLAT_TOL else f"{r['etf_residual']:.2g}",  # round-off: 0
        )
    out.print(table)
    out.print(
        "ratio = ||·_maj||²/||·_min||² (W: classifiers, H: class means); ETF residual 0 = symmetric. "
        f"{tuned['ldt']['note']} CDT's closest: gamma = {tuned['cdt']['value']:.3f} "
        f"(residual {tuned['cdt']['residual']:.3f}).",
        soft_wrap=True,
    )


@app.command("demo")
def demo_command(
    out: Path | None = typer.Option(
        None, "--out", help="The demo folder (default runs/demo, or runs/demo-fast with --fast)."
    ),
    fast: bool = typer.Option(
        False, "--fast", help="Fewer epochs and smaller sizes (CI); every step still runs."
    ),
    jobs: int = typer.Option(1, "--jobs", help="Training runs at a time (worker processes when > 1)."),
) -> None:
    """The whole workflow in about 30 s on a 2-core CPU: digits with 5 classes ten times rarer.

    Plan (the theory table for CE, LA, CDT, LDT and the symmetric LDT setting), simulate (a
    batched UFM run), train (an MLP with ce, wce, la, cdt, ldt at gamma = 1/2, two seeds),
    correct (post-hoc rebalancing of the CE runs) and report (HTML + Markdown). Re-running into
    the same --out skips finished work. Imbalance ratio R = n_max/n_min >= 1.
    """
    target = out if out is not None else Path("runs") / ("demo-fast" if fast else "demo")
    con = wide_console()
    result = run_demo(
        target,
        fast=fast,
        jobs=jobs,
        log=lambda line: con.print(line, soft_wrap=True),
        on_theory=_theory_table,
    )
    con.print()
    print_summary(result.sweep.summary)
    for line in result.report.headline:
        con.print(line, soft_wrap=True)
    con.print(f"report: {result.report.html_path}  (summary: {result.report.markdown_path})", soft_wrap=True)
    con.print(f"demo finished in {result.wall_time_s:.0f} s")
    if result.sweep.failed:
        # typer.echo, not a rich console: one line however narrow the terminal (rich wraps).
        typer.echo(
            f"error: {len(result.sweep.failed)} run(s) failed; see {target / 'runs'}/*/error.json.", err=True
        )
        raise typer.Exit(1)
