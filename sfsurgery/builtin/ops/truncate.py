"""``truncate``: cut the net after a block, optionally pooling to an embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import PositiveInt

from ...errors import OpError
from ...hookspecs import hookimpl
from ..families import TRUNCATE
from .blocks import net_blocks

if TYPE_CHECKING:
    from torch import nn

    from ...context import OpContext
    from ...registrars import OpRegistrar


def truncate(model: nn.Module, *, after: str | None = None, keep: int | None = None, pool: bool = False) -> nn.Module:
    """Keep blocks up to and including ``after`` (e.g. ``"blocks.4"``), or the first ``keep``, in place.

    The model then returns that block's output (a list of pathway tensors for multipathway
    blocks); ``pool=True`` appends global average pooling per pathway + concat.

    Returns:
        ``model``.

    Example:
        >>> embed = truncate(hub.slowfast_r50(), after="blocks.4", pool=True)   # (B, 2304)
    """
    from .stock_heads import pv_classes

    if (after is None) == (keep is None):
        raise OpError("give exactly one of after or keep", hint="e.g. after: blocks.4, or keep: 5")
    if isinstance(model, pv_classes()["MultiscaleVisionTransformers"]):
        raise OpError("MViT's blocks pass (tokens, thw) to each other and its head reads the class token: "
                      "it has no block whose output a cut model could return", hint="use replace_head or freeze")
    blocks = net_blocks(model)
    valid = [f"blocks.{i}" for i in range(len(blocks))]
    if after is not None:
        if after not in valid:
            raise OpError(f"no block {after[:100]!r}; valid: {', '.join(valid)}", hint="name a block the model has")
        keep = valid.index(after) + 1
    elif keep > len(blocks):
        raise OpError(f"keep: {keep} but the model has {len(blocks)} blocks", hint=f"keep at most {len(blocks)}")
    del blocks[keep:]
    if pool:
        from .modules import GlobalPoolConcat

        blocks.append(GlobalPoolConcat())
    return model


def truncate_op(ctx: OpContext, *, after: str | None = None, keep: PositiveInt | None = None,
                pool: bool = False) -> None:
    """Keep blocks up to and including ``after`` (e.g. ``blocks.4``), or the first ``keep``.

    The model then returns that block's output (a list of pathway tensors for multipathway
    blocks). ``pool: true`` appends global average pooling per pathway + concat, giving a
    (B, C_slow + C_fast) embedding.
    """
    before = len(net_blocks(ctx.model))
    truncate(ctx.model, after=after, keep=keep, pool=pool)
    kept = len(net_blocks(ctx.model)) - int(pool)
    dropped = [f"blocks.{i}" for i in range(kept, before)]
    ctx.record(note=f"kept blocks.0..blocks.{kept - 1}" + (f", dropped {', '.join(dropped)}" if dropped else "")
               + (", pooled to an embedding" if pool else ""))


@hookimpl
def register_ops(register: OpRegistrar) -> None:
    register("truncate", truncate_op, families=TRUNCATE)
