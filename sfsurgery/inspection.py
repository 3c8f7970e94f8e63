"""``sfsurgery inspect``: what a saved file holds, without reading its tensors."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from .file.reader import read_file_header
from .file.rebuild import rebuild_on_meta
from .plugins import Registry


def inspect_file(path: str | Path, *, registry: Registry | None = None, verify: bool = True) -> dict[str, Any]:
    """Summarise an sfsurgery file: recipe, shapes, parameters, dtypes, source, lineage.

    It reads the file as :func:`sfsurgery.load` does (same reader, same checks, the model rebuilt
    on the meta device), so it refuses exactly the files ``load`` refuses.

    Args:
        path: a file written by ``sfsurgery apply``.
        registry: used to check that every op's plugin is installed (``load`` needs them).
        verify: check the header and tensor data against their digests (as ``load`` does).

    Returns:
        A JSON-ready dict. Raises FileFormatError for files ``load`` would refuse.

    Example:
        >>> inspect_file("out/custom_head.safetensors")["output_shape"]
        [1, 1000]
    """
    header = read_file_header(path, verify=verify)
    recipe = rebuild_on_meta(header, registry or Registry()).recipe
    recorded = header.recorded
    dtypes = Counter(entry.dtype for entry in header.tensors.values())
    path = Path(path)
    return {
        "file": str(path), "bytes": path.stat().st_size, "format": header.format,
        "recipe": {"name": recipe.name, "seed": recipe.seed, **recipe.to_dict()},
        "ops": [op.name for op in recipe.ops],
        "input": recorded.input.model_dump(mode="json"), "output_shape": recorded.output_shape,
        "params": recorded.params.model_dump(),
        "tensors": len(header.tensors), "values": sum(math.prod(e.shape) for e in header.tensors.values()),
        "dtypes": dict(sorted(dtypes.items())),
        "source": recorded.source.model_dump(mode="json", exclude_none=True),
        "lineage": [{"op": e.op, "added": len(e.added), "removed": len(e.removed), "transformed": len(e.transformed),
                     "notes": e.notes} for e in recorded.lineage.ops],
        "versions": recorded.versions.model_dump(),
        "data_verified": header.verified, "header_verified": header.verified and header.format >= 2,
        "warnings": list(header.warnings),
        "labels": recorded.labels,
        "preprocess": recorded.preprocess.model_dump(mode="json") if recorded.preprocess else None,
        "training": recorded.training.model_dump(mode="json") if recorded.training else None,
    }
