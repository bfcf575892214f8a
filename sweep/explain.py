"""One configuration explained: its merged HYP tree printed the way ptdump prints page tables.

The tree is the scalar reference's (``sweep.model.reference_tree.build_tree``), so what is printed
is docs/model.md read literally; the row printed after it is the builder's, and the two must
agree (the per-level table counts are compared and any disagreement is printed).

The format follows the kernel's page-table dump (``arch/arm64/mm/ptdump.c``, ``note_page``): one
line per run of entries that are alike — here, same kind (table, block, page, invalid) and same
mapping behind them — giving the VA range, its size in the largest binary unit that divides it,
and the level. Runs of identical tables are printed once, with their count.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from itertools import pairwise

from sweep.api import build_row
from sweep.core.columns import HEX_COLUMNS, TABLE_COLUMNS
from sweep.core.eras import BY_NAME, resolve
from sweep.core.errors import ValidationError
from sweep.core.memmap import (
    MemoryMap,
    granule_name,
    level_shift,
    levels,
)
from sweep.model.pkvm_reserve import PARTS, reserve_parts
from sweep.model.reference import (
    LAYOUTS,
    Configuration,
    prepare,
    two_tree_counts,
    two_trees,
)
from sweep.model.reference_tree import Tree, build_tree
from sweep.plan.memory_maps import select_memory_maps
from sweep.plan.plugins import get_layouts

UNITS = "KMGTPE"
"""ptdump's size units: the size is printed in KiB, then scaled while it divides by 1024."""


@dataclass(frozen=True)
class Mapping:
    """One call that put something in the tree: a runtime bank's alias, or the idmap page."""

    name: str
    va: int
    va_end: int
    pa: int


@dataclass
class Explanation:
    """A configuration (reference, docs/model.md 1 to 3), its tree and mappings, and its row
    (builder)."""

    config: Configuration
    tree: Tree
    mappings: list[Mapping]
    row: dict
    boot: Explanation | None = None
    """4.6-4.7's second tree, ``boot_hyp_pgd`` (``tree`` is then ``hyp_pgd``)."""
    merged_root: int | None = None
    """The level of 4.6-4.7's ``merged_hyp_pgd`` over both trees, for an extended idmap."""

    def tables_per_level(self) -> dict[int, int]:
        if self.boot is None:
            return self.tree.tables_per_level()
        counts = two_tree_counts(self.tree, self.boot.tree, self.merged_root)
        return counts


def resolve_memory_map(name_or_path: str) -> MemoryMap:
    """One memory map, by registered name or from a file (TOML, DTB, iomem, boot log), through
    the same selector a sweep config's ``memory_maps`` uses."""

    try:
        maps = select_memory_maps([name_or_path])
    except ValidationError as exc:
        raise ValidationError(f"--map: {exc}") from None
    if len(maps) != 1:
        raise ValidationError(f"--map {name_or_path!r}: selects {len(maps)} memory maps; name one")
    return next(iter(maps.values()))


def explain(
    memory_map: MemoryMap,
    granule: int | str,
    va_bits: int,
    layout: str,
    block_mappings: bool,
    idmap_pa: int,
    tag_random: int = 0,
) -> Explanation:
    """Build the configuration's tree with the scalar reference and its row with the builder."""
    plugin = None
    if layout not in LAYOUTS:
        plugin = get_layouts().get(layout)
        if plugin is None:
            known = ", ".join(sorted({*LAYOUTS, *get_layouts()}))
            raise ValidationError(f"--layout {layout!r}: not a layout ({known})")
    # The reference's own steps (docs/model.md 1 to 3), then its tree (docs/model.md 5).
    c = prepare(
        memory_map,
        granule,
        va_bits,
        layout,
        block_mappings,
        idmap_pa,
        tag_random,
        layout_plugin=plugin,
    )
    runtime = c.runtime
    mappings = [
        Mapping(f"runtime bank {i} (PA {pa:#x}-{pa + va_end - va - 1:#x})", va, va_end, pa)
        for i, (va, va_end, pa) in enumerate(runtime)
    ]
    idmap = Mapping("idmap page (VA == PA)", c.idmap_pa, c.idmap_pa + c.granule, c.idmap_pa)
    row = build_row(
        memory_map, c.granule, c.va_bits, layout, block_mappings, c.idmap_pa, tag_random
    )
    era = BY_NAME.get(resolve(layout)) if plugin is None else None
    if era is not None and era.two_trees:  # 4.6-4.7: hyp_pgd and boot_hyp_pgd
        hyp, boot, merged_root = two_trees(
            runtime, c.idmap_pa, c.granule, c.va_bits, c.idmap_va_bits, block_mappings
        )
        top = (1 << c.va_bits) - c.granule
        name = "trampoline (the idmap page at TRAMPOLINE_VA)"
        trampoline = [] if merged_root is not None else [
            Mapping(name, top, top + c.granule, c.idmap_pa)
        ]  # fmt: skip
        boot_part = Explanation(c, boot, [*trampoline, idmap], row)
        return Explanation(c, hyp, mappings + trampoline, row, boot_part, merged_root)
    tree = build_tree(runtime, c.idmap_pa, c.granule, c.hyp.tree_va_bits, block_mappings)
    return Explanation(c, tree, [*mappings, idmap], row)


# --- printing ---------------------------------------------------------------------------------


def size_text(nbytes: int) -> str:
    """ptdump's size column: KiB, scaled up while the figure divides by 1024."""
    value, unit = nbytes >> 10, 0
    while value and value % 1024 == 0 and unit + 1 < len(UNITS):
        value >>= 10
        unit += 1
    return f"{value:9d}{UNITS[unit]}"


def _cuts(tree: Tree, level: int, mappings: list[Mapping]) -> list[int]:
    """Entry indices at ``level`` where the kind of entry or the mappings behind it may change."""
    chunk = 1 << level_shift(level, tree.granule)
    cuts = set()
    for intervals in (tree.tables[level], tree.leaves[level]):
        for lo, hi in intervals.runs:
            cuts.update((lo, hi))
    for split_level, entry in tree.split:
        if split_level == level:
            cuts.update((entry, entry + 1))  # a replaced block is a run of its own
    for m in mappings:
        # entry e meets [va, va_end) iff va // chunk <= e <= (va_end - 1) // chunk
        cuts.update((m.va // chunk, (m.va_end - 1) // chunk + 1))
    return sorted(cuts)


def _kind(tree: Tree, level: int, entry: int) -> str:
    if entry in tree.tables[level]:
        return "SPLIT" if (level, entry) in tree.split else "TABLE"
    if entry in tree.leaves[level]:
        return "PAGE" if level == 3 else "BLK"
    return ""


def _entry_runs(
    tree: Tree, level: int, lo: int, hi: int, cuts: list[int], mappings: list[Mapping]
) -> list[tuple[int, int, str, list[Mapping]]]:
    """Runs of alike entries in ``[lo, hi)``: (first, end, kind, mappings behind them)."""

    chunk = 1 << level_shift(level, tree.granule)
    start = bisect.bisect_right(cuts, lo)
    stop = bisect.bisect_left(cuts, hi)
    points = [lo, *cuts[start:stop], hi]
    runs: list[tuple[int, int, str, list[Mapping]]] = []
    for a, b in pairwise(points):
        kind = _kind(tree, level, a)
        behind = [m for m in mappings if m.va < b * chunk and a * chunk < m.va_end]
        if not kind:
            behind = []
        elif _under_split(tree, level, a):
            behind = behind[-1:]  # the idmap's own tables: the runtime block above is gone
        if runs and runs[-1][2] == kind and runs[-1][3] == behind and runs[-1][1] == a:
            runs[-1] = (runs[-1][0], b, kind, behind)
        else:
            runs.append((a, b, kind, behind))
    return runs


def _under_split(tree: Tree, level: int, entry: int) -> bool:
    """Whether a level-``level`` entry lies below a block the idmap's walk replaced."""
    va = entry << level_shift(level, tree.granule)
    return any(
        lv < level and va >> level_shift(lv, tree.granule) == index for lv, index in tree.split
    )


def _run_line(tree: Tree, level: int, run: tuple[int, int, str, list[Mapping]]) -> str:
    first, end, kind, behind = run
    shift = level_shift(level, tree.granule)
    va, va_end = first << shift, end << shift
    line = f"0x{va:016x}-0x{va_end:016x} {size_text(va_end - va)} L{level:<2d} "
    if not kind:
        return line + "invalid"
    count = end - first
    if kind == "TABLE":
        names = "; ".join(m.name for m in behind)
        return line + f"TABLE  {count} x L{level + 1} table{'s' if count > 1 else ''}: {names}"
    if kind == "SPLIT":
        # hyp_map_walker: a page cannot fill the block, so an empty table replaces it.
        idmap, blocks = behind[-1], [m for m in behind[:-1] if m.va <= va < m.va_end]
        was = blocks[0].name if blocks else "a runtime mapping"
        return line + (
            f"TABLE  1 x L{level + 1} table: {idmap.name}; replaces the BLK of {was}, "
            "whose other pages are no longer mapped"
        )
    # A leaf belongs to the first call that reached it: runtime banks (disjoint in VA) come
    # before the idmap page, whose walk stops at a page it meets (docs/model.md section 5); below a
    # block it replaced, only the idmap's page is mapped.
    owner, *also = behind
    pa = va - owner.va + owner.pa
    text = line + f"{kind:<5s}  PA 0x{pa:x}: {owner.name}"
    for other in also:
        same = other.va - other.pa == owner.va - owner.pa
        text += f"; also holds the {other.name}" + (" (same PA)" if same else " (OVERLAP)")
    return text


def tree_lines(explanation: Explanation) -> list[str]:
    """The tree, root first, then each level's tables in VA order; alike tables printed once."""
    tree, mappings = explanation.tree, explanation.mappings
    granule, root = tree.granule, tree.root_level
    per_table = 1 << (granule.bit_length() - 1 - 3)
    lines = []
    for level in range(root, 4):
        cuts = _cuts(tree, level, mappings)
        if level == root:
            root_entries = 1 << (tree.tree_va_bits - level_shift(root, granule))
            groups = [(0, 1, 0, root_entries)]
        else:
            groups = []
            for a, b in tree.tables[level - 1].runs:
                splits = {a, b}
                for k in cuts:
                    t = k // per_table
                    if a <= t < b:
                        splits.update((t, t + 1) if k % per_table else (t,))
                points = sorted(p for p in splits if a <= p <= b)
                for p, q in pairwise(points):
                    groups.append((p, q, p * per_table, q * per_table))
        count = sum(q - p for p, q, _lo, _hi in groups)
        lines.append(f"=== L{level}: {count} table{'s' if count != 1 else ''} ===")
        parent_shift = level_shift(level - 1, granule) if level > root else tree.tree_va_bits
        for p, q, lo, hi in groups:
            va, va_end = p << parent_shift, q << parent_shift
            what = (
                "root table"
                if level == root
                else (f"{q - p} alike L{level} tables" if q - p > 1 else f"L{level} table")
            )
            lines.append(f"---[ {what} 0x{va:016x}-0x{va_end:016x} ]---")
            for run in _entry_runs(tree, level, lo, hi, cuts, mappings):
                lines.append(_run_line(tree, level, run))
    return lines


def _value_text(column: str, value: object) -> str:
    if column in HEX_COLUMNS and isinstance(value, int):
        return f"{value:#x}"
    return str(value)


def render(explanation: Explanation) -> str:
    """The whole explanation as text: configuration, tree, builder row, agreement check."""
    e, c = explanation, explanation.config
    tree = e.tree
    n_levels = levels(tree.tree_va_bits, c.granule)
    root_entries = 1 << (tree.tree_va_bits - level_shift(tree.root_level, c.granule))
    delta = c.hyp.delta
    out = [
        f"{c.memory_map.name}: {granule_name(c.granule)} granule, VA_BITS {c.va_bits}, "
        f"layout {c.layout}, block mappings {'on' if c.block_mappings else 'off'}, "
        f"idmap {c.idmap_pa:#x}",
        f"HYP tree: {tree.tree_va_bits}-bit input, {n_levels} levels, root at L{tree.root_level} "
        f"with {root_entries} entries; PHYS_OFFSET {c.phys_offset:#x}, hyp(p) = p "
        f"{'+' if delta >= 0 else '-'} {abs(delta):#x}",
        "mappings, in the order they are made:",
        *(f"  0x{m.va:016x}-0x{m.va_end:016x} -> PA 0x{m.pa:x}: {m.name}" for m in e.mappings),
        "",
        *(["hyp_pgd (runtime tree):"] if e.boot else []),
        *tree_lines(e),
        *(["", "boot_hyp_pgd (idmap tree):", *tree_lines(e.boot)] if e.boot else []),
        *(
            [f"merged_hyp_pgd: 1 root table at L{e.merged_root} over both trees"]
            if e.merged_root is not None
            else []
        ),
        "",
        "row (sweep.build):",
    ]
    width = max(len(c) for c in e.row)
    out += [f"  {c:<{width}s}  {_value_text(c, v)}" for c, v in e.row.items()]
    out += _reservation_lines(c)
    out.append("")
    out.append(agreement(e))
    return "\n".join(out)


def _reservation_lines(c: Configuration) -> list[str]:
    """docs/model.md section 9: what protected mode would reserve, part by part."""
    era = BY_NAME.get(resolve(c.layout))
    if era is None or not era.pkvm:
        return []
    parts = reserve_parts(era.name, c.granule, [s for s, _ in c.banks], [e - s for s, e in c.banks])
    shown = " + ".join(f"{name} {parts[name]}" for name in PARTS if parts[name])
    return [
        "",
        f"pKVM reservation (kvm_hyp_reserve, Linux {era.pkvm}'s formulas): {shown} = "
        f"{parts['pages']} pages -> {parts['reserve_bytes'] >> 20} MiB "
        f"(PMD-aligned), at or below {parts['reserve_base']:#x}",
    ]


def agreement(explanation: Explanation) -> str:
    """Compare the reference tree's tables per level with the builder row's columns."""
    counts = explanation.tables_per_level()
    names = TABLE_COLUMNS
    wrong = [
        f"{names[lv]}: tree {counts[lv]}, builder {explanation.row[names[lv]]}"
        for lv in names
        if counts[lv] != explanation.row[names[lv]]
    ]
    if wrong:
        return "DISAGREE: the reference tree and the builder's row differ: " + "; ".join(wrong)
    return f"agrees: the tree above has {sum(counts.values())} tables, as the builder's row says"
