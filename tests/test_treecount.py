"""The compiled boot-set count (``sweep.model.treecount``) against the scalar tree: random rows of
page ranges given by anchors and offsets, with fixed page and block ranges per kind of row,
each row's tables per level and ``shared_tables`` built by ``reference_tree.Tree`` (through
``bootmap.tree_tables``)."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.core.kconfig import level_shift
from sweep.model.bootmap import NAMES, Range, tree_tables
from sweep.model.treecount import count_rows

COLUMNS = (*NAMES, "table_pages")


def _kinds(rng, g: int, bits: int, region: int) -> list[list[tuple[int, int, int]]]:
    """Three kinds of fixed ranges near ``region``: none, pages, and pages beside blocks."""
    block = 1 << level_shift(2, g)
    kinds: list[list[tuple[int, int, int]]] = [[]]
    for with_blocks in (False, True):
        fixed, at = [], region + int(rng.integers(0, 8)) * block
        for _ in range(int(rng.integers(1, 4))):
            size = int(rng.choice([1, 2, 9, 600])) * g
            fixed.append((at, at + size, 3))
            at = -(-(at + size) // block) * block + int(rng.integers(0, 3)) * block
        if with_blocks:
            fixed.append((at + block, at + (1 + int(rng.integers(1, 4))) * block, 2))
        kinds.append(fixed)
    return kinds


@pytest.mark.parametrize(
    ("granule", "bits"), [(4096, 39), (4096, 48), (16384, 47), (16384, 48), (65536, 42)]
)
def test_count_rows_matches_the_scalar_tree(granule: int, bits: int) -> None:
    """Rows of an idmap page and up to five page ranges: some just below it (nVHE's stacks),
    some at an alias far away, some across a block boundary; a kind of fixed ranges each."""
    rng = np.random.default_rng(granule + bits)
    g, n = granule, 400
    block, top = 1 << level_shift(2, g), 1 << bits
    region = top // 2 + int(rng.integers(0, 4)) * block * 512  # the fixed ranges' quarter
    kinds = _kinds(rng, g, bits, region)
    idmap = rng.integers(1, top // 4 // g, n).astype(np.uint64) * np.uint64(g)
    alias = np.where(rng.random(n) < 0.5, idmap, np.uint64(0)) + (
        rng.integers(0, top // 8 // block, n).astype(np.uint64) * np.uint64(block)
        + np.uint64(region)
    )  # near the fixed ranges, sometimes sharing their chunks
    edge = rng.random(n) < 0.3  # some idmaps of 1-3 pages end past a block boundary
    idmap = np.where(edge, (idmap // np.uint64(block) + np.uint64(1)) * np.uint64(block)
                     - np.uint64(g), idmap)  # fmt: skip
    idmap_end = idmap + rng.integers(1, 4, n).astype(np.uint64) * np.uint64(g)
    above = idmap_end + rng.integers(0, 1024, n).astype(np.uint64) * np.uint64(g)
    anchors = [idmap, alias, idmap - np.uint64(3 * g), alias + np.uint64(block - 2 * g), above]
    anchors.append(idmap_end)
    ranges = [(0, 0, 5, 0), (2, 0, 2, 2 * g), (1, 0, 1, 40 * g), (1, 90 * g, 1, 91 * g)]
    ranges += [(3, 0, 3, 5 * g), (1, 7 * g, 1, 7 * g)]  # a range across a block; an empty one
    ranges += [(4, 0, 4, g)]  # a page above the idmap, often in its chunks
    kind = rng.integers(0, len(kinds), n)
    n_levels = (bits - 4) // (g.bit_length() - 4)
    got = count_rows(anchors, ranges, kinds, kind, g, n_levels, n)
    compared = []
    for row in rng.choice(n, 120, replace=False):
        mine = [Range(int(anchors[i][row]) + a, b - a + int(anchors[j][row]) - int(anchors[i][row]),
                      None, 3, "page") for i, a, j, b in ranges]  # fmt: skip
        mine = [r for r in mine if r.size > 0]
        fixed = [Range(a, b - a, a, leaf, "fixed") for a, b, leaf in kinds[kind[row]]]
        fixed = [f for f in fixed if not any(f.va < r.va + r.size and r.va < f.va + f.size
                                             for r in mine)]  # fmt: skip
        if len(fixed) < len(kinds[kind[row]]):
            continue  # a fixed range the row's own ranges overlap: no tree maps both
        want = tree_tables([*mine, *fixed], g, bits)
        alone, rest = tree_tables(mine[:1], g, bits), tree_tables([*mine[1:], *fixed], g, bits)
        want["shared_tables"] = alone["table_pages"] + rest["table_pages"] - want["table_pages"]
        have = {name: int(got[name][row]) for name in want}
        assert have == want, (row, mine, fixed)
        compared.append(row)
    assert len(compared) > 60


def test_count_rows_by_hand() -> None:
    """4K, 48 bits: the idmap page at 2 GiB + 16 KiB and a 3-page range just below it share
    the L3 table of that 2 MiB (and its L2, L1 and the root); a page at 512 GiB + 4 KiB adds an
    L1, L2 and L3 table of its own: 1 + 2 + 2 + 2 = 7 pages, 4 of them shared. With the idmap
    at 2 GiB, the range below lies in the previous 2 MiB and 1 GiB: 9 pages, 2 shared."""
    two_gib = np.array([(2 << 30) + 16384, 2 << 30], np.uint64)
    ranges = [(0, 0, 0, 4096), (0, -3 * 4096, 0, 0), (1, 0, 1, 4096)]
    got = count_rows([two_gib, np.uint64((512 << 30) + 4096)], ranges, [[]], 0, 4096, 4, 2)
    assert [int(got[name][0]) for name in COLUMNS] == [0, 1, 2, 2, 2, 7]
    assert [int(got[name][1]) for name in COLUMNS] == [0, 1, 2, 3, 3, 9]
    assert got["shared_tables"].tolist() == [4, 2]


def test_count_rows_takes_each_fixed_span_out_once() -> None:
    """4K, 48 bits: fixed pages at the start of 2 MiB chunk 128 and the end of chunk 131, a
    range from chunk 128 to 131 between them, the idmap page at 2 GiB: L3 tables for chunks
    128-131 and the idmap's, L2 tables for 1 GiB chunks 0 and 2, one L1, the root: 9, 2 shared
    (the root and the first L1 entry)."""
    at, mib = 0x1000_0000, 1 << 20
    fixed = [[(at, at + 4096, 3), (at + 8 * mib - 4096, at + 8 * mib, 3)]]
    ranges = [(0, 0, 0, 4096), (1, 4096, 1, 8 * mib - 4096)]
    got = count_rows([np.uint64(2 << 30), np.uint64(at)], ranges, fixed, 0, 4096, 4, 1)
    assert [int(got[name][0]) for name in COLUMNS] == [0, 1, 1, 2, 5, 9]
    assert int(got["shared_tables"][0]) == 2
