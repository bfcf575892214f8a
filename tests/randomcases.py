"""Seeded random configurations in bulk (for batch comparisons against the reference).

The same shapes as ``strategies.py`` but drawn with ``random.Random``, so that 10^5 rows cost
seconds to draw and one ``build`` call can take them all at once, mixed maps and layouts.
"""

from __future__ import annotations

import random

from sweep.core.eras import BY_NAME
from sweep.core.memmap import PA_LIMIT, MemoryMap

LAYOUTS = tuple(BY_NAME)  # every kernel era
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


def random_configs(
    seed: int, rows: int, maps: int = 200, rows_per_group: int = 8, shuffle: bool = True
):
    """``(memory_maps, list of config dicts)``: groups of rows sharing map/granule/VA/layout,
    in random order (``shuffle``) so that one batch mixes them all; a fifth of the groups put
    the idmap where a runtime block may hold it (``block_cases``)."""
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
    block_maps, block_configs = block_cases(rng, rows // 5, seed)
    memory_maps.update(block_maps)
    configs = configs[: rows - len(block_configs)] + block_configs
    if shuffle:
        rng.shuffle(configs)
    return memory_maps, configs


def block_cases(rng: random.Random, rows: int, seed: int = 0):
    """Configurations whose idmap lands inside a runtime mapping, often one held by blocks
    (docs/model.md section 5: the idmap's walk meets a block, or a page).

    As in docs/model.md examples 3 and 4: under ``high-only`` the alias of a DRAM byte ``p`` is
    ``2^(V-1) + p - PHYS_OFFSET``, so a bank at ``2^(V-1)`` and up holds idmap pages whose VA
    is the alias of the low bank (example 3), or of itself when PHYS_OFFSET is ``2^(V-1)``
    (``delta`` 0, example 4). Sizes and offsets are whole or half blocks of every granule.
    """
    memory_maps, configs = {}, []
    while len(configs) < rows:
        granule = rng.choice(GRANULES)
        va_bits = rng.randint(36, 48)
        half = 1 << (va_bits - 1)
        unit = rng.choice([1 << 21, 1 << 25, 1 << 29, 1 << 30, 1 << 12])
        high = (half, rng.randint(1, 8) * unit + rng.choice([0, 0, granule]))
        if rng.random() < 0.3:
            banks, phys_offset = [high], half  # delta 0 (example 4)
        else:
            low_base = rng.randint(1, 8) << 30
            banks = [(low_base, rng.randint(1, 8) * unit + rng.choice([0, 0, 1 << 21]))]
            banks.append(high)
            phys_offset = low_base
        mm = MemoryMap(f"blocks-{seed}-{len(memory_maps)}", banks)
        if not fits(mm, granule):
            continue
        memory_maps[mm.name] = mm
        # The idmap in the high bank, in the VA range of the low bank's (or its own) alias.
        alias_end = half + banks[0][1] + (banks[0][0] - phys_offset)
        span_end = min(high[0] + high[1], alias_end)
        for _ in range(8):
            idmap = rng.randrange(high[0], span_end) if span_end > high[0] else high[0]
            page = idmap // granule * granule
            if not any(start <= page < end for start, end in mm.trimmed(granule)):
                continue
            configs.append(
                dict(
                    memory_map=mm.name,
                    granule=granule,
                    va_bits=va_bits,
                    layout=rng.choice(["linux-4.6", "linux-4.8", "linux-4.17", "linux-7.0"]),
                    block_mappings=rng.random() < 0.8,
                    idmap_pa=idmap,
                    tag_random=0,
                )
            )
    return memory_maps, configs[:rows]


def fits(mm: MemoryMap, granule: int) -> bool:
    """Whether a whole page of ``granule`` is left after trimming."""
    try:
        mm.trimmed(granule)
    except ValueError:
        return False
    return True
