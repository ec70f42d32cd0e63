"""The parameterized cross-entropy family and its registry.

One formula (THEORY.md §2) covers CE, weighted CE, logit adjustment (LA), class-dependent
temperature (CDT), label-dependent temperature (LDT), VS-loss and Balanced Softmax::

    loss(y, z) = - omega_y * log softmax( Dl_y * (Dc ⊙ z) + iota )_y

Symbols (THEORY.md §1-2) and their names here:

=============  ===============  ==========================================
THEORY.md      attribute        meaning
=============  ===============  ==========================================
omega_y        ``omega``        per-sample weight by true label
Dc_c           ``delta_logit``  temperature multiplying logit c
Dl_y           ``delta_label``  temperature multiplying all logits of a sample with label y
iota_c         ``iota``         additive offset on logit c
=============  ===============  ==========================================

Conventions: class counts are per-class training counts ``n_c``; the imbalance ratio is
``R = n_max / n_min >= 1``. Temperatures of the registry's CDT, LDT and VS entries are
``(n_c / n_max)^gamma`` normalised to mean 1 (as the paper's code does; only ratios matter for the
geometry and the argmax). Prediction is always the argmax of the raw logits ``z``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import Registry
from ._validation import (
    InputError,
    OutOfRangeError,
    as_float_vector,
    check_class_counts,
    check_finite,
    check_int,
    fail,
)

__all__ = [
    "LDAMLoss",
    "LossInfo",
    "ParametricCE",
    "class_balanced_weights",
    "create_loss",
    "get_loss_info",
    "list_losses",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise fail("reduction", "one of 'mean', 'sum', 'none'", reduction)
    return reduction


def _check_inputs(logits: Tensor, target: Tensor, k: int | None) -> None:
    """Validate ``forward`` arguments (costs one device sync for the label range)."""
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise fail("logits", "a 2-D tensor of shape (n, k)", shape)
    if not logits.is_floating_point():
        raise fail("logits", "a floating-point tensor", str(logits.dtype))
    if k is not None and logits.shape[1] != k:
        raise fail("logits", f"a tensor with k = {k} columns (the loss's class count)", logits.shape[1])
    if not isinstance(target, Tensor) or target.ndim != 1 or target.shape[0] != logits.shape[0]:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise fail("target", f"a 1-D tensor of shape ({logits.shape[0]},)", shape)
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise fail("target", "an integer tensor of class labels", str(target.dtype))
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= logits.shape[1]:
            bad = lo if lo < 0 else hi
            raise fail("target", f"labels in 0..{logits.shape[1] - 1}", bad)


def _reduce(per_sample: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    _check_reduction(reduction)  # also when set on the module after construction
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if weight is None:
        return per_sample.mean()
    # Same convention as F.cross_entropy(weight=...): divide by the sum of the targets' weights.
    return per_sample.sum() / weight.sum()


class ParametricCE(nn.Module):
    """Parameterized cross-entropy, a drop-in for :class:`torch.nn.CrossEntropyLoss`.

    Computes ``- omega_y * log softmax(Dl_y * (Dc * z) + iota)_y`` (THEORY.md §2) with a
    numerically stable log-softmax in float32 or float64.

    Parameters
    ----------
    omega : array-like of shape (k,), optional
        Per-class loss weights ``omega_y``; must be > 0. Default: all ones.
    delta_logit : array-like of shape (k,), optional
        Logit temperatures ``Dc_c`` (CDT, VS); must be > 0. Default: all ones.
    delta_label : array-like of shape (k,), optional
        Label temperatures ``Dl_y`` (LDT); must be > 0. Default: all ones.
    iota : array-like of shape (k,), optional
        Additive logit offsets ``iota_c`` (LA, VS). Default: zeros.
    reduction : {"mean", "sum", "none"}
        As in :func:`torch.nn.functional.cross_entropy`; with ``omega`` set, "mean" divides by
        the sum of the targets' weights.
    validate : bool
        Check shapes, dtypes and the label range on every call (one device sync). Trainers
        that validated their labels once may switch it off.
    num_classes : int, optional
        k, for a loss with no per-class vector (plain CE made for given class counts), so
        ``forward`` still checks the logits' k. With vectors, it must equal their length.

    Attributes
    ----------
    omega, delta_logit, delta_label, iota : torch.Tensor or None
        Buffers of shape (k,) (``None`` when the parameter was not given). The theory
        (:func:`cegeo.theory.class_logits`) reads the temperatures from here.
    num_classes : int or None
        k, when any per-class vector was given.

    Raises
    ------
    ValueError
        Vectors of different lengths, non-finite or non-positive weights/temperatures, an
        unknown reduction; in ``forward``, logits not 2-D, a wrong target shape or dtype, a
        label outside 0..k-1, or a k different from the loss's.

    Examples
    --------
    >>> import torch
    >>> loss = ParametricCE(delta_label=[1.0, 0.5])
    >>> z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> y = torch.tensor([0, 1])
    >>> round(float(loss(z, y)), 4)
    0.3005
    >>> round(float(ParametricCE()(z, y)), 4) == round(float(torch.nn.functional.cross_entropy(z, y)), 4)
    True
    """

    omega: Tensor | None
    delta_logit: Tensor | None
    delta_label: Tensor | None
    iota: Tensor | None

    def __init__(
        self,
        omega: Any = None,
        delta_logit: Any = None,
        delta_label: Any = None,
        iota: Any = None,
        reduction: str = "mean",
        *,
        validate: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.validate = bool(validate)
        given = {
            name: as_float_vector(name, value)
            for name, value in (
                ("omega", omega),
                ("delta_logit", delta_logit),
                ("delta_label", delta_label),
                ("iota", iota),
            )
            if value is not None
        }
        lengths = {name: v.size for name, v in given.items()}
        if len(set(lengths.values())) > 1:
            raise fail("omega/delta_logit/delta_label/iota", "vectors of one length k", lengths)
        k = next(iter(lengths.values())) if lengths else None
        if num_classes is not None:
            num_classes = check_int("num_classes", num_classes, minimum=2)
            if k is not None and num_classes != k:
                raise fail("num_classes", f"the length of the per-class vectors ({k})", num_classes)
            k = num_classes
        self.num_classes: int | None = k
        for name in ("omega", "delta_logit", "delta_label"):
            if name in given and np.any(given[name] <= 0):
                raise fail(name, "positive numbers", given[name])
        for name in ("omega", "delta_logit", "delta_label", "iota"):
            value = given.get(name)
            self.register_buffer(name, None if value is None else torch.as_tensor(value, dtype=torch.float64))

    def extra_repr(self) -> str:
        parts = [f"num_classes={self.num_classes}", f"reduction={self.reduction!r}"]
        parts += [n for n in ("omega", "delta_logit", "delta_label", "iota") if getattr(self, n) is not None]
        return ", ".join(parts)

    def with_omega(self, omega: Any) -> ParametricCE:
        """A copy with other per-class weights (used by deferred re-weighting)."""
        new = ParametricCE(
            omega=omega,
            delta_logit=_np(self.delta_logit),
            delta_label=_np(self.delta_label),
            iota=_np(self.iota),
            reduction=self.reduction,
            validate=self.validate,
            num_classes=self.num_classes,
        )
        if getattr(self, "spec", None) is not None:
            new.spec = self.spec  # type: ignore[attr-defined]
        return new.to(_device_of(self))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.validate:
            _check_inputs(logits, target, self.num_classes)
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        z = logits.to(dtype)  # (n, k); bf16/fp16 logits from autocast are upcast
        target = target.long()
        if self.delta_logit is not None:
            z = z * self.delta_logit.to(dtype)  # (n, k) * (k,)
        if self.delta_label is not None:
            z = z * self.delta_label.to(dtype)[target].unsqueeze(1)  # (n, k) * (n, 1)
        if self.iota is not None:
            z = z + self.iota.to(dtype)
        per_sample = -torch.gather(F.log_softmax(z, dim=1), 1, target.unsqueeze(1)).squeeze(1)
        weight = None
        if self.omega is not None:
            weight = self.omega.to(dtype)[target]  # (n,)
            per_sample = per_sample * weight
        return _reduce(per_sample, weight, self.reduction)


class LDAMLoss(nn.Module):
    """Label-distribution-aware margin loss (Cao et al. 2019), a baseline.

    ``loss = CE(s * (z - m_y e_y), y)`` with margins ``m_y ∝ n_y^(-1/4)`` scaled so the largest is
    ``max_margin``. It expects cosine logits (``|z| <= 1``): train it with a model whose
    classifier is normalised (``cosine_classifier=True`` in :mod:`cegeo.models`). It is not a
    member of the parameterized family, so :mod:`cegeo.theory` does not predict its geometry.

    Parameters
    ----------
    class_counts : array-like of shape (k,)
        Training counts per class.
    max_margin : float
        Largest margin (the rarest class's), > 0.
    scale : float
        Logit scale ``s``, > 0.
    omega : array-like of shape (k,), optional
        Per-class weights (deferred re-weighting switches these on late in training).
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import torch
    >>> loss = LDAMLoss([100, 10], max_margin=0.5, scale=30.0)
    >>> [round(m, 4) for m in loss.margins.tolist()]
    [0.2812, 0.5]
    """

    margins: Tensor
    omega: Tensor | None

    def __init__(
        self,
        class_counts: Any,
        max_margin: float = 0.5,
        scale: float = 30.0,
        omega: Any = None,
        reduction: str = "mean",
        *,
        validate: bool = True,
    ) -> None:
        super().__init__()
        counts = check_class_counts(class_counts)
        self.max_margin = _positive("max_margin", max_margin)
        self.scale = _positive("scale", scale)
        self.reduction = _check_reduction(reduction)
        self.validate = bool(validate)
        self.num_classes = int(counts.size)
        m = counts.astype(np.float64) ** -0.25
        self.register_buffer("margins", torch.as_tensor(m * (self.max_margin / m.max()), dtype=torch.float64))
        if omega is not None:
            omega = as_float_vector("omega", omega, self.num_classes)
            if np.any(omega <= 0):
                raise fail("omega", "positive numbers", omega)
        self.register_buffer("omega", None if omega is None else torch.as_tensor(omega, dtype=torch.float64))
        self._counts = counts

    def with_omega(self, omega: Any) -> LDAMLoss:
        """A copy with other per-class weights (LDAM-DRW)."""
        new = LDAMLoss(
            self._counts, self.max_margin, self.scale, omega, self.reduction, validate=self.validate
        )
        if getattr(self, "spec", None) is not None:
            new.spec = self.spec  # type: ignore[attr-defined]
        return new.to(_device_of(self))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.validate:
            _check_inputs(logits, target, self.num_classes)
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        target = target.long()
        z = logits.to(dtype)
        margin = torch.zeros_like(z).scatter_(
            1, target.unsqueeze(1), self.margins.to(dtype)[target].unsqueeze(1)
        )
        z = self.scale * (z - margin)
        per_sample = F.cross_entropy(z, target, reduction="none")
        weight = None
        if self.omega is not None:
            weight = self.omega.to(dtype)[target]
            per_sample = per_sample * weight
        return _reduce(per_sample, weight, self.reduction)


def _np(t: Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().double().numpy()


def _device_of(module: nn.Module) -> torch.device:
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def _positive(name: str, value: Any) -> float:
    v = check_finite(name, value)
    if v <= 0:
        raise fail(name, "a number > 0", value)
    return v


def class_balanced_weights(class_counts: Any, beta: float = 0.9999) -> np.ndarray:
    """Class-balanced weights from the effective number of samples (Cui et al. 2019).

    ``w_c ∝ (1 - beta) / (1 - beta^n_c)``, normalised to mean 1; ``beta = 0`` gives equal
    weights and ``beta -> 1`` approaches inverse frequency. Used by deferred re-weighting (DRW).

    Examples
    --------
    >>> [round(w, 3) for w in class_balanced_weights([100, 10], beta=0.9999).tolist()]
    [0.183, 1.817]
    """
    counts = check_class_counts(class_counts).astype(np.float64)
    beta = check_finite("beta", beta)
    if not 0 <= beta < 1:
        raise fail("beta", "a number in [0, 1)", beta)
    w = (1.0 - beta) / (1.0 - beta**counts)
    return w * (counts.size / w.sum())


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossInfo:
    """A registered loss: its formula, hyperparameters with defaults, and builder.

    Attributes
    ----------
    name : str
    formula : str
        The member's parameters in THEORY.md §2's notation.
    defaults : Mapping[str, float]
        Hyperparameters and their defaults (each overridable in :func:`create_loss`).
    build : callable
        ``build(class_counts, **hyper) -> nn.Module``.
    family_param : str or None
        The hyperparameter that indexes the one-parameter family (swept by ``tune`` and the
        gamma grids), if any.
    needs_cosine_classifier : bool
        True for losses that expect normalised (cosine) logits.
    theory : bool
        Whether :mod:`cegeo.theory` predicts this loss's geometry.
    """

    name: str
    formula: str
    defaults: Mapping[str, float] = field(default_factory=dict)
    build: Callable[..., nn.Module] = field(default=lambda counts: ParametricCE(), repr=False)
    family_param: str | None = None
    needs_cosine_classifier: bool = False
    theory: bool = True

    def hyperparameters(self, hyper: Mapping[str, Any]) -> dict[str, float]:
        """``hyper`` with the defaults filled in; unknown or non-finite values are InputErrors."""
        unknown = sorted(set(hyper) - set(self.defaults))
        if unknown:
            expected = ", ".join(self.defaults) if self.defaults else "no hyperparameters"
            raise InputError(
                f"loss {self.name!r} takes {expected}; got unknown hyperparameter(s) {', '.join(unknown)}."
            )
        return {key: check_finite(key, hyper.get(key, default)) for key, default in self.defaults.items()}

    def make(self, counts: np.ndarray, params: Mapping[str, float]) -> nn.Module:
        """``build(counts, **params)``, with an error naming the hyperparameters when the
        per-class vectors they give overflow or vanish (e.g. gamma = 1e6 on R = 5)."""
        with np.errstate(all="ignore"):
            try:
                return self.build(counts, **params)
            except InputError as err:
                named = [p for p in params if p != "normalize"]
                if not named or err.args[0].startswith("`normalize`"):
                    raise
                one = len(named) == 1
                raise OutOfRangeError(
                    ", ".join(named),
                    f"{'a value that keeps' if one else 'values that keep'} the {self.name} loss's "
                    "per-class weights and temperatures finite and positive for counts with "
                    f"R = {counts.max() / counts.min():g}",
                    params[named[0]] if one else {p: params[p] for p in named},
                ) from err


@dataclass(frozen=True)
class LossSpec:
    """What a registry-made loss was created from (kept on the loss as ``loss.spec``)."""

    name: str
    hyper: Mapping[str, float]
    class_counts: tuple[int, ...]


_LOSSES: Registry[LossInfo] = Registry("loss")


def _power_temperatures(counts: np.ndarray, gamma: float, normalize: float) -> np.ndarray:
    if normalize not in (0.0, 1.0):
        raise fail("normalize", "0 or 1 (1: scale the temperatures to mean 1)", normalize)
    t = (counts / counts.max()) ** gamma
    return t * (counts.size / t.sum()) if normalize else t


def _log_prior(counts: np.ndarray) -> np.ndarray:
    return np.log(counts / counts.sum())


def _wce(counts: np.ndarray, gamma: float) -> ParametricCE:
    w = (counts.max() / counts) ** gamma
    return ParametricCE(omega=w * (counts.size / w.sum()))


def _cdt(counts: np.ndarray, gamma: float, normalize: float) -> ParametricCE:
    return ParametricCE(delta_logit=_power_temperatures(counts, gamma, normalize))


def _ldt(counts: np.ndarray, gamma: float, normalize: float) -> ParametricCE:
    return ParametricCE(delta_label=_power_temperatures(counts, gamma, normalize))


def _vs(counts: np.ndarray, gamma: float, tau: float, normalize: float) -> ParametricCE:
    return ParametricCE(
        delta_logit=_power_temperatures(counts, gamma, normalize), iota=tau * _log_prior(counts)
    )


for _info in (
    LossInfo(
        "ce",
        "omega=1, Dc=1, Dl=1, iota=0 (plain cross-entropy)",
        {},
        lambda c: ParametricCE(num_classes=None if c is None else c.size),
    ),
    LossInfo(
        "wce",
        "omega_y = (n_max/n_y)^gamma normalised to mean 1",
        {"gamma": 1.0},
        _wce,
        family_param="gamma",
    ),
    LossInfo(
        "la",
        "iota_c = tau * log(pi_c) (logit adjustment, Menon et al.)",
        {"tau": 1.0},
        lambda c, tau: ParametricCE(iota=tau * _log_prior(c)),
        family_param="tau",
    ),
    LossInfo(
        "cdt",
        "Dc_c = (n_c/n_max)^gamma, normalised to mean 1 unless normalize=0 (Ye et al.)",
        {"gamma": 0.5, "normalize": 1.0},
        _cdt,
        family_param="gamma",
    ),
    LossInfo(
        "ldt",
        "Dl_y = (n_y/n_max)^gamma, normalised to mean 1 unless normalize=0 (Behnia et al.)",
        {"gamma": 0.5, "normalize": 1.0},
        _ldt,
        family_param="gamma",
    ),
    LossInfo(
        "vs",
        "Dc_c = (n_c/n_max)^gamma (mean 1 unless normalize=0), iota_c = tau*log(pi_c) (Kini et al.)",
        {"gamma": 0.5, "tau": 1.0, "normalize": 1.0},
        _vs,
        family_param="gamma",
    ),
    LossInfo(
        "balanced_softmax",
        "iota_c = log(pi_c) (= la with tau = 1; Ren et al.)",
        {},
        lambda c: ParametricCE(iota=_log_prior(c)),
    ),
    LossInfo(
        "ldam",
        "CE(scale*(z - m_y e_y)), m_y ∝ n_y^(-1/4), max m = max_margin; needs a cosine classifier",
        {"max_margin": 0.5, "scale": 30.0},
        lambda c, max_margin, scale: LDAMLoss(c, max_margin=max_margin, scale=scale),
        needs_cosine_classifier=True,
        theory=False,
    ),
):
    _LOSSES.register(_info)


def list_losses() -> list[str]:
    """Names of the registered losses.

    Examples
    --------
    >>> list_losses()
    ['ce', 'wce', 'la', 'cdt', 'ldt', 'vs', 'balanced_softmax', 'ldam']
    """
    return _LOSSES.names()


def get_loss_info(name: str, param: str | None = None) -> LossInfo:
    """The :class:`LossInfo` of a registered loss (ValueError listing valid names if unknown)."""
    return _LOSSES.get(name, param)


def create_loss(name: str, class_counts: Any = None, *, reduction: str = "mean", **hyper: Any) -> nn.Module:
    """Build a registered loss for the given training class counts.

    Parameters
    ----------
    name : str
        One of :func:`list_losses`.
    class_counts : array-like of shape (k,)
        Per-class training counts (positive integers). Required by every loss but ``ce``.
    reduction : {"mean", "sum", "none"}
        As in :class:`torch.nn.CrossEntropyLoss` (a weighted mean divides by the targets'
        weights).
    **hyper
        The entry's hyperparameters (see ``get_loss_info(name).defaults``), e.g. ``gamma``,
        ``tau``. Unknown names are an error.

    Returns
    -------
    torch.nn.Module
        A :class:`ParametricCE` (or :class:`LDAMLoss`) with ``.spec`` recording name,
        hyperparameters and counts.

    Raises
    ------
    ValueError
        Unknown loss name or hyperparameter, non-finite hyperparameters, invalid counts.

    Examples
    --------
    >>> loss = create_loss("ldt", class_counts=[100, 10], gamma=0.5, normalize=0)
    >>> [round(t, 4) for t in loss.delta_label.tolist()]
    [1.0, 0.3162]
    >>> create_loss("focal", class_counts=[1, 2])
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: unknown loss 'focal'; valid names: 'ce', 'wce', 'la', 'cdt', 'ldt', 'vs', 'balanced_softmax', 'ldam'.
    """
    info = _LOSSES.get(name)
    params = info.hyperparameters(hyper)
    if class_counts is None:
        if name != "ce":
            raise fail("class_counts", f"the per-class training counts (loss {name!r} needs them)", None)
        counts = None
        module = info.build(None)
    else:
        counts = check_class_counts(class_counts)
        module = info.make(counts.astype(np.float64), params)
    module.spec = LossSpec(name, dict(params), tuple(int(c) for c in counts) if counts is not None else ())
    module.reduction = _check_reduction(reduction)
    return module


def loss_temperatures(loss: nn.Module, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The logit and label temperatures ``(Dc, Dl)`` of a loss as float64 arrays of length k.

    Weights and offsets are ignored: they drop out of the max-margin limit (THEORY.md §4).
    """
    if isinstance(loss, LDAMLoss) or not isinstance(loss, ParametricCE):
        raise InputError(
            f"`loss` must be a ParametricCE (the theory covers the parameterized CE family); got {type(loss).__name__}."
        )
    ones = np.ones(k)
    dc = ones if loss.delta_logit is None else loss.delta_logit.detach().cpu().double().numpy()
    dl = ones if loss.delta_label is None else loss.delta_label.detach().cpu().double().numpy()
    if dc.size != k or dl.size != k:
        raise fail("loss", f"a loss for k = {k} classes", loss.num_classes)
    return dc, dl
