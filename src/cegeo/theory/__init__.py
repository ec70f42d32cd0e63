"""Closed-form implicit geometry of the parameterized CE family (THEORY.md §4)."""

from ._closed_form import (
    Geometry,
    class_logits,
    distance,
    etf_geometry,
    geometry,
    group_summary,
    predict,
    psd_sqrt,
)

__all__ = [
    "Geometry",
    "class_logits",
    "distance",
    "etf_geometry",
    "geometry",
    "group_summary",
    "predict",
    "psd_sqrt",
]
