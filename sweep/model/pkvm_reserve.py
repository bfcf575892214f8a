"""The pKVM reservation: what ``kvm_hyp_reserve()`` (``arch/arm64/kvm/pkvm.c``) takes at boot.

In protected mode, arm64's ``bootmem_init`` (``arch/arm64/mm/init.c``) calls
``kvm_hyp_reserve``, which sums the page counts of ``arch/arm64/include/asm/kvm_pkvm.h`` over
the memblock regions (``for_each_mem_region``, after ``arm64_memblock_init``'s clip) and takes
``memblock_phys_alloc(ALIGN(size, PMD_SIZE), PMD_SIZE)``, falling back to
``memblock_phys_alloc(size, PAGE_SIZE)`` (the size then stays unaligned). The kernel prints
``kvm [0]: Reserved N MiB at 0x...``. Everything here is integer arithmetic (int64).

The base is the highest candidate of memblock's top-down search (``mm/memblock.c``,
``__memblock_find_range_top_down``; never below ``PAGE_SIZE``) over the regions as if nothing
were reserved yet: the kernel's other early reservations (image, DTB, initrd, ...) are not
modelled, so a real boot's base can be lower; the size is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweep.core.eras import BY_NAME, resolve
from sweep.core.errors import ValidationError
from sweep.core.kconfig import GRANULES

I64 = np.int64

KVM_MAX_PVMS = 255  # asm/kvm_pkvm.h (6.2+): hyp_vm_table_pages()
SIZEOF_POINTER = 8  # sizeof(void *) on arm64: hyp_vm_table_pages()
HYP_MEMBLOCK_REGIONS = 128  # asm/kvm_pkvm.h: register_memblock_regions() fails above it
KVM_FFA_MBOX_NR_PAGES = 1  # asm/kvm_pkvm.h (6.4+): hyp_ffa_proxy_pages()
SG_MAX_SEGMENTS = 2048  # include/linux/scatterlist.h (arm64 has SG chaining)
# include/linux/arm_ffa.h: sizeof(struct ffa_mem_region) 48, ffa_mem_region_attributes 32,
# ffa_composite_mem_region 16, ffa_mem_region_addr_range 16 (the same in 6.12, 7.2 and 7.3).
FFA_DESC_MAX = 48 + 32 + 16 + SG_MAX_SEGMENTS * 16
HOST_S2_PGD_PAGES = 16  # asm/kvm_pkvm.h host_s2_pgtable_pages(): concatenated PGDs
PRIVATE_BYTES = 1 << 30  # asm/kvm_pkvm.h: SZ_1G for private (stage 1) / MMIO (stage 2)
SELFTEST_PAGES = 0  # asm/kvm_pkvm.h (7.x) pkvm_selftest_pages(): 32 only with NVHE_EL2_DEBUG
PAGE_FLOOR = True  # mm/memblock.c memblock_find_in_range_node: "avoid allocating the first page"

PARTS = ("s1", "host_s2", "vm_table", "vmemmap", "selftest", "ffa")


@dataclass(frozen=True)
class Formula:
    """One kernel's ``kvm_hyp_reserve``: the numbers that differ between versions."""

    levels: int  # iterations of __hyp_pgtable_max_pages
    hyp_page: int  # sizeof(struct hyp_page), arch/arm64/kvm/hyp/include/nvhe/memory.h
    per_region_vmemmap: bool  # hyp_vmemmap_pages(); False: 6.1's fixed point over the pool
    selftest: bool  # pkvm_selftest_pages() is part of the sum (7.x)


FORMULAS = {
    # 6.1: KVM_PGTABLE_MAX_LEVELS 4 (asm/kvm_pgtable.h); struct hyp_page {u16 refcount, order};
    # no hyp_vm_table_pages, hyp_vmemmap_pages or hyp_ffa_proxy_pages yet.
    "6.1": Formula(4, 4, False, False),
    # 6.12: KVM_PGTABLE_FIRST_LEVEL -1 .. KVM_PGTABLE_LAST_LEVEL 3 (asm/kvm_pgtable.h). Also
    # linux-6.2 (6.2-6.8), whose source is not at hand: a 6.4-6.8-shaped kvm_pkvm.h still loops
    # KVM_PGTABLE_MAX_LEVELS (4) times, so there this may over-count by a few pages.
    "6.12": Formula(5, 4, True, False),
    # 7.3, and 7.2 (its kvm_hyp_reserve and kvm_pkvm.h formulas are the same): struct hyp_page
    # gains host/hyp state bits and a u32 host_share_guest_count: 8 bytes.
    "7.3": Formula(5, 8, True, True),
}
"""By the kernel whose sources they are; an era's kernel is ``sweep.core.eras.Era.pkvm``."""


def formula(era: str) -> Formula | None:
    """The formula of an era (or its old layout name); ``None`` before pKVM (5.13)."""
    name = resolve(era)
    if name not in BY_NAME:
        known = ", ".join(BY_NAME)
        raise ValidationError(f"layout: {era!r} is not a kernel era ({known})")
    return FORMULAS[BY_NAME[name].pkvm] if BY_NAME[name].pkvm else None


def _div_up(a: np.ndarray, b) -> np.ndarray:
    return -(-a // b)


def _max_pages(nr_pages: np.ndarray, ptrs: np.ndarray, levels: int) -> np.ndarray:
    """``__hyp_pgtable_max_pages``: the sum over levels of ``nr = DIV_ROUND_UP(nr, PTRS)``."""
    total = np.zeros_like(nr_pages)
    for _ in range(levels):
        nr_pages = _div_up(nr_pages, ptrs)
        total += nr_pages
    return total


def _seg_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    csum = np.concatenate([np.zeros(1, I64), np.cumsum(values, dtype=I64)])
    return csum[offsets[1:]] - csum[offsets[:-1]]


def _seg_max(values: np.ndarray, offsets: np.ndarray, empty: int) -> np.ndarray:
    out = np.full(len(offsets) - 1, empty, I64)
    has = offsets[1:] > offsets[:-1]
    if has.any():
        out[has] = np.maximum.reduceat(values, offsets[:-1][has])
    return out


def _top_down(start, end, floor, size, align, seg_of, offsets) -> np.ndarray:
    """memblock's top-down search: per map the highest ``align``-aligned ``size`` bytes inside
    one region and at or above ``floor`` (each array per bank); -1 where nothing fits."""
    cand = (end - size[seg_of]) // align[seg_of] * align[seg_of]
    ok = (end >= size[seg_of]) & (cand >= np.maximum(start, floor))
    return _seg_max(np.where(ok, cand, -1), offsets, -1)


def reserve_many(
    era: str, granule, start: np.ndarray, end: np.ndarray, offsets: np.ndarray
) -> dict[str, np.ndarray]:
    """``kvm_hyp_reserve`` for many maps: map ``k``'s regions are ``[start, end)`` for
    ``offsets[k] <= i < offsets[k + 1]`` (sorted, merged, granule-aligned; ``TrimmedBanks``'s
    ``start``, ``end`` and ``offsets``, or clipped ones). ``granule`` is one int or one per map
    (for ``TrimmedBanks``: ``np.asarray(GRANULES)[np.arange(len(offsets) - 1) % 3]``).

    Returns int64 arrays, one value per map: each of ``PARTS`` (pages), ``pages``,
    ``reserve_bytes`` (``hyp_mem_size``; 0 where nothing is reserved: no pKVM in the era, no
    region, more than ``HYP_MEMBLOCK_REGIONS``, or no room) and ``reserve_base`` (0 then).
    """
    f = formula(era)
    start, end = np.asarray(start, I64), np.asarray(end, I64)
    offsets = np.asarray(offsets, I64)
    n = len(offsets) - 1
    out = {k: np.zeros(n, I64) for k in (*PARTS, "pages", "reserve_bytes", "reserve_base")}
    if f is None:
        return out
    gran = np.broadcast_to(np.asarray(granule, I64), (n,))
    if not np.isin(gran, GRANULES).all():
        bad = sorted(set(gran.tolist()) - set(GRANULES))
        raise ValidationError(f"granule: {bad} is not one of 4096, 16384, 65536")
    count = offsets[1:] - offsets[:-1]
    seg_of = np.repeat(np.arange(n), count)
    g = gran[seg_of]  # per bank
    ptrs = gran // 8  # PTRS_PER_PTE, asm/pgtable-hwdef.h

    bank_pages = (end - start) // g  # reg->size >> PAGE_SHIFT
    total = _seg_sum(_max_pages(bank_pages, g // 8, f.levels), offsets)
    private = _max_pages(PRIVATE_BYTES // gran, ptrs, f.levels)
    out["s1"] = total + private  # hyp_s1_pgtable_pages()
    out["host_s2"] = total + HOST_S2_PGD_PAGES + private  # host_s2_pgtable_pages()
    if f.per_region_vmemmap:  # 6.2+
        out["vm_table"] = _div_up(np.full(n, KVM_MAX_PVMS * SIZEOF_POINTER, I64), gran)
        lo = start // g * f.hyp_page  # hyp_vmemmap_memblock_size()
        hi = lo + bank_pages * f.hyp_page
        out["vmemmap"] = _seg_sum(_div_up(hi, g) - lo // g, offsets)  # hyp_vmemmap_pages()
        out["ffa"] = 2 * KVM_FFA_MBOX_NR_PAGES + _div_up(np.full(n, FFA_DESC_MAX, I64), gran)
    else:  # 6.1 kvm_hyp_reserve: the vmemmap of the pool itself, by fixed point
        pool, nr, prev = out["s1"] + out["host_s2"], np.zeros(n, I64), np.full(n, -1, I64)
        while (nr != prev).any():
            prev = nr
            nr = _div_up((pool + prev) * f.hyp_page, gran)
            nr = nr + _max_pages(nr, ptrs, f.levels)
        out["vmemmap"] = nr
    out["selftest"][:] = SELFTEST_PAGES if f.selftest else 0
    pages = sum(out[k] for k in PARTS)
    out["pages"] = pages
    reserved = _allocate(pages * gran, gran, g, start, end, seg_of, offsets)
    out["reserve_bytes"], out["reserve_base"] = reserved
    usable = (count > 0) & (count <= HYP_MEMBLOCK_REGIONS)
    out["reserve_bytes"][~usable] = 0
    out["reserve_base"][~usable] = 0
    return out


def _allocate(size, gran, g, start, end, seg_of, offsets) -> tuple[np.ndarray, np.ndarray]:
    """``kvm_hyp_reserve``'s allocation of ``size`` bytes per map (``gran`` per map, ``g`` per
    bank): ``memblock_phys_alloc(
    ALIGN(size, PMD_SIZE), PMD_SIZE)``, else ``memblock_phys_alloc(size, PAGE_SIZE)`` (the size
    unaligned then); the bytes reserved and their base, 0 and 0 where neither fits."""
    pmd = gran * (gran // 8)  # PMD_SIZE (a level-2 entry), asm/pgtable-hwdef.h
    aligned = _div_up(size, pmd) * pmd
    floor = g if PAGE_FLOOR else np.zeros_like(g)
    base = _top_down(start, end, floor, aligned, pmd, seg_of, offsets)
    fallback = _top_down(start, end, floor, size, gran, seg_of, offsets)
    return (
        np.where(base >= 0, aligned, np.where(fallback >= 0, size, 0)),
        np.where(base >= 0, base, np.maximum(fallback, 0)),
    )


def reserve_bytes_many(
    era: str, granule, start: np.ndarray, end: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """``reserve_many(...)["reserve_bytes"]``: the bytes reserved, one int64 per map."""
    return reserve_many(era, granule, start, end, offsets)["reserve_bytes"]


def reserve_parts(era: str, granule: int, bases: np.ndarray, sizes: np.ndarray) -> dict[str, int]:
    """``kvm_hyp_reserve`` for one memory map's memblock regions (``bases``, ``sizes`` in bytes;
    clipped, granule-trimmed, sorted and merged): each of ``PARTS`` in pages, ``pages``,
    ``reserve_bytes`` and ``reserve_base`` as ``reserve_many`` defines them."""
    bases = np.asarray(bases, I64).reshape(-1)
    ends = bases + np.asarray(sizes, I64).reshape(-1)
    got = reserve_many(era, granule, bases, ends, np.array([0, len(bases)], I64))
    return {k: int(v[0]) for k, v in got.items()}
