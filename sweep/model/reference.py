"""The scalar reference: one configuration at a time, plain Python ints, read beside docs/model.md.

This is the oracle the vectorized builder is tested against. It favours being obviously right
over being fast: each rule of docs/model.md is a few lines here, in the order the text gives them,
and the merged tree is built chunk by chunk as section 5 describes (``sweep.model.reference_tree``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.core.eras import ALIASES, BY_NAME, REASONS, resolve, unrunnable
from sweep.core.errors import ValidationError
from sweep.core.memmap import (
    MemoryMap,
    bank_containing,
    check_va_bits,
    granule_name,
    levels,
    parse_granule,
)
from sweep.model.pkvm_reserve import reserve_parts
from sweep.model.reference_tree import Tree, build_tree, round_down, round_up

LAYOUTS = tuple(BY_NAME) + tuple(ALIASES)
"""The eras docs/model.md section 3 defines (and their old names); the reference knows these."""

MASK64 = (1 << 64) - 1


def memstart_align(granule: int, layout: str) -> int:
    """``ARM64_MEMSTART_ALIGN``: 1 GiB, but 512 MiB at 64K from 5.12.

    ``2^max(ARM64_MEMSTART_SHIFT, SECTION_SIZE_BITS)`` (``arch/arm64/mm/init.c``; 6.1:
    ``asm/kernel-pgtable.h``), with ``SECTION_SIZE_BITS`` 29 at 64K from 5.12 (``asm/sparsemem.h``).
    """
    return BY_NAME[resolve(layout)].memstart_align(granule)


# --- Section 2: PHYS_OFFSET and clipping -----------------------------------------------------


def clip_dram(
    banks: list[tuple[int, int]], idmap_pa: int, granule: int, va_bits: int, align: int
) -> tuple[int, list[tuple[int, int]], int]:
    """``arm64_memblock_init``: returns (PHYS_OFFSET, clipped banks, clipped_bytes)."""
    phys_offset = round_down(banks[0][0], align)
    linear = 1 << (va_bits - 1)
    total = sum(e - s for s, e in banks)
    # 1. drop all DRAM at or above max(PHYS_OFFSET + L, end of the kernel image)
    limit = max(phys_offset + linear, idmap_pa + granule)
    kept = [(s, min(e, limit)) for s, e in banks if s < limit]
    # 2. the kernel sits high: move PHYS_OFFSET up and drop what lies below it
    dram_end = kept[-1][1]
    if dram_end > phys_offset + linear:
        phys_offset = round_up(dram_end - linear, align)
        kept = [(max(s, phys_offset), e) for s, e in kept if e > phys_offset]
    clipped = total - sum(e - s for s, e in kept)
    return phys_offset, kept, clipped


# --- Section 3: layouts ----------------------------------------------------------------------


@dataclass
class Layout:
    """What a layout decides for one configuration: the alias function's delta and the window."""

    delta: int
    hyp_va_min: int
    hyp_va_max: int
    tree_va_bits: int


def lin(p: int, phys_offset: int, va_bits: int) -> int:
    """Kernel linear-map VA of a physical address (4.x: top half of the kernel VA space)."""
    page_offset = (1 << 64) - (1 << (va_bits - 1))
    return (page_offset + (p - phys_offset)) & MASK64


def hyp_layout(
    name: str,
    banks: list[tuple[int, int]],
    phys_offset: int,
    idmap_pa: int,
    idmap_va_bits: int,
    va_bits: int,
    tag_random: int,
) -> Layout:
    """The alias ``hyp(p) = p + delta`` and the window, as section 3 defines each layout."""
    era = BY_NAME[resolve(name)]
    v = va_bits
    high_window = (1 << (v - 1), (1 << v) - 1)
    low_window = (0, (1 << (v - 1)) - 1)
    first = banks[0][0]

    if era.formula == "high":
        hyp_first = lin(first, phys_offset, v) & ((1 << v) - 1)
        window = high_window
    elif era.formula == "merged":
        if idmap_pa > (1 << (v - 1)) - 1:
            hyp_first = lin(first, phys_offset, v) & ((1 << (v - 1)) - 1)
            window = low_window
        else:
            hyp_first = lin(first, phys_offset, v) & ((1 << v) - 1)
            window = high_window
    else:  # kvm_compute_layout; 7.0+ takes the region bit from kvm_hyp_va_bits()
        hyp_va_bits = max(48, v) if era.tag_at_hyp_va_bits else v
        msb = (idmap_pa & (1 << (hyp_va_bits - 1))) ^ (1 << (hyp_va_bits - 1))
        lowest, highest = banks[0][0], banks[-1][1] - 1
        tag_lsb = (lin(lowest, phys_offset, v) ^ lin(highest, phys_offset, v)).bit_length()
        va_mask = (1 << tag_lsb) - 1
        if tag_lsb != hyp_va_bits - 1:
            random_bits = ((1 << (hyp_va_bits - 1)) - 1) & ~va_mask  # bits .. - 2 down to tag_lsb
            tag = msb | (tag_random & random_bits)
        else:
            tag = msb
        # kern_hyp_va is patched with two 12-bit add immediates (kvm_update_va_mask): only
        # tag_val[23:0], the 24 tag bits from tag_lsb up, reach an alias.
        tag &= ((1 << 24) - 1) << tag_lsb
        hyp_first = (lin(first, phys_offset, v) & va_mask) | tag
        window = (tag, tag | va_mask)

    tree_va_bits = max(era.tree_floor, v, idmap_va_bits)
    delta = (hyp_first - first) & MASK64
    if delta >= 1 << 63:
        delta -= 1 << 64
    return Layout(delta, window[0], window[1], tree_va_bits)


# --- Section 5: the merged tree (sweep.model.reference_tree) --------------------------------------

# --- Sections 4 to 6: one row ----------------------------------------------------------------


@dataclass
class Configuration:
    """One configuration through docs/model.md sections 1 to 3: what its row is computed from."""

    memory_map: MemoryMap
    granule: int
    va_bits: int
    layout: str
    block_mappings: bool
    idmap_pa: int
    tag_random: int
    phys_offset: int
    banks: list[tuple[int, int]]
    """The clipped DRAM banks ``(start, end)``."""
    clipped_bytes: int
    idmap_va_bits: int
    hyp: Layout

    @property
    def runtime(self) -> list[tuple[int, int, int]]:
        """The runtime mappings ``(va, va_end, pa)``: every clipped bank's HYP alias."""
        return [(s + self.hyp.delta, e + self.hyp.delta, s) for s, e in self.banks]


def prepare(
    memory_map: MemoryMap,
    granule: int | str,
    va_bits: int,
    layout: str,
    block_mappings: bool,
    idmap_pa: int,
    tag_random: int = 0,
    layout_plugin=None,
) -> Configuration:
    """Check the inputs (section 1), clip DRAM (section 2) and apply the layout (section 3).

    ``layout_plugin`` (a ``sweep.model.layout.Layout``) stands in for a layout this module does not
    know, asked about this one row; the built-in four are computed here from their formulas.
    """
    granule = parse_granule(granule)
    v = check_va_bits(va_bits)
    if layout_plugin is None and layout not in LAYOUTS:
        raise ValidationError(f"layout: {layout!r} is not one of {', '.join(LAYOUTS)}")
    trimmed = memory_map.trimmed(granule)
    idmap_pa = round_down(idmap_pa, granule)
    if bank_containing(trimmed, idmap_pa) is None:
        raise ValidationError(
            f"memory map {memory_map.name!r}: idmap_pa {idmap_pa:#x} is outside every "
            f"{granule_name(granule)}-trimmed bank"
        )
    align = (
        memstart_align(granule, layout)
        if layout_plugin is None
        else layout_plugin.memstart_align(granule)
    )
    phys_offset, banks, clipped_bytes = clip_dram(trimmed, idmap_pa, granule, v, align)
    idmap_va_bits = (idmap_pa + granule - 1).bit_length()
    if layout_plugin is None:
        hyp = hyp_layout(layout, banks, phys_offset, idmap_pa, idmap_va_bits, v, tag_random)
    else:
        hyp = _plugin_layout(
            layout_plugin, banks, phys_offset, idmap_pa, idmap_va_bits, granule, v, tag_random
        )
    return Configuration(
        memory_map,
        granule,
        v,
        layout,
        bool(block_mappings),
        idmap_pa,
        tag_random,
        phys_offset,
        banks,
        clipped_bytes,
        idmap_va_bits,
        hyp,
    )


def _plugin_layout(
    plugin, banks, phys_offset, idmap_pa, idmap_va_bits, granule, va_bits, tag_random
) -> Layout:
    """A layout plugin's answer for one row, as this module's ``Layout``."""
    import numpy as np  # lazy: plain ints; numpy only for a plugin layout

    from sweep.model.layout import LayoutBatch  # lazy: as numpy

    def one(value: int, dtype=np.int64) -> np.ndarray:
        return np.array([value], dtype=dtype)

    result = plugin.compute(
        LayoutBatch(
            granule=one(granule),
            va_bits=one(va_bits),
            idmap_pa=one(idmap_pa),
            idmap_va_bits=one(idmap_va_bits),
            phys_offset=one(phys_offset),
            dram_first=one(banks[0][0]),
            dram_last=one(banks[-1][1] - 1),
            tag_random=one(tag_random, np.uint64),
        )
    )

    def first(values) -> int:
        return int(np.asarray(values).reshape(-1)[0])

    return Layout(
        first(result.delta),
        first(result.hyp_va_min),
        first(result.hyp_va_max),
        first(result.tree_va_bits),
    )


def compute_row(
    memory_map: MemoryMap,
    granule: int | str,
    va_bits: int,
    layout: str,
    block_mappings: bool,
    idmap_pa: int,
    tag_random: int = 0,
    layout_plugin=None,
) -> dict:
    """Every section 6 column of one configuration, in plain Python ints and bools
    (``layout_plugin``: a layout this module does not know, as in ``prepare``)."""
    c = prepare(
        memory_map, granule, va_bits, layout, block_mappings, idmap_pa, tag_random, layout_plugin
    )
    granule, v, idmap_pa, lay = c.granule, c.va_bits, c.idmap_pa, c.hyp

    # Section 4: overlap, window, margin.
    runtime = c.runtime
    idmap_lo, idmap_hi = idmap_pa, idmap_pa + granule
    # A VA of the idmap page also claimed by a runtime mapping of another PA (delta != 0).
    overlap = any(a < idmap_hi and idmap_lo < e and a != pa for a, e, pa in runtime)
    gaps = []
    for a, e, _pa in runtime:
        if a >= idmap_hi:
            gaps.append(a - idmap_hi)
        elif e <= idmap_lo:
            gaps.append(idmap_lo - e)
        else:
            gaps.append(0)

    # Section 5: the merged tree, and the trees of each part alone.
    era = BY_NAME.get(resolve(c.layout)) if layout_plugin is None else None
    tree_bits = lay.tree_va_bits
    if era is not None and era.two_trees:
        counts = two_tree_counts(
            *two_trees(runtime, idmap_pa, granule, v, c.idmap_va_bits, block_mappings)
        )
        overlap = False  # separate trees: the idmap meets no runtime mapping
        shared_tables = 0
    else:
        both = build_tree(runtime, idmap_pa, granule, tree_bits, block_mappings)
        runtime_only = build_tree(runtime, None, granule, tree_bits, block_mappings)
        idmap_only = build_tree([], idmap_pa, granule, tree_bits, block_mappings)
        counts = both.tables_per_level()
        shared_tables = pages(runtime_only) + pages(idmap_only) - sum(counts.values())
    table_pages = sum(counts.values())

    levels_runtime = levels(v, granule)
    n_levels = levels(tree_bits, granule)
    code = 0
    if era is not None:
        code = int(unrunnable(era, granule, v, c.idmap_va_bits, n_levels - levels_runtime))
    return {
        "memory_map": memory_map.name,
        "granule": granule,
        "va_bits": v,
        "layout": resolve(layout),
        "block_mappings": bool(block_mappings),
        "idmap_pa": idmap_pa,
        "tag_random": tag_random,
        **ALL_DRAM,
        "phys_offset": c.phys_offset,
        "clipped_bytes": c.clipped_bytes,
        "hyp_va_min": lay.hyp_va_min,
        "hyp_va_max": lay.hyp_va_max,
        "hyp_dram_last": c.banks[-1][1] - 1 + lay.delta,
        "idmap_va_bits": c.idmap_va_bits,
        "idmap_extended": c.idmap_va_bits > v,
        "levels_runtime": levels_runtime,
        "levels_idmap": levels(max(v, c.idmap_va_bits), granule),
        "levels": n_levels,
        "extra_levels": n_levels - levels_runtime,
        "overlap": overlap,
        "idmap_in_window": lay.hyp_va_min <= idmap_pa <= lay.hyp_va_max,
        "margin": min(gaps),
        "tables_lm1": counts[-1],
        "tables_l0": counts[0],
        "tables_l1": counts[1],
        "tables_l2": counts[2],
        "tables_l3": counts[3],
        "table_pages": table_pages,
        "table_bytes": table_pages * granule,
        "shared_tables": shared_tables,
        "runnable": code == 0,
        "unrunnable": REASONS[code],
        **_reservation(era, granule, c.banks),
    }


def _reservation(era, granule: int, banks: list[tuple[int, int]]) -> dict:
    """Section 9: ``kvm_hyp_reserve`` for the clipped banks (0 without pKVM or an era)."""
    if era is None or not era.pkvm:
        return {"pkvm_reserve_bytes": 0, "pkvm_reserve_base": 0}
    got = reserve_parts(era.name, granule, [s for s, _ in banks], [e - s for s, e in banks])
    return {"pkvm_reserve_bytes": got["reserve_bytes"], "pkvm_reserve_base": got["reserve_base"]}


ALL_DRAM = {"mappings": "all-dram", "cpus": 0, "kernel": ""}
"""The reference counts all of DRAM (sections 2-5); boot sets are ``sweep.model.bootmap``'s."""


def pages(tree: Tree) -> int:
    return sum(tree.tables_per_level().values())


def two_trees(runtime, idmap_pa, granule, va_bits, idmap_va_bits, block_mappings):
    """4.6-4.7 (``arch/arm/kvm/mmu.c`` ``kvm_mmu_init``): the runtime tree ``hyp_pgd`` and the
    boot tree ``boot_hyp_pgd``, each of ``VA_BITS``, both holding the idmap page again at
    ``TRAMPOLINE_VA = HYP_PAGE_OFFSET_MASK & PAGE_MASK``. An idmap above ``VA_BITS`` instead gets
    ``merged_hyp_pgd``, one root of the extended tree over both (no trampoline).

    Returns ``(hyp_pgd, boot_hyp_pgd, level of merged_hyp_pgd or None)``."""
    top = (1 << va_bits) - granule  # TRAMPOLINE_VA
    extended = idmap_va_bits > va_bits
    hyp = build_tree(runtime, None, granule, va_bits, block_mappings)
    boot = Tree(granule, va_bits, block_mappings)
    if not extended:
        hyp.map_idmap_page(top)  # the trampoline, mapped after the runtime as a page
        boot.map_range(top, top + granule, idmap_pa)
    boot.map_idmap_page(idmap_pa % (1 << va_bits))
    return hyp, boot, (4 - levels(idmap_va_bits, granule)) if extended else None


def two_tree_counts(hyp: Tree, boot: Tree, merged_root: int | None) -> dict[int, int]:
    """Tables per level of 4.6-4.7's pair of trees (and ``merged_hyp_pgd``)."""
    counts = {
        level: n + boot.tables_per_level()[level] for level, n in hyp.tables_per_level().items()
    }
    if merged_root is not None:
        counts[merged_root] += 1
    return counts
