"""Kernel eras: the spans of Linux versions whose EL2 layout rules are the same, each fact once.

A row's ``layout`` names an era (docs/model.md section 3). Everything that changes with the
kernel version lives here, read by the built-in layouts (``plugins/layouts.py``), the scalar
reference, the builder's ``runnable`` columns, ``sweep verify-boot`` (the era of a console's
``Linux version`` line) and ``sweep explain``. Each boundary names its source; see
docs/model.md, "Where each rule comes from".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from sweep.core.kconfig import VA_BITS_CHOICES


@dataclass(frozen=True)
class Era:
    """One span of kernels that build the HYP layout and tree by the same rules."""

    name: str
    since: tuple[int, int]
    until: str
    """The last version of the span as people say it (``""``: still current)."""
    formula: str
    """``high`` (4.6-4.7), ``merged`` (4.8-4.16) or ``tagged`` (``kvm_compute_layout``)."""
    source: str
    description: str
    alias: str = ""
    """The layout name this era had before eras (kept for one release)."""
    memstart_512m_64k: bool = False
    """5.12+: ``SECTION_SIZE_BITS`` 29 at 64K, so ``ARM64_MEMSTART_ALIGN`` is 512 MiB there."""
    tag_at_hyp_va_bits: bool = False
    """7.0+: the tag's region bit is ``kvm_hyp_va_bits() - 1``, not ``vabits_actual - 1``."""
    tree_floor: int = 0
    """6.9+: the HYP tree spans ``max(IDMAP_VA_BITS, vabits_actual)`` bits, 48 at least."""
    two_trees: bool = False
    """4.6-4.7: the idmap (``boot_hyp_pgd``) and the runtime (``hyp_pgd``) are two trees."""
    max_extra_levels: int = 1
    """Levels ``head.S`` can add for an idmap above ``VA_BITS`` (one up to 6.8)."""
    idmap_max_bits: int = 0
    """6.9+: ``idmap_t0sz`` is fixed at ``IDMAP_VA_BITS`` = 48: an image above cannot boot."""
    va52_granules: tuple[int, ...] = ()
    """Granules at which ``VA_BITS=52`` is a Kconfig choice in this era."""
    lva_el2_fails: bool = False
    """5.4-6.1 at 64K, ``VA_BITS=52``: EL2 runs 48 bits, the tag uses bit 51: KVM fails."""
    pkvm: str = ""
    """The kernel whose ``kvm_hyp_reserve`` formulas this era's protected mode uses."""

    @property
    def kernels(self) -> str:
        first = f"{self.since[0]}.{self.since[1]}"
        return f"{first} to {self.until}" if self.until else f"{first} and later"

    def memstart_align(self, granule: int) -> int:
        """``ARM64_MEMSTART_ALIGN`` (``arch/arm64/mm/init.c``, ``asm/sparsemem.h``)."""
        return 1 << 29 if (self.memstart_512m_64k and granule == 65536) else 1 << 30


ERAS: tuple[Era, ...] = (
    Era(
        "linux-4.6",
        (4, 6),
        "4.7",
        "high",
        "arch/arm64/include/asm/kvm_mmu.h HYP_PAGE_OFFSET_MASK; arch/arm/kvm/mmu.c kvm_mmu_init",
        "two trees: boot_hyp_pgd (idmap) and hyp_pgd (runtime, linear map's top half)",
        alias="high-only",
        two_trees=True,
    ),  # fmt: skip
    Era(
        "linux-4.8",
        (4, 8),
        "4.16",
        "merged",
        "arch/arm64/kernel/cpufeature.c hyp_offset_low; the 4.8 merged-page-tables patch",
        "one tree; runtime in the half of VA_BITS that does not hold the idmap",
        alias="merged",
    ),  # fmt: skip
    Era(
        "linux-4.17",
        (4, 17),
        "5.11",
        "tagged",
        "arch/arm64/kvm/va_layout.c kvm_compute_layout",
        "random-tagged aliases sized to the DRAM span; ARM64_MEMSTART_ALIGN 1 GiB",
        alias="tagged",
        va52_granules=(65536,),
        lva_el2_fails=True,
    ),  # fmt: skip
    Era(
        "linux-5.12",
        (5, 12),
        "6.1",
        "tagged",
        "arch/arm64/kvm/va_layout.c; asm/sparsemem.h SECTION_SIZE_BITS 29 at 64K (5.12)",
        "tagged; 512 MiB ARM64_MEMSTART_ALIGN at 64K; 52-bit KVM fails at EL2",
        memstart_512m_64k=True,
        va52_granules=(65536,),
        lva_el2_fails=True,
        pkvm="6.1",
    ),  # fmt: skip
    Era(
        "linux-6.2",
        (6, 2),
        "6.8",
        "tagged",
        "arch/arm64/kvm/mmu.c kvm_mmu_init: hyp_va_bits = max(idmap bits, vabits_actual)",
        "tagged; a 52-bit kernel runs a 52-bit HYP tree",
        memstart_512m_64k=True,
        va52_granules=(65536,),
        pkvm="6.12",
    ),  # fmt: skip
    Era(
        "linux-6.9",
        (6, 9),
        "6.19",
        "tagged",
        "arch/arm64/include/asm/mmu_context.h idmap_t0sz = TCR_T0SZ(IDMAP_VA_BITS); kvm_mmu_init",
        "tagged aliases (region bit vabits_actual - 1) in a HYP tree of at least 48 bits",
        alias="tagged-48",
        memstart_512m_64k=True,
        tree_floor=48,
        max_extra_levels=9,
        idmap_max_bits=48,
        va52_granules=(4096, 16384, 65536),
        pkvm="6.12",
    ),  # fmt: skip
    Era(
        "linux-7.0",
        (7, 0),
        "",
        "tagged",
        "arch/arm64/kvm/va_layout.c kvm_hyp_va_bits, kvm_compute_layout (7.2.13, 7.3.4)",
        "tag region bit and random bits from kvm_hyp_va_bits() = max(48, vabits_actual)",
        memstart_512m_64k=True,
        tag_at_hyp_va_bits=True,
        tree_floor=48,
        max_extra_levels=9,
        idmap_max_bits=48,
        va52_granules=(4096, 16384, 65536),
        pkvm="7.3",
    ),  # fmt: skip
)
"""Oldest first; each era runs until the next one's ``since``."""

BY_NAME = {era.name: era for era in ERAS}
ALIASES = {era.alias: era.name for era in ERAS if era.alias}
"""Layout names from before eras -> era names (kept for one release, with a note)."""

KCONFIG_VA_BITS = {g: tuple(v for v in vs if v != 52) for g, vs in VA_BITS_CHOICES.items()}
"""``VA_BITS`` a kernel runs with at each granule besides 52, in every era (``arch/arm64/Kconfig``;
48 and 47 are also the ``vabits_actual`` of a 52-bit kernel without LPA2/LVA); 52 is per era."""

REASONS = (
    "",
    "no kernel of this era runs this VA_BITS at this granule (arch/arm64/Kconfig)",
    "KVM init fails: EL2 runs a 48-bit tree while the tag uses bit 51 (fixed in 6.2)",
    "the idmap needs more than one extra level (head.S adds one at most)",
    "the image lies above 2^48: idmap_t0sz is fixed at IDMAP_VA_BITS (48), no boot",
)
"""Why a row's kernel could not run, by code (0: it runs); the ``unrunnable`` column."""


def resolve(name: str) -> str:
    """The era name of a layout name: an era's own, or its alias from before eras."""
    return ALIASES.get(name, name)


def renamed_note(name: str) -> str | None:
    """One line for a layout given by its old name, else None."""
    if name not in ALIASES:
        return None
    era = BY_NAME[ALIASES[name]]
    return (
        f"layout {name!r} is now {era.name!r} (Linux {era.kernels}); "
        "the old name goes in the next release"
    )


_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")


def era_of_version(release: str) -> Era | None:
    """The era of a kernel release string (``6.12.118+deb12-arm64``), or None before 4.6."""
    match = _VERSION.match(release or "")
    if match is None:
        return None
    version = (int(match.group(1)), int(match.group(2)))
    found = None
    for era in ERAS:
        if version >= era.since:
            found = era
    return found


def unrunnable(era: Era, granule, va_bits, idmap_va_bits, extra_levels) -> np.ndarray:
    """The ``REASONS`` code of each row (numpy broadcasting: scalars or arrays)."""
    granule, va_bits = np.asarray(granule), np.asarray(va_bits)
    choice = np.zeros(np.broadcast(granule, va_bits).shape, dtype=bool)
    for g, choices in KCONFIG_VA_BITS.items():
        allowed = [*choices, *([52] if g in era.va52_granules else [])]
        choice |= (granule == g) & np.isin(va_bits, allowed)
    code = np.where(choice, 0, 1)
    if era.lva_el2_fails:
        code = np.where((code == 0) & (granule == 65536) & (va_bits == 52), 2, code)
    code = np.where((code == 0) & (np.asarray(extra_levels) > era.max_extra_levels), 3, code)
    if era.idmap_max_bits:
        code = np.where((code == 0) & (np.asarray(idmap_va_bits) > era.idmap_max_bits), 4, code)
    return code.astype(np.int8)
