"""What an op receives: :class:`OpContext`.

An op runs twice per apply: first on the meta device (planning: shapes only, no memory), then
on the real tensors (executing). The two passes see the same context API; ``ctx.trace()``
answers from the plan in the second pass, so an op never traces real weights.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .recipe import InputSpec
from .trace import Shape, Trace, TraceFailure, run_trace


def op_seed(seed: int, index: int) -> int:
    """Op ``index`` draws from its own generator, so editing one op never reseeds another."""
    return int.from_bytes(hashlib.sha256(f"sfsurgery:{seed}:{index}".encode()).digest()[:7], "little")


@dataclass(frozen=True)
class BaseInfo:
    """What an op may want to know about the base it works on.

    Attributes:
        name: the hub name, or ``create_slowfast``.
        family: ``slowfast``, ``x3d``, ``resnet``, ``mvit``, ... (a plugin may name others).
        stages: module paths of the stem, then each residual stage.
    """

    name: str
    family: str
    stages: tuple[str, ...] = ()


@dataclass
class Records:
    """An op's own additions to its lineage (key changes are detected automatically)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    transformed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class OpContext:
    """What an op sees, in both passes.

    Attributes:
        model: the model so far: on the meta device while planning, real tensors while
            executing. Edit it in place, or assign a new module to replace it. To replace a
            submodule: ``ctx.model.set_submodule("blocks.6.proj", nn.Linear(..., device=ctx.device))``.
        input: the clip spec (an :class:`~sfsurgery.recipe.InputSpec`); an op that changes what
            the model takes sets it, e.g. ``ctx.input.channels = 1``.
        generator: the only source of randomness for new weights, seeded from
            ``(recipe seed, op index)``: ``nn.init.normal_(w, std=0.01, generator=ctx.generator)``.
        device: where new modules go (``meta`` while planning, ``cpu`` while executing):
            ``nn.Linear(a, b, device=ctx.device)``.
        base: a :class:`BaseInfo` (name, family, stages).
        index, name: this op's position in the recipe and its name.

    Ops run under ``torch.no_grad()`` with the model in eval mode; ``apply`` returns the
    model in eval mode (call ``.train()`` to fine-tune).
    """

    def __init__(self, model: nn.Module, spec: InputSpec, *, index: int, name: str, seed: int,
                 device: torch.device, base: BaseInfo, planned: Iterable[Trace | TraceFailure] | None = None):
        self.model = model
        self.input = spec
        self.index, self.name = index, name
        self.device = device
        self.base = base
        self.generator = torch.Generator().manual_seed(op_seed(seed, index))
        self.records = Records()
        self.asked: list[Trace | TraceFailure] = []  # what trace() answered, for the execute pass
        self._planned = list(planned) if planned is not None else None

    def trace(self) -> Shape | list[Shape]:
        """The current model's output shape for the current input: one shape, or a list for pathways.

        Raises:
            TraceFailure: the model does not run on this input (let it propagate, or catch it to
                repair the model and trace again).
        """
        if self._planned:  # executing: the plan's answer, in the order the op asked
            answer = self._planned.pop(0)
        else:
            model = self.model if _is_meta(self.model) else copy.deepcopy(self.model).to("meta")
            try:
                answer = run_trace(model, self.input.model_copy())
            except TraceFailure as failure:
                answer = failure
        self.asked.append(answer)
        if isinstance(answer, TraceFailure):
            raise answer
        return answer.output

    def record(self, *, added: Iterable[str] = (), removed: Iterable[str] = (), transformed: Iterable[str] = (),
               note: str | None = None) -> None:
        """Add to this op's lineage.

        Args:
            added / removed / transformed: state-dict keys. Keys that appear, disappear or get
                new tensors are detected anyway; declare ``added`` for a key that replaces a
                tensor of the same name (it is then listed as removed and added).
            note: one line for the apply report and ``inspect``, e.g. ``"head 2304 -> 10 classes"``.
        """
        for name, keys in (("added", added), ("removed", removed), ("transformed", transformed)):
            keys = list(keys)
            if not all(isinstance(k, str) for k in keys):
                raise TypeError(f"ctx.record({name}=...) takes state-dict keys (strings)")
            getattr(self.records, name).extend(keys)
        if note is not None:
            if not isinstance(note, str):
                raise TypeError("ctx.record(note=...) takes a string")
            self.records.notes.append(note)

    def warn(self, message: str) -> None:
        """Report something the user should know but that does not stop the recipe.

        ``validate`` and ``apply`` print it as a ``warning:`` line, list it in the report and issue
        a Python ``SurgeryWarning`` (once, while planning).
        """
        if not isinstance(message, str):
            raise TypeError("ctx.warn(message) takes a string")
        if message not in self.records.warnings:
            self.records.warnings.append(message)


def _is_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in model.state_dict().values())


Lineage = dict[str, object]


def lineage_entry(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], ctx: OpContext,
                  provider: dict[str, str | None]) -> Lineage:
    """What one op did to the state dict: detected key changes merged with ``ctx.record``."""
    declared = set(ctx.records.added)  # a key the op says it added replaces what stood there
    detected = {
        "added": [k for k in after if k not in before],
        "removed": [k for k in before if k not in after or k in declared],
        "transformed": [k for k in after if k in before and after[k] is not before[k] and k not in declared],
    }
    merged = {key: sorted(set(auto) | set(getattr(ctx.records, key))) for key, auto in detected.items()}
    return {"index": ctx.index, "op": ctx.name, "provider": provider, **merged, "notes": list(ctx.records.notes)}


OpFunction = Callable[..., None]
