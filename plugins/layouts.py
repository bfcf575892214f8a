"""The built-in HYP VA layouts: one per kernel era (``sweep.core.eras``), vectorized over a batch.

Each computes ``delta = hyp(p) - p`` from the kernel's own formula. After clipping, every DRAM
byte ``p`` satisfies ``0 <= p - PHYS_OFFSET < 2^(V-1)``, so ``lin(p)`` has all bits from V-1 up
set and ``p - PHYS_OFFSET`` below them: the masks of each formula reduce to plain arithmetic on
``p - PHYS_OFFSET``. The scalar reference keeps the literal 64-bit forms; the tests hold the two
equal, and the kernel's own ``va_layout.c`` (tools/kernel-pgtable) holds both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweep import hookimpl
from sweep.core.eras import ERAS, Era
from sweep.core.kconfig import bit_length
from sweep.model.layout import LayoutBatch, LayoutResult

TAG_INSERTED_BITS = 24
"""``kern_hyp_va`` is patched with two ``add`` immediates of 12 bits (``kvm_update_va_mask``,
``va_layout.c``): only ``tag_val[23:0]`` reach the alias; higher tag bits are lost."""


def _bit(bits: np.ndarray) -> np.ndarray:
    return np.left_shift(1, bits, dtype=np.int64)


@dataclass(frozen=True)
class EraLayout:
    """The layout of the kernels of one era (docs/model.md section 3)."""

    era: Era

    @property
    def name(self) -> str:
        return self.era.name

    @property
    def source(self) -> str:
        return self.era.source

    @property
    def description(self) -> str:
        return f"Linux {self.era.kernels}: {self.era.description}"

    @property
    def uses_tag_random(self) -> bool:
        return self.era.formula == "tagged"

    def memstart_align(self, granule: int) -> int:
        return self.era.memstart_align(granule)

    def compute(self, batch: LayoutBatch) -> LayoutResult:
        half = _bit(batch.va_bits - 1)  # 2^(V-1): the linear map's size
        if self.era.formula == "high":  # kern_hyp_va masks with HYP_PAGE_OFFSET_MASK = 2^V - 1
            lo, hi = half, 2 * half - 1
            delta = half - batch.phys_offset
        elif self.era.formula == "merged":  # hyp_offset_low: the half without the idmap
            lo = np.where(batch.idmap_pa > half - 1, 0, half)
            hi = lo + half - 1
            delta = lo - batch.phys_offset
        else:
            delta, lo, hi = self._tagged(batch)
        tree = np.maximum(np.maximum(batch.idmap_va_bits, batch.va_bits), self.era.tree_floor)
        n = len(batch.idmap_pa)
        return LayoutResult(
            *(np.broadcast_to(np.asarray(x, dtype=np.int64), (n,)) for x in (delta, lo, hi)),
            tree_va_bits=tree,
        )

    def _tagged(self, batch: LayoutBatch):
        """``kvm_compute_layout``: keep ``tag_lsb`` bits of the linear address, insert the
        region bit opposite the idmap's and random bits above them (``va_layout.c``)."""
        v = batch.va_bits
        region = np.maximum(v, 48) if self.era.tag_at_hyp_va_bits else v  # kvm_hyp_va_bits()
        offset_first = batch.dram_first - batch.phys_offset
        tag_lsb = bit_length(offset_first ^ (batch.dram_last - batch.phys_offset))
        va_mask = _bit(tag_lsb) - 1
        top = _bit(region - 1)
        msb = (batch.idmap_pa & top) ^ top
        random_bits = (top - 1) & ~va_mask  # bits region-2 .. tag_lsb
        tag_random = (batch.tag_random & np.uint64((1 << 63) - 1)).astype(np.int64)
        tag = np.where(tag_lsb != region - 1, msb | (tag_random & random_bits), msb)
        tag &= (_bit(tag_lsb + TAG_INSERTED_BITS) - 1) & ~va_mask  # the two add immediates
        return ((offset_first & va_mask) | tag) - batch.dram_first, tag, tag | va_mask


BUILTIN_LAYOUTS = tuple(EraLayout(era) for era in ERAS)


@hookimpl
def register_layouts(register):
    for layout in BUILTIN_LAYOUTS:
        register(layout)
