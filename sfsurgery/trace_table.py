"""The ``sfsurgery trace`` table: per-module input and output shapes, parameters and MACs, on meta.

Shapes come from forward hooks on every module, so multi-pathway blocks show every pathway's
input and output. MACs (multiply-accumulates) are counted for convolutions and linear layers,
which hold all but a sliver of a video network's arithmetic: a conv's output size times its
kernel volume times its input channels per group; a linear layer's output size times its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .recipe import InputSpec
from .trace import Shape, _shape_only_forwards, example_inputs, shapes_of


@dataclass
class ModuleRow:
    """One module in the table; ``depth`` 1 is a top-level block."""

    path: str
    type: str
    depth: int
    inputs: list[Shape]
    outputs: list[Shape]
    params: int
    macs: int = 0


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one conv or linear layer for ``output`` (0 for other modules)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def module_table(model: nn.Module, spec: InputSpec, depth: int = 2) -> list[ModuleRow]:
    """Rows for every module called up to ``depth`` levels deep, in call order (on the meta device)."""
    rows: list[ModuleRow] = []
    stack: list[ModuleRow] = []
    leaf_macs: dict[str, int] = {}

    def enter(name: str):
        def hook(module, args):
            row = ModuleRow(name, type(module).__name__, len(stack) + 1, shapes_of(args), [],
                            sum(p.numel() for p in module.parameters()))
            stack.append(row)
            if row.depth <= depth:
                rows.append(row)
        return hook

    def leave(name: str):
        def hook(module, args, output):
            row = stack.pop()
            row.outputs = shapes_of(output)
            if isinstance(output, torch.Tensor):
                leaf_macs[name] = leaf_macs.get(name, 0) + layer_macs(module, output)
        return hook

    handles = [h for name, module in model.named_modules() if name
               for h in (module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave(name)))]
    patched = _shape_only_forwards(model)
    try:
        with torch.no_grad():
            model(example_inputs(spec))
    finally:
        for module in patched:
            del module.forward
        for handle in handles:
            handle.remove()
    for row in rows:
        row.macs = sum(m for path, m in leaf_macs.items() if path == row.path or path.startswith(row.path + "."))
    return rows


def format_table(rows: list[ModuleRow], spec: InputSpec, title: str) -> str:
    """The table as text: a title, the input, one line per module, and the totals."""

    def shapes(items: list[Shape]) -> str:
        text = ", ".join("(" + ",".join(map(str, s)) + ")" for s in items)
        return f"[{text}]" if len(items) > 1 else text

    names = ["slow", "fast"] if spec.alpha is not None else ["clip"]
    lines = [title, "input  " + ", ".join(f"{n} {shapes([s])}" for n, s in zip(names, spec.pathway_shapes())), ""]
    width = max([len(r.path) + 2 * (r.depth - 1) for r in rows] + [6])
    type_width = max([len(r.type) for r in rows] + [4])
    lines.append(f"{'module':<{width}}  {'type':<{type_width}}  {'params':>12}  {'GMACs':>8}  input -> output")
    for row in rows:
        name = "  " * (row.depth - 1) + row.path
        lines.append(f"{name:<{width}}  {row.type:<{type_width}}  {row.params:>12,}  {row.macs / 1e9:>8.3f}  "
                     f"{shapes(row.inputs)} -> {shapes(row.outputs)}")
    top = [r for r in rows if r.depth == 1]
    lines.append(f"{'total':<{width}}  {'':<{type_width}}  {sum(r.params for r in top):>12,}  "
                 f"{sum(r.macs for r in top) / 1e9:>8.3f}")
    return "\n".join(lines)
