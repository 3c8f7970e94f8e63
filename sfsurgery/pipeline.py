"""The main path, top to bottom: recipe → resolve → plan on meta → weights → execute → file.

:func:`apply` reads as the pipeline does; :func:`load` rebuilds a model from a file alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import LoadReport, load_weights, pretrained_path, read_weights, sha256_in_background, shared_tensors
from .errors import OpError, SurgeryWarning
from .execute import execute
from .file.dtypes import as_torch_dtype
from .file.metadata import build_metadata
from .file.reader import read_file_header
from .file.rebuild import load_model
from .file.writer import checked_output, write_safetensors
from .plan import Plan, plan_on_meta
from .plugins import Registry
from .resolve import Recipe, load_recipe
from .trace import Trace
from .training import training_summary

RANDOM_WARNING = ("backbone weights are random (no checkpoint, pretrained: false): fine to try the "
                  "pipeline, not to fine-tune; set base.pretrained: true for the model-zoo weights")
RecipeSource = Recipe | str | Path | Mapping[str, Any]


def _resolved(recipe: RecipeSource, registry: Registry | None, plugins: Iterable[Any]) -> Recipe:
    """``recipe`` itself when it is already resolved, else resolved once here."""
    if isinstance(recipe, Recipe):
        return recipe
    return load_recipe(recipe, registry=registry if registry is not None else Registry(plugins))


def validate(recipe: RecipeSource, *, registry: Registry | None = None, plugins: Iterable[Any] = ()) -> Trace:
    """Plan the recipe on the meta device and trace it; reads no tensor data.

    Returns:
        The final :class:`~sfsurgery.trace.Trace` (per-block and output shapes).

    Raises:
        RecipeError: the recipe is invalid. TraceError: the chain does not trace, or
        ``expect.output`` does not match.
    """
    return plan_on_meta(_resolved(recipe, registry, plugins)).trace


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
        target = checked_output(path, self.recipe.output_path, force=force)  # before any tensor is touched
        return write_safetensors(target, self.model.state_dict(), self.metadata,
                                 dtype=as_torch_dtype(self.recipe.save.dtype), force=force)


def apply(recipe: RecipeSource, *, registry: Registry | None = None, plugins: Iterable[Any] = ()) -> Result:
    """Run a recipe: plan on meta, read weights, perform the surgery, in memory.

    Args:
        recipe: a :class:`Recipe` from :func:`load_recipe`, a YAML path or a dict.
        registry / plugins: where ops, bases and formats come from (when ``recipe`` is not resolved).

    Returns:
        :class:`Result` with ``.model`` in eval mode, ``.trace``, ``.report``; call
        ``.save()`` to write the file.

    Example:
        >>> result = sfsurgery.apply("recipes/custom_head.yaml")
        >>> result.save("out/custom_head.safetensors")
    """
    recipe = _resolved(recipe, registry, plugins)
    weights = recipe.weights
    # checksumming the file (for lineage) overlaps the planning; no tensor is read before it passes
    digest = sha256_in_background(weights.path) if weights and weights.path.is_file() else None
    plan = plan_on_meta(recipe, keep_base=weights is not None)  # raises before any weight is read
    notes: list[str] = []
    with torch.random.fork_rng(devices=[]):
        if weights is None:
            model, coverage = recipe.base.seeded(recipe.seed), None
            source = {"weights": "random", "seed": recipe.seed}
        else:
            path = pretrained_path(weights.url) if weights.url else weights.path  # downloads when missing
            state, notes = read_weights(weights, plan.base_model, recipe.base.input)
            model = plan.base_model
            coverage = load_weights(model, state, weights.mode, recipe.seed, path.name)
            del state
            source = {"weights": weights.kind, "file": path.name, "sha256": (digest or sha256_in_background(path))()}
        model = execute(plan, model)
    _refuse_tied(model)
    model = protect_inputs(model.eval())
    report = _report(recipe, plan, model, {"base": recipe.base.describe, **source}, coverage, notes)
    return Result(model, plan.trace, report, recipe, build_metadata(recipe, plan, report))


def _refuse_tied(model: nn.Module) -> None:
    """The file stores each name as its own tensor, so weights an op tied would come back untied."""
    tied = shared_tensors(model.state_dict(keep_vars=True))
    if tied:
        more = f" (+{len(tied) - 3} more)" if len(tied) > 3 else ""
        raise OpError("the ops leave tensors that share memory under two names: "
                      + ", ".join(f"{a} and {b}" for a, b in tied[:3]) + more,
                      hint="the file would store and load them as separate tensors (untied); give each name its "
                           "own tensor in the op that ties them (e.g. nn.Parameter(w.detach().clone()))")


def _params(model: nn.Module) -> dict[str, int]:
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _report(recipe: Recipe, plan: Plan, model: nn.Module, source: dict, coverage: LoadReport | None,
            notes: list[str]) -> dict[str, Any]:
    found = [] if coverage is not None else [RANDOM_WARNING]
    if coverage is not None and recipe.weights.mode == "matching" and coverage.coverage < 1:
        found.append(f"loaded {coverage.loaded}/{coverage.total} tensors ({coverage.coverage:.1%}); the rest "
                     f"are initialised from seed {recipe.seed}")
    for message in found:  # the ops' own warnings were issued while planning
        warnings.warn(message, SurgeryWarning, stacklevel=3)
    return {"name": recipe.name, "source": source, "load": coverage.as_dict() if coverage else None,
            "notes": notes, "input": plan.input.model_dump(mode="json"),
            "output": plan.trace.as_dict()["output"], "lineage": plan.lineage,
            "params": _params(model), "training": training_summary(model, recipe.base.stages),
            "warnings": plan.warnings + found}


def protect_inputs(model: nn.Module) -> nn.Module:
    """Make ``model(x)`` leave the caller's list alone (pytorchvideo writes into it)."""
    model.register_forward_pre_hook(_copy_input_list)
    return model


def _copy_input_list(module: nn.Module, args: tuple) -> tuple | None:
    if args and isinstance(args[0], list):
        return (list(args[0]), *args[1:])
    return None


def load(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None, *,
         verify: bool = True, registry: Registry | None = None, plugins: Iterable[Any] = ()) -> nn.Module:
    """Rebuild a model from an sfsurgery file alone; no download, no checkpoint, no pickle.

    Args:
        path: a file written by ``sfsurgery apply`` / ``Result.save``.
        device: where the tensors go (``"cuda"`` loads straight onto the GPU).
        dtype: cast floating tensors on load (``torch.bfloat16`` or ``"bfloat16"``).
        verify: check the header and the tensor data against the sha256 digests recorded in the file;
            ``False`` reads a file without (valid) digests, for files you trust.
        registry / plugins: where the recorded ops and base come from.

    Returns:
        The model in eval mode; it does not mutate the list you call it with.

    Raises:
        FileFormatError: the file is not one sfsurgery can rebuild (the same files ``inspect`` refuses).

    Example:
        >>> model = sfsurgery.load("out/custom_head.safetensors", device="cuda")
    """
    dtype = as_torch_dtype(dtype)  # a bad name fails before any work
    header = read_file_header(path, verify=verify)
    model = load_model(header, device, dtype, registry if registry is not None else Registry(plugins))
    return protect_inputs(model.eval())
