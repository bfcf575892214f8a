"""What a kernel really maps at EL2 at boot, nVHE and protected (pKVM), and the tables it takes.

nVHE ``init_hyp_mode`` (``arch/arm64/kvm/arm.c``) maps the idmap page (VA == PA), the hyp
sections and the kernel's rodata/bss at the HYP alias of their linear address
(``create_hyp_mappings``, page by page), a stack page per CPU at private VAs going down from
the idmap page (``create_hyp_stack``, ``mmu.c``) and each CPU's nVHE per-CPU region. pKVM's
``recreate_hyp_mappings`` (``hyp/nvhe/setup.c``) builds a new tree: the idmap, private VAs
going up from ``__io_map_base`` (``hyp_create_idmap``, ``hyp/nvhe/mm.c``), the vmemmap (one
range call per memory region: blocks), the hyp sections, the pool, per CPU its region, stack
and (6.10+) SVE state.

**Placement** (the walks' leaf PAs): per-CPU regions and SVE states are ``alloc_pages``
(GFP_KERNEL) after ``memblock_free_all`` freed memory low to high to the free lists' tails
(``__free_pages_core``): the lowest free memory of ZONE_NORMAL (DRAM above 4 GiB,
``max_zone_phys(32)`` in ``arch/arm64/mm/init.c``) if any, else of ZONE_DMA past the image,
beyond what boot took first (``first_free``), one naturally aligned block after the other.
The pcp lists (``rmqueue_pcplist``) can break that run: pass ``percpu_pa`` then. Stack PAs do
not matter (private VAs). The pool: ``pool_base`` (top-down memblock) or ``reserve_base``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np

from sweep.core.kconfig import level_shift, min_block_level
from sweep.model.reference_tree import Tree

MIB = 1 << 20
BP_VECS_BYTES = 3 * 2048
"""``__BP_HARDEN_HYP_VECS_SZ`` = ``(BP_HARDEN_EL2_SLOTS - 1) * SZ_2K`` (``asm/spectre.h``)."""
VGIC_GLOBAL_BYTES = 128
"""``sizeof(struct vgic_global)`` is below this: one page unless it straddles two."""
EARLY_BYTES = 24 * MIB
"""What boot took from the zone before ``init_hyp_mode``: in the 1-CPU walks the first per-CPU
region sat 9-26 MiB (4K) and 23-27 MiB (16K) past ``_end`` rounded up to 2 MiB."""
# Version boundaries, each bracketed by sources read (6.1, 6.12, 7.2, 7.3) and walks (6.18+).
PKVM_HOST_SECTIONS_UNTIL = (6, 2)  # 6.1 setup.c maps __start_rodata.. and ..__bss_stop RO
VMEMMAP_ALL_MEMORY_SINCE = (6, 2)  # 6.12 hyp_back_vmemmap(back): every region; 6.1: the pool
HOST_SVE_SINCE = (6, 10)  # init_pkvm_host_sve_state / pkvm_create_host_sve_mappings
VGIC_STATE = ((6, 2), (6, 19))  # 6.12 maps &kvm_vgic_global_state; the 6.19 walk does not
HYP_PAGE_8_SINCE = (6, 14)  # struct hyp_page (nvhe/memory.h): 4 bytes in 6.12, 8 in the 6.19 walk


class Range(NamedTuple):
    """One mapping: ``size`` bytes at ``va`` onto ``pa`` (None: a PA the count does not need),
    as leaves of ``level`` (3: pages; 1, 2: blocks)."""

    va: int
    size: int
    pa: int | None
    level: int
    what: str


@dataclass(frozen=True)
class BootImage:
    """Byte offsets from ``_text`` of what EL2 maps of one kernel build, ``(start, end)``."""

    version: tuple[int, int]
    granule: int
    idmap: tuple[int, int]  # __hyp_idmap_text_start, __hyp_idmap_text_end
    hyp_text: tuple[int, int]
    hyp_data: tuple[int, int] | None  # .hyp.data: 6.18+ (absent before)
    hyp_rodata: tuple[int, int]
    rodata: tuple[int, int]  # __start_rodata, __end_rodata
    hyp_bss: tuple[int, int]
    bss_tail: tuple[int, int]  # __hyp_bss_end, __bss_stop
    end: int  # _end
    percpu_bytes: int  # nvhe_percpu_size()
    vgic_state: int | None = None  # kvm_vgic_global_state (System.map), mapped by 6.2-6.18 pKVM
    bp_vecs: int | None = None  # __bp_harden_hyp_vecs

    @classmethod
    def from_offsets(
        cls, version: tuple[int, int], granule: int, o: Mapping[str, int], **extra
    ) -> BootImage:
        """From a kernel profile's ``[offsets]`` (symbol -> bytes from ``_text``)."""

        def span(a: str, b: str) -> tuple[int, int] | None:
            return (o[a], o[b]) if a in o and b in o else None

        return cls(
            version=tuple(version[:2]),
            granule=granule,
            idmap=span("__hyp_idmap_text_start", "__hyp_idmap_text_end"),
            hyp_text=span("__hyp_text_start", "__hyp_text_end"),
            hyp_data=span("__hyp_data_start", "__hyp_data_end"),
            hyp_rodata=span("__hyp_rodata_start", "__hyp_rodata_end"),
            rodata=span("__start_rodata", "__end_rodata"),
            hyp_bss=span("__hyp_bss_start", "__hyp_bss_end"),
            bss_tail=span("__hyp_bss_end", "__bss_stop"),
            end=o["_end"],
            percpu_bytes=o["__kvm_nvhe___per_cpu_end"] - o["__kvm_nvhe___per_cpu_start"],
            **extra,
        )

    def image_pa(self, idmap_pa: int) -> int:
        """``_text``'s PA from the idmap page's (the image is placed granule-aligned)."""
        return idmap_pa - (self.idmap[0] - self.idmap[0] % self.granule)


def _down(x: int, a: int) -> int:
    return x - x % a


def _up(x: int, a: int) -> int:
    return -(-x // a) * a


def _order_bytes(size: int, granule: int) -> int:
    """``PAGE_SIZE << get_order(size)``: the buddy block (and private VA alignment) for size."""
    pages = max(1, _up(size, granule) // granule)
    return granule << (pages - 1).bit_length()


def sve_state_bytes(version: tuple[int, int], max_vl: int) -> int:
    """``pkvm_host_sve_state_size()`` for a CPU whose largest SVE vector is ``max_vl`` bytes:
    ``SVE_SIG_REGS_SIZE(vq)`` = 546 * vq, plus ``struct cpu_sve_state``'s 16-byte header up to
    6.x (``asm/kvm_pkvm.h``); 0 without SVE."""
    if not max_vl:
        return 0
    return 546 * (max_vl // 16) + (16 if version < (7, 0) else 0)


def first_free(image: BootImage, image_pa: int, banks: Sequence[tuple[int, int]],
               early_bytes: int = EARLY_BYTES) -> int:  # fmt: skip
    """The lowest free memory of GFP_KERNEL's zone when ``init_hyp_mode`` runs (module doc):
    ZONE_NORMAL (DRAM at or above 4 GiB, when DRAM starts below it) else ZONE_DMA; in the zone
    holding the image, past ``_end`` (rounded to 2 MiB); plus ``early_bytes``."""
    start = min(b for b, _ in banks)
    normal = 1 << 32 if start < 1 << 32 else 1 << 64
    zone = sorted((max(b, normal), b + s) for b, s in banks if b + s > normal) or sorted(
        (b, min(b + s, normal)) for b, s in banks if b < normal
    )
    image_end = _up(image_pa + image.end, 2 * MIB)
    lo, hi = next(((max(a, image_end), e) for a, e in zone if a <= image_pa < e), zone[0])
    return min(lo + early_bytes, max(lo, hi - 64 * MIB))


def pool_base(banks: Sequence[tuple[int, int]], size: int, granule: int,
              taken: int = 64 << 10) -> int:  # fmt: skip
    """pKVM's pool: ``kvm_hyp_reserve``'s ``memblock_phys_alloc(ALIGN(size, PMD_SIZE),
    PMD_SIZE)`` (``arch/arm64/kvm/pkvm.c``), top-down (``mm/memblock.c``), below what
    ``paging_init`` took first at the top of DRAM: the linear map's last-level tables (Debian's
    rodata=full maps it with pages: one table per PMD_SIZE of DRAM) and ``taken`` bytes more
    (under 2 MiB in every walk). Assumes the pool fits in the highest bank."""
    pmd = granule << (granule.bit_length() - 4)
    top = max(b + s for b, s in banks)
    dram = sum(s for _, s in banks)
    return _down(top - dram // pmd * granule - taken - _up(size, pmd), pmd)


def _alloc(base: int, count: int, size: int, granule: int) -> tuple[list[int], int]:
    """``count`` naturally aligned buddy blocks for ``size`` bytes each, one after the other."""
    block, out = _order_bytes(size, granule), []
    for _ in range(count):
        base = _up(base, block)
        out.append(base)
        base += block
    return out, base


def _blocks(va: int, size: int, pa: int, granule: int, what: str) -> list[Range]:
    """One ``kvm_pgtable_hyp_map`` range call: blocks where VA and PA align (``hyp_map_walker``,
    ``kvm_block_mapping_supported`` in ``hyp/pgtable.c``), pages elsewhere."""
    out, pieces = [], [(va, va + size)]
    for level in range(min_block_level(granule), 3):
        chunk = 1 << level_shift(level, granule)
        if (va - pa) % chunk:
            continue
        rest = []
        for lo, hi in pieces:
            a, b = _up(lo, chunk), _down(hi, chunk)
            if a < b:
                out.append(Range(a, b - a, a - va + pa, level, what))
                rest += [(lo, a), (b, hi)]
            else:
                rest.append((lo, hi))
        pieces = [(lo, hi) for lo, hi in rest if lo < hi]
    out += [Range(lo, hi - lo, lo - va + pa, 3, what) for lo, hi in pieces]
    return sorted(out)


class _Hyp(NamedTuple):
    """``create_hyp_mappings`` of kernel memory: pages at the HYP alias ``hyp(p) = p + delta``
    (mod 2^64) of their linear address; image sections at ``image_pa`` plus their offsets."""

    granule: int
    delta: int
    image_pa: int

    def alias(self, pa: int, end: int, what: str) -> Range:
        lo, hi = _down(pa, self.granule), _up(end, self.granule)
        return Range((lo + self.delta) & ((1 << 64) - 1), hi - lo, lo, 3, what)

    def section(self, span: tuple[int, int] | None, what: str) -> list[Range]:
        if span is None or span[1] <= span[0]:
            return []
        return [self.alias(self.image_pa + span[0], self.image_pa + span[1], what)]


def boot_leaves(
    mode: str, image: BootImage, granule: int, hyp_va_bits: int, delta: int, image_pa: int,
    banks: Sequence[tuple[int, int]], cpus: int, *, percpu_pa: Sequence[int] | None = None,
    sve_pa: Sequence[int] | None = None, early_bytes: int = EARLY_BYTES, reserve_base: int = 0,
    reserve_size: int = 0, vectors: bool = False, sve_bytes: int = 0, gich_bytes: int = 0,
) -> list[Range]:  # fmt: skip
    """Every mapping ``mode`` ("nvhe" or "pkvm") has at EL2 once KVM is up, in the kernel's order.

    ``delta``: ``hyp(p) = p + delta`` (mod 2^64); ``banks``: clipped DRAM ``(base, size)``;
    ``percpu_pa``/``sve_pa``: where the allocator put them (default: ``first_free`` and
    ``_alloc``); ``vectors``: a Spectre-v3a CPU (Cortex-A57/A72: ``kvm_init_vector_slots``,
    ``hyp_map_vectors``); ``sve_bytes``: ``sve_state_bytes`` (pKVM 6.10+); ``gich_bytes``: the
    GICv2 GICH region (``vgic_v2_probe``, nVHE only)."""
    if mode not in ("nvhe", "pkvm") or granule != image.granule:
        raise ValueError(f"boot_leaves: mode {mode!r}, granule {granule} vs {image.granule}")
    g, v, hyp = granule, image.version, _Hyp(granule, delta, image_pa)
    pkvm = mode == "pkvm"
    sve_bytes = sve_bytes if pkvm and v >= HOST_SVE_SINCE else 0
    if percpu_pa is None:
        percpu_pa, nxt = _alloc(first_free(image, image_pa, banks, early_bytes), cpus,
                                image.percpu_bytes, g)  # fmt: skip
        sve_pa = sve_pa if sve_pa is not None else _alloc(nxt, cpus, sve_bytes, g)[0]
    elif sve_pa is None and sve_bytes:
        raise ValueError("boot_leaves: percpu_pa given without sve_pa")

    idmap_lo = _down(image_pa + image.idmap[0], g)
    out = [Range(idmap_lo, _up(image_pa + image.idmap[1], g) - idmap_lo, idmap_lo, 3, "idmap")]
    vec_size = _up(BP_VECS_BYTES + (image.bp_vecs or 0) % g, g) if vectors else 0
    percpu = [hyp.alias(p, p + image.percpu_bytes, "percpu") for p in percpu_pa]
    sve = [hyp.alias(p, p + sve_bytes, "sve") for p in sve_pa or ()] if sve_bytes else []
    sections = hyp.section(image.hyp_text, "hyp_text") + hyp.section(image.hyp_data, "hyp_data")
    sections += hyp.section(image.hyp_rodata, "hyp_rodata")
    if not pkvm:
        # create_hyp_mappings per section, then create_hyp_stack (private VAs down from the
        # idmap page: io_map_base), per-CPU regions, later the vectors and GICv2's GICH.
        sections += hyp.section(image.rodata, "rodata") + hyp.section(image.hyp_bss, "hyp_bss")
        stacks, private = _nvhe_private(idmap_lo, cpus, g, vec_size, gich_bytes)
        return out + sections + hyp.section(image.bss_tail, "bss") + stacks + percpu + private
    # pKVM: hyp_create_idmap sets __io_map_base in the quarter not holding the idmap.
    quarter = 1 << (hyp_va_bits - 2)
    io_base = (idmap_lo & quarter) ^ quarter
    private, stacks = _pkvm_private(io_base, cpus, g, vec_size)
    regions = banks if v >= VMEMMAP_ALL_MEMORY_SINCE else [(reserve_base, reserve_size)]
    vmemmap = _vmemmap(io_base | 1 << (hyp_va_bits - 3), regions, reserve_base, g, v)
    out += private + vmemmap + sections + hyp.section(image.hyp_bss, "hyp_bss")
    if reserve_size:
        out.append(hyp.alias(reserve_base, reserve_base + reserve_size, "pool"))
    for cpu in range(cpus):
        out += [percpu[cpu], stacks[cpu]]
    out += sve
    if v < PKVM_HOST_SECTIONS_UNTIL:
        out += hyp.section(image.rodata, "rodata") + hyp.section(image.bss_tail, "bss")
    elif VGIC_STATE[0] <= v < VGIC_STATE[1] and image.vgic_state is not None:
        out += hyp.section((image.vgic_state, image.vgic_state + VGIC_GLOBAL_BYTES), "vgic_state")
    return out


def _nvhe_private(
    idmap_lo: int, cpus: int, g: int, vec_size: int, gich_bytes: int
) -> tuple[list[Range], list[Range]]:
    """nVHE's private VAs, going down from the idmap page (``io_map_base``, ``mmu.c``): a stack
    page per CPU above a guard page (``create_hyp_stack``), then the vectors and GICH, each
    aligned to its buddy order (``hyp_alloc_private_va_range``)."""
    io, stacks, private = idmap_lo, [], []
    for _ in range(cpus):
        io = _down(io - 2 * g, 2 * g)
        stacks.append(Range(io + g, g, None, 3, "stack"))
    for size, what in ((vec_size, "vectors"), (gich_bytes, "gich")):
        if size:
            size = _up(size, g)
            io = _down(io - size, _order_bytes(size, g))
            private.append(Range(io, size, None, 3, what))
    return stacks, private


def _pkvm_private(
    io_base: int, cpus: int, g: int, vec_size: int
) -> tuple[list[Range], list[Range]]:
    """pKVM's private VAs, going up from ``__io_map_base`` (``pkvm_alloc_private_va_range``,
    ``hyp/nvhe/mm.c``): the vectors, then a stack page per CPU above a guard page."""
    nxt, private, stacks = io_base, [], []
    if vec_size:
        nxt = _up(nxt, _order_bytes(vec_size, g))
        private.append(Range(nxt, vec_size, None, 3, "vectors"))
        nxt += vec_size
    for _ in range(cpus):
        nxt = _up(nxt, 2 * g)
        stacks.append(Range(nxt + g, g, None, 3, "stack"))
        nxt += 2 * g
    return private, stacks


def _vmemmap(
    vmemmap: int, regions: Sequence[tuple[int, int]], back: int, g: int, v: tuple[int, int]
) -> list[Range]:
    """pKVM's vmemmap (``hyp_back_vmemmap``, ``hyp/nvhe/mm.c``): the ``struct hyp_page`` entries
    of each region, backed from the pool at ``back``, one range call per region (blocks)."""
    entry = 8 if v >= HYP_PAGE_8_SINCE else 4
    out, done = [], 0
    for base, size in sorted(regions):
        lo = max(_down(vmemmap + (base // g) * entry, g), done)
        done = _up(vmemmap + ((base + size) // g) * entry, g)
        if lo < done:
            out += _blocks(lo, done - lo, back, g, "vmemmap")
            back += done - lo
    return out


def boot_tables(
    mode: str, image: BootImage, granule: int, hyp_va_bits: int, delta: int, image_pa: int,
    banks: Sequence[tuple[int, int]], cpus: int, **options,
) -> dict[str, int]:  # fmt: skip
    """``boot_leaves``' mappings (same arguments) in one ``reference_tree.Tree`` of
    ``hyp_va_bits`` bits: ``tables_lm1`` .. ``tables_l3`` and ``table_pages`` (model.md s5)."""
    leaves = boot_leaves(mode, image, granule, hyp_va_bits, delta, image_pa, banks, cpus, **options)
    return tree_tables(leaves, granule, hyp_va_bits)


def tree_tables(leaves: Sequence[Range], granule: int, hyp_va_bits: int) -> dict[str, int]:
    """Per-level table counts of a tree holding ``leaves`` (each at its own leaf level)."""
    tree = Tree(granule, hyp_va_bits, block_mappings=True)
    for r in leaves:
        tree.block_mappings = r.level < 3  # pages stay pages; a block range maps as blocks
        pa = r.va if r.pa is None else r.pa
        tree.map_range(r.va, r.va + r.size, pa)
    counts = tree.tables_per_level()
    out = {name: counts[level] for name, level in zip(NAMES, range(-1, 4), strict=True)}
    out["table_pages"] = sum(counts.values())
    return out


NAMES = ("tables_lm1", "tables_l0", "tables_l1", "tables_l2", "tables_l3")


def count_tables(starts: np.ndarray, ends: np.ndarray, granule: int, n_levels: int,
                 leaf_levels: np.ndarray | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Tables per level of many trees at once, no loop over rows.

    Row ``i`` holds ranges ``[starts[i, k], ends[i, k])`` (uint64, rows x ranges; a slot with
    ``end <= start`` is padding) mapped as leaves of ``leaf_levels[i, k]`` (default 3). A table
    at level ``l + 1`` exists for each level-``l`` entry a walk goes through: the distinct
    ``2^shift(l)`` chunks touched by ranges with leaves deeper than ``l``. Per level: chunk
    indices in order of range start, each range counting the chunks past the running maximum."""
    starts, ends = np.asarray(starts, np.uint64), np.asarray(ends, np.uint64)
    rows = starts.shape[0]
    leaf = np.full(starts.shape, 3) if leaf_levels is None else np.asarray(leaf_levels)
    starts, ends, leaf = _by_start(starts, ends, leaf)
    root = 4 - n_levels
    out = {name: np.zeros(rows, np.int64) for name in NAMES}
    out[NAMES[root + 1]][:] = 1
    for level in range(root, 3):
        shift = np.uint64(level_shift(level, granule))
        valid = (ends > starts) & (leaf > level)  # others count nothing and raise no maximum
        first = (starts >> shift).astype(np.int64)
        last = np.where(valid, ((ends - np.uint64(1)) >> shift).astype(np.int64), -1)
        seen = np.maximum.accumulate(last, axis=1)
        seen = np.concatenate([np.full((rows, 1), -1, np.int64), seen[:, :-1]], axis=1)
        fresh = last - np.maximum(first, seen + 1) + 1
        out[NAMES[level + 2]] = np.clip(fresh, 0, None).sum(axis=1)
    out["table_pages"] = sum(out[name] for name in NAMES)
    return out


def _by_start(starts, ends, leaf):
    """Each row's ranges in order of start (chunk indices then keep the order at every level):
    one permutation for all rows when the first row's order sorts them all (rows of one unit
    whose ranges move together), else a sort per row."""
    if starts.shape[0] and starts.shape[1] > 1:
        perm = np.argsort(starts[0], kind="stable")
        moved = starts[:, perm]
        if (moved[:, 1:] >= moved[:, :-1]).all():
            return moved, ends[:, perm], np.broadcast_to(leaf, starts.shape)[:, perm]
    order = np.argsort(starts, axis=1)
    take = partial(np.take_along_axis, indices=order, axis=1)
    return take(starts), take(ends), take(np.broadcast_to(leaf, starts.shape))


def pad_ranges(rows: Sequence[Sequence[Range]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``boot_leaves`` lists of many rows as padded ``starts, ends, leaf_levels`` arrays."""
    width = max((len(r) for r in rows), default=0)
    starts = np.zeros((len(rows), width), np.uint64)
    ends, leaf = starts.copy(), np.full((len(rows), width), 3, np.int8)
    for i, row in enumerate(rows):
        for k, r in enumerate(row):
            starts[i, k], ends[i, k], leaf[i, k] = r.va, r.va + r.size, r.level
    return starts, ends, leaf
