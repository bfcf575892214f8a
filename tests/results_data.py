"""A small, real sweep for the results tests (queries, report, diff, cookbook).

The run is a real ``sweep run`` on memory maps taken from the worked examples; the tests check
what it wrote against the scalar reference (docs/model.md's oracle), row by row.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import HIGH_ONLY_ONE_TREE, one_tree_registered

from sweep.core.columns import ROW_COLUMNS
from sweep.core.kconfig import VA_BITS_CHOICES
from sweep.core.memmap import MemoryMap
from sweep.model.reference import compute_row

G = 1 << 30
KCONFIG = {g: list(v) for g, v in VA_BITS_CHOICES.items()}

MAPS = {
    # docs/model.md 7.1 and 7.2
    "juno-like": MemoryMap("juno-like", [(0x8000_0000, 2 * G)]),
    "seattle-like": MemoryMap("seattle-like", [(0x80_0000_0000, 8 * G)]),
    # docs/model.md 7.3: the kernel in the high bank
    "two-banks": MemoryMap("two-banks", [(0x8000_0000, 2 * G), (0x40_0000_0000, 2 * G)]),
    # docs/model.md 7.5, NXP LX2160A
    "lx2160a-like": MemoryMap(
        "lx2160a-like",
        [
            (0x8000_0000, 0xFBDF_FFFF - 0x8000_0000 + 1),
            (0x20_8000_0000, 0x23_7FFF_FFFF - 0x20_8000_0000 + 1),
        ],
    ),
    # DRAM above 2^48: the idmap needs 49 VA bits, two levels more than VA_BITS 39 or 36 give
    "far": MemoryMap("far", [(0x8000_0000, 2 * G), (1 << 48, 4 * G)]),
}


def toml(memory_map: MemoryMap) -> str:
    """A memory-map file (docs/model.md section 8) for ``memory_map``."""
    banks = "".join(
        f"[[banks]]\nbase = {b.base:#x}\nsize = {b.size:#x}\n" for b in memory_map.banks
    )
    return f'name = "{memory_map.name}"\n{banks}'


ERAS = ["linux-4.6", "linux-4.8", "linux-4.17", "linux-5.12", "linux-6.2", "linux-6.9", "linux-7.0"]
LAYOUTS = [*ERAS, HIGH_ONLY_ONE_TREE.name]
"""The small sweep's layouts: every kernel era, and the what-if of 4.6's alias in one merged
tree (tests/conftest.py), whose idmap can overlap the runtime alias (docs/model.md 7.3): the
eras' layouts essentially never overlap, and the queries' overlap mechanics need rows that do."""


def run_small_sweep(directory: Path) -> Path:
    """``sweep run``: the maps above, every Kconfig granule/VA_BITS, the ``LAYOUTS`` and both
    block settings, the idmap every 1 GiB of DRAM (docs/model.md section 8, ``stride``)."""
    from click.testing import CliRunner

    from sweep.cli import main

    maps_dir = directory.parent / f"{directory.name}-maps"
    maps_dir.mkdir(parents=True, exist_ok=True)
    for memory_map in MAPS.values():
        (maps_dir / f"{memory_map.name}.toml").write_text(toml(memory_map))
    config = directory.parent / f"{directory.name}.toml"
    config.write_text(
        'name = "small"\n'
        f"memory_maps = {json.dumps(sorted(str(p) for p in maps_dir.glob('*.toml')))}\n"
        'granules = ["4K", "16K", "64K"]\nva_bits = "kconfig"\n'
        f"layouts = {json.dumps(LAYOUTS)}\n"
        'block_mappings = [false, true]\n[placement]\nkind = "stride"\nstep = "1G"\n'
    )
    with one_tree_registered():
        result = CliRunner().invoke(
            main, ["run", str(config), "--out", str(directory), "--workers", "1"]
        )
    assert result.exit_code == 0, result.output
    return directory


def reference_rows(configs: pd.DataFrame) -> pd.DataFrame:
    """The scalar reference's row for every configuration (input columns) of ``configs``."""
    rows = [
        compute_row(
            MAPS[r.memory_map],
            r.granule,
            r.va_bits,
            r.layout,
            r.block_mappings,
            r.idmap_pa,
            r.tag_random,
            HIGH_ONLY_ONE_TREE if r.layout == HIGH_ONLY_ONE_TREE.name else None,
        )
        for r in configs.astype({"memory_map": str, "layout": str}).itertuples()
    ]
    return pd.DataFrame(rows)[list(ROW_COLUMNS)].astype(ROW_COLUMNS)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """The real default sweep (``sweep/plan/default.toml``), run once by the command line, in a
    folder named ``results`` (as the README's cookbook expects)."""
    from click.testing import CliRunner

    from sweep.cli import main

    out = tmp_path_factory.mktemp("default") / "results"
    result = CliRunner().invoke(main, ["run", "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    return out
