"""A layout plugin's answer checked against docs/model.md section 3 before it becomes a row.

A layout's ``compute`` returns per row the alias offset ``delta``, the window and the tree's
input size. Whatever it returns (floats, NaN, numbers past 2^63, a window upside down, an alias
off its page) is refused here in one line naming the field, the first bad row and the rule, so a
plugin's mistake fails its unit instead of writing ``levels = 110``.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from sweep.model.layout import LayoutBatch, LayoutResult

MIN_TREE_VA_BITS, MAX_TREE_VA_BITS = 25, 52
"""The smallest input size a tree of one or more levels has at every granule (Arm's largest
``T0SZ`` of 39), and the largest the architecture gives (LPA2, LVA)."""


class LayoutOutputError(ValueError):
    """A layout's result breaks section 3; the message names the field and the first bad row."""


def as_int64(name: str, values: object, n: int) -> np.ndarray:
    """``values`` as ``n`` int64 numbers, or a :class:`LayoutOutputError` saying why not."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LayoutOutputError(f"{name} is not an array of integers ({exc})") from None
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array)) | (np.abs(array) >= 2.0**63)
        if bad.any():
            raise LayoutOutputError(f"{name} is {_first(array, bad)}: not an integer")
    elif array.dtype.kind == "u":
        if (array > np.iinfo(np.int64).max).any():
            raise LayoutOutputError(f"{name} holds a value past 2^63")
    elif array.dtype.kind == "O":
        try:
            array = np.array([int(v) for v in array.ravel()], dtype=np.int64).reshape(array.shape)
        except (TypeError, ValueError, OverflowError) as exc:
            raise LayoutOutputError(f"{name} is not an array of int64 integers ({exc})") from None
    elif array.dtype.kind != "i":
        raise LayoutOutputError(f"{name} has dtype {array.dtype}, not integers")
    try:
        return np.broadcast_to(array.astype(np.int64), (n,))
    except ValueError:
        raise LayoutOutputError(f"{name} has shape {array.shape}, not {n} rows") from None


def check_layout_result(result: object, batch: LayoutBatch) -> LayoutResult:
    """``result`` as int64 arrays of the batch's rows, if it keeps section 3's rules: the tree
    holds the idmap and the window (``tree_va_bits`` from ``max(25, idmap_va_bits)`` to 52), the
    window is granule-aligned and not upside down, ``delta`` moves pages to pages and every
    alias of DRAM lies in the tree."""
    if not isinstance(result, LayoutResult):
        raise LayoutOutputError(f"compute returned {type(result).__name__}, not a LayoutResult")
    n = len(batch.idmap_pa)
    r = {f.name: as_int64(f.name, getattr(result, f.name), n) for f in fields(LayoutResult)}
    granule = np.asarray(batch.granule, dtype=np.int64)
    bits = r["tree_va_bits"]
    low = np.maximum(MIN_TREE_VA_BITS, batch.idmap_va_bits)
    _require(bits, (bits >= low) & (bits <= MAX_TREE_VA_BITS), "tree_va_bits", "is outside "
             f"[max({MIN_TREE_VA_BITS}, idmap_va_bits), {MAX_TREE_VA_BITS}]")  # fmt: skip
    top = np.left_shift(np.int64(1), np.clip(bits, 0, 62)) - 1
    lo, hi, delta = r["hyp_va_min"], r["hyp_va_max"], r["delta"]
    _require(lo, (lo >= 0) & (lo <= hi), "hyp_va_min", "is negative or above hyp_va_max")
    _require(hi, hi <= top, "hyp_va_max", "is past the tree (2^tree_va_bits - 1)")
    aligned = (lo % granule == 0) & ((hi + 1) % granule == 0)
    _require(lo, aligned, "hyp_va_min", "and hyp_va_max + 1 must be multiples of the granule")
    _require(delta, delta % granule == 0, "delta", "is not a multiple of the granule")
    first = batch.dram_first.astype(np.int64) + delta
    last = batch.dram_last.astype(np.int64) + delta
    inside = (first >= 0) & (last <= top) & (first <= last)
    _require(delta, inside, "delta", "puts DRAM's aliases outside the tree [0, 2^tree_va_bits)")
    return LayoutResult(**r)


def check_memstart_align(value: object, granule: int) -> int:
    """``ARM64_MEMSTART_ALIGN``: a power of two from the granule to 2^52 bytes."""
    if isinstance(value, np.integer):
        value = int(value)
    if type(value) is not int or not granule <= value <= 1 << 52 or value & (value - 1):
        raise LayoutOutputError(
            f"memstart_align({granule}) returned {value!r:.60}: not a power of two from the"
            " granule to 2^52"
        )
    return value


def _require(values: np.ndarray, ok: np.ndarray, name: str, rule: str) -> None:
    if not np.all(ok):
        bad = ~np.broadcast_to(ok, values.shape)
        raise LayoutOutputError(f"{name} {rule} (row {int(np.argmax(bad))}: {_first(values, bad)})")


def _first(values: np.ndarray, bad: np.ndarray) -> str:
    value = values.ravel()[int(np.argmax(bad.ravel()))]
    return f"{value:#x}" if values.dtype.kind in "iu" and value >= 0 else repr(value.item())
