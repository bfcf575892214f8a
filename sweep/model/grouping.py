"""How a checked batch of rows (:mod:`sweep.model.rows`) is cut to compute.

Rows that come in long runs of one map, granule, VA_BITS, layout and block setting (a work
unit) are computed run by run, those values shared; rows that do not, but fall in few such
groups (a mixed batch given to ``sweep.build``), are computed group by group: only the idmap
pages and tags are put in group order, and each output value is put back in its row's place.
Rows of many small groups (a unit of many boards) are put in layout order the same way, with
only the layout and block setting shared: each piece then computes one layout and one kind of
tree, never both kinds for every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from sweep.model.rows import PER_ROW, RUN_FIELDS, Rows, shared_if_equal, take, wide

I64 = np.int64
MIN_RUN_ROWS = 1024
"""Rows a run of equal ``RUN_FIELDS`` must hold on average for a batch to be computed run by
run, each run's values shared (one element): then banks, clipping, layouts and the runtime tree
are one element too and only what depends on the idmap page is per row. Shorter runs are put
in group order (a shuffled batch of few configurations) or layout order (a board corpus, a unit
of many boards) when those groups hold as many rows on average, else computed per row."""


@dataclass(frozen=True)
class Groups:
    """Rows cut into runs of equal ``RUN_FIELDS``, each computed with those values shared."""

    bounds: list[int]
    """Where each run starts in computing order, and the end."""
    order: np.ndarray | None = None
    """The rows in computing order (group by group, stable), or None: in input order."""
    code: np.ndarray | None = None
    """With ``order``: each row's group (its index in ``bounds``), in input order."""
    first: list[int] | None = None
    """With ``order``: the groups by their first row in the input, the order they are computed
    in (so an error names the first bad row of the first group that holds one)."""
    shared: tuple[str, ...] = RUN_FIELDS
    """What each group's rows share (one element in its pieces); the other fields are put in
    order with the idmap pages."""

    @cached_property
    def inverse(self) -> np.ndarray:
        """With ``order``: each row's place in computing order (outputs are gathered back)."""
        inverse = np.empty(len(self.order), dtype=np.intp)
        inverse[self.order] = np.arange(len(self.order))
        return inverse

    def put_back(self, pieces: list[tuple[int, slice]], values: list, n: int, dtype) -> np.ndarray:
        """A column in input order from its pieces' values (each piece a group and a slice of
        computing order): read from a table by each row's group (one ``take``) when every group
        holds one value, else laid out in computing order and gathered into input order
        (``inverse``): a gather costs half a scatter."""
        table = np.zeros(len(self.bounds) - 1, dtype=dtype)
        varying = False
        for (group, part), v in zip(pieces, values, strict=True):
            if v.size != 1 or (part.start != self.bounds[group] and table[group] != v[0]):
                varying = True
                break
            table[group] = v[0]
        if not varying:
            return table.take(self.code)
        ordered = np.empty(n, dtype)
        for (_, part), v in zip(pieces, values, strict=True):
            ordered[part] = v
        return ordered.take(self.inverse)

    def runs(self, rows: Rows):
        """``(group, start, end, rows)`` of each run, its ``shared`` fields one element and
        ``start:end`` its place in computing order; only the other fields are put in order."""
        if self.order is None:
            for k, (lo, hi) in enumerate(zip(self.bounds, self.bounds[1:], strict=False)):
                yield k, lo, hi, rows.run(slice(lo, hi))
            return
        tags = shared_if_equal(rows.tag_random)  # no tags: one element, not put in order
        own = (*PER_ROW, *(name for name in RUN_FIELDS if name not in self.shared))
        values = {name: tags if name == "tag_random" else getattr(rows, name) for name in own}
        moved = {name: wide(name, take(v, self.order)) for name, v in values.items()}
        for k in self.first:
            lo, hi, row = self.bounds[k], self.bounds[k + 1], int(self.order[self.bounds[k]])
            first = slice(row, row + 1)
            shared = {name: wide(name, take(getattr(rows, name), first)) for name in self.shared}
            yield k, lo, hi, Rows(**shared, **{x: take(v, slice(lo, hi)) for x, v in moved.items()})


MAX_KEY = 1 << 16
"""Keys ``grouping`` counts with ``bincount``; wider combinations are factorized first."""


def grouping(rows: Rows) -> Groups | None:
    """How to compute ``rows`` run by run: in place when they come in runs of equal
    ``RUN_FIELDS`` of ``MIN_RUN_ROWS`` rows on average (a work unit's segments); put in group
    order (stable) when they are not but fall in that few groups (a shuffled batch of a few
    configurations); else in layout order (``_by_layout``: a unit of many boards, a board
    corpus); None when none of these (a small batch): then per row."""
    n = len(rows)
    key, size = _group_key(rows)
    if size is None:
        return _by_layout(rows)
    if key is None:  # every field shared: one run
        return Groups([0, n])
    starts = np.flatnonzero(key[1:] != key[:-1]) + 1
    if (len(starts) + 1) * MIN_RUN_ROWS <= max(n, MIN_RUN_ROWS):
        return Groups([0, *starts.tolist(), n])
    if n < 2 * MIN_RUN_ROWS:
        return None
    counts = np.bincount(key, minlength=size)
    if np.count_nonzero(counts) * MIN_RUN_ROWS > n:
        return _by_layout(rows)
    return _ordered(key, counts)


def _by_layout(rows: Rows) -> Groups | None:
    """Rows of many small groups in layout order, layout and block setting shared, when
    these fall in groups of ``MIN_RUN_ROWS`` rows on average. Each piece then computes one
    kind of tree (section 5: both trees of 4.6-4.7, or one merged tree, never both for every
    row) and one layout's formula: a unit of 2,000 boards built at ~430 ns a row, was ~730."""
    n = len(rows)
    if n < 2 * MIN_RUN_ROWS or rows.layout_index.shape[-1] <= 1:
        return None
    key = rows.layout_index.astype(np.int32) * 2 + rows.block_mappings
    counts = np.bincount(key)
    if np.count_nonzero(counts) * MIN_RUN_ROWS > n:
        return None
    return _ordered(key, counts, ("layout_index", "block_mappings"))


def _ordered(key: np.ndarray, counts: np.ndarray, shared=RUN_FIELDS) -> Groups:
    """The rows in the order of ``key`` (stable), a group per value present in ``counts``."""
    present = np.flatnonzero(counts)
    small = np.int8 if len(present) < 1 << 7 else np.int16 if len(present) < 1 << 15 else I64
    dense = np.zeros(len(counts), dtype=small)
    dense[present] = np.arange(len(present))
    code = dense.take(key)  # radix sorts by small keys
    order = np.argsort(code, kind="stable")
    bounds = [0, *np.cumsum(counts[present]).tolist()]
    first = np.argsort(order[bounds[:-1]]).tolist()  # stable: a group's first row comes first
    return Groups(bounds, order, code.astype(np.intp, copy=False), first, tuple(shared))


def _group_key(rows: Rows) -> tuple[np.ndarray | None, int | None]:
    """One integer per row, equal exactly where every ``RUN_FIELDS`` value is, below ``size``
    (int32 arithmetic: keys stay below ``MAX_KEY``); ``(None, 1)`` when no field varies;
    ``(None, None)`` when a field alone has more than ``n / MIN_RUN_ROWS`` values (neither
    runs nor groups then)."""
    n, key, size = len(rows), None, 1
    for name in RUN_FIELDS:
        values = getattr(rows, name)
        if values.shape[-1] <= 1:  # shared (or no rows)
            continue
        if values.dtype == bool:
            values = values.view(np.uint8)
        low, high = int(values.min()), int(values.max())
        if low == high:
            continue
        if name == "granule":  # checked: 4K, 16K or 64K
            values, low, high = values >> 12, low >> 12, high >> 12
        radix = high - low + 1
        if radix <= MAX_KEY:
            # modulo 2^32, exact: the differences are below MAX_KEY
            codes = np.subtract(values, np.int64(low), dtype=np.int32, casting="unsafe")
        else:
            codes, uniques = pd.factorize(values)
            radix = len(uniques)
            if radix * MIN_RUN_ROWS > n:
                return None, None
        if key is not None and size * radix > MAX_KEY:
            key, uniques = pd.factorize(key)
            size = len(uniques)
        if key is None:
            key = codes.astype(np.int32, copy=False)
        else:
            key *= radix
            key += codes
        size *= radix
    if size > MAX_KEY:
        key, uniques = pd.factorize(key)
        size = len(uniques)
    return key, size
