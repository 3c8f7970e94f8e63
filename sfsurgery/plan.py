"""Replay a recipe's op chain: on the meta device to plan and trace, then on real tensors."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .bases import ResolvedBase, resolve_base
from .errors import OpError, SurgeryError, TraceError
from .recipe import InputSpec, Recipe
from .trace import Shape, Trace, TraceFailure, expect_matches, explain, fmt_shapes, run_trace


def op_seed(seed: int, index: int) -> int:
    """Op ``index`` draws from its own generator, so editing one op never reseeds another."""
    return int.from_bytes(hashlib.sha256(f"sfsurgery:{seed}:{index}".encode()).digest()[:7], "little")


class OpContext:
    """What an op sees.

    Attributes:
        model: the model so far (on the meta device while planning). Assign to replace it.
        input: the clip spec (mutable: an op that changes the stem sets ``input.channels``).
        generator: the only source of randomness for new weights, seeded from the recipe.
        device: where new modules go (``meta`` while planning, ``cpu`` when executing).
    """

    def __init__(self, model: nn.Module, spec: InputSpec, index: int, name: str, seed: int,
                 device: torch.device, traces: dict[tuple[int, int], Trace | TraceFailure]):
        self.model = model
        self.input = spec
        self.index, self.name = index, name
        self.device = device
        self.generator = torch.Generator().manual_seed(op_seed(seed, index))
        self.records: dict[str, list[str]] = {"added": [], "removed": [], "transformed": [], "notes": []}
        self._traces, self._calls = traces, 0

    def trace(self) -> Shape | list[Shape]:
        """The current model's output shape(s) for the current input, from the meta plan."""
        key = (self.index, self._calls)
        self._calls += 1
        if key not in self._traces:  # the execute pass finds every planned answer here, failures too
            model = self.model if _is_meta(self.model) else copy.deepcopy(self.model).to("meta")
            try:
                self._traces[key] = run_trace(model, self.input.model_copy())
            except TraceFailure as failure:
                self._traces[key] = failure
        if isinstance(self._traces[key], TraceFailure):
            raise self._traces[key]
        return self._traces[key].output

    def record(self, *, added=(), removed=(), transformed=(), note: str | None = None) -> None:
        """Add to this op's lineage (key changes are also detected automatically)."""
        self.records["added"] += list(added)
        self.records["removed"] += list(removed)
        self.records["transformed"] += list(transformed)
        if note:
            self.records["notes"].append(note)


def _is_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in model.state_dict().values())


def _lineage_entry(before: dict[str, Any], after: dict[str, Any], ctx: OpContext, provider: dict) -> dict:
    # a key the op says it added replaces whatever stood under that name: removed + added
    declared = set(ctx.records["added"])
    added = [k for k in after if k not in before]
    removed = [k for k in before if k not in after or k in declared]
    transformed = [k for k in after if k in before and after[k] is not before[k] and k not in declared]
    merged = {key: sorted(set(auto) | set(ctx.records[key])) for key, auto in
              (("added", added), ("removed", removed), ("transformed", transformed))}
    return {"index": ctx.index, "op": ctx.name, "provider": provider, **merged, "notes": ctx.records["notes"]}


@dataclass
class Plan:
    """A replayed chain: the model, its input, lineage and (when traced) the final trace."""

    model: nn.Module
    input: InputSpec
    base: ResolvedBase
    lineage: list[dict] = field(default_factory=list)
    traces: dict[tuple[int, int], Trace | TraceFailure] = field(default_factory=dict)
    trace: Trace | None = None
    pristine: nn.Module | None = None  # the base on meta, before any op (5x cheaper to copy than build)


def initial_input(recipe: Recipe, base: ResolvedBase) -> InputSpec:
    given = recipe.input.model_dump(exclude_none=True)
    return InputSpec(**{**base.input, **given})


def replay(recipe: Recipe, registry: Any, model: nn.Module, base: ResolvedBase, *,
           traces: dict | None = None, stop_after: int | None = None) -> Plan:
    """Run the recipe's ops on ``model`` in order (meta or real, ops don't care)."""
    device = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
    plan = Plan(model, initial_input(recipe, base), base, traces=traces if traces is not None else {})
    for index, call in enumerate(recipe.ops[:stop_after]):
        spec = registry.get("ops", call.op)
        ctx = OpContext(plan.model, plan.input, index, call.op, recipe.seed, device, plan.traces)
        before = plan.model.state_dict(keep_vars=True)
        try:
            spec.fn(ctx, **call.params)
        except TraceFailure:
            raise
        except SurgeryError as exc:
            if not exc.message.startswith("ops["):
                exc.message = f"ops[{index}] {call.op}: {exc.message}"
                exc.args = (exc.message,)
            raise
        except Exception as exc:
            raise OpError(f"ops[{index}] {call.op} failed: {type(exc).__name__}: {exc}",
                          hint=f"op provided by {spec.provider}") from exc
        plan.model, plan.input = ctx.model, ctx.input
        plan.lineage.append(_lineage_entry(before, plan.model.state_dict(keep_vars=True), ctx,
                                           spec.provider.as_dict()))
    return plan


def make_plan(recipe: Recipe, registry: Any, *, check: bool = True, keep_base: bool = False) -> Plan:
    """Build the base on meta, replay the ops, trace, and check ``expect``.

    ``keep_base`` also keeps an untouched copy of the meta base (``plan.pristine``) for the
    execute pass to load weights into; only :func:`~sfsurgery.pipeline.apply` needs it.

    Raises:
        TraceError: naming the op to blame, the block path, the shapes and a fix.
    """
    base = resolve_base(recipe.base, registry)
    model = base.on_meta()
    pristine = copy.deepcopy(model) if keep_base else None
    try:
        plan = replay(recipe, registry, model, base)
        plan.pristine = pristine
        if check:
            plan.trace = run_trace(plan.model, plan.input)
    except TraceFailure:
        raise _blame(recipe, registry, base) from None
    except OpError as exc:
        raise TraceError(exc.message, exc.hint) from exc
    if check and recipe.expect.output is not None and not expect_matches(recipe.expect.output, plan.trace.outputs):
        raise TraceError(f"expect.output is {recipe.expect.output} but the model gives "
                         f"{fmt_shapes(plan.trace.outputs)}",
                         hint="fix expect.output, or the ops that shape the output")
    return plan


def _blame(recipe: Recipe, registry: Any, base: ResolvedBase) -> TraceError:
    """Find the first op after which the chain stops tracing; explain that failure."""
    states: list[tuple[InputSpec, TraceFailure | None]] = []
    for stop in range(len(recipe.ops) + 1):
        try:
            plan = replay(recipe, registry, base.on_meta(), base, stop_after=stop)
        except TraceFailure:
            break  # an op's own ctx.trace() failed: the state before it was already broken
        try:
            run_trace(plan.model, plan.input)
            states.append((plan.input, None))
        except TraceFailure as failure:
            states.append((plan.input, failure))
    good = [i for i, (_, failure) in enumerate(states) if failure is None]
    first_bad = good[-1] + 1 if good else 0
    if first_bad >= len(states):  # every state traced on replay: nothing to pin down
        return TraceError("the op chain did not trace on the meta device", hint="run with --debug")
    spec, failure = states[first_bad]
    base_args = recipe.base.create_slowfast
    message, hint = explain(failure, spec, base_args)
    if first_bad == 0:
        name = recipe.base.hub or "create_slowfast"
        who = f"base {name} with input {fmt_shapes(spec.pathway_shapes())}"
    else:
        who = f"ops[{first_bad - 1}] {recipe.ops[first_bad - 1].op}"
    return TraceError(f"{who}: {message}", hint)
