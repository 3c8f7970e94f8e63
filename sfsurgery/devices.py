"""Where a command runs: a device name checked once, for predict and extract."""

from __future__ import annotations

import torch

from .errors import SurgeryError


def torch_device(device: str | torch.device) -> torch.device:
    """A device that exists here, or a user error (``cuda`` without a GPU, a misspelled name)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SurgeryError(f"unknown device {str(device)[:50]!r} ({exc})", hint="use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SurgeryError("device cuda requested but no CUDA device is available", hint="use --device cpu")
    return dev
