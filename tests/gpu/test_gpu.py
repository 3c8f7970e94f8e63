"""GPU hand-off check: run where CUDA exists (`pytest tests/gpu -s`); skipped elsewhere.

Loads an R50 file onto the GPU in float32 and bfloat16, runs batch 8, compares with the CPU
float32 result, and times ``sfsurgery.load(device="cuda")`` against the floor: building the
architecture on meta plus ``safetensors.torch.load_file(device="cuda")``.
"""

from __future__ import annotations

import time

import pytest
import torch

import sfsurgery

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _median(fn, repeats=5):
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def test_cuda_load_matches_cpu_and_costs_little_over_the_floor(tmp_path):
    from safetensors.torch import load_file

    recipe = {"name": "gpu", "base": {"hub": "slowfast_r50"}, "ops": [{"op": "replace_head", "num_classes": 101}]}
    result = sfsurgery.apply(recipe)
    path = result.save(tmp_path / "gpu.safetensors")
    g = torch.Generator().manual_seed(0)
    fast = torch.randn(8, 3, 32, 224, 224, generator=g)
    x = [fast[:, :, ::4].clone(), fast]
    with torch.no_grad():
        reference = result.model(x)
        for dtype, tolerance in ((torch.float32, 1e-3), (torch.bfloat16, 5e-2)):
            model = sfsurgery.load(path, device="cuda", dtype=dtype)
            assert next(model.parameters()).device.type == "cuda"
            got = model([t.cuda().to(dtype) for t in x]).float().cpu()
            error = ((got - reference).abs().max() / reference.abs().max()).item()
            print(f"{dtype}: max error relative to max |logit| = {error:.2e} (tolerance {tolerance})")
            assert error <= tolerance
    ours = _median(lambda: sfsurgery.load(path, device="cuda"))

    from sfsurgery.plan import plan_on_meta

    parsed = sfsurgery.load_recipe(recipe)

    def floor():  # the same architecture built on meta, then safetensors' own CUDA load
        model = plan_on_meta(parsed, check=False).model
        model.load_state_dict(load_file(str(path), device="cuda"), strict=True, assign=True)

    base = _median(floor)
    print(f"{torch.cuda.get_device_name()}: sfsurgery.load {ours:.3f}s, meta build + load_file {base:.3f}s, "
          f"ratio {ours / base:.2f}")
