"""Windows over a video, decoded once with PyAV: what ``predict`` and ``extract`` run the model on.

A clip spans ``n = frames × sampling_rate`` consecutive source frames. With ``fps`` the stream's
average rate and ``s = round(stride × fps)`` (default ``s = n``: one clip), window k covers frames
``[k·s, k·s + n)`` and exists while ``k·s + n ≤`` the number of decoded frames; a video shorter
than one clip gives one window over all its frames. Each window's frames are subsampled
uniformly to ``frames`` (pytorchvideo's ``linspace(0, count - 1, frames)`` truncated).

Decoding streams: each frame is scaled and cropped as soon as it is decoded, kept only while a
window still needs it, and a window is yielded as soon as its last frame is decoded, so memory
stays at a few clips whatever the video's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import VideoError
from .transform import ClipTransform
from .video import uniform_indices


@dataclass(frozen=True)
class Window:
    """One clip of a video: its place (frame indices and seconds) and the model-ready clip."""

    index: int
    first: int
    last: int  # inclusive
    start: float
    end: float
    clip: torch.Tensor  # (C, frames, h, w), normalised


def window_step(span: int, fps: float, stride: float | None) -> int:
    """Frames between window starts: ``round(stride × fps)``, or ``span`` (one clip) by default."""
    if stride is None:
        return span
    if not math.isfinite(stride) or stride <= 0:
        raise VideoError(f"stride must be a positive number of seconds, not {stride}", hint="e.g. --stride 1.0")
    return max(1, round(stride * fps))


def window_picks(first: int, count: int, frames: int) -> list[int]:
    """The source frames a window of ``count`` frames from ``first`` is subsampled to."""
    return [first + i for i in uniform_indices(count, frames).tolist()]


def iter_windows(path: str | Path, transform: ClipTransform, *, stride: float | None = None) -> Iterator[Window]:
    """Yield the windows of ``path``'s first video stream, in order.

    Raises:
        VideoError: no such file, not decodable, no video stream, no frames, or a decoding failure
            part way (raised after the windows decoded before it were yielded).
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"no such video: {path}", hint="check the path")
    frames, span = transform.input.frames, transform.span
    offsets = set(uniform_indices(span, frames).tolist())
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, OSError) as exc:
        raise VideoError(f"{path.name} is not a video PyAV can decode ({str(exc)[:200]})",
                         hint="pass a video file such as .mp4, .avi or .webm") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path.name} has no video stream", hint="pass a file with a video track")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 30.0
        step = window_step(span, fps, stride)
        kept: dict[int, torch.Tensor] = {}
        count, next_window = 0, 0
        try:
            for frame in container.decode(stream):
                i = count
                count += 1
                first_k = max(0, -(-(i - span + 1) // step))
                # frames of the first clip are all kept: a shorter video is one window over all of them
                wanted = i < span or any((i - k * step) in offsets for k in range(first_k, i // step + 1))
                if wanted:
                    kept[i] = transform.frame(torch.from_numpy(frame.to_ndarray(format="rgb24")))
                while next_window * step + span - 1 <= i:  # a window is complete with its last frame
                    yield _window(next_window, next_window * step, span, transform, kept, fps)
                    next_window += 1
                    for old in [j for j in kept if j < next_window * step]:  # no later window needs these
                        del kept[old]
        except (av.FFmpegError, UnicodeDecodeError, RuntimeError) as exc:
            raise VideoError(f"{path.name}: decoding failed after {count} frames ({str(exc)[:200]})",
                             hint="the file may be truncated or corrupt; windows before the failure were kept") \
                from None
    if count == 0:
        raise VideoError(f"{path.name} has no decodable video frames", hint="pass a video with frames")
    if next_window == 0:  # shorter than one clip: one window over all its frames
        yield _window(0, 0, count, transform, kept, fps)


def _window(index: int, first: int, count: int, transform: ClipTransform, kept: dict[int, torch.Tensor],
            fps: float) -> Window:
    picks = window_picks(first, count, transform.input.frames)
    clip = transform.normalize(torch.stack([kept[p] for p in picks], dim=1))
    last = first + count - 1
    return Window(index, first, last, first / fps, (last + 1) / fps, clip)
