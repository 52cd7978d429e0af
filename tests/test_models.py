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
    model = build_model(name, 7, width_mult=0.125).eval()
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", model_names())
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, 5, width_mult=0.125).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", model_names())
def test_eval_is_deterministic(name):
    model = build_model(name, 3, width_mult=0.125).eval()
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
    with pytest.raises(ValueError, match="does not take depth; its arguments: width_mult, stem_kernel_size"):
        build_model("resnet18", 10, depth=34)


def test_mobilenet_v2_matches_torchvision_parameter_count():
    ours = build_model("mobilenet_v2", 1000)
    assert n_params(ours) == n_params(torchvision.models.mobilenet_v2(weights=None)) == 3_504_872
    for mult in (0.5, 1.4):
        assert n_params(build_model("mobilenet_v2", 10, width_mult=mult)) == n_params(
            torchvision.models.mobilenet_v2(weights=None, num_classes=10, width_mult=mult))


def test_mobilenet_v2_cifar_setting_keeps_resolution():
    """CIFAR: stride 1 in the first conv and the first strided block: 8x downsampling, not 32x."""
    feats = {}
    for cifar in (False, True):
        m = build_model("mobilenet_v2", 10, cifar=cifar).eval()
        with torch.no_grad():
            feats[cifar] = m.features(torch.zeros(1, 3, 32, 32)).shape[-1]
    assert feats == {False: 1, True: 4}
    assert sum(1 for mod in build_model("mobilenet_v2", 10, cifar=True).modules()
               if isinstance(mod, torch.nn.ReLU6)) == sum(1 for mod in build_model("mobilenet_v2", 10).modules()
                                                          if isinstance(mod, torch.nn.ReLU6))


def stage_layout(model) -> list[list[str]]:
    return [[type(m).__name__ + (f"({m.p})" if isinstance(m, torch.nn.Dropout) else "") for m in stage]
            for stage in model.stages]


@pytest.mark.parametrize("name, n_stages", [("resnext18_3stage", 3), ("resnext18_4stage", 4), ("resnext18_5stage", 5)])
def test_resnext_dropout_sits_after_the_last_two_blocks_of_every_stage(name, n_stages):
    model = build_model(name, 10)
    assert stage_layout(model) == [["ResNeXtBlock", "Dropout(0.2)", "ResNeXtBlock", "Dropout(0.4)"]] * n_stages
    ablation = build_model(name, 10, dropout=[0.3, 0.5])
    assert stage_layout(ablation) == [["ResNeXtBlock", "Dropout(0.3)", "ResNeXtBlock", "Dropout(0.5)"]] * n_stages
    assert not any(isinstance(m, torch.nn.Dropout) for m in build_model("resnet18", 10).modules())


def test_resnext_grouped_convs_have_group_width_32():
    from cnnbench.models.resnext import ResNeXtBlock

    model = build_model("resnext18_5stage", 10)
    blocks = [m for m in model.modules() if isinstance(m, ResNeXtBlock)]
    assert len(blocks) == 10
    for b in blocks:
        bottleneck = b.conv2.in_channels
        assert b.conv2.groups == bottleneck // 32  # groups = bottleneck channels / group width 32
        assert b.conv1.kernel_size == (1, 1) and b.conv3.kernel_size == (1, 1) and b.conv2.kernel_size == (3, 3)
    assert [b.conv2.groups for b in blocks] == [2, 2, 4, 4, 8, 8, 16, 16, 16, 16]
    # stride on the 3x3; a 1x1 conv + BN shortcut on the first block of every stage but the first
    firsts = [stage[0] for stage in model.stages]
    assert isinstance(firsts[0].shortcut, torch.nn.Identity)
    for b in firsts[1:]:
        assert b.conv2.stride == (2, 2) and b.conv1.stride == (1, 1)
        assert isinstance(b.shortcut[0], torch.nn.Conv2d) and b.shortcut[0].kernel_size == (1, 1)
    assert [len(s) for s in model.stages] == [4] * 5


def test_stems_and_stages():
    deep = build_model("resnet18_deep_stem", 10)
    convs = [m for m in deep.stem if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in deep.stem) == 3
    assert sum(isinstance(m, torch.nn.ReLU) for m in deep.stem) == 3
    assert isinstance(deep.stem[-1], torch.nn.MaxPool2d)
    assert len(deep.stages) == 4 and len(build_model("resnet18_deep_stem_3stage", 10).stages) == 3
    assert build_model("resnet18_deep_stem_3stage", 10).fc.in_features == 256
    nomax = build_model("resnet18_small_stem_nomaxpool", 10)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in nomax.modules())
    small3 = build_model("resnet18_small_stem_3stage", 10)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in small3.stem) == 1 and len(small3.stages) == 3
    assert build_model("resnext18_3stage", 10).stem[0].kernel_size == (7, 7)


def test_flop_table_of_the_cli_matches_built_models(capsys):
    from pathlib import Path

    from cnnbench.cli import main, model_table
    from cnnbench.config import load

    cfg = load(Path(__file__).resolve().parents[1] / "params.yaml", profile="full")
    rows = {r["variant"]: r for r in model_table(cfg, "cifar10")}
    assert set(rows) == set(cfg.variants_of("cifar10"))
    assert rows["cifar10-resnet18"]["params"] == n_params(build_model("resnet18", 10))
    # the deep stem at stride 1 costs about 4.5x the 7x7 stem, as the report's 186 s vs 40 s per epoch
    ratio = rows["cifar10-resnet18_deep_stem"]["flops"] / rows["cifar10-resnet18"]["flops"]
    assert 4.0 < ratio < 5.0
    assert rows["cifar10-resnet18"]["output"] == "1x10"
    assert main(["models", "--params", str(cfg.params_path), "--profile", "smoke", "--dataset", "butterflies"]) == 0
    out = capsys.readouterr().out
    assert "butterflies-resnet18-unfiltered" in out and "1x100" in out and "1x94" in out and "3x64x64" in out


# torchvision's mobilenet_v2 has 10 blocks with a residual connection (use_res_connect)
@pytest.mark.parametrize("name, blocks", [("resnet18", 8), ("resnet18_small_stem_3stage", 6), ("mobilenet_v2", 10)])
def test_zero_init_residual_makes_every_residual_block_the_identity(name, blocks):
    from cnnbench.models import residual_branch_norms, zero_init_residual
    from cnnbench.models.mobilenetv2 import InvertedResidual
    from cnnbench.models.resnet import BasicBlock

    torch.manual_seed(0)
    model = build_model(name, 10).eval()  # full width: narrower MobileNets gain residual blocks
    assert len(residual_branch_norms(model)) == blocks
    assert zero_init_residual(model) == blocks
    x = torch.rand(2, 512, 4, 4)  # non-negative, as block inputs after a ReLU are
    checked = 0
    for m in model.modules():
        if isinstance(m, BasicBlock) and isinstance(m.shortcut, torch.nn.Identity):
            c = m.conv1.in_channels
            assert torch.equal(m(x[:, :c]), x[:, :c])  # relu(0 + x) = x
            checked += 1
        elif isinstance(m, InvertedResidual) and m.use_residual:
            c = m.conv[-2].out_channels
            assert torch.equal(m(x[:, :c]), x[:, :c])
            checked += 1
    assert checked > 0
    # the shortcut-changing blocks, the stem and the head keep their initialisation
    assert all(bn.weight.eq(1).all() for bn in model.modules()
               if isinstance(bn, torch.nn.BatchNorm2d) and bn not in residual_branch_norms(model))


def test_zero_init_residual_covers_resnext_blocks():
    from cnnbench.models import zero_init_residual
    from cnnbench.models.resnext import ResNeXtBlock

    model = build_model("resnext18_4stage", 10, width_mult=0.25)
    blocks = [m for m in model.modules() if isinstance(m, ResNeXtBlock)]
    assert blocks and zero_init_residual(model) == len(blocks)
    assert all(b.bn3.weight.eq(0).all() and b.bn2.weight.eq(1).all() for b in blocks)
