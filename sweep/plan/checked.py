"""A plugin's layouts and placements as the sweep calls them: through the plugin boundary
(:mod:`sweep.plan.guard`: its exceptions, its time budget, its prints) and, for a layout, with
its answer checked against docs/model.md section 3 (:mod:`sweep.model.checks`).

The built-in plugins are the project's own code, held to the scalar reference by the tests, and
are called directly; every other plugin's layout or placement is wrapped when it registers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sweep.core.eras import resolve
from sweep.core.errors import PluginError, SweepError
from sweep.core.kconfig import granule_name
from sweep.model.checks import LayoutOutputError, check_layout_result, check_memstart_align
from sweep.model.layout import Layout, LayoutBatch, LayoutResult
from sweep.plan.guard import plugin_call
from sweep.plan.placements import Progression


class Layouts(dict):
    """Registered layouts by name; a kernel era's old layout name (``merged``, ``tagged``, ...)
    still finds it for one release (``sweep.core.eras.ALIASES``), but is never listed."""

    def __missing__(self, name: str) -> Layout:
        if isinstance(name, str) and resolve(name) != name and resolve(name) in self:
            return self[resolve(name)]
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or (
            isinstance(name, str) and dict.__contains__(self, resolve(name))
        )

    def get(self, name, default=None):
        return self[name] if name in self else default


class CheckedLayout:
    """A plugin's layout: the same name, source and description, its calls guarded and its
    results checked; any other attribute (``uses_tag_random``) is the layout's own."""

    def __init__(self, layout: Layout, plugin: str) -> None:
        self.layout, self.plugin = layout, plugin
        self.name = layout.name
        self.source = layout.source
        self.description = getattr(layout, "description", "")

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("layout", "plugin"):  # unpickling, copying
            raise AttributeError(attr)
        return getattr(self.layout, attr)

    def __repr__(self) -> str:
        return f"CheckedLayout({self.layout!r}, plugin={self.plugin!r})"

    def memstart_align(self, granule: int) -> int:
        value = self._call("memstart_align", self.layout.memstart_align, granule)
        return self._checked(check_memstart_align, value, granule)

    def compute(self, batch: LayoutBatch) -> LayoutResult:
        result = self._call("compute", self.layout.compute, batch)
        return self._checked(check_layout_result, result, batch)

    def _call(self, method: str, fn: Callable, *args: Any) -> Any:
        return plugin_call(self.plugin, f"layout {self.name!r} {method}()", fn, *args)

    def _checked(self, check: Callable, *args: Any) -> Any:
        try:
            return check(*args)
        except LayoutOutputError as exc:
            raise PluginError(
                f"plugin {self.plugin!r}: layout {self.name!r}: {exc} (docs/model.md section 3)"
            ) from None


class CheckedCall:
    """A plugin's placement function (or its parameter check), called through the boundary; a
    :class:`SweepError` it raises (its own one-line refusal of a parameter) passes unchanged."""

    def __init__(self, fn: Callable, plugin: str, what: str) -> None:
        self.fn, self.plugin, self.what = fn, plugin, what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        value, refusal = plugin_call(self.plugin, self.what, self._call, args, kwargs)
        if refusal is not None:
            raise refusal
        return value

    def _call(self, args: tuple, kwargs: dict) -> tuple[Any, SweepError | None]:
        try:
            return self.fn(*args, **kwargs), None
        except SweepError as exc:
            return None, exc


class CheckedPlacement(CheckedCall):
    """A plugin's placement function: its addresses must lie in the map's trimmed banks
    (docs/model.md section 1), and it must give at least one, or the map fails in planning,
    naming the plugin, instead of every unit failing later (or a sweep of nothing)."""

    def __call__(self, banks, granule, params, context) -> Any:
        result = super().__call__(banks, granule, params, context)
        if isinstance(result, Progression):
            return result
        try:
            addresses = np.asarray(result)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"plugin {self.plugin!r}: {self.what} returned {exc}") from None
        if addresses.dtype.kind not in "iu":
            return result  # sweep.plan.placements says so, in one line
        name = context.get("memory_map", "?") if isinstance(context, dict) else "?"
        if not addresses.size:
            raise PluginError(
                f"plugin {self.plugin!r}: {self.what} gave no address for memory map {name!r}"
            )
        starts = np.array([b for b, _ in banks], dtype=np.uint64)
        ends = np.array([e for _, e in banks], dtype=np.uint64)
        flat = addresses.ravel()
        pages = (flat.astype(np.uint64) if flat.min() >= 0 else flat.view(np.uint64)) & ~np.uint64(
            granule - 1
        )
        bank = np.searchsorted(starts, pages, side="right") - 1
        inside = (bank >= 0) & (pages < ends[np.maximum(bank, 0)])
        if not inside.all():
            bad = int(flat[int(np.argmin(inside))])
            raise PluginError(
                f"plugin {self.plugin!r}: {self.what} gave {bad:#x}, outside every"
                f" {granule_name(granule)}-trimmed bank of memory map {name!r}"
            )
        return result
