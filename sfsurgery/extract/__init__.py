"""``sfsurgery extract``: run a model file over a video corpus into one Parquet table.

:func:`extract` checks everything it can before any video is opened (the model file, the output,
the inputs, the engine), collects the videos (:mod:`.inputs`), skips the ones a previous run
finished (``resume``), runs an engine (:mod:`.local`, or Ray Data in :mod:`.ray_engine`) whose
windows come back through a :class:`~.collect.Collector` into the journal (:mod:`.output`), and
assembles the output from the journal at the end.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import SurgeryError

ENGINES = ("local", "ray")


def _positive(value: Any, name: str, hint: str, *, integer: bool = True, zero: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value) and \
        (value >= 0 if zero else value > 0)
    if not ok:
        raise SurgeryError(f"{name} must be a {'non-negative' if zero else 'positive'} "
                           f"{'whole number' if integer else 'number'}, not {value!r}", hint=hint)


def extract(file: str | os.PathLike, inputs: list[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, *,
            stride: float | None = None, sampling_rate: int | None = None, topk: int | None = None,
            batch_size: int = 8, workers: int | None = None, device: str = "cpu", dtype: str | None = None,
            engine: str = "local", address: str | None = None, actors: int = 1, force: bool = False,
            resume: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Run the model in ``file`` over every window of every video in ``inputs``; write ``out`` (Parquet).

    Args:
        file: a model file from ``sfsurgery apply``. inputs: video files, folders (searched recursively
            by video suffix) and manifests (``.txt``: a path per line; ``.csv``: a ``path`` column).
        out: the Parquet file; ``out.partial/`` holds the work in progress.
        stride: seconds between window starts (default: one clip). sampling_rate: overrides the file's.
        topk: add ``topk_class``, ``topk_label``, ``topk_score`` (needs the file's labels).
        batch_size: clips per forward. workers: decoding processes (local engine; 0 decodes here).
        device, dtype: where and in what precision the model runs (``"cuda"``, ``"bfloat16"``).
        engine: ``"local"`` or ``"ray"`` (Ray Data; ``address`` joins a running cluster, ``actors``
            model replicas). force: replace ``out``. resume: keep the complete videos of an earlier run.
        progress: a progress bar on stderr (default: when stderr is a terminal).

    Returns:
        ``{"path", "videos", "windows", "failed", "skipped", "seconds", "engine", "failures"}``:
        ``failed`` counts videos with an error row, ``failures`` maps each to its error, ``skipped``
        counts complete videos kept from an earlier run (not opened again).

    Raises:
        SurgeryError: bad usage (no inputs, a folder without videos, a missing manifest, an existing
        output without ``force`` or ``resume``, a resumed output made with other parameters, ...).
        A video that cannot be read is not an error: it gets an error row.
    """
    import sys

    from ..devices import torch_device
    from .collect import Collector
    from .inputs import collect_videos
    from .local import default_workers, run_local
    from .model import Runner, model_spec
    from .output import Journal

    began = time.perf_counter()
    if engine not in ENGINES:
        raise SurgeryError(f"unknown engine {engine!r}", hint="use --engine local or --engine ray")
    if stride is not None:
        _positive(stride, "stride", "seconds between window starts, e.g. --stride 1.0", integer=False)
    _positive(batch_size, "batch size", "e.g. --batch-size 8")
    _positive(actors, "actors", "model replicas for --engine ray, e.g. --actors 2")
    workers = default_workers() if workers is None else workers
    _positive(workers, "workers", "decoding processes, e.g. --workers 4 (0: decode in this process)", zero=True)
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    from ..file.dtypes import as_torch_dtype
    from ..file.writer import check_output

    torch_dtype = as_torch_dtype(dtype)
    if engine == "local":
        torch_device(device)  # on a cluster the driver need not have the GPUs the actors use
    elif str(device).split(":")[0] not in ("cpu", "cuda"):
        raise SurgeryError(f"unknown device {device!r} for --engine ray", hint="use cpu or cuda")
    out = check_output(out, force=force or resume)
    videos = [str(v) for v in collect_videos(inputs)]
    spec = model_spec(file, sampling_rate=sampling_rate, topk=topk)
    if engine == "ray":
        from .ray_engine import import_ray

        import_ray()
    params = {"sfsurgery": __version__, "model": Path(file).name, "model_sha256": spec.digest,
              "stride": None if stride is None else float(stride), "sampling_rate": spec.transform.preprocess.
              sampling_rate, "frames": spec.transform.input.frames, "topk": spec.topk,
              "output_size": spec.output_size}
    journal = Journal(out, params)
    prior = journal.open(resume=resume, force=force)
    keep = {v for v in videos if v in prior and prior[v].complete}
    jobs = [(i, v) for i, v in enumerate(videos) if v not in keep]
    show = sys.stderr.isatty() if progress is None else progress
    collector = Collector(videos, journal, spec.labels, len(jobs), show)
    operators: list[str] = []
    dtype_name = None if torch_dtype is None else str(torch_dtype).removeprefix("torch.")
    try:
        if engine == "ray":
            from .ray_engine import run_ray

            operators = run_ray(jobs, spec, stride, collector, device=device, dtype=dtype_name,
                                batch_size=batch_size, address=address, actors=actors, progress=show)
        else:
            run_local(jobs, spec.transform, stride, lambda: Runner(spec, device, torch_dtype), collector,
                      workers=workers, batch_size=batch_size, pin_memory=str(device).startswith("cuda"))
    finally:
        collector.close()
    collector.check_complete()
    journal.assemble(videos, prior, force=force or resume)
    failures = {v: collector.failures[v] for v in videos if v in collector.failures}  # in input order
    windows = _count_windows(out)
    return {"path": str(out), "videos": len(videos), "windows": windows, "failed": len(failures),
            "skipped": len(keep), "seconds": round(time.perf_counter() - began, 3), "engine": engine,
            "failures": [{"video": v, "error": e} for v, e in failures.items()], "ray_operators": operators}


def _count_windows(out: Path) -> int:
    import pyarrow.parquet as pq

    table = pq.read_table(out, columns=["window"])
    return table.num_rows - table["window"].null_count


__all__ = ["extract"]
