"""Where the idmap page goes: the ``[placement]`` kinds of MODEL.md section 8.

Each function gets the granule-trimmed banks ``(start, end)`` of one memory map, the granule, the
``[placement]`` table and a context naming the memory map, and returns candidate addresses as a
uint64 array; the driver aligns them down to the granule, deduplicates and sorts them. Errors
name the memory map and the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from sweep import hookimpl
from sweep.errors import ValidationError
from sweep.model import bank_containing, granule_name, parse_size

TEXT_OFFSET = 0x80000
"""Where the kernel image sat in its first bank before 5.8 (``arch/arm64/Makefile``: ``TEXT_OFFSET
:= 0x00080000``; removed by commit 120dc60d0bdb, "arm64: get rid of TEXT_OFFSET")."""
MAX_ADDRESSES = 1 << 27
"""A stride or count that would give more addresses per map and granule is a mistake (2 GiB of
uint64), caught before memory runs out."""
PARAMS = {
    "kernel-load": set(),
    "stride": {"step"},
    "random": {"count", "seed"},
    "list": {"addresses"},
}


def _where(context: Mapping, granule: int) -> str:
    name = context.get("memory_map", "?")
    name = getattr(name, "name", name)
    return f"memory map {name!r} at {granule_name(granule)}"


def _check_params(kind: str, params: Mapping, context: Mapping, granule: int) -> None:
    for key in params:
        if key != "kind" and key not in PARAMS[kind]:
            known = ", ".join(sorted(PARAMS[kind])) or "no other keys"
            raise ValidationError(
                f"{_where(context, granule)}: placement.{key}: not a key of placement kind"
                f" {kind!r} (it takes {known})"
            )


def kernel_load(
    banks: Sequence[tuple[int, int]], granule: int, params: Mapping, context: Mapping
) -> np.ndarray:
    """The lowest trimmed bank's base + ``TEXT_OFFSET``, where pre-5.8 kernels were loaded."""
    _check_params("kernel-load", params, context, granule)
    start, end = min(banks)
    address = start + TEXT_OFFSET
    if address // granule * granule + granule > end:
        raise ValidationError(
            f"{_where(context, granule)}: placement kernel-load: the lowest bank"
            f" [{start:#x}-{end - 1:#x}] is too small to hold a page at base + {TEXT_OFFSET:#x}"
        )
    return np.array([address], dtype=np.uint64)


def stride(
    banks: Sequence[tuple[int, int]], granule: int, params: Mapping, context: Mapping
) -> np.ndarray:
    """In every trimmed bank ``[b, e)``, each ``b + k * step < e``."""
    _check_params("stride", params, context, granule)
    where = _where(context, granule)
    if "step" not in params:
        raise ValidationError(
            f'{where}: placement.step: missing (stride needs step = "2M" or similar)'
        )
    try:
        step = parse_size(params["step"], "placement.step")
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None
    if step <= 0 or step % 4096:
        raise ValidationError(
            f"{where}: placement.step: {params['step']!r} is not a positive multiple of 4K"
        )
    count = sum(-(-(end - start) // step) for start, end in banks)
    if count > MAX_ADDRESSES:
        raise ValidationError(
            f"{where}: placement.step: {params['step']!r} gives {count} addresses, more than"
            f" {MAX_ADDRESSES}; use a larger step"
        )
    return np.concatenate([np.arange(start, end, step, dtype=np.uint64) for start, end in banks])


def random_addresses(
    banks: Sequence[tuple[int, int]], granule: int, params: Mapping, context: Mapping
) -> np.ndarray:
    """``count`` addresses uniform over the trimmed banks' bytes, reproducible from ``seed``.

    The stream is seeded by SHA-256 of (seed, memory map name, granule), not Python's ``hash()``
    (salted per process), and drawn with PCG64's raw output (whose stream numpy keeps stable), so
    every process, worker and resume gets the same addresses. Reducing a 64-bit draw modulo the
    byte count (below 2^52) biases it by less than 2^-12.
    """
    _check_params("random", params, context, granule)
    where = _where(context, granule)
    if "count" not in params:
        raise ValidationError(f"{where}: placement.count: missing (random needs count and seed)")
    count, seed = params["count"], params.get("seed", 0)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_ADDRESSES:
        raise ValidationError(
            f"{where}: placement.count: expected an integer 1..{MAX_ADDRESSES}, got {count!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValidationError(f"{where}: placement.seed: expected an integer >= 0, got {seed!r}")
    name = context.get("memory_map")
    name = getattr(name, "name", name)
    if not isinstance(name, str):
        raise ValidationError(
            f"{where}: placement random: the context names no memory map to seed from"
        )
    digest = hashlib.sha256(f"sweep.placement.random\0{seed}\0{name}\0{granule}".encode()).digest()
    bit_generator = np.random.PCG64(np.random.SeedSequence(int.from_bytes(digest, "big")))
    draws = bit_generator.random_raw(count).astype(np.uint64)
    starts = np.array([s for s, _ in banks], dtype=np.uint64)
    sizes = np.array([e - s for s, e in banks], dtype=np.uint64)
    ends_cumulative = np.cumsum(sizes)
    offsets = draws % ends_cumulative[-1]
    index = np.searchsorted(ends_cumulative, offsets, side="right")
    return starts[index] + offsets - (ends_cumulative[index] - sizes[index])


def listed(
    banks: Sequence[tuple[int, int]], granule: int, params: Mapping, context: Mapping
) -> np.ndarray:
    """The ``addresses`` given; each must lie in a trimmed bank once aligned down to the granule."""
    _check_params("list", params, context, granule)
    where = _where(context, granule)
    addresses = params.get("addresses")
    if isinstance(addresses, int | str):
        addresses = [addresses]
    if not isinstance(addresses, list) or not addresses:
        raise ValidationError(
            f"{where}: placement.addresses: expected a non-empty list of addresses,"
            f" got {addresses!r}"
        )
    out = []
    for index, value in enumerate(addresses):
        try:
            address = parse_size(value, f"placement.addresses[{index}]")
        except ValidationError as exc:
            raise ValidationError(f"{where}: {exc}") from None
        aligned = address // granule * granule
        if address < 0 or bank_containing(banks, aligned) is None:
            raise ValidationError(
                f"{where}: placement.addresses[{index}]: {value!r} ({aligned:#x} aligned) is not"
                " inside any trimmed bank"
            )
        out.append(aligned)
    return np.array(out, dtype=np.uint64)


@hookimpl
def register_placements(register):
    register("kernel-load", kernel_load)
    register("stride", stride)
    register("random", random_addresses)
    register("list", listed)
