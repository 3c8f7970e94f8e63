"""Writing the output file: a deterministic, atomic safetensors writer.

safetensors' ``save_file`` writes ``__metadata__`` in no stable order, so the same recipe
would not give the same bytes; the format is simple enough to write directly (8-byte
header length, JSON header padded to 8 bytes, raw little-endian tensor data), one tensor
at a time, cast on the way. Reading uses the safetensors library.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import secrets
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..errors import Location, OutputError, OutputExistsError, SurgeryError
from .dtypes import DTYPE_CODES, cast_floats
from .header import DATA_DIGEST_KEY, HEADER_DIGEST_KEY, seal

__all__ = ["DATA_DIGEST_KEY", "HEADER_DIGEST_KEY", "write_safetensors"]
ZEROS = "0" * 64


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *,
                      dtype: torch.dtype | None = None, force: bool = False) -> Path:
    """Write ``tensors`` (cast to ``dtype``) and ``metadata`` atomically and deterministically.

    The file appears complete or not at all: data goes to a temporary file in the target
    folder, is fsynced, then renamed. Without ``force`` an existing file is never replaced.
    """
    path = check_output(path, force=force)
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
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            # The digests go in the header, which comes first: write a same-length placeholder,
            # hash while streaming the tensors, then seal the header and rewrite it in place.
            placeholder = _header(metadata, entries, ZEROS)
            prefix = len(placeholder).to_bytes(8, "little")
            f.write(prefix + placeholder)
            digest = _overlapped_write(f, (_tensor_bytes(tensors[name], dtype) for name in names))
            sealed = seal(prefix + _header(metadata, entries, digest))
            assert len(sealed) == len(prefix + placeholder)
            f.seek(0)
            f.write(sealed)
            f.flush()
        publish_synced(tmp, path, force)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}",
                          hint="check the free space and permissions of the output folder") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


TEMP_SUFFIX = ".sfs-tmp"
_PATH_HINT = "choose another output path (-o or save.path)"


def check_output(path: str | Path, *, force: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written; creates nothing.

    The name must be valid (no NUL byte, each part within the file system's limit), the nearest
    existing folder must be a folder this process can write to, and without ``force`` the file
    must not exist. Missing folders are created only when the file is written.
    """
    text = os.fspath(path)
    if "\0" in text:
        raise OutputError(f"output path {_shown(text)} contains a NUL byte", hint=_PATH_HINT)
    target = Path(os.path.abspath(text))
    folder, parts = target.parent, [target.name]
    while not os.path.lexists(folder):  # False for a name that is too long, too
        parts.append(folder.name)
        folder = folder.parent
    limit = _pathconf(folder, "PC_NAME_MAX", 255)
    for part in parts:
        if len(os.fsencode(part)) > limit:
            raise OutputError(f"output name {_shown(part)} is {len(os.fsencode(part))} bytes; the file system "
                              f"of {_shown(str(folder))} allows at most {limit}", hint=_PATH_HINT)
    if len(os.fsencode(text)) >= _pathconf(folder, "PC_PATH_MAX", 4096):
        raise OutputError(f"output path {_shown(text)} is {len(os.fsencode(text))} bytes, more than the system "
                          "allows", hint=_PATH_HINT)
    if not os.path.isdir(folder):
        raise OutputError(f"cannot write {_shown(text)}: {_shown(str(folder))} is not a folder", hint=_PATH_HINT)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {_shown(str(folder))}: permission denied",
                          hint="choose an output folder you can write to (-o)")
    if os.path.isdir(target):
        raise OutputError(f"output {_shown(text)} is a folder", hint="name the file, e.g. -o out/model.safetensors")
    if not force and os.path.lexists(target):
        raise OutputExistsError(text)
    return Path(text)


def checked_output(path: str | Path | None, default: Callable[[], Path], *, force: bool = False) -> Path:
    """:func:`check_output` on ``path`` or, when none is given, on ``default()`` (the recipe's ``save.path``)."""
    if not path:
        try:
            path = default()
        except (OSError, ValueError, RuntimeError) as exc:  # resolving save.path: a NUL byte, a symlink loop
            why = "contains a NUL byte" if isinstance(exc, ValueError) else f"cannot be resolved ({exc})"
            raise OutputError(f"output path {why}", hint=_PATH_HINT, where=Location(field="save.path")) from None
    return check_output(path, force=force)


def _pathconf(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError, AttributeError):  # unknown name, or no pathconf on this system
        return default


def _shown(text: str) -> str:
    """A path fit for a one-line message: control characters escaped, long ones shortened."""
    shown = text if text.isprintable() else repr(text)[1:-1]
    return shown if len(shown) <= 120 else f"{shown[:60]}...{shown[-40:]}"


def temp_path(path: Path, pid: int | None = None, token: str | None = None) -> Path:
    """Where a writer (``pid``, default this process) keeps ``path``'s data until it is complete.

    Short whatever the output's name (a 255-byte name must work), hidden, and findable later:
    a hash of the output's name, the writer's pid and a random token.
    """
    token = secrets.token_hex(3) if token is None else token
    return path.parent / f".{_temp_tag(path)}.{pid or os.getpid()}.{token}{TEMP_SUFFIX}"


def _temp_tag(path: Path) -> str:
    return hashlib.sha256(os.fsencode(path.name)).hexdigest()[:12]


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create the missing folders (only now, at write time), remove dead writers' temps, open ours."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        tmp = temp_path(path)
        # mode 0o666 as open() gives: the umask applies
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
    except OSError as exc:
        raise OutputError(f"cannot write to {_shown(str(path.parent))}: {exc.strerror}",
                          hint="choose an output folder you can write to (-o)") from None


def _remove_stale_temps(path: Path) -> None:
    """Remove the temp files for this output whose writer is gone (SIGKILL, a crash, power loss)."""
    tag = f".{_temp_tag(path)}."
    try:
        names = os.listdir(path.parent) if os.name == "posix" else []  # os.kill(pid, 0) probes only on POSIX
    except OSError:  # cleaning up is a courtesy; it never stops a write
        return
    for name in names:
        pid = name[len(tag):].split(".")[0] if name.startswith(tag) and name.endswith(TEMP_SUFFIX) else ""
        if pid.isdigit() and int(pid) > 0 and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(path.parent / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def publish_synced(tmp: str | Path, path: Path, force: bool) -> None:
    """fsync a finished temp file, move it into place (never over a file without ``force``), fsync the folder.

    Raises:
        OSError: the caller words it for its own output; OutputExistsError when the file appeared.
    """
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    _publish(tmp, path, force)
    _fsync_dir(path.parent)


def _publish(tmp: Path, path: Path, force: bool) -> None:
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
    """The JSON header, padded to 8 bytes; its own digest is left as zeros (see header_sha256)."""
    meta = dict(sorted({**metadata, DATA_DIGEST_KEY: data_sha256, HEADER_DIGEST_KEY: ZEROS}.items()))
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
