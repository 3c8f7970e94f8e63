"""Commands that take a recipe: apply, validate, trace, schema."""

from __future__ import annotations

import json

import click

from .program import _load, _shape, main, recipe_arg, set_opt, user_errors


@main.command()
@recipe_arg
@click.option("-o", "--output", type=click.Path(), help="Output file (default: save.path).")
@set_opt
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--dry-run", is_flag=True, help="Validate and run the surgery, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def apply(recipe: str, output: str | None, sets: tuple[str, ...], force: bool, dry_run: bool,
          as_json: bool) -> None:
    """Apply RECIPE and write one self-describing .safetensors file."""
    from ..file.writer import checked_output
    from ..pipeline import apply as run

    parsed = _load(recipe, sets)
    target = checked_output(output, parsed.output_path, force=force or dry_run)  # before any work, not after
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
    from ..pipeline import validate as run

    trace = run(_load(recipe, sets))
    if as_json:
        click.echo(json.dumps({**trace.as_dict(), "warnings": trace.warnings}, indent=2))
        return
    for warning in trace.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"ok: {recipe}: input {_shape([[*s] for s in trace.input.pathway_shapes()])} "
               f"-> output {_shape(trace.as_dict()['output'])}")


@main.command()
@recipe_arg
@set_opt
@click.option("--depth", type=click.IntRange(1, 20), default=2, show_default=True, help="Module depth of the table.")
@user_errors
def trace(recipe: str, sets: tuple[str, ...], depth: int) -> None:
    """Print RECIPE's per-module shapes, parameters and GMACs (computed on the meta device)."""
    from ..plan import plan_on_meta
    from ..trace_table import format_table, module_table

    plan = plan_on_meta(_load(recipe, sets))
    rows = module_table(plan.model, plan.input, depth)
    click.echo(format_table(rows, plan.input, f"{recipe}: per-module shapes to depth {depth} (meta device, "
                                              "batch as in input; GMACs = 10^9 multiply-accumulates)"))


@main.command()
@user_errors
def schema() -> None:
    """Print the JSON Schema of recipes (plugin ops included) for editors and CI."""
    from ..schema import recipe_schema

    click.echo(json.dumps(recipe_schema(), indent=2))
