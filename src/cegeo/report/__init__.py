"""Figures and the HTML/Markdown report."""

from .figures import PANELS, figure_png_bytes, geometry_vs_gamma_figure, save_figure

__all__ = ["PANELS", "figure_png_bytes", "geometry_vs_gamma_figure", "save_figure"]
