"""The main path: plan on meta, blame, apply in memory, save, rebuild."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import clip, r18_recipe, save_zoo_checkpoint, stock_model
from torch import nn

import sfsurgery
from sfsurgery.errors import OutputExistsError, TraceError

HEAD = {"op": "replace_head", "num_classes": 5}


def test_validate_traces_every_block_on_meta(registry):
    trace = sfsurgery.validate({"base": {"hub": "slowfast_r101"}, "ops": [HEAD]}, registry=registry)
    assert trace.output == (1, 5)
    assert [b.path for b in trace.blocks] == [f"blocks.{i}" for i in range(7)]
    assert trace.blocks[5].outputs == [(1, 2304, 1, 1, 1)]
    assert trace.blocks[0].inputs == [(1, 3, 8, 224, 224), (1, 3, 32, 224, 224)]


def test_16x8_base_defaults_to_its_own_clip(registry):
    trace = sfsurgery.validate({"base": {"hub": "slowfast_16x8_r101_50_50"}}, registry=registry)
    assert trace.input.frames == 64 and trace.output == (1, 400)


def test_small_clip_with_stock_pool_blames_the_input_and_says_swap_pool(registry):
    recipe = {"base": {"hub": "slowfast_r50"}, "input": {"size": [112, 112]}, "ops": [{"op": "grayscale_stem"}],
}
    with pytest.raises(TraceError) as info:
        sfsurgery.validate(recipe, registry=registry)
    assert info.value.exit_code == 1
    assert info.value.message.startswith("base slowfast_r50 with input [(1,3,8,112,112), (1,3,32,112,112)]: ")
    assert "blocks.5.pool.0 (AvgPool3d) got (1,2048,8,4,4)" in info.value.message
    assert "kernel (8, 7, 7)" in info.value.message
    assert "swap_pool" in info.value.hint
    for ops in ([{"op": "swap_pool"}, HEAD], [HEAD]):  # replace_head pools globally: any size works
        recipe["ops"] = ops
        assert sfsurgery.validate(recipe, registry=registry).output == (1, 5)


class WidenFastStem:
    """A research op that breaks the chain: the fast stem's width no longer fits the fusion."""

    @sfsurgery.hookimpl
    def register_ops(self, register):
        register("widen_fast_stem", self.widen_fast_stem)

    @staticmethod
    def widen_fast_stem(ctx, *, width: int = 16) -> None:
        stem = ctx.model.blocks[0].multipathway_blocks[1]
        stem.conv = nn.Conv3d(ctx.input.channels, width, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False, device=ctx.device)
        stem.norm = nn.BatchNorm3d(width, device=ctx.device)


def test_the_first_op_that_breaks_the_chain_is_blamed():
    registry = sfsurgery.Registry([WidenFastStem()])
    recipe = {"base": {"hub": "slowfast_r50"}, "ops": [{"op": "grayscale_stem"}, {"op": "widen_fast_stem"},
                                                       {"op": "swap_pool"}, HEAD]}
    with pytest.raises(TraceError) as info:
        sfsurgery.validate(recipe, registry=registry)
    assert info.value.message.startswith("ops[1] widen_fast_stem: blocks.0.multipathway_fusion.conv_fast_to_slow "
                                         "(Conv3d) got (1,16,32,56,56)")
    assert "expects 8 input channels, not 16" in info.value.message
    # an op that fails on its own is named too
    recipe = {"base": {"hub": "slowfast_r50"}, "ops": [{"op": "truncate", "after": "blocks.3"}, {"op": "swap_pool"}]}
    with pytest.raises(TraceError, match=r"ops\[1\] swap_pool: no fixed-kernel pooling"):
        sfsurgery.validate(recipe, registry=registry)


def test_frames_not_divisible_by_alpha_explains_the_fusion(registry):
    with pytest.raises(TraceError) as info:
        sfsurgery.validate({"base": {"hub": "slowfast_r50"}, "input": {"frames": 30}}, registry=registry)
    assert "blocks.0.multipathway_fusion" in info.value.message
    assert "ceil(30/4)" in info.value.message and "slow T=7" in info.value.message
    assert "divisible by alpha" in info.value.hint


def test_input_alpha_other_than_the_models_stride_is_explained(registry):
    with pytest.raises(TraceError) as info:
        sfsurgery.validate({"base": {"hub": "slowfast_r50"}, "input": {"alpha": 8}}, registry=registry)
    assert "ceil(32/4)" in info.value.message and "slow T=4" in info.value.message
    assert info.value.hint == "input.alpha must be the model's fusion stride (4), not 8"


def test_reduction_ratio_without_stem_dims_is_explained(registry):
    base = {"create_slowfast": {"model_depth": 18, "slowfast_channel_reduction_ratio": [4]}}
    with pytest.raises(TraceError) as info:
        sfsurgery.validate({"base": base}, registry=registry)
    assert "blocks.0.multipathway_fusion.conv_fast_to_slow" in info.value.message
    assert "stem_dim_outs: [64, 16]" in info.value.hint
    base["create_slowfast"]["stem_dim_outs"] = [64, 16]
    assert sfsurgery.validate({"base": base}, registry=registry).output == (1, 400)


def test_expect_mismatch_blames_expect(registry):
    with pytest.raises(TraceError, match=r"expect\.output is \[1, 10\] but the model gives \(1,5\)"):
        sfsurgery.validate({"base": {"hub": "slowfast_r50"}, "ops": [HEAD], "expect": {"output": [1, 10]}},
                           registry=registry)
    assert sfsurgery.validate({"base": {"hub": "slowfast_r50"}, "ops": [HEAD], "expect": {"output": [-1, 5]}},
                              registry=registry)


def test_apply_writes_nothing_and_save_refuses_to_overwrite(tmp_path, monkeypatch, r18_checkpoint, registry):
    monkeypatch.chdir(tmp_path)
    result = sfsurgery.apply(r18_recipe(r18_checkpoint, [HEAD]), registry=registry)
    assert list(tmp_path.iterdir()) == []
    path = result.save()
    assert path == tmp_path / "out" / "r18.safetensors" or path.resolve() == (tmp_path / "out" / "r18.safetensors")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        result.save()
    assert path.read_bytes() == before
    result.save(force=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r18.safetensors"]  # no temp files left


def test_same_recipe_same_bytes_whatever_the_output_name(tmp_path, r18_checkpoint, registry):
    recipe = r18_recipe(r18_checkpoint, [{"op": "replace_head", "num_classes": 7, "hidden": [16]}])
    a = sfsurgery.apply(recipe, registry=registry).save(tmp_path / "a.safetensors")
    b = sfsurgery.apply(recipe, registry=registry).save(tmp_path / "b.safetensors")
    assert a.read_bytes() == b.read_bytes()
    recipe["seed"] = 1
    c = sfsurgery.apply(recipe, registry=registry).save(tmp_path / "c.safetensors")
    assert c.read_bytes() != a.read_bytes()


def test_file_metadata_is_plain_json_and_rebuilds(tmp_path, r18, r18_checkpoint, registry):
    from safetensors import safe_open

    result = sfsurgery.apply(r18_recipe(r18_checkpoint, [HEAD]), registry=registry)
    path = result.save(tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["sfsurgery.format"] == "2"  # the file format (format 2: header digest)
    recipe = json.loads(meta["sfsurgery.recipe"])
    assert recipe["base"] == {"create_slowfast": {"model_depth": 18}} and "checkpoint" not in json.dumps(recipe)
    assert recipe["ops"] == [{"op": "replace_head", "num_classes": 5, "dropout": 0.5, "activation": None,
                              "hidden": []}]
    assert json.loads(meta["sfsurgery.source"])["file"] == r18_checkpoint.name
    assert json.loads(meta["sfsurgery.output_shape"]) == [1, 5]
    params = json.loads(meta["sfsurgery.params"])
    assert params["total"] == sum(p.numel() for p in result.model.parameters())
    assert json.loads(meta["sfsurgery.versions"])["torch"] == torch.__version__
    lineage = json.loads(meta["sfsurgery.lineage"])
    assert lineage["ops"][0]["added"] == lineage["ops"][0]["removed"] == ["blocks.6.proj.bias", "blocks.6.proj.weight"]

    model = sfsurgery.load(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in result.model.state_dict().items())
    x = clip((2, 3, 32, 224, 224))
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model(x), rtol=0, atol=0)
        # untouched tensors keep their pytorchvideo keys and exact values
        stock = r18.state_dict()
        assert all(torch.equal(model.state_dict()[k], stock[k]) for k in stock if not k.startswith("blocks.6"))


def test_models_do_not_mutate_the_callers_list(r18_checkpoint, registry):
    model = sfsurgery.apply(r18_recipe(r18_checkpoint), registry=registry).model
    x = clip((1, 3, 32, 224, 224))
    shapes = [t.shape for t in x]
    with torch.no_grad():
        first, second = model(x), model(x)
    assert [t.shape for t in x] == shapes
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_random_backbone_is_seeded_and_said_plainly(registry):
    recipe = r18_recipe(None, [HEAD])
    a = sfsurgery.apply(recipe, registry=registry)
    b = sfsurgery.apply(recipe, registry=registry)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert any("random" in w for w in a.report["warnings"])
    assert a.report["source"] == {"base": {"create_slowfast": {"model_depth": 18}}, "weights": "random", "seed": 0}


def test_seed_head_rebuild_equals_the_tutorials_hand_surgery(tmp_path, registry):
    """recipes/custom_head.yaml against the seed's `model.blocks[6] = nn.Sequential(...)` on R50."""
    stock = stock_model(model_depth=50)
    ckpt = save_zoo_checkpoint(stock, tmp_path / "SLOWFAST_8x8_R50.pyth")
    recipe = sfsurgery.load_recipe("recipes/custom_head.yaml", {"base.checkpoint": str(ckpt)}, registry=registry)
    ours = sfsurgery.apply(recipe, registry=registry).model

    seed = stock  # the tutorial's code, verbatim
    seed.blocks[6] = nn.Sequential(*list(seed.blocks[6].children())[:-2], nn.AdaptiveAvgPool3d(1),
                                   nn.Flatten(), nn.Linear(in_features=2304, out_features=1000, bias=True), nn.ReLU())
    with torch.no_grad():
        seed.blocks[6][3].weight.copy_(ours.blocks[6].proj.weight)
        seed.blocks[6][3].bias.copy_(ours.blocks[6].proj.bias)
    seed.eval()
    x = clip((1, 3, 32, 224, 224))
    with torch.no_grad():
        expected = seed([t.clone() for t in x])
        got = ours(x)
    assert got.shape == (1, 1000)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (got > 0).any()  # the ReLU does not zero everything


def test_user_errors_are_not_warnings(registry):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sfsurgery.validate({"base": {"hub": "slowfast_r50"}}, registry=registry)
