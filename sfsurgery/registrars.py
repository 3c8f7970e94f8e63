"""The typed objects each hook receives, and the specs they record.

A hook is called with one registrar; calling it registers one thing::

    @hookimpl
    def register_ops(register: OpRegistrar) -> None:
        register("freeze_stem", freeze_stem)

Every argument is checked when the plugin registers, so a mistake (a wrong keyword, a name
that is not a string, an input clip with a zero in it) is a :class:`PluginError` naming the
plugin, not a failure at apply time. The parameters are typed, so a type checker catches the
same mistakes in the plugin's own source.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pydantic

from .errors import PluginError
from .hookspecs import DISABLE_ENV
from .recipe import InputSpec, Preprocess

if TYPE_CHECKING:
    from torch import nn

    from .context import OpContext

#: Op parameter names a recipe entry uses for itself (``- op: name``) or that the file format reserves.
RESERVED_PARAMS = frozenset({"op", "params"})
#: Families of the built-in bases; plugins may name others.
KNOWN_FAMILIES = ("slowfast", "x3d", "efficient_x3d", "resnet", "csn", "r2plus1d", "mvit")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class Provider:
    """Who registered a thing: the plugin's name and the distribution it came from."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.plugin} ({self.distribution} {self.version})"
        return self.plugin

    def as_dict(self) -> dict[str, str | None]:
        return {"plugin": self.plugin, "distribution": self.distribution, "version": self.version}


class Op(Protocol):
    """An op: ``op(ctx, *, param: type = default, ...) -> None`` (keyword-only parameters)."""

    def __call__(self, ctx: OpContext, /, **params: Any) -> None: ...


class Converter(Protocol):
    """A checkpoint converter: ``convert(checkpoint, path) -> {key: tensor}``.

    It may also declare keyword-only ``model_shapes`` and/or ``model_input``.
    """

    def __call__(self, checkpoint: Any, path: str, /, **context: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class OpSpec:
    """A registered op: its function, parameter schema, provider and supported families."""

    name: str
    fn: Callable[..., None]
    provider: Provider
    params: type[pydantic.BaseModel]
    families: tuple[str, ...] | None = None  # None: any family

    @property
    def help(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or "")


@dataclass(frozen=True)
class BaseSpec:
    """A registered base: how to build it and what it is."""

    name: str
    build: Callable[..., nn.Module]
    provider: Provider
    family: str = "slowfast"
    input: InputSpec = field(default_factory=InputSpec)
    preprocess: Preprocess = field(default_factory=Preprocess)
    stages: tuple[str, ...] = ()
    weights: str | None = None
    build_on: Literal["meta", "cpu"] = "meta"


@dataclass(frozen=True)
class FormatSpec:
    """A registered checkpoint format."""

    name: str
    convert: Converter
    provider: Provider

    @property
    def wants(self) -> frozenset[str]:
        """Which optional keywords (``model_shapes``, ``model_input``) the converter declares."""
        params = inspect.signature(self.convert).parameters
        return frozenset({"model_shapes", "model_input"} & set(params))


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TypeError(f"{kind} name must be a string of letters, digits, '_', '.' or '-', got {name!r}")
    return name


def _check_callable(kind: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"{kind} must be callable, got {type(fn).__name__}")


def _keyword_annotations(fn: Callable, names: list[str]) -> dict[str, Any]:
    """Evaluate the annotations of ``names`` only (``ctx: OpContext`` may be a TYPE_CHECKING import)."""
    raw = getattr(inspect.unwrap(fn), "__annotations__", {})
    shim = types.SimpleNamespace(__annotations__={k: v for k, v in raw.items() if k in names},
                                 __globals__=getattr(inspect.unwrap(fn), "__globals__", {}))
    return typing.get_type_hints(shim, include_extras=True)


def op_params_model(name: str, fn: Callable) -> type[pydantic.BaseModel]:
    """Turn an op's keyword-only parameters into a pydantic model: its schema.

    A parameter without a default is required; one without an annotation takes any value.
    """
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"op {name!r}: first parameter must be the context, e.g. def {name}(ctx, *, ...)")
    for p in params[1:]:
        if p.kind is not p.KEYWORD_ONLY:
            raise TypeError(f"op {name!r}: parameter {p.name!r} must be keyword-only (put it after '*')")
        if p.name in RESERVED_PARAMS:
            raise TypeError(f"op {name!r}: parameter name {p.name!r} is reserved by the recipe format")
    hints = _keyword_annotations(fn, [p.name for p in params[1:]])
    fields: dict[str, Any] = {p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
                              for p in params[1:]}
    # strict, validated from JSON: a list still fills a tuple, but `true` is not the integer 1
    config = pydantic.ConfigDict(extra="forbid", title=name, strict=True)
    return pydantic.create_model(f"{name}_params", __config__=config, **fields)


class _Registrar:
    """Shared bookkeeping: which plugin is registering, and the table it fills."""

    kind = "thing"

    def __init__(self, table: dict[str, Any], provider: Provider):
        self._table, self._provider = table, provider

    def _add(self, name: str, spec: OpSpec | BaseSpec | FormatSpec) -> None:
        if name in self._table:
            raise PluginError(f"{self.kind} {name!r} is registered twice: by {self._table[name].provider} "
                              f"and by {self._provider}",
                              hint=f"uninstall one of them or disable one with {DISABLE_ENV}")
        self._table[name] = spec


class OpRegistrar(_Registrar):
    """What ``register_ops`` receives: ``register(name, op, *, families=None)``."""

    kind = "op"

    def __call__(self, name: str, op: Op | Callable[..., None], *, families: Sequence[str] | None = None) -> None:
        """Register ``op`` under ``name``.

        Args:
            name: what recipes write after ``op:`` .
            op: ``op(ctx, *, param: type = default, ...) -> None``. Its keyword-only
                parameters are its schema, its docstring its help.
            families: base families the op supports (e.g. ``["slowfast"]``); None for any.
                ``validate`` refuses the op on a base of another family.
        """
        _check_name("op", name)
        _check_callable("op", op)
        if families is not None and (isinstance(families, str) or not all(isinstance(f, str) for f in families)):
            raise TypeError(f"families must be a list of family names, got {families!r}")
        try:
            params = op_params_model(name, op)
        except (NameError, pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError) as exc:
            raise PluginError(f"op {name!r}: its signature is not a valid schema: {type(exc).__name__}: {exc}",
                              hint="annotate keyword-only parameters with importable types") from exc
        self._add(name, OpSpec(name, op, self._provider, params, None if families is None else tuple(families)))


class BaseRegistrar(_Registrar):
    """What ``register_bases`` receives: ``register(name, build, *, family, input, ...)``."""

    kind = "base"

    def __call__(
        self,
        name: str,
        build: Callable[..., nn.Module],
        *,
        input: Mapping[str, Any] | InputSpec | None = None,
        weights: str | None = None,
        family: str = "slowfast",
        preprocess: Mapping[str, Any] | Preprocess | None = None,
        stages: Sequence[str] = (),
        build_on: Literal["meta", "cpu"] = "meta",
    ) -> None:
        """Register a base that recipes name with ``base.hub``.

        Args:
            name: the hub name.
            build: ``build() -> nn.Module`` with random weights. Called under
                ``torch.device("meta")`` unless ``build_on="cpu"``.
            input: the default clip (``batch``, ``channels``, ``frames``, ``alpha``, ``size``);
                ``alpha: None`` for a one-pathway model.
            weights: the URL of the model-zoo checkpoint that ``pretrained: true`` resolves.
            family: ``slowfast``, ``x3d``, ``resnet``, ``mvit``, ...: which ops apply.
            preprocess: ``sampling_rate``, ``side``, ``mean``, ``std`` of the model zoo's evaluation.
            stages: module paths, stem first, then each residual stage (what ``freeze stages: N`` counts).
            build_on: ``cpu`` for builders that fail under the meta device (the model is
                built once on the CPU and moved to meta).
        """
        _check_name("base", name)
        _check_callable("build", build)
        if not isinstance(family, str) or not family.isidentifier():
            raise TypeError(f"family must be a name such as 'slowfast', got {family!r}")
        if build_on not in ("meta", "cpu"):
            raise TypeError(f"build_on must be 'meta' or 'cpu', got {build_on!r}")
        if weights is not None and not isinstance(weights, str):
            raise TypeError(f"weights must be a URL string or None, got {type(weights).__name__}")
        if isinstance(stages, str) or not all(isinstance(s, str) for s in stages):
            raise TypeError(f"stages must be a list of module paths, got {stages!r}")
        try:
            clip = InputSpec.model_validate(dict(input or {}) if not isinstance(input, InputSpec) else input)
            prep = Preprocess.model_validate(dict(preprocess or {}) if not isinstance(preprocess, Preprocess)
                                             else preprocess)
        except pydantic.ValidationError as exc:
            raise TypeError(f"base {name!r}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        self._add(name, BaseSpec(name, build, self._provider, family, clip, prep, tuple(stages), weights, build_on))


class FormatRegistrar(_Registrar):
    """What ``register_checkpoint_formats`` receives: ``register(name, convert)``."""

    kind = "checkpoint format"

    def __call__(self, name: str, convert: Converter | Callable[..., dict[str, Any]]) -> None:
        """Register a checkpoint format that recipes name with ``base.checkpoint_format``.

        Args:
            name: the format's name.
            convert: ``convert(checkpoint, path) -> {key: tensor}`` over what sfsurgery's safe
                loader read; may declare keyword-only ``model_shapes`` / ``model_input``.
        """
        _check_name("checkpoint format", name)
        _check_callable("convert", convert)
        self._add(name, FormatSpec(name, convert, self._provider))
