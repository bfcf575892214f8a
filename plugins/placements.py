"""Where the idmap page goes: the ``[placement]`` kinds of docs/model.md section 8.

Each function gets the granule-trimmed banks ``(start, end)`` of one memory map, the granule, the
``[placement]`` table and a context naming the memory map, and returns candidate addresses as a
uint64 array, or a :class:`sweep.plan.placements.Progression` for a regular stride (counted and
sliced without being built); the plan aligns them down to the granule, deduplicates and sorts them.
Each kind registers a ``check(params)`` too, which the config calls before any map is read, so
a bad key or value is one line naming it. Errors name the memory map and the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from sweep import hookimpl
from sweep.core.errors import ValidationError
from sweep.core.memmap import bank_containing, granule_name, parse_address, parse_size
from sweep.plan.placements import MASK64, RUNS, Progression, splitmix64_stream

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
    "every-page": set(),
}


def _where(context: Mapping, granule: int) -> str:
    name = context.get("memory_map", "?")
    name = getattr(name, "name", name)
    return f"memory map {name!r} at {granule_name(granule)}"


def _keys(kind: str, params: Mapping) -> None:
    for key in params:
        if key != "kind" and key not in PARAMS[kind]:
            known = ", ".join(sorted(PARAMS[kind])) or "no other keys"
            raise ValidationError(
                f"placement.{key}: not a key of placement kind {kind!r} (it takes {known})"
            )


def _checked(check, params: Mapping, context: Mapping, granule: int):
    """``check(params)``'s result, its error prefixed with the map and granule."""
    try:
        return check(params)
    except ValidationError as exc:
        raise ValidationError(f"{_where(context, granule)}: {exc}") from None


def check_kernel_load(params: Mapping) -> None:
    _keys("kernel-load", params)


def check_every_page(params: Mapping) -> None:
    _keys("every-page", params)


def check_stride(params: Mapping) -> int:
    """The step in bytes: a positive multiple of 4 KiB (docs/model.md section 8)."""
    _keys("stride", params)
    if "step" not in params:
        raise ValidationError('placement.step: missing (stride needs step = "2M" or similar)')
    step = parse_size(params["step"], "placement.step")
    if step <= 0 or step % 4096:
        raise ValidationError(
            f"placement.step: {params['step']!r} is not a positive multiple of 4K"
        )
    return step


def check_random(params: Mapping) -> tuple[int, int]:
    """``(count, seed)``."""
    _keys("random", params)
    if "count" not in params:
        raise ValidationError("placement.count: missing (random needs count and seed)")
    count, seed = params["count"], params.get("seed", 0)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_ADDRESSES:
        raise ValidationError(
            f"placement.count: expected an integer 1..{MAX_ADDRESSES}, got {count!r}"
        )
    if "seed" not in params:  # no silent default: the seed is what makes the places repeatable
        raise ValidationError(
            "placement.seed: missing (random needs count and seed, e.g. seed = 1)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise ValidationError(f"placement.seed: expected an integer 0..2^64-1, got {seed!r}")
    return count, seed


def check_list(params: Mapping) -> list[tuple[object, int]]:
    """Each listed value with its address."""
    _keys("list", params)
    addresses = params.get("addresses")
    if isinstance(addresses, int | str):
        addresses = [addresses]
    if not isinstance(addresses, list) or not addresses:
        raise ValidationError(
            f"placement.addresses: expected a non-empty list of addresses, got {addresses!r}"
        )
    out = []
    for index, value in enumerate(addresses):
        address = parse_address(value, f"placement.addresses[{index}]")
        if address < 0:
            raise ValidationError(f"placement.addresses[{index}]: {value!r} is negative")
        out.append((value, address))
    return out


def kernel_load(
    banks: Sequence[tuple[int, int]], granule: int, params: Mapping, context: Mapping
) -> np.ndarray:
    """The lowest trimmed bank's base + ``TEXT_OFFSET``, where pre-5.8 kernels were loaded."""
    _checked(check_kernel_load, params, context, granule)
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
) -> Progression:
    """In every trimmed bank ``[b, e)``, each ``b + k * step < e``: a progression per bank,
    counted without being built."""
    step = _checked(check_stride, params, context, granule)
    counts = tuple(-(-(end - start) // step) for start, end in banks)
    return Progression(tuple(start for start, _ in banks), counts, step)


def every_page(
    banks: Sequence[tuple[int, int]], granule: int, params: Mapping, context: Mapping
) -> Progression:
    """Every granule page of every trimmed bank (the sweep writes them as runs,
    :mod:`sweep.model.runs`)."""
    _checked(check_every_page, params, context, granule)
    counts = tuple((end - start) // granule for start, end in banks)
    return Progression(tuple(start for start, _ in banks), counts, granule)


every_page.rows = RUNS  # its rows are runs of pages (sweep.plan.placements.writes_runs)


def random_addresses(
    banks: Sequence[tuple[int, int]], granule: int, params: Mapping, context: Mapping
) -> np.ndarray:
    """``count`` addresses uniform over the trimmed banks' bytes, reproducible from ``seed``.

    The k-th address is splitmix64's k-th output, seeded with the first 8 bytes (little-endian)
    of SHA-256 of ``sweep.placement.random``, seed, map name and granule (NUL-separated), taken
    modulo the banks' byte count and counted from the lowest bank up: every process, worker and
    resume gets the same addresses. Reducing a 64-bit draw modulo a count below 2^52 biases it
    by less than 2^-12.
    """
    return random_many([banks], granule, params, [context])[0]


def random_many(
    banks: Sequence[Sequence[tuple[int, int]]],
    granule: int,
    params: Mapping,
    contexts: Sequence[Mapping],
) -> np.ndarray:
    """:func:`random_addresses` of many maps at once, one row each (``(maps, count)``): a
    corpus of thousands of boards draws in a few numpy operations, not a call per map."""
    count, seed = _checked(check_random, params, contexts[0], granule)
    keys = []
    for context in contexts:
        name = context.get("memory_map")
        name = getattr(name, "name", name)
        if not isinstance(name, str):
            raise ValidationError(
                f"{_where(context, granule)}: placement random: the context names no memory"
                " map to seed from"
            )
        text = f"sweep.placement.random\0{seed}\0{name}\0{granule}"
        keys.append(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))
    # per map and bank: where the bank's bytes end among all the map's banks' bytes, and what
    # turns an offset among them into its address (mod 2^64: the uint64 sum wraps)
    width = max(len(b) for b in banks)
    ends = np.full((len(banks), width), MASK64, dtype=np.uint64)
    shifts = np.zeros((len(banks), width), dtype=np.uint64)
    totals = np.zeros(len(banks), dtype=np.uint64)
    for row, these in enumerate(banks):
        total = 0
        for column, (start, end) in enumerate(these):
            start, end = int(start), int(end)  # numpy integers too, as np.array(banks) took them
            shifts[row, column] = (start - total) & MASK64
            total += end - start
            ends[row, column] = total
        if not total:
            raise ValidationError(
                f"{_where(contexts[row], granule)}: placement random: no page of its banks is"
                " left at this granule"
            )
        totals[row] = total
    offsets = splitmix64_stream(np.array(keys, dtype=np.uint64)[:, None], count)
    offsets %= totals[:, None]
    if width == 1:  # maps of one bank: every offset is in it
        offsets += shifts
    else:
        bank = (offsets[:, :, None] >= ends[:, None, :]).sum(axis=2)
        offsets += np.take_along_axis(shifts, bank, axis=1)
    return offsets


random_addresses.many = random_many  # the plan draws a corpus's maps at once (placements_many)


def listed(
    banks: Sequence[tuple[int, int]], granule: int, params: Mapping, context: Mapping
) -> np.ndarray:
    """The ``addresses`` given; each must lie in a trimmed bank once aligned down to the granule."""
    where = _where(context, granule)
    out = []
    for index, (value, address) in enumerate(_checked(check_list, params, context, granule)):
        aligned = address // granule * granule
        if bank_containing(banks, aligned) is None:
            raise ValidationError(
                f"{where}: placement.addresses[{index}]: {value!r} ({aligned:#x} aligned) is not"
                " inside any trimmed bank"
            )
        out.append(aligned)
    return np.array(out, dtype=np.uint64)


@hookimpl
def register_placements(register):
    register("kernel-load", kernel_load, check=check_kernel_load)
    register("stride", stride, check=check_stride)
    register("random", random_addresses, check=check_random)
    register("list", listed, check=check_list)
    register("every-page", every_page, check=check_every_page)
