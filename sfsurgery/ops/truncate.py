"""``truncate``: cut the net after a block, optionally pooling to an embedding."""

from __future__ import annotations

from pydantic import PositiveInt

from ..errors import OpError, RecipeError
from ..hookspecs import hookimpl
from . import net_blocks


def truncate(ctx, *, after: str | None = None, keep: PositiveInt | None = None, pool: bool = False) -> None:
    """Keep blocks up to and including ``after`` (e.g. ``blocks.4``), or the first ``keep``.

    The model then returns that block's output (a list of pathway tensors for multipathway
    blocks). ``pool: true`` appends global average pooling per pathway + concat, giving a
    (B, C_slow + C_fast) embedding.
    """
    if (after is None) == (keep is None):
        raise RecipeError("give exactly one of after or keep")
    blocks = net_blocks(ctx.model)
    valid = [f"blocks.{i}" for i in range(len(blocks))]
    if after is not None:
        if after not in valid:
            raise OpError(f"no block {after!r}; valid: {', '.join(valid)}")
        keep = valid.index(after) + 1
    elif keep > len(blocks):
        raise OpError(f"keep: {keep} but the model has {len(blocks)} blocks")
    dropped = [f"blocks.{i}" for i in range(keep, len(blocks))]
    del blocks[keep:]
    if pool:
        from .modules import GlobalPoolConcat

        blocks.append(GlobalPoolConcat())
    ctx.record(note=f"kept blocks.0..blocks.{keep - 1}" + (f", dropped {', '.join(dropped)}" if dropped else "")
               + (", pooled to an embedding" if pool else ""))


@hookimpl
def register_ops(register):
    register("truncate", truncate)
