"""Benchmark: a whole-process ``sfsurgery apply`` against the I/O floor and the seed's way.

Not a pytest module; run it directly (about two minutes on 2 cores):

    .venv/bin/python tests/benchmarks/bench_apply.py [--repeats 3]

Measured side by side in one run, each side in a fresh process, interleaved, median of
``--repeats``; peak RSS is the child's own ``ru_maxrss`` (``os.wait4``):

1. ``sfsurgery apply`` (slowfast_r101 + a model-zoo-layout checkpoint + replace_head) vs
   (a) the I/O floor: import torch and pytorchvideo, ``torch.load`` the checkpoint, write it
   with ``safetensors.torch.save_file``; and (b) the seed's way: ``create_slowfast`` (random
   init), ``torch.load``, ``load_state_dict``, swap ``proj``, ``torch.save``.
2. ``sfsurgery.validate`` for a 2x3x64x256x256 clip on R101 vs one CPU forward of that model.
3. ``sfsurgery --help`` vs ``python -c pass`` and ``python -c "import torch"``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PY = sys.executable
CLI = str(Path(PY).with_name("sfsurgery"))

FLOOR = """
import sys, torch, pytorchvideo.models  # the same imports any tool needs
from safetensors.torch import save_file
state = torch.load(sys.argv[1], map_location="cpu", weights_only=False)["model_state"]
save_file({k: v.contiguous() for k, v in state.items()}, sys.argv[2])
"""

SEED = """
import sys, torch
from torch import nn
from pytorchvideo.models import create_slowfast
model = create_slowfast(model_depth=101, slowfast_fusion_conv_kernel_size=(5, 1, 1))
model.load_state_dict(torch.load(sys.argv[1], weights_only=False)["model_state"])
model.blocks[6].proj = nn.Linear(in_features=2304, out_features=101)
torch.save(model.state_dict(), sys.argv[2])
"""

RECIPE = """
name: bench
base: {hub: slowfast_r101, checkpoint: SLOWFAST_8x8_R101.pyth}
ops: [{op: replace_head, num_classes: 101}]
"""

FORWARD = """
import time, torch, warnings
warnings.simplefilter("ignore")
import sfsurgery
# the stock head pools only fit 8/32 frames at 224 px: both sides use swap_pool
recipe = {"base": {"hub": "slowfast_r101"}, "input": {"batch": 2, "frames": 64, "size": [256, 256]},
          "ops": [{"op": "swap_pool"}]}
registry = sfsurgery.Registry()
recipe = sfsurgery.load_recipe(recipe, registry=registry)
model = sfsurgery.apply(recipe, registry=registry).model
fast = torch.randn(2, 3, 64, 256, 256)
with torch.no_grad():
    start = time.perf_counter()
    model([fast[:, :, ::4].clone(), fast])
    forward = time.perf_counter() - start
times = []
for _ in range(3):
    start = time.perf_counter()
    sfsurgery.validate(recipe, registry=registry)
    times.append(time.perf_counter() - start)
print(forward, sorted(times)[1])
"""


def measure(argv: list[str], cwd: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{argv} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def make_checkpoint(folder: Path) -> Path:
    script = textwrap.dedent("""
        import sys, numpy as np, torch
        from pytorchvideo.models.hub import slowfast_r101
        torch.manual_seed(0)
        model = slowfast_r101()
        torch.save({"model_state": model.state_dict(), "epoch": np.int64(196)}, sys.argv[1])
    """)
    path = folder / "SLOWFAST_8x8_R101.pyth"
    subprocess.run([PY, "-c", script, str(path)], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = make_checkpoint(folder)
        (folder / "bench.yaml").write_text(RECIPE)
        (folder / "floor.py").write_text(FLOOR)
        (folder / "seed.py").write_text(SEED)
        sides = {
            "sfsurgery apply": [CLI, "apply", "bench.yaml", "-o", "out.safetensors", "--force"],
            "I/O floor": [PY, "floor.py", str(ckpt), "floor.safetensors"],
            "seed's way": [PY, "seed.py", str(ckpt), "seed.pyth"],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for argv in sides.values():  # warm the page cache once
            measure(argv, tmp)
        for _ in range(args.repeats):
            for name, argv in sides.items():
                results[name].append(measure(argv, tmp))
        size = ckpt.stat().st_size / 2**20
        forward, validate = map(float, subprocess.run([PY, "-c", FORWARD], capture_output=True, text=True,
                                                      check=True).stdout.split())
        startup = {}
        for name, argv in {"sfsurgery --help": [CLI, "--help"], "python -c pass": [PY, "-c", "pass"],
                           "python -c 'import torch'": [PY, "-c", "import torch"]}.items():
            startup[name] = statistics.median(measure(argv, tmp)[0] for _ in range(5))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, python "
          f"{platform.python_version()}; checkpoint {size:.0f} MiB (slowfast_r101, model-zoo layout)\n")
    floor_wall = statistics.median(w for w, _ in results["I/O floor"])
    floor_rss = statistics.median(r for _, r in results["I/O floor"])
    print("| whole process | wall (median) | vs I/O floor | peak RSS | vs I/O floor |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        rss = statistics.median(r for _, r in runs)
        print(f"| {name} | {wall:.2f} s | {wall / floor_wall:.2f}x | {rss:.0f} MiB | {rss / floor_rss:.2f}x |")
    print("\n| shape check, R101, 2x3x64x256x256 | seconds | vs one CPU forward |\n|---|---:|---:|")
    print(f"| one CPU forward | {forward:.2f} | 1.00x |")
    print(f"| sfsurgery.validate (meta) | {validate:.3f} | {validate / forward:.1%} |")
    print("\n| start-up | wall (median of 5) |\n|---|---:|")
    for name, wall in startup.items():
        print(f"| {name} | {wall * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
