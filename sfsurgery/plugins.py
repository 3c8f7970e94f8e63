"""Plugin discovery and the registry of ops, bases and checkpoint formats.

Built-ins are plugins like any other: :data:`DEFAULT_PLUGINS` are registered through the
same hooks a third-party package implements. Every call site gets a fresh
:class:`Registry` (no global plugin manager), so tests never share state.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy
import pydantic

from . import __version__, hookspecs
from .errors import PluginError, RecipeError
from .suggest import did_you_mean

ENTRY_POINT_GROUP = "sfsurgery"
DISABLE_ENV = "SFSURGERY_DISABLE_PLUGINS"
DEFAULT_PLUGINS = (
    "sfsurgery.bases",
    "sfsurgery.formats",
    "sfsurgery.ops.head",
    "sfsurgery.ops.truncate",
    "sfsurgery.ops.pool",
    "sfsurgery.ops.stem",
)


@dataclass(frozen=True)
class Provider:
    """Who registered a thing: plugin name plus the distribution it came from."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.plugin} ({self.distribution} {self.version})"
        return self.plugin

    def as_dict(self) -> dict[str, str | None]:
        return {"plugin": self.plugin, "distribution": self.distribution, "version": self.version}


@dataclass
class OpSpec:
    name: str
    fn: Callable[..., None]
    provider: Provider
    params: type[pydantic.BaseModel]

    @property
    def help(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or "")

    def validate(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """Validate recipe parameters; return them with defaults filled in."""
        from .recipe import format_validation_error

        try:
            return self.params.model_validate(raw).model_dump(mode="json")
        except pydantic.ValidationError as exc:
            raise RecipeError(format_validation_error(exc, self.params, prefix=where)) from None


@dataclass
class BaseSpec:
    name: str
    build: Callable[..., Any]
    provider: Provider
    input: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None


@dataclass
class FormatSpec:
    name: str
    convert: Callable[[Any, str], dict]
    provider: Provider


def op_params_model(name: str, fn: Callable) -> type[pydantic.BaseModel]:
    """Turn an op's keyword-only parameters into a pydantic model (its schema)."""
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise PluginError(f"op {name!r}: first parameter must be the context, e.g. def {name}(ctx, *, ...)")
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {}
    for p in params[1:]:
        if p.kind is not p.KEYWORD_ONLY:
            raise PluginError(f"op {name!r}: parameter {p.name!r} must be keyword-only (put it after '*')")
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), default)
    config = pydantic.ConfigDict(extra="forbid", title=name)
    return pydantic.create_model(f"{name}_params", __config__=config, **fields)


# Ops registered by research code with ``sfsurgery.register_op``; exposed as one plugin.
_research_ops: dict[str, Callable] = {}


def register_op(name: str) -> Callable[[Callable], Callable]:
    """Decorator that registers ``fn`` as op ``name`` without packaging a plugin.

    Example::

        @sfsurgery.register_op("freeze_stem")
        def freeze_stem(ctx, *, requires_grad: bool = False): ...
    """

    def decorator(fn: Callable) -> Callable:
        _research_ops[name] = fn
        return fn

    return decorator


class _ResearchOps:
    @hookspecs.hookimpl
    def register_ops(self, register):
        for name, fn in _research_ops.items():
            register(name, fn)


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _load_entry_points(pm: pluggy.PluginManager, provenance: dict[str, Provider]) -> None:
    """Load each entry point on its own so one broken plugin names itself."""
    disabled = _disabled()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in disabled or pm.get_plugin(ep.name) is not None:
            continue
        dist = getattr(ep, "dist", None)
        provider = Provider(ep.name, dist.name if dist else None, dist.version if dist else None)
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {provider} (entry point {ep.name} = {ep.value}) failed to import: "
                f"{type(exc).__name__}: {exc}",
                hint=f"fix or uninstall it, or skip it with {DISABLE_ENV}={ep.name}",
            ) from exc
        pm.register(plugin, name=ep.name)
        provenance[ep.name] = provider


def get_plugin_manager(
    plugins: Iterable[Any] = (), *, entry_points: bool = True
) -> tuple[pluggy.PluginManager, dict[str, Provider]]:
    """A fresh plugin manager: built-ins, research ops, entry points, then ``plugins``."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    provenance: dict[str, Provider] = {}
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        provenance[module_name] = Provider(module_name, "sfsurgery", __version__)
    if _research_ops:
        pm.register(_ResearchOps(), name="research")
        provenance["research"] = Provider("research")
    if entry_points:
        _load_entry_points(pm, provenance)
    for plugin in plugins:
        if pm.is_registered(plugin):  # e.g. an installed plugin passed again: already loaded
            continue
        base = getattr(plugin, "__name__", None) or type(plugin).__name__
        name, n = base, 1
        while pm.get_plugin(name) is not None:  # two objects of one class: keep both
            n += 1
            name = f"{base}-{n}"
        pm.register(plugin, name=name)
        provenance[name] = Provider(name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or str(exc.plugin)
        raise PluginError(f"plugin {provenance.get(name, name)}: {exc}", hint="hook names are register_ops, "
                          "register_bases and register_checkpoint_formats") from exc
    return pm, provenance


class Registry:
    """Everything the installed plugins provide, each with its provider."""

    def __init__(self, plugins: Iterable[Any] = (), *, entry_points: bool = True):
        self.plugin_manager, self.providers = get_plugin_manager(plugins, entry_points=entry_points)
        self.ops: dict[str, OpSpec] = {}
        self.bases: dict[str, BaseSpec] = {}
        self.formats: dict[str, FormatSpec] = {}
        self._collect("register_ops", self.ops, self._make_op)
        self._collect("register_bases", self.bases, BaseSpec)
        self._collect("register_checkpoint_formats", self.formats, FormatSpec)

    @staticmethod
    def _make_op(name: str, fn: Callable, provider: Provider) -> OpSpec:
        try:
            return OpSpec(name, fn, provider, op_params_model(name, fn))
        except (NameError, TypeError, pydantic.PydanticUserError) as exc:
            raise PluginError(f"op {name!r}: its signature is not a valid schema: {type(exc).__name__}: {exc}",
                              hint="annotate keyword-only parameters with importable types") from exc

    def _collect(self, hook_name: str, table: dict, make: Callable) -> None:
        kind = hook_name.removeprefix("register_").rstrip("s").replace("_", " ")
        for impl in getattr(self.plugin_manager.hook, hook_name).get_hookimpls():
            provider = self.providers.get(impl.plugin_name, Provider(impl.plugin_name))

            def register(name: str, obj: Callable, _provider=provider, **extra: Any) -> None:
                if name in table:
                    raise PluginError(
                        f"{kind} {name!r} is registered twice: by {table[name].provider} "
                        f"and by {_provider}",
                        hint=f"uninstall one of them or disable one with {DISABLE_ENV}",
                    )
                if not isinstance(name, str) or not callable(obj):
                    raise PluginError(f"plugin {_provider}: register(name, callable, ...) got {name!r}, {obj!r}")
                table[name] = make(name, obj, provider=_provider, **extra)

            try:
                impl.function(register=register)
            except (PluginError, RecipeError):
                raise
            except Exception as exc:
                raise PluginError(f"plugin {provider}: {hook_name} failed: {type(exc).__name__}: {exc}",
                                  hint=f"fix the plugin, or skip it with {DISABLE_ENV}={impl.plugin_name}") from exc

    def describe_plugins(self, *, include_builtin: bool = False) -> list[dict[str, Any]]:
        """One row per plugin: provider and the ops, bases and formats it registered."""
        rows = []
        for provider in self.providers.values():
            if provider.distribution == "sfsurgery" and not include_builtin:
                continue
            provides = {table: sorted(k for k, v in getattr(self, table).items() if v.provider == provider)
                        for table in ("ops", "bases", "formats")}
            rows.append({**provider.as_dict(), **provides})
        return rows

    def get(self, table: str, name: str) -> Any:
        """Look ``name`` up in ``ops``, ``bases`` or ``formats``; suggest near misses."""
        entries = getattr(self, table)
        if name not in entries:
            kind = {"ops": "op", "bases": "base", "formats": "checkpoint format"}[table]
            raise RecipeError(
                f"unknown {kind} {name!r}{did_you_mean(name, entries)}",
                hint=f"known: {', '.join(sorted(entries))}",
            )
        return entries[name]
