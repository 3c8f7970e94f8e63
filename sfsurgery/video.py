"""Clips for SlowFast: decode (PyAV), transform and pack pathways, in plain torch.

pytorchvideo 0.1.5's transforms do not import with current torchvision (it removed
``functional_tensor``), so the few the inference path needs live here. They follow
pytorchvideo's functional versions index for index; the tests check that.
"""

from __future__ import annotations

import math
import operator
from pathlib import Path

import torch
from torch.nn import functional as F

from .errors import VideoError
from .trace import frames_hint

MEAN = 0.45  # the model zoo's Kinetics normalisation, every channel
STD = 0.225


def uniform_indices(length: int, frames: int, device: torch.device | str | None = None) -> torch.Tensor:
    """pytorchvideo's ``uniform_temporal_subsample`` indices: linspace(0, T-1, n), clamped, long.

    When ``frames > length`` frames repeat (nearest neighbour), as in pytorchvideo. Computed
    on the CPU, as pytorchvideo does, then moved: the same indices on every device.
    """
    if length < 1 or frames < 1:
        raise VideoError(f"cannot sample {frames} frames from a clip of {length} frames")
    indices = torch.linspace(0, length - 1, frames).clamp(0, length - 1).long()
    return indices if device is None else indices.to(device)


def _positive_int(value, name: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise VideoError(f"{name} must be a positive integer, not {value!r}")
    return number


def pack_pathways(clips: torch.Tensor, alpha: int | None = 4,
                  frames: int | None = None) -> list[torch.Tensor] | torch.Tensor:
    """The [slow, fast] input of a SlowFast model, for one clip or a whole batch at once.

    Args:
        clips: one clip (C, T, H, W) or a batch (B, C, T, H, W), on any device, any dtype.
        alpha: the slow pathway gets ``frames // alpha`` frames (the model's fusion stride).
            ``None``: a one-pathway model (X3D, Slow, MViT, ...; a file whose input has
            ``alpha: null``): the clip itself is returned, subsampled to ``frames`` when given.
        frames: subsample T uniformly to this many fast frames first (pytorchvideo's
            ``UniformTemporalSubsample``: ``linspace(0, T-1, frames)`` clamped, ``.long()``;
            frames repeat when ``frames > T``). ``None`` keeps all T frames.

    Returns:
        ``[slow, fast]`` with the input's rank and device (``alpha=None``: the one clip). ``fast``
        is ``clips`` itself when ``frames`` is None (no copy); the slow frames are
        ``linspace(0, T-1, T // alpha)`` of the fast ones, as in pytorchvideo's ``PackPathway``. Each pathway is one
        ``index_select`` over the whole batch: no per-sample loop, no concatenation.

    Raises:
        VideoError (also a ``ValueError``): the clip is not 4-D or 5-D, or the fast frame count
        is not a multiple of ``alpha``. A SlowFast model's fast-to-slow fusion (a temporal conv
        with stride ``alpha``) turns T fast frames into ``ceil(T / alpha)``, which meets the
        ``T // alpha`` slow frames only when ``alpha`` divides T; otherwise the stock model
        fails deep inside its forward. Taking ``ceil(T / alpha)`` slow frames instead would run,
        but on a slow/fast alignment the model was never trained on, so we refuse and name the
        fix (pass ``frames=`` a multiple of ``alpha``) rather than guess.

    Example:
        >>> slow, fast = pack_pathways(torch.rand(8, 3, 64, 224, 224), alpha=4, frames=32)
        >>> slow.shape, fast.shape
        (torch.Size([8, 3, 8, 224, 224]), torch.Size([8, 3, 32, 224, 224]))
        >>> pack_pathways(torch.rand(8, 3, 64, 182, 182), alpha=None, frames=13).shape   # X3D-S
        torch.Size([8, 3, 13, 182, 182])
    """
    if not isinstance(clips, torch.Tensor) or clips.dim() not in (4, 5):
        shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
        raise VideoError(f"expected a clip (C, T, H, W) or a batch (B, C, T, H, W), got {shape}")
    alpha = None if alpha is None else _positive_int(alpha, "alpha")
    frames = None if frames is None else _positive_int(frames, "frames")
    length = clips.shape[-3]
    if length < 1:
        raise VideoError("the clip has no frames")
    if alpha is None:  # one pathway: the clip is the input
        return clips if frames is None or frames == length else \
            clips.index_select(-3, uniform_indices(length, frames, clips.device))
    fast_t = length if frames is None else frames
    if fast_t % alpha:
        raise VideoError(f"{fast_t} fast frames do not pack with alpha={alpha}: the model's fusion turns them "
                         f"into ceil({fast_t}/{alpha}) = {math.ceil(fast_t / alpha)} slow frames, "
                         f"not {fast_t // alpha}", hint=frames_hint(fast_t, alpha))
    fast = clips
    if frames is not None and frames != length:  # linspace(0, T-1, T) is the identity
        fast = clips.index_select(-3, uniform_indices(length, frames, clips.device))
    slow = fast.index_select(-3, uniform_indices(fast_t, fast_t // alpha, clips.device))
    return [slow, fast]


def to_float(clip: torch.Tensor) -> torch.Tensor:
    """uint8 frames → float32 in [0, 1] (``x / 255``); float clips pass through unchanged."""
    if clip.is_floating_point():
        return clip
    if clip.dtype != torch.uint8:
        raise VideoError(f"expected uint8 or float frames, got {clip.dtype}")
    return clip.float().div_(255.0)


def _spatial(clip: torch.Tensor, fn) -> torch.Tensor:
    """Apply a 4-D (N, C, H, W) op to the last two dims of a (C, T, H, W) or (B, C, T, H, W) clip.

    A (C, T, H, W) clip goes in as is, as pytorchvideo passes it (same arithmetic, same bits).
    """
    if clip.dim() == 4:
        return fn(clip)
    out = fn(clip.reshape(-1, *clip.shape[-3:]))
    return out.reshape(*clip.shape[:-2], *out.shape[-2:])


def short_side_scale(clip: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Scale (..., H, W) so the shorter side is ``size`` (pytorchvideo's ``short_side_scale``).

    The longer side becomes ``floor(long / short * size)``; bilinear, ``align_corners=False``.
    """
    h, w = clip.shape[-2:]
    if w < h:
        new_h, new_w = int(math.floor(h / w * size)), size
    else:
        new_h, new_w = size, int(math.floor(w / h * size))
    if (new_h, new_w) == (h, w):
        return clip
    return _spatial(clip, lambda x: F.interpolate(x, size=(new_h, new_w), mode=interpolation,
                                                  align_corners=False))


def center_crop(clip: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """The central (h, w) window of (..., H, W), offsets rounded as torchvision's ``CenterCropVideo``."""
    th, tw = (size, size) if isinstance(size, int) else size
    h, w = clip.shape[-2:]
    if th > h or tw > w:
        raise VideoError(f"cannot crop {th}x{tw} from a {h}x{w} clip")
    i, j = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return clip[..., i:i + th, j:j + tw]


def normalize(clip: torch.Tensor, mean: float | tuple[float, ...] = MEAN,
              std: float | tuple[float, ...] = STD) -> torch.Tensor:
    """``(x - mean) / std`` per channel of a (C, T, H, W) or (B, C, T, H, W) clip."""
    c = clip.shape[-4]
    view = (c, 1, 1, 1)
    m = torch.as_tensor(mean, dtype=clip.dtype, device=clip.device).expand(c).reshape(view)
    s = torch.as_tensor(std, dtype=clip.dtype, device=clip.device).expand(c).reshape(view)
    return (clip - m) / s


def cover_side(hw: tuple[int, int], size: tuple[int, int]) -> int:
    """The short-side length that makes an (h, w) frame cover ``size`` (then center-crop)."""
    h, w = hw
    short = min(h, w)
    side = max(1, math.ceil(short * max(size[0] / h, size[1] / w)))
    while True:  # floor() on the long side can leave it one pixel short
        long_side = int(math.floor(max(h, w) / short * side))
        new_h, new_w = (long_side, side) if w < h else (side, long_side)
        if new_h >= size[0] and new_w >= size[1]:
            return side
        side += 1


def preprocess(frames: torch.Tensor, size: int | tuple[int, int], *, num_frames: int | None = None,
               channels: int = 3, mean: float | tuple[float, ...] = MEAN,
               std: float | tuple[float, ...] = STD) -> torch.Tensor:
    """Decoded frames (T, H, W, C) uint8 → one normalised model clip (C, T, h, w) float32.

    Uniform temporal subsample to ``num_frames`` (if given), ``/ 255``, short-side scale so
    the frame covers ``size`` (for a square ``size`` that is the short side = ``size``), center
    crop, normalise. ``channels=1`` turns RGB into gray (mean of the channels) before
    normalising; other channel counts must match the video's.
    """
    if frames.dim() != 4:
        raise VideoError(f"expected frames (T, H, W, C), got {tuple(frames.shape)}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    if num_frames is not None and num_frames != frames.shape[0]:
        frames = frames.index_select(0, uniform_indices(frames.shape[0], num_frames, frames.device))
    clip = to_float(frames.permute(3, 0, 1, 2))  # (C, T, H, W)
    if channels != clip.shape[0]:
        if channels != 1:
            raise VideoError(f"the model takes {channels}-channel clips; a {clip.shape[0]}-channel video "
                             "only converts to 1 channel (gray)")
        clip = clip.mean(0, keepdim=True)
    clip = short_side_scale(clip, cover_side(tuple(clip.shape[-2:]), size))
    return normalize(center_crop(clip, size).contiguous(), mean, std)


def _decode(path: Path, keep) -> tuple[list, int]:
    """One pass over the first video stream: (rgb frames whose index ``keep`` accepts, count)."""
    import av

    kept, count = [], 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if keep(count):
                    kept.append((count, frame.to_ndarray(format="rgb24")))
                count += 1
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path.name} is not a video PyAV can decode ({exc})",
                         hint="pass a video file such as .mp4, .avi or .webm") from None
    return kept, count


def _frame_hint(path: Path) -> int:
    import av

    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].frames if container.streams.video else 0
    except (av.FFmpegError, UnicodeDecodeError):
        return 0


def decode_clip(path: str | Path, frames: int) -> torch.Tensor:
    """Decode a video (PyAV) to ``frames`` uniformly sampled RGB frames, (T, H, W, C) uint8.

    Samples over every frame of the first video stream with pytorchvideo's index rule
    (frames repeat when the video is shorter). Only the sampled frames are converted and
    kept: the container's frame count places them in one pass; when that count is missing
    or wrong, a second pass uses the true one.

    Raises:
        VideoError: no such file, not a decodable video, no video stream, or no frames.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"no such video: {path}")
    frames = _positive_int(frames, "frames")
    hint = _frame_hint(path)
    wanted = set(uniform_indices(hint, frames).tolist()) if hint > 0 else None
    kept, count = _decode(path, (lambda i: i in wanted) if wanted is not None else (lambda i: False))
    if count == 0:
        raise VideoError(f"{path.name} has no decodable video frames")
    if count != hint:
        wanted = set(uniform_indices(count, frames).tolist())
        kept, count = _decode(path, lambda i: i in wanted)
    by_index = dict(kept)
    rows = [torch.from_numpy(by_index[i]) for i in uniform_indices(count, frames).tolist()]
    if len({row.shape for row in rows}) > 1:
        raise VideoError(f"{path.name}: the frame size changes within the video",
                         hint="re-encode it at one resolution")
    return torch.stack(rows)
