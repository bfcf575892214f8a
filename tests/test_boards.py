"""Built-in boards match the platforms table they were copied from, and the families are right."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from sweep.core.memmap import PA_LIMIT, Bank
from sweep.formats.loaders import load_memory_map
from sweep.plan.plugins import registry
from sweep_plugins import boards, families

PLATFORMS_CSV = Path(__file__).with_name("data") / "platforms" / "platforms.csv"
GiB = 1 << 30


def _csv_platforms() -> dict[str, list[dict[str, str]]]:
    rows = defaultdict(list)
    with PLATFORMS_CSV.open(newline="") as f:
        for row in csv.DictReader(f):
            rows[row["platform"]].append(row)
    return {p: sorted(r, key=lambda row: int(row["bank_index"])) for p, r in rows.items()}


def _variants() -> dict[str, list[str]]:
    by_platform = defaultdict(list)
    for name, platform in boards.platforms().items():
        by_platform[platform].append(name)
    return by_platform


def test_every_csv_platform_is_a_built_in_board():
    variants = _variants()
    assert set(_csv_platforms()) == set(variants)


@pytest.mark.parametrize("platform", sorted(_csv_platforms()))
def test_board_banks_match_the_csv(platform):
    """Every variant has the CSV's bases, in order; one variant has every size the CSV gives
    (a size of 0 is firmware-filled: the variant chooses it)."""
    rows = _csv_platforms()[platform]
    maps = registry().memory_maps
    names = _variants()[platform]
    exact = []
    for name in names:
        memory_map = maps[name]
        assert registry().families[name] == "board"
        bank_list = sorted(memory_map.banks, key=lambda b: b.base)
        csv_bases = [int(row["base_hex"], 16) for row in rows]
        assert [b.base for b in bank_list] == csv_bases[: len(bank_list)], name
        sizes = [int(row["size_hex"], 16) for row in rows]
        if len(bank_list) == len(rows) and all(
            s == 0 or b.size == s for b, s in zip(bank_list, sizes, strict=True)
        ):
            exact.append(name)
        for row in rows[: len(bank_list)]:  # the files the variant's banks come from
            assert f"{row['source_repo']}/{row['source_path']}" in memory_map.source, name
        if any(int(row["size_hex"], 16) == 0 for row in rows) or any(
            tag in row["notes"] for row in rows for tag in ("FIRMWARE", "PLACEHOLDER", "MAX")
        ):
            assert any(w in memory_map.description for w in ("assumed", "window maximum")), (
                f"{name}: a firmware-filled or placeholder size must say what it assumes"
            )
    assert exact, f"no variant of {platform!r} has the CSV's banks"


def test_known_boards_by_hand():
    """A few facts checked by hand against the DTS files they come from."""
    maps = registry().memory_maps
    assert maps["juno"].banks == [Bank(0x8000_0000, 0x7F00_0000), Bank(0x8_8000_0000, 6 * GiB)]
    assert maps["amd-seattle"].banks == [Bank(1 << 39, 16 * GiB)]
    assert maps["rpi4-1G"].banks == [Bank(0, GiB - (76 << 20))]


def test_board_files_are_the_registered_boards():
    maps = registry().memory_maps
    for path in boards.board_files():
        memory_map = load_memory_map(path)
        assert maps[memory_map.name] == memory_map
        assert memory_map.name == path.stem, "one file per map, named after it"


def test_qemu_virt_family():
    maps = {m.name: m for m in families.qemu_virt_memory_maps()}
    assert list(maps)[:4] == ["qemu-virt-128M", "qemu-virt-256M", "qemu-virt-512M", "qemu-virt-1G"]
    assert list(maps)[-2:] == ["qemu-virt-128G", "qemu-virt-255G"]
    assert len(maps) == 12
    assert maps["qemu-virt-4G"].banks == [Bank(0x4000_0000, 4 * GiB)]
    assert maps["qemu-virt-255G"].banks == [Bank(0x4000_0000, 255 * GiB)]
    assert {registry().families[name] for name in maps} == {"qemu-virt"}


def test_single_bank_family():
    maps = families.single_bank_memory_maps()
    assert [m.name for m in maps][0] == "single-2^30" and maps[-1].name == "single-2^51"
    assert len(maps) == 22
    assert maps[9].banks == [Bank(1 << 39, 2 * GiB)]
    assert all(registry().families[m.name] == "single-bank" for m in maps)


def test_random_family_rules():
    maps = families.random_memory_maps(seed=7, count=200)
    counts = set()
    for memory_map in maps:
        counts.add(len(memory_map.banks))
        for bank in memory_map.banks:
            assert bank.end <= PA_LIMIT
            assert bank.base % (2 << 20) == 0 and bank.size % (2 << 20) == 0 and bank.size > 0
        for granule in (4096, 16384, 65536):
            assert memory_map.trimmed(granule)  # trimming never empties a random map
    assert counts == set(range(1, 9))
    assert max(max(b.end for b in m.banks) for m in maps) > 1 << 48  # "anywhere below 2^52"
    assert min(min(b.base for b in m.banks) for m in maps) < 1 << 32


def test_random_family_is_reproducible_across_processes():
    """Map i depends on (seed, i) only: the same in a fresh interpreter and whatever the count."""
    here = [repr(m) for m in families.random_memory_maps(seed=3, count=4)]
    assert [repr(m) for m in families.random_memory_maps(seed=3, count=2)] == here[:2]
    assert here != [repr(m) for m in families.random_memory_maps(seed=4, count=4)]
    code = (
        "from sweep_plugins.families import random_memory_maps as r;"
        "print('\\n'.join(repr(m) for m in r(3, 4)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.splitlines() == here


def test_default_random_maps_are_registered():
    maps = registry().memory_maps
    names = [n for n, f in registry().families.items() if f == "random"]
    assert names == [f"random-1-{i}" for i in range(8)]
    assert [maps[n] for n in names] == families.random_memory_maps(1, 8)
