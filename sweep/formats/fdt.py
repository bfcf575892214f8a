"""A small reader (and writer) of flattened device trees, for the DRAM banks a board reports.

Our own, after the Devicetree Specification v0.4, chapter 5 ("Flattened Devicetree (DTB)
Format"), because real blobs are not tidy: a running kernel blanks properties it consumed
(``rng-seed``) with ``FDT_NOP`` tokens, on which the ``fdt`` package 0.3.3 stops ("Unknown Tag:
4"), and QEMU's blobs are 1 MiB of mostly zeros. Everything here is checked and every error is
one line naming the file and the node or offset.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from sweep.core.errors import ValidationError

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
HEADER = struct.Struct(">10I")
"""magic, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap, version,
last_comp_version, boot_cpuid_phys, size_dt_strings, size_dt_struct (spec 5.2)."""

ROOT_ADDRESS_CELLS, ROOT_SIZE_CELLS = 1, 1
"""What Linux assumes when the root has no ``#address-cells``/``#size-cells``:
``OF_ROOT_NODE_ADDR_CELLS_DEFAULT`` and ``OF_ROOT_NODE_SIZE_CELLS_DEFAULT`` of
``drivers/of/of_private.h`` (2 only on SPARC), read by ``early_init_dt_scan_root``."""
FDT_MAX_DEPTH = 64
"""``drivers/of/fdt.c``: the deepest nesting the kernel unflattens; deeper blobs are refused."""
NAME_CHARS, PATH_PARTS = 32, 4
"""Error lines show at most this much of a node name and of a path (names may be 4 KiB long)."""
FIRMWARE_HINT = (
    "firmware fills it in at boot? read the blob from the running board, /sys/firmware/fdt"
)


@dataclass
class Node:
    """One device-tree node: its name (``memory@40000000``; ``""`` for the root), properties and
    children, in blob order."""

    name: str
    properties: dict[str, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> str:
        names, node = [], self
        while node.parent is not None:
            names.append(node.name)
            node = node.parent
        return "/" + "/".join(reversed(names))

    @property
    def short_path(self) -> str:
        """The path cut for an error line: long names and deep paths are elided."""
        names = [_short_name(n) for n in self.path.strip("/").split("/")]
        if len(names) > PATH_PARTS:
            names = [names[0], f"...({len(names) - PATH_PARTS + 1} more)", *names[-2:]]
        return "/" + "/".join(names)

    def walk(self) -> Iterator[Node]:
        """Every node below and including this one, in blob order (iteratively: any depth)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def string(self, prop: str) -> str | None:
        """A string property up to its first NUL (as ``strcmp`` reads it), or None when absent."""
        value = self.properties.get(prop)
        if value is None:
            return None
        return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _short_name(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 3] + "..."


def is_fdt(data: bytes) -> bool:
    return len(data) >= 4 and struct.unpack(">I", data[:4])[0] == FDT_MAGIC


def parse(data: bytes, origin: str) -> Node:
    """The tree of a blob. ``origin`` (the file name) starts every error message."""
    if len(data) < HEADER.size:
        raise ValidationError(
            f"{origin}: not a flattened device tree: {len(data)} bytes, shorter than its"
            " 40-byte header"
        )
    header = HEADER.unpack_from(data)
    magic, totalsize, off_struct, off_strings, off_rsvmap, version, last_comp = header[:7]
    size_strings, size_struct = header[8:]  # header[7] is boot_cpuid_phys
    if magic != FDT_MAGIC:
        raise ValidationError(
            f"{origin}: not a flattened device tree: magic {magic:#010x}, expected"
            f" {FDT_MAGIC:#010x}"
        )
    if version < 16 or last_comp > 17:
        raise ValidationError(
            f"{origin}: device tree version {version} (compatible with {last_comp}) is not"
            " supported: only versions 16 and 17 of the format are read"
        )
    if totalsize > len(data):
        raise ValidationError(
            f"{origin}: truncated device tree: header totalsize is {totalsize} bytes, file has"
            f" {len(data)}"
        )
    if version < 17:  # size_dt_struct arrived with version 17: the block runs to FDT_END
        size_struct = totalsize - off_struct
    for what, offset, size in (
        ("structure block", off_struct, size_struct),
        ("strings block", off_strings, size_strings),
        ("memory reservation block", off_rsvmap, 16),
    ):
        if offset < HEADER.size or offset + size > totalsize:
            raise ValidationError(
                f"{origin}: device tree {what} at {offset:#x} (+{size:#x}) lies outside the"
                f" blob (totalsize {totalsize:#x})"
            )
    if off_struct % 4:
        raise ValidationError(
            f"{origin}: device tree structure block offset {off_struct:#x} is not 4-byte aligned"
        )
    strings = data[off_strings : off_strings + size_strings]
    return _read_structure(data, off_struct, off_struct + size_struct, strings, origin)


def _read_structure(data: bytes, pos: int, end: int, strings: bytes, origin: str) -> Node:
    """One pass over the tokens, keeping the open nodes on a stack (no recursion)."""
    root: Node | None = None
    node: Node | None = None
    depth = 0

    def fail(offset: int, message: str) -> ValidationError:
        where = f"node {node.short_path}" if node is not None else "structure block"
        return ValidationError(f"{origin}: {where} (offset {offset:#x}): {message}")

    def word(offset: int) -> int:
        if offset + 4 > end:
            raise fail(offset, "runs past the end of the structure block (no FDT_END)")
        return struct.unpack_from(">I", data, offset)[0]

    while True:
        at = pos
        token = word(pos)
        pos += 4
        if token == FDT_NOP:  # spec 5.4.1: "ignored by any program parsing the device tree"
            continue
        if token == FDT_BEGIN_NODE:
            name, pos = _node_name(data, pos, end, at, fail)
            if root is None:
                if name:
                    raise fail(at, f"the root node must have an empty name, not {name[:32]!r}")
                root = node = Node("")
            elif node is None:
                raise fail(at, "a second root node after the first one ended")
            else:
                depth += 1
                if depth >= FDT_MAX_DEPTH:
                    deeper = f"nodes nested deeper than {FDT_MAX_DEPTH} levels"
                    raise fail(at, f"{deeper} (FDT_MAX_DEPTH of drivers/of/fdt.c)")
                child = Node(name, parent=node)
                node.children.append(child)
                node = child
        elif token == FDT_END_NODE:
            if node is None:
                raise fail(at, "FDT_END_NODE without a node to end")
            node = node.parent
            depth -= 1
        elif token == FDT_PROP:
            if node is None:
                raise fail(at, "property outside any node")
            prop, value, pos = _property(data, pos, end, strings, at, word, fail)
            node.properties[prop] = value
        elif token == FDT_END:
            if root is None:
                raise fail(at, "FDT_END before any node")
            if node is not None:
                raise fail(at, "FDT_END inside a node that was never ended")
            return root
        else:
            raise fail(at, f"unknown token {token:#x} (expected 1, 2, 3, 4 or 9)")


def _node_name(data: bytes, pos: int, end: int, at: int, fail: Callable) -> tuple[str, int]:
    """An ``FDT_BEGIN_NODE``'s name (NUL-terminated, then padded to 4 bytes: spec 5.4.1) and the
    offset after it; ``fail(offset, message)`` makes the error naming the open node."""
    nul = data.find(b"\0", pos, end)
    if nul < 0:
        raise fail(at, "node name has no terminating NUL")
    return data[pos:nul].decode("utf-8", "replace"), (nul + 1 + 3) & ~3


def _property(
    data: bytes, pos: int, end: int, strings: bytes, at: int, word: Callable, fail: Callable
) -> tuple[str, bytes, int]:
    """An ``FDT_PROP``'s name (an offset into the strings block), value and the offset after it:
    ``len`` and ``nameoff`` then the value padded to 4 bytes (spec 5.4.1)."""
    length, name_offset = word(pos), word(pos + 4)
    pos += 8
    if pos + length > end:
        raise fail(at, f"property of {length} bytes runs past the structure block")
    if name_offset >= len(strings):
        raise fail(at, f"property name offset {name_offset:#x} is past the strings block")
    nul = strings.find(b"\0", name_offset)
    if nul < 0:
        raise fail(at, "property name has no terminating NUL in the strings block")
    prop = strings[name_offset:nul].decode("utf-8", "replace")
    return prop, bytes(data[pos : pos + length]), (pos + length + 3) & ~3


# --- memory, as Linux reads it ----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One (base, size) entry Linux would hand to memblock, and where it was read."""

    base: int
    size: int
    where: str


@dataclass
class MemoryScan:
    """What ``scan_memory`` found: the entries, and one line per thing Linux skips."""

    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def root_cells(root: Node, origin: str) -> tuple[int, int]:
    """``#address-cells`` and ``#size-cells`` of the root, as ``early_init_dt_scan_root`` reads
    them: the first cell of the property, 1 and 1 when absent."""
    out = []
    for prop, default in (("#address-cells", ROOT_ADDRESS_CELLS), ("#size-cells", ROOT_SIZE_CELLS)):
        value = root.properties.get(prop)
        if value is None:
            out.append(default)
        elif len(value) < 4:
            raise ValidationError(
                f"{origin}: node /: {prop} is {len(value)} bytes, must be a 32-bit cell"
            )
        else:
            out.append(int.from_bytes(value[:4], "big"))
    return out[0], out[1]


def scan_memory(root: Node, origin: str) -> MemoryScan:
    """The DRAM entries of a tree, read as Linux 6.x reads them (``early_init_dt_scan_memory``,
    ``drivers/of/fdt.c``).

    Only children of the root count, and only those whose ``device_type`` is ``"memory"``
    (a ``memory@`` name alone does not); a ``status`` other than ``okay``/``ok`` skips the node;
    ``linux,usable-memory`` is read instead of ``reg`` when present; entries are read with the
    root's cells while a whole entry remains (trailing partial cells are ignored) and entries of
    size 0 are skipped. Each skip the kernel makes silently is noted in ``skipped``.
    """
    address_cells, size_cells = root_cells(root, origin)
    scan = MemoryScan()
    for node in root.walk():
        if node.parent is None:
            continue
        memory_type = node.string("device_type") == "memory"
        if node.parent is not root:
            if memory_type:
                scan.skipped.append(
                    f'node {node.short_path}: device_type = "memory" below the root\'s children:'
                    " skipped (Linux reads only children of the root)"
                )
            continue
        if not memory_type:
            if node.name == "memory" or node.name.startswith("memory@"):
                scan.skipped.append(
                    f'node {node.short_path}: no device_type = "memory": skipped (Linux does not'
                    " go by the name)"
                )
            continue
        status = node.string("status")
        if status is not None and status not in ("okay", "ok"):
            scan.skipped.append(
                f"node {node.short_path}: status {status[:NAME_CHARS]!r}: skipped (not okay)"
            )
            continue
        prop = "linux,usable-memory" if "linux,usable-memory" in node.properties else "reg"
        value = node.properties.get(prop)
        if not value:
            what = "no reg property" if value is None else f"{prop} is empty"
            scan.skipped.append(f"node {node.short_path}: {what} ({FIRMWARE_HINT})")
            continue
        _read_entries(scan, node, prop, value, address_cells, size_cells)
    return scan


def _read_entries(
    scan: MemoryScan, node: Node, prop: str, value: bytes, address_cells: int, size_cells: int
) -> None:
    """The (base, size) entries of one memory node's ``prop`` into ``scan``, as
    ``early_init_dt_scan_memory`` reads them: whole entries only, size 0 skipped."""
    stride = address_cells + size_cells
    whole = len(value) // 4 // stride if stride else 0  # whole entries only
    if len(value) != 4 * whole * stride:
        scan.skipped.append(
            f"node {node.short_path}: {prop} has {len(value) - 4 * whole * stride} trailing"
            f" byte(s) short of a whole entry ({stride} cells): ignored"
        )
    for index in range(whole):
        at = 4 * index * stride
        base = _number(value[at : at + 4 * address_cells])
        size = _number(value[at + 4 * address_cells : at + 4 * stride])
        where = f"node {node.short_path}" + (f" {prop} entry {index}" if whole > 1 else "")
        if prop != "reg" and whole == 1:
            where += f" ({prop})"
        if size == 0:
            scan.skipped.append(f"{where}: size 0: skipped ({FIRMWARE_HINT})")
            continue
        scan.entries.append(Entry(base, size, where))


def _number(cells: bytes) -> int:
    """``of_read_number``: big-endian cells folded into a u64 (higher cells shift out)."""
    return int.from_bytes(cells, "big") & ((1 << 64) - 1)


# --- writer: small blobs for tests and for exporting a memory map ---------------------------


def encode(
    root: Node,
    reservations: Sequence[tuple[int, int]] = (),
    nops: bool = False,
    totalsize: int | None = None,
) -> bytes:
    """A version-17 blob of ``root``; ``nops`` puts an ``FDT_NOP`` before every token (as a
    running kernel leaves them), ``totalsize`` pads with zeros (as QEMU's 1 MiB blobs)."""
    block, strings = _flatten(root, nops)
    rsvmap = b"".join(struct.pack(">QQ", a, s) for a, s in (*reservations, (0, 0)))
    off_rsvmap = HEADER.size + (-HEADER.size % 8)
    off_struct = off_rsvmap + len(rsvmap)
    off_strings = off_struct + len(block)
    size = off_strings + len(strings)
    total = max(size, totalsize or 0)
    header = HEADER.pack(
        FDT_MAGIC, total, off_struct, off_strings, off_rsvmap, 17, 16, 0, len(strings), len(block)
    )
    blob = header + b"\0" * (off_rsvmap - HEADER.size) + rsvmap + block + strings
    return blob + b"\0" * (total - len(blob))


def _flatten(root: Node, nops: bool) -> tuple[bytearray, bytearray]:
    """The structure block of ``root`` (its tokens, spec 5.4) and the strings block of its
    property names, each name stored once."""
    strings = bytearray()
    offsets: dict[str, int] = {}
    struct_block = bytearray()

    def emit(*words: int) -> None:
        if nops:
            struct_block.extend(struct.pack(">I", FDT_NOP))
        struct_block.extend(struct.pack(f">{len(words)}I", *words))

    def pad() -> None:
        struct_block.extend(b"\0" * (-len(struct_block) % 4))

    def begin(node: Node) -> None:
        emit(FDT_BEGIN_NODE)
        struct_block.extend(node.name.encode() + b"\0")
        pad()
        for name, value in node.properties.items():
            if name not in offsets:
                offsets[name] = len(strings)
                strings.extend(name.encode() + b"\0")
            emit(FDT_PROP, len(value), offsets[name])
            struct_block.extend(value)
            pad()

    stack: list[Node | None] = [root]  # None: end the node begun before (no recursion)
    while stack:
        node = stack.pop()
        if node is None:
            emit(FDT_END_NODE)
            continue
        begin(node)
        stack.append(None)
        stack.extend(reversed(node.children))
    emit(FDT_END)
    return struct_block, strings


def cells(*values: int, width: int = 1) -> bytes:
    """Big-endian cells: each value in ``width`` 32-bit cells (``cells(0x8000_0000, 2 << 30,
    width=2)``)."""
    return b"".join(v.to_bytes(4 * width, "big") for v in values)
