"""Models: every one is ``features -> classifier``, the contract the probes and the trainer use.

* ``model.features(x)`` returns the penultimate embedding ``h``, shape ``(n, d)``.
* ``model.classifier`` is a bias-free ``nn.Linear(d, k)`` (``W`` = ``classifier.weight``,
  ``(k, d)``), or with ``cosine_classifier=True`` a :class:`CosineClassifier` whose logits are
  ``cos(h, w_c)`` (for LDAM, which multiplies by its own scale).
* ``model(x) == model.classifier(model.features(x))``.

Inputs are float tensors, already normalised, of shape ``(n, *in_shape)``: ``(C, H, W)`` for
images, ``(d,)`` for tabular data (the MLP flattens whatever it gets).

==============  ===============================================================================
name            architecture
==============  ===============================================================================
``mlp``         ``depth`` x [Linear(bias=False), BatchNorm1d, ReLU] of ``width`` units (the
                paper's MNIST model: 6 x 2048), or explicit ``widths``; d = last width
``resnet18``    ResNet-18 for 32x32 inputs: 3x3 stride-1 stem, no max-pool, [2, 2, 2, 2]
                basic blocks of 64..512 channels, global average pool; d = 512 (11.17M
                parameters for 10 classes)
``resnet32``    the CIFAR ResNet-32 of He et al. (2016) as used by LDAM-DRW and the long-tail
                literature: 3 stages x 5 basic blocks of 16/32/64 channels, parameter-free
                (option A) shortcuts; d = 64 (0.46M parameters)
``cnn``         a small CNN for 28x28 digits (any size >= 4): 3 conv stages (32, 64, 128) +
                global average pool + Linear(128, ``width``, bias=False), BN, ReLU; d = ``width``
==============  ===============================================================================

Initialisation: convolutions Kaiming-normal (fan-out, ReLU), BatchNorm weight 1 and bias 0,
hidden linear layers Kaiming-normal (fan-in, ReLU), the classifier PyTorch's default
(Kaiming-uniform, a = sqrt(5)). ``zero_init_residual=True`` starts each residual branch at zero.
Every layer works with ``channels_last`` inputs (``model.to(memory_format=torch.channels_last)``).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import Registry
from ._validation import InputError, check_int, check_options, fail

__all__ = [
    "CNN",
    "MLP",
    "CosineClassifier",
    "ModelInfo",
    "ResNet18",
    "ResNet32",
    "count_parameters",
    "create_model",
    "get_model_info",
    "list_models",
    "seeded_init",
]


# --------------------------------------------------------------------------------------------
# Classifier heads
# --------------------------------------------------------------------------------------------


class CosineClassifier(nn.Module):
    """Normalised classifier: ``logits[i, c] = <h_i / |h_i|, w_c / |w_c|>`` (cosines in [-1, 1]).

    The head LDAM expects (Cao et al. 2019 call it ``NormedLinear``); the loss applies its own
    scale. ``weight`` is ``(k, d)`` like :class:`torch.nn.Linear`, and ``bias`` is ``None``.

    Parameters
    ----------
    in_features : int
        Embedding dimension d.
    out_features : int
        Number of classes k.

    Examples
    --------
    >>> head = CosineClassifier(4, 3)
    >>> head.weight.shape, head.bias is None
    (torch.Size([3, 4]), True)
    >>> bool(head(torch.randn(5, 4)).abs().max() <= 1 + 1e-6)
    True
    """

    bias: None

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def normalized_weight(self) -> Tensor:
        """The unit-norm rows ``w_c / |w_c|`` (what the logits use), ``(k, d)``."""
        return F.normalize(self.weight, dim=1)

    def forward(self, h: Tensor) -> Tensor:
        return F.normalize(h, dim=1) @ self.normalized_weight().t()  # (n, k)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias=False"


def _classifier(d: int, k: int, cosine: bool) -> nn.Module:
    return CosineClassifier(d, k) if cosine else nn.Linear(d, k, bias=False)


class _Model(nn.Module):
    """Base: ``forward(x) = classifier(features(x))``; subclasses define :meth:`features`."""

    classifier: nn.Module
    feature_dim: int
    num_classes: int

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (n, k)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------


class MLP(_Model):
    """Multi-layer perceptron: hidden blocks [Linear(bias=False), BatchNorm1d, ReLU].

    Parameters
    ----------
    in_features : int
        Flattened input size (the model flattens ``(n, *in_shape)`` inputs).
    num_classes : int
    widths : sequence of int
        Hidden widths, one per block (the paper: six of 2048). d = ``widths[-1]``.
    batchnorm : bool
        Use BatchNorm1d after each hidden Linear (the paper does).
    cosine_classifier : bool

    Examples
    --------
    >>> m = MLP(64, 10, widths=(32, 32))
    >>> m.features(torch.randn(5, 1, 8, 8)).shape, m(torch.randn(5, 64)).shape
    (torch.Size([5, 32]), torch.Size([5, 10]))
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        widths: Sequence[int] = (2048,) * 6,
        *,
        batchnorm: bool = True,
        cosine_classifier: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for w in widths:
            layers.append(nn.Linear(prev, w, bias=False))
            if batchnorm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(nn.ReLU(inplace=True))
            prev = w
        self.body = nn.Sequential(*layers)
        self.in_features = in_features
        self.feature_dim = prev
        self.num_classes = num_classes
        self.classifier = _classifier(prev, num_classes, cosine_classifier)
        for m in self.body:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        _init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.flatten(1))  # (n, d)


# --------------------------------------------------------------------------------------------
# ResNets
# --------------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """3x3-3x3 residual block; ``shortcut`` is "conv" (1x1 conv + BN, option B) or "pad"
    (stride-2 subsample + zero channels, option A of He et al. for the CIFAR ResNets)."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.pad = 0
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            if shortcut == "conv":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )
            else:
                self.pad = c_out - c_in

    def _skip(self, x: Tensor) -> Tensor:
        if self.shortcut is not None:
            return self.shortcut(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._skip(x), inplace=True)


class _ResNet(_Model):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stage_widths: Sequence[int],
        blocks: Sequence[int],
        shortcut: str,
        *,
        cosine_classifier: bool,
        zero_init_residual: bool,
    ) -> None:
        super().__init__()
        w0 = stage_widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True)
        )
        stages: list[nn.Module] = []
        c_in = w0
        for i, (w, n) in enumerate(zip(stage_widths, blocks, strict=True)):
            layer = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layer.append(_BasicBlock(c_in, w, stride, shortcut))
                c_in = w
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c_in
        self.num_classes = num_classes
        self.classifier = _classifier(c_in, num_classes, cosine_classifier)
        _init_weights(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, _BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def features(self, x: Tensor) -> Tensor:
        out = self.stages(self.stem(x))
        return self.pool(out).flatten(1)  # (n, d)


class ResNet18(_ResNet):
    """ResNet-18 for 32x32 images: 3x3 stride-1 stem, no max-pool, 1x1-conv shortcuts.

    Examples
    --------
    >>> m = ResNet18(3, 10)
    >>> m(torch.randn(2, 3, 32, 32)).shape, m.feature_dim
    (torch.Size([2, 10]), 512)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: int = 64,
        cosine_classifier: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            [width, 2 * width, 4 * width, 8 * width],
            [2, 2, 2, 2],
            "conv",
            cosine_classifier=cosine_classifier,
            zero_init_residual=zero_init_residual,
        )


class ResNet32(_ResNet):
    """The CIFAR ResNet-32 (He et al. 2016, §4.2): 6n+2 layers with n = 5, option-A shortcuts.

    Examples
    --------
    >>> m = ResNet32(3, 10)
    >>> m(torch.randn(2, 3, 32, 32)).shape, m.feature_dim
    (torch.Size([2, 10]), 64)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: int = 16,
        cosine_classifier: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            [width, 2 * width, 4 * width],
            [5, 5, 5],
            "pad",
            cosine_classifier=cosine_classifier,
            zero_init_residual=zero_init_residual,
        )


# --------------------------------------------------------------------------------------------
# Small CNN
# --------------------------------------------------------------------------------------------


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class CNN(_Model):
    """A small CNN for 28x28 grey digits (works for any input of at least 4x4).

    conv(32) - conv(32) - pool - conv(64) - conv(64) - pool - conv(128) - global average pool -
    Linear(128, width, bias=False) - BatchNorm1d - ReLU; d = ``width``.

    Examples
    --------
    >>> m = CNN(1, 10)
    >>> m(torch.randn(2, 1, 28, 28)).shape, m.features(torch.randn(2, 1, 8, 8)).shape
    (torch.Size([2, 10]), torch.Size([2, 256]))
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, width: int = 256, cosine_classifier: bool = False
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_channels, 32),
            *_conv_bn(32, 32),
            nn.MaxPool2d(2),
            *_conv_bn(32, 64),
            *_conv_bn(64, 64),
            nn.MaxPool2d(2),
            *_conv_bn(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.head = nn.Sequential(
            nn.Linear(128, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)
        )
        nn.init.kaiming_normal_(self.head[0].weight, nonlinearity="relu")
        self.feature_dim = width
        self.num_classes = num_classes
        self.classifier = _classifier(width, num_classes, cosine_classifier)
        _init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))  # (n, d)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """A registered model.

    Attributes
    ----------
    name : str
    description : str
    inputs : str
        ``"any"`` (flattens any shape) or ``"image"`` (needs ``in_shape = (C, H, W)``).
    min_size : int
        Smallest image side the architecture accepts.
    build : callable
        ``build(in_shape, num_classes, **options) -> nn.Module``.
    options : Mapping[str, Any]
        Keyword options and their defaults.
    """

    name: str
    description: str
    inputs: str
    build: Callable[..., nn.Module] = field(repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    min_size: int = 1


_MODELS: Registry[ModelInfo] = Registry("model")


def _build_mlp(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 2048,
    depth: int = 6,
    widths: Sequence[int] | None = None,
    batchnorm: bool = True,
    cosine_classifier: bool = False,
) -> MLP:
    if widths is None:
        width = check_int("width", width, minimum=1)
        depth = check_int("depth", depth, minimum=1)
        hidden = (width,) * depth
    else:
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) == 0:
            raise fail("widths", "a non-empty sequence of positive integers", widths)
        hidden = tuple(check_int("widths", w, minimum=1) for w in widths)
    return MLP(
        math.prod(in_shape),
        num_classes,
        hidden,
        batchnorm=_flag("batchnorm", batchnorm),
        cosine_classifier=_flag("cosine_classifier", cosine_classifier),
    )


def _build_resnet18(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 64,
    cosine_classifier: bool = False,
    zero_init_residual: bool = False,
) -> ResNet18:
    width = check_int("width", width, minimum=1)
    return ResNet18(
        in_shape[0],
        num_classes,
        width=width,
        cosine_classifier=_flag("cosine_classifier", cosine_classifier),
        zero_init_residual=_flag("zero_init_residual", zero_init_residual),
    )


def _build_resnet32(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 16,
    cosine_classifier: bool = False,
    zero_init_residual: bool = False,
) -> ResNet32:
    width = check_int("width", width, minimum=1)
    if width % 2:
        raise fail("width", "an even number (option-A shortcuts pad channels in halves)", width)
    return ResNet32(
        in_shape[0],
        num_classes,
        width=width,
        cosine_classifier=_flag("cosine_classifier", cosine_classifier),
        zero_init_residual=_flag("zero_init_residual", zero_init_residual),
    )


def _build_cnn(
    in_shape: tuple[int, ...], num_classes: int, *, width: int = 256, cosine_classifier: bool = False
) -> CNN:
    width = check_int("width", width, minimum=1)
    return CNN(
        in_shape[0], num_classes, width=width, cosine_classifier=_flag("cosine_classifier", cosine_classifier)
    )


def _flag(param: str, value: Any) -> bool:
    """A boolean option; ``"true"``/``"false"`` (and 1/0, yes/no) strings are accepted."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise fail(param, "true or false", value)


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


for _name, _desc, _inputs, _fn, _min in (
    (
        "mlp",
        "MLP: depth x [Linear(bias=False), BatchNorm1d, ReLU] (the paper's 6 x 2048)",
        "any",
        _build_mlp,
        1,
    ),
    (
        "resnet18",
        "ResNet-18 for 32x32 images (3x3 stride-1 stem, no max-pool), d = 512",
        "image",
        _build_resnet18,
        1,
    ),
    ("resnet32", "CIFAR ResNet-32 (He et al. 2016, option-A shortcuts), d = 64", "image", _build_resnet32, 1),
    (
        "cnn",
        "small CNN for 28x28 images (3 conv stages, global pool, Linear), d = width",
        "image",
        _build_cnn,
        4,
    ),
):
    _MODELS.register(ModelInfo(_name, _desc, _inputs, _fn, _defaults(_fn), _min))


# Serialises seeded initialisations: torch's CPU generator is one per process, shared by threads.
_INIT_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Draw from torch's global CPU generator seeded with ``seed``, then give the caller's back.

    For building a model reproducibly (``nn.init`` draws from the global generator) without
    changing the caller's random stream. One thread at a time: two seeded initialisations in
    two threads would otherwise interleave their draws (and give each other's generator state
    back), so neither model would be the one its seed gives.

    Examples
    --------
    >>> with seeded_init(0):
    ...     a = nn.Linear(3, 2).weight
    >>> with seeded_init(0):
    ...     b = nn.Linear(3, 2).weight
    >>> bool(torch.equal(a, b))
    True
    """
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


def list_models() -> list[str]:
    """Names of the registered models.

    Examples
    --------
    >>> list_models()
    ['mlp', 'resnet18', 'resnet32', 'cnn']
    """
    return _MODELS.names()


def get_model_info(name: str, param: str | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model (ValueError listing valid names if unknown)."""
    return _MODELS.get(name, param)


def create_model(name: str, *, in_shape: Sequence[int], num_classes: int, **options: Any) -> nn.Module:
    """Build a registered model for inputs of shape ``(n, *in_shape)`` and ``num_classes`` classes.

    Parameters
    ----------
    name : str
        One of :func:`list_models`.
    in_shape : sequence of int
        Shape of one input: ``(C, H, W)`` for images (required by the conv models), any shape
        for ``mlp`` (flattened), e.g. ``(d,)`` for tabular data.
    num_classes : int
        k >= 2.
    **options
        The model's options (``get_model_info(name).options``): ``cosine_classifier`` (all),
        ``width`` (all; ``mlp`` hidden width, ``resnet18``/``resnet32`` first-stage channels,
        ``cnn`` embedding size), ``depth``, ``widths``, ``batchnorm`` (``mlp``),
        ``zero_init_residual`` (ResNets). Unknown options are an error.

    Returns
    -------
    torch.nn.Module
        With ``features(x) -> (n, d)``, ``classifier`` (bias-free), ``feature_dim``,
        ``num_classes``.

    Raises
    ------
    ValueError
        Unknown model or option; bad ``in_shape``/``num_classes``/option values.

    Examples
    --------
    >>> m = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, width=64, depth=2)
    >>> m(torch.zeros(3, 1, 8, 8)).shape, m.classifier.bias is None
    (torch.Size([3, 10]), True)
    >>> create_model("resnet18", in_shape=(64,), num_classes=10)
    Traceback (most recent call last):
    ...
    cegeo._validation.InputError: `in_shape` must be (C, H, W) for the image model 'resnet18'; got (64,).
    """
    info = _MODELS.get(name)
    if isinstance(in_shape, (str, bytes)) or not isinstance(in_shape, Sequence) or len(in_shape) == 0:
        raise fail("in_shape", "a non-empty sequence of positive integers", in_shape)
    try:
        shape = tuple(check_int("in_shape", s, minimum=1) for s in in_shape)
    except InputError:
        raise fail("in_shape", "a sequence of positive integers", tuple(in_shape)) from None
    k = check_int("num_classes", num_classes, minimum=2)
    if info.inputs == "image":
        if len(shape) != 3:
            raise fail("in_shape", f"(C, H, W) for the image model {name!r}", shape)
        if min(shape[1:]) < info.min_size:
            raise fail("in_shape", f"images of at least {info.min_size}x{info.min_size} for {name!r}", shape)
    check_options("options", options, info.options, f"model {name!r}")
    given = [o for o in ("width", "depth") if o in options]
    if name == "mlp" and options.get("widths") is not None and given:
        # widths sets every hidden layer: width and depth would be ignored
        raise fail(
            "widths", f"given without {' and '.join(given)} (it sets every hidden layer)", options["widths"]
        )
    model = info.build(shape, k, **options)
    model.in_shape = shape  # type: ignore[assignment]
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters.

    Examples
    --------
    >>> count_parameters(nn.Linear(3, 2, bias=False))
    6
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
