"""How long ``sweep report`` takes, and where the time goes.

Runs the default sweep into a temporary folder (or a CONFIG with overrides; or reads a result
DIR with ``--dir``); with ``--boards N`` (702 by default when given alone: every loadable DTB of
Debian's kernels, issue 12) copies its real rows under N board names first. Then prints the time
of each query the report runs, each figure with its size in pixels, and the whole ``sweep
report`` command as a user runs it (a fresh process, imports included), against the bars: 700
boards under 20 s, every image under 4,000 pixels a side. The machine's load shows in every
figure: it is printed.

    python3 bench/bench_report.py                               # the default sweep
    python3 bench/bench_report.py --boards 702                  # 702 boards
    python3 bench/bench_report.py configs/stride-boards.toml    # ~1M rows
    python3 bench/bench_report.py --dir results
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def copy_boards(source: Path, out: Path, boards: int) -> None:
    """``source``'s rows with each board copied under enough names to make ``boards`` boards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweep.store.parts import Store

    parts = sorted(Store(str(source)).parts())
    names = set()
    for rel in parts:
        names |= set(pq.read_table(source / rel, columns=["memory_map"])["memory_map"].to_pylist())
    copies = -(-boards // len(names))
    store = Store(str(out))
    for rel in parts:
        table = pq.read_table(source / rel)
        column = table["memory_map"].combine_chunks()
        index = table.schema.get_field_index("memory_map")
        renamed = [
            table.set_column(
                index,
                "memory_map",
                pa.DictionaryArray.from_arrays(
                    column.indices, [f"{n}-{k:02d}" for n in column.dictionary.to_pylist()]
                ),
            )
            for k in range(copies)
        ]
        store.write_part(rel, pa.concat_tables(renamed))
    (out / "_sweep.json").write_text((source / "_sweep.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_args", nargs="*", help="CONFIG and key=value overrides for sweep run")
    parser.add_argument("--dir", help="an existing result directory (no run)")
    parser.add_argument("--boards", type=int, nargs="?", const=702, help="copy boards up to N")
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
        if args.boards:
            copy_boards(directory, Path(tmp) / "boards", args.boards)
            directory = Path(tmp) / "boards"

        from sweep.read import figures, queries
        from sweep.read.engine import Results

        data = Results(directory)
        answers = {}
        for name, query in queries.QUERIES.items():
            started = time.perf_counter()
            answers[name] = query(data)
            print(f"  query {name:<24s} {time.perf_counter() - started:7.2f} s")
        boards = len(answers["boards"])
        started = time.perf_counter()
        matrices = queries.table_bytes_matrices(data)
        print(f"  query {'table_bytes_matrices':<24s} {time.perf_counter() - started:7.2f} s")
        drawn = {
            "table_bytes": lambda: figures.table_bytes(matrices),
            "overlaps_by_board": lambda: figures.overlaps_by_board(answers["overlaps"]),
            "overlaps_by_config": lambda: figures.overlaps_by_config(answers["overlaps-by-config"]),
            "levels": lambda: figures.levels(answers["level-counts"]),
            "margins": lambda: figures.margins(answers["margin-distribution"]),
        }
        for name, draw in drawn.items():
            started = time.perf_counter()
            _, (width, height) = draw()
            print(
                f"  figure {name:<23s} {time.perf_counter() - started:7.2f} s  "
                f"{width} x {height} px"
            )

        out = Path(tmp) / "report.html"
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "sweep.cli", "report", str(directory), "--out", str(out)],
            stdout=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        assert status == 0, "sweep report failed"
        print(
            f"sweep report of {boards} boards (whole command): {elapsed:.2f} s wall, "
            f"{usage.ru_utime + usage.ru_stime:.2f} s CPU, peak RSS {usage.ru_maxrss >> 10} MiB, "
            f"page {out.stat().st_size:,} bytes ({'under' if elapsed < 20 else 'OVER'} the 20 s "
            f"bar; load average {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
