"""``swap_pool``: fixed-kernel pathway pooling → adaptive pooling (any clip size)."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from ..errors import OpError
from ..hookspecs import hookimpl


def swap_pool(ctx, *, kind: Literal["avg", "max"] = "avg", output_size: PositiveInt = 1) -> None:
    """Replace the fixed-kernel pooling before the head with adaptive pooling.

    The stock pools ((8,7,7)/(32,7,7)) only fit 8/32 frames at 224 px; adaptive pooling
    fits any T×H×W. At the stock input the ``avg`` variant gives the same output.
    """
    from torch import nn

    from .._pytorchvideo import PoolConcatPathway, ResNetBasicHead

    adaptive = {"avg": nn.AdaptiveAvgPool3d, "max": nn.AdaptiveMaxPool3d}[kind]
    fixed = (nn.AvgPool3d, nn.MaxPool3d)
    swapped = []
    for name, module in ctx.model.named_modules():
        if isinstance(module, PoolConcatPathway) and module.pool is not None:
            for i, pool in enumerate(module.pool):
                if isinstance(pool, fixed):
                    module.pool[i] = adaptive(output_size)
                    swapped.append(f"{name}.pool.{i}")
        elif isinstance(module, ResNetBasicHead) and isinstance(module.pool, fixed):
            module.pool = adaptive(output_size)
            swapped.append(f"{name}.pool")
    if not swapped:
        raise OpError("no fixed-kernel pooling left to swap (no AvgPool3d/MaxPool3d in a "
                      "pathway-pool block or head)")
    ctx.record(note=f"adaptive {kind} pooling ({output_size}) at {', '.join(swapped)}")


@hookimpl
def register_ops(register):
    register("swap_pool", swap_pool)
