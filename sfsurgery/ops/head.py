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
    the trace. New weights: normal(0, 0.01), zero bias, from the recipe seed.
    """
    from torch import nn

    from .._pytorchvideo import ResNetBasicHead
    from .modules import SurgeryHead

    blocks = net_blocks(ctx.model)
    if isinstance(blocks[-1], (ResNetBasicHead, SurgeryHead)):
        del blocks[len(blocks) - 1]
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


@hookimpl
def register_ops(register):
    register("replace_head", replace_head)
