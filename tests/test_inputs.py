"""Pinned inputs: tag_random, random and stride placements, recomputed here independently.

Each expected value comes from a few lines of plain Python written from the published
definitions (splitmix64: Steele, Lea and Flood 2014 and Vigna's ``splitmix64.c``; BLAKE2b and
SHA-256 from ``hashlib``; docs/model.md section 8 for the placements), not from the package: a
change of algorithm fails here and must come with a new ``ALGORITHM_VERSION``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from sweep.core.memmap import MemoryMap
from sweep.plan.config import validate_config
from sweep.plan.placements import StridedPlacements, splitmix64_stream, tag_prefixes, tag_random
from sweep.plan.units import ALGORITHM_VERSION, make_plan
from sweep_plugins import placements as builtin

M64 = (1 << 64) - 1


def splitmix64(state: int) -> tuple[int, int]:
    """Vigna's splitmix64.c ``next()``: returns (new state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def mix(x: int) -> int:
    return splitmix64(x)[1]


def test_splitmix64_stream_is_the_published_sequence():
    # splitmix64 seeded with 0: the first four outputs are the published test vector.
    assert splitmix64_stream(0, 4).tolist() == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
        0xF88BB8A8724C81EC,
    ]
    state, expected = 0x1234_5678_9ABC_DEF0, []
    for _ in range(5):
        state, out = splitmix64(state)
        expected.append(out)
    assert splitmix64_stream(0x1234_5678_9ABC_DEF0, 5).tolist() == expected


def expected_tag(seed: int, name: str, granule: int, va_bits: int, idmap: int) -> int:
    """tag_random as _sweep.json's algorithm version 2 defines it."""
    digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    prefix = mix(mix(seed ^ digest) ^ (granule << 8 | va_bits))
    return mix(idmap ^ prefix)


def test_tag_prefixes_of_many_maps_are_each_maps_own():
    # A worker makes every map's prefix at once: each is the published formula's for its name.
    names = ["juno", "t1g", "m00007", "", "a" * 300, "é"]
    found = tag_prefixes(2**64 - 1, names, 16384, 47).tolist()
    expected = []
    for name in names:
        digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
        expected.append(mix(mix((2**64 - 1) ^ digest) ^ (16384 << 8 | 47)))
    assert found == expected


@pytest.mark.parametrize(
    ("seed", "name", "granule", "va_bits", "idmap"),
    [
        (1, "juno", 4096, 39, 0x8008_0000),
        (7, "amd-seattle", 16384, 47, 0x80_0008_0000),
        ((1 << 64) - 1, "rpi4-4G", 65536, 52, 0x0),
        (0x5EED, "qemu-virt-1G", 4096, 48, 0xF_FFFF_F000),
    ],
)
def test_tag_random_is_pinned(seed, name, granule, va_bits, idmap):
    got = tag_random(seed, name, granule, va_bits, np.array([idmap], dtype=np.uint64))
    assert int(got[0]) == expected_tag(seed, name, granule, va_bits, idmap)
    assert int(tag_random(0, name, granule, va_bits, np.array([idmap], np.uint64))[0]) == 0


def expected_random(banks, granule, count, seed, name) -> list[int]:
    """docs/model.md section 8's random placement, as algorithm version 2 draws it."""
    key = hashlib.sha256(f"sweep.placement.random\0{seed}\0{name}\0{granule}".encode()).digest()
    state, total, out = int.from_bytes(key[:8], "little"), sum(e - s for s, e in banks), []
    for _ in range(count):
        state, draw = splitmix64(state)
        offset = draw % total
        for start, end in banks:
            if offset < end - start:
                out.append(start + offset)
                break
            offset -= end - start
    return out


def test_random_placement_is_pinned():
    banks = [(0x8000_0000, 0xFF00_0000), (0x8_8000_0000, 0xA_0000_0000)]
    params = {"kind": "random", "count": 64, "seed": 5}
    got = builtin.random_addresses(banks, 16384, params, {"memory_map": "juno", "granule": 16384})
    assert got.tolist() == expected_random(banks, 16384, 64, 5, "juno")


def test_random_placement_through_a_plan_is_aligned_sorted_and_distinct():
    config = validate_config(
        {
            "memory_maps": ["juno"],
            "granules": ["64K"],
            "va_bits": [48],
            "layouts": ["merged"],
            "block_mappings": [False],
            "placement": {"kind": "random", "count": 300, "seed": 9},
        }
    )
    plan = make_plan(config)
    (unit,) = plan.units()
    banks = MemoryMap("juno", [(0x8000_0000, 0x7F00_0000), (0x8_8000_0000, 6 << 30)]).trimmed(65536)
    expected = sorted({a // 65536 * 65536 for a in expected_random(banks, 65536, 300, 9, "juno")})
    assert plan.decoder.unit_inputs(unit).idmap_pa.tolist() == expected


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
@pytest.mark.parametrize("step", [4096, 12288, 16384, 20480, 65536, 0x30000, 1 << 30])
def test_stride_by_arithmetic_is_the_listed_definition(granule, step):
    # docs/model.md section 8: in every trimmed bank [b, e), each b + k * step < e, aligned down to
    # the granule, deduplicated and sorted.
    banks = [
        (0x8000_0000, 0x8020_0000),
        (0x1_0000_0000, 0x1_0004_0000),
        (0x2_0000_0000, 0x2_0001_0000),
    ]
    banks = [(s, e) for s, e in banks if e - s >= granule]
    listed = sorted(
        {
            (b + k * step) // granule * granule
            for b, e in banks
            for k in range((e - b + step - 1) // step)
        }
    )
    progression = builtin.stride(banks, granule, {"kind": "stride", "step": step}, {})
    found = StridedPlacements(progression, granule)
    assert len(found) == len(listed)
    assert found.take(np.arange(len(found))).tolist() == listed
    picks = np.array([len(listed) - 1, 0, len(listed) // 2])
    assert found.take(picks).tolist() == [listed[i] for i in picks]
    for lo, hi in [(0, len(listed)), (1, len(listed) - 1), (len(listed) // 2, len(listed))]:
        assert found.range(lo, hi).tolist() == listed[lo:hi]  # a unit's consecutive rows


def test_every_page_is_every_page_of_every_trimmed_bank():
    banks = [(0x8000_0000, 0x8001_0000), (0x9000_0000, 0x9000_4000)]
    found = StridedPlacements(builtin.every_page(banks, 4096, {"kind": "every-page"}, {}), 4096)
    assert found.take(np.arange(len(found))).tolist() == [
        *range(0x8000_0000, 0x8001_0000, 4096),
        *range(0x9000_0000, 0x9000_4000, 4096),
    ]


def test_the_algorithm_version_is_recorded_in_the_plan():
    config = validate_config({"memory_maps": ["juno"]})
    assert make_plan(config).fingerprint()["algorithm_version"] == ALGORITHM_VERSION == 4
