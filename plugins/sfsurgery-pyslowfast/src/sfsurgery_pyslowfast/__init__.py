"""sfsurgery checkpoint format ``pyslowfast``: checkpoints saved by PySlowFast (facebookresearch/SlowFast).

PySlowFast saves ``{"model_state": ..., "epoch": ..., "cfg": "<YAML>", ...}`` with its own module
names (``s1.pathway0_stem.conv``, ``s2.pathway0_res0.branch2.a_bn``, ``head.projection``);
:func:`convert` renames them to pytorchvideo's ``create_slowfast`` names. Its ``PTVSlowFast``
wrapper already uses pytorchvideo names under a ``model.`` prefix, which is stripped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sfsurgery import hookimpl
from sfsurgery.errors import CheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["check_path", "convert", "to_pytorchvideo_key"]
__version__ = "0.1.0"

_SHOW = 5
_TENSOR = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_BRANCH = {"branch1": "branch1_conv", "branch1_bn": "branch1_norm",
           "branch2.a": "branch2.conv_a", "branch2.b": "branch2.conv_b", "branch2.c": "branch2.conv_c",
           "branch2.a_bn": "branch2.norm_a", "branch2.b_bn": "branch2.norm_b", "branch2.c_bn": "branch2.norm_c"}
_BRANCHES = "|".join(re.escape(b) for b in sorted(_BRANCH, key=len, reverse=True))
_RULES = (
    (re.compile(rf"s1\.pathway(\d+)_stem\.(conv|bn)\.{_TENSOR}"),
     lambda m: f"blocks.0.multipathway_blocks.{m[1]}.{'conv' if m[2] == 'conv' else 'norm'}.{m[3]}"),
    (re.compile(rf"s([1-4])_fuse\.(conv_f2s|bn)\.{_TENSOR}"),
     lambda m: f"blocks.{int(m[1]) - 1}.multipathway_fusion."
               f"{'conv_fast_to_slow' if m[2] == 'conv_f2s' else 'norm'}.{m[3]}"),
    (re.compile(rf"s([2-5])\.pathway(\d+)_res(\d+)\.({_BRANCHES})\.{_TENSOR}"),
     lambda m: f"blocks.{int(m[1]) - 1}.multipathway_blocks.{m[2]}.res_blocks.{m[3]}.{_BRANCH[m[4]]}.{m[5]}"),
    (re.compile(r"head\.projection\.(weight|bias)"), lambda m: f"blocks.6.proj.{m[1]}"),
    (re.compile(r"blocks\.\d+\.\S+"), lambda m: m[0]),  # already pytorchvideo names (PTVSlowFast)
)
# res blocks per stage (res2..res5) that RESNET.DEPTH builds: PySlowFast's own table and pytorchvideo's
# (which PySlowFast's PTVSlowFast wrapper uses); they differ only for depth 18
_STAGE_DEPTHS = {18: {(2, 2, 2, 2), (1, 1, 1, 1)}, 50: {(3, 4, 6, 3)}, 101: {(3, 4, 23, 3)}, 152: {(3, 8, 36, 3)}}
_CFG = {"depth": ("RESNET", "DEPTH"), "width": ("RESNET", "WIDTH_PER_GROUP"), "alpha": ("SLOWFAST", "ALPHA"),
        "beta": ("SLOWFAST", "BETA_INV"), "kernel": ("SLOWFAST", "FUSION_KERNEL_SZ"),
        "ratio": ("SLOWFAST", "FUSION_CONV_CHANNEL_RATIO")}
_CAFFE2_HINT = ("convert it in PySlowFast once: checkpoint.load_checkpoint(path, model, convert_from_caffe2=True), "
                "then torch.save({'model_state': model.state_dict(), 'cfg': cfg.dump()}, 'model.pyth')")


def to_pytorchvideo_key(key: str) -> str | None:
    """The pytorchvideo name of one PySlowFast state-dict key (prefixes already stripped), or None."""
    for pattern, rename in _RULES:
        if found := pattern.fullmatch(key):
            return rename(found)
    return None


def check_path(path: str) -> None:
    """Refuse Caffe2 ``.pkl`` blobs (out of scope)."""
    if Path(path).suffix.lower() == ".pkl":
        raise CheckpointError(f"{Path(path).name}: Caffe2 .pkl checkpoints are not supported by the pyslowfast "
                              "format (only PySlowFast's own .pyth files are)", hint=_CAFFE2_HINT)


def _read_cfg(raw: Any) -> dict[str, int]:
    """The integer cfg values :data:`_CFG` names; a missing or unparsable cfg gives none."""
    try:
        raw = yaml.safe_load(raw) if isinstance(raw, (str, bytes)) else raw
    except yaml.YAMLError:
        return {}
    sections = raw if isinstance(raw, dict) else {}
    values = {k: sections[s].get(n) if isinstance(sections.get(s), dict) else None
              for k, (s, n) in _CFG.items()}
    return {k: v for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool)}


def _contradictions(cfg: dict[str, int], shapes: dict[str, tuple[int, ...]], clip: dict[str, Any]) -> list[str]:
    """Which cfg values the base contradicts: its shapes, and its clip's alpha (the fusion stride)."""
    found = []
    if "alpha" in cfg and isinstance(clip.get("alpha"), int) and clip["alpha"] != cfg["alpha"]:
        found.append(f"SLOWFAST.ALPHA {cfg['alpha']} vs the base's fast-to-slow fusion stride {clip['alpha']}")
    stages = tuple(len({m[1] for k in shapes if (m := re.match(rf"blocks\.{s}\.multipathway_blocks\.0\.res_blocks\."
                                                               r"(\d+)\.", k))}) for s in range(1, 5))
    if cfg.get("depth") in _STAGE_DEPTHS and all(stages) and stages not in _STAGE_DEPTHS[cfg["depth"]]:
        known = [f"R{d}" for d, s in _STAGE_DEPTHS.items() if stages in s] or ["a ResNet"]
        found.append(f"RESNET.DEPTH {cfg['depth']} vs the base's {stages} res blocks per stage ({known[0]})")
    slow, fast = (shapes.get(f"blocks.0.multipathway_blocks.{p}.conv.weight") for p in (0, 1))
    fuse = shapes.get("blocks.0.multipathway_fusion.conv_fast_to_slow.weight")
    if "beta" in cfg and slow and fast and slow[0] != cfg["beta"] * fast[0]:
        found.append(f"SLOWFAST.BETA_INV {cfg['beta']} vs the base's stem widths {slow[0]} (slow) / {fast[0]} (fast)")
    if "kernel" in cfg and fuse and len(fuse) == 5 and fuse[2] != cfg["kernel"]:
        found.append(f"SLOWFAST.FUSION_KERNEL_SZ {cfg['kernel']} vs the base's fast-to-slow fusion kernel {fuse[2]}")
    if "ratio" in cfg and fuse and fast and fuse[0] != cfg["ratio"] * fast[0]:
        found.append(f"SLOWFAST.FUSION_CONV_CHANNEL_RATIO {cfg['ratio']} vs the base's fusion conv "
                     f"({fast[0]} -> {fuse[0]} channels)")
    return found


def _base_hint(cfg: dict[str, int]) -> str:
    beta, kernel, alpha = cfg.get("beta"), cfg.get("kernel"), cfg.get("alpha")
    args = {"model_depth": cfg.get("depth"), "slowfast_channel_reduction_ratio": beta and [beta],
            "stem_dim_outs": beta and [cfg.get("width", 64), cfg.get("width", 64) // beta],
            "slowfast_conv_channel_fusion_ratio": cfg.get("ratio"),
            "slowfast_fusion_conv_kernel_size": kernel and [kernel, 1, 1],
            "slowfast_fusion_conv_stride": alpha and [alpha, 1, 1]}
    body = ", ".join(f"{k}: {v}" for k, v in args.items() if v)
    return f"build the base the checkpoint was trained as, e.g. create_slowfast: {{{body}}}"


def _strip(state: dict, prefix: str) -> dict:
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def convert(checkpoint: Any, path: str, *,
            model_shapes: dict[str, tuple[int, ...]] | None = None,
            model_input: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """PySlowFast checkpoint -> flat state dict in pytorchvideo's SlowFast key names."""
    import torch  # here, not at import: listing plugins stays light

    check_path(path)
    name = Path(path).name
    if isinstance(checkpoint, dict) and "blobs" in checkpoint:
        raise CheckpointError(f"{name} holds Caffe2 blobs, which the pyslowfast format does not read",
                              hint=_CAFFE2_HINT)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model_state"), dict):
        state, cfg = checkpoint["model_state"], _read_cfg(checkpoint.get("cfg"))
    elif isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state, cfg = checkpoint, {}  # checkpoint_key picked the state dict itself
    else:
        found = ", ".join(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{name} is not a PySlowFast checkpoint: no 'model_state' (found: {found})",
                              hint="PySlowFast saves {'model_state': ..., 'epoch': ..., 'cfg': ...}; "
                                   "other layouts: checkpoint_format: pytorchvideo")
    if problems := _contradictions(cfg, model_shapes or {}, model_input or {}):
        raise CheckpointError(f"{name}: its cfg contradicts the base: " + "; ".join(problems), hint=_base_hint(cfg))
    state = _strip(_strip(state, "module."), "model.")
    out: dict[str, torch.Tensor] = {}
    unmappable = []
    for key, value in state.items():
        target = to_pytorchvideo_key(key) if isinstance(key, str) else None
        if target is None or not isinstance(value, torch.Tensor):
            unmappable.append(str(key))
        elif target in out:
            unmappable.append(f"{key} (a second {target})")
        else:
            out[target] = value
    if unmappable:
        more = f", ... (+{len(unmappable) - _SHOW})" if len(unmappable) > _SHOW else ""
        raise CheckpointError(f"{name}: {len(unmappable)} of {len(state)} entries are not PySlowFast SlowFast "
                              f"ResNet weights: {', '.join(unmappable[:_SHOW])}{more}",
                              hint="only SlowFast ResNets with a classification head are mapped; non-local "
                                   "blocks, detection heads and other architectures are not")
    return out


@hookimpl
def register_checkpoint_formats(register):
    register("pyslowfast", convert)
