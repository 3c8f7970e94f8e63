"""The recipe document: what a YAML recipe may contain (pydantic models, no plugin knowledge)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

RECIPE_VERSION = 1
DTYPES = ("float32", "float16", "bfloat16")
#: No clip dimension may exceed this (a meta trace is free, but predict and load allocate).
MAX_DIM = 65_536


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Document(BaseModel):
    """Recipe sections: validated from JSON in strict mode (``true`` is not the integer 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


Dim = Annotated[int, Field(ge=1, le=MAX_DIM)]


class BaseConfig(_Document):
    """Where the network and its weights come from."""

    hub: str | None = Field(None, description="a registered base, e.g. slowfast_r50", max_length=200)
    create_slowfast: dict[str, Any] | None = Field(
        None, description="plain keyword arguments of pytorchvideo's create_slowfast"
    )
    pretrained: bool = Field(False, description="load the base's model-zoo weights")
    checkpoint: str | None = Field(None, description="weights file, relative to the recipe", max_length=4096)
    checkpoint_format: str = Field("auto", max_length=200)
    checkpoint_key: str = Field("auto", max_length=200)
    load: Literal["strict", "matching"] = "strict"

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> BaseConfig:
        if (self.hub is None) == (self.create_slowfast is None):
            raise ValueError("give exactly one of base.hub or base.create_slowfast")
        if self.pretrained and self.checkpoint:
            raise ValueError("give base.pretrained: true or base.checkpoint, not both")
        if self.pretrained and self.create_slowfast is not None:
            raise ValueError("create_slowfast has no model-zoo weights: use base.checkpoint")
        return self


class InputConfig(_Document):
    """The clip the model must accept; unset fields come from the base."""

    batch: Dim | None = None
    channels: Dim | None = None
    frames: Dim | None = Field(None, description="frames per clip (the fast pathway's for SlowFast)")
    alpha: Dim | None = Field(None, description="slow pathway gets frames // alpha")
    size: tuple[Dim, Dim] | None = None


class InputSpec(_Strict):
    """A resolved clip spec; ops may change it (``ctx.input.channels = 1``).

    ``alpha`` is the SlowFast fusion stride (slow frames = ``frames // alpha``); ``None`` means
    the model takes one clip tensor instead of a ``[slow, fast]`` list.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    batch: Dim = 1
    channels: Dim = 3
    frames: Dim = 32
    alpha: Dim | None = 4
    size: tuple[Dim, Dim] = (224, 224)

    def pathway_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the model inputs: [slow, fast], or one clip when ``alpha`` is None."""
        b, c, t, (h, w) = self.batch, self.channels, self.frames, self.size
        if self.alpha is None:
            return [(b, c, t, h, w)]
        return [(b, c, t // self.alpha, h, w), (b, c, t, h, w)]


class Preprocess(_Strict):
    """How decoded frames become the model's input (the model zoo's evaluation settings).

    A clip spans ``frames × sampling_rate`` consecutive source frames; the short side is scaled
    to ``side``, then the center is cropped to the input size and normalised.
    """

    sampling_rate: Dim = 2
    side: Dim = 256
    mean: tuple[float, ...] = Field((0.45, 0.45, 0.45), min_length=1, max_length=16)
    std: tuple[PositiveFloat, ...] = Field((0.225, 0.225, 0.225), min_length=1, max_length=16)


class OpCall(_Document):
    """One entry of ``ops``: ``op: name`` plus that op's parameters, flat in YAML."""

    op: str = Field(max_length=200)
    params: dict[str, Any] = {}

    @pydantic.model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "params" not in data:
            data = dict(data)
            return {"op": data.pop("op", None), "params": data}
        return data

    def flat(self) -> dict[str, Any]:
        return {"op": self.op, **self.params}


class Expect(_Document):
    output: list[int] | list[list[int]] | None = Field(
        None, description="final output shape; -1 matches any size; a list for pathways"
    )


class SaveConfig(_Document):
    path: str | None = Field(None, description="relative to the recipe; default out/<name>.safetensors",
                             max_length=4096)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    labels: list[Annotated[str, Field(max_length=500)]] | Annotated[str, Field(max_length=4096)] | None = Field(
        None, max_length=100_000,
        description="class names, one per output class: a list, or a text file (one per line, relative to the recipe)")


class PreprocessConfig(_Document):
    """The ``preprocess:`` section; unset fields come from the base (the model zoo's values)."""

    sampling_rate: Dim | None = Field(None, description="a clip spans frames x sampling_rate source frames")
    side: Dim | None = Field(None, description="short side scaled to this, then center crop to input.size")
    mean: list[float] | None = Field(None, min_length=1, max_length=16)
    std: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=1, max_length=16)


class RecipeDocument(_Document):
    """A recipe as written, schema-checked. :func:`sfsurgery.load_recipe` resolves it."""

    sfsurgery: Literal[1] = RECIPE_VERSION
    name: str = Field("model", pattern=r"^[A-Za-z0-9._-]+$", max_length=200)
    seed: int = Field(0, ge=0, lt=2**63, description="every newly initialised tensor comes from this seed")
    base: BaseConfig
    input: InputConfig = InputConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    ops: list[OpCall] = Field([], max_length=1000)
    expect: Expect = Expect()
    save: SaveConfig = SaveConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain data with defaults left out (ops flat, as in YAML)."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        data["base"] = self.base.model_dump(mode="json", exclude_defaults=True)
        data["ops"] = [op.flat() for op in self.ops]
        return data


__all__ = ["DTYPES", "MAX_DIM", "RECIPE_VERSION", "BaseConfig", "Expect", "InputConfig", "InputSpec", "OpCall",
           "Preprocess", "PreprocessConfig", "RecipeDocument", "SaveConfig", "PositiveInt"]
