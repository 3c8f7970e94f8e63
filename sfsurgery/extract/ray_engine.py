"""The Ray engine: the same windows and rows as the local engine, computed with Ray Data.

Two stages: decoding (``flat_map`` tasks on CPUs, one block per video, :func:`decode_video` as the
local engine runs it) and the model (``map_batches`` on an actor pool, ``batch_size`` clips per
forward, one GPU per actor with ``device="cuda"``). Ray fuses a task stage into the actor stage that
follows it when their resources are equal, which would decode inside the model's actor, one video
after another; so the actors also reserve memory for the model and a batch, which the decoding
tasks do not. Each video's end mark travels through the model stage with a zero clip; the driver
collects rows as they stream back (in any order) and journals each finished video.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from ..errors import SurgeryError
from ..transform import ClipTransform
from .collect import Collector
from .local import decode_video
from .model import ModelSpec

RAY_HINT = "pip install 'sfsurgery[ray]' (Ray Data), or run with --engine local"


def import_ray():
    """Ray, or a user error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise SurgeryError(f"--engine ray needs Ray Data, which does not import here ({exc})", hint=RAY_HINT) \
            from None
    return ray


def _decode_rows(row: dict[str, Any], transform: ClipTransform, stride: float | None):
    """Rows for one video: its windows, then its end mark (window -1, with the count and the error)."""
    shape = (transform.input.channels, transform.input.frames, *transform.input.size)
    for item in decode_video(int(row["video"]), str(row["path"]), transform, stride):
        if item[0] == "window":
            _, video, index, start, end, clip = item
            yield {"video": video, "window": index, "start": start, "end": end, "count": 0, "error": "",
                   "clip": clip.numpy().astype(np.float32, copy=False)}
        else:
            _, video, count, error = item
            yield {"video": video, "window": -1, "start": 0.0, "end": 0.0, "count": count, "error": error or "",
                   "clip": np.zeros(shape, np.float32)}


class _Model:
    """The model actor: one :class:`~sfsurgery.extract.model.Runner` per actor."""

    def __init__(self, spec: ModelSpec, device: str, dtype: str | None):
        from .model import Runner

        self.runner = Runner(spec, device, dtype)
        self.spec = spec

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        clip = batch.pop("clip")
        rows = np.flatnonzero(batch["window"] >= 0)
        n, k = len(batch["window"]), self.spec.topk or 0
        output = np.zeros((n, self.spec.output_size), np.float32)
        classes, scores = np.zeros((n, max(k, 1)), np.int64), np.zeros((n, max(k, 1)), np.float32)
        if len(rows):
            out, top, score = self.runner(torch.from_numpy(np.ascontiguousarray(clip[rows])))
            output[rows] = out
            if k:
                classes[rows], scores[rows] = top, score
        return {**batch, "output": output, "topk_class": classes, "topk_score": scores}


def run_ray(jobs: list[tuple[int, str]], spec: ModelSpec, stride: float | None, collector: Collector, *,
            device: str, dtype: str | None, batch_size: int, address: str | None, actors: int = 1,
            progress: bool = False) -> list[str]:
    """Extract ``jobs`` (index, path) with Ray Data; returns the names of the operators Ray ran.

    Uses the Ray instance this process already joined, else starts a local one (``address=None``)
    or joins the cluster at ``address``, and shuts down only what it started.
    """
    if not jobs:
        return []
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                     include_dashboard=False, configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise SurgeryError(f"cannot start or join Ray at {address or 'a local instance'} ({str(exc)[:300]})",
                               hint="start the cluster first (ray start --head), and pass its address, "
                                    "e.g. --address ray://head:10001 or --address auto") from None
    context = ray.data.DataContext.get_current()
    settings = context.enable_progress_bars, context.print_on_execution_start
    try:
        context.enable_progress_bars, context.print_on_execution_start = progress, False
        clip_bytes = 4 * spec.transform.input.channels * spec.transform.input.frames * \
            int(np.prod(spec.transform.input.size))
        # the actor's process (torch, pytorchvideo), the weights (file and model), a batch and its feature maps
        model_bytes = (1 << 30) + 2 * spec.file.stat().st_size + 8 * batch_size * clip_bytes
        cuda = str(device).startswith("cuda")
        items = [{"video": index, "path": path} for index, path in jobs]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 10_000))  # a decoding task per video
        ds = ds.flat_map(_decode_rows, fn_kwargs={"transform": spec.transform, "stride": stride}, num_cpus=1)
        actor_device = "cuda" if cuda else "cpu"  # Ray gives each actor its GPU as cuda:0
        ds = ds.map_batches(_Model, fn_constructor_kwargs={"spec": spec, "device": actor_device, "dtype": dtype},
                            batch_size=batch_size, batch_format="numpy", concurrency=actors, num_cpus=1,
                            num_gpus=1 if cuda else None, memory=model_bytes)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["video"])):
                video = int(batch["video"][i])
                if batch["window"][i] < 0:
                    collector.end(video, int(batch["count"][i]), str(batch["error"][i]) or None)
                else:
                    top = spec.topk
                    collector.window(video, int(batch["window"][i]), float(batch["start"][i]),
                                     float(batch["end"][i]), batch["output"][i],
                                     batch["topk_class"][i] if top else None, batch["topk_score"][i] if top else None)
        return re.findall(r"Operator \d+ ([^:]+):", ds.stats())
    finally:
        context.enable_progress_bars, context.print_on_execution_start = settings
        if started:
            ray.shutdown()
