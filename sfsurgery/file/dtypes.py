"""Tensor dtypes in files: safetensors' dtype codes and float casts."""

from __future__ import annotations

import torch

from ..errors import SurgeryError

DTYPE_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
               torch.uint8: "U8", torch.bool: "BOOL"}


def as_torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A floating ``torch.dtype`` from itself or its name (``"bfloat16"``, ``"torch.float16"``)."""
    if dtype is None:
        return None
    found = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise SurgeryError(f"not a floating-point torch dtype: {dtype!r}", hint="e.g. float32, float16, bfloat16")
    return found


def cast_floats(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Cast floating tensors only: BatchNorm's ``num_batches_tracked`` stays int64."""
    if dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype:
        return tensor
    return tensor.to(dtype)
