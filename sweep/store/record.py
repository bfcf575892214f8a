"""``_sweep.json`` read back: one reader for paths and URLs, for the driver and the readers.

The run layer writes it (:mod:`sweep.run.records`); everything that only reads a results folder
comes here, so that reading needs no plan or plugin code.
"""

from __future__ import annotations

from sweep.core.errors import SweepError
from sweep.store.parts import Store


def read_meta(url: str) -> dict:
    """The sweep's ``_sweep.json`` at ``url`` (a folder or an fsspec URL), or ``{}``."""
    try:
        return Store(str(url)).read_meta() or {}
    except OSError as exc:
        raise SweepError(f"{url}/_sweep.json: cannot be read ({exc})") from None
