"""The Parquet output of ``extract``: its schema, the journal of finished videos, and the final assembly.

Work in progress lives beside the output, in ``OUT.partial/``: ``params.json`` (what the rows were
made with) and one Parquet part per finished video, each written to a temp name and renamed. The
output itself is written once, at the end, to a temp file that is renamed into place; the journal
is then removed. ``--resume`` reads both: a video with rows and no error row is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import OutputError, SurgeryError
from ..file.writer import _create_temp, _publish

META_KEY = b"sfsurgery.extract"
#: parameters a resumed run must share with the rows it keeps
RESUME_KEYS = ("model_sha256", "stride", "sampling_rate", "topk")
_ROW_GROUP_ROWS, _ROW_GROUP_BYTES = 4096, 64 << 20


def schema(params: dict[str, Any]) -> pa.Schema:
    """One row per window: video, window, start, end, output, error (+ topk_* columns with ``topk``)."""
    fields = [pa.field("video", pa.string(), nullable=False), pa.field("window", pa.int64()),
              pa.field("start", pa.float64()), pa.field("end", pa.float64()),
              pa.field("output", pa.list_(pa.float32())), pa.field("error", pa.string())]
    if params.get("topk"):
        fields += [pa.field("topk_class", pa.list_(pa.int64())), pa.field("topk_label", pa.list_(pa.string())),
                   pa.field("topk_score", pa.list_(pa.float32()))]
    return pa.schema(fields, metadata={META_KEY: json.dumps(params, sort_keys=True).encode()})


@dataclass
class VideoRows:
    """The windows of one video as they come back from the model, and how it ended."""

    windows: list[tuple[int, float, float, np.ndarray, np.ndarray | None, np.ndarray | None]] = field(
        default_factory=list)
    count: int | None = None  # windows the decoder produced; known when the video is done
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.count is not None and len(self.windows) == self.count


def _lists(values: list[np.ndarray | None], dtype: pa.DataType) -> pa.Array:
    """A list<dtype> column from per-row arrays (None: a null row), without a Python loop over values."""
    sizes = np.array([0 if v is None else len(v) for v in values], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    present = [v for v in values if v is not None]
    flat = np.concatenate(present) if present else np.empty(0, dtype=object)
    mask = pa.array([v is None for v in values])
    data = pa.array(flat, type=dtype) if pa.types.is_primitive(dtype) else pa.array(list(flat), type=dtype)
    return pa.ListArray.from_arrays(offsets, data, mask=mask)


def video_table(video: str, rows: VideoRows, table_schema: pa.Schema, labels: tuple[str, ...] | None) -> pa.Table:
    """The rows of one finished video: its windows in order, then an error row if it failed."""
    windows = sorted(rows.windows, key=lambda w: w[0])
    n = len(windows) + (rows.error is not None)
    pad = [None] * (rows.error is not None)
    columns: dict[str, Any] = {
        "video": pa.array([video] * n, pa.string()),
        "window": pa.array([w[0] for w in windows] + pad, pa.int64()),
        "start": pa.array([w[1] for w in windows] + pad, pa.float64()),
        "end": pa.array([w[2] for w in windows] + pad, pa.float64()),
        "output": _lists([w[3].astype(np.float32, copy=False) for w in windows] + pad, pa.float32()),
        "error": pa.array([None] * len(windows) + [rows.error] * len(pad), pa.string()),
    }
    if "topk_class" in table_schema.names:
        columns["topk_class"] = _lists([w[4].astype(np.int64) for w in windows] + pad, pa.int64())
        columns["topk_label"] = _lists([np.array([labels[int(c)] for c in w[4]], dtype=object) for w in windows]
                                       + pad, pa.string())
        columns["topk_score"] = _lists([w[5].astype(np.float32) for w in windows] + pad, pa.float32())
    return pa.table(columns, schema=table_schema)


@dataclass
class Prior:
    """Rows of a video from an earlier run: in a journal part, or in row groups of the old output."""

    source: Path
    groups: tuple[int, ...] | None
    complete: bool


def _check_params(found: dict[str, Any], params: dict[str, Any], what: str) -> None:
    for key in RESUME_KEYS:
        if found.get(key) != params.get(key):
            name = {"model_sha256": "model file (sha256)", "sampling_rate": "sampling rate"}.get(key, key)
            raise SurgeryError(f"{what} was made with {name} {found.get(key)!r}; this run asks for "
                               f"{params.get(key)!r}", hint="resume with the same model file, --stride, "
                                                            "--sampling-rate and --topk, or pass --force to start over")


def _params_of(path: Path) -> dict[str, Any]:
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise SurgeryError(f"{path} is not an output of sfsurgery extract ({str(exc)[:200]})",
                           hint="choose another output path, or pass --force to replace it") from None


class Journal:
    """``OUT.partial/``: one part per finished video, and the assembly of ``OUT`` from them."""

    def __init__(self, out: Path, params: dict[str, Any]):
        self.out = out
        self.folder = out.with_name(out.name + ".partial")
        self.params = params
        self.schema = schema(params)

    def open(self, *, resume: bool, force: bool) -> dict[str, Prior]:
        """Start (or, with ``resume``, continue) the journal; returns the rows earlier runs left, by video."""
        prior: dict[str, Prior] = {}
        if not resume:
            if self.folder.exists() and not force:
                raise OutputError(f"{self.folder} holds the work of an interrupted run",
                                  hint="pass --resume to continue it, or --force to start over")
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            if self.out.exists():
                _check_params(_params_of(self.out), self.params, str(self.out))
                prior.update(self._index_output())
            if self.folder.is_dir():
                saved = self.folder / "params.json"
                with contextlib.suppress(OSError, ValueError):
                    _check_params(json.loads(saved.read_text()), self.params, str(self.folder))
                for part in sorted(self.folder.glob("[!.]*.parquet")):
                    _check_params(_params_of(part), self.params, str(part))
                    errors = pq.read_table(part, columns=["video", "error"])
                    if errors.num_rows:
                        video = errors["video"][0].as_py()
                        prior[video] = Prior(part, None, errors["error"].null_count == errors.num_rows)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._atomic(self.folder / "params.json", lambda f: f.write(json.dumps(self.params).encode()))
        except OSError as exc:
            raise OutputError(f"cannot write the journal {self.folder}: {exc.strerror or exc}",
                              hint="choose an output folder you can write to (-o)") from None
        return prior

    def _index_output(self) -> dict[str, Prior]:
        found: dict[str, tuple[list[int], bool]] = {}
        reader = pq.ParquetFile(self.out)
        for group in range(reader.num_row_groups):
            table = reader.read_row_group(group, columns=["video", "error"])
            for video, error in zip(table["video"].to_pylist(), table["error"].to_pylist()):
                groups, ok = found.setdefault(video, ([], True))
                if not groups or groups[-1] != group:
                    groups.append(group)
                found[video] = (groups, ok and error is None)
        return {video: Prior(self.out, tuple(groups), ok) for video, (groups, ok) in found.items()}

    def part(self, video: str) -> Path:
        return self.folder / f"{hashlib.sha256(video.encode()).hexdigest()[:32]}.parquet"

    def write(self, video: str, table: pa.Table) -> None:
        """Record a finished video (atomically: a crash leaves the old part or the new one)."""
        self._atomic(self.part(video), lambda f: pq.write_table(table, f))

    def _atomic(self, path: Path, write) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def rows(self, video: str, prior: Prior | None) -> pa.Table | None:
        """A video's rows: this run's part, else the complete rows an earlier run left."""
        part = self.part(video)
        if part.exists():
            return pq.read_table(part, schema=self.schema)
        if prior is None:
            return None
        if prior.groups is None:
            return pq.read_table(prior.source, schema=self.schema)
        table = pq.ParquetFile(prior.source).read_row_groups(list(prior.groups))
        return table.filter(pc.equal(table["video"], video)).cast(self.schema)

    def assemble(self, videos: list[str], prior: dict[str, Prior], *, force: bool) -> None:
        """Write ``OUT`` (rows in input order, then window), atomically; then remove the journal."""
        fd, tmp = _create_temp(self.out)
        try:
            with os.fdopen(fd, "wb") as f, pq.ParquetWriter(f, self.schema) as writer:
                buffered: list[pa.Table] = []
                for video in videos:
                    table = self.rows(video, prior.get(video))
                    if table is not None:
                        buffered.append(table)
                    if sum(t.num_rows for t in buffered) >= _ROW_GROUP_ROWS or \
                            sum(t.nbytes for t in buffered) >= _ROW_GROUP_BYTES:
                        writer.write_table(pa.concat_tables(buffered))
                        buffered = []
                if buffered or not videos:
                    writer.write_table(pa.concat_tables(buffered) if buffered else self.schema.empty_table())
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            _publish(tmp, self.out, force)
        except OSError as exc:
            raise OutputError(f"cannot write {self.out}: {exc.strerror or exc}",
                              hint="check the free space and permissions of the output folder") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        shutil.rmtree(self.folder, ignore_errors=True)
