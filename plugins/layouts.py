"""The four HYP VA layouts of docs/model.md section 3, vectorized over a batch of rows.

Each computes ``delta = hyp(p) - p`` from the kernel's own formula. After clipping, every DRAM
byte ``p`` satisfies ``0 <= p - PHYS_OFFSET < 2^(V-1)``, so ``lin(p)`` has all bits from V-1 up
set and ``p - PHYS_OFFSET`` below them: the masks of each layout reduce to plain arithmetic on
``p - PHYS_OFFSET``. The scalar reference keeps the literal 64-bit forms; the tests hold the two
equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweep import hookimpl
from sweep.core.kconfig import bit_length
from sweep.model.layout import LayoutBatch, LayoutResult


def _half(batch: LayoutBatch) -> np.ndarray:
    """``2^(V-1)`` per row: half the VA space, the linear map's size."""
    return np.left_shift(1, batch.va_bits - 1, dtype=np.int64)


def _tree_va_bits(batch: LayoutBatch, floor: int = 0) -> np.ndarray:
    return np.maximum(np.maximum(batch.idmap_va_bits, batch.va_bits), floor)


def _result(batch, delta, lo, hi, floor: int = 0) -> LayoutResult:
    n = len(batch.idmap_pa)
    return LayoutResult(
        delta=np.broadcast_to(np.asarray(delta, dtype=np.int64), (n,)),
        hyp_va_min=np.broadcast_to(np.asarray(lo, dtype=np.int64), (n,)),
        hyp_va_max=np.broadcast_to(np.asarray(hi, dtype=np.int64), (n,)),
        tree_va_bits=_tree_va_bits(batch, floor),
    )


@dataclass(frozen=True)
class HighOnly:
    """Up to 4.7: ``kern_hyp_va`` masks with ``HYP_PAGE_OFFSET_MASK = 2^VA_BITS - 1``."""

    name: str = "high-only"
    source: str = "arch/arm64/include/asm/kvm_mmu.h (Linux 4.6/4.7, HYP_PAGE_OFFSET_MASK)"
    description: str = "the linear map's top half, masked to VA_BITS: window [2^(V-1), 2^V)"
    uses_tag_random: bool = False

    def memstart_align(self, granule: int) -> int:
        return 1 << 30

    def compute(self, batch: LayoutBatch) -> LayoutResult:
        half = _half(batch)
        return _result(batch, half - batch.phys_offset, half, 2 * half - 1)


@dataclass(frozen=True)
class Merged:
    """4.8 to 4.16: the half of VA_BITS that does not hold the idmap (``hyp_offset_low``)."""

    name: str = "merged"
    source: str = "arch/arm64/kernel/cpufeature.c hyp_offset_low (Linux 4.8-4.16); seed patch"
    description: str = "low half [0, 2^(V-1)) when the idmap is above 2^(V-1) - 1, else high half"
    uses_tag_random: bool = False

    def memstart_align(self, granule: int) -> int:
        return 1 << 30

    def compute(self, batch: LayoutBatch) -> LayoutResult:
        half = _half(batch)
        low = batch.idmap_pa > half - 1
        base = np.where(low, 0, half)
        return _result(batch, base - batch.phys_offset, base, base + half - 1)


@dataclass(frozen=True)
class Tagged:
    """4.17 to 6.8: ``kvm_compute_layout`` keeps ``tag_lsb`` bits of the linear address and
    inserts the opposite-of-idmap top bit plus random tag bits above them."""

    name: str = "tagged"
    source: str = "arch/arm64/kvm/va_layout.c kvm_compute_layout (Linux 4.17-6.8)"
    description: str = "random-tagged alias window sized to the DRAM span (tag_lsb bits)"
    uses_tag_random: bool = True
    tree_floor: int = 0

    def memstart_align(self, granule: int) -> int:
        return 1 << 30

    def compute(self, batch: LayoutBatch) -> LayoutResult:
        v = batch.va_bits
        half = _half(batch)
        offset_first = batch.dram_first - batch.phys_offset
        tag_lsb = bit_length(offset_first ^ (batch.dram_last - batch.phys_offset))
        va_mask = (np.int64(1) << tag_lsb) - 1
        msb = (batch.idmap_pa & half) ^ half
        random_bits = (half - 1) & ~va_mask  # bits V-2 .. tag_lsb
        tag_random = (batch.tag_random & np.uint64((1 << 63) - 1)).astype(np.int64)
        tag = np.where(tag_lsb != v - 1, msb | (tag_random & random_bits), msb)
        hyp_first = (offset_first & va_mask) | tag
        return _result(
            batch, hyp_first - batch.dram_first, tag, tag | va_mask, floor=self.tree_floor
        )


@dataclass(frozen=True)
class Tagged48(Tagged):
    """6.9 and later: the aliases of ``tagged``; the HYP tree spans at least 48 bits
    (``kvm_mmu_init``: ``hyp_va_bits = max(IDMAP_VA_BITS, vabits_actual)``)."""

    name: str = "tagged-48"
    source: str = "arch/arm64/kvm/mmu.c kvm_mmu_init, arch/arm64/kvm/va_layout.c (Linux 6.9+)"
    description: str = "tagged aliases in a HYP tree of at least 48 bits (IDMAP_VA_BITS = 48)"
    tree_floor: int = 48

    def memstart_align(self, granule: int) -> int:
        # 5.12 made SECTION_SIZE_BITS 29 at 64K: ARM64_MEMSTART_ALIGN is 512 MiB there.
        return 1 << 29 if granule == 65536 else 1 << 30


BUILTIN_LAYOUTS = (HighOnly(), Merged(), Tagged(), Tagged48())


@hookimpl
def register_layouts(register):
    for layout in BUILTIN_LAYOUTS:
        register(layout)
