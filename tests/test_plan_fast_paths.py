"""Planning's fast paths give what the general ones give: a few addresses sorted as Python ints
(``sweep.plan.placements.FEW``), the random placement's in-place arithmetic and its one-bank
case, every map's random placements drawn at once (``placements_many``), a map directory
listed by one pattern and read a batch ahead. Expected values come from
the independent reference of tests/test_inputs.py, numpy's ``np.unique`` or ``fnmatch``.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import pytest
from test_inputs import expected_random

from sweep.core.errors import ValidationError
from sweep.core.memmap import MemoryMap
from sweep.plan.config import validate_config
from sweep.plan.memory_maps import SKIPPED_IN_DIRECTORIES, select_memory_maps
from sweep.plan.placements import FEW, placements, placements_many
from sweep.plan.plugins import registry
from sweep.plan.units import make_plan

ONE_BANK = [(0x8000_0000, 0x7F00_0000)]
BANKS = [(0x8000_0000, 0x7F00_0000), (0x8_8000_0000, 6 << 30), (0x10_0000_0000, 0x20_0000)]


@pytest.mark.parametrize("count", [1, FEW - 1, FEW, FEW + 1, 4 * FEW])
@pytest.mark.parametrize("banks", [ONE_BANK, BANKS], ids=["one-bank", "three-banks"])
@pytest.mark.parametrize("granule", [4096, 65536])
def test_random_placement_is_the_reference_on_both_sides_of_few(count, banks, granule):
    memory_map = MemoryMap("juno", banks)
    trimmed = memory_map.trimmed(granule)
    params = {"kind": "random", "count": count, "seed": 5}
    got = placements(memory_map, granule, "random", registry().placements["random"], params)
    drawn = expected_random(trimmed, granule, count, 5, "juno")
    assert got.addresses.dtype == np.uint64
    assert got.addresses.tolist() == sorted({a // granule * granule for a in drawn})


@pytest.mark.parametrize("size", [FEW - 1, FEW, FEW + 1, 3 * FEW])
@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.uint32])
def test_few_addresses_are_aligned_sorted_and_deduplicated_as_np_unique_does(size, dtype):
    rng = np.random.default_rng(size)
    raw = rng.integers(0, 1 << 31, size).astype(dtype)
    raw[: size // 3] = raw[size // 3 : 2 * (size // 3)] + 7  # the same pages, more than once
    if dtype is np.int64:
        raw[-1] = -4096  # wraps to 2^64 - 4096, as astype(np.uint64) does
    memory_map = MemoryMap("m", [(0, 1 << 32)])
    got = placements(memory_map, 4096, "test", lambda *args: raw, {"kind": "test"})
    expected = np.unique(raw.astype(np.uint64) & ~np.uint64(4095))
    assert got.addresses.dtype == expected.dtype
    assert got.addresses.tolist() == expected.tolist()


MANY = [
    MemoryMap("one-bank", ONE_BANK),
    MemoryMap("three-banks", BANKS),
    MemoryMap("tiny", [(0x4000_0000, 0x4_0000)]),  # 4 pages at 64K: most draws repeat one
    MemoryMap("two-tiny", [(0x4000_0000, 0x2_0000), (0x9000_0000, 0x3_0000)]),
]


@pytest.mark.parametrize("count", [1, 13, FEW + 1, 200])
@pytest.mark.parametrize("granule", [4096, 65536])
def test_maps_drawn_at_once_are_each_maps_reference_draw(count, granule):
    fn = registry().placements["random"]
    params = {"kind": "random", "count": count, "seed": 7}
    got = placements_many(MANY, granule, fn, params)
    assert len(got) == len(MANY)
    for memory_map, these in zip(MANY, got, strict=True):
        drawn = expected_random(memory_map.trimmed(granule), granule, count, 7, memory_map.name)
        expected = sorted({a // granule * granule for a in drawn})
        assert these.addresses.dtype == np.uint64
        assert these.addresses.tolist() == expected
    if granule == 65536 and count > 4:  # the tiny maps' draws repeated pages
        assert len(got[2]) == 4 and len(got[3]) == 5


def test_a_map_that_fails_at_once_fails_alone(tmp_path):
    """One map without a whole 64K page: drawing every map at once fails, so each is drawn
    alone; that map's failure is its own and the others get their reference draws."""
    for name, (base, size) in {"a": (0x8000_0000, 1 << 30), "b": (0x4000_0000, 0x1000),
                               "c": (0x9000_0000, 3 << 28)}.items():  # fmt: skip
        (tmp_path / f"{name}.toml").write_text(
            f'name = "{name}"\n[[banks]]\nbase = {base}\nsize = {size}\n'
        )
    config = validate_config(
        {"memory_maps": [str(tmp_path)], "granules": ["4K", "64K"], "va_bits": [48],
         "layouts": ["merged"], "block_mappings": [False],
         "placement": {"kind": "random", "count": 9, "seed": 2}}
    )  # fmt: skip
    plan = make_plan(config)
    assert [f["unit"] for f in plan.failures] == ["plan:b:64K"]
    for granule in (4096, 65536):
        found = plan.decoder.placements_of(granule)
        for memory_map, these in zip(plan.memory_maps.values(), found, strict=True):
            if memory_map.name == "b" and granule == 65536:
                assert these is None
                continue
            drawn = expected_random(memory_map.trimmed(granule), granule, 9, 2, memory_map.name)
            assert these.addresses.tolist() == sorted({a // granule * granule for a in drawn})


def test_maps_are_not_drawn_at_once_when_one_fails():
    fn = registry().placements["random"]
    tiny = MemoryMap("tiny-4k", [(0x4000_0000, 0x1000)])  # no whole 64K page
    params = {"kind": "random", "count": 3, "seed": 7}
    assert placements_many([*MANY, tiny], 65536, fn, params) is None
    assert placements_many(MANY, 65536, fn, {**params, "count": 0}) is None


def test_a_plugin_that_draws_a_map_at_a_time_is_not_drawn_at_once():
    assert placements_many(MANY, 4096, lambda *args: np.zeros(1, np.uint64), {"kind": "x"}) is None


def test_a_map_directory_skips_what_fnmatch_skips_and_lists_by_name(tmp_path):
    names = ["b.toml", "a.toml", "a.b.toml", "README", "README.txt", "notes.md", ".hidden", "_x"]
    for name in names:
        (tmp_path / name).write_text(
            f'name = "{name}"\n[[banks]]\nbase = 0x8000_0000\nsize = 4096\n'
        )
    kept = sorted(
        n for n in names if not any(fnmatch.fnmatch(n, p) for p in SKIPPED_IN_DIRECTORIES)
    )
    assert list(select_memory_maps([str(tmp_path)])) == kept == ["a.b.toml", "a.toml", "b.toml"]


@pytest.mark.parametrize("ahead", [(1, 1 << 20), (2, 1 << 20), (256, 1), (256, 1 << 20)])
def test_a_directory_read_ahead_fails_at_the_first_bad_file_in_order(tmp_path, monkeypatch, ahead):
    import sweep.formats.loaders
    import sweep.plan.memory_maps

    monkeypatch.setattr(sweep.plan.memory_maps, "READ_AHEAD", ahead)
    monkeypatch.setattr(sweep.formats.loaders, "MAX_FILE_BYTES", 200)  # c.toml: too large
    bank = "[[banks]]\nbase = 0x8000_0000\nsize = {}\n"
    files = {"a": bank.format(4096), "b": bank.format(0), "c": bank.format(4096) + "#" * 200}
    for name, text in {**files, "d": bank.format(4096)}.items():
        (tmp_path / f"{name}.toml").write_text(text)
    with pytest.raises(ValidationError, match=r"b\.toml: line 1 \(bank 0\): bank at 0x80000000"):
        select_memory_maps([str(tmp_path)])
    (tmp_path / "b.toml").write_text(bank.format(4096))
    with pytest.raises(ValidationError, match=r"c\.toml: more than 200 bytes"):
        select_memory_maps([str(tmp_path)])
    (tmp_path / "c.toml").write_text(bank.format(4096))
    assert list(select_memory_maps([str(tmp_path)])) == ["a", "b", "c", "d"]
