"""Section 10 as rows: the tables of a boot-time mapping set, for many rows at once.

``sweep.model.bootmap`` lists what one kernel maps at EL2 at boot (``boot_leaves``) and counts
its tables in the scalar tree; this module gives the same counts for a batch of rows that share
a kernel build, a mode and a CPU count, with no loop over rows: each row's mappings are a few
address ranges computed with numpy, counted per level in one order of the ranges (rows whose
ranges change order: ``bootmap.count_tables``, each row sorted).

Ranges that move together keep their gaps, and two page ranges whose gap is smaller than a
level-2 entry (2 MiB at 4K) touch exactly the chunks of their hull at every level (no chunk fits
in the gap), so each group is one range: the image's sections at their HYP alias, the idmap
page and nVHE's stacks under it, the per-CPU regions, pKVM's pool at its alias. What moves with
neither the image nor the tag (pKVM's stacks above ``__io_map_base`` and its vmemmap, per-CPU
regions at ZONE_NORMAL's start) is a fixed set of chunk spans, listed once per kind of row with
``bootmap``'s own functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sweep.core.columns import MAPPING_SETS as SET_WORDS
from sweep.core.eras import era_of_version
from sweep.core.errors import ValidationError
from sweep.core.kconfig import level_shift, levels
from sweep.model import bootmap
from sweep.model.bootmap import EARLY_BYTES, MIB, BootImage

I64, U64 = np.int64, np.uint64
MAPPING_SETS = tuple(SET_WORDS)
"""The ``mappings`` input by code: 0 counts all of DRAM (section 5), 1 and 2 what nVHE's
``init_hyp_mode`` and pKVM's ``recreate_hyp_mappings`` map at boot (section 10)."""
MODES = {1: "nvhe", 2: "pkvm"}
TABLE_NAMES = (*bootmap.NAMES, "table_pages", "table_bytes", "shared_tables")


@dataclass(frozen=True)
class BootKernel:
    """A kernel build a boot-set row names: its release (``uname -r``) and what it maps."""

    name: str
    image: BootImage
    version: str


def _up(x, a):
    return -(-x // a) * a


def _down(x, a):
    return x - x % a


def _sections(image: BootImage, mode: str) -> list[tuple[int, int]]:
    """The image's spans mapped at their HYP alias, page-rounded, as ``boot_leaves`` lists
    them (offsets from ``_text``)."""
    v = image.version
    names = ["hyp_text", "hyp_data", "hyp_rodata", "hyp_bss"]
    if mode == "nvhe" or v < bootmap.PKVM_HOST_SECTIONS_UNTIL:
        names += ["rodata", "bss_tail"]
    spans = [getattr(image, name) for name in names]
    if mode == "pkvm" and bootmap.VGIC_STATE[0] <= v < bootmap.VGIC_STATE[1] and image.vgic_state:
        spans.append((image.vgic_state, image.vgic_state + bootmap.VGIC_GLOBAL_BYTES))
    g = image.granule
    return [(_down(a, g), _up(b, g)) for a, b in (s for s in spans if s) if b > a]


def _hulls(spans: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Spans merged where they overlap or lie less than ``gap`` apart (module doc)."""
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a - out[-1][1] < gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def first_free(image: BootImage, image_pa, start, end, valid) -> np.ndarray:
    """``bootmap.first_free`` per row: banks ``start``/``end``/``valid`` are (banks, rows)."""
    big = np.int64(1) << 62
    low = np.where(valid, start, big).min(axis=0)
    normal = np.where(low < 1 << 32, np.int64(1) << 32, big)
    has_normal = (valid & (end > normal)).any(axis=0)
    za = np.where(has_normal, np.maximum(start, normal), start)
    ze = np.where(has_normal, end, np.minimum(end, normal))
    zv = valid & np.where(has_normal, end > normal, start < normal) & (ze > za)
    image_end = _up(image_pa + image.end, 2 * MIB)
    holds = zv & (za <= image_pa) & (image_pa < ze)
    lowest = np.argmin(np.where(zv, za, big), axis=0)
    pick = np.where(holds.any(axis=0), np.argmax(holds, axis=0), lowest)
    lo = np.take_along_axis(za, pick[None], 0)[0]
    hi = np.take_along_axis(ze, pick[None], 0)[0]
    lo = np.where(holds.any(axis=0), np.maximum(lo, image_end), lo)
    return np.minimum(lo + EARLY_BYTES, np.maximum(lo, hi - 64 * MIB))


def pool_base(start, end, valid, size, granule: int) -> np.ndarray:
    """``bootmap.pool_base`` per row (banks as in ``first_free``)."""
    pmd = granule << (granule.bit_length() - 4)
    top = np.where(valid, end, 0).max(axis=0)
    dram = np.where(valid, end - start, 0).sum(axis=0)
    return _down(top - dram // pmd * granule - (64 << 10) - _up(size, pmd), pmd)


class _Ranges:
    """Per-row ranges ``[start, end)`` (uint64 VAs) with their leaf levels, built column by
    column; the first is the idmap (for ``shared_tables``)."""

    def __init__(self, n: int):
        self.n, self.starts, self.ends, self.leaf = n, [], [], []

    def add(self, lo, hi, leaf: int = 3) -> None:
        self.starts.append(np.broadcast_to(np.asarray(lo).astype(U64), (self.n,)))
        self.ends.append(np.broadcast_to(np.asarray(hi).astype(U64), (self.n,)))
        self.leaf.append(leaf)

    def take(self, rows) -> _Ranges:
        """The same ranges for ``rows`` only."""
        if isinstance(rows, slice):
            return self
        out = _Ranges(len(rows))
        out.starts = [x[rows] for x in self.starts]
        out.ends = [x[rows] for x in self.ends]
        out.leaf = list(self.leaf)
        return out

    def arrays(self):
        starts, ends = np.stack(self.starts, axis=1), np.stack(self.ends, axis=1)
        return starts, ends, np.broadcast_to(np.array(self.leaf, np.int8), starts.shape)


def boot_columns(
    mode: str, kernel: BootKernel, cpus: int, tree_va_bits: int, delta, idmap_pa,
    start, end, valid, reserve_bytes,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Section 5's table columns for the boot set ``mode`` of rows sharing ``kernel``, ``cpus``
    and ``tree_va_bits``: per row ``delta`` (hyp alias offset), ``idmap_pa`` (the image lies
    where its idmap page does), clipped banks (banks, rows) and ``reserve_bytes`` (pKVM's pool).
    ``shared_tables`` is what the idmap shares with the rest: ``T(idmap) + T(rest) - total``.

    The ranges that move with the image or the tag (the idmap, nVHE's stacks, the sections,
    the per-CPU regions, pKVM's pool) are per-row vectors; pKVM's private stacks and vmemmap
    are the same for every row of a kind (``_distinct``) and counted as fixed chunk spans
    (``_count``)."""
    image, g = kernel.image, kernel.image.granule
    n = np.broadcast(delta, idmap_pa, start[0], reserve_bytes).shape[0]
    idmap_pa = np.asarray(idmap_pa, I64)
    image_pa = idmap_pa - _down(image.idmap[0], g)
    idmap_lo = image_pa + _down(image.idmap[0], g)
    alias = (image_pa.astype(U64) + np.asarray(delta).astype(I64).view(U64)).astype(U64)
    delta_u = np.asarray(delta).astype(I64).view(U64)
    r = _Ranges(n)
    r.add(idmap_lo, image_pa + _up(image.idmap[1], g))
    if mode == "nvhe":
        io = idmap_lo
        for _ in range(cpus):
            io = _down(io - 2 * g, 2 * g)
        r.add(io + g, _down(idmap_lo - 2 * g, 2 * g) + 2 * g)  # stack pages and their guards
    for a, b in _hulls(_sections(image, mode), 1 << level_shift(2, g)):
        r.add(alias + U64(a), alias + U64(b))
    lo, hi = (x.astype(U64) + delta_u for x in _percpu_hull(image, image_pa, start, end,
                                                             valid, cpus, g))  # fmt: skip
    fixed = []
    if (lo == lo[0]).all() and (hi == hi[0]).all():  # ZONE_NORMAL's first pages: a fixed range
        fixed.append((int(lo[0]), int(hi[0]), 3))
    else:
        r.add(lo, hi)
    n_levels = int(levels(tree_va_bits, g))
    if mode == "nvhe":
        got = _count(r, fixed, g, n_levels)
    else:
        got = _pkvm_count(r, kernel, cpus, tree_va_bits, idmap_lo, delta_u, start, end, valid,
                          reserve_bytes, n_levels, fixed)  # fmt: skip
    got["table_bytes"] = got["table_pages"] * g
    return got


ORDERS = 4
"""Orders of the moving ranges tried before the rows left are each sorted: a unit whose image
passes a fixed range (ZONE_NORMAL's per-CPU regions) has two."""


def _count(r: _Ranges, fixed: list, g: int, n_levels: int) -> dict[str, np.ndarray]:
    """Tables per level, and ``shared_tables``, of the moving ranges ``r`` (slot 0 the idmap;
    page leaves) and the ``fixed`` ranges ``(start, end, leaf)`` every row has: the rows of
    each order of the moving ranges at once (the first row left's order, the rows it sorts;
    ``ORDERS`` times), the rest sorted row by row (``bootmap.count_tables``)."""
    lo = np.stack(r.starts)
    left, out = np.arange(r.n), {}
    for _ in range(ORDERS):
        order = np.argsort(lo[:, left[0]], kind="stable")
        moved = lo[order][:, left] if len(left) < r.n else lo[order]
        ok = (moved[1:] >= moved[:-1]).all(axis=0)
        if ok.all() and len(left) == r.n:
            return _count_ordered(r, order, fixed, g, n_levels)
        _scatter(out, left[ok], _count_ordered(r.take(left[ok]), order, fixed, g, n_levels), r.n)
        left = left[~ok]
        if not len(left):
            return out
    _scatter(out, left, _count_sorting(r.take(left), fixed, g, n_levels), r.n)
    return out


def _scatter(out: dict, rows: np.ndarray, got: dict, n: int) -> None:
    for name, values in got.items():
        out.setdefault(name, np.zeros(n, I64))[rows] = values


def _count_ordered(r: _Ranges, order, fixed: list, g: int, n_levels: int) -> dict:
    """``_count`` of rows whose moving ranges all lie in ``order`` of start, ``CACHE_ROWS``
    at a time (``_count_slice``)."""
    lo, hi = np.stack(r.starts), np.stack(r.ends) - U64(1)
    parts = [_count_slice(lo[:, k : k + CACHE_ROWS], hi[:, k : k + CACHE_ROWS], order, fixed,
                          g, n_levels) for k in range(0, lo.shape[1], CACHE_ROWS)]  # fmt: skip
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


CACHE_ROWS = 1 << 14
"""Rows counted at once: a level's temporaries then stay in a core's cache (1.1x the rows/s of
the builder's 2^17 rows at once, measured on boot-set stride units)."""


def _count_slice(lo, hi, order, fixed: list, g: int, n_levels: int) -> dict:
    """Per level: each range (first and last bytes ``lo``, ``hi``: ranges x rows) adds the
    chunks past the running maximum that the fixed set's chunk spans lack."""
    n = lo.shape[1]
    out = {name: np.zeros(n, I64) for name in bootmap.NAMES}
    out[bootmap.NAMES[4 - n_levels + 1]][:] = 1
    shared = np.ones(n, I64)  # the root
    for level in range(4 - n_levels, 3):
        shift = U64(level_shift(level, g))
        spans = _fixed_spans(fixed, level, int(shift))
        firsts, lasts = (lo >> shift).view(I64), (hi >> shift).view(I64)
        seen = np.full(n, -1, I64)
        total = np.full(n, sum(b - a + 1 for a, b in spans), I64)
        for k in order:
            begin = np.maximum(firsts[k], seen + 1)
            total += np.maximum(lasts[k] - begin + 1, 0)
            for a, b in spans:  # chunks the fixed set has already
                total -= np.maximum(np.minimum(lasts[k], b) - np.maximum(begin, a) + 1, 0)
            seen = np.maximum(seen, lasts[k])
        for j, c in enumerate((firsts[0], lasts[0])):  # the idmap's chunks others need too
            hit = ((firsts[1:] <= c) & (c <= lasts[1:])).any(axis=0)
            for a, b in spans:
                hit |= (a <= c) & (c <= b)
            shared += hit if j == 0 else hit & (c != firsts[0])
        out[bootmap.NAMES[level + 2]] = total
    out["table_pages"] = sum(out[name] for name in bootmap.NAMES)
    out["shared_tables"] = shared
    return out


def _fixed_spans(fixed: list, level: int, shift: int) -> list[tuple[int, int]]:
    """The ``2^shift`` chunks of the fixed ranges with leaves below ``level``, as sorted,
    disjoint, inclusive spans ``(first, last)``."""
    spans = sorted((a >> shift, (b - 1) >> shift) for a, b, leaf in fixed if leaf > level and b > a)
    out: list[list[int]] = []
    for a, b in spans:
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _count_sorting(r: _Ranges, fixed: list, g: int, n_levels: int) -> dict[str, np.ndarray]:
    """``_count`` for rows whose moving ranges do not keep one order: every range of every
    row sorted (``bootmap.count_tables``)."""
    for a, b, leaf in fixed:
        r.add(np.uint64(a), np.uint64(b), leaf)
    starts, ends, leaf = r.arrays()
    out = bootmap.count_tables(starts, ends, g, n_levels, leaf)
    out["shared_tables"] = _idmap_shared(starts, ends, leaf, g, n_levels)
    return out


def _idmap_shared(starts, ends, leaf, g: int, n_levels: int) -> np.ndarray:
    """``T(idmap) + T(rest) - T(all)`` of sorted-or-not ranges (slot 0 the idmap): the root,
    and at each level the idmap's first and last chunks (one, or two when it straddles) that
    another range with leaves below that level touches."""
    shared = np.ones(starts.shape[0], I64)
    last = ends[:, 0] - U64(1)
    for level in range(4 - n_levels, 3):
        shift = U64(level_shift(level, g))
        lo, hi = starts[:, 1:] >> shift, (ends[:, 1:] - U64(1)) >> shift
        live = (ends[:, 1:] > starts[:, 1:]) & (leaf[:, 1:] > level)
        for k, chunk in enumerate((starts[:, 0] >> shift, last >> shift)):
            hit = (live & (lo <= chunk[:, None]) & (chunk[:, None] <= hi)).any(axis=1)
            shared += hit if k == 0 else hit & (chunk != starts[:, 0] >> shift)
    return shared


def _percpu_hull(image, image_pa, start, end, valid, cpus, g):
    """The nVHE per-CPU regions, one naturally aligned buddy block each from ``first_free``
    (``bootmap._alloc``): their hull, ``[first, last + size)``."""
    block = bootmap._order_bytes(image.percpu_bytes, g)
    first = _up(first_free(image, image_pa, start, end, valid), block)
    return first, first + (cpus - 1) * block + _up(image.percpu_bytes, g)


def _pkvm_count(r: _Ranges, kernel, cpus, tvb, idmap_lo, delta_u, start, end, valid, reserve,
                n_levels, common: list) -> dict[str, np.ndarray]:  # fmt: skip
    """pKVM's tables: the moving ranges ``r`` and the pool at its alias (it moves with the
    tag), and per kind of row (the quarter ``__io_map_base`` takes, the pool, the banks) its
    fixed ranges: the stacks above ``__io_map_base`` (the quarter without the idmap) and the
    vmemmap (``bootmap._vmemmap``)."""
    image, g = kernel.image, kernel.image.granule
    quarter = np.int64(1) << (tvb - 2)
    io_base = (idmap_lo & quarter) ^ quarter
    size = np.asarray(reserve, I64)
    base = pool_base(start, end, valid, size, g)
    nb = start.shape[0]
    if (size > 0).any():  # the pool at its alias moves with the row's tag
        pool = base.astype(U64) + delta_u
        r.add(np.where(size > 0, pool, U64(0)), np.where(size > 0, pool + size.astype(U64), 0))
    columns = [io_base, base, size, *start, *np.where(valid, end, start)]
    first, kind = _distinct(columns, r.n)
    out: dict[str, np.ndarray] = {}
    for k, row in enumerate(first.tolist()):
        io0, back, sz, *ends = (int(np.broadcast_to(c, (r.n,))[row]) for c in columns)
        banks = [(a, b - a) for a, b in zip(ends[:nb], ends[nb:], strict=True) if b > a]
        regions = banks if image.version >= bootmap.VMEMMAP_ALL_MEMORY_SINCE else [(back, sz)]
        vm = bootmap._vmemmap(io0 | 1 << (tvb - 3), regions, back, g, image.version)
        fixed = [*common, (io0 + g, io0 + 2 * g * cpus, 3)]  # a guard page under each stack
        fixed += [(x.va, x.va + x.size, x.level) for x in vm]
        rows = slice(None) if len(first) == 1 else np.flatnonzero(kind == k)
        got = _count(r.take(rows), fixed, g, n_levels)
        if len(first) == 1:
            return got
        for name, values in got.items():
            out.setdefault(name, np.zeros(r.n, I64))[rows] = values
    return out


def _distinct(columns, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with equal values in every column (each one value per row, or one shared): the
    first row of each kind and each row's kind, by hashing (``pandas.factorize``), no sort."""
    code = np.zeros(n, I64)
    for column in columns:
        column = np.asarray(column)
        if column.shape[-1] > 1 and (column != column[0]).any():
            codes, uniques = pd.factorize(column)
            code, _ = pd.factorize(code * len(uniques) + codes)
    kinds = int(code.max(initial=-1)) + 1
    first = np.full(kinds, n, I64)
    np.minimum.at(first, code, np.arange(n))
    return first, code


def boot_tables(layouts, kernels, rows, dram, delta, tree_va_bits, reserve) -> dict:
    """Section 5's table columns of the rows whose ``mappings`` is a boot set (others: 0),
    each group of one mapping set, kernel build, CPU count and tree size at once."""
    n = len(rows)
    fields = (rows.mappings, rows.kernel_index, rows.cpus, tree_va_bits, rows.layout_index)
    keys = [np.broadcast_to(x, (n,)) for x in fields]
    shared = all(np.asarray(x).shape[-1] == 1 or (x == x[0]).all() for x in fields)
    groups = [tuple(int(x[0]) for x in keys)] if shared else np.unique(np.stack(keys), axis=1).T
    out = {name: np.zeros(1 if shared else n, I64) for name in TABLE_NAMES}
    for mode_code, k, cpus, tvb, layout in (tuple(int(v) for v in g) for g in groups):
        if mode_code == 0:
            continue
        _check_era(layouts[layout], kernels[k])
        where = slice(None) if shared else np.flatnonzero(
            (keys[0] == mode_code) & (keys[1] == k) & (keys[2] == cpus) & (keys[3] == tvb)
            & (keys[4] == layout))  # fmt: skip

        def part(x, where=where):
            x = np.asarray(x)
            return x if x.shape[-1] == 1 or isinstance(where, slice) else x[..., where]

        got = boot_columns(
            MODES[mode_code], kernels[k], cpus, tvb, part(delta), part(rows.idmap_pa),
            part(dram.start), part(dram.end), part(dram.valid), part(reserve["reserve_bytes"]),
        )  # fmt: skip
        for name in TABLE_NAMES:
            if shared:
                out[name] = got[name]
            else:
                out[name][where] = got[name]
    return out


def _check_era(layout, kernel: BootKernel) -> None:
    """A boot set's kernel build must be of the row's era (a plugin layout names none)."""
    era = getattr(layout, "era", None)
    if era is None:
        return
    if era.two_trees:
        raise ValidationError(f"layout {era.name}: boot mapping sets are modelled from 4.8 on")
    own = era_of_version(kernel.version)
    if own is not None and own.name != era.name:
        raise ValidationError(
            f"kernel {kernel.name}: a {own.name} build, but the row's layout is {era.name}"
        )
