"""``sweep boot-tables``: one configuration's boot-time EL2 mappings and their tables.

What ``sweep explain`` is for all of DRAM, this is for a boot set (docs/model.md section 10):
every mapping ``init_hyp_mode`` (nVHE) or ``recreate_hyp_mappings`` (pKVM) makes for the row's
kernel build, CPUs, memory map and idmap page, in the kernel's order (``bootmap.boot_leaves``),
the tables per level of the scalar tree holding them, and the row ``sweep.build`` gives, with
whether the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sweep.api import build
from sweep.bootset import profile_for
from sweep.core.errors import ValidationError
from sweep.core.memmap import MemoryMap, parse_granule
from sweep.model import bootmap
from sweep.model.reference import prepare
from sweep.plan.kernels import boot_kernel

LEVELS = (*bootmap.NAMES, "table_pages")


@dataclass(frozen=True)
class BootTables:
    """The mappings, the scalar tree's counts and the builder's row of one boot-set row."""

    row: dict
    leaves: list[bootmap.Range]
    tree: dict[str, int]


def boot_tables(
    memory_map: MemoryMap, granule: int | str, va_bits: int, layout: str, idmap_pa: int,
    mappings: str, cpus: int, kernel: str, tag_random: int = 0,
) -> BootTables:  # fmt: skip
    """The row through ``sweep.build``, and the same boot set listed and counted by
    ``bootmap`` from the row's alias offset, tree size, clipped DRAM and reservation."""
    if mappings not in ("nvhe-boot", "pkvm-boot"):
        raise ValidationError(f"--mappings {mappings!r}: one of nvhe-boot, pkvm-boot")
    g = parse_granule(granule) if isinstance(granule, str) else granule
    config = {
        "memory_map": memory_map.name, "granule": g, "va_bits": va_bits, "layout": layout,
        "block_mappings": False, "idmap_pa": idmap_pa, "tag_random": tag_random,
        "mappings": mappings, "cpus": cpus, "kernel": kernel,
    }  # fmt: skip
    row = build(pd.DataFrame([config]), {memory_map.name: memory_map}).iloc[0].to_dict()
    image = boot_kernel(profile_for(kernel)).image
    c = prepare(memory_map, g, va_bits, layout, False, idmap_pa, tag_random)  # sections 1-3
    banks = [(s, e - s) for s, e in c.banks]
    mode = mappings.removesuffix("-boot")
    size = int(row["pkvm_reserve_bytes"]) if mode == "pkvm" else 0
    bits = c.hyp.tree_va_bits
    leaves = bootmap.boot_leaves(
        mode, image, g, bits, c.hyp.delta % (1 << 64), image.image_pa(c.idmap_pa), banks, cpus,
        reserve_base=bootmap.pool_base(banks, size, g) if size else 0, reserve_size=size,
    )  # fmt: skip
    return BootTables(row, leaves, bootmap.tree_tables(leaves, g, bits))


def render(b: BootTables) -> str:
    """The mappings, then the counts per level: tree and row, and whether they agree."""
    r = b.row
    lines = [
        f"{r['memory_map']}: {r['granule'] // 1024}K, VA_BITS {r['va_bits']}, {r['layout']}, "
        f"{r['mappings']} of {r['kernel']} with {r['cpus']} CPUs, idmap {r['idmap_pa']:#x}",
        "mappings, in the kernel's order:",
    ]
    for x in b.leaves:
        pa = "" if x.pa is None else f" -> PA {x.pa:#x}"
        kind = "pages" if x.level == 3 else f"L{x.level} blocks"
        lines.append(f"  {x.va:#018x}-{x.va + x.size:#018x} {x.what:11} {kind}{pa}")
    lines.append("tables per level: " + ", ".join(f"{k} {b.tree[k]}" for k in LEVELS))
    got = {k: int(r[k]) for k in LEVELS}
    lines.append("row (sweep.build): " + ", ".join(f"{k} {got[k]}" for k in LEVELS))
    lines.append("agree" if got == b.tree else "DISAGREE")
    return "\n".join(lines)
