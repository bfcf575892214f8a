"""docs/model.md section 5 read literally, for the reference: the merged tree, chunk by chunk.

Runs of whole chunks are handled as one run (a 2^52-byte bank does not take 2^40 steps); which
entries hold a table and which a leaf is kept per level as interval sets, so that ``sweep
explain`` can draw the tree and a table reached by several mappings is created once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sweep.core.memmap import level_shift, levels, min_block_level


def round_down(x: int, align: int) -> int:
    return x // align * align


def round_up(x: int, align: int) -> int:
    return -(-x // align) * align


class IntervalSet:
    """A set of integers kept as sorted, disjoint, half-open runs ``[lo, hi)``."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, int]] = []

    def add(self, lo: int, hi: int) -> None:
        merged = []
        for a, b in self.runs:
            if b < lo or a > hi:
                merged.append((a, b))
            else:
                lo, hi = min(a, lo), max(b, hi)
        merged.append((lo, hi))
        self.runs = sorted(merged)

    def remove(self, x: int) -> None:
        """Take one integer out (a run containing it is cut in two)."""
        runs = []
        for a, b in self.runs:
            if a <= x < b:
                runs += [r for r in ((a, x), (x + 1, b)) if r[0] < r[1]]
            else:
                runs.append((a, b))
        self.runs = runs

    def __contains__(self, x: int) -> bool:
        return any(a <= x < b for a, b in self.runs)

    def __len__(self) -> int:
        return sum(b - a for a, b in self.runs)


@dataclass
class Tree:
    """One translation tree: at each level, which entries hold a table and which a leaf."""

    granule: int
    tree_va_bits: int
    block_mappings: bool
    tables: dict[int, IntervalSet] = field(default_factory=dict)
    leaves: dict[int, IntervalSet] = field(default_factory=dict)
    split: list[tuple[int, int]] = field(default_factory=list)
    """(level, entry) of each block the idmap's walk replaced by a table."""

    def __post_init__(self) -> None:
        self.root_level = 4 - levels(self.tree_va_bits, self.granule)
        for level in range(self.root_level, 4):
            self.tables[level] = IntervalSet()
            self.leaves[level] = IntervalSet()

    def map_range(self, va: int, va_end: int, pa: int) -> None:
        """Map ``[va, va_end)`` to ``pa`` in one call, walking from the root."""
        self._map(va, va_end, va - pa, self.root_level)

    def _map(self, va: int, va_end: int, delta: int, level: int) -> None:
        shift = level_shift(level, self.granule)
        chunk = 1 << shift
        # The range splits into a partial head chunk, a run of whole chunks, a partial tail.
        whole_lo, whole_hi = round_up(va, chunk), round_down(va_end, chunk)
        if whole_lo >= whole_hi:
            pieces = [(va, va_end)]  # within one chunk, or across one chunk boundary
            if round_down(va, chunk) != round_down(va_end - 1, chunk):
                cut = round_down(va_end - 1, chunk)
                pieces = [(va, cut), (cut, va_end)]
        else:
            pieces = [(va, whole_lo), (whole_lo, whole_hi), (whole_hi, va_end)]
        for lo, hi in pieces:
            if lo >= hi:
                continue
            first, last = lo >> shift, (hi - 1) >> shift
            covers_whole = lo % chunk == 0 and hi % chunk == 0
            block_ok = (
                self.block_mappings
                and min_block_level(self.granule) <= level < 3
                and covers_whole
                and (lo - delta) % chunk == 0  # VA is aligned: PA must be too
            )
            if block_ok or level == 3:
                self.leaves[level].add(first, last + 1)  # block, or page at level 3
            else:
                self.tables[level].add(first, last + 1)  # next-level table, created once
                self._map(lo, hi, delta, level + 1)

    def map_idmap_page(self, idmap_pa: int) -> None:
        """Map the idmap page VA == PA as ``hyp_map_walker`` does (docs/model.md section 5): a page
        already there stops the walk; a block at level l is replaced by a new, empty table and
        the walk goes on down, creating one table at each level l + 1 to 3."""
        for level in range(self.root_level, 4):
            index = idmap_pa >> level_shift(level, self.granule)
            if index in self.leaves[level]:
                if level == 3:
                    return  # a page: nothing is created or replaced
                self.leaves[level].remove(index)  # a block: the rest of it is no longer mapped
                self.split.append((level, index))
            if level == 3:
                self.leaves[3].add(index, index + 1)
                return
            self.tables[level].add(index, index + 1)  # exists already, or is created now

    def tables_per_level(self) -> dict[int, int]:
        """Number of tables whose entries are level-l descriptors; the root is 1 at its level."""
        counts = {level: 0 for level in range(-1, 4)}
        counts[self.root_level] = 1
        for level in range(self.root_level, 3):
            counts[level + 1] = len(self.tables[level])
        return counts


def build_tree(
    runtime: list[tuple[int, int, int]],
    idmap_pa: int | None,
    granule: int,
    tree_va_bits: int,
    block_mappings: bool,
) -> Tree:
    """Runtime ranges ``(va, va_end, pa)`` first, each in one call, then the idmap page."""
    tree = Tree(granule, tree_va_bits, block_mappings)
    for va, va_end, pa in runtime:
        tree.map_range(va, va_end, pa)
    if idmap_pa is not None:
        tree.map_idmap_page(idmap_pa)
    return tree
