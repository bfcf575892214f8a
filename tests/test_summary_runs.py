"""sweep.store.summary against a recount of every row with pandas: how the summary finds its
runs (neighbours' margins compared by their bits, :mod:`sweep.store.summary_runs`) and takes
their values (from a run's ends where addresses ascend, from the few rows a table size changes
at) must not show, whatever the rows' order, chunks and dictionaries; nor how its file is
encoded."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep.core.kconfig import bit_length
from sweep.store import summary
from sweep.store.encoding import non_nullable, summary_bytes

NAMES = ["memory_map", "layout", "mappings", "kernel", "unrunnable"]


def recount(table: pa.Table) -> pd.DataFrame:
    """The summary by its definition: rows grouped by ``GROUP`` in order of first appearance,
    each group's aggregates straight from its rows (``tag_random``: the first row's at the
    group's lowest ``idmap_pa``)."""
    frame = table.to_pandas()
    for name in NAMES:
        frame[name] = frame[name].astype(str)
    margin = frame["margin"].to_numpy().view(np.int64)
    if "margin_last" in frame:
        margin = np.minimum(margin, frame["margin_last"].to_numpy().view(np.int64))
    weight = frame["pages"] if "pages" in frame else 1
    frame = frame.assign(
        margin_bits=bit_length(margin).astype(np.int8),
        m=margin,
        w=weight,
        weighted=frame["table_bytes"] * weight * 1.0,
        last=frame["idmap_pa_last"] if "idmap_pa_last" in frame else frame["idmap_pa"],
    )
    groups = frame.groupby(list(summary.GROUP), sort=False)
    got = groups.agg(
        rows=("w", "sum"),
        records=("w", "size"),
        min_margin=("m", "min"),
        min_table_bytes=("table_bytes", "min"),
        max_table_bytes=("table_bytes", "max"),
        sum_table_bytes=("weighted", "sum"),
        idmap_from=("idmap_pa", "min"),
        idmap_to=("last", "max"),
    )
    got["tag_random"] = frame.loc[groups["idmap_pa"].idxmin(), "tag_random"].to_numpy()
    return got.reset_index()


def rows(seed: int, n: int = 3000) -> pa.Table:
    """Rows of a few configurations in runs of placements: addresses ascending along most
    runs (shuffled in some tables), table sizes constant along most runs, margins either side
    of powers of two, a random tag a row."""
    rng = np.random.default_rng(seed)
    config = np.repeat(np.arange(n), rng.integers(1, 400, n))[:n] % 7
    ascending = rng.random() < 0.7
    step = rng.integers(0, 3, n).astype(np.uint64) * np.uint64(1 << 21)
    idmap = np.cumsum(step) if ascending else rng.permutation(np.cumsum(step))
    sizes = rng.integers(1, 1 << 24, 7) if rng.random() < 0.5 else np.full(7, 1 << 20)
    bumps = rng.random(n) < rng.choice([0.0, 0.002, 0.5])  # along few runs, or many
    table_bytes = sizes[config] + bumps * rng.integers(1, 1 << 12, n)
    bits = rng.integers(0, 48, n // 50 + 1).repeat(50)[:n]
    margin = (np.uint64(1) << bits.astype(np.uint64)) + rng.integers(-1, 2, n).astype(np.uint64)
    margin[rng.random(n) < 0.05] = 0
    string = ["a", "bb", ""]
    columns = {
        "memory_map": pa.array([f"board-{c % 3}" for c in config]).dictionary_encode(),
        "granule": pa.array(np.where(config < 5, 4096, 16384), pa.int32()),
        "va_bits": pa.array(np.full(n, 48), pa.int8()),
        "layout": pa.array([f"layout-{c % 2}" for c in config]).dictionary_encode(),
        "block_mappings": pa.array(config % 2 == 1),
        "mappings": pa.array(["all-dram"] * n).dictionary_encode(),
        "cpus": pa.array(np.full(n, 4), pa.int16()),
        "kernel": pa.array([string[c % 3] for c in config]),  # plain strings
        "overlap": pa.array(np.zeros(n, bool)),
        "idmap_in_window": pa.array(rng.random(n) < 0.02),
        "levels": pa.array(np.full(n, 4), pa.int8()),
        "extra_levels": pa.array((config == 3).astype(np.int8)),
        "runnable": pa.array(np.ones(n, bool)),
        "unrunnable": pa.array([""] * n).dictionary_encode(),
        "margin": pa.array(margin, pa.uint64()),
        "table_bytes": pa.array(table_bytes.astype(np.int64)),
        "idmap_pa": pa.array(idmap, pa.uint64()),
        "tag_random": pa.array(rng.integers(0, 1 << 63, n, dtype=np.uint64), pa.uint64()),
    }
    if seed % 3 == 0:  # runs of pages, each weighing its pages
        columns["pages"] = pa.array(rng.integers(1, 64, n), pa.int64())
        columns["margin_last"] = pa.array(rng.integers(0, 1 << 40, n, dtype=np.uint64))
        columns["idmap_pa_last"] = pa.array(idmap + rng.integers(0, 1 << 20, n, dtype=np.uint64))
    return pa.table(columns)


def chunked(table: pa.Table, cuts: list[int]) -> pa.Table:
    """``table`` in chunks cut at ``cuts`` (as a Parquet file reads back in batches)."""
    edges = [0, *cuts, table.num_rows]
    return pa.concat_tables(table.slice(a, b - a) for a, b in itertools.pairwise(edges))


@pytest.mark.parametrize("seed", range(12))
def test_summarize_is_the_recount_of_its_rows(seed):
    table = rows(seed)
    got = summary.summarize(table)
    assert got.schema.equals(summary.SCHEMA)
    expected = recount(table)[summary.SCHEMA.names]
    pd.testing.assert_frame_equal(got.to_pandas(), expected, check_dtype=False, check_exact=True)
    again = summary.summarize(chunked(table, [1, 700, 701, 2500]))
    assert again.equals(got)  # chunks of equal dictionaries: codes read as they are
    assert pq.read_table(pa.BufferReader(summary_bytes(got))).equals(non_nullable(got))


def test_margins_either_side_of_a_power_of_two_are_other_buckets():
    """Neighbours 2^k - 1 and 2^k, 0 and 1, 2^62 and 2^63 - 1: their bits differ or agree
    exactly as ``bit_length`` says, in any order."""
    table = rows(1, n=16)
    values = [0, 1, 1, 2, 3, 4, 7, 8, 8, 0, (1 << 62) - 1, 1 << 62, (1 << 63) - 1, 5, 6, 0]
    for margin in (values, values[::-1]):
        t = table.set_column(
            table.schema.get_field_index("margin"), "margin", pa.array(margin, pa.uint64())
        )
        got = summary.summarize(t).to_pandas()
        pd.testing.assert_frame_equal(
            got, recount(t)[summary.SCHEMA.names], check_dtype=False, check_exact=True
        )


def test_a_margin_from_2_63_keeps_the_bits_of_every_row_read_at_once():
    """A uint64 margin from 2^63 is negative as int64, which ``bit_length`` reads by the range
    of all the rows it is given: the summary's buckets are those of all rows at once."""
    table = rows(2, n=200)
    margin = np.full(200, 1 << 20, np.uint64)
    margin[50:60] = np.uint64(1 << 63) + np.uint64(5)
    t = table.set_column(table.schema.get_field_index("margin"), "margin", pa.array(margin))
    got = summary.summarize(t).to_pandas()
    pd.testing.assert_frame_equal(
        got, recount(t)[summary.SCHEMA.names], check_dtype=False, check_exact=True
    )


def test_chunks_of_other_or_repeating_dictionaries_are_unified():
    """Chunks whose dictionaries differ, or name a layout twice (each chunk coding it by another
    copy), read as one unified dictionary: as the summary always read them."""
    one = chunked(rows(4, n=400), [150])
    first, second = one["layout"].chunks
    size = len(second.dictionary)
    backwards = pa.DictionaryArray.from_arrays(
        pa.array(size - 1 - second.indices.to_numpy(), pa.int32()),
        second.dictionary.take(pa.array(range(size - 1, -1, -1))),
    )
    twice = pa.concat_arrays([first.dictionary, first.dictionary])
    shifted = pa.array(second.indices.to_numpy() + len(first.dictionary), pa.int32())
    again = [pa.DictionaryArray.from_arrays(first.indices, twice)]
    again.append(pa.DictionaryArray.from_arrays(shifted, twice))
    for layout in ([first, backwards], again):
        column = pa.chunked_array(layout)
        where = one.schema.get_field_index("layout")
        unified = one.set_column(where, "layout", column.unify_dictionaries().combine_chunks())
        got = summary.summarize(one.set_column(where, "layout", column))
        assert got.equals(summary.summarize(unified))
        pd.testing.assert_frame_equal(
            got.to_pandas(),
            recount(unified)[summary.SCHEMA.names],
            check_dtype=False,
            check_exact=True,
        )
