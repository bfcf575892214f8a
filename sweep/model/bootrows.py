"""Section 10 as rows: the tables of a boot-time mapping set, for many rows at once.

``sweep.model.bootmap`` lists what one kernel maps at EL2 at boot (``boot_leaves``) and counts
its tables in the scalar tree; this module gives the same counts for a batch of rows that share
a kernel build, a mode and a CPU count: each row's mappings are a few address ranges computed
with numpy, counted per level in one compiled pass over the rows (``sweep.model.treecount``).

Ranges that move together keep their gaps, and two page ranges whose gap is smaller than a
level-2 entry (2 MiB at 4K) touch exactly the chunks of their hull at every level (no chunk fits
in the gap), so each group is one range: the image's sections at their HYP alias, the idmap
page and nVHE's stacks under it, the per-CPU regions, pKVM's pool at its alias. What moves with
neither the image nor the tag (pKVM's stacks above ``__io_map_base`` and its vmemmap) is a
fixed set of chunk spans, listed once per kind of row with ``bootmap``'s own functions.
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
    """``bootmap.first_free`` per row: banks ``start``/``end``/``valid`` are (banks, rows) or
    (banks, 1); the zone is found from the banks alone, then each bank is asked whether it
    holds the image (banks are disjoint: at most one does)."""
    big = np.int64(1) << 62
    low = np.where(valid, start, big).min(axis=0)
    normal = np.where(low < 1 << 32, np.int64(1) << 32, big)
    has_normal = (valid & (end > normal)).any(axis=0)
    za = np.where(has_normal, np.maximum(start, normal), start)
    ze = np.where(has_normal, end, np.minimum(end, normal))
    zv = valid & np.where(has_normal, end > normal, start < normal) & (ze > za)
    lowest = np.argmin(np.where(zv, za, big), axis=0)[None]
    lo, hi = np.take_along_axis(za, lowest, 0)[0], np.take_along_axis(ze, lowest, 0)[0]
    image_end = _up(image_pa + image.end, 2 * MIB)
    for bank in reversed(range(start.shape[0])):
        holds = zv[bank] & (za[bank] <= image_pa) & (image_pa < ze[bank])
        lo = np.where(holds, np.maximum(za[bank], image_end), lo)
        hi = np.where(holds, ze[bank], hi)
    return np.minimum(lo + EARLY_BYTES, np.maximum(lo, hi - 64 * MIB))


def pool_base(start, end, valid, size, granule: int) -> np.ndarray:
    """``bootmap.pool_base`` per row (banks as in ``first_free``)."""
    pmd = granule << (granule.bit_length() - 4)
    top = np.where(valid, end, 0).max(axis=0)
    dram = np.where(valid, end - start, 0).sum(axis=0)
    return _down(top - dram // pmd * granule - (64 << 10) - _up(size, pmd), pmd)


def boot_columns(
    mode: str, kernel: BootKernel, cpus: int, tree_va_bits: int, delta, idmap_pa,
    start, end, valid, reserve_bytes,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Section 5's table columns for the boot set ``mode`` of rows sharing ``kernel``, ``cpus``
    and ``tree_va_bits``: per row ``delta`` (hyp alias offset), ``idmap_pa`` (the image lies
    where its idmap page does), clipped banks (banks, rows) and ``reserve_bytes`` (pKVM's pool).
    ``shared_tables`` is what the idmap shares with the rest: ``T(idmap) + T(rest) - total``.

    The ranges that move with the image or the tag (the idmap, nVHE's stacks, the sections,
    the per-CPU regions, pKVM's pool) are offsets from per-row anchors; pKVM's private stacks
    and vmemmap are the same for every row of a kind (``_distinct``): fixed ranges, counted as
    chunk spans (``treecount.count_rows``)."""
    image, g = kernel.image, kernel.image.granule
    n = np.broadcast(delta, idmap_pa, start[0], reserve_bytes).shape[0]
    idmap_pa = np.asarray(idmap_pa, I64)
    image_pa = idmap_pa - _down(image.idmap[0], g)
    delta_u = np.asarray(delta).astype(I64).view(U64)
    anchors = [idmap_pa, image_pa.astype(U64) + delta_u]  # the idmap page, the image's alias
    ranges = [(0, 0, 0, _up(image.idmap[1], g) - _down(image.idmap[0], g))]
    if mode == "nvhe":  # stack pages and their guards, downwards from the idmap
        anchors.append(_down(idmap_pa - 2 * g, 2 * g))
        ranges.append((2, g - (cpus - 1) * 2 * g, 2, 2 * g))
    for a, b in _hulls(_sections(image, mode), 1 << level_shift(2, g)):
        ranges.append((1, a, 1, b))
    first, span = _percpu_hull(image, image_pa, start, end, valid, cpus, g)
    anchors.append(first.astype(U64) + delta_u)
    ranges.append((len(anchors) - 1, 0, len(anchors) - 1, span))
    n_levels = int(levels(tree_va_bits, g))
    kinds, kind = [[]], 0
    if mode == "pkvm":
        kinds, kind = _pkvm_fixed(anchors, ranges, kernel, cpus, tree_va_bits, idmap_pa,
                                  delta_u, start, end, valid, reserve_bytes)  # fmt: skip
    from sweep.model.treecount import count_rows  # lazy: numba costs 0.3 s, ~90 MiB a process

    got = count_rows(anchors, ranges, kinds, kind, g, n_levels, n)
    got["table_bytes"] = got["table_pages"] * g
    return got


def _percpu_hull(image, image_pa, start, end, valid, cpus, g):
    """The nVHE per-CPU regions, one naturally aligned buddy block each from ``first_free``
    (``bootmap._alloc``): their hull, ``[first, first + span)``."""
    block = bootmap._order_bytes(image.percpu_bytes, g)
    first = _up(first_free(image, image_pa, start, end, valid), block)
    return first, (cpus - 1) * block + _up(image.percpu_bytes, g)


def _pkvm_fixed(anchors: list, ranges: list, kernel, cpus, tvb, idmap_lo, delta_u, start, end,
                valid, reserve) -> tuple[list[list], np.ndarray]:  # fmt: skip
    """pKVM's ranges beyond nVHE's: the pool at its alias (it moves with the tag), added to
    ``anchors``/``ranges``, and per kind of row (the quarter ``__io_map_base`` takes, the pool,
    the banks) its fixed ranges: the stacks above ``__io_map_base`` (the quarter without the
    idmap) and the vmemmap (``bootmap._vmemmap``). Returns the kinds' fixed ranges and each
    row's kind."""
    image, g = kernel.image, kernel.image.granule
    quarter = np.int64(1) << (tvb - 2)
    io_base = (idmap_lo & quarter) ^ quarter
    size = np.asarray(reserve, I64)
    base = pool_base(start, end, valid, size, g)
    nb, n = start.shape[0], len(idmap_lo)
    pool = base.astype(U64) + delta_u
    anchors += [pool, pool + size.astype(U64)]  # empty where there is no pool
    ranges.append((len(anchors) - 2, 0, len(anchors) - 1, 0))
    columns = [io_base, base, size, *start, *np.where(valid, end, start)]
    first, kind = _distinct(columns, n)
    kinds = []
    at_first = (np.broadcast_to(c, (n,))[first].tolist() for c in columns)  # each kind's values
    for io0, back, sz, *ends in zip(*at_first, strict=True):
        banks = [(a, b - a) for a, b in zip(ends[:nb], ends[nb:], strict=True) if b > a]
        regions = banks if image.version >= bootmap.VMEMMAP_ALL_MEMORY_SINCE else [(back, sz)]
        vm = bootmap._vmemmap(io0 | 1 << (tvb - 3), regions, back, g, image.version)
        fixed = [(io0 + g, io0 + 2 * g * cpus, 3)]  # a guard page under each stack
        kinds.append(fixed + [(x.va, x.va + x.size, x.level) for x in vm])
    return kinds, kind


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
    first, code = (np.zeros(1, I64), None) if shared else _distinct(keys, n)
    groups = sorted((tuple(int(x[i]) for x in keys), kind) for kind, i in enumerate(first.tolist()))
    out = {name: np.zeros(1 if shared else n, I64) for name in TABLE_NAMES}
    for (mode_code, k, cpus, tvb, layout), kind in groups:  # in the order of their values
        if mode_code == 0:
            continue
        _check_era(layouts[layout], kernels[k])
        where = slice(None) if shared else np.flatnonzero(code == kind)

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
