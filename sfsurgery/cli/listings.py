"""Commands that list what is installed: ops, bases, plugins."""

from __future__ import annotations

import json

import click

from .program import main, user_errors


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def ops(name: str | None, as_json: bool) -> None:
    """List every op: its plugin, parameters and help (or just NAME)."""
    from ..notation import describe_params
    from ..plugins import Registry

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


@main.command()
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def plugins(show_all: bool, as_json: bool) -> None:
    """List installed plugins and what each provides."""
    from ..plugins import Registry

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
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def bases(as_json: bool) -> None:
    """List every base: family, default clip, preprocessing, parameters, zoo weights and provider."""
    from ..plugins import Registry

    rows = Registry().describe_bases()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'base':<26} {'family':<14} {'clip (T x H x W)':<22} {'preprocess':<20} {'params':>8}  "
               f"{'zoo':<4} provider")
    for row in rows:
        clip, prep = row["input"], row["preprocess"]
        size = f"{clip['frames']}x{clip['size'][0]}x{clip['size'][1]}"
        if clip["alpha"] is not None:
            size += f" alpha {clip['alpha']}"
        if clip["channels"] != 3:
            size += f" {clip['channels']}ch"
        preprocess = f"rate {prep['sampling_rate']}, side {prep['side']}"
        params = "?" if row["params"] is None else f"{row['params'] / 1e6:.2f}M"
        click.echo(f"{row['name']:<26} {row['family']:<14} {size:<22} {preprocess:<20} {params:>8}  "
                   f"{'yes' if row['weights'] else 'no':<4} {row['provider']['plugin']}")
