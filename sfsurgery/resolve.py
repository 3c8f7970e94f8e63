"""Resolve a recipe once: ops looked up and their parameters typed, base, input, weights.

:func:`load_recipe` is the only place that reads a registry for a recipe. What it returns, a
:class:`Recipe`, is what planning, execution, checkpoint loading and the file metadata take.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from .base import ResolvedBase, resolve_base
from .deploy import read_labels, resolve_preprocess
from .errors import Location, OpError, RecipeError
from .plugins import Registry
from .recipe import InputSpec, Preprocess, RecipeDocument, apply_overrides, format_validation_error, read_recipe_file
from .recipe.schema import Expect, SaveConfig
from .registrars import FormatSpec, OpSpec, Provider


@dataclass(frozen=True)
class ResolvedOp:
    """One op of the recipe, looked up and with its parameters validated.

    Attributes:
        params: the keyword arguments the op is called with, in their Python types.
        params_json: the same as plain JSON (what the file records).
    """

    index: int
    name: str
    spec: OpSpec
    params: dict[str, Any]
    params_json: dict[str, Any]

    @property
    def provider(self) -> Provider:
        return self.spec.provider

    def as_call(self) -> dict[str, Any]:
        """The recipe entry: ``{"op": name, **params}`` with defaults filled in."""
        return {"op": self.name, **self.params_json}


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights come from (nothing is read or downloaded when resolving)."""

    kind: Literal["pretrained", "checkpoint"]
    path: Path
    format: FormatSpec
    key: str
    mode: Literal["strict", "matching"]
    url: str | None = None


@dataclass(frozen=True)
class Recipe:
    """A recipe resolved against a registry. Build it with :func:`load_recipe`.

    Attributes:
        document: the recipe as written (:class:`~sfsurgery.recipe.RecipeDocument`).
        root: the folder its relative paths resolve against.
        base: the resolved base. input: the initial clip (base defaults + ``input:``).
        ops: the resolved ops. weights: the checkpoint or model-zoo file, or None (random).
        preprocess: how decoded frames become the input. labels: class names, or None.
    """

    document: RecipeDocument
    root: Path
    base: ResolvedBase
    input: InputSpec
    ops: tuple[ResolvedOp, ...]
    weights: WeightsSource | None
    preprocess: Preprocess
    labels: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.document.name

    @property
    def seed(self) -> int:
        return self.document.seed

    @property
    def expect(self) -> Expect:
        return self.document.expect

    @property
    def save(self) -> SaveConfig:
        return self.document.save

    @property
    def providers(self) -> list[Provider]:
        """Who provided the base, the checkpoint format and each op (plugins the file depends on)."""
        found = [self.base.provider] + [op.provider for op in self.ops]
        if self.weights is not None:
            found.append(self.weights.format.provider)
        return [p for p in found if p is not None]

    def resolve_path(self, path: str) -> Path:
        try:
            return (self.root / path).resolve()
        except (OSError, ValueError, RuntimeError):  # NUL byte, symlink loop: the reader refuses it with a message
            return Path(os.path.abspath(self.root / path))

    def output_path(self) -> Path:
        """``save.path`` (relative to the recipe), else ``out/<name>.safetensors`` (relative to the cwd)."""
        if self.save.path:
            return self.resolve_path(self.save.path)
        return Path("out") / f"{self.name}.safetensors"

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data, defaults left out (as the user wrote it, plus overrides)."""
        return self.document.to_dict()

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


def load_recipe(
    source: str | Path | Mapping[str, Any] | Recipe,
    overrides: Mapping[str, Any] | None = None,
    *,
    registry: Registry | None = None,
    plugins: Iterable[Any] = (),
) -> Recipe:
    """Read, override, validate and resolve a recipe, including every op's parameters.

    Args:
        source: a YAML file path, a dict built in code, or a Recipe (re-resolved with ``overrides``).
        overrides: ``{"ops.2.num_classes": 10}``; applied before validation.
        registry: a :class:`~sfsurgery.plugins.Registry`; by default a fresh one.
        plugins: extra plugin modules or objects for the default registry.

    Returns:
        The resolved :class:`Recipe`. Paths in it resolve against the YAML file's folder.

    Raises:
        RecipeError: the recipe breaks the schema or names what no plugin provides.
        OpError: an op does not support the base's family.

    Example:
        >>> recipe = load_recipe("recipes/custom_head.yaml", {"ops.0.num_classes": 10})
        >>> recipe.ops[0].params["num_classes"]
        10
    """
    name = None
    if isinstance(source, Recipe):
        if overrides is None and registry is None and not plugins:
            return source
        data, root = source.to_dict(), source.root
    elif isinstance(source, Mapping):
        data, root = dict(source), Path.cwd()
    else:
        path = Path(source)
        data, root, name = read_recipe_file(path), path.resolve().parent, str(path)
        data.setdefault("name", path.stem if path.stem else "model")
    data = apply_overrides(data, overrides)
    try:
        document = RecipeDocument.model_validate_json(_as_json(data, "recipe"))
    except pydantic.ValidationError as exc:
        raise RecipeError(format_validation_error(exc, RecipeDocument),
                          hint="see the recipe reference: docs/recipes.md") from None
    try:
        return resolve(document, root, registry if registry is not None else Registry(plugins))
    except RecipeError as exc:
        raise exc.locate(recipe=name) from None


def resolve(document: RecipeDocument, root: Path, registry: Registry) -> Recipe:
    """Resolve a schema-checked document against ``registry`` (see :func:`load_recipe`)."""
    base = resolve_base(document.base, registry)
    ops = tuple(_resolve_op(i, call.op, call.params, registry, base) for i, call in enumerate(document.ops))
    given = document.input.model_dump(exclude_none=True)
    try:
        clip = InputSpec(**{**base.input.model_dump(), **given})
    except pydantic.ValidationError as exc:
        raise RecipeError(format_validation_error(exc, InputSpec, prefix="input"),
                          hint="set every input field the base leaves invalid") from None
    preprocess = resolve_preprocess(base.preprocess, document.preprocess, clip, "size" in given)
    labels = read_labels(document.save.labels, root)
    recipe = Recipe(document, root, base, clip, ops, None, preprocess, labels)
    return dataclasses.replace(recipe, weights=_resolve_weights(recipe, registry))


def _resolve_op(index: int, name: str, raw: dict[str, Any], registry: Registry, base: ResolvedBase) -> ResolvedOp:
    try:
        spec = registry.op(name)
    except RecipeError as exc:
        raise RecipeError(exc.detail, hint=exc.hint, where=_at(index)) from None
    try:
        validated = spec.params.model_validate_json(_as_json(raw, f"ops[{index}]"))
    except pydantic.ValidationError as exc:
        raise RecipeError(format_validation_error(exc, spec.params, prefix=f"ops[{index}]", noun="parameter"),
                          hint=f"see: sfsurgery ops {name}") from None
    if spec.families is not None and base.family not in spec.families:
        raise OpError(f"does not apply to base {base.name} (family {base.family}); it needs a base of family "
                      f"{' or '.join(spec.families)}", hint="remove the op, or choose a base it supports",
                      where=_at(index, name))
    params = {key: getattr(validated, key) for key in type(validated).model_fields}
    return ResolvedOp(index, name, spec, params, validated.model_dump(mode="json"))


def _as_json(data: Any, where: str) -> str:
    """Recipes are plain JSON values (a dict built in code may hold tuples, not numpy scalars)."""
    try:
        return json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: not a plain JSON value ({str(exc)[:200]})",
                          hint="use numbers, strings, booleans, null, lists and mappings") from None


def _at(index: int, name: str | None = None) -> Location:
    return Location(op_index=index, op_name=name)


def _resolve_weights(recipe: Recipe, registry: Registry) -> WeightsSource | None:
    config = recipe.document.base
    if config.pretrained:
        if not recipe.base.weights_url:
            raise RecipeError(f"base {recipe.base.name} has no model-zoo weights", hint="use base.checkpoint")
        from .checkpoints import pretrained_path

        url = recipe.base.weights_url
        path, kind = pretrained_path(url, download=False), "pretrained"
    elif config.checkpoint:
        url, path, kind = None, recipe.resolve_path(config.checkpoint), "checkpoint"
    else:
        url = path = kind = None
    fmt = config.checkpoint_format
    if fmt == "auto":
        fmt = "safetensors" if path is not None and path.suffix.lower() == ".safetensors" else "pytorchvideo"
    try:
        spec = registry.format(fmt)
    except RecipeError as exc:
        raise RecipeError(exc.detail, hint=exc.hint, where=Location(field="base.checkpoint_format")) from None
    if path is None:
        return None
    return WeightsSource(kind, path, spec, config.checkpoint_key, config.load, url)
