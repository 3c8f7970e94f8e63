"""Checkpoint files: reading them safely, and the built-in formats (pytorchvideo's model zoo, safetensors).

Converters receive what :func:`read_checkpoint` read safely and return a flat state dict in
the base's key names. torch and numpy are imported only when a file is read (listing plugins
must stay fast).
"""

from __future__ import annotations

import errno
import pickle
import re
import shlex
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from ..registrars import FormatRegistrar

STATE_DICT_KEYS = ("model_state", "state_dict", "model")
_LIST_FIRST = 5


def _numpy_safe_globals() -> list:
    import numpy as np
    from numpy._core.multiarray import scalar

    dtypes = {type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64,
                                          np.uint8, np.float16, np.float32, np.float64)}
    # numpy 1.x pickles name the same function numpy.core.multiarray.scalar
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def read_checkpoint(path: Path) -> Any:
    """Load a weights file without running code; any failure is a :class:`CheckpointError` naming it.

    Args:
        path: a ``.safetensors`` file or a torch file (``.pyth``, ``.pth``, ``.pt``, ...).

    Returns:
        The safetensors tensors as a dict, or whatever the weights-only unpickler built.
    """
    import torch

    _check_readable(path)
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        raise CheckpointError(f"{path.name}: .pkl files are Caffe2/Detectron pickles, which sfsurgery does not "
                              "load (unpickling them could run code)",
                              hint="convert it once in PySlowFast and save a .pyth checkpoint")
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:
            raise CheckpointError(f"{path.name}: not a readable safetensors file ({_reason(exc)})",
                                  hint=_DAMAGED_HINT) from None
    with torch.serialization.safe_globals(_numpy_safe_globals()):
        try:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                # legacy (pre-zip, torch < 1.6) files cannot be memory-mapped
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            if not found:
                raise CheckpointError(f"{path.name}: not a readable torch checkpoint ({_reason(exc)})",
                                      hint=_DAMAGED_HINT) from None
            raise CheckpointError(
                f"{path.name} refers to {found.group(1)}, which a weights-only load refuses because "
                "unpickling it could run code; nothing was executed",
                hint=f"if you trust the file, convert it once: {_conversion_command(path)}",
            ) from None
        except Exception as exc:  # a hostile pickle can break the unpickler in any Python way
            raise CheckpointError(f"{path.name}: not a readable torch checkpoint ({_reason(exc)})",
                                  hint=_DAMAGED_HINT) from None


_DAMAGED_HINT = "the file is damaged or not a checkpoint; save the weights again (torch.save of a state dict)"


def _check_readable(path: Path) -> None:
    """Refuse a path that cannot name a readable file, saying why."""
    hint = "base.checkpoint is relative to the recipe's folder"
    if "\0" in str(path):
        raise CheckpointError(f"checkpoint path {str(path)!r} contains a NUL byte", hint=hint)
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CheckpointError(f"checkpoint path {path} is a symlink loop", hint=hint) from None
        missing = exc.errno in (errno.ENOENT, errno.ENOTDIR)
        raise CheckpointError(f"checkpoint not found: {path}" if missing else
                              f"cannot read checkpoint {path}: {exc.strerror}", hint=hint) from None
    if not regular:
        raise CheckpointError(f"checkpoint {path} is not a file", hint=hint)


def _reason(exc: BaseException) -> str:
    """One line about why a load failed, without torch's advice to load with ``weights_only=False``."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if "weights_only" in line:
        line = "refused by the weights-only unpickler"
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


def _conversion_command(path: Path) -> str:
    """A shell-safe one-liner that turns a trusted pickle checkpoint into safetensors."""
    code = ("import torch; from safetensors.torch import save_file; "
            f"save_file(torch.load({path.name!r}, weights_only=False)['model_state'], 'weights.safetensors')")
    return f"python -c {shlex.quote(code)}"


def check_converted(state: Any, where: str, converter: str, provider: object) -> None:
    """What a converter returned (plugin formats included) must be ``{name: tensor}``; else stop here."""
    import torch

    if isinstance(state, dict):
        bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if not bad:
            return
        what = f"entries that are not name: tensor ({', '.join(repr(k)[:60] for k in bad[:_LIST_FIRST])})"
    else:
        what = f"a {type(state).__name__}"
    raise CheckpointError(f"{where}: {converter} returned {what}, not a state dict",
                          hint=f"{converter} is provided by {provider}; check base.checkpoint_format")


def _flat_tensors(state: Any, where: str) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{where} is not a state dict",
                              hint="set base.checkpoint_key to the entry that holds the weights")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where} holds non-tensor entries: {', '.join(str(k)[:60] for k in bad[:_LIST_FIRST])}",
                              hint="set base.checkpoint_key to the entry that holds the weights")
    keys = [k for k in state if not isinstance(k, str)]
    if keys:
        shown = ", ".join(repr(k)[:60] for k in keys[:_LIST_FIRST])
        raise CheckpointError(f"{where} has keys that are not parameter names: {shown}",
                              hint="a state dict maps names such as 'blocks.0.conv.weight' to tensors")
    return state


def convert_pytorchvideo(checkpoint: Any, path: str) -> dict[str, torch.Tensor]:
    """Model-zoo layout ``{"model_state": ..., "epoch": ...}``, or a bare state dict."""
    if isinstance(checkpoint, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(checkpoint.get(key), dict):
                return _flat_tensors(checkpoint[key], f"{Path(path).name}[{key!r}]")
    return _flat_tensors(checkpoint, Path(path).name)


def convert_safetensors(checkpoint: Any, path: str) -> dict[str, torch.Tensor]:
    """A flat ``.safetensors`` state dict (sfsurgery's own output files included)."""
    return _flat_tensors(checkpoint, Path(path).name)


@hookimpl
def register_checkpoint_formats(register: FormatRegistrar) -> None:
    register("pytorchvideo", convert_pytorchvideo)
    register("safetensors", convert_safetensors)
