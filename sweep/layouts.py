"""What a HYP VA layout is: the interface layout plugins implement (MODEL.md section 3).

A layout sees one group of rows that share memory map, granule and VA_BITS, as numpy arrays,
and returns for each row the alias offset ``delta`` (``hyp(p) = p + delta``), the window it
reserves and the HYP tree's input-address size. The builder does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class LayoutBatch:
    """The inputs a layout may read, one array element per row (all arrays of equal length).

    Addresses are ``int64`` (every address of the model is below 2^52); ``tag_random`` is the raw
    ``uint64`` the configuration carries. ``idmap_pa``, ``idmap_va_bits`` and ``tag_random`` have
    one element per row; ``phys_offset``, ``dram_first`` and ``dram_last`` have one per row or,
    when the rows share the clipped DRAM, a single element (numpy broadcasting handles both).
    """

    granule: int
    va_bits: int
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
    """Per row: ``delta`` (int64, ``hyp(p) - p``), the window (uint64) and ``tree_va_bits``."""

    delta: np.ndarray
    hyp_va_min: np.ndarray
    hyp_va_max: np.ndarray
    tree_va_bits: np.ndarray


@runtime_checkable
class Layout(Protocol):
    """A HYP VA layout algorithm; every layout names the kernel source it models.

    Optional attribute ``uses_tag_random`` (default False): the layout inserts random tag bits,
    so a sweep with a ``[tag] seed`` gives its rows a ``tag_random`` (MODEL.md section 8).
    """

    name: str
    source: str
    description: str

    def memstart_align(self, granule: int) -> int:
        """``ARM64_MEMSTART_ALIGN`` (bytes) of the kernels this layout models."""
        ...

    def compute(self, batch: LayoutBatch) -> LayoutResult:
        """Aliases, window and tree size for every row of ``batch``."""
        ...
