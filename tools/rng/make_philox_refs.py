"""Reference values for the Philox 4x32-10 noise source (tests/rng.rs).

An independent implementation: AUTOMATIC1111's published `modules/rng_philox.py` algorithm
(numpy, vectorised), transcribed below. It reproduces torch's CUDA randn for a seed. For each
seed, successive draws of SIZES are concatenated into tests/fixtures/rng/philox_seed_<seed>.npy.

    python3 tools/rng/make_philox_refs.py      # needs numpy only
"""
import json
import pathlib

import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "rng"
SEEDS = [0, 1, 42, 1234, 2**40 + 12345]
SIZES = [1, 7, 16, 17, 100, 4 * 8 * 8, 4 * 128 * 128]

philox_m = [0xD2511F53, 0xCD9E8D57]
philox_w = [0x9E3779B9, 0xBB67AE85]
two_pow32_inv = np.array([2.3283064e-10], dtype=np.float32)
two_pow32_inv_2pi = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)


def uint32(x):
    """A uint64 array as its (low, high) uint32 halves."""
    return x.view(np.uint32).reshape(-1, 2).transpose(1, 0)


def philox4_round(counter, key):
    v1 = uint32(counter[0].astype(np.uint64) * philox_m[0])
    v2 = uint32(counter[2].astype(np.uint64) * philox_m[1])
    counter[0] = v2[1] ^ counter[1] ^ key[0]
    counter[1] = v2[0]
    counter[2] = v1[1] ^ counter[3] ^ key[1]
    counter[3] = v1[0]


def philox4_32(counter, key, rounds=10):
    for _ in range(rounds - 1):
        philox4_round(counter, key)
        key[0] = key[0] + philox_w[0]
        key[1] = key[1] + philox_w[1]
    philox4_round(counter, key)
    return counter


def box_muller(x, y):
    u = x * two_pow32_inv + two_pow32_inv / 2
    v = y * two_pow32_inv_2pi + two_pow32_inv_2pi / 2
    s = np.sqrt(-2.0 * np.log(u))
    return (s * np.sin(v)).astype(np.float32)


class Generator:
    def __init__(self, seed):
        self.seed = seed
        self.offset = 0

    def randn(self, n):
        counter = np.zeros((4, n), dtype=np.uint32)
        counter[0] = self.offset
        counter[2] = np.arange(n, dtype=np.uint32)
        self.offset += 1
        key = np.empty(n, dtype=np.uint64)
        key.fill(self.seed)
        key = uint32(key)
        g = philox4_32(counter, key)
        return box_muller(g[0], g[1])


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    with np.errstate(over="ignore"):
        for seed in SEEDS:
            generator = Generator(seed)
            np.save(OUT / f"philox_seed_{seed}.npy", np.concatenate([generator.randn(n) for n in SIZES]))
    meta = {"description": "A1111 rng_philox draws per seed, concatenated", "seeds": SEEDS, "sizes": SIZES,
            "numpy": np.__version__}
    (OUT / "philox.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
