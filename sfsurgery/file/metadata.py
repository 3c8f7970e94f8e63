"""What sfsurgery writes into a file's ``__metadata__``, and reading it back.

safetensors metadata is str -> str, so every value is canonical JSON (sorted keys, no
whitespace: identical inputs give identical bytes). Reading trusts nothing: missing or damaged
metadata is a FileFormatError, never a traceback.
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import FileFormatError, OpError, RecipeError
from ..recipe import RECIPE_VERSION

if TYPE_CHECKING:
    from ..plan import Plan
    from ..plugins import Registry
    from ..resolve import Recipe

#: The file format's own version (the recipe's ``sfsurgery: 1`` is versioned separately).
FILE_FORMAT = 1


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
    }


def read_field(metadata: dict[str, str], key: str, name: str, *, required: bool = True, kind: type = dict) -> Any:
    """One JSON value (a ``kind``) from a file's metadata, once it is known to be an sfsurgery file."""
    if "sfsurgery.format" not in metadata or "sfsurgery.recipe" not in metadata:
        raise FileFormatError(f"{name} has no sfsurgery metadata",
                              hint="only files written by sfsurgery apply can be rebuilt")
    version = metadata["sfsurgery.format"]
    if not (version.isascii() and version.isdecimal()) or len(version) > 6:
        raise FileFormatError(f"{name}: damaged metadata (sfsurgery.format is {version[:20]!r})",
                              hint="write the file again with sfsurgery apply")
    if int(version) > FILE_FORMAT:
        raise FileFormatError(f"{name} uses sfsurgery file format {version}; this sfsurgery reads "
                              f"format {FILE_FORMAT}", hint="upgrade sfsurgery")
    if key not in metadata:
        if required:
            raise FileFormatError(f"{name}: metadata {key} is missing",
                                  hint="write the file again with sfsurgery apply")
        return kind()
    try:
        value = json.loads(metadata[key])
    except (json.JSONDecodeError, RecursionError):
        value = None
    if not isinstance(value, kind):
        raise FileFormatError(f"{name}: damaged metadata ({key} is not a JSON {kind.__name__})",
                              hint="write the file again with sfsurgery apply")
    return value


def recipe_from_metadata(metadata: dict[str, str], name: str, registry: Registry) -> Recipe:
    """The resolved recipe recorded in a file; every plugin it names must be installed."""
    from ..resolve import load_recipe

    data = read_field(metadata, "sfsurgery.recipe", name)
    base = data.get("base")
    hub = base.get("hub") if isinstance(base, dict) else None
    if isinstance(hub, str) and hub not in registry.bases:
        versions = read_field(metadata, "sfsurgery.versions", name, required=False)
        plugins = versions.get("plugins") if isinstance(versions.get("plugins"), dict) else {}
        made_with = ", ".join(f"{d} {v}" for d, v in sorted(plugins.items(), key=str))
        raise FileFormatError(f"{name} needs base {hub[:100]!r}, which no installed plugin provides"
                              + (f" (it was written with {made_with})" if made_with else ""),
                              hint="install that plugin")
    calls = data.get("ops") if isinstance(data.get("ops"), list) else []
    for call in calls:
        op = call.get("op") if isinstance(call, dict) else None
        if isinstance(op, str) and op not in registry.ops:
            raise FileFormatError(f"{name} needs op {op[:100]!r}{_provider_of(metadata, op, name)}, "
                                  "which no installed plugin provides", hint="install that plugin")
    try:
        return load_recipe(data, registry=registry)
    except (RecipeError, OpError) as exc:
        raise FileFormatError(f"{name}: the recorded recipe is not valid here: {exc.message}",
                              hint="was it written by another sfsurgery version?") from None


def _provider_of(metadata: dict[str, str], op: str | None, name: str) -> str:
    lineage = read_field(metadata, "sfsurgery.lineage", name, required=False)
    entries = lineage.get("ops") if isinstance(lineage.get("ops"), list) else []
    for entry in entries:
        provider = entry.get("provider") if isinstance(entry, dict) else None
        if isinstance(provider, dict) and entry.get("op") == op and isinstance(provider.get("plugin"), str):
            made_by = f" ({provider['distribution']} {provider['version']})" if provider.get("distribution") else ""
            return f" from plugin {provider['plugin']}{made_by}"
    return ""
