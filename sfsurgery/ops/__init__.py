"""Built-in surgery ops, one module per family, each a default plugin.

Helpers here are shared by the op families: finding a pytorchvideo net's blocks and
pooling pathway outputs into one embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import OpError


def net_blocks(model: nn.Module) -> nn.ModuleList:
    """The ``blocks`` ModuleList of a pytorchvideo ``Net`` (what ops cut and extend)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise OpError(f"expected a pytorchvideo Net with .blocks, got {type(model).__name__}")
    return blocks


class GlobalPoolConcat(nn.Module):
    """Global average pool each pathway, flatten, concatenate: (B, C_slow + C_fast)."""

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        parts = x if isinstance(x, (list, tuple)) else [x]
        pooled = [p.flatten(2).mean(-1) if p.dim() > 2 else p for p in parts]
        return torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0]
