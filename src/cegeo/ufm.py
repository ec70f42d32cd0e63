"""Unconstrained features model (UFM): batched simulation and the regularisation path.

THEORY.md §4: the features are free parameters, one embedding ``h_i`` per training sample, and
a bias-free classifier ``W`` maps them to logits ``z_i = W h_i``. With weight decay ``lam`` on
both, the objective every routine here minimises is (one formula, stated once)::

    F(W, H) = L(W H) + lam/2 (||W||_F^2 + ||H||_F^2)
    L(Z)    = sum_i omega_{y_i} loss_i(z_i) / sum_i omega_{y_i}        (the loss's "mean")
    loss_i  = - log softmax(Dl_{y_i} (Dc ⊙ z_i) + iota)_{y_i}          (THEORY.md §2)

``L`` is exactly what a registry loss (:func:`cegeo.losses.create_loss`, ``reduction="mean"``)
returns for the logits ``(W H)^T``, and ``lam/2 ||.||^2`` is what ``torch.optim.SGD``'s
``weight_decay=lam`` adds to the gradient, so GD on ``F`` *is* the usual training loop. THEORY
§4 writes the sum of the losses, ``sum_i omega_{y_i} loss_i + lam_sum/2 (...)``: that is ``F``
times ``s = sum_i omega_{y_i}`` (``n`` without weights) with ``lam_sum = s * lam``, the same
minimisers. THEORY §6's reference path (k = 4, R = 10, LDT gamma = 1/2: squared-norm ratio 1.31,
1.21, 1.16, 1.08 at lam = 1e-2 .. 1e-8) is in that sum form with ``n_min = 1``, i.e. ``lam / 22``
here (tested).

Symbols: ``omega`` per-class weights, ``Dc`` (``delta_logit``) logit temperatures, ``Dl``
(``delta_label``) label temperatures, ``iota`` logit offsets, read from the loss's buffers.
Shapes: ``W`` (k, d), ``H`` (d, n) with samples ordered by class (class 0's first).

Three tools:

* :func:`simulate` runs many configurations (losses x hyperparameters x seeds x lam/lr, same
  counts and ``d``) as one batched tensor program on CPU or CUDA: stacked parameters
  ``(B, k, d)`` and ``(B, d, n)``, per-configuration ``(B, k)`` loss vectors, batched matmuls and
  one SGD(momentum, weight decay) update for all. Gradients are written out analytically (the
  softmax-CE gradient), not taken by autograd. Each configuration's trajectory is the same as
  running it alone (see :func:`simulate` for the tolerance).
* :func:`minimize_ufm` finds the exact minimiser of ``F`` at one ``lam`` with L-BFGS in float64.
  At a minimiser the embeddings of a class coincide (for fixed ``W``, ``F`` is strictly convex in
  each ``h_i`` and symmetric within a class), so the problem reduces to the class level::

      F = sum_y (n_y omega_y / sum_c n_c omega_c) loss_y(W h_y) + lam/2 (||W||^2 + sum_y n_y ||h_y||^2)

  It also certifies global optimality: with ``M' = W H N^1/2`` the problem is the convex
  ``L + lam ||M'||_*`` (nuclear norm, ``d >= k``), whose optimality condition at a stationary
  point is ``||grad_{M'} L||_2 <= lam``; ``certificate`` reports that ratio (<= 1: global).
* :func:`regularization_path` follows the minimiser along a decreasing ``lam`` grid with warm
  starts and shows how slowly it approaches the max-margin limit
  :func:`cegeo.theory.predict` (roughly ``1/log(1/lam)``), with :func:`fit_log_trend`.

Measurements (:data:`METRIC_COLUMNS`) use the class means ``mu_c`` of the columns of ``H``
(uncentred, THEORY.md §5), ``G_W = W W^T``, ``G_H = [<mu_c, mu_c'>]``, ``M = W [mu_1..mu_k]``.
NC1 is ``tr(Sigma_W Sigma_B^+)/k`` with ``Sigma_W = (1/n) sum_i (h_i - mu_{y_i})(h_i -
mu_{y_i})^T`` (every sample weighs the same) and ``Sigma_B = (1/k) sum_c (mu_c - mu_G)(mu_c -
mu_G)^T`` (every class weighs the same, ``mu_G`` the sample mean), pseudo-inverse over its top
``k - 1`` eigenvalues (those above 1e-12 of the largest): the convention of
:mod:`cegeo.geometry`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._io import csv_columns, write_csv
from ._signals import check_interrupt
from ._validation import INT_MAX, SEED_MAX, InputError, check_class_counts, check_finite, check_int, fail
from .data.imbalance import Groups
from .data.imbalance import groups as make_groups
from .losses import ParametricCE, create_loss, get_loss_info
from .theory import Geometry, distance, group_summary, predict

__all__ = [
    "GEOMETRY_COLUMNS",
    "MAX_THREADS",
    "METRIC_COLUMNS",
    "PANEL_KEYS",
    "SCALE_FREE_COLUMNS",
    "LogTrend",
    "LowRankWarning",
    "PathResult",
    "UFMConfig",
    "UFMExperiment",
    "UFMMinimum",
    "UFMResult",
    "check_threads",
    "fit_log_trend",
    "loss_vectors",
    "minimize_ufm",
    "nc1_score",
    "regularization_path",
    "simulate",
    "ufm_objective",
]

# The eight panels of the paper's figure (THEORY.md §6): W and class means x ratio and 3 cosines.
PANEL_KEYS: tuple[str, ...] = tuple(
    f"{row}_{key}" for row in ("W", "H") for key in ("ratio", "cos_maj_maj", "cos_min_min", "cos_maj_min")
)

#: Columns of one logged row after the configuration columns (see :attr:`UFMResult.rows`).
#: Scale-free geometry: undefined at W = H = 0 (a zero minimiser) and for diverged runs.
SCALE_FREE_COLUMNS: tuple[str, ...] = (*PANEL_KEYS, "cos_WH", "nc1", "dist_W", "dist_H", "dist_M")
#: Every geometry column (group norms, then the scale-free ones).
GEOMETRY_COLUMNS: tuple[str, ...] = (
    "W_norm_maj",
    "W_norm_min",
    "H_norm_maj",
    "H_norm_min",
    *SCALE_FREE_COLUMNS,
)
METRIC_COLUMNS: tuple[str, ...] = (
    "epoch",
    "step",
    "lr_now",
    "train_loss",  # L(W H): the loss's mean over all training samples
    "objective",  # F = L + lam/2 (||W||^2 + ||H||^2)
    "grad_rel",  # ||grad F|| / (lam ||(W, H)||): 0 at a stationary point (lam = 0: ||grad L||)
    "train_acc",
    "train_bal_acc",
    "finite",  # False once the run diverged (loss not finite or ||W||^2 + ||H||^2 > 1e100)
    "W_norm",  # ||W||_F
    "H_norm",  # ||H||_F (all samples)
    *GEOMETRY_COLUMNS,  # W_norm_maj: mean ||w_c|| over the first group (majority), W_norm_min
    # over the last (minority); H_norm_*: the same for ||mu_c||
)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# ||W||^2 + ||H||^2 above this counts as diverged (finite = False): the Grams' own norms would
# overflow float64 soon after, and no converging run comes near it (norms grow like
# sqrt(log 1/lam)).
_DIVERGED_SQNORM = 1e100
#: Upper bound of the ``threads`` argument: more intra-op threads than this crash OpenMP
#: runtimes (libgomp aborts at 10^6) and never help the small batched matmuls here.
MAX_THREADS = 1024  # the same on every machine, so a config that works on one is valid on all
_RESERVED_COLUMNS = frozenset(
    {"config", "loss", "lam", "lr", "momentum", "milestones", "lr_decay", "seed", "batch_size", "d", "dtype"}
    | set(METRIC_COLUMNS)
)


class LowRankWarning(UserWarning):
    """``d < k``: the exact minimiser may be a local optimum and THEORY.md §4 does not apply."""


# ------------------------------------------------------------------------------ configurations


@dataclass(frozen=True)
class UFMConfig:
    """One UFM configuration: a loss, its regularisation and its optimiser (one batch member).

    Attributes
    ----------
    loss : str
        A registered loss that is a :class:`~cegeo.losses.ParametricCE` (``ce``, ``wce``,
        ``la``, ``cdt``, ``ldt``, ``vs``, ``balanced_softmax``).
    hyper : mapping of str to float
        The loss's hyperparameters (``gamma``, ``tau``, ``normalize``); defaults fill the rest.
    lam : float
        Weight decay on ``W`` and ``H`` (>= 0), the ``lam`` of the objective ``F``.
    lr : float
        Base learning rate (> 0).
    momentum : float
        Heavy-ball momentum in [0, 1) (PyTorch's SGD convention; 0 is plain GD).
    milestones : tuple of int
        Epochs at which the learning rate is multiplied by ``lr_decay`` (MultiStepLR).
    lr_decay : float
        The multiplier at each milestone (> 0).
    seed : int
        Seeds the initialisation and the mini-batch order of this configuration alone.
    """

    loss: str = "ce"
    hyper: Mapping[str, float] = field(default_factory=dict)
    lam: float = 5e-4  # weight decay on W and H
    lr: float = 0.1  # base learning rate
    momentum: float = 0.9  # heavy-ball momentum (0 = plain GD)
    milestones: tuple[int, ...] = ()  # epochs where lr *= lr_decay
    lr_decay: float = 0.1  # multiplier at each milestone
    seed: int = 0  # initialisation and mini-batch order

    def build_loss(self, class_counts: Any) -> ParametricCE:
        """The configuration's loss for these counts (an error unless it is a ParametricCE)."""
        hyper = dict(self.hyper)
        # names first: a key named class_counts or reduction would bind to create_loss's own arguments
        get_loss_info(self.loss).hyperparameters(hyper)
        loss = create_loss(self.loss, class_counts, **hyper)
        if not isinstance(loss, ParametricCE):
            raise fail(
                "loss",
                "a ParametricCE member of the registry (the UFM and its theory cover CE, wCE, LA, CDT, LDT, VS, balanced_softmax)",
                self.loss,
            )
        return loss

    def full_hyper(self) -> dict[str, float]:
        """Hyperparameters with the registry's defaults filled in."""
        info = get_loss_info(self.loss)
        return {**dict(info.defaults), **{k: float(v) for k, v in self.hyper.items()}}

    def validate(self) -> UFMConfig:
        """Check the numbers (one-line :class:`~cegeo.InputError` naming the field); return self."""
        lam = check_finite("lam", self.lam)
        if lam < 0:
            raise fail("lam", "a number >= 0 (weight decay)", self.lam)
        if check_finite("lr", self.lr) <= 0:
            raise fail("lr", "a number > 0", self.lr)
        mom = check_finite("momentum", self.momentum)
        if not 0 <= mom < 1:
            raise fail("momentum", "a number in [0, 1)", self.momentum)
        if check_finite("lr_decay", self.lr_decay) <= 0:
            raise fail("lr_decay", "a number > 0", self.lr_decay)
        ms = [check_int("milestones", m, minimum=1) for m in self.milestones]
        if ms != sorted(set(ms)):
            raise fail("milestones", "strictly increasing epochs", list(self.milestones))
        check_int("seed", self.seed, minimum=0, maximum=SEED_MAX)
        if not isinstance(self.hyper, Mapping):
            raise fail("hyper", "a mapping of hyperparameter names to numbers", self.hyper)
        return self

    def columns(self) -> dict[str, Any]:
        """The configuration columns of a tidy row."""
        out: dict[str, Any] = {"loss": self.loss}
        for name, value in self.full_hyper().items():
            # Hyperparameters are columns under their own names unless that would shadow one.
            out[f"hyper_{name}" if name in _RESERVED_COLUMNS else name] = value
        out.update(
            lam=float(self.lam),
            lr=float(self.lr),
            momentum=float(self.momentum),
            milestones=";".join(str(m) for m in self.milestones),
            lr_decay=float(self.lr_decay),
            seed=int(self.seed),
        )
        return out


def loss_vectors(loss: ParametricCE, k: int) -> dict[str, np.ndarray]:
    """The four per-class vectors of a ParametricCE as float64 arrays of length k.

    Missing buffers take their neutral values (``omega = Dc = Dl = 1``, ``iota = 0``).

    Examples
    --------
    >>> v = loss_vectors(create_loss("ldt", [100, 10], gamma=0.5, normalize=0), 2)
    >>> v["delta_label"].round(4).tolist(), v["omega"].tolist()
    ([1.0, 0.3162], [1.0, 1.0])
    """
    if not isinstance(loss, ParametricCE):
        raise fail("loss", "a ParametricCE", type(loss).__name__)
    out = {}
    for name, neutral in (("omega", 1.0), ("delta_logit", 1.0), ("delta_label", 1.0), ("iota", 0.0)):
        buf = getattr(loss, name)
        v = np.full(k, neutral) if buf is None else buf.detach().cpu().double().numpy().copy()
        if v.shape != (k,):
            raise fail("loss", f"a loss for k = {k} classes", v.shape)
        out[name] = v
    return out


def _labels(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(counts.size), counts)


def _check_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise fail("dtype", "'float32' or 'float64'", dtype)
        return _DTYPES[dtype]
    if dtype not in (torch.float32, torch.float64):
        raise fail("dtype", "'float32' or 'float64'", dtype)
    return dtype


def _check_device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise fail("device", "a torch device such as 'cpu' or 'cuda'", device) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise fail("device", "an available device (CUDA is not available here)", device)
    if dev.type not in ("cpu", "cuda"):
        raise fail("device", "'cpu' or 'cuda[:i]'", device)
    return dev


def _memory_of(dev: torch.device) -> int | None:
    """Bytes of memory ``dev`` has (None where it cannot be told)."""
    try:
        if dev.type == "cuda":
            return int(torch.cuda.get_device_properties(dev).total_memory)
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError, RuntimeError):  # no sysconf (Windows)
        return None


def _memory_needed(B: int, k: int, n: int, d: int, dt: torch.dtype, dev: torch.device) -> int:
    """Bytes :func:`simulate` holds at once on ``dev`` (a lower bound; its peak is at a log,
    epoch 0's included).

    Per (B, k, n) element: the loss constants scale, coef and neg_target in ``dt`` and the
    logits' buffers Z and dZ (five arrays); at every log, :func:`_measure` recomputes the loss
    and its gradient in float64: copies of the three constants (none when ``dt`` is float64)
    and about five work arrays of :func:`_full_loss_grad`; on the CPU, the float64 scale and
    coef the constants are rounded from, which stay alive (they are the constants themselves
    in float64). Per (k, n) element: the one-hot labels, in float64 on the CPU, in ``dt`` on
    ``dev`` and in float64 at a log (one array where these coincide). Plus
    parameters, gradients and momentum of (B, k*d + d*n): the torch tensors alive at the peak
    (tested); the resident memory measured on the CPU is about as much, or more.
    """
    size = torch.finfo(dt).bits // 8
    f64, cpu = dt == torch.float64, dev.type == "cpu"
    per = 5 * size + 8 * ((0 if f64 else 3) + 5) + (2 * 8 if cpu and not f64 else 0)
    per_kn = (0 if f64 and cpu else size) + (0 if f64 else 8) + (8 if cpu else 0)
    return B * k * n * per + k * n * per_kn + 3 * size * B * (k * d + d * n)


def _check_memory(B: int, k: int, n: int, d: int, dt: torch.dtype, dev: torch.device) -> None:
    """Refuse a batch whose tensors cannot fit in the device's memory, before allocating them
    (:func:`_memory_needed`): a problem above it would be killed by the system (or fail in an
    allocation) after the setup, not refused.
    """
    need = _memory_needed(B, k, n, d, dt, dev)
    have = _memory_of(dev)
    if have is not None and need > have:
        raise InputError(
            f"`class_counts`, `d` and the {B} configuration(s) must fit in memory: the UFM needs at least "
            f"{need / 2**30:.3g} GiB for k = {k} classes, n = {n} samples, d = {d}, more than the "
            f"{have / 2**30:.3g} GiB this {dev.type.upper()} has; use fewer samples, a smaller d or fewer "
            "configurations (losses x grid values x seeds)."
        )


def check_threads(param: str, value: Any) -> int:
    """``value`` as a thread count in ``[1, MAX_THREADS]`` (one-line error naming ``param``)."""
    threads = check_int(param, value, minimum=1)
    if threads > MAX_THREADS:
        raise fail(param, f"an integer in [1, {MAX_THREADS}]", value)
    return threads


def _seeds(seed: int) -> tuple[int, int]:
    """Independent init and shuffle seeds derived from one configuration seed."""
    a, b = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint64)
    return int(a) >> 1, int(b) >> 1


def initial_parameters(seed: int, k: int, d: int, n: int, init_std: float) -> tuple[Tensor, Tensor]:
    """The float64 CPU initialisation ``W`` (k, d), ``H`` (d, n) of a seed: i.i.d. N(0, init_std^2).

    Drawn on the CPU from the seed alone, so it is the same on every device, dtype and batch.
    """
    g = torch.Generator().manual_seed(_seeds(seed)[0])
    W = torch.randn(k, d, generator=g, dtype=torch.float64) * init_std
    H = torch.randn(d, n, generator=g, dtype=torch.float64) * init_std
    return W, H


# ------------------------------------------------------------------------------- the objective


def ufm_objective(loss: ParametricCE, W: Tensor, H: Tensor, labels: Tensor, lam: float) -> Tensor:
    """``F(W, H) = loss((W H)^T, y) + lam/2 (||W||^2 + ||H||^2)`` with the loss module itself.

    The reference implementation of the objective (autograd-friendly); :func:`simulate` and
    :func:`minimize_ufm` minimise the same function with hand-written gradients.

    Examples
    --------
    >>> import torch
    >>> loss = create_loss("ce")
    >>> W, H = torch.zeros(3, 2), torch.zeros(2, 4)
    >>> round(float(ufm_objective(loss, W, H, torch.tensor([0, 1, 2, 2]), 0.1)), 6)  # log 3
    1.098612
    """
    Z = (W @ H).T  # (n, k)
    return loss(Z, labels) + 0.5 * lam * (W.pow(2).sum() + H.pow(2).sum())


# ------------------------------------------------------------------------------- measurements


def nc1_score(H: np.ndarray, labels: np.ndarray, k: int) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+)/k of embeddings ``H`` (d, n) (module docstring weighting).

    ``Sigma_W`` averages over all samples, ``Sigma_B`` weighs every class the same about the
    sample mean; the pseudo-inverse keeps the top ``k - 1`` eigenvalues above 1e-12 of the
    largest. NaN when the class means coincide.

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 1.0, -1.0, -1.0], [0.1, -0.1, 0.0, 0.0]])
    >>> round(nc1_score(H, np.array([0, 0, 1, 1]), 2), 6)  # within spread 0.005 over between 1
    0.0
    """
    n = H.shape[1]
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0
    means = H @ (onehot / onehot.sum(0))  # (d, k)
    within = H - means[:, labels]
    sigma_w = within @ within.T / n  # (d, d)
    C = means - H.mean(1, keepdims=True)  # (d, k)
    # Eigenvectors of Sigma_B = C C^T / k from the small k x k Gram C^T C / k.
    lam, U = np.linalg.eigh(C.T @ C / k)
    lam, U = lam[::-1][: min(k - 1, H.shape[0])], U[:, ::-1][:, : min(k - 1, H.shape[0])]
    keep = lam > max(lam[0], 0.0) * 1e-12 if lam.size else np.zeros(0, dtype=bool)
    if not np.any(keep):
        return float("nan")
    lam, U = lam[keep], U[:, keep]
    V = C @ U / np.sqrt(k * lam)  # (d, r) orthonormal eigenvectors of Sigma_B
    return float(np.sum(np.einsum("dr,de,er->r", V, sigma_w, V) / lam) / k)


@dataclass
class _Problem:
    """Per-batch constant tensors of a simulation (on the device, in the run's dtype)."""

    counts: np.ndarray
    labels: Tensor  # (n,) int64
    onehot: Tensor  # (k, n)
    dc: Tensor  # (B, k)
    dl: Tensor  # (B, k)
    omega: Tensor  # (B, k)
    iota: Tensor | None  # (B, k, 1) or None when all zero
    scale: Tensor  # (B, k, n): Dl_{y_i} Dc_c
    coef: Tensor  # (B, k, n): scale * omega_{y_i} / sum_j omega_{y_j}
    neg_target: Tensor  # (B, k, n): -onehot * coef


def _full_loss_grad(W: Tensor, H: Tensor, pr: _Problem) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Full-batch loss L (B,), logits Z (B, k, n) and the gradients of L w.r.t. W and H."""
    Z = torch.bmm(W, H)  # (B, k, n)
    T = Z * pr.scale
    if pr.iota is not None:
        T = T + pr.iota
    logp = torch.log_softmax(T, dim=1)  # (B, k, n)
    w = pr.omega[:, pr.labels]  # (B, n)
    per = -(logp * pr.onehot).sum(1)  # (B, n)
    loss = (w * per).sum(1) / w.sum(1)
    dZ = torch.exp(logp) * pr.coef + pr.neg_target  # coef (P - Y)
    return loss, Z, torch.bmm(dZ, H.transpose(1, 2)), torch.bmm(W.transpose(1, 2), dZ)


def _measure(
    W: Tensor,
    H: Tensor,
    pr: _Problem,
    lams: Sequence[float],
    groups: Groups,
    theory: Sequence[Geometry],
) -> list[dict[str, Any]]:
    """One metrics dict per configuration, in float64.

    The loss and its gradient are computed batched on the device with the training step's
    kernels; everything else per configuration in NumPy, so a configuration's row does not
    depend on its batch companions.
    """
    W = W.double()
    H = H.double()
    pr64 = _Problem(
        pr.counts,
        pr.labels,
        pr.onehot.double(),
        pr.dc.double(),
        pr.dl.double(),
        pr.omega.double(),
        None if pr.iota is None else pr.iota.double(),
        pr.scale.double(),
        pr.coef.double(),
        pr.neg_target.double(),
    )
    loss_t, Z, gW_t, gH_t = _full_loss_grad(W, H, pr64)
    losses = loss_t.cpu().numpy()
    pred_all = Z.argmax(1).cpu().numpy()  # (B, n)
    W_all, H_all = W.cpu().numpy(), H.cpu().numpy()
    gW_all, gH_all = gW_t.cpu().numpy(), gH_t.cpu().numpy()
    counts = pr.counts.astype(np.float64)
    k = counts.size
    labels = _labels(pr.counts)
    avg = np.zeros((labels.size, k))
    avg[np.arange(labels.size), labels] = 1.0 / counts[labels]  # (n, k): class means
    maj, mino = groups.members(groups.names[0]), groups.members(groups.names[-1])
    nan = float("nan")
    rows = []
    for b, lam in enumerate(lams):
        Wb, Hb = W_all[b], H_all[b]
        # A diverging run overflows here (its parameters may still be finite); it is reported
        # as finite = False below, not as a stray RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            sq_w, sq_h = float(np.sum(Wb * Wb)), float(np.sum(Hb * Hb))
            loss = float(losses[b])
            gnorm = math.sqrt(
                float(np.sum((gW_all[b] + lam * Wb) ** 2) + np.sum((gH_all[b] + lam * Hb) ** 2))
            )
            scale = lam * math.sqrt(sq_w + sq_h)
        correct = pred_all[b] == labels
        row: dict[str, Any] = {
            "train_loss": loss,
            "objective": loss + 0.5 * lam * (sq_w + sq_h),
            # Without weight decay there is no stationary point to be relative to: ||grad L||.
            "grad_rel": gnorm if lam == 0 else (gnorm / scale if scale > 0 and math.isfinite(scale) else nan),
            "train_acc": float(correct.mean()),
            "train_bal_acc": float(np.mean(np.bincount(labels, weights=correct, minlength=k) / counts)),
            "W_norm": math.sqrt(sq_w),
            "H_norm": math.sqrt(sq_h),
        }
        finite = bool(np.isfinite(loss) and sq_w + sq_h <= _DIVERGED_SQNORM)
        row["finite"] = finite
        if not finite:
            row.update({key: nan for key in GEOMETRY_COLUMNS})
            rows.append(row)
            continue
        means = Hb @ avg  # (d, k)
        G_W, G_H, M = Wb @ Wb.T, means.T @ means, Wb @ means
        wn, hn = np.sqrt(np.diag(G_W)), np.sqrt(np.diag(G_H))
        row.update(_group_norms(wn, hn, maj, mino))
        row.update(group_summary(G_W, G_H, M, groups))
        th = theory[b]
        row.update(
            nc1=nc1_score(Hb, labels, k),
            dist_W=_safe_distance(G_W, th.G_W),
            dist_H=_safe_distance(G_H, th.G_H),
            dist_M=_safe_distance(M, th.M),
        )
        rows.append(row)
    return rows


def _group_norms(wn: np.ndarray, hn: np.ndarray, maj: np.ndarray, mino: np.ndarray) -> dict[str, float]:
    """Mean norms per group (NaN for an empty group, e.g. balanced counts have no minority)."""

    def mean(v: np.ndarray, idx: np.ndarray) -> float:
        return float(v[idx].mean()) if idx.size else float("nan")

    return {
        "W_norm_maj": mean(wn, maj),
        "W_norm_min": mean(wn, mino),
        "H_norm_maj": mean(hn, maj),
        "H_norm_min": mean(hn, mino),
    }


def _safe_distance(G: np.ndarray, G_ref: np.ndarray) -> float:
    if not np.any(G):
        return float("nan")
    return distance(G, G_ref)


# ------------------------------------------------------------------------------- the simulator


@dataclass
class UFMResult:
    """What :func:`simulate` returns.

    Attributes
    ----------
    configs : list of UFMConfig
    class_counts : ndarray (k,)
    groups : Groups
    d, epochs : int
    batch_size : int or None
        None for full-batch.
    init_std : float
    dtype, device : str
    rows : list of dict
        The tidy table: one row per configuration per logging step, configuration columns
        (``config`` index, ``loss``, its hyperparameters, ``lam``, ``lr``, ``momentum``,
        ``milestones``, ``lr_decay``, ``seed``, ``batch_size``, ``d``, ``dtype``) then
        :data:`METRIC_COLUMNS`.
    W : ndarray (B, k, d)
        Final classifiers (float64 copies).
    H : ndarray (B, d, n)
        Final embeddings (columns ordered by class).
    theory : list of Geometry
        :func:`cegeo.theory.predict` for each configuration's loss and the counts.
    train_time_s : float
        Wall time of the optimisation loop (logging excluded; synchronised on CUDA).
    """

    configs: list[UFMConfig]
    class_counts: np.ndarray
    groups: Groups
    d: int
    epochs: int
    batch_size: int | None
    init_std: float
    dtype: str
    device: str
    rows: list[dict[str, Any]]
    W: np.ndarray
    H: np.ndarray
    theory: list[Geometry]
    train_time_s: float

    @property
    def columns(self) -> list[str]:
        """Column names in table order (union over rows, each row's order kept: ufm.csv's header)."""
        return csv_columns(self.rows)

    def final_rows(self) -> list[dict[str, Any]]:
        """The last logged row of each configuration (index = configuration)."""
        last: dict[int, dict[str, Any]] = {}
        for row in self.rows:
            last[row["config"]] = row
        return [last[b] for b in range(len(self.configs))]

    def to_csv(self, path: str | Path) -> Path:
        """Write :attr:`rows` as CSV (atomically); returns the path."""
        return write_rows_csv(path, self.rows)


def write_rows_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV with the union of their keys as header (:func:`cegeo._io.csv_columns`:
    a hyperparameter column sits after ``loss`` even when the first row's loss lacks it; atomic;
    NaN written empty)."""
    return write_csv(path, rows)


def _log_epochs(epochs: int, log_every: int | None) -> list[int]:
    if log_every is None:
        return [0, epochs]
    return sorted({0, epochs, *range(log_every, epochs, log_every)})


def _lr_table(configs: Sequence[UFMConfig], epochs: int) -> np.ndarray:
    """lr of each configuration at each epoch, (epochs, B): MultiStepLR semantics."""
    e = np.arange(epochs)
    cols = []
    for c in configs:
        passed = np.searchsorted(np.asarray(c.milestones, dtype=np.int64), e, side="right")
        cols.append(c.lr * c.lr_decay ** passed.astype(np.float64))
    return np.stack(cols, 1)


def simulate(
    configs: Sequence[UFMConfig] | UFMConfig,
    class_counts: Any,
    d: int,
    epochs: int,
    *,
    batch_size: int | None = None,
    init_std: float = 0.1,
    dtype: Any = "float64",
    device: Any = "cpu",
    log_every: int | None = None,
    groups: Groups | None = None,
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = 1,
) -> UFMResult:
    """Train the regularised UFM for many configurations at once (one batched tensor program).

    Each configuration ``b`` minimises ``F_b(W, H) = L_b(W H) + lam_b/2 (||W||^2 + ||H||^2)``
    (module docstring) with PyTorch's SGD semantics: ``g = grad L + lam p``, ``buf = momentum
    buf + g`` (``buf = g`` at the first step), ``p -= lr buf``; the learning rate follows
    MultiStepLR (``lr * lr_decay^(milestones passed)``, stepped per epoch). Full-batch
    (``batch_size=None``: one step per epoch) or mini-batches drawn by a per-configuration
    permutation each epoch (the last batch may be smaller; weight decay and momentum act on all
    of ``H`` every step, as they do for an embedding table in torch).

    Batched = alone: a configuration's trajectory depends only on its own seed and settings.
    On the CPU with one intra-op thread (``threads=1``, the default) the batched run is bitwise
    identical to running the configuration alone, in float32 and float64: every operation
    computes each batch member with the same kernel in the same order (tested). With more
    threads, MKL and the softmax split single matrices differently from batches, and on CUDA
    cuBLAS may pick another kernel for another batch size; then results differ by rounding
    (1 ulp per step) carried through the dynamics, which near a minimum do not amplify it:
    ~1e-15 relative in float64 after the paper's 6000 epochs.

    Parameters
    ----------
    configs : UFMConfig or sequence of UFMConfig
        The batch; losses must be :class:`~cegeo.losses.ParametricCE` members.
    class_counts : array-like (k,)
        Training samples per class; samples are ordered by class.
    d : int
        Embedding dimension.
    epochs : int
        Passes over the ``n = sum(class_counts)`` samples.
    batch_size : int, optional
        Mini-batch size; None (or >= n) is full-batch gradient descent.
    init_std : float
        ``W`` and ``H`` start i.i.d. N(0, init_std^2), drawn from each configuration's seed.
    dtype : {"float64", "float32"} or torch.dtype
        Training precision (measurements are always float64).
    device : str or torch.device
        "cpu" or "cuda[:i]".
    log_every : int, optional
        Log every this many epochs (epoch 0 and the last epoch are always logged).
    groups : Groups, optional
        Majority/minority groups; default :func:`cegeo.data.imbalance.groups` of the counts.
    progress : callable, optional
        ``progress(epochs_done, epochs)``, called about 200 times.
    threads : int or None
        CPU intra-op threads during the run (restored afterwards); None leaves torch's
        setting. One thread keeps batched runs bitwise reproducible and avoids OpenMP stalls
        when other processes share the cores; the batch, not threads, is the parallelism here.
        At most :data:`MAX_THREADS`.

    Returns
    -------
    UFMResult

    Raises
    ------
    ValueError
        An empty batch, a loss that is not a ParametricCE, bad counts, ``d``, ``epochs``,
        ``batch_size``, ``init_std``, ``threads``, dtype or device, or a bad configuration field.

    Examples
    --------
    >>> cfgs = [UFMConfig("ldt", {"gamma": g}, lam=1e-2, lr=0.5, momentum=0.0) for g in (0.0, 0.5)]
    >>> res = simulate(cfgs, [4, 4, 1, 1], d=4, epochs=50, log_every=25)
    >>> len(res.rows), res.rows[-1]["epoch"], res.rows[-1]["gamma"]
    (6, 50, 0.5)
    >>> res.rows[-1]["train_loss"] < res.rows[1]["train_loss"]
    True
    """
    if isinstance(configs, UFMConfig):
        configs = [configs]
    configs = list(configs)
    if not configs:
        raise fail("configs", "at least one UFMConfig", configs)
    for c in configs:
        if not isinstance(c, UFMConfig):
            raise fail("configs", "UFMConfig objects", type(c).__name__)
    counts = check_class_counts(class_counts)
    k = int(counts.size)
    if k < 2:
        raise fail("class_counts", "at least two classes", counts)
    d = check_int("d", d, minimum=1)
    epochs = check_int("epochs", epochs, minimum=1)
    n = int(counts.sum())
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if batch_size >= n:
            batch_size = None
    init_std = check_finite("init_std", init_std)
    if init_std <= 0:
        raise fail("init_std", "a number > 0", init_std)
    if log_every is not None:
        log_every = check_int("log_every", log_every, minimum=1)
    if threads is not None:
        threads = check_threads("threads", threads)
    dt = _check_dtype(dtype)
    dev = _check_device(device)
    for c in configs:
        c.validate()
    grp = groups if groups is not None else make_groups(counts)
    losses = [c.build_loss(counts) for c in configs]
    theory = [predict(loss, counts, grp) for loss in losses]
    vecs = [loss_vectors(loss, k) for loss in losses]
    B = len(configs)
    _check_memory(B, k, n, d, dt, dev)

    def stack(name: str) -> Tensor:
        return torch.as_tensor(np.stack([v[name] for v in vecs]), dtype=torch.float64)

    labels_np = _labels(counts)
    labels = torch.as_tensor(labels_np, device=dev)
    onehot64 = torch.zeros(k, n, dtype=torch.float64)
    onehot64[labels_np, np.arange(n)] = 1.0
    dc, dl, omega, iota = stack("delta_logit"), stack("delta_label"), stack("omega"), stack("iota")
    # Loss constants are formed in float64 and rounded once, so every dtype sees the same numbers.
    scale64 = dl[:, labels_np].unsqueeze(1) * dc.unsqueeze(2)  # (B, k, n)
    w = omega[:, labels_np]  # (B, n)
    coef64 = scale64 * (w / w.sum(1, keepdim=True)).unsqueeze(1)
    pr = _Problem(
        counts=counts,
        labels=labels,
        onehot=onehot64.to(dev, dt),
        dc=dc.to(dev, dt),
        dl=dl.to(dev, dt),
        omega=omega.to(dev, dt),
        iota=None if not torch.any(iota != 0) else iota.unsqueeze(2).to(dev, dt),
        scale=scale64.to(dev, dt),
        coef=coef64.to(dev, dt),
        neg_target=(-onehot64 * coef64).to(dev, dt),
    )
    # Parameters: one flat (B, k*d + d*n) buffer so the optimiser update is 3 kernels for all.
    inits = [initial_parameters(c.seed, k, d, n, init_std) for c in configs]
    params = torch.cat(
        [torch.stack([W.reshape(-1) for W, _ in inits]), torch.stack([H.reshape(-1) for _, H in inits])], 1
    ).to(dev, dt)
    kd = k * d
    W = params[:, :kd].view(B, k, d)
    H = params[:, kd:].view(B, d, n)
    grads = torch.zeros_like(params)
    gW = grads[:, :kd].view(B, k, d)
    gH = grads[:, kd:].view(B, d, n)
    buf = torch.zeros_like(params)
    lam = torch.tensor([c.lam for c in configs], dtype=torch.float64).view(B, 1).to(dev, dt)
    mom = torch.tensor([c.momentum for c in configs], dtype=torch.float64).view(B, 1).to(dev, dt)
    use_momentum = any(c.momentum > 0 for c in configs)
    lr_table = torch.as_tensor(_lr_table(configs, epochs)).to(dev, dt).unsqueeze(2)  # (E, B, 1)
    lr_np = _lr_table(configs, epochs)
    log_at = set(_log_epochs(epochs, log_every))
    rows: list[dict[str, Any]] = []
    cfg_cols = []
    for b, c in enumerate(configs):
        cols = {"config": b, **c.columns()}
        cols.update(
            batch_size=batch_size if batch_size is not None else n, d=d, dtype=str(dt).replace("torch.", "")
        )
        cfg_cols.append(cols)
    shuffle_gens = [torch.Generator().manual_seed(_seeds(c.seed)[1]) for c in configs]
    steps_per_epoch = 1 if batch_size is None else math.ceil(n / batch_size)
    lam_list = [float(c.lam) for c in configs]

    def log(epoch: int) -> None:
        lr_now = lr_np[min(epoch, epochs - 1)]
        for b, metrics in enumerate(_measure(W, H, pr, lam_list, grp, theory)):
            row = dict(cfg_cols[b])
            row.update(epoch=epoch, step=epoch * steps_per_epoch, lr_now=float(lr_now[b]))
            row.update((key, metrics[key]) for key in METRIC_COLUMNS if key in metrics)  # documented order
            rows.append(row)

    def sgd_step(lr: Tensor) -> None:
        grads.addcmul_(lam, params)  # g + lam p (coupled weight decay)
        if use_momentum:
            torch.addcmul(grads, buf, mom, out=buf)  # buf = momentum buf + g
            params.addcmul_(lr, buf, value=-1.0)
        else:
            params.addcmul_(lr, grads, value=-1.0)

    Z = torch.empty(B, k, n, dtype=dt, device=dev)
    dZ = torch.empty_like(Z)

    def full_batch_step(lr: Tensor) -> None:
        torch.bmm(W, H, out=Z)  # logits, (B, k, n)
        Z.mul_(pr.scale)
        if pr.iota is not None:
            Z.add_(pr.iota)
        P = torch.softmax(Z, dim=1)  # (B, k, n)
        torch.addcmul(pr.neg_target, P, pr.coef, out=dZ)  # dL/dZ = coef (P - Y)
        torch.bmm(dZ, H.transpose(1, 2), out=gW)
        torch.bmm(W.transpose(1, 2), dZ, out=gH)
        sgd_step(lr)

    def mini_batch_epoch(lr: Tensor) -> None:
        assert batch_size is not None
        perms = torch.stack([torch.randperm(n, generator=g) for g in shuffle_gens]).to(dev)  # (B, n)
        for start in range(0, n, batch_size):
            idx = perms[:, start : start + batch_size]  # (B, m)
            m = idx.shape[1]
            yb = labels[idx]  # (B, m)
            cols = idx.unsqueeze(1).expand(B, d, m)
            Hb = H.gather(2, cols)  # (B, d, m)
            scale = pr.dl.gather(1, yb).unsqueeze(1) * pr.dc.unsqueeze(2)  # (B, k, m)
            wb = pr.omega.gather(1, yb)  # (B, m)
            coef = scale * (wb / wb.sum(1, keepdim=True)).unsqueeze(1)
            Zb = torch.bmm(W, Hb).mul_(scale)
            if pr.iota is not None:
                Zb.add_(pr.iota)
            P = torch.softmax(Zb, dim=1)
            Yb = torch.zeros_like(P).scatter_(1, yb.unsqueeze(1), 1.0)
            dZb = (P - Yb).mul_(coef)
            torch.bmm(dZb, Hb.transpose(1, 2), out=gW)
            gH.zero_()
            gH.scatter_(2, cols, torch.bmm(W.transpose(1, 2), dZb))  # indices distinct per row
            sgd_step(lr)

    every = max(1, epochs // 200)
    train_time = 0.0
    with _intra_op_threads(threads if dev.type == "cpu" else None):
        log(0)
        _sync(dev)
        t0 = time.perf_counter()
        for epoch in range(epochs):
            check_interrupt()  # a SIGTERM whose KeyboardInterrupt was swallowed (cegeo._signals)
            if batch_size is None:
                full_batch_step(lr_table[epoch])
            else:
                mini_batch_epoch(lr_table[epoch])
            done = epoch + 1
            if done in log_at:
                _sync(dev)
                train_time += time.perf_counter() - t0
                log(done)
                t0 = time.perf_counter()
            if progress is not None and (done % every == 0 or done == epochs):
                progress(done, epochs)
    return UFMResult(
        configs=configs,
        class_counts=counts,
        groups=grp,
        d=d,
        epochs=epochs,
        batch_size=batch_size,
        init_std=init_std,
        dtype=str(dt).replace("torch.", ""),
        device=str(dev),
        rows=rows,
        W=W.detach().double().cpu().numpy().copy(),
        H=H.detach().double().cpu().numpy().copy(),
        theory=theory,
        train_time_s=train_time,
    )


@contextlib.contextmanager
def _intra_op_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's CPU intra-op thread count (None: leave it)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ------------------------------------------------------------------ the exact regularised minimiser


class _ClassLevel:
    """The class-level objective ``F / lam`` in variables ``x = (W, G)``, ``G = H_class N^1/2``.

    ``G``'s columns are ``sqrt(n_y) h_y``: the regulariser becomes ``(||W||^2 + ||G||^2)/2``,
    which equalises the curvature of majority and minority embeddings for L-BFGS. The loss of
    class y is evaluated as ``m + log1p(sum_{c != c*} exp(u_cy - m))`` with ``u_cy = T_cy -
    T_yy`` and ``m = max_c u_cy`` (attained at ``c*``), so it keeps full relative precision when
    it is tiny (lam -> 0), where ``logsumexp(T) - T_yy`` would cancel.
    """

    def __init__(self, vecs: Mapping[str, np.ndarray], counts: np.ndarray, lam: float, d: int) -> None:
        self.k = int(counts.size)
        self.d = int(d)
        self.n = counts.astype(np.float64)
        self.isqn = 1.0 / np.sqrt(self.n)
        self.lam = float(lam)
        wts = self.n * vecs["omega"]
        self.pi = wts / wts.sum()  # (k,) class weights of L
        self.scale = vecs["delta_logit"][:, None] * vecs["delta_label"][None, :]  # (k, k) [c, y]
        self.iota = vecs["iota"][:, None]  # (k, 1)

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``W`` (..., k, d) and ``G`` (..., d, k) from ``x`` (..., 2 k d)."""
        kd = self.k * self.d
        lead = x.shape[:-1]
        return x[..., :kd].reshape(*lead, self.k, self.d), x[..., kd:].reshape(*lead, self.d, self.k)

    def logits(self, x: np.ndarray) -> np.ndarray:
        W, G = self.unpack(x)
        return (W @ G) * self.isqn  # M = W H_class, (..., k, k)

    def loss_and_dM(self, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """L (...) and dL/dM (..., k, k) for class-level logits M (..., k, k)."""
        k = self.k
        T = self.scale * M + self.iota
        U = T - np.diagonal(T, axis1=-2, axis2=-1)[..., None, :]  # u_cy, zero diagonal
        m = U.max(-2)  # (..., k) >= 0
        E = np.exp(U - m[..., None, :])
        # log(sum_c E_c) = log1p(sum_c E_c - 1) with the maximal term (exactly 1) left out.
        top = U.argmax(-2)[..., None, :]
        np.put_along_axis(E, top, 0.0, axis=-2)
        per = m + np.log1p(E.sum(-2))  # (..., k) loss of each class
        P = np.exp(U - per[..., None, :])  # softmax probabilities
        idx = np.arange(k)
        P[..., idx, idx] = 0.0
        P[..., idx, idx] = -P.sum(-2)  # p_yy - 1 without cancellation
        dM = P * self.pi * self.scale
        return per @ self.pi, dM

    def __call__(self, x: np.ndarray) -> tuple[Any, np.ndarray]:
        """``F / lam`` and its gradient (batched over leading axes of x)."""
        W, G = self.unpack(x)
        M = (W @ G) * self.isqn
        L, dM = self.loss_and_dM(M)
        dMs = dM * self.isqn  # dL/dM' with M' = W G
        gW = dMs @ np.swapaxes(G, -1, -2) / self.lam + W
        gG = np.swapaxes(W, -1, -2) @ dMs / self.lam + G
        f = L / self.lam + 0.5 * np.sum(x * x, -1)
        lead = x.shape[:-1]
        return f, np.concatenate([gW.reshape(*lead, -1), gG.reshape(*lead, -1)], -1)

    def certificate(self, x: np.ndarray) -> float:
        """``||grad_{M'} L||_2 / lam``: <= 1 at a stationary point certifies the global minimum."""
        _, dM = self.loss_and_dM(self.logits(x))
        return float(np.linalg.norm(dM * self.isqn, 2) / self.lam)


def _newton_polish(prob: _ClassLevel, x: np.ndarray, tol: float, steps: int = 6) -> tuple[np.ndarray, float]:
    """Newton steps with a central-difference Hessian of the analytic gradient.

    The Hessian is singular along the rotations ``(W Q, Q^T G)``; the pseudo-inverse step
    stays in its range. A step is kept only if it lowers the relative gradient norm.
    """
    f, g = prob(x)
    rel = float(np.linalg.norm(g) / np.linalg.norm(x))
    for _ in range(steps):
        if rel <= tol:
            break
        eps = 1e-6 * max(1.0, float(np.abs(x).max()))
        E = np.eye(x.size) * eps
        Hm = (prob(x + E)[1] - prob(x - E)[1]).T / (2 * eps)  # all 2P gradients in one call
        vals, vecs = np.linalg.eigh(0.5 * (Hm + Hm.T))
        keep = np.abs(vals) > 1e-10 * np.abs(vals).max()
        step = -vecs[:, keep] @ ((vecs[:, keep].T @ g) / vals[keep])
        t = 1.0
        while t >= 1e-3:
            xn = x + t * step
            fn, gn = prob(xn)
            reln = float(np.linalg.norm(gn) / np.linalg.norm(xn))
            if reln < rel and fn <= f + 1e-12 * abs(f):
                break
            t *= 0.5
        else:
            break
        x, f, g, rel = xn, fn, gn, reln
    return x, rel


@dataclass
class UFMMinimum:
    """The regularised UFM minimiser at one ``lam`` (from :func:`minimize_ufm`).

    Attributes
    ----------
    config : UFMConfig
    lam : float
    W : ndarray (k, d)
    H : ndarray (d, k)
        Class embeddings ``h_y`` as columns (every sample of class y sits at ``h_y``).
    objective, loss : float
        ``F`` and ``L`` at the minimiser.
    grad_rel : float
        ``||grad (F/lam)|| / ||x||`` in the scaled variables; the tolerance test.
    certificate : float
        ``||grad_{M'} L||_2 / lam`` (module docstring); ``<= 1 + ~grad_rel`` means global.
    iterations : int
        L-BFGS iterations (all restarts).
    converged : bool
        ``grad_rel <= tol``.
    escapes : int
        Saddles left along the certificate's direction before the final point (a warm start
        from a minimiser whose minority rows are exactly 0 sits on such a saddle).
    metrics : dict
        The measurement columns (:data:`METRIC_COLUMNS` where defined; ``nc1`` is 0). NaN
        geometry (norm ratios, cosines, Gram distances) when the minimiser is zero.
    x : ndarray
        The optimiser's variables (for warm starts).
    zero : bool
        The minimiser is ``W = H = 0`` (the weight decay is too large for any fit): certified by
        ``certificate <= 1`` at the origin, i.e. ``||grad_{M'} L(0)||_2 <= lam``. Its geometry is
        undefined and reported as NaN.
    """

    config: UFMConfig
    lam: float
    W: np.ndarray
    H: np.ndarray
    objective: float
    loss: float
    grad_rel: float
    certificate: float
    iterations: int
    converged: bool
    metrics: dict[str, float]
    x: np.ndarray = field(repr=False)
    escapes: int = 0
    zero: bool = False

    @property
    def is_global(self) -> bool:
        """Converged and certified (``certificate <= 1 + 1e-6``).

        The certificate is sufficient for any ``d``. For ``d >= k`` it is also necessary (the
        solver escapes uncertified points, so False means it ran out of iterations); for
        ``d < k`` a global minimiser may fail it, and a False result may be a local optimum.
        """
        return self.converged and self.certificate <= 1 + 1e-6


def _class_metrics(
    W: np.ndarray, Hc: np.ndarray, counts: np.ndarray, groups: Groups, theory: Geometry
) -> dict[str, float]:
    G_W, G_H, M = W @ W.T, Hc.T @ Hc, W @ Hc
    maj, mino = groups.members(groups.names[0]), groups.members(groups.names[-1])
    wn, hn = np.sqrt(np.diag(G_W)), np.sqrt(np.diag(G_H))
    correct = (M.argmax(0) == np.arange(counts.size)).astype(np.float64)
    out = {
        "train_acc": float(correct @ counts / counts.sum()),
        "train_bal_acc": float(correct.mean()),
        "W_norm": float(np.linalg.norm(W)),
        "H_norm": float(np.sqrt(np.sum(hn**2 * counts))),
        **_group_norms(wn, hn, maj, mino),
    }
    out.update(group_summary(G_W, G_H, M, groups))
    out.update(
        nc1=0.0,
        dist_W=_safe_distance(G_W, theory.G_W),
        dist_H=_safe_distance(G_H, theory.G_H),
        dist_M=_safe_distance(M, theory.M),
    )
    return out


def minimize_ufm(
    config: UFMConfig,
    class_counts: Any,
    d: int,
    *,
    lam: float | None = None,
    tol: float = 1e-9,
    max_iter: int = 20000,
    x0: np.ndarray | None = None,
    init_std: float = 0.1,
    groups: Groups | None = None,
) -> UFMMinimum:
    """Minimise the regularised UFM objective ``F`` (module docstring) with L-BFGS in float64.

    Solves the class-level problem (the minimiser collapses each class to one embedding) in
    the scaled variables of ``F / lam``, restarting L-BFGS from where it stopped until
    ``||grad (F/lam)|| <= tol ||x||`` or ``max_iter`` iterations (finishing with Newton steps
    when float64 line searches stall). For ``d >= k`` a stationary point whose certificate
    exceeds 1 is a saddle; the solver leaves it along the violating direction and descends
    again, so the result is the global minimiser (``is_global``). For ``d < k`` (outside
    THEORY.md §4, which assumes ``d >= k``) there is no such guarantee: the result may be a
    local optimum, and a :class:`LowRankWarning` says so. When the weight decay is so large
    that ``W = H = 0`` is the minimiser (``||grad_{M'} L(0)||_2 <= lam``), that is returned at
    once with ``zero = True`` and NaN geometry.

    Parameters
    ----------
    config : UFMConfig
        Loss, hyperparameters, ``lam`` (its optimiser fields are ignored).
    class_counts : array-like (k,)
    d : int
        Embedding dimension (``d >= k`` for the nuclear-norm certificate to be exact; smaller
        ``d`` warns).
    lam : float, optional
        Overrides ``config.lam``; must be > 0.
    tol : float
        Relative gradient tolerance.
    max_iter : int
        L-BFGS iteration budget (all restarts).
    x0 : ndarray, optional
        Warm start (``UFMMinimum.x`` of a neighbouring ``lam``); default a N(0, init_std^2) draw
        from ``config.seed``.
    init_std : float
    groups : Groups, optional

    Returns
    -------
    UFMMinimum

    Raises
    ------
    ValueError
        ``lam <= 0``, a loss that is not a ParametricCE, bad counts, ``d`` or ``tol``.

    Warns
    -----
    LowRankWarning
        ``d < k``: the minimiser found may be a local optimum.

    Examples
    --------
    >>> m = minimize_ufm(UFMConfig("ldt", {"gamma": 0.5}, lam=1e-3), [10, 10, 1, 1], d=4)
    >>> m.converged, round(m.certificate, 6)
    (True, 1.0)
    >>> round(m.metrics["W_ratio"], 2)  # -> 1 (the ETF of LDT gamma = 1/2) as lam -> 0
    1.36
    """
    counts = check_class_counts(class_counts)
    k = int(counts.size)
    d = check_int("d", d, minimum=1)
    lam_v = check_finite("lam", config.lam if lam is None else lam)
    if lam_v <= 0:
        raise fail("lam", "a number > 0 (the minimiser does not exist at lam = 0)", lam_v)
    tol = check_finite("tol", tol)
    if tol <= 0:
        raise fail("tol", "a number > 0", tol)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    grp = groups if groups is not None else make_groups(counts)
    loss = config.build_loss(counts)
    theory = predict(loss, counts, grp)
    # With d >= k the minimiser lives in a k-dimensional subspace (its value and Grams do not
    # depend on d), so solve in d_eff = min(d, k) dimensions and pad W and H with zeros.
    d_eff = min(d, k)
    prob = _ClassLevel(loss_vectors(loss, k), counts, lam_v, d_eff)
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64).copy()
        if x0.shape != (2 * k * d_eff,):
            raise fail(
                "x0", f"a vector of length {2 * k * d_eff} (UFMMinimum.x of the same problem)", x0.shape
            )
    if d < k:
        warnings.warn(_low_rank_message(k, d), LowRankWarning, stacklevel=2)
    origin = np.zeros(2 * k * d_eff)
    with _one_blas_thread():
        cert0 = prob.certificate(origin)
        if cert0 <= 1.0:
            # The convex problem's optimality condition holds at M' = 0: W = H = 0 is the global
            # minimiser (any d), and what a descent would return is noise around it.
            return _zero_minimum(prob, config, lam_v, k, d, counts, cert0)
        if x0 is None:
            g = np.random.default_rng(_seeds(config.seed)[0])
            x = g.standard_normal(2 * k * d_eff) * init_std
        else:
            x = x0
        return _minimize(prob, x, tol, max_iter, config, lam_v, k, d, d_eff, counts, grp, theory)


def _low_rank_message(k: int, d: int) -> str:
    return (
        f"d = {d} < k = {k}: the regularised UFM minimiser found may be a local optimum (the "
        "global certificate needs d >= k), and the lam -> 0 theory of THEORY.md §4 assumes d >= k"
    )


def _zero_minimum(
    prob: _ClassLevel, config: UFMConfig, lam: float, k: int, d: int, counts: np.ndarray, cert0: float
) -> UFMMinimum:
    """``W = H = 0``: the certified minimiser when the weight decay beats every fit."""
    L = float(prob.loss_and_dM(np.zeros((k, k)))[0])
    correct = (np.arange(k) == 0).astype(np.float64)  # all-zero logits: argmax is class 0
    nan = float("nan")
    metrics = {key: nan for key in GEOMETRY_COLUMNS}
    metrics.update(
        train_acc=float(correct @ counts / counts.sum()),
        train_bal_acc=float(correct.mean()),
        W_norm=0.0,
        H_norm=0.0,
        W_norm_maj=0.0,
        W_norm_min=0.0,
        H_norm_maj=0.0,
        H_norm_min=0.0,
        nc1=0.0,
    )
    return UFMMinimum(
        config=config,
        lam=lam,
        W=np.zeros((k, d)),
        H=np.zeros((d, k)),
        objective=L,
        loss=L,
        grad_rel=0.0,
        certificate=cert0,
        iterations=0,
        converged=True,
        metrics=metrics,
        x=np.zeros(2 * k * min(d, k)),
        zero=True,
    )


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run small dense linear algebra on one BLAS thread.

    For matrices this small, OpenBLAS worker threads only add synchronisation; next to torch's
    OpenMP pool on a small machine they made L-BFGS and ``eigh`` >10x slower.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def _stationary(prob: _ClassLevel, x: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, float, int]:
    """L-BFGS (restarted while it makes progress), then Newton polish: (x, grad_rel, iterations)."""
    from scipy.optimize import minimize

    iterations = 0
    f, gvec = prob(x)
    grad_rel = float(np.linalg.norm(gvec) / max(np.linalg.norm(x), 1e-300))
    stalls = 0
    while grad_rel > tol and iterations < max_iter and stalls < 3:
        res = minimize(
            prob,
            x,
            jac=True,
            method="L-BFGS-B",
            options={
                "maxiter": max_iter - iterations,
                "maxcor": 10,
                "ftol": 0.0,
                "gtol": tol * np.linalg.norm(x) / math.sqrt(x.size),
                "maxls": 50,
            },
        )
        iterations += int(res.nit)
        f_new, g_new = prob(res.x)
        new_rel = float(np.linalg.norm(g_new) / max(np.linalg.norm(res.x), 1e-300))
        stalls = stalls + 1 if res.nit <= 1 or new_rel >= grad_rel else 0
        if f_new <= f or new_rel < grad_rel:
            x, f, grad_rel = res.x, f_new, new_rel
    if grad_rel > tol:
        # L-BFGS's line search needs f to decrease, which float64 cannot resolve once
        # ||grad|| ~ 1e-8 ||x||; Newton steps accepted on the gradient norm finish the job.
        x, grad_rel = _newton_polish(prob, x, tol)
    return x, grad_rel, iterations


def _escape(prob: _ClassLevel, x: np.ndarray) -> np.ndarray | None:
    """Leave a non-global stationary point along the certificate's violating direction.

    With ``S = grad_{M'} L`` and its top singular pair ``-S = s u v^T + ...`` (``s > lam``), adding
    ``a u z^T`` to ``W`` and ``a z v^T`` to ``G`` for a unit ``z`` orthogonal to both factors
    changes ``M'`` by ``a^2 u v^T`` and ``F`` by ``a^2 (lam - s) + O(a^4)`` < 0 (a rank-deficient
    saddle always has such a ``z``; otherwise a small random kick is used). Returns the point
    with the lower objective, or None if none was found.
    """
    W, G = prob.unpack(x)
    _, dM = prob.loss_and_dM(prob.logits(x))
    U, _, Vt = np.linalg.svd(-(dM * prob.isqn))
    u, v = U[:, 0], Vt[0]
    _, sing, Zt = np.linalg.svd(np.vstack([W, G.T]))
    rank = int(np.sum(sing > 1e-8 * max(sing.max(), 1e-300)))
    f0 = prob(x)[0]
    scale = max(float(np.linalg.norm(x)) / math.sqrt(2 * prob.k), 1e-3)
    if rank < prob.d:
        z = Zt[rank]
        step = np.concatenate([np.outer(u, z).ravel(), np.outer(z, v).ravel()])
    else:
        step = np.random.default_rng(0).standard_normal(x.size) * 1e-2
    for j in range(40):
        cand = x + scale * 0.5**j * step
        if prob(cand)[0] < f0:
            return cand
    return None


def _minimize(
    prob: _ClassLevel,
    x: np.ndarray,
    tol: float,
    max_iter: int,
    config: UFMConfig,
    lam_v: float,
    k: int,
    d: int,
    d_eff: int,
    counts: np.ndarray,
    grp: Groups,
    theory: Geometry,
) -> UFMMinimum:
    x, grad_rel, iterations = _stationary(prob, x, tol, max_iter)
    escapes = 0
    # A stationary point with certificate > 1 is a saddle of the factored problem (for d >= k
    # the convex problem's optimality condition fails): leave it and descend again.
    while d >= k and prob.certificate(x) > 1 + 1e-6 and escapes < 10 and iterations < max_iter:
        out = _escape(prob, x)
        if out is None:
            break
        escapes += 1
        x, grad_rel, more = _stationary(prob, out, tol, max_iter - iterations)
        iterations += more
    f = float(prob(x)[0])
    W_eff, G = prob.unpack(x)
    W = np.zeros((k, d))
    W[:, :d_eff] = W_eff
    Hc = np.zeros((d, k))
    Hc[:d_eff] = G * prob.isqn[None, :]
    M = W @ Hc
    L = float(prob.loss_and_dM(M)[0])
    return UFMMinimum(
        config=config,
        lam=lam_v,
        W=W.copy(),
        H=Hc.copy(),
        objective=f * lam_v,
        loss=L,
        grad_rel=grad_rel,
        certificate=prob.certificate(x),
        iterations=iterations,
        converged=grad_rel <= tol,
        metrics=_class_metrics(W, Hc, counts.astype(np.float64), grp, theory),
        x=x,
        escapes=escapes,
    )


# ------------------------------------------------------------------------ regularisation path


@dataclass(frozen=True)
class LogTrend:
    """A fit ``value ≈ a + b / log(1/lam)`` (THEORY.md §4: the approach is ~ 1/log(1/lam)).

    Attributes
    ----------
    a : float
        The extrapolated value at ``lam -> 0``.
    b : float
    rms : float
        Root-mean-square residual of the fit.
    n_points : int
    """

    a: float
    b: float
    rms: float
    n_points: int

    def at(self, lam: float) -> float:
        """The fitted value at ``lam`` (0 < lam < 1)."""
        return self.a + self.b / math.log(1.0 / lam)

    def lam_for(self, target: float) -> float:
        """The ``lam`` at which the fit reaches ``target`` (NaN if it never does).

        Returned as a float; may underflow to 0.0 for very small values: see
        :meth:`log10_lam_for`.
        """
        return 10.0 ** self.log10_lam_for(target)

    def log10_lam_for(self, target: float) -> float:
        """``log10`` of :meth:`lam_for` (finite even when lam itself underflows)."""
        gap = target - self.a
        if gap == 0 or self.b / gap <= 0:
            return float("nan")
        return -(self.b / gap) / math.log(10.0)


def fit_log_trend(lams: Sequence[float], values: Sequence[float], last: int | None = None) -> LogTrend:
    """Least-squares fit of ``values ≈ a + b / log(1/lam)`` over the ``last`` smallest lams.

    Examples
    --------
    >>> import math
    >>> lams = [1e-2, 1e-4, 1e-8]
    >>> t = fit_log_trend(lams, [0.1 + 2 / math.log(1 / x) for x in lams])
    >>> round(t.a, 9), round(t.b, 9)
    (0.1, 2.0)
    """
    lam_arr = np.asarray(lams, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if lam_arr.shape != v.shape or lam_arr.ndim != 1:
        raise fail("values", f"one value per lam ({lam_arr.size})", v.shape)
    if np.any(lam_arr <= 0) or np.any(lam_arr >= 1):
        raise fail("lams", "numbers in (0, 1)", lam_arr)
    order = np.argsort(lam_arr)
    lam_arr, v = lam_arr[order], v[order]
    if last is not None:
        lam_arr, v = lam_arr[:last], v[:last]
    ok = np.isfinite(v)
    lam_arr, v = lam_arr[ok], v[ok]
    if lam_arr.size < 2:
        raise fail("lams", "at least two finite points to fit", lam_arr.size)
    x = 1.0 / np.log(1.0 / lam_arr)
    A = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(A, v, rcond=None)
    resid = v - A @ coef
    return LogTrend(float(coef[0]), float(coef[1]), float(np.sqrt(np.mean(resid**2))), int(v.size))


@dataclass
class PathResult:
    """The regularisation path of one configuration (from :func:`regularization_path`).

    Attributes
    ----------
    config : UFMConfig
    class_counts : ndarray (k,)
    d : int
    theory : Geometry
        The ``lam -> 0`` limit, :func:`cegeo.theory.predict`.
    minima : list of UFMMinimum
        One per ``lam``, in the order given (decreasing).
    rows : list of dict
        Configuration columns (``loss`` is the loss's name), ``lam``, ``log10_lam``, solver
        diagnostics (``objective``, ``train_loss``, ``grad_rel``, ``certificate``,
        ``iterations``, ``escapes``, ``converged``, ``is_global``, ``zero``: the minimiser is
        ``W = H = 0``, NaN geometry), the measurement columns and
        ``gap_<panel>`` = value - theory for the eight panels.
    """

    config: UFMConfig
    class_counts: np.ndarray
    d: int
    theory: Geometry
    minima: list[UFMMinimum]
    rows: list[dict[str, Any]]

    @property
    def lams(self) -> np.ndarray:
        return np.array([m.lam for m in self.minima])

    def values(self, key: str) -> np.ndarray:
        """A column along the path."""
        return np.array([float(r[key]) for r in self.rows])

    def trend(self, key: str, last: int | None = None) -> LogTrend:
        """:func:`fit_log_trend` of ``|key|`` along the path (e.g. ``dist_W``, ``gap_W_ratio``)."""
        return fit_log_trend(self.lams, np.abs(self.values(key)), last)

    def is_monotone(self, key: str, rtol: float = 1e-9) -> bool:
        """Whether ``|key|`` never grows as lam falls (up to ``rtol`` relative noise)."""
        v = np.abs(self.values(key))
        return bool(np.all(v[1:] <= v[:-1] * (1 + rtol) + 1e-15))


def regularization_path(
    config: UFMConfig,
    class_counts: Any,
    lams: Sequence[float],
    d: int,
    *,
    tol: float = 1e-9,
    max_iter: int = 20000,
    init_std: float = 0.1,
    groups: Groups | None = None,
) -> PathResult:
    """Follow the regularised minimiser along a decreasing ``lam`` grid (warm-started L-BFGS).

    Each point is :func:`minimize_ufm` at that ``lam``, started from the previous minimiser with
    its variables scaled by ``sqrt(log(1/lam_new) / log(1/lam_old))`` (the norms of the
    minimiser grow like ``sqrt(log 1/lam)``). The rows report the geometry and its distance to
    the ``lam -> 0`` limit; fit the approach with :meth:`PathResult.trend`.

    Parameters
    ----------
    config : UFMConfig
    class_counts : array-like (k,)
    lams : sequence of float
        Strictly decreasing values in (0, 1).
    d : int
    tol, max_iter, init_std, groups
        As in :func:`minimize_ufm`.

    Returns
    -------
    PathResult

    Raises
    ------
    ValueError
        ``lams`` empty, not strictly decreasing or outside (0, 1); the errors of
        :func:`minimize_ufm`.

    Warns
    -----
    LowRankWarning
        Once, when ``d < k`` (points may be local optima; check the ``is_global`` column).

    Examples
    --------
    >>> p = regularization_path(UFMConfig("ce"), [10, 10, 1, 1], [1e-2, 1e-4, 1e-8], d=4)
    >>> [round(float(v), 3) for v in p.values("dist_W")]  # distance to the lam -> 0 limit
    [0.163, 0.077, 0.038]
    >>> p.is_monotone("dist_W")
    True
    """
    lam_list = [check_finite("lams", v) for v in lams]
    if not lam_list:
        raise fail("lams", "a non-empty decreasing sequence in (0, 1)", list(lams))
    if any(v <= 0 or v >= 1 for v in lam_list):
        raise fail("lams", "numbers in (0, 1)", lam_list)
    if any(b >= a for a, b in itertools.pairwise(lam_list)):
        raise fail("lams", "a strictly decreasing sequence", lam_list)
    counts = check_class_counts(class_counts)
    d = check_int("d", d, minimum=1)
    grp = groups if groups is not None else make_groups(counts)
    theory = predict(config.build_loss(counts), counts, grp)
    th = theory.summary
    minima: list[UFMMinimum] = []
    rows: list[dict[str, Any]] = []
    x0 = None
    prev_lam = None
    if d < counts.size:
        warnings.warn(_low_rank_message(int(counts.size), d), LowRankWarning, stacklevel=2)
    for lam in lam_list:
        if x0 is not None and prev_lam is not None:
            x0 = x0 * math.sqrt(math.log(1.0 / lam) / math.log(1.0 / prev_lam))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LowRankWarning)  # said once above
            m = minimize_ufm(
                config, counts, d, lam=lam, tol=tol, max_iter=max_iter, x0=x0, init_std=init_std, groups=grp
            )
        minima.append(m)
        # The origin is stationary: after a zero minimiser, start the next lam afresh.
        x0, prev_lam = (None, None) if m.zero else (m.x, lam)
        row: dict[str, Any] = {**config.columns(), "d": d}
        row.update(
            lam=lam,
            log10_lam=math.log10(lam),
            objective=m.objective,
            train_loss=m.loss,
            grad_rel=m.grad_rel,
            certificate=m.certificate,
            iterations=m.iterations,
            escapes=m.escapes,
            converged=m.converged,
            is_global=m.is_global,
            zero=m.zero,
        )
        row.update(m.metrics)
        for key in PANEL_KEYS:
            row[f"gap_{key}"] = m.metrics[key] - th[key]
        rows.append(row)
    return PathResult(config, counts, d, theory, minima, rows)


# ----------------------------------------------------------------------------- experiment config


@dataclass(frozen=True)
class UFMExperiment:
    """A UFM sweep as data: the profile, the losses and their grid, the optimiser, the path.

    Read from TOML with :func:`cegeo.config.load_toml` (``cegeo ufm --config FILE``; an unknown
    key is an error) and written back with :func:`cegeo.config.to_toml_text`. Give exactly one of
    ``step``, ``longtail`` and ``counts``. The defaults are THEORY.md §6's UFM recipe.

    Examples
    --------
    >>> from cegeo.config import from_dict
    >>> exp = from_dict(UFMExperiment, {"step": "k=4,R=10,rho=0.5", "n_min": 1, "losses": ["ldt"],
    ...                                 "gamma_grid": [0.0, 0.5], "seeds": [0, 1]})
    >>> exp.class_counts().tolist(), len(exp.configs())
    ([10, 10, 1, 1], 4)
    """

    step: str | None = None  # "k=10,R=10,rho=0.5": (R, rho)-STEP, R = n_max/n_min >= 1, majorities first
    longtail: str | None = None  # "k=10,R=100": n_i = floor(n_max R^(-i/(k-1))), R = n_max/n_min >= 1
    counts: tuple[int, ...] | None = None  # explicit per-class training counts
    n_min: int = 5  # samples in the smallest class (step, longtail)
    d: int = 20  # embedding dimension
    losses: tuple[str, ...] = ("ldt",)  # ParametricCE members of the loss registry
    gamma_grid: tuple[float, ...] | str | None = None  # family-parameter values, a list or "START:STOP:NUM"
    hyper: dict[str, float] = field(default_factory=dict)  # fixed hyperparameters, e.g. {normalize = 0}
    epochs: int = 6000  # full passes over the n samples
    lr: float = 0.1  # base learning rate
    momentum: float = 0.9  # heavy-ball momentum (0 = plain GD)
    weight_decay: float = 5e-4  # lam on W and H: F = mean loss + lam/2 (|W|^2 + |H|^2)
    milestones: tuple[int, ...] = (2000, 4000)  # epochs where lr *= lr_decay
    lr_decay: float = 0.1  # multiplier at each milestone
    batch_size: int = 0  # samples per step; 0 = full batch
    seeds: tuple[int, ...] = (0,)  # one run per seed (initialisation, batch order)
    init_std: float = 0.1  # W, H start i.i.d. N(0, init_std^2)
    dtype: str = "float64"  # "float64" or "float32" (measurements are float64)
    device: str = "cpu"  # "cpu" or "cuda[:i]"
    threads: int = 1  # CPU intra-op threads (1: bitwise-reproducible batches)
    log_every: int = 100  # epochs between logged rows
    path_lams: tuple[
        float, ...
    ] = ()  # regularisation path lams (decreasing); () = weight_decay * 10^(0,-2,..,-16)
    path_tol: float = 1e-9  # relative gradient tolerance of the L-BFGS minimiser

    # -- derived ---------------------------------------------------------------------------

    def _profile(self) -> tuple[str, np.ndarray, Groups]:
        from .cli._common import parse_longtail, parse_step
        from .data.imbalance import longtail_counts, step_groups

        given = [name for name in ("step", "longtail", "counts") if getattr(self, name) is not None]
        if len(given) != 1:
            raise InputError(
                f"give exactly one of step | longtail | counts; got {len(given)} ({', '.join(given) or 'none'})."
            )
        n_min = check_int("n_min", self.n_min, minimum=1)
        if self.step is not None:
            spec = parse_step(self.step, "step")
            n_maj = spec.R * n_min
            if n_maj > INT_MAX:  # the majority class size: int64 arrays, samples in memory
                raise fail(
                    "step",
                    f"a profile with R * n_min (the majority class size) at most {INT_MAX:,}",
                    self.step,
                )
            if abs(n_maj - round(n_maj)) > 1e-9:
                raise fail("n_min", f"a size with R * n_min a whole number (R = {spec.R:g})", self.n_min)
            counts = np.array([round(n_maj)] * spec.k_maj + [n_min] * spec.k_min, dtype=np.int64)
            return (
                f"step:k={spec.k},R={spec.R:g},rho={spec.rho:g},n_min={n_min}",
                counts,
                step_groups(spec.k, spec.rho),
            )
        if self.longtail is not None:
            k, R = parse_longtail(self.longtail, "longtail")
            counts = longtail_counts(k, R, math.ceil(R * n_min - 1e-9))
            return f"longtail:k={k},R={R:g},n_max={counts.max()}", counts, make_groups(counts)
        counts = check_class_counts(self.counts, "counts")
        if counts.size < 2:
            raise fail("counts", "at least two class counts", list(counts))
        return "counts:" + ",".join(map(str, counts.tolist())), counts, make_groups(counts)

    def describe(self) -> str:
        """The profile in one line, e.g. ``step:k=10,R=10,rho=0.5,n_min=5``."""
        return self._profile()[0]

    def class_counts(self) -> np.ndarray:
        """Per-class training counts, shape (k,)."""
        return self._profile()[1]

    def groups(self) -> Groups:
        """Majority/minority groups (STEP: its own layout)."""
        return self._profile()[2]

    def grid(self) -> np.ndarray | None:
        """The family-parameter values, or None without a grid."""
        from .cli._common import parse_grid

        if self.gamma_grid is None:
            return None
        if isinstance(self.gamma_grid, str):
            values = parse_grid(self.gamma_grid, "gamma_grid")
        else:
            values = np.array([check_finite("gamma_grid", v) for v in self.gamma_grid])
        if values.size == 0:
            raise fail("gamma_grid", "at least one value", list(self.gamma_grid))
        if np.unique(values).size != values.size:
            # a repeated value is the same runs twice, averaged as if they were other seeds
            raise fail("gamma_grid", "distinct values", values.tolist())
        return values

    def family_param(self, loss: str) -> str | None:
        """The swept hyperparameter of ``loss`` (None without a grid)."""
        if self.gamma_grid is None:
            return None
        param = get_loss_info(loss).family_param
        if param is None:
            raise fail(
                "losses",
                f"losses with a family parameter to sweep with `gamma_grid` ({loss!r} has none)",
                loss,
            )
        if param in self.hyper:
            raise InputError(
                f"give {param} once: `gamma_grid` sweeps it; got a fixed {param} in `hyper` too."
            )
        return param

    def configs(self) -> list[UFMConfig]:
        """One :class:`UFMConfig` per loss x grid value x seed (that order)."""
        counts = self.class_counts()
        if not self.losses:
            raise fail("losses", "at least one loss name", list(self.losses))
        if len(set(self.losses)) != len(self.losses):  # the same runs twice, averaged as other seeds
            raise fail("losses", "distinct loss names", list(self.losses))
        for loss in self.losses:
            get_loss_info(loss, "losses")
        if not self.seeds:
            raise fail("seeds", "at least one seed", list(self.seeds))
        grid = self.grid()
        out = []
        for loss in self.losses:
            param = self.family_param(loss)
            values: Iterable[float | None] = [None] if grid is None else grid.tolist()
            for v in values:
                hyper = dict(self.hyper)
                if param is not None and v is not None:
                    hyper[param] = float(v)
                for seed in self.seeds:
                    cfg = UFMConfig(
                        loss=loss,
                        hyper=hyper,
                        lam=self.weight_decay,
                        lr=self.lr,
                        momentum=self.momentum,
                        milestones=tuple(self.milestones),
                        lr_decay=self.lr_decay,
                        seed=seed,
                    ).validate()
                    cfg.build_loss(counts)  # a bad loss name or hyperparameter fails here, early
                    out.append(cfg)
        return out

    def lams(self) -> list[float]:
        """The regularisation path grid (decreasing).

        ``path_lams`` if given, else ``weight_decay * 10^(0, -2, ..., -16)``, which needs a
        weight decay in (0, 1).
        """
        if self.path_lams:
            return [float(v) for v in self.path_lams]
        lam = check_finite("weight_decay", self.weight_decay)
        if not 0 < lam < 1:
            raise fail(
                "weight_decay",
                "a number in (0, 1) for the default regularisation path (or give path_lams)",
                lam,
            )
        return [lam * 10.0 ** (-2 * j) for j in range(9)]

    def validate(self) -> UFMExperiment:
        """Check every field (one-line errors naming the key); return self.

        ``weight_decay = 0`` is allowed (plain GD on the loss; there is no regularised
        minimiser and no default path grid then).
        """
        # Keys that configs() spreads over the UFMConfigs are checked under their own names.
        if check_finite("weight_decay", self.weight_decay) < 0:
            raise fail("weight_decay", "a number >= 0", self.weight_decay)
        for seed in self.seeds:
            check_int("seeds", seed, minimum=0, maximum=SEED_MAX)
        if len(set(self.seeds)) != len(self.seeds):  # a repeated seed is the same run twice
            raise fail("seeds", "distinct seeds", list(self.seeds))
        self.configs()
        check_int("d", self.d, minimum=1)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=0)
        check_int("log_every", self.log_every, minimum=1)
        check_threads("threads", self.threads)
        if check_finite("init_std", self.init_std) <= 0:
            raise fail("init_std", "a number > 0", self.init_std)
        _check_dtype(self.dtype)
        _check_device(self.device)
        # the default grid is checked where it is used; nan passes every comparison below
        lams = [check_finite("path_lams", v) for v in self.path_lams]
        if any(v <= 0 or v >= 1 for v in lams) or any(b >= a for a, b in itertools.pairwise(lams)):
            raise fail("path_lams", "a strictly decreasing list of numbers in (0, 1)", lams)
        if check_finite("path_tol", self.path_tol) <= 0:
            raise fail("path_tol", "a number > 0", self.path_tol)
        return self

    def run(self, progress: Callable[[int, int], None] | None = None) -> UFMResult:
        """:func:`simulate` the whole sweep as one batch."""
        self.validate()
        return simulate(
            self.configs(),
            self.class_counts(),
            self.d,
            self.epochs,
            batch_size=self.batch_size or None,
            init_std=self.init_std,
            dtype=self.dtype,
            device=self.device,
            log_every=self.log_every,
            groups=self.groups(),
            progress=progress,
            threads=self.threads,
        )
