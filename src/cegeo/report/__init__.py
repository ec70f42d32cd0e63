"""Figures and the HTML/Markdown report.

* :func:`build_report` — a self-contained HTML page (figures embedded) and ``summary.md`` for a
  run folder, a sweep folder or a folder of run folders (``cegeo report``).
* :func:`collect` — the report's data: runs grouped over seeds, per-loss selections on
  validation, the headline sentences, post-hoc and UFM summaries.
* Figures: :func:`geometry_vs_gamma_figure` (the paper's 2 x 4 figure),
  :func:`band_curves_figure` (curves with ± std bands), :func:`grouped_bars_figure`.
"""

from ._collect import Group, ReportData, collect
from ._page import Report, build_report
from .figures import (
    PANELS,
    band_curves_figure,
    figure_png_bytes,
    geometry_vs_gamma_figure,
    grouped_bars_figure,
    save_figure,
)

__all__ = [
    "PANELS",
    "Group",
    "Report",
    "ReportData",
    "band_curves_figure",
    "build_report",
    "collect",
    "figure_png_bytes",
    "geometry_vs_gamma_figure",
    "grouped_bars_figure",
    "save_figure",
]
