"""Hostile recipes and command lines: bounded, one ``error:`` and one ``hint:`` line, nothing written.

Each finding of the hardening review is reproduced here; hypothesis then generates recipes and
``--set`` paths to find the next ones (only documented error classes may escape).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sfsurgery
from sfsurgery.cli import main
from sfsurgery.errors import SurgeryError
from sfsurgery.recipe import apply_overrides, parse_set

BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
    f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n" for i in range(8))
SET_BOMB = "{" + ", ".join(BOMB.strip().splitlines()) + ", z: *i}"  # the same bomb as one flow mapping
BASE = "base: {hub: slowfast_r50}\n"
SMALL = "base: {create_slowfast: {model_depth: 18}}\n"

# (name, recipe text or bytes, extra CLI args, expected exit code, text the error line must hold)
HOSTILE = [
    ("alias bomb in name", BOMB + BASE + "name: *i\n", [], 2, "aliases"),
    ("alias bomb in an op parameter", BOMB + BASE + "ops: [{op: replace_head, num_classes: *i}]\n", [], 2, "aliases"),
    ("alias bomb in create_slowfast", BOMB + "base: {create_slowfast: {stem_dim_outs: *i}}\n", [], 2, "aliases"),
    ("deep nesting", BASE + "name: " + "[" * 1000 + "]" * 1000 + "\n", [], 2, "nest"),
    ("not UTF-8", b"base: {hub: slowfast_r50}\nname: \xff\xfe\n", [], 2, "not UTF-8"),
    ("empty", "", [], 2, "empty"),
    ("a list, not a mapping", "- base\n", [], 2, "mapping"),
    ("bad indentation", "base:\n  hub: slowfast_r50\n ops: []\n", [], 2, "line"),
    ("python tag", BASE + "name: !!python/object/apply:os.system [echo hi]\n", [], 2, "tag"),
    ("set tag", BASE + "ops: [{op: replace_head, num_classes: 3}]\nexpect: {output: !!set {a}}\n", [], 2, "set"),
    ("duplicate key", BASE + "base: {hub: slowfast_r101}\n", [], 2, "duplicate key"),
    ("bool as integer", BASE + "ops: [{op: replace_head, num_classes: true}]\n", [], 2, "valid integer"),
    ("fusion stride 0", "base: {create_slowfast: {slowfast_fusion_conv_stride: [0, 1, 1]}}\n", [], 2, "stride"),
    ("zero input channels", "base: {create_slowfast: {input_channels: [0, 0]}}\n", [], 2, "input_channels"),
    ("zero head pool", "base: {create_slowfast: {head_pool_kernel_sizes: [[0, 0, 0], [0, 0, 0]]}}\n", [], 2, "clip"),
    ("reduction ratio 0", "base: {create_slowfast: {slowfast_channel_reduction_ratio: [0]}}\n", [], 2,
     "ZeroDivisionError"),
    ("huge stem", "base: {create_slowfast: {stem_dim_outs: [1000000, 8]}}\n", [], 2, "more than sfsurgery builds"),
    ("set index not a digit", SMALL + "ops: [{op: swap_pool}]\n", ["--set", "ops.².x=1"], 2, "no index"),
    ("set index out of range", SMALL + "ops: []\n", ["--set", "ops.3.num_classes=1"], 2, "no index"),
    ("set alias bomb", SMALL, ["--set", "name=" + SET_BOMB], 2, "aliases"),
    ("set tag", SMALL, ["--set", "name=!!python/name:os.system"], 2, "tag"),
    ("huge clip", SMALL + "input: {frames: 1000000}\n", [], 2, "less than or equal"),
    ("unknown op", SMALL + "ops: [{op: replace_haed}]\n", [], 2, "did you mean replace_head"),
]


def _run(tmp_path: Path, command: str, text: str | bytes, args: list[str]):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = {p for p in tmp_path.rglob("*")}
    started = time.perf_counter()
    extra = ["-o", str(tmp_path / "out.safetensors")] if command == "apply" else []
    run = CliRunner().invoke(main, [command, str(recipe), *extra, *args])
    return run, time.perf_counter() - started, {p for p in tmp_path.rglob("*")} - before


@pytest.mark.parametrize(("name", "text", "args", "code", "needle"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("command", ["validate", "apply"])
def test_hostile_recipe_is_one_error_and_one_hint(tmp_path, command, name, text, args, code, needle):
    run, seconds, new_files = _run(tmp_path, command, text, args)
    lines = run.stderr.splitlines()
    assert run.exit_code == code, run.output
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), run.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in run.output and len(lines[0]) < 600
    assert not new_files, new_files
    assert seconds < 30


def test_the_alias_bomb_is_refused_fast(tmp_path):
    run, seconds, _ = _run(tmp_path, "validate", BOMB + BASE + "name: *i\n", [])
    assert run.exit_code == 2 and seconds < 2


@pytest.mark.parametrize("target", ["/dev/zero", "folder"])
def test_unbounded_or_odd_recipe_paths(tmp_path, target):
    path = target if target.startswith("/") else str(tmp_path)
    run = CliRunner().invoke(main, ["validate", path])
    lines = run.stderr.splitlines()
    assert run.exit_code == 2 and len(lines) == 2 and lines[1].startswith("hint: "), run.stderr


def test_set_alias_bomb_is_bounded():
    with pytest.raises(SurgeryError, match="aliases"):
        parse_set(["name=" + SET_BOMB])


# hypothesis: values that YAML and --set can produce
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) |
                    st.text(max_size=20), lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
SLOWFAST_ARGS = ["model_depth", "input_channels", "slowfast_fusion_conv_stride", "slowfast_channel_reduction_ratio",
                 "head_pool_kernel_sizes", "stem_dim_outs", "slowfast_conv_channel_fusion_ratio", "model_num_class",
                 "dropout_rate", "head"]
SMALL_INTS = st.integers(-2, 70)
ARG_VALUES = st.one_of(SMALL_INTS, st.lists(SMALL_INTS, max_size=3), st.lists(st.lists(SMALL_INTS, max_size=3),
                                                                               max_size=2), st.none(), JSON)
OPS = st.lists(st.fixed_dictionaries({"op": st.sampled_from(["replace_head", "truncate", "swap_pool",
                                                             "grayscale_stem", "adapt_stem", "nope"])},
                                     optional={"num_classes": SMALL_INTS | JSON, "after": st.sampled_from(
                                         ["blocks.3", "blocks.9", "x"]), "keep": SMALL_INTS, "pool": JSON,
                                         "in_channels": SMALL_INTS, "mode": st.sampled_from(["sum", "zero", "x"]),
                                         "kind": JSON, "hidden": st.lists(SMALL_INTS, max_size=2)}), max_size=3)
RECIPES = st.fixed_dictionaries(
    {"base": st.one_of(st.fixed_dictionaries({"create_slowfast": st.dictionaries(
        st.sampled_from(SLOWFAST_ARGS), ARG_VALUES, max_size=3).map(lambda d: {"model_depth": 18, **d})}),
        st.fixed_dictionaries({"hub": st.sampled_from(["slowfast_r50", "slowfast_r5", ""])}), JSON)},
    optional={"input": st.dictionaries(st.sampled_from(["batch", "channels", "frames", "alpha", "size"]),
                                       SMALL_INTS | st.lists(SMALL_INTS, max_size=3) | JSON, max_size=3),
              "ops": OPS, "name": JSON, "seed": JSON, "expect": JSON, "save": JSON, "extra": JSON})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RECIPES)
def test_generated_recipes_fail_only_with_documented_errors(recipe):
    try:
        resolved = sfsurgery.load_recipe(recipe)
        sfsurgery.validate(resolved)
    except SurgeryError as exc:
        assert exc.hint and "\n" not in exc.message and len(exc.message) < 2000, exc.message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ops.012²x_-", min_size=1, max_size=12), min_size=1, max_size=3), JSON)
def test_generated_set_paths_fail_only_with_recipe_errors(paths, value):
    data = {"base": {"hub": "slowfast_r50"}, "ops": [{"op": "swap_pool"}], "input": {"size": [1, 2]}}
    try:
        out = apply_overrides(data, parse_set([f"{p}={json.dumps(value)}" for p in paths]))
        yaml.safe_dump(out)
    except SurgeryError as exc:
        assert exc.hint, exc.message
