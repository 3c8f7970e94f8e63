"""The built-in ops, each a plain function on a model and a recipe op.

Research code can call them on any pytorchvideo model, without a recipe::

    from pytorchvideo.models.hub import slowfast_r50
    from sfsurgery.builtin.ops import replace_head, swap_pool

    model = swap_pool(replace_head(slowfast_r50(), num_classes=10))

Each function changes the model in place and returns it. The recipe op of the same name is a
thin adapter (``*_op``) that reads shapes from the meta plan and records lineage.
"""

from .fuse import conv_bn_pairs, fuse_bn
from .head import remove_head, replace_head
from .pool import swap_pool
from .stem import adapt_input_weight, adapt_stem, grayscale_stem
from .training import freeze, set_lr_mult
from .truncate import truncate

__all__ = ["adapt_input_weight", "adapt_stem", "conv_bn_pairs", "freeze", "fuse_bn", "grayscale_stem",
           "remove_head", "replace_head", "set_lr_mult", "swap_pool", "truncate"]
