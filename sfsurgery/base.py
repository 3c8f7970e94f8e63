"""Resolving ``base:``: a registered base or ``create_slowfast`` arguments, ready to build."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from . import slowfast
from .context import BaseInfo
from .errors import Location, RecipeError
from .plugins import Registry
from .recipe import InputSpec, Preprocess
from .recipe.schema import BaseConfig
from .registrars import BaseSpec, Provider

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ResolvedBase:
    """A base ready to build: what it is, its defaults, and how to build it."""

    name: str
    family: str
    input: InputSpec
    preprocess: Preprocess
    stages: tuple[str, ...]
    weights_url: str | None
    provider: Provider | None  # None: sfsurgery's own create_slowfast
    describe: dict[str, Any]
    build: Callable[[], nn.Module] = field(repr=False)
    build_on: Literal["meta", "cpu"] = "meta"

    @property
    def info(self) -> BaseInfo:
        return BaseInfo(self.name, self.family, self.stages)

    def on_meta(self) -> nn.Module:
        """The architecture on the meta device: shapes only, no memory, no init cost."""
        import torch

        if self.build_on == "cpu":  # e.g. builders that call .item() while building
            return self.seeded(0).to("meta")
        with torch.device("meta"):
            return self.build()

    def seeded(self, seed: int) -> nn.Module:
        """A real, randomly initialised model: the builder's own init under ``seed``."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build()


def resolve_base(config: BaseConfig, registry: Registry) -> ResolvedBase:
    """The base a recipe's ``base:`` names: a registered hub base, or ``create_slowfast`` arguments."""
    if config.hub is not None:
        try:
            spec: BaseSpec = registry.base(config.hub)
        except RecipeError as exc:
            raise RecipeError(exc.detail, hint=exc.hint, where=Location(field="base.hub")) from None
        return ResolvedBase(spec.name, spec.family, spec.input, spec.preprocess, spec.stages, spec.weights,
                            spec.provider, {"hub": spec.name, "pretrained": config.pretrained},
                            _guarded(spec.build, {}, f"base {spec.name}"), spec.build_on)
    from ._pytorchvideo import create_slowfast

    kwargs = slowfast.create_slowfast_kwargs(config.create_slowfast or {})
    return ResolvedBase("create_slowfast", slowfast.FAMILY, slowfast.create_slowfast_input(kwargs),
                        slowfast.PREPROCESS, slowfast.STAGES, None, None,
                        {"create_slowfast": config.create_slowfast},
                        _guarded(create_slowfast, kwargs, "create_slowfast"))


def _guarded(build: Callable[..., nn.Module], kwargs: dict, what: str) -> Callable[[], nn.Module]:
    """The builder, with its errors on bad arguments turned into one RecipeError."""

    def run() -> nn.Module:
        try:
            return build(**kwargs)
        except Exception as exc:  # the builder's arguments come from the recipe: any failure is theirs
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise RecipeError(f"{what} could not build the model: {type(exc).__name__}: {first}",
                              hint="check the base arguments against pytorchvideo's create_slowfast") from exc

    return run
