"""What it costs to trust a part file: durable writes and the checks ``--resume`` runs.

Prints, for part files of real rows (a 4K stride over one 2 GiB bank, random tags, 4K/48,
``tagged``, built by ``unit_table``; ``--rows`` per part, default 500,000 as ``unit_rows``):
- parts per second and MB/s of pyarrow writing to a file alone, and of ``Store.write_part``
  (the same bytes, plus SHA-256, ``fsync`` of the file, rename and ``fsync`` of the folder);
- MB/s of ``Manifest.check`` (read, SHA-256, footer, rows), what ``--resume`` and
  ``sweep verify`` pay per byte of dataset.
Times are wall clock on this machine's disk (``--dir`` chooses it); other load shows in every
figure, so run it on a quiet machine and say so when it was not.

    python3 bench/bench_store.py                   # 10 parts of 500k rows (~30 s)
    python3 bench/bench_store.py --parts 20 --dir /var/tmp
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--dir", default=None, help="folder to write in (default: the temp dir)")
    args = parser.parse_args()

    from sweep.plan.config import load_config
    from sweep.run.task import make_plan, unit_table
    from sweep.store.manifest import Manifest
    from sweep.store.parts import PARTITION_COLUMNS, Store, non_nullable, writer_options

    with tempfile.TemporaryDirectory(prefix="bench-store-config-") as tmp:
        (Path(tmp) / "bench-2g.toml").write_text(
            'name = "bench-2g"\n[[banks]]\nbase = 0x8000_0000\nsize = "2G"\n'
        )
        config = Path(tmp) / "bench.toml"
        config.write_text(
            'name = "bench-store"\nmemory_maps = ["bench-2g.toml"]\ngranules = ["4K"]\n'
            f'va_bits = [48]\nlayouts = ["tagged"]\nblock_mappings = [false]\n'
            f'unit_rows = {args.rows}\n[placement]\nkind = "stride"\nstep = "4K"\n'
            "[tag]\nseed = 7\n"
        )
        plan = make_plan(load_config(str(config)), base_dir=tmp)
        table = unit_table(plan, next(iter(plan.units())))
    plain = non_nullable(
        table.drop_columns([c for c in PARTITION_COLUMNS if c in table.column_names])
    )
    options = writer_options(plain.schema)  # what Store.write_part uses

    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.dir) as tmp:
        folder = Path(tmp)
        store = Store(str(folder / "ds"))
        manifest = Manifest()
        rels = [f"granule=4096/va_bits=48/part-{k:06d}.parquet" for k in range(args.parts)]
        pq.write_table(plain, folder / "warm-up.parquet", **options)
        alone = durable = 0.0
        for k, rel in enumerate(rels):  # interleaved, so that other load hits both alike
            started = time.perf_counter()
            pq.write_table(plain, folder / f"alone-{k}.parquet", **options)
            alone += time.perf_counter() - started
            started = time.perf_counter()
            manifest.record(rel, store.write_part(rel, table))
            durable += time.perf_counter() - started
        size = sum(p.stat().st_size for p in folder.glob("alone-*.parquet"))

        started = time.perf_counter()
        assert all(manifest.check(store, rel) is None for rel in rels)
        checked = time.perf_counter() - started

    mb = size / 1e6
    print(f"parts: {args.parts} of {args.rows:,} rows, {mb / args.parts:.2f} MB each (zstd)")
    print(f"pyarrow to a file alone:    {args.parts / alone:6.2f} parts/s, {mb / alone:7.1f} MB/s")
    print(
        f"Store.write_part (durable): {args.parts / durable:6.2f} parts/s, {mb / durable:7.1f} MB/s"
        f"  ({durable / alone:.2f}x the time)"
    )
    print(
        f"Manifest.check (resume):    {args.parts / checked:6.2f} parts/s, {mb / checked:7.1f} MB/s"
    )


if __name__ == "__main__":
    main()
