"""Geometry probes for trained models: class means, norms, angles, NC1 and distance to theory.

THEORY.md §5. A probe reads two things from a trained network:

* the classifier ``W`` (k, d), the rows ``w_c`` of its bias-free last layer, and
* the per-class statistics of the penultimate features ``h = model.features(x)`` over the
  **training** set, accumulated by :class:`FeatureStats` from class sums, so data-parallel ranks
  can all-reduce them (:meth:`FeatureStats.all_reduce`) and any number of batches can be merged.

From those it reports (:func:`measure`):

============================  =============================================================
``w_norms``, ``h_norms``      ``||w_c||`` and ``||mu_c||`` per class (uncentred class means)
``h_norms_centred``           ``||mu_c - mu_G||`` (globally centred)
``cos_wh``                    ``cos(w_c, mu_c)`` per class
``summary``                   :func:`cegeo.theory.group_summary` of ``G_W = W W^T``,
                              ``G_H = [<mu_c, mu_c'>]`` and ``M = W [mu_1 .. mu_k]``: the keys
                              the theory uses (``W_ratio``, ``W_cos_maj_maj``, ... ``cos_WH``)
``summary_centred``           the same with the class means globally centred (``W`` as is)
``nc1``                       ``tr(Sigma_W Sigma_B^+) / k`` (weighting below)
``dist_W``, ``dist_H``,       normalised-Gram distances ``||G/||G||_F - G*/||G*||_F||_F`` of
``dist_M``                    ``G_W``, ``G_H`` (uncentred) and ``M`` to
                              :func:`cegeo.theory.predict` for the training loss and counts;
                              ``None`` for losses the theory does not cover (LDAM)
``dist_H_centred``            the same for the class means with both sides centred by the
                              sample-weighted mean (``mu_c - mu_G`` against ``h*_c - sum_j
                              pi_j h*_j``, ``pi = n / sum(n)``): blind to an offset shared by
                              every class mean, such as the positive one of post-ReLU features,
                              which keeps the uncentred ``dist_H`` far from 0 (the bias-free
                              theory's means have none)
============================  =============================================================

Conventions (stated because imbalanced counts make them matter):

* ``mu_c`` is the mean feature of class c's training samples; ``mu_G = (1/n) sum_i h_i`` is the
  global (sample-weighted) mean, as in Papyan et al. (2020).
* ``Sigma_W = (1/n) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` pools all samples (each sample
  weighs the same, so majority classes dominate it); ``Sigma_B = (1/k) sum_c (mu_c - mu_G)
  (mu_c - mu_G)^T`` weighs each class the same; its pseudo-inverse keeps the top ``k - 1``
  eigenvalues (those above ``1e-12`` of the largest).

Numerics: statistics accumulate in float64; the within-class scatter is updated with Chan et
al.'s pairwise formula (batch scatter about the batch's class means plus a between-means
correction), so it does not suffer the cancellation of ``E[h h^T] - mu mu^T`` when features
have collapsed (NC1 -> 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._validation import as_float_vector, check_class_counts, check_int, fail
from .data.imbalance import Groups
from .data.imbalance import groups as make_groups
from .theory import Geometry, distance, group_summary, predict
from .theory._closed_form import _cos, _norms

__all__ = ["FeatureStats", "GeometryProbe", "classifier_weight", "feature_stats", "measure"]


@dataclass
class FeatureStats:
    """Per-class counts, sums and pooled within-class scatter of features (float64).

    Build with :meth:`zeros`, feed batches with :meth:`update`, combine partial statistics with
    :meth:`merge` or, across data-parallel ranks, :meth:`all_reduce`.

    Attributes
    ----------
    counts : torch.Tensor of shape (k,)
        Samples seen per class.
    sums : torch.Tensor of shape (k, d)
        Sum of the features of each class.
    scatter : torch.Tensor of shape (d, d) or None
        ``sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` about the current class means (None when
        built with ``scatter=False``; NC1 is then not available).

    Examples
    --------
    >>> import torch
    >>> st = FeatureStats.zeros(2, 3)
    >>> st.update(torch.tensor([[1.0, 0, 0], [3.0, 0, 0], [0, 2.0, 0]]), torch.tensor([0, 0, 1]))
    >>> st.means.tolist()
    [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    >>> float(st.scatter[0, 0])  # (1 - 2)^2 + (3 - 2)^2
    2.0
    """

    counts: Tensor
    sums: Tensor
    scatter: Tensor | None = None

    @classmethod
    def zeros(
        cls, num_classes: int, dim: int, device: torch.device | str = "cpu", *, scatter: bool = True
    ) -> FeatureStats:
        """Empty statistics for ``num_classes`` classes of ``dim``-dimensional features."""
        k = check_int("num_classes", num_classes, minimum=1)
        d = check_int("dim", dim, minimum=1)
        kw = {"dtype": torch.float64, "device": device}
        return cls(
            torch.zeros(k, **kw), torch.zeros(k, d, **kw), torch.zeros(d, d, **kw) if scatter else None
        )

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    @property
    def means(self) -> Tensor:
        """Class means ``mu_c``, shape (k, d) (zeros for classes not seen)."""
        return self.sums / self.counts.clamp_min(1)[:, None]

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Add a batch of features ``(n, d)`` with labels ``(n,)`` (no device synchronisation)."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise fail("features", f"a tensor of shape (n, {self.dim})", tuple(features.shape))
        if labels.shape != features.shape[:1]:
            raise fail("labels", f"a tensor of shape ({features.shape[0]},)", tuple(labels.shape))
        h = features.to(self.sums.device, torch.float64)  # (n, d)
        y = labels.to(self.sums.device, torch.long)  # (n,)
        nb = torch.zeros_like(self.counts).index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        sb = torch.zeros_like(self.sums).index_add_(0, y, h)  # (k, d)
        if self.scatter is not None:
            mb = sb / nb.clamp_min(1)[:, None]  # batch class means (k, d)
            centred = h - mb[y]  # (n, d)
            delta = mb - self.means  # (k, d); weight is 0 for classes absent on either side
            weight = self.counts * nb / (self.counts + nb).clamp_min(1)  # (k,)
            self.scatter += centred.T @ centred + (delta * weight[:, None]).T @ delta
        self.counts += nb
        self.sums += sb

    def merge(self, other: FeatureStats) -> FeatureStats:
        """The statistics of both sets of samples (Chan et al.'s pairwise combination)."""
        if other.sums.shape != self.sums.shape:
            raise fail("other", f"statistics of shape {tuple(self.sums.shape)}", tuple(other.sums.shape))
        counts = self.counts + other.counts
        scatter = None
        if self.scatter is not None and other.scatter is not None:
            delta = other.means.to(self.sums.device) - self.means  # (k, d)
            weight = self.counts * other.counts.to(self.counts.device) / counts.clamp_min(1)
            scatter = (
                self.scatter + other.scatter.to(self.scatter.device) + (delta * weight[:, None]).T @ delta
            )
        return FeatureStats(counts, self.sums + other.sums.to(self.sums.device), scatter)

    @torch.no_grad()
    def all_reduce(self, group: Any = None) -> FeatureStats:
        """Statistics over every rank of a ``torch.distributed`` group (all ranks receive them).

        Two all-reduces: counts and sums first (exact global means), then each rank moves its
        scatter to the global class means, ``S_r + sum_c n_rc (mu_rc - mu_c)(mu_rc - mu_c)^T``,
        and the results are summed. A no-op without an initialised process group.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            return self
        local_means = self.means
        local_counts = self.counts.clone()
        packed = torch.cat([self.counts[:, None], self.sums], dim=1)  # (k, d + 1)
        dist.all_reduce(packed, group=group)
        counts, sums = packed[:, 0].contiguous(), packed[:, 1:].contiguous()
        scatter = None
        if self.scatter is not None:
            delta = local_means - sums / counts.clamp_min(1)[:, None]  # (k, d)
            scatter = self.scatter + (delta * local_counts[:, None]).T @ delta
            dist.all_reduce(scatter, group=group)
        return FeatureStats(counts, sums, scatter)

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(counts, sums, scatter)`` as float64 NumPy arrays."""
        sc = None if self.scatter is None else self.scatter.detach().cpu().numpy()
        return self.counts.detach().cpu().numpy(), self.sums.detach().cpu().numpy(), sc


def feature_stats(features: Any, labels: Any, num_classes: int, *, scatter: bool = True) -> FeatureStats:
    """:class:`FeatureStats` of a whole array of features ``(n, d)`` and labels ``(n,)``.

    Examples
    --------
    >>> import numpy as np
    >>> st = feature_stats(np.eye(3), np.array([0, 1, 1]), num_classes=2)
    >>> st.counts.tolist(), st.means.tolist()
    ([1.0, 2.0], [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    """
    h = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features)
    if not isinstance(labels, Tensor):
        raw = np.asarray(labels)
        whole = (
            raw.dtype.kind == "f" and bool(np.all(np.isfinite(raw))) and bool(np.all(raw == np.round(raw)))
        )
        if raw.dtype.kind not in "iu" and not whole:  # 0.7 would be truncated to class 0
            raise fail("labels", "integer class labels", raw.dtype.name)
        labels = raw.astype(np.int64)
    elif labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise fail("labels", "integer class labels", str(labels.dtype))
    y = torch.as_tensor(labels)
    if h.ndim != 2:
        raise fail("features", "a 2-D array of shape (n, d)", tuple(h.shape))
    if y.ndim != 1 or y.shape[0] != h.shape[0]:
        raise fail("labels", f"a 1-D array of {h.shape[0]} labels (one per row of features)", tuple(y.shape))
    k = check_int("num_classes", num_classes, minimum=1)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise fail("labels", f"labels in 0..{k - 1}", int(y.max()) if int(y.max()) >= k else int(y.min()))
    st = FeatureStats.zeros(k, int(h.shape[1]), h.device, scatter=scatter)
    st.update(h, y)
    return st


def classifier_weight(model: torch.nn.Module) -> Tensor:
    """The effective classifier ``W`` (k, d) of a model with a ``classifier`` head.

    For a plain bias-free ``nn.Linear`` that is its ``weight``. A normalised (cosine) head,
    :class:`cegeo.models.CosineClassifier`, contributes its unit-norm rows
    (``normalized_weight()``): those are what its logits use (LDAM's scale lives in the loss).
    A custom head may define ``effective_weight()`` instead.

    Examples
    --------
    >>> from cegeo.models import create_model
    >>> m = create_model("mlp", in_shape=(4,), num_classes=3, width=8, depth=1)
    >>> tuple(classifier_weight(m).shape)
    (3, 8)
    """
    head = getattr(model, "module", model).classifier
    for name in ("effective_weight", "normalized_weight"):
        getter = getattr(head, name, None)
        if callable(getter):
            with torch.no_grad():
                return getter().detach()
    return head.weight.detach()


def _nc1(means: np.ndarray, counts: np.ndarray, scatter: np.ndarray) -> float:
    """tr(Sigma_W Sigma_B^+)/k with the weighting of the module docstring, in float64."""
    if not (np.all(np.isfinite(means)) and np.all(np.isfinite(scatter))):
        return float("nan")  # overflowed features (a diverging run): no eigendecomposition of inf
    k = means.shape[0]
    n = counts.sum()
    mu_g = counts @ means / n  # (d,)
    C = means - mu_g  # (k, d) centred class means
    # Sigma_B = C^T C / k; its eigenvectors in feature space come from the small Gram C C^T / k.
    lam, U = np.linalg.eigh(C @ C.T / k)  # ascending
    order = np.argsort(lam)[::-1]
    lam, U = lam[order], U[:, order]
    keep = min(k - 1, means.shape[1])
    lam, U = lam[:keep], U[:, :keep]
    ok = lam > lam[0] * 1e-12 if lam.size and lam[0] > 0 else np.zeros(lam.size, dtype=bool)
    lam, U = lam[ok], U[:, ok]
    if lam.size == 0:
        return float("nan")
    V = C.T @ U / np.sqrt(k * lam)  # (d, r) orthonormal eigenvectors of Sigma_B
    sigma_w = scatter / n
    return float(np.sum(np.einsum("dr,de,er->r", V, sigma_w, V) / lam) / k)


@dataclass(frozen=True)
class GeometryProbe:
    """What a probe measured (float64 arrays) and its distance to the theory's prediction.

    Attributes
    ----------
    G_W, G_H, G_H_centred : ndarray (k, k)
        ``W W^T``, the Gram of the class means, and of the globally centred class means.
    M, M_centred : ndarray (k, k)
        Class-level logits ``W [mu_1 .. mu_k]`` (column y: class y's mean), uncentred/centred.
    class_counts : ndarray (k,)
        Training samples per class the statistics were computed from.
    groups : Groups
    nc1 : float or None
        None when the statistics carry no scatter.
    theory : Geometry or None
        :func:`cegeo.theory.predict` for the loss, None when the theory does not cover it.
    """

    G_W: np.ndarray
    G_H: np.ndarray
    G_H_centred: np.ndarray
    M: np.ndarray
    M_centred: np.ndarray
    class_counts: np.ndarray
    groups: Groups
    nc1: float | None
    theory: Geometry | None = None
    summary: dict[str, float] = field(default_factory=dict)
    summary_centred: dict[str, float] = field(default_factory=dict)
    #: the weights ``pi`` (k,) of the global mean ``mu_G = sum_c pi_c mu_c`` (None: class counts)
    mean_weights: np.ndarray | None = None

    @property
    def w_norms(self) -> np.ndarray:
        return _norms(self.G_W)

    @property
    def h_norms(self) -> np.ndarray:
        return _norms(self.G_H)

    @property
    def h_norms_centred(self) -> np.ndarray:
        return _norms(self.G_H_centred)

    @property
    def cos_wh(self) -> np.ndarray:
        """cos(w_c, mu_c) per class, shape (k,)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.M) / (self.w_norms * self.h_norms)

    def distances(self) -> dict[str, float | None]:
        """``dist_W``, ``dist_H``, ``dist_M``, ``dist_H_centred`` to the prediction (None
        without one)."""
        if self.theory is None:
            return {"dist_W": None, "dist_H": None, "dist_M": None, "dist_H_centred": None}
        pi = self.class_counts / self.class_counts.sum() if self.mean_weights is None else self.mean_weights
        centre = np.eye(pi.size) - pi[None, :]  # (k, k): rows mu_c - sum_j pi_j mu_j
        out: dict[str, float | None] = {}
        for key, mine, ref in (
            ("dist_W", self.G_W, self.theory.G_W),
            ("dist_H", self.G_H, self.theory.G_H),
            ("dist_M", self.M, self.theory.M),
            ("dist_H_centred", self.G_H_centred, centre @ self.theory.G_H @ centre.T),
        ):
            out[key] = distance(mine, ref) if np.linalg.norm(mine) > 0 else None
        return out

    def to_dict(self, matrices: bool = False) -> dict[str, Any]:
        """The JSON-ready ``geometry`` record of ``metrics.jsonl`` / ``final.json``.

        ``matrices=True`` adds the cosine matrices ``cos_W``, ``cos_H``, ``cos_H_centred`` and the
        logits ``M`` (k x k lists).
        """
        out: dict[str, Any] = {
            "w_norms": self.w_norms.tolist(),
            "h_norms": self.h_norms.tolist(),
            "h_norms_centred": self.h_norms_centred.tolist(),
            "cos_wh": self.cos_wh.tolist(),
            "summary": dict(self.summary),
            "summary_centred": dict(self.summary_centred),
            "nc1": self.nc1,
            **self.distances(),
        }
        if matrices:
            out["cos_W"] = _cos(self.G_W).tolist()
            out["cos_H"] = _cos(self.G_H).tolist()
            out["cos_H_centred"] = _cos(self.G_H_centred).tolist()
            out["M"] = self.M.tolist()
        return out


def _theory_for(loss: Any, counts: np.ndarray, grp: Groups) -> Geometry | None:
    from .losses import LDAMLoss, ParametricCE

    if loss is None or isinstance(loss, LDAMLoss):
        return None
    if not isinstance(loss, ParametricCE):  # e.g. the name "ldt": dist_* would be None silently
        raise fail("loss", "the training loss module (cegeo.losses.create_loss(name, counts)) or None", loss)
    return predict(loss, counts, grp)


def _positive(values: Any, k: int) -> np.ndarray:
    out = as_float_vector("theory_counts", values, k)
    if np.any(out <= 0):
        raise fail("theory_counts", "positive numbers", out)
    return out


def measure(
    stats: FeatureStats,
    W: Any,
    *,
    loss: Any = None,
    class_counts: Any = None,
    groups: Groups | None = None,
    theory_counts: Any = None,
) -> GeometryProbe:
    """Probe a trained model's geometry from feature statistics and its classifier.

    Parameters
    ----------
    stats : FeatureStats
        Statistics of ``model.features(x)`` over the training set (all ranks reduced).
    W : array-like or tensor of shape (k, d)
        The classifier (:func:`classifier_weight`).
    loss : torch.nn.Module, optional
        The training loss; the prediction is :func:`cegeo.theory.predict` of it (``dist_*`` are
        None for a loss outside the parameterized family, such as LDAM, or when omitted).
    class_counts : array-like of shape (k,), optional
        Counts for the prediction and the groups; default: the counts in ``stats``.
    groups : Groups, optional
        Majority/minority grouping; default :func:`cegeo.data.imbalance.groups` of the counts.
    theory_counts : array-like of shape (k,), optional
        Other counts to predict the geometry for (positive, may be fractional), e.g. to compare
        with the prediction of another profile. Default: ``class_counts`` (what the trainer
        uses, with or without a sampler: loss weights and samplers drop out of the max-margin
        limit, THEORY.md §4).

    Returns
    -------
    GeometryProbe
        Use ``.to_dict()`` for the JSON record.

    Raises
    ------
    ValueError
        ``W`` of the wrong shape, a class with no sample in ``stats``, bad counts or groups.

    Examples
    --------
    >>> import numpy as np
    >>> from cegeo.losses import create_loss
    >>> k = 3
    >>> W = np.eye(k) - 1 / k                 # a simplex ETF classifier, d = k
    >>> stats = feature_stats(W, np.arange(k), k)  # class means equal to the rows of W
    >>> p = measure(stats, W, loss=create_loss("ce"), class_counts=[1, 1, 1])
    >>> round(p.summary["W_cos_maj_maj"], 4), round(p.distances()["dist_W"], 8)
    (-0.5, 0.0)
    """
    counts_seen, sums, scatter = stats.to_numpy()
    k, d = sums.shape
    if np.any(counts_seen <= 0):
        missing = int(np.flatnonzero(counts_seen <= 0)[0])
        raise fail("stats", "features of at least one sample of every class", f"none of class {missing}")
    Wn = W.detach().cpu().double().numpy() if isinstance(W, Tensor) else np.asarray(W, dtype=np.float64)
    if Wn.shape != (k, d):
        raise fail("W", f"a classifier of shape ({k}, {d}) matching the features", Wn.shape)
    counts = check_class_counts(counts_seen if class_counts is None else class_counts)
    if counts.size != k:
        raise fail("class_counts", f"{k} counts (one per class)", counts.tolist())
    grp = groups if groups is not None else make_groups(counts)
    if len(grp.labels) != k:
        raise fail("groups", f"groups for {k} classes", len(grp.labels))
    means = sums / counts_seen[:, None]  # (k, d)
    mu_g = counts_seen @ means / counts_seen.sum()  # (d,)
    centred = means - mu_g
    G_W = Wn @ Wn.T
    G_H = means @ means.T
    G_Hc = centred @ centred.T
    M = Wn @ means.T
    Mc = Wn @ centred.T
    nc1 = None if scatter is None else _nc1(means, counts_seen, scatter)
    return GeometryProbe(
        G_W=G_W,
        G_H=G_H,
        G_H_centred=G_Hc,
        M=M,
        M_centred=Mc,
        class_counts=counts,
        groups=grp,
        nc1=nc1,
        theory=_theory_for(loss, counts if theory_counts is None else _positive(theory_counts, k), grp),
        summary=group_summary(G_W, G_H, M, grp),
        summary_centred=group_summary(G_W, G_Hc, Mc, grp),
        mean_weights=counts_seen / counts_seen.sum(),
    )
