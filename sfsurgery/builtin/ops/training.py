"""``freeze`` and ``lr_mult``: what to train and how fast, carried by the file.

Both are replayed by :func:`sfsurgery.load`, so ``load(f).train()`` has the same
``requires_grad`` flags, the same frozen BatchNorms and the same learning-rate rules
(:func:`sfsurgery.param_groups`, in :mod:`sfsurgery.training`) as the model ``apply`` returned.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...errors import OpError
from ...hookspecs import hookimpl
from ...training import LR_RULES_ATTR

if TYPE_CHECKING:
    from torch import nn

    from ...context import OpContext
    from ...registrars import OpRegistrar



def stage_prefixes(stages: Sequence[str], count: int, base: str = "the model") -> list[str]:
    """mmaction2's ``frozen_stages``: -1 none, 0 the stem, N the stem and the first N stages."""
    if count < -1:
        raise OpError(f"stages must be -1 or more, not {count}", hint="-1 freezes nothing, 0 the stem")
    if count >= len(stages):
        raise OpError(f"stages: {count} but {base} has a stem and {len(stages) - 1} stages "
                      f"({', '.join(stages) or 'none declared'})", hint=f"use at most {len(stages) - 1}")
    return list(stages[: count + 1])


def freeze(model: nn.Module, *, patterns: Sequence[str] = (), stages: int | None = None,
           stage_paths: Sequence[str] = ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"),
           bn: Literal["frozen", "train"] = "frozen") -> nn.Module:
    """Stop training parameters by name pattern and/or by stage, in place; returns ``model``.

    Args:
        patterns: fnmatch patterns over parameter names (``blocks.0.*``); each must match one.
        stages: -1 nothing, 0 the stem, N the stem and the first N residual stages of ``stage_paths``
            (SlowFast's by default; a recipe uses its base's).
        bn: ``frozen``: a BatchNorm whose parameters are all frozen stays in eval mode even after
            ``model.train()`` (running statistics used, never updated). ``train``: BatchNorms
            follow the model's mode as usual.
    """
    from .modules import FROZEN_BATCHNORM

    prefixes = stage_prefixes(stage_paths, stages) if stages is not None else []
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise OpError(f"pattern {pattern[:100]!r} matches no parameter",
                          hint=f"parameter names look like {names[0] if names else 'blocks.0.conv.weight'}")
    for name, param in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns) or any(name.startswith(f"{p}.") for p in prefixes):
            param.requires_grad_(False)
    if bn == "frozen":
        for module in model.modules():
            params = list(module.parameters(recurse=False))
            frozen = FROZEN_BATCHNORM.get(type(module))
            if frozen is not None and params and not any(p.requires_grad for p in params):
                module.__class__ = frozen  # same attributes and keys; train() keeps it in eval mode
                module.eval()
    return model


def set_lr_mult(model: nn.Module, rules: Sequence[tuple[str, float]]) -> nn.Module:
    """Attach learning-rate rules (pattern, multiplier), first match wins; returns ``model``."""
    setattr(model, LR_RULES_ATTR, tuple((str(p), float(m)) for p, m in rules))
    return model


def freeze_op(ctx: OpContext, *, patterns: tuple[str, ...] = (), stages: int | None = None,
              bn: Literal["frozen", "train"] = "frozen") -> None:
    """Stop training parameters: by fnmatch ``patterns`` over names and/or the first ``stages``.

    ``stages`` has mmaction2's ``frozen_stages`` meaning over the base's declared stages: -1
    nothing, 0 the stem, N the stem and the first N residual stages (SlowFast: ``blocks.0`` is the
    stem, ``blocks.1``-``blocks.4`` the stages). ``bn: frozen`` (default) keeps each BatchNorm whose
    parameters are all frozen in eval mode even after ``model.train()`` (mmaction2's ``norm_eval``);
    ``train`` lets BatchNorms follow the model. Survives save -> ``sfsurgery.load``.
    """
    if not patterns and stages is None:
        raise OpError("give patterns, stages or both", hint="e.g. stages: 1 freezes the stem and the first stage")
    before = sum(p.numel() for p in ctx.model.parameters() if p.requires_grad)
    freeze(ctx.model, patterns=patterns, stages=stages, stage_paths=ctx.base.stages, bn=bn)
    after = sum(p.numel() for p in ctx.model.parameters() if p.requires_grad)
    frozen_bn = sum(1 for m in ctx.model.modules() if type(m).__name__.startswith("FrozenBatchNorm"))
    ctx.record(note=f"froze {before - after:,} parameters; {after:,} trainable"
               + (f"; {frozen_bn} BatchNorms stay in eval mode" if frozen_bn else ""))


class LrRule(BaseModel):
    """One ``lr_mult`` rule: parameters whose name matches ``pattern`` train at ``lr × mult``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    pattern: str = Field(min_length=1, max_length=200)
    mult: float = Field(ge=0, le=1e6)


def lr_mult_op(ctx: OpContext, *, rules: list[LrRule]) -> None:
    """Learning-rate multipliers by parameter name: an ordered list, the first match wins.

    ``rules: [{pattern: "blocks.6.*", mult: 10}, {pattern: "blocks.0.*", mult: 0.1}]``.
    ``sfsurgery.param_groups(model, lr)`` turns them into optimizer groups; they travel with the
    file. A rule that matches nothing, or only frozen parameters, is a warning.
    """
    named = list(ctx.model.named_parameters())
    claimed: set[str] = set()
    for rule in rules:
        hits = [(n, p) for n, p in named if fnmatch.fnmatchcase(n, rule.pattern) and n not in claimed]
        claimed.update(n for n, _ in hits)
        if not hits:
            ctx.warn(f"rule {rule.pattern!r} matches no parameter (or only ones an earlier rule took)")
        elif not any(p.requires_grad for _, p in hits):
            ctx.warn(f"rule {rule.pattern!r} matches only frozen parameters")
    set_lr_mult(ctx.model, [(r.pattern, r.mult) for r in rules])
    ctx.record(note="lr: " + ", ".join(f"{r.pattern} x{r.mult:g}" for r in rules))


@hookimpl
def register_ops(register: OpRegistrar) -> None:
    register("freeze", freeze_op)
    register("lr_mult", lr_mult_op)
