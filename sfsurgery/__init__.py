"""sfsurgery: declared, checked, reproducible surgery on PyTorchVideo SlowFast models.

Heavy modules load on first use, so ``import sfsurgery`` and ``sfsurgery --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (plugins import this first)

_LAZY = {
    "load_recipe": "recipe", "Recipe": "recipe", "InputSpec": "recipe",
    "validate": "pipeline", "apply": "pipeline", "load": "pipeline", "Result": "pipeline",
    "register_op": "plugins", "Registry": "plugins", "get_plugin_manager": "plugins",
    "SurgeryError": "errors", "TraceError": "errors", "RecipeError": "errors",
    "CheckpointError": "errors", "PluginError": "errors", "FileFormatError": "errors",
    "OpError": "errors",
    "pack_pathways": "video", "VideoError": "video", "predict": "predict",
    "inspect_file": "inspection", "recipe_schema": "schema",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sfsurgery' has no attribute {name!r}")
