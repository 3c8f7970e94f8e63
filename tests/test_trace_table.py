"""``sfsurgery trace``: per-pathway shapes and MACs, checked against torchinfo and the model by hand."""

from __future__ import annotations

import math

from click.testing import CliRunner
from conftest import r18_recipe
from torch import nn

import sfsurgery
from sfsurgery.cli import main
from sfsurgery.plan import plan_on_meta
from sfsurgery.trace_table import module_table


def test_macs_equal_torchinfo_on_every_conv_and_linear():
    from torchinfo import summary

    plan = plan_on_meta(sfsurgery.load_recipe(r18_recipe(None, [{"op": "replace_head", "num_classes": 7}])))
    rows = module_table(plan.model, plan.input, depth=1)
    stats = summary(plan.model, input_data=[sfsurgery.trace.example_inputs(plan.input)], device="meta", depth=20,
                    verbose=0)
    convs = sum(layer.macs for layer in stats.summary_list if layer.class_name == "Conv3d")
    # torchinfo also counts a linear layer's bias additions (one per output value); MACs do not
    linears = sum(layer.macs - layer.output_size[-1] * layer.output_size[0] for layer in stats.summary_list
                  if layer.class_name == "Linear")
    assert sum(row.macs for row in rows) == convs + linears > 0


def test_rows_show_every_pathway_and_count_a_conv_by_hand():
    plan = plan_on_meta(sfsurgery.load_recipe(r18_recipe(None)))
    rows = {row.path: row for row in module_table(plan.model, plan.input, depth=4)}
    assert rows["blocks.0"].inputs == [(1, 3, 8, 224, 224), (1, 3, 32, 224, 224)]
    assert rows["blocks.0"].depth == 1 and rows["blocks.0.multipathway_blocks.1"].depth == 2
    stem = plan.model.blocks[0].multipathway_blocks[1].conv
    out = rows["blocks.0.multipathway_blocks.1.conv"].outputs[0]
    assert rows["blocks.0.multipathway_blocks.1.conv"].macs == math.prod(out) * stem.in_channels * math.prod(
        stem.kernel_size)
    assert isinstance(stem, nn.Conv3d) and rows["blocks.0"].params == sum(
        p.numel() for p in plan.model.blocks[0].parameters())


def test_trace_command_prints_one_titled_table(tmp_path):
    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r18_recipe(None)))
    run = CliRunner().invoke(main, ["trace", str(tmp_path / "r.yaml"), "--depth", "1"])
    assert run.exit_code == 0, run.output
    lines = run.stdout.splitlines()
    assert "meta device" in lines[0] and lines[1] == "input  slow (1,3,8,224,224), fast (1,3,32,224,224)"
    assert "GMACs" in lines[3] and lines[-1].startswith("total")
    assert "[(1,3,8,224,224), (1,3,32,224,224)] -> " in run.stdout and "Units." not in run.stdout
