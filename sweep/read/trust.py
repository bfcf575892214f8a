"""What a reader believes of a results folder: only the parts its manifest vouches for.

Delta Lake and Iceberg read only the files their log lists; a sweep's log of whole parts is
``_manifest.json`` (:mod:`sweep.store.manifest`). A part of another run, a copied or damaged
part, a stray folder is left out with one warning line naming it (``--strict``: refused), a
file that is not a part is named in one line, and Parquet without a sweep's columns is refused
in one line, before any SQL could fail on it.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Iterator, Mapping

from sweep.core.columns import ROW_COLUMNS
from sweep.core.errors import ValidationError
from sweep.store.manifest import trusted_parts
from sweep.store.parts import PART_GLOB, PartKey, Store

STRICT = contextvars.ContextVar("sweep_strict_reads", default=False)
"""Whether readers opened now refuse a folder with a part left out (:func:`strict_reads`)."""


class ResultsWarning(UserWarning):
    """The results are incomplete, some part files were left out, or a load is large."""


@contextlib.contextmanager
def strict_reads(strict: bool = True) -> Iterator[None]:
    """Within the block, every reader opened refuses a folder holding a part the manifest does
    not vouch for, or a file that is not the sweep's (``--strict`` of query and report)."""
    token = STRICT.set(strict)
    try:
        yield
    finally:
        STRICT.reset(token)


def trusted(
    store: Store, directory: str, strict: bool, folders: Mapping[str, set] | None = None
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The parts to read, in part order, those left out with why, and the summary files to read
    (part -> its summary, :mod:`sweep.store.summary`); one warning line for each part left out
    or summary not read and one for the files that are not the sweep's (``strict``: an error).
    Only the parts of the ``folders`` kept (``{"granule": {4096}}``) have their bytes (and their
    summaries') hashed: the others are held to their size, so a filtered read opens no other
    folder's file."""
    where = f"results {directory!r}"

    def read(rel: str) -> bool:
        key = PartKey.parse(rel)
        return all(getattr(key, column) in kept for column, kept in (folders or {}).items())

    try:
        trust = trusted_parts(store, read)
    except OSError as exc:
        raise ValidationError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    lines = trust.warnings()
    if lines and strict:
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise ValidationError(
            f"{where}: {lines[0]}{more}; --strict reads only a folder whose every part the "
            "manifest vouches for (sweep verify names them all)"
        )
    for line in lines:
        warnings.warn(f"{where}: {line}", ResultsWarning, stacklevel=4)
    if not trust.parts:
        found = f" ({len(trust.left_out)} left out)" if trust.left_out else ""
        raise ValidationError(f"{where}: holds no part files of a sweep ({PART_GLOB}){found}")
    return sorted(trust.parts, key=PartKey.parse), trust.left_out, trust.summaries


CORE_COLUMNS = tuple(
    c
    for c in ROW_COLUMNS
    if c in ("memory_map", "granule", "va_bits", "layout", "block_mappings", "idmap_pa")
    or c in ("overlap", "margin", "levels", "table_bytes")
)
"""Columns every sweep's rows have had (later ones have defaults for older parts)."""


def check_columns(directory: str, columns: list[str]) -> None:
    """Parquet that is not a sweep's rows is one line naming what it lacks, not a SQL error."""
    lacking = [c for c in CORE_COLUMNS if c not in columns]
    if lacking:
        shown = ", ".join(lacking[:6]) + (f" and {len(lacking) - 6} more" * (len(lacking) > 6))
        raise ValidationError(
            f"results {directory!r}: its part files are not a sweep's rows (no column {shown}; "
            "`sweep columns` lists a sweep's columns)"
        )
