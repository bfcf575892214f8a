"""The small sweep the driver, Dask and fault tests all run: one 1 GiB bank at 0x8000_0000 (map
``t1g``), the idmap every 64 MiB (16 addresses), 4K, VA_BITS 39 and 48, both block settings:
64 rows per layout, in units of 8 rows."""

from __future__ import annotations

from pathlib import Path

from sweep.plan.config import SweepConfig, validate_config

T1G = 'name = "t1g"\n[[banks]]\nbase = 0x8000_0000\nsize = "1G"\n'


def write_map(folder: Path) -> Path:
    """The ``t1g`` memory-map file, written in ``folder``."""
    path = folder / "t1g.toml"
    path.write_text(T1G)
    return path


def small_config(map_file: Path, **changes) -> SweepConfig:
    """The small sweep's config on ``map_file``, with ``changes`` to its keys."""
    raw = {
        "name": "small",
        "memory_maps": [str(map_file)],
        "granules": ["4K"],
        "va_bits": [39, 48],
        "layouts": ["linux-4.8"],
        "block_mappings": [False, True],
        "placement": {"kind": "stride", "step": "64M"},
        "unit_rows": 8,
    }
    raw.update(changes)
    return validate_config(raw)
