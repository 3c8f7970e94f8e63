"""``sfsurgery predict``: run a saved model on a video, the seed's inference path done right."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import FileFormatError, SurgeryError, VideoError
from .video import decode_clip, pack_pathways, preprocess

#: predict decodes and preprocesses in memory: refuse clips that would not fit, before decoding.
MAX_FRAMES = 10_000
MAX_CLIP_BYTES = 16 << 30


def clip_spec(file: str | Path) -> dict[str, Any]:
    """The clip a saved model takes: its ``sfsurgery.input`` metadata (channels, frames, alpha, size)."""
    from .file.reader import read_file_header

    return _clip_spec(read_file_header(file).recorded.input)


def _clip_spec(spec: Any) -> dict[str, Any]:
    clip = {"channels": spec.channels, "frames": spec.frames, "alpha": spec.alpha, "size": tuple(spec.size)}
    _check_clip_fits(clip, None)
    return clip


def _check_clip_fits(clip: dict[str, Any], video: Path | None) -> None:
    """Bound the memory predict needs by the model's clip and the video's frame size."""
    c, t, (h, w) = clip["channels"], clip["frames"], clip["size"]
    need = c * t * h * w * 4  # the normalised clip
    hw = _frame_size(video) if video is not None else None
    if hw is not None:  # decoded uint8 frames, their float copy, then scaled to cover the crop
        aspect = max(hw) / min(hw)
        need += t * hw[0] * hw[1] * (3 + 3 * 4) + math.ceil(t * 3 * 4 * h * w * aspect)
    if t > MAX_FRAMES or need > MAX_CLIP_BYTES:
        source = f" from {video.name}'s {hw[1]}x{hw[0]} frames" if hw is not None else ""
        raise VideoError(f"the model's clip ({c}x{t}x{h}x{w}) needs about {need / 2**30:.1f} GiB to build{source}; "
                         f"predict builds clips of up to {MAX_FRAMES} frames and {MAX_CLIP_BYTES >> 30} GiB",
                         hint="run the model on clips you prepare yourself (sfsurgery.load + pack_pathways)")


def _frame_size(video: Path) -> tuple[int, int] | None:
    """(height, width) of the first video stream, from the container alone; None if unknown."""
    import av

    if not video.is_file():
        return None  # decode_clip says what is wrong with it
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0] if container.streams.video else None
            return (stream.height, stream.width) if stream is not None and stream.height and stream.width else None
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return None


def head_activation(model: nn.Module) -> nn.Module | None:
    """The activation the model's last block applies, or None (then predict applies softmax)."""
    blocks = getattr(model, "blocks", None)
    last = blocks[-1] if isinstance(blocks, nn.ModuleList) and len(blocks) else model
    act = getattr(last, "activation", None)
    return act if isinstance(act, nn.Module) and not isinstance(act, nn.Identity) else None


def read_labels(path: str | Path | None, classes: int) -> list[str | None]:
    """One label per line; trailing blank lines are ignored; the count must match the classes."""
    if path is None:
        return [None] * classes
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SurgeryError(f"cannot read labels file {path} ({exc})",
                           hint="pass a UTF-8 text file with one label per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != classes:
        raise SurgeryError(f"labels file {path.name} has {len(lines)} labels; the model has {classes} classes",
                           hint="pass one label per line, in class order")
    return [line.strip() for line in lines]


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SurgeryError(f"unknown device {device!r} ({exc})", hint="use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SurgeryError("device cuda requested but no CUDA device is available", hint="use --device cpu")
    return dev


def predict(file: str | Path, video: str | Path, topk: int = 5, device: str | torch.device = "cpu",
            labels: str | Path | None = None) -> dict[str, Any]:
    """Top classes of a saved model on a video.

    The clip follows the file's ``sfsurgery.input``: ``frames`` uniformly sampled frames,
    short side scaled to cover ``size``, center crop, mean 0.45 / std 0.225, gray when
    ``channels`` is 1, packed into [slow, fast] with ``alpha``.

    Returns:
        ``{"file", "video", "topk": [{"class", "score", "label"}, ...]}``, scores descending:
        softmax probabilities, or the head's own outputs when its last block has an activation.

    Raises:
        FileFormatError: not an sfsurgery file. VideoError: the video cannot be decoded, or the clip
        would not fit in memory (checked before decoding).
    """
    if topk < 1:
        raise SurgeryError(f"topk must be at least 1, not {topk}")
    from .file.reader import read_file_header
    from .file.rebuild import load_model, rebuild_on_meta
    from .pipeline import protect_inputs
    from .plugins import Registry

    header = read_file_header(file)  # read and verified once, for the clip and the model
    spec = _clip_spec(header.recorded.input)
    dev = _device(device)
    registry = Registry()
    plan = rebuild_on_meta(header, registry)  # on meta: the recorded input is the model's, checked
    _check_clip_fits(spec, Path(video))
    frames = decode_clip(video, spec["frames"])  # a bad video fails before the tensors load
    model = protect_inputs(load_model(header, dev, None, registry, plan).eval())
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    clip = preprocess(frames, spec["size"], channels=spec["channels"]).to(dev, dtype)[None]
    inputs = clip if spec["alpha"] is None else pack_pathways(clip, spec["alpha"])
    with torch.no_grad():
        out = model(inputs)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FileFormatError(f"{Path(file).name}: the model outputs {shape}, not (1, classes) scores",
                              hint="predict needs a model that ends in a classifier head")
    scores = out[0].float()
    if head_activation(model) is None:
        scores = scores.softmax(0)
    names = read_labels(labels, scores.numel())
    values, indices = scores.cpu().topk(min(topk, scores.numel()))
    return {"file": str(file), "video": str(video),
            "topk": [{"class": int(i), "score": float(v), "label": names[int(i)]}
                     for v, i in zip(values.tolist(), indices.tolist())]}


__all__ = ["predict", "clip_spec", "head_activation", "VideoError"]
