"""The shape of the inside: resolve once, plan then execute, located errors, typed plugin API.

Also the built-in ops as plain functions on a stock pytorchvideo model, checked against the
stock model by hand, and the package's structural rules (no import cycles, small modules).
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import clip, r18_recipe

import sfsurgery
import sfsurgery.base
import sfsurgery.context
import sfsurgery.resolve
from sfsurgery.builtin.ops import grayscale_stem, replace_head, swap_pool, truncate
from sfsurgery.cli import main
from sfsurgery.context import op_seed
from sfsurgery.errors import OpError, PluginError, TraceError

PACKAGE = Path(__file__).resolve().parents[1] / "sfsurgery"
SMALL = {"create_slowfast": {"model_depth": 18, "head_pool_kernel_sizes": [[2, 2, 2], [8, 2, 2]]}}
SMALL_INPUT = {"frames": 8, "size": [64, 64]}


def _module_imports() -> dict[str, set[str]]:
    """Every import between sfsurgery modules, function-level ones included (TYPE_CHECKING excluded)."""
    modules = {".".join(("sfsurgery", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(tree):
            if id(node) in typing_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split(".")
                module = ".".join(parts[: len(parts) - node.level + 1]) + (f".{node.module}" if node.module else "")
                targets = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules] or [module]
            else:
                targets = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            deps |= {t for t in targets if t in modules and t != name}
        edges[name] = deps
    return edges


def test_no_import_cycle_inside_the_package():
    edges = _module_imports()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for dep in edges[name]:
            assert dep not in path, "import cycle: " + " -> ".join([*path[path.index(dep):], dep])
            if dep not in done:
                visit(dep, [*path, dep])
        done.add(name)

    for name in edges:
        visit(name, [name])


def test_modules_stay_small():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 300} == {}


def test_builtins_are_registered_through_the_hooks_from_their_own_package():
    registry = sfsurgery.Registry(entry_points=False)
    for table in (registry.ops, registry.bases, registry.formats):
        for spec in table.values():
            assert spec.provider.plugin.startswith("sfsurgery.builtin."), spec


def test_a_recipe_is_resolved_once_per_apply_and_load(monkeypatch, tmp_path):
    calls = []
    real = sfsurgery.base.resolve_base
    monkeypatch.setattr(sfsurgery.base, "resolve_base", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(sfsurgery.resolve, "resolve_base", sfsurgery.base.resolve_base)
    result = sfsurgery.apply({"base": SMALL, "input": SMALL_INPUT, "ops": [{"op": "replace_head", "num_classes": 3}]})
    assert len(calls) == 1
    path = result.save(tmp_path / "m.safetensors")
    sfsurgery.load(path)
    assert len(calls) == 2
    recipe = result.recipe
    assert isinstance(recipe, sfsurgery.Recipe) and recipe.ops[0].params["hidden"] == ()
    sfsurgery.validate(recipe)
    sfsurgery.apply(recipe)
    assert len(calls) == 2  # a resolved recipe is used as it is


class Probe:
    """Records what an op sees in each pass."""

    seen: list[tuple[str, bool, bool, object]] = []

    @sfsurgery.hookimpl
    def register_ops(self, register: sfsurgery.OpRegistrar) -> None:
        register("probe", self.probe)

    @staticmethod
    def probe(ctx: sfsurgery.OpContext, *, widths: tuple[int, ...] = (1,)) -> None:
        """Look at the context."""
        device = next(ctx.model.parameters()).device.type
        Probe.seen.append((device, torch.is_grad_enabled(), ctx.model.training, ctx.trace()))
        assert isinstance(widths, tuple)
        assert ctx.base == sfsurgery.BaseInfo("create_slowfast", "slowfast", tuple(f"blocks.{i}" for i in range(5)))


def test_ops_run_twice_and_the_execute_pass_reuses_the_planned_traces(monkeypatch):
    traced = []
    real = sfsurgery.context.run_trace
    monkeypatch.setattr(sfsurgery.context, "run_trace", lambda *a: traced.append(1) or real(*a))
    Probe.seen = []
    sfsurgery.apply({"base": SMALL, "input": SMALL_INPUT, "ops": [{"op": "probe", "widths": [2, 3]}]},
                    plugins=[Probe()])
    assert [(device, grad, training) for device, grad, training, _ in Probe.seen] == [("meta", False, False),
                                                                                     ("cpu", False, False)]
    assert Probe.seen[0][3] == Probe.seen[1][3] == (1, 400)
    assert len(traced) == 1  # planned once on meta; the real pass got the plan's answer


class Misbehaving:
    @sfsurgery.hookimpl
    def register_ops(self, register):
        register("set_model_none", self.set_model_none)
        register("bad_record", self.bad_record)
        register("raises", self.raises)

    @staticmethod
    def set_model_none(ctx):
        """Sets ctx.model to None."""
        ctx.model = None

    @staticmethod
    def bad_record(ctx):
        """Records a number as a key."""
        ctx.record(added=[5])

    @staticmethod
    def raises(ctx, *, why: str = "nothing to do"):
        """Refuses."""
        raise OpError(why, hint="a hint")


@pytest.mark.parametrize(("op", "text"), [("set_model_none", "set ctx.model to a NoneType, not an nn.Module"),
                                         ("bad_record", "takes state-dict keys"),
                                         ("raises", "nothing to do")])
def test_op_errors_carry_a_structured_location(op, text):
    recipe = {"base": SMALL, "input": SMALL_INPUT, "ops": [{"op": "swap_pool"}, {"op": op}]}
    with pytest.raises(TraceError) as info:
        sfsurgery.validate(recipe, plugins=[Misbehaving()])
    assert (info.value.where.op_index, info.value.where.op_name) == (1, op)
    assert str(info.value).startswith(f"ops[1] {op}: ") and text in info.value.detail
    assert info.value.hint


@pytest.mark.parametrize(("register_call", "expected"), [
    (lambda r: r("ok", lambda ctx: None, famillies=["x3d"]), "unexpected keyword argument 'famillies'"),
    (lambda r: r(5, lambda ctx: None), "op name must be a string"),
    (lambda r: r("ok", "not a function"), "op must be callable"),
    (lambda r: r("ok", lambda ctx: None, families="slowfast"), "families must be a list"),
    (lambda r: r("ok", lambda ctx, *, op=1: None), "parameter name 'op' is reserved"),
    (lambda r: r("ok", lambda ctx, *, params=1: None), "parameter name 'params' is reserved"),
    (lambda r: r("ok", lambda ctx, n: None), "must be keyword-only"),
])
def test_registrar_mistakes_name_the_plugin(register_call, expected):
    class Sloppy:
        @sfsurgery.hookimpl
        def register_ops(self, register):
            register_call(register)

    with pytest.raises(PluginError, match=r"plugin Sloppy: ") as info:
        sfsurgery.Registry([Sloppy()])
    assert expected in info.value.message and info.value.hint


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"input": {"frames": 0}}, "frames"), ({"family": "two words"}, "family must be a name"),
    ({"stages": "blocks.0"}, "stages must be a list"), ({"build_on": "gpu"}, "build_on must be"),
    ({"preprocess": {"side": -1}}, "side"),
])
def test_base_registrar_checks_its_arguments(kwargs, expected):
    class SloppyBase:
        @sfsurgery.hookimpl
        def register_bases(self, register):
            register("tiny", lambda: None, **kwargs)

    with pytest.raises(PluginError, match=r"plugin SloppyBase: register_bases failed") as info:
        sfsurgery.Registry([SloppyBase()])
    assert expected in info.value.message


class X3DOnly:
    @sfsurgery.hookimpl
    def register_ops(self, register: sfsurgery.OpRegistrar) -> None:
        register("x3d_thing", self.x3d_thing, families=["x3d"])

    @staticmethod
    def x3d_thing(ctx: sfsurgery.OpContext) -> None:
        """Only for X3D."""


def test_an_op_on_a_base_of_another_family_is_refused_by_validate(tmp_path, monkeypatch):
    with pytest.raises(OpError) as info:
        sfsurgery.validate({"base": {"hub": "slowfast_r50"}, "ops": [{"op": "x3d_thing"}]}, plugins=[X3DOnly()])
    assert info.value.message == ("ops[0] x3d_thing: does not apply to base slowfast_r50 (family slowfast); "
                                  "it needs a base of family x3d")
    sfsurgery.register_op("x3d_thing", families=["x3d"])(X3DOnly.x3d_thing)
    try:
        (tmp_path / "r.yaml").write_text("base: {hub: slowfast_r50}\nops: [{op: x3d_thing}]\n")
        run = CliRunner().invoke(main, ["validate", str(tmp_path / "r.yaml")])
    finally:
        sfsurgery.plugins.unregister_research_ops()
    assert run.exit_code == 1 and run.stderr.splitlines()[0].startswith("error: ops[0] x3d_thing: does not apply")
    assert run.stderr.splitlines()[1].startswith("hint: ")


def test_builtin_ops_are_plain_functions_on_a_stock_model(r18, r18_checkpoint):
    """The functions need no recipe; they equal the recipe ops and the stock model by hand."""
    x = clip((1, 3, 32, 224, 224))
    with torch.no_grad():
        features = list(x)
        for block in r18.blocks[:5]:  # stem and residual stages, by hand
            features = block(features)
        stock = r18(list(x))
    model = replace_head(copy.deepcopy(r18), num_classes=10, generator=torch.Generator().manual_seed(op_seed(0, 0)))
    assert model.blocks[6].proj.in_features == 2304
    with torch.no_grad():
        pooled = torch.cat([p.mean(dim=(2, 3, 4)) for p in features], dim=1)
        want = pooled @ model.blocks[6].proj.weight.T + model.blocks[6].proj.bias
        torch.testing.assert_close(model(list(x)), want, rtol=1e-4, atol=1e-5)
    applied = sfsurgery.apply(r18_recipe(r18_checkpoint, [{"op": "replace_head", "num_classes": 10}]))
    assert torch.equal(applied.model.blocks[6].proj.weight, model.blocks[6].proj.weight)

    swapped = swap_pool(copy.deepcopy(r18))
    with torch.no_grad():
        torch.testing.assert_close(swapped(list(x)), stock, rtol=1e-5, atol=1e-6)
    gray = grayscale_stem(copy.deepcopy(swapped))
    one = clip((1, 1, 8, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(gray(list(one)), swapped([t.repeat(1, 3, 1, 1, 1) for t in one]),
                                   rtol=1e-4, atol=1e-5)
    embed = truncate(copy.deepcopy(r18), after="blocks.4", pool=True)
    with torch.no_grad():
        torch.testing.assert_close(embed(list(x)), torch.cat([p.mean(dim=(2, 3, 4)) for p in features], dim=1))


def test_replace_head_function_measures_a_headless_model_from_an_example_input(r18):
    small = clip((1, 3, 8, 64, 64))
    with torch.no_grad():
        features = list(small)
        for block in r18.blocks[:4]:
            features = block(features)
    headless = truncate(copy.deepcopy(r18), after="blocks.3")
    model = replace_head(headless, num_classes=4, example_input=small)
    assert model.blocks[-1].proj.in_features == sum(f.shape[1] for f in features)
    with pytest.raises(OpError, match="input width"):
        replace_head(truncate(copy.deepcopy(r18), after="blocks.3"), num_classes=4)
