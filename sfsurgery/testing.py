"""The conformance kit for surgery ops: the checks every built-in op passes, for plugin authors.

Call :func:`check_op` from your plugin's test suite::

    from sfsurgery.testing import check_op

    def test_freeze_stem_conforms():
        check_op("freeze_stem", {"requires_grad": False}, plugins=[my_plugin])

It runs the op on a small real pytorchvideo SlowFast model (or on any base, one-pathway ones
included: ``check_op(name, params, base={"hub": "x3d_xs"}, input={"frames": 4, "size": [160, 160]})``)
and raises ``AssertionError`` naming the op and the failed check.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import RecipeError, SurgeryError
from .plugins import Registry
from .registrars import OpSpec

#: A real ``create_slowfast`` R18 whose fixed head pools are sized for :data:`DEFAULT_INPUT`, so
#: every forward is fast (about 15 ms on a CPU core) and ``swap_pool`` still has pools to swap.
DEFAULT_BASE: dict[str, Any] = {
    "create_slowfast": {"model_depth": 18, "head_pool_kernel_sizes": [[2, 2, 2], [8, 2, 2]]},
}
#: 8 fast / 2 slow frames at 64×64: blocks.4 leaves (2, 2, 2) and (8, 2, 2) feature maps.
DEFAULT_INPUT: dict[str, Any] = {"batch": 1, "frames": 8, "alpha": 4, "size": [64, 64]}


def randomize_batchnorm(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Give every BatchNorm random statistics and affine parameters, in place.

    pytorchvideo initialises each residual branch's last BatchNorm to zero, which would hide
    a broken branch; trained checkpoints never look like that.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def stock_slowfast(seed: int = 0, **create_slowfast_kwargs: Any) -> torch.nn.Module:
    """pytorchvideo's own ``create_slowfast`` with random weights and BatchNorm, in eval mode.

    Example:
        >>> model = stock_slowfast(model_depth=18)
    """
    from ._pytorchvideo import create_slowfast

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_slowfast(**create_slowfast_kwargs)
    return randomize_batchnorm(model, seed + 1).eval()


def save_zoo_checkpoint(model: torch.nn.Module, path: str | Path, **extra: Any) -> Path:
    """Save ``model`` in the model zoo's layout: ``{"model_state": ..., "epoch": np.int64}``."""
    import numpy as np

    torch.save({"model_state": model.state_dict(), "epoch": np.int64(196), **extra}, path)
    return Path(path)


def example_clip(shape: tuple[int, int, int, int, int], alpha: int | None = 4,
                 seed: int = 0) -> list[torch.Tensor] | torch.Tensor:
    """Fresh ``[slow, fast]`` tensors for a (B, C, T_fast, H, W) clip (slow = every alpha-th frame);
    ``alpha=None``: the one clip tensor of a one-pathway model."""
    fast = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return fast if alpha is None else [fast[:, :, ::alpha].clone(), fast]


def _fail(name: str, check: str, message: str) -> AssertionError:
    return AssertionError(f"op {name!r} fails conformance check {check!r}: {message}")


def _compare_state(name: str, check: str, got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> None:
    if list(got) != list(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise _fail(name, check, f"state-dict keys differ (missing {missing[:5]}, unexpected {extra[:5]}"
                    + (", or in another order" if not missing and not extra else "") + ")")
    for key, tensor in want.items():
        other = got[key]
        if other.dtype != tensor.dtype or other.shape != tensor.shape:
            raise _fail(name, check, f"{key}: {other.dtype} {tuple(other.shape)} != {tensor.dtype} "
                        f"{tuple(tensor.shape)}")
        if not torch.equal(other.cpu(), tensor.cpu()):
            raise _fail(name, check, f"{key}: values differ")


def _schema(name: str, spec: OpSpec, params: dict[str, Any]) -> dict[str, Any]:
    try:
        schema = spec.params.model_json_schema()
        json.dumps(schema)
    except Exception as exc:
        raise _fail(name, "schema", f"parameters do not export as JSON Schema: {type(exc).__name__}: {exc}. "
                    "Annotate every keyword-only parameter with a pydantic-compatible type") from exc
    if schema.get("type") != "object":
        raise _fail(name, "schema", f"expected an object schema, got {schema.get('type')!r}")
    try:
        import jsonschema
    except ImportError:  # optional: the test extra installs it
        return schema
    try:
        jsonschema.validate(params, schema)
    except jsonschema.ValidationError as exc:
        raise _fail(name, "schema", f"the validated parameters {params} break the exported schema: "
                    f"{exc.message}") from exc
    return schema


def check_op(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    plugins: Iterable[Any] = (),
    registry: Registry | None = None,
    base: str | Mapping[str, Any] | None = None,
    input: Mapping[str, Any] | None = None,
    tmp_dir: str | Path | None = None,
):
    """Check that op ``name`` meets the op contract (docs/plugins.md) on a real model.

    A recipe ``base`` → ``[op name, params]`` is planned and applied. The checks, in order:

    * **schema**: the op has a docstring (its help) and its parameters export as JSON Schema
      (``registry.ops[name].params.model_json_schema()``) that the validated ``params`` satisfy.
    * **meta-safe**: :func:`sfsurgery.validate` traces the chain on the meta device, the
      planned model holds only meta tensors (the op allocated nothing real), and the real
      model's state-dict shapes and output shapes equal the meta plan's.
    * **seeded**: two applies, with different global RNG states, give bit-identical state dicts
      (new weights come only from ``ctx.generator``).
    * **round-trip**: ``Result.save`` then :func:`sfsurgery.load` gives a bit-identical state
      dict and the same outputs.

    Args:
        name: the registered op name.
        params: the op's recipe parameters (without ``op``); ``None`` for none.
        plugins: plugin modules or objects that provide the op (ignored when ``registry`` is given).
        registry: a ready :class:`~sfsurgery.plugins.Registry`; default ``Registry(plugins)``.
        base: a recipe ``base`` mapping or a registered hub name. Default :data:`DEFAULT_BASE`,
            a ``create_slowfast`` R18 whose head pools fit the small :data:`DEFAULT_INPUT` clip.
            One-pathway bases work the same way (``{"hub": "x3d_xs"}``): the model then takes one
            clip tensor (the base's ``alpha`` is None), for the checks as for the recipe.
        input: the recipe's ``input`` mapping. Default: :data:`DEFAULT_INPUT` with the default
            base, else the base's own clip (for X3D-XS, ``{"frames": 4, "size": [160, 160]}`` is
            the smallest clip its stock head pool fits).
        tmp_dir: where the round-trip file goes; default a temporary folder, removed afterwards.

    Returns:
        The :class:`~sfsurgery.pipeline.Result` of the first apply (model in eval mode, trace,
        report), for op-specific assertions.

    Raises:
        AssertionError: naming the op and the failed check.

    Example:
        >>> from sfsurgery.testing import check_op
        >>> result = check_op("replace_head", {"num_classes": 10})
        >>> result.trace.output
        (1, 10)
    """
    from .pipeline import apply, load
    from .plan import plan_on_meta
    from .resolve import load_recipe
    from .trace import example_inputs, shapes_of, tensors_of

    registry = registry if registry is not None else Registry(plugins)
    if name not in registry.ops:
        raise AssertionError(f"op {name!r} is not registered; known: {', '.join(sorted(registry.ops))}")
    spec = registry.ops[name]
    if not spec.help.strip():
        raise _fail(name, "schema", "the op has no docstring; it is the op's help (sfsurgery ops)")

    if base is None:
        base_config: dict[str, Any] = json.loads(json.dumps(DEFAULT_BASE))
        input_config = dict(DEFAULT_INPUT if input is None else input)
    else:
        base_config = {"hub": base} if isinstance(base, str) else dict(base)
        input_config = dict(input or {})
    raw = {"name": f"check_{name}", "seed": 0, "base": base_config, "input": input_config,
           "ops": [{"op": name, **(params or {})}]}
    try:
        recipe = load_recipe(raw, registry=registry)
    except SurgeryError as exc:
        raise _fail(name, "schema", f"recipe rejected: {exc.message}") from exc
    _schema(name, spec, recipe.ops[0].params_json)

    # meta-safe: plan and trace without a single real tensor
    try:
        plan = plan_on_meta(recipe)  # what sfsurgery.validate runs; we also keep the model
    except RecipeError as exc:  # the op refused its parameters while running
        raise _fail(name, "schema", f"parameters rejected by the op: {exc.message}") from exc
    except SurgeryError as exc:
        raise _fail(name, "meta-safe", f"does not plan on the meta device: {exc.message}") from exc
    real = [k for k, t in plan.model.state_dict().items() if not t.is_meta]
    if real:
        raise _fail(name, "meta-safe", f"created real tensors while planning on meta: {real[:5]}; "
                    "build new modules with device=ctx.device")

    with torch.random.fork_rng(devices=[]):
        results = []
        for global_seed in (12345, 67890):
            torch.manual_seed(global_seed)  # must not matter: new weights come from ctx.generator
            try:
                results.append(apply(recipe))
            except SurgeryError as exc:
                raise _fail(name, "meta-safe", f"planned on meta but failed on real tensors: {exc.message}") from exc
    first, second = results
    state = first.model.state_dict()

    planned = {k: tuple(t.shape) for k, t in plan.model.state_dict().items()}
    executed = {k: tuple(t.shape) for k, t in state.items()}
    if planned != executed:
        diff = sorted(k for k in set(planned) | set(executed) if planned.get(k) != executed.get(k))
        raise _fail(name, "meta-safe", f"the real model differs from the meta plan at {diff[:5]}")
    _compare_state(name, "seeded", second.model.state_dict(), state)

    with torch.no_grad():
        output = first.model(example_inputs(first.trace.input, "cpu", torch.Generator().manual_seed(0)))
    if shapes_of(output) != plan.trace.outputs:
        raise _fail(name, "meta-safe", f"real output {shapes_of(output)} != meta trace {plan.trace.outputs}")

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(tmp_dir or scratch) / f"check_{name}.safetensors"
        first.save(path, force=True)
        try:
            loaded = load(path, registry=registry)
        except SurgeryError as exc:
            raise _fail(name, "round-trip", f"sfsurgery.load failed: {exc.message}") from exc
        _compare_state(name, "round-trip", loaded.state_dict(), state)
        with torch.no_grad():
            again = loaded(example_inputs(first.trace.input, "cpu", torch.Generator().manual_seed(0)))
    if shapes_of(again) != shapes_of(output):
        raise _fail(name, "round-trip", f"the loaded model gives {shapes_of(again)}, not {shapes_of(output)}")
    for got, want in zip(tensors_of(again), tensors_of(output)):
        try:
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        except AssertionError as exc:
            raise _fail(name, "round-trip", f"the loaded model gives other outputs: {exc}") from exc
    return first
