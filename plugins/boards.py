"""Real boards as built-in memory maps, one TOML file each under ``plugins/boards/``.

The facts come from the board table ``tests/data/platforms/platforms.csv`` (Linux DTS files,
U-Boot and EDK2 platform files, QEMU's ``hw/arm/virt.c``; ``tests/test_boards.py`` holds every
file to it); each file names its source. Where the firmware fills
the size in at boot, a file states the typical size it assumes and why, or the board has several
variants (``rpi4-1G``, ``rpi4-2G``, ``rpi4-4G``). Adding a board is adding a file: no Python.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from sweep import hookimpl
from sweep.formats.loaders import load_memory_map

BOARDS_DIR = Path(__file__).with_name("boards")
FAMILY = "board"


def board_files() -> list[Path]:
    return sorted(BOARDS_DIR.glob("*.toml"))


def platforms() -> dict[str, str]:
    """Memory-map name -> the board as the source table names it (the file's ``platform``)."""
    out = {}
    for path in board_files():
        with path.open("rb") as f:
            doc = tomllib.load(f)
        out[doc.get("name", path.stem)] = doc.get("platform", "")
    return out


@hookimpl
def register_memory_maps(register):
    for path in board_files():
        register(load_memory_map(path), family=FAMILY)
