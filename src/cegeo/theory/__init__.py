"""Closed-form implicit geometry of the parameterized CE family (THEORY.md §4).

* Any class counts: :func:`class_logits` (M*), :func:`geometry` (Grams, norms, cosines, group
  summaries), :func:`predict` (both), :func:`distance`, :func:`etf_geometry`.
* (R, rho)-STEP scalar formulas: :func:`seli_step`, :func:`ldt_step`, :func:`cdt_step`,
  :func:`step_geometry`.
* The symmetric setting: :func:`symmetric_temperatures`, :func:`tune`, :func:`etf_residual`.
* Convex cross-check (optional cvxpy): :mod:`cegeo.theory.convex`, imported on its own.
"""

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
from ._step import StepGeometry, cdt_step, ldt_step, seli_step, step_geometry
from ._tune import (
    EtfResidual,
    TuneResult,
    etf_residual,
    symmetric_temperatures,
    theory_loss,
    theory_losses,
    tune,
)

__all__ = [
    "EtfResidual",
    "Geometry",
    "StepGeometry",
    "TuneResult",
    "cdt_step",
    "class_logits",
    "distance",
    "etf_geometry",
    "etf_residual",
    "geometry",
    "group_summary",
    "ldt_step",
    "predict",
    "psd_sqrt",
    "seli_step",
    "step_geometry",
    "symmetric_temperatures",
    "theory_loss",
    "theory_losses",
    "tune",
]
