"""Recipes: the schema, safe YAML loading, ``--set`` overrides and readable errors."""

from __future__ import annotations

import copy
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, PrivateAttr

from .errors import RecipeError
from .suggest import did_you_mean

FORMAT_VERSION = 1
DTYPES = ("float32", "float16", "bfloat16")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseConfig(_Strict):
    """Where the network and its weights come from."""

    hub: str | None = Field(None, description="a registered base, e.g. slowfast_r50")
    create_slowfast: dict[str, Any] | None = Field(
        None, description="plain keyword arguments of pytorchvideo's create_slowfast"
    )
    pretrained: bool = Field(False, description="load the base's model-zoo weights")
    checkpoint: str | None = Field(None, description="weights file, relative to the recipe")
    checkpoint_format: str = "auto"
    checkpoint_key: str = "auto"
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


class InputConfig(_Strict):
    """The clip the model must accept; unset fields come from the base."""

    batch: PositiveInt | None = None
    channels: PositiveInt | None = None
    frames: PositiveInt | None = Field(None, description="fast-pathway frames")
    alpha: PositiveInt | None = Field(None, description="slow pathway gets frames // alpha")
    size: tuple[PositiveInt, PositiveInt] | None = None


class InputSpec(_Strict):
    """A resolved clip spec; ops may change it (``ctx.input.channels = 1``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    batch: PositiveInt = 1
    channels: PositiveInt = 3
    frames: PositiveInt = 32
    alpha: PositiveInt | None = 4
    size: tuple[PositiveInt, PositiveInt] = (224, 224)

    def pathway_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the model inputs: [slow, fast], or one clip when ``alpha`` is None."""
        b, c, t, (h, w) = self.batch, self.channels, self.frames, self.size
        if self.alpha is None:
            return [(b, c, t, h, w)]
        return [(b, c, t // self.alpha, h, w), (b, c, t, h, w)]


class OpCall(_Strict):
    """One entry of ``ops``: ``op: name`` plus that op's parameters, flat in YAML."""

    op: str
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


class Expect(_Strict):
    output: list[int] | list[list[int]] | None = Field(
        None, description="final output shape; -1 matches any size; a list for pathways"
    )


class SaveConfig(_Strict):
    path: str | None = Field(None, description="relative to the recipe; default out/<name>.safetensors")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"


class Recipe(_Strict):
    """A validated recipe. Build with :func:`load_recipe`."""

    sfsurgery: Literal[1] = FORMAT_VERSION
    name: str = Field("model", pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = Field(0, ge=0, lt=2**63, description="every newly initialised tensor comes from this seed")
    base: BaseConfig
    input: InputConfig = InputConfig()
    ops: list[OpCall] = []
    expect: Expect = Expect()
    save: SaveConfig = SaveConfig()
    _root: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def root(self) -> Path:
        """The folder recipe paths are relative to."""
        return self._root

    def resolve_path(self, path: str) -> Path:
        return (self._root / path).resolve()

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_defaults=True)
        data["base"] = self.base.model_dump(mode="json", exclude_defaults=True)
        data["ops"] = [op.flat() for op in self.ops]
        return data

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The recipe as YAML; written to ``path`` when given.

        Relative paths in the recipe are rewritten against ``path``'s folder, so the written
        recipe finds the same checkpoint wherever it is saved (sweeps write into new folders).
        """
        data = self.to_dict()
        if path is not None:
            folder = Path(path).resolve().parent
            for section, key in (("base", "checkpoint"), ("save", "path")):
                value = data.get(section, {}).get(key)
                if value and not Path(value).is_absolute():
                    data[section][key] = os.path.relpath(self.resolve_path(value), folder)
        text = yaml.safe_dump(data, sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


def _set_path(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"--set {dotted}: {'.'.join(parts[:i]) or 'recipe'} has "
                                  f"{len(node)} entries, no index {part!r}")
            part = int(part)
        elif not isinstance(node, dict):
            raise RecipeError(f"--set {dotted}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]


def apply_overrides(data: dict, overrides: Mapping[str, Any] | None) -> dict:
    """Return a copy of ``data`` with each ``"dotted.path": value`` set."""
    data = copy.deepcopy(data)
    for dotted, value in (overrides or {}).items():
        _set_path(data, dotted, value)
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["ops.2.num_classes=10"]`` → ``{"ops.2.num_classes": 10}`` (values parsed as YAML)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE", hint="e.g. --set ops.0.num_classes=10")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out


def _loc_text(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model whose fields live at ``loc`` (for suggestions)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        for arg in list(candidates):
            candidates += typing.get_args(arg)
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def format_validation_error(exc: pydantic.ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per problem: ``ops[2].num_clases: unknown parameter, did you mean num_classes?``."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = _loc_text(loc)
        where = f"{prefix}.{path}" if prefix and path else (prefix or path or "recipe")
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            known = list(owner.model_fields) if owner else []
            noun = "parameter" if prefix.startswith("ops[") else "key"
            lines.append(f"{where}: unknown {noun}{did_you_mean(loc[-1], known)}")
        elif err["type"] == "missing":
            lines.append(f"{where}: required")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = "" if err["type"].startswith("value_error") else f" (got {err.get('input')!r})"
            lines.append(f"{where}: {msg}{got}")
    return "; ".join(lines)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}{at}: {problem}", hint="recipes are plain YAML; tags such as "
                          "!!python/... are refused") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with base: and ops:")
    return data


def load_recipe(
    source: str | Path | Mapping[str, Any] | Recipe,
    overrides: Mapping[str, Any] | None = None,
    *,
    registry: Any = None,
    plugins: typing.Iterable[Any] = (),
) -> Recipe:
    """Load, override and validate a recipe, including every op's parameters.

    Args:
        source: a YAML file path, a dict built in code, or a Recipe.
        overrides: ``{"ops.2.num_classes": 10}``; applied before validation.
        registry: a :class:`~sfsurgery.plugins.Registry`; by default a fresh one.
        plugins: extra plugin modules or objects for the default registry.

    Returns:
        The validated :class:`Recipe`. Paths in it resolve against the YAML file's folder.

    Example:
        >>> recipe = load_recipe("recipes/custom_head.yaml", {"ops.0.num_classes": 10})
    """
    from .bases import check_base
    from .plugins import Registry

    if isinstance(source, Recipe):
        data, root = source.to_dict(), source.root
    elif isinstance(source, Mapping):
        data, root = dict(source), Path.cwd()
    else:
        path = Path(source)
        data, root = _read_yaml(path), path.resolve().parent
        data.setdefault("name", path.stem)
    data = apply_overrides(data, overrides)
    try:
        recipe = Recipe.model_validate(data)
    except pydantic.ValidationError as exc:
        raise RecipeError(format_validation_error(exc, Recipe)) from None
    recipe._root = root
    registry = registry or Registry(plugins)
    for i, call in enumerate(recipe.ops):
        try:
            spec = registry.get("ops", call.op)
            call.params = spec.validate(call.params, where=f"ops[{i}]")
        except RecipeError as exc:
            message = exc.message if exc.message.startswith("ops[") else f"ops[{i}]: {exc.message}"
            raise RecipeError(message, hint=exc.hint or f"see: sfsurgery ops {call.op}") from None
    check_base(recipe.base, registry)
    return recipe
