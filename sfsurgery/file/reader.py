"""Reading sfsurgery files: metadata and the data digest (tensors load with safetensors)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import FileFormatError
from .writer import DATA_DIGEST_KEY


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, with clear errors for bad files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:
        raise FileFormatError(f"{path.name}: not a readable safetensors file ({exc})",
                              hint="the file may be truncated or corrupted; write it again") from None


def verify_data(path: str | Path, metadata: dict[str, str]) -> bool | None:
    """Check the tensor data against the digest written with it; None if the file has none."""
    expected = metadata.get(DATA_DIGEST_KEY)
    if expected is None:
        return None
    with open(path, "rb") as f:
        f.seek(8 + int.from_bytes(f.read(8), "little"))
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != expected:
        raise FileFormatError(f"{Path(path).name} is corrupted: its tensor data does not match the "
                              "sha256 recorded when it was written", hint="write the file again")
    return True
