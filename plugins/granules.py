"""The three arm64 granules and Linux's VA_BITS choices for each (``arch/arm64/Kconfig``).

52 means a CPU with LPA2/LVA; the 48 (4K, 64K) and 47 (16K) rows are what a 52-bit kernel runs
with on a CPU without (``vabits_actual``), MODEL.md section 8.
"""

from sweep import hookimpl

KCONFIG_VA_BITS = {
    4096: [39, 48, 52],  # ARM64_VA_BITS_39 / _48 / _52 (4K: 52 from 6.9 with LPA2)
    16384: [36, 47, 48, 52],  # ARM64_VA_BITS_36 / _47 / _48 / _52 (LPA2)
    65536: [42, 48, 52],  # ARM64_VA_BITS_42 / _48 / _52 (LVA)
}


@hookimpl
def register_granules(register):
    for granule in KCONFIG_VA_BITS:
        register(granule)


@hookimpl
def register_va_bits(register):
    for granule, choices in KCONFIG_VA_BITS.items():
        register(granule, choices)
