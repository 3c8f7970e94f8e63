"""Benchmark: ``sfsurgery.extract`` (local engine) against the seed's way of running a model over videos.

Not a pytest module (no ``test_`` names); run it directly:

    .venv/bin/python tests/benchmarks/bench_extract.py [--videos 8] [--seconds 10] [--repeats 2] [--r50-repeats 1]

Eight generated videos (320x240, 30 fps, 10 s, mpeg4) and two feature models (random weights):
SlowFast R50 at 224 (32 frames x sampling rate 2, ``recipes/features.yaml``) and a depth-18 SlowFast at
112 (16 frames x sampling rate 4), where decoding is a large share of the work. Both ways run the same
windows (one clip apart) with the same torch threads (``--threads``, default all cores):

* the seed's way: per window, open the video, seek to the window and decode its span with PyAV,
  transform it (``ClipTransform.clip``), pack it and run the model on that one clip;
* ``sfsurgery.extract``: one decoding pass per video in DataLoader worker processes (the default
  count: cores - 1), batches of 8 clips per forward, the Parquet file written.

Both include loading the model. Reported: windows per second (median of the repeats, the two ways
interleaved), and where the time goes (medians): the seed's decoding (open, seek, decode, transform)
and model seconds as measured inside its loop; for extract, the seconds its forwards took inside the
run, and one decoding pass over the corpus in a single process with one torch thread, as a worker
runs it (``iter_windows`` alone; in the run it overlaps the model). The outputs of the two ways are
compared too. R50 is slow on a CPU (seconds per clip), so it runs once by default.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

import sfsurgery
from sfsurgery.decode import iter_windows
from sfsurgery.extract.model import Runner
from sfsurgery.transform import transform as file_transform

ROOT = Path(__file__).resolve().parents[2]
BATCH = 8


def write_video(path: Path, seconds: float, seed: int, fps: int = 30, w: int = 320, h: int = 240) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.stack([(x + i * 4 + seed * 40) % 256, (y * 2 + i * 3) % 256, (x + y + i * 5) % 256], -1)
            img = np.clip(img + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path


def models(folder: Path) -> dict[str, Path]:
    r50 = sfsurgery.apply(str(ROOT / "recipes" / "features.yaml")).save(folder / "r50_features.safetensors")
    r18 = {"name": "r18_112", "base": {"create_slowfast": {"model_depth": 18}},
           "input": {"frames": 16, "size": [112, 112]}, "preprocess": {"sampling_rate": 4},
           "ops": [{"op": "truncate", "after": "blocks.4", "pool": True}]}
    return {"R50 features, 224 px, 32x2 frames": r50,
            "R18 features, 112 px, 16x4 frames": sfsurgery.apply(r18).save(folder / "r18_features.safetensors")}


def seed_way(file: Path, videos: list[Path]) -> tuple[float, float, int, list[np.ndarray]]:
    """(decode seconds, model seconds, windows, outputs): per window seek, decode, transform, one forward."""
    t = file_transform(file)
    span = t.span
    model = sfsurgery.load(file)
    decode_s = model_s = 0.0
    outputs = []
    for video in videos:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            fps, count = float(stream.average_rate), stream.frames
        for first in range(0, count - span + 1, span):
            start = time.perf_counter()
            with av.open(str(video)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                container.seek(int(first / fps / stream.time_base), stream=stream)
                frames = []
                for frame in container.decode(stream):
                    index = round(frame.time * fps)
                    if index >= first + span:
                        break
                    if index >= first:
                        frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            clip = t.clip(torch.stack(frames))
            middle = time.perf_counter()
            with torch.inference_mode():
                outputs.append(model(t.pack(clip[None])).reshape(-1).numpy())
            decode_s += middle - start
            model_s += time.perf_counter() - middle
    return decode_s, model_s, len(outputs), outputs


def decode_alone(file: Path, videos: list[Path]) -> float:
    """Seconds to decode every window of ``videos`` in one process, with one torch thread as in a worker."""
    t = file_transform(file)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for video in videos:
            for _ in iter_windows(video, t):
                pass
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


class ModelClock:
    """Seconds ``extract`` spends in the model's forward (its batches, in this process)."""

    def __init__(self):
        self.seconds = 0.0
        self.call = Runner.__call__

    def __enter__(self):
        clock = self

        def timed(runner, clips):
            start = time.perf_counter()
            try:
                return clock.call(runner, clips)
            finally:
                clock.seconds += time.perf_counter() - start

        Runner.__call__ = timed
        return self

    def __exit__(self, *exc):
        Runner.__call__ = self.call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2, help="repeats for the R18 model")
    parser.add_argument("--r50-repeats", type=int, default=1, help="repeats for R50 (about a minute per way each)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}, torch {torch.__version__}, PyAV {av.__version__}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        videos = [write_video(folder / f"video{i}.mp4", args.seconds, i) for i in range(args.videos)]
        files = models(folder)
        print(f"{len(videos)} videos of {args.seconds:g} s, 320x240, 30 fps\n", flush=True)
        print(f"{'model':<36} {'way':<20} {'windows/s':>10} {'decode s':>9} {'model s':>8} {'vs seed':>8}")
        for (name, file), repeats in zip(files.items(), (args.r50_repeats, args.repeats)):
            seed_rates, our_rates, seed_split, our_model = [], [], [], []
            for _ in range(repeats):
                start = time.perf_counter()
                decode_s, model_s, windows, outputs = seed_way(file, videos)
                seed_rates.append(windows / (time.perf_counter() - start))
                seed_split.append((decode_s, model_s))
                with ModelClock() as clock:
                    summary = sfsurgery.extract(file, videos, folder / "out.parquet", force=True, progress=False,
                                                batch_size=BATCH)
                assert summary["windows"] == windows and summary["failed"] == 0, summary
                our_rates.append(windows / summary["seconds"])
                our_model.append(clock.seconds)
            import pyarrow.parquet as pq

            ours = np.stack(pq.read_table(folder / "out.parquet", columns=["output"])["output"].to_numpy(
                zero_copy_only=False))
            diff = np.abs(ours - np.stack(outputs)).max() / np.abs(np.stack(outputs)).max()
            our_decode = decode_alone(file, videos)
            seed_rate, our_rate = statistics.median(seed_rates), statistics.median(our_rates)
            decode_s, model_s = (statistics.median(part) for part in zip(*seed_split))
            print(f"{name:<36} {'seed (per window)':<20} {seed_rate:>10.2f} {decode_s:>9.1f} {model_s:>8.1f} "
                  f"{1:>7.2f}x")
            print(f"{'':<36} {'sfsurgery extract':<20} {our_rate:>10.2f} {our_decode:>9.1f} "
                  f"{statistics.median(our_model):>8.1f} {our_rate / seed_rate:>7.2f}x")
            print(f"{'':<36} ({windows} windows, {repeats} repeats; max |difference| {diff:.1e} of max |output|)",
                  flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
