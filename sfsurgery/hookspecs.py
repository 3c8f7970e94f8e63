"""The three hooks a plugin can implement.

A plugin is any module or object with functions decorated by :data:`hookimpl`, found
through the ``sfsurgery`` entry-point group (or passed as ``plugins=[...]``). Each hook
receives one typed registrar (:mod:`sfsurgery.registrars`) and calls it once per thing it
provides. The built-in ops, bases and checkpoint formats (:mod:`sfsurgery.builtin`) are
plugins of exactly this kind.

Example::

    from sfsurgery import OpRegistrar, hookimpl

    @hookimpl
    def register_ops(register: OpRegistrar) -> None:
        register("freeze_stem", freeze_stem)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registrars import BaseRegistrar, FormatRegistrar, OpRegistrar

PROJECT = "sfsurgery"
ENTRY_POINT_GROUP = "sfsurgery"
DISABLE_ENV = "SFSURGERY_DISABLE_PLUGINS"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_ops(register: OpRegistrar) -> None:
    """Provide surgery ops.

    Args:
        register: an :class:`~sfsurgery.registrars.OpRegistrar`;
            ``register(name, op, *, families=None)``. ``op`` is a typed function
            ``op(ctx: OpContext, *, param: type = default, ...) -> None``. Its keyword-only
            parameters are its schema (validated from recipes into their Python types, shown
            by ``sfsurgery ops``, exported by ``sfsurgery schema``); one without a default is
            required. Its docstring is its help. It edits ``ctx.model`` in place or assigns a
            new one, may change ``ctx.input``, must work on the meta device, and draws new
            weights only from ``ctx.generator``. ``families`` limits it to bases of those
            families (``validate`` refuses the rest).
    """


@hookspec
def register_bases(register: BaseRegistrar) -> None:
    """Provide base models that recipes name with ``base.hub``.

    Args:
        register: a :class:`~sfsurgery.registrars.BaseRegistrar`;
            ``register(name, build, *, input=None, weights=None, family="slowfast",
            preprocess=None, stages=(), build_on="meta")``. ``build()`` returns an
            ``nn.Module`` and must work under ``torch.device("meta")`` (or say
            ``build_on="cpu"``); ``input`` is the default clip (``batch``, ``channels``,
            ``frames``, ``alpha``, ``size``; ``alpha: None`` for one pathway); ``weights`` is the
            URL that ``pretrained: true`` resolves; ``family`` decides which ops apply;
            ``preprocess`` holds the model zoo's ``sampling_rate``, ``side``, ``mean``, ``std``;
            ``stages`` the module paths of the stem and each residual stage.
    """


@hookspec
def register_checkpoint_formats(register: FormatRegistrar) -> None:
    """Provide checkpoint formats that recipes name with ``base.checkpoint_format``.

    Args:
        register: a :class:`~sfsurgery.registrars.FormatRegistrar`; ``register(name, convert)``.
            ``convert(checkpoint, path)`` receives what sfsurgery's safe loader returned for
            the file at ``path`` (a dict from a weights-only ``torch.load``, or the tensors of
            a ``.safetensors`` file) and returns a flat state dict in the base's key names.
            Plugins never unpickle files themselves. A converter that also declares
            keyword-only ``model_shapes`` or ``model_input`` parameters receives the base's
            ``{key: shape}`` or its default clip (``alpha`` is the fusion stride), so it can
            explain a checkpoint made for another architecture.
    """
