"""The model side of ``extract``: what a file allows (checked before any work) and one batched forward.

:func:`model_spec` reads and verifies the file's header once: the clip transform (with
``--sampling-rate`` applied), the size of one window's output, the labels and the digest that
identifies the model in the output's metadata. :class:`Runner` is the model itself, in eval mode on
its device; both engines (the local one and Ray's actors) call it on batches of clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..devices import torch_device
from ..errors import FileFormatError, SurgeryError
from ..recipe import InputSpec, Preprocess
from ..transform import ClipTransform

#: the most values one window's output may have: a feature map would make the table enormous
MAX_OUTPUT = 65_536


@dataclass(frozen=True)
class ModelSpec:
    """What a model file gives ``extract``.

    Attributes:
        file: the model file. digest: its ``sfsurgery.sha256`` (or, for format 1, the data digest).
        transform: the clip transform, sampling rate overridden where asked.
        output_size: values per window (all outputs, flattened). labels: the file's class labels or None.
        topk: top classes per window (at most the number of classes), or None.
    """

    file: Path
    digest: str
    transform: ClipTransform
    output_size: int
    labels: tuple[str, ...] | None
    topk: int | None


def model_spec(file: str | Path, *, sampling_rate: int | None = None, topk: int | None = None) -> ModelSpec:
    """Read and check ``file`` for extraction; raises before any video is opened.

    Raises:
        FileFormatError: not a file sfsurgery can load. SurgeryError: the output is larger than
        :data:`MAX_OUTPUT` values per window, ``topk`` without labels, a bad sampling rate.
    """
    from ..file.reader import read_file_header

    header = read_file_header(file)
    recorded = header.recorded
    preprocess = (recorded.preprocess or Preprocess()).model_dump()
    if sampling_rate is not None:
        if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, int) or sampling_rate < 1:
            raise SurgeryError(f"sampling rate must be a positive whole number of frames, not {sampling_rate!r}",
                               hint=f"the file's own is {preprocess['sampling_rate']}; e.g. --sampling-rate 2")
        preprocess["sampling_rate"] = sampling_rate
    transform = ClipTransform(InputSpec(**recorded.input.model_dump()), Preprocess(**preprocess))
    shapes = recorded.output_shape
    shapes = shapes if shapes and isinstance(shapes[0], list) else [shapes]
    size = sum(math.prod(shape[1:]) for shape in shapes)
    if size > MAX_OUTPUT:
        raise SurgeryError(f"{header.name}: the model returns {size:,} values per window "
                           f"({' + '.join('x'.join(map(str, s[1:])) for s in shapes)}); extract stores at most "
                           f"{MAX_OUTPUT:,}", hint="make an embedding: truncate with pool: true in the recipe, e.g. "
                                                   "{op: truncate, after: blocks.4, pool: true}")
    labels = tuple(recorded.labels) if recorded.labels else None
    if topk is not None:
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise SurgeryError(f"topk must be a positive whole number, not {topk!r}", hint="e.g. --topk 5")
        if labels is None:
            raise SurgeryError(f"--topk needs class labels: {header.name} records none",
                               hint="save a classifier with save.labels in its recipe, or leave out --topk "
                                    "(the output column holds every score)")
        topk = min(topk, len(labels))
    digest = recorded.sha256 or recorded.data_sha256
    return ModelSpec(Path(file).resolve(), str(digest), transform, size, labels, topk)


class Runner:
    """The model of a file, loaded once: a batch of clips (B, C, T, h, w) → outputs and top classes.

    Outputs are what the model returns (its head's activation included), flattened per window, as
    float32. Top-class scores are softmax probabilities, or the outputs themselves when the head
    applies its own activation (as ``predict`` ranks them).
    """

    def __init__(self, spec: ModelSpec, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None):
        from ..pipeline import load
        from ..predict import head_activation

        self.spec = spec
        self.device = torch_device(device)
        self.model = load(spec.file, self.device, dtype)
        self.dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        self.activated = head_activation(self.model) is not None

    def __call__(self, clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(outputs (B, N) float32, top classes (B, K) int64 or None, their scores (B, K) float32 or None)."""
        with torch.inference_mode():
            x = clips.to(self.device, self.dtype, non_blocking=True)
            out = self.model(self.spec.transform.pack(x))
            parts = list(out) if isinstance(out, list | tuple) else [out]
            if not all(isinstance(p, torch.Tensor) and p.dim() >= 1 and p.shape[0] == len(clips) for p in parts):
                raise FileFormatError(f"{self.spec.file.name}: the model does not return one output per clip",
                                      hint="extract runs models that return a tensor (or tensors) per clip")
            flat = torch.cat([p.reshape(len(clips), -1) for p in parts], 1).float()
            if flat.shape[1] != self.spec.output_size:
                raise FileFormatError(f"{self.spec.file.name}: the model returns {flat.shape[1]} values per clip; "
                                      f"its header records {self.spec.output_size}",
                                      hint="rewrite the file with sfsurgery apply")
            classes = scores = None
            if self.spec.topk:
                ranked = flat if self.activated else flat.softmax(1)
                values, indices = ranked.topk(self.spec.topk, dim=1)
                classes, scores = indices.cpu().numpy(), values.cpu().numpy()
            return flat.cpu().numpy(), classes, scores
