"""Built-in bases (a default plugin) and ``create_slowfast`` recipes.

The hub bases call pytorchvideo's own hub builders with ``pretrained=False``, so their
state-dict keys and shapes are pytorchvideo's; weights come from sfsurgery's safe loader.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import RecipeError
from .hookspecs import hookimpl
from .recipe import BaseConfig
from .suggest import did_you_mean

if TYPE_CHECKING:
    from torch import nn

MODEL_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
_CLIP_8x8 = {"batch": 1, "channels": 3, "frames": 32, "alpha": 4, "size": (224, 224)}
_CLIP_16x8 = {**_CLIP_8x8, "frames": 64}

# create_slowfast arguments that take code; a recipe may only switch the optional ones off.
_CALLABLE_ARGS = {"fusion_builder", "norm", "activation", "stem_function", "stem_pool",
                  "bottleneck", "head", "head_pool", "head_activation"}
_NULLABLE_ARGS = {"fusion_builder", "head", "head_pool", "head_activation"}


def slowfast_r50(**kwargs: Any) -> nn.Module:
    """SlowFast 8x8 R50 (Kinetics-400 layout, 400 classes)."""
    from ._pytorchvideo import hub

    return hub.slowfast_r50(pretrained=False, **kwargs)


def slowfast_r101(**kwargs: Any) -> nn.Module:
    """SlowFast 8x8 R101 (fusion kernel (5,1,1))."""
    from ._pytorchvideo import hub

    return hub.slowfast_r101(pretrained=False, **kwargs)


def slowfast_16x8_r101_50_50(**kwargs: Any) -> nn.Module:
    """SlowFast 16x8 R101_50_50 (16 slow / 64 fast frames)."""
    from ._pytorchvideo import hub

    return hub.slowfast_16x8_r101_50_50(pretrained=False, **kwargs)


@hookimpl
def register_bases(register):
    register("slowfast_r50", slowfast_r50, input=_CLIP_8x8,
             weights=f"{MODEL_ZOO}/SLOWFAST_8x8_R50.pyth")
    register("slowfast_r101", slowfast_r101, input=_CLIP_8x8,
             weights=f"{MODEL_ZOO}/SLOWFAST_8x8_R101.pyth")
    register("slowfast_16x8_r101_50_50", slowfast_16x8_r101_50_50, input=_CLIP_16x8,
             weights=f"{MODEL_ZOO}/SLOWFAST_16x8_R101_50_50.pyth")


def _tuples(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def create_slowfast_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    """Check recipe arguments against ``create_slowfast``'s signature; lists become tuples."""
    from ._pytorchvideo import create_slowfast

    params = inspect.signature(create_slowfast).parameters
    kwargs = {}
    for key, value in raw.items():
        where = f"base.create_slowfast.{key}"
        if key not in params:
            raise RecipeError(f"{where}: not an argument of create_slowfast{did_you_mean(key, params)}")
        if key in _CALLABLE_ARGS and not (value is None and key in _NULLABLE_ARGS):
            allowed = " (only null is accepted here)" if key in _NULLABLE_ARGS else ""
            raise RecipeError(f"{where}: takes a Python callable; recipes never import code{allowed}",
                              hint="register a base in a plugin to build custom modules")
        kwargs[key] = _tuples(value)
    return kwargs


def _create_slowfast_input(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The default clip for these arguments: channels, alpha and frames follow the model."""
    clip = dict(_CLIP_8x8)
    for key, field, default in (("input_channels", "channels", (3,)), ("slowfast_fusion_conv_stride", "alpha", (4,))):
        value = kwargs.get(key, default)
        if not isinstance(value, tuple) or not value or not isinstance(value[0], int):
            raise RecipeError(f"base.create_slowfast.{key}: expected a list of integers, got {value!r}")
        clip[field] = value[0]
    pool = kwargs.get("head_pool_kernel_sizes", ((8, 7, 7), (32, 7, 7)))
    if isinstance(pool, tuple) and pool and isinstance(pool[-1], tuple) and pool[-1] and isinstance(pool[-1][0], int):
        clip["frames"] = pool[-1][0]
    return clip


@dataclass
class ResolvedBase:
    """A base ready to build: the builder, its default clip, weights URL and description."""

    build: Callable[[], nn.Module]
    input: dict[str, Any]
    weights: str | None
    describe: dict[str, Any]

    def on_meta(self) -> nn.Module:
        """The architecture on the meta device: shapes only, no memory, no init cost."""
        import torch

        with torch.device("meta"):
            return self.build()

    def seeded(self, seed: int) -> nn.Module:
        """A real, randomly initialised model; the builder's own init under ``seed``."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build()


def check_base(config: BaseConfig, registry: Any) -> None:
    """Fail early on an unknown hub name, checkpoint format or bad create_slowfast arguments."""
    resolve_base(config, registry)
    if config.checkpoint_format != "auto":
        try:
            registry.get("formats", config.checkpoint_format)
        except RecipeError as exc:
            raise RecipeError(f"base.checkpoint_format: {exc.message}", hint=exc.hint) from None


def resolve_base(config: BaseConfig, registry: Any) -> ResolvedBase:
    if config.hub is not None:
        try:
            spec = registry.get("bases", config.hub)
        except RecipeError as exc:
            raise RecipeError(f"base.hub: {exc.message}", hint=exc.hint) from None
        describe = {"hub": config.hub, "pretrained": config.pretrained}
        return ResolvedBase(_guarded(spec.build, {}, f"base {config.hub}"), dict(spec.input),
                            spec.weights, describe)
    from ._pytorchvideo import create_slowfast

    kwargs = create_slowfast_kwargs(config.create_slowfast or {})
    describe = {"create_slowfast": config.create_slowfast}
    return ResolvedBase(_guarded(create_slowfast, kwargs, "create_slowfast"),
                        _create_slowfast_input(kwargs), None, describe)


def _guarded(build: Callable[..., nn.Module], kwargs: dict, what: str) -> Callable[[], nn.Module]:
    def run() -> nn.Module:
        try:
            return build(**kwargs)
        except (TypeError, ValueError, AssertionError, IndexError, KeyError, RuntimeError) as exc:
            raise RecipeError(f"{what} could not build the model: {type(exc).__name__}: {exc}",
                              hint="check the base arguments against pytorchvideo's create_slowfast") from exc
    return run
