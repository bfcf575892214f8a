"""Building one work unit's rows in a worker: the plan's inputs through the builder.

A unit's rows may span hundreds of maps, layouts and block settings; they go to the builder as
one batch of index arrays (``build_table``), so a many-map sweep costs per row, not per group.
What a unit is and how the sweep is cut lives in :mod:`sweep.plan.units`; placements and tags in
:mod:`sweep.plan.placements`; every-page runs in :mod:`sweep.model.runs`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from sweep.model import builder
from sweep.model.runs import BATCH_CELLS, Group, runs_table, runs_tables
from sweep.plan.placements import tag_hash
from sweep.plan.units import ALGORITHM_VERSION, Plan, Unit, make_plan

__all__ = [
    "ALGORITHM_VERSION",
    "BUILD_BATCH_ROWS",
    "Plan",
    "Unit",
    "make_plan",
    "unit_rows",
    "unit_table",
]

BUILD_BATCH_ROWS = 1 << 20
"""Rows the builder is given at once (a default unit is one batch, so its columns are whole
arrays); the builder computes them ``sweep.model.builder.CHUNK_ROWS`` at a time, so its scratch
arrays stay small whatever ``unit_rows`` is; only the finished columns add up."""


def batch_rows(maps: list) -> int:
    """Rows per builder call: ``BUILD_BATCH_ROWS``, fewer for maps of many banks, whose rows
    each take an element per bank in the builder's scratch arrays (``BATCH_CELLS`` in all)."""
    banks = max((len(m.banks) for m in maps), default=1)
    return max(1, min(BUILD_BATCH_ROWS, BATCH_CELLS // max(1, banks)))


def unit_table(plan: Plan, unit: Unit) -> pa.Table:
    """Every row of a unit, in order (runs of pages for ``every-page``)."""
    if plan.runs:
        return unit_runs(plan, unit)
    maps = plan.map_list
    # docs/model.md section 8: only rows of a layout that inserts a random tag get tag_random.
    tagged = np.array([getattr(x, "uses_tag_random", False) for x in plan.layouts], dtype=bool)
    prefixes = plan.decoder.tag_prefixes(unit.granule, unit.va_bits)
    tables = []
    step = batch_rows(maps)
    for start in range(unit.start, unit.stop, step):
        rows = plan.decoder.unit_inputs(unit, start, min(start + step, unit.stop))
        tags = None
        if plan.config.tag_seed and tagged.any():
            if rows.listed is not None:  # each listed page's tag, hashed once
                tags = plan.decoder.listed_tags(unit.granule, unit.va_bits)[rows.listed]
            else:
                tags = tag_hash(rows.idmap_pa, prefixes[rows.map_index])
            tags[~tagged[rows.layout_index]] = 0
        tables.append(
            builder.build_table(
                maps,
                rows.map_index,
                unit.granule,
                unit.va_bits,
                plan.layouts,
                rows.layout_index,
                rows.block_mappings,
                rows.idmap_pa,
                tags,
                mappings=rows.mappings,
                cpus=rows.cpus,
                kernels=plan.kernels,
                kernel_index=rows.kernel_index,
            )
        )
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables).unify_dictionaries()


def unit_rows(plan: Plan, unit: Unit) -> pa.Table | Iterator[pa.Table]:
    """Every row of a unit, in order: one table, or for ``every-page`` a stream of tables of
    runs (``sweep.model.runs.runs_tables``), so that a unit of any size is never held whole."""
    if plan.runs:
        return runs_tables(unit_groups(plan, unit))
    return unit_table(plan, unit)


def unit_runs(plan: Plan, unit: Unit) -> pa.Table:
    """The runs of every (map, layout, block setting) whose rows the unit covers, in order,
    computed together (``runs_table``): a unit of many small maps shares builder calls."""
    return runs_table(unit_groups(plan, unit))


def unit_groups(plan: Plan, unit: Unit) -> list[Group]:
    """The (map, layout, block setting) groups whose runs an every-page unit holds, in order."""
    maps, combos = plan.map_list, plan.combos[unit.granule]
    return [
        Group(maps[m], unit.granule, unit.va_bits, plan.layouts[combos.layout_index[c]],
              bool(combos.block_mappings[c]))
        for m, c in plan.decoder.unit_groups(unit)
    ]  # fmt: skip
