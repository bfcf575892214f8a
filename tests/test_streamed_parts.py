"""Every-page parts written from a stream of tables: the rows and summary of the part written
whole, never a unit's runs held at once, and still atomic (nothing left by a stream that fails)."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
from test_runs import MAPS, write_maps

import sweep.run.executors as executors
from sweep.core.memmap import MemoryMap
from sweep.model import intervals, refine, runs
from sweep.model.runs import Group, runs_table, runs_tables
from sweep.plan.config import validate_config
from sweep.plan.plugins import registry
from sweep.plan.units import make_plan
from sweep.store import summary
from sweep.store.parts import Store, summary_path


def _groups() -> list[Group]:
    reg = registry()
    return [
        Group(MemoryMap(name, banks), 4096, 36, reg.layouts[layout], blocks)
        for name, banks in MAPS.items()
        for layout in ("linux-4.8", "linux-6.9")
        for blocks in (False, True)
    ]


def test_a_unit_written_in_small_chunks_is_the_part_written_whole(tmp_path, monkeypatch):
    # Chunks of 7 runs, windows of 7 intervals, builder calls of 50 pages and room for 5
    # finished runs of later groups: the groups interleave, later ones wait their turn, and
    # windows are cut across chunks; the part's rows, in order, and its summary are the whole's.
    groups = _groups()
    whole = runs_table(groups)
    monkeypatch.setattr(intervals, "CHUNK_RUNS", 7)
    monkeypatch.setattr(refine, "WINDOW", 7)
    monkeypatch.setattr(runs, "BATCH", 50)
    monkeypatch.setattr(runs, "HELD", 64)
    monkeypatch.setattr(runs, "BUFFERED", 5)
    chunks = list(runs_tables(groups))
    assert len(chunks) == -(-whole.num_rows // 7) and {t.num_rows for t in chunks[:-1]} == {7}
    store = Store(str(tmp_path / "ds"))
    one, two = (f"granule-4096/va_bits-36/part-00000{k}.parquet" for k in (0, 1))
    streamed = store.write_part(one, iter(chunks))
    written = store.write_part(two, whole)
    assert streamed.rows == written.rows == whole.num_rows > 1000
    a, b = pq.read_table(tmp_path / "ds" / one), pq.read_table(tmp_path / "ds" / two)
    assert a.schema.equals(b.schema) and a.to_pylist() == b.to_pylist() == whole.to_pylist()
    assert pq.ParquetFile(tmp_path / "ds" / one).num_row_groups == len(chunks)
    expected = summary.summarize(whole)
    assert 1 < expected.num_rows < whole.num_rows // summary.SIDECAR_RATIO
    assert summary.merge([summary.summarize(t) for t in chunks]).equals(expected)
    assert streamed.summary == written.summary  # the same file, byte for byte
    side = pq.read_table(tmp_path / "ds" / summary_path(one))
    assert side.to_pylist() == expected.to_pylist()


def _failing(tables):
    """The first two tables of ``tables``, then an error, as a worker killed midway."""
    for k, table in enumerate(tables):
        if k == 2:
            raise RuntimeError("stream broke")
        yield table


def test_a_stream_that_fails_midway_leaves_no_part_and_fails_the_unit(tmp_path, monkeypatch):
    config = validate_config(
        {
            "memory_maps": write_maps(tmp_path),
            "granules": ["4K"],
            "va_bits": [36],
            "layouts": ["linux-6.9"],
            "placement": {"kind": "every-page"},
        }
    )
    plan = make_plan(config, base_dir=str(tmp_path))
    unit = next(iter(plan.units()))
    monkeypatch.setattr(intervals, "CHUNK_RUNS", 16)
    store = Store(str(tmp_path / "ds"))
    real = executors.unit_rows
    monkeypatch.setattr(executors, "unit_rows", lambda p, u: _failing(real(p, u)))
    result = executors.run_unit(unit, plan, store)
    assert result.error == "RuntimeError: stream broke" and not result.fatal
    assert not [f for _, _, names in os.walk(tmp_path / "ds") for f in names]
    # A part already there (a resumed sweep's) is left as it was, its summary with it.
    monkeypatch.setattr(executors, "unit_rows", real)
    done = executors.run_unit(unit, plan, store)
    assert done.error is None and done.summary is not None
    before = {p: (tmp_path / "ds" / p).read_bytes() for p in (unit.path, summary_path(unit.path))}
    monkeypatch.setattr(executors, "unit_rows", lambda p, u: _failing(real(p, u)))
    assert executors.run_unit(unit, plan, store).error == "RuntimeError: stream broke"
    files = sorted(f for _, _, names in os.walk(tmp_path / "ds") for f in names)
    assert files == sorted(os.path.basename(p) for p in before)
    assert all((tmp_path / "ds" / p).read_bytes() == data for p, data in before.items())
