"""sweep.store.summary: the per-part aggregates in a summary file beside each part (in the footer
of older parts), and the queries that read them.

Expected values are worked out by hand below, or recounted from all rows with pandas.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import HIGH_ONLY_ONE_TREE, one_tree_registered
from results_data import LAYOUTS, run_small_sweep

from sweep.cli import main
from sweep.read import queries, results
from sweep.read.engine import Results
from sweep.store import summary
from sweep.store.manifest import Manifest
from sweep.store.parts import PART_RE, Store, summary_path

ROWS = pa.table(
    {
        "memory_map": pa.array(["a", "a", "a", "b", "a"]).dictionary_encode(),
        "granule": pa.array([4096] * 5, pa.int32()),
        "va_bits": pa.array([39] * 5, pa.int8()),
        "layout": pa.array(["linux-4.8"] * 5).dictionary_encode(),
        "block_mappings": [False] * 5,
        "overlap": [True, True, False, True, True],
        "idmap_in_window": [False] * 5,
        "levels": pa.array([3] * 5, pa.int8()),
        "extra_levels": pa.array([0] * 5, pa.int8()),
        "margin": pa.array([0, 0, 4096, 0, 0], pa.uint64()),
        "table_bytes": pa.array([8192, 12288, 4096, 4096, 16384], pa.int64()),
        "idmap_pa": pa.array(
            [0x9000_0000, 0x8000_0000, 0x8800_0000, 0x8000_0000, 0xA000_0000], pa.uint64()
        ),
        "tag_random": pa.array([1, 2, 3, 4, 5], pa.uint64()),
    }
)


def test_summarize_by_hand():
    got = summary.summarize(ROWS).to_pandas().set_index(["memory_map", "overlap"])
    # map a, overlapping: rows 0, 1 and 4 (margin 0, bucket 0); map a, not: row 2 (4096 is 2^12,
    # bucket 13); map b: row 3.
    assert sorted(got.index) == [("a", False), ("a", True), ("b", True)]
    a = got.loc[("a", True)]
    assert (a["rows"], a["records"], a["margin_bits"], a["min_margin"]) == (3, 3, 0, 0)
    assert (a["min_table_bytes"], a["max_table_bytes"]) == (8192, 16384)
    assert a["sum_table_bytes"] == 8192 + 12288 + 16384
    # the lowest idmap_pa of the three is row 1's 0x8000_0000, whose tag is 2
    assert (a["idmap_from"], a["idmap_to"], a["tag_random"]) == (0x8000_0000, 0xA000_0000, 2)
    assert got.loc[("a", False), "margin_bits"] == 13
    assert got.loc[("b", True), "tag_random"] == 4


def test_summarize_runs_weighs_pages_and_takes_a_runs_ends():
    runs = ROWS.slice(0, 2).append_column("pages", pa.array([10, 5], pa.int64()))
    runs = runs.append_column("margin_last", pa.array([8192, 0], pa.uint64()))
    runs = runs.append_column("idmap_pa_last", pa.array([0x9000_9000, 0x8000_4000], pa.uint64()))
    runs = runs.set_column(
        runs.schema.get_field_index("margin"), "margin", pa.array([4096, 0], pa.uint64())
    )
    got = summary.summarize(runs).to_pandas().set_index("margin_bits")
    # run 0: margins 4096..8192, smallest 4096 (bucket 13); run 1: 0..0 (bucket 0)
    assert got.loc[13, "rows"] == 10 and got.loc[13, "records"] == 1
    assert got.loc[13, "sum_table_bytes"] == 10 * 8192
    assert got.loc[13, "idmap_to"] == 0x9000_9000
    assert got.loc[0, "rows"] == 5 and got.loc[0, "idmap_to"] == 0x8000_4000


def test_encode_decode_and_foreign_values():
    table = summary.summarize(ROWS)
    assert summary.decode(summary.encode(table)).equals(table)
    assert summary.decode("0:whatever") is None  # another format version: not read


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A dense sweep (Juno's DRAM, 0x7f00_0000 + 0x1_8000_0000 bytes, every 2 MiB: 1,016 + 3,072
    = 4,088 placements a configuration, x 3 VA_BITS x 8 layouts (the eras and high-only-merged)
    x 2 block settings = 196,224 rows), whose parts summarize to far fewer rows than they hold:
    each keeps its summary."""
    out = tmp_path_factory.mktemp("summary") / "dense"
    with one_tree_registered():
        got = CliRunner().invoke(
            main,
            ["run", "--out", str(out), "memory_maps=juno", "granules=4K", "placement.kind=stride"]
            + ["placement.step=2M", f"layouts={','.join(LAYOUTS)}", "block_mappings=false,true"]
            + ["mappings=all-dram"]
            + ["--workers", "1"],
        )
    assert got.exit_code == 0, got.output
    assert len(results.load(out, columns=["margin"])) == 4088 * 3 * 8 * 2
    return out


def test_parts_keep_a_summary_file_where_it_is_smaller(tmp_path):
    """Five boards every 1 GiB (2 to 14 placements a configuration): a part keeps its summary
    beside it exactly when the summary has at most one row for ``SIDECAR_RATIO``, with its
    rows, size and SHA-256 in the part's manifest entry; no part keeps one in its footer."""
    sparse = run_small_sweep(tmp_path / "results")
    entries = Manifest.load(Store(str(sparse))).parts
    parts = sorted(sparse.rglob("part-*.parquet"))
    assert parts and not list(sparse.rglob("_summary-*.parquet.*"))
    for path in parts:
        rel = str(path.relative_to(sparse))
        assert summary.SUMMARY_KEY.encode() not in (pq.read_metadata(path).metadata or {})
        rows = pq.read_metadata(path).num_rows
        kept = summary.summarize(pq.read_table(path)).num_rows * summary.SIDECAR_RATIO <= rows
        side = sparse / summary_path(rel)
        assert side.exists() == kept == ("summary" in entries[rel])
        if kept:
            data = side.read_bytes()
            assert entries[rel]["summary"] == {
                "rows": pq.read_metadata(side).num_rows,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
    data = Results(sparse)
    assert data.summary and data.summary_parts == all(
        "summary" in entries[str(p.relative_to(sparse))] for p in parts
    )


def test_a_part_of_a_group_a_row_keeps_no_summary_file(tmp_path):
    """Rows each of their own group: no summary file, and one an earlier write of the same part
    left is removed (it would not be the summary of the new rows)."""
    store = Store(str(tmp_path / "ds"))
    rel = "granule-4096/va_bits-39/part-000000.parquet"
    many = ROWS.slice(0, 1).take([0] * 10)
    assert store.write_part(rel, many).summary is not None
    assert (tmp_path / "ds" / summary_path(rel)).exists()
    distinct = ROWS.set_column(
        ROWS.schema.get_field_index("levels"), "levels", pa.array(range(5), pa.int8())
    )
    info = store.write_part(rel, distinct)
    assert info.summary is None and not (tmp_path / "ds" / summary_path(rel)).exists()


def test_a_tag_a_row_still_summarizes(tmp_path):
    """Rows of one configuration whose margins alternate between two buckets (a random tag a
    row moves the runtime aliases): a thousand runs, two groups. The part keeps its summary, by
    hand: the even rows' margin 2^12 is bucket 13, the odd rows' 2^20 bucket 21."""
    n = 1000
    rows = ROWS.slice(0, 1).take([0] * n)
    margin = pa.array([4096 if i % 2 == 0 else 1 << 20 for i in range(n)], pa.uint64())
    rows = rows.set_column(rows.schema.get_field_index("margin"), "margin", margin)
    assert summary.part_summary(rows) is not None  # 1,000 runs, more than 1,000 / SIDECAR_RATIO
    got = summary.summarize(rows).to_pandas().set_index("margin_bits")
    assert got["rows"].to_dict() == {13: 500, 21: 500}
    assert got.loc[13, "min_margin"] == 4096 and got.loc[21, "min_margin"] == 1 << 20


def test_every_part_carries_its_summary(run_dir):
    parts = sorted(p for p in run_dir.rglob("part-*.parquet"))
    assert parts
    for path in parts:
        rel = str(path.relative_to(run_dir))
        table = pq.read_table(run_dir / summary_path(rel))
        assert table.schema.names == summary.SCHEMA.names
        assert table.schema.types == summary.SCHEMA.types
        assert table["records"].to_pylist() and sum(table["rows"].to_pylist()) == (
            pq.read_metadata(path).num_rows
        )
        keys = PART_RE.fullmatch(rel)
        assert set(table["granule"].to_pylist()) == {int(keys["granule"])}
    # pandas and pyarrow read the parts only: the summary files' leading "_" hides them
    assert len(pd.read_parquet(run_dir, columns=["margin"])) == 4088 * 3 * 8 * 2


def test_summaries_answer_unless_a_filter_names_another_column(run_dir):
    data = Results(run_dir, layout="linux-4.8")
    assert data.summary and data.summary_parts
    other = Results(run_dir, tables_l3=1)
    assert other.summary and not other.summary_parts  # the rows, read in SQL: same answers
    frame = results.load(run_dir)
    expected = frame[frame["tables_l3"] == 1].groupby("memory_map", observed=True).size()
    got = queries.boards(other)["rows"]
    assert got.to_dict() == expected[expected > 0].to_dict()


@pytest.mark.parametrize("n", [1, 3, 20, 500, 10_000])
@pytest.mark.parametrize(
    "filters", [{}, {"layout": HIGH_ONLY_ONE_TREE.name}, {"block_mappings": True}]
)
def test_worst_cases_reads_only_parts_that_can_hold_them(run_dir, n, filters):
    """Recounted with pandas over every row: the worst ``n`` in ``WORST_ORDER``."""
    frame = results.load(run_dir, **filters).astype({"memory_map": str, "layout": str})
    order = [
        ("overlap", False),
        ("idmap_in_window", False),
        ("extra_levels", False),
        ("margin", True),
        ("table_bytes", False),
        ("memory_map", True),
        ("granule", True),
        ("va_bits", True),
        ("layout", True),
        ("block_mappings", True),
        ("idmap_pa", True),
    ]
    expected = frame.sort_values([c for c, _ in order], ascending=[a for _, a in order]).head(n)
    got = queries.worst_cases(Results(run_dir, **filters), n=n)
    assert len(got) == min(n, len(frame))
    names = {c: str for c in got.columns if c in ("memory_map", "layout", "mappings", "kernel")}
    pd.testing.assert_frame_equal(
        got.astype(names),
        expected[list(got.columns)].reset_index(drop=True).astype(names),
        check_dtype=False,
    )


def test_parts_without_summaries_are_summarized_from_their_rows(run_dir, tmp_path):
    """Parts written before summaries existed (no footer key) are still answered, exactly."""
    old = tmp_path / "old"
    for path in run_dir.rglob("part-*.parquet"):
        target = old / path.relative_to(run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pq.read_table(path), target)
    data = Results(old)
    assert data.summary and not data.summary_parts
    for name, query in queries.QUERIES.items():
        pd.testing.assert_frame_equal(query(data), query(Results(run_dir)), obj=name)
