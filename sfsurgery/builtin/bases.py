"""Built-in bases: pytorchvideo's hub SlowFast models.

The builders call pytorchvideo's own hub functions with ``pretrained=False``, so state-dict
keys and shapes are pytorchvideo's; weights come from sfsurgery's safe loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl
from ..slowfast import FAMILY, PREPROCESS, STAGES, CLIP_8x8, CLIP_16x8

if TYPE_CHECKING:
    from torch import nn

    from ..registrars import BaseRegistrar

MODEL_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"


def slowfast_r50(**kwargs: Any) -> nn.Module:
    """SlowFast 8x8 R50 (Kinetics-400 layout, 400 classes)."""
    from .._pytorchvideo import hub

    return hub.slowfast_r50(pretrained=False, **kwargs)


def slowfast_r101(**kwargs: Any) -> nn.Module:
    """SlowFast 8x8 R101 (fusion kernel (5,1,1))."""
    from .._pytorchvideo import hub

    return hub.slowfast_r101(pretrained=False, **kwargs)


def slowfast_16x8_r101_50_50(**kwargs: Any) -> nn.Module:
    """SlowFast 16x8 R101_50_50 (16 slow / 64 fast frames)."""
    from .._pytorchvideo import hub

    return hub.slowfast_16x8_r101_50_50(pretrained=False, **kwargs)


@hookimpl
def register_bases(register: BaseRegistrar) -> None:
    common = {"family": FAMILY, "stages": STAGES, "preprocess": PREPROCESS}
    register("slowfast_r50", slowfast_r50, input=CLIP_8x8, weights=f"{MODEL_ZOO}/SLOWFAST_8x8_R50.pyth", **common)
    register("slowfast_r101", slowfast_r101, input=CLIP_8x8, weights=f"{MODEL_ZOO}/SLOWFAST_8x8_R101.pyth", **common)
    register("slowfast_16x8_r101_50_50", slowfast_16x8_r101_50_50, input=CLIP_16x8,
             weights=f"{MODEL_ZOO}/SLOWFAST_16x8_R101_50_50.pyth", **common)
