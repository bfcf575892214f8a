"""arm64's configuration tables, each written once: granules, Kconfig's VA_BITS, level counts.

The CLI, the verifier, the plugins, the builder, the reference and the tests all take these
from here (``docs/model.md`` sections 1, 2 and 8 say where each comes from in Linux).
"""

from __future__ import annotations

import numpy as np

GRANULES = (4096, 16384, 65536)
"""Translation granules arm64 supports, in bytes (``ARM64_4K_PAGES`` / ``_16K_`` / ``_64K_``)."""

GRANULE_NAMES = {4096: "4K", 16384: "16K", 65536: "64K"}
"""How people and configs write each granule."""

GRANULE_LIST = ", ".join(GRANULE_NAMES.values())
"""``"4K, 16K, 64K"``: the text every granule error shows."""

VA_BITS_CHOICES: dict[int, tuple[int, ...]] = {
    4096: (39, 48, 52),  # ARM64_VA_BITS_39 / _48 / _52 (4K: 52 from 6.9, with LPA2)
    16384: (36, 47, 48, 52),  # ARM64_VA_BITS_36 / _47 / _48 / _52 (LPA2)
    65536: (42, 48, 52),  # ARM64_VA_BITS_42 / _48 / _52 (LVA)
}
"""The VA_BITS a kernel can run with, per granule: ``arch/arm64/Kconfig``'s choices, where 52
means a CPU with LPA2/LVA, plus ``vabits_actual`` of a 52-bit kernel on a CPU without (48 at 4K
and 64K, 47 at 16K), which the 48 and 47 entries already cover."""


def granule_name(granule: int) -> str:
    """``4096 -> "4K"``; any other byte count as ``NK``."""
    return GRANULE_NAMES.get(granule, f"{granule >> 10}K")


def page_shift(granule):
    """``PAGE_SHIFT``: log2 of the granule (12, 14, 16), for an int or a numpy array."""
    if isinstance(granule, np.ndarray):
        return bit_length(granule) - 1
    return int(granule).bit_length() - 1


def levels(input_bits, granule):
    """``ARM64_HW_PGTABLE_LEVELS(input_bits)`` = ``(bits - 4) // (PAGE_SHIFT - 3)``
    (``arch/arm64/include/asm/pgtable-hwdef.h``), for ints or numpy arrays."""
    step = page_shift(granule) - 3
    if isinstance(step, np.ndarray) and step.size == 1:
        step = int(step.reshape(-1)[0])  # one granule: numpy divides by a scalar 8x faster
    return (input_bits - 4) // step


def level_shift(level: int, granule: int) -> int:
    """``ARM64_HW_PGTABLE_LEVEL_SHIFT(level)``: log2 of the bytes one entry at ``level`` maps."""
    g = page_shift(granule)
    return g + (3 - level) * (g - 3)


def min_block_level(granule):
    """``KVM_PGTABLE_MIN_BLOCK_LEVEL``: blocks from level 1 at 4K, from level 2 at 16K and 64K,
    for an int or a numpy array."""
    if isinstance(granule, np.ndarray):
        return np.where(granule == 4096, 1, 2)
    return 1 if granule == 4096 else 2


_POWERS_OF_TWO = np.array([1 << k for k in range(63)], dtype=np.int64)


def bit_length(values: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of non-negative int64 values, elementwise and exact (no float).

    Values of a narrow range (a work unit's idmap addresses: a few bit lengths) count the few
    powers of two between their least and greatest, several times faster than a search."""
    values = np.asarray(values)
    if values.size > 64:
        low, high = int(values.min()).bit_length(), int(values.max()).bit_length()
        if high - low <= 4:  # 2^k <= value for every k below low, for no k from high up
            out = np.full(values.shape, low, dtype=np.int64)
            for k in range(low, high):
                out += values >= _POWERS_OF_TWO[k]
            return out
    return np.searchsorted(_POWERS_OF_TWO, values, side="right").astype(np.int64, copy=False)
