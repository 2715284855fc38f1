"""Counter-based Gaussian noise that every backend reproduces bit for bit.

Drawing N(0, 1) values for every coordinate of every output frame from a numpy Generator inside
`sample()` would cost more than the augmentation itself, so `sample()` draws only one 64-bit seed per
sample and view. The noise value of output element e (the flat index into one sample's output
(T_out, M, 25, 3)) is then

    h = splitmix64(seed + (e // 4) * GOLDEN)      (a 64-bit hash; one hash serves 4 elements)
    q = (h >> (16 * (e % 4))) & 0xFFFF             (16 bits of it)
    n = TABLE[q]                                   (TABLE[i] = Phi^-1((i + 0.5) / 65536))

i.e. an inverse-CDF lookup at 65,536 equally likely quantiles: a discretized standard normal (tails cut at
about 4.3 sigma, standard deviation 0.99996). The same integer arithmetic runs in numpy (here), in the numba
kernel, and feeds the DALI pipeline, so the noise is identical in every backend.
"""

from __future__ import annotations

import functools
from statistics import NormalDist

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
TABLE_BITS = 16


@functools.cache
def normal_table() -> np.ndarray:
    """float32 (65536,): the standard normal quantiles at (i + 0.5) / 65536."""
    n = 1 << TABLE_BITS
    inv = NormalDist().inv_cdf
    table = np.array([inv((i + 0.5) / n) for i in range(n)], dtype=np.float64)
    out = table.astype(np.float32)
    out.setflags(write=False)
    return out


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on uint64 arrays (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def gaussian(seed, count: int) -> np.ndarray:
    """float32 (count,): the noise values of elements 0..count-1 for one sample's seed (uint64)."""
    e = np.arange(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = splitmix64(np.uint64(seed) + (e >> np.uint64(2)) * GOLDEN)
    q = (h >> ((e & np.uint64(3)) * np.uint64(16))) & np.uint64(0xFFFF)
    return normal_table()[q.astype(np.int64)]
