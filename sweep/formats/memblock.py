"""Memory as Linux's memblock holds it: what a device tree's memory entries become once added.

``early_init_dt_add_memory_arch`` hands each entry to ``memblock_add``; overlapping entries do
not stop a boot, they end up as one region (``mm/memblock.c``).
"""

from __future__ import annotations

from sweep.formats.fdt import Entry


def merge_overlapping(entries: list[Entry]) -> tuple[list[Entry], list[str]]:
    """Entries whose ranges overlap, merged into their union as Linux adds them to memblock
    (``memblock_add_range``, ``mm/memblock.c``, inserts only the parts not yet present, and
    ``memblock_merge_regions`` joins the pieces): Linux boots such a tree, so it is read, with
    one line per merge naming both nodes. Entries that do not overlap are returned as given."""
    merged: list[Entry] = []
    notes = []
    for entry in sorted(entries, key=lambda e: (e.base, e.size)):
        last = merged[-1] if merged else None
        if last is None or entry.base >= last.base + last.size:
            merged.append(entry)
            continue
        end = max(last.base + last.size, entry.base + entry.size)
        notes.append(
            f"{entry.where} [{entry.base:#x}-{entry.base + entry.size - 1:#x}] overlaps "
            f"{last.where} [{last.base:#x}-{last.base + last.size - 1:#x}]: merged into "
            f"[{last.base:#x}-{end - 1:#x}], as Linux's memblock_add does"
        )
        merged[-1] = Entry(last.base, end - last.base, f"{last.where} and {entry.where}")
    return (merged, notes) if notes else (list(entries), [])
