"""The three hooks a plugin can implement.

A plugin is any module or object with functions decorated by :data:`hookimpl`; each hook
receives a ``register`` callback and calls it once per thing it provides. The built-in
ops, bases and checkpoint formats are plugins of exactly this kind.

Example::

    from sfsurgery import hookimpl

    @hookimpl
    def register_ops(register):
        register("freeze_stem", freeze_stem)
"""

from __future__ import annotations

import pluggy

PROJECT = "sfsurgery"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_ops(register):
    """Provide surgery ops.

    Args:
        register: ``register(name, op)``. ``op`` is a typed function
            ``op(ctx, *, param: type = default, ...) -> None``. Its keyword-only
            parameters are its schema (validated from recipes, shown by ``sfsurgery ops``,
            exported by ``sfsurgery schema``) and its docstring is its help. It edits
            ``ctx.model`` in place, may change ``ctx.input``, must work on the meta device,
            and draws new weights only from ``ctx.generator``.
    """


@hookspec
def register_bases(register):
    """Provide base models that recipes name with ``base.hub``.

    Args:
        register: ``register(name, build, input={...}, weights=url_or_None)``.
            ``build(**kwargs)`` returns an ``nn.Module`` and must work under
            ``torch.device("meta")``; ``input`` is the default clip (``batch``,
            ``channels``, ``frames``, ``alpha``, ``size``); ``weights`` is the URL of the
            pretrained checkpoint that ``pretrained: true`` resolves, or None.
    """


@hookspec
def register_checkpoint_formats(register):
    """Provide checkpoint formats that recipes name with ``base.checkpoint_format``.

    Args:
        register: ``register(name, convert)``. ``convert(checkpoint, path)`` receives
            what sfsurgery's safe loader returned for the file at ``path`` (a dict from a
            weights-only ``torch.load``, or the tensors of a ``.safetensors`` file) and
            returns a flat state dict in the base's key names. Plugins never unpickle
            files themselves. A converter that also declares keyword-only ``model_shapes``
            or ``model_input`` parameters receives the base's ``{key: shape}`` or its
            default clip (``alpha`` is the fusion stride), so it can explain a checkpoint
            made for another architecture.
    """
