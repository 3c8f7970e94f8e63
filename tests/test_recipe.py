"""Recipe schema, overrides, suggestions and create_slowfast arguments (no tensors)."""

from __future__ import annotations

import pytest

import sfsurgery
from sfsurgery.errors import RecipeError
from sfsurgery.recipe import apply_overrides, parse_set
from sfsurgery.slowfast import create_slowfast_kwargs


def test_yaml_recipe_resolves_paths_against_its_folder(tmp_path, registry):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "r.yaml").write_text("base: {hub: slowfast_r50, checkpoint: ../w/x.pyth}\nops: []\n")
    recipe = sfsurgery.load_recipe(folder / "r.yaml", registry=registry)
    assert recipe.name == "r"  # defaults to the file name
    assert recipe.weights.path == (tmp_path / "w" / "x.pyth").resolve()


def test_unknown_parameter_suggests_the_near_miss(registry):
    with pytest.raises(RecipeError, match=r"ops\[0\]\.num_clases: unknown parameter, did you mean num_classes\?"):
        sfsurgery.load_recipe({"base": {"hub": "slowfast_r50"},
                               "ops": [{"op": "replace_head", "num_clases": 3}]}, registry=registry)


def test_unknown_op_and_unknown_key_suggest(registry):
    with pytest.raises(RecipeError, match=r"ops\[1\]: unknown op 'swap_pol', did you mean swap_pool\?"):
        sfsurgery.load_recipe({"base": {"hub": "slowfast_r50"},
                               "ops": [{"op": "swap_pool"}, {"op": "swap_pol"}]}, registry=registry)
    with pytest.raises(RecipeError, match=r"base\.chekpoint: unknown key, did you mean checkpoint\?"):
        sfsurgery.load_recipe({"base": {"hub": "slowfast_r50", "chekpoint": "x"}}, registry=registry)
    with pytest.raises(RecipeError, match=r"base\.hub: unknown base 'slowfast_r5', did you mean slowfast_r50\?"):
        sfsurgery.load_recipe({"base": {"hub": "slowfast_r5"}}, registry=registry)


def test_wrong_types_name_the_path(registry):
    with pytest.raises(RecipeError, match=r"ops\[0\]\.num_classes: .*valid integer"):
        sfsurgery.load_recipe({"base": {"hub": "slowfast_r50"},
                               "ops": [{"op": "replace_head", "num_classes": "ten"}]}, registry=registry)
    with pytest.raises(RecipeError, match=r"input\.size"):
        sfsurgery.load_recipe({"base": {"hub": "slowfast_r50"}, "input": {"size": [0, 3]}}, registry=registry)
    with pytest.raises(RecipeError, match="exactly one of base.hub or base.create_slowfast"):
        sfsurgery.load_recipe({"base": {}}, registry=registry)


def test_validated_params_carry_defaults(registry):
    recipe = sfsurgery.load_recipe({"base": {"hub": "slowfast_r50"},
                                    "ops": [{"op": "replace_head", "num_classes": 7}]}, registry=registry)
    # ops get Python types (the signature says tuple); the file records plain JSON
    assert recipe.ops[0].params == {"num_classes": 7, "dropout": 0.5, "activation": None, "hidden": ()}
    assert recipe.ops[0].params_json == {"num_classes": 7, "dropout": 0.5, "activation": None, "hidden": []}


def test_overrides_set_any_field_before_validation(registry):
    data = {"base": {"hub": "slowfast_r50"}, "ops": [{"op": "replace_head", "num_classes": 7}]}
    recipe = sfsurgery.load_recipe(data, overrides=parse_set(["ops.0.num_classes=10", "input.size=[112, 112]",
                                                              "save.dtype=float16"]), registry=registry)
    assert recipe.ops[0].params["num_classes"] == 10
    assert recipe.input.size == (112, 112)
    assert recipe.save.dtype == "float16"
    assert data["ops"][0]["num_classes"] == 7  # the caller's dict is untouched
    with pytest.raises(RecipeError, match="no index '3'"):
        apply_overrides(data, {"ops.3.num_classes": 1})
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        parse_set(["ops.0.num_classes"])


def test_to_yaml_round_trips(tmp_path, registry):
    recipe = sfsurgery.load_recipe({"name": "sweep", "base": {"hub": "slowfast_r101"},
                                    "ops": [{"op": "replace_head", "num_classes": 7, "hidden": [64]}]},
                                   registry=registry)
    recipe.to_yaml(tmp_path / "sweep.yaml")
    again = sfsurgery.load_recipe(tmp_path / "sweep.yaml", registry=registry)
    assert again.to_dict() == recipe.to_dict()


def test_to_yaml_in_another_folder_keeps_pointing_at_the_same_files(tmp_path, registry):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "r.yaml").write_text("base: {hub: slowfast_r50, checkpoint: weights/w.pyth}\n"
                                           "save: {path: out/m.safetensors}\n")
    recipe = sfsurgery.load_recipe(tmp_path / "a" / "r.yaml", registry=registry)
    (tmp_path / "sweep").mkdir()
    recipe.to_yaml(tmp_path / "sweep" / "k7.yaml")
    again = sfsurgery.load_recipe(tmp_path / "sweep" / "k7.yaml", registry=registry)
    assert again.weights.path == (tmp_path / "a" / "weights" / "w.pyth").resolve()
    assert again.resolve_path(again.save.path) == (tmp_path / "a" / "out" / "m.safetensors").resolve()
    assert again.document.base.checkpoint == "../a/weights/w.pyth"


@pytest.mark.parametrize("args", [{"input_channels": 3}, {"slowfast_fusion_conv_stride": "4"},
                                  {"head_pool_kernel_sizes": None}, {"stem_dim_outs": [-1, 8]}])
def test_badly_typed_create_slowfast_arguments_are_recipe_errors(args, registry):
    with pytest.raises(RecipeError, match="create_slowfast"):
        sfsurgery.validate({"base": {"create_slowfast": {"model_depth": 18, **args}}}, registry=registry)


def test_seeds_must_fit_torch(registry):
    with pytest.raises(RecipeError, match="seed: Input should be less than 9223372036854775808"):
        sfsurgery.load_recipe({"base": {"hub": "slowfast_r50"}, "seed": 2**64}, registry=registry)


def test_yaml_python_tags_are_refused_never_executed(tmp_path, registry):
    marker = tmp_path / "ran"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(RecipeError, match="tags"):
        sfsurgery.load_recipe(bad, registry=registry)
    assert not marker.exists()


def test_create_slowfast_arguments_become_tuples_and_callables_are_refused():
    kwargs = create_slowfast_kwargs({"model_depth": 101, "slowfast_fusion_conv_kernel_size": [5, 1, 1],
                                     "head": None})
    assert kwargs == {"model_depth": 101, "slowfast_fusion_conv_kernel_size": (5, 1, 1), "head": None}
    with pytest.raises(RecipeError, match="norm: takes a Python callable; recipes never import code"):
        create_slowfast_kwargs({"norm": "torch.nn.BatchNorm3d"})
    with pytest.raises(RecipeError, match="did you mean model_depth"):
        create_slowfast_kwargs({"model_dept": 50})
