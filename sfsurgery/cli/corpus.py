"""Commands over a video corpus: extract."""

from __future__ import annotations

import json
import sys

import click

from .program import Terminated, main, user_errors

#: exit status of a run in which some videos failed (their rows carry the error; the rest are written)
EXIT_FAILED_VIDEOS = 3


@main.command()
@click.argument("file", type=click.Path())
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Output Parquet file.")
@click.option("--stride", type=float, help="Seconds between window starts (default: one clip).")
@click.option("--sampling-rate", type=int, help="Source frames per model frame (default: the file's).")
@click.option("--topk", type=int, help="Add the top K classes (needs the file's labels).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Clips per forward.")
@click.option("--workers", type=int, help="Decoding processes (local engine; default: cores - 1, at most 8; 0: none).")
@click.option("--device", default="cpu", show_default=True, help="Where the model runs: cpu, cuda, cuda:N.")
@click.option("--dtype", help="Run the model in this precision, e.g. bfloat16.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: worker processes here; ray: Ray Data (pip install 'sfsurgery[ray]').")
@click.option("--address", help="Ray: join the cluster at this address (default: a local instance).")
@click.option("--actors", type=int, default=1, show_default=True, help="Ray: model replicas (one GPU each on cuda).")
@click.option("--force", is_flag=True, help="Replace an existing output (and any interrupted run's journal).")
@click.option("--resume", is_flag=True, help="Continue: keep the complete videos of OUT and OUT.partial/.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def extract(file: str, inputs: tuple[str, ...], output: str, stride: float | None, sampling_rate: int | None,
            topk: int | None, batch_size: int, workers: int | None, device: str, dtype: str | None, engine: str,
            address: str | None, actors: int, force: bool, resume: bool, quiet: bool, as_json: bool) -> None:
    """Run the model in FILE over every window of the videos in INPUTS; one Parquet row per window.

    INPUTS are video files, folders (searched recursively) or manifests (.txt: one path per line;
    .csv: a 'path' column). Exit 0 when every video was extracted, 3 when some failed (their rows
    carry the error; everything else is written), 2 for bad usage.
    """
    from ..extract import extract as run

    try:
        summary = run(file, list(inputs), output, stride=stride, sampling_rate=sampling_rate, topk=topk,
                      batch_size=batch_size, workers=workers, device=device, dtype=dtype, engine=engine,
                      address=address, actors=actors, force=force, resume=resume, progress=False if quiet else None)
    except (KeyboardInterrupt, Terminated) as exc:
        what, code = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        click.echo(f"error: {what}\nhint: the videos finished so far are kept in {output}.partial/; run the same "
                   "command with --resume to go on", err=True)
        sys.exit(code)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        rate = summary["windows"] / summary["seconds"] if summary["seconds"] else 0.0
        kept = f", {summary['skipped']} kept from an earlier run" if summary["skipped"] else ""
        failed = f" ({summary['failed']} failed)" if summary["failed"] else ""
        click.echo(f"extracted  {summary['videos']} videos{failed}, {summary['windows']} windows in "
                   f"{summary['seconds']:.1f} s ({rate:.1f} windows/s){kept}")
        for failure in summary["failures"]:
            click.echo(f"failed     {failure['video']}: {failure['error']}", err=True)
        click.echo(f"wrote      {summary['path']}" + ("  (the failed videos' rows carry the error; --resume "
                                                       "retries them)" if summary["failed"] else ""))
    if summary["failed"]:
        sys.exit(EXIT_FAILED_VIDEOS)
