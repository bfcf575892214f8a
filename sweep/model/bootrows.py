"""Section 10 as rows: the tables of a boot-time mapping set, for many rows at once.

``sweep.model.bootmap`` lists what one kernel maps at EL2 at boot (``boot_leaves``) and counts
its tables in the scalar tree; this module gives the same counts for a batch of rows that share
a kernel build, a mode and a CPU count, with no loop over rows: each row's mappings are a few
address ranges computed with numpy, counted per level by ``bootmap.count_tables``.

Ranges that move together keep their gaps, and two page ranges whose gap is smaller than a
level-2 entry (2 MiB at 4K) touch exactly the chunks of their hull at every level (no chunk fits
in the gap), so each group is one range: the image's sections at their HYP alias, the idmap
page, the stacks under it (nVHE) or above ``__io_map_base`` (pKVM), and the per-CPU regions.
What does not move with the image (pKVM's pool and vmemmap) is listed once per distinct value
with ``bootmap``'s own functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweep.core.eras import era_of_version
from sweep.core.errors import ValidationError
from sweep.core.kconfig import level_shift, levels
from sweep.model import bootmap
from sweep.model.bootmap import EARLY_BYTES, MIB, BootImage

I64, U64 = np.int64, np.uint64
MAPPING_SETS = ("all-dram", "nvhe-boot", "pkvm-boot")
"""The ``mappings`` input: 0 counts all of DRAM (section 5), 1 and 2 what nVHE's
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
    column; ``idmap`` marks the one range that is the idmap (for ``shared_tables``)."""

    def __init__(self, n: int):
        self.n, self.starts, self.ends, self.leaf, self.idmap = n, [], [], [], -1

    def add(self, lo, hi, leaf: int = 3) -> None:
        self.starts.append(np.broadcast_to(np.asarray(lo).astype(U64), (self.n,)))
        self.ends.append(np.broadcast_to(np.asarray(hi).astype(U64), (self.n,)))
        self.leaf.append(leaf)

    def arrays(self, drop_idmap: bool = False):
        keep = [k for k in range(len(self.starts)) if not (drop_idmap and k == self.idmap)]
        starts = np.stack([self.starts[k] for k in keep], axis=1)
        ends = np.stack([self.ends[k] for k in keep], axis=1)
        leaf = np.broadcast_to(np.array([self.leaf[k] for k in keep], np.int8), starts.shape)
        return starts, ends, leaf


def boot_columns(
    mode: str, kernel: BootKernel, cpus: int, tree_va_bits: int, delta, idmap_pa,
    start, end, valid, reserve_bytes,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Section 5's table columns for the boot set ``mode`` of rows sharing ``kernel``, ``cpus``
    and ``tree_va_bits``: per row ``delta`` (hyp alias offset), ``idmap_pa`` (the image lies
    where its idmap page does), clipped banks (banks, rows) and ``reserve_bytes`` (pKVM's pool).
    ``shared_tables`` is what the idmap shares with the rest: ``T(idmap) + T(rest) - total``."""
    image, g = kernel.image, kernel.image.granule
    n = np.broadcast(delta, idmap_pa, start[0], reserve_bytes).shape[0]
    idmap_pa = np.asarray(idmap_pa, I64)
    image_pa = idmap_pa - _down(image.idmap[0], g)
    idmap_lo = image_pa + _down(image.idmap[0], g)
    alias = (image_pa.astype(U64) + np.asarray(delta).astype(I64).view(U64)).astype(U64)
    delta_u = np.asarray(delta).astype(I64).view(U64)
    gap = 1 << level_shift(2, g)
    r = _Ranges(n)
    r.idmap = 0
    r.add(idmap_lo, image_pa + _up(image.idmap[1], g))
    for a, b in _hulls(_sections(image, mode), gap):
        r.add(alias + U64(a), alias + U64(b))
    percpu = _percpu_hull(image, image_pa, start, end, valid, cpus, g)
    r.add(percpu[0].astype(U64) + delta_u, percpu[1].astype(U64) + delta_u)
    if mode == "nvhe":
        io = idmap_lo
        for _ in range(cpus):
            io = _down(io - 2 * g, 2 * g)
        r.add(io + g, _down(idmap_lo - 2 * g, 2 * g) + 2 * g)  # stack pages and their guards
    else:
        _pkvm_ranges(r, kernel, cpus, tree_va_bits, idmap_lo, delta_u, start, end, valid,
                     reserve_bytes)  # fmt: skip
    n_levels = int(levels(tree_va_bits, g))
    total = bootmap.count_tables(*r.arrays()[:2], g, n_levels, r.arrays()[2])
    rest = bootmap.count_tables(*r.arrays(True)[:2], g, n_levels, r.arrays(True)[2])
    one = bootmap.count_tables(r.starts[0][:, None], r.ends[0][:, None], g, n_levels)
    out = {name: total[name] for name in (*bootmap.NAMES, "table_pages")}
    out["table_bytes"] = total["table_pages"] * g
    out["shared_tables"] = one["table_pages"] + rest["table_pages"] - total["table_pages"]
    return out


def _percpu_hull(image, image_pa, start, end, valid, cpus, g):
    """The nVHE per-CPU regions, one naturally aligned buddy block each from ``first_free``
    (``bootmap._alloc``): their hull, ``[first, last + size)``."""
    block = bootmap._order_bytes(image.percpu_bytes, g)
    first = _up(first_free(image, image_pa, start, end, valid), block)
    return first, first + (cpus - 1) * block + _up(image.percpu_bytes, g)


def _pkvm_ranges(r: _Ranges, kernel, cpus, tvb, idmap_lo, delta_u, start, end, valid, reserve):
    """pKVM's own ranges: stacks above ``__io_map_base`` (the quarter without the idmap), the
    pool at its alias, and the vmemmap (``bootmap._vmemmap``, listed once per distinct
    quarter, banks and pool)."""
    image, g = kernel.image, kernel.image.granule
    quarter = np.int64(1) << (tvb - 2)
    io_base = (idmap_lo & quarter) ^ quarter
    r.add(io_base + g, io_base + 2 * g * cpus)  # a guard page under each stack page
    size = np.asarray(reserve, I64)
    base = pool_base(start, end, valid, size, g)
    r.add(base.astype(U64) + delta_u, (base + size).astype(U64) + delta_u)
    vm = io_base | np.int64(1) << (tvb - 3)
    keys = np.stack(np.broadcast_arrays(vm, base, size, *start, *np.where(valid, end, start)))
    uniq, inverse = np.unique(keys, axis=1, return_inverse=True)
    lists = []
    nb = start.shape[0]
    for col in uniq.T:
        vm0, back, sz = (int(x) for x in col[:3])
        ends = zip(col[3 : 3 + nb], col[3 + nb :], strict=True)
        banks = [(int(a), int(b) - int(a)) for a, b in ends if b > a]
        regions = banks if image.version >= bootmap.VMEMMAP_ALL_MEMORY_SINCE else [(back, sz)]
        lists.append(bootmap._vmemmap(vm0, regions, back, g, image.version))
    width = max(len(x) for x in lists)
    for k in range(width):
        lo = np.array([x[k].va if k < len(x) else 0 for x in lists], U64)[inverse.reshape(-1)]
        hi = np.array([x[k].va + x[k].size if k < len(x) else 0 for x in lists], U64)
        lvl = {x[k].level for x in lists if k < len(x)}
        if len(lvl) == 1:
            r.add(lo, hi[inverse.reshape(-1)], lvl.pop())
        else:  # mixed leaf levels in one slot: one slot per level
            for level in sorted(lvl):
                keep = np.array([k < len(x) and x[k].level == level for x in lists])
                r.add(np.where(keep[inverse.reshape(-1)], lo, 0),
                      np.where(keep, hi, 0)[inverse.reshape(-1)], level)  # fmt: skip


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
