"""CPU forward of SlowFast R50 at 8/32 x 224: unfused vs fuse_bn vs onnxruntime, same threads.

Run: ``python tests/benchmarks/bench_forward.py`` (about two minutes on 2 cores). Each variant runs
interleaved with the others, ``--repeats`` times after one warm-up; medians are reported with their
ratio to the unfused eager model. Needs the export extra (onnxruntime).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import sfsurgery
import sfsurgery.testing

RECIPE = {"name": "bench", "base": {"hub": "slowfast_r50"}, "ops": [{"op": "replace_head", "num_classes": 400}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    import onnxruntime

    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp())
    plain = sfsurgery.apply(RECIPE)
    sfsurgery.testing.randomize_batchnorm(plain.model)
    path = plain.save(folder / "plain.safetensors")
    from sfsurgery.builtin.ops import fuse_bn  # the fuse_bn op's own function, on the same weights

    eager = sfsurgery.load(path)
    inputs = sfsurgery.pack_pathways(torch.rand(1, 3, 32, 224, 224), alpha=4)
    fused = fuse_bn(sfsurgery.load(path), inputs)[0]
    sfsurgery.export(path, folder / "plain.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    session = onnxruntime.InferenceSession(str(folder / "plain.onnx"), options)
    feed = {"slow": inputs[0].numpy(), "fast": inputs[1].numpy()}

    with torch.no_grad():
        want = eager(inputs)
        assert ((fused(inputs) - want).norm() / want.norm()).item() < 1e-5
    variants = {
        "eager (unfused)": lambda: eager(inputs),
        "eager, fuse_bn": lambda: fused(inputs),
        "onnxruntime": lambda: session.run(["output"], feed),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for run in variants.values():
            run()  # warm-up
        for _ in range(args.repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["eager (unfused)"])
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {args.threads} threads, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; SlowFast R50, batch 1, 8/32 x 224")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<18} median {median:6.2f} s   {median / base:4.2f}x")


if __name__ == "__main__":
    main()
