"""Built-in bases: pytorchvideo's one-pathway hub video classifiers.

Each builder is pytorchvideo's own hub function called with ``pretrained=False``, so state-dict
keys and shapes are pytorchvideo's; ``pretrained: true`` reads the model-zoo file (the URLs of
pytorchvideo's hub modules) through the torch hub cache with sfsurgery's safe loader.

The default clip and ``preprocess`` are the model zoo's evaluation settings: PySlowFast's
``configs/Kinetics/pytorchvideo/*.yaml`` (NUM_FRAMES, SAMPLING_RATE, TEST_CROP_SIZE; 3-crop
testing scales the short side to the crop; MViT tests one 224 crop of a 256 short side).
X3D's builders size their fixed head pool for a smaller crop (``builder_crop``: X3D-S 160) than
the evaluation crop (182): at 182 the stock pool slides over the larger feature map (stride 1)
and the head averages the window predictions, which is how the model zoo evaluates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..hookspecs import hookimpl
from .families import CSN, EFFICIENT_X3D, MVIT, R2PLUS1D, RESNET, X3D

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from ..registrars import BaseRegistrar

MODEL_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)

#: Stem, then each residual stage (what ``freeze stages: N`` counts).
NET_STAGES = ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4")
#: I3D and C2D: ``blocks.2`` is a parameter-free max pool between the first two stages.
POOLED_STAGES = ("blocks.0", "blocks.1", "blocks.3", "blocks.4", "blocks.5")
EFFICIENT_STAGES = ("s1", "s2", "s3", "s4", "s5")
#: MViT has no residual stages: the patch embedding, then each of its 16 transformer blocks.
MVIT_STAGES = ("patch_embed", *(f"blocks.{i}" for i in range(16)))


@dataclass(frozen=True)
class HubBase:
    """One hub classifier: the model zoo's evaluation clip and where its weights are.

    Attributes:
        crop: the evaluation crop (the default ``input.size``). side: the short side before it.
        builder_crop: the crop whose feature map the stock head pool covers exactly (``None``:
            the head pools adaptively): where ``swap_pool`` leaves the output unchanged.
    """

    name: str
    family: str
    file: str
    frames: int
    sampling_rate: int
    crop: int
    side: int
    stages: tuple[str, ...]
    builder_crop: int | None = None
    build_on: Literal["meta", "cpu"] = "meta"

    @property
    def weights(self) -> str:
        return f"{MODEL_ZOO}/{self.file}"

    def register_kwargs(self) -> dict[str, Any]:
        return {"family": self.family, "weights": self.weights, "stages": self.stages, "build_on": self.build_on,
                "input": {"frames": self.frames, "alpha": None, "size": [self.crop, self.crop]},
                "preprocess": {"sampling_rate": self.sampling_rate, "side": self.side, "mean": MEAN, "std": STD}}


HUB_BASES = (
    HubBase("x3d_xs", X3D, "X3D_XS.pyth", 4, 12, 182, 182, NET_STAGES, builder_crop=160),
    HubBase("x3d_s", X3D, "X3D_S.pyth", 13, 6, 182, 182, NET_STAGES, builder_crop=160),
    HubBase("x3d_m", X3D, "X3D_M.pyth", 16, 5, 256, 256, NET_STAGES, builder_crop=224),
    HubBase("x3d_l", X3D, "X3D_L.pyth", 16, 5, 356, 356, NET_STAGES, builder_crop=312),
    HubBase("slow_r50", RESNET, "SLOW_8x8_R50.pyth", 8, 8, 256, 256, NET_STAGES, builder_crop=224),
    HubBase("i3d_r50", RESNET, "I3D_8x8_R50.pyth", 8, 8, 256, 256, POOLED_STAGES, builder_crop=224),
    HubBase("c2d_r50", RESNET, "C2D_8x8_R50.pyth", 8, 8, 256, 256, POOLED_STAGES, builder_crop=224),
    HubBase("csn_r101", CSN, "CSN_32x2_R101.pyth", 32, 2, 256, 256, NET_STAGES, builder_crop=224),
    HubBase("r2plus1d_r50", R2PLUS1D, "R2PLUS1D_16x4_R50.pyth", 16, 4, 256, 256, NET_STAGES, builder_crop=224),
    # MViT's positional encoding fixes the clip (16 or 32 x 224 x 224); its builder calls .item()
    HubBase("mvit_base_16x4", MVIT, "MVIT_B_16x4.pyth", 16, 4, 224, 256, MVIT_STAGES, build_on="cpu"),
    HubBase("mvit_base_32x3", MVIT, "MVIT_B_32x3_f294077834.pyth", 32, 3, 224, 256, MVIT_STAGES, build_on="cpu"),
    # converted from X3D-XS / X3D-S ("original form"): the same evaluation
    HubBase("efficient_x3d_xs", EFFICIENT_X3D, "efficient_x3d_xs_original_form.pyth", 4, 12, 182, 182,
            EFFICIENT_STAGES),
    HubBase("efficient_x3d_s", EFFICIENT_X3D, "efficient_x3d_s_original_form.pyth", 13, 6, 182, 182,
            EFFICIENT_STAGES),
)


def hub_builder(name: str) -> Callable[..., nn.Module]:
    """``build(**kwargs)``: ``pytorchvideo.models.hub.<name>(pretrained=False, **kwargs)``."""

    def build(**kwargs: Any) -> nn.Module:
        from .._pytorchvideo import hub

        return getattr(hub, name)(pretrained=False, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"pytorchvideo.models.hub.{name}(pretrained=False)"
    return build


@hookimpl
def register_bases(register: BaseRegistrar) -> None:
    for base in HUB_BASES:
        register(base.name, hub_builder(base.name), **base.register_kwargs())
