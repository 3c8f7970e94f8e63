"""The ``sfsurgery`` command group: error and signal handling shared by every command.

User errors (:class:`~sfsurgery.errors.SurgeryError`) print one ``error:`` line and a hint
and exit with the error's code (Ctrl-C 130, SIGTERM 143); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import gc
import signal
import sys
import threading
import warnings
from typing import Any

import click

from ..errors import SurgeryError, SurgeryWarning


def _fail(exc: SurgeryError) -> None:
    # one line each, whatever the message holds (a plugin's error text may span lines)
    message = " ".join(exc.message.split())
    hint = " ".join((exc.hint or "run the command with --debug to see where it failed").split())
    click.echo(f"error: {message}", err=True)
    click.echo(f"hint: {hint}", err=True)
    sys.exit(exc.exit_code)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that it unwinds (and cleans up) as Ctrl-C does."""


def _on_signal(signum: int, frame: object) -> None:
    # the first signal starts the unwinding; a second one must not cut the cleanup short
    for other in (signal.SIGINT, signal.SIGTERM):
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


def user_errors(fn):
    """Turn SurgeryError into the documented one-line error and exit code; Ctrl-C and SIGTERM too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SurgeryError as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            _fail(exc)
        except (KeyboardInterrupt, Terminated) as exc:  # not click's "Aborted!" and exit 1 (validation failed)
            what, code = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)  # 128 + signal
            click.echo(f"error: {what}\nhint: no partial output was left behind; run the command again", err=True)
            sys.exit(code)

    return wrapper


class _Program(click.Group):
    """The command line itself: signal handling for the process (not for in-process callers such as tests)."""

    def main(self, args=None, *rest, **kwargs):
        real = args is None and threading.current_thread() is threading.main_thread()
        # a signal ignored by the caller (nohup, background jobs) stays ignored
        ours = [s for s in (signal.SIGINT, signal.SIGTERM) if real and signal.getsignal(s) is not signal.SIG_IGN]
        try:
            for signum in ours:
                signal.signal(signum, _on_signal)
            return super().main(args, *rest, **kwargs)
        finally:  # the work is over: a signal during torch's slow exit-time cleanup just ends the process
            for signum in ours:
                signal.signal(signum, signal.SIG_DFL)


def _shape(shape: Any) -> str:
    if shape and isinstance(shape[0], list):
        return "[" + ", ".join(_shape(s) for s in shape) + "]"
    return "(" + ", ".join(map(str, shape)) + ")"


def _load(recipe_path: str, sets: tuple[str, ...]):
    from ..recipe import parse_set
    from ..resolve import load_recipe

    return load_recipe(recipe_path, parse_set(list(sets)))


@click.group(cls=_Program, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="sfsurgery")
def main(debug: bool) -> None:
    """Declared, checked, reproducible surgery on PyTorchVideo SlowFast models."""
    # A short-lived process that imports torch and pytorchvideo: with the default thresholds the
    # cyclic GC rescans their ~1M objects over and over (~0.3 s). Collect less often; the library
    # itself leaves the caller's GC settings alone.
    gc.set_threshold(50_000, 20, 100)
    # the commands print the library's warnings as `warning:` lines; Python's would repeat them
    warnings.filterwarnings("ignore", category=SurgeryWarning)


recipe_arg = click.argument("recipe")  # the library reports folders and missing files itself
set_opt = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                       help="Override a recipe field, e.g. ops.0.num_classes=10.")
