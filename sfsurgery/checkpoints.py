"""Checkpoints: strict/matching loads, the hub cache; files are read by sfsurgery.builtin.formats.

Nothing unpickles code: torch files load with ``weights_only=True`` (numpy scalars and dtypes
allow-listed, as the model zoo's ``epoch`` is an ``np.int64``), safetensors files hold tensors
only; tensors are checked against the model (shape, kind of dtype, dense and real) before any op runs.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import nn

from .builtin.formats import check_converted, read_checkpoint
from .errors import CheckpointError

if TYPE_CHECKING:
    from .recipe import InputSpec
    from .resolve import WeightsSource

OFFLINE_ENV = "SFSURGERY_OFFLINE"
_LIST_FIRST = 5


def read_weights(source: WeightsSource, base_model: nn.Module | None = None,
                 base_input: InputSpec | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read ``source`` safely and convert it to a flat state dict; returns it with notes for the report.

    Converters that declare a ``model_shapes`` keyword get the base's ``{key: shape}`` (from
    ``base_model``), and those that declare ``model_input`` the base's default clip (``alpha``
    is its fusion stride), so they can explain a checkpoint made for another architecture.
    """
    path, key = source.path, source.key
    checkpoint = read_checkpoint(path)
    if key != "auto":
        if not isinstance(checkpoint, dict) or key not in checkpoint:
            found = ", ".join(str(k)[:60] for k in list(checkpoint)[:10]) if isinstance(checkpoint, dict) \
                else type(checkpoint).__name__
            raise CheckpointError(f"{path.name} has no entry {key[:100]!r} (found: {found})",
                                  hint="checkpoint_key: auto tries the format's usual entries (model_state, ...)")
        checkpoint = checkpoint[key]
    extra: dict[str, Any] = {}
    if "model_shapes" in source.format.wants:
        state = base_model.state_dict() if base_model is not None else {}
        extra["model_shapes"] = {k: tuple(v.shape) for k, v in state.items()}
    if "model_input" in source.format.wants:
        extra["model_input"] = base_input.model_dump() if base_input is not None else {}
    state = source.format.convert(checkpoint, str(path), **extra)
    check_converted(state, path.name, f"checkpoint format {source.format.name}", source.format.provider)
    notes = []
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
        notes.append(f"stripped DataParallel's 'module.' prefix from {len(state)} keys")
    return state, notes


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_in_background(path: Path) -> Callable[[], str]:
    """Start hashing ``path`` on another core (hashlib releases the GIL); call the result to wait.

    A daemon thread, so a failing command exits at once instead of finishing the hash.
    """
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["digest"] = sha256(path)
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=work, name="sfsurgery-sha256", daemon=True)
    thread.start()

    def wait() -> str:
        thread.join()
        if "error" in result:
            raise CheckpointError(f"cannot read {path.name}: {result['error']}",
                                  hint="check that the checkpoint file is readable")
        return result["digest"]

    return wait


def pretrained_path(url: str, *, download: bool = True) -> Path:
    """The torch hub cache file for ``url``, downloaded there unless offline (or ``download=False``)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if path.is_file() or not download:
        return path
    hint = f"download {url} and put it at {path}"
    if os.environ.get(OFFLINE_ENV) == "1":
        raise CheckpointError(f"model-zoo weights {url} are not in the torch hub cache at {path}, and "
                              f"{OFFLINE_ENV}=1 forbids downloading them", hint=hint)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except Exception as exc:
        raise CheckpointError(f"could not download {url} to {path}: {exc}", hint=hint) from None
    return path


@dataclass
class LoadReport:
    """How a state dict met the model."""

    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)  # right name and shape, but no data or the wrong kind

    @property
    def coverage(self) -> float:
        return self.loaded / self.total if self.total else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "total": self.total, "coverage": round(self.coverage, 4),
                "missing": self.missing, "unexpected": self.unexpected, "mismatched": self.mismatched}


def _listing(label: str, items: list[str]) -> str:
    more = f", ... (+{len(items) - _LIST_FIRST})" if len(items) > _LIST_FIRST else ""
    return f"{len(items)} {label} ({', '.join(items[:_LIST_FIRST])}{more})"


def compare(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    expected = model.state_dict()
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    unusable = [f"{k} ({why})" for k, v in expected.items()
                if k in state and state[k].shape == v.shape and (why := _unusable(state[k], v))]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    return LoadReport(len(expected) - len(missing) - len(mismatched) - len(unusable), len(expected),
                      missing, unexpected, mismatched, unusable)


def _unusable(tensor: torch.Tensor, wanted: torch.Tensor) -> str | None:
    """Why ``tensor`` cannot stand in for ``wanted`` (None when a cast does it): checked before any surgery."""
    if tensor.is_meta:
        return "meta tensor, no data"
    if tensor.is_quantized:
        return f"quantized {tensor.dtype}"
    if tensor.layout != torch.strided or tensor.is_nested:
        return f"{str(tensor.layout).removeprefix('torch.')} layout, not dense"
    if _kind(tensor.dtype) != _kind(wanted.dtype):
        return f"{tensor.dtype}, the model holds {wanted.dtype}"
    return None


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    return "complex" if dtype.is_complex else "floating point" if dtype.is_floating_point else "integer"


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], mode: str, seed: int,
                 source: str) -> LoadReport:
    """Load ``state`` into a model built on the meta device.

    ``strict``: every key and shape must match; nothing is randomly initialised.
    ``matching``: tensors whose name and shape match are loaded; modules left uncovered are
    materialised and initialised with pytorchvideo's own init under ``seed``.
    Either way, a tensor under a right name that holds no usable data (meta, sparse, quantized,
    or integers where the model holds floats) is refused: the checkpoint is broken, not partial.
    """
    report = compare(model, state)
    problems = [_listing(label, items) for label, items in
                (("missing", report.missing), ("unexpected", report.unexpected),
                 ("shape mismatches", report.mismatched), ("unusable tensors", report.unusable)) if items]
    if report.unusable:
        raise CheckpointError(f"{source} does not fit the base: " + "; ".join(problems),
                              hint="save the checkpoint again with dense tensors that hold data: floating point "
                                   "for weights, integers for counters such as num_batches_tracked")
    if mode == "strict" and problems:
        raise CheckpointError(f"{source} does not fit the base: " + "; ".join(problems),
                              hint="check the base arguments, or use load: matching to load what fits")
    expected = model.state_dict()
    usable = {k: _as_dtype(v, expected[k].dtype) for k, v in state.items()
              if k in expected and v.shape == expected[k].shape}
    for _, name in shared_tensors(usable):  # the base holds separate tensors; assign=True would tie them
        usable[name] = usable[name].clone()
    if mode == "matching":
        _init_uncovered(model, set(usable), seed)
    model.load_state_dict(usable, strict=(mode == "strict"), assign=True)
    return report


def shared_tensors(tensors: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """Pairs of names whose tensors overlap in memory (tied weights), the first name of each pair first."""
    spans: dict[tuple, list[tuple[int, int, str]]] = {}
    for name, t in tensors.items():
        if t.is_meta or t.layout != torch.strided or not t.numel():
            continue
        size = t.element_size()
        start = t.storage_offset() * size
        end = start + (1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))) * size
        spans.setdefault((t.device, t.untyped_storage().data_ptr()), []).append((start, end, name))
    pairs = []
    for group in spans.values():
        group.sort()
        reach, owner = -1, ""
        for start, end, name in group:
            if start < reach:
                pairs.append((owner, name))
            if end > reach:
                reach, owner = end, name
    return pairs


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _init_uncovered(model: nn.Module, covered: set[str], seed: int) -> None:
    from pytorchvideo.models.weight_init import init_net_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for prefix, module in model.named_modules():
            own = [n for n, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]
            if not own or all(f"{prefix}.{n}".lstrip(".") in covered for n in own):
                continue
            module.to_empty(device="cpu", recurse=False)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            init_net_weights(module)
