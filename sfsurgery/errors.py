"""Errors a user can act on: each carries the CLI exit code, a hint and where it happened.

Anything else that escapes is a bug in sfsurgery or a plugin and keeps its traceback.

The location is structured (:class:`Location`): it is set where the error is raised, or
filled in by the code that knows more (the op runner knows the op's index and name), never
by editing the message text. ``str(error)`` and ``error.message`` put the two together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where an error happened. Every field is optional.

    Attributes:
        recipe: the recipe file (not shown in messages: the user named it).
        op_index, op_name: the op in the recipe's ``ops`` list.
        field: a dotted key, e.g. ``base.hub``; inside an op, a parameter name.
        file: a weights or model file name.
    """

    recipe: str | None = None
    op_index: int | None = None
    op_name: str | None = None
    field: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        if self.op_index is not None:
            op = f"ops[{self.op_index}]"
            if self.field:
                return f"{op}.{self.field}"
            return f"{op} {self.op_name}" if self.op_name else op
        return self.field or self.file or ""

    def merged(self, other: Location) -> Location:
        """This location with ``other``'s fields filled in where this one has none."""
        mine = dataclasses.asdict(self)
        return Location(**{k: v if v is not None else getattr(other, k) for k, v in mine.items()})


class SurgeryWarning(UserWarning):
    """Something the user should know that does not stop the work (random backbone, unmatched rule)."""


class SurgeryError(Exception):
    """A problem with what the user asked for; printed as one ``error:`` line and a ``hint:``.

    Args:
        detail: what went wrong, without the location.
        hint: what to do about it.
        where: a :class:`Location`.
    """

    exit_code = 2

    def __init__(self, detail: str, hint: str | None = None, *, where: Location | None = None):
        super().__init__(detail)
        self.detail = detail
        self.hint = hint
        self.where = where or Location()

    @property
    def message(self) -> str:
        """The located message: ``ops[2] replace_head: ...``."""
        where = str(self.where)
        return f"{where}: {self.detail}" if where else self.detail

    def locate(self, **fields: object) -> SurgeryError:
        """Fill in location fields the raiser did not know; returns ``self`` to re-raise."""
        self.where = self.where.merged(Location(**fields))  # type: ignore[arg-type]
        return self

    def __str__(self) -> str:
        return self.message


class RecipeError(SurgeryError):
    """The recipe is not valid YAML, breaks the schema, or names unknown things."""


class CheckpointError(SurgeryError):
    """A checkpoint is missing, unsafe, unreadable or does not fit the base."""


class PluginError(SurgeryError):
    """A plugin failed to load, registered something malformed, or two plugins claim one name."""


class FileFormatError(SurgeryError):
    """A .safetensors file is not one sfsurgery can rebuild a model from."""


class OutputError(SurgeryError):
    """The output cannot be written (exists without ``--force``, folder not writable)."""


class OutputExistsError(OutputError):
    """The output file exists and ``--force`` was not given."""

    def __init__(self, path: object):
        super().__init__(f"{path} exists", hint="pass --force to replace it")


class VideoError(SurgeryError, ValueError):
    """A video that cannot be read, or a clip that cannot be packed for the model."""


class TraceError(SurgeryError):
    """The op chain does not trace on the meta device, or ``expect`` does not match."""

    exit_code = 1


class OpError(SurgeryError):
    """An op cannot do its job on this model (e.g. nothing left to swap).

    Raise it from an op; sfsurgery adds the op's index and name to its location.
    """

    exit_code = 1


class ExportError(SurgeryError):
    """An export that cannot be asked for: an unknown format, a bad batch, the extra not installed."""


class ExportFailedError(SurgeryError):
    """The exporter failed, or the exported program does not run or does not agree with the eager model."""

    exit_code = 1
