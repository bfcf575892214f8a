"""A plugin that exits, hangs, prints or returns garbage (issue 22, items 5, 6 and 11): each one
is a line naming the plugin (and the unit, in a sweep), never an exit, a hang, a polluted
stdout or an impossible row. Marker ``faults``; each test takes a second or two."""

from __future__ import annotations

import importlib.metadata
import math
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest
from click.testing import CliRunner
from small_sweep import small_config, write_map

from sweep.cli import main
from sweep.core.errors import PluginError, SweepError
from sweep.core.memmap import MemoryMap
from sweep.model.layout import LayoutBatch, LayoutResult
from sweep.plan import plugins as sweep_plugins
from sweep.plan.guard import ENV_BUDGET, plugin_call
from sweep.run.driver import run_sweep

pytestmark = pytest.mark.faults


@pytest.fixture
def entry_point(tmp_path, monkeypatch):
    """``entry_point(name, source)``: a module on the path, offered as entry point ``name``."""
    points = []
    real = importlib.metadata.entry_points

    def offered(**kwargs):
        return list(real(**kwargs)) + (points if kwargs.get("group") == "sweep" else [])

    def add(name: str, source: str):
        module = f"sweep_fault_{name.replace('-', '_')}"
        (tmp_path / f"{module}.py").write_text(source)
        points.append(importlib.metadata.EntryPoint(name=name, value=module, group="sweep"))
        sweep_plugins.reset()

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sweep_plugins.importlib.metadata, "entry_points", offered)
    yield add
    for point in points:
        if sweep_plugins.pm.get_plugin(point.name) is not None:
            sweep_plugins.pm.unregister(name=point.name)
        sys.modules.pop(point.value, None)
    sweep_plugins.reset()


def test_sys_exit_at_import_is_an_error_naming_the_plugin(entry_point):
    entry_point("exits", "import sys\nsys.exit(0)\n")
    reg = sweep_plugins.registry()
    assert reg.errors["exits"].startswith("import raised SystemExit(0)")
    assert "juno" in reg.memory_maps  # the others still load


def test_sys_exit_at_import_is_refused_in_strict_mode(entry_point, monkeypatch):
    entry_point("exits", "raise SystemExit(0)\n")
    monkeypatch.setenv(sweep_plugins.ENV_STRICT, "1")
    out = CliRunner().invoke(main, ["maps", "juno"])
    assert out.exit_code == 2
    assert "plugin 'exits': import raised SystemExit(0)" in out.output


def test_system_exit_in_a_hook_is_a_warning_not_an_exit(add_plugin):
    def register_memory_maps(register):
        raise SystemExit(3)

    add_plugin("exit-hook", register_memory_maps=register_memory_maps)
    out = CliRunner().invoke(main, ["maps", "juno"])
    assert out.exit_code == 0, out.output
    assert "juno" in out.stdout
    assert sweep_plugins.registry().errors["exit-hook"] == (
        "the hook register_memory_maps raised SystemExit(3) (a plugin must not end the process)"
    )


def test_a_hook_that_never_returns_is_stopped_at_the_budget(add_plugin, monkeypatch):
    def register_memory_maps(register):
        while True:
            try:
                time.sleep(10)
            except Exception:  # a plugin swallowing what it can: the budget still holds
                pass

    add_plugin("hangs", register_memory_maps=register_memory_maps)
    monkeypatch.setenv(ENV_BUDGET, "0.5")
    started = time.monotonic()
    out = CliRunner().invoke(main, ["plugins"])
    assert time.monotonic() - started < 5
    assert out.exit_code == 0, out.output
    assert "the hook register_memory_maps did not return within 0.5 s" in out.output


def test_a_bad_budget_is_one_line(monkeypatch):
    monkeypatch.setenv(ENV_BUDGET, "soon")
    with pytest.raises(Exception, match=r"SWEEP_PLUGIN_TIMEOUT='soon': expected seconds"):
        plugin_call("p", "x", lambda: 1)


def test_a_plugin_printing_leaves_stdout_to_the_sweep(add_plugin):
    def register_memory_maps(register):
        print("HELLO FROM A PLUGIN")
        register(MemoryMap("chatty-board", [(0x8000_0000, 1 << 30)]))

    add_plugin("chatty", register_memory_maps=register_memory_maps)
    out = CliRunner().invoke(main, ["maps", "chatty-board"])
    assert out.exit_code == 0, out.output
    assert "HELLO" not in out.stdout and "chatty-board" in out.stdout
    assert "HELLO FROM A PLUGIN" in out.stderr


def test_a_name_with_control_characters_is_refused(add_plugin):
    evil = "juno\x1b]0;pwned\x07\nFAKE LINE"
    add_plugin("evil", register_memory_maps=lambda register: register(MemoryMap(evil, [(0, 1)])))
    bad = PluginLayout("ok", name="x\x1b[2J")
    add_plugin("evil-layout", register_layouts=lambda register: register(bad))
    reg = sweep_plugins.registry()
    assert evil not in reg.memory_maps and "x\x1b[2J" not in reg.layouts
    assert "'juno\\x1b]0;pwned\\x07\\nFAKE LINE': has control characters" in reg.errors["evil"]
    assert reg.errors["evil-layout"] == (
        "register_layouts: layout name 'x\\x1b[2J': needs a non-empty name with no control"
        " characters (they would reach the terminal)"
    )


# --- layouts in a sweep -----------------------------------------------------------------------


@dataclass(frozen=True)
class PluginLayout:
    """linux-4.8's answer (delegated), or a broken one: ``mode`` says how it breaks."""

    mode: str
    name: str = "fault-layout"
    source: str = "tests: a layout that misbehaves"
    description: str = "a layout that misbehaves"

    def memstart_align(self, granule: int) -> int:
        return 1 << 30

    def compute(self, batch: LayoutBatch) -> LayoutResult:
        good = sweep_plugins.registry().layouts["linux-4.8"].compute(batch)
        if self.mode == "hang":
            while True:
                pass
        if self.mode == "nan":
            return replace(good, tree_va_bits=np.full(len(batch.idmap_pa), math.nan))
        if self.mode == "huge":
            return replace(good, tree_va_bits=np.full(len(batch.idmap_pa), 110))
        if self.mode == "exit":
            raise SystemExit(5)
        if self.mode == "print":
            print("LAYOUT SAYS HI")
        if self.mode == "hog":
            np.ones(3 << 27)  # 3 GiB of float64
        return good


def _sweep(add_plugin, tmp_path, mode: str):
    add_plugin("fault-layouts", register_layouts=lambda register: register(PluginLayout(mode)))
    config = small_config(write_map(tmp_path), layouts=["fault-layout"])
    return run_sweep(config, out=str(tmp_path / "out"), workers=1, progress=False)


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("hang", "layout 'fault-layout' compute() did not return within 1 s"),
        ("nan", "tree_va_bits is nan: not an integer"),
        ("huge", "tree_va_bits is outside [max(25, idmap_va_bits), 52] (row 0: 0x6e)"),
        ("exit", "layout 'fault-layout' compute() raised SystemExit(5)"),
    ],
)
def test_a_broken_layout_fails_its_units_naming_plugin_and_unit(
    add_plugin, tmp_path, monkeypatch, mode, error
):
    monkeypatch.setenv(ENV_BUDGET, "1")
    report = _sweep(add_plugin, tmp_path, mode)
    assert report.status == "failed" and report.rows_written == 0
    assert len(report.failed) == report.units == 8
    first = report.failed[0]
    assert first["unit"].startswith("4K/va39/")
    assert first["error"].startswith("PluginError: plugin 'fault-layouts': layout 'fault-layout'")
    assert error in first["error"]


def test_a_layout_that_prints_writes_its_rows_and_nothing_to_stdout(add_plugin, tmp_path, capfd):
    report = _sweep(add_plugin, tmp_path, "print")
    assert report.status == "complete" and report.rows_written == 64
    captured = capfd.readouterr()
    assert "LAYOUT SAYS HI" not in captured.out
    assert "LAYOUT SAYS HI" in captured.err


def test_a_plugin_error_inside_a_call_keeps_its_plugin_name():
    def inner():
        raise PluginError("plugin 'other': x")

    with pytest.raises(PluginError, match=r"^plugin 'other': x$"):
        plugin_call("outer", "a call", inner)


def test_the_budget_holds_outside_the_main_thread_too(monkeypatch):
    """A Dask worker runs units in threads: there the budget is an asynchronous exception."""
    import threading

    monkeypatch.setenv(ENV_BUDGET, "0.3")
    outcome = {}

    def spin():
        while True:
            pass

    def call():
        try:
            plugin_call("spinner", "layout 'x' compute()", spin)
        except PluginError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=call)
    started = time.monotonic()
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert outcome["error"] == (
        "plugin 'spinner': layout 'x' compute() did not return within 0.3 s"
        " (SWEEP_PLUGIN_TIMEOUT sets the budget)"
    )
    sweep_plugins.reset()  # forget the stalled call


def test_a_hook_that_hung_in_the_sweep_is_not_waited_for_again_in_its_workers(
    add_plugin, tmp_path, monkeypatch
):
    calls = tmp_path / "calls"

    def register_memory_maps(register):
        with calls.open("a") as f:
            f.write("called\n")
        while True:
            time.sleep(1)

    add_plugin("hangs", register_memory_maps=register_memory_maps)
    monkeypatch.setenv(ENV_BUDGET, "0.5")
    config = small_config(write_map(tmp_path))  # the registry is built here: the hook hangs once
    report = run_sweep(config, out=str(tmp_path / "out"), workers=2, progress=False)
    assert report.status == "complete" and report.rows_written == 64
    assert calls.read_text() == "called\n"  # not once more in each worker


def test_a_long_call_is_named_on_stderr_while_it_runs(monkeypatch, capfd):
    from sweep.plan import guard

    monkeypatch.setattr(guard, "NOTE_AFTER", 0.2)
    monkeypatch.setenv(ENV_BUDGET, "1")
    with pytest.raises(PluginError, match="did not return within 1 s"):
        plugin_call("slow", "the hook register_layouts", time.sleep, 30)
    assert capfd.readouterr().err == (
        "sweep: waiting for plugin 'slow': the hook register_layouts; stopped at 1 s\n"
    )
    sweep_plugins.reset()


def test_a_worker_memory_limit_fails_the_unit_not_the_machine(add_plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_WORKER_MEMORY", "2G")
    report = _sweep(add_plugin, tmp_path, "hog")
    assert report.status == "failed" and len(report.failed) == 8
    assert "compute() raised MemoryError: Unable to allocate 3.00 GiB" in report.failed[0]["error"]


def test_a_bad_worker_memory_limit_is_one_line(add_plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_WORKER_MEMORY", "lots")
    with pytest.raises(SweepError, match=r"^SWEEP_WORKER_MEMORY='lots': expected a byte count"):
        _sweep(add_plugin, tmp_path, "ok")


@pytest.mark.parametrize(
    ("addresses", "error"),
    [
        ([0x10], "gave 0x10, outside every 4K-trimmed bank of memory map 't1g'"),
        ([-4096], "gave -0x1000, outside every 4K-trimmed bank of memory map 't1g'"),
        ([], "gave no address for memory map 't1g'"),
    ],
)
def test_a_placement_plugin_giving_no_or_wild_addresses_is_refused_in_planning(
    add_plugin, tmp_path, addresses, error
):
    def register_placements(register):
        register("wild", lambda banks, granule, params, context: np.array(addresses, np.int64))

    add_plugin("wild-placements", register_placements=register_placements)
    config = small_config(write_map(tmp_path), placement={"kind": "wild"})
    with pytest.raises(SweepError, match="^plugin 'wild-placements': placement 'wild' " + error):
        run_sweep(config, out=str(tmp_path / "out"), workers=1, progress=False)
    assert not (tmp_path / "out" / "_sweep.json").exists()
