"""``grayscale_stem`` and ``adapt_stem``: change the stems' input channels.

:func:`adapt_input_weight` is a pure function over a conv weight, in the spirit of timm's
``adapt_input_conv``; :func:`adapt_stem` applies it to every pathway stem of a model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import PositiveInt

from ...errors import OpError, RecipeError
from ...hookspecs import hookimpl
from ..families import STEM

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ...context import OpContext
    from ...registrars import OpRegistrar


def adapt_input_weight(weight: torch.Tensor, in_channels: int, mode: str) -> torch.Tensor:
    """A conv weight (O, I, *k) re-shaped for ``in_channels`` input channels.

    Args:
        weight: the original kernel; I is usually 3 (RGB).
        in_channels: the new input channel count.
        mode: ``sum`` / ``mean`` (to 1 channel); ``repeat`` (timm's rule: sum for 1
            channel, else tile the kernel and scale by I/N); ``zero`` (keep the kernel on
            the first I channels, zero kernels on the rest).

    Returns:
        The new kernel, on the same device (meta included) and dtype.

    Example:
        >>> adapt_input_weight(torch.ones(8, 3, 1, 7, 7), 6, "repeat").shape
        torch.Size([8, 6, 1, 7, 7])
    """
    import torch

    old = weight.shape[1]
    if mode == "sum" or (mode == "repeat" and in_channels == 1):
        return weight.sum(dim=1, keepdim=True)
    if mode == "mean":
        return weight.mean(dim=1, keepdim=True)
    if mode == "repeat":
        tiled = weight.repeat(1, math.ceil(in_channels / old), *[1] * (weight.dim() - 2))
        return tiled[:, :in_channels] * (old / in_channels)
    if mode == "zero":
        if in_channels < old:
            raise RecipeError(f"mode zero keeps the {old} original channels: in_channels must be >= {old}",
                              hint=f"use in_channels >= {old}, or mode: repeat")
        extra = weight.new_zeros((weight.shape[0], in_channels - old, *weight.shape[2:]))
        return torch.cat([weight, extra], dim=1)
    raise ValueError(f"unknown mode {mode!r}")


#: efficient X3D's first stem conv (its s1 is a spatial conv, then a temporal one).
EFFICIENT_X3D_STEM = "s1.pathway0_stem_conv_xy.kernel.conv"


def _stem_convs(model: nn.Module) -> list[tuple[str, nn.Conv3d]]:
    """The convolutions that see the input: each ``ResNetBasicStem``'s conv (X3D's stem is two convs:
    the first one applied), MViT's patch embedding conv, efficient X3D's first conv."""
    from torch import nn

    from ..._pytorchvideo import ResNetBasicStem
    from .stock_heads import pv_classes

    pv = pv_classes()
    convs = []
    for name, module in model.named_modules():
        if isinstance(module, ResNetBasicStem):
            conv, path = module.conv, f"{name}.conv"
            if isinstance(conv, pv["Conv2plus1d"]):  # X3D: (1,3,3) spatial conv, then (5,1,1) depthwise
                first = "conv_xy" if conv.conv_xy_first else "conv_t"
                conv, path = getattr(conv, first), f"{path}.{first}"
            convs.append((path, conv))
        elif isinstance(module, pv["PatchEmbed"]) and isinstance(module.patch_model, nn.Conv3d):
            convs.append((f"{name}.patch_model", module.patch_model))
    if isinstance(model, pv["EfficientX3d"]):
        convs.append((EFFICIENT_X3D_STEM, model.get_submodule(EFFICIENT_X3D_STEM)))
    if not convs:
        raise OpError("no stem found: this op adapts pytorchvideo stems (ResNetBasicStem, X3D's stem, MViT's "
                      "patch embedding, efficient X3D's s1)", hint="the built-in bases all have one")
    return convs


def adapt_stems(model: nn.Module, in_channels: int, mode: str) -> list[str]:
    """Re-shape every stem conv for ``in_channels``; return the weight keys changed."""
    from torch import nn

    paths = []
    for path, conv in _stem_convs(model):
        conv.weight = nn.Parameter(adapt_input_weight(conv.weight.detach(), in_channels, mode))
        conv.in_channels = in_channels
        paths.append(f"{path}.weight")
    return paths


def grayscale_stem(model: nn.Module, *, mode: Literal["sum", "mean"] = "sum") -> nn.Module:
    """Make every pathway stem take 1 channel, in place; returns ``model``.

    ``sum``: model(gray) equals the original model(gray repeated to RGB). ``mean``: a third of it.
    """
    adapt_stems(model, 1, mode)
    return model


def adapt_stem(model: nn.Module, *, in_channels: int, mode: Literal["repeat", "zero"] = "repeat") -> nn.Module:
    """Make every pathway stem take ``in_channels`` channels, in place; returns ``model``.

    ``repeat``: timm's rule (tile the RGB kernel, scale by 3/N). ``zero``: RGB kernels kept on
    channels 0-2, zero kernels on the rest.
    """
    adapt_stems(model, in_channels, mode)
    return model


def _adapt_op(ctx: OpContext, in_channels: int, mode: str) -> None:
    paths = adapt_stems(ctx.model, in_channels, mode)
    ctx.input.channels = in_channels
    ctx.record(transformed=paths, note=f"stems take {in_channels} channel(s) ({mode})")


def grayscale_stem_op(ctx: OpContext, *, mode: Literal["sum", "mean"] = "sum") -> None:
    """Make the stem take 1 channel (both SlowFast pathways' stems; X3D's first stem conv; MViT's patch conv).

    ``sum`` (default): model(gray) equals the original model(gray repeated to RGB).
    ``mean``: the kernel is averaged instead (a third of the response). Sets input.channels 1.
    """
    _adapt_op(ctx, 1, mode)


def adapt_stem_op(ctx: OpContext, *, in_channels: PositiveInt, mode: Literal["repeat", "zero"] = "repeat") -> None:
    """Make the stem take ``in_channels`` channels (depth, RGB-D, thermal ...), as grayscale_stem does.

    ``repeat`` (default): timm's rule, tile the RGB kernel and scale by 3/N.
    ``zero``: keep the RGB kernels on channels 0-2, zero kernels on the extra channels, so
    model(RGB + anything) equals the original model(RGB) until training moves them.
    """
    _adapt_op(ctx, in_channels, mode)


@hookimpl
def register_ops(register: OpRegistrar) -> None:
    register("grayscale_stem", grayscale_stem_op, families=STEM)
    register("adapt_stem", adapt_stem_op, families=STEM)
