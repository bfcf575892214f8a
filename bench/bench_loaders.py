"""How fast device trees are read, and how fast a hostile one is refused, measured in one run.

Prints, for one process:
1. the time to refuse a blob nested 100,000 deep (the reader stops at FDT_MAX_DEPTH, 64), the
   median of 5 reads, against the time to read a small good blob;
2. the rate of ``load_memory_map`` over every .dtb of Debian's arm64 kernels (tools/fetch-dtbs'
   cache; skipped, saying so, when it is not there), and how many gave banks or one-line errors;
3. the peak RSS of the process.

    nice python bench/bench_loaders.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import struct
import tempfile
import time
from pathlib import Path

from sweep.core.errors import ValidationError
from sweep.formats import fdt
from sweep.formats.loaders import load_memory_map


def deep_blob(levels: int) -> bytes:
    """A root and ``levels`` nested nodes named ``n``, written token by token."""
    block = bytearray(struct.pack(">II", fdt.FDT_BEGIN_NODE, 0))
    block += struct.pack(">I4s", fdt.FDT_BEGIN_NODE, b"n\0\0\0") * levels
    block += struct.pack(">I", fdt.FDT_END_NODE) * (levels + 1) + struct.pack(">I", fdt.FDT_END)
    total = 56 + len(block)
    header = fdt.HEADER.pack(fdt.FDT_MAGIC, total, 56, total, 40, 17, 16, 0, 0, len(block))
    return header + bytes(16) + bytes(block)


def good_blob() -> bytes:
    node = fdt.Node(
        "memory@80000000",
        {"device_type": b"memory\0", "reg": fdt.cells(0x8000_0000, 2 << 30, width=2)},
    )
    root = fdt.Node("", {"#address-cells": fdt.cells(2), "#size-cells": fdt.cells(2)}, [node])
    node.parent = root
    return fdt.encode(root)


def median_seconds(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    default = os.environ.get("VA_SWEEP_DTB_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "va-sweep" / "dtbs"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default=default, help="tools/fetch-dtbs' cache (%(default)s)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the corpus' skipped nodes, by the thousand

    deep, good = deep_blob(100_000), good_blob()

    def refuse() -> None:
        try:
            fdt.parse(deep, "deep.dtb")
        except ValidationError:
            return
        raise AssertionError("a 100,000-deep blob was accepted")

    refused = median_seconds(refuse)
    read = median_seconds(lambda: fdt.scan_memory(fdt.parse(good, "good.dtb"), "good.dtb"))
    print(
        f"100,000-deep blob ({len(deep):,} bytes) refused in {refused * 1e3:.2f} ms;"
        f" a one-node blob read in {read * 1e3:.3f} ms (ratio {refused / read:.1f})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deep.dtb"
        path.write_bytes(deep)
        start = time.perf_counter()
        try:
            load_memory_map(path)
        except ValidationError as exc:
            print(f"load_memory_map: {time.perf_counter() - start:.4f} s, one line: {exc}")

    folders = []
    for manifest in sorted(Path(args.cache).glob("*.json")):
        folders.append(Path(json.loads(manifest.read_text())["folder"]))
    files = sorted(p for folder in folders for p in folder.rglob("*.dtb"))
    if not files:
        print(f"no .dtb corpus in {args.cache}: run tools/fetch-dtbs first")
    else:
        banks = errors = 0
        start = time.perf_counter()
        for path in files:
            try:
                load_memory_map(path)
                banks += 1
            except ValidationError:
                errors += 1
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in files)
        print(
            f"corpus: {len(files)} .dtb files ({size / 2**20:.0f} MiB) in {seconds:.1f} s:"
            f" {len(files) / seconds:.0f} files/s, {size / 2**20 / seconds:.1f} MiB/s;"
            f" {banks} with banks, {errors} one-line errors"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
