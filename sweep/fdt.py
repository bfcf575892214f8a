"""A small reader (and writer) of flattened device trees, for the DRAM banks a board reports.

Our own, after the Devicetree Specification v0.4, chapter 5 ("Flattened Devicetree (DTB)
Format"), because real blobs are not tidy: a running kernel blanks properties it consumed
(``rng-seed``) with ``FDT_NOP`` tokens, on which the ``fdt`` package 0.3.3 stops ("Unknown Tag:
4"), and QEMU's blobs are 1 MiB of mostly zeros. Everything here is checked and every error is
one line naming the file and the node or offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from sweep.errors import ValidationError

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
HEADER = struct.Struct(">10I")
"""magic, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap, version,
last_comp_version, boot_cpuid_phys, size_dt_strings, size_dt_struct (spec 5.2)."""

DEFAULT_ADDRESS_CELLS, DEFAULT_SIZE_CELLS = 2, 1
"""Spec 2.3.5: a node without ``#address-cells``/``#size-cells`` gets 2 and 1 for its children."""


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
        if self.parent is None:
            return "/"
        parent = self.parent.path
        return f"{parent}{self.name}" if parent == "/" else f"{parent}/{self.name}"

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    def string(self, prop: str) -> str | None:
        """A string property without its NUL, or None when absent."""
        value = self.properties.get(prop)
        if value is None:
            return None
        return value.split(b"\0", 1)[0].decode("utf-8", "replace")

    def cells(self, prop: str, default: int) -> int:
        value = self.properties.get(prop)
        if value is None:
            return default
        if len(value) != 4:
            raise ValueError(f"{prop} is {len(value)} bytes, must be one 32-bit cell")
        return struct.unpack(">I", value)[0]


def is_fdt(data: bytes) -> bool:
    return len(data) >= 4 and struct.unpack(">I", data[:4])[0] == FDT_MAGIC


def parse(data: bytes, origin: str) -> Node:
    """The tree of a blob. ``origin`` (the file name) starts every error message."""
    if len(data) < HEADER.size:
        raise ValidationError(
            f"{origin}: not a flattened device tree: {len(data)} bytes, shorter than its"
            " 40-byte header"
        )
    (
        magic,
        totalsize,
        off_struct,
        off_strings,
        off_rsvmap,
        version,
        last_comp,
        _cpu,
        size_strings,
        size_struct,
    ) = HEADER.unpack_from(data)
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
    root: Node | None = None
    node: Node | None = None

    def fail(offset: int, message: str) -> ValidationError:
        where = f"node {node.path}" if node is not None else "structure block"
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
            nul = data.find(b"\0", pos, end)
            if nul < 0:
                raise fail(at, "node name has no terminating NUL")
            name = data[pos:nul].decode("utf-8", "replace")
            pos = (nul + 1 + 3) & ~3
            if root is None:
                if name:
                    raise fail(at, f"the root node must have an empty name, not {name!r}")
                root = node = Node("")
            elif node is None:
                raise fail(at, "a second root node after the first one ended")
            else:
                child = Node(name, parent=node)
                node.children.append(child)
                node = child
        elif token == FDT_END_NODE:
            if node is None:
                raise fail(at, "FDT_END_NODE without a node to end")
            node = node.parent
        elif token == FDT_PROP:
            if node is None:
                raise fail(at, "property outside any node")
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
            node.properties[prop] = bytes(data[pos : pos + length])
            pos = (pos + length + 3) & ~3
        elif token == FDT_END:
            if root is None:
                raise fail(at, "FDT_END before any node")
            if node is not None:
                raise fail(at, "FDT_END inside a node that was never ended")
            return root
        else:
            raise fail(at, f"unknown token {token:#x} (expected 1, 2, 3, 4 or 9)")


def memory_nodes(root: Node) -> list[Node]:
    """Nodes that describe DRAM: ``device_type = "memory"``, or a child of the root named
    ``memory``/``memory@...`` (deeper nodes of that name are on-chip RAMs or carve-outs).

    Skipped, as the kernel skips them (``early_init_dt_scan_memory`` in ``drivers/of/fdt.c``):
    nodes whose ``status`` is not ``okay``. Anything under ``/reserved-memory`` describes carve-outs
    of DRAM, not banks, and is never a memory node here.
    """
    found = []
    for node in root.walk():
        if node.parent is None:
            continue
        named = node.parent is root and (node.name == "memory" or node.name.startswith("memory@"))
        if not (named or node.string("device_type") == "memory"):
            continue
        if any(
            a.name == "reserved-memory" or a.name.startswith("reserved-memory@")
            for a in _ancestors(node)
        ):
            continue
        status = node.string("status")
        if status is not None and status not in ("okay", "ok"):
            continue
        found.append(node)
    return found


def _ancestors(node: Node) -> Iterator[Node]:
    while node.parent is not None:
        node = node.parent
        yield node


def reg_entries(node: Node, origin: str) -> list[tuple[int, int]]:
    """``(address, size)`` pairs of a memory node, decoded with its parent's cell counts.

    ``linux,usable-memory`` wins over ``reg`` when present, as in the kernel (kdump kernels get
    their memory that way; ``early_init_dt_scan_memory``, ``drivers/of/fdt.c``).
    """
    where = f"{origin}: node {node.path}"
    parent = node.parent
    assert parent is not None
    try:
        address_cells = parent.cells("#address-cells", DEFAULT_ADDRESS_CELLS)
        size_cells = parent.cells("#size-cells", DEFAULT_SIZE_CELLS)
    except ValueError as exc:
        raise ValidationError(f"{origin}: node {parent.path}: {exc}") from None
    if size_cells == 0 or address_cells == 0:
        raise ValidationError(
            f"{where}: parent {parent.path} has #address-cells {address_cells} and #size-cells"
            f" {size_cells}; memory needs both above 0"
        )
    prop = "linux,usable-memory" if "linux,usable-memory" in node.properties else "reg"
    reg = node.properties.get(prop)
    if reg is None:
        raise ValidationError(
            f"{where}: memory node has no reg property (firmware fills it in"
            " at boot? read the blob from the running board, /sys/firmware/fdt)"
        )
    stride = 4 * (address_cells + size_cells)
    if not reg or len(reg) % stride:
        raise ValidationError(
            f"{where}: {prop} is {len(reg)} bytes, not a non-empty multiple of {stride}"
            f" (#address-cells {address_cells} + #size-cells {size_cells} of {parent.path})"
        )
    entries = []
    for at in range(0, len(reg), stride):
        address = int.from_bytes(reg[at : at + 4 * address_cells], "big")
        size = int.from_bytes(reg[at + 4 * address_cells : at + stride], "big")
        entries.append((address, size))
    return entries


# --- writer: small blobs for tests and for exporting a memory map ---------------------------


def encode(
    root: Node,
    reservations: Sequence[tuple[int, int]] = (),
    nops: bool = False,
    totalsize: int | None = None,
) -> bytes:
    """A version-17 blob of ``root``; ``nops`` puts an ``FDT_NOP`` before every token (as a
    running kernel leaves them), ``totalsize`` pads with zeros (as QEMU's 1 MiB blobs)."""
    strings = bytearray()
    offsets: dict[str, int] = {}
    struct_block = bytearray()

    def emit(*words: int) -> None:
        if nops:
            struct_block.extend(struct.pack(">I", FDT_NOP))
        struct_block.extend(struct.pack(f">{len(words)}I", *words))

    def pad() -> None:
        struct_block.extend(b"\0" * (-len(struct_block) % 4))

    def put(node: Node) -> None:
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
        for child in node.children:
            put(child)
        emit(FDT_END_NODE)

    put(root)
    emit(FDT_END)
    rsvmap = b"".join(struct.pack(">QQ", a, s) for a, s in (*reservations, (0, 0)))
    off_rsvmap = HEADER.size + (-HEADER.size % 8)
    off_struct = off_rsvmap + len(rsvmap)
    off_strings = off_struct + len(struct_block)
    size = off_strings + len(strings)
    total = max(size, totalsize or 0)
    header = HEADER.pack(
        FDT_MAGIC,
        total,
        off_struct,
        off_strings,
        off_rsvmap,
        17,
        16,
        0,
        len(strings),
        len(struct_block),
    )
    blob = header + b"\0" * (off_rsvmap - HEADER.size) + rsvmap + struct_block + strings
    return blob + b"\0" * (total - len(blob))


def cells(*values: int, width: int = 1) -> bytes:
    """Big-endian cells: each value in ``width`` 32-bit cells (``cells(0x8000_0000, 2 << 30,
    width=2)``)."""
    return b"".join(v.to_bytes(4 * width, "big") for v in values)
