"""Each built-in op's exactness guarantee (docs/ops.md), proven against pytorchvideo's stock model.

The surgered model is built by ``sfsurgery.apply`` from a model-zoo-layout checkpoint of the
stock model (randomised BatchNorm statistics, so every branch matters). Expected values come
from the stock model only: its forward, forward hooks on its blocks, its blocks run one by one,
and pooling / linear layers written out by hand. Nothing sfsurgery computed is an expectation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import clip, r18_recipe

import sfsurgery
from sfsurgery.errors import OpError, SurgeryError, TraceError
from sfsurgery.plan import plan_on_meta
from sfsurgery.plugins import Registry

STOCK_CLIP = (1, 3, 32, 224, 224)  # the only clip the stock (8,7,7)/(32,7,7) pools accept
SMALL_CLIP = (1, 3, 8, 64, 64)  # where the clip size does not matter
STEM_PATHS = ("blocks.0.multipathway_blocks.0.conv", "blocks.0.multipathway_blocks.1.conv")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return ((actual - expected).norm() / expected.norm()).item()


def surgery(checkpoint, registry, *ops, **extra) -> sfsurgery.Result:
    return sfsurgery.apply(r18_recipe(checkpoint, ops=list(ops), **extra), registry=registry)


def run(model, inputs):
    with torch.no_grad():
        return model(inputs)


def blocks_by_hand(stock, inputs, last: int) -> list[torch.Tensor]:
    """The stock model's blocks 0..last run one by one (no head, so any clip size works)."""
    x = list(inputs)
    with torch.no_grad():
        for block in stock.blocks[: last + 1]:
            x = block(x)
    return x


def pool_concat(pathways: list[torch.Tensor]) -> torch.Tensor:
    """Global average pool each pathway over T, H, W and concatenate: (B, C_slow + C_fast)."""
    return torch.cat([p.mean(dim=(2, 3, 4)) for p in pathways], dim=1)


def linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.detach().T + layer.bias.detach()


def stock_head(stock, pooled: torch.Tensor) -> torch.Tensor:
    return linear(pooled, stock.blocks[6].proj)


@pytest.fixture(scope="module")
def stock_224(r18):
    """The stock model at its own input: final output and (copied) blocks.4 / blocks.5 outputs."""
    captured = {}

    def keep(name):
        # PoolConcatPathway overwrites its input list in place: copy what we capture
        def hook(module, args, output):
            captured[name] = [t.clone() for t in output] if isinstance(output, list) else output.clone()
        return hook

    handles = [r18.blocks[i].register_forward_hook(keep(f"blocks.{i}")) for i in (4, 5)]
    try:
        out = run(r18, clip(STOCK_CLIP))
    finally:
        for handle in handles:
            handle.remove()
    return {"out": out, **captured}


# --------------------------------------------------------------------------------------------
# grayscale_stem


def test_grayscale_stem_sum_equals_stock_on_gray_repeated_to_rgb(r18, r18_checkpoint, registry):
    result = surgery(r18_checkpoint, registry, {"op": "grayscale_stem"})
    model = result.model
    for path in STEM_PATHS:
        conv = model.get_submodule(path)
        stock_conv = r18.get_submodule(path)
        assert conv.weight.shape[1] == 1 and conv.in_channels == 1
        torch.testing.assert_close(conv.weight.detach(), stock_conv.weight.sum(dim=1, keepdim=True).detach())
    assert result.report["input"]["channels"] == 1
    assert result.trace.input.channels == 1

    gray = (1, 1, *STOCK_CLIP[2:])
    expected = run(r18, [t.repeat(1, 3, 1, 1, 1) for t in clip(gray, seed=1)])
    assert rel_err(run(model, clip(gray, seed=1)), expected) <= 1e-5


def test_grayscale_stem_mean_is_a_third_of_sum(r18, r18_checkpoint, registry):
    summed = surgery(r18_checkpoint, registry, {"op": "grayscale_stem", "mode": "sum"}).model
    mean = surgery(r18_checkpoint, registry, {"op": "grayscale_stem", "mode": "mean"}).model
    for path in STEM_PATHS:
        weight = mean.get_submodule(path).weight.detach()
        assert weight.shape[1] == 1
        torch.testing.assert_close(weight, summed.get_submodule(path).weight.detach() / 3)
        torch.testing.assert_close(weight, r18.get_submodule(path).weight.detach().mean(dim=1, keepdim=True))


# --------------------------------------------------------------------------------------------
# adapt_stem


def test_adapt_stem_repeat_rgb_twice_equals_stock_rgb(r18_checkpoint, registry, stock_224):
    result = surgery(r18_checkpoint, registry, {"op": "adapt_stem", "in_channels": 6})
    assert result.report["input"]["channels"] == 6
    for path in STEM_PATHS:
        assert result.model.get_submodule(path).weight.shape[1] == 6
    out = run(result.model, [torch.cat([t, t], dim=1) for t in clip(STOCK_CLIP)])
    assert rel_err(out, stock_224["out"]) <= 1e-5


def test_adapt_stem_zero_ignores_extra_channel(r18_checkpoint, registry, stock_224):
    result = surgery(r18_checkpoint, registry, {"op": "adapt_stem", "in_channels": 4, "mode": "zero"})
    assert result.report["input"]["channels"] == 4
    depth = clip((1, 1, *STOCK_CLIP[2:]), seed=7)
    out = run(result.model, [torch.cat([t, d * 10], dim=1) for t, d in zip(clip(STOCK_CLIP), depth)])
    assert rel_err(out, stock_224["out"]) <= 1e-5


def test_adapt_stem_zero_cannot_drop_channels(registry):
    recipe = r18_recipe(ops=[{"op": "adapt_stem", "in_channels": 2, "mode": "zero"}])
    with pytest.raises(SurgeryError, match=r"ops\[0\] adapt_stem.*in_channels must be >= 3"):
        sfsurgery.validate(recipe, registry=registry)


# --------------------------------------------------------------------------------------------
# swap_pool


def test_swap_pool_avg_equals_stock_at_stock_input(r18_checkpoint, registry, stock_224):
    model = surgery(r18_checkpoint, registry, {"op": "swap_pool"}).model
    assert [type(p).__name__ for p in model.blocks[5].pool] == ["AdaptiveAvgPool3d"] * 2
    assert rel_err(run(model, clip(STOCK_CLIP)), stock_224["out"]) <= 1e-5


@pytest.mark.parametrize("frames,size", [(32, 112), (32, 160), (16, 112)])
def test_swap_pool_runs_where_stock_raises(r18, r18_checkpoint, registry, frames, size):
    spec = (1, 3, frames, size, size)
    with pytest.raises(RuntimeError):
        run(r18, clip(spec))
    result = surgery(r18_checkpoint, registry, {"op": "swap_pool"},
                     input={"frames": frames, "size": [size, size]})
    expected = stock_head(r18, pool_concat(blocks_by_hand(r18, clip(spec), last=4)))
    assert rel_err(run(result.model, clip(spec)), expected) <= 1e-5


def test_swap_pool_max(r18, r18_checkpoint, registry):
    spec = (1, 3, 16, 112, 112)
    result = surgery(r18_checkpoint, registry, {"op": "swap_pool", "kind": "max"},
                     input={"frames": 16, "size": [112, 112]})
    assert [type(p).__name__ for p in result.model.blocks[5].pool] == ["AdaptiveMaxPool3d"] * 2
    pooled = torch.cat([p.amax(dim=(2, 3, 4)) for p in blocks_by_hand(r18, clip(spec), last=4)], dim=1)
    assert rel_err(run(result.model, clip(spec)), stock_head(r18, pooled)) <= 1e-5


def test_swap_pool_twice_is_an_error(registry):
    recipe = r18_recipe(ops=[{"op": "swap_pool"}, {"op": "swap_pool", "kind": "max"}])
    with pytest.raises((OpError, TraceError), match=r"ops\[1\] swap_pool.*no fixed-kernel pooling") as info:
        sfsurgery.validate(recipe, registry=registry)
    assert info.value.exit_code == 1


# --------------------------------------------------------------------------------------------
# replace_head


def test_replace_head_is_pool_then_linear(r18_checkpoint, registry, stock_224):
    result = surgery(r18_checkpoint, registry, {"op": "replace_head", "num_classes": 10})
    proj = result.model.get_submodule("blocks.6.proj")
    assert (proj.in_features, proj.out_features) == (2304, 10)
    out = run(result.model, clip(STOCK_CLIP))
    assert out.shape == (1, 10)
    from_pool_block = linear(stock_224["blocks.5"].mean(dim=(2, 3, 4)), proj)
    from_features = linear(pool_concat(stock_224["blocks.4"]), proj)
    assert rel_err(out, from_pool_block) <= 1e-5
    assert rel_err(out, from_features) <= 1e-5


@pytest.mark.parametrize("frames,size", [(32, 112), (64, 224)])
def test_replace_head_works_where_the_stock_head_pools_do_not_fit(r18, r18_checkpoint, registry, frames, size):
    spec = (1, 3, frames, size, size)
    with pytest.raises(RuntimeError):
        run(r18, clip(spec))
    result = surgery(r18_checkpoint, registry, {"op": "replace_head", "num_classes": 7},
                     input={"frames": frames, "size": [size, size]})
    assert "do not fit this clip" in result.report["lineage"][0]["notes"][0]
    expected = linear(pool_concat(blocks_by_hand(r18, clip(spec), last=4)), result.model.blocks[6].proj)
    assert rel_err(run(result.model, clip(spec)), expected) <= 1e-5


def test_replace_head_keeps_the_stock_pools_where_they_fit(r18_checkpoint, registry):
    model = surgery(r18_checkpoint, registry, {"op": "replace_head", "num_classes": 7}).model
    assert all(type(pool) is torch.nn.AvgPool3d for pool in model.blocks[5].pool)


def test_replace_head_400_with_stock_weights_is_the_stock_model(r18, r18_checkpoint, registry, stock_224):
    model = surgery(r18_checkpoint, registry, {"op": "replace_head", "num_classes": 400}).model
    with torch.no_grad():
        model.blocks[6].proj.weight.copy_(r18.blocks[6].proj.weight)
        model.blocks[6].proj.bias.copy_(r18.blocks[6].proj.bias)
    assert not model.training
    assert rel_err(run(model, clip(STOCK_CLIP)), stock_224["out"]) <= 1e-5


@pytest.mark.parametrize("activation", [None, "softmax", "sigmoid", "relu"])
def test_replace_head_hidden_and_activation(r18, r18_checkpoint, registry, activation):
    spec = (1, 3, 8, 64, 64)
    result = surgery(r18_checkpoint, registry, {"op": "swap_pool"},
                     {"op": "replace_head", "num_classes": 5, "hidden": [32, 16], "activation": activation},
                     input={"frames": 8, "size": [64, 64]})
    head = result.model.blocks[6]
    hidden = [m for m in head.modules() if isinstance(m, torch.nn.Linear) and m is not head.proj]
    assert [(m.in_features, m.out_features) for m in hidden] == [(2304, 32), (32, 16)]
    assert (head.proj.in_features, head.proj.out_features) == (16, 5)

    x = pool_concat(blocks_by_hand(r18, clip(spec, seed=3), last=4))
    for layer in hidden:
        x = torch.relu(linear(x, layer))
    logits = linear(x, head.proj)
    expected = {None: lambda t: t, "softmax": lambda t: F.softmax(t, dim=1), "sigmoid": torch.sigmoid,
                "relu": torch.relu}[activation](logits)
    out = run(result.model, clip(spec, seed=3))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    if activation == "softmax":
        torch.testing.assert_close(out.sum(dim=1), torch.ones(1))
    if activation == "sigmoid":
        assert ((out > 0) & (out < 1)).all()
    if activation == "relu":
        assert (out >= 0).all()


def _head_tensors(seed: int, checkpoint, registry) -> dict[str, torch.Tensor]:
    torch.manual_seed(1000 + seed * 7)  # the global RNG must not matter
    op = {"op": "replace_head", "num_classes": 101, "hidden": [64]}
    model = surgery(checkpoint, registry, op, seed=seed).model
    return {k: v for k, v in model.state_dict().items() if k.startswith("blocks.6.")}


def test_replace_head_init_comes_from_the_recipe_seed(r18_checkpoint, registry):
    first = _head_tensors(0, r18_checkpoint, registry)
    again = _head_tensors(0, r18_checkpoint, Registry())
    other = _head_tensors(1, r18_checkpoint, registry)
    assert sorted(first) == ["blocks.6.hidden.0.bias", "blocks.6.hidden.0.weight",
                             "blocks.6.proj.bias", "blocks.6.proj.weight"]
    for key, value in first.items():
        assert torch.equal(value, again[key]), key
        if key.endswith("weight"):
            assert not torch.equal(value, other[key]), key
            assert abs(value.std().item() - 0.01) < 5e-4, (key, value.std().item())
            assert abs(value.mean().item()) < 5e-4, key
        else:
            assert torch.count_nonzero(value) == 0, key


# --------------------------------------------------------------------------------------------
# truncate


def test_truncate_returns_the_block_output(r18_checkpoint, registry, stock_224):
    model = surgery(r18_checkpoint, registry, {"op": "truncate", "after": "blocks.4"}).model
    assert len(model.blocks) == 5
    out = run(model, clip(STOCK_CLIP))
    assert isinstance(out, list) and len(out) == 2
    for got, expected in zip(out, stock_224["blocks.4"]):
        assert rel_err(got, expected) <= 1e-5


def test_truncate_pool_is_the_pooled_concat(r18, r18_checkpoint, registry):
    spec = SMALL_CLIP  # no head pool left: any clip size works
    result = surgery(r18_checkpoint, registry, {"op": "truncate", "after": "blocks.4", "pool": True},
                     input={"frames": spec[2], "size": list(spec[3:])})
    out = run(result.model, clip(spec))
    assert out.shape == (1, 2304)
    assert rel_err(out, pool_concat(blocks_by_hand(r18, clip(spec), last=4))) <= 1e-5
    assert result.report["output"] == [1, 2304]


def test_truncate_keep_equals_after(r18_checkpoint, registry):
    spec = SMALL_CLIP
    size = {"frames": spec[2], "size": list(spec[3:])}
    by_keep = surgery(r18_checkpoint, registry, {"op": "truncate", "keep": 5}, input=size)
    by_after = surgery(r18_checkpoint, registry, {"op": "truncate", "after": "blocks.4"}, input=size)
    assert by_keep.model.state_dict().keys() == by_after.model.state_dict().keys()
    assert by_keep.report["lineage"][0]["removed"] == by_after.report["lineage"][0]["removed"]
    for a, b in zip(run(by_keep.model, clip(spec)), run(by_after.model, clip(spec))):
        assert torch.equal(a, b)


def test_truncate_unknown_path_lists_valid_ones(registry):
    recipe = r18_recipe(ops=[{"op": "truncate", "after": "blocks.9"}])
    with pytest.raises(SurgeryError, match=r"blocks\.9.*blocks\.0, blocks\.1.*blocks\.6") as info:
        sfsurgery.validate(recipe, registry=registry)
    assert info.value.exit_code == 1


def test_truncate_at_blocks3_then_head_is_1408_wide_on_r50(registry):
    """Meta only: the R50 plan (no weights) gets a 1408-wide head at 112 px."""
    recipe = sfsurgery.load_recipe({
        "base": {"create_slowfast": {"model_depth": 50}},
        "input": {"size": [112, 112]},
        "ops": [{"op": "truncate", "after": "blocks.3"}, {"op": "replace_head", "num_classes": 10}],
        "expect": {"output": [1, 10]},
    }, registry=registry)
    trace = sfsurgery.validate(recipe, registry=registry)
    assert trace.outputs == [(1, 10)]
    head = trace.blocks[-1]
    assert head.path == "blocks.4"
    assert sum(shape[1] for shape in head.inputs) == 1408
    planned = plan_on_meta(recipe).model
    assert planned.blocks[4].proj.in_features == 1408
    assert all(t.is_meta for t in planned.state_dict().values())


def test_truncate_at_blocks3_then_head_runs_on_112px(r18, r18_checkpoint, registry):
    spec = (1, 3, 32, 112, 112)
    result = surgery(r18_checkpoint, registry, {"op": "truncate", "after": "blocks.3"},
                     {"op": "replace_head", "num_classes": 10}, input={"size": [112, 112]})
    proj = result.model.blocks[4].proj
    assert proj.in_features == 1408
    features = blocks_by_hand(r18, clip(spec), last=3)
    assert sum(f.shape[1] for f in features) == 1408
    assert rel_err(run(result.model, clip(spec)), linear(pool_concat(features), proj)) <= 1e-5


# --------------------------------------------------------------------------------------------
# lineage


def _keys(module, prefix: str) -> set[str]:
    return {f"{prefix}.{k}" for k in module.state_dict()}


def test_lineage_names_the_keys_each_op_touched(r18, r18_checkpoint, registry):
    stem_keys = [f"{p}.weight" for p in STEM_PATHS]
    lineage = surgery(r18_checkpoint, registry, {"op": "grayscale_stem"}, {"op": "adapt_stem", "in_channels": 2},
                      {"op": "swap_pool"}, {"op": "truncate", "after": "blocks.3"},
                      {"op": "replace_head", "num_classes": 10, "hidden": [16]},
                      input={"size": [112, 112]}).report["lineage"]
    assert [e["op"] for e in lineage] == ["grayscale_stem", "adapt_stem", "swap_pool", "truncate", "replace_head"]
    assert [e["index"] for e in lineage] == list(range(5))

    for entry in lineage[:2]:  # the stems: both pathway kernels transformed, nothing else
        assert entry["transformed"] == stem_keys
        assert entry["added"] == entry["removed"] == []

    swap = lineage[2]  # parameter-free modules: no key changes, the note names them
    assert swap["added"] == swap["removed"] == swap["transformed"] == []
    assert "blocks.5.pool.0" in " ".join(swap["notes"]) and "blocks.5.pool.1" in " ".join(swap["notes"])

    cut = lineage[3]
    assert set(cut["removed"]) == _keys(r18.blocks[4], "blocks.4") | _keys(r18.blocks[6], "blocks.6")
    assert cut["added"] == cut["transformed"] == []

    head = lineage[4]
    assert set(head["added"]) == {"blocks.4.hidden.0.weight", "blocks.4.hidden.0.bias",
                                  "blocks.4.proj.weight", "blocks.4.proj.bias"}
    assert head["removed"] == head["transformed"] == []
    assert all(entry["notes"] for entry in lineage)


def test_lineage_of_a_replaced_stock_head(r18_checkpoint, registry):
    entry = surgery(r18_checkpoint, registry, {"op": "replace_head", "num_classes": 10}).report["lineage"][0]
    # the old classifier is thrown away and a new one drawn from the seed: removed + added
    assert entry["removed"] == entry["added"] == ["blocks.6.proj.bias", "blocks.6.proj.weight"]
    assert entry["transformed"] == []
    assert "2304 -> 10" in entry["notes"][0]
