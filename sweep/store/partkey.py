"""Where a part file lives: ``granule-<bytes>/va_bits-<bits>/part-<index>.parquet``, spelled once.

The store writes there (:mod:`sweep.store.parts`), a unit is named after it
(:mod:`sweep.plan.units`), and the readers pick folders and order parts by it
(:mod:`sweep.read.engine`): every one of them builds or parses the path through ``PartKey``.
A part's summary (:mod:`sweep.store.summary`) lives beside it as ``_summary-<index>.parquet``:
the leading ``_`` keeps it out of ``pandas.read_parquet(folder)`` (pyarrow skips ``_`` and
``.`` names) and out of ``part-*.parquet`` globs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sweep.core.kconfig import granule_name

FOLDER_PREFIX = "granule-"
"""How the top folders of part files begin (the rest of a root is the sweep's own files)."""
PART_RE = re.compile(
    rf"{FOLDER_PREFIX}(?P<granule>\d+)/va_bits-(?P<va_bits>\d+)/part-(?P<index>\d+)\.parquet"
)
"""A finished part file's path relative to the root; nothing else in the folder is data."""
PART_GLOB = f"{FOLDER_PREFIX}*/va_bits-*/part-*.parquet"
"""The same as a glob, for people."""
SUMMARY_PREFIX = "_summary-"
SUMMARY_RE = re.compile(rf"{FOLDER_PREFIX}\d+/va_bits-\d+/{SUMMARY_PREFIX}\d+\.parquet")
"""A part's summary file's path relative to the root (:func:`summary_path`)."""


@dataclass(frozen=True, order=True)
class PartKey:
    """Which part file: its (granule, VA_BITS) folder and its index there, the one place the
    part paths and the unit names are spelled (sorted by granule, VA_BITS, then index)."""

    granule: int
    va_bits: int
    index: int

    @property
    def path(self) -> str:
        """The part file's path, relative to the dataset root."""
        return f"{FOLDER_PREFIX}{self.granule}/va_bits-{self.va_bits}/part-{self.index:06d}.parquet"

    @property
    def summary_path(self) -> str:
        """The path of the part's summary file, beside it."""
        return self.path.replace("/part-", f"/{SUMMARY_PREFIX}")

    @property
    def unit_id(self) -> str:
        """The unit's name in logs and ``_sweep.json``: ``4K/va48/000003``."""
        return f"{granule_name(self.granule)}/va{self.va_bits}/{self.index:06d}"

    @classmethod
    def parse(cls, rel: str) -> PartKey | None:
        """The key of a finished part file's relative path, or None for any other file."""
        keys = PART_RE.fullmatch(rel)
        if keys is None:
            return None
        return cls(int(keys["granule"]), int(keys["va_bits"]), int(keys["index"]))

    @staticmethod
    def is_folder(name: str) -> bool:
        """Whether a top-level folder's name is one the store writes parts under."""
        return name.startswith(FOLDER_PREFIX)


def part_path(granule: int, va_bits: int, index: int) -> str:
    """Where the part file of a unit goes, relative to the dataset root."""
    return PartKey(granule, va_bits, index).path


def summary_path(rel: str) -> str:
    """The summary file of the part at ``rel`` (a part's relative path)."""
    key = PartKey.parse(rel)
    if key is None:
        raise ValueError(f"not a part file's path: {rel!r}")
    return key.summary_path
