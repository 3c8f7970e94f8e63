"""The CLI: exit codes, one-line errors, nothing written on failure."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import r18_recipe, save_zoo_checkpoint, stock_model

from sfsurgery.cli import main


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_recipe(tmp_path, data: dict, name: str = "r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def assert_user_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ") and all(not line.startswith("error") for line in lines[1:])
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


def test_main_job_writes_the_seed_head_rebuild(tmp_path):
    out = tmp_path / "custom_head.safetensors"
    result = run("apply", "recipes/custom_head.yaml", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"wrote    {out}" in result.stdout
    assert "backbone weights are random" in result.stderr
    assert "(1, 1000)" in result.stdout


def test_apply_json_and_dry_run(tmp_path, r18_checkpoint):
    recipe = write_recipe(tmp_path, r18_recipe(r18_checkpoint, [{"op": "replace_head", "num_classes": 3}]))
    result = run("apply", recipe, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["file"] is None and report["output"] == [1, 3] and report["load"]["coverage"] == 1.0
    assert not (tmp_path / "out").exists()


@pytest.fixture
def r18_dir(tmp_path, r18_checkpoint):
    (tmp_path / "w").mkdir()
    os.symlink(r18_checkpoint, tmp_path / "w" / "r18.pyth")
    return tmp_path


BAD_RECIPES = {
    "unknown_op": ({"ops": [{"op": "replace_haed", "num_classes": 3}]}, 2,
                   ["ops[0]: unknown op 'replace_haed', did you mean replace_head?"]),
    "wrong_type": ({"ops": [{"op": "replace_head", "num_classes": "many"}]}, 2, ["ops[0].num_classes"]),
    "unknown_param": ({"ops": [{"op": "replace_head", "num_classes": 3, "dropuot": 0.1}]}, 2,
                      ["ops[0].dropuot: unknown parameter, did you mean dropout?"]),
    "missing_checkpoint": ({"base": {"create_slowfast": {"model_depth": 18}, "checkpoint": "w/none.pyth"}}, 2,
                           ["checkpoint not found", "none.pyth"]),
    "strict_mismatch": ({"base": {"create_slowfast": {"model_depth": 18, "model_num_class": 10},
                                  "checkpoint": "w/r18.pyth"}}, 2, ["2 shape mismatches", "load: matching"]),
    "expect_mismatch": ({"expect": {"output": [1, 9]}}, 1, ["expect.output is [1, 9] but the model gives (1,400)"]),
    "small_clip": ({"input": {"size": [112, 112]}}, 1, ["AvgPool3d", "swap_pool"]),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipes_exit_with_one_error_line_and_write_nothing(r18_dir, case):
    change, code, fragments = BAD_RECIPES[case]
    data = r18_recipe(None)
    data["base"]["checkpoint"] = "w/r18.pyth"
    data.update(change)
    recipe = write_recipe(r18_dir, data)
    out = r18_dir / "o.safetensors"
    assert_user_error(run("apply", recipe, "-o", out), code, *fragments)
    assert not out.exists()
    assert sorted(p.name for p in r18_dir.iterdir()) == ["r.yaml", "w"]


def test_pickle_exploit_and_yaml_tag_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model_state": Exploit()}, tmp_path / "evil.pyth")
    recipe = write_recipe(tmp_path, {"base": {"create_slowfast": {"model_depth": 18}, "checkpoint": "evil.pyth"}})
    assert_user_error(run("apply", recipe, "-o", tmp_path / "o.safetensors"), 2, "posix.system", "nothing was executed")
    tagged = tmp_path / "tag.yaml"
    tagged.write_text(f"base: !!python/object/apply:os.system ['touch {marker}']\n")
    assert_user_error(run("validate", tagged), 2, "tags")
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()


def test_existing_output_needs_force(tmp_path, r18_checkpoint):
    recipe = write_recipe(tmp_path, r18_recipe(r18_checkpoint))
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"precious")
    assert_user_error(run("apply", recipe, "-o", out), 2, "exists", "--force")
    assert out.read_bytes() == b"precious"
    assert run("apply", recipe, "-o", out, "--force").exit_code == 0
    assert out.read_bytes() != b"precious"


def test_set_overrides_and_debug_traceback(tmp_path):
    result = run("validate", "recipes/custom_head.yaml", "--set", "ops.0.num_classes=10", "--set", "expect.output=null")
    assert result.exit_code == 0 and "(1, 10)" in result.stdout
    debug = run("--debug", "validate", "recipes/custom_head.yaml", "--set", "ops.0.num_classes=x")
    assert debug.exit_code != 0 and type(debug.exception).__name__ == "RecipeError"


def test_validate_reads_no_tensor_data(tmp_path):
    # a checkpoint that is not even a file: validate must not touch it
    data = {"base": {"hub": "slowfast_r50", "checkpoint": "does/not/exist.pyth"},
            "ops": [{"op": "replace_head", "num_classes": 4}]}
    result = run("validate", write_recipe(tmp_path, data))
    assert result.exit_code == 0 and "(1, 4)" in result.stdout


def test_trace_prints_blocks_and_macs():
    result = run("trace", "recipes/custom_head.yaml", "--depth", "1")
    assert result.exit_code == 0, result.output
    assert "blocks.5" in result.stdout and "PoolConcatPathway" in result.stdout and "(1,2304,1,1,1)" in result.stdout
    assert "GMACs" in result.stdout and result.stdout.splitlines()[-1].startswith("total")


def test_ops_lists_every_op_with_parameters():
    result = run("ops")
    assert result.exit_code == 0
    for name in ("replace_head", "truncate", "swap_pool", "grayscale_stem", "adapt_stem"):
        assert name in result.stdout
    detail = run("ops", "replace_head")
    assert "num_classes: integer > 0 (required)" in detail.stdout
    assert "dropout: number >= 0, < 1 (default 0.5)" in detail.stdout
    assert "global average pool" in detail.stdout
    assert_user_error(run("ops", "replace_haed"), 2, "did you mean replace_head?")


def test_a_stock_checkpoint_applies_from_the_cli(tmp_path):
    stock = stock_model(model_depth=18, model_num_class=7)
    save_zoo_checkpoint(stock, tmp_path / "seven.pyth")
    data = {"base": {"create_slowfast": {"model_depth": 18, "model_num_class": 7}, "checkpoint": "seven.pyth"}}
    result = run("apply", write_recipe(tmp_path, data), "-o", tmp_path / "seven.safetensors")
    assert result.exit_code == 0, result.output
    assert "loaded   " in result.stdout and "(100.0%)" in result.stdout


def test_listing_commands_do_not_import_torch():
    import subprocess
    import sys

    script = ("import sys\nfrom sfsurgery.cli import main\n"
              "for args in (['--help'], ['ops'], ['ops', 'replace_head'], ['plugins', '--all']):\n"
              "    main(args, standalone_mode=False)\n"
              "heavy = sorted(m for m in ('torch', 'pytorchvideo') if m in sys.modules)\n"
              "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
