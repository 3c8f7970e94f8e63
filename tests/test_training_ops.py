"""``freeze``, ``lr_mult``, ``param_groups`` and ``fuse_bn`` on a real SlowFast with randomised BatchNorm.

References are computed by hand: a frozen BatchNorm's output from its running statistics after a
train-mode forward, fused outputs against the unfused model, parameter groups against names.
"""

from __future__ import annotations

import fnmatch
import warnings

import pytest
import torch
from conftest import clip, r18_recipe
from torch import nn

import sfsurgery
from sfsurgery.errors import SurgeryWarning, TraceError

SMALL = (1, 3, 8, 64, 64)
INPUT = {"frames": 8, "size": [64, 64]}


def _apply(checkpoint, *ops):
    recipe = r18_recipe(checkpoint, [{"op": "swap_pool"}, *ops], input=INPUT)
    return sfsurgery.apply(recipe)


def test_freeze_stages_freezes_the_stem_and_first_stage_and_keeps_their_bn_in_eval(r18_checkpoint, tmp_path):
    result = _apply(r18_checkpoint, {"op": "freeze", "stages": 1})
    model = result.model
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(("blocks.0.", "blocks.1."))), name
    frozen = model.blocks[0].multipathway_blocks[0].norm
    trained = model.blocks[2].multipathway_blocks[0].res_blocks[0].branch2.norm_a
    frozen_stats = frozen.running_mean.clone()
    trained_stats = trained.running_mean.clone()
    seen = {}
    frozen.register_forward_hook(lambda m, args, out: seen.update(x=args[0].detach(), y=out.detach()))
    model.train()
    model(clip((2, 3, 8, 64, 64)))
    assert not frozen.training and torch.equal(frozen.running_mean, frozen_stats)
    assert trained.training and not torch.equal(trained.running_mean, trained_stats)
    shape = (1, -1, 1, 1, 1)
    by_hand = ((seen["x"] - frozen.running_mean.view(shape)) / torch.sqrt(frozen.running_var.view(shape) + frozen.eps)
               * frozen.weight.view(shape) + frozen.bias.view(shape))
    torch.testing.assert_close(seen["y"], by_hand, rtol=1e-5, atol=1e-5)

    path = result.save(tmp_path / "frozen.safetensors")
    loaded = sfsurgery.load(path).train()
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == \
        {n: p.requires_grad for n, p in model.named_parameters()}
    assert [type(m).__name__ for m in loaded.modules()] == [type(m).__name__ for m in model.modules()]
    assert not loaded.blocks[0].multipathway_blocks[0].norm.training
    unfrozen = _apply(r18_checkpoint)
    assert list(loaded.state_dict()) == list(unfrozen.model.state_dict())  # the keys do not change


def test_freeze_patterns_and_bn_train(r18_checkpoint):
    model = _apply(r18_checkpoint, {"op": "freeze", "patterns": ["blocks.0.*", "*.norm_a.*"], "bn": "train"}).model
    for name, param in model.named_parameters():
        frozen = fnmatch.fnmatchcase(name, "blocks.0.*") or fnmatch.fnmatchcase(name, "*.norm_a.*")
        assert param.requires_grad == (not frozen), name
    model.train()
    assert model.blocks[0].multipathway_blocks[0].norm.training  # bn: train follows the model


@pytest.mark.parametrize(("op", "message"), [
    ({"op": "freeze", "patterns": ["blocks.9.*"]}, "pattern 'blocks.9.*' matches no parameter"),
    ({"op": "freeze", "stages": 5}, "stages: 5 but base create_slowfast has a stem and 4 stages"),
    ({"op": "freeze"}, "give patterns, stages or both"),
])
def test_freeze_mistakes_are_named(op, message):
    with pytest.raises(TraceError) as info:
        sfsurgery.validate(r18_recipe(None, [op]))
    assert message in info.value.message.replace("the model", "base create_slowfast")
    assert info.value.where.op_name == "freeze" and info.value.hint


def test_param_groups_follow_the_rules_in_order_and_travel_with_the_file(r18_checkpoint, tmp_path):
    rules = [{"pattern": "blocks.6.*", "mult": 10.0}, {"pattern": "blocks.4.*", "mult": 0.5},
             {"pattern": "blocks.4.multipathway_blocks.0.*", "mult": 3.0}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _apply(r18_checkpoint, {"op": "freeze", "stages": 0}, {"op": "lr_mult", "rules": rules},
                        {"op": "lr_mult", "rules": [{"pattern": "blocks.0.*", "mult": 2.0},
                                                    {"pattern": "blocks.6.*", "mult": 5.0}]})
    messages = [str(w.message) for w in caught if issubclass(w.category, SurgeryWarning)]
    assert any("'blocks.4.multipathway_blocks.0.*' matches no parameter" in m for m in messages), messages
    assert any("'blocks.0.*' matches only frozen parameters" in m for m in messages), messages
    path = result.save(tmp_path / "lr.safetensors")
    for model in (result.model, sfsurgery.load(path)):
        groups = sfsurgery.param_groups(model, lr=0.1, weight_decay=1e-4)
        names = {id(p): n for n, p in model.named_parameters()}
        seen = [names[id(p)] for g in groups for p in g["params"]]
        assert sorted(seen) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
        assert len(seen) == len(set(seen))
        by_group = {g["name"]: g for g in groups}
        assert set(by_group) == {"blocks.6.*", "default"}  # the last lr_mult replaced the rules; blocks.0 is frozen
        assert all(names[id(p)].startswith("blocks.6.") for p in by_group["blocks.6.*"]["params"])
        assert not any(names[id(p)].startswith("blocks.6.") for p in by_group["default"]["params"])
        assert by_group["blocks.6.*"]["lr"] == pytest.approx(0.5) and by_group["default"]["lr"] == 0.1
        assert all(g["weight_decay"] == 1e-4 for g in groups)
    torch.optim.SGD(sfsurgery.param_groups(result.model, lr=0.1), momentum=0.9)


def test_fuse_bn_equals_the_unfused_model_and_removes_every_bn(r18_checkpoint, tmp_path):
    unfused = _apply(r18_checkpoint).model
    result = _apply(r18_checkpoint, {"op": "fuse_bn"})
    fused = result.model
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fused.modules())
    bn_keys = [k for k in unfused.state_dict() if ".norm" in k and "running" in k]
    assert bn_keys and not any(k in fused.state_dict() for k in bn_keys)
    x = clip(SMALL)
    with torch.no_grad():
        want, got = unfused(x), fused(x)
    assert ((got - want).norm() / want.norm()).item() <= 1e-5
    again = sfsurgery.load(result.save(tmp_path / "fused.safetensors"))
    assert all(torch.equal(v, fused.state_dict()[k]) for k, v in again.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(again(x), got, rtol=1e-5, atol=1e-6)  # same tensors; conv kernels may differ
