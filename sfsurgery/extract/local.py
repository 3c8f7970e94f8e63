"""The local engine: decoding in DataLoader worker processes, the model in this one, batched.

Each worker takes the next video from a shared counter (so one long video does not hold back a
worker's share), decodes it with :func:`sfsurgery.decode.iter_windows` and sends its windows one by
one, then an end mark with the window count and the error that stopped it, if any. This process
batches windows across videos (``batch_size`` clips per forward) and hands the outputs to the
:class:`~sfsurgery.extract.collect.Collector`.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from ..decode import iter_windows
from ..errors import SurgeryError
from ..transform import ClipTransform
from .collect import Collector
from .model import Runner


def default_workers() -> int:
    """One decoding process per core but one (the model's), at least one, at most eight."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def describe(exc: BaseException) -> str:
    """The ``error`` cell of a video that failed."""
    if isinstance(exc, SurgeryError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"[:500]


def decode_video(index: int, path: str, transform: ClipTransform, stride: float | None) -> Iterator[tuple]:
    """``("window", video, index, start, end, clip)`` per window, then ``("end", video, count, error)``."""
    count, error = 0, None
    try:
        for window in iter_windows(path, transform, stride=stride):
            yield "window", index, window.index, window.start, window.end, window.clip
            count += 1
    except Exception as exc:  # any failure is this video's, never the corpus's
        error = describe(exc)
    yield "end", index, count, error


class _Videos(IterableDataset):
    def __init__(self, jobs: list[tuple[int, str]], transform: ClipTransform, stride: float | None, counter):
        self.jobs, self.transform, self.stride, self.counter = jobs, transform, stride, counter

    def __iter__(self) -> Iterator[tuple]:
        while True:
            with self.counter.get_lock():
                taken = self.counter.value
                self.counter.value += 1
            if taken >= len(self.jobs):
                return
            yield from decode_video(*self.jobs[taken], self.transform, self.stride)


def _as_is(item):
    return item


def run_local(jobs: list[tuple[int, str]], transform: ClipTransform, stride: float | None,
              runner: Callable[[], Runner], collector: Collector, *, workers: int, batch_size: int,
              pin_memory: bool = False) -> None:
    """Extract ``jobs`` (index, path); ``runner`` makes the model once the workers are started."""
    if not jobs:
        return
    context = multiprocessing.get_context()
    workers = min(workers, len(jobs))
    dataset = _Videos(jobs, transform, stride, context.Value("q", 0))
    extra = {}
    if workers:  # enough windows in flight to fill the next batch while this one runs
        extra = {"multiprocessing_context": context, "in_order": False,
                 "prefetch_factor": max(2, math.ceil(2 * batch_size / workers))}
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_as_is, pin_memory=pin_memory,
                        **extra)
    items = iter(loader)  # the workers start (fork) before the model is loaded here
    model = runner()
    batch: list[tuple] = []

    def forward() -> None:
        outputs, classes, scores = model(torch.stack([item[5] for item in batch]))
        for row, item in enumerate(batch):
            collector.window(item[1], item[2], item[3], item[4], outputs[row],
                             None if classes is None else classes[row], None if scores is None else scores[row])
        batch.clear()

    threads = torch.get_num_threads()

    def decoded(source: Iterator[tuple]) -> Iterator[tuple]:
        """The items; decoding here (no workers) runs on one torch thread, as in a worker: per-frame
        scaling is too small to split, and on a busy machine more threads make it several times slower."""
        while True:
            if not workers:
                torch.set_num_threads(1)
            try:
                item = next(source, None)
            finally:
                torch.set_num_threads(threads)
            if item is None:
                return
            yield item

    stream = decoded(items)
    try:
        for item in stream:
            if item[0] == "end":
                collector.end(item[1], item[2], item[3])
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                forward()
        if batch:
            forward()
    finally:
        stream.close()
        del stream, items  # stops the workers now, also on Ctrl-C
