"""Figures shared by ``cegeo theory``, ``cegeo ufm`` and ``cegeo report``.

All functions return a :class:`matplotlib.figure.Figure` built with the non-interactive Agg
backend (no display needed); :func:`save_figure` writes it atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .._io import atomic_open

__all__ = ["PANELS", "figure_png_bytes", "geometry_vs_gamma_figure", "save_figure"]

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
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True, constrained_layout=True)
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


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically (format from the suffix) and close it."""
    p = Path(path)
    fmt = p.suffix.lstrip(".").lower() or "png"
    with atomic_open(p, "wb") as fh:
        fig.savefig(fh, format=fmt, dpi=dpi)
    plt.close(fig)
    return p


def figure_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a figure (for embedding in HTML); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
