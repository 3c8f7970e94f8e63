"""Every registered op passes the conformance kit that plugin authors use (sfsurgery.testing)."""

from __future__ import annotations

import pytest
import torch

from sfsurgery import hookimpl
from sfsurgery.plugins import Registry
from sfsurgery.testing import check_op

#: Parameters for ops that cannot run without some. A new op that needs parameters must get an
#: entry here (test_every_op_has_example_params fails until it does).
EXAMPLE_PARAMS: dict[str, dict] = {
    "replace_head": {"num_classes": 7, "hidden": [16], "activation": "softmax"},
    "adapt_stem": {"in_channels": 4, "mode": "zero"},
    "truncate": {"after": "blocks.4", "pool": True},
    "freeze": {"stages": 1},
    "lr_mult": {"rules": [{"pattern": "blocks.6.*", "mult": 10.0}]},
}

OPS = sorted(Registry().ops)


def _needs_params(name: str, registry: Registry) -> bool:
    return any(field.is_required() for field in registry.ops[name].params.model_fields.values())


def test_every_op_has_example_params():
    registry = Registry()
    missing = [name for name in OPS if name not in EXAMPLE_PARAMS and _needs_params(name, registry)]
    assert not missing, f"add EXAMPLE_PARAMS entries for {missing}"
    assert not set(EXAMPLE_PARAMS) - set(OPS), "EXAMPLE_PARAMS names ops that are not registered"


@pytest.mark.parametrize("name", OPS)
def test_op_conforms(name, tmp_path):
    result = check_op(name, EXAMPLE_PARAMS.get(name), tmp_dir=tmp_path)
    assert [entry["op"] for entry in result.report["lineage"]] == [name]
    assert (tmp_path / f"check_{name}.safetensors").is_file()


# The kit itself: each check catches the mistake it exists for.


def _random_stem(ctx) -> None:
    """Re-draws the slow stem from the global RNG (not ctx.generator)."""
    conv = ctx.model.blocks[0].multipathway_blocks[0].conv
    conv.weight = torch.nn.Parameter(torch.randn(conv.weight.shape, device=conv.weight.device))


def _real_buffer(ctx) -> None:
    """Adds a buffer on the CPU even while the model is on meta."""
    ctx.model.blocks[0].register_buffer("scale", torch.ones(3))


def _meta_differs(ctx) -> None:
    """Adds a head only when the weights are real."""
    if ctx.device.type != "meta":
        ctx.model.blocks.append(torch.nn.Unflatten(1, (-1, 2)))


def _undocumented(ctx) -> None:
    pass


class BadOps:
    @hookimpl
    def register_ops(self, register):
        for name, fn in [("random_stem", _random_stem), ("real_buffer", _real_buffer),
                         ("meta_differs", _meta_differs), ("undocumented", _undocumented)]:
            register(name, fn)


@pytest.mark.parametrize("name,check", [("random_stem", "seeded"), ("real_buffer", "meta-safe"),
                                        ("meta_differs", "meta-safe"), ("undocumented", "schema")])
def test_check_op_catches(name, check):
    with pytest.raises(AssertionError, match=f"op '{name}' fails conformance check '{check}'"):
        check_op(name, plugins=[BadOps()])


def test_check_op_unknown_op():
    with pytest.raises(AssertionError, match="not registered; known: .*replace_head"):
        check_op("no_such_op")
