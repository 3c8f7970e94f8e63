"""Checkpoints: strict/matching loads, files from the wild, refusals, pretrained resolution."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import clip, r18_recipe, save_zoo_checkpoint, stock_model

import sfsurgery
from sfsurgery.errors import CheckpointError

SMALL = {"size": [64, 64], "frames": 8}  # with truncate: no stock pool involved


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_strict_load_reproduces_the_stock_model(r18, r18_checkpoint, registry):
    result = sfsurgery.apply(r18_recipe(r18_checkpoint), registry=registry)
    assert _state_equal(result.model.state_dict(), r18.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(result.model(clip((1, 3, 32, 224, 224))), r18(clip((1, 3, 32, 224, 224))))
    assert result.report["load"]["coverage"] == 1.0
    assert result.report["source"]["sha256"]
    assert not result.model.training


def test_strict_mismatch_counts_and_lists_keys(tmp_path, registry):
    ckpt = save_zoo_checkpoint(stock_model(model_depth=18, model_num_class=10), tmp_path / "ten.pyth")
    with pytest.raises(CheckpointError) as info:
        sfsurgery.apply(r18_recipe(ckpt), registry=registry)
    assert ("2 shape mismatches (blocks.6.proj.weight (10, 2304) vs (400, 2304), "
            "blocks.6.proj.bias (10,) vs (400,))") in info.value.message
    assert "load: matching" in info.value.hint
    state = stock_model(model_depth=18).state_dict()
    state.pop("blocks.0.multipathway_blocks.0.conv.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save({"model_state": state}, tmp_path / "odd.pyth")
    with pytest.raises(CheckpointError, match=r"1 missing \(blocks\.0\.multipathway_blocks\.0\.conv\.weight\); "
                                              r"1 unexpected \(extra\.weight\)"):
        sfsurgery.apply(r18_recipe(tmp_path / "odd.pyth"), registry=registry)


def test_matching_load_fills_a_custom_architecture(r18, r18_checkpoint, registry):
    # the seed's "custom model has no pretrained weights" case: a wider fast pathway
    recipe = r18_recipe(r18_checkpoint)
    recipe["base"]["create_slowfast"].update(slowfast_channel_reduction_ratio=[4], stem_dim_outs=[64, 16])
    recipe["base"]["load"] = "matching"
    result = sfsurgery.apply(recipe, registry=registry)
    stock = r18.state_dict()
    got = result.model.state_dict()
    same = [k for k in got if k in stock and got[k].shape == stock[k].shape]
    assert all(torch.equal(got[k], stock[k]) for k in same)
    load = result.report["load"]
    assert load["loaded"] == len(same) and load["total"] == len(got) and 0 < load["coverage"] < 1
    assert "blocks.0.multipathway_blocks.0.conv.weight" in same  # the slow pathway is reused
    assert not any(t.is_meta for t in got.values())
    # uncovered BatchNorms got pytorchvideo's init, not garbage
    bn = result.model.blocks[0].multipathway_blocks[1].norm
    assert torch.equal(bn.running_mean, torch.zeros(16)) and torch.equal(bn.running_var, torch.ones(16))
    assert any("initialised from seed" in w for w in result.report["warnings"])


def test_matching_load_is_deterministic(r18_checkpoint, registry):
    recipe = r18_recipe(r18_checkpoint)
    recipe["base"]["create_slowfast"].update(slowfast_channel_reduction_ratio=[4], stem_dim_outs=[64, 16])
    recipe["base"]["load"] = "matching"
    a = sfsurgery.apply(recipe, registry=registry).model.state_dict()
    b = sfsurgery.apply(recipe, registry=registry).model.state_dict()
    assert _state_equal(a, b)


def test_legacy_numpy_and_dataparallel_checkpoints_load(tmp_path, r18, registry):
    state = {f"module.{k}": v for k, v in r18.state_dict().items()}
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": state, "epoch": np.int64(3), "lr": np.float64(0.1)}, path,
               _use_new_zipfile_serialization=False)
    result = sfsurgery.apply(r18_recipe(path), registry=registry)
    assert _state_equal(result.model.state_dict(), r18.state_dict())
    assert any("module." in note for note in result.report["notes"])


def test_bare_and_safetensors_checkpoints_and_explicit_key(tmp_path, r18, registry):
    from safetensors.torch import save_file

    torch.save(r18.state_dict(), tmp_path / "bare.pt")
    save_file(r18.state_dict(), tmp_path / "w.safetensors")
    torch.save({"ema": r18.state_dict(), "model_state": {}}, tmp_path / "ema.pt")
    for name, key in (("bare.pt", "auto"), ("w.safetensors", "auto"), ("ema.pt", "ema")):
        recipe = r18_recipe(tmp_path / name)
        recipe["base"]["checkpoint_key"] = key
        assert _state_equal(sfsurgery.apply(recipe, registry=registry).model.state_dict(), r18.state_dict())
    recipe = r18_recipe(tmp_path / "ema.pt")
    recipe["base"]["checkpoint_key"] = "weights"
    with pytest.raises(CheckpointError, match="no entry 'weights'"):
        sfsurgery.apply(recipe, registry=registry)


def test_a_pickle_that_would_run_code_is_refused_never_executed(tmp_path, registry):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model_state": {}, "payload": Exploit()}, tmp_path / "evil.pyth")
    with pytest.raises(CheckpointError, match=r"refers to posix\.system.*nothing was executed"):
        sfsurgery.apply(r18_recipe(tmp_path / "evil.pyth"), registry=registry)
    assert not marker.exists()


def test_missing_and_corrupt_checkpoints(tmp_path, registry):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        sfsurgery.apply(r18_recipe(tmp_path / "nope.pyth"), registry=registry)
    (tmp_path / "junk.pyth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        sfsurgery.apply(r18_recipe(tmp_path / "junk.pyth"), registry=registry)


def test_pretrained_comes_from_the_torch_hub_cache(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SFSURGERY_OFFLINE", "1")
    recipe = {"base": {"hub": "slowfast_r50", "pretrained": True}, "ops": [{"op": "truncate", "keep": 1}],
              "input": SMALL}
    with pytest.raises(CheckpointError) as info:
        sfsurgery.apply(recipe, registry=registry)
    expected_path = tmp_path / "torch" / "hub" / "checkpoints" / "SLOWFAST_8x8_R50.pyth"
    url = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST_8x8_R50.pyth"
    assert str(expected_path) in info.value.message and url in info.value.message
    assert f"download {url} and put it at {expected_path}" == info.value.hint
    expected_path.parent.mkdir(parents=True)
    stock = stock_model(model_depth=50)
    save_zoo_checkpoint(stock, expected_path)
    result = sfsurgery.apply(recipe, registry=registry)
    assert result.report["source"]["weights"] == "pretrained"
    got, expected = result.model.state_dict(), stock.state_dict()
    assert got.keys() <= expected.keys() and all(torch.equal(v, expected[k]) for k, v in got.items())
