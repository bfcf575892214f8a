"""A part's rows as runs: consecutive rows with equal group columns, the first pass of a part
summary (:func:`sweep.store.summary.summarize`).

A work unit's rows come in long runs (one configuration, placements in order), so the summary
reduces rows to runs in a few contiguous passes a column, then the runs (a tenth of the rows on
units of many small boards) to their groups. Most of the work per row is here: finding the runs
compares neighbours, and ``margin_bits`` (a margin's bit length) is computed once a run.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from sweep.core.kconfig import bit_length

BLOCK = 1 << 15
"""Rows whose margins are compared at a time: scratch arrays this small stay in cache, where
ones the size of a column cost the first touch of their pages more than the arithmetic (on
units of ``bench/bench_driver.py``'s 2,000 random boards, finding the runs took 3x as long)."""


class Runs(NamedTuple):
    """Runs of consecutive rows with equal group columns and margin bit length."""

    begins: np.ndarray
    """Per row: whether a run begins there."""
    starts: np.ndarray
    """The rows where runs begin, in order."""
    bits: np.ndarray
    """Each run's margin bit length (``margin_bits``, int8)."""


def find_runs(keys: list[np.ndarray], margin: np.ndarray) -> Runs:
    """The runs of rows with equal ``keys`` and margin bit length. Two non-negative numbers have
    the same bit length exactly where their XOR is at most their AND (they share their highest
    bit), so no row's bit length is computed; a margin from 2^63 (negative here) is one
    ``bit_length`` reads by the range of all rows: then per row."""
    n = len(margin)
    begins = np.empty(n, dtype=bool)
    begins[0] = True
    bits = None
    if margin.min() >= 0:
        xor, both = np.empty(BLOCK, np.int64), np.empty(BLOCK, np.int64)
        for low in range(0, n - 1, BLOCK):
            after = margin[low + 1 : low + 1 + BLOCK]
            m = len(after)
            before = margin[low : low + m]
            np.bitwise_xor(after, before, out=xor[:m])
            np.bitwise_and(after, before, out=both[:m])
            np.greater(xor[:m], both[:m], out=begins[low + 1 : low + 1 + m])
    else:
        bits = bit_length(margin)
        np.not_equal(bits[1:], bits[:-1], out=begins[1:])
    for key in keys:
        begins[1:] |= key[1:] != key[:-1]
    starts = np.flatnonzero(begins)
    bits = bit_length(margin[starts]) if bits is None else bits[starts]
    return Runs(begins, starts, bits.astype(np.int8))


def run_values(table: pa.Table, margin: np.ndarray, runs: Runs) -> dict[str, np.ndarray]:
    """The summary ``VALUES`` of each run of ``table``'s rows: a contiguous ``reduceat`` pass
    per column but where a run's rows are known to share more. Where idmap addresses ascend
    along every run (placements in order), a run's lowest is its first row's, its highest its
    last row's; table sizes are each run's first row's and those of the few rows it changes at
    (:func:`_changing`)."""
    starts = runs.starts
    records = np.diff(np.append(starts, table.num_rows))
    pages = as_numpy(table["pages"]) if "pages" in table.column_names else None
    table_bytes = as_numpy(table["table_bytes"]).view(np.int64)
    idmap = as_numpy(table["idmap_pa"]).view(np.int64)
    last = as_numpy(table["idmap_pa_last"]).view(np.int64) if pages is not None else idmap
    if _ascending(idmap, runs) and (pages is None or _ascending(last, runs)):
        lowest, highest, at_lowest = idmap[starts], last[starts + records - 1], starts
    else:
        lowest = np.minimum.reduceat(idmap, starts)
        highest = np.maximum.reduceat(last, starts)
        at = np.flatnonzero(idmap == np.repeat(lowest, records))
        at_lowest = at[np.searchsorted(at, starts)]
    smallest, largest, total = _changing(table_bytes, runs, records)
    if pages is not None:
        total = np.add.reduceat(table_bytes * pages.astype(np.float64), starts)
    return {
        "rows": records if pages is None else np.add.reduceat(pages, starts),
        "records": records,
        "min_margin": np.minimum.reduceat(margin, starts),
        "min_table_bytes": smallest,
        "max_table_bytes": largest,
        "sum_table_bytes": total.astype(np.float64),
        "idmap_from": lowest,
        "idmap_to": highest,
        "tag_random": as_numpy(table["tag_random"])[at_lowest],  # the first at the lowest
    }


def _changing(values: np.ndarray, runs: Runs, records: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each run's smallest, largest and sum of ``values`` (int64) from its first value and the
    rows where the value changes along it (a unit's table size changes along few of its runs,
    at few placements): a pass over the rows, not one per run and column. The sum wraps as
    ``np.add.reduceat`` does: each change adds its step times the rows from it to the run's end.
    Where it changes at more than one row for four runs, ``reduceat`` (as fast at 30,000 changes
    along 52,000 runs, the most of a unit of ``bench/bench_driver.py``'s random boards)."""
    starts = runs.starts
    changes = np.flatnonzero(values[1:] != values[:-1]) + 1
    inner = changes[~runs.begins[changes]]
    if 4 * len(inner) > len(starts):
        return tuple(f.reduceat(values, starts) for f in (np.minimum, np.maximum, np.add))
    smallest = values[starts]
    largest, total = smallest.copy(), smallest * records
    run = np.searchsorted(starts, inner, side="right") - 1
    np.minimum.at(smallest, run, values[inner])
    np.maximum.at(largest, run, values[inner])
    steps = (values[inner] - values[inner - 1]) * (starts[run] + records[run] - inner)
    np.add.at(total, run, steps)
    return smallest, largest, total


def _ascending(values: np.ndarray, runs: Runs) -> bool:
    """Whether ``values`` fall only where a run begins (never along a run)."""
    return bool(runs.begins[np.flatnonzero(values[1:] < values[:-1]) + 1].all())


def as_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column's values as one NumPy array; booleans as int8 0 and 1, unpacked from their
    bitmap (a tenth of the time of ``to_numpy``'s bools)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if not pa.types.is_boolean(column.type):
        return column.to_numpy(zero_copy_only=False)
    if column.null_count or not len(column):
        return column.to_numpy(zero_copy_only=False).view(np.int8)
    bits = np.frombuffer(column.buffers()[1], dtype=np.uint8)
    end = column.offset + len(column)
    return np.unpackbits(bits, count=end, bitorder="little")[column.offset :].view(np.int8)
