"""The inputs of a sweep's rows that are not plain config values: idmap placements and tags.

Placements come from a placement plugin as a uint64 array or, for a regular stride, as a
:class:`Progression` (one arithmetic progression per bank), which is counted and sliced by
arithmetic: a stride sweep of 10^9 rows never holds its addresses. ``tag_random`` is a hash of
the row's inputs, so any row can be recomputed alone, in any order, on any worker.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweep.core.errors import SweepError
from sweep.core.memmap import MemoryMap

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
"""splitmix64's increment (Steele, Lea, Flood 2014, "Fast splittable pseudorandom number
generators", and Vigna's reference ``splitmix64.c``)."""
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
"""The multipliers of splitmix64's finaliser."""
_U64 = {n: np.uint64(n) for n in (GOLDEN_GAMMA, MIX1, MIX2, 27, 30, 31)}
"""The same as numpy scalars, made once: a few-element array's cost is per operation."""


# --- splitmix64 and tag_random ------------------------------------------------------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The same over a uint64 array (numpy's uint64 arithmetic wraps mod 2^64)."""
    return _finalise(x + _U64[GOLDEN_GAMMA])


def _finalise(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array of its own (no temporaries to make)."""
    z ^= z >> _U64[30]
    z *= _U64[MIX1]
    z ^= z >> _U64[27]
    z *= _U64[MIX2]
    z ^= z >> _U64[31]
    return z


@functools.lru_cache(maxsize=1 << 16)
def name_digest(name: str) -> int:
    """A stable 64-bit digest of a memory map's name (Python's ``hash()`` changes per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def tag_prefixes(seed: int, memory_maps: Sequence[str], granule: int, va_bits: int) -> np.ndarray:
    """What ``tag_random`` hashes with the idmap address, per map (uint64): seed, map name,
    granule, VA_BITS. All maps at once: a unit of 2,000 boards asks for 2,000."""
    digests = np.fromiter(map(name_digest, memory_maps), dtype=np.uint64, count=len(memory_maps))
    prefix = _splitmix64(digests ^ np.uint64(seed & MASK64))
    return _splitmix64(prefix ^ np.uint64(granule << 8 | va_bits))


def tag_prefix(seed: int, memory_map: str, granule: int, va_bits: int) -> int:
    """:func:`tag_prefixes` of one map."""
    return int(tag_prefixes(seed, [memory_map], granule, va_bits)[0])


def tag_hash(idmap_pa: np.ndarray, prefix) -> np.ndarray:
    """``tag_random`` of rows from their idmap addresses (uint64) and their :func:`tag_prefix`
    (one, or one per row, as uint64): the formula, once."""
    return _splitmix64(idmap_pa ^ prefix)


def tag_random(
    seed: int, memory_map: str, granule: int, va_bits: int, idmap_pa: np.ndarray
) -> np.ndarray:
    """``tag_random`` per row (docs/model.md section 8 ``[tag]``): 0 for seed 0, otherwise a hash of
    the seed, the map's name, granule, VA_BITS and idmap address, whatever the order or worker.

    Only rows of a layout that inserts a random tag (``Layout.uses_tag_random``) get one.
    """
    idmap = np.asarray(idmap_pa, dtype=np.uint64)
    if seed == 0:
        return np.zeros(len(idmap), dtype=np.uint64)
    return tag_hash(idmap, np.uint64(tag_prefix(seed, memory_map, granule, va_bits)))


def splitmix64_stream(key: int | np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` outputs of splitmix64 seeded with ``key`` (its state advances by the
    increment before each output), for seeded plugins such as the random placement; ``key`` a
    uint64 array of shape ``(n, 1)``: ``n`` streams, one row each."""
    states = np.arange(1, count + 1, dtype=np.uint64)  # the k-th output's state: key + k * gamma
    states *= _U64[GOLDEN_GAMMA]
    if isinstance(key, np.ndarray):
        return _finalise(key.astype(np.uint64, copy=False) + states)
    states += np.uint64(key & MASK64)
    return _finalise(states)


# --- placements ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progression:
    """Addresses ``starts[k] + j * step`` for ``0 <= j < counts[k]``, bank by bank: what a
    stride placement returns instead of an array, so that it is counted without being built."""

    starts: tuple[int, ...]
    counts: tuple[int, ...]
    step: int


class Placements:
    """The sorted, distinct, granule-aligned idmap addresses of one (memory map, granule)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def take(self, index: np.ndarray) -> np.ndarray:
        """The addresses at positions ``index`` (int64), as uint64."""
        raise NotImplementedError

    def range(self, lo: int, hi: int) -> np.ndarray:
        """The addresses at positions ``lo`` to ``hi - 1``, as uint64."""
        return self.take(np.arange(lo, hi, dtype=np.int64))


class ListedPlacements(Placements):
    def __init__(self, addresses: np.ndarray) -> None:
        self.addresses = addresses

    def __len__(self) -> int:
        return len(self.addresses)

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.addresses[index]

    def range(self, lo: int, hi: int) -> np.ndarray:
        return self.addresses[lo:hi]


class StridedPlacements(Placements):
    """A :class:`Progression` aligned down to the granule. The banks are granule-trimmed, so
    a step that is a multiple of the granule, or larger than it, keeps every address distinct;
    a smaller step reaches every page of the bank, which is the progression with step = granule.
    """

    def __init__(self, progression: Progression, granule: int) -> None:
        step, counts = progression.step, np.array(progression.counts, dtype=np.int64)
        starts = np.array(progression.starts, dtype=np.int64)
        if step < granule:  # every page from the first address's to the last's
            first = starts & ~(granule - 1)
            last = (starts + np.maximum(counts - 1, 0) * step) & ~(granule - 1)
            counts = np.where(counts > 0, (last - first) // granule + 1, 0)
            starts, step = first, granule
        self.starts = starts
        self.counts = counts
        self.step = step
        self.granule = granule
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, index: np.ndarray) -> np.ndarray:
        bank = np.searchsorted(self.offsets, index, side="right") - 1
        address = self.starts[bank] + (index - self.offsets[bank]) * self.step
        return (address & ~(self.granule - 1)).astype(np.uint64)

    def range(self, lo: int, hi: int) -> np.ndarray:
        """Bank by bank, by arithmetic (a work unit's placements are consecutive)."""
        parts = []
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        for bank in range(max(first, 0), len(self.counts)):
            start, stop = self.offsets[bank], self.offsets[bank + 1]
            if start >= hi:
                break
            a, b = max(lo, start) - start, min(hi, stop) - start
            if b > a:
                base = int(self.starts[bank])
                parts.append(np.arange(base + a * self.step, base + b * self.step, self.step))
        address = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        address &= ~(self.granule - 1)
        return address.view(np.uint64)


FEW = 32
"""Up to this many addresses are sorted and deduplicated as Python ints: for a few dozen, numpy's
cost per call (``np.unique``) is more than the work."""

RUNS = "runs"
"""A placement function's ``rows`` attribute that says: the sweep writes runs of pages with equal
outputs (``sweep.model.runs``), not a row per address (every page of the banks: every-page)."""


def writes_runs(fn: object) -> bool:
    """Whether a placement function's rows are runs of pages (its ``rows`` attribute, through
    the plugin boundary's wrapper): a row format the plan reads, never a kind's name."""
    return getattr(getattr(fn, "fn", fn), "rows", None) == RUNS


def placements(
    memory_map: MemoryMap, granule: int, kind: str, fn: Callable, params: Mapping[str, Any]
) -> Placements:
    """One (memory map, granule)'s idmap addresses from placement plugin ``fn``: aligned down
    to the granule, deduplicated and sorted (docs/model.md section 8 ``[placement]``)."""
    banks = memory_map.trimmed(granule)
    context = {"memory_map": memory_map.name, "granule": granule}
    result = fn(banks, granule, dict(params), context)
    if isinstance(result, Progression):
        return StridedPlacements(result, granule)
    addresses = np.asarray(result)
    if addresses.dtype.kind not in "iu":
        raise SweepError(f"placement {kind!r}: returned {addresses.dtype} addresses, not integers")
    pages = MASK64 & ~(granule - 1)  # aligns down; & MASK64 wraps as astype(np.uint64) does
    if addresses.ndim == 1 and len(addresses) <= FEW:
        distinct = {address & pages for address in addresses.tolist()}
        return ListedPlacements(np.array(sorted(distinct), dtype=np.uint64))
    addresses = addresses.astype(np.uint64) & np.uint64(pages)
    if len(addresses) < 2 or bool((addresses[1:] > addresses[:-1]).all()):
        return ListedPlacements(addresses)  # sorted and distinct already: skip the sort
    return ListedPlacements(np.unique(addresses))


def placements_many(
    memory_maps: Sequence[MemoryMap], granule: int, fn: Callable, params: Mapping[str, Any]
) -> list[Placements] | None:
    """:func:`placements` of many maps at once, when the plugin draws many at once (its ``many``
    attribute: the built-in random placement); None when it does not, or when some map fails
    (no whole page at the granule, a bad parameter): then each map is asked alone, so that each
    failure is that map's. The same addresses: each row aligned down to the granule, sorted and
    deduplicated."""
    many = getattr(fn, "many", None)
    if many is None or not memory_maps:
        return None
    try:
        banks = [m.trimmed(granule) for m in memory_maps]
        contexts = [{"memory_map": m.name, "granule": granule} for m in memory_maps]
        drawn = np.asarray(many(banks, granule, dict(params), contexts))
    except Exception:
        return None
    if drawn.dtype != np.uint64 or drawn.shape[0] != len(memory_maps) or drawn.ndim != 2:
        raise SweepError(f"many: returned {drawn.dtype} {drawn.shape}, not one uint64 row a map")
    drawn = np.sort(drawn & np.uint64(MASK64 & ~(granule - 1)), axis=1)
    repeated = (drawn[:, 1:] == drawn[:, :-1]).any(axis=1)
    return [
        ListedPlacements(np.unique(row) if again else row)
        for row, again in zip(drawn, repeated.tolist(), strict=True)
    ]
