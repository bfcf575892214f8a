"""A small, real sweep for the results tests (queries, report, diff, cookbook).

Rows come from the scalar reference (MODEL.md's oracle), on memory maps taken from the worked
examples, and are written the way the store lays a run out: hive folders ``granule=``/``va_bits=``
whose files still hold every column, with ``_sweep.json`` beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweep.columns import ROW_COLUMNS
from sweep.model import MemoryMap
from sweep.reference import LAYOUTS, compute_row

G = 1 << 30
KCONFIG = {4096: [39, 48, 52], 16384: [36, 47, 48, 52], 65536: [42, 48, 52]}

MAPS = {
    # MODEL.md 7.1 and 7.2
    "juno": MemoryMap("juno", [(0x8000_0000, 2 * G)]),
    "seattle": MemoryMap("seattle", [(0x80_0000_0000, 8 * G)]),
    # MODEL.md 7.3: the kernel in the high bank
    "two-banks": MemoryMap("two-banks", [(0x8000_0000, 2 * G), (0x40_0000_0000, 2 * G)]),
    # MODEL.md 7.5, NXP LX2160A
    "lx2160a": MemoryMap(
        "lx2160a",
        [(0x8000_0000, 0xFBDF_FFFF - 0x8000_0000 + 1),
         (0x20_8000_0000, 0x23_7FFF_FFFF - 0x20_8000_0000 + 1)],
    ),
    # DRAM above 2^48: the idmap needs 49 VA bits, two levels more than VA_BITS 39 or 36 give
    "far": MemoryMap("far", [(0x8000_0000, 2 * G), (1 << 48, 4 * G)]),
}

IDMAPS = {
    "juno": [0x8008_0000, 0xFFF0_0000],
    "seattle": [0x80_0008_0000, 0x81_0000_0000],
    "two-banks": [0x8008_0000, 0x40_0008_0000],
    "lx2160a": [0x81A2_4000, 0x22_0000_0000],
    "far": [0x8008_0000, (1 << 48) + 0x8_0000],
}


def small_rows(maps: dict[str, MemoryMap] | None = None,
               layouts: tuple[str, ...] = LAYOUTS, tag_random: int = 0) -> pd.DataFrame:
    """Every board x Kconfig granule/VA_BITS x layout x block setting x idmap address."""
    maps = MAPS if maps is None else maps
    rows = []
    for name, memory_map in maps.items():
        for granule, choices in KCONFIG.items():
            for va_bits in choices:
                for layout in layouts:
                    for blocks in (False, True):
                        for idmap_pa in IDMAPS[name]:
                            rows.append(compute_row(
                                memory_map, granule, va_bits, layout, blocks, idmap_pa,
                                tag_random,
                            ))
    frame = pd.DataFrame(rows)[list(ROW_COLUMNS)]
    return frame.astype(ROW_COLUMNS)


def write_results(rows: pd.DataFrame, directory: Path, config: dict | None = None) -> Path:
    """Write rows as a result directory: one part file per granule/VA_BITS folder."""
    directory.mkdir(parents=True, exist_ok=True)
    for (granule, va_bits), part in rows.groupby(["granule", "va_bits"], observed=True):
        folder = directory / f"granule={granule}" / f"va_bits={va_bits}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False)
        pq.write_table(table, folder / "part-0.parquet")
    (directory / "_sweep.json").write_text(json.dumps({"name": "small", **(config or {})}))
    return directory
