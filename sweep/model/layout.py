"""What a HYP VA layout is: the interface layout plugins implement (docs/model.md section 3).

A layout is called once per batch with every row of the batch that uses it, as numpy arrays
(each row with its own memory map, granule and VA_BITS), and returns for each row the alias
offset ``delta`` (``hyp(p) = p + delta``), the window it reserves and the HYP tree's
input-address size. The builder does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class LayoutBatch:
    """The inputs a layout may read, as numpy arrays: ``idmap_pa`` has one element per row;
    every other array one per row or a single element that all rows share (write the formulas
    with numpy operations and broadcasting handles both).

    Addresses, ``granule`` and ``va_bits`` are ``int64`` (every address of the model is below
    2^52); ``tag_random`` is the raw ``uint64`` the configuration carries.
    """

    granule: np.ndarray
    va_bits: np.ndarray
    idmap_pa: np.ndarray
    idmap_va_bits: np.ndarray
    phys_offset: np.ndarray
    dram_first: np.ndarray
    """Lowest clipped DRAM byte (``memblock_start_of_DRAM()``)."""
    dram_last: np.ndarray
    """Highest clipped DRAM byte (``high_memory - 1``)."""
    tag_random: np.ndarray


@dataclass(frozen=True)
class LayoutResult:
    """Per row: ``delta`` (int64, ``hyp(p) - p``), the window and ``tree_va_bits`` (int64
    arrays of the batch's length, or anything numpy broadcasts to it)."""

    delta: np.ndarray
    hyp_va_min: np.ndarray
    hyp_va_max: np.ndarray
    tree_va_bits: np.ndarray


@runtime_checkable
class Layout(Protocol):
    """A HYP VA layout algorithm; every layout names the kernel source it models.

    Optional attribute ``uses_tag_random`` (default False): the layout inserts random tag bits,
    so a sweep with a ``[tag] seed`` gives its rows a ``tag_random`` (docs/model.md section 8).
    """

    name: str
    source: str
    description: str

    def memstart_align(self, granule: int) -> int:
        """``ARM64_MEMSTART_ALIGN`` (bytes) of the kernels this layout models, at one granule."""
        ...

    def compute(self, batch: LayoutBatch) -> LayoutResult:
        """Aliases, window and tree size for every row of ``batch``."""
        ...


def compute_layouts(
    layouts: Sequence[Layout], layout_index: np.ndarray, batch: LayoutBatch
) -> LayoutResult:
    """docs/model.md section 3 for a batch of rows of several layouts: each layout is called once,
    with its own rows (all of them, without a copy, when the batch has one layout)."""
    n = len(batch.idmap_pa)
    if len(layout_index) == 1:  # one layout for all rows
        return _per_row(layouts[int(layout_index[0])].compute(batch), n)
    result = {f.name: np.empty(n, dtype=np.int64) for f in fields(LayoutResult)}
    for k, layout in enumerate(layouts):
        rows = np.flatnonzero(layout_index == k)
        if len(rows):
            part = LayoutBatch(
                **{f.name: _take(getattr(batch, f.name), rows) for f in fields(batch)}
            )
            for name, values in vars(_per_row(layout.compute(part), len(rows))).items():
                result[name][rows] = values
    return LayoutResult(**result)


def _take(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return values if len(values) == 1 else values[rows]


def _per_row(result: LayoutResult, n: int) -> LayoutResult:
    """A plugin's result as int64 arrays of ``n`` rows (it may broadcast shared values)."""
    return LayoutResult(
        **{
            f.name: np.broadcast_to(np.asarray(getattr(result, f.name), dtype=np.int64), (n,))
            for f in fields(LayoutResult)
        }
    )
