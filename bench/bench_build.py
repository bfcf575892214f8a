"""The builder's rate on mixed batches against one group of as many rows, measured in one run.

Prints, for one process on one core:
1. ``sweep.build`` on a mixed batch (24 groups: maps x granules x layouts x blocks, rows in
   random order) against ``sweep.build`` on one group of as many rows, and the numpy core
   (``compute_columns`` on rows already checked) on the mixed rows alone;
2. ``build_table`` on many maps with a few rows each (the shape of a board corpus at its
   kernel-load addresses) against ``build_table`` on one map of as many rows;
3. the peak RSS of the process.

    nice python bench/bench_build.py [--rows 1000000] [--maps 2000] [--per-map 13]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

import sweep
from sweep.core.memmap import MemoryMap
from sweep.model.banks import TrimmedBanks
from sweep.model.builder import build_table, compute_columns
from sweep.model.rows import Rows
from sweep.plan.plugins import get_layouts

G = 1 << 30
MAPS = [
    MemoryMap("juno-2", [(0x8000_0000, 2 * G - (16 << 20)), (0x8_8000_0000, 6 * G)]),
    MemoryMap(
        "eight",
        [(0x8000_0000 + i * 0x10_0000_0000 + i * (3 << 20), G + i * (5 << 20)) for i in range(8)],
    ),
]
BY_NAME = {m.name: m for m in MAPS}
GRANULES = (4096, 16384, 65536)


def random_addresses(memory_map: MemoryMap, granule, n: int, rng) -> np.ndarray:
    """``n`` addresses uniform over each row's trimmed banks (the "random" placement)."""
    granule = np.broadcast_to(granule, (n,))
    out = np.empty(n, dtype=np.uint64)
    for g in np.unique(granule):
        rows = np.flatnonzero(granule == g)
        banks = np.array(memory_map.trimmed(int(g)), dtype=np.int64)
        sizes = banks[:, 1] - banks[:, 0]
        offsets = rng.integers(0, sizes.sum(), len(rows))
        which = np.searchsorted(np.cumsum(sizes), offsets, side="right")
        before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        out[rows] = banks[which, 0] + offsets - before[which]
    return out


def mixed_frame(n: int, rng) -> pd.DataFrame:
    """24 groups (2 maps x 3 granules x 4 layouts; blocks and VA_BITS vary), random order."""
    layouts = sorted(get_layouts())
    groups = [(m, g, lay) for m in range(2) for g in GRANULES for lay in layouts]
    group = rng.integers(0, len(groups), n)
    map_index = np.array([m for m, _, _ in groups])[group]
    granule = np.array([g for _, g, _ in groups])[group]
    layout = np.array([lay for _, _, lay in groups], dtype=object)[group]
    idmap = np.empty(n, dtype=np.uint64)
    for m, memory_map in enumerate(MAPS):
        rows = np.flatnonzero(map_index == m)
        idmap[rows] = random_addresses(memory_map, granule[rows], len(rows), rng)
    return pd.DataFrame(
        {
            "memory_map": pd.Categorical.from_codes(map_index, [m.name for m in MAPS]),
            "granule": granule.astype(np.int32),
            "va_bits": np.where(group % 2, 48, 39).astype(np.int8),
            "layout": pd.Categorical(layout),
            "block_mappings": group % 3 == 0,
            "idmap_pa": idmap,
            "tag_random": rng.integers(0, 2**63, n).astype(np.uint64),
        }
    )


def one_group_frame(n: int, rng) -> pd.DataFrame:
    frame = mixed_frame(n, rng)
    for column in ("memory_map", "granule", "va_bits", "layout", "block_mappings"):
        frame[column] = frame[column].iloc[:1].repeat(n).to_numpy()
    memory_map = MAPS[0] if frame["memory_map"].iloc[0] == MAPS[0].name else MAPS[1]
    frame["idmap_pa"] = random_addresses(memory_map, int(frame["granule"].iloc[0]), n, rng)
    frame["memory_map"] = frame["memory_map"].astype("category")
    frame["layout"] = frame["layout"].astype("category")
    return frame


def many_maps(count: int, rng) -> list[MemoryMap]:
    """Board-like maps: 1 to 4 banks of 256 MiB to 16 GiB from 2 GiB up, some touching."""
    maps = []
    for i in range(count):
        base, banks = int(rng.integers(1, 64)) << 31, []
        for _ in range(int(rng.integers(1, 5))):
            size = int(rng.integers(1, 64)) << 28
            banks.append((base, size))
            base += size + (0 if rng.random() < 0.2 else int(rng.integers(1, 64)) << 30)
        maps.append(MemoryMap(f"board-{i}", banks))
    return maps


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def line(label: str, rows: int, seconds: float, base: float | None = None) -> float:
    rate = rows / seconds
    ratio = f"{rate / base:6.2f}x" if base else ""
    print(f"  {label:<44} {rows:>10,} rows {seconds:8.3f} s {rate / 1e6:7.2f} M rows/s {ratio}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10**6)
    parser.add_argument("--maps", type=int, default=2000)
    parser.add_argument("--per-map", type=int, default=13, help="rows per map (placements)")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    layouts = get_layouts()
    print(f"one process, one core; rows={args.rows:,} maps={args.maps} per-map={args.per_map}")

    print("1. sweep.build: one group vs 24 groups in random order; the numpy core alone")
    one = one_group_frame(args.rows, rng)
    mixed = mixed_frame(args.rows, rng)
    base = line("sweep.build, one group", args.rows, best_of(lambda: sweep.build(one, BY_NAME)))
    line(
        "sweep.build, 24 groups mixed",
        args.rows,
        best_of(lambda: sweep.build(mixed, BY_NAME)),
        base,
    )
    chosen = [layouts[name] for name in mixed["layout"].cat.categories]
    rows = Rows.of(
        MAPS,
        mixed["memory_map"].cat.codes.to_numpy(),
        mixed["granule"].to_numpy(),
        mixed["va_bits"].to_numpy(),
        chosen,
        mixed["layout"].cat.codes.to_numpy(),
        mixed["block_mappings"].to_numpy(),
        mixed["idmap_pa"].to_numpy(),
        mixed["tag_random"].to_numpy(),
    )
    banks = TrimmedBanks.of(MAPS)
    seconds = best_of(lambda: compute_columns(banks, chosen, rows))
    line("numpy core (compute_columns), 24 groups", args.rows, seconds, base)

    n = args.maps * args.per_map
    print(f"2. build_table: {args.maps:,} maps x {args.per_map} rows vs one map of {n:,} rows")
    maps = many_maps(args.maps, rng)
    map_index = np.repeat(np.arange(args.maps), args.per_map)
    idmap = np.concatenate([random_addresses(m, 4096, args.per_map, rng) for m in maps])
    tagged = [layouts["linux-4.17"]]

    def corpus():
        return build_table(maps, map_index, 4096, 48, tagged, 0, True, idmap)

    def one_map(k: int):
        single = random_addresses(maps[k], 4096, n, rng)
        return lambda: build_table(maps[k : k + 1], 0, 4096, 48, tagged, 0, True, single)

    banks = [len(m.trimmed(4096)) for m in maps]
    fewest, most = int(np.argmin(banks)), int(np.argmax(banks))
    base = line(f"build_table, one map of {banks[fewest]} bank", n, best_of(one_map(fewest)))
    line(f"build_table, one map of {banks[most]} banks", n, best_of(one_map(most)), base)
    line(f"build_table, {args.maps:,} maps of 1-{banks[most]} banks", n, best_of(corpus), base)
    start = time.perf_counter()
    TrimmedBanks.of(maps)
    print(f"  (of which trimming {args.maps:,} maps: {time.perf_counter() - start:.4f} s)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"3. peak RSS of this process: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
