"""Training a model from ``apply`` or ``load``: optimizer groups and what is frozen.

The ``freeze`` and ``lr_mult`` ops (:mod:`sfsurgery.builtin.ops.training`) leave their marks on the
model (``requires_grad`` flags, BatchNorms that stay in eval mode, the rules below); this module
reads them back, for the optimizer and for the file's ``sfsurgery.training`` record.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

#: The attribute of the model that holds the ``lr_mult`` rules (replayed on load).
LR_RULES_ATTR = "sfsurgery_lr_rules"


def param_groups(model: nn.Module, lr: float, weight_decay: float | None = None) -> list[dict]:
    """Optimizer parameter groups for a model from ``apply`` or ``load``.

    Frozen parameters are left out; each ``lr_mult`` rule is its own group with ``lr × mult``
    (first matching rule wins); the rest train at ``lr``. Each parameter is in exactly one group.

    Example:
        >>> optimizer = torch.optim.SGD(sfsurgery.param_groups(model, lr=0.01, weight_decay=1e-4), momentum=0.9)
    """
    rules = getattr(model, LR_RULES_ATTR, ())
    groups = [{"name": pattern, "params": [], "lr": lr * mult} for pattern, mult in rules]
    rest = {"name": "default", "params": [], "lr": lr}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = next((i for i, (pattern, _) in enumerate(rules) if fnmatch.fnmatchcase(name, pattern)), None)
        (rest if index is None else groups[index])["params"].append(param)
    found = [g for g in [*groups, rest] if g["params"]]
    if weight_decay is not None:
        for group in found:
            group["weight_decay"] = weight_decay
    return found


def training_summary(model: nn.Module, stages: Sequence[str]) -> dict[str, Any]:
    """Trainable counts per declared stage, the lr rules and how many BatchNorms stay in eval mode."""
    from torch import nn

    modules = dict(model.named_modules())
    counts = []
    for path in stages:
        if path in modules:
            params = list(modules[path].parameters())
            counts.append({"path": path, "params": sum(p.numel() for p in params),
                           "trainable": sum(p.numel() for p in params if p.requires_grad)})
    frozen = sum(1 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and type(m).train is not nn.Module.train)
    return {"stages": counts, "lr_rules": [list(rule) for rule in getattr(model, LR_RULES_ATTR, ())],
            "frozen_batchnorms": frozen}
