"""Finding the parts of a pytorchvideo ``Net`` that ops change."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import OpError

if TYPE_CHECKING:
    from torch import nn


def net_blocks(model: nn.Module) -> nn.ModuleList:
    """The ``blocks`` ModuleList of a pytorchvideo ``Net`` (what ops cut and extend)."""
    from torch import nn

    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise OpError(f"expected a pytorchvideo Net with .blocks, got {type(model).__name__}",
                      hint="this op works on pytorchvideo models (sfsurgery.load or a hub builder)")
    return blocks
