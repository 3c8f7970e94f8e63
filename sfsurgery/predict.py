"""``sfsurgery predict``: run a saved model on a video, the seed's inference path done right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .devices import torch_device
from .errors import FileFormatError, SurgeryError, VideoError

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


def _check_clip_fits(clip: dict[str, Any], video: Path | None = None) -> None:
    """Bound the memory predict needs: the frames of one window (scaled and cropped) and its clip.

    Decoding streams (each frame is cropped as it is decoded), so the video's own frame size
    does not matter; the model's clip does.
    """
    c, t, (h, w) = clip["channels"], clip["frames"], clip["size"]
    need = 2 * c * t * h * w * 4  # the window's kept frames and the normalised clip
    if t > MAX_FRAMES or need > MAX_CLIP_BYTES:
        raise VideoError(f"the model's clip ({c}x{t}x{h}x{w}) needs about {need / 2**30:.1f} GiB to build; "
                         f"predict builds clips of up to {MAX_FRAMES} frames and {MAX_CLIP_BYTES >> 30} GiB",
                         hint="run the model on clips you prepare yourself (sfsurgery.load + pack_pathways)")


def head_activation(model: nn.Module) -> nn.Module | None:
    """The activation the model's classifier applies, or None (then predict applies softmax)."""
    from .builtin.ops.stock_heads import stock_head  # where one-pathway hub models keep theirs

    head = stock_head(model)
    blocks = getattr(model, "blocks", None)
    last = blocks[-1] if isinstance(blocks, nn.ModuleList) and len(blocks) else model
    act = head.activation.get() if head is not None else getattr(last, "activation", None)
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


def is_classifier(model: nn.Module) -> bool:
    """Whether the model ends in a head with a linear projection (not a feature extractor)."""
    from .builtin.ops.stock_heads import stock_head

    if stock_head(model) is not None:
        return True
    blocks = getattr(model, "blocks", None)
    last = blocks[-1] if isinstance(blocks, nn.ModuleList) and len(blocks) else model
    proj = getattr(last, "proj", None)
    return isinstance(proj, nn.Linear) or isinstance(getattr(proj, "proj", None), nn.Linear)


def predict(file: str | Path, video: str | Path, topk: int = 5, device: str | torch.device = "cpu",
            labels: str | Path | None = None, *, stride: float | None = None, batch_size: int = 8) -> dict[str, Any]:
    """Top classes of a saved model on a video, averaged over its windows (multi-view testing).

    The video is cut into the windows :mod:`sfsurgery.decode` defines from the file's input and
    ``preprocess`` (a clip spans ``frames × sampling_rate`` source frames; default stride: one clip),
    each window is scaled, cropped, normalised and packed as the file says, the model's scores are
    taken per window (softmax unless the head has its own activation) and averaged.

    Returns:
        ``{"file", "video", "windows", "topk": [{"class", "score", "label"}, ...]}``, scores descending.
        Labels come from ``labels`` (a text file), else from the file's ``save.labels``.

    Raises:
        FileFormatError: not an sfsurgery file, or not a classifier. VideoError: the video cannot be
        decoded, or the clip would not fit in memory (checked before decoding).
    """
    if topk < 1:
        raise SurgeryError(f"topk must be at least 1, not {topk}", hint="e.g. --topk 5")
    from .decode import iter_windows
    from .file.reader import read_file_header
    from .file.rebuild import load_model, rebuild_on_meta
    from .pipeline import protect_inputs
    from .plugins import Registry
    from .transform import transform as file_transform

    header = read_file_header(file)  # read and verified once, for the clip and the model
    _clip_spec(header.recorded.input)
    dev = torch_device(device)
    registry = Registry()
    plan = rebuild_on_meta(header, registry)  # on meta: the recorded input is the model's, checked
    if not is_classifier(plan.model):
        last = plan.model.blocks[-1] if hasattr(plan.model, "blocks") else plan.model
        raise FileFormatError(f"{Path(file).name} is not a classifier: it ends in {type(last).__name__}, "
                              "so its outputs are features, not class scores",
                              hint="use sfsurgery extract (or sfsurgery.load) for embeddings")
    clip_transform = file_transform(file)
    windows = iter_windows(video, clip_transform, stride=stride)
    first = next(windows)  # a bad video fails before the tensors load
    model = protect_inputs(load_model(header, dev, None, registry, plan).eval())
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    activation = head_activation(model)
    total, count, batch = None, 0, [first.clip]

    def run(clips: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            out = model(clip_transform.pack(torch.stack(clips).to(dev, dtype)))
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise FileFormatError(f"{Path(file).name}: the model outputs {shape}, not (batch, classes) scores",
                                  hint="predict needs a model that ends in a classifier head")
        scores = out.float()
        return (scores if activation is not None else scores.softmax(1)).sum(0).cpu()

    for window in windows:
        batch.append(window.clip)
        if len(batch) == batch_size:
            total, count, batch = _add(total, run(batch)), count + len(batch), []
    if batch:
        total, count = _add(total, run(batch)), count + len(batch)
    scores = total / count
    names = read_labels(labels, scores.numel()) if labels is not None else _file_labels(header, scores.numel())
    values, indices = scores.topk(min(topk, scores.numel()))
    return {"file": str(file), "video": str(video), "windows": count,
            "topk": [{"class": int(i), "score": float(v), "label": names[int(i)]}
                     for v, i in zip(values.tolist(), indices.tolist())]}


def _add(total: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
    return scores if total is None else total + scores


def _file_labels(header: Any, classes: int) -> list[str | None]:
    recorded = header.recorded.labels
    return list(recorded) if recorded and len(recorded) == classes else [None] * classes


__all__ = ["predict", "clip_spec", "head_activation", "VideoError"]
