"""Byte counts as people read them, written once for every layer.

Two forms: ``"4.0 MiB"`` (:func:`human_size`, any count, rounded) and ``"512K"``
(:func:`short_size`, an exact multiple, in the suffixes :func:`sweep.core.memmap.parse_size`
reads back). ptdump's size column (``sweep.explain.size_text``) is a third form of its own.
"""

from __future__ import annotations

from sweep.core.memmap import SIZE_SUFFIXES

BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
"""The units of :func:`binary_scale`, each 1024 times the one before."""


def binary_scale(nbytes: float, largest: str = "TiB") -> tuple[float, str]:
    """``4214784`` -> ``(4.01953125, "MiB")``: the count in the first unit where it is below
    1024 (in magnitude), or in ``largest``."""
    value = float(nbytes)
    for unit in BINARY_UNITS[: BINARY_UNITS.index(largest)]:
        if abs(value) < 1024:
            return value, unit
        value /= 1024
    return value, largest


def human_size(nbytes: float, grouping: bool = False) -> str:
    """``4214784`` -> ``"4.0 MiB"``: sizes as people read them (whole bytes below 1 KiB);
    ``grouping`` separates thousands (``"1,000 B"``)."""
    value, unit = binary_scale(nbytes)
    sep = "," if grouping else ""
    return f"{value:{sep}.0f} {unit}" if unit == "B" else f"{value:{sep}.1f} {unit}"


def short_size(nbytes: int, largest: str = "P") -> str | None:
    """``524288`` -> ``"512K"``, ``1 << 30`` -> ``"1G"``: the largest suffix up to ``largest``
    that divides the count; None when none does (below 1K, or not a multiple of 1K)."""
    suffixes = [s for s in SIZE_SUFFIXES if s]
    for suffix in reversed(suffixes[: suffixes.index(largest) + 1]):
        unit = SIZE_SUFFIXES[suffix]
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return None
