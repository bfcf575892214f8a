"""The readers on a big sweep: time and peak RSS of every named query, the report and a diff,
beside DuckDB's raw scan of the same files, in one run.

Makes the data itself: a real sweep, then copies of its part files with the boards renamed
(``juno-000``, ``juno-001``, ...) until there are ``--rows`` rows: real rows, many boards, written
as the store writes parts, with the manifest a sweep keeps (the readers trust what it vouches
for, and ``sweep diff`` matches parts by its checksums). Each measurement runs in a fresh
process (imports excluded from the time, included in the RSS); peak RSS is the process's own
high-water mark (``wait4``'s ``ru_maxrss``: DuckDB is one process). The bars (issue 12): every
named query, ``sweep report`` and ``sweep diff`` under 2 GiB; each named query within 3x of the
raw scan; ``sweep report`` under 10 s for many small boards. Two shapes (``--shape``):

- ``stride``: ``configs/stride-boards.toml`` (about 10^6 rows), long runs of one configuration;
  10^8 rows are about 2,600 boards.
- ``many-maps``: 2,000 random small maps (``bench_driver.write_many_maps``) x the default
  config's 140 configurations (all 7 default layouts; 80 when it had four) x 13 random
  placements (3.6 x 10^6 rows), about 7 rows per summary row; 10^8 rows are about 55,000 maps.

The machine's other load shows in every figure.

    python3 bench/bench_results.py                    # 10^8 rows (~0.3 GB on disk)
    python3 bench/bench_results.py --rows 1e7 --dir /tmp/r7   # keep the data for a re-run
    python3 bench/bench_results.py --shape many-maps --rows 2e7 --dir /tmp/m7
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SEED_MAPS = 2000
"""Random maps of the ``many-maps`` shape's real sweep (copied under renamed boards)."""


def seed_sweep(seed: Path, shape: str) -> None:
    """The real sweep the data is copied from (kept beside the data, reused)."""
    config = ROOT / "configs/stride-boards.toml"
    if shape == "many-maps":
        from bench_driver import write_many_maps

        seed.parent.mkdir(parents=True, exist_ok=True)
        placement = 'kind = "random"\ncount = 13\nseed = 1'
        config = write_many_maps(seed.parent, SEED_MAPS, placement)
    subprocess.run(
        [sys.executable, "-m", "sweep.cli", "run", str(config), "--out", str(seed)]
        + ["--workers", "2"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def make_data(directory: Path, rows: int, shape: str = "stride") -> int:
    """A real sweep of ``shape``, copied under renamed boards up to ``rows`` rows; returns the
    rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweep.store.manifest import Manifest
    from sweep.store.parts import PART_RE, Store, part_path

    seed = directory.parent / f"{shape}-seed"
    if not (seed / "_sweep.json").exists():
        seed_sweep(seed, shape)
    store = Store(str(directory))
    parts = sorted(Store(str(seed)).parts())
    tables = [(PART_RE.fullmatch(rel), pq.read_table(seed / rel)) for rel in parts]
    per_copy = sum(t.num_rows for _, t in tables)
    copies = max(1, round(rows / per_copy))
    next_index: dict[tuple[int, int], int] = {}
    manifest = Manifest()  # as a sweep records its parts: readers trust what it vouches for
    for k in range(copies):
        for keys, table in tables:
            folder = int(keys["granule"]), int(keys["va_bits"])
            index = next_index.get(folder, 0)
            next_index[folder] = index + 1
            names = table["memory_map"].combine_chunks()
            renamed = pa.DictionaryArray.from_arrays(
                names.indices, pa.array([f"{n}-{k:03d}" for n in names.dictionary.to_pylist()])
            )
            column = table.schema.get_field_index("memory_map")
            rel = part_path(*folder, index)
            info = store.write_part(rel, table.set_column(column, "memory_map", renamed))
            manifest.record(rel, info)
    manifest.flush(store, force=True)
    (directory / "_sweep.json").write_text((seed / "_sweep.json").read_text())
    return copies * per_copy


def summary_cost(directory: Path, parts: int = 20) -> str:
    """What the summary files cost the writer: parts of the data written with their summary
    files (``part_summary``, ``summary_bytes``) and without, in this process."""
    import pyarrow.parquet as pq

    from sweep.store.encoding import part_bytes, summary_bytes
    from sweep.store.summary import part_summary

    tables = [
        pq.read_table(f) for f in sorted(directory.glob("granule-*/va_bits-*/part-*"))[:parts]
    ]
    rows = sum(t.num_rows for t in tables)
    started = time.perf_counter()
    summaries = [part_summary(t) for t in tables]
    with_summary = sum(part_bytes(t).size for t in tables)
    with_summary += sum(summary_bytes(s).size for s in summaries if s is not None)
    middle = time.perf_counter()
    without = sum(part_bytes(t).size for t in tables)
    done = time.perf_counter()
    kept = [s.num_rows for s in summaries if s is not None]
    return (
        f"writing {rows:,} rows ({len(tables)} parts, {len(kept)} summary files of "
        f"{sum(kept):,} rows): with summary files {rows / (middle - started) / 1e6:.2f} M rows/s, "
        f"{with_summary / rows:.3f} B/row; without {rows / (done - middle) / 1e6:.2f} M rows/s, "
        f"{without / rows:.3f} B/row"
    )


def _measure(args: list[str]) -> dict:
    """Run one measurement in a fresh process: its own timing, and its peak RSS."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--one", *args], stdout=subprocess.PIPE, text=True
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        return {"seconds": float("nan"), "wall": wall, "rss": usage.ru_maxrss << 10, "failed": 1}
    result = json.loads(output.strip().splitlines()[-1])
    return {**result, "wall": wall, "rss": usage.ru_maxrss << 10}


def one(kind: str, name: str, directory: str) -> None:
    """In the child: run one reader and print its time (after imports) as JSON."""
    from sweep.read.engine import Results
    from sweep.read.queries import QUERIES

    started = time.perf_counter()
    if kind == "scan":
        data = Results(directory)
        data.frame("SELECT count(*) AS n, sum(table_bytes) AS s FROM results")
    elif kind == "query":
        QUERIES[name](Results(directory))
    elif kind == "report":
        from sweep.read.report import write_report

        write_report(directory, Path(directory).parent / "report.html")
    elif kind == "diff":
        from sweep.read.diff import diff

        diff(directory, directory)
    elif kind == "make":
        rows, shape = name.split(":")
        make_data(Path(directory), int(float(rows)), shape)
    elif kind == "load":
        from sweep.read.results import load

        load(directory, columns=["memory_map", "table_bytes"], granule=4096, va_bits=39)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=float, default=1e8)
    parser.add_argument("--dir", help="keep the data here (reused when it exists)")
    parser.add_argument("--shape", choices=["stride", "many-maps"], default="stride")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the median is shown")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(*args.one)
        return
    from sweep.read.queries import QUERIES

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.dir) if args.dir else Path(tmp) / "results"
        started = time.perf_counter()
        if not (directory / "_sweep.json").exists():  # in a child: this process stays small,
            _measure(["make", f"{args.rows}:{args.shape}", str(directory)])  # and its forks
        files = list(directory.glob("granule-*/va_bits-*/part-*.parquet"))
        size = sum(f.stat().st_size for f in files)
        sides = list(directory.glob("granule-*/va_bits-*/_summary-*.parquet"))
        side_size = sum(f.stat().st_size for f in sides)
        print(
            f"data: {len(files)} part files, {size / 2**30:.2f} GiB, {len(sides)} summary files, "
            f"{side_size / 2**20:.1f} MiB, ready in {time.perf_counter() - started:.0f} s "
            f"(load average {os.getloadavg()[0]:.1f})"
        )
        print(
            f"{'reader':42s} {'seconds':>8s} {'spread':>7s} {'x scan':>7s} {'wall s':>7s} "
            f"{'peak RSS':>9s}   (median of {args.repeat}; spread: (max - min) / median)"
        )
        runs = [("raw scan: count(*), sum(table_bytes)", ["scan", "-"])]
        runs += [(f"query {name}", ["query", name]) for name in QUERIES]
        runs += [
            ("sweep report", ["report", "-"]),
            ("sweep diff (the run with itself)", ["diff", "-"]),
            ("load 2 columns of 4K/39", ["load", "-"]),
        ]
        rows = []
        for label, what in runs:
            m = _median([_measure([*what, str(directory)]) for _ in range(args.repeat)])
            rows.append((label, m))
            ratio = m["seconds"] / rows[0][1]["seconds"]
            print(
                f"{label:42s} {m['seconds']:8.2f} {m['spread']:6.0%} {ratio:7.2f} "
                f"{m['wall']:7.2f} {m['rss'] / 2**20:6.0f} MiB"
                f"{'  FAILED' if m.get('failed') else ''}",
                flush=True,
            )
        print(summary_cost(directory))
        scan = rows[0][1]
        # the readers: the named queries, the report and diff (a load holds its rows)
        worst_rss = max(m["rss"] for label, m in rows if not label.startswith("load"))
        worst_ratio = max(m["seconds"] / scan["seconds"] for label, m in rows if "query" in label)
        report = dict(rows)["sweep report"]["seconds"]
        print(
            f"bars: peak RSS {worst_rss / 2**30:.2f} GiB (< 2 GiB: "
            f"{'yes' if worst_rss < 2 << 30 else 'NO'}); slowest named query "
            f"{worst_ratio:.2f}x the raw scan (< 3x: {'yes' if worst_ratio < 3 else 'NO'}); "
            f"sweep report {report:.1f} s (< 10 s: {'yes' if report < 10 else 'NO'})"
        )


def _median(runs: list[dict]) -> dict:
    """The median run by seconds, with the spread of the runs' seconds and the largest RSS."""
    ordered = sorted(runs, key=lambda m: m["seconds"])
    middle = dict(ordered[len(ordered) // 2])
    spread = ordered[-1]["seconds"] - ordered[0]["seconds"]
    middle["spread"] = spread / middle["seconds"] if middle["seconds"] else 0.0
    middle["rss"] = max(m["rss"] for m in runs)
    return middle


if __name__ == "__main__":
    main()
