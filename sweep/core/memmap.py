"""The model's vocabulary: banks, memory maps, granules and the rules that check them.

Everything here is a literal reading of docs/model.md sections 1 and 2; the scalar reference and the
vectorized builder both take their definitions from this module, so a rule is written once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sweep.core.errors import ValidationError
from sweep.core.kconfig import (  # noqa: F401 (re-exported: the model's vocabulary)
    GRANULE_LIST,
    GRANULES,
    granule_name,
    level_shift,
    levels,
    min_block_level,
)
from sweep.core.text import control_characters

MAX_BANKS = 1 << 15
"""Banks one memory map may hold (README, "Resource contract"): real boards have a few, and a
row's memory and time grow with its map's banks."""
VA_BITS_MIN, VA_BITS_MAX = 32, 52
PA_LIMIT = 1 << 52
"""No DRAM may end above 2^52 (the largest physical address arm64 defines, with LPA/LPA2)."""

SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(0[xX][0-9a-fA-F_]+|[0-9][0-9_]*)\s*([KMGTP]?)(?:i?B)?\s*$", re.I)


def parse_size(value: int | str, what: str = "size") -> int:
    """Read a byte count written as an integer or a string such as ``"2G"``, ``"0x8000_0000"``."""
    if isinstance(value, bool):
        raise ValidationError(
            f"{what}: expected an integer or a size string like '2G', got {value!r}"
        )
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        _check_length(value, what)
        m = _SIZE_RE.match(value)
        if m:
            return int(m.group(1).replace("_", ""), 0) * SIZE_SUFFIXES[m.group(2).upper()]
    raise ValidationError(f"{what}: expected an integer or a size string like '2G', got {value!r}")


def _check_length(value: str, what: str) -> None:
    """No address or size is longer than this: a longer string is refused before ``int()``
    (which refuses more than 4,300 digits with a traceback)."""
    if len(value) > 80:
        raise ValidationError(
            f"{what}: {value[:24]!r}... ({len(value):,} characters) is no address or size"
        )


_HEX_DIGITS = re.compile(r"^[0-9a-fA-F_]*[a-fA-F][0-9a-fA-F_]*$")


def parse_address(value: int | str, what: str = "address") -> int:
    """Read an address: an integer, ``0x...``, a size string (``"2G"``), or hex digits as the
    kernel prints them (``"40eed000"``, read as hex). A string of decimal digits alone is
    ambiguous (``40000000`` in a kernel log is hex) and is refused, saying how to write it."""
    if isinstance(value, str):
        _check_length(value, what)
        text = value.strip()
        if _HEX_DIGITS.match(text):
            return int(text.replace("_", ""), 16)
        if text.replace("_", "").isdigit() and int(text.replace("_", "")) > 9:
            number = int(text.replace("_", ""))
            raise ValidationError(
                f"{what}: {value!r} could be hex (as the kernel prints addresses) or decimal;"
                f" write 0x{text} for hex, {number:#x} for the decimal {number:,},"
                " or a size such as 1G"
            )
    try:
        return parse_size(value, what)
    except ValidationError:
        raise ValidationError(
            f"{what}: expected an address such as 0x40eed000 (or 40eed000, as the kernel prints"
            f" it), got {value!r}"
        ) from None


def parse_granule(value: int | str) -> int:
    """A granule as bytes, from ``4096``, ``"4K"``, ``"16K"`` or ``"64K"``."""
    try:
        granule = parse_size(value, "granule")
    except ValidationError:
        raise ValidationError(f"granule: {value!r} is not one of {GRANULE_LIST}") from None
    if granule not in GRANULES:
        raise ValidationError(f"granule: {value!r} is not one of {GRANULE_LIST}")
    return granule


def va_bits_in_range(va_bits):
    """Whether ``VA_BITS_MIN <= va_bits <= VA_BITS_MAX``, for an int or a numpy array."""
    return (va_bits >= VA_BITS_MIN) & (va_bits <= VA_BITS_MAX)


def check_va_bits(va_bits: int) -> int:
    """``va_bits`` if it is an integer in range; else the one error every layer gives."""
    if isinstance(va_bits, bool) or not isinstance(va_bits, int) or not va_bits_in_range(va_bits):
        raise ValidationError(f"va_bits: {va_bits!r} is outside {VA_BITS_MIN}..{VA_BITS_MAX}")
    return va_bits


class Bank(NamedTuple):
    """One DRAM bank: ``size`` bytes from ``base``; a named tuple, so ``(base, size)`` equals it."""

    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size

    def __repr__(self) -> str:
        return f"Bank(base={self.base:#x}, size={self.size:#x})"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a memory map's name, or None: a name must be usable wherever maps
    are named, as a ``memory_maps=`` item and a ``memory_map=`` filter on the command line."""
    if not name or name != name.strip():
        return "must not be empty or begin or end with a space"
    if not name.isprintable():
        return "must not hold control characters"
    if "," in name:
        return "must not hold ',' (it separates values on the command line)"
    if name.startswith("family:"):
        return "must not begin with 'family:' (that selects a family of maps)"
    if any(c in name for c in "*?["):
        return "must not hold '*', '?' or '[' (they make it a glob)"
    return None


class MemoryMap:
    """A named list of DRAM banks, checked as docs/model.md section 1 asks."""

    def __init__(
        self,
        name: str,
        banks: Iterable[Bank | tuple[int, int]],
        description: str = "",
        source: str = "",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"memory map name: expected a non-empty string, got {name!r}")
        if control_characters(name):  # a name is printed: it must not drive the terminal
            raise ValidationError(
                f"memory map name {name!r}: has control characters (escapes, newlines); rename it"
            )
        self.name = name
        self.description = description
        self.source = source
        self.banks: list[Bank] = [_as_bank(name, i, b) for i, b in enumerate(banks)]
        if not self.banks:
            raise ValidationError(f"memory map {name!r}: has no banks")
        if len(self.banks) > MAX_BANKS:  # each row's cost grows with its map's banks
            raise ValidationError(
                f"memory map {name!r}: {len(self.banks):,} banks; a map holds at most"
                f" {MAX_BANKS:,} (merge adjacent banks, or split the map)"
            )
        ordered = sorted(self.banks, key=lambda b: b.base)
        for prev, nxt in zip(ordered, ordered[1:], strict=False):
            if nxt.base < prev.end:
                raise ValidationError(
                    f"memory map {name!r}: bank {_fmt(nxt)} overlaps bank {_fmt(prev)}"
                )

    def trimmed(self, granule: int) -> list[tuple[int, int]]:
        """Banks as ``(start, end)`` trimmed to whole granules, empties dropped, touching merged.

        memblock merges adjacent regions; the kernel maps only whole pages.
        """
        out: list[tuple[int, int]] = []
        for bank in sorted(self.banks, key=lambda b: b.base):
            start = -(-bank.base // granule) * granule
            end = bank.end // granule * granule
            if end <= start:
                continue
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
        if not out:
            raise ValidationError(
                f"memory map {self.name!r}: no bank is left after trimming to "
                f"{granule_name(granule)} granules"
            )
        return out

    def __repr__(self) -> str:
        return f"MemoryMap({self.name!r}, {list(self.banks)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MemoryMap) and (self.name, self.banks) == (other.name, other.banks)

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.banks)))


def _fmt(bank: Bank) -> str:
    return f"[{bank.base:#x}-{bank.end - 1:#x}]"


def _as_bank(name: str, index: int, bank: Bank | Sequence[int]) -> Bank:
    if not isinstance(bank, Bank):
        try:
            base, size = bank
        except (TypeError, ValueError):
            raise ValidationError(
                f"memory map {name!r}: bank {index} must be (base, size), got {bank!r}"
            ) from None
        bank = Bank(base, size)
    for field in ("base", "size"):
        value = getattr(bank, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(
                f"memory map {name!r}: bank {index} {field} must be an integer, got {value!r}"
            )
    if bank.base < 0:
        raise ValidationError(f"memory map {name!r}: bank {index} base {bank.base:#x} is negative")
    if bank.size <= 0:
        raise ValidationError(
            f"memory map {name!r}: bank {index} at {bank.base:#x} has size {bank.size},"
            " must be above 0"
        )
    if bank.end > PA_LIMIT:
        raise ValidationError(
            f"memory map {name!r}: bank {_fmt(bank)} ends above 2^52"
            f" ({bank.end:#x} > {PA_LIMIT:#x})"
        )
    return bank


def bank_containing(trimmed: Sequence[tuple[int, int]], address: int) -> tuple[int, int] | None:
    for start, end in trimmed:
        if start <= address < end:
            return start, end
    return None
