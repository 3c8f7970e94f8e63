"""``sfsurgery predict``: run a saved model on a video, the seed's inference path done right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import FileFormatError, SurgeryError, VideoError
from .video import decode_clip, pack_pathways, preprocess


def clip_spec(file: str | Path) -> dict[str, Any]:
    """The clip a saved model takes: its ``sfsurgery.input`` metadata (channels, frames, alpha, size)."""
    from .file.metadata import read_field
    from .file.reader import read_metadata

    name = Path(file).name
    spec = read_field(read_metadata(file), "sfsurgery.input", name)
    try:
        return {"channels": int(spec["channels"]), "frames": int(spec["frames"]),
                "alpha": None if spec.get("alpha") is None else int(spec["alpha"]),
                "size": tuple(int(s) for s in spec["size"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise FileFormatError(f"{name}: damaged metadata (sfsurgery.input: {exc})",
                              hint="write the file again with sfsurgery apply") from None


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
        FileFormatError: not an sfsurgery file. VideoError: the video cannot be decoded.
    """
    if topk < 1:
        raise SurgeryError(f"topk must be at least 1, not {topk}")
    from .pipeline import load

    spec = clip_spec(file)
    dev = _device(device)
    frames = decode_clip(video, spec["frames"])  # a bad video fails before the model loads
    model = load(file, device=dev)
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
