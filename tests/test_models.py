"""The model registry: shapes, finite outputs, gradients, and torchvision parity."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnbench.models import build_model, model_names


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet18_matches_torchvision_parameter_count():
    ours = build_model("resnet18", 1000)
    theirs = torchvision.models.resnet18(weights=None, num_classes=1000)
    assert n_params(ours) == n_params(theirs) == 11_689_512
    ours10 = build_model("resnet18", 10)
    assert n_params(ours10) == n_params(torchvision.models.resnet18(weights=None, num_classes=10))


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("size", [32, 224])
def test_output_shape_and_finite(name, size):
    torch.manual_seed(0)
    model = build_model(name, 7, width=8).eval()
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", model_names())
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, 5, width=8).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", model_names())
def test_eval_is_deterministic(name):
    model = build_model(name, 3, width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_small_stem_keeps_resolution_and_kernel_is_a_parameter():
    m = build_model("resnet18_small_stem", 10)
    conv = m.stem[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
    assert isinstance(m.stem[-1], torch.nn.MaxPool2d)
    literal = build_model("resnet18_small_stem", 10, stem_kernel_size=2)
    assert literal.stem[0].kernel_size == (2, 2)
    imagenet = build_model("resnet18", 10)
    assert imagenet.stem[0].kernel_size == (7, 7) and imagenet.stem[0].stride == (2, 2)


def test_unknown_model_and_argument_errors_name_them():
    with pytest.raises(ValueError, match="unknown model 'resnet99'; registered models: .*resnet18"):
        build_model("resnet99", 10)
    with pytest.raises(ValueError, match="does not take depth; its arguments: width, stem_kernel_size"):
        build_model("resnet18", 10, depth=34)
