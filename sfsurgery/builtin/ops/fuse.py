"""``fuse_bn``: fold each BatchNorm that directly follows a convolution into it (for inference).

The conv → BN pairs come from the traced graph (``torch.export`` on the meta device), not from
module order: X3D and R(2+1)D build their BatchNorms away from the convolution they normalise, and
a convolution whose output feeds anything besides its BatchNorm cannot be folded.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from ...hookspecs import hookimpl

if TYPE_CHECKING:
    from torch import nn

    from ...context import OpContext
    from ...registrars import OpRegistrar
    from ...trace import ModelInput


def _module_path(node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else None


def conv_bn_pairs(model: nn.Module, example_input: ModelInput) -> tuple[list[tuple[str, str]], list[str]]:
    """``([(conv path, bn path), ...], [bn paths that cannot be folded])`` from the exported graph.

    Traced on a meta copy (shapes only); ``example_input`` only lends its shapes.
    """
    import torch

    meta = copy.deepcopy(model).to("meta").eval()
    shapes = [t.shape for t in (example_input if isinstance(example_input, (list, tuple)) else [example_input])]
    inputs = [torch.empty(s, device="meta") for s in shapes]
    graph = torch.export.export(meta, (inputs if isinstance(example_input, (list, tuple)) else inputs[0],)).graph
    pairs, left = [], []
    for node in graph.nodes:
        if node.op != "call_function" or "batch_norm" not in str(node.target):
            continue
        source, bn_path = node.args[0], _module_path(node)
        is_conv = getattr(source, "op", None) == "call_function" and "conv" in str(source.target)
        conv_path = _module_path(source) if is_conv else None
        modules = dict(model.named_modules())
        if is_conv and len(source.users) == 1 and conv_path in modules and bn_path in modules:
            pairs.append((conv_path, bn_path))
        elif bn_path:
            left.append(bn_path)
    return pairs, left


def fuse_bn(model: nn.Module, example_input: ModelInput) -> tuple[nn.Module, list[str], list[str]]:
    """Fold every foldable BatchNorm into its convolution, in place.

    Returns:
        ``(model, fused BN paths, BN paths left as they were)``. Exact in eval mode (the fused
        conv computes the same outputs); training the fused model is not the same model.
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs, left = conv_bn_pairs(model, example_input)
    for conv_path, bn_path in pairs:
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
        fused.weight.requires_grad_(conv.weight.requires_grad)
        fused.bias.requires_grad_(conv.weight.requires_grad)  # torch's fusion makes the new bias a frozen one
        model.set_submodule(conv_path, fused)
        model.set_submodule(bn_path, nn.Identity())
    return model, [bn for _, bn in pairs], left


def fuse_bn_op(ctx: OpContext) -> None:
    """Fold every BatchNorm that directly follows a convolution into that convolution (inference).

    Exact in eval mode: same outputs, fewer tensors (the BN's are removed, the conv gains a bias).
    Pairs come from the traced graph; a BatchNorm that cannot be folded stays and is reported.
    The file is for inference: fine-tuning a fused model is not fine-tuning the original.
    """
    from ...trace import example_inputs

    _, fused, left = fuse_bn(ctx.model, example_inputs(ctx.input, "meta"))
    ctx.record(note=f"folded {len(fused)} BatchNorms into their convolutions"
               + (f"; {len(left)} left ({', '.join(left[:3])}{', ...' if len(left) > 3 else ''})" if left else ""))
    if left:
        ctx.warn(f"{len(left)} BatchNorms do not follow a convolution alone and stay: {', '.join(left[:3])}")


@hookimpl
def register_ops(register: OpRegistrar) -> None:
    register("fuse_bn", fuse_bn_op)
