"""Columns of one value, made once per process and shared by every table that holds them.

Most columns of a work unit hold one value in every row (one configuration: its tables, levels,
clip and reservation do not depend on the idmap page far from every mapping). Filling such a
column costs as much as computing a varying one (8 bytes a row written), and a worker writes
the same constants unit after unit; an Arrow array is immutable, so one copy serves them all.
The cache holds at most ``CACHE_BYTES``, the least recently used leaving first.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

import numpy as np
import pyarrow as pa

from sweep.model.rows import full

CACHE_BYTES = 64 << 20
"""What the arrays kept here may hold together (16 int64 columns of a default 500k-row unit)."""

_cache: OrderedDict[tuple, pa.Array] = OrderedDict()
_held = [0]


def constant(value, n: int, dtype) -> pa.Array:
    """An Arrow array of ``n`` times ``value`` in numpy ``dtype`` (bool: Arrow's booleans)."""
    dtype = np.dtype(dtype)
    scalar = dtype.type(value)
    key = (dtype.str, scalar.item(), n)
    array = _cache.get(key)
    if array is not None:
        _cache.move_to_end(key)
        return array
    array = pa.array(np.full(n, scalar, dtype=dtype))
    size = array.nbytes
    if size <= CACHE_BYTES // 4:
        while _cache and _held[0] + size > CACHE_BYTES:
            _held[0] -= _cache.popitem(last=False)[1].nbytes
        _cache[key] = array
        _held[0] += size
    return array


def arrow(values: np.ndarray, n: int, dtype) -> pa.Array:
    """``values`` (one per row, or one for all ``n`` rows) as an Arrow array of ``dtype``."""
    values = np.asarray(values)
    if values.size == 1:
        return constant(values.reshape(-1)[0], n, dtype)
    return pa.array(full(values, n, dtype))


def dictionary(codes: np.ndarray, n: int, names: list[str]) -> pa.DictionaryArray:
    """Names by their codes (one per row, or one for all ``n`` rows), as a dictionary array."""
    return pa.DictionaryArray.from_arrays(
        arrow(codes, n, np.int32), _names(tuple(names)), safe=False
    )  # the builder checked its codes: no pass over the rows to check them again


@functools.lru_cache(maxsize=256)
def _names(names: tuple[str, ...]) -> pa.Array:
    return pa.array(names, type=pa.string())
