"""Plugin discovery and the registry of ops, bases and checkpoint formats.

Built-ins are plugins like any other: :data:`BUILTIN_PLUGINS` are registered through the
same hooks a third-party package implements. Every call site gets a fresh
:class:`Registry` (no global plugin manager), so tests never share state.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pluggy

from . import __version__, hookspecs
from .builtin import BUILTIN_PLUGINS
from .errors import PluginError, RecipeError
from .hookspecs import DISABLE_ENV, ENTRY_POINT_GROUP
from .registrars import BaseRegistrar, BaseSpec, FormatRegistrar, FormatSpec, OpRegistrar, OpSpec, Provider
from .suggest import did_you_mean

__all__ = ["DISABLE_ENV", "ENTRY_POINT_GROUP", "Provider", "Registry", "get_plugin_manager", "register_op"]

# Ops registered by research code with ``sfsurgery.register_op``; exposed as one plugin.
_research_ops: dict[str, Callable] = {}


def register_op(name: str, *, families: Iterable[str] | None = None) -> Callable[[Callable], Callable]:
    """Decorator that registers ``fn`` as op ``name`` without packaging a plugin.

    Example::

        @sfsurgery.register_op("freeze_stem")
        def freeze_stem(ctx: sfsurgery.OpContext, *, requires_grad: bool = False) -> None: ...
    """

    def decorator(fn: Callable) -> Callable:
        _research_ops[name] = fn
        fn.__sfsurgery_families__ = None if families is None else tuple(families)
        return fn

    return decorator


def unregister_research_ops() -> None:
    """Forget every ``@register_op`` registration (for tests and notebooks)."""
    _research_ops.clear()


class _ResearchOps:
    @hookspecs.hookimpl
    def register_ops(self, register: OpRegistrar) -> None:
        for name, fn in _research_ops.items():
            register(name, fn, families=getattr(fn, "__sfsurgery_families__", None))


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
        if pm.is_registered(plugin):  # two entry points naming one module
            continue
        pm.register(plugin, name=ep.name)
        provenance[ep.name] = provider


def get_plugin_manager(
    plugins: Iterable[Any] = (), *, entry_points: bool = True
) -> tuple[pluggy.PluginManager, dict[str, Provider]]:
    """A fresh plugin manager: built-ins, research ops, entry points, then ``plugins``."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    provenance: dict[str, Provider] = {}
    for module_name in BUILTIN_PLUGINS:
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


Spec = TypeVar("Spec", OpSpec, BaseSpec, FormatSpec)


class Registry:
    """Everything the installed plugins provide, each with its provider.

    Args:
        plugins: extra plugin modules or objects, registered after the installed ones.
        entry_points: load installed plugins (``False``: built-ins and ``plugins`` only).
    """

    def __init__(self, plugins: Iterable[Any] = (), *, entry_points: bool = True):
        self.plugin_manager, self.providers = get_plugin_manager(plugins, entry_points=entry_points)
        self.ops: dict[str, OpSpec] = {}
        self.bases: dict[str, BaseSpec] = {}
        self.formats: dict[str, FormatSpec] = {}
        self._collect("register_ops", self.ops, OpRegistrar)
        self._collect("register_bases", self.bases, BaseRegistrar)
        self._collect("register_checkpoint_formats", self.formats, FormatRegistrar)

    def _collect(self, hook_name: str, table: dict, registrar: type) -> None:
        for impl in getattr(self.plugin_manager.hook, hook_name).get_hookimpls():
            provider = self.providers.get(impl.plugin_name, Provider(impl.plugin_name))
            try:
                impl.function(register=registrar(table, provider))
            except PluginError as exc:
                if str(provider) in exc.detail:
                    raise
                raise PluginError(f"plugin {provider}: {exc.detail}", hint=exc.hint) from exc
            except RecipeError:
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

    def describe_bases(self, *, count_params: bool = True) -> list[dict[str, Any]]:
        """One row per base, in registration order: provider, family, default clip, preprocessing,
        stages, parameter count and whether model-zoo weights exist (a URL is registered).

        Parameters are counted on the meta device (no memory, no init); a ``build_on="cpu"`` base
        (MViT) is built once on the CPU. ``params`` is None when the builder fails or ``count_params``
        is False.
        """
        return [{"name": spec.name, "provider": spec.provider.as_dict(), "family": spec.family,
                 "input": spec.input.model_dump(mode="json"), "preprocess": spec.preprocess.model_dump(mode="json"),
                 "stages": list(spec.stages), "params": _count_params(spec) if count_params else None,
                 "weights": spec.weights is not None, "url": spec.weights, "build_on": spec.build_on}
                for spec in self.bases.values()]

    def op(self, name: str) -> OpSpec:
        """The op ``name``; an unknown name is a RecipeError with the near miss."""
        return _lookup(self.ops, name, "op")

    def base(self, name: str) -> BaseSpec:
        return _lookup(self.bases, name, "base")

    def format(self, name: str) -> FormatSpec:
        return _lookup(self.formats, name, "checkpoint format")


def _count_params(spec: BaseSpec) -> int | None:
    import torch

    try:
        if spec.build_on == "cpu":  # e.g. builders that call .item() while building
            with torch.random.fork_rng(devices=[]):
                model = spec.build()
        else:
            with torch.device("meta"):
                model = spec.build()
        return sum(p.numel() for p in model.parameters())
    except Exception:  # a plugin's builder: listing bases must not fail on one of them
        return None


def _lookup(table: dict[str, Spec], name: str, kind: str) -> Spec:
    if name not in table:
        raise RecipeError(f"unknown {kind} {str(name)[:100]!r}{did_you_mean(str(name)[:100], table)}",
                          hint=f"known: {', '.join(sorted(table))}")
    return table[name]
