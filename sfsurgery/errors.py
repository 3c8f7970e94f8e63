"""Errors a user can act on: each carries the CLI exit code and a hint.

Anything else that escapes is a bug in sfsurgery or a plugin and keeps its traceback.
"""

from __future__ import annotations


class SurgeryError(Exception):
    """A problem with what the user asked for; printed as one ``error:`` line."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class RecipeError(SurgeryError):
    """The recipe is not valid YAML, breaks the schema, or names unknown things."""


class CheckpointError(SurgeryError):
    """A checkpoint is missing, unsafe, unreadable or does not fit the base."""


class PluginError(SurgeryError):
    """A plugin failed to load, or two plugins claim one name."""


class FileFormatError(SurgeryError):
    """A .safetensors file is not one sfsurgery can rebuild a model from."""


class OutputExistsError(SurgeryError):
    """The output file exists and ``--force`` was not given."""


class TraceError(SurgeryError):
    """The op chain does not trace on the meta device, or ``expect`` does not match."""

    exit_code = 1


class OpError(SurgeryError):
    """An op cannot do its job on this model (e.g. nothing left to swap)."""

    exit_code = 1
