"""Issue 21, item 16: a device tree whose memory banks overlap is read as Linux reads it (the
union, as ``memblock_add`` keeps it), with one warning line naming both nodes; a TOML map with
overlapping banks is still refused (it is written by hand: a mistake)."""

from __future__ import annotations

import logging

import pytest
from test_loaders import blob_of

from sweep.core.errors import ValidationError
from sweep.formats.loaders import load_memory_map

G = 1 << 30


def test_overlapping_dtb_banks_are_merged_with_one_warning_naming_both(tmp_path, caplog):
    # The shape of exynosautov920-sadk.dtb: a bank inside another, and a separate one.
    path = tmp_path / "overlap.dtb"
    path.write_bytes(blob_of([(0x8000_0000, 4 * G), (0x9000_0000, G), (0x10_0000_0000, G)]))
    with caplog.at_level(logging.WARNING, logger="sweep.formats.loaders"):
        memory_map = load_memory_map(path)
    assert sorted((b.base, b.size) for b in memory_map.banks) == [
        (0x8000_0000, 4 * G),
        (0x10_0000_0000, G),
    ]
    merged = [r.getMessage() for r in caplog.records if "merged" in r.getMessage()]
    assert merged == [
        f"{path}: node /memory@90000000 [0x90000000-0xcfffffff] overlaps node /memory@80000000"
        " [0x80000000-0x17fffffff]: merged into [0x80000000-0x17fffffff], as Linux's"
        " memblock_add does"
    ]


def test_partly_overlapping_dtb_banks_become_their_union(tmp_path):
    path = tmp_path / "partly.dtb"
    path.write_bytes(blob_of([(0x8000_0000, 2 * G), (0xC000_0000, 2 * G)]))
    assert [(b.base, b.size) for b in load_memory_map(path).banks] == [(0x8000_0000, 3 * G)]


def test_overlapping_toml_banks_are_still_refused(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(
        '[[banks]]\nbase = 0x8000_0000\nsize = "2G"\n[[banks]]\nbase = 0xc000_0000\nsize = "2G"\n'
    )
    with pytest.raises(ValidationError, match="overlaps"):
        load_memory_map(path)
