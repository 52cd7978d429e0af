"""The model registry: shapes, finite outputs, gradients, and torchvision parity."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnbench.models import argument_specs, build_model, check_model, check_model_args, model_arguments, model_names


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


# --- the registry's description of each builder's arguments ------------------------------------
def _edges(spec) -> list:
    """The values at the edges of an argument's declared range (the nearest accepted ones where a
    bound is exclusive); for a list, all items at either edge and one of each."""
    import math

    if spec.kind is bool:
        values = [False, True]
    else:
        step = (lambda x, d: math.nextafter(x, d)) if spec.kind is float else (lambda x, d: x + (1 if d > x else -1))
        lo = spec.ge if spec.ge is not None else step(spec.gt, math.inf)
        hi = spec.le if spec.le is not None else step(spec.lt, -math.inf)
        values = [spec.kind(lo), spec.kind(hi)]
    if spec.length is not None:
        values = [[v] * spec.length for v in values] + [values + [values[-1]] * (spec.length - 2)]
    return values


EDGE_CASES = [(name, spec.name, value) for name in model_names() for spec in argument_specs(name).values()
              for value in _edges(spec)]


def test_every_builder_describes_every_argument():
    import inspect

    from cnnbench.models.registry import _REGISTRY

    for name in model_names():
        specs = argument_specs(name)
        params = [p for p in inspect.signature(_REGISTRY[name].builder).parameters if p != "num_classes"]
        assert list(specs) == params == model_arguments(name)
        for arg, spec in specs.items():
            assert spec.name == arg and spec.help and spec.kind in (bool, int, float)
            assert spec.problem(spec.default) is None
            assert spec.kind is bool or (spec.ge is not None or spec.gt is not None) and (
                spec.le is not None or spec.lt is not None), f"{name}.{arg}: a number needs both bounds"


@pytest.mark.parametrize("name, arg, value", EDGE_CASES, ids=[f"{n}-{a}={v}" for n, a, v in EDGE_CASES])
def test_every_accepted_value_builds_and_runs(name, arg, value):
    """What the config check accepts builds and runs forward, at the smallest image the schema allows
    (datasets.butterflies.image_size 8 px: every conv is padded, so larger inputs only get larger maps)."""
    check_model_args(name, {arg: value}, "model_args")
    torch.manual_seed(0)
    model = build_model(name, 3, **{arg: value}).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize("width_mult, bot_mul, group_width", [(1.5625, 1.0, 32), (0.78, 0.3, 7), (1.0, 0.7, 48)])
def test_resnext_takes_the_largest_group_count_that_divides_odd_widths(width_mult, bot_mul, group_width):
    from cnnbench.models.resnext import ResNeXtBlock

    model = build_model("resnext18_4stage", 10, width_mult=width_mult, bot_mul=bot_mul,
                        group_width=group_width).eval()
    blocks = [m for m in model.modules() if isinstance(m, ResNeXtBlock)]
    for b in blocks:
        bot = b.conv2.in_channels
        assert bot % b.groups == 0 and 1 <= b.groups <= max(1, bot // group_width)
        assert not any(bot % g == 0 for g in range(b.groups + 1, max(1, bot // group_width) + 1))
    assert any(b.conv2.in_channels // group_width != b.groups for b in blocks)  # an odd width was met
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(
    "model, args, expected",
    [
        ("resnext18_3stage", {"dropout": 0.3},
         ["m.model_args.dropout: expected a list of 2 numbers, each >= 0 and < 1, got 0.3 (float)",
          "model 'resnext18_3stage'", "default [0.2, 0.4]"]),
        ("mobilenet_v2", {"dropout": [0.2, 0.4]},
         ["m.model_args.dropout: expected a number >= 0 and < 1, got [0.2, 0.4] (list)", "model 'mobilenet_v2'"]),
        ("resnext18_4stage", {"dropout": [0.3, 1.0]},
         ["m.model_args.dropout: [0.3, 1.0] is out of range; allowed: a list of 2 numbers, each >= 0 and < 1"]),
        ("resnext18_4stage", {"dropout": [0.3]}, ["expected a list of 2 numbers", "got [0.3] (list)"]),
        ("resnet18", {"width_mult": 0}, ["m.model_args.width_mult: 0 is out of range; allowed: > 0 and <= 4"]),
        ("resnet18", {"width_mult": float("inf")}, ["width_mult: inf is out of range"]),
        ("resnet18", {"width_mult": "half"}, ["expected a number > 0 and <= 4, got 'half' (str)"]),
        ("resnet18_deep_stem", {"stem_stride": 2.0}, ["stem_stride: expected an integer >= 1 and <= 4, got 2.0"]),
        ("resnet18_deep_stem", {"stem_stride": True}, ["stem_stride: expected an integer", "got True (bool)"]),
        ("mobilenet_v2", {"cifar": "yes"}, ["cifar: expected true or false, got 'yes' (str)"]),
        ("resnext18_5stage", {"group_width": 0}, ["group_width: 0 is out of range; allowed: >= 1 and <= 4096"]),
        ("resnet18", {"stem_strde": 2}, ["m.model_args.stem_strde: model 'resnet18' does not take 'stem_strde'; "
                                         "allowed keys: width_mult, stem_kernel_size"]),
        ("resnet18_deep_stem", {"stem_strde": 2}, ["does not take 'stem_strde'", "did you mean stem_stride?"]),
        ("resnet18", [0.5], ["m.model_args: expected a mapping"]),
    ],
)
def test_check_model_args_names_the_key_and_what_is_allowed(model, args, expected):
    from cnnbench.config import ConfigError

    with pytest.raises(ConfigError) as info:
        check_model_args(model, args, "m.model_args")
    msg = str(info.value)
    assert "\n" not in msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_unknown_model_lists_the_registered_ones_and_the_closest():
    from cnnbench.config import ConfigError

    with pytest.raises(ConfigError, match=r"^v.model: 'resnet_18' is not allowed; allowed values: mobilenet_v2, "
                                          r"resnet18, .*resnext18_5stage, or timm/<name>, torchvision/<name>, "
                                          r"package.module:function; did you mean resnet18\b"):
        check_model("resnet_18", "v.model")
    with pytest.raises(ConfigError, match=r"'mobilenet_v3' is not allowed.*did you mean mobilenet_v2\?"):
        check_model("mobilenet_v3", "v.model")
    with pytest.raises(ConfigError, match=r"^v.model: 'xyz' is not allowed; allowed values: [a-z0-9_, ]+, "
                                          r"or timm/<name>, torchvision/<name>, package.module:function$"):
        check_model("xyz", "v.model")


def test_build_model_refuses_what_the_check_refuses():
    with pytest.raises(ValueError, match=r"model 'resnext18_3stage', argument dropout: expected a list of 2 numbers"):
        build_model("resnext18_3stage", 10, dropout=0.3)
    with pytest.raises(ValueError, match=r"model 'mobilenet_v2', argument dropout: expected a number"):
        build_model("mobilenet_v2", 10, dropout=(0.2, 0.4))


def test_a_builder_without_a_described_argument_is_refused_at_registration():
    from cnnbench.models import register

    with pytest.raises(TypeError, match="'depth' needs a default and an Annotated"):
        @register("test_undescribed")
        def undescribed(num_classes: int, depth: int = 18):  # pragma: no cover - never built
            raise AssertionError


# --- models by name from timm, torchvision and the user's own code -------------------------------
EXTERNAL = [("timm/resnet10t", {"drop_rate": 0.1}), ("torchvision/resnet18", {}),
            ("torchvision/mobilenet_v2", {"width_mult": 0.25}), ("tests.custom_models:tiny_cnn", {"width": 4}),
            ("tests.custom_models:open_builder", {"anything": 1})]


@pytest.mark.parametrize("name, args", EXTERNAL, ids=[n for n, _ in EXTERNAL])
def test_external_models_pass_the_check_build_and_run(name, args):
    check_model(name, "v.model")
    check_model_args(name, args, "v.model_args")
    torch.manual_seed(0)
    model = build_model(name, 3, **args).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_library_models_are_built_without_weights_and_without_the_network(monkeypatch, tmp_path):
    """pretrained=False / weights=None, no socket opened, nothing written to the hub or torch caches."""
    import socket
    import urllib.request

    import timm

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    for var in ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))
    calls = []
    real_timm, real_tv = timm.create_model, torchvision.models.get_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(("timm", k)) or real_timm(*a, **k))
    monkeypatch.setattr(torchvision.models, "get_model", lambda *a, **k: calls.append(("tv", k)) or real_tv(*a, **k))
    first = build_model("timm/resnet10t", 4)
    torch.manual_seed(1)
    second = build_model("timm/resnet10t", 4)
    build_model("torchvision/resnet18", 4)
    assert [c[0] for c in calls] == ["timm", "timm", "tv"]
    assert calls[0][1]["pretrained"] is False and calls[2][1]["weights"] is None
    assert all(c[1]["num_classes"] == 4 for c in calls)
    assert not torch.equal(first.fc.weight, second.fc.weight)  # random, not loaded
    assert not any(tmp_path.rglob("*"))


@pytest.mark.parametrize("name, expected", [
    ("timm/resnet10tt", "v.model: 'timm/resnet10tt' is not a timm classification model; did you mean timm/resnet10t"),
    ("torchvision/resnet19", "'torchvision/resnet19' is not a torchvision classification model; "
                             "did you mean torchvision/resnet18"),
    # detection models are not classification models; hub names would download
    ("torchvision/fasterrcnn_resnet50_fpn", "is not a torchvision classification model"),
    ("timm/hf-hub:timm/resnet10t.a1_in1k", "is not a timm classification model"),
    ("tests.custom_models:tiny_cn", "'tests.custom_models:tiny_cn': tests.custom_models has no 'tiny_cn'; "
                                    "did you mean tests.custom_models:tiny_cnn?"),
    ("no_such_package.nets:tiny", "'no_such_package.nets:tiny': no module 'no_such_package'; put it in the folder"),
    ("tests.custom_models:NOT_CALLABLE", "NOT_CALLABLE is not a function but 3 (int)"),
    ("tests.custom_models:keyword_only", "must take the number of classes as its first argument"),
    ("tests.custom_models:", "expected timm/<name>, torchvision/<name> or package.module:function"),
])
def test_unknown_external_names_are_one_line_errors_with_the_closest(name, expected):
    from cnnbench.config import ConfigError

    with pytest.raises(ConfigError) as info:
        check_model(name, "v.model")
        check_model_args(name, {}, "v.model_args")
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name, args, expected", [
    ("timm/resnet10t", {"drop_rat": 0.1}, ["v.model_args.drop_rat: model 'timm/resnet10t' does not take 'drop_rat'",
                                          "drop_path_rate", "did you mean drop_rate"]),
    ("timm/resnet10t", {"pretrained": True}, ["does not take 'pretrained'"]),
    ("torchvision/resnet18", {"width_mult": 0.5}, ["does not take 'width_mult'; allowed keys: block, layers, "
                                                   "zero_init_residual, groups, width_per_group"]),
    # names the model class declares, values the library refuses: a trial build on the meta device
    ("torchvision/resnext50_32x4d", {"groups": 4}, ["v.model_args: model 'torchvision/resnext50_32x4d' refused "
                                                    "model_args {'groups': 4}: ValueError: ", "expected value 32"]),
    ("torchvision/resnet18", {"block": "x"}, ["refused model_args {'block': 'x'}: TypeError: ",
                                              "multiple values for argument 'block'"]),
    ("torchvision/resnet18", {"weights": "DEFAULT"}, ["does not take 'weights'"]),
    ("tests.custom_models:tiny_cnn", {"widht": 4},
     ["v.model_args.widht: model 'tests.custom_models:tiny_cnn' does not take 'widht'; allowed keys: width, dropout; "
      "did you mean width?"]),
])
def test_external_model_args_are_checked_against_the_builder(name, args, expected):
    from cnnbench.config import ConfigError

    with pytest.raises(ConfigError) as info:
        check_model_args(name, args, "v.model_args")
    for part in expected:
        assert part in str(info.value), str(info.value)


def test_timm_config_built_models_take_their_config_fields():
    """RegNet and friends fold **kwargs into a config dataclass: its fields are arguments too."""
    from cnnbench.models.external import accepted_names

    accepts = accepted_names("timm/regnetx_002")
    assert "drop_rate" in accepts and "wa" in accepts and "bogus" not in accepts
    model = build_model("timm/regnetx_002", 3, drop_rate=0.1).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_a_bad_user_builder_is_named_with_what_to_do(tmp_path, monkeypatch):
    from cnnbench.config import ConfigError

    with pytest.raises(ConfigError, match=r"^model 'tests.custom_models:raises' raised ValueError: depth 2 is not "
                                          r"supported \(called with num_classes=3, model_args \{'depth': 2\}\); "
                                          r"fix") as info:
        build_model("tests.custom_models:raises", 3, depth=2)
    assert isinstance(info.value.__cause__, ValueError)  # the user's bug keeps its traceback
    with pytest.raises(ConfigError, match=r"^model 'tests.custom_models:not_a_module' returned a dict, not a "
                                          r"torch.nn.Module; make the builder return the network$"):
        build_model("tests.custom_models:not_a_module", 3)
    (tmp_path / "broken_nets.py").write_text("import torch\nraise RuntimeError('half-written module')\n")
    (tmp_path / "needs_missing.py").write_text("import not_installed_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^v.model: 'broken_nets:net': importing broken_nets raised RuntimeError: "
                                          r"half-written module; fix that module$") as info:
        check_model("broken_nets:net", "v.model")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(ConfigError, match=r"importing needs_missing failed: No module named 'not_installed_dep"):
        check_model("needs_missing:net", "v.model")


def test_library_values_refused_at_build_name_the_model():
    from cnnbench.config import ConfigError

    with pytest.raises(ConfigError, match=r"^model 'torchvision/resnext50_32x4d' refused model_args \{'groups': 4\}: "
                                          r"ValueError: .*; change or remove those model_args$") as info:
        build_model("torchvision/resnext50_32x4d", 3, groups=4)
    assert isinstance(info.value.__cause__, ValueError)


def test_library_arguments_the_class_takes_without_a_default_pass_the_check():
    """torchvision's ViT takes image_size from model_args (its builder pops it): at 32 px it runs."""
    check_model_args("torchvision/vit_b_16", {"image_size": 32}, "v.model_args")
    check_model_args("timm/resnet10t", {"layers": [1, 1, 1, 1], "drop_rate": 0.1}, "v.model_args")


def test_a_profiles_model_args_apply_where_the_builder_takes_them():
    from cnnbench.models import accepted_args

    shrink = {"width_mult": 0.25}
    assert accepted_args("resnet18", shrink) == shrink
    assert accepted_args("torchvision/mobilenet_v2", shrink) == shrink
    assert accepted_args("timm/resnet10t", shrink) == {}
    assert accepted_args("tests.custom_models:tiny_cnn", shrink) == {}
    assert accepted_args("tests.custom_models:open_builder", shrink) == {}  # **kwargs promises nothing
    assert accepted_args("mobilenet_v2", {"cifar": True, "width_mult": 0.5}) == {"cifar": True, "width_mult": 0.5}
    assert accepted_args("resnet18", {"cifar": True, "width_mult": 0.5}) == {"width_mult": 0.5}


@pytest.fixture
def params_with_external_models(tmp_path):
    """params.yaml (schema beside it) with a timm, a torchvision and a user-built variant added."""
    import shutil
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "workflow" / "schemas").mkdir(parents=True)
    shutil.copy(repo / "workflow/schemas/params.schema.yaml", tmp_path / "workflow/schemas/")
    doc = yaml.safe_load((repo / "params.yaml").read_text())

    def write(**variants) -> Path:
        d = yaml.safe_load(yaml.safe_dump(doc))
        d["variants"]["cifar10"].update(variants)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        return path

    return write


EXTRA_VARIANTS = {"timm_r10": {"model": "timm/resnet10t", "model_args": {"drop_rate": 0.1}},
                  "tv_mnv2": {"model": "torchvision/mobilenet_v2"},
                  "tiny": {"model": "tests.custom_models:tiny_cnn", "model_args": {"width": 4}}}


def test_params_accept_external_models_and_the_table_covers_them(params_with_external_models, capsys):
    from cnnbench.cli import main
    from cnnbench.config import load

    path = params_with_external_models(**EXTRA_VARIANTS)
    cfg = load(path, profile="quick")
    assert cfg.variant("cifar10-timm_r10")["model_args"] == {"drop_rate": 0.1}  # no width_mult: timm lacks it
    assert cfg.variant("cifar10-tv_mnv2")["model_args"] == {"width_mult": 0.25}
    assert cfg.variant("cifar10-tiny")["model_args"] == {"width": 4}
    assert cfg.variant("cifar10-resnet18")["model_args"] == {"width_mult": 0.25}
    assert main(["models", "--params", str(path), "--profile", "smoke", "--dataset", "cifar10"]) == 0
    out = capsys.readouterr().out
    for variant, model in (("cifar10-timm_r10", "timm/resnet10t"), ("cifar10-tv_mnv2", "torchvision/mobilenet_v2"),
                           ("cifar10-tiny", "tests.custom_models:tiny_cnn")):
        line = next(row for row in out.splitlines() if row.startswith(variant + " "))
        assert model in line and "1x10" in line
    # parameters of the models as built, counted by the table itself
    from cnnbench.cli import model_table

    rows = {r["variant"]: r for r in model_table(load(path, profile="smoke"), "cifar10")}
    assert rows["cifar10-timm_r10"]["params"] == n_params(build_model("timm/resnet10t", 10, drop_rate=0.1))
    assert rows["cifar10-tiny"]["params"] == n_params(build_model("tests.custom_models:tiny_cnn", 10, width=4))
    assert rows["cifar10-tv_mnv2"]["flops"] > 0


def test_params_refuse_an_unknown_timm_model_naming_the_key(params_with_external_models):
    from cnnbench.config import ConfigError, load

    path = params_with_external_models(timm_r10={"model": "timm/resnet10tt"})
    with pytest.raises(ConfigError, match=r"params.yaml: variants.cifar10.timm_r10.model: 'timm/resnet10tt' is not a "
                                          r"timm classification model; did you mean timm/resnet10t\b"):
        load(path)
    path = params_with_external_models(timm_r10={"model": "timm/resnet10t", "model_args": {"width_mult": 0.5}})
    with pytest.raises(ConfigError, match=r"variants.cifar10.timm_r10.model_args.width_mult: model 'timm/resnet10t' "
                                          r"does not take 'width_mult'; allowed keys: "):
        load(path)


@pytest.mark.parametrize("name, args, blocks", [("torchvision/resnet18", {}, 8), ("torchvision/resnet50", {}, 16),
                                                ("timm/resnet10t", {"zero_init_last": False}, 4)])
def test_zero_init_residual_covers_library_resnets(name, args, blocks):
    from cnnbench.models import zero_init_residual

    model = build_model(name, 10, **args)
    last = [m.bn3 if hasattr(m, "bn3") else m.bn2 for m in model.modules() if hasattr(m, "downsample")]
    assert not any(bn.weight.eq(0).all() for bn in last)
    assert zero_init_residual(model) == blocks
    last = [m.bn3 if hasattr(m, "bn3") else m.bn2 for m in model.modules() if hasattr(m, "downsample")]
    assert len(last) == blocks and all(bn.weight.eq(0).all() for bn in last)


def test_zero_init_residual_of_an_unknown_model_changes_nothing_and_says_so(caplog):
    from cnnbench.models import zero_init_residual

    model = build_model("tests.custom_models:tiny_cnn", 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level("WARNING", logger="cnnbench.models"):
        assert zero_init_residual(model) == 0
    assert "has no residual block cnnbench knows; nothing was zeroed" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
