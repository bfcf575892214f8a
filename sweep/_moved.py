"""Old import paths kept for one release: each forwards to the module that now holds the name.

Release 0.2 cut ``sweep/`` into one package per layer (docs/architecture.md). A plugin written
against an old path (``from sweep.layouts import Layout``) still loads, with a
``DeprecationWarning`` naming the new path; the old names go in the release after.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable


def forward(old: str, new: str, names: frozenset[str] | None = None) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``old`` that returns ``new``'s attribute, warning once per use.

    ``names`` limits what is forwarded (a package that is also an old module keeps its own)."""

    def __getattr__(name: str) -> object:
        if name.startswith("__") or (names is not None and name not in names):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        target = importlib.import_module(new)
        try:
            value = getattr(target, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} has no attribute {name!r}") from None
        warnings.warn(
            f"{old}.{name} moved to {new}.{name} (or import it from sweep); "
            f"the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__
