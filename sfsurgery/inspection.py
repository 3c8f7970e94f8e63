"""``sfsurgery inspect``: what a saved file holds, without building the model."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from .file.reader import read_metadata, verify_data
from .plugins import Registry


def inspect_file(path: str | Path, *, registry: Registry | None = None) -> dict[str, Any]:
    """Summarise an sfsurgery file: recipe, shapes, parameters, dtypes, source, lineage.

    Args:
        path: a file written by ``sfsurgery apply``.
        registry: used to check that every op's plugin is installed (``load`` needs them).

    Returns:
        A JSON-ready dict. Raises FileFormatError for files ``load`` would refuse.

    Example:
        >>> inspect_file("out/custom_head.safetensors")["output_shape"]
        [1, 1000]
    """
    from safetensors import safe_open

    from .file.metadata import read_field, recipe_from_metadata

    path = Path(path)
    metadata = read_metadata(path)
    recipe = recipe_from_metadata(metadata, path.name, registry or Registry())
    meta = {key: read_field(metadata, f"sfsurgery.{key}", path.name, required=False)
            for key in ("input", "source", "lineage", "params", "versions")}
    output_shape = read_field(metadata, "sfsurgery.output_shape", path.name, kind=list)
    verified = verify_data(path, metadata)
    dtypes: Counter[str] = Counter()
    values = 0
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        for key in keys:
            tensor = f.get_slice(key)
            dtypes[str(tensor.get_dtype())] += 1
            values += math.prod(tensor.get_shape())
    lineage = [entry for entry in meta["lineage"].get("ops") or [] if isinstance(entry, dict)]
    return {
        "file": str(path), "bytes": path.stat().st_size, "format": int(metadata["sfsurgery.format"]),
        "recipe": {"name": recipe.name, "seed": recipe.seed, **recipe.to_dict()},
        "ops": [op.name for op in recipe.ops],
        "input": meta["input"], "output_shape": output_shape, "params": meta["params"],
        "tensors": len(keys), "values": values, "dtypes": dict(sorted(dtypes.items())),
        "source": meta["source"],
        "lineage": [{"op": e.get("op"), **{k: len(e.get(k) or []) for k in ("added", "removed", "transformed")},
                     "notes": e.get("notes") or []} for e in lineage],
        "versions": meta["versions"], "data_verified": bool(verified),
    }
