"""The modules ops insert into a model (imported when an op runs, not when it registers)."""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"softmax": lambda: nn.Softmax(dim=1), "sigmoid": nn.Sigmoid, "relu": nn.ReLU}


class GlobalPoolConcat(nn.Module):
    """Global average pool each pathway, flatten, concatenate: (B, C_slow + C_fast)."""

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        parts = x if isinstance(x, (list, tuple)) else [x]
        pooled = [p.flatten(2).mean(-1) if p.dim() > 2 else p for p in parts]
        return torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0]


class SurgeryHead(nn.Module):
    """Global average pool → flatten → dropout → (Linear → ReLU)* → ``proj`` → activation."""

    def __init__(self, in_features: int, num_classes: int, dropout: float, hidden: tuple[int, ...],
                 activation: str | None, device=None):
        super().__init__()
        self.pool = GlobalPoolConcat()
        self.dropout = nn.Dropout(dropout)
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size, device=device), nn.ReLU()]
            width = size
        self.hidden = nn.Sequential(*layers)
        self.proj = nn.Linear(width, num_classes, device=device)
        self.activation = _ACTIVATIONS[activation]() if activation else nn.Identity()

    def forward(self, x):
        return self.activation(self.proj(self.hidden(self.dropout(self.pool(x)))))


class HiddenProjection(nn.Module):
    """(Linear → ReLU)* → ``proj``: a stock head's projection with ``hidden`` layers (replace_head)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int, device=None):
        super().__init__()
        self.in_features = in_features
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(in_features if not layers else layers[-2].out_features, size, device=device),
                       nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.proj = nn.Linear(hidden[-1] if hidden else in_features, num_classes, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.hidden(x))


class _StaysInEval:
    """A BatchNorm that stays in eval mode (mmaction2's ``norm_eval``): it normalises with its
    running statistics and never updates them, even after ``model.train()``. Same state-dict keys."""

    def train(self, mode: bool = True):
        return super().train(False)


class FrozenBatchNorm1d(_StaysInEval, nn.BatchNorm1d):
    pass


class FrozenBatchNorm2d(_StaysInEval, nn.BatchNorm2d):
    pass


class FrozenBatchNorm3d(_StaysInEval, nn.BatchNorm3d):
    pass


FROZEN_BATCHNORM = {nn.BatchNorm1d: FrozenBatchNorm1d, nn.BatchNorm2d: FrozenBatchNorm2d,
                    nn.BatchNorm3d: FrozenBatchNorm3d}
