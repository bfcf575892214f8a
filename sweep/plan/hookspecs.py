"""Every hook a va-sweep plugin can implement, each documented with its real signature.

Plugins contribute many things, so each hook receives a ``register`` callback (as in llm's
``register_models`` and tox's ``tox_register_tox_env``): the host checks each item as it
arrives and can name the plugin in an error. Every name (a map, a layout, a placement kind) is
registered once: built-ins go first, and a later registration of a taken name is refused and
reported under the plugin that made it. Granules and their VA_BITS choices are no hook: they are
the architecture's (:mod:`sweep.core.kconfig`), and a plugin implementing the removed
``register_granules`` or ``register_va_bits`` is reported (``REMOVED_HOOKS`` of
:mod:`sweep.plan.plugins`). A plugin writes::

    from sweep import hookimpl

    @hookimpl
    def register_memory_maps(register):
        register(MemoryMap("my-board", [(0x8000_0000, 2 << 30)]))

Every call into a plugin (its import, each hook, a layout's ``compute``, a placement) goes
through one boundary, :mod:`sweep.plan.guard`: an exception of any kind, ``SystemExit`` too, is
reported under the plugin's name; a call has ``SWEEP_PLUGIN_TIMEOUT`` seconds (default 30); what
a plugin prints goes to stderr. A layout's answer is checked against docs/model.md section 3
(:mod:`sweep.model.checks`) before it becomes a row, and every registered name must be free of
control characters.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("sweep")
hookimpl = pluggy.HookimplMarker("sweep")


@hookspec
def register_memory_maps(register: Callable[..., None]) -> None:
    """Register memory maps: ``register(memory_map: MemoryMap, family: str | None = None)``."""


@hookspec
def register_layouts(register: Callable[[object], None]) -> None:
    """Register HYP VA layouts: ``register(layout: sweep.model.layout.Layout)``.

    The builder calls ``layout.compute(batch)`` once per batch with every row of that layout,
    as numpy arrays (``sweep.model.layout.LayoutBatch``: rows of many maps, granules and VA_BITS).
    """


@hookspec
def register_placements(register: Callable[[str, Callable], None]) -> None:
    """Register idmap placements: ``register(kind, fn, check=None)``.

    ``fn(banks: list[tuple[int, int]], granule: int, params: dict, context: dict) -> numpy uint64
    array`` (or a ``sweep.plan.placements.Progression``) returns candidate idmap addresses for the
    granule-trimmed banks ``(start, end)``; ``params`` is the ``[placement]`` table of the sweep
    config, ``context`` names the memory map and granule (for seeding). The plan aligns,
    deduplicates and sorts. ``check(params)`` raises ``sweep.core.errors.ValidationError``
    (``"placement.KEY: rule"``) for bad parameters; the config calls it before reading any map.
    A built-in ``fn`` may carry ``fn.many(banks_of_each_map, granule, params, contexts) ->
    (maps, count) uint64 array``, the same for many maps at once
    (``sweep.plan.placements.placements_many``).
    """
