"""Plugins: a real installed distribution with entry points, failures, duplicates, listings, schema."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import r18_recipe

import sfsurgery
from sfsurgery import hookspecs
from sfsurgery.cli import main
from sfsurgery.errors import FileFormatError, PluginError
from sfsurgery.file.reader import read_metadata
from sfsurgery.plugins import Registry
from sfsurgery.schema import recipe_schema

DUMMY_PLUGINS = {
    "ok": '''
        from sfsurgery import hookimpl

        def freeze_stem(ctx, *, requires_grad: bool = False) -> None:
            """Stop training the two stems (their tensors stay unchanged)."""
            for p in ctx.model.blocks[0].multipathway_blocks.parameters():
                p.requires_grad_(requires_grad)
            ctx.record(note="stems frozen")

        def tiny(**kwargs):
            from pytorchvideo.models.slowfast import create_slowfast
            return create_slowfast(model_depth=18, **kwargs)

        @hookimpl
        def register_ops(register):
            register("freeze_stem", freeze_stem)

        @hookimpl
        def register_bases(register):
            register("tiny_slowfast", tiny, input={"size": [224, 224], "frames": 32, "alpha": 4}, weights=None)
    ''',
    "broken": '''
        import a_module_that_is_not_installed
    ''',
    "dup": '''
        from sfsurgery import hookimpl

        @hookimpl
        def register_ops(register):
            register("replace_head", lambda ctx, *, n: None)
    ''',
    "typo": '''
        from sfsurgery import hookimpl

        @hookimpl
        def register_opz(register):
            pass
    ''',
}
ALL = ",".join(f"dummy_{name}" for name in DUMMY_PLUGINS)


def only(*names: str) -> str:
    """SFSURGERY_DISABLE_PLUGINS value that leaves just ``names`` of the dummy distribution on."""
    return ",".join(f"dummy_{n}" for n in DUMMY_PLUGINS if n not in names)


@pytest.fixture(scope="module")
def dummy_distribution(tmp_path_factory):
    """Build and pip-install a real distribution, `sfs-dummy 1.2.3`, with four entry points."""
    src = tmp_path_factory.mktemp("src")
    (src / "sfs_dummy").mkdir()
    (src / "sfs_dummy" / "__init__.py").write_text("")
    for name, code in DUMMY_PLUGINS.items():
        (src / "sfs_dummy" / f"{name}.py").write_text(textwrap.dedent(code))
    entry_points = "\n".join(f'dummy_{n} = "sfs_dummy.{n}"' for n in DUMMY_PLUGINS)
    (src / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "sfs-dummy"
        version = "1.2.3"
        [project.entry-points.sfsurgery]
    """) + entry_points + "\n[tool.setuptools]\npackages = [\"sfs_dummy\"]\n")
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--no-index", "--target", str(target), str(src)], check=True)
    return target


@pytest.fixture
def installed(dummy_distribution, monkeypatch):
    monkeypatch.syspath_prepend(str(dummy_distribution))
    monkeypatch.setenv("SFSURGERY_DISABLE_PLUGINS", only("ok"))
    yield monkeypatch
    for module in [m for m in sys.modules if m.startswith("sfs_dummy")]:
        del sys.modules[module]


def test_an_installed_plugin_registers_ops_and_bases_with_its_provider(installed):
    registry = Registry()
    op = registry.ops["freeze_stem"]
    assert (op.provider.plugin, op.provider.distribution, op.provider.version) == ("dummy_ok", "sfs-dummy", "1.2.3")
    assert registry.bases["tiny_slowfast"].provider == op.provider
    assert "requires_grad: boolean (default false)" in CliRunner().invoke(main, ["ops", "freeze_stem"]).stdout
    listing = json.loads(CliRunner().invoke(main, ["plugins", "--json"]).stdout)
    mine = [row for row in listing if row["plugin"] == "dummy_ok"][0]
    assert mine["ops"] == ["freeze_stem"] and mine["bases"] == ["tiny_slowfast"]
    assert all(row["distribution"] != "sfsurgery" for row in listing)
    assert "sfsurgery.builtin.ops.head" in CliRunner().invoke(main, ["plugins", "--all"]).stdout


def test_a_file_shaped_by_a_plugin_needs_it_to_load(installed, tmp_path):
    recipe = {"base": {"hub": "tiny_slowfast"}, "ops": [{"op": "freeze_stem"}]}
    result = sfsurgery.apply(recipe)
    assert not any(p.requires_grad for p in result.model.blocks[0].multipathway_blocks.parameters())
    path = result.save(tmp_path / "frozen.safetensors")
    versions = json.loads(read_metadata(path)["sfsurgery.versions"])
    assert versions["plugins"] == {"sfs-dummy": "1.2.3"}
    assert sfsurgery.load(path).state_dict().keys() == result.model.state_dict().keys()
    installed.setenv("SFSURGERY_DISABLE_PLUGINS", ALL)
    with pytest.raises(FileFormatError, match=r"needs base 'tiny_slowfast', which no installed plugin provides "
                                              r"\(it was written with sfs-dummy 1\.2\.3\)"):
        sfsurgery.load(path)
    on_stock_base = sfsurgery.apply(r18_recipe(None, [{"op": "freeze_stem"}]), plugins=[sys.modules["sfs_dummy.ok"]])
    path = on_stock_base.save(tmp_path / "stock_base.safetensors")
    with pytest.raises(FileFormatError, match=r"needs op 'freeze_stem' from plugin sfs_dummy\.ok, which no install"):
        sfsurgery.load(path)


def test_a_broken_plugin_names_itself_and_can_be_disabled(installed):
    installed.setenv("SFSURGERY_DISABLE_PLUGINS", only("ok", "broken"))
    with pytest.raises(PluginError) as info:
        Registry()
    assert "dummy_broken (sfs-dummy 1.2.3)" in info.value.message
    assert "ModuleNotFoundError" in info.value.message and "a_module_that_is_not_installed" in info.value.message
    assert "SFSURGERY_DISABLE_PLUGINS=dummy_broken" in info.value.hint
    run = CliRunner().invoke(main, ["ops"])
    assert run.exit_code == 2 and run.stderr.startswith("error: plugin dummy_broken") and "Traceback" not in run.output
    installed.setenv("SFSURGERY_DISABLE_PLUGINS", only("ok"))
    assert "freeze_stem" in Registry().ops


def test_two_plugins_claiming_one_name_are_both_named(installed):
    installed.setenv("SFSURGERY_DISABLE_PLUGINS", only("dup"))
    with pytest.raises(PluginError, match=r"op 'replace_head' is registered twice: by sfsurgery\.builtin\.ops\.head "
                                          r"\(sfsurgery .*\) and by dummy_dup \(sfs-dummy 1\.2\.3\)"):
        Registry()


def test_a_misspelled_hook_fails_loudly(installed):
    installed.setenv("SFSURGERY_DISABLE_PLUGINS", only("typo"))
    with pytest.raises(PluginError, match="register_opz"):
        Registry()


def test_research_code_registers_without_packaging():
    @sfsurgery.register_op("zero_head_bias")
    def zero_head_bias(ctx, *, value: float = 0.0) -> None:
        """Set the classifier bias to ``value``."""
        torch.nn.init.constant_(ctx.model.blocks[-1].proj.bias, value)

    try:
        result = sfsurgery.apply(r18_recipe(None, [{"op": "replace_head", "num_classes": 3},
                                                   {"op": "zero_head_bias", "value": 0.5}]))
        assert torch.equal(result.model.blocks[6].proj.bias, torch.full((3,), 0.5))
        assert Registry().ops["zero_head_bias"].provider.plugin == "research"
    finally:
        sfsurgery.plugins.unregister_research_ops()
    assert "zero_head_bias" not in Registry().ops


def test_an_installed_plugin_passed_again_is_not_registered_twice(installed):
    import sfs_dummy.ok

    registry = Registry([sfs_dummy.ok])
    assert registry.ops["freeze_stem"].provider.distribution == "sfs-dummy"


def test_two_plugin_objects_of_one_class_are_both_kept():
    class Adds:
        def __init__(self, name):
            self.name = name

        @sfsurgery.hookimpl
        def register_ops(self, register):
            register(self.name, lambda ctx, *, n=1: None)

    registry = Registry([Adds("op_a"), Adds("op_b")])
    assert {"op_a", "op_b"} <= set(registry.ops)
    assert registry.ops["op_b"].provider.plugin == "Adds-2"


def test_a_plugin_that_registers_wrongly_is_named():
    class Typo:
        @sfsurgery.hookimpl
        def register_bases(self, register):
            register("tiny", lambda: None, inputs={"size": [64, 64]})

    with pytest.raises(PluginError, match=r"plugin Typo: register_bases failed: TypeError: .*inputs"):
        Registry([Typo()])

    class Unresolvable:
        @sfsurgery.hookimpl
        def register_ops(self, register):
            def op(ctx, *, n: NotImportedType = 1):  # noqa: F821
                pass
            register("unresolvable", op)

    with pytest.raises(PluginError, match=r"op 'unresolvable': its signature is not a valid schema: NameError"):
        Registry([Unresolvable()])


def test_plugins_argument_takes_a_module_or_object():
    class Doubler:
        @sfsurgery.hookimpl
        def register_ops(self, register):
            register("double_classes", self.double)

        @staticmethod
        def double(ctx, *, times: int = 2) -> None:
            head = ctx.model.blocks[-1].proj
            ctx.model.blocks[-1].proj = torch.nn.Linear(head.in_features, head.out_features * times, device=ctx.device)

    trace = sfsurgery.validate(r18_recipe(None, [{"op": "double_classes"}]), plugins=[Doubler()])
    assert trace.output == (1, 800)


class NetPrefixFormat:
    """A checkpoint format from a training framework that stores the net under ``net.``."""

    seen_shapes: dict = {}

    @sfsurgery.hookimpl
    def register_checkpoint_formats(self, register):
        register("net_prefixed", self.convert)

    def convert(self, checkpoint, path, *, model_shapes):
        NetPrefixFormat.seen_shapes = model_shapes
        return {k.removeprefix("net."): v for k, v in checkpoint["weights"].items()}


def test_a_checkpoint_format_plugin_converts_what_the_safe_loader_read(tmp_path, r18):
    torch.save({"weights": {f"net.{k}": v for k, v in r18.state_dict().items()}}, tmp_path / "w.pt")
    recipe = r18_recipe(tmp_path / "w.pt")
    recipe["base"]["checkpoint_format"] = "net_prefixed"
    result = sfsurgery.apply(recipe, plugins=[NetPrefixFormat()])
    assert all(torch.equal(v, r18.state_dict()[k]) for k, v in result.model.state_dict().items())
    assert NetPrefixFormat.seen_shapes["blocks.6.proj.weight"] == (400, 2304)
    recipe["base"]["checkpoint_format"] = "net_prefix"
    with pytest.raises(sfsurgery.RecipeError, match="did you mean net_prefixed"):
        sfsurgery.apply(recipe, plugins=[NetPrefixFormat()])


def test_schema_is_valid_and_checks_each_op_by_its_parameters():
    schema = recipe_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(Path("recipes").glob("*.yaml")):
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path
    bad = [{"base": {"hub": "slowfast_r50"}, "ops": [{"op": "replace_head", "num_clases": 3}]},
           {"base": {"hub": "slowfast_r50"}, "ops": [{"op": "replace_head"}]},
           {"base": {"hub": "slowfast_r50"}, "ops": [{"op": "swap_pool", "kind": "median"}]},
           {"base": {"hub": "slowfast_r5"}},
           {"base": {"create_slowfast": {"model_dept": 50}}}]
    for recipe in bad:
        assert list(validator.iter_errors(recipe)), recipe
    run = CliRunner().invoke(main, ["schema"])
    assert json.loads(run.stdout)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_includes_plugin_ops(installed):
    titles = [item["title"] for item in recipe_schema()["properties"]["ops"]["items"]["oneOf"]]
    assert "freeze_stem" in titles and "replace_head" in titles


HOOKS = [name for name in dir(hookspecs) if name.startswith("register_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    doc = getattr(hookspecs, hook).__doc__ or ""
    assert "Args:" in doc and "register" in doc
    readme = Path("README.md").read_text()
    assert f"`{hook}(register)`" in readme, f"README's plugin section does not document {hook}"


def test_every_hook_is_exercised_by_this_suite():
    tested = set()
    for path in Path("tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in HOOKS:
                tested.add(node.name)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                tested.update(h for h in HOOKS if f"def {h}(" in node.value)
    assert tested == set(HOOKS)
