"""What sfsurgery writes into a file's ``__metadata__``, and the recipe it rebuilds from.

safetensors metadata is str -> str, so every value is canonical JSON (sorted keys, no
whitespace: identical inputs give identical bytes). :mod:`.header` parses it back, typed.
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import FileFormatError, SurgeryError
from ..recipe import RECIPE_VERSION
from .header import FILE_FORMAT, Recorded

if TYPE_CHECKING:
    from ..plan import Plan
    from ..plugins import Registry
    from ..resolve import Recipe
    from .reader import FileHeader


def canonical_json(value: Any) -> str:
    """Deterministic JSON of plain values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    # numpy ints (pytorchvideo's conv strides), torch.Size, tuples -> plain JSON values
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def rebuild_recipe(recipe: Recipe) -> dict[str, Any]:
    """What rebuilds the architecture: base, input, ops, seed (never paths or weights)."""
    config = recipe.document.base
    base = {"hub": config.hub} if config.hub else {"create_slowfast": config.create_slowfast}
    return {"sfsurgery": RECIPE_VERSION, "name": recipe.name, "seed": recipe.seed, "base": base,
            "input": recipe.input.model_dump(mode="json"), "ops": [op.as_call() for op in recipe.ops],
            "expect": recipe.expect.model_dump(mode="json"), "save": {"dtype": recipe.save.dtype}}


def _versions(recipe: Recipe) -> dict[str, Any]:
    """sfsurgery, torch, pytorchvideo, and each plugin distribution the file depends on."""
    import torch

    plugins = {p.distribution: p.version for p in recipe.providers if p.distribution not in (None, "sfsurgery")}
    return {"sfsurgery": __version__, "torch": torch.__version__,
            "pytorchvideo": importlib.metadata.version("pytorchvideo"), "plugins": plugins}


def build_metadata(recipe: Recipe, plan: Plan, report: dict[str, Any]) -> dict[str, str]:
    """The ``__metadata__`` of an output file (values are canonical JSON strings)."""
    return {
        "format": "pt",
        "sfsurgery.format": str(FILE_FORMAT),
        "sfsurgery.recipe": canonical_json(rebuild_recipe(recipe)),
        "sfsurgery.input": canonical_json(report["input"]),
        "sfsurgery.output_shape": canonical_json(report["output"]),
        "sfsurgery.source": canonical_json(report["source"]),
        "sfsurgery.lineage": canonical_json({"source": report["source"], "ops": plan.lineage}),
        "sfsurgery.params": canonical_json(report["params"]),
        "sfsurgery.versions": canonical_json(_versions(recipe)),
        "sfsurgery.preprocess": canonical_json(recipe.preprocess.model_dump(mode="json")),
        "sfsurgery.training": canonical_json(report["training"]),
        **({"sfsurgery.labels": canonical_json(list(recipe.labels))} if recipe.labels is not None else {}),
    }


def recipe_from_header(header: FileHeader, registry: Registry) -> Recipe:
    """The resolved recipe recorded in a file; every plugin it names must be installed."""
    from ..resolve import load_recipe

    name, recorded = header.name, header.recorded
    hub = recorded.recipe.base.hub
    if hub is not None and hub not in registry.bases:
        plugins = recorded.versions.plugins
        made_with = ", ".join(f"{d} {v}" for d, v in sorted(plugins.items()))
        raise FileFormatError(f"{name} needs base {hub[:100]!r}, which no installed plugin provides"
                              + (f" (it was written with {made_with})" if made_with else ""),
                              hint="install that plugin")
    for call in recorded.recipe.ops:
        if call.op not in registry.ops:
            raise FileFormatError(f"{name} needs op {call.op[:100]!r}{_provider_of(recorded, call.op)}, "
                                  "which no installed plugin provides", hint="install that plugin")
    try:
        return load_recipe(json.loads(header.metadata["sfsurgery.recipe"]), registry=registry)
    except SurgeryError as exc:
        raise FileFormatError(f"{name}: the recorded recipe is not valid here: {exc.message}",
                              hint="was it written by another sfsurgery version?") from None


def _provider_of(recorded: Recorded, op: str) -> str:
    for entry in recorded.lineage.ops:
        if entry.op == op and entry.provider is not None:
            provider = entry.provider
            made_by = f" ({provider.distribution} {provider.version})" if provider.distribution else ""
            return f" from plugin {provider.plugin}{made_by}"
    return ""
