"""Decoded frames → the model's input, as the file says: :func:`transform` (``weights.transforms()`` for video).

A clip is ``frames × sampling_rate`` consecutive source frames, uniformly subsampled to ``frames``
(pytorchvideo's ``linspace(0, n - 1, frames)`` truncated), each frame scaled so its short side is
``side``, center-cropped to the input size, divided by 255 and normalised with ``mean``/``std``;
then packed into ``[slow, fast]`` (or left as one clip for a one-pathway model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import VideoError
from .recipe import InputSpec, Preprocess
from .trace import ModelInput
from .video import center_crop, pack_pathways, short_side_scale, to_float, uniform_indices


@dataclass(frozen=True)
class ClipTransform:
    """The preprocessing contract of one model file.

    Attributes:
        input: the clip the model takes (channels, frames, alpha, size).
        preprocess: sampling_rate, side, mean, std.
    """

    input: InputSpec
    preprocess: Preprocess

    @property
    def span(self) -> int:
        """Source frames one clip covers: ``frames × sampling_rate``."""
        return self.input.frames * self.preprocess.sampling_rate

    def frame(self, rgb: torch.Tensor) -> torch.Tensor:
        """One decoded frame (H, W, C) uint8 → (channels, h, w) float in [0, 1], scaled and cropped."""
        if rgb.dim() != 3:
            raise VideoError(f"expected a frame (H, W, C), got {tuple(rgb.shape)}", hint="decode to RGB frames")
        image = to_float(rgb.permute(2, 0, 1))
        if self.input.channels != image.shape[0]:
            if self.input.channels != 1:
                raise VideoError(f"the model takes {self.input.channels}-channel clips; a {image.shape[0]}-channel "
                                 "video only converts to 1 channel (gray)", hint="use a video the model was made for")
            image = image.mean(0, keepdim=True)
        return center_crop(short_side_scale(image, self.preprocess.side), tuple(self.input.size))

    def normalize(self, clip: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel of a (C, T, h, w) clip (RGB values average for a gray model)."""
        mean, std = torch.tensor(self.preprocess.mean), torch.tensor(self.preprocess.std)
        if self.input.channels == 1 and mean.numel() == 3:
            mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
        if mean.numel() not in (1, clip.shape[0]):
            raise VideoError(f"the file's preprocess has {mean.numel()} mean/std values for {clip.shape[0]}-channel "
                             "clips", hint="set preprocess.mean and preprocess.std in the recipe, one per channel")
        shape = (-1, 1, 1, 1)
        return (clip - mean.to(clip).reshape(shape)) / std.to(clip).reshape(shape)

    def clip(self, frames: torch.Tensor) -> torch.Tensor:
        """Decoded frames (T, H, W, C) uint8 of one window → the normalised clip (C, frames, h, w).

        The window's frames are subsampled uniformly to ``input.frames`` first.
        """
        if frames.dim() != 4 or frames.shape[0] < 1:
            raise VideoError(f"expected frames (T, H, W, C), got {tuple(frames.shape)}", hint="decode to RGB frames")
        picked = uniform_indices(frames.shape[0], self.input.frames).tolist()
        return self.normalize(torch.stack([self.frame(frames[i]) for i in picked], dim=1))

    def pack(self, clips: torch.Tensor) -> ModelInput:
        """A batch of clips (B, C, T, h, w) → what the model takes."""
        return clips if self.input.alpha is None else pack_pathways(clips, self.input.alpha)

    def __call__(self, frames: torch.Tensor) -> ModelInput:
        """Decoded frames (T, H, W, C) → the model's input for one clip (batch of 1)."""
        return self.pack(self.clip(frames)[None])


def transform(path: str | Path) -> ClipTransform:
    """The preprocessing a model file records, as a callable (the analogue of ``weights.transforms()``).

    Example:
        >>> t = sfsurgery.transform("out/model.safetensors")
        >>> logits = model(t(frames))          # frames: (T, H, W, 3) uint8, T = t.span source frames
    """
    from .file.reader import read_file_header

    recorded = read_file_header(path).recorded
    preprocess = recorded.preprocess or Preprocess()  # files before the preprocess record: the model zoo's
    return ClipTransform(InputSpec(**recorded.input.model_dump()), Preprocess(**preprocess.model_dump()))
