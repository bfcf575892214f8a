"""Memory maps from files, so that a new board needs no Python (docs/model.md section 8).

``load_memory_map(path)`` tells the kinds apart by content, not only by suffix:

- a memory-map TOML file (``name``, ``description``, ``source``, ``[[banks]]`` ``base``/``size``);
- a flattened device tree blob (``0xd00dfeed``; e.g. ``/sys/firmware/fdt`` copied off a board):
  the ``reg`` of every memory node;
- device tree source (``/dts-v1/;``), compiled with ``dtc`` when it is installed;
- a ``/proc/iomem`` dump: its top-level (unindented) ``System RAM`` lines;
- a kernel boot log: the ``Early memory node ranges`` it prints (``mm/mm_init.c``).

A file whose suffix claims one kind but whose content is another is an error, and so is every
rule of docs/model.md section 1 a bank breaks: each error is one line naming the file, the line or
node, and the rule.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from sweep.core.errors import ValidationError
from sweep.core.memmap import (
    MAX_BANKS,
    PA_LIMIT,
    Bank,
    MemoryMap,
    name_problem,
    parse_address,
    parse_size,
)
from sweep.formats import fdt
from sweep.formats.bootlog import memory_node_blocks
from sweep.formats.files import after_comments, decode_text, load_toml, origin_of, read_input
from sweep.formats.memblock import merge_overlapping

KINDS = ("toml", "dtb", "dts", "iomem", "bootlog")
KIND_NAMES = {
    "toml": "a memory-map TOML file",
    "dtb": "a flattened device tree blob",
    "dts": "device tree source",
    "iomem": "a /proc/iomem dump",
    "bootlog": "a kernel boot log",
}
SUFFIX_KINDS = {
    ".toml": "toml",
    ".dtb": "dtb",
    ".fdt": "dtb",
    ".dts": "dts",
    ".iomem": "iomem",
    ".log": "bootlog",
}
"""Suffixes that claim a kind; any other suffix (``.txt``, none) is read by content alone."""

TOML_KEYS = {"name", "description", "source", "platform", "banks"}
"""``platform``: optional, the board as the source table names it (the built-in boards use it)."""
BANK_KEYS = {"base", "size"}
MAX_FILE_BYTES = 64 << 20
MEMORY_MAP_FILE = "memory-map file"  # what read_input's errors call it, whoever reads it
MAX_DTB_BYTES = 2 << 20  # arm64's MAX_FDT_SIZE (asm/boot.h): no kernel boots a larger blob
DTB_TOO_BIG = "arm64 Linux boots a device tree blob of at most 2 MiB (MAX_FDT_SIZE, asm/boot.h)"

log = logging.getLogger(__name__)


class _Located(NamedTuple):
    """A bank with where it was read (``line 7``, ``node /memory@0 reg entry 1``, a _BankLine)."""

    base: int
    size: int
    where: object


def load_memory_map(path: str | Path, data: bytes | None = None) -> MemoryMap:
    """Read a memory map from a file of any supported kind, told apart by its content.

    ``-`` reads standard input (the map is named ``stdin`` unless its content names it);
    ``data``: its bytes, if read already (``read_input`` of a ``MEMORY_MAP_FILE``)."""
    origin = origin_of(path)
    data = read_input(path, MEMORY_MAP_FILE, MAX_FILE_BYTES) if data is None else data
    path = Path("stdin") if origin == "<stdin>" else path if isinstance(path, Path) else Path(path)
    kind = detect_kind(data)
    claimed = SUFFIX_KINDS.get(path.suffix.lower())
    if not data.strip():
        what = KIND_NAMES[claimed] if claimed else "a memory map"
        raise ValidationError(f"{origin}: the file is empty (expected {what})")
    if claimed and kind and kind != claimed:
        raise ValidationError(
            f"{origin}: named as {KIND_NAMES[claimed]} ({path.suffix}), but its content is"
            f" {KIND_NAMES[kind]}"
        )
    kind = kind or claimed
    if kind is None:
        raise ValidationError(
            f"{origin}: unknown kind of memory-map file: not TOML, a device tree (blob or source),"
            " a /proc/iomem dump or a kernel boot log"
        )
    if kind == "dtb":
        if len(data) > MAX_DTB_BYTES:  # refused unparsed: a parse takes 20x its size
            raise ValidationError(f"{origin}: {len(data):,} bytes; {DTB_TOO_BIG}")
        return _from_dtb(data, path, origin)
    text = decode_text(data, origin, KIND_NAMES[kind])
    if kind == "toml":
        return _from_toml(text, path, origin)
    if kind == "dts":
        return _from_dts(path, origin, data)
    if kind == "iomem":
        return memory_map_from_iomem(text, path.stem, origin=origin)
    return memory_map_from_boot_log(text, path.stem, origin=origin)


_IOMEM_LINE = re.compile(r"^(\s*)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")
_NODE_RANGE = re.compile(r"\bnode\s+(\d+): \[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)\]")
_EARLY_RANGES = "Early memory node ranges"
_BANK_HEADER = re.compile(r"\s*\[\[\s*banks\s*\]\]")
_TOML_HINT = re.compile(  # [ \t], not \s: \s* runs across blank lines from every ^ (quadratic)
    r"^[ \t]*(\[\[?[ \t]*banks[ \t]*\]\]?|(name|description|source|platform)[ \t]*=)", re.M
)


def detect_kind(data: bytes) -> str | None:
    """Which kind of memory-map file ``data`` is, from its content alone (None: unknown)."""
    if fdt.is_fdt(data):
        return "dtb"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if re.compile(r"/dts-v1/\s*;").match(text, after_comments(text)):  # linear, not a regex
        return "dts"
    doc = _parsed_toml(text)  # an error: _from_toml says which, in one line
    if isinstance(doc, dict) and set(doc) & TOML_KEYS:
        return "toml"
    if _EARLY_RANGES in text or _NODE_RANGE.search(text):
        return "bootlog"
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and all(_IOMEM_LINE.match(line) for line in lines):
        return "iomem"
    if _TOML_HINT.search(text):
        return "toml"
    return None


# --- checks shared by every kind --------------------------------------------------------------


def _memory_map(
    origin: str, name: str, banks: Sequence[_Located], description: str = "", source: str = ""
) -> MemoryMap:
    """Check the raw banks against docs/model.md section 1, naming where each came from."""
    problem = name_problem(name)
    if problem:
        raise ValidationError(f"{origin}: name {name!r}: {problem}")
    if not banks:
        raise ValidationError(f"{origin}: no DRAM banks found")
    for bank in banks:
        if bank.size <= 0:
            raise ValidationError(
                f"{origin}: {bank.where}: bank at {bank.base:#x} has size {bank.size}, must be"
                " above 0"
            )
        if bank.base + bank.size > PA_LIMIT:
            raise ValidationError(
                f"{origin}: {bank.where}: bank [{bank.base:#x}-{bank.base + bank.size - 1:#x}]"
                " ends past 2^52, the largest arm64 physical address"
            )
    ordered = sorted(banks, key=lambda b: b.base)
    for prev, nxt in zip(ordered, ordered[1:], strict=False):
        if nxt.base < prev.base + prev.size:
            raise ValidationError(
                f"{origin}: {nxt.where}: bank [{nxt.base:#x}-{nxt.base + nxt.size - 1:#x}] overlaps"
                f" [{prev.base:#x}-{prev.base + prev.size - 1:#x}] ({prev.where})"
            )
    try:
        return MemoryMap(
            name, [Bank(b.base, b.size) for b in banks], description=description, source=source
        )
    except ValidationError as exc:
        raise ValidationError(f"{origin}: {exc}") from None


# --- TOML ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _parsed_toml(text: str) -> dict | Exception:
    """``tomllib.loads(text)`` or its error, kept for the text just read: telling a file's
    kind and reading it parse it once (a corpus of thousands of maps loads twice as fast).
    Callers only read the document."""
    if text.count("base") > MAX_BANKS:  # refused unparsed: 10^6 banks take a GB in tomllib
        return ValidationError(f"more than {MAX_BANKS:,} banks (base = ...), the most a map holds")
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: TOML's, or 4300+ digits
        return exc


def _from_toml(text: str, path: Path, origin: str) -> MemoryMap:
    doc = _parsed_toml(text)
    if isinstance(doc, ValidationError):
        raise ValidationError(f"{origin}: {doc}")
    if not isinstance(doc, dict):
        doc = load_toml(text, origin)  # raises the error, naming the file
    unknown = sorted(set(doc) - TOML_KEYS)
    if unknown:
        raise ValidationError(
            f"{origin}: line {_key_line(text, unknown[0])}: unknown key {unknown[0]!r}"
            f" (a memory map has {', '.join(sorted(TOML_KEYS))})"
        )
    for key in ("name", "description", "source", "platform"):
        if key in doc and not isinstance(doc[key], str):
            raise ValidationError(
                f"{origin}: line {_key_line(text, key)}: {key} must be a string, got {doc[key]!r}"
            )
    name = doc["name"] if "name" in doc else path.stem
    if not name.strip():
        raise ValidationError(f"{origin}: line {_key_line(text, 'name')}: name is empty")
    if "banks" not in doc:
        raise ValidationError(
            f"{origin}: no [[banks]] tables: a memory map needs at least one bank"
        )
    if not isinstance(doc["banks"], list) or not all(isinstance(b, dict) for b in doc["banks"]):
        raise ValidationError(
            f"{origin}: line {_key_line(text, 'banks')}: banks must be [[banks]] tables with base"
            " and size"
        )
    banks = []
    for index, table in enumerate(doc["banks"]):
        where = _BankLine(text, index)
        unknown = table.keys() - BANK_KEYS
        if unknown:
            raise ValidationError(
                f"{origin}: {where}: unknown key {min(unknown)!r} (a bank has base and size)"
            )
        for key in ("base", "size"):
            if key not in table:
                raise ValidationError(f"{origin}: {where}: bank has no {key}")
        try:
            base = parse_address(table["base"], "base")
            size = parse_size(table["size"], "size")
        except ValidationError as exc:
            raise ValidationError(f"{origin}: {where}: {exc}") from None
        if base < 0:
            raise ValidationError(f"{origin}: {where}: base {base:#x} is negative")
        banks.append(_Located(base, size, where))
    return _memory_map(origin, name, banks, doc.get("description", ""), doc.get("source", ""))


class _BankLine(NamedTuple):
    """``str()``: ``line 7 (bank 1)``, where table ``index`` is; looked up for an error only."""

    text: str
    index: int

    def __str__(self) -> str:
        lines = [n for n, line in enumerate(self.text.splitlines(), 1) if _BANK_HEADER.match(line)]
        line = lines[self.index] if self.index < len(lines) else None
        return f"line {line} (bank {self.index})" if line else f"bank {self.index}"


def _key_line(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines()):
        escaped = re.escape(key)
        if re.match(rf"\s*{escaped}\s*=", line) or re.match(rf"\s*\[+\s*{escaped}\s*\]", line):
            return i + 1
    return 1


# --- device trees ---------------------------------------------------------------------------


def _from_dtb(data: bytes, path: Path, origin: str) -> MemoryMap:
    """The banks Linux would add to memblock from this blob (``fdt.scan_memory``); each node or
    entry it skips is one warning line, and a blob left with no bank is an error."""
    root = fdt.parse(data, origin)
    scan = fdt.scan_memory(root, origin)
    for line in scan.skipped:
        log.warning("%s: %s", origin, line)
    if not scan.entries:
        if scan.skipped:
            raise ValidationError(f"{origin}: no DRAM bank left: {scan.skipped[0]}")
        raise ValidationError(
            f'{origin}: device tree has no memory node (device_type = "memory" in a child of /)'
        )
    entries, merges = merge_overlapping(scan.entries)
    for line in merges:
        log.warning("%s: %s", origin, line)
    banks = [_Located(e.base, e.size, e.where) for e in entries]
    model = root.string("model") or root.string("compatible") or ""
    description = f"memory nodes of {path.name}" + (f" ({model[:80]})" if model else "")
    return _memory_map(origin, path.stem, banks, description, origin)


def _from_dts(path: Path, origin: str, data: bytes) -> MemoryMap:
    """Compiled by dtc: the file itself (so that its messages name it), or ``data`` from stdin."""
    stdin = origin == "<stdin>"
    dtc = shutil.which("dtc")
    if dtc is None:
        raise ValidationError(
            f"{origin}: reading device tree source needs dtc (Debian/Ubuntu: apt-get install"
            " device-tree-compiler), or compile it yourself with dtc -I dts -O dtb"
        )
    try:
        run = subprocess.run(
            [dtc, "-q", "-I", "dts", "-O", "dtb", "-o", "-", "-" if stdin else path.name],
            cwd=None if stdin else path.parent,
            input=data if stdin else None,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValidationError(f"{origin}: dtc failed: {exc}") from None
    if run.returncode != 0:
        message = run.stderr.decode("utf-8", "replace").strip().splitlines()
        first = next((m for m in message if "rror" in m), message[0] if message else "")
        hint = ""
        if re.search(rb"^[ \t]*#[ \t]*include\b", data, re.M):  # not \s*: quadratic
            hint = (
                " (#include needs the C preprocessor: run cpp -nostdinc -undef -x"
                " assembler-with-cpp first, as the kernel's Makefiles do)"
            )
        raise ValidationError(f"{origin}: dtc could not compile it: {first.strip()}{hint}")
    return _from_dtb(run.stdout, path, origin)


# --- /proc/iomem and boot logs ----------------------------------------------------------------


def memory_map_from_iomem(text: str, name: str, origin: str | None = None) -> MemoryMap:
    """The top-level ``System RAM`` lines of a ``/proc/iomem`` dump (children are indented).

    Ranges are inclusive (``A-B`` holds ``B - A + 1`` bytes, ``kernel/resource.c``).
    """
    origin = origin or name
    if not text.strip():
        raise ValidationError(f"{origin}: the /proc/iomem dump is empty")
    banks = []
    hidden = True  # every address 0: read without root (kernel/resource.c hides them)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _IOMEM_LINE.match(line)
        if not match:
            raise ValidationError(
                f"{origin}: line {number}: not a /proc/iomem line ('start-end : name'):"
                f" {line.strip()[:60]!r}"
            )
        indent, start, end, what = match.groups()
        start, end = int(start, 16), int(end, 16)
        hidden = hidden and start == end == 0
        if end < start:
            raise ValidationError(
                f"{origin}: line {number}: range ends at {end:#x}, before its start {start:#x}"
            )
        if not indent and what.strip() == "System RAM":
            banks.append(_Located(start, end - start + 1, f"line {number}"))
    if hidden:
        raise ValidationError(
            f"{origin}: line 1: addresses are all zero: /proc/iomem was read without root (the"
            " kernel hides addresses from other users); read it as root"
        )
    if not banks:
        raise ValidationError(f"{origin}: no top-level 'System RAM' line in this /proc/iomem dump")
    return _memory_map(origin, name, banks, f"System RAM of a /proc/iomem dump ({name})", origin)


def memory_map_from_boot_log(text: str, name: str, origin: str | None = None) -> MemoryMap:
    """DRAM banks from a kernel boot log's ``Early memory node ranges`` block.

    The kernel prints one ``node N: [mem A-B]`` line (inclusive end) per memblock memory region
    (``free_area_init`` in ``mm/mm_init.c``; ``mm/page_alloc.c`` before 6.2). A log holding several
    boots must show the same memory in each.
    """
    origin = origin or name
    blocks = [  # one pass over the lines, any line ends (sweep.formats.bootlog)
        [_Located(start, end - start + 1, f"line {n}") for n, start, end in block]
        for block in memory_node_blocks(text, origin)
    ]
    if not blocks:
        raise ValidationError(
            f"{origin}: no '{_EARLY_RANGES}' in this boot log (boot with loglevel=7 or higher to"
            " see it)"
        )
    first = [(b.base, b.size) for b in blocks[0]]
    for block in blocks[1:]:
        if [(b.base, b.size) for b in block] != first:
            raise ValidationError(
                f"{origin}: {block[0].where}: this log holds several boots with different memory"
                f" (first at {blocks[0][0].where}); split it into one log per boot"
            )
    description = f"early memory node ranges of a boot log ({name})"
    return _memory_map(origin, name, blocks[0], description, origin)
