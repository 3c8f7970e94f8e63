"""``sfsurgery inspect``: what a saved file holds, without building the model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .plugins import Registry
from .safetensors_io import read_metadata, verify_data


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

    from .pipeline import recipe_from_metadata

    path = Path(path)
    metadata = read_metadata(path)
    recipe_from_metadata(metadata, path.name, registry or Registry())
    verified = verify_data(path, metadata)
    dtypes: Counter[str] = Counter()
    values = 0
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        for key in keys:
            tensor = f.get_slice(key)
            dtypes[str(tensor.get_dtype())] += 1
            shape = tensor.get_shape()
            count = 1
            for dim in shape:
                count *= dim
            values += count
    meta = {k.removeprefix("sfsurgery."): json.loads(v) for k, v in metadata.items()
            if k.startswith("sfsurgery.") and k not in ("sfsurgery.data_sha256",)}
    lineage = meta.get("lineage", {})
    return {
        "file": str(path), "bytes": path.stat().st_size, "format": meta.get("format"),
        "recipe": meta.get("recipe"), "ops": [call["op"] for call in meta.get("recipe", {}).get("ops", [])],
        "input": meta.get("input"), "output_shape": meta.get("output_shape"), "params": meta.get("params"),
        "tensors": len(keys), "values": values, "dtypes": dict(sorted(dtypes.items())),
        "source": meta.get("source"),
        "lineage": [{"op": e["op"], "added": len(e["added"]), "removed": len(e["removed"]),
                     "transformed": len(e["transformed"]), "notes": e["notes"]} for e in lineage.get("ops", [])],
        "versions": meta.get("versions"), "data_verified": bool(verified),
    }
