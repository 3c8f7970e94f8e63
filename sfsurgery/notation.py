"""One readable notation for parameter types, derived from their JSON Schema.

``sfsurgery ops`` shows what a recipe may write, in YAML's terms: ``integer > 0``,
``softmax | sigmoid | relu | null``, ``list of integer > 0``, ``number >= 0, < 1``. The same
schema is what ``sfsurgery schema`` exports, so the listing and the editor never disagree.
"""

from __future__ import annotations

from typing import Any

_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
           ("minItems", "at least"), ("maxItems", "at most"))


def notation(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> str:
    """The readable type of one JSON Schema (a field of an op's parameter schema).

    Example:
        >>> notation({"type": "array", "items": {"type": "integer", "exclusiveMinimum": 0}})
        'list of integer > 0'
    """
    defs = defs or {}
    if "$ref" in schema:
        return notation(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(notation(option, defs) for option in schema[key])
    if "enum" in schema:
        return " | ".join("null" if v is None else str(v) for v in schema["enum"])
    if "const" in schema:
        return str(schema["const"])
    kind = schema.get("type")
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(notation(item, defs) for item in schema["prefixItems"]) + "]"
        text = f"list of {notation(schema['items'], defs)}" if "items" in schema else "list"
    elif kind == "object":
        text = f"mapping of string to {notation(schema['additionalProperties'], defs)}" \
            if isinstance(schema.get("additionalProperties"), dict) else "mapping"
    else:
        text = kind if isinstance(kind, str) else "any value"
    bounds = [f"{sign} {schema[key]}" for key, sign in _BOUNDS if key in schema]
    return f"{text} {', '.join(bounds)}" if bounds else text


def describe_params(model: Any) -> list[dict[str, Any]]:
    """One row per parameter of an op's pydantic parameter model: name, type, required, default."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    return [{"name": name, "type": notation(field, defs), "required": name in required,
             "default": field.get("default")} for name, field in schema.get("properties", {}).items()]
