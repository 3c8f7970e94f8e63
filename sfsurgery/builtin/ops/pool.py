"""``swap_pool``: fixed-kernel pathway pooling → adaptive pooling (any clip size)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import PositiveInt

from ...errors import OpError
from ...hookspecs import hookimpl

if TYPE_CHECKING:
    from torch import nn

    from ...context import OpContext
    from ...registrars import OpRegistrar


def swap_pools(model: nn.Module, *, kind: Literal["avg", "max"] = "avg", output_size: int = 1) -> list[str]:
    """Replace fixed AvgPool3d/MaxPool3d head pools with adaptive ones; return the paths changed."""
    from torch import nn

    from ..._pytorchvideo import PoolConcatPathway, ResNetBasicHead

    adaptive = {"avg": nn.AdaptiveAvgPool3d, "max": nn.AdaptiveMaxPool3d}[kind]
    fixed = (nn.AvgPool3d, nn.MaxPool3d)
    swapped = []
    for name, module in model.named_modules():
        if isinstance(module, PoolConcatPathway) and module.pool is not None:
            for i, pool in enumerate(module.pool):
                if isinstance(pool, fixed):
                    module.pool[i] = adaptive(output_size)
                    swapped.append(f"{name}.pool.{i}")
        elif isinstance(module, ResNetBasicHead) and isinstance(module.pool, fixed):
            module.pool = adaptive(output_size)
            swapped.append(f"{name}.pool")
    return swapped


def swap_pool(model: nn.Module, *, kind: Literal["avg", "max"] = "avg", output_size: int = 1) -> nn.Module:
    """Replace the fixed-kernel pooling before the head with adaptive pooling, in place.

    Returns:
        ``model``. Raises OpError when there is no fixed pool left to swap.

    Example:
        >>> model = swap_pool(hub.slowfast_r50())   # now takes any T x H x W
    """
    if not swap_pools(model, kind=kind, output_size=output_size):
        raise OpError("no fixed-kernel pooling left to swap (no AvgPool3d/MaxPool3d in a "
                      "pathway-pool block or head)", hint="swap_pool is needed once, before the head")
    return model


def swap_pool_op(ctx: OpContext, *, kind: Literal["avg", "max"] = "avg", output_size: PositiveInt = 1) -> None:
    """Replace the fixed-kernel pooling before the head with adaptive pooling.

    The stock pools ((8,7,7)/(32,7,7)) only fit 8/32 frames at 224 px; adaptive pooling
    fits any T×H×W. At the stock input the ``avg`` variant gives the same output.
    """
    swapped = swap_pools(ctx.model, kind=kind, output_size=output_size)
    if not swapped:
        swap_pool(ctx.model)  # raises the documented error
    ctx.record(note=f"adaptive {kind} pooling ({output_size}) at {', '.join(swapped)}")


@hookimpl
def register_ops(register: OpRegistrar) -> None:
    register("swap_pool", swap_pool_op)
