"""pytorchvideo's one-pathway hub classifiers as bases, and the ops on them (docs/ops.md, README "Bases").

Architectures and URLs are checked against pytorchvideo's own hub functions and modules; the
evaluation settings against the model zoo's (PySlowFast's configs/Kinetics/pytorchvideo/*.yaml).
Exactness: the surgered model comes from ``sfsurgery.apply`` on a model-zoo-layout checkpoint of
the stock model (randomised BatchNorm and LayerNorm); expected values come from the stock model
only (its forward, its blocks run one by one, pooling and linear layers written out by hand).
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import randomize_batchnorm, save_zoo_checkpoint
from torch import nn

import sfsurgery
import sfsurgery.plugins
from sfsurgery.builtin.ops import fuse_bn
from sfsurgery.cli import main
from sfsurgery.errors import CheckpointError, OpError
from sfsurgery.plan import plan_on_meta
from sfsurgery.resolve import load_recipe
from sfsurgery.testing import check_op
from sfsurgery.video import pack_pathways

README = Path(__file__).resolve().parents[1] / "README.md"
#: The model zoo's evaluation (PySlowFast configs/Kinetics/pytorchvideo, 3-crop testing: side = crop;
#: MViT: one 224 crop of a 256 short side): frames, sampling rate, crop, side, hub module.
ZOO = {
    "x3d_xs": (4, 12, 182, 182, "x3d"), "x3d_s": (13, 6, 182, 182, "x3d"), "x3d_m": (16, 5, 256, 256, "x3d"),
    "x3d_l": (16, 5, 356, 356, "x3d"), "slow_r50": (8, 8, 256, 256, "resnet"), "i3d_r50": (8, 8, 256, 256, "resnet"),
    "c2d_r50": (8, 8, 256, 256, "resnet"), "csn_r101": (32, 2, 256, 256, "csn"),
    "r2plus1d_r50": (16, 4, 256, 256, "r2plus1d"), "mvit_base_16x4": (16, 4, 224, 256, "vision_transformers"),
    "mvit_base_32x3": (32, 3, 224, 256, "vision_transformers"),
    "efficient_x3d_xs": (4, 12, 182, 182, "efficient_x3d_mobile_cpu"),
    "efficient_x3d_s": (13, 6, 182, 182, "efficient_x3d_mobile_cpu"),
}
FAMILY = {"x3d_xs": "x3d", "x3d_s": "x3d", "x3d_m": "x3d", "x3d_l": "x3d", "slow_r50": "resnet", "i3d_r50": "resnet",
          "c2d_r50": "resnet", "csn_r101": "csn", "r2plus1d_r50": "r2plus1d", "mvit_base_16x4": "mvit",
          "mvit_base_32x3": "mvit", "efficient_x3d_xs": "efficient_x3d", "efficient_x3d_s": "efficient_x3d"}
SMALL = {"frames": 8, "size": [64, 64]}  # where the clip size does not matter (head pools made global)


def hub_model(name: str, seed: int = 0) -> nn.Module:
    """pytorchvideo's hub builder, random weights, randomised BatchNorm and LayerNorm, eval mode."""
    from pytorchvideo.models import hub

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(hub, name)(pretrained=False)
    randomize_batchnorm(model, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


class Zoo:
    """Stock models and their model-zoo-layout checkpoints, built once per module."""

    def __init__(self, folder: Path):
        self.folder, self.models, self.paths = folder, {}, {}

    def model(self, name: str) -> nn.Module:
        if name not in self.models:
            self.models[name] = hub_model(name)
        return self.models[name]

    def checkpoint(self, name: str) -> Path:
        if name not in self.paths:
            path = self.folder / f"{name}.pyth"
            if name.startswith("efficient"):  # its model-zoo file is a bare state dict
                torch.save(self.model(name).state_dict(), path)
            else:
                save_zoo_checkpoint(self.model(name), path)
            self.paths[name] = path
        return self.paths[name]

    def apply(self, name: str, *ops: dict, **clip) -> sfsurgery.Result:
        recipe = {"name": name, "base": {"hub": name, "checkpoint": str(self.checkpoint(name))}, "ops": list(ops)}
        return sfsurgery.apply({**recipe, "input": clip} if clip else recipe)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("hub_zoo"))


def clip(shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def run(model, x):
    with torch.no_grad():
        return model(x)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return ((actual - expected).norm() / expected.norm()).item()


def features(stock: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The stock Net's blocks before its head, run one by one."""
    with torch.no_grad():
        for block in stock.blocks[:-1]:
            x = block(x)
    return x


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return x @ layer.weight.detach().T + layer.bias.detach()


def with_projection(stock: nn.Module, proj_path: str, new: nn.Module, activation=...) -> nn.Module:
    """A copy of the stock model with its projection (and, when given, activation) swapped by hand."""
    model = copy.deepcopy(stock)
    model.set_submodule(proj_path, copy.deepcopy(new))
    if activation is not ...:
        model.get_submodule(proj_path.rpartition(".")[0]).activation = activation
    return model


# --------------------------------------------------------------------------------------------
# the bases


@pytest.mark.parametrize("name", list(ZOO))
def test_base_is_the_hub_builder_with_the_model_zoo_evaluation(name, zoo):
    from pytorchvideo.models import hub

    frames, rate, crop, side, module = ZOO[name]
    recipe = load_recipe({"base": {"hub": name}})
    assert recipe.base.family == FAMILY[name]
    assert recipe.input.model_dump() == {"batch": 1, "channels": 3, "frames": frames, "alpha": None,
                                         "size": (crop, crop)}
    assert (recipe.preprocess.sampling_rate, recipe.preprocess.side) == (rate, side)
    hub_module = importlib.import_module(f"pytorchvideo.models.hub.{module}")
    paths = getattr(hub_module, "checkpoint_paths", None) or hub_module._checkpoint_paths
    assert recipe.base.weights_url == paths[name]

    plan = plan_on_meta(recipe)  # traces at the evaluation clip on meta
    assert plan.trace.output == (1, 400)
    if name.startswith("mvit"):
        assert recipe.base.build_on == "cpu"
        with pytest.raises(RuntimeError, match="item"):  # why: the builder calls .item()
            with torch.device("meta"):
                getattr(hub, name)(pretrained=False)
        stock = zoo.model(name)  # pytorchvideo's builder on the CPU (shared with the exactness tests)
    else:
        assert recipe.base.build_on == "meta"
        with torch.device("meta"):
            stock = getattr(hub, name)(pretrained=False)
    ours = plan.model.state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in stock.state_dict().items()]
    assert all(v.is_meta for v in ours.values())


def test_pretrained_resolves_through_the_torch_hub_cache_like_slowfast(tmp_path, monkeypatch, zoo):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SFSURGERY_OFFLINE", "1")
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    for name, file in [("x3d_s", "X3D_S.pyth"), ("efficient_x3d_xs", "efficient_x3d_xs_original_form.pyth")]:
        with pytest.raises(CheckpointError) as info:
            sfsurgery.apply({"base": {"hub": name, "pretrained": True}})
        assert str(cache / file) in info.value.message and "SFSURGERY_OFFLINE=1" in info.value.message
        assert info.value.hint.endswith(f"/{file} and put it at {cache / file}")
    cache.mkdir(parents=True)
    (cache / "X3D_XS.pyth").symlink_to(zoo.checkpoint("x3d_xs"))
    result = sfsurgery.apply({"base": {"hub": "x3d_xs", "pretrained": True}})
    assert result.report["source"]["weights"] == "pretrained"
    expected = zoo.model("x3d_xs").state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in result.model.state_dict().items())


@pytest.fixture(scope="module")
def base_rows():
    """``describe_bases`` once per module (MViT is built on the CPU to count it)."""
    return {row["name"]: row for row in sfsurgery.Registry().describe_bases()}


def test_bases_command_lists_every_base(base_rows, monkeypatch):
    from pytorchvideo.models import hub

    assert set(ZOO) | {"slowfast_r50", "slowfast_r101", "slowfast_16x8_r101_50_50"} <= set(base_rows)
    for name in ["x3d_l", "csn_r101", "efficient_x3d_s", "slowfast_r50"]:
        with torch.device("meta"):
            assert base_rows[name]["params"] == sum(p.numel() for p in getattr(hub, name)().parameters())
    for name, (frames, rate, crop, side, _) in ZOO.items():
        row = base_rows[name]
        assert (row["family"], row["weights"], row["provider"]["plugin"]) == (FAMILY[name], True,
                                                                              "sfsurgery.builtin.hub_bases")
        assert (row["input"]["frames"], row["input"]["size"], row["input"]["alpha"]) == (frames, [crop, crop], None)
        assert (row["preprocess"]["sampling_rate"], row["preprocess"]["side"]) == (rate, side)

    monkeypatch.setattr(sfsurgery.plugins.Registry, "describe_bases", lambda self: list(base_rows.values()))
    listed = CliRunner().invoke(main, ["bases", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.output) == list(base_rows.values())
    text = CliRunner().invoke(main, ["bases"])
    assert text.exit_code == 0
    lines = {line.split()[0]: line for line in text.output.splitlines()[1:]}
    assert set(lines) == set(base_rows)
    assert re.search(r"^x3d_s +x3d +13x182x182 +rate 6, side 182 +3\.79M +yes +sfsurgery\.builtin\.hub_bases$",
                     lines["x3d_s"])
    assert "32x224x224 alpha 4" in lines["slowfast_r50"]


def test_readme_table_of_bases_and_ops_is_what_validate_enforces():
    registry = sfsurgery.Registry(entry_points=False)
    lines = README.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| base | family | replace_head"))
    ops = [cell.strip() for cell in lines[at].strip("|").split("|")][2:]
    assert {name for name, spec in registry.ops.items() if spec.families is not None} <= set(ops) <= set(registry.ops)
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    assert [row[0] for row in rows] == list(registry.bases)
    for base, family, *cells in rows:
        assert registry.bases[base].family == family
        for op, cell in zip(ops, cells, strict=True):
            families = registry.ops[op].families
            assert cell == ("✓" if families is None or family in families else "refused"), (base, op)


@pytest.mark.parametrize(("op", "base"), [("truncate", "mvit_base_16x4"), ("swap_pool", "mvit_base_32x3"),
                                          ("truncate", "efficient_x3d_xs"), ("swap_pool", "efficient_x3d_s")])
def test_an_op_that_does_not_carry_over_is_refused_by_validate_naming_what_it_needs(op, base):
    recipe = {"base": {"hub": base}, "ops": [{"op": "freeze", "stages": 0}, {"op": op}]}
    with pytest.raises(OpError) as info:
        sfsurgery.validate(recipe)
    family = FAMILY[base]
    assert info.value.message == (f"ops[1] {op}: does not apply to base {base} (family {family}); it needs a base "
                                  "of family slowfast or x3d or resnet or csn or r2plus1d")


# --------------------------------------------------------------------------------------------
# one pathway everywhere: pack_pathways, the conformance kit (save -> load included)


def test_pack_pathways_returns_the_clip_for_a_one_pathway_model():
    clips = clip((2, 3, 20, 8, 8))
    assert pack_pathways(clips, alpha=None) is clips
    picked = pack_pathways(clips, alpha=None, frames=5)
    indices = torch.linspace(0, 19, 5).long()
    assert torch.equal(picked, clips[:, :, indices])
    assert torch.equal(pack_pathways(clips[0], alpha=None, frames=20), clips[0])


def test_check_op_accepts_one_pathway_bases(tmp_path):
    result = check_op("replace_head", {"num_classes": 7, "hidden": [16], "activation": "softmax"},
                      base={"hub": "x3d_xs"}, input={"frames": 4, "size": [160, 160]}, tmp_dir=tmp_path)
    assert result.trace.input.alpha is None and result.trace.output == (1, 7)
    loaded = sfsurgery.load(tmp_path / "check_replace_head.safetensors")
    out = run(loaded, pack_pathways(clip((1, 3, 9, 160, 160)), alpha=None, frames=4))
    torch.testing.assert_close(out.sum(dim=1), torch.ones(1))  # the recipe's softmax


# --------------------------------------------------------------------------------------------
# exactness: X3D (X3D-XS at the builder's 160 px, where its stock head pool covers the feature map)

X3D_CLIP = {"frames": 4, "size": [160, 160]}
GRAY = clip((1, 1, 4, 160, 160), seed=1)
RGB = GRAY.repeat(1, 3, 1, 1, 1)  # the gray clip repeated to RGB: what every X3D check feeds the stock model


@pytest.fixture(scope="module")
def x3d_stock(zoo):
    """The stock X3D-XS on RGB: its output and its projection's input (pooled (B, T, H, W, C) features)."""
    stock = zoo.model("x3d_xs")
    captured = {}
    handle = stock.blocks[5].proj.register_forward_pre_hook(lambda module, args: captured.update(x=args[0].clone()))
    try:
        out = run(stock, RGB)
    finally:
        handle.remove()
    return {"out": out, "proj_in": captured["x"]}


@pytest.mark.parametrize("activation", ["softmax", None])
def test_x3d_replace_head_keeps_the_projected_pool_and_equals_stock_with_its_projection_swapped(zoo, x3d_stock,
                                                                                               activation):
    stock = zoo.model("x3d_xs")
    model = zoo.apply("x3d_xs", {"op": "replace_head", "num_classes": 10, "activation": activation},
                      **X3D_CLIP).model
    state, stock_state = model.state_dict(), stock.state_dict()
    assert list(state) == list(stock_state)  # every learned layer kept, in the stock order
    assert [k for k in state if state[k].shape == stock_state[k].shape and not torch.equal(state[k], stock_state[k])] \
        == []
    assert model.blocks[5].proj.weight.shape == (10, 2048)
    assert (model.blocks[5].activation is None) == (activation is None)  # null: the stock Softmax is gone
    # the stock head with its projection swapped, by hand: the pool covers the map, so one position
    logits = linear(x3d_stock["proj_in"], model.blocks[5].proj).reshape(1, 10)
    want = torch.softmax(logits, dim=1) if activation else logits
    assert rel_err(run(model, RGB), want) <= 1e-5


def test_x3d_grayscale_stem_sum_equals_stock_on_gray_repeated_to_rgb(zoo, x3d_stock):
    stock = zoo.model("x3d_xs")
    model = zoo.apply("x3d_xs", {"op": "grayscale_stem"}, **X3D_CLIP).model
    first = "blocks.0.conv.conv_t"  # X3D's stem is two convs: the (1,3,3) one sees the clip
    assert model.get_submodule(first).weight.shape[1] == 1
    torch.testing.assert_close(model.get_submodule(first).weight.detach(),
                               stock.get_submodule(first).weight.detach().sum(dim=1, keepdim=True))
    assert rel_err(run(model, GRAY), x3d_stock["out"]) <= 1e-5


def test_x3d_swap_pool_and_fuse_bn_equal_stock_where_its_pool_covers_the_map_but_not_at_182(zoo, x3d_stock):
    stock = zoo.model("x3d_xs")
    model = zoo.apply("x3d_xs", {"op": "swap_pool"}, {"op": "fuse_bn"}, **X3D_CLIP).model
    assert isinstance(model.blocks[5].pool.pool, nn.AdaptiveAvgPool3d)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())  # every BN follows a conv
    assert rel_err(run(model, RGB), x3d_stock["out"]) <= 1e-5
    at_182 = clip((1, 3, 4, 182, 182))  # a 6x6 map: the stock 5x5 pool slides, the head averages 4 windows
    logits = [copy.deepcopy(m) for m in (model, stock)]
    for m in logits:
        m.blocks[5].activation = None  # compare logits: a random head's softmax is nearly uniform
    assert rel_err(run(logits[0], at_182), run(logits[1], at_182)) > 1e-3


# --------------------------------------------------------------------------------------------
# exactness: efficient X3D (its head pools adaptively; projection.model, act applied channels last)


def test_efficient_x3d_grayscale_fuse_bn_replace_head_freeze(zoo):
    stock = zoo.model("efficient_x3d_xs")
    rules = [{"pattern": "projection.*", "mult": 10.0}]
    model = zoo.apply("efficient_x3d_xs", {"op": "grayscale_stem"},
                      {"op": "replace_head", "num_classes": 10, "activation": "softmax"},
                      {"op": "freeze", "stages": 1}, {"op": "lr_mult", "rules": rules}, **X3D_CLIP).model
    assert model.get_submodule("s1.pathway0_stem_conv_xy.kernel.conv").weight.shape[1] == 1
    # the stock model (its act is the identity) with the projection swapped; softmax by hand
    expected = with_projection(stock, "projection.model", model.projection.model)
    want = torch.softmax(run(expected, RGB), dim=1)
    assert rel_err(run(model, GRAY), want) <= 1e-5
    frozen = {name.split(".")[0] for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"s1", "s2"}
    assert {g["lr"] for g in sfsurgery.param_groups(model, lr=0.1)} == {0.1, 1.0}

    fused, folded, left = fuse_bn(copy.deepcopy(model), GRAY)  # the function the op runs (one export)
    assert left == [] and len(folded) == sum(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert rel_err(run(fused, GRAY), want) <= 1e-5


# --------------------------------------------------------------------------------------------
# exactness: Slow / I3D / C2D, CSN, R(2+1)D at small clips (their stock head pools made global by hand)


def global_head(stock: nn.Module, x: torch.Tensor, proj: nn.Linear, softmax: bool) -> torch.Tensor:
    """The stock blocks, a global average pool, ``proj`` and the activation, by hand."""
    logits = linear(features(stock, x).mean(dim=(2, 3, 4)), proj)
    return torch.softmax(logits, dim=1) if softmax else logits


@pytest.mark.parametrize("name", ["slow_r50", "csn_r101", "r2plus1d_r50"])
def test_resnet_csn_r2plus1d_grayscale_stem_and_replace_head(zoo, name):
    """Gray clip, head pool made global by replace_head, the stock activation (R(2+1)D: Softmax)."""
    stock = zoo.model(name)
    softmax = name == "r2plus1d_r50"
    result = zoo.apply(name, {"op": "grayscale_stem"},
                       {"op": "replace_head", "num_classes": 10, "activation": "softmax" if softmax else None},
                       **SMALL)
    head = result.model.blocks[-1]
    assert type(head) is type(stock.blocks[-1]) and isinstance(head.pool, nn.AdaptiveAvgPool3d)
    assert any("does not fit this clip" in note for note in result.report["lineage"][1]["notes"])
    assert result.model.blocks[0].conv.weight.shape[1] == 1
    gray = clip((1, 1, SMALL["frames"], *SMALL["size"]), seed=1)
    want = global_head(stock, gray.repeat(1, 3, 1, 1, 1), head.proj, softmax)
    assert rel_err(run(result.model, gray), want) <= 1e-5
    if softmax:  # R(2+1)D's BatchNorms sit between its (2+1)D convs: fuse_bn finds them in the graph
        fused, folded, left = fuse_bn(copy.deepcopy(result.model), gray)
        assert left == [] and not any(isinstance(m, nn.BatchNorm3d) for m in fused.modules())
        assert rel_err(run(fused, gray), want) <= 1e-5


def test_r2plus1d_replace_head_activation_null_removes_the_stock_softmax(zoo):
    stock = zoo.model("r2plus1d_r50")
    model = zoo.apply("r2plus1d_r50", {"op": "replace_head", "num_classes": 10}, **SMALL).model
    assert isinstance(stock.blocks[-1].activation, nn.Softmax) and model.blocks[-1].activation is None
    x = clip((1, 3, SMALL["frames"], *SMALL["size"]))
    assert rel_err(run(model, x), global_head(stock, x, model.blocks[-1].proj, False)) <= 1e-5


def test_i3d_swap_pool_equals_stock_at_224_and_freeze_counts_its_stages(zoo):
    stock = zoo.model("i3d_r50")
    result = zoo.apply("i3d_r50", {"op": "swap_pool"}, {"op": "freeze", "stages": 2}, frames=8, size=[224, 224])
    x = clip((1, 3, 8, 224, 224))  # the feature map is the stock pool's (4, 7, 7)
    assert rel_err(run(result.model, x), run(stock, x)) <= 1e-5
    frozen = {".".join(n.split(".")[:2]) for n, p in result.model.named_parameters() if not p.requires_grad}
    assert frozen == {"blocks.0", "blocks.1", "blocks.3"}  # blocks.2 is I3D's parameter-free max pool


# --------------------------------------------------------------------------------------------
# exactness: MViT (its positional encoding fixes the clip at 16x224x224)


def test_mvit_grayscale_stem_and_replace_head_keep_its_norm(zoo):
    stock = zoo.model("mvit_base_16x4")
    gray = clip((1, 1, 16, 224, 224), seed=1)
    captured = {}
    handle = stock.head.register_forward_pre_hook(lambda module, args: captured.update(x=args[0].clone()))
    try:
        run(stock, gray.repeat(1, 3, 1, 1, 1))
    finally:
        handle.remove()

    model = zoo.apply("mvit_base_16x4", {"op": "grayscale_stem"}, {"op": "replace_head", "num_classes": 10},
                      {"op": "freeze", "stages": 1}).model
    assert model.patch_embed.patch_model.weight.shape[1] == 1
    assert model.head.activation is None and torch.equal(model.norm_embed.weight, stock.norm_embed.weight)
    head = copy.deepcopy(stock.head)  # the stock head (class token, dropout, proj) with its projection swapped
    head.proj = copy.deepcopy(model.head.proj)
    assert rel_err(run(model, gray), run(head, captured["x"])) <= 1e-5
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {n.split(".")[0] for n in frozen} == {"patch_embed", "blocks"}
    assert {n.split(".")[1] for n in frozen if n.startswith("blocks.")} == {"0"}
