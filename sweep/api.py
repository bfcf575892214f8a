"""The Python interface of docs/model.md section 8: ``sweep.build`` on pandas frames, by names.

Here names become objects: a row's ``memory_map`` is looked up among the maps given, its
``layout`` among the layouts given (the registered plugins' by default); then the builder
computes on codes. Categorical columns are read and written through their codes, so no step
costs a Python object per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from sweep.core.columns import INPUT_COLUMNS, ROW_COLUMNS
from sweep.core.eras import resolve
from sweep.core.errors import ValidationError
from sweep.core.memmap import Bank, MemoryMap
from sweep.model.banks import TrimmedBanks
from sweep.model.bootrows import MAPPING_SETS
from sweep.model.builder import CODED, compute_columns
from sweep.model.layout import Layout
from sweep.model.rows import Rows, full
from sweep.plan.kernels import load_kernels

OPTIONAL = ("tag_random", "mappings", "cpus", "kernel")
"""Inputs ``build`` fills when absent: no tag, all of DRAM."""


def build(
    configs: pd.DataFrame,
    memory_maps: Mapping[str, MemoryMap | Sequence[Bank | tuple[int, int]]],
    layouts: Mapping[str, Layout] | None = None,
) -> pd.DataFrame:
    """One result row per configuration row, same order and index (docs/model.md section 8)."""
    missing = [c for c in INPUT_COLUMNS if c not in configs.columns and c not in OPTIONAL]
    if missing:
        raise ValidationError(f"configs: missing column(s) {', '.join(missing)}")
    if layouts is None:
        from sweep.plan.plugins import get_layouts  # lazy: plugins load only when needed

        layouts = get_layouts()
    map_codes, map_names = _codes(configs["memory_map"])
    maps = [_memory_map(name, memory_maps) for name in map_names]
    layout_codes, layout_names = _codes(configs["layout"])
    # an era's old name is the era's: codes of two names of one era become one
    canonical = list(dict.fromkeys(resolve(name) for name in layout_names))
    if canonical != layout_names:  # (``_codes`` refused missing values: every code is >= 0)
        remap = np.array([canonical.index(resolve(name)) for name in layout_names], np.int64)
        layout_codes = remap.take(layout_codes)
    else:
        layout_codes = layout_codes.copy()  # the result's own codes, not the caller's
    layout_names = canonical
    chosen = [_layout(name, layouts) for name in layout_names]
    tags = _integers(configs, "tag_random") if "tag_random" in configs else None
    boot = _boot_inputs(configs)
    rows = Rows.of(
        maps,
        map_codes,
        _integers(configs, "granule"),
        _integers(configs, "va_bits"),
        chosen,
        layout_codes,
        configs["block_mappings"].to_numpy(),
        _integers(configs, "idmap_pa"),
        tags,
        **boot,
    )
    columns = compute_columns(TrimmedBanks.of(maps), chosen, rows, boot["kernels"])
    n = len(rows)
    inputs = {
        "memory_map": pd.Categorical.from_codes(map_codes, map_names),
        "granule": full(rows.granule, n, np.int32),
        "va_bits": full(rows.va_bits, n, np.int8),
        "layout": pd.Categorical.from_codes(layout_codes, layout_names),
        "block_mappings": full(rows.block_mappings, n, bool),
        "idmap_pa": rows.idmap_pa.view(np.uint64),
        "tag_random": full(rows.tag_random, n, np.uint64),
        "mappings": pd.Categorical.from_codes(full(rows.mappings, n, np.int8), MAPPING_SETS),
        "cpus": full(rows.cpus, n, np.int16),
        "kernel": pd.Categorical.from_codes(
            full(rows.kernel_index, n, np.int32) + 1, ["", *(k.name for k in boot["kernels"])]
        ),
    }
    for name, names in CODED.items():
        columns[name] = pd.Categorical.from_codes(columns[name], names)
    frame = {name: inputs[name] if name in inputs else columns[name] for name in ROW_COLUMNS}
    return pd.DataFrame(frame, index=configs.index, copy=False)


def build_row(
    memory_map: MemoryMap,
    granule: int,
    va_bits: int,
    layout: str,
    block_mappings: bool,
    idmap_pa: int,
    tag_random: int = 0,
    layouts: Mapping[str, Layout] | None = None,
) -> dict:
    """One configuration through ``build``, as plain Python values (for explain, verify-boot)."""
    config = pd.DataFrame(
        {
            "memory_map": [memory_map.name],
            "granule": [granule],
            "va_bits": [va_bits],
            "layout": [layout],
            "block_mappings": [block_mappings],
            "idmap_pa": np.array([idmap_pa], dtype=np.uint64),
            "tag_random": np.array([tag_random], dtype=np.uint64),
        }
    )
    out = build(config, {memory_map.name: memory_map}, layouts)
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in out.iloc[0].items()}


def _boot_inputs(configs: pd.DataFrame) -> dict:
    """Section 10's optional inputs: ``mappings`` (names; all-dram when absent), ``cpus`` and
    ``kernel`` (a shipped release or a profile file, for boot-set rows)."""
    if "mappings" not in configs:
        return {"mappings": 0, "cpus": 0, "kernels": (), "kernel_index": -1}
    codes, names = _codes(configs["mappings"])
    unknown = [x for x in names if x not in MAPPING_SETS]
    if unknown:
        raise ValidationError(f"mappings: {unknown[0]!r} is not one of {', '.join(MAPPING_SETS)}")
    mappings = np.array([MAPPING_SETS.index(x) for x in names], np.int8)[codes]
    cpus = _integers(configs, "cpus") if "cpus" in configs else 0
    kernels, index = [], np.full(len(configs), -1, np.int64)
    if "kernel" in configs and (mappings != 0).any():
        k_codes, k_names = _codes(configs["kernel"].fillna("").astype(str))
        wanted = [x for x in k_names if x]
        kernels = load_kernels(wanted, "kernel")
        by_name = {x: i for i, x in enumerate(wanted)}
        index = np.array([by_name.get(x, -1) for x in k_names], np.int64)[k_codes]
    return {"mappings": mappings, "cpus": cpus, "kernels": kernels, "kernel_index": index}


def _codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and the names they stand for: a categorical's own, else factorized."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes, names = column.cat.codes.to_numpy(), column.cat.categories
    else:
        codes, names = pd.factorize(column, use_na_sentinel=True)
    if (codes < 0).any():
        raise ValidationError(f"{column.name}: missing value in row {int(np.argmax(codes < 0))}")
    return codes, [str(name) for name in names]


def _memory_map(name: str, memory_maps: Mapping) -> MemoryMap:
    if name not in memory_maps:
        raise ValidationError(f"memory_map: {name!r} is not among the memory maps given")
    memory_map = memory_maps[name]
    if not isinstance(memory_map, MemoryMap):  # plain banks: [(base, size), ...]
        memory_map = MemoryMap(name, memory_map)
    return memory_map


def _layout(name: str, layouts: Mapping[str, Layout]) -> Layout:
    if name not in layouts:
        raise ValidationError(f"layout: {name!r} is not one of {', '.join(sorted(layouts))}")
    return layouts[name]


def _integers(configs: pd.DataFrame, name: str) -> np.ndarray:
    column = configs[name]
    values = column.to_numpy()
    if values.dtype.kind in "iu":
        return values
    try:  # object columns of Python ints (e.g. above 2^63)
        return np.array([int(x) for x in values], dtype=np.uint64)
    except (TypeError, ValueError, OverflowError):
        raise ValidationError(f"{name}: expected integers, got dtype {column.dtype}") from None
