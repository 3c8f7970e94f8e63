"""Commands that take a model file: inspect, predict, export."""

from __future__ import annotations

import json

import click

from .program import _shape, main, user_errors


@main.command("inspect")
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def inspect_(file: str, as_json: bool) -> None:
    """Show what FILE.safetensors holds: recipe, shapes, parameters, source, lineage."""
    from ..inspection import inspect_file

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
    if info["preprocess"]:
        p = info["preprocess"]
        click.echo(f"clip      {info['input']['frames']} frames x sampling rate {p['sampling_rate']}, short side "
                   f"{p['side']} -> crop {info['input']['size']}, mean {p['mean']}, std {p['std']}")
    if info["labels"]:
        more = f", ... ({len(info['labels'])} classes)" if len(info["labels"]) > 5 else ""
        click.echo(f"labels    {', '.join(info['labels'][:5])}{more}")
    training = info["training"] or {}
    if any(s["trainable"] < s["params"] for s in training.get("stages", [])) or training.get("lr_rules"):
        stages = ", ".join(f"{s['path']} {s['trainable']:,}/{s['params']:,}" for s in training["stages"])
        click.echo(f"trainable {stages}; {training['frozen_batchnorms']} BatchNorms stay in eval mode")
        for pattern, mult in training.get("lr_rules", []):
            click.echo(f"lr        {pattern} x{mult:g}")
    for warning in info["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    integrity = "header and data sha256 verified" if info["header_verified"] else (
        "data sha256 verified (format 1: the header is not covered)" if info["data_verified"] else "not verified")
    click.echo(f"integrity {integrity}")


@main.command()
@click.argument("file", type=click.Path())
@click.argument("video", type=click.Path())
@click.option("--topk", type=click.IntRange(min=1), default=5, show_default=True, help="How many classes to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--device", default="cpu", show_default=True, help="Where to run: cpu, cuda, cuda:N.")
@click.option("--labels", type=click.Path(), help="Text file with one class label per line.")
@user_errors
def predict(file: str, video: str, topk: int, as_json: bool, device: str, labels: str | None) -> None:
    """Run the model in FILE (.safetensors) on VIDEO and print its top classes."""
    from ..predict import predict as run

    result = run(file, video, topk=topk, device=device, labels=labels)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"file   {result['file']}")
    click.echo(f"video  {result['video']}")
    click.echo(f"{'rank':>4}  {'class':>5}  {'score':>8}  label")
    for rank, entry in enumerate(result["topk"], 1):
        click.echo(f"{rank:>4}  {entry['class']:>5}  {entry['score']:>8.4f}  {entry['label'] or '-'}")


@main.command("export")
@click.argument("file", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Output file: .onnx or .pt2.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size to trace.")
@click.option("--dynamic-batch", is_flag=True, help="Dynamic batch dimension (traced at >= 2, checked at another).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def export_(file: str, output: str, batch: int, dynamic_batch: bool, force: bool, as_json: bool) -> None:
    """Export FILE (.safetensors) to ONNX or torch.export; kept only if it matches the eager model."""
    from ..export import export as run

    r = run(file, output, batch=batch, dynamic_batch=dynamic_batch, force=force)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"exported  {r['path']}  ({r['format']}, {r['dtype']}, {r['bytes'] / 1e6:.1f} MB)")
    for label in ("inputs", "outputs"):
        click.echo(f"{label:<9} " + ", ".join(f"{name} {_shape(shape)}" for name, shape in r[label].items()))
    click.echo(f"checked   batch {', '.join(map(str, r['batch_checked']))} against sfsurgery.load: max abs error "
               f"{r['max_abs_error']:.2e}, max rel error {r['max_rel_error']:.2e} "
               f"(tolerance {r['tolerance']:g} of max |output|)")
    for note in r["notes"]:
        click.echo(f"note      {note}")
