"""Cutting a sweep into work units, lazily, so that a billion configurations run in flat memory.

A sweep is the cartesian product memory map x granule x VA_BITS x layout x block setting x
placement. The plan keeps only the memory maps and, per (memory map, granule), how many
placements there are; units are generated from those counts on demand and never held together.

A unit is the run of rows one part file holds: one (granule, VA_BITS) partition, and in it a
sequence of *segments*, each a memory map x layout x block setting x a slice of that map's
placements. Segments are packed in a fixed order up to ``unit_rows`` rows, so a sweep of many
small maps writes a few full files rather than thousands of one-row files, and a big stride
sweep is cut into equal slices. The order depends only on the config and the plugins, so unit
``k`` of a partition is the same unit in every run: that is what ``--resume`` relies on.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sweep.errors import SweepError, ValidationError
from sweep.model import MemoryMap, granule_name

log = logging.getLogger(__name__)

MASK64 = (1 << 64) - 1

ALGORITHM_VERSION = 1
"""The version of what decides which rows a part holds besides the config: the ``tag_random``
hash and the unit order. Change it with either: ``--resume`` refuses to mix parts of two
versions (``_sweep.json`` records it)."""


# --- tag_random: a reproducible function of (seed, memory map, granule, VA_BITS, idmap) --------


def _splitmix64_int(x: int) -> int:
    """splitmix64's finaliser (Steele, Lea, Flood 2014) on one Python int, mod 2^64."""
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The same finaliser over a uint64 array (numpy's uint64 arithmetic wraps mod 2^64)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def name_digest(name: str) -> int:
    """A stable 64-bit digest of a memory map's name (Python's ``hash()`` changes per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def tag_random(
    seed: int, memory_map: str, granule: int, va_bits: int, idmap_pa: np.ndarray
) -> np.ndarray:
    """``tag_random`` per row (MODEL.md section 8 ``[tag]``): 0 for seed 0, otherwise a hash of
    the seed, the map's name, granule, VA_BITS and idmap address, whatever the order or worker.

    ``unit_table`` asks for it only for layouts that insert a random tag
    (``Layout.uses_tag_random``); the other layouts' rows hold 0.
    """
    idmap = np.asarray(idmap_pa, dtype=np.uint64)
    if seed == 0:
        return np.zeros(len(idmap), dtype=np.uint64)
    prefix = _splitmix64_int(seed ^ name_digest(memory_map))
    prefix = _splitmix64_int(prefix ^ (granule << 8 | va_bits))
    return _splitmix64(idmap ^ np.uint64(prefix))


# --- memory maps and placements ----------------------------------------------------------------


def select_memory_maps(
    specs: list[str], base_dir: str | None = None, catalog=None
) -> dict[str, MemoryMap]:
    """The maps a config's ``memory_maps`` names, in order (names, globs, ``family:NAME``,
    files relative to the config's folder), by way of the plugins' selector (``catalog``: the
    registry the caller already looked up)."""
    from sweep.memory_maps import select_memory_maps as select

    out = dict(select(specs, base_dir=Path(base_dir) if base_dir else None, catalog=catalog))
    if not out:
        raise ValidationError(f"memory_maps: {specs!r} selects no memory map")
    return out


def placements(memory_map: MemoryMap, granule: int, params: Mapping[str, Any]) -> np.ndarray:
    """The idmap addresses of one (memory map, granule): the placement plugin's candidates,
    aligned down to the granule, deduplicated and sorted (MODEL.md section 8 ``[placement]``)."""
    from sweep.plugins import registry

    kind = params["kind"]
    fn = registry().placements[kind]
    banks = memory_map.trimmed(granule)
    context = {"memory_map": memory_map.name, "granule": granule}
    addresses = np.asarray(fn(banks, granule, dict(params), context))
    if addresses.dtype.kind not in "iu":
        raise SweepError(f"placement {kind!r}: returned {addresses.dtype} addresses, not integers")
    addresses = addresses.astype(np.uint64) & ~np.uint64(granule - 1)
    if len(addresses) > 1 and bool((addresses[1:] > addresses[:-1]).all()):
        return addresses  # a stride is sorted and distinct already: skip np.unique's sort
    return np.unique(addresses)


# --- units ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Rows of one memory map x layout x block setting: placements ``[start, stop)``."""

    memory_map: str
    layout: str
    block_mappings: bool
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Unit:
    """One part file's worth of rows, in one (granule, VA_BITS) partition."""

    granule: int
    va_bits: int
    index: int
    segments: tuple[Segment, ...]

    @property
    def id(self) -> str:
        return f"{granule_name(self.granule)}/va{self.va_bits}/{self.index:06d}"

    @property
    def path(self) -> str:
        """Where its part file goes, relative to the dataset root (hive-style partitions)."""
        return f"granule={self.granule}/va_bits={self.va_bits}/part-{self.index:06d}.parquet"

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    def describe(self) -> str:
        first, last = self.segments[0], self.segments[-1]
        return (
            f"{self.id} ({self.rows} rows: {first.memory_map} {first.layout} "
            f"blocks={first.block_mappings} [{first.start}..] .. {last.memory_map} "
            f"{last.layout} blocks={last.block_mappings} [..{last.stop}))"
        )


@dataclass
class Plan:
    """What a sweep will run: the config, its maps and the placement count of each map x granule.

    Built once in the parent; pickled to Dask workers (under fork, inherited).
    """

    config: dict
    memory_maps: dict[str, MemoryMap]
    va_bits: dict[int, list[int]]
    counts: dict[tuple[str, int], int]
    failures: list[dict] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)

    @property
    def unit_rows(self) -> int:
        return self.config.unit_rows

    def partitions(self) -> Iterator[tuple[int, int]]:
        for granule in self.config.granules:
            for va_bits in self.va_bits[granule]:
                yield granule, va_bits

    def partition_rows(self, granule: int) -> int:
        per_map = sum(self.counts.get((name, granule), 0) for name in self.memory_maps)
        return per_map * len(self.config.layouts) * len(self.config.block_mappings)

    @property
    def configurations(self) -> int:
        return sum(self.partition_rows(g) for g, _ in self.partitions())

    @property
    def n_units(self) -> int:
        return sum(-(-self.partition_rows(g) // self.unit_rows) for g, _ in self.partitions())

    def units(self) -> Iterator[Unit]:
        """Every unit, in a fixed order, generated on demand."""
        for granule, va_bits in self.partitions():
            yield from self._partition_units(granule, va_bits)

    def _partition_units(self, granule: int, va_bits: int) -> Iterator[Unit]:
        index, room, current = 0, self.unit_rows, []
        for name in self.memory_maps:
            n = self.counts.get((name, granule), 0)
            for layout in self.config.layouts:
                for block in self.config.block_mappings:
                    start = 0
                    while start < n:
                        take = min(room, n - start)
                        current.append(Segment(name, layout, block, start, start + take))
                        start += take
                        room -= take
                        if room == 0:
                            yield Unit(granule, va_bits, index, tuple(current))
                            index, room, current = index + 1, self.unit_rows, []
        if current:
            yield Unit(granule, va_bits, index, tuple(current))

    def fingerprint(self) -> dict:
        """What besides the config decides the rows: the maps' banks, VA_BITS, placement counts.

        ``--resume`` compares it too, so a board whose banks changed is not mixed with old parts.
        """
        maps = {
            name: hashlib.blake2b(repr(m.banks).encode(), digest_size=8).hexdigest()
            for name, m in self.memory_maps.items()
        }
        counts = hashlib.blake2b(
            repr(sorted(self.counts.items())).encode(), digest_size=8
        ).hexdigest()
        return {
            "memory_maps": maps,
            "va_bits": {granule_name(g): v for g, v in self.va_bits.items()},
            "placement_counts": counts,
            "configurations": self.configurations,
            "units": self.n_units,
        }


def make_plan(config: dict, base_dir: str | None = None) -> Plan:
    """Resolve maps and VA_BITS and count placements; a map whose placement fails is recorded
    as a failure and left out (the sweep goes on), unless every one fails."""
    from sweep.plugins import pm, registry

    reg = registry()
    maps = select_memory_maps(config.memory_maps, base_dir, catalog=reg)
    if config.va_bits == "kconfig":
        va_bits = {g: sorted(reg.va_bits[g]) for g in config.granules}
    else:
        va_bits = {g: list(config.va_bits) for g in config.granules}
    counts: dict[tuple[str, int], int] = {}
    failures: list[dict] = []
    first_error: Exception | None = None
    for name, memory_map in maps.items():
        for granule in config.granules:
            try:
                counts[(name, granule)] = len(placements(memory_map, granule, config.placement))
            except Exception as exc:  # one map's failure is its own; the others still run
                first_error = first_error or exc
                failures.append(
                    {
                        "unit": f"plan:{name}:{granule_name(granule)}",
                        "error": f"placement {config.placement['kind']!r}: "
                        f"{type(exc).__name__}: {exc}",
                    }
                )
    if failures and not counts:
        if isinstance(first_error, SweepError):
            raise first_error
        raise SweepError(failures[0]["error"])
    plugins = [name for name, _plugin in pm.list_name_plugin()]
    return Plan(config, maps, va_bits, counts, failures, plugins)


# --- building one unit (in a worker) ------------------------------------------------------------

BUILD_BATCH_ROWS = 1 << 17
"""Rows the builder is given at once: its scratch arrays (up to ~1 KiB a row on the per-row
clipping path) stay near 130 MiB whatever ``unit_rows`` is; only the finished columns add up."""

_PLACEMENT_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_PLACEMENT_CACHE_SIZE = 2


def _cached_placements(plan: Plan, name: str, granule: int) -> np.ndarray:
    """Consecutive units share a map and granule: keep the last few placement arrays. The key
    holds the map's banks, not only its name: a long-lived worker (Dask, a notebook) may run
    plans whose maps share a name (two files called board.toml)."""
    banks = tuple((b.base, b.size) for b in plan.memory_maps[name].banks)
    key = (name, banks, granule, repr(sorted(plan.config.placement.items())))
    if key in _PLACEMENT_CACHE:
        _PLACEMENT_CACHE.move_to_end(key)
        return _PLACEMENT_CACHE[key]
    addresses = placements(plan.memory_maps[name], granule, plan.config.placement)
    _PLACEMENT_CACHE[key] = addresses
    while len(_PLACEMENT_CACHE) > _PLACEMENT_CACHE_SIZE:
        _PLACEMENT_CACHE.popitem(last=False)
    return addresses


def unit_table(plan: Plan, unit: Unit) -> pa.Table:
    """Every row of a unit, in order, built by the builder (the driver knows no page tables)."""
    from sweep.builder import build_unit
    from sweep.plugins import registry

    layouts = registry().layouts
    seed = plan.config.tag_seed
    # MODEL.md section 8: only rows of a layout that inserts a random tag get tag_random.
    uses_tag = {name: getattr(layout, "uses_tag_random", False) for name, layout in layouts.items()}
    tables = []
    for seg in unit.segments:
        addresses = _cached_placements(plan, seg.memory_map, unit.granule)
        for start in range(seg.start, seg.stop, BUILD_BATCH_ROWS):
            idmap = addresses[start : min(start + BUILD_BATCH_ROWS, seg.stop)]
            tags = tag_random(
                seed if uses_tag[seg.layout] else 0,
                seg.memory_map,
                unit.granule,
                unit.va_bits,
                idmap,
            )
            tables.append(
                build_unit(
                    plan.memory_maps[seg.memory_map],
                    unit.granule,
                    unit.va_bits,
                    layouts[seg.layout],
                    seg.block_mappings,
                    idmap,
                    tags,
                )
            )
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables).unify_dictionaries()
