"""Cutting a sweep into work units, lazily, so that a billion configurations run in flat memory.

A sweep is the cartesian product memory map x granule x VA_BITS x combination (layout x mapping
set x CPUs or block setting, ``sweep.plan.combos``) x placement. The plan resolves every plugin
once (maps, layouts, the placement function) and keeps, per (memory map, granule), only how many
placements there are; units are generated from those counts on demand and never held together.

The rows of one (granule, VA_BITS) partition are numbered in a fixed order (map, then
combination, then placement) and a unit is the range ``[start, stop)`` of that numbering,
``unit_rows`` long: a sweep of many small maps writes a few full files rather than thousands of
one-row files, and a worker computes a unit's inputs from its range by arithmetic, for 2 maps or
2,000 (``sweep.plan.decode``: the plan cuts, the decoder decodes). The order depends only on the
config and the plugins, so unit ``k`` of a partition is the same unit in every run: that is what
``--resume`` relies on (with :data:`ALGORITHM_VERSION`).

A placement whose function says its rows are runs (``rows = "runs"``, as every-page's does:
:func:`sweep.plan.placements.writes_runs`) is written as runs of pages instead of rows
(:mod:`sweep.model.runs`); its units hold whole groups (a map's rows of one combination: its
every page at one layout and block setting), so that no run is cut, and a map of many pages is
several units, which the workers share and whose tables stay small.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweep.core.errors import SweepError, ValidationError
from sweep.core.memmap import MemoryMap, granule_name
from sweep.model.bootrows import BootKernel
from sweep.model.layout import Layout
from sweep.plan.combos import Combos, plan_combos
from sweep.plan.config import SweepConfig
from sweep.plan.decode import UnitDecoder
from sweep.plan.memory_maps import select_memory_maps
from sweep.plan.placements import (
    ListedPlacements,
    Placements,
    placements,
    placements_many,
    writes_runs,
)
from sweep.plan.plugins import pm, registry
from sweep.store.parts import PartKey

ALGORITHM_VERSION = 4
"""Bumped whenever the rows a config gives change for the same code inputs: the tag hash, the
random placement's stream, the unit order. ``_sweep.json`` records it (``plan``), so ``--resume``
never mixes parts of two versions. 2: units as row ranges; random placement by splitmix64.
3: every-page units cut between groups (map x combination), no longer only between maps.
4: every-page runs taken page by page from a bank's first page (``sweep.model.windows``), so
that a group refined in windows gives the same runs; the merge of intervals before could, on
rare outputs, cut elsewhere (none of the built-in boards' runs changed)."""

RUN_UNIT_FACTOR = 256
"""An every-page unit packs whole groups until it covers ``unit_rows * RUN_UNIT_FACTOR``
configurations (runs are far fewer rows than pages): at the default ``unit_rows``, one group of
512 GiB of 4K pages is a unit of its own (measured: about a second and 200 MiB of a worker's
memory at VA_BITS 39, where DRAM is clipped at the idmap page and runs are 256 pages long)."""
KEEP_LISTED = 1 << 22
"""Listed addresses (32 MiB) up to which the plan keeps what it counted, for the workers."""


@dataclass(frozen=True)
class Unit:
    """One part file's worth of rows: rows ``[start, stop)`` of a (granule, VA_BITS) partition."""

    granule: int
    va_bits: int
    index: int
    start: int
    stop: int
    runs: bool = False
    """Its rows are runs of pages (every-page): how many is known only once built."""

    @property
    def part_rows(self) -> int | None:
        """Rows its part file holds, when known before it is built."""
        return None if self.runs else self.rows

    @property
    def key(self) -> PartKey:
        """Its part file's key (:class:`sweep.store.parts.PartKey`)."""
        return PartKey(self.granule, self.va_bits, self.index)

    @property
    def id(self) -> str:
        return self.key.unit_id

    @property
    def path(self) -> str:
        """Where its part file goes, relative to the dataset root."""
        return self.key.path

    @property
    def rows(self) -> int:
        """Configurations covered (for every-page, the pages x layouts x block settings)."""
        return self.stop - self.start

    def describe(self) -> str:
        return f"{self.id} ({self.rows} configurations: [{self.start}, {self.stop}))"


@dataclass
class Plan:
    """What a sweep will run: the config, its maps, layouts and placement function, and the
    placement count of each map x granule. Built once in the parent; inherited under fork,
    pickled to Dask workers (which look the plugins up again by name)."""

    config: SweepConfig
    memory_maps: dict[str, MemoryMap]
    va_bits: dict[int, list[int]]
    counts: dict[tuple[str, int], int]
    layouts: tuple[Layout, ...] = ()
    placement_fn: Callable | None = None
    failures: list[dict] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    kernels: tuple[BootKernel, ...] = ()
    combos: dict[int, Combos] = field(default_factory=dict)
    """Per granule, the combinations each (map, placement) gives (``sweep.plan.combos``)."""
    skipped: list[str] = field(default_factory=list)
    """Boot sets left out, one line each: a layout and granule with no kernel build."""
    found: dict[int, list] = field(default_factory=dict, repr=False, compare=False)
    """Per granule, each map's placements as planning computed them (kept when small: forked
    workers inherit them; empty otherwise, and the decoder computes them again)."""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    _decoder: UnitDecoder | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _cache={}, _decoder=None, layouts=None, placement_fn=None)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.layouts is None:  # on a worker: the same plugins, loaded by name
            from sweep.plan.plugins import registry  # lazy: a worker unpickles before loading them

            reg = registry()
            self.layouts = tuple(reg.layouts[name] for name in self.config.layouts)
            self.placement_fn = reg.placements[self.config.placement["kind"]]

    @property
    def unit_rows(self) -> int:
        return self.config.unit_rows

    @property
    def runs(self) -> bool:
        """Whether rows are runs of pages (a placement whose ``rows`` are runs: every-page)
        rather than one row per address."""
        return writes_runs(self.placement_fn)

    @property
    def map_list(self) -> list[MemoryMap]:
        return list(self.memory_maps.values())

    def partitions(self) -> Iterator[tuple[int, int]]:
        for granule in self.config.granules:
            for va_bits in self.va_bits[granule]:
                yield granule, va_bits

    def _placement_counts(self, granule: int) -> np.ndarray:
        """Placements of each map at ``granule`` (once per granule: a plan of 2,000 maps asks
        for them once per unit and partition)."""
        key = ("placement_counts", granule)
        if key not in self._cache:
            counts = [self.counts.get((name, granule), 0) for name in self.memory_maps]
            self._cache[key] = np.array(counts, dtype=np.int64)
        return self._cache[key]

    def _map_rows(self, granule: int) -> np.ndarray:
        """Rows of each map in a partition: placements x combinations."""
        return self._placement_counts(granule) * len(self.combos[granule])

    def partition_rows(self, granule: int) -> int:
        return int(self._map_rows(granule).sum())

    @property
    def configurations(self) -> int:
        return sum(self.partition_rows(g) for g, _ in self.partitions())

    @property
    def n_units(self) -> int:
        return sum(len(self._cuts(g)) - 1 for g, _ in self.partitions())

    def _cuts(self, granule: int) -> list[int]:
        """Unit boundaries in a partition's row numbering (every-page: at group ends only)."""
        total = self.partition_rows(granule)
        if not self.runs:
            return [*range(0, total, self.unit_rows), total] if total else [0]
        key = ("cuts", granule)
        if key not in self._cache:
            cuts, room = [0], self.unit_rows * RUN_UNIT_FACTOR
            groups = np.repeat(self._placement_counts(granule), len(self.combos[granule]))
            for end in np.cumsum(groups).tolist():
                if end - cuts[-1] >= room or (end == total and end > cuts[-1]):
                    cuts.append(end)
            self._cache[key] = cuts
        return self._cache[key]

    def units(self) -> Iterator[Unit]:
        """Every unit, in a fixed order, generated on demand."""
        for granule, va_bits in self.partitions():
            cuts = self._cuts(granule)
            for index, (start, stop) in enumerate(zip(cuts, cuts[1:], strict=False)):
                yield Unit(granule, va_bits, index, start, stop, self.runs)

    def map_row_offsets(self, granule: int) -> np.ndarray:
        """Where each map's rows start in the partition numbering (and the total, last)."""
        return np.concatenate([[0], np.cumsum(self._map_rows(granule))])

    @property
    def decoder(self) -> UnitDecoder:
        """What a worker uses to turn a unit's row numbers into inputs (``sweep.plan.decode``),
        made once per process: its caches are its own, never the plan's."""
        if self._decoder is None:
            self._decoder = UnitDecoder(self)
        return self._decoder

    def fingerprint(self) -> dict:
        """What besides the config decides the rows: the maps' banks, VA_BITS, placement counts
        and the algorithm version. ``--resume`` compares it, so a board whose banks changed, or
        a new tag hash, is not mixed with old parts."""
        maps = {
            name: hashlib.blake2b(repr(m.banks).encode(), digest_size=8).hexdigest()
            for name, m in self.memory_maps.items()
        }
        counts = hashlib.blake2b(
            repr(sorted(self.counts.items())).encode(), digest_size=8
        ).hexdigest()
        return {
            "algorithm_version": ALGORITHM_VERSION,
            "memory_maps": maps,
            "va_bits": {granule_name(g): v for g, v in self.va_bits.items()},
            "placement_counts": counts,
            "configurations": self.configurations,
            "units": self.n_units,
            **self._boot_fingerprint(),
        }

    def _boot_fingerprint(self) -> dict:
        """The kernel builds boot sets use (a changed profile changes rows) and the boot sets
        left out; nothing for a sweep of all of DRAM, whose record stays as it was."""
        if not self.kernels:
            return {}
        builds = {k.name: hashlib.blake2b(repr(k).encode(), digest_size=8).hexdigest()
                  for k in self.kernels}  # fmt: skip
        return {"kernels": builds, "skipped": list(self.skipped)}


def make_plan(config: SweepConfig, base_dir: str | None = None) -> Plan:
    """Resolve maps, layouts, the placement and VA_BITS, and count placements; a map whose
    placement fails is recorded as a failure and left out (the sweep goes on), unless every
    one fails."""

    reg = registry()
    maps = select_memory_maps(config.memory_maps, Path(base_dir) if base_dir else None, reg)
    if not maps:
        raise ValidationError(f"memory_maps: {config.memory_maps!r} selects no memory map")
    kind = config.placement["kind"]
    fn = reg.placements[kind]
    runs = writes_runs(fn)
    if runs and config.tag_seed != 0:
        raise ValidationError(
            f"tag.seed: placement {kind} writes runs of pages with equal outputs and needs"
            " seed = 0 (a random tag per page would make every page a run of its own)"
        )
    if config.va_bits == "kconfig":
        va_bits = {g: sorted(reg.va_bits[g]) for g in config.granules}
    else:
        va_bits = {g: list(config.va_bits) for g in config.granules}
    layouts = tuple(reg.layouts[name] for name in config.layouts)
    counts: dict[tuple[str, int], int] = {}
    found: dict[int, list[Placements | None]] = {g: [] for g in config.granules}
    failures: list[dict] = []
    first_error: Exception | None = None
    listed = 0  # addresses held in arrays, counted as they come (thousands of small maps)
    drawn = {g: placements_many(list(maps.values()), g, fn, config.placement)
             for g in config.granules}  # fmt: skip
    for index, (name, memory_map) in enumerate(maps.items()):
        for granule in config.granules:
            try:
                if drawn[granule] is not None:
                    these = drawn[granule][index]
                else:
                    these = placements(memory_map, granule, kind, fn, config.placement)
                counts[(name, granule)] = size = len(these)
            except Exception as exc:  # one map's failure is its own; the others still run
                found[granule].append(None)
                first_error = first_error or exc
                failures.append(
                    {
                        "unit": f"plan:{name}:{granule_name(granule)}",
                        "error": f"placement {kind!r}: {type(exc).__name__}: {exc}",
                    }
                )
                continue
            found[granule].append(these if size else None)
            listed += size if isinstance(these, ListedPlacements) else 0
    if failures and not counts:
        if isinstance(first_error, SweepError):
            raise first_error
        raise SweepError(failures[0]["error"])
    plugins = [name for name, _plugin in pm.list_name_plugin()]
    kernels, combos, skipped = plan_combos(config, layouts, every_page=runs)
    plan = Plan(config, maps, va_bits, counts, layouts, fn, failures, plugins, kernels, combos,
                skipped)  # fmt: skip
    if listed <= KEEP_LISTED:  # forked workers inherit them: computed once per sweep
        plan.found = found
    return plan
