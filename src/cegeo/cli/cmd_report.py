"""``cegeo report``: one self-contained HTML page and a Markdown summary from run folders.

Examples::

    cegeo report runs/demo                      # a sweep folder -> runs/demo/report.html + summary.md
    cegeo report runs/ldt --out ldt.html        # one run folder
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..report import build_report
from . import app
from ._common import console


@app.command("report")
def report_command(
    folder: Path = typer.Argument(..., help="A run folder, a sweep folder, or a folder of run folders."),
    out: Path | None = typer.Option(None, "--out", help="The HTML file (default: FOLDER/report.html)."),
    markdown: Path | None = typer.Option(
        None, "--markdown", help="The Markdown summary (default: summary.md beside the HTML file)."
    ),
) -> None:
    """Write an HTML report (figures embedded, no external resources) and summary.md.

    The headline says which loss did best for the minority classes, by how much and at what
    training cost; then tables (mean ± std over seeds), the geometry against gamma with the
    theory (when a loss ran over a gamma grid), learning curves, convergence of the geometry,
    per-class recall, post-hoc before/after, UFM results, failures, hardware and versions.
    """
    report = build_report(folder, out, markdown)
    for line in report.headline:
        console.print(line, soft_wrap=True)
    console.print(
        f"report: {report.html_path} ({len(report.figures)} figures) · summary: {report.markdown_path}",
        soft_wrap=True,
    )
