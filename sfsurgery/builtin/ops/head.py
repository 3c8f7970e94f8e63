"""``replace_head``: a new classification head, sized from the model or the trace."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PositiveInt

from ...errors import OpError
from ...hookspecs import hookimpl
from .blocks import net_blocks

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ...context import OpContext
    from ...registrars import OpRegistrar
    from ...trace import TraceFailure

INIT_STD = 0.01  # pytorchvideo's head init: normal(0, 0.01) weights, zero bias


def remove_head(model: nn.Module) -> nn.Module | None:
    """Remove the classifier (a last block that is a ``ResNetBasicHead`` or a head sfsurgery made).

    Returns:
        The removed head, or None when the model ends in something else.
    """
    from ..._pytorchvideo import ResNetBasicHead
    from .modules import SurgeryHead

    blocks = net_blocks(model)
    if len(blocks) and isinstance(blocks[-1], (ResNetBasicHead, SurgeryHead)):
        head = blocks[-1]
        del blocks[len(blocks) - 1]
        return head
    return None


def replace_head(
    model: nn.Module,
    *,
    num_classes: int,
    dropout: float = 0.5,
    activation: Literal["softmax", "sigmoid", "relu"] | None = None,
    hidden: tuple[int, ...] = (),
    in_features: int | None = None,
    example_input: torch.Tensor | list[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Replace the model's classifier with a new head for ``num_classes`` classes, in place.

    The new last block: global average pool (per pathway, concatenated) → flatten → dropout →
    (Linear → ReLU per ``hidden`` width) → Linear ``proj`` → ``activation``.

    Args:
        model: a pytorchvideo ``Net`` (stock head, a head from sfsurgery, or no head).
        num_classes: the new head's width.
        dropout / activation / hidden: as in the recipe op.
        in_features: the head's input width. Default: the old head's ``proj.in_features``;
            without an old head, measured by a meta forward of ``example_input``.
        example_input: a clip the model takes (shapes only matter); also used to make the
            stock head pools global when they do not fit it.
        generator: where the new weights come from (normal(0, 0.01), zero bias).
        device: where the new head goes; default: the model's.

    Returns:
        ``model`` itself, changed.

    Example:
        >>> model = replace_head(hub.slowfast_r50(), num_classes=10)
        >>> model.blocks[6].proj
        Linear(in_features=2304, out_features=10, bias=True)
    """
    from torch import nn

    from .modules import SurgeryHead

    old = remove_head(model)
    if example_input is not None:
        in_features = in_features or _measured_width(model, example_input)
    elif in_features is None and old is not None and isinstance(getattr(old, "proj", None), nn.Linear):
        in_features = old.proj.in_features
    if in_features is None:
        raise OpError("cannot tell the head's input width", hint="pass in_features= or example_input=")
    if device is None:
        device = next((p.device for p in model.parameters()), None)
    head = SurgeryHead(in_features, num_classes, dropout, tuple(hidden), activation, device=device)
    head.train(model.training)  # a new module starts in train mode; follow the model's
    for layer in [*head.hidden, head.proj]:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=INIT_STD, generator=generator)
            nn.init.zeros_(layer.bias)
    net_blocks(model).append(head)
    return model


def _measured_width(model: nn.Module, example_input: Any) -> int:
    """The channels the model now outputs for ``example_input`` (a meta forward, no real compute)."""
    import torch

    from ...trace import TraceFailure, tensors_of, traced_output_shapes

    meta = model if all(t.is_meta for t in model.state_dict().values()) else copy.deepcopy(model).to("meta")
    shapes = [tuple(t.shape) for t in tensors_of(example_input)]
    inputs: Any = [torch.empty(s, device="meta") for s in shapes]
    inputs = inputs if isinstance(example_input, (list, tuple)) else inputs[0]
    try:
        outputs = traced_output_shapes(meta, inputs)
    except TraceFailure as failure:
        if not globalise_head_pools(meta, failure):
            raise
        if meta is not model:
            globalise_head_pools(model, failure)
        outputs = traced_output_shapes(meta, inputs)
    return sum(shape[1] for shape in outputs)


def globalise_head_pools(model: nn.Module, failure: TraceFailure) -> list[str]:
    """Make the fixed AvgPool3d pools of a last ``PoolConcatPathway`` global when they are what failed.

    Returns:
        The paths of the pools changed (empty when the failure was elsewhere).
    """
    from torch import nn

    from ..._pytorchvideo import PoolConcatPathway

    blocks = net_blocks(model)
    last = f"blocks.{len(blocks) - 1}"
    if not len(blocks) or not isinstance(blocks[-1], PoolConcatPathway) or not failure.path.startswith(last):
        return []
    pools = blocks[-1].pool if blocks[-1].pool is not None else []
    changed = [i for i, pool in enumerate(pools) if isinstance(pool, nn.AvgPool3d)]
    for i in changed:  # the new head pools globally anyway: a fixed kernel would only limit clip sizes
        pools[i] = nn.AdaptiveAvgPool3d(1)
    return [f"{last}.pool.{i}" for i in changed]


def replace_head_op(
    ctx: OpContext,
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
    from ...trace import TraceFailure

    remove_head(ctx.model)
    try:
        shapes = ctx.trace()
    except TraceFailure as failure:
        changed = globalise_head_pools(ctx.model, failure)
        if not changed:
            raise
        ctx.record(note=f"{changed[0].rsplit('.pool', 1)[0]} head pools do not fit this clip: made global averages")
        shapes = ctx.trace()
    width = sum(shape[1] for shape in ([shapes] if isinstance(shapes, tuple) else shapes))
    replace_head(ctx.model, num_classes=num_classes, dropout=dropout, activation=activation, hidden=hidden,
                 in_features=width, generator=ctx.generator, device=ctx.device)
    prefix = f"blocks.{len(net_blocks(ctx.model)) - 1}"
    ctx.record(added=[f"{prefix}.{k}" for k in net_blocks(ctx.model)[-1].state_dict()],
               note=f"head {width} -> {num_classes} classes at {prefix}")


@hookimpl
def register_ops(register: OpRegistrar) -> None:
    register("replace_head", replace_head_op)
