"""How fast the driver runs a big sweep, and what it costs over the builder and Parquet alone.

Prints, for a stride sweep of N configurations (default 10^7; ``--configs 1e8`` for the bar run):
end-to-end configurations per second of ``sweep run`` with 1 and 2 workers and the scaling
ratio; peak memory of the whole process tree, sampled from /proc (every 50 ms the sum of RSS,
which counts pages the forked workers share once per process, and the RSS of the largest
process; every 0.5 s the sum of PSS, which counts shared pages once); then, on one core in
this process, the builder alone over the same units and pyarrow writing the same tables alone,
so the driver's own cost is visible.
The machine's other load shows in every figure: run it on a quiet machine.

    python3 bench/bench_driver.py                  # 10^7, 1 and 2 workers (~1 minute)
    python3 bench/bench_driver.py --configs 1e8 --workers 2
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP = 64 << 10
"""Stride between idmap addresses (64 KiB)."""
COMBOS = 2 * 4 * 2
"""VA_BITS 39 and 48 x four layouts x two block settings, at 4K."""


def write_inputs(folder: Path, configs: int, unit_rows: int) -> Path:
    """A two-bank map with ``configs / COMBOS`` stride addresses, and the config that sweeps it."""
    addresses = configs // COMBOS
    first = min(addresses // 2, (2 << 30) // STEP)  # a 2 GiB low bank, the rest high
    second = addresses - first
    (folder / "bench-map.toml").write_text(
        'name = "bench-two-banks"\n'
        f"[[banks]]\nbase = 0x8000_0000\nsize = {first * STEP}\n"
        f"[[banks]]\nbase = 0x8_8000_0000\nsize = {second * STEP}\n"
    )
    config = folder / "bench.toml"
    config.write_text(
        'name = "bench"\nmemory_maps = ["bench-map.toml"]\ngranules = ["4K"]\n'
        'va_bits = [39, 48]\nlayouts = ["high-only", "merged", "tagged", "tagged-48"]\n'
        f"block_mappings = [false, true]\nunit_rows = {unit_rows}\n"
        f'[placement]\nkind = "stride"\nstep = {STEP}\n[tag]\nseed = 1\n'
    )
    return config


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
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak_tree = peak_pss = peak_one = 0
    samples = 0
    while proc.poll() is None:
        tree = _tree(proc.pid)
        sizes = [_memory(p, "VmRSS") for p in tree]
        peak_tree, peak_one = max(peak_tree, sum(sizes)), max(peak_one, max(sizes, default=0))
        if samples % 10 == 0:
            peak_pss = max(peak_pss, sum(_memory(p, "Pss") for p in tree))
        samples += 1
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    out_text, err_text = proc.communicate()
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


def builder_and_writer(config: Path, folder: Path, limit_rows: int) -> tuple[float, float, int]:
    """Rows/s of the builder alone and of pyarrow writing its tables alone, on one core, over
    units spread evenly through the sweep (layouts and clipping paths differ in cost)."""
    import pyarrow.parquet as pq

    from sweep.config import load_config
    from sweep.store import COMPRESSION, ROW_GROUP_ROWS
    from sweep.units import make_plan, unit_table

    plan = make_plan(load_config(config), base_dir=str(config.parent))
    build_s = write_s = 0.0
    rows = 0
    every = max(1, plan.n_units * plan.unit_rows // limit_rows)
    for index, unit in enumerate(plan.units()):
        if index % every:
            continue
        started = time.perf_counter()
        table = unit_table(plan, unit)
        build_s += time.perf_counter() - started
        started = time.perf_counter()
        # A new file each time, as the driver writes (overwriting one file is cheaper).
        pq.write_table(
            table.drop_columns(["granule", "va_bits"]),
            folder / f"alone-{index}.parquet",
            compression=COMPRESSION,
            row_group_size=ROW_GROUP_ROWS,
        )
        write_s += time.perf_counter() - started
        rows += unit.rows
        if rows >= limit_rows:
            break
    return rows / build_s, rows / write_s, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=float, default=1e7)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--unit-rows", type=int, default=None, help="rows per unit (default: the config default)"
    )
    parser.add_argument(
        "--alone-rows",
        type=float,
        default=4e6,
        help="rows for the builder-alone and pyarrow-alone figures",
    )
    args = parser.parse_args()
    from sweep.config import DEFAULT_UNIT_ROWS

    configs = int(args.configs) // COMBOS * COMBOS
    unit_rows = args.unit_rows or DEFAULT_UNIT_ROWS
    with tempfile.TemporaryDirectory(prefix="bench-driver-") as tmp:
        folder = Path(tmp)
        config = write_inputs(folder, configs, unit_rows)
        print(
            f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine slows "
            "every figure)"
        )
        print(
            f"stride sweep: {configs:,} configurations (2 banks, 4K, VA_BITS 39/48, 4 layouts,"
            f" 2 block settings), {unit_rows:,} rows per unit, {os.cpu_count()} CPUs"
        )
        print(
            f"{'run':<28}{'seconds':>9}{'configs/s':>14}{'RSS tree':>12}{'PSS tree':>12}"
            f"{'largest':>12}{'bytes/row':>11}"
        )
        rates, run_rates = {}, {}
        for workers in args.workers:
            r = run_cli(config, folder / "out", workers)
            rates[workers] = configs / r["seconds"]
            run_rates[workers] = configs / r["run_seconds"]
            print(
                f"{'sweep run --workers ' + str(workers):<28}{r['seconds']:>9.1f}"
                f"{rates[workers]:>14,.0f}{r['peak_tree'] / 2**20:>8,.0f} MiB"
                f"{r['peak_pss'] / 2**20:>8,.0f} MiB{r['peak_one'] / 2**20:>8,.0f} MiB"
                f"{r['disk'] / configs:>11.2f}"
            )
        if 1 in rates and 2 in rates:
            print(
                f"scaling, 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x end to end, "
                f"{run_rates[2] / run_rates[1]:.2f}x on the driver's clock "
                f"({run_rates[1]:,.0f} and {run_rates[2]:,.0f} configs/s without start-up)"
            )
        build, write, rows = builder_and_writer(config, folder, int(args.alone_rows))
        per_row = 1 / build + 1 / write
        print(
            f"one core, {rows:,} rows: builder alone {build:,.0f} rows/s, pyarrow write alone "
            f"{write:,.0f} rows/s, both {1 / per_row:,.0f} rows/s"
        )
        if 1 in rates:
            print(
                f"time beyond building and writing, 1 worker: "
                f"{100 * (1 - rates[1] * per_row):.0f}% end to end (start-up, imports, plugins,"
                f" planning), {100 * (1 - run_rates[1] * per_row):.0f}% on the driver's clock "
                "(worker processes, placements, tags, scheduling)"
            )


if __name__ == "__main__":
    main()
