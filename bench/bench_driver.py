"""How fast ``sweep run`` goes for each shape of sweep, and what memory it takes.

Prints, in one run (every figure measured here, side by side, so ratios hold on a busy machine):
- rows/s of ``sweep run`` for 700 maps at their kernel-load address (56,000 rows) and for a
  two-map stride sweep (``--configs`` rows, default 10^7), with 1 and 2 workers;
- the same stride maps with as many rows of boot mapping sets (``mappings = nvhe-boot,
  pkvm-boot``, 1 and 4 CPUs) against all of DRAM, in one run;
- 2,000 maps x 80 configurations (every granule, Kconfig VA_BITS, the stride sweep's four
  layouts, both block settings: issue 23's shape) x 13 random placements (2.1 M rows) against
  a two-map stride sweep of as many rows, ``--repeat`` pairs in turn: the per-row cost of many
  small groups; then the same with all 7 default layouts (140 configurations, 3.6 M rows);
- ``placement.kind = every-page`` over every built-in board (all granules, Kconfig VA_BITS, all
  layouts, both block settings): configurations covered per second and rows written per
  configuration; and, when named (``every-page-big``), every page of a 1.5 TiB three-bank map,
  whose largest groups hold 1.6 M runs: the memory a worker and the tree take;
- the Parquet writer settings of ``sweep.store.encoding.writer_options`` against pyarrow's
  defaults on the same unit tables (rows/s and bytes a row);
- for each run, peak memory of the whole process tree, sampled from /proc (every 50 ms the sum of
  RSS, which counts pages the forked workers share once per process, and the RSS of the largest
  process; every 0.5 s the sum of PSS, which counts shared pages once).

    python3 bench/bench_driver.py                     # ~2 minutes on 2 quiet cores
    python3 bench/bench_driver.py --configs 1e8 --workers 2 --only stride
    python3 bench/bench_driver.py --configs 1e9 --workers 2 --only stride   # memory bar
    python3 bench/bench_driver.py --workers 2 --only every-page-big          # ~20 s
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP = 64 << 10
"""Stride between idmap addresses (64 KiB)."""
LAYOUTS = ("linux-4.6", "linux-4.8", "linux-4.17", "linux-6.9")
"""The stride sweep's layouts, and the ratio's many-boards sweep's (issue 23: "2,000 maps x 80
x 13": 10 granule and VA_BITS pairs x these 4 x both block settings)."""
COMBOS = 2 * len(LAYOUTS) * 2
"""VA_BITS 39 and 48 x four layouts x two block settings, at 4K."""


def write_inputs(folder: Path, configs: int, unit_rows: int) -> Path:
    """Two two-bank maps with ``configs / COMBOS`` stride addresses between them, and the
    config that sweeps them."""
    addresses = configs // COMBOS // 2
    first = min(addresses // 2, (2 << 30) // STEP)  # a 2 GiB low bank, the rest high
    second = addresses - first
    for name, base in (("a", 0x8000_0000), ("b", 0x40_0000_0000)):
        (folder / f"bench-map-{name}.toml").write_text(
            f'name = "bench-two-banks-{name}"\n'
            f"[[banks]]\nbase = {base}\nsize = {first * STEP}\n"
            f"[[banks]]\nbase = {base + (8 << 30)}\nsize = {second * STEP}\n"
        )
    config = folder / "bench.toml"
    config.write_text(
        'name = "bench"\nmemory_maps = ["bench-map-a.toml", "bench-map-b.toml"]\n'
        'granules = ["4K"]\nva_bits = [39, 48]\n'
        f"layouts = {list(LAYOUTS)}\n"
        f"block_mappings = [false, true]\nunit_rows = {unit_rows}\n"
        f'[placement]\nkind = "stride"\nstep = {STEP}\n[tag]\nseed = 1\n'
    )
    return config


def write_boot_inputs(folder: Path, configs: int, unit_rows: int, boot: bool = True) -> Path:
    """The stride maps of ``write_inputs`` with as many rows of boot sets instead: VA_BITS 39
    and 48 x linux-6.9 and linux-7.0 x nvhe-boot and pkvm-boot x 1 and 4 CPUs (16 as well);
    with ``boot`` false, the same maps and layouts as all of DRAM x both block settings (half
    as many rows: compare rows/s)."""
    write_inputs(folder, configs, unit_rows)
    config = folder / ("bench-boot.toml" if boot else "bench-boot-dram.toml")
    sets = 'mappings = ["nvhe-boot", "pkvm-boot"]\ncpus = [1, 4]\nblock_mappings = [false]'
    config.write_text(
        'name = "bench-boot"\nmemory_maps = ["bench-map-a.toml", "bench-map-b.toml"]\n'
        'granules = ["4K"]\nva_bits = [39, 48]\nlayouts = ["linux-6.9", "linux-7.0"]\n'
        f"{sets if boot else 'block_mappings = [false, true]'}\nunit_rows = {unit_rows}\n"
        f'[placement]\nkind = "stride"\nstep = {STEP}\n[tag]\nseed = 1\n'
    )
    return config


def write_many_maps(
    folder: Path, count: int, placement: str, layouts: tuple[str, ...] | None = None
) -> Path:
    """``count`` one- or two-bank maps (sizes and bases spread like real boards) and a config
    sweeping them at every granule, Kconfig VA_BITS, ``layouts`` (default: all the default
    config's) and both block settings."""
    maps = folder / f"maps-{count}"
    maps.mkdir(exist_ok=True)
    for k in range(count):
        size = (1 + k % 16) << 28
        base = (0x4000_0000 << (k % 5)) + (k % 7 << 21)
        text = f'name = "m{k:05d}"\n[[banks]]\nbase = {base}\nsize = {size}\n'
        if k % 3 == 0:
            text += f"[[banks]]\nbase = {0x8_8000_0000 + (k << 30)}\nsize = {size * 2}\n"
        (maps / f"m{k:05d}.toml").write_text(text)
    config = folder / f"many-{count}-{len(layouts or ())}.toml"
    chosen = f"layouts = {list(layouts)}\n" if layouts else ""
    config.write_text(
        f'name = "many"\nmemory_maps = ["{maps.name}/"]\n{chosen}[placement]\n{placement}\n'
        "[tag]\nseed = 1\n"
    )
    return config


def write_every_page(folder: Path, maps: str = '"family:board"') -> Path:
    config = folder / "every-page.toml"
    config.write_text(
        f'name = "every-page"\nmemory_maps = [{maps}]\n[placement]\nkind = "every-page"\n'
    )
    return config


BIG_BANKS = ((0x8000_0000, 2 << 30), (0x80_8000_0000, 510 << 30), (0x100_0000_0000, 1 << 40))
"""A 1.5 TiB map larger than any built-in board: a 1 TiB group holds 1.6 M runs."""


def write_big_map(folder: Path) -> Path:
    """``BIG_BANKS`` as a map file, swept every page (every granule, Kconfig VA_BITS, layout and
    block setting): the memory bar is a process's and the tree's peak, whatever a group's size."""
    banks = "".join(f"[[banks]]\nbase = {b:#x}\nsize = {s:#x}\n" for b, s in BIG_BANKS)
    (folder / "big3.toml").write_text(f'name = "big3"\n{banks}')
    return write_every_page(folder, '"big3.toml"')


def _tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        try:
            with open(f"/proc/{pids[i]}/task/{pids[i]}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        i += 1
    return pids


def _memory(pid: int, field: str) -> int:
    """``VmRSS`` from /proc/PID/status (cheap), or ``Pss`` from smaps_rollup (which walks the
    page tables under the process's mmap lock, so it is sampled less often)."""
    path = f"/proc/{pid}/status" if field == "VmRSS" else f"/proc/{pid}/smaps_rollup"
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_cli(config: Path, out: Path, workers: int) -> dict:
    """``sweep run`` in a subprocess; wall time and peak RSS of its process tree."""
    command = [
        sys.executable,
        "-m",
        "sweep.cli",
        "run",
        str(config),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--overwrite",
    ]
    peaks = {"tree": 0, "pss": 0, "one": 0}
    done = threading.Event()

    def sample(pid: int) -> None:  # memory, beside the timing (which waits on the process)
        samples = 0
        while not done.is_set():
            tree = _tree(pid)
            sizes = [_memory(p, "VmRSS") for p in tree]
            peaks["tree"] = max(peaks["tree"], sum(sizes))
            peaks["one"] = max(peaks["one"], max(sizes, default=0))
            if samples % 10 == 0:
                peaks["pss"] = max(peaks["pss"], sum(_memory(p, "Pss") for p in tree))
            samples += 1
            done.wait(0.05)

    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
    sampler.start()
    out_text, err_text = proc.communicate()  # the end of the run, to the ms (not a poll's)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    peak_tree, peak_pss, peak_one = peaks["tree"], peaks["pss"], peaks["one"]
    if proc.returncode:
        raise SystemExit(f"sweep run failed ({proc.returncode}):\n{err_text.decode()}")
    disk = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    # The driver's own clock: from the pool's start to the last unit, without interpreter
    # start-up, imports and planning.
    match = re.search(r" in ([0-9.]+) s -> ", err_text.decode())
    return {
        "seconds": seconds,
        "run_seconds": float(match.group(1)) if match else seconds,
        "peak_tree": peak_tree,
        "peak_pss": peak_pss,
        "peak_one": peak_one,
        "disk": disk,
    }


def builder_and_writer(config: Path, folder: Path, limit_rows: int) -> dict[str, float]:
    """Rows/s of the builder alone, and of pyarrow writing its tables alone with the store's
    settings and with pyarrow's defaults (and bytes a row of each), on one core, over units
    spread evenly through the sweep (layouts and clipping paths differ in cost)."""
    import pyarrow.parquet as pq

    from sweep.plan.config import load_config
    from sweep.plan.units import make_plan
    from sweep.run.task import unit_table
    from sweep.store.encoding import COMPRESSION, ROW_GROUP_ROWS, non_nullable, writer_options

    plan = make_plan(load_config(config), base_dir=str(config.parent))
    seconds = {"build": 0.0, "new": 0.0, "old": 0.0}
    size = {"new": 0, "old": 0}
    rows = 0
    every = max(1, plan.n_units * plan.unit_rows // limit_rows)
    for index, unit in enumerate(plan.units()):
        if index % every:
            continue
        started = time.perf_counter()
        table = unit_table(plan, unit).drop_columns(["granule", "va_bits"])
        seconds["build"] += time.perf_counter() - started
        for kind in ("new", "old"):
            path = folder / f"alone-{kind}-{index}.parquet"  # a new file each time
            started = time.perf_counter()
            if kind == "new":
                pq.write_table(non_nullable(table), path, **writer_options(table.schema))
            else:
                pq.write_table(table, path, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
            seconds[kind] += time.perf_counter() - started
            size[kind] += path.stat().st_size
            path.unlink()
        rows += unit.rows
        if rows >= limit_rows:
            break
    return {
        "rows": rows,
        "build": rows / seconds["build"],
        **{f"write_{k}": rows / seconds[k] for k in ("new", "old")},
        **{f"bytes_{k}": size[k] / rows for k in ("new", "old")},
    }


def _row(label: str, rows: int, r: dict) -> str:
    return (
        f"{label:<44}{r['seconds']:>8.1f}{rows / r['seconds']:>13,.0f}"
        f"{r['peak_tree'] / 2**20:>8,.0f} MiB{r['peak_pss'] / 2**20:>8,.0f} MiB"
        f"{r['peak_one'] / 2**20:>8,.0f} MiB{r['disk'] / max(rows, 1):>10.2f}"
    )


def _ratio(many: Path, folder: Path, workers: int, unit_rows: int, repeat: int, k: int) -> None:
    """Rows/s of 2,000 random boards against a two-map stride sweep of as many rows, in turn,
    ``repeat`` times; each ratio and their median."""
    ratios, what = [], f"{k} layouts" if k else "all layouts"
    for _ in range(repeat):
        r_many = run_cli(many, folder / "out", workers)
        rows = _rows_written(folder / "out")
        per_map = round(rows / 2000 / 13)
        print(_row(f"2,000 maps x {per_map} ({what}) x 13, {workers} w", rows, r_many))
        stride = write_inputs(folder, rows, unit_rows)
        r_stride = run_cli(stride, folder / "out", workers)
        same = _rows_written(folder / "out")
        print(_row(f"2 maps, stride, {same:,} rows, {workers} w", same, r_stride))
        ratios.append((rows / r_many["seconds"]) / (same / r_stride["seconds"]))
        print(f"many maps ({what}) / two-map stride, rows/s: {ratios[-1]:.3f}x")
    if len(ratios) > 1:
        low, median, high = min(ratios), statistics.median(ratios), max(ratios)
        print(f"many maps ({what}) / two-map stride over {len(ratios)} pairs: median"
              f" {median:.3f}x ({low:.3f}-{high:.3f})")  # fmt: skip


def _rows_written(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in out.rglob("part-*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=float, default=1e7, help="rows of the stride sweep")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--only",
        nargs="+",
        default=["many", "stride", "boot", "ratio", "every-page", "writer"],
        help="which parts to run (every-page-big, a 1.5 TiB map every page, only when named)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="pairs of runs of the ratio's two shapes"
    )
    parser.add_argument(
        "--alone-rows", type=float, default=2e6, help="rows for the one-core figures"
    )
    args = parser.parse_args()
    from sweep.plan.config import DEFAULT_UNIT_ROWS

    configs = int(args.configs) // (COMBOS * 2) * COMBOS * 2
    unit_rows = DEFAULT_UNIT_ROWS
    header = (
        f"{'run':<44}{'seconds':>8}{'rows/s':>13}{'RSS tree':>12}{'PSS tree':>12}"
        f"{'largest':>12}{'bytes/row':>10}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-driver-") as tmp:
        folder = Path(tmp)
        print(f"load average (1 min) before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print(header)
        if "many" in args.only:
            many = write_many_maps(folder, 700, 'kind = "kernel-load"')
            for workers in args.workers:
                r = run_cli(many, folder / "out", workers)
                print(_row(f"700 maps at kernel-load, {workers} worker(s)", 56_000, r))
        if "stride" in args.only:
            stride = write_inputs(folder, configs, unit_rows)
            rates = {}
            for workers in args.workers:
                r = run_cli(stride, folder / "out", workers)
                rates[workers] = configs / r["seconds"]
                print(_row(f"2 maps, stride 64K, {configs:,} rows, {workers} w", configs, r))
            if 1 in rates and 2 in rates:
                print(f"stride scaling, 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
        if "boot" in args.only:  # the boot sets beside all of DRAM: same maps and layouts
            workers = max(args.workers)
            rates = {}
            for boot, what in ((False, "all of DRAM"), (True, "boot sets")):
                r = run_cli(write_boot_inputs(folder, configs, unit_rows, boot), folder / "out",
                            workers)  # fmt: skip
                rows = _rows_written(folder / "out")
                rates[boot] = rows / r["seconds"]
                print(_row(f"2 maps, stride, 6.9+7.0, {what}, {workers} w", rows, r))
            print(f"boot sets / all of DRAM, rows/s: {rates[True] / rates[False]:.2f}x")
        if "ratio" in args.only:  # each shape run in turn, --repeat times (this VM drifts)
            workers = max(args.workers)
            random = 'kind = "random"\ncount = 13\nseed = 1'
            for layouts in (LAYOUTS, None):  # the bar's 80 configurations; then all 140
                many = write_many_maps(folder, 2000, random, layouts)
                _ratio(many, folder, workers, unit_rows, args.repeat, len(layouts or ()))
        if "every-page" in args.only:
            every = write_every_page(folder)
            workers = max(args.workers)
            r = run_cli(every, folder / "out", workers)
            meta = json.loads((folder / "out" / "_sweep.json").read_text())
            covered = meta["counts"]["configurations"]
            rows = _rows_written(folder / "out")
            print(_row(f"every-page, built-in boards, {workers} w (runs)", rows, r))
            print(
                f"every-page: {covered:,} configurations in {rows:,} rows: "
                f"{covered / r['seconds']:,.0f} configurations/s, "
                f"{rows / covered:.2e} rows per configuration"
            )
        if "every-page-big" in args.only:
            workers = max(args.workers)
            r = run_cli(write_big_map(folder), folder / "out", workers)
            rows = _rows_written(folder / "out")
            print(_row(f"every-page, 1.5 TiB map, {workers} w (runs)", rows, r))
        if "writer" in args.only:
            stride = write_inputs(folder, configs, unit_rows)
            alone = builder_and_writer(stride, folder, int(args.alone_rows))
            print(
                f"one core, {alone['rows']:,} stride rows: builder {alone['build']:,.0f} rows/s;"
                f" write with writer_options {alone['write_new']:,.0f} rows/s,"
                f" {alone['bytes_new']:.2f} B/row; with pyarrow's defaults"
                f" {alone['write_old']:,.0f} rows/s, {alone['bytes_old']:.2f} B/row"
                f" ({alone['write_new'] / alone['write_old']:.2f}x faster)"
            )
        print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
