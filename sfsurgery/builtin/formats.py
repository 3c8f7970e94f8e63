"""Built-in checkpoint formats: pytorchvideo's model zoo and safetensors.

Converters receive what :func:`sfsurgery.checkpoints.read_checkpoint` read safely and return
a flat state dict in the base's key names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from ..registrars import FormatRegistrar

STATE_DICT_KEYS = ("model_state", "state_dict", "model")
_LIST_FIRST = 5


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
