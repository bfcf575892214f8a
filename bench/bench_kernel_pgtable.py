"""How fast the kernel's own pgtable.c answers, against sweep.build, on the test's configurations.

Builds (or finds in the cache) tools/kernel-pgtable's binaries, draws the seeded configurations
of tests/test_kernel_pgtable.py, and prints for each kernel and granule the rows, the seconds and
rows/s of one harness process, then the same rows through ``sweep.build``, and the peak RSS of
the harness processes and of this one, all measured in this run.

    nice python bench/bench_kernel_pgtable.py [--rows 6000] [--seed 20261202]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_kernel_pgtable import GRANULES, SEED, TOOL, configurations, kernel_lines  # noqa: E402

from sweep import build  # noqa: E402
from sweep.core.memmap import levels  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    result = subprocess.run([str(TOOL), "--json"], capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr.strip())
    binaries = json.loads(result.stdout)

    maps, configs = configurations(args.seed, args.rows)
    lines = kernel_lines(maps, configs)
    frame = pd.DataFrame(configs).astype({"idmap_pa": "uint64", "tag_random": "uint64"})
    t0 = time.perf_counter()
    build(frame, maps)
    builder_s = time.perf_counter() - t0
    print(
        f"{len(configs)} configurations (seed {args.seed}); sweep.build: {builder_s:.2f} s, "
        f"{len(configs) / builder_s:,.0f} rows/s (one map per row: the worst shape for it)"
    )
    for kernel, by_granule in binaries.items():
        max_levels = 5 if kernel == "6.12" else 4
        total_rows, total_s = 0, 0.0
        for granule in GRANULES:
            picked = [
                line
                for cfg, (bits, line, _cls) in zip(configs, lines, strict=True)
                if cfg["granule"] == granule and levels(bits, granule) <= max_levels
            ]
            t0 = time.perf_counter()
            subprocess.run(
                [by_granule[str(granule)]],
                input="\n".join(picked) + "\n",
                text=True,
                capture_output=True,
                check=True,
            )
            seconds = time.perf_counter() - t0
            total_rows, total_s = total_rows + len(picked), total_s + seconds
            print(
                f"  Linux {kernel} {granule // 1024}K: {len(picked)} rows in {seconds:.2f} s, "
                f"{len(picked) / seconds:,.0f} rows/s"
            )
        print(
            f"Linux {kernel}: {total_rows} rows in {total_s:.2f} s, "
            f"{total_rows / total_s:,.0f} rows/s"
        )
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: largest harness process {children:.0f} MiB; this process {own:.0f} MiB")


if __name__ == "__main__":
    main()
