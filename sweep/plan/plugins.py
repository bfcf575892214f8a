"""The plugin manager: built-in plugins, third-party entry points, and what they registered.

Built-ins are the modules in ``DEFAULT_PLUGINS``; third-party plugins come from the entry-point
group ``sweep``. ``SWEEP_PLUGINS`` (comma-separated names) limits which load, for reproducible
runs. Loading is lazy and happens once; a plugin that fails to import or registers bad data is
reported by name (``registry().errors``, ``sweep plugins``) and the others still load.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import pluggy

from sweep import __version__
from sweep.core.errors import PluginError
from sweep.core.kconfig import GRANULES, VA_BITS_CHOICES, granule_name
from sweep.core.memmap import MemoryMap
from sweep.core.text import control_characters
from sweep.model.layout import Layout
from sweep.plan import hookspecs
from sweep.plan.checked import CheckedCall, CheckedLayout, CheckedPlacement, Layouts
from sweep.plan.guard import forget_stalled
from sweep.plan.guard import guarded as _guarded
from sweep.plan.guard import reason as _reason

log = logging.getLogger(__name__)

DEFAULT_PLUGINS = (
    "sweep_plugins.layouts",
    "sweep_plugins.placements",
    "sweep_plugins.boards",
    "sweep_plugins.families",
)
_BUILTIN_ORDER = {name: i for i, name in enumerate(DEFAULT_PLUGINS)}
ENTRY_POINT_GROUP = "sweep"
ENV_PLUGINS = "SWEEP_PLUGINS"
"""Comma-separated plugin names to load (built-in module names or entry-point names)."""
ENV_STRICT = "SWEEP_STRICT_PLUGINS"
"""Set to 1 to turn a broken plugin into an error instead of a warning (for CI)."""

_WHY_KCONFIG = (
    "granules and VA_BITS choices are the architecture's (sweep.core.kconfig); list other"
    " va_bits in the sweep config"
)
REMOVED_HOOKS = {"register_granules": _WHY_KCONFIG, "register_va_bits": _WHY_KCONFIG}
"""Hooks va-sweep no longer calls, and why: a plugin still implementing one is reported."""
REMOVED_PLUGINS = {"granules": _WHY_KCONFIG, "sweep_plugins.granules": _WHY_KCONFIG}
"""Built-in plugins that are gone, and why: ``SWEEP_PLUGINS`` naming one is reported."""
KCONFIG_OWNER = "arm64 (sweep.core.kconfig)"
"""Who the granules and their VA_BITS choices come from, in place of a plugin name."""

pm = pluggy.PluginManager("sweep")
pm.add_hookspecs(hookspecs)


@dataclass
class Registry:
    """Everything the loaded plugins registered, keyed by name, each remembering its plugin; the
    granules (each owned by ``KCONFIG_OWNER``) and their VA_BITS choices come from the kconfig."""

    granules: dict[int, str] = field(default_factory=lambda: dict.fromkeys(GRANULES, KCONFIG_OWNER))
    va_bits: dict[int, list[int]] = field(
        default_factory=lambda: {g: list(v) for g, v in VA_BITS_CHOICES.items()}
    )
    memory_maps: dict[str, MemoryMap] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    layouts: Layouts = field(default_factory=Layouts)
    placements: dict[str, Callable] = field(default_factory=dict)
    placement_checks: dict[str, Callable] = field(default_factory=dict)
    owner: dict[tuple[str, object], str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


_registry: Registry | None = None
_loaded = False


_exactly: set[str] | None = None
"""Set by ``load_exactly``: the plugins a worker loads, whatever its environment says."""


def _wanted() -> set[str] | None:
    if _exactly is not None:
        return _exactly
    value = os.environ.get(ENV_PLUGINS)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_exactly(names: Iterable[str]) -> list[str]:
    """Load the plugins ``names`` and no others (a worker: those its sweep's process loaded),
    whatever ``SWEEP_PLUGINS`` says here; returns those that cannot be loaded. This module is
    the one owner of what is loaded: executors call this, never set its state."""
    global _exactly
    wanted = set(names)
    if _loaded and _exactly == wanted:
        return sorted(wanted - set(loaded()))
    _exactly = wanted
    reset(keep_exactly=True)
    registry()
    return sorted(wanted - set(loaded()))


def loaded() -> list[str]:
    """Names of the plugins registered in this process."""
    return sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None)


def _is_wanted(name: str, wanted: set[str] | None) -> bool:
    """A built-in may be named in full (``sweep_plugins.boards``) or short (``boards``)."""
    return wanted is None or name in wanted or name.rpartition(".")[2] in wanted


@dataclass
class PluginSource:
    """Where a loaded plugin came from, for ``sweep plugins``."""

    kind: str  # "built-in", "entry point" or "registered"
    version: str
    path: str
    distribution: str = ""


_sources: dict[str, PluginSource] = {}
_auto_loaded: set[str] = set()
"""Plugins load_plugins registered itself (a later load with another SWEEP_PLUGINS drops them)."""


def load_plugins() -> None:
    """Register built-in and entry-point plugins once; broken ones are recorded, not fatal."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    wanted = _wanted()
    errors: dict[str, str] = {}
    found: set[str] = set()
    for name in list(_auto_loaded):  # loaded under an earlier SWEEP_PLUGINS
        if not _is_wanted(name, wanted) or pm.get_plugin(name) is None:
            if pm.get_plugin(name) is not None:
                pm.unregister(name=name)
            _auto_loaded.discard(name)
    for module_name in DEFAULT_PLUGINS:
        if not _is_wanted(module_name, wanted):
            continue
        found.update((module_name, module_name.rpartition(".")[2]))
        module, failure = _guarded(module_name, "import", importlib.import_module, module_name)
        if failure is not None:  # a broken built-in should not hide the others
            errors[module_name] = _reason(failure)
            continue
        if pm.get_plugin(module_name) is None:
            pm.register(module, name=module_name)
            _auto_loaded.add(module_name)
        _sources[module_name] = PluginSource(
            "built-in", _sweep_version(), getattr(module, "__file__", "") or ""
        )
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if not _is_wanted(ep.name, wanted):
            continue
        found.add(ep.name)
        if pm.get_plugin(ep.name) is not None:
            continue
        dist = getattr(ep, "dist", None)
        plugin, failure = _guarded(ep.name, "import", ep.load)
        if failure is None:
            _, failure = _guarded(ep.name, "import", pm.register, plugin, name=ep.name)
        if failure is not None:  # pluggy's own loader stops at the first failure
            errors[ep.name] = f"{_reason(failure)} (entry point {ep.value})"
            continue
        _auto_loaded.add(ep.name)
        _sources[ep.name] = PluginSource(
            "entry point",
            dist.version if dist is not None else "",
            getattr(plugin, "__file__", "") or ep.value,
            dist.metadata["Name"] if dist is not None else "",
        )
    for name in sorted((wanted or set()) - found):
        errors[name] = (
            f"named in {ENV_PLUGINS} but no built-in plugin or entry point (group"
            f" {ENTRY_POINT_GROUP!r}) has that name"
        )
        if name in REMOVED_PLUGINS:
            errors[name] = f"named in {ENV_PLUGINS}, a removed built-in: {REMOVED_PLUGINS[name]}"
    errors.update(_unknown_hooks())
    _load_errors.update(errors)
    for name, reason in errors.items():
        _report(name, reason)


def _unknown_hooks() -> dict[str, str]:
    """Plugins implementing a hook no hookspec names (a typo, ``register_memory_mapz``, or a
    hook in ``REMOVED_HOOKS``): what pluggy's ``check_pending`` refuses, each named with its
    plugin, a removed hook with why (sweep/plan/hookspecs.py)."""
    found: dict[str, list[str]] = {}
    for name, caller in vars(pm.hook).items():
        if getattr(caller, "spec", True) is None:
            for impl in caller.get_hookimpls():
                found.setdefault(impl.plugin_name, []).append(name)
    known = ", ".join(sorted(n for n, c in vars(pm.hook).items() if getattr(c, "spec", None)))
    reports = {}
    for plugin, hooks in found.items():
        parts = []
        unknown = sorted(h for h in hooks if h not in REMOVED_HOOKS)
        if unknown:
            parts.append(f"implements no hook of va-sweep: {', '.join(unknown)} (hooks: {known})")
        removed = sorted(h for h in hooks if h in REMOVED_HOOKS)
        for why in dict.fromkeys(REMOVED_HOOKS[h] for h in removed):  # one reason said once
            shown = ", ".join(h for h in removed if REMOVED_HOOKS[h] == why)
            parts.append(f"implements {shown}, removed from va-sweep: {why}")
        reports[plugin] = "; ".join(parts)
    return reports


def _sweep_version() -> str:
    return __version__


_load_errors: dict[str, str] = {}


def plugin_info() -> list[dict[str, object]]:
    """Every plugin: name, hooks it implements, version, source path, and its error if any."""
    reg = registry()
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:
            continue
        source = _sources.get(name) or PluginSource(
            "registered", "", getattr(plugin, "__file__", "") or repr(plugin)
        )
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        rows.append(
            {
                "name": name,
                "kind": source.kind,
                "version": source.version,
                "distribution": source.distribution,
                "path": source.path,
                "hooks": hooks,
                "error": reg.errors.get(name, ""),
            }
        )
    for name, reason in sorted(reg.errors.items()):
        if pm.get_plugin(name) is None:
            rows.append(
                {
                    "name": name,
                    "kind": "not loaded",
                    "version": "",
                    "distribution": "",
                    "path": "",
                    "hooks": [],
                    "error": reason,
                }
            )
    return rows


def _report(plugin: str, reason: str) -> None:
    if os.environ.get(ENV_STRICT) == "1":
        raise PluginError(f"plugin {plugin!r}: {reason}")
    log.warning("plugin %r skipped: %s", plugin, reason)


def reset(keep_exactly: bool = False) -> None:
    """Forget what plugins registered (after a test registers or unregisters one), and look for
    plugins again on next use (a new entry point, another ``SWEEP_PLUGINS``)."""
    global _registry, _loaded, _exactly
    _registry = None
    _loaded = False
    if not keep_exactly:  # a worker loading its sweep's plugins keeps what hung in its parent
        _exactly = None
        forget_stalled()
    _load_errors.clear()


def registry() -> Registry:
    """Call every hook once and keep what was registered, checking each item as it arrives."""
    global _registry
    load_plugins()
    if _registry is not None:
        return _registry
    reg = Registry(errors=dict(_load_errors))
    for hook_name, collect in _COLLECTORS.items():
        # One implementation at a time (not pm.hook.X()), so one plugin's failure is its own.
        # Built-ins first, in DEFAULT_PLUGINS order, then the others as they were registered:
        # a plugin reusing a built-in name gets the error, not the built-in.
        impls = sorted(
            getattr(pm.hook, hook_name).get_hookimpls(),
            key=lambda impl: _BUILTIN_ORDER.get(impl.plugin_name, len(_BUILTIN_ORDER)),
        )
        for impl in impls:
            name = impl.plugin_name
            register = lambda *a, _c=collect, _n=name, **k: _c(reg, _n, *a, **k)  # noqa: E731
            _, exc = _guarded(name, f"the hook {hook_name}", impl.function, register=register)
            if exc is not None:
                reason = str(exc) if isinstance(exc, PluginError) else f"{hook_name}: {exc}"
                reg.errors[name] = reason
                _report(name, reason)
    _registry = reg
    return reg


def _bad(plugin: str, hook: str, message: str) -> PluginError:
    """Bad data from ``plugin``; the message starts with the hook (the caller names the plugin)."""
    return PluginError(f"{hook}: {message}")


def _claim(reg: Registry, plugin: str, hook: str, kind: str, key: object, shown: str) -> None:
    """The one duplicate-name policy of every kind: the first registration of a name wins and a
    second one, from any plugin, is refused and reported under that plugin's name. Built-ins
    register first, so a plugin can never silently replace one."""
    other = reg.owner.get((kind, key))
    if other is not None:
        raise _bad(plugin, hook, f"{shown} already comes from {other!r}")
    reg.owner[(kind, key)] = plugin


def _add_memory_map(
    reg: Registry, plugin: str, memory_map: MemoryMap, family: str | None = None
) -> None:
    if not isinstance(memory_map, MemoryMap):
        raise _bad(plugin, "register_memory_maps", f"expected a MemoryMap, got {memory_map!r}")
    name = memory_map.name
    _check_name(plugin, "register_memory_maps", "memory map", name)
    _claim(reg, plugin, "register_memory_maps", "map", name, f"memory map {name!r}")
    reg.memory_maps[name] = memory_map
    if family:
        reg.families[name] = family


def _add_layout(reg: Registry, plugin: str, layout: Layout) -> None:
    if not isinstance(layout, Layout) or not getattr(layout, "source", ""):
        raise _bad(
            plugin,
            "register_layouts",
            f"{layout!r} must have name, source (its kernel source), description, "
            "memstart_align() and compute()",
        )
    _check_name(plugin, "register_layouts", "layout", layout.name)
    _claim(reg, plugin, "register_layouts", "layout", layout.name, f"layout {layout.name!r}")
    builtin = plugin in _BUILTIN_ORDER  # the project's own, held to the reference by the tests
    reg.layouts[layout.name] = layout if builtin else CheckedLayout(layout, plugin)


def _add_placement(
    reg: Registry, plugin: str, kind: str, fn: Callable, check: Callable | None = None
) -> None:
    if not isinstance(kind, str) or not callable(fn) or not (check is None or callable(check)):
        raise _bad(
            plugin,
            "register_placements",
            "expected register(kind: str, fn: callable, check: callable = None)",
        )
    _check_name(plugin, "register_placements", "placement", kind)
    _claim(reg, plugin, "register_placements", "placement", kind, f"placement {kind!r}")
    if plugin not in _BUILTIN_ORDER:
        fn = CheckedPlacement(fn, plugin, f"placement {kind!r}")
        check = check and CheckedCall(check, plugin, f"placement {kind!r} check")
    reg.placements[kind] = fn
    if check is not None:
        reg.placement_checks[kind] = check


def _check_name(plugin: str, hook: str, kind: str, name: object) -> None:
    """A name is printed and typed: a non-empty string with no control character."""
    if not isinstance(name, str) or not name or control_characters(name):
        raise _bad(plugin, hook, f"{kind} name {name!r}: needs a non-empty name with no control "
                   "characters (they would reach the terminal)")  # fmt: skip


_COLLECTORS = {
    "register_memory_maps": _add_memory_map,
    "register_layouts": _add_layout,
    "register_placements": _add_placement,
}


def get_layouts() -> Mapping[str, Layout]:
    return registry().layouts


def get_memory_maps() -> Mapping[str, MemoryMap]:
    return registry().memory_maps


def get_placements() -> Mapping[str, Callable]:
    return registry().placements


def kconfig_va_bits() -> dict[str, list[int]]:
    """Linux's VA_BITS choices per granule name (``sweep.core.kconfig.VA_BITS_CHOICES``)."""
    return {granule_name(g): sorted(v) for g, v in sorted(registry().va_bits.items())}
