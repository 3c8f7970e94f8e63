"""``replace_head``: a new classification head sized from the trace."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt

from ..hookspecs import hookimpl
from . import net_blocks

INIT_STD = 0.01  # pytorchvideo's head init: normal(0, 0.01) weights, zero bias


def replace_head(
    ctx,
    *,
    num_classes: PositiveInt,
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5,
    activation: Literal["softmax", "sigmoid", "relu"] | None = None,
    hidden: tuple[PositiveInt, ...] = (),
) -> None:
    """Replace the classifier with a new head for ``num_classes`` classes.

    Global average pool → flatten → dropout → (Linear → ReLU per ``hidden`` width) →
    Linear ``proj`` → ``activation``. Works on the stock head (replaced), pooled features or
    a list of pathway tensors (each pooled, then concatenated); the input width comes from
    the trace. Works at any clip size: when the stock head pools in front of it do not fit
    the clip, they become global average pools (the stock ones are kept where they fit, so
    the stock input gives the stock result). New weights: normal(0, 0.01), zero bias, from
    the recipe seed.
    """
    from torch import nn

    from .._pytorchvideo import ResNetBasicHead
    from ..trace import TraceFailure
    from .modules import SurgeryHead

    blocks = net_blocks(ctx.model)
    if isinstance(blocks[-1], (ResNetBasicHead, SurgeryHead)):
        del blocks[len(blocks) - 1]
    try:
        shapes = ctx.trace()
    except TraceFailure as failure:
        if not _globalise_head_pools(ctx, blocks, failure):
            raise
        shapes = ctx.trace()
    shapes = [shapes] if isinstance(shapes, tuple) else shapes
    width = sum(shape[1] for shape in shapes)
    head = SurgeryHead(width, num_classes, dropout, tuple(hidden), activation, device=ctx.device)
    for layer in [*head.hidden, head.proj]:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=INIT_STD, generator=ctx.generator)
            nn.init.zeros_(layer.bias)
    blocks.append(head)
    prefix = f"blocks.{len(blocks) - 1}."
    ctx.record(added=[prefix + k for k in head.state_dict()],
               note=f"head {width} -> {num_classes} classes at {prefix[:-1]}")


def _globalise_head_pools(ctx, blocks, failure) -> bool:
    """Make fixed AvgPool3d head pools global when they are what failed; True if any changed."""
    from torch import nn

    from .._pytorchvideo import PoolConcatPathway

    last = f"blocks.{len(blocks) - 1}"
    if not isinstance(blocks[-1], PoolConcatPathway) or not failure.path.startswith(last):
        return False
    pools = blocks[-1].pool if blocks[-1].pool is not None else []
    changed = [i for i, pool in enumerate(pools) if isinstance(pool, nn.AvgPool3d)]
    for i in changed:  # the new head pools globally anyway: a fixed kernel would only limit clip sizes
        pools[i] = nn.AdaptiveAvgPool3d(1)
    if changed:
        ctx.record(note=f"{last} head pools do not fit this clip: made global averages")
    return bool(changed)


@hookimpl
def register_ops(register):
    register("replace_head", replace_head)
