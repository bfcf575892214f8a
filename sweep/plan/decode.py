"""Decoding a unit in a worker: its row numbers back into section 1 inputs, by arithmetic.

``sweep.plan.units`` cuts a sweep into units (the parent's job); a worker turns a unit's rows
``[start, stop)`` into index arrays for the builder: the map (from the plan's row offsets), the
combination (``sweep.plan.combos``), the placement (a listed address or a progression's term)
and the tag prefix. What it computes once (placements, listed addresses, tag prefixes) it keeps
in its own cache, per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sweep.plan.placements import (
    ListedPlacements,
    Placements,
    placements,
    placements_many,
    tag_hash,
    tag_prefixes,
)

if TYPE_CHECKING:  # the plan holds its decoder; only the type is needed here
    from sweep.plan.units import Plan, Unit


@dataclass
class UnitInputs:
    """The section 1 inputs of a unit's rows, as index arrays into the plan's lists."""

    map_index: np.ndarray  # int64, into Plan.map_list
    layout_index: np.ndarray  # int64, into Plan.layouts
    block_mappings: np.ndarray  # bool
    idmap_pa: np.ndarray  # uint64
    mappings: np.ndarray | int = 0  # int8, into sweep.model.bootrows.MAPPING_SETS
    cpus: np.ndarray | int = 0
    kernel_index: np.ndarray | int = -1  # into Plan.kernels
    listed: np.ndarray | None = None
    """Each row's place among its granule's listed addresses (``UnitDecoder.listed_tags``),
    when every row's address is listed; else None."""


class UnitDecoder:
    """A plan's units as inputs (one per process; the plan makes it, ``Plan.decoder``)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._cache: dict = {("placements", g): ps for g, ps in plan.found.items()}

    def placements_of(self, granule: int) -> list[Placements | None]:
        """Each map's placements at ``granule``, computed once per process (None where the
        plugin failed at planning: that map has no rows)."""
        key = ("placements", granule)
        if key not in self._cache:
            plan, kind = self.plan, self.plan.config.placement["kind"]
            planned = [plan.counts.get((name, granule)) for name in plan.memory_maps]
            maps = list(plan.memory_maps.values())
            drawn = None
            if all(planned):  # no map failed at planning: drawn at once if the plugin can
                drawn = placements_many(maps, granule, plan.placement_fn, plan.config.placement)
            self._cache[key] = drawn or [
                placements(m, granule, kind, plan.placement_fn, plan.config.placement)
                if size
                else None
                for m, size in zip(maps, planned, strict=True)
            ]
        return self._cache[key]

    def _listed(self, granule: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Every listed map's addresses in one array with each map's offset into it, and the
        maps whose placements are progressions (sliced by arithmetic instead)."""
        key = ("listed", granule)
        if key not in self._cache:
            found = self.placements_of(granule)
            arrays = [p.addresses if isinstance(p, ListedPlacements) else None for p in found]
            sizes = [0 if a is None else len(a) for a in arrays]
            flat = np.concatenate([a for a in arrays if a is not None] or [[]]).astype(np.uint64)
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            strided = [m for m, p in enumerate(found) if p is not None and arrays[m] is None]
            self._cache[key] = (flat, offsets, strided)
        return self._cache[key]

    def unit_inputs(self, unit: Unit, start: int | None = None, stop: int | None = None):
        """The inputs of rows ``[start, stop)`` of ``unit`` (all of them by default), decoded
        from the row numbers by arithmetic: map, layout, block setting, placement."""
        g = unit.granule
        start = unit.start if start is None else start
        stop = unit.stop if stop is None else stop
        offsets = self.plan.map_row_offsets(g)
        found = groups_in(offsets, self.plan._placement_counts(g), len(self.plan.combos[g]),
                          start, stop)  # fmt: skip
        if len(found.maps) * SEGMENT_ROWS <= stop - start:
            return self._segment_inputs(g, found, stop - start)
        # many small groups: each group's values repeated over its rows, no search a row
        sizes = found.hi - found.lo
        row = np.arange(start, stop, dtype=np.int64)
        map_index = np.repeat(found.maps, sizes)
        combo = np.repeat(found.combos, sizes)
        placement = row - np.repeat(found.begins, sizes)
        flat, listed_offsets, strided = self._listed(g)
        listed = None
        if len(flat):
            listed = np.minimum(listed_offsets[map_index] + placement, len(flat) - 1)
            idmap = flat[listed]
        else:
            idmap = np.zeros(len(row), dtype=np.uint64)
        if strided:
            places = self.placements_of(g)
            for m in strided:  # maps are contiguous row ranges
                lo, hi = np.searchsorted(row, offsets[m : m + 2]).tolist()
                if hi > lo:
                    idmap[lo:hi] = places[m].take(placement[lo:hi])
        c = self.plan.combos[g].take(combo)
        return UnitInputs(
            map_index, c["layout_index"], c["block_mappings"], idmap,
            c["mappings"], c["cpus"], c["kernel_index"], None if strided else listed,
        )  # fmt: skip

    def unit_groups(self, unit: Unit) -> list[tuple[int, int]]:
        """The every-page groups of ``unit`` as ``(map, combination)``, in row order: those
        whose first row it holds (its cuts fall between groups, ``Plan._cuts``)."""
        g = unit.granule
        found = groups_in(self.plan.map_row_offsets(g), self.plan._placement_counts(g),
                          len(self.plan.combos[g]), unit.start, unit.stop)  # fmt: skip
        first = found.begins >= unit.start
        return list(zip(found.maps[first].tolist(), found.combos[first].tolist(), strict=True))

    def _segment_inputs(self, granule: int, found: Groups, rows: int) -> UnitInputs:
        """A unit's inputs from its groups (map, combination, rows ``[lo, hi)``): a few long
        runs, each filled at once."""
        places, combos = self.placements_of(granule), self.plan.combos[granule]
        map_index = np.empty(rows, dtype=np.int64)
        inputs = {name: np.empty(rows, dtype=v.dtype) for name, v in vars(combos).items()}
        idmap = np.empty(rows, dtype=np.uint64)
        at = 0
        fields = (found.maps, found.combos, found.begins, found.lo, found.hi)
        for m, combo, begin, lo, hi in zip(*(a.tolist() for a in fields), strict=True):
            part = slice(at, at + hi - lo)
            map_index[part] = m
            for name, value in combos.take(combo).items():
                inputs[name][part] = value
            idmap[part] = places[m].range(lo - begin, hi - begin)
            at += hi - lo
        return UnitInputs(map_index=map_index, idmap_pa=idmap, **inputs)

    def listed_tags(self, granule: int, va_bits: int) -> np.ndarray:
        """``tag_random`` of each listed address at ``granule`` (``UnitInputs.listed``), once
        per worker and partition: a map's pages recur in every combination of it."""
        key = ("listed tags", granule, va_bits)
        if key not in self._cache:
            flat, offsets, _ = self._listed(granule)
            owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            self._cache[key] = tag_hash(flat, self.tag_prefixes(granule, va_bits)[owner])
        return self._cache[key]

    def tag_prefixes(self, granule: int, va_bits: int) -> np.ndarray:
        """Each map's ``tag_prefix`` (0 for seed 0), once per worker and partition."""
        key = ("tags", granule, va_bits)
        if key not in self._cache:
            seed, names = self.plan.config.tag_seed, list(self.plan.memory_maps)
            self._cache[key] = (
                tag_prefixes(seed, names, granule, va_bits)
                if seed
                else np.zeros(len(names), dtype=np.uint64)
            )
        return self._cache[key]


SEGMENT_ROWS = 1024
"""Rows a unit's (map, combination) groups must average for its inputs to be filled group by
group rather than decoded row by row."""


@dataclass(frozen=True)
class Groups:
    """The (map, combination) groups a range of rows meets, in row order, as arrays."""

    maps: np.ndarray
    combos: np.ndarray
    begins: np.ndarray
    """Each group's first row (its placement 0)."""
    lo: np.ndarray
    hi: np.ndarray
    """The group's rows ``[lo, hi)`` inside the range."""


def groups_in(
    offsets: np.ndarray, counts: np.ndarray, combos: int, start: int, stop: int
) -> Groups:
    """The groups that rows ``[start, stop)`` of a partition meet. Rows are numbered by map,
    then combination, then placement (``sweep.plan.units``): group ``(m, c)`` holds the
    ``counts[m]`` rows from ``offsets[m] + c * counts[m]``."""
    first = int(np.searchsorted(offsets, start, side="right")) - 1
    last = int(np.searchsorted(offsets, stop - 1, side="right")) - 1
    maps = np.arange(first, last + 1)
    n = counts[maps]
    begins = (offsets[maps, None] + np.arange(combos) * n[:, None]).reshape(-1)
    lo = np.maximum(begins, start)
    hi = np.minimum(begins + np.repeat(n, combos), stop)
    met = hi > lo
    m, c = np.repeat(maps, combos), np.tile(np.arange(combos), len(maps))
    return Groups(m[met], c[met], begins[met], lo[met], hi[met])
