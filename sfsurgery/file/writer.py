"""Writing the output file: a deterministic, atomic safetensors writer.

safetensors' ``save_file`` writes ``__metadata__`` in no stable order, so the same recipe
would not give the same bytes; the format is simple enough to write directly (8-byte
header length, JSON header padded to 8 bytes, raw little-endian tensor data), one tensor
at a time, cast on the way. Reading uses the safetensors library.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..errors import OutputError, OutputExistsError, SurgeryError
from .dtypes import DTYPE_CODES, cast_floats

DATA_DIGEST_KEY = "sfsurgery.data_sha256"


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *,
                      dtype: torch.dtype | None = None, force: bool = False) -> Path:
    """Write ``tensors`` (cast to ``dtype``) and ``metadata`` atomically and deterministically.

    The file appears complete or not at all: data goes to a temporary file in the target
    folder, is fsynced, then renamed. Without ``force`` an existing file is never replaced.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(path)
    if sys.byteorder != "little":  # safetensors data is little-endian
        raise NotImplementedError("writing safetensors needs a little-endian machine")
    names = sorted(tensors)
    entries, offset = {}, 0
    for name in names:
        t = tensors[name]
        out_dtype = dtype if dtype is not None and t.is_floating_point() else t.dtype
        if out_dtype not in DTYPE_CODES:
            raise SurgeryError(f"cannot save {name}: dtype {out_dtype} has no safetensors code here",
                               hint=f"supported: {', '.join(str(d) for d in DTYPE_CODES)}")
        size = t.numel() * out_dtype.itemsize
        entries[name] = {"dtype": DTYPE_CODES[out_dtype], "shape": list(t.shape),
                         "data_offsets": [offset, offset + size]}
        offset += size
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write to {path.parent}: {exc.strerror}",
                          hint="choose an output folder you can write to (-o)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            # The data digest goes in the header, which comes first: write a same-length
            # placeholder, hash while streaming the tensors, then rewrite the header in place.
            placeholder = _header(metadata, entries, "0" * 64)
            f.write(len(placeholder).to_bytes(8, "little"))
            f.write(placeholder)
            digest = _overlapped_write(f, (_tensor_bytes(tensors[name], dtype) for name in names))
            header = _header(metadata, entries, digest)
            assert len(header) == len(placeholder)
            f.seek(8)
            f.write(header)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        _publish(tmp, path, force)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}",
                          hint="check the free space and permissions of the output folder") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _publish(tmp: str, path: Path, force: bool) -> None:
    """Move the finished temp file into place; without ``force`` never replace a file."""
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic and fails if the file appeared meanwhile
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError:  # a filesystem without hard links: check, then rename (a small race)
        if path.exists():
            raise OutputExistsError(path) from None
        os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tensor_bytes(tensor: torch.Tensor, dtype: torch.dtype | None) -> memoryview:
    """The tensor's data as bytes: no copy unless it must be cast, moved or made contiguous."""
    data = cast_floats(tensor.detach(), dtype).contiguous().cpu()
    return data.reshape(-1).view(torch.uint8).numpy().data


def _overlapped_write(f, chunks, batch_bytes: int = 8 << 20) -> str:
    """Write ``chunks`` and return their sha256, hashing on a second core while writing.

    Both ``write`` and ``sha256.update`` release the GIL; chunks are grouped into batches of
    about ``batch_bytes`` (small BatchNorm tensors would otherwise cost a hand-off each), and at
    most two batches are in flight, so nothing but views of the tensors is held.
    """
    digest = hashlib.sha256()

    def hash_batch(batch: list[memoryview]) -> None:
        for chunk in batch:
            digest.update(chunk)

    with ThreadPoolExecutor(max_workers=1) as hasher:  # one worker: batches hash in order
        pending, batch, size = [], [], 0
        for chunk in itertools.chain(chunks, [None]):  # lazily: a cast copy lives only until written
            if chunk is not None:
                batch.append(chunk)
                size += chunk.nbytes
            if size >= batch_bytes or (chunk is None and batch):
                f.writelines(batch)  # first: the pages are then resident when the hasher reads them
                pending.append(hasher.submit(hash_batch, batch))
                batch, size = [], 0
                if len(pending) > 1:
                    pending.pop(0).result()
        for job in pending:
            job.result()  # surfaces any hashing error
    return digest.hexdigest()


def _header(metadata: dict[str, str], entries: dict[str, Any], data_sha256: str) -> bytes:
    meta = dict(sorted({**metadata, DATA_DIGEST_KEY: data_sha256}.items()))
    blob = json.dumps({"__metadata__": meta, **entries}, separators=(",", ":")).encode()
    return blob + b" " * (-len(blob) % 8)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
