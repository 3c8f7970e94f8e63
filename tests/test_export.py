"""``sfsurgery export``: ONNX and torch.export programs, checked against the eager model and kept atomically.

Every check here recomputes the eager output itself (``sfsurgery.load``) and runs the exported
file itself (onnxruntime, ``torch.export.load``) on clips the library never saw. Two exports are
shared by the whole module (the dynamo ONNX exporter takes several seconds on R18).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from click.testing import CliRunner

import sfsurgery
import sfsurgery.plugins
from sfsurgery.cli import main
from sfsurgery.errors import FileFormatError, OutputExistsError
from sfsurgery.export import EXTRA_HINT, TOLERANCE, ExportError, ExportFailedError, export, verify_outputs
from sfsurgery.testing import randomize_batchnorm

BASE = {"create_slowfast": {"model_depth": 18, "head_pool_kernel_sizes": [[2, 2, 2], [8, 2, 2]]}}
INPUT = {"frames": 8, "size": [64, 64]}
HEAD = [{"op": "replace_head", "num_classes": 5}]
SWAP_POOL = [{"op": "swap_pool"}, {"op": "replace_head", "num_classes": 5}]
pytestmark = pytest.mark.filterwarnings("ignore:backbone weights are random")


def _save(path, ops, **extra):
    result = sfsurgery.apply({"name": "small", "base": BASE, "input": INPUT, "ops": ops, **extra})
    randomize_batchnorm(result.model)  # pytorchvideo zeroes each residual branch's last BN: hide nothing
    return result.save(path)


def _clips(batch: int, seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 2, 64, 64, generator=g), torch.rand(batch, 3, 8, 64, 64, generator=g)


def _eager(file, slow, fast) -> np.ndarray:
    model = sfsurgery.load(file, dtype=torch.float32)
    with torch.no_grad():
        return model([slow, fast]).numpy()


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def head_file(folder):
    return _save(folder / "head.safetensors", HEAD)


@pytest.fixture(scope="module")
def pool_bf16_file(folder):
    """Adaptive pooling (swap_pool), stored in bfloat16."""
    return _save(folder / "pool_bf16.safetensors", SWAP_POOL, save={"dtype": "bfloat16"})


@pytest.fixture(scope="module")
def onnx_export(folder, pool_bf16_file):
    """The Python API: ONNX with a dynamic batch (traced at 2, checked at 2 and 3)."""
    out = folder / "pool.onnx"
    return out, export(pool_bf16_file, out, dynamic_batch=True)


@pytest.fixture(scope="module")
def pt2_export(folder, head_file):
    """The command line: .pt2 at batch 1."""
    out = folder / "head.pt2"
    run = CliRunner().invoke(main, ["export", str(head_file), "-o", str(out)])
    return out, run


def test_onnx_matches_the_eager_model_at_a_batch_other_than_the_traced_one(onnx_export, pool_bf16_file):
    out, report = onnx_export
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["slow", "fast"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    assert session.get_inputs()[1].shape == ["batch", 3, 8, 64, 64]
    for batch in (3, 1):
        slow, fast = _clips(batch)
        (got,) = session.run(None, {"slow": slow.numpy(), "fast": fast.numpy()})
        _assert_close(got, _eager(pool_bf16_file, slow, fast))
    assert report["batch"] == 2 and report["batch_checked"] == [2, 3] and report["dynamic_batch"] is True


def test_onnx_report_says_what_was_written_and_measured(onnx_export, folder):
    out, report = onnx_export
    assert report["format"] == "onnx" and report["path"] == str(out) and report["bytes"] == out.stat().st_size
    assert report["inputs"] == {"slow": ["batch", 3, 2, 64, 64], "fast": ["batch", 3, 8, 64, 64]}
    assert report["outputs"] == {"output": ["batch", 5]}
    assert 0 <= report["max_rel_error"] <= report["tolerance"] == TOLERANCE
    assert report["max_abs_error"] >= 0
    json.dumps(report)  # what --json prints
    assert not [p for p in os.listdir(folder) if p.startswith(".")]  # no temp file left behind


def test_a_bfloat16_file_exports_in_float32(onnx_export):
    out, report = onnx_export
    model = onnx.load(str(out))
    allowed = {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT32}  # no BFLOAT16/FLOAT16
    assert {t.data_type for t in model.graph.initializer} <= allowed
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in model.graph.input)
    assert report["dtype"] == "float32"
    assert any("bfloat16" in note and "not valid ONNX" in note for note in report["notes"])


def test_pt2_reloads_and_equals_the_eager_model(pt2_export, head_file):
    out, run = pt2_export
    assert run.exit_code == 0, run.output
    slow, fast = _clips(1, seed=7)
    with torch.no_grad():
        got = torch.export.load(str(out)).module()(slow, fast).numpy()
    _assert_close(got, _eager(head_file, slow, fast))


def test_cli_prints_the_export_and_the_error_it_measured(pt2_export):
    out, run = pt2_export
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"exported  {out}  (pt2, float32, ")
    assert lines[1] == "inputs    slow (1, 3, 2, 64, 64), fast (1, 3, 8, 64, 64)"
    assert lines[2] == "outputs   output (1, 5)"
    assert lines[3].startswith("checked   batch 1 against sfsurgery.load: max abs error ")
    assert "tolerance 0.0001 of max |output|" in lines[3]


def test_an_existing_output_is_kept_without_force(pt2_export, head_file):
    out, _ = pt2_export
    before = out.read_bytes()
    run = CliRunner().invoke(main, ["export", str(head_file), "-o", str(out)])
    assert run.exit_code == 2
    assert run.stderr.splitlines() == [f"error: {out} exists", "hint: pass --force to replace it"]
    assert out.read_bytes() == before
    with pytest.raises(OutputExistsError):
        export(head_file, out)


@pytest.mark.parametrize("name", ["model.tflite", "model.safetensors", "model"])
def test_an_unknown_suffix_is_refused_before_any_work(tmp_path, name):
    run = CliRunner().invoke(main, ["export", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / name)])
    assert run.exit_code == 2
    error, hint = run.stderr.splitlines()
    assert error.startswith(f"error: {name}: cannot export to ") and hint.startswith("hint: name the output .onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_mismatch_is_refused_and_the_temp_file_removed(tmp_path):
    tmp = tmp_path / ".partial.sfs-tmp"
    tmp.write_bytes(b"exported")
    want = [np.array([[1.0, -2.0, 4.0]])]
    assert verify_outputs(tmp, [want[0] + 1e-5], want)["max_rel_error"] == pytest.approx(2.5e-6)
    assert tmp.exists()
    for got in ([want[0] + 1e-3], [np.array([[1.0, -2.0, np.nan]])], [want[0][:, :2]], []):
        with pytest.raises(ExportFailedError) as caught:
            verify_outputs(tmp, got, want)
        assert caught.value.exit_code == 1 and caught.value.hint.startswith("nothing was written")
        assert not tmp.exists()
        tmp.write_bytes(b"exported")


def test_a_file_whose_op_is_not_installed_gets_the_error_load_gives(tmp_path):
    @sfsurgery.register_op("export_test_noop")
    def noop(ctx, *, n: int = 1) -> None:
        """Do nothing."""

    try:
        path = sfsurgery.apply({"base": BASE, "input": INPUT, "ops": [*HEAD, {"op": "export_test_noop"}]}) \
            .save(tmp_path / "plugin.safetensors")
    finally:
        sfsurgery.plugins.unregister_research_ops()
    with pytest.raises(FileFormatError) as loading:
        sfsurgery.load(path)
    run = CliRunner().invoke(main, ["export", str(path), "-o", str(tmp_path / "plugin.onnx")])
    assert run.exit_code == 2
    assert run.stderr.splitlines() == [f"error: {loading.value.message}", f"hint: {loading.value.hint}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugin.safetensors"]


def test_onnx_without_the_extra_says_what_to_install(monkeypatch, head_file, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # "not installed": the import raises ImportError
    with pytest.raises(ExportError) as caught:
        export(head_file, tmp_path / "head.onnx")
    assert caught.value.exit_code == 2 and caught.value.hint == EXTRA_HINT
    assert list(tmp_path.iterdir()) == []


def test_sfsurgery_export_is_the_function_though_its_module_was_imported():
    import sfsurgery.export  # would set sfsurgery.export to the module, unless the package keeps the function

    assert sfsurgery.export is export
