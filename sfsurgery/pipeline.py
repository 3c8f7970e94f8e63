"""The main path: recipe → plan on meta → weights → ops on real tensors → Result → file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import LoadReport, load_state_dict_file, load_weights, pretrained_path, sha256_in_background
from .errors import FileFormatError, RecipeError
from .filemeta import build_metadata, recipe_from_metadata
from .plan import Plan, make_plan, replay
from .plugins import Registry
from .recipe import Recipe, load_recipe
from .safetensors_io import as_torch_dtype, cast_floats, read_metadata, verify_data, write_safetensors
from .trace import Trace

RANDOM_WARNING = ("backbone weights are random (no checkpoint, pretrained: false): fine to try the "
                  "pipeline, not to fine-tune; set base.pretrained: true for the model-zoo weights")


def _recipe(recipe: Any, registry: Registry) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe, registry=registry)


def validate(recipe: Any, *, registry: Registry | None = None, plugins: Iterable[Any] = ()) -> Trace:
    """Plan the recipe on the meta device and trace it; reads no tensor data.

    Raises:
        TraceError: the chain does not trace, or ``expect.output`` does not match.
    """
    registry = registry or Registry(plugins)
    return make_plan(_recipe(recipe, registry), registry).trace


def protect_inputs(model: nn.Module) -> nn.Module:
    """Make ``model(x)`` leave the caller's list alone (pytorchvideo writes into it)."""
    model.register_forward_pre_hook(_copy_input_list)
    return model


def _copy_input_list(module: nn.Module, args: tuple) -> tuple | None:
    if args and isinstance(args[0], list):
        return (list(args[0]), *args[1:])
    return None


@dataclass
class Result:
    """What :func:`apply` made, in memory; nothing is written until :meth:`save`."""

    model: nn.Module
    trace: Trace
    report: dict[str, Any]
    recipe: Recipe
    metadata: dict[str, str]

    def save(self, path: str | Path | None = None, *, force: bool = False) -> Path:
        """Write the model and its metadata to ``path`` (default: ``save.path``)."""
        dtype = as_torch_dtype(self.recipe.save.dtype)
        return write_safetensors(Path(path) if path else output_path(self.recipe), self.model.state_dict(),
                                 self.metadata, dtype=dtype, force=force)


def output_path(recipe: Recipe) -> Path:
    """``save.path`` (relative to the recipe), else ``out/<name>.safetensors`` (relative to the cwd)."""
    if recipe.save.path:
        return recipe.resolve_path(recipe.save.path)
    return Path("out") / f"{recipe.name}.safetensors"


def _weights_file(recipe: Recipe, registry: Registry) -> tuple[Path, str] | None:
    """Where the weights come from, without downloading anything yet."""
    config = recipe.base
    if config.pretrained:
        spec = registry.get("bases", config.hub)
        if not spec.weights:
            raise RecipeError(f"base {config.hub} has no model-zoo weights", hint="use base.checkpoint")
        return pretrained_path(spec.weights, download=False), "pretrained"
    if config.checkpoint:
        return recipe.resolve_path(config.checkpoint), "checkpoint"
    return None


def apply(recipe: Any, *, registry: Registry | None = None, plugins: Iterable[Any] = ()) -> Result:
    """Run a recipe: validate on meta, read weights, perform the surgery, in memory.

    Args:
        recipe: a :class:`Recipe`, a YAML path or a dict.
        registry / plugins: where ops, bases and formats come from.

    Returns:
        :class:`Result` with ``.model`` in eval mode, ``.trace``, ``.report``; call
        ``.save()`` to write the file.

    Example:
        >>> result = sfsurgery.apply("recipes/custom_head.yaml")
        >>> result.save("out/custom_head.safetensors")
    """
    registry = registry or Registry(plugins)
    recipe = _recipe(recipe, registry)
    weights = _weights_file(recipe, registry)
    # checksumming the file (for lineage) overlaps the planning; no tensor is read before it passes
    digest = sha256_in_background(weights[0]) if weights and weights[0].is_file() else None
    plan = make_plan(recipe, registry, keep_base=weights is not None)  # raises before any weight is read
    notes: list[str] = []
    with torch.random.fork_rng(devices=[]):
        if weights is None:
            model, coverage = plan.base.seeded(recipe.seed), None
            source = {"weights": "random", "seed": recipe.seed}
        else:
            path, kind = weights
            if kind == "pretrained":
                path = pretrained_path(plan.base.weights)
            config = recipe.base
            state, notes = load_state_dict_file(path, config.checkpoint_format, config.checkpoint_key, registry,
                                                plan.pristine, plan.base.input)
            model = plan.pristine
            coverage = load_weights(model, state, config.load, recipe.seed, path.name)
            del state
            source = {"weights": kind, "file": path.name, "sha256": (digest or sha256_in_background(path))()}
        executed = replay(recipe, registry, model, plan.base, traces=plan.traces)
    model = protect_inputs(executed.model.eval())
    source = {"base": plan.base.describe, **source}
    report = _report(recipe, plan, model, source, coverage, notes)
    metadata = build_metadata(recipe, plan, report, registry)
    return Result(model, plan.trace, report, recipe, metadata)


def _params(model: nn.Module) -> dict[str, int]:
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _report(recipe: Recipe, plan: Plan, model: nn.Module, source: dict, coverage: LoadReport | None,
            notes: list[str]) -> dict[str, Any]:
    warnings = [] if coverage is not None else [RANDOM_WARNING]
    if coverage is not None and recipe.base.load == "matching" and coverage.coverage < 1:
        warnings.append(f"loaded {coverage.loaded}/{coverage.total} tensors ({coverage.coverage:.1%}); the rest "
                        f"are initialised from seed {recipe.seed}")
    return {"name": recipe.name, "source": source, "load": coverage.as_dict() if coverage else None,
            "notes": notes, "input": plan.input.model_dump(mode="json"),
            "output": plan.trace.as_dict()["output"], "lineage": plan.lineage,
            "params": _params(model), "warnings": warnings}


def load(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None, *,
         verify: bool = True, registry: Registry | None = None, plugins: Iterable[Any] = ()) -> nn.Module:
    """Rebuild a model from an sfsurgery file alone; no download, no checkpoint, no pickle.

    Args:
        path: a file written by ``sfsurgery apply`` / ``Result.save``.
        device: where the tensors go (``"cuda"`` loads straight onto the GPU).
        dtype: cast floating tensors on load (``torch.bfloat16`` or ``"bfloat16"``).
        verify: check the tensor data against the sha256 recorded in the file.

    Returns:
        The model in eval mode; it does not mutate the list you call it with.

    Example:
        >>> model = sfsurgery.load("out/custom_head.safetensors", device="cuda")
    """
    from safetensors.torch import load_file

    dtype = as_torch_dtype(dtype)  # a bad name fails before any work
    metadata = read_metadata(path)
    registry = registry or Registry(plugins)
    recipe = recipe_from_metadata(metadata, Path(path).name, registry)
    if verify:
        verify_data(path, metadata)
    model = make_plan(recipe, registry, check=False).model
    state = load_file(str(path), device=str(device))
    state = {k: cast_floats(v, dtype) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise FileFormatError(f"{Path(path).name}: tensors do not fit the recorded recipe: "
                              f"{str(exc).splitlines()[0]}") from None
    return protect_inputs(model.eval())
