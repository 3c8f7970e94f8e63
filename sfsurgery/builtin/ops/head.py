"""``replace_head``: a new classification head, sized from the model or the trace."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PositiveInt

from ...errors import OpError
from ...hookspecs import hookimpl
from ..families import REPLACE_HEAD
from .blocks import net_blocks

if TYPE_CHECKING:
    from collections.abc import Callable

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

    SlowFast, a truncated model or a head sfsurgery made: the new last block is global average
    pool (per pathway, concatenated) → flatten → dropout → (Linear → ReLU per ``hidden`` width) →
    Linear ``proj`` → ``activation``. A one-pathway model's stock head (X3D, Slow/I3D/C2D, CSN,
    R(2+1)D, MViT, efficient X3D: see :mod:`.stock_heads`) is kept, with every learned layer and its
    order; its projection (with ``hidden`` layers in front), activation and dropout become these.

    Args:
        model: a pytorchvideo model (stock head, a head from sfsurgery, or no head).
        num_classes: the new head's width.
        dropout / activation / hidden: as in the recipe op.
        in_features: the head's input width. Default: the old head's ``proj.in_features``;
            without an old head, measured by a meta forward of ``example_input``. A kept stock
            head keeps its own width.
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
    from .stock_heads import stock_head, swap_projection

    stock = stock_head(model)
    if stock is not None:
        if in_features is not None and in_features != stock.width():
            raise OpError(f"in_features={in_features}, but the stock head's projection takes {stock.width()}",
                          hint="leave in_features out: the stock head keeps its own width")
        if example_input is not None:
            _meta_outputs(model, example_input)  # makes a fixed head pool global when the clip is smaller
        swap_projection(model, stock, num_classes=num_classes, dropout=dropout, activation=activation,
                        hidden=tuple(hidden), init=lambda layer: _init_linear(layer, generator), device=device)
        return model
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
            _init_linear(layer, generator)
    net_blocks(model).append(head)
    return model


def _init_linear(layer: nn.Linear, generator: torch.Generator | None) -> None:
    from torch import nn

    nn.init.normal_(layer.weight, std=INIT_STD, generator=generator)
    nn.init.zeros_(layer.bias)


def _measured_width(model: nn.Module, example_input: Any) -> int:
    """The channels the model now outputs for ``example_input`` (a meta forward, no real compute)."""
    return sum(shape[1] for shape in _meta_outputs(model, example_input))


def _meta_outputs(model: nn.Module, example_input: Any) -> list[tuple[int, ...]]:
    """Output shapes for ``example_input`` (a meta forward); fixed head pools the clip is too small for
    become global averages, in ``model`` too."""
    import torch

    from ...trace import TraceFailure, tensors_of, traced_output_shapes
    from .stock_heads import globalise_stock_pool

    meta = model if all(t.is_meta for t in model.state_dict().values()) else copy.deepcopy(model).to("meta")
    shapes = [tuple(t.shape) for t in tensors_of(example_input)]
    inputs: Any = [torch.empty(s, device="meta") for s in shapes]
    inputs = inputs if isinstance(example_input, (list, tuple)) else inputs[0]
    try:
        return traced_output_shapes(meta, inputs)
    except TraceFailure as failure:
        for globalise in (globalise_stock_pool, globalise_head_pools):
            if globalise(meta, failure):
                if meta is not model:
                    globalise(model, failure)
                return traced_output_shapes(meta, inputs)
        raise


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

    SlowFast, or a truncated model: global average pool → flatten → dropout → (Linear → ReLU
    per ``hidden`` width) → Linear ``proj`` → ``activation``, as the last block. Works on the
    stock head (replaced), pooled features or a list of pathway tensors (each pooled, then
    concatenated); the input width comes from the trace.

    One-pathway bases (X3D, Slow/I3D/C2D, CSN, R(2+1)D, MViT, efficient X3D): the stock head is
    kept with every learned layer and its order (X3D's projected pool, MViT's norm; projection →
    activation → output averaging); its projection becomes (Linear → ReLU per ``hidden``) →
    Linear ``num_classes``, its activation and dropout the recipe's (``activation: null``
    removes the stock Softmax of X3D and R(2+1)D).

    Works at any clip size: when the stock head pools do not fit the clip, they become global
    average pools (the stock ones are kept where they fit, so the stock input gives the stock
    result). New weights: normal(0, 0.01), zero bias, from the recipe seed.
    """
    from .stock_heads import stock_head

    if stock_head(ctx.model) is not None:
        _replace_stock_head(ctx, num_classes=num_classes, dropout=dropout, activation=activation, hidden=hidden)
        return
    remove_head(ctx.model)
    shapes = _trace_fitting_pools(ctx, globalise_head_pools, lambda changed: f"{changed[0].rsplit('.pool', 1)[0]} "
                                  "head pools do not fit this clip: made global averages")
    width = sum(shape[1] for shape in ([shapes] if isinstance(shapes, tuple) else shapes))
    replace_head(ctx.model, num_classes=num_classes, dropout=dropout, activation=activation, hidden=hidden,
                 in_features=width, generator=ctx.generator, device=ctx.device)
    prefix = f"blocks.{len(net_blocks(ctx.model)) - 1}"
    ctx.record(added=[f"{prefix}.{k}" for k in net_blocks(ctx.model)[-1].state_dict()],
               note=f"head {width} -> {num_classes} classes at {prefix}")


def _trace_fitting_pools(ctx: OpContext, globalise: Callable[[nn.Module, TraceFailure], list[str]],
                         note: Callable[[list[str]], str]) -> Any:
    """``ctx.trace()``; when fixed head pools are what failed, make them global (``globalise``) and trace again."""
    from ...trace import TraceFailure

    try:
        return ctx.trace()
    except TraceFailure as failure:
        changed = globalise(ctx.model, failure)
        if not changed:
            raise
        ctx.record(note=note(changed))
        return ctx.trace()


def _replace_stock_head(ctx: OpContext, **params: Any) -> None:
    """A one-pathway stock head: keep it, swap its projection and activation (see :mod:`.stock_heads`)."""
    from .stock_heads import fixed_pool, globalise_stock_pool, stock_head, swap_projection

    head = stock_head(ctx.model)
    if fixed_pool(head) is not None:
        _trace_fitting_pools(ctx, globalise_stock_pool,
                             lambda changed: f"{changed[0]} does not fit this clip: made a global average")
    width = head.width()
    added = swap_projection(ctx.model, head, **params, init=lambda layer: _init_linear(layer, ctx.generator),
                            device=ctx.device)
    ctx.record(added=added, note=f"stock {head.kind} kept; projection {width} -> {params['num_classes']} classes "
               f"at {head.proj.path}, activation {params['activation'] or 'none'}")


@hookimpl
def register_ops(register: OpRegistrar) -> None:
    register("replace_head", replace_head_op, families=REPLACE_HEAD)
