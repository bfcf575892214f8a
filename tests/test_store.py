"""The Parquet store: atomic part files in granule/VA_BITS folders, readable whole by pandas."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import sweep.store.encoding as encoding_module
import sweep.store.parts as store_module
from sweep.core.columns import ROW_COLUMNS
from sweep.core.errors import SweepError
from sweep.core.memmap import MemoryMap
from sweep.model.builder import build_unit
from sweep.model.reference import compute_row
from sweep.plan.plugins import get_layouts
from sweep.read.results import load as read_results
from sweep.store.parts import Store

JUNO = MemoryMap("juno-like", [(0x8000_0000, 2 << 30)])
TWO_BANKS = MemoryMap("two-banks", [(0x8000_0000, 2 << 30), (0x40_0000_0000, 2 << 30)])


def _table(memory_map, granule, va_bits, layout, blocks, addresses):
    return build_unit(
        memory_map,
        granule,
        va_bits,
        get_layouts()[layout],
        blocks,
        np.array(addresses, dtype=np.uint64),
    )


@pytest.fixture
def dataset(tmp_path):
    """Three part files in three partitions, written through the store."""
    store = Store(str(tmp_path / "ds"))
    store.write_part(
        "granule-4096/va_bits-39/part-000000.parquet",
        _table(JUNO, 4096, 39, "merged", False, [0x8008_0000, 0x9000_0000]),
    )
    store.write_part(
        "granule-4096/va_bits-48/part-000000.parquet",
        _table(TWO_BANKS, 4096, 48, "high-only", True, [0x40_0008_0000]),
    )
    store.write_part(
        "granule-65536/va_bits-42/part-000000.parquet",
        _table(JUNO, 65536, 42, "tagged", False, [0x8008_0000]),
    )
    store.write_meta({"name": "t"})
    (tmp_path / "ds" / "_sweep.log").write_text("log\n")
    return store


def test_pandas_reads_the_whole_dataset_with_exact_dtypes(dataset):
    """Issue 9: ``pandas.read_parquet(DIR)`` gives the folder keys as integers of their section 6
    dtypes (int32, int8), so ``df[df.va_bits >= 48]`` works."""
    df = pd.read_parquet(dataset.root)
    assert len(df) == 4
    assert set(df.columns) == set(ROW_COLUMNS)
    assert isinstance(df["memory_map"].dtype, pd.CategoricalDtype)
    assert isinstance(df["layout"].dtype, pd.CategoricalDtype)
    assert sorted(df["memory_map"].astype(str)) == [
        "juno-like",
        "juno-like",
        "juno-like",
        "two-banks",
    ]
    assert sorted(df["granule"]) == [4096, 4096, 4096, 65536]
    assert df["granule"].dtype == np.int32 and df["va_bits"].dtype == np.int8
    assert sorted(df[df.va_bits >= 48]["memory_map"].astype(str)) == ["two-banks"]


def test_rows_are_the_reference_rows(dataset):
    df = read_results(dataset.root)
    for row in df.to_dict("records"):
        memory_map = {"juno-like": JUNO, "two-banks": TWO_BANKS}[row["memory_map"]]
        expected = compute_row(
            memory_map,
            row["granule"],
            row["va_bits"],
            row["layout"],
            row["block_mappings"],
            row["idmap_pa"],
            row["tag_random"],
        )
        for column, value in expected.items():
            assert row[column] == value, column


def test_read_results_gives_exact_dtypes_in_order(dataset):
    df = read_results(dataset.root)
    assert list(df.columns) == list(ROW_COLUMNS)
    for column, dtype in ROW_COLUMNS.items():
        assert str(df[column].dtype) == dtype, column


def test_filters_skip_other_folders(dataset, tmp_path):
    # A broken file in another folder is never opened when a granule filter prunes it.
    bad = tmp_path / "ds" / "granule-65536" / "va_bits-42" / "part-000001.parquet"
    bad.write_bytes(b"not parquet")
    rows = read_results(dataset.root, granule=4096)
    assert sorted(rows["idmap_pa"]) == [0x8008_0000, 0x9000_0000, 0x40_0008_0000]
    with pytest.raises(SweepError, match="part-000001.parquet"):
        read_results(dataset.root)  # without the filter the broken file is read


def test_pandas_filters_skip_files_by_their_statistics(dataset):
    """Each part holds one granule and VA_BITS, so its statistics are exact (min = max) and a
    pandas/pyarrow filter skips the whole file."""
    for rel in dataset.parts():
        stats = pq.ParquetFile(f"{dataset.root}/{rel}").metadata.row_group(0)
        names = [stats.column(i).path_in_schema for i in range(stats.num_columns)]
        for key in ("granule", "va_bits"):
            column = stats.column(names.index(key)).statistics
            assert column.min == column.max == int(rel.split(f"{key}-")[1].split("/")[0])
    df = pd.read_parquet(dataset.root, filters=[("granule", "=", 4096), ("va_bits", "=", 48)])
    assert len(df) == 1 and df["memory_map"].iloc[0] == "two-banks"


def test_part_files_are_zstd_and_hold_the_folder_keys(dataset):
    path = f"{dataset.root}/granule-4096/va_bits-39/part-000000.parquet"
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    names = pq.ParquetFile(path).schema_arrow.names
    assert "granule" in names and "va_bits" in names
    assert "idmap_pa" in names


def test_row_groups_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(encoding_module, "ROW_GROUP_ROWS", 3)
    store = Store(str(tmp_path / "ds"))
    addresses = [0x8000_0000 + k * 0x10_0000 for k in range(7)]
    store.write_part(
        "granule-4096/va_bits-39/part-000000.parquet",
        _table(JUNO, 4096, 39, "merged", False, addresses),
    )
    meta = pq.ParquetFile(f"{store.root}/granule-4096/va_bits-39/part-000000.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3, 3, 1]


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "ds"))

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(encoding_module.pq, "ParquetWriter", explode)
    with pytest.raises(OSError):
        store.write_part(
            "granule-4096/va_bits-39/part-000000.parquet",
            _table(JUNO, 4096, 39, "merged", False, [0x8008_0000]),
        )
    assert store.parts() == set()
    assert list((tmp_path / "ds").rglob("*.parquet")) == []


def test_parts_ignores_temporaries_and_they_can_be_removed(dataset, tmp_path):
    folder = tmp_path / "ds" / "granule-4096" / "va_bits-39"
    (folder / ".part-000001.parquet.123.tmp").write_bytes(b"half")
    (tmp_path / "ds" / "._sweep.json.77.tmp").write_text("{")
    (tmp_path / "ds" / "._manifest.json.78.tmp").write_text("{")
    (tmp_path / "ds" / ".notes.tmp").write_text("not ours")
    assert dataset.parts() == {
        "granule-4096/va_bits-39/part-000000.parquet",
        "granule-4096/va_bits-48/part-000000.parquet",
        "granule-65536/va_bits-42/part-000000.parquet",
    }
    assert sorted(dataset.remove_temporaries()) == [
        "._manifest.json.78.tmp",
        "._sweep.json.77.tmp",
        "granule-4096/va_bits-39/.part-000001.parquet.123.tmp",
    ]
    assert not (folder / ".part-000001.parquet.123.tmp").exists()
    assert (tmp_path / "ds" / ".notes.tmp").exists()
    assert len(pd.read_parquet(dataset.root)) == 4


def test_clear_removes_only_the_sweep(dataset, tmp_path):
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    assert dataset.has_results()
    dataset.clear()
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["notes.txt"]
    assert not dataset.has_results()


def test_meta_round_trips(dataset):
    dataset.write_meta({"name": "x", "counts": {"units": 3}})
    assert dataset.read_meta() == {"name": "x", "counts": {"units": 3}}
    assert not [
        p
        for p in dataset.fs.get_file_info(store_module.pafs.FileSelector(dataset.root))
        if p.base_name.startswith(".")
    ]


def test_fsspec_urls_write_the_same_dataset(tmp_path):
    pytest.importorskip("fsspec")
    store = Store(f"memory://{tmp_path.name}/ds")
    store.write_part(
        "granule-4096/va_bits-39/part-000000.parquet",
        _table(JUNO, 4096, 39, "merged", False, [0x8008_0000]),
    )
    store.write_meta({"name": "m"})
    assert store.parts() == {"granule-4096/va_bits-39/part-000000.parquet"}
    assert store.read_meta() == {"name": "m"}
    df = read_results(f"memory://{tmp_path.name}/ds")
    assert list(df["idmap_pa"]) == [0x8008_0000]
    assert df["va_bits"].dtype == np.int8


def test_a_part_reports_the_rows_size_and_sha256_of_its_file(tmp_path):
    store = Store(str(tmp_path / "ds"))
    rel = "granule-4096/va_bits-39/part-000000.parquet"
    info = store.write_part(rel, _table(JUNO, 4096, 39, "merged", False, [0x8008_0000] * 3))
    data = (tmp_path / "ds" / rel).read_bytes()
    assert info.rows == 3 == pq.ParquetFile(tmp_path / "ds" / rel).metadata.num_rows
    assert info.bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()


def test_a_part_is_flushed_before_its_rename_and_its_folders_after(tmp_path, monkeypatch):
    """A power cut after the rename must not leave a named but empty file: the data, then the
    new name in each folder it created, reach the disk."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", dst))
        real_replace(src, dst)

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    monkeypatch.setattr(store_module.os, "replace", replace)
    store = Store(str(tmp_path / "ds"))
    rel = "granule-4096/va_bits-39/part-000000.parquet"
    store.write_part(rel, _table(JUNO, 4096, 39, "merged", False, [0x8008_0000]))
    root = str(tmp_path / "ds")
    final = f"{root}/{rel}"
    assert events[0][0] == "fsync" and events[0][1].startswith(f"{root}/granule-4096/va_bits-39/.")
    assert events[1] == ("rename", final)
    assert set(events[2:]) == {
        ("fsync", f"{root}/granule-4096/va_bits-39"),
        ("fsync", f"{root}/granule-4096"),
        ("fsync", root),
        ("fsync", str(tmp_path)),  # the dataset's folder was new too
    }


def test_a_folder_of_other_files_is_named_by_one_of_them(tmp_path):
    (tmp_path / "ds").mkdir()
    store = Store(str(tmp_path / "ds"))
    assert store.foreign_file() is None
    (tmp_path / "ds" / "_sweep.json").write_text("{}")
    (tmp_path / "ds" / "granule-4096").mkdir()
    assert store.foreign_file() is None
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    assert store.foreign_file() == "notes.txt"


def test_a_folder_holding_only_a_placeholder_is_empty(tmp_path):
    """The clone's results/ holds .gitkeep: the quick start's `sweep run` must write there."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / ".gitkeep").write_text("")
    assert Store(str(tmp_path / "ds")).foreign_file() is None
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    assert Store(str(tmp_path / "ds")).foreign_file() == "notes.txt"
