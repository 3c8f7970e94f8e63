"""``sfsurgery export``: a saved model as ONNX or a torch.export program, checked before it is kept.

The model is rebuilt with the same code as :func:`sfsurgery.load` (in float32, whatever the file
stores: bfloat16 convolutions are not valid ONNX), exported to a temporary file in the target
folder, then run (onnxruntime for ``.onnx``, ``torch.export.load(...).module()`` for ``.pt2``) on a
random clip shaped like the file's ``sfsurgery.input`` and compared with the eager model. Only a
program whose outputs agree within :data:`TOLERANCE` of the largest ``|eager output|`` is renamed
into place; without ``force`` an existing file is never replaced.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from .errors import ExportError, ExportFailedError, OutputError
from .file.dtypes import DTYPE_CODES
from .file.reader import read_file_header
from .file.rebuild import load_model
from .file.writer import _create_temp, check_output, publish_synced
from .plugins import Registry
from .trace import example_inputs, tensors_of

__all__ = ["FORMATS", "TOLERANCE", "ExportError", "ExportFailedError", "export", "verify_outputs"]

#: Output suffix -> format.
FORMATS = {".onnx": "onnx", ".pt2": "pt2"}
#: The largest |exported - eager| may be at most this fraction of the largest |eager output|.
TOLERANCE = 1e-4
EXTRA_HINT = "pip install 'sfsurgery[export]'"
HALF_NOTE = ("the file stores {dtype}; exported in float32 (bfloat16 convolutions are not valid ONNX); "
             "cast the inputs and weights in your runtime if you need half precision")
_CODE_NAMES = {code: str(dtype).removeprefix("torch.") for dtype, code in DTYPE_CODES.items()}


class _Pathways(nn.Module):
    """``model([slow, fast])`` with one named argument per pathway: what the exported program takes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> Any:
        return _flat(self.model([slow, fast]))


class _Clip(nn.Module):
    """A one-pathway model (its recorded input has ``alpha: null``): one ``clip`` argument."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> Any:
        return _flat(self.model(clip))


def _flat(output: Any) -> Any:
    return output if isinstance(output, torch.Tensor) else tuple(tensors_of(output))


def export(file: str | Path, out: str | Path, *, batch: int = 1, dynamic_batch: bool = False,
           force: bool = False) -> dict[str, Any]:
    """Export the model in ``file`` to ``out`` (``.onnx`` or ``.pt2``) and check it against the eager model.

    Args:
        file: an sfsurgery ``.safetensors`` file.
        out: ``.onnx`` (torch's dynamo ONNX exporter; needs ``sfsurgery[export]``) or ``.pt2``
            (``torch.export.save``). Written atomically.
        batch: the batch size traced (and checked).
        dynamic_batch: trace at a batch of at least 2 with a dynamic batch dimension, and check at
            the traced batch and one more.
        force: replace an existing ``out``.

    Returns:
        What was written and measured: ``format``, ``path``, ``inputs`` / ``outputs`` (name -> shape,
        ``"batch"`` where the dimension is dynamic), ``batch_checked``, ``max_abs_error``,
        ``max_rel_error`` (relative to the largest |eager output|), ``tolerance``, ``notes``.

    Raises:
        ExportError: unknown suffix, bad batch, the export extra missing (exit 2, before any work).
        OutputExistsError: ``out`` exists without ``force``. FileFormatError: ``file`` does not
            load (as with :func:`sfsurgery.load`). ExportFailedError: the export fails or does not
            agree with the eager model (exit 1; nothing is left on disk).
    """
    suffix = Path(out).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise ExportError(f"{Path(out).name}: cannot export to {suffix or 'a file without a suffix'}",
                          hint="name the output .onnx (ONNX: onnxruntime and other runtimes) or .pt2 "
                               "(torch.export: torch.export.load)")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch must be a positive integer, not {batch!r}", hint="e.g. --batch 1")
    onnx_runtime = _onnx_runtime() if fmt == "onnx" else None  # before any work
    target = check_output(out, force=force)
    header = read_file_header(file)
    model = load_model(header, "cpu", torch.float32, Registry()).eval()  # what sfsurgery.load builds
    spec = header.recorded.input
    names = ["slow", "fast"] if spec.alpha is not None else ["clip"]
    program = _Pathways(model) if spec.alpha is not None else _Clip(model)
    traced = max(batch, 2) if dynamic_batch else batch  # torch.export specialises a batch of 1
    checked = [traced, traced + 1] if dynamic_batch else [traced]
    clips = {n: _clip(spec, n, seed=i) for i, n in enumerate(checked)}
    with torch.no_grad():
        eager = {n: [t.numpy() for t in tensors_of(program(*clips[n]))] for n in checked}
    outputs = ["output"] if len(eager[traced]) == 1 else [f"output_{i}" for i in range(len(eager[traced]))]
    fd, tmp = _create_temp(target)
    os.close(fd)
    try:
        _write(fmt, program, clips[traced], names, outputs, dynamic_batch, tmp)
        errors = {"max_abs_error": 0.0, "max_rel_error": 0.0}
        for n in checked:
            got = _run(fmt, tmp, names, clips[n], onnx_runtime)
            measured = verify_outputs(tmp, got, eager[n], what=f"at batch {n}")
            errors = {k: max(errors[k], measured[k]) for k in errors}
        size = tmp.stat().st_size
        _publish_synced(tmp, target, force)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    stored = sorted({_CODE_NAMES.get(e.dtype, e.dtype) for e in header.tensors.values()} & {"float16", "bfloat16"})
    notes = [HALF_NOTE.format(dtype=" and ".join(stored))] if stored else []
    return {"format": fmt, "path": str(target), "file": str(file), "bytes": size, "dtype": "float32",
            "inputs": {name: _shape(t.shape, dynamic_batch) for name, t in zip(names, clips[traced])},
            "outputs": {name: _shape(a.shape, dynamic_batch) for name, a in zip(outputs, eager[traced])},
            "batch": traced, "dynamic_batch": dynamic_batch, "batch_checked": checked, **errors,
            "tolerance": TOLERANCE, "notes": notes}


def verify_outputs(tmp: Path, got: Sequence[Any], want: Sequence[Any], *, tolerance: float = TOLERANCE,
                   what: str = "") -> dict[str, float]:
    """The largest absolute and relative (to the largest |want|) error of ``got``; refuses a mismatch.

    On a mismatch (different count, shape, or an error above ``tolerance``, NaN included) the
    temporary file ``tmp`` is removed and :class:`ExportFailedError` raised.
    """
    got, want = [np.asarray(g, dtype=np.float64) for g in got], [np.asarray(w, dtype=np.float64) for w in want]
    if [g.shape for g in got] != [w.shape for w in want]:
        _refuse(tmp, f"the exported program's outputs are shaped {[list(g.shape) for g in got]}, the eager "
                     f"model's {[list(w.shape) for w in want]}{' ' + what if what else ''}")
    scale = max((float(np.max(np.abs(w))) for w in want if w.size), default=0.0)
    abs_error = max((float(np.max(np.abs(g - w))) for g, w in zip(got, want) if w.size), default=0.0)
    rel_error = abs_error / scale if scale > 0 else (0.0 if abs_error == 0 else float("inf"))
    if not rel_error <= tolerance:  # NaN fails too
        _refuse(tmp, f"the exported program's output differs from the eager model's{' ' + what if what else ''}: "
                     f"max abs error {abs_error:.3g}, {rel_error:.3g} of the largest |output| {scale:.3g} "
                     f"(tolerance {tolerance:g})")
    return {"max_abs_error": abs_error, "max_rel_error": rel_error}


def _refuse(tmp: Path, detail: str) -> NoReturn:
    with contextlib.suppress(FileNotFoundError):
        Path(tmp).unlink()
    raise ExportFailedError(detail, hint="nothing was written; the exporter or runtime computes this model "
                                         "differently: try the other format, or report it with --debug")


def _publish_synced(tmp: Path, target: Path, force: bool) -> None:
    """fsync the checked file, then rename it into place (without ``force``, never over a file)."""
    try:
        publish_synced(tmp, target, force)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}",
                          hint="check the free space and permissions of the output folder") from None


def _onnx_runtime() -> Any:
    """onnxruntime, after checking that the exporter's own dependencies import too."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ExportError(f"exporting to ONNX needs {name}, which does not import ({exc})",
                              hint=EXTRA_HINT) from None
    return module


def _clip(spec: Any, batch: int, seed: int) -> list[torch.Tensor]:
    """Random inputs shaped like the file's recorded input, one tensor per name."""
    inputs = example_inputs(spec.model_copy(update={"batch": batch}), "cpu", torch.Generator().manual_seed(seed))
    return tensors_of(inputs)


def _shape(shape: Sequence[int], dynamic_batch: bool) -> list[int | str]:
    return ["batch" if dynamic_batch else shape[0], *shape[1:]]


def _write(fmt: str, program: nn.Module, args: list[torch.Tensor], names: list[str], outputs: list[str],
           dynamic_batch: bool, tmp: Path) -> None:
    dynamic = {n: {0: torch.export.Dim("batch", min=1, max=65536)} for n in names} if dynamic_batch else None
    try:
        with warnings.catch_warnings():  # the exporters' own warnings are about their internals
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                torch.onnx.export(program, tuple(args), str(tmp), dynamo=True, input_names=names,
                                  output_names=outputs, dynamic_shapes=dynamic, external_data=False, verbose=False)
            else:
                exported = torch.export.export(program, tuple(args), dynamic_shapes=dynamic)
                with open(tmp, "wb+") as f:  # a file object: torch.export.save wants a .pt2 name otherwise
                    torch.export.save(exported, f)
    except OSError as exc:
        raise OutputError(f"cannot write {tmp.parent}: {exc.strerror or exc}",
                           hint="check the free space and permissions of the output folder") from None
    except Exception as exc:
        raise ExportFailedError(f"the {fmt} exporter failed: {type(exc).__name__}: {str(exc).strip()[:300]}",
                                hint="nothing was written; sfsurgery --debug export ... shows the exporter's "
                                     "traceback (a plugin's module may not be exportable)") from exc


def _run(fmt: str, tmp: Path, names: list[str], args: list[torch.Tensor], onnx_runtime: Any) -> list[np.ndarray]:
    """The exported program's outputs on ``args``."""
    try:
        if fmt == "onnx":
            options = onnx_runtime.SessionOptions()
            options.log_severity_level = 3  # errors only
            session = onnx_runtime.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
            return session.run(None, {n: a.numpy() for n, a in zip(names, args)})
        with open(tmp, "rb") as f, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.export.load(f).module()
            return [t.numpy() for t in tensors_of(module(*args))]
    except Exception as exc:
        _refuse(tmp, f"the exported {fmt} program does not run at batch {len(args[0])}: {type(exc).__name__}: "
                     f"{str(exc).strip()[:300]}")
