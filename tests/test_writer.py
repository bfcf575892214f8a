"""Part files as ``sweep.store.encoding.writer_options`` writes them: what the footer says, and the
same rows back."""

from __future__ import annotations

import pyarrow.parquet as pq

from sweep.plan.config import validate_config
from sweep.read.results import load as read_results
from sweep.run.driver import run_sweep


def test_parts_use_the_chosen_encodings_and_read_back_exactly(tmp_path):
    config = validate_config(
        {
            "memory_maps": ["juno"],
            "granules": ["4K"],
            "va_bits": [39],
            "placement": {"kind": "stride", "step": "256M"},
            "tag": {"seed": 3},
        }
    )
    report = run_sweep(config, out=str(tmp_path / "out"), workers=1, progress=False)
    # 8 GiB / 256M = 32 placements x 7 layouts (every registered era) x 2 block settings (the
    # defaults of a config that names neither)
    assert report.ok and report.rows_written == 32 * 7 * 2
    (part,) = (tmp_path / "out").rglob("part-*.parquet")
    meta = pq.ParquetFile(part).metadata
    schema = pq.read_schema(part)
    assert not any(f.nullable for f in schema)
    chunks = {
        meta.schema.column(i).name: meta.row_group(0).column(i) for i in range(meta.num_columns)
    }
    assert "RLE_DICTIONARY" in chunks["memory_map"].encodings
    assert "RLE_DICTIONARY" in chunks["layout"].encodings
    for name in ("idmap_pa", "tag_random", "margin", "tables_l3"):  # 64-bit: byte planes
        assert "BYTE_STREAM_SPLIT" in chunks[name].encodings, name
        assert "RLE_DICTIONARY" not in chunks[name].encodings, name
    for name in ("levels", "granule", "cpus"):  # 32 bits in Parquet: plain
        assert "PLAIN" in chunks[name].encodings, name
        assert "BYTE_STREAM_SPLIT" not in chunks[name].encodings, name
    assert chunks["tag_random"].compression == "ZSTD"
    with_stats = {name for name, chunk in chunks.items() if chunk.is_stats_set}
    assert with_stats == {"granule", "va_bits", "block_mappings", "idmap_pa"}
    rows = read_results(str(tmp_path / "out"))
    assert len(rows) == 32 * 7 * 2 and rows["tag_random"].astype(bool).any()
    assert sorted(set(rows["idmap_pa"])) == [0x8000_0000 + k * (256 << 20) for k in range(8)] + [
        0x8_8000_0000 + k * (256 << 20) for k in range(24)
    ]
