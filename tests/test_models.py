"""Models: the features -> bias-free classifier contract, for every registered model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cegeo.models import (
    CosineClassifier,
    count_parameters,
    create_model,
    get_model_info,
    list_models,
)

# One small input shape per model (the contract test runs each on CPU in well under a second).
SHAPES = {"mlp": (1, 8, 8), "resnet18": (3, 32, 32), "resnet32": (3, 32, 32), "cnn": (1, 28, 28)}
SMALL = {
    "mlp": {"width": 32, "depth": 3},
    "resnet18": {"width": 8},
    "resnet32": {"width": 4},
    "cnn": {"width": 16},
}


def test_registry_names():
    assert list_models() == ["mlp", "resnet18", "resnet32", "cnn"]
    assert set(SHAPES) == set(list_models())
    assert get_model_info("mlp").options["depth"] == 6 and get_model_info("mlp").options["width"] == 2048


@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("name", list_models())
def test_contract(name, cosine):
    torch.manual_seed(0)
    shape = SHAPES[name]
    model = create_model(name, in_shape=shape, num_classes=5, cosine_classifier=cosine, **SMALL[name])
    x = torch.randn(6, *shape)
    model.eval()
    with torch.no_grad():
        h = model.features(x)
        z = model(x)
    assert h.shape == (6, model.feature_dim) and z.shape == (6, 5)
    torch.testing.assert_close(z, model.classifier(h), rtol=0, atol=0)
    assert model.classifier.bias is None
    assert model.classifier.weight.shape == (5, model.feature_dim)
    assert model.num_classes == 5 and model.in_shape == shape
    if cosine:
        assert isinstance(model.classifier, CosineClassifier)
        cos = nn.functional.normalize(h, dim=1) @ nn.functional.normalize(model.classifier.weight, dim=1).T
        torch.testing.assert_close(z, cos)
        assert z.abs().max() <= 1 + 1e-6
    else:
        assert type(model.classifier) is nn.Linear
        torch.testing.assert_close(z, h @ model.classifier.weight.T)
    # trains: gradients reach the first layer
    model.train()
    loss = nn.functional.cross_entropy(model(x), torch.arange(6) % 5)
    loss.backward()
    first = next(p for p in model.parameters() if p.ndim > 1)
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet18", "resnet32", "cnn"])
def test_channels_last_gives_the_same_output(name):
    torch.manual_seed(1)
    shape = SHAPES[name]
    model = create_model(name, in_shape=shape, num_classes=3, **SMALL[name]).eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_parameter_counts_match_the_literature():
    r18 = create_model("resnet18", in_shape=(3, 32, 32), num_classes=10)
    r32 = create_model("resnet32", in_shape=(3, 32, 32), num_classes=10)
    # kuangliu/pytorch-cifar ResNet18 has 11,173,962 parameters with the 10 classifier biases.
    assert count_parameters(r18) == 11_173_962 - 10
    # He et al. (2016) report 0.46M for ResNet-32; LDAM-DRW's resnet32 has 464,154 with biases.
    assert count_parameters(r32) == 464_154 - 10
    assert r18.feature_dim == 512 and r32.feature_dim == 64
    # depth: ResNet-32 has 31 conv layers + the classifier
    assert sum(isinstance(m, nn.Conv2d) for m in r32.modules()) == 31
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in r18.modules()) == 17


def test_resnet18_stem_has_no_maxpool_and_keeps_resolution():
    m = create_model("resnet18", in_shape=(3, 32, 32), num_classes=10, width=8)
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    conv = m.stem[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
    assert m.stem(torch.zeros(1, 3, 32, 32)).shape[-2:] == (32, 32)


def test_mlp_is_the_papers_by_default():
    m = create_model("mlp", in_shape=(1, 28, 28), num_classes=10)
    linears = [x for x in m.body if isinstance(x, nn.Linear)]
    bns = [x for x in m.body if isinstance(x, nn.BatchNorm1d)]
    assert len(linears) == 6 and all(x.bias is None and x.out_features == 2048 for x in linears)
    assert len(bns) == 6 and linears[0].in_features == 784
    kinds = [type(x).__name__ for x in m.body][:3]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"]
    m2 = create_model("mlp", in_shape=(10,), num_classes=3, widths=[7, 5], batchnorm="false")
    assert [x.out_features for x in m2.body if isinstance(x, nn.Linear)] == [7, 5]
    assert not any(isinstance(x, nn.BatchNorm1d) for x in m2.body) and m2.feature_dim == 5


def test_zero_init_residual_makes_blocks_identity_at_start():
    m = create_model("resnet18", in_shape=(3, 32, 32), num_classes=10, width=8, zero_init_residual=True)
    block = m.stages[0][0]
    assert torch.all(block.bn2.weight == 0)
    x = torch.relu(torch.randn(2, 8, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), x)


def test_resnet32_option_a_shortcut_pads_channels():
    m = create_model("resnet32", in_shape=(3, 32, 32), num_classes=10).eval()
    block = m.stages[1][0]  # 16 -> 32 channels, stride 2
    assert block.shortcut is None and block.pad == 16
    skip = block._skip(torch.ones(1, 16, 32, 32))
    assert skip.shape == (1, 32, 16, 16)
    assert skip[:, :8].abs().sum() == 0 and skip[:, 24:].abs().sum() == 0 and torch.all(skip[:, 8:24] == 1)


def test_cosine_classifier_is_scale_invariant():
    head = CosineClassifier(4, 3)
    h = torch.randn(5, 4)
    torch.testing.assert_close(head(h), head(7.0 * h))
    torch.testing.assert_close(head.normalized_weight().norm(dim=1), torch.ones(3))


@pytest.mark.parametrize(
    ("name", "kw", "match"),
    [
        ("vit", {}, r"unknown model 'vit'; valid names: 'mlp', 'resnet18', 'resnet32', 'cnn'"),
        (
            "resnet18",
            {"in_shape": (64,)},
            r"`in_shape` must be \(C, H, W\) for the image model 'resnet18'; got \(64,\)",
        ),
        ("cnn", {"in_shape": (1, 2, 2)}, r"`in_shape` must be images of at least 4x4 for 'cnn'"),
        ("mlp", {"in_shape": (0, 3)}, r"`in_shape` must be a sequence of positive integers; got \(0, 3\)"),
        ("mlp", {"in_shape": "64"}, r"`in_shape` must be a non-empty sequence of positive integers"),
        ("mlp", {"num_classes": 1}, r"`num_classes` must be an integer >= 2; got 1"),
        ("mlp", {"dropout": 0.1}, r"`options` must be options of model 'mlp' \('width', 'depth'"),
        ("mlp", {"width": 0}, r"`width` must be an integer >= 1; got 0"),
        ("mlp", {"depth": 2.5}, r"`depth` must be an integer; got 2.5"),
        ("mlp", {"widths": []}, r"`widths` must be a non-empty sequence of positive integers"),
        ("mlp", {"widths": [16, 8], "width": 512}, r"`widths` must be given without width \(it sets every"),
        (
            "mlp",
            {"widths": [16], "width": 2048, "depth": 6},
            r"`widths` must be given without width and depth",
        ),
        ("mlp", {"cosine_classifier": "maybe"}, r"`cosine_classifier` must be true or false; got 'maybe'"),
        ("resnet32", {"width": 5}, r"`width` must be an even number"),
    ],
)
def test_errors(name, kw, match):
    args = {"in_shape": SHAPES.get(name, (3, 32, 32)), "num_classes": 10, **kw}
    with pytest.raises(ValueError, match=match):
        create_model(name, **args)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list_models())
def test_cuda_matches_cpu(name):
    torch.manual_seed(0)
    shape = SHAPES[name]
    model = create_model(name, in_shape=shape, num_classes=4, **SMALL[name]).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        ref = model(x)
        out = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
