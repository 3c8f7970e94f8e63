"""pydantic validation errors as one readable line, with near-miss suggestions."""

from __future__ import annotations

import re
import typing

import pydantic
from pydantic import BaseModel

from ..suggest import did_you_mean

_INPUT_CHARS = 60


def _loc_text(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, str) and not re.fullmatch(r"[\w.-]{1,100}", part):
            part = repr(part)[:60]  # a key with spaces, newlines or nothing in it: shown quoted
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


def _short_input(value: object) -> str:
    """The offending value, cut short: inputs may be huge (never format them whole)."""
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value)}"
    text = repr(value if not isinstance(value, str) else value[: _INPUT_CHARS + 1])
    return text if len(text) <= _INPUT_CHARS else text[: _INPUT_CHARS - 3] + "..."


def format_validation_error(exc: pydantic.ValidationError, model: type[BaseModel], prefix: str = "",
                            noun: str = "key") -> str:
    """One line for all problems: ``ops[2].num_clases: unknown parameter, did you mean num_classes?``.

    Args:
        exc: what pydantic raised.
        model: the model that was validated (for near-miss suggestions).
        prefix: the location of ``model`` in the recipe, e.g. ``ops[2]``.
        noun: what an unknown field is called (``key`` or ``parameter``).
    """
    lines = []
    for err in exc.errors()[:5]:
        loc = tuple(err["loc"])
        path = _loc_text(loc)
        where = f"{prefix}.{path}" if prefix and path else (prefix or path or "recipe")
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            known = list(owner.model_fields) if owner else []
            lines.append(f"{where}: unknown {noun}{did_you_mean(str(loc[-1])[:100], known)}")
        elif err["type"] == "missing":
            lines.append(f"{where}: required")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = "" if err["type"].startswith("value_error") else f" (got {_short_input(err.get('input'))})"
            lines.append(f"{where}: {msg}{got}")
    return "; ".join(lines)
