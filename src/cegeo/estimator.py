"""A scikit-learn classifier for tabular data: an MLP trained with any cegeo loss.

:class:`ImbalancedMLPClassifier` standardises the features, trains a
:func:`cegeo.models.create_model` ``"mlp"`` (bias-free classifier head, DESIGN.md) with a loss from
:func:`cegeo.losses.create_loss` built from the training class counts, and can correct the
trained model post hoc with a :mod:`cegeo.rebalance` method fitted on an internal stratified
validation split. It is a regular scikit-learn estimator: ``Pipeline``, ``GridSearchCV`` (the
loss hyperparameters ``gamma``, ``tau``, ... are top-level parameters), ``clone`` and pickling
work, and it passes :func:`sklearn.utils.estimator_checks.parametrize_with_checks`.

Minority-aware defaults (what differs from :class:`sklearn.neural_network.MLPClassifier`):

* ``score`` is the **balanced accuracy** (mean per-class recall), not the accuracy, so
  ``GridSearchCV``/``cross_val_score`` select for the minority classes by default; pass
  ``scoring="accuracy"`` to them to get the usual behaviour.
* the default loss is ``"la"`` (logit adjustment, ``iota_c = tau log pi_c`` with tau = 1), which
  targets balanced error; ``loss="ce"`` gives plain cross-entropy.

Training: AdamW (or SGD with momentum) with a cosine learning-rate decay to 0 over ``epochs``
epochs of shuffled mini-batches, in float32 on ``device``; predictions are computed in float64
so that how rows are batched moves them by float64 rounding only (about 1e-15; float32 kernels
change their summation order with the batch size). Determinism: with an integer
``random_state`` two CPU fits on the same data and machine give identical models
(initialisation draws from torch's global generator seeded under a lock and then restored,
shuffling from a private generator: the caller's torch RNG is left untouched, and fits in
concurrent threads give the same models as one after the other); on CUDA, up to the GPU's own
non-deterministic kernels.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._validation import InputError, check_choice, check_finite, check_int, check_positive, fail, renamed
from .data._splits import _split_rule, _stratified_take
from .losses import create_loss, get_loss_info, list_losses

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _validate_data(estimator: Any, *args: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(*args, **kwargs)


__all__ = ["LOSS_HYPERPARAMETERS", "ImbalancedMLPClassifier"]

#: The loss hyperparameters the estimator exposes as top-level parameters (the union of
#: ``get_loss_info(name).defaults`` over the registered losses; a test keeps them in sync).
LOSS_HYPERPARAMETERS = ("gamma", "tau", "normalize", "max_margin", "scale")

_OPTIMIZERS = ("adamw", "sgd")
# Parameters of a rebalancer that the estimator fills in itself (from the trained model).
_POSTHOC_SUPPLIED = {"tau_norm": ("classifier",), "geometry": ("loss", "loss_hyper")}
_POSTHOC_SUPPLIED["geometry_tuned"] = _POSTHOC_SUPPLIED["geometry"]
# Rows per forward pass at prediction time (bounds memory, not results: inference is float64).
_PREDICT_CHUNK = 8192
# Below this many multiply-adds per step (rows x parameters), CPU work runs on one thread: for
# small networks thread synchronisation costs more than it saves (5x more on a busy machine).
_ONE_THREAD_WORK = 2**24


# torch's thread count is process-wide: fits running at once in threads share one saved value,
# and the last to finish restores it (each restoring its own predecessor's setting could leave
# the process on another fit's count).
_THREADS_LOCK = threading.Lock()
_THREADS_STATE: dict[str, int] = {"users": 0, "saved": 0}


@contextlib.contextmanager
def _cpu_threads(device: torch.device, n_threads: int | None, work: int) -> Iterator[None]:
    """Run torch CPU ops on ``n_threads`` threads (auto: 1 for small work), then restore the
    caller's count once no fit of this process is running."""
    if device.type != "cpu":
        yield
        return
    with _THREADS_LOCK:
        if _THREADS_STATE["users"] == 0:
            _THREADS_STATE["saved"] = torch.get_num_threads()
        _THREADS_STATE["users"] += 1
        base = _THREADS_STATE["saved"]
        n = n_threads if n_threads is not None else (1 if work < _ONE_THREAD_WORK else base)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["users"] -= 1
            if _THREADS_STATE["users"] == 0 and torch.get_num_threads() != _THREADS_STATE["saved"]:
                torch.set_num_threads(_THREADS_STATE["saved"])


def _resolve_device(spec: Any) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch.device."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise fail("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", spec)
    text = spec.strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise fail("device", "'cpu' or 'auto' on a machine without CUDA", spec)
        index = int(text[5:]) if ":" in text else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise fail("device", f"a CUDA device index < {torch.cuda.device_count()}", spec)
        return torch.device("cuda", index)
    raise fail("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", spec)


def _hidden_sizes(value: Any) -> tuple[int, ...]:
    expected = "a positive integer or a non-empty sequence of positive integers"
    if isinstance(value, (bool, np.bool_)):
        raise fail("hidden_layer_sizes", expected, value)
    if isinstance(value, (int, np.integer)):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) == 0:
        raise fail("hidden_layer_sizes", expected, value)
    out = []
    for w in value:
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)) or w < 1:
            raise fail("hidden_layer_sizes", expected, value)
        out.append(int(w))
    return tuple(out)


def _stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, ``round(fraction * n_c)`` samples (at least 1, leaving at least 1) to validation.

    The same rule as :func:`cegeo.data.make_splits`; returns sorted (train, val) positions.
    """
    counts = np.bincount(y, minlength=classes.size)
    small = np.flatnonzero(counts < 2)
    if small.size:
        c = int(small[0])
        raise InputError(
            f"class {_label(classes[c])!r} has {int(counts[c])} sample(s), too few for the post-hoc validation "
            "split (`posthoc` needs at least 2 samples per class: one to train on, one to validate)."
        )
    val, train = _stratified_take(y, _split_rule(counts, fraction), rng)
    return train, val


def _posthoc_keys(method: str) -> list[str]:
    """The parameters of rebalancer ``method`` a user may give in ``posthoc_params``."""
    from .rebalance import create_rebalancer

    supplied = _POSTHOC_SUPPLIED.get(method, ())
    return [k for k in sorted(create_rebalancer(method).get_params()) if k not in supplied]


def _labels_text(classes: np.ndarray, limit: int = 10) -> str:
    """``'fraud', 'ok'``: the labels of y for messages (the first ``limit``)."""
    shown = ", ".join(repr(_label(c)) for c in classes[:limit])
    return shown + (f", ... ({classes.size} labels)" if classes.size > limit else "")


def _posthoc_error(exc: InputError, method: str) -> InputError:
    """A rebalancer's error about one of its parameters, named as the user sets it: the message
    "`tau` must be ..." becomes "`posthoc_params['tau']` must be ..."."""
    return renamed(exc, {key: f"posthoc_params[{key!r}]" for key in _posthoc_keys(method)})


def _label_index(param: str, label: Any, classes: np.ndarray, needed_for: str) -> int:
    """The index in ``classes`` of ``label`` (a label of y, as the user gave it)."""
    expected = f"a label of y (one of {_labels_text(classes)}; {needed_for})"
    if label is None:
        raise fail(param, expected, None)
    try:
        where = [i for i, c in enumerate(classes.tolist()) if c == _label(label)]
    except (TypeError, ValueError):  # e.g. an array compared with a label
        where = []
    if len(where) != 1:
        raise fail(param, expected, label)
    return where[0]


def _label(value: Any) -> Any:
    """A label as a plain Python value (for messages: 'a', not np.str_('a'))."""
    return value.item() if isinstance(value, np.generic) else value


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Mini-batch [start, stop) ranges; a last batch of one sample joins the previous batch
    (BatchNorm needs two samples per batch in training mode)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def _diverged(p: Mapping[str, Any], what: str) -> InputError:
    """The error of a diverged fit, naming the setting that is off: the weight decay when the
    decay step alone (lr x weight_decay >= 1) is unstable, else the learning rate."""
    if p["weight_decay"] >= 1 and p["lr"] * p["weight_decay"] >= 1:
        return fail(
            "weight_decay",
            f"a weight decay at which training does not diverge (lr x weight_decay = "
            f"{p['lr'] * p['weight_decay']:g} >= 1; {what})",
            p["weight_decay"],
        )
    return fail("lr", f"a learning rate at which training does not diverge ({what})", p["lr"])


class ImbalancedMLPClassifier(ClassifierMixin, BaseEstimator):
    """MLP classifier for imbalanced tabular data, trained with a cegeo loss (scikit-learn API).

    Features are standardised with the training split's mean and standard deviation, then an
    MLP of ``len(hidden_layer_sizes)`` blocks [Linear(bias=False), BatchNorm1d, ReLU] and a
    bias-free linear head (``cegeo.models.create_model("mlp")``) is trained with the loss
    ``create_loss(loss, class_counts, **hyper)``. The class counts come from ``y`` (labels may
    be any sortable values, strings included). With ``posthoc`` set, a stratified
    ``validation_fraction`` of the training data is held out, the model is trained on the rest,
    and the :mod:`cegeo.rebalance` method is fitted on the held-out logits and applied to every
    prediction.

    Parameters
    ----------
    loss : str, default="la"
        A registered loss (:func:`cegeo.losses.list_losses`): ``"ce"``, ``"wce"``, ``"la"``,
        ``"cdt"``, ``"ldt"``, ``"vs"``, ``"balanced_softmax"`` or ``"ldam"`` (``ldam`` trains a
        cosine classifier head, as it expects).
    gamma, tau, normalize, max_margin, scale : float or None, default=None
        The loss's hyperparameters (``get_loss_info(loss).defaults``); None uses the registry
        default. Setting one that the chosen loss does not take is an error at ``fit``. E.g.
        ``loss="ldt", gamma=0.5`` is LDT with temperatures ``(n_y/n_max)^0.5``; ``loss="la",
        tau=1.0`` is logit adjustment.
    hidden_layer_sizes : int or tuple of int, default=(128, 128)
        Hidden widths, one per block; the embedding dimension is the last one.
    batchnorm : bool, default=True
        BatchNorm1d after each hidden linear layer.
    epochs : int, default=100
        Passes over the training data.
    lr : float, default=1e-3
        Peak learning rate (decayed to 0 by a cosine schedule, one step per mini-batch).
    batch_size : int, default=64
        Mini-batch size (>= 2; capped at the training set size).
    weight_decay : float, default=1e-4
        Decoupled weight decay (AdamW) or L2 penalty (SGD) on every parameter.
    optimizer : {"adamw", "sgd"}, default="adamw"
    momentum : float, default=0.9
        SGD momentum (only used with ``optimizer="sgd"``).
    posthoc : str or None, default=None
        A :mod:`cegeo.rebalance` method (:func:`cegeo.rebalance.list_rebalancers`):
        ``"posthoc_la"``, ``"tau_norm"``, ``"geometry"``, ``"geometry_tuned"``, ``"lws"`` or
        ``"operating_point"``. The classifier weights (``tau_norm``), training loss and its
        hyperparameters (``geometry``) and training class counts are supplied by the estimator.
    posthoc_params : dict or None, default=None
        Extra parameters of the rebalancer, e.g. ``{"tau": 1.0}`` for a fixed post-hoc LA or
        ``{"normal_class": "ok", "max_false_alarm": 0.05}`` for ``operating_point``
        (``normal_class`` is a label of ``y``).
    posthoc_metric : str, default="balanced_accuracy"
        The validation metric a tuned rebalancer maximises (:data:`cegeo.rebalance.SELECTION_METRICS`).
    validation_fraction : float in (0, 1), default=0.2
        Share of each class held out for the post-hoc method (at least one sample per class,
        leaving at least one to train on). Only used when ``posthoc`` is set.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the shuffling and the validation split. An int makes ``fit``
        deterministic.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. The fitted
        model is kept on the CPU (portable pickles); predictions run on this device.
    n_threads : int or None, default=None
        torch CPU threads for training and prediction (``torch.set_num_threads`` is process-wide;
        the previous value is restored afterwards). None: one thread when a step's work (rows x
        parameters) is below 2^24 multiply-adds, where threads cost more than they save, else
        torch's current setting.

    Attributes
    ----------
    classes_ : ndarray of shape (k,)
        The sorted distinct labels of ``y``.
    n_features_in_ : int
    class_counts_ : ndarray of shape (k,), int64
        Samples per class in ``y`` (in the order of ``classes_``).
    train_class_counts_ : ndarray of shape (k,), int64
        Samples per class the network was trained on (``class_counts_`` minus the post-hoc
        validation split); the loss and the rebalancer use these.
    loss_ : torch.nn.Module
        The training loss (``loss_.spec`` records its name, hyperparameters and counts).
    loss_hyper_ : dict
        The loss hyperparameters used (registry defaults filled in).
    model_ : torch.nn.Module
        The trained network (CPU, eval mode): ``model_.features(x)`` and the bias-free
        ``model_.classifier``; it expects standardised inputs.
    feature_mean_, feature_scale_ : ndarray of shape (n_features_in_,)
        The standardisation (constant features are centred, not scaled).
    posthoc_ : cegeo.rebalance.Rebalancer or None
        The fitted post-hoc correction.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    n_iter_ : int
        Epochs run.
    device_ : torch.device
        Where the model was trained.

    Raises
    ------
    ValueError
        At ``fit``: an unknown ``loss``, ``optimizer``, ``posthoc`` or ``posthoc_metric``; a
        loss hyperparameter the loss does not take or that is not finite; bad sizes, rates or
        fractions; a post-hoc method that cannot work with the loss (``tau_norm`` or
        ``geometry`` with ``ldam``); ``posthoc_params`` without ``posthoc``, setting what the
        estimator supplies, with a key the method does not take or a bad value (named as
        ``posthoc_params['tau']``), or, for ``operating_point``, without a ``normal_class``
        that is a label of ``y``; fewer than 2 classes in ``y``; a class with a single sample
        when ``posthoc`` is set. All of these are raised before the network trains; only a
        post-hoc fit that the validation data make impossible (e.g. no threshold meets
        ``max_false_alarm``) fails after it. Input arrays are checked by scikit-learn's own
        validation.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=400, n_features=8, weights=[0.9, 0.1],
    ...                            class_sep=1.5, random_state=0)
    >>> clf = ImbalancedMLPClassifier(loss="ldt", gamma=0.5, epochs=20, random_state=0).fit(X, y)
    >>> clf.class_counts_.tolist(), clf.loss_hyper_
    ([356, 44], {'gamma': 0.5, 'normalize': 1.0})
    >>> clf.predict_proba(X[:2]).shape, bool(clf.score(X, y) > 0.8)
    ((2, 2), True)

    String labels and a post-hoc logit adjustment tuned on a held-out fifth of the data:

    >>> labels = np.where(y == 1, "fraud", "ok")
    >>> clf = ImbalancedMLPClassifier(loss="ce", posthoc="posthoc_la", epochs=20,
    ...                               random_state=0).fit(X, labels)
    >>> clf.classes_.tolist(), clf.train_class_counts_.tolist(), clf.posthoc_.name
    (['fraud', 'ok'], [35, 285], 'posthoc_la')
    >>> ImbalancedMLPClassifier(loss="ldt", tau=1.0).fit(X, y)
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `tau` must be None for loss 'ldt' (it takes gamma, normalize); got 1.0.
    """

    def __init__(
        self,
        loss: str = "la",
        *,
        gamma: float | None = None,
        tau: float | None = None,
        normalize: float | None = None,
        max_margin: float | None = None,
        scale: float | None = None,
        hidden_layer_sizes: int | Sequence[int] = (128, 128),
        batchnorm: bool = True,
        epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 64,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        momentum: float = 0.9,
        posthoc: str | None = None,
        posthoc_params: Mapping[str, Any] | None = None,
        posthoc_metric: str = "balanced_accuracy",
        validation_fraction: float = 0.2,
        random_state: int | np.random.RandomState | None = None,
        device: str = "auto",
        n_threads: int | None = None,
    ) -> None:
        self.loss = loss
        self.gamma = gamma
        self.tau = tau
        self.normalize = normalize
        self.max_margin = max_margin
        self.scale = scale
        self.hidden_layer_sizes = hidden_layer_sizes
        self.batchnorm = batchnorm
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.momentum = momentum
        self.posthoc = posthoc
        self.posthoc_params = posthoc_params
        self.posthoc_metric = posthoc_metric
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads

    # ------------------------------------------------------------------------------ validation

    def _loss_hyper(self) -> dict[str, float]:
        """The hyperparameters given for the loss; an irrelevant one is an error."""
        info = get_loss_info(check_choice("loss", self.loss, list_losses()))
        hyper: dict[str, float] = {}
        for name in LOSS_HYPERPARAMETERS:
            value = getattr(self, name)
            if value is None:
                continue
            if name not in info.defaults:
                takes = ", ".join(info.defaults) if info.defaults else "no hyperparameters"
                raise fail(name, f"None for loss {self.loss!r} (it takes {takes})", value)
            hyper[name] = check_finite(name, value)
        return hyper

    def _check_params(self) -> dict[str, Any]:
        from .rebalance import SELECTION_METRICS, get_rebalancer_info, list_rebalancers

        hyper = self._loss_hyper()
        p: dict[str, Any] = {"hyper": hyper, "hidden": _hidden_sizes(self.hidden_layer_sizes)}
        if not isinstance(self.batchnorm, (bool, np.bool_)):
            raise fail("batchnorm", "True or False", self.batchnorm)
        p["epochs"] = check_int("epochs", self.epochs, minimum=1)
        p["lr"] = check_positive("lr", self.lr)
        p["batch_size"] = check_int("batch_size", self.batch_size, minimum=2)
        p["weight_decay"] = check_positive("weight_decay", self.weight_decay, strict=False)
        check_choice("optimizer", self.optimizer, _OPTIMIZERS)
        momentum = check_finite("momentum", self.momentum)
        if not 0 <= momentum < 1:
            raise fail("momentum", "a number in [0, 1)", self.momentum)
        p["momentum"] = momentum
        fraction = check_finite("validation_fraction", self.validation_fraction)
        if not 0 < fraction < 1:
            raise fail("validation_fraction", "a number in (0, 1)", self.validation_fraction)
        p["validation_fraction"] = fraction
        if self.posthoc is not None:
            info = get_rebalancer_info(check_choice("posthoc", self.posthoc, list_rebalancers()))
            check_choice("posthoc_metric", self.posthoc_metric, SELECTION_METRICS)
            loss_info = get_loss_info(self.loss)
            if loss_info.needs_cosine_classifier and self.posthoc == "tau_norm":
                raise fail(
                    "posthoc",
                    f"a method that works with loss {self.loss!r} (its cosine head ignores the "
                    "classifier norms that tau_norm rescales)",
                    self.posthoc,
                )
            if "loss" in info.needs and not loss_info.theory:
                raise fail(
                    "posthoc", f"a method that does not need the theory of loss {self.loss!r}", self.posthoc
                )
        params = self.posthoc_params
        if params is not None:
            if self.posthoc is None:
                raise fail("posthoc_params", "None when `posthoc` is None", params)
            if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
                raise fail("posthoc_params", "a dict of rebalancer parameters", params)
            supplied = sorted(set(params) & set(_POSTHOC_SUPPLIED.get(self.posthoc, ())))
            if supplied:
                raise fail(
                    "posthoc_params",
                    f"parameters the estimator does not supply itself (it sets {', '.join(supplied)})",
                    dict(params),
                )
            valid = _posthoc_keys(self.posthoc)
            unknown = sorted(set(params) - set(valid))
            if unknown:
                raise InputError(
                    f"`posthoc_params` must hold parameters of rebalancer {self.posthoc!r} "
                    f"({', '.join(valid) or 'none'}); got unknown key(s) {', '.join(map(repr, unknown))}."
                )
        p["device"] = _resolve_device(self.device)
        if self.n_threads is not None:
            check_int("n_threads", self.n_threads, minimum=1)
        if isinstance(self.random_state, (bool, np.bool_)):
            raise fail("random_state", "None, an integer or a numpy RandomState", self.random_state)
        try:
            p["seed"] = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        except ValueError:
            raise fail(
                "random_state", "None, an integer in [0, 2**32 - 1] or a numpy RandomState", self.random_state
            ) from None
        return p

    # ------------------------------------------------------------------------------------ fit

    def fit(self, X: Any, y: Any) -> ImbalancedMLPClassifier:
        """Train the network (and the post-hoc correction) on ``X``, ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Numeric features (any scale: they are standardised).
        y : array-like of shape (n_samples,)
            Class labels (at least two distinct values; strings allowed).

        Returns
        -------
        self
        """
        p = self._check_params()
        try:
            X, y = _validate_data(self, X, y, dtype=(np.float64, np.float32))
            try:
                check_classification_targets(y)
                classes, y_idx = np.unique(y, return_inverse=True)
            except TypeError:  # e.g. ints mixed with strings in an object array
                kinds = sorted({type(v).__name__ for v in y.ravel()})
                raise fail("y", "labels of one sortable type", f"a mix of {', '.join(kinds)}") from None
            if classes.size < 2:
                raise InputError(
                    f"`y` must hold at least 2 classes; got 1 class ({_label(classes[0])!r}) in "
                    f"{y.shape[0]} sample(s)."
                )
            k = int(classes.size)
            y_idx = y_idx.astype(np.int64).ravel()
            posthoc_params = self._posthoc_options(classes, np.bincount(y_idx, minlength=k), p["hyper"])
            rng = np.random.default_rng(p["seed"])
            if self.posthoc is not None:
                train_pos, val_pos = _stratified_split(y_idx, p["validation_fraction"], rng, classes)
            else:
                train_pos, val_pos = np.arange(y_idx.size), None
            X_train, y_train = X[train_pos], y_idx[train_pos]
            train_counts = np.bincount(y_train, minlength=k).astype(np.int64)

            mean = X_train.mean(axis=0, dtype=np.float64)
            std = X_train.std(axis=0, dtype=np.float64)
            std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)

            device = p["device"]
            loss_fn = create_loss(self.loss, train_counts, **p["hyper"]).to(device)
            info = get_loss_info(self.loss)
            model, curve = self._train(
                (X_train - mean) / std, y_train, k, loss_fn, p, cosine=info.needs_cosine_classifier
            )

            self.classes_ = classes
            self.class_counts_ = np.bincount(y_idx, minlength=k).astype(np.int64)
            self.train_class_counts_ = train_counts
            self.feature_mean_ = mean
            self.feature_scale_ = std
            self.model_ = model
            self.loss_ = loss_fn.cpu()
            self.loss_hyper_ = dict(loss_fn.spec.hyper)
            self.loss_curve_ = curve
            self.n_iter_ = p["epochs"]
            self.device_ = device
            self.posthoc_ = None
            if self.posthoc is not None:
                assert val_pos is not None and posthoc_params is not None
                self.posthoc_ = self._fit_posthoc(self._logits(X[val_pos]), y_idx[val_pos], posthoc_params)
            return self
        except Exception:
            # A failed fit (bad y, a class too small for the post-hoc split, a diverged run, an
            # impossible operating-point budget ...) leaves an unfitted estimator, never one
            # half from the previous fit and half from this one.
            for name in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
                delattr(self, name)
            raise

    def _train(
        self, X: np.ndarray, y: np.ndarray, k: int, loss_fn: nn.Module, p: dict[str, Any], *, cosine: bool
    ) -> tuple[nn.Module, list[float]]:
        from .models import create_model, seeded_init

        device = p["device"]
        seed = p["seed"]
        with seeded_init(seed):  # initialise without touching the caller's RNG (thread-safe)
            model = create_model(
                "mlp",
                in_shape=(X.shape[1],),
                num_classes=k,
                widths=p["hidden"],
                batchnorm=bool(self.batchnorm),
                cosine_classifier=cosine,
            )
        model = model.to(device)
        if self.optimizer == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(
                model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"]
            )
        else:
            opt = torch.optim.SGD(
                model.parameters(), lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"]
            )
        # Device-resident data; a batch is an index gather (copies, so read-only inputs are fine).
        xt = torch.tensor(X, dtype=torch.float32, device=device)  # (n, d)
        yt = torch.tensor(y, dtype=torch.int64, device=device)  # (n,)
        n = yt.shape[0]
        bounds = _batch_bounds(n, min(p["batch_size"], n))
        total = p["epochs"] * len(bounds)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        curve: list[float] = []
        step = 0
        validate = getattr(loss_fn, "validate", False)
        loss_fn.validate = False  # labels are 0..k-1 by construction; skip the per-call check
        model.train()
        work = min(p["batch_size"], n) * sum(t.numel() for t in model.parameters())
        with _cpu_threads(device, self.n_threads, work):
            for _ in range(p["epochs"]):
                order = torch.randperm(n, generator=gen, device=device)
                epoch_loss = torch.zeros((), device=device)
                for start, stop in bounds:
                    lr = p["lr"] * 0.5 * (1.0 + math.cos(math.pi * step / total))  # cosine decay to 0
                    for group in opt.param_groups:
                        group["lr"] = lr
                    idx = order[start:stop]
                    loss = loss_fn(model(xt[idx]), yt[idx])
                    loss.backward()
                    try:
                        opt.step()
                    except RuntimeError as exc:
                        # a step size beyond float32 (lr near 1e38, or lr * weight_decay for
                        # AdamW) cannot be applied to float32 weights: torch raises, not diverges
                        if "without overflow" not in str(exc):
                            raise
                        name = "weight_decay" if p["weight_decay"] > p["lr"] else "lr"
                        raise fail(
                            name,
                            f"a number whose optimizer step fits float32 weights (the step in "
                            f"epoch {len(curve) + 1} overflowed)",
                            getattr(self, name),
                        ) from None
                    opt.zero_grad(set_to_none=True)
                    epoch_loss += loss.detach() * (stop - start)
                    step += 1
                curve.append(float(epoch_loss) / n)
                if not math.isfinite(curve[-1]):
                    raise _diverged(p, f"the loss became {curve[-1]} in epoch {len(curve)} of {p['epochs']}")
        if not all(bool(torch.isfinite(t).all()) for t in model.parameters()):
            raise _diverged(p, "the weights became non-finite")
        loss_fn.validate = validate
        model.eval()
        return model.cpu(), curve

    def _posthoc_options(
        self, classes: np.ndarray, class_counts: np.ndarray, hyper: Mapping[str, float]
    ) -> dict[str, Any] | None:
        """The rebalancer's parameters, validated before any training (None without ``posthoc``).

        ``normal_class`` (a label of y) becomes its class index. Every other value is checked by
        the rebalancer itself: it is fitted once on made-up, perfectly separated validation
        logits of the same classes, so a bad value (``tau='x'``, ``max_false_alarm=-1`` ...) is
        refused now, in the rebalancer's own words, rather than after the network has trained.
        Only what depends on the real validation data (e.g. an impossible false-alarm budget)
        is left to the real fit.
        """
        from .rebalance import create_rebalancer, get_rebalancer_info

        if self.posthoc is None:
            return None
        params = dict(self.posthoc_params or {})
        if "normal_class" in get_rebalancer_info(self.posthoc).needs:
            params["normal_class"] = _label_index(
                "posthoc_params['normal_class']",
                params.get("normal_class"),
                classes,
                f"posthoc={self.posthoc!r} needs the normal class",
            )
        k = int(classes.size)
        y = np.repeat(np.arange(k), 2)  # (2k,) two made-up validation samples per class
        logits = 4.0 * np.eye(k)[y]  # (2k, k)
        supplied = self._posthoc_supplied(np.eye(k), dict(hyper))
        try:
            create_rebalancer(self.posthoc, **params, **supplied).fit(
                logits, y, class_counts=class_counts, metric=self.posthoc_metric
            )
        except InputError as exc:
            raise _posthoc_error(exc, self.posthoc) from None
        return params

    def _posthoc_supplied(self, classifier: np.ndarray, loss_hyper: dict[str, float]) -> dict[str, Any]:
        """The rebalancer parameters the estimator fills in (``_POSTHOC_SUPPLIED``)."""
        out: dict[str, Any] = {}
        if self.posthoc == "tau_norm":
            out["classifier"] = classifier
        if self.posthoc in ("geometry", "geometry_tuned"):
            out["loss"] = self.loss
            out["loss_hyper"] = loss_hyper
        return out

    def _fit_posthoc(self, logits: np.ndarray, y_val: np.ndarray, params: Mapping[str, Any]) -> Any:
        from .rebalance import create_rebalancer

        W = self.model_.classifier.weight.detach().double().numpy()  # (k, d)
        supplied = self._posthoc_supplied(W, dict(self.loss_hyper_))
        rebalancer = create_rebalancer(self.posthoc, **params, **supplied)
        try:
            return rebalancer.fit(
                logits, y_val, class_counts=self.train_class_counts_, metric=self.posthoc_metric
            )
        except InputError as exc:
            raise _posthoc_error(exc, self.posthoc) from None

    # ------------------------------------------------------------------------------ inference

    def _forward(self, X: np.ndarray, *, features: bool = False) -> np.ndarray:
        """Logits (or embeddings) of validated rows, float64, computed in float64 on ``device_``
        (on the CPU when the model was trained on a GPU this machine does not have).

        float64 makes each row's output independent of how rows are batched up to float64
        rounding (float32 matmul kernels change their summation order with the batch size)."""
        device = (
            self.device_ if self.device_.type == "cpu" or torch.cuda.is_available() else torch.device("cpu")
        )
        model = copy.deepcopy(self.model_).to(device=device, dtype=torch.float64).eval()
        Z = (X - self.feature_mean_) / self.feature_scale_  # (n, d) float64
        out = [np.zeros((0, model.feature_dim if features else self.classes_.size))]
        work = min(Z.shape[0], _PREDICT_CHUNK) * sum(t.numel() for t in model.parameters())
        with torch.no_grad(), _cpu_threads(device, self.n_threads, work):
            for start in range(0, Z.shape[0], _PREDICT_CHUNK):
                xb = torch.as_tensor(np.ascontiguousarray(Z[start : start + _PREDICT_CHUNK]), device=device)
                out.append((model.features(xb) if features else model(xb)).cpu().numpy())
        return np.concatenate(out)

    def _logits(self, X: np.ndarray) -> np.ndarray:
        return self._forward(X)

    def _decision_logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = _validate_data(self, X, dtype=np.float64, reset=False)
        z = self._logits(X)
        if self.posthoc_ is not None:
            z = self.posthoc_.transform(z)
        return z

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits after the post-hoc correction (if any).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, k), or (n_samples,) for two classes
            For two classes, ``z_1 - z_0`` (positive means ``classes_[1]``), as scikit-learn
            expects; ``predict`` is the argmax of the logits.
        """
        z = self._decision_logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the (corrected) logits, shape (n_samples, k); rows sum to 1.

        With a post-hoc correction these are the corrected model's probabilities (e.g. logit
        adjustment divides out the training prior), not the raw network's.
        """
        z = torch.from_numpy(self._decision_logits(X))
        return F.softmax(z, dim=1).numpy()

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log-softmax of the (corrected) logits, shape (n_samples, k)."""
        z = torch.from_numpy(self._decision_logits(X))
        return F.log_softmax(z, dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (values of ``classes_``): the argmax of the corrected logits."""
        z = self._decision_logits(X)
        return self.classes_[np.argmax(z, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Balanced accuracy (mean per-class recall) of ``predict(X)`` against ``y``.

        Unlike :meth:`sklearn.base.ClassifierMixin.score` (accuracy): a model that ignores a
        rare class cannot score well. Model selection tools use it unless given ``scoring``.
        """
        return float(balanced_accuracy_score(y, self.predict(X), sample_weight=sample_weight))

    def features(self, X: Any) -> np.ndarray:
        """Penultimate embeddings ``h`` of ``X``, shape (n_samples, hidden_layer_sizes[-1]).

        The geometry probes of :mod:`cegeo.geometry` take these with ``model_.classifier``.
        """
        check_is_fitted(self)
        return self._forward(_validate_data(self, X, dtype=np.float64, reset=False), features=True)
