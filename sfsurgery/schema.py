"""JSON Schema (draft 2020-12) of recipes, with each op entry checked by its own parameters.

Editors use it through a first line ``# yaml-language-server: $schema=recipe.schema.json``.
"""

from __future__ import annotations

import inspect
from typing import Any

from .plugins import Registry
from .recipe import RecipeDocument
from .registrars import OpSpec

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _op_schema(name: str, spec: OpSpec, defs: dict[str, Any]) -> dict[str, Any]:
    params = spec.params.model_json_schema(ref_template="#/$defs/{model}")
    defs.update(params.pop("$defs", {}))
    help_lines = spec.help.splitlines()
    return {
        "type": "object",
        "title": name,
        "description": f"{help_lines[0] if help_lines else name} (plugin: {spec.provider})",
        "properties": {"op": {"const": name}, **params.get("properties", {})},
        "required": ["op", *params.get("required", [])],
        "additionalProperties": False,
    }


def recipe_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The recipe schema for the ops, bases and formats that ``registry`` knows.

    Example:
        >>> schema = recipe_schema()
        >>> schema["properties"]["ops"]["items"]["oneOf"][0]["title"]
        'adapt_stem'
    """
    registry = registry or Registry()
    schema = RecipeDocument.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})
    defs.pop("OpCall", None)
    schema["properties"]["ops"] = {
        "type": "array",
        "description": "surgery ops, applied in order",
        "items": {"oneOf": [_op_schema(n, registry.ops[n], defs) for n in sorted(registry.ops)]},
    }
    base = defs["BaseConfig"]["properties"]
    base["hub"] = {"anyOf": [{"enum": sorted(registry.bases)}, {"type": "null"}], "default": None,
                   "description": "a registered base"}
    base["checkpoint_format"] = {"enum": ["auto", *sorted(registry.formats)], "default": "auto"}
    from ._pytorchvideo import create_slowfast

    base["create_slowfast"] = {
        "anyOf": [{"type": "object", "additionalProperties": False,
                   "properties": {p: {} for p in inspect.signature(create_slowfast).parameters}},
                  {"type": "null"}],
        "default": None, "description": "plain keyword arguments of pytorchvideo's create_slowfast"}
    return {"$schema": DIALECT, "title": "sfsurgery recipe", **schema}
