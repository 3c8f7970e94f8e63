"""Output paths checked before the work; ties refused; Ctrl-C, SIGTERM and SIGKILL on a real apply."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import r18_recipe

import sfsurgery
from sfsurgery.checkpoints import read_checkpoint
from sfsurgery.cli import main
from sfsurgery.errors import CheckpointError, OpError, OutputError
from sfsurgery.file.writer import TEMP_SUFFIX, temp_path, write_safetensors

SMALL = {"size": [64, 64], "frames": 8}  # with truncate: a quick real model
MISSING = "w/not-there.pyth"  # a checkpoint the work would fail on: errors about the output must come first


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def write_recipe(folder: Path, data: dict) -> Path:
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_refused_before_the_work(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["error", "hint"], result.stderr
    assert "checkpoint not found" not in result.stderr and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def missing_checkpoint_recipe(folder: Path, **extra) -> Path:
    data = r18_recipe(None, **extra)
    data["base"]["checkpoint"] = MISSING
    return write_recipe(folder, data)


def test_output_names_the_file_system_cannot_hold_are_refused_before_the_work(tmp_path):
    recipe = missing_checkpoint_recipe(tmp_path)
    assert_refused_before_the_work(run("apply", recipe, "-o", tmp_path / ("x" * 300)), "300 bytes", "at most 255")
    deep = tmp_path / "new" / ("d" * 256) / "x.safetensors"
    assert_refused_before_the_work(run("apply", recipe, "-o", deep), "256 bytes")
    assert_refused_before_the_work(run("apply", recipe, "--dry-run", "-o", deep), "256 bytes")
    assert not (tmp_path / "new").exists()  # folders are created only when writing


def test_a_nul_byte_in_save_path_is_refused_before_the_work(tmp_path):
    recipe = missing_checkpoint_recipe(tmp_path, save={"path": "out/a\0b.safetensors"})
    assert_refused_before_the_work(run("apply", recipe), "contains a NUL byte")


def test_result_save_checks_the_path_first(tmp_path):
    result = sfsurgery.apply(r18_recipe(None, [{"op": "truncate", "keep": 1}], input=SMALL,
                                        save={"path": "out/a\0b.safetensors"}))
    (tmp_path / "folder").mkdir()
    for path, fragment in ((None, "NUL byte"), (tmp_path / "a\0b.safetensors", "NUL byte"),
                           (tmp_path / ("x" * 256), "256 bytes"), (tmp_path / "folder", "is a folder")):
        with pytest.raises(OutputError, match=fragment) as info:
            result.save(path)
        assert info.value.hint
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_folders_that_cannot_be_written_are_refused_before_the_work(tmp_path):
    recipe = missing_checkpoint_recipe(tmp_path)
    (tmp_path / "file").write_text("")
    assert_refused_before_the_work(run("apply", recipe, "-o", tmp_path / "file" / "sub" / "x.safetensors"),
                                   "is not a folder")
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "locked").mkdir(mode=0o500)
        assert_refused_before_the_work(run("apply", recipe, "-o", tmp_path / "locked" / "new" / "x.safetensors"),
                                       "permission denied", str(tmp_path / "locked"))
        assert not (tmp_path / "locked" / "new").exists()


def test_missing_folders_are_created_only_when_writing(tmp_path):
    recipe = missing_checkpoint_recipe(tmp_path)
    result = run("apply", recipe, "-o", tmp_path / "a" / "b" / "x.safetensors")
    assert result.exit_code == 2 and "checkpoint not found" in result.stderr
    assert not (tmp_path / "a").exists()


def test_a_245_byte_output_name_is_written(tmp_path):
    name = "n" * (245 - len(".safetensors")) + ".safetensors"
    assert len(name.encode()) == 245
    data = r18_recipe(None, [{"op": "truncate", "keep": 1}], input=SMALL)
    result = run("apply", write_recipe(tmp_path, data), "-o", tmp_path / "cli" / name)
    assert result.exit_code == 0, result.output
    out = sfsurgery.apply(data).save(tmp_path / "api" / name)
    for folder in ("cli", "api"):
        assert [p.name for p in (tmp_path / folder).iterdir()] == [name]
    assert sfsurgery.load(out) is not None


@pytest.mark.parametrize("checkpoint, fragment", [("a\0b.pyth", "NUL byte"), ("loop.pyth", "symlink loop")])
def test_checkpoint_paths_that_name_no_file_are_refused(tmp_path, checkpoint, fragment):
    os.symlink("loop.pyth", tmp_path / "loop.pyth")
    with pytest.raises(CheckpointError, match=fragment) as info:
        read_checkpoint(tmp_path / checkpoint)
    assert info.value.hint


@pytest.mark.parametrize("checkpoint, fragment", [("a\0b.pyth", "NUL byte"), ("loop.pyth", "symlink loop")])
def test_checkpoint_paths_in_a_recipe_that_name_no_file_are_refused(tmp_path, checkpoint, fragment):
    os.symlink("loop.pyth", tmp_path / "loop.pyth")
    with pytest.raises(CheckpointError, match=fragment):
        sfsurgery.apply(r18_recipe(tmp_path / checkpoint))


class Tier:
    """A research op that ties two Linear weights (or shares their storage)."""

    @sfsurgery.hookimpl
    def register_ops(self, register):
        register("tie_twin", self.tie_twin)

    @staticmethod
    def tie_twin(ctx, *, same_parameter: bool = True) -> None:
        head = ctx.model.blocks[-1]
        head.twin = torch.nn.Linear(head.proj.in_features, head.proj.out_features, device=ctx.device)
        head.twin.weight = head.proj.weight if same_parameter else torch.nn.Parameter(head.proj.weight.data)


@pytest.mark.parametrize("same_parameter", [True, False])
def test_tied_weights_are_refused_naming_the_keys(same_parameter):
    recipe = r18_recipe(None, [{"op": "tie_twin", "same_parameter": same_parameter}])
    with pytest.raises(OpError, match=r"blocks\.6\.proj\.weight and blocks\.6\.twin\.weight") as info:
        sfsurgery.apply(recipe, plugins=[Tier()])
    assert "separate tensors" in info.value.hint and info.value.exit_code == 1


def test_temp_files_of_dead_writers_for_the_same_output_are_removed(tmp_path):
    target = tmp_path / "model.safetensors"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = temp_path(target, pid=dead_pid, token="aaaaaa")
    alive = temp_path(target, pid=os.getppid(), token="bbbbbb")  # a writer still at work
    other = temp_path(tmp_path / "other.safetensors", pid=dead_pid, token="cccccc")  # another output's
    for path in (stale, alive, other):
        path.write_bytes(b"partial")
    assert len(stale.name.encode()) < 40
    write_safetensors(target, {"w": torch.zeros(2)}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, alive.name, other.name])


# --- signals on a real `sfsurgery apply` in its own process -------------------------------------------------

# SIGINT may be ignored in a background test run, and children inherit that: give the CLI a normal one
CLI = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
       "sys.argv[0] = 'sfsurgery'; runpy.run_module('sfsurgery.cli', run_name='__main__')")
BIG = {"name": "big", "base": {"hub": "slowfast_r50"}, "ops": [{"op": "replace_head", "num_classes": 1000}]}


def start(tmp_path: Path) -> tuple[subprocess.Popen, list[str], Path]:
    recipe = write_recipe(tmp_path, BIG)
    out = tmp_path / "out" / "big.safetensors"
    command = [sys.executable, "-c", CLI, "apply", str(recipe), "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), command, out


def wait_for(found, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not found():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX)] if folder.is_dir() else []


def assert_stopped(proc: subprocess.Popen, code: int, word: str) -> None:
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, (stdout, stderr)
    assert [line for line in stderr.splitlines() if line.startswith("error")] == [f"error: {word}"], stderr
    for noise in ("Traceback", "KeyboardInterrupt", "Aborted", "Exception ignored"):
        assert noise not in stderr


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_the_write_leaves_nothing(tmp_path, signum, code, word):
    proc, _, out = start(tmp_path)
    wait_for(lambda: temps(out.parent), proc)
    proc.send_signal(signum)
    assert_stopped(proc, code, word)
    assert list(out.parent.iterdir()) == []


def test_ctrl_c_during_the_work_exits_130_with_one_line(tmp_path):
    proc, _, out = start(tmp_path)
    maps = Path(f"/proc/{proc.pid}/maps")
    if maps.exists():  # importing torch: the command is running
        wait_for(lambda: "libtorch" in maps.read_text(), proc)
    else:
        time.sleep(2)
    proc.send_signal(signal.SIGINT)
    assert_stopped(proc, 130, "interrupted")
    assert not out.parent.exists()


def test_sigkill_during_the_write_leaves_a_temp_that_the_next_run_removes(tmp_path):
    proc, command, out = start(tmp_path)
    wait_for(lambda: temps(out.parent), proc)
    proc.kill()
    proc.wait(timeout=60)
    left = temps(out.parent)
    assert len(left) == 1 and not out.exists()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert [p.name for p in out.parent.iterdir()] == [out.name]
