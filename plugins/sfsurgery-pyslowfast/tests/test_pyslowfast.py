"""The installed sfsurgery-pyslowfast plugin: key mapping, end to end loads, cfg checks, refusals.

Self-contained (no conftest), as a third-party plugin's tests would be: real models and clips come
from ``sfsurgery.testing``.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import sfsurgery
from sfsurgery.errors import CheckpointError
from sfsurgery.plugins import Registry
from sfsurgery.testing import example_clip as clip
from sfsurgery.testing import stock_slowfast as stock_model

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from pytorchvideo.models import hub
    from pytorchvideo.models.slowfast import create_slowfast

from sfsurgery_pyslowfast import convert

R18_CFG = {"MODEL": {"ARCH": "slowfast", "NUM_CLASSES": 400}, "RESNET": {"DEPTH": 18, "WIDTH_PER_GROUP": 64},
           "SLOWFAST": {"ALPHA": 4, "BETA_INV": 8, "FUSION_CONV_CHANNEL_RATIO": 2, "FUSION_KERNEL_SZ": 7}}


# --- helpers -----------------------------------------------------------------------------------

def to_pyslowfast(key: str) -> str:
    """pytorchvideo name -> PySlowFast name, written independently of the plugin (token by token)."""
    parts = key.split(".")
    assert parts[0] == "blocks", key
    stage, tensor = int(parts[1]), parts[-1]
    if stage == 6:
        assert parts[2:4] == ["proj", tensor], key
        return f"head.projection.{tensor}"
    if parts[2] == "multipathway_fusion":
        module = {"conv_fast_to_slow": "conv_f2s", "norm": "bn"}[parts[3]]
        return f"s{stage + 1}_fuse.{module}.{tensor}"
    assert parts[2] == "multipathway_blocks", key
    pathway = parts[3]
    if stage == 0:
        module = {"conv": "conv", "norm": "bn"}[parts[4]]
        return f"s1.pathway{pathway}_stem.{module}.{tensor}"
    assert parts[4] == "res_blocks", key
    block, inner = parts[5], parts[6:-1]
    if inner[0] == "branch2":
        kind, letter = inner[1].split("_")
        module = f"branch2.{letter}{'_bn' if kind == 'norm' else ''}"
    else:
        module = {"branch1_conv": "branch1", "branch1_norm": "branch1_bn"}[inner[0]]
    return f"s{stage + 1}.pathway{pathway}_res{block}.{module}.{tensor}"


def pyslowfast_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {to_pyslowfast(k): v for k, v in state.items()}


def save_pyslowfast(model: nn.Module, path: Path, cfg: dict | str | None = None, **state_prefix) -> Path:
    """PySlowFast's layout (slowfast/utils/checkpoint.py save_checkpoint)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpoint = {"epoch": 3, "model_state": pyslowfast_state(model.state_dict()),
                  "optimizer_state": optimizer.state_dict()}
    if cfg is not None:
        checkpoint["cfg"] = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg)
    torch.save(checkpoint, path)
    return path


def meta_shapes(build, **kwargs) -> dict[str, tuple[int, ...]]:
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return {k: tuple(v.shape) for k, v in build(**kwargs).state_dict().items()}


def recipe(path: Path, ops: list | None = None, **base) -> dict:
    return {"name": "psf", "base": {"create_slowfast": {"model_depth": 18}, "checkpoint": str(path),
                                    "checkpoint_format": "pyslowfast", **base}, "ops": ops or []}


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    return stock_model(model_depth=18)


@pytest.fixture(scope="module")
def r18_checkpoint(tmp_path_factory, r18) -> Path:
    return save_pyslowfast(r18, tmp_path_factory.mktemp("psf") / "SLOWFAST_R18.pyth", R18_CFG)


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


# --- (1) the mapping over every key of real layouts --------------------------------------------

@pytest.mark.parametrize(("hub_name", "depth", "kernel"), [
    ("slowfast_r50", 50, 7), ("slowfast_r101", 101, 5), ("slowfast_16x8_r101_50_50", 101, 5)])
def test_every_key_of_real_layouts_maps_back(hub_name, depth, kernel):
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        state = getattr(hub, hub_name)().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    psf = pyslowfast_state(state)
    assert len(psf) == len(state) == {"slowfast_r50": 662}.get(hub_name, 1274)
    assert {"s1.pathway1_stem.conv.weight", "s4_fuse.conv_f2s.weight", "s5.pathway0_res2.branch2.c_bn.running_var",
            "s2.pathway1_res0.branch1_bn.num_batches_tracked", "head.projection.bias"} <= psf.keys()
    cfg = {"RESNET": {"DEPTH": depth}, "SLOWFAST": {"ALPHA": 4, "BETA_INV": 8, "FUSION_KERNEL_SZ": kernel,
                                                    "FUSION_CONV_CHANNEL_RATIO": 2}}
    out = convert({"model_state": psf, "epoch": 3, "cfg": yaml.safe_dump(cfg)}, f"{hub_name}.pyth",
                  model_shapes=shapes)
    assert list(out) == list(state)  # every key, same order
    for key, value in out.items():
        assert value is psf[to_pyslowfast(key)] and tuple(value.shape) == shapes[key]


# --- (2) end to end through the installed entry point --------------------------------------------

def test_apply_loads_a_pyslowfast_checkpoint_bit_for_bit(r18, r18_checkpoint):
    result = sfsurgery.apply(recipe(r18_checkpoint))  # default registry: entry points only
    assert _state_equal(result.model.state_dict(), r18.state_dict())
    assert result.report["load"]["coverage"] == 1.0
    with torch.no_grad():
        torch.testing.assert_close(result.model(clip((1, 3, 32, 224, 224))), r18(clip((1, 3, 32, 224, 224))),
                                   rtol=0, atol=0)


def test_cli_apply_with_the_pyslowfast_format(tmp_path, r18):
    save_pyslowfast(r18, tmp_path / "ckpt.pyth", R18_CFG)
    body = recipe(Path("ckpt.pyth"))  # relative to the recipe's folder
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(body))
    cli = shutil.which("sfsurgery", path=str(Path(sys.executable).parent)) or shutil.which("sfsurgery")
    assert cli, "the sfsurgery console script is not installed"
    run = subprocess.run([cli, "apply", "recipe.yaml", "-o", "out.safetensors"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    from safetensors.torch import load_file

    assert _state_equal(load_file(tmp_path / "out.safetensors"), r18.state_dict())


# --- (3) prefixes --------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["model.", "module.", "module.model."])
def test_prefixes_are_stripped(prefix, tmp_path, r18):
    shapes = meta_shapes(create_slowfast, model_depth=18)
    psf = pyslowfast_state(r18.state_dict())
    out = convert({"model_state": {prefix + k: v for k, v in psf.items()}}, "x.pyth", model_shapes=shapes)
    assert _state_equal(out, r18.state_dict())


def test_ptv_wrapper_checkpoint_loads(tmp_path, r18):
    # PySlowFast's PTVSlowFast holds create_slowfast(...) as self.model: pytorchvideo names under "model."
    path = tmp_path / "ptv.pyth"
    torch.save({"model_state": {f"model.{k}": v for k, v in r18.state_dict().items()}, "epoch": 1,
                "cfg": yaml.safe_dump(R18_CFG)}, path)
    assert _state_equal(sfsurgery.apply(recipe(path)).model.state_dict(), r18.state_dict())


def test_checkpoint_key_picks_the_bare_state_dict(r18_checkpoint, r18):
    result = sfsurgery.apply(recipe(r18_checkpoint, checkpoint_key="model_state"))
    assert _state_equal(result.model.state_dict(), r18.state_dict())


def test_unmappable_keys_are_named():
    psf = {"s1.pathway0_stem.conv.weight": torch.zeros(1), "s3.pathway0_nonlocal1.conv_theta.weight": torch.zeros(1),
           "head.act.weight": torch.zeros(1), "s2.pathway0_res0.branch2.d.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"x\.pyth: 3 of 4 entries .*s3\.pathway0_nonlocal1\.conv_theta\.weight, "
                                              r"head\.act\.weight, s2\.pathway0_res0\.branch2\.d\.weight$"):
        convert({"model_state": psf}, "x.pyth", model_shapes={})
    with pytest.raises(CheckpointError, match="no 'model_state' .found: epoch, cfg"):
        convert({"epoch": 3, "cfg": ""}, "x.pyth", model_shapes={})


# --- (4) cfg contradictions ----------------------------------------------------------------------

def _with(**changes) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(R18_CFG))
    for dotted, value in changes.items():
        section, name = dotted.split("__")
        cfg[section][name] = value
    return cfg


@pytest.mark.parametrize(("changes", "message"), [
    ({"RESNET__DEPTH": 101}, r"RESNET\.DEPTH 101 vs the base's \(1, 1, 1, 1\) res blocks per stage \(R18\)"),
    ({"SLOWFAST__BETA_INV": 4}, r"SLOWFAST\.BETA_INV 4 vs the base's stem widths 64 \(slow\) / 8 \(fast\)"),
    ({"SLOWFAST__FUSION_KERNEL_SZ": 5}, r"SLOWFAST\.FUSION_KERNEL_SZ 5 vs the base's fast-to-slow fusion kernel 7"),
])
def test_cfg_contradictions_are_explained(changes, message, tmp_path, r18):
    path = save_pyslowfast(r18, tmp_path / "c.pyth", _with(**changes))
    with pytest.raises(CheckpointError, match=message) as info:
        sfsurgery.apply(recipe(path))
    assert info.value.message.startswith("c.pyth: its cfg contradicts the base: ")
    assert "create_slowfast: {model_depth:" in info.value.hint


def test_cfg_check_comes_before_any_shape_mismatch(tmp_path):
    # a real R101 16x8 layout (fusion kernel 5) against an R50 base: the cfg explains it
    psf = pyslowfast_state({k: torch.empty(s, device="meta")
                            for k, s in meta_shapes(hub.slowfast_16x8_r101_50_50).items()})
    cfg = {"RESNET": {"DEPTH": 101}, "SLOWFAST": {"ALPHA": 4, "BETA_INV": 8, "FUSION_KERNEL_SZ": 5}}
    with pytest.raises(CheckpointError) as info:
        convert({"model_state": psf, "cfg": yaml.safe_dump(cfg)}, "r101.pyth",
                model_shapes=meta_shapes(hub.slowfast_r50))
    assert "RESNET.DEPTH 101 vs the base's (3, 4, 6, 3) res blocks per stage (R50)" in info.value.message
    assert "SLOWFAST.FUSION_KERNEL_SZ 5 vs the base's fast-to-slow fusion kernel 7" in info.value.message
    assert "slowfast_fusion_conv_kernel_size: [5, 1, 1]" in info.value.hint
    # an R18 layout built with kernel 5 against the default R18 base: the cfg error, not the loader's
    path = tmp_path / "k5.pyth"
    save_pyslowfast(stock_model(model_depth=18, slowfast_fusion_conv_kernel_size=(5, 1, 1)), path,
                    _with(SLOWFAST__FUSION_KERNEL_SZ=5))
    with pytest.raises(CheckpointError, match="FUSION_KERNEL_SZ 5") as info:
        sfsurgery.apply(recipe(path))
    assert "shape mismatch" not in info.value.message


@pytest.mark.parametrize("cfg", [None, "", "{not: [valid yaml", "just a string", "RESNET: 3",
                                 {"RESNET": {"DEPTH": "fifty"}}, {"SLOWFAST": {"ALPHA": 4}}])
def test_missing_unparsable_or_agreeing_cfg_is_tolerated(cfg, r18):
    checkpoint = {"model_state": pyslowfast_state(r18.state_dict())}
    if cfg is not None:
        checkpoint["cfg"] = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg)
    out = convert(checkpoint, "x.pyth", model_shapes=meta_shapes(create_slowfast, model_depth=18),
                  model_input={"alpha": 4})
    assert _state_equal(out, r18.state_dict())


def test_alpha_is_checked_against_the_bases_fusion_stride(tmp_path, r18):
    path = save_pyslowfast(r18, tmp_path / "alpha8.pyth", _with(SLOWFAST__ALPHA=8))
    with pytest.raises(CheckpointError, match="SLOWFAST.ALPHA 8 vs the base's fast-to-slow fusion stride 4"):
        sfsurgery.apply(recipe(path))
    stride8 = recipe(path)
    stride8["base"]["create_slowfast"].update(slowfast_fusion_conv_stride=[8, 1, 1],
                                              head_pool_kernel_sizes=[[4, 7, 7], [32, 7, 7]])
    assert sfsurgery.validate(stride8).input.alpha == 8  # the stride sets the default clip's alpha


# --- (5) Caffe2 .pkl -----------------------------------------------------------------------------

def test_pkl_is_refused(tmp_path, r18):
    with pytest.raises(CheckpointError, match=r"SLOWFAST\.pkl: Caffe2 \.pkl checkpoints are not supported") as info:
        convert({"model_state": {}}, str(tmp_path / "SLOWFAST.pkl"), model_shapes={})
    assert "convert_from_caffe2=True" in info.value.hint
    with pytest.raises(CheckpointError, match="Caffe2 blobs"):
        convert({"blobs": {}}, "x.pyth", model_shapes={})
    # through sfsurgery, any .pkl is refused by name before it is opened; nothing runs
    torch_pkl = save_pyslowfast(r18, tmp_path / "torch.pkl", R18_CFG)
    caffe2 = tmp_path / "caffe2.pkl"
    caffe2.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros((2, 3), np.float32)}}, protocol=2))
    for path in (torch_pkl, caffe2):
        with pytest.raises(CheckpointError, match=rf"{path.stem}\.pkl: \.pkl files are Caffe2/Detectron pickles"):
            sfsurgery.apply(recipe(path))


# --- (6) the entry point is installed --------------------------------------------------------------

def test_registered_through_the_installed_distribution():
    spec = Registry().formats["pyslowfast"]
    assert spec.provider.as_dict() == {"plugin": "pyslowfast", "distribution": "sfsurgery-pyslowfast",
                                       "version": "0.1.0"}
    assert spec.convert is convert
