"""From a read header to a model: rebuild on meta, check the tensor index fits, load the tensors.

``load`` and ``inspect`` both call :func:`rebuild_on_meta`, so a file one of them accepts the
other accepts too; ``inspect`` just stops before reading tensor data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FileFormatError, SurgeryError
from .dtypes import DTYPE_CODES, cast_floats
from .header import FLOAT_CODES, REWRITE, damaged
from .metadata import recipe_from_header

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..plan import Plan
    from ..plugins import Registry
    from .reader import FileHeader


def rebuild_on_meta(header: FileHeader, registry: Registry) -> Plan:
    """The recorded recipe planned on the meta device, checked against the header's input and tensors."""
    from ..plan import plan_on_meta

    name = header.name
    recipe = recipe_from_header(header, registry)
    try:
        plan = plan_on_meta(recipe, check=False)
    except SurgeryError as exc:
        raise FileFormatError(f"{name}: the recorded recipe does not build here: {exc.message}",
                              hint="was it written by another sfsurgery or plugin version?") from None
    except Exception as exc:  # a builder's own error on recorded arguments: still a bad file, not a crash
        raise FileFormatError(f"{name}: the recorded recipe does not build here: {type(exc).__name__}: "
                              f"{str(exc)[:300]}", hint="was it written by another sfsurgery or plugin version?") \
            from exc
    recorded = header.recorded.input.model_dump(mode="json")
    if plan.input.model_dump(mode="json") != recorded:  # predict builds its clip from this
        raise damaged(name, f"sfsurgery.input is {recorded} but the recorded recipe takes "
                            f"{plan.input.model_dump(mode='json')}")
    _check_tensors(header, plan.model.state_dict())
    return plan


def _check_tensors(header: FileHeader, expected: dict[str, torch.Tensor]) -> None:
    """What ``load_state_dict(strict=True, assign=True)`` needs: the same names, shapes and dtype kinds."""
    missing = sorted(set(expected) - set(header.tensors))
    unexpected = sorted(set(header.tensors) - set(expected))
    problems = [f"{len(keys)} {label} ({', '.join(k[:100] for k in keys[:3])}{', ...' if len(keys) > 3 else ''})"
                for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    for key in sorted(set(expected) & set(header.tensors)):
        entry, tensor = header.tensors[key], expected[key]
        fits_dtype = entry.dtype in FLOAT_CODES if tensor.is_floating_point() else \
            entry.dtype == DTYPE_CODES.get(tensor.dtype)
        if entry.shape != list(tensor.shape) or not fits_dtype:
            problems.append(f"{key[:100]} is {entry.dtype} {entry.shape}, the model's is {tensor.dtype} "
                            f"{list(tensor.shape)}")
            break
    if problems:
        raise FileFormatError(f"{header.name}: tensors do not fit the recorded recipe: {'; '.join(problems)}",
                              hint=REWRITE)


def load_model(header: FileHeader, device: str | torch.device, dtype: torch.dtype | None,
               registry: Registry, plan: Plan | None = None) -> nn.Module:
    """Load a read header's tensors onto ``device`` (floats cast to ``dtype``) into its rebuilt model.

    ``plan`` is what :func:`rebuild_on_meta` returned for this header, when the caller has it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = (plan or rebuild_on_meta(header, registry)).model
    try:
        tensors = load_file(str(header.path), device=str(device))
    except SafetensorError as exc:  # e.g. the file changed since it was read
        raise FileFormatError(f"{header.name}: not a readable safetensors file ({str(exc)[:300]})",
                              hint="the file may be truncated or corrupted; write it again") from None
    state = {k: cast_floats(v, dtype) for k, v in tensors.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise FileFormatError(f"{header.name}: tensors do not fit the recorded recipe: "
                              f"{str(exc).splitlines()[0][:300]}", hint=REWRITE) from None
    return model
