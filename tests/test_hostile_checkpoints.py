"""Hostile or odd checkpoints are refused with a CheckpointError naming the file, before any surgery."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import r18_recipe

import sfsurgery
from sfsurgery.checkpoints import read_checkpoint
from sfsurgery.cli import main
from sfsurgery.errors import CheckpointError

# pickles the weights-only unpickler chokes on with a plain Python error, not an UnpicklingError
BAD_PICKLES = {
    "reduce_on_empty_stack": b"\x80\x02R.",  # IndexError
    "get_of_unknown_memo": b"\x80\x02h\x05.",  # KeyError
    "dict_as_dict_key": b"\x80\x02}}}K\x01s.",  # TypeError
    "numpy_dtype_zzz": b"\x80\x02cnumpy\ndtype\nX\x03\x00\x00\x00zzz\x85R.",  # allow-listed global, bad argument
    "unsupported_opcode": b"\x80\x02(l.",  # UnpicklingError carrying torch's "weights_only=False" advice
}


def torch_zip(data_pkl: bytes) -> bytes:
    """A real torch zip checkpoint (archive/data.pkl, archive/version, ...) with data.pkl replaced."""
    buffer = io.BytesIO()
    torch.save({"model_state": {"w": torch.zeros(2)}}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            archive.writestr(info, data_pkl if info.filename.endswith("/data.pkl") else source.read(info))
    assert "archive/data.pkl" in source.namelist() and "archive/version" in source.namelist()
    return out.getvalue()


def recorded_op():
    """A plugin whose op records every run on real (non-meta) tensors: the surgery proper."""
    runs = []

    class Recorder:
        @sfsurgery.hookimpl
        def register_ops(self, register):
            register("record", self.record)

        @staticmethod
        def record(ctx) -> None:
            if not next(ctx.model.parameters()).is_meta:
                runs.append(ctx.index)

    return Recorder(), runs


@pytest.mark.parametrize("container", ["pickle", "torch_zip"])
@pytest.mark.parametrize("case", sorted(BAD_PICKLES))
def test_a_pickle_the_unpickler_chokes_on_is_a_checkpoint_error(tmp_path, case, container):
    raw = BAD_PICKLES[case]
    path = tmp_path / f"{case}.pyth"
    path.write_bytes(raw if container == "pickle" else torch_zip(raw))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    error = info.value
    assert path.name in error.message and error.hint
    assert "weights_only" not in error.message + error.hint  # torch's advice is never passed on
    assert "\n" not in error.message


def test_a_refused_checkpoint_stops_the_cli_with_one_line(tmp_path):
    (tmp_path / "bad.pyth").write_bytes(torch_zip(BAD_PICKLES["get_of_unknown_memo"]))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"base": {"create_slowfast": {"model_depth": 18}, "checkpoint": "bad.pyth"}}))
    result = CliRunner().invoke(main, ["apply", str(recipe), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: bad.pyth") and "Traceback" not in result.output
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["error", "hint"]


class IntKeysFormat:
    """A plugin format that returns what no state dict is."""

    @sfsurgery.hookimpl
    def register_checkpoint_formats(self, register):
        register("int_keys", lambda checkpoint, path: {1: torch.zeros(1), "module.x": torch.zeros(1)})
        register("not_tensors", lambda checkpoint, path: {"blocks.0.x": [1, 2]})
        register("not_a_dict", lambda checkpoint, path: [torch.zeros(1)])


def test_integer_keys_and_non_tensors_are_refused(tmp_path, r18):
    state = r18.state_dict()
    torch.save({**state, 1: torch.zeros(2)}, tmp_path / "bare.pt")
    torch.save({"model_state": {**state, 7: torch.zeros(2)}}, tmp_path / "zoo.pt")
    for name in ("bare.pt", "zoo.pt"):
        with pytest.raises(CheckpointError, match="keys that are not parameter names") as info:
            sfsurgery.apply(r18_recipe(tmp_path / name))
        assert name in info.value.message and info.value.hint
    for fmt in ("int_keys", "not_tensors", "not_a_dict"):
        for load in ("strict", "matching"):
            recipe = r18_recipe(tmp_path / "bare.pt")
            recipe["base"].update(checkpoint_format=fmt, load=load)
            with pytest.raises(CheckpointError, match=f"format {fmt} returned") as info:
                sfsurgery.apply(recipe, plugins=[IntKeysFormat()])
            assert "bare.pt" in info.value.message and "IntKeysFormat" in info.value.hint


WEIGHT = "blocks.6.proj.weight"
COUNTER = "blocks.1.multipathway_blocks.0.res_blocks.0.branch2.norm_a.num_batches_tracked"
# name -> (key, tensor under that key, what the message says about it); built lazily (torch warns)
ODD = {
    "meta": (WEIGHT, lambda: torch.empty(400, 2304, device="meta"), "meta"),
    "sparse_coo": (WEIGHT, lambda: torch.randn(400, 2304).to_sparse(), "sparse_coo"),
    "sparse_csr": (WEIGHT, lambda: torch.randn(400, 2304).to_sparse_csr(), "sparse_csr"),
    "quantized": (WEIGHT, lambda: torch.quantize_per_tensor(torch.randn(400, 2304), 0.1, 0, torch.qint8),
                  "quantized"),
    "integer_weight": (WEIGHT, lambda: torch.zeros(400, 2304, dtype=torch.int32), "torch.int32"),
    "bool_weight": (WEIGHT, lambda: torch.zeros(400, 2304, dtype=torch.bool), "torch.bool"),
    "complex_weight": (WEIGHT, lambda: torch.zeros(400, 2304, dtype=torch.complex64), "torch.complex64"),
    "float_counter": (COUNTER, lambda: torch.tensor(1.5), "torch.float32"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about sparse and quantized tensors
@pytest.mark.parametrize("case", sorted(ODD))
def test_tensors_that_cannot_be_loaded_are_refused_before_the_surgery(tmp_path, r18, case):
    key, make, fragment = ODD[case]
    state = r18.state_dict()
    assert key in state
    torch.save({"model_state": {**state, key: make()}}, tmp_path / "odd.pyth")
    plugin, runs = recorded_op()
    for load in ("strict", "matching"):
        recipe = r18_recipe(tmp_path / "odd.pyth", [{"op": "record"}])
        recipe["base"]["load"] = load
        with pytest.raises(CheckpointError) as info:
            sfsurgery.apply(recipe, plugins=[plugin])
        assert "odd.pyth" in info.value.message and key in info.value.message and fragment in info.value.message
        assert info.value.hint
    assert runs == []


def test_dry_run_refuses_a_meta_checkpoint(tmp_path, r18):
    state = {**r18.state_dict(), "blocks.6.proj.bias": torch.empty(400, device="meta")}
    torch.save({"model_state": state}, tmp_path / "meta.pyth")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"base": {"create_slowfast": {"model_depth": 18}, "checkpoint": "meta.pyth"}}))
    result = CliRunner().invoke(main, ["apply", str(recipe), "--dry-run"])
    assert result.exit_code == 2 and "blocks.6.proj.bias" in result.stderr and "meta" in result.stderr


def test_castable_dtypes_still_load(tmp_path, r18):
    # half-precision weights and int32 counters are fine: cast to what the model holds
    state = {k: v.half() if v.is_floating_point() else v.int() for k, v in r18.state_dict().items()}
    torch.save({"model_state": state}, tmp_path / "half.pyth")
    got = sfsurgery.apply(r18_recipe(tmp_path / "half.pyth")).model.state_dict()
    assert all(got[k].dtype == v.dtype for k, v in r18.state_dict().items())


def test_shared_storage_in_a_checkpoint_is_untied_on_load(tmp_path, r18):
    # a checkpoint that stores two names as one tensor (torch.save keeps the sharing): the base has two
    state = r18.state_dict()
    first, second = [k for k in state if k.endswith("norm.weight") and state[k].shape == (64,)][:2]
    state[first] = state[second] = torch.randn(64)
    torch.save({"model_state": state}, tmp_path / "shared.pyth")
    result = sfsurgery.apply(r18_recipe(tmp_path / "shared.pyth"))
    got = result.model.state_dict()
    assert torch.equal(got[first], got[second]) and got[first].data_ptr() != got[second].data_ptr()
