"""Shape tracing on the meta device: per-block shapes, failure location, known traps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .recipe import InputSpec

Shape = tuple[int, ...]
#: What a model takes: one clip tensor, or a list of pathway tensors ([slow, fast]).
ModelInput = torch.Tensor | list[torch.Tensor]


def tensors_of(value: Any) -> list[torch.Tensor]:
    """The tensors in a tensor or (nested) list of tensors, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_of(v)]
    return []


def shapes_of(value: Any) -> list[Shape]:
    """Flatten a tensor or (nested) list of tensors into their shapes."""
    return [tuple(t.shape) for t in tensors_of(value)]


def fmt_shapes(shapes: list[Shape]) -> str:
    text = ", ".join("(" + ",".join(map(str, s)) + ")" for s in shapes)
    return f"[{text}]" if len(shapes) > 1 else text


@dataclass
class BlockShape:
    path: str
    type: str
    inputs: list[Shape]
    outputs: list[Shape]
    params: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "inputs": [list(s) for s in self.inputs],
                "outputs": [list(s) for s in self.outputs], "params": self.params}


@dataclass
class Trace:
    """What a meta forward of the model on ``input`` produced."""

    input: InputSpec
    outputs: list[Shape]
    blocks: list[BlockShape] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the ops warned about while planning

    @property
    def output(self) -> Shape | list[Shape]:
        """One shape for a tensor output, a list of shapes for pathway outputs."""
        return self.outputs[0] if len(self.outputs) == 1 else list(self.outputs)

    def as_dict(self) -> dict[str, Any]:
        out = self.output
        return {"input": self.input.model_dump(mode="json"),
                "output": list(out) if isinstance(out, tuple) else [list(s) for s in out],
                "blocks": [b.as_dict() for b in self.blocks]}


class TraceFailure(Exception):
    """The meta forward raised inside ``module`` at ``path``."""

    def __init__(self, path: str, module: nn.Module | None, inputs: list[Shape], error: Exception):
        super().__init__(str(error))
        self.path, self.module, self.inputs, self.error = path, module, inputs, error


def block_paths(model: nn.Module) -> list[str]:
    """The blocks the trace reports: ``blocks.N`` for pytorchvideo nets, else top-level children."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        return [f"blocks.{i}" for i in range(len(blocks))]
    return [name for name, _ in model.named_children()]


def example_inputs(spec: InputSpec, device: torch.device | str = "meta",
                   generator: torch.Generator | None = None) -> ModelInput:
    """Model inputs shaped like ``spec``: zeros, or normal noise drawn from ``generator``."""
    shapes = spec.pathway_shapes()
    if generator is None:
        tensors = [torch.zeros(s, device=device) for s in shapes]
    else:
        tensors = [torch.randn(s, generator=generator).to(device) for s in shapes]
    return tensors if spec.alpha is not None else tensors[0]


_SHAPE_KEEPING = (nn.ReLU, nn.Dropout, nn.Identity)


def _shape_only_batchnorm(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2 or x.shape[1] != self.num_features:
        raise RuntimeError(f"{type(self).__name__}({self.num_features}) got {x.shape[1] if x.dim() > 1 else x.dim()} "
                           "channels")
    return x


def _identity(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x


def _shape_only_forwards(model: nn.Module) -> list[nn.Module]:
    """Skip computing what keeps its input's shape (BatchNorm, ReLU, ...): 7x faster on meta.

    Meta tensors carry shapes only, so this changes no traced shape; BatchNorm still checks
    its channel count. Returns the patched modules (their instance ``forward`` is removed after).
    """
    patched = []
    for module in model.modules():
        if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            module.forward = _shape_only_batchnorm.__get__(module)
        elif type(module) in _SHAPE_KEEPING:
            module.forward = _identity.__get__(module)
        else:
            continue
        patched.append(module)
    return patched


def _hooked_forward(model: nn.Module, inputs: ModelInput) -> tuple[Any, list[BlockShape]]:
    """A forward with every module hooked; a failure names the innermost running module."""
    wanted = set(block_paths(model))
    stack: list[tuple[str, nn.Module, list[Shape]]] = []
    blocks: list[BlockShape] = []

    def enter(name: str):
        def hook(module, args):
            stack.append((name, module, shapes_of(args)))
        return hook

    def leave(name: str):
        def hook(module, args, output):
            _, _, shapes_in = stack.pop()
            if name in wanted:
                params = sum(p.numel() for p in module.parameters())
                blocks.append(BlockShape(name, type(module).__name__, shapes_in, shapes_of(output), params))
        return hook

    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave(name)))
    patched = _shape_only_forwards(model)
    try:
        with torch.no_grad():
            output = model(inputs)
    except Exception as exc:
        path, module, shapes_in = stack[-1] if stack else ("model", model, [])
        raise TraceFailure(path, module, shapes_in, exc) from exc
    finally:
        for module in patched:
            del module.forward
        for handle in handles:
            handle.remove()
    return output, blocks


def run_trace(model: nn.Module, spec: InputSpec) -> Trace:
    """Run a forward on meta tensors shaped like ``spec``, hooking every module.

    Raises:
        TraceFailure: naming the innermost module that was running when it failed.
    """
    output, blocks = _hooked_forward(model, example_inputs(spec))
    return Trace(spec, shapes_of(output), blocks)


def traced_output_shapes(model: nn.Module, inputs: ModelInput) -> list[Shape]:
    """Output shapes of a meta ``model`` on meta ``inputs``; raises TraceFailure like :func:`run_trace`."""
    output, _ = _hooked_forward(model, inputs)
    return shapes_of(output)


def explain(failure: TraceFailure, spec: InputSpec, base_args: dict[str, Any] | None) -> tuple[str, str | None]:
    """Turn a failure into ``(message, hint)``, recognising pytorchvideo's known traps."""
    module, inputs = failure.module, failure.inputs
    where = f"{failure.path} ({type(module).__name__}) got {fmt_shapes(inputs)}"
    error = str(failure.error).strip().splitlines()[0] if str(failure.error).strip() else type(failure.error).__name__
    swap_hint = "add `- op: swap_pool` before the head: adaptive pooling accepts any clip size"
    if isinstance(module, (nn.AvgPool3d, nn.MaxPool3d)) and inputs:
        size = module.kernel_size
        kernel = tuple(map(int, size)) if isinstance(size, tuple) else (int(size),) * 3  # X3D's hold numpy ints
        if any(k > d for k, d in zip(kernel, inputs[0][2:])):
            return (f"{where}: {type(module).__name__} kernel {tuple(kernel)} is larger than the "
                    f"feature map {inputs[0][2:]} (clip {spec.frames} frames at "
                    f"{spec.size[0]}x{spec.size[1]})", swap_hint)
    type_name = type(module).__name__
    if type_name == "PoolConcatPathway":
        return (f"{where}: the fixed head pools leave pathways of different sizes ({error})", swap_hint)
    if type_name == "SpatioTemporalClsPositionalEncoding":  # MViT: one learned embedding per patch of its clip
        grid = "x".join(map(str, getattr(module, "patch_embed_shape", ())))
        return (f"{where}: MViT's positional encoding is learned for the {grid} patches of the clip it was built "
                f"for, not those of a {spec.frames}x{spec.size[0]}x{spec.size[1]} clip",
                "MViT takes only its own clip: leave input.frames and input.size at the base's defaults")
    if type_name == "FuseFastToSlow" and len(inputs) == 2 and spec.alpha:
        slow_t, fast_t = inputs[0][2], inputs[1][2]
        stride = module.conv_fast_to_slow.stride[0]  # the model's alpha
        message = (f"{where}: the fast-to-slow fusion turns fast T={fast_t} into "
                   f"ceil({fast_t}/{stride}), which does not meet slow T={slow_t}")
        if spec.alpha != stride:
            return message, f"input.alpha must be the model's fusion stride ({stride}), not {spec.alpha}"
        return message, frames_hint(spec.frames, stride)
    if isinstance(module, nn.Conv3d) and inputs and len(inputs[0]) > 1 and inputs[0][1] != module.in_channels:
        message = f"{where}: {failure.path} expects {module.in_channels} input channels, not {inputs[0][1]}"
        ratio = (base_args or {}).get("slowfast_channel_reduction_ratio")
        if "fusion" in failure.path and ratio is not None:
            ratio = ratio[0] if isinstance(ratio, (list, tuple)) else ratio
            stem = (base_args or {}).get("stem_dim_outs", (64, 8))
            return message, (f"slowfast_channel_reduction_ratio {ratio} needs a fast stem of "
                             f"{stem[0] // ratio} channels: set stem_dim_outs: [{stem[0]}, {stem[0] // ratio}]")
        if failure.path.startswith("blocks.0.multipathway_blocks") or inputs[0][1] == spec.channels:
            return message, "set input.channels to what the stem takes, or adapt the stem (grayscale_stem, adapt_stem)"
        return message, None
    return f"{where}: {error}", None


def frames_hint(frames: int, alpha: int) -> str:
    """How to fix fast frames that alpha does not divide (the fusion needs slow T = fast T / alpha)."""
    lower = max(alpha, frames // alpha * alpha)
    return f"use frames divisible by alpha ({alpha}), e.g. frames={lower} or frames={lower + alpha}"


def expect_matches(expected: list, outputs: list[Shape]) -> bool:
    wanted = [expected] if expected and isinstance(expected[0], int) else expected
    if len(wanted) != len(outputs):
        return False
    return all(len(w) == len(o) and all(a in (-1, b) for a, b in zip(w, o))
               for w, o in zip(wanted, outputs))
