"""Shared fixtures: real pytorchvideo models and model-zoo-layout checkpoints.

Checkpoints are built from pytorchvideo's own builders with randomised BatchNorm
statistics and affine parameters, so every branch (including the residual branches whose
final BN pytorchvideo initialises to zero) changes the output.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from sfsurgery.plugins import Registry
from sfsurgery.testing import example_clip, randomize_batchnorm, save_zoo_checkpoint, stock_slowfast

__all__ = ["clip", "randomize_batchnorm", "save_zoo_checkpoint", "stock_model"]


stock_model = stock_slowfast  # pytorchvideo's create_slowfast, random weights and BN statistics, eval mode
clip = example_clip  # fresh [slow, fast] tensors for a (B, C, T_fast, H, W) spec


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
