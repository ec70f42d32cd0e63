"""Figures shared by ``cegeo theory``, ``cegeo ufm`` and ``cegeo report``.

All functions return a :class:`matplotlib.figure.Figure` built with matplotlib's object API,
outside pyplot: no display is needed, and the caller's backend (a notebook's inline one, say) is
left as it was; :func:`save_figure` writes a figure atomically.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.text
import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._io import atomic_open

__all__ = [
    "PANELS",
    "band_curves_figure",
    "figure_png_bytes",
    "geometry_vs_gamma_figure",
    "grouped_bars_figure",
    "save_figure",
]

# (summary key suffix, panel title); rows are "W" (classifiers) and "H" (class means).
PANELS: tuple[tuple[str, str], ...] = (
    ("ratio", "norm² ratio maj/min"),
    ("cos_maj_maj", "cos maj-maj"),
    ("cos_min_min", "cos min-min"),
    ("cos_maj_min", "cos maj-min"),
)
ROWS: tuple[tuple[str, str], ...] = (("W", "classifiers W"), ("H", "class means H"))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _values(rows: Sequence[Mapping[str, float]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def geometry_vs_gamma_figure(
    gammas: Sequence[float],
    theory: Sequence[Mapping[str, float]],
    k: int,
    markers: Mapping[str, tuple[Sequence[float], Sequence[Mapping[str, float]]]] | None = None,
    marker_err: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
    title: str = "",
    xlabel: str = "gamma",
) -> Figure:
    """The paper's 2 x 4 figure: W row and class-mean row; norm ratio and three mean cosines.

    Parameters
    ----------
    gammas : sequence of float
        x values of the theory curve.
    theory : sequence of dict
        One :func:`cegeo.theory.group_summary` dict per gamma (keys ``W_ratio``,
        ``W_cos_maj_maj``, ..., ``H_cos_maj_min``).
    k : int
        Number of classes (the ETF line is at ratio 1 and cos = -1/(k-1)).
    markers : dict, optional
        ``{label: (gammas, summaries)}`` measured points (UFM, MLP, ResNet ...).
    marker_err : dict, optional
        ``{label: summaries}`` of standard deviations over seeds, drawn as error bars.
    title : str
    xlabel : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = _new_figure(figsize=(16, 7), layout="constrained")
    axes = fig.subplots(2, 4, sharex=True)
    x = np.asarray(gammas, dtype=float)
    etf_cos = -1.0 / (k - 1)
    for r, (row, row_title) in enumerate(ROWS):
        for c, (suffix, panel) in enumerate(PANELS):
            ax = axes[r, c]
            key = f"{row}_{suffix}"
            ax.plot(x, _values(theory, key), "-", color="black", lw=2, label="theory (max-margin limit)")
            ax.axhline(1.0 if suffix == "ratio" else etf_cos, color="tab:gray", ls="--", lw=1, label="ETF")
            for i, (label, (mx, rows)) in enumerate((markers or {}).items()):
                yerr = None
                if marker_err and label in marker_err:
                    yerr = _values(marker_err[label], key)
                ax.errorbar(
                    np.asarray(mx, dtype=float),
                    _values(rows, key),
                    yerr=yerr,
                    fmt=_MARKERS[i % len(_MARKERS)],
                    ms=6,
                    capsize=2,
                    label=label,
                    alpha=0.85,
                )
            if suffix == "ratio":
                ax.set_yscale("log")
            ax.set_title(f"{row_title}: {panel}", fontsize=10)
            ax.grid(alpha=0.3)
            if r == 1:
                ax.set_xlabel(xlabel)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=max(2, len(labels)), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def _plain_text(fig: Figure) -> Figure:
    """Every text drawn as written: names from runs (a setup called ``$x$``, a loss label with a
    ``$``) are not parsed as mathtext, which could fail or mangle them. cegeo's own labels use
    none. Tick labels and axis offsets are matplotlib's own and keep their mathtext (a log
    axis writes 10^k as ``$\\mathdefault{10^{k}}$``)."""
    for text in fig.findobj(matplotlib.text.Text):
        text.set_parse_math(False)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            axis.offsetText.set_parse_math(True)
            for ticks, formatter in (
                (axis.get_major_ticks(), axis.get_major_formatter()),
                (axis.get_minor_ticks(), axis.get_minor_formatter()),
            ):
                if not isinstance(
                    formatter, (matplotlib.ticker.ScalarFormatter, matplotlib.ticker.LogFormatter)
                ):
                    continue  # labels the caller gave (class names, methods): plain text
                for tick in ticks:  # get_*_ticks() makes the ticks the next draw uses
                    tick.label1.set_parse_math(True)
                    tick.label2.set_parse_math(True)
    return fig


def _new_figure(**kwargs: Any) -> Figure:
    """A figure on its own Agg canvas (``fig.canvas.draw()`` works), outside pyplot."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically (format from the suffix) and close it."""
    _plain_text(fig)
    p = Path(path)
    fmt = p.suffix.lstrip(".").lower() or "png"
    with atomic_open(p, "wb") as fh:
        fig.savefig(fh, format=fmt, dpi=dpi)
    _close(fig)
    return p


def figure_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a figure (for embedding in HTML); closes the figure."""
    buf = io.BytesIO()
    _plain_text(fig).savefig(buf, format="png", dpi=dpi)
    _close(fig)
    return buf.getvalue()


def _close(fig: Figure) -> None:
    """Close ``fig`` in pyplot if pyplot manages it (a figure of these functions it does not)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


# ------------------------------------------------------------------------------- report figures

_COLORS = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
_MAX_BAR_WIDTH_IN = 14.0  # inches: a bar chart no wider than the report page shows it
_MAX_BAR_TICKS = 40  # category names drawn at most


def band_curves_figure(
    curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float] | None]]],
    panels: Sequence[tuple[str, str]],
    *,
    xlabel: str = "epoch",
    title: str = "",
    logy: Sequence[str] = (),
    clip: tuple[float, float] | None = None,
) -> Figure:
    """One panel per quantity, one line per series, a band of ± one standard deviation.

    Parameters
    ----------
    curves : dict
        ``{series label: {panel key: (x, mean, std or None)}}``; a series may lack a panel.
    panels : sequence of (key, title)
    xlabel, title : str
    logy : sequence of str
        Panel keys drawn on a log y-axis.
    clip : (low, high), optional
        The range the quantities live in (rates: ``(0, 1)``); bands are cut at it, so that
        mean ± std never shows a rate below 0 or above 1.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = band_curves_figure({"ce": {"acc": ([1, 2], [0.5, 0.7], [0.1, 0.05])}}, [("acc", "accuracy")])
    >>> len(fig.axes)
    1
    """
    n = max(1, len(panels))
    fig = _new_figure(figsize=(5.2 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)
    for p, (key, panel_title) in enumerate(panels):
        ax = axes[0, p]
        for i, (label, series) in enumerate(curves.items()):
            if key not in series:
                continue
            x, mean, std = series[key]
            xs, m = np.asarray(x, dtype=float), np.asarray(mean, dtype=float)
            color = _COLORS[i % len(_COLORS)]
            ax.plot(xs, m, "-", color=color, lw=1.8, label=label)
            if std is not None:
                s = np.asarray(std, dtype=float)
                lo, hi = m - s, m + s
                if clip is not None:
                    lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
                ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
        if key in logy:
            ax.set_yscale("log")
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def grouped_bars_figure(
    categories: Sequence[str],
    series: Mapping[str, tuple[Sequence[float], Sequence[float] | None]],
    *,
    ylabel: str = "",
    xlabel: str = "",
    title: str = "",
    highlight: Sequence[int] = (),
    highlight_label: str = "",
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> Figure:
    """Bars per category, one colour per series, error bars of ± one standard deviation.

    Parameters
    ----------
    categories : sequence of str
        x tick labels.
    series : dict
        ``{label: (means, stds or None)}``, one value per category (NaN: no bar).
    highlight : sequence of int
        Category indices to shade (e.g. the minority classes), named ``highlight_label``.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = grouped_bars_figure(["0", "1"], {"ce": ([0.9, 0.4], [0.01, 0.1])}, highlight=[1])
    >>> from matplotlib.container import BarContainer
    >>> [len(c) for c in fig.axes[0].containers if isinstance(c, BarContainer)]  # one series, two bars
    [2]
    """
    k = len(categories)
    m = max(1, len(series))
    # At most 14 inches wide: the report shows figures at the page's width (about 1200 px), so a
    # wider figure is shrunk and its ticks and legend become unreadable (10 classes x 5 losses
    # asked for 29.5 inches, drawn at 40%).
    fig_w = min(_MAX_BAR_WIDTH_IN, max(6.0, 0.55 * k * min(m, 6) + 2))
    fig = _new_figure(figsize=(fig_w, 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / m
    x = np.arange(k)
    for c in highlight:
        ax.axvspan(c - 0.5, c + 0.5, color="tab:orange", alpha=0.08, lw=0)
    for i, (label, (mean, std)) in enumerate(series.items()):
        offset = (i - (m - 1) / 2) * width
        yerr = None if std is None else np.nan_to_num(np.asarray(std, dtype=float))
        ax.bar(
            x + offset,
            np.asarray(mean, dtype=float),
            width,
            yerr=yerr,
            capsize=2,
            label=label,
            color=_COLORS[i % len(_COLORS)],
        )
    labels_x = [str(c) for c in categories]
    step = max(1, -(-k // _MAX_BAR_TICKS))  # many classes: every step-th name
    ax.set_xticks(x[::step], labels_x[::step])
    # Names longer than their slot (post-hoc methods: geometry, geometry_tuned) are slanted
    # instead of running into one another; ~0.09 inch per character at the default 10 pt.
    slot = (fig_w - 3.0) * step / max(k, 1)  # inches per shown name (legend and margins off)
    if labels_x and max(len(c) for c in labels_x) * 0.09 > 0.9 * slot:
        # slanted names are parallel lines slot * sin(angle) apart: 30 degrees where that leaves
        # a line's height (~0.17 inch), upright where names are packed closer
        angle = 30 if 0.5 * slot >= 0.17 else 90
        ax.tick_params(axis="x", labelrotation=angle)
        if angle == 30:
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if len(highlight) and highlight_label:
        from matplotlib.patches import Patch

        handles.append(Patch(color="tab:orange", alpha=0.15))
        labels.append(highlight_label)
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    if title:
        ax.set_title(title)
    return fig
