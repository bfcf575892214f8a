"""Every rule of docs/model.md section 1 broken once, each with its one-line message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sweep import Bank, MemoryMap, ValidationError, build
from sweep.core.eras import BY_NAME
from sweep.core.memmap import parse_granule, parse_size
from sweep.model.builder import build_unit
from sweep.model.reference import compute_row
from sweep_plugins.layouts import EraLayout

MERGED = EraLayout(BY_NAME["linux-4.8"])

G = 1 << 30
JUNO = MemoryMap("juno", [(0x8000_0000, 2 * G)])


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("banks", "expected"),
    [
        (
            [(0x8000_0000, 2 * G), (0xC000_0000, G)],
            "memory map 'bad': bank [0xc0000000-0xffffffff] overlaps bank [0x80000000-0xffffffff]",
        ),
        ([(0x8000_0000, 0)], "memory map 'bad': bank 0 at 0x80000000 has size 0, must be above 0"),
        (
            [((1 << 52) - G, 2 * G)],
            "memory map 'bad': bank [0xfffffc0000000-0x1000003fffffff] "
            "ends above 2^52 (0x10000040000000 > 0x10000000000000)",
        ),
        ([(-4096, 8192)], "memory map 'bad': bank 0 base -0x1000 is negative"),
        ([(0x8000_0000,)], "memory map 'bad': bank 0 must be (base, size), got (2147483648,)"),
        ([("0x8000", 4096)], "memory map 'bad': bank 0 base must be an integer, got '0x8000'"),
        ([], "memory map 'bad': has no banks"),
    ],
    ids=["overlap", "size-0", "above-2^52", "negative", "not-a-pair", "not-int", "empty"],
)
def test_bad_memory_map(banks, expected):
    with pytest.raises(ValidationError) as excinfo:
        MemoryMap("bad", banks)
    assert one_line(excinfo) == expected


def test_bank_left_empty_by_trimming():
    tiny = MemoryMap("tiny", [Bank(0x8000_1000, 0x2000)])  # no whole 64K granule inside
    with pytest.raises(ValidationError) as excinfo:
        tiny.trimmed(65536)
    assert one_line(excinfo) == "memory map 'tiny': no bank is left after trimming to 64K granules"


def test_trimming_drops_and_merges():
    mm = MemoryMap("t", [(0x1000, 0x1_0000), (0x1_1000, 0xF000), (0x4_0000, 0x800)])
    # 64K: [0x1000, 0x11000) -> [0x10000, 0x10000) empty; [0x11000, 0x20000) -> [0x20000, ...)
    # empty; the 2 KiB bank is empty too: nothing is left.
    assert mm.trimmed(4096) == [(0x1000, 0x20000)]  # touching banks merge
    with pytest.raises(ValidationError):
        mm.trimmed(65536)


def config(**overrides):
    row = dict(
        memory_map="juno",
        granule=4096,
        va_bits=39,
        layout="linux-4.8",
        block_mappings=False,
        idmap_pa=0x8008_0000,
    )
    row.update(overrides)
    return pd.DataFrame([row])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            dict(idmap_pa=0x1_0000_0000),
            "memory map 'juno': idmap_pa 0x100000000 is outside every 4K-trimmed bank",
        ),
        (dict(va_bits=31), "va_bits: 31 is outside 32..52"),
        (dict(va_bits=53), "va_bits: 53 is outside 32..52"),
        (dict(granule=8192), "granule: 8192 is not one of 4096, 16384, 65536"),
        (
            dict(layout="vhe"),
            "layout: 'vhe' is not one of linux-4.17, linux-4.6, linux-4.8, linux-5.12, linux-6.2, "
            "linux-6.9, linux-7.0",
        ),
        (dict(memory_map="seattle"), "memory_map: 'seattle' is not among the memory maps given"),
        (dict(idmap_pa=1 << 52), "idmap_pa: 0x10000000000000 is not below 2^52"),
        (dict(idmap_pa=-1), "idmap_pa: -1 is negative"),
        (dict(block_mappings=2), "block_mappings: values must be true/false (or 0/1)"),
    ],
    ids=[
        "idmap-outside",
        "va-bits-low",
        "va-bits-high",
        "granule",
        "layout",
        "map-name",
        "idmap-2^52",
        "idmap-negative",
        "blocks",
    ],
)
def test_bad_configuration(overrides, expected):
    with pytest.raises(ValidationError) as excinfo:
        build(config(**overrides), {"juno": JUNO})
    assert one_line(excinfo) == expected


def test_missing_column():
    with pytest.raises(ValidationError) as excinfo:
        build(config().drop(columns=["layout"]), {"juno": JUNO})
    assert one_line(excinfo) == "configs: missing column(s) layout"


def test_reference_rejects_the_same():
    with pytest.raises(ValidationError, match="outside every 4K-trimmed bank"):
        compute_row(JUNO, 4096, 39, "linux-4.8", False, 0x1_0000_0000)
    with pytest.raises(ValidationError, match="va_bits: 60 is outside 32..52"):
        compute_row(JUNO, 4096, 60, "linux-4.8", False, 0x8008_0000)


def test_build_keeps_order_index_and_dtypes():
    frame = pd.concat(
        [
            config(idmap_pa=0x8010_0000, layout="tagged"),  # the old name of linux-4.17
            config(),
            config(granule=65536, idmap_pa=0x8001_2345),
        ],
        ignore_index=True,
    )
    frame.index = [30, 10, 20]
    out = build(frame, {"juno": JUNO})
    assert list(out.index) == [30, 10, 20]
    assert list(out["idmap_pa"]) == [0x8010_0000, 0x8008_0000, 0x8001_0000]  # aligned down
    # Rows carry the era name, whatever name the input used.
    assert list(out["layout"]) == ["linux-4.17", "linux-4.8", "linux-4.8"]
    assert out["memory_map"].dtype == "category" and out["layout"].dtype == "category"
    assert out["granule"].dtype == np.int32 and out["va_bits"].dtype == np.int8
    assert out["idmap_pa"].dtype == np.uint64 and out["tag_random"].dtype == np.uint64
    assert out["tables_l3"].dtype == np.int64 and out["levels"].dtype == np.int8


def test_build_unit_table_schema():
    table = build_unit(JUNO, 4096, 39, MERGED, True, np.array([0x8008_0000], dtype=np.uint64))
    assert table.column("table_pages").to_pylist() == [3]  # docs/model.md example 1, blocks on
    assert table.schema.field("layout").type == pa.dictionary(pa.int32(), pa.string())


def test_parse_size_and_granule():
    assert parse_size("2G") == 2 * G
    assert parse_size("0x8000_0000") == 0x8000_0000
    assert parse_size("512M") == 512 << 20
    assert parse_granule("16K") == 16384
    with pytest.raises(ValidationError, match="size: expected an integer or a size string"):
        parse_size("two gigs")
    with pytest.raises(ValidationError, match="granule: '8K' is not one of 4K, 16K, 64K"):
        parse_granule("8K")


def test_build_takes_plain_banks_for_a_map():
    # docs/model.md example 1 (Juno-like, merged, blocks on): 3 tables, 12 KiB.
    out = build(config(block_mappings=True), {"juno": [(0x8000_0000, 2 * G)]})
    assert (out["table_pages"].item(), out["table_bytes"].item()) == (3, 12_288)
    with pytest.raises(ValidationError) as excinfo:
        build(config(), {"juno": [(0x8000_0000, 0)]})
    assert one_line(excinfo) == (
        "memory map 'juno': bank 0 at 0x80000000 has size 0, must be above 0"
    )
