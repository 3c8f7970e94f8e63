"""The ``sfsurgery`` command. It only formats what the library returns.

User errors (:class:`~sfsurgery.errors.SurgeryError`) print one ``error:`` line and a hint
and exit with the error's code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
from pathlib import Path
from typing import Any

import click

from .errors import OutputExistsError, SurgeryError


def _fail(exc: SurgeryError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(exc.exit_code)


def user_errors(fn):
    """Turn SurgeryError into the documented one-line error and exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SurgeryError as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            _fail(exc)

    return wrapper


def _shape(shape: Any) -> str:
    if shape and isinstance(shape[0], list):
        return "[" + ", ".join(_shape(s) for s in shape) + "]"
    return "(" + ", ".join(map(str, shape)) + ")"


def _load(recipe_path: str, sets: tuple[str, ...]):
    from .recipe import parse_set
    from .resolve import load_recipe

    return load_recipe(recipe_path, parse_set(list(sets)))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="sfsurgery")
def main(debug: bool) -> None:
    """Declared, checked, reproducible surgery on PyTorchVideo SlowFast models."""
    # A short-lived process that imports torch and pytorchvideo: with the default thresholds the
    # cyclic GC rescans their ~1M objects over and over (~0.3 s). Collect less often; the library
    # itself leaves the caller's GC settings alone.
    gc.set_threshold(50_000, 20, 100)


recipe_arg = click.argument("recipe")  # the library reports folders and missing files itself
set_opt = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                       help="Override a recipe field, e.g. ops.0.num_classes=10.")


@main.command()
@recipe_arg
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file (default: save.path).")
@set_opt
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--dry-run", is_flag=True, help="Validate and run the surgery, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def apply(recipe: str, output: str | None, sets: tuple[str, ...], force: bool, dry_run: bool,
          as_json: bool) -> None:
    """Apply RECIPE and write one self-describing .safetensors file."""
    from .pipeline import apply as run

    parsed = _load(recipe, sets)
    target = Path(output) if output else parsed.output_path()
    if target.exists() and not force and not dry_run:  # before any work, not after
        raise OutputExistsError(target)
    result = run(parsed)
    written = None if dry_run else result.save(target, force=force)
    report = {**result.report, "file": str(written) if written else None}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    source = report["source"]
    weights = source["weights"] if source["weights"] == "random" else f"{source['weights']} {source['file']}"
    click.echo(f"base     {json.dumps(source['base'])}  weights: {weights}")
    if report["load"]:
        load = report["load"]
        click.echo(f"loaded   {load['loaded']}/{load['total']} tensors ({load['coverage']:.1%})")
    for note in report["notes"]:
        click.echo(f"note     {note}")
    for entry in report["lineage"]:
        counts = ", ".join(f"{len(entry[k])} {k}" for k in ("added", "removed", "transformed") if entry[k])
        click.echo(f"ops[{entry['index']}]   {entry['op']}: {'; '.join(entry['notes']) or counts}")
    click.echo(f"input    {_shape([[*s] for s in result.trace.input.pathway_shapes()])}  "
               f"output {_shape(report['output'])}")
    params = report["params"]
    click.echo(f"params   {params['total']:,} ({params['trainable']:,} trainable)")
    click.echo(f"wrote    {written}" if written else "dry run: nothing written")


@main.command()
@recipe_arg
@set_opt
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
@user_errors
def validate(recipe: str, sets: tuple[str, ...], as_json: bool) -> None:
    """Check RECIPE: schema and a shape trace on the meta device. Reads no tensor data."""
    from .pipeline import validate as run

    trace = run(_load(recipe, sets))
    if as_json:
        click.echo(json.dumps(trace.as_dict(), indent=2))
        return
    click.echo(f"ok: {recipe}: input {_shape([[*s] for s in trace.input.pathway_shapes()])} "
               f"-> output {_shape(trace.as_dict()['output'])}")


@main.command()
@recipe_arg
@set_opt
@click.option("--depth", type=click.IntRange(1, 20), default=2, show_default=True, help="Module depth of the table.")
@user_errors
def trace(recipe: str, sets: tuple[str, ...], depth: int) -> None:
    """Print RECIPE's per-module shapes, parameters and GMACs (computed on the meta device)."""
    from .plan import plan_on_meta
    from .trace_table import format_table, module_table

    plan = plan_on_meta(_load(recipe, sets))
    rows = module_table(plan.model, plan.input, depth)
    click.echo(format_table(rows, plan.input, f"{recipe}: per-module shapes to depth {depth} (meta device, "
                                              "batch as in input; GMACs = 10^9 multiply-accumulates)"))


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def ops(name: str | None, as_json: bool) -> None:
    """List every op: its plugin, parameters and help (or just NAME)."""
    from .notation import describe_params
    from .plugins import Registry

    registry = Registry()
    specs = [registry.op(name)] if name else [registry.ops[k] for k in sorted(registry.ops)]
    rows = [{"name": spec.name, "provider": spec.provider.as_dict(), "families": spec.families,
             "params": describe_params(spec.params), "help": spec.help} for spec in specs]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=list))
        return
    for row in rows:
        provider = row["provider"]
        origin = f" ({provider['distribution']} {provider['version']})" if provider["distribution"] else ""
        click.echo(f"{row['name']}  [{provider['plugin']}{origin}]")
        for p in row["params"]:
            value = p["default"] if isinstance(p["default"], str) else json.dumps(p["default"])
            default = "required" if p["required"] else f"default {value}"
            click.echo(f"    {p['name']}: {p['type']} ({default})")
        if name:
            click.echo("\n" + "\n".join("    " + line for line in row["help"].splitlines()))
        else:
            click.echo(f"    {row['help'].splitlines()[0] if row['help'] else ''}")


@main.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def inspect_(file: str, as_json: bool) -> None:
    """Show what FILE.safetensors holds: recipe, shapes, parameters, source, lineage."""
    from .inspection import inspect_file

    info = inspect_file(file)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    # recorded facts are shown as found: a file from another version may lack some of them
    recipe, params, source = info["recipe"], info["params"], info["source"]
    click.echo(f"file      {info['file']}  ({info['bytes'] / 1e6:.1f} MB, {info['tensors']} tensors, "
               f"{', '.join(f'{n} {d}' for d, n in info['dtypes'].items())})")
    click.echo(f"recipe    {recipe['name']}  seed {recipe['seed']}  base {json.dumps(recipe['base'])}")
    click.echo(f"ops       {' -> '.join(info['ops']) or '(none)'}")
    click.echo(f"input     {json.dumps(info['input'])}")
    click.echo(f"output    {_shape(info['output_shape'])}")
    click.echo(f"params    {params.get('total', '?'):,} ({params.get('trainable', '?'):,} trainable)"
               if params else "params    (not recorded)")
    if "file" in source:
        detail = f"{source.get('file')} sha256 {str(source.get('sha256'))[:16]}..."
    else:
        detail = f"seed {source.get('seed')}"
    click.echo(f"weights   {source.get('weights', '(not recorded)')}: {detail}")
    for i, entry in enumerate(info["lineage"]):
        click.echo(f"ops[{i}]    {entry['op']}: +{entry['added']} -{entry['removed']} ~{entry['transformed']} keys"
                   + (f"  ({'; '.join(map(str, entry['notes']))})" if entry["notes"] else ""))
    versions = info["versions"]
    plugins = ", ".join(f"{k} {v}" for k, v in (versions.get("plugins") or {}).items())
    click.echo(f"versions  sfsurgery {versions.get('sfsurgery')}, torch {versions.get('torch')}, "
               f"pytorchvideo {versions.get('pytorchvideo')}" + (f", {plugins}" if plugins else ""))
    click.echo(f"data      {'sha256 verified' if info['data_verified'] else 'no digest recorded'}")


@main.command()
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def plugins(show_all: bool, as_json: bool) -> None:
    """List installed plugins and what each provides."""
    from .plugins import Registry

    rows = Registry().describe_plugins(include_builtin=show_all)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no third-party plugins installed (--all shows the built-ins)")
    for row in rows:
        origin = f"{row['distribution']} {row['version']}" if row["distribution"] else "in-process"
        provides = "; ".join(f"{table}: {', '.join(row[table])}" for table in ("ops", "bases", "formats") if row[table])
        click.echo(f"{row['plugin']:<26} {origin:<28} {provides}")


@main.command()
@user_errors
def schema() -> None:
    """Print the JSON Schema of recipes (plugin ops included) for editors and CI."""
    from .schema import recipe_schema

    click.echo(json.dumps(recipe_schema(), indent=2))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--topk", type=click.IntRange(min=1), default=5, show_default=True, help="How many classes to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--device", default="cpu", show_default=True, help="Where to run: cpu, cuda, cuda:N.")
@click.option("--labels", type=click.Path(dir_okay=False), help="Text file with one class label per line.")
@user_errors
def predict(file: str, video: str, topk: int, as_json: bool, device: str, labels: str | None) -> None:
    """Run the model in FILE (.safetensors) on VIDEO and print its top classes."""
    from .predict import predict as run

    result = run(file, video, topk=topk, device=device, labels=labels)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"file   {result['file']}")
    click.echo(f"video  {result['video']}")
    click.echo(f"{'rank':>4}  {'class':>5}  {'score':>8}  label")
    for rank, entry in enumerate(result["topk"], 1):
        click.echo(f"{rank:>4}  {entry['class']:>5}  {entry['score']:>8.4f}  {entry['label'] or '-'}")


if __name__ == "__main__":
    main()
