"""Configurations per second of the vectorized builder against the scalar reference.

Prints one table: for memory maps of 1, 2 and 8 banks and batches of 10^4, 10^5, 10^6 rows
(one work unit: the rows share map, granule, VA_BITS, layout and blocks, and differ in the
idmap address and the random tag), the builder's rate on one core, the reference's rate on a
sample measured in the same run, their ratio, and the builder's peak memory per row.

    python bench/bench_build.py [--quick] [--layout tagged-48] [--no-tags]
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from sweep.builder import build_unit
from sweep.model import MemoryMap
from sweep.reference import compute_row

G = 1 << 30
MAPS = {
    1: MemoryMap("juno-1", [(0x8000_0000, 2 * G)]),
    2: MemoryMap("juno-2", [(0x8000_0000, 2 * G - (16 << 20)), (0x8_8000_0000, 6 * G)]),
    8: MemoryMap(
        "eight",
        [(0x8000_0000 + i * 0x10_0000_0000 + i * (3 << 20), G + i * (5 << 20)) for i in range(8)],
    ),
}


def idmap_addresses(memory_map: MemoryMap, granule: int, n: int, rng) -> np.ndarray:
    """n addresses uniform over the trimmed banks (the "random" placement)."""
    banks = np.array(memory_map.trimmed(granule), dtype=np.int64)
    sizes = banks[:, 1] - banks[:, 0]
    offsets = rng.integers(0, sizes.sum(), n)
    which = np.searchsorted(np.cumsum(sizes), offsets, side="right")
    before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return (banks[which, 0] + offsets - before[which]).astype(np.uint64)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^4 and 10^5 rows only")
    parser.add_argument("--layout", default="tagged-48")
    parser.add_argument("--granule", type=int, default=4096)
    parser.add_argument("--va-bits", type=int, default=39)
    parser.add_argument("--blocks", action="store_true")
    parser.add_argument("--no-tags", action="store_true", help="tag_random = 0 for every row")
    parser.add_argument("--sample", type=int, default=2000, help="rows for the reference")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6]
    print(
        f"layout={args.layout} granule={args.granule} va_bits={args.va_bits} "
        f"blocks={args.blocks} tags={'0' if args.no_tags else 'random'} "
        f"pid={os.getpid()} (one process, one core)"
    )
    print(
        f"{'banks':>5} {'rows':>9} {'build cfg/s':>13} {'reference cfg/s':>16} "
        f"{'ratio':>8} {'peak B/row':>11}"
    )
    for nbanks, memory_map in MAPS.items():
        for n in sizes:
            idmap = idmap_addresses(memory_map, args.granule, n, rng)
            tags = None if args.no_tags else rng.integers(0, 2**63, n).astype(np.uint64)

            def run(idmap=idmap, tags=tags, memory_map=memory_map):
                return build_unit(
                    memory_map, args.granule, args.va_bits, args.layout, args.blocks, idmap, tags
                )

            run()  # warm: plugin loading, first-call allocations
            seconds = best_of(run, 3 if n < 10**6 else 2)
            tracemalloc.start()
            run()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

            sample = min(args.sample, n)
            start = time.perf_counter()
            for i in range(sample):
                compute_row(
                    memory_map,
                    args.granule,
                    args.va_bits,
                    args.layout,
                    args.blocks,
                    int(idmap[i]),
                    0 if tags is None else int(tags[i]),
                )
            ref_rate = sample / (time.perf_counter() - start)
            rate = n / seconds
            print(
                f"{nbanks:>5} {n:>9,} {rate:>13,.0f} {ref_rate:>16,.0f} "
                f"{rate / ref_rate:>7,.0f}x {peak / n:>11,.0f}"
            )


if __name__ == "__main__":
    main()
