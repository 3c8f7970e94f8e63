"""sfsurgery: declared, checked, reproducible surgery on PyTorchVideo models.

The pipeline: :func:`load_recipe` (read + resolve) → :func:`validate` (plan on meta) →
:func:`apply` (execute on the weights) → ``Result.save`` (one .safetensors file) →
:func:`load` (rebuild anywhere). Plugins implement the hooks in :mod:`sfsurgery.hookspecs`
and receive the typed registrars and :class:`OpContext` exported here.

Heavy modules load on first use, so ``import sfsurgery`` and ``sfsurgery --help`` stay fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (plugins import this first)

_LAZY = {
    "load_recipe": "resolve", "Recipe": "resolve", "InputSpec": "recipe", "Preprocess": "recipe",
    "RecipeDocument": "recipe",
    "validate": "pipeline", "apply": "pipeline", "load": "pipeline", "Result": "pipeline",
    "register_op": "plugins", "Registry": "plugins", "get_plugin_manager": "plugins",
    "OpContext": "context", "BaseInfo": "context",
    "OpRegistrar": "registrars", "BaseRegistrar": "registrars", "FormatRegistrar": "registrars",
    "SurgeryError": "errors", "TraceError": "errors", "RecipeError": "errors", "Location": "errors",
    "CheckpointError": "errors", "PluginError": "errors", "FileFormatError": "errors",
    "OpError": "errors", "VideoError": "errors", "OutputError": "errors", "OutputExistsError": "errors",
    "ExportError": "errors", "ExportFailedError": "errors",
    "pack_pathways": "video", "predict": "predict", "SurgeryWarning": "errors",
    "param_groups": "training",
    "inspect_file": "inspection", "recipe_schema": "schema",
    "export": "export", "transform": "transform", "extract": "extract",
}

__all__ = ["__version__", "hookimpl", *_LAZY]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from .context import BaseInfo, OpContext
    from .errors import (
        CheckpointError,
        ExportError,
        ExportFailedError,
        FileFormatError,
        Location,
        OpError,
        OutputError,
        OutputExistsError,
        PluginError,
        RecipeError,
        SurgeryError,
        SurgeryWarning,
        TraceError,
        VideoError,
    )
    from .export import export
    from .extract import extract
    from .inspection import inspect_file
    from .pipeline import Result, apply, load, validate
    from .plugins import Registry, get_plugin_manager, register_op
    from .predict import predict
    from .recipe import InputSpec, Preprocess, RecipeDocument
    from .registrars import BaseRegistrar, FormatRegistrar, OpRegistrar
    from .resolve import Recipe, load_recipe
    from .schema import recipe_schema
    from .training import param_groups
    from .transform import transform
    from .video import pack_pathways


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sfsurgery' has no attribute {name!r}")


class _Package(types.ModuleType):
    """``sfsurgery.predict``, ``sfsurgery.export`` and ``sfsurgery.transform`` stay the functions.

    Importing a submodule sets it as an attribute of its package, so ``from sfsurgery.export import ...``
    anywhere would otherwise turn ``sfsurgery.export(...)`` into a call of a module.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if not (isinstance(value, types.ModuleType) and _LAZY.get(name) == name):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
