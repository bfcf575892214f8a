"""The three arm64 granules and Linux's VA_BITS choices for each, from ``sweep.core.kconfig``.

52 means a CPU with LPA2/LVA; the 48 (4K, 64K) and 47 (16K) rows are what a 52-bit kernel runs
with on a CPU without (``vabits_actual``), ``docs/model.md`` section 8.
"""

from sweep import hookimpl
from sweep.core.kconfig import GRANULES, VA_BITS_CHOICES


@hookimpl
def register_granules(register):
    for granule in GRANULES:
        register(granule)


@hookimpl
def register_va_bits(register):
    for granule, choices in VA_BITS_CHOICES.items():
        register(granule, list(choices))
