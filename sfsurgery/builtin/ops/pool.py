"""``swap_pool``: fixed-kernel pathway pooling → adaptive pooling (any clip size)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import PositiveInt

from ...errors import OpError
from ...hookspecs import hookimpl
from ..families import SWAP_POOL

if TYPE_CHECKING:
    from torch import nn

    from ...context import OpContext
    from ...registrars import OpRegistrar


def swap_pools(model: nn.Module, *, kind: Literal["avg", "max"] = "avg", output_size: int = 1) -> list[str]:
    """Replace fixed AvgPool3d/MaxPool3d head pools with adaptive ones; return the paths changed."""
    from torch import nn

    from ..._pytorchvideo import PoolConcatPathway, ResNetBasicHead
    from .stock_heads import pv_classes

    projected_pool = pv_classes()["ProjectedPool"]  # X3D's head: conv → pool → conv inside ResNetBasicHead.pool
    adaptive = {"avg": nn.AdaptiveAvgPool3d, "max": nn.AdaptiveMaxPool3d}[kind]
    fixed = (nn.AvgPool3d, nn.MaxPool3d)
    swapped = []
    for name, module in model.named_modules():
        if isinstance(module, PoolConcatPathway) and module.pool is not None:
            for i, pool in enumerate(module.pool):
                if isinstance(pool, fixed):
                    module.pool[i] = adaptive(output_size)
                    swapped.append(f"{name}.pool.{i}")
        elif isinstance(module, (ResNetBasicHead, projected_pool)) and isinstance(module.pool, fixed):
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

    The stock pools ((8,7,7)/(32,7,7) on SlowFast) only fit clips at least as large as the
    feature map they were sized for; adaptive pooling fits any T×H×W. The ``avg`` variant gives
    the same output where the stock pool covers the whole feature map: SlowFast, Slow, I3D, C2D,
    CSN and R(2+1)D at 224 px and their frames, X3D at its builder's crop (XS/S 160, M 224,
    L 312). On a larger clip (the model zoo's 256 px, X3D-S's 182) the stock pool slides with
    stride 1 and the head averages the window predictions: adaptive pooling changes the output there.
    X3D: the pool inside the projected pool (``blocks.5.pool.pool``).
    """
    swapped = swap_pools(ctx.model, kind=kind, output_size=output_size)
    if not swapped:
        swap_pool(ctx.model)  # raises the documented error
    ctx.record(note=f"adaptive {kind} pooling ({output_size}) at {', '.join(swapped)}")


@hookimpl
def register_ops(register: OpRegistrar) -> None:
    register("swap_pool", swap_pool_op, families=SWAP_POOL)
