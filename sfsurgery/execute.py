"""Execute: run the planned ops on the real model (weights loaded or randomly initialised).

Each op runs exactly as it did on meta; ``ctx.trace()`` answers from the plan, so no real
tensor is traced and nothing is planned twice.
"""

from __future__ import annotations

import torch
from torch import nn

from .context import OpContext
from .plan import Plan, run_op


def execute(plan: Plan, model: nn.Module) -> nn.Module:
    """Run ``plan``'s ops on ``model`` (real tensors) in order; returns the final model.

    Args:
        plan: from :func:`~sfsurgery.plan.plan_on_meta` on the same recipe.
        model: the base with its weights, in the state the plan started from.
    """
    recipe = plan.recipe
    spec = recipe.input.model_copy()
    device = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
    model.eval()
    for step in plan.steps:
        ctx = OpContext(model, spec, index=step.op.index, name=step.op.name, seed=recipe.seed, device=device,
                        base=recipe.base.info, planned=step.traces)
        run_op(step.op, ctx)
        model, spec = ctx.model, ctx.input
    return model
