"""Shared fixtures: real pytorchvideo models and model-zoo-layout checkpoints.

Checkpoints are built from pytorchvideo's own builders with randomised BatchNorm
statistics and affine parameters, so every branch (including the residual branches whose
final BN pytorchvideo initialises to zero) changes the output.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from pytorchvideo.models.slowfast import create_slowfast

from sfsurgery.plugins import Registry


def randomize_batchnorm(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def stock_model(seed: int = 0, **kwargs) -> nn.Module:
    """pytorchvideo's create_slowfast with random weights and BN statistics, in eval mode."""
    torch.manual_seed(seed)
    return randomize_batchnorm(create_slowfast(**kwargs), seed + 1).eval()


def save_zoo_checkpoint(model: nn.Module, path: Path, **extra) -> Path:
    """The model zoo's layout: {"model_state": ..., "epoch": np.int64}."""
    torch.save({"model_state": model.state_dict(), "epoch": np.int64(196), **extra}, path)
    return path


def clip(spec: tuple[int, int, int, int, int], alpha: int = 4, seed: int = 0) -> list[torch.Tensor]:
    """[slow, fast] for a (B, C, T_fast, H, W) spec; fresh tensors every call."""
    b, c, t, h, w = spec
    g = torch.Generator().manual_seed(seed)
    fast = torch.randn(b, c, t, h, w, generator=g)
    return [fast[:, :, ::alpha].clone(), fast]


@pytest.fixture
def registry() -> Registry:
    """A fresh registry (fresh plugin manager) per test."""
    return Registry()


@pytest.fixture(scope="session")
def r18() -> nn.Module:
    """Stock SlowFast R18 (bottleneck blocks), randomised BN, eval mode. Do not mutate."""
    return stock_model(model_depth=18)


@pytest.fixture(scope="session")
def r18_checkpoint(tmp_path_factory, r18) -> Path:
    return save_zoo_checkpoint(r18, tmp_path_factory.mktemp("zoo") / "SLOWFAST_R18.pyth")


def r18_recipe(checkpoint: Path | None = None, ops: list | None = None, **extra) -> dict:
    base = {"create_slowfast": {"model_depth": 18}}
    if checkpoint is not None:
        base["checkpoint"] = str(checkpoint)
    return {"name": "r18", "base": base, "ops": ops or [], **extra}
