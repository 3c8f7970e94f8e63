"""Plan on meta: build the base on the meta device, run the ops there, trace, check ``expect``.

The plan is everything the execute pass needs: for each op, the shapes it asked for
(``ctx.trace()`` answers) and its lineage, computed here once.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .context import Lineage, OpContext, lineage_entry
from .deploy import check_channels, check_labels
from .errors import Location, OpError, RecipeError, SurgeryError, SurgeryWarning, TraceError
from .recipe import InputSpec
from .resolve import Recipe, ResolvedOp
from .trace import Trace, TraceFailure, expect_matches, explain, fmt_shapes, run_trace

#: The most tensor values a model may have (4 GiB in float32; SlowFast R101 has 63 million).
MAX_VALUES = 1 << 30


@dataclass
class PlannedOp:
    """One op as it ran on meta: the trace answers it got and its lineage entry."""

    op: ResolvedOp
    traces: list[Trace | TraceFailure]
    lineage: Lineage
    warnings: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """A recipe's op chain run on the meta device.

    Attributes:
        model: the model after every op (meta tensors).
        input: the clip it takes (ops may have changed the recipe's).
        steps: what each op asked and did.
        trace: the final shape trace (None when planned with ``check=False``).
        base_model: an untouched meta copy of the base, for loading weights into (``keep_base``).
    """

    recipe: Recipe
    model: nn.Module
    input: InputSpec
    steps: list[PlannedOp] = field(default_factory=list)
    trace: Trace | None = None
    base_model: nn.Module | None = None

    @property
    def lineage(self) -> list[Lineage]:
        return [step.lineage for step in self.steps]

    @property
    def warnings(self) -> list[str]:
        """What the ops warned about, each prefixed with its op (``ops[1] lr_mult: ...``)."""
        return [f"ops[{s.op.index}] {s.op.name}: {w}" for s in self.steps for w in s.warnings]


def run_op(op: ResolvedOp, ctx: OpContext) -> None:
    """Call one op under ``no_grad``; its errors come back located at the op."""
    try:
        with torch.no_grad():
            op.spec.fn(ctx, **op.params)
    except TraceFailure:
        raise
    except SurgeryError as exc:
        exc.locate(op_index=op.index, op_name=op.name)
        raise
    except Exception as exc:
        raise OpError(f"failed: {type(exc).__name__}: {str(exc)[:500]}", hint=f"op provided by {op.provider}",
                      where=_op_location(op)) from exc
    if not isinstance(ctx.model, nn.Module):
        raise OpError(f"set ctx.model to a {type(ctx.model).__name__}, not an nn.Module",
                      hint=f"op provided by {op.provider}", where=_op_location(op))
    if not isinstance(ctx.input, InputSpec):
        raise OpError(f"set ctx.input to a {type(ctx.input).__name__}, not an InputSpec",
                      hint=f"change ctx.input's fields instead; op provided by {op.provider}", where=_op_location(op))


def _op_location(op: ResolvedOp) -> Location:
    return Location(op_index=op.index, op_name=op.name)


def _run_ops(recipe: Recipe, model: nn.Module, stop_after: int | None = None) -> tuple[nn.Module, InputSpec,
                                                                                         list[PlannedOp]]:
    """Run ``recipe.ops[:stop_after]`` on a meta model, recording traces and lineage."""
    spec, steps = recipe.input.model_copy(), []
    model.eval()
    for op in recipe.ops[:stop_after]:
        ctx = OpContext(model, spec, index=op.index, name=op.name, seed=recipe.seed, device=torch.device("meta"),
                        base=recipe.base.info)
        before = model.state_dict(keep_vars=True)
        run_op(op, ctx)
        model, spec = ctx.model, ctx.input
        entry = lineage_entry(before, model.state_dict(keep_vars=True), ctx, op.provider.as_dict())
        steps.append(PlannedOp(op, ctx.asked, entry, list(ctx.records.warnings)))
    return model, spec, steps


def plan_on_meta(recipe: Recipe, *, check: bool = True, keep_base: bool = False) -> Plan:
    """Build the base on meta, run the ops, trace, and check ``expect``.

    Args:
        check: trace the final model and check ``expect.output`` (``load`` skips this).
        keep_base: also keep an untouched meta copy of the base (``plan.base_model``), 5x
            cheaper than building it again; ``apply`` loads the weights into it.

    Raises:
        TraceError: naming the op to blame, the block path, the shapes and a fix.
    """
    model = _bounded(recipe.base.on_meta(), f"base {recipe.base.name}")
    base_model = copy.deepcopy(model) if keep_base else None
    try:
        model, spec, steps = _run_ops(recipe, model)
        plan = Plan(recipe, model, spec, steps, base_model=base_model)
        if check:
            plan.trace = run_trace(plan.model, plan.input)
    except TraceFailure:
        raise _blame(recipe) from None
    except OpError as exc:
        raise TraceError(exc.detail, exc.hint, where=exc.where) from exc
    _bounded(plan.model, "the model after the ops")
    check_channels(recipe.preprocess, plan.input.channels, recipe.document.preprocess.mean is not None)
    if check:
        check_labels(recipe.labels, plan.trace.outputs)
        plan.trace.warnings = plan.warnings
        for message in plan.warnings:
            warnings.warn(message, SurgeryWarning, stacklevel=3)
    expected = recipe.expect.output
    if check and expected is not None and not expect_matches(expected, plan.trace.outputs):
        raise TraceError(f"expect.output is {expected} but the model gives {fmt_shapes(plan.trace.outputs)}",
                         hint="fix expect.output, or the ops that shape the output")
    return plan


def _bounded(model: nn.Module, what: str) -> nn.Module:
    """Refuse models too large to materialise (a meta build costs nothing; the weights would)."""
    values = sum(t.numel() for t in model.state_dict().values())
    if values > MAX_VALUES:
        raise RecipeError(f"{what} has {values:,} values ({values * 4 / 2**30:.0f} GiB in float32), more than "
                          f"sfsurgery builds ({MAX_VALUES:,})", hint="check the channel and depth arguments")
    return model


def _blame(recipe: Recipe) -> TraceError:
    """Find the first op after which the chain stops tracing; explain that failure."""
    states: list[tuple[InputSpec, TraceFailure | None]] = []
    for stop in range(len(recipe.ops) + 1):
        try:
            model, spec, _ = _run_ops(recipe, recipe.base.on_meta(), stop_after=stop)
        except TraceFailure:
            break  # an op's own ctx.trace() failed: the state before it was already broken
        try:
            run_trace(model, spec)
            states.append((spec, None))
        except TraceFailure as failure:
            states.append((spec, failure))
    good = [i for i, (_, failure) in enumerate(states) if failure is None]
    first_bad = good[-1] + 1 if good else 0
    if first_bad >= len(states):  # every state traced on replay: nothing to pin down
        return TraceError("the op chain did not trace on the meta device", hint="run with --debug")
    spec, failure = states[first_bad]
    message, hint = explain(failure, spec, recipe.document.base.create_slowfast)
    if first_bad == 0:
        return TraceError(f"base {recipe.base.name} with input {fmt_shapes(spec.pathway_shapes())}: {message}", hint)
    op = recipe.ops[first_bad - 1]
    return TraceError(message, hint, where=_op_location(op))
