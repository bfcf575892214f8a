"""The builder's rate on mixed batches against one configuration and a C loop, in one run.

Prints, for one process on one core (each time the median of ``--repeat`` runs, with the
spread):
1. the frame of the issue "sweep.build on mixed frames at the speed of its core": shuffled
   rows of 24 configurations (one 2-bank map; granule 4K/39, 16K/47 or 64K/42; four layouts;
   blocks on or off; the idmap page random in the map at 64K steps; ``tag_random`` 0) through
   ``sweep.build``; the same rows given one configuration; a C loop of the model
   (``bench/model_loop.c``, compiled here with the system ``cc``) computing every output
   column for the same rows, checked equal to ``sweep.build``'s on every row; and the numpy
   core (``compute_columns`` on rows already checked) on the mixed rows;
2. ``build_table`` on many maps with a few rows each (the shape of a board corpus at its
   kernel-load addresses) against ``build_table`` on one map of as many rows;
3. the peak RSS of the process.

    nice python bench/bench_build.py [--rows 1000000] [--maps 2000] [--per-map 13]
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import sweep
from sweep.core.columns import INPUT_COLUMNS, ROW_COLUMNS
from sweep.core.kconfig import GRANULES
from sweep.core.memmap import MemoryMap
from sweep.model.banks import TrimmedBanks
from sweep.model.builder import build_table, compute_columns
from sweep.model.pkvm_reserve import FORMULAS
from sweep.model.rows import Rows
from sweep.plan.plugins import get_layouts

G = 1 << 30
ISSUE_MAP = MemoryMap("juno-2", [(0x8000_0000, 2 * G - (16 << 20)), (0x8_8000_0000, 6 * G)])
CONFIGS = ((4096, 39), (16384, 47), (65536, 42))
"""The issue's granules, each with its VA_BITS."""
LAYOUTS = ("linux-4.8", "linux-5.12", "linux-6.9", "linux-7.0")
"""Four eras: the merged formula, the tagged one with 6.1's pKVM, the 48-bit tree floor with
6.12's, the tag at ``kvm_hyp_va_bits`` with 7.3's (the C loop has no two-tree ``linux-4.6``)."""
STEP = 1 << 16
C_SOURCE = Path(__file__).with_name("model_loop.c")


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


def issue_frame(n: int, rng) -> pd.DataFrame:
    """The issue's frame: 24 configurations (3 granules x 4 layouts x blocks) of one map,
    shuffled; idmap pages at 64K steps, so every row's page is in the map at any granule."""
    config = rng.integers(0, len(CONFIGS), n)
    return pd.DataFrame(
        {
            "memory_map": pd.Categorical.from_codes(np.zeros(n, np.int8), [ISSUE_MAP.name]),
            "granule": np.array([g for g, _ in CONFIGS], np.int32)[config],
            "va_bits": np.array([v for _, v in CONFIGS], np.int8)[config],
            "layout": pd.Categorical.from_codes(
                rng.integers(0, len(LAYOUTS), n).astype(np.int8), LAYOUTS
            ),
            "block_mappings": rng.integers(0, 2, n).astype(bool),
            "idmap_pa": random_addresses(ISSUE_MAP, STEP, n, rng),
            "tag_random": np.zeros(n, np.uint64),
        }
    )


def one_configuration(frame: pd.DataFrame) -> pd.DataFrame:
    """The same rows, every one given the first row's map, granule, VA_BITS, layout, blocks."""
    one = frame.copy()
    for column in ("memory_map", "granule", "va_bits", "layout", "block_mappings"):
        one[column] = frame[column].iloc[:1].repeat(len(frame)).to_numpy()
    one["memory_map"] = one["memory_map"].astype("category")
    one["layout"] = one["layout"].astype("category")
    return one


# --- The C loop -------------------------------------------------------------------------------

OUTPUTS = [name for name in ROW_COLUMNS if name not in INPUT_COLUMNS]


class _Era(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_int64 * 3 if name == "align_shift" else ctypes.c_int64)
        for name in (
            "formula", "tag_at_hyp_va_bits", "tree_floor", "max_extra_levels", "idmap_max_bits",
            "va52_granules", "lva_el2_fails", "align_shift", "pkvm_levels", "hyp_page",
            "per_region_vmemmap",
        )
    ]  # fmt: skip


_P64, _P8 = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int8)
_C_OUT = [  # struct out's fields, in order: (field, column)
    *[(x, x) for x in ("phys_offset", "clipped_bytes", "hyp_va_min", "hyp_va_max", "margin",
                       "hyp_dram_last")],
    *[(x, x) for x in ("tables_lm1", "tables_l0", "tables_l1", "tables_l2", "tables_l3")],
    *[(x, x) for x in ("table_pages", "table_bytes", "shared_tables")],
    ("reserve_bytes", "pkvm_reserve_bytes"), ("reserve_base", "pkvm_reserve_base"),
    *[(x, x) for x in ("idmap_va_bits", "idmap_extended", "levels_runtime", "levels_idmap",
                       "levels", "extra_levels", "overlap", "idmap_in_window", "runnable",
                       "unrunnable")],
]  # fmt: skip


class _Out(ctypes.Structure):
    _fields_ = [(f, _P64 if ROW_COLUMNS[c] in ("int64", "uint64") else _P8) for f, c in _C_OUT]


def _era(layout) -> _Era:
    era = layout.era
    assert not era.two_trees, "the C loop computes one merged tree"
    formula = FORMULAS.get(era.pkvm)
    return _Era(
        ("high", "merged", "tagged").index(era.formula), era.tag_at_hyp_va_bits, era.tree_floor,
        era.max_extra_levels, era.idmap_max_bits,
        sum(1 << c for c, g in enumerate(GRANULES) if g in era.va52_granules), era.lva_el2_fails,
        (ctypes.c_int64 * 3)(*(layout.memstart_align(g).bit_length() - 1 for g in GRANULES)),
        formula.levels if formula else 0, formula.hyp_page if formula else 0,
        formula.per_region_vmemmap if formula else 0,
    )  # fmt: skip


def compile_c_loop(folder: str):
    """``model_loop.c`` built with the system ``cc -O2``; its ``model_rows`` through ctypes."""
    library = Path(folder) / "model_loop.so"
    command = ["cc", "-O2", "-shared", "-fPIC", "-o", str(library), str(C_SOURCE)]
    subprocess.run(command, check=True)
    fn = ctypes.CDLL(str(library)).model_rows
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_int64, *[ctypes.c_void_p] * 12]
    return fn


def c_build(fn, frame: pd.DataFrame, banks: TrimmedBanks, eras) -> dict[str, np.ndarray]:
    """Every output column of the frame's rows from the C loop (the frame's own dtypes in)."""
    n = len(frame)
    out = {c: np.empty(n, np.int64 if t == _P64 else np.int8) for (_, c), (_, t) in
           zip(_C_OUT, _Out._fields_, strict=True)}  # fmt: skip
    columns = [
        np.ascontiguousarray(x)
        for x in (
            frame["memory_map"].cat.codes.to_numpy(),
            frame["granule"].to_numpy(np.int32),
            frame["va_bits"].to_numpy(np.int8),
            frame["layout"].cat.codes.to_numpy(),
            frame["block_mappings"].to_numpy(),
            frame["idmap_pa"].to_numpy(np.uint64),
            frame["tag_random"].to_numpy(np.uint64),
        )
    ]
    pointers = _Out(*(out[c].ctypes.data_as(t) for (_, c), (_, t) in
                      zip(_C_OUT, _Out._fields_, strict=True)))  # fmt: skip
    bad = fn(
        ctypes.c_int64(n), *(a.ctypes.data for a in (banks.start, banks.end, banks.offsets)),
        *(a.ctypes.data for a in columns), ctypes.addressof(eras), ctypes.addressof(pointers),
    )  # fmt: skip
    if bad >= 0:
        raise ValueError(f"row {bad}: the idmap page is outside the map's banks")
    return out


def agreement(c: dict[str, np.ndarray], built: pd.DataFrame) -> tuple[int, list[str]]:
    """Rows whose every output column the C loop and ``sweep.build`` agree on, and the columns
    where any row differs."""
    same = np.ones(len(built), dtype=bool)
    differ = []
    for name in OUTPUTS:
        column = built[name]
        theirs = column.cat.codes if name == "unrunnable" else column
        ok = theirs.to_numpy().astype(np.int64) == c[name].astype(np.int64)
        same &= ok
        if not ok.all():
            differ.append(name)
    return int(same.sum()), differ


def round_robin(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Each function's times, taken in turn round after round, so that a load that comes and
    goes on a shared machine falls on all of them alike."""
    times = {label: [] for label in fns}
    for _ in range(repeat):
        for label, fn in fns.items():
            times[label] += timed(fn, 1)
    return times


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def line(label: str, rows: int, times: list[float], base: float | None = None) -> float:
    """One measurement: the median's rate, the spread of the runs, the ratio to ``base``."""
    seconds = statistics.median(times)
    rate = rows / seconds
    spread = (max(times) - min(times)) / seconds
    ratio = f"{rate / base:6.2f}x" if base else ""
    print(
        f"  {label:<44} {rows:>10,} rows {seconds:7.3f} s (spread {spread:4.0%})"
        f" {rate / 1e6:7.2f} M rows/s {ratio}"
    )
    return rate


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10**6)
    parser.add_argument("--maps", type=int, default=2000)
    parser.add_argument("--per-map", type=int, default=13, help="rows per map (placements)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    layouts = get_layouts()
    print(f"one process, one core; rows={args.rows:,} maps={args.maps} per-map={args.per_map}")
    section_1(args.rows, args.repeat, rng, layouts)
    section_2(args.maps, args.per_map, args.repeat, rng, layouts)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"3. peak RSS of this process: {peak:,.0f} MiB")


def section_1(n: int, repeat: int, rng, layouts) -> None:
    maps = {ISSUE_MAP.name: ISSUE_MAP}
    mixed = issue_frame(n, rng)
    one = one_configuration(mixed)
    first = one.iloc[0]
    print(
        "1. the issue's frame: 24 configurations shuffled; one configuration "
        f"({first['granule'] >> 10}K/{first['va_bits']} {first['layout']} blocks "
        f"{'on' if first['block_mappings'] else 'off'}); the C loop"
    )
    banks = TrimmedBanks.of([ISSUE_MAP])
    chosen = [layouts[name] for name in LAYOUTS]
    eras = (_Era * len(chosen))(*map(_era, chosen))
    rows = Rows.of(
        [ISSUE_MAP], 0, mixed["granule"].to_numpy(), mixed["va_bits"].to_numpy(), chosen,
        mixed["layout"].cat.codes.to_numpy(), mixed["block_mappings"].to_numpy(),
        mixed["idmap_pa"].to_numpy(), mixed["tag_random"].to_numpy(),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        fn = compile_c_loop(folder)
        built = sweep.build(mixed, maps)
        same, differ = agreement(c_build(fn, mixed, banks, eras), built)
        print(
            f"  C loop = sweep.build on {same:,} of {n:,} rows, all {len(OUTPUTS)} output "
            f"columns{'; differ: ' + ', '.join(differ) if differ else ''}"
        )
        del built
        times = round_robin(
            {
                "C loop (bench/model_loop.c, cc -O2)": lambda: c_build(fn, mixed, banks, eras),
                "sweep.build, one configuration": lambda: sweep.build(one, maps),
                "sweep.build, 24 configurations mixed": lambda: sweep.build(mixed, maps),
                "numpy core (compute_columns), mixed": lambda: compute_columns(banks, chosen, rows),
            },
            repeat,
        )
    c_rate = None
    for label, runs in times.items():
        rate = line(label, n, runs, c_rate)
        c_rate = c_rate or rate
    print(
        "  (the last column: rows/s against the C loop's; the four taken in turn, round by round)"
    )


def section_2(count: int, per_map: int, repeat: int, rng, layouts) -> None:
    n = count * per_map
    print(f"2. build_table: {count:,} maps x {per_map} rows vs one map of {n:,} rows")
    maps = many_maps(count, rng)
    map_index = np.repeat(np.arange(count), per_map)
    idmap = np.concatenate([random_addresses(m, 4096, per_map, rng) for m in maps])
    tagged = [layouts["linux-4.17"]]

    def corpus():
        return build_table(maps, map_index, 4096, 48, tagged, 0, True, idmap)

    def one_map(k: int):
        single = random_addresses(maps[k], 4096, n, rng)
        return lambda: build_table(maps[k : k + 1], 0, 4096, 48, tagged, 0, True, single)

    banks = [len(m.trimmed(4096)) for m in maps]
    fewest, most = int(np.argmin(banks)), int(np.argmax(banks))
    base = line(f"build_table, one map of {banks[fewest]} bank", n, timed(one_map(fewest), repeat))
    line(f"build_table, one map of {banks[most]} banks", n, timed(one_map(most), repeat), base)
    line(f"build_table, {count:,} maps of 1-{banks[most]} banks", n, timed(corpus, repeat), base)
    start = time.perf_counter()
    TrimmedBanks.of(maps)
    print(f"  (of which trimming {count:,} maps: {time.perf_counter() - start:.4f} s)")


if __name__ == "__main__":
    main()
