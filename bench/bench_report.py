"""How long ``sweep report`` takes, and where the time goes.

Runs a sweep into a temporary folder (the default sweep unless a CONFIG and overrides are given,
or reads an existing result DIR with ``--dir``), then prints: rows, the time to load the report's
columns, each named query, each figure, and the whole ``sweep report`` command as a user runs it
(a fresh process, imports included). The bar is the default sweep under 30 s.

    python3 bench/bench_report.py                               # the default sweep
    python3 bench/bench_report.py configs/stride-boards.toml    # ~1M rows
    python3 bench/bench_report.py --dir results
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_args", nargs="*", help="CONFIG and key=value overrides for sweep run")
    parser.add_argument("--dir", help="an existing result directory (no run)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.dir) if args.dir else Path(tmp) / "results"
        if not args.dir:
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "sweep.cli", "run", *args.run_args, "--out", str(directory)],
                check=True,
                stderr=subprocess.DEVNULL,
            )
            print(f"sweep run:            {time.perf_counter() - started:7.2f} s")

        from sweep import report, results

        started = time.perf_counter()
        df = results.load(directory, columns=report.REPORT_COLUMNS)
        print(f"load ({len(df):,} rows):   {time.perf_counter() - started:7.2f} s")
        for name, query in results.QUERIES.items():
            started = time.perf_counter()
            query(df)
            print(f"  query {name:<22s} {time.perf_counter() - started:7.2f} s")
        for name in ("table_bytes", "overlaps", "levels", "margins"):
            started = time.perf_counter()
            getattr(report, f"figure_{name}")(df)
            print(f"  figure {name:<21s} {time.perf_counter() - started:7.2f} s")

        out = Path(tmp) / "report.html"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sweep.cli", "report", str(directory), "--out", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - started
        print(
            f"sweep report (whole command): {elapsed:.2f} s, page {out.stat().st_size:,} bytes"
            f" ({'under' if elapsed < 30 else 'OVER'} the 30 s bar)"
        )


if __name__ == "__main__":
    main()
