"""The built-in ops, bases and checkpoint formats: plugins like any other.

Each module below implements the same hooks a third-party package does and is registered
the same way (by :func:`sfsurgery.plugins.get_plugin_manager`), before installed plugins.
The ops are also plain functions on models, for research code: see :mod:`.ops`.
"""

#: Modules registered before any installed plugin, in this order.
BUILTIN_PLUGINS = (
    "sfsurgery.builtin.bases",
    "sfsurgery.builtin.hub_bases",
    "sfsurgery.builtin.formats",
    "sfsurgery.builtin.ops.head",
    "sfsurgery.builtin.ops.truncate",
    "sfsurgery.builtin.ops.pool",
    "sfsurgery.builtin.ops.stem",
    "sfsurgery.builtin.ops.training",
    "sfsurgery.builtin.ops.fuse",
)
