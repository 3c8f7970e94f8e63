"""What every SlowFast base shares: ``base.create_slowfast`` recipes and the default clip.

The recipe key ``create_slowfast`` builds pytorchvideo's ``create_slowfast`` from plain
keyword arguments; the family-specific pieces of the trace (fusion and head-pool hints) live in
:mod:`sfsurgery.trace`, and :func:`sfsurgery.video.pack_pathways` makes the two-pathway input.
"""

from __future__ import annotations

import inspect
from typing import Any

from .errors import RecipeError
from .recipe import InputSpec, Preprocess
from .suggest import did_you_mean

FAMILY = "slowfast"
#: Stem, then the four residual stages (what ``freeze stages: N`` counts).
STAGES = ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4")
CLIP_8x8 = InputSpec(batch=1, channels=3, frames=32, alpha=4, size=(224, 224))
CLIP_16x8 = CLIP_8x8.model_copy(update={"frames": 64})
#: The model zoo's Kinetics evaluation: 2-frame sampling for the fast pathway, short side 256.
PREPROCESS = Preprocess(sampling_rate=2, side=256, mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))

# create_slowfast arguments that take code; a recipe may only switch the optional ones off.
_CALLABLE_ARGS = {"fusion_builder", "norm", "activation", "stem_function", "stem_pool",
                  "bottleneck", "head", "head_pool", "head_activation"}
_NULLABLE_ARGS = {"fusion_builder", "head", "head_pool", "head_activation"}


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
        where = f"base.create_slowfast.{str(key)[:100]}"
        if key not in params:
            raise RecipeError(f"{where}: not an argument of create_slowfast{did_you_mean(str(key)[:100], params)}",
                              hint="see pytorchvideo.models.slowfast.create_slowfast for its arguments")
        if key in _CALLABLE_ARGS and not (value is None and key in _NULLABLE_ARGS):
            allowed = " (only null is accepted here)" if key in _NULLABLE_ARGS else ""
            raise RecipeError(f"{where}: takes a Python callable; recipes never import code{allowed}",
                              hint="register a base in a plugin to build custom modules")
        kwargs[key] = _tuples(value)
    return kwargs


def create_slowfast_input(kwargs: dict[str, Any]) -> InputSpec:
    """The default clip for these arguments: channels, alpha and frames follow the model."""
    clip = CLIP_8x8.model_dump()
    for key, name, default in (("input_channels", "channels", (3,)), ("slowfast_fusion_conv_stride", "alpha", (4,))):
        value = kwargs.get(key, default)
        if not isinstance(value, tuple) or not value or not isinstance(value[0], int) or isinstance(value[0], bool) \
                or value[0] < 1:
            raise RecipeError(f"base.create_slowfast.{key}: expected a list of positive integers",
                              hint=f"e.g. {key}: {list(default)}")
        clip[name] = value[0]
    pool = kwargs.get("head_pool_kernel_sizes", ((8, 7, 7), (32, 7, 7)))
    if isinstance(pool, tuple) and pool and isinstance(pool[-1], tuple) and pool[-1] and isinstance(pool[-1][0], int):
        clip["frames"] = pool[-1][0]
    try:
        return InputSpec(**clip)
    except ValueError:
        raise RecipeError("base.create_slowfast: its arguments give no valid default clip",
                          hint="set input: (frames, channels, alpha) in the recipe") from None
