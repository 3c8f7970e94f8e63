"""The stock classifiers of one-pathway pytorchvideo models, which ``replace_head`` keeps.

| model | head | projection | activation | fixed pool |
|---|---|---|---|---|
| X3D | ``blocks.5`` | ``blocks.5.proj`` | Softmax | ``blocks.5.pool.pool`` (in the projected pool) |
| Slow, I3D, C2D, CSN, R(2+1)D | last block | ``blocks.N.proj`` | none, Softmax (R(2+1)D) | ``blocks.N.pool`` |
| MViT | ``head`` | ``head.proj`` | none | none |
| efficient X3D | ``head``, ``projection``, ``act`` | ``projection.model`` | ``act`` (channels last) | none |

Everything learned before the projection (X3D's projected pool, MViT's ``norm_embed``) and the
stock order (projection → activation → output averaging) stay; the projection, the activation
and the dropout in front of the projection are the recipe's. SlowFast's head (a ``ResNetBasicHead``
without a pool, after ``PoolConcatPathway``) is not one of these: replace_head rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ...trace import TraceFailure


@dataclass(frozen=True)
class Slot:
    """An attribute of a module that holds a submodule (or None): ``parent.name``, at ``path`` in the model."""

    parent: nn.Module
    name: str
    path: str

    def get(self) -> nn.Module | None:
        return getattr(self.parent, self.name)

    def set(self, module: nn.Module | None) -> None:
        setattr(self.parent, self.name, module)


@dataclass(frozen=True)
class StockHead:
    """Where a one-pathway model keeps its classifier's parts.

    Attributes:
        softmax_dim: the class dimension where the activation runs (-1: efficient X3D is channels last).
        empty_activation: what stands for "no activation" (efficient X3D always calls ``act``).
    """

    kind: str  # what the head is, for the lineage note
    proj: Slot
    activation: Slot
    dropout: Slot
    pool: Slot | None
    softmax_dim: int = 1
    empty_activation: bool = False  # True: an nn.Identity, not None

    def width(self) -> int:
        """The projection's input width (a Linear, or the hidden MLP of an earlier replace_head)."""
        return self.proj.get().in_features


def pv_classes() -> dict[str, type]:
    """The pytorchvideo classes the ops dispatch on, by name (imported on first use)."""
    import warnings

    with warnings.catch_warnings():  # pytorchvideo's import-time FutureWarning, as in sfsurgery._pytorchvideo
        warnings.simplefilter("ignore", FutureWarning)
        from pytorchvideo.layers.convolutions import Conv2plus1d
        from pytorchvideo.models.accelerator.mobile_cpu.efficient_x3d import EfficientX3d
        from pytorchvideo.models.head import ResNetBasicHead, VisionTransformerBasicHead
        from pytorchvideo.models.stem import PatchEmbed
        from pytorchvideo.models.vision_transformers import MultiscaleVisionTransformers
        from pytorchvideo.models.x3d import ProjectedPool

    return {"ResNetBasicHead": ResNetBasicHead, "VisionTransformerBasicHead": VisionTransformerBasicHead,
            "ProjectedPool": ProjectedPool, "EfficientX3d": EfficientX3d, "Conv2plus1d": Conv2plus1d,
            "PatchEmbed": PatchEmbed, "MultiscaleVisionTransformers": MultiscaleVisionTransformers}


def stock_head(model: nn.Module) -> StockHead | None:
    """The stock classifier of a one-pathway pytorchvideo model (X3D, ResNet, CSN, R(2+1)D, MViT,
    efficient X3D), or None (SlowFast, a truncated model, a head sfsurgery appended)."""
    from torch import nn

    pv = pv_classes()
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks):
        head, path = blocks[-1], f"blocks.{len(blocks) - 1}"
        if isinstance(head, pv["ResNetBasicHead"]) and head.pool is not None:  # SlowFast pools before its head
            projected = isinstance(head.pool, pv["ProjectedPool"])
            pool = Slot(head.pool, "pool", f"{path}.pool.pool") if projected else Slot(head, "pool", f"{path}.pool")
            kind = "ResNetBasicHead with a projected pool" if projected else "ResNetBasicHead"
            return StockHead(kind, Slot(head, "proj", f"{path}.proj"),
                             Slot(head, "activation", f"{path}.activation"), Slot(head, "dropout", f"{path}.dropout"),
                             pool)
    head = getattr(model, "head", None)
    if isinstance(head, pv["VisionTransformerBasicHead"]):
        return StockHead("VisionTransformerBasicHead", Slot(head, "proj", "head.proj"),
                         Slot(head, "activation", "head.activation"), Slot(head, "dropout", "head.dropout"), None)
    if isinstance(model, pv["EfficientX3d"]) and getattr(model, "enable_head", False):
        return StockHead("EfficientX3d head", Slot(model.projection, "model", "projection.model"),
                         Slot(model, "act", "act"), Slot(model, "dropout", "dropout"), None,
                         softmax_dim=-1, empty_activation=True)
    return None


def fixed_pool(head: StockHead) -> nn.Module | None:
    """The head's fixed-kernel pool (AvgPool3d / MaxPool3d), or None."""
    from torch import nn

    pool = head.pool.get() if head.pool is not None else None
    return pool if isinstance(pool, (nn.AvgPool3d, nn.MaxPool3d)) else None


def globalise_stock_pool(model: nn.Module, failure: TraceFailure) -> list[str]:
    """Make a one-pathway stock head's fixed pool global when it is what failed (the clip is smaller
    than the pool); returns the paths changed (empty when the failure was elsewhere)."""
    from torch import nn

    head = stock_head(model)
    if head is None or fixed_pool(head) is None or failure.path != head.pool.path:
        return []
    head.pool.set(nn.AdaptiveAvgPool3d(1))
    return [head.pool.path]


def new_activation(head: StockHead, activation: str | None) -> nn.Module | None:
    from torch import nn

    if activation is None:
        return nn.Identity() if head.empty_activation else None
    return {"softmax": lambda: nn.Softmax(dim=head.softmax_dim), "sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]()


def swap_projection(model: nn.Module, head: StockHead, *, num_classes: int, dropout: float, activation: str | None,
                    hidden: tuple[int, ...], init: Any, device: torch.device | str | None) -> list[str]:
    """Replace the head's projection (and activation, dropout) in place; returns the new state-dict keys.

    ``init(linear)`` initialises each new Linear (pytorchvideo's head init, from the op's generator).
    """
    from torch import nn

    from .modules import HiddenProjection

    width = head.width()
    if device is None:
        device = next((p.device for p in model.parameters()), None)
    proj = nn.Linear(width, num_classes, device=device) if not hidden else \
        HiddenProjection(width, tuple(hidden), num_classes, device=device)
    for layer in proj.modules():
        if isinstance(layer, nn.Linear):
            init(layer)
    proj.train(model.training)
    head.proj.set(proj)
    head.dropout.set(nn.Dropout(dropout))
    head.activation.set(new_activation(head, activation))
    return [f"{head.proj.path}.{key}" for key in proj.state_dict()]
