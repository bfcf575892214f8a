"""Seeded random configurations in bulk (for batch comparisons against the reference).

The same shapes as ``strategies.py`` but drawn with ``random.Random``, so that 10^5 rows cost
seconds to draw and one ``build`` call can take them all at once, mixed maps and layouts.
"""

from __future__ import annotations

import random

from sweep.model import PA_LIMIT, MemoryMap

LAYOUTS = ("high-only", "merged", "tagged", "tagged-48")
GRANULES = (4096, 16384, 65536)


def _address(rng: random.Random) -> int:
    value = rng.getrandbits(rng.randint(12, 52))
    align = 1 << rng.choice([0, 12, 14, 16, 21, 25, 29, 30, 36, 39, 42])
    jitter = rng.choice([0, 0, 0, 1 << 12, -(1 << 12), 1 << 16])
    return min(max(value // align * align + jitter, 0), PA_LIMIT - 1)


def _span(rng: random.Random) -> int:
    """A bank size or gap: a few pages, a power of two, anything up to 2^45, or (1 in 10) huge."""
    kind = rng.randrange(10)
    if kind < 3:
        return rng.randint(1, 64) << 12
    k = rng.randint(46, 51) if kind == 9 else rng.randint(12, 45)
    return 1 << k if kind < 6 else rng.randint(1, 1 << k)


def random_memory_map(rng: random.Random, name: str, max_banks: int = 8) -> MemoryMap:
    cursor, banks = _address(rng), []
    for _ in range(rng.randint(1, max_banks)):
        size = _span(rng)
        if cursor + size > PA_LIMIT:
            break
        banks.append((cursor, size))
        cursor += size + (0 if rng.random() < 0.2 else _span(rng))
    return MemoryMap(name, banks or [(PA_LIMIT - (1 << 30), 1 << 30)])


def random_configs(seed: int, rows: int, maps: int = 200, rows_per_group: int = 8):
    """``(memory_maps, list of config dicts)``: groups of rows sharing map/granule/VA/layout."""
    rng = random.Random(seed)
    memory_maps = {}
    while len(memory_maps) < maps:
        mm = random_memory_map(rng, f"random-{seed}-{len(memory_maps)}")
        if fits(mm, 65536):  # a whole 64K page left means 4K and 16K pages too
            memory_maps[mm.name] = mm
    names = list(memory_maps)
    configs = []
    while len(configs) < rows:
        mm = memory_maps[rng.choice(names)]
        granule = rng.choice(GRANULES)
        trimmed = mm.trimmed(granule)
        common = dict(
            memory_map=mm.name,
            granule=granule,
            layout=rng.choice(LAYOUTS),
            block_mappings=rng.random() < 0.5,
        )
        start, end = rng.choice(trimmed)
        probe = rng.randrange(start, end)
        near = min(max(probe.bit_length() + rng.randint(-1, 1), 32), 52)
        common["va_bits"] = rng.choice([near, near, rng.randint(32, 52), 39, 48])
        for _ in range(rows_per_group):
            start, end = rng.choice(trimmed)
            where = rng.randrange(4)
            idmap = (
                start if where == 0 else end - granule if where == 1 else rng.randrange(start, end)
            )
            tag = 0 if rng.random() < 0.5 else rng.getrandbits(64)
            configs.append({**common, "idmap_pa": idmap, "tag_random": tag})
    return memory_maps, configs[:rows]


def fits(mm: MemoryMap, granule: int) -> bool:
    """Whether a whole page of ``granule`` is left after trimming."""
    try:
        mm.trimmed(granule)
    except ValueError:
        return False
    return True
