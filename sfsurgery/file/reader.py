"""Reading sfsurgery files: the one reader that ``load``, ``inspect`` and ``predict`` share.

:func:`read_file_header` bounds the header before reading it, parses it into typed data once,
and checks both digests; tensors then load with the safetensors library.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import FileFormatError
from .header import (
    DATA_DIGEST_KEY,
    HEADER_DIGEST_KEY,
    MAX_HEADER_BYTES,
    REWRITE,
    Recorded,
    TensorEntry,
    file_format,
    header_sha256,
    parse_index,
    parse_metadata,
    unreadable,
)

__all__ = ["DATA_DIGEST_KEY", "HEADER_DIGEST_KEY", "FileHeader", "FileFormatWarning", "read_file_header",
           "read_metadata"]
UNCHECKED = "load(verify=False) reads it unchecked, for a file you trust"


class FileFormatWarning(UserWarning):
    """A file that loads, but with less protection than the current format gives (format 1)."""


@dataclass(frozen=True)
class FileHeader:
    """A file's header, typed and (with ``verify``) checked against its digests.

    Attributes:
        format: the file format (1: only the tensor data has a digest; 2: header and data).
        metadata: the raw ``__metadata__``. recorded: sfsurgery's metadata, typed.
        tensors: the tensor index. verified: the digests were checked (header too from format 2).
        warnings: what the reader warned about (also issued with :func:`warnings.warn`).
    """

    path: Path
    format: int
    metadata: dict[str, str]
    recorded: Recorded
    tensors: dict[str, TensorEntry]
    verified: bool
    warnings: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name


_KIND_HINT = "commands that take FILE want a .safetensors file from sfsurgery apply (a recipe goes to apply)"


def _what_it_is(prefix: bytes) -> str | None:
    """Name the common wrong files (a safetensors header starts with its length, then '{')."""
    if prefix.startswith(b"PK\x03\x04"):
        return "a zip archive (a torch checkpoint? use it as base.checkpoint in a recipe)"
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle (a legacy torch checkpoint? use it as base.checkpoint in a recipe)"
    if prefix[:4] in (b"\x1aE\xdf\xa3",) or prefix[4:8] in (b"ftyp",):
        return "a video"
    try:
        text = prefix.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and all(c.isprintable() or c in "\n\r\t" for c in text):
        return "a text file (a recipe?)"
    return None


def _read_raw(path: str | Path) -> tuple[bytes, dict[str, str], dict[str, TensorEntry], int]:
    """(length field + header bytes, metadata, tensor index, data start), read within bounds."""
    path = Path(path)
    if path.is_dir():
        raise FileFormatError(f"{path} is a folder, not a model file", hint="pass a .safetensors file")
    if not path.is_file():
        raise FileFormatError(f"no such file: {path}", hint="check the path")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            kind = _what_it_is(prefix)
            if kind:
                raise FileFormatError(f"{path.name} is {kind}, not a model file written by sfsurgery",
                                      hint=_KIND_HINT)
            if len(prefix) < 8:
                raise unreadable(path.name, f"{size} bytes is too short for a header")
            length = int.from_bytes(prefix, "little")
            if length > min(MAX_HEADER_BYTES, size - 8):  # before reading: the field may claim anything
                raise unreadable(path.name, f"its header length field says {length} bytes; the file has {size}")
            raw = f.read(length)
    except OSError as exc:
        raise FileFormatError(f"cannot read {path}: {exc.strerror or exc}", hint="check the file's permissions") \
            from None
    metadata, tensors = parse_index(raw, size - 8 - length, path.name)
    return prefix + raw, metadata, tensors, 8 + length


def read_metadata(path: str | Path) -> dict[str, str]:
    """The raw ``__metadata__`` of a safetensors file (bounded and parsed, not verified)."""
    return _read_raw(path)[1]


def read_file_header(path: str | Path, *, verify: bool = True) -> FileHeader:
    """The typed header of an sfsurgery file; with ``verify``, checked against its digests first.

    Raises:
        FileFormatError: not a safetensors file, not sfsurgery's, from a newer format, damaged
            metadata, or (with ``verify``) a digest that is missing or does not match.
    """
    path = Path(path)
    name = path.name
    blob, metadata, tensors, data_start = _read_raw(path)
    fmt = file_format(metadata, name)
    # The header first: a damaged one is "corrupted", whatever else it says. A digest is checked even
    # where the format says 1, so that a changed format digit cannot switch the check off.
    if verify and (fmt >= 2 or HEADER_DIGEST_KEY in metadata):
        expected = metadata.get(HEADER_DIGEST_KEY)
        if expected is None:
            raise FileFormatError(f"{name} has sfsurgery metadata but no {HEADER_DIGEST_KEY} over its header",
                                  hint=f"{REWRITE}; {UNCHECKED}")
        if header_sha256(blob) != expected:
            raise FileFormatError(f"{name} is corrupted: its header does not match the sha256 recorded when "
                                  "it was written", hint=f"{REWRITE}; {UNCHECKED}")
    recorded = parse_metadata(metadata, name)
    if verify:
        _verify_data(path, data_start, recorded.data_sha256)
    _safetensors_agrees(path)
    notes = []
    if fmt == 1:
        notes.append(f"{name} is sfsurgery file format 1: its header (recipe, tensor names and shapes) has no "
                     f"digest, so edits to it go unnoticed; {REWRITE} to protect it")
        warnings.warn(notes[-1], FileFormatWarning, stacklevel=2)
    return FileHeader(path, fmt, metadata, recorded, tensors, verify, tuple(notes))


def _verify_data(path: Path, data_start: int, expected: str | None) -> None:
    if expected is None:
        raise FileFormatError(f"{path.name} has sfsurgery metadata but no {DATA_DIGEST_KEY} over its tensor data",
                              hint=f"{REWRITE}; {UNCHECKED}")
    with open(path, "rb") as f:
        f.seek(data_start)
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != expected:
        raise FileFormatError(f"{path.name} is corrupted: its tensor data does not match the sha256 recorded "
                              "when it was written", hint=f"{REWRITE}; {UNCHECKED}")


def _safetensors_agrees(path: Path) -> None:
    """The safetensors library (which loads the tensors) must accept what this reader accepted."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as exc:  # safetensors raises its own error types, and OSError
        raise unreadable(path.name, str(exc)[:300]) from None
