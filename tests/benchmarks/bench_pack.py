"""Benchmark: ``sfsurgery.pack_pathways`` against the seed's per-sample ``sf_data_ready`` loop.

Not a pytest module (no ``test_`` names); run it directly:

    .venv/bin/python tests/benchmarks/bench_pack.py [--batch 8] [--frames-in 64] [--size 224] [--repeats 7]

Both sides get the same float32 batch (B, 3, T, H, W) on the CPU, subsample T to 32 fast
frames and pack 8 slow frames (alpha 4), as in the tutorial. Reported:

* wall time: median of ``--repeats`` timed calls after one warm-up, both in this process,
  interleaved (seed, pack, seed, pack, ...) so drift hits both alike, once per torch thread
  count (default 1 and all): on a loaded machine OpenMP threads that wait on a descheduled
  sibling spin, which hurts one big parallel copy more than eight small ones, so the
  single-thread row is the stable comparison and the load average is printed with it;
* identical output: ``torch.equal`` on both pathways;
* peak memory: each side runs once in a fresh subprocess that first builds the input and
  warms up on a tiny batch; the number is how far the process's peak resident set rises
  above its resident set during the one call (Linux: VmHWM reset through
  /proc/self/clear_refs; ru_maxrss alone would not do, since a child inherits the parent's
  high-water mark through fork). tracemalloc cannot see torch's allocations and torch has no
  CPU peak counter, but RSS sees every page torch touches, intermediates included. It is a
  whole-process high-water mark (allocator slack counts too), so read it with the "output
  bytes" column: the minimum any packer must allocate.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from sfsurgery.video import pack_pathways

ALPHA, FRAMES = 4, 32


# The seed, as the tutorial writes it (pytorchvideo's transforms do not import with current
# torchvision, so UniformTemporalSubsample and PackPathway are copied from pytorchvideo 0.1.5).
def uniform_temporal_subsample(x: torch.Tensor, num_samples: int, temporal_dim: int = -3) -> torch.Tensor:
    t = x.shape[temporal_dim]
    indices = torch.clamp(torch.linspace(0, t - 1, num_samples), 0, t - 1).long()
    return torch.index_select(x, temporal_dim, indices)


def pack_pathway(frames: torch.Tensor) -> list[torch.Tensor]:
    slow = torch.index_select(frames, 1, torch.linspace(0, frames.shape[1] - 1, frames.shape[1] // ALPHA).long())
    return [slow, frames]


def sf_data_ready(vdat: torch.Tensor) -> list[torch.Tensor]:
    s2 = [[], []]
    for i in range(vdat.shape[0]):
        f = pack_pathway(uniform_temporal_subsample(vdat[i], FRAMES))
        f = [_[None, ...] for _ in f]  # the seed's .to(device) is a no-op on the CPU
        s2[0].append(f[0])
        s2[1].append(f[1])
    for i in range(2):
        s2[i] = torch.cat(s2[i][0:])
    return s2


def ours(vdat: torch.Tensor) -> list[torch.Tensor]:
    return pack_pathways(vdat, alpha=ALPHA, frames=FRAMES)


SIDES = {"seed": sf_data_ready, "pack_pathways": ours}


def make_input(args) -> torch.Tensor:
    return torch.rand(args.batch, 3, args.frames_in, args.size, args.size, generator=torch.Generator().manual_seed(0))


def proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise KeyError(key)


def peak_child(args) -> None:
    """Subprocess: input built, tiny warm-up, then the peak-RSS growth of one full call.

    Linux: the peak (VmHWM) is reset to the current RSS by writing 5 to /proc/self/clear_refs,
    so the number is VmHWM after the call minus VmRSS before it. Without that (not Linux) it
    falls back to ru_maxrss, which also remembers the input's creation and the fork from the
    parent, so it can only under-report the call's own peak.
    """
    fn = SIDES[args.peak]
    fn(torch.rand(2, 3, 8, 8, 8))
    vdat = make_input(args)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before, peak_now = proc_status_bytes("VmRSS"), lambda: proc_status_bytes("VmHWM")
        how = "VmHWM"
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        peak_now, how = (lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale), "ru_maxrss"
    out = fn(vdat)
    print(peak_now() - before, sum(p.nbytes for p in out), how)


def peak(args, side: str) -> tuple[int, int]:
    cmd = [sys.executable, __file__, "--peak", side, "--batch", str(args.batch), "--frames-in", str(args.frames_in),
           "--size", str(args.size)]
    grown, out, how = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return int(grown), int(out), how


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def time_sides(vdat: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    """Wall times per side, interleaved (seed, pack, seed, pack, ...) after one warm-up each."""
    for fn in SIDES.values():
        fn(vdat)
    times: dict[str, list[float]] = {name: [] for name in SIDES}
    for _ in range(repeats):
        for name, fn in SIDES.items():
            start = time.perf_counter()
            out = fn(vdat)
            times[name].append(time.perf_counter() - start)
            del out
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames-in", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="+", help="torch thread counts to time (default: 1 and all)")
    parser.add_argument("--peak", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        return peak_child(args)

    load_before = os.getloadavg()[0]
    peaks = {name: peak(args, name) for name in SIDES}  # first, while this process is small
    vdat = make_input(args)
    outputs = {name: fn(vdat) for name, fn in SIDES.items()}
    identical = all(torch.equal(a, b) for a, b in zip(outputs["seed"], outputs["pack_pathways"]))
    shapes = [tuple(p.shape) for p in outputs["pack_pathways"]]
    del outputs
    default_threads = torch.get_num_threads()
    runs = {}
    for threads in args.threads or sorted({1, default_threads}):
        torch.set_num_threads(threads)
        runs[threads] = time_sides(vdat, args.repeats)
    torch.set_num_threads(default_threads)

    print(f"machine: {platform.processor() or platform.machine()}, os.cpu_count() = {os.cpu_count()}, "
          f"{platform.system()} {platform.release()}, torch {torch.__version__}, python {platform.python_version()}; "
          f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"input: float32 {tuple(vdat.shape)} = {mib(vdat.nbytes)}; frames={FRAMES}, alpha={ALPHA} -> "
          f"slow {shapes[0]}, fast {shapes[1]}; identical output: {'yes' if identical else 'NO'}")
    print()
    print("| packer | torch threads | median wall time | min .. max | speed-up vs seed | peak memory growth "
          "| output bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for threads, times in runs.items():
        med = {name: statistics.median(t) for name, t in times.items()}
        for name in SIDES:
            grown, out, how = peaks[name]
            spread = f"{min(times[name]) * 1e3:,.1f} .. {max(times[name]) * 1e3:,.1f} ms"
            print(f"| {name} | {threads} | {med[name] * 1e3:,.1f} ms | {spread} | {med['seed'] / med[name]:.2f}x "
                  f"| {mib(grown)} | {mib(out)} |")
    print()
    print(f"wall time: median of {args.repeats} calls after a warm-up, the two sides interleaved. Peak memory: "
          f"rise of the process's peak RSS ({how}) during one call, each side in a fresh subprocess "
          f"(seed / pack_pathways = {peaks['seed'][0] / max(peaks['pack_pathways'][0], 1):.2f}x); "
          "output bytes: the slow + fast tensors returned.")


if __name__ == "__main__":
    main()
