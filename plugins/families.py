"""Synthetic memory-map families that sweeps range over.

- ``qemu-virt``: QEMU's ``-M virt`` with ``-m`` from 128 MiB to 128 GiB in powers of two, plus
  255 GiB, the most it allows without highmem (``hw/arm/virt.c``: ``[VIRT_MEM] = { GiB,
  LEGACY_RAMLIMIT_BYTES }``, ``LEGACY_RAMLIMIT_GB 255``): one bank at 1 GiB.
- ``single-bank``: one 2 GiB bank at every power-of-two base from 2^30 to 2^51, to see where the
  idmap crosses each VA_BITS boundary (2 GiB: the smallest common server bank, and the largest
  that still fits below 2^52 at base 2^51 with room to spare).
- ``random``: seeded random maps of 1 to 8 banks anywhere below 2^52
  (``random_memory_maps(seed, count)``); a few are registered by default.
"""

from __future__ import annotations

import random

from sweep import hookimpl
from sweep.core.memmap import PA_LIMIT, MemoryMap

QEMU_VIRT_BASE = 0x4000_0000
"""``hw/arm/virt.c``: ``[VIRT_MEM] = { GiB, LEGACY_RAMLIMIT_BYTES }``."""
QEMU_VIRT_MAX = 255 << 30
"""``LEGACY_RAMLIMIT_GB 255``: the most RAM below the high I/O regions without ``highmem``."""
SINGLE_BANK_SIZE = 2 << 30
SINGLE_BANK_EXPONENTS = range(30, 52)
RANDOM_ALIGN = 2 << 20
"""Random banks are 2 MiB aligned and at least 2 MiB, so trimming never empties one at any
granule and ``kernel-load`` (base + 0x80000) always lands inside the lowest bank."""
RANDOM_MAX_BANK = 1 << 40
DEFAULT_RANDOM_SEED, DEFAULT_RANDOM_COUNT = 1, 8


def _size_name(size: int) -> str:
    return f"{size >> 30}G" if size >= 1 << 30 else f"{size >> 20}M"


def qemu_virt_memory_maps() -> list[MemoryMap]:
    sizes = [128 << 20 << k for k in range(11)] + [QEMU_VIRT_MAX]  # 128 MiB .. 128 GiB, 255 GiB
    return [
        MemoryMap(
            f"qemu-virt-{_size_name(size)}",
            [(QEMU_VIRT_BASE, size)],
            description=f"QEMU -M virt -m {_size_name(size)}: one bank at 1 GiB",
            source="qemu/qemu hw/arm/virt.c (VIRT_MEM, LEGACY_RAMLIMIT_GB)",
        )
        for size in sizes
    ]


def single_bank_memory_maps() -> list[MemoryMap]:
    return [
        MemoryMap(
            f"single-2^{e}",
            [(1 << e, SINGLE_BANK_SIZE)],
            description=f"one {_size_name(SINGLE_BANK_SIZE)} bank at 2^{e}",
            source="synthetic (sweep_plugins.families)",
        )
        for e in SINGLE_BANK_EXPONENTS
    ]


def random_memory_maps(seed: int, count: int) -> list[MemoryMap]:
    """``count`` maps named ``random-<seed>-<i>``, each 1 to 8 banks below 2^52.

    Map ``i`` depends only on ``(seed, i)`` (Python's ``random.Random`` seeded with a string,
    whose algorithm is fixed), so it is the same in every process and whatever ``count`` is.
    Bases are spread over every order of magnitude (a random exponent from 21 to 51, then a
    uniform offset), as uniform bases would nearly all lie above 2^48.
    """
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (seed, count)):
        raise ValueError(
            f"random_memory_maps: seed and count must be integers >= 0, got {seed!r}, {count!r}"
        )
    return [_random_map(seed, i) for i in range(count)]


def _random_map(seed: int, index: int) -> MemoryMap:
    rng = random.Random(f"sweep.random-memory-map:{seed}:{index}")
    slots = PA_LIMIT // RANDOM_ALIGN
    bases = set()
    for _ in range(rng.randint(1, 8)):
        exponent = rng.randint(21, 51)
        bases.add(rng.randrange(1 << exponent, 1 << (exponent + 1)) // RANDOM_ALIGN * RANDOM_ALIGN)
    ordered = sorted(bases)
    banks = []
    for i, base in enumerate(ordered):
        limit = ordered[i + 1] if i + 1 < len(ordered) else slots * RANDOM_ALIGN
        exponent = rng.randint(21, 40)  # 2 MiB .. 1 TiB, log-uniform
        size = min(rng.randrange(1 << exponent, 1 << (exponent + 1)), RANDOM_MAX_BANK, limit - base)
        banks.append((base, max(size // RANDOM_ALIGN * RANDOM_ALIGN, RANDOM_ALIGN)))
    return MemoryMap(
        f"random-{seed}-{index}",
        banks,
        description=f"{len(banks)} random bank(s), 2 MiB aligned: seed {seed}, map {index}",
        source="synthetic (sweep_plugins.families.random_memory_maps)",
    )


@hookimpl
def register_memory_maps(register):
    for memory_map in qemu_virt_memory_maps():
        register(memory_map, family="qemu-virt")
    for memory_map in single_bank_memory_maps():
        register(memory_map, family="single-bank")
    for memory_map in random_memory_maps(DEFAULT_RANDOM_SEED, DEFAULT_RANDOM_COUNT):
        register(memory_map, family="random")
