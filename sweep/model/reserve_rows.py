"""Section 9 as rows: what pKVM's ``kvm_hyp_reserve`` reserves, for a batch of rows.

The reservation depends on a row's map, granule, clipped DRAM and kernel era only
(``sweep.model.pkvm_reserve``), so it is computed once per distinct such key
(``sweep.model.rows.per_distinct``) and each era's rows in one ``reserve_many`` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from sweep.model.layout import Layout
from sweep.model.pkvm_reserve import reserve_many
from sweep.model.rows import Rows, per_distinct, shared_if_equal

I64 = np.int64


def reserve_rows(layouts: Sequence[Layout], rows: Rows, code: np.ndarray, granule, dram) -> dict:
    """``kvm_hyp_reserve`` per row (``sweep.model.pkvm_reserve``): 0 for eras without pKVM
    and plugin layouts; computed once per distinct (map, granule, clipped DRAM, era)."""
    n = len(rows)
    eras: list[str | None] = [None]  # code 0: no pKVM
    which = np.zeros(len(layouts), I64)  # layout -> index into ``eras``
    for k, layout in enumerate(layouts):
        era = getattr(layout, "era", None)
        if era is not None and era.pkvm:
            if era.name not in eras:
                eras.append(era.name)
            which[k] = eras.index(era.name)
    pick = shared_if_equal(np.broadcast_to(which[rows.layout_index], (n,)))
    if not pick.any():
        return {"reserve_bytes": np.zeros(1, I64), "reserve_base": np.zeros(1, I64)}
    keys = (rows.map_index * 3 + code, dram.dram_first, dram.dram_last, pick)
    arrays = (dram.start, dram.end, dram.valid, granule, pick)
    return per_distinct(n, partial(_reserve_rows, tuple(eras)), keys, arrays)


def _reserve_rows(eras: tuple, start, end, valid, granule, pick) -> dict:
    """``reserve_many`` for each row's clipped banks (``(banks, rows)`` arrays) in its era
    ``eras[pick]`` (None: 0), one call per era."""
    m = np.broadcast(start[0], valid[0], granule, pick).shape[0]
    start, end = (
        np.broadcast_to(start, (start.shape[0], m)),
        np.broadcast_to(end, (end.shape[0], m)),
    )
    valid = np.broadcast_to(valid, (valid.shape[0], m))
    granule, pick = np.broadcast_to(granule, (m,)), np.broadcast_to(pick, (m,))
    out = {"reserve_bytes": np.zeros(m, I64), "reserve_base": np.zeros(m, I64)}
    for k in np.unique(pick[pick > 0]).tolist():
        rows = np.flatnonzero(pick == k)
        ok = valid[:, rows]
        offsets = np.concatenate([[0], np.cumsum(ok.sum(axis=0))])
        lo, hi = start[:, rows].T[ok.T], end[:, rows].T[ok.T]
        got = reserve_many(eras[k], granule[rows], lo, hi, offsets)
        for name in out:
            out[name][rows] = got[name]
    return out
