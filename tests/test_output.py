"""The saved file: rebuild from the file alone, dtypes, inspect, and every bad file."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from conftest import clip, r18_recipe, save_zoo_checkpoint, stock_model
from safetensors.torch import save_file

import sfsurgery
from sfsurgery.cli import main
from sfsurgery.errors import FileFormatError
from sfsurgery.file.header import seal

OPS = [{"op": "swap_pool"}, {"op": "replace_head", "num_classes": 6, "hidden": [32]}]
SMALL = {"size": [96, 96], "frames": 16}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A file applied from a checkpoint that is deleted afterwards, plus the in-memory result."""
    folder = tmp_path_factory.mktemp("saved")
    ckpt = save_zoo_checkpoint(stock_model(model_depth=18), folder / "r18.pyth")
    result = sfsurgery.apply(r18_recipe(ckpt, OPS, input=SMALL))
    path = result.save(folder / "model.safetensors")
    ckpt.unlink()  # load() must not need it
    return path, result


def test_load_in_a_fresh_process_without_the_checkpoint(saved, tmp_path):
    path, result = saved
    x = clip((2, 3, 16, 96, 96), seed=3)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import torch, sfsurgery
        model = sfsurgery.load({str(path)!r})
        x = torch.load({str(tmp_path / "x.pt")!r})
        with torch.no_grad():
            y = model(x)
        torch.save({{"state": model.state_dict(), "y": y, "training": model.training}}, {str(tmp_path / "y.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    out = torch.load(tmp_path / "y.pt")
    from safetensors.torch import load_file

    on_disk = load_file(path)
    assert out["state"].keys() == on_disk.keys()
    assert all(torch.equal(out["state"][k], v) for k, v in on_disk.items())
    with torch.no_grad():
        expected = result.model(x)
    torch.testing.assert_close(out["y"], expected, rtol=0, atol=0)
    assert out["training"] is False


def test_loaded_model_can_be_called_twice_with_one_list(saved):
    model = sfsurgery.load(saved[0])
    x = clip((1, 3, 16, 96, 96))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_files(saved, tmp_path, dtype):
    path, result = saved
    again = save_zoo_checkpoint(stock_model(model_depth=18), tmp_path / "r18.pyth")  # the same weights
    half = sfsurgery.load_recipe(result.recipe, {"save.dtype": dtype, "base.checkpoint": str(again)})
    half_path = sfsurgery.apply(half).save(tmp_path / f"{dtype}.safetensors")
    assert abs(half_path.stat().st_size / path.stat().st_size - 0.5) < 0.01
    from safetensors.torch import load_file

    tensors = load_file(half_path)
    assert tensors["blocks.0.multipathway_blocks.0.norm.num_batches_tracked"].dtype == torch.int64
    assert tensors["blocks.6.proj.weight"].dtype == getattr(torch, dtype)
    full = load_file(path)
    torch.testing.assert_close(tensors["blocks.6.proj.weight"].float(), full["blocks.6.proj.weight"],
                               rtol=1e-2, atol=1e-4)  # one half-precision rounding
    # the half file's model, run in float32, stays within the documented tolerance of the float32 one
    x = clip((1, 3, 16, 96, 96))
    with torch.no_grad():
        reference = result.model(x)
        got = sfsurgery.load(half_path, dtype=torch.float32)(x)
    assert (got - reference).abs().max() <= 0.02 * reference.abs().max() + 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, "bfloat16"])
def test_load_casts_and_stays_close(saved, dtype):
    path, result = saved
    model = sfsurgery.load(path, dtype=dtype)
    target = dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype)
    state = model.state_dict()
    assert state["blocks.6.proj.weight"].dtype == target
    assert state["blocks.1.multipathway_blocks.0.res_blocks.0.branch2.norm_a.num_batches_tracked"].dtype == torch.int64
    x = clip((1, 3, 16, 96, 96))
    with torch.no_grad():
        reference = result.model(x)
        got = model([t.to(target) for t in x]).float()
    # documented tolerance: half-precision weights and activations through 18 layers
    assert (got - reference).abs().max() <= 0.05 * reference.abs().max() + 1e-3


def test_inspect_summarises_the_file(saved):
    path, result = saved
    run = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert run.exit_code == 0, run.output
    info = json.loads(run.stdout)
    assert info["ops"] == ["swap_pool", "replace_head"]
    assert info["output_shape"] == [1, 6] and info["input"]["size"] == [96, 96]
    assert info["params"]["total"] == sum(p.numel() for p in result.model.parameters())
    assert info["source"]["file"] == "r18.pyth" and len(info["source"]["sha256"]) == 64
    assert info["lineage"][1]["op"] == "replace_head"
    assert (info["lineage"][1]["added"], info["lineage"][1]["removed"]) == (4, 2)  # hidden + proj; old proj
    state = result.model.state_dict()
    ints = sum(1 for t in state.values() if t.dtype == torch.int64)
    assert info["data_verified"] is True and info["dtypes"] == {"F32": len(state) - ints, "I64": ints}
    assert info["values"] == sum(t.numel() for t in state.values())
    text = CliRunner().invoke(main, ["inspect", str(path)])
    assert "swap_pool -> replace_head" in text.stdout and "sha256 verified" in text.stdout


def _bad_files(saved, folder):
    path, _ = saved
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    files = {}
    files["truncated"] = data[: len(data) - 1000]
    corrupted = bytearray(data)
    corrupted[-5] ^= 0xFF
    files["corrupted"] = bytes(corrupted)
    files["garbage header"] = data[:8] + b"[" + data[9:]
    header = json.loads(data[8:8 + header_len])

    def with_metadata(**changes: str) -> bytes:
        edited = json.dumps({**header, "__metadata__": {**header["__metadata__"], **changes}}).encode()
        edited += b" " * (-len(edited) % 8)
        # sealed again, so the checks behind the header digest are what refuses these
        return seal(struct.pack("<Q", len(edited)) + edited) + data[8 + header_len:]

    recipe = json.loads(header["__metadata__"]["sfsurgery.recipe"])
    files["newer format"] = with_metadata(**{"sfsurgery.format": "9"})
    files["missing plugin"] = with_metadata(**{"sfsurgery.recipe": json.dumps(
        {**recipe, "ops": [{**recipe["ops"][0], "op": "tsm_shift"}, recipe["ops"][1]]})})
    files["damaged format"] = with_metadata(**{"sfsurgery.format": "one"})
    files["damaged recipe"] = with_metadata(**{"sfsurgery.recipe": '{"base": '})
    files["recipe not an object"] = with_metadata(**{"sfsurgery.recipe": "[1, 2]"})
    files["invalid recipe"] = with_metadata(**{"sfsurgery.recipe": json.dumps({**recipe, "seed": -1})})
    out = {}
    for name, blob in files.items():
        out[name] = folder / (name.replace(" ", "_") + ".safetensors")
        out[name].write_bytes(blob)
    save_file({"w": torch.zeros(2)}, folder / "plain.safetensors", metadata={"format": "pt"})
    out["no metadata"] = folder / "plain.safetensors"
    return out


class _named:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            raise AssertionError(f"{self.name}: load did not fail")
        return False


MESSAGES = {"truncated": "not a readable safetensors file", "corrupted": "is corrupted",
            "garbage header": "not a readable safetensors file", "newer format": "file format 9",
            "missing plugin": "needs op 'tsm_shift'", "no metadata": "has no sfsurgery metadata",
            "damaged format": "damaged metadata", "damaged recipe": "sfsurgery.recipe is not valid JSON",
            "recipe not an object": "sfsurgery.recipe is not a JSON dict",
            "invalid recipe": "recorded recipe is not valid here: seed"}


def test_every_bad_file_is_refused_by_load_and_inspect(saved, tmp_path):
    for name, path in _bad_files(saved, tmp_path).items():
        with pytest.raises(FileFormatError, match=MESSAGES[name]), _named(name):
            sfsurgery.load(path)
        run = CliRunner().invoke(main, ["inspect", str(path)])
        assert run.exit_code == 2, (name, run.output)
        assert run.stderr.startswith("error: ") and MESSAGES[name] in run.stderr and "Traceback" not in run.output
