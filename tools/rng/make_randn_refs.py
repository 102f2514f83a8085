"""Reference dumps of torch.randn on the CPU generator for tests/rng.rs.

For each seed, one generator (torch.Generator("cpu").manual_seed(seed)) draws successive
torch.randn(size) tensors for every size in SIZES, in order, so the dump also checks that draws
continue one stream. Written to tests/fixtures/rng/randn_seed_<seed>.npy (all draws concatenated,
float32) plus tests/fixtures/rng/randn.json (seeds, sizes, versions).

Run with the generator environment (tools/requirements.txt):
    /path/to/venv/bin/python tools/rng/make_randn_refs.py
"""
import json
import pathlib

import numpy as np
import torch

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "rng"
SEEDS = [0, 1, 42, 1234, 2**40 + 12345]
# 1..17 cross the scalar/vectorised switch at 16; 4*8*8 and 4*128*128 are the latents of 64x64 and
# 1024x1024 images.
SIZES = [1, 7, 15, 16, 17, 100, 1024, 4 * 8 * 8, 4 * 128 * 128]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS:
        generator = torch.Generator("cpu").manual_seed(seed)
        draws = [torch.randn(size, generator=generator, dtype=torch.float32).numpy() for size in SIZES]
        np.save(OUT / f"randn_seed_{seed}.npy", np.concatenate(draws).astype(np.float32))
    meta = {
        "description": "successive torch.randn(size) draws per seed, concatenated",
        "seeds": SEEDS,
        "sizes": SIZES,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    (OUT / "randn.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
