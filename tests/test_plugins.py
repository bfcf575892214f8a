"""The plugin layer: every hook tested and documented, discovery, broken plugins, the CLI.

Test plugins are registered under a name and unregistered after (the ``test_plugins`` fixture);
installed third-party plugins are kept out by the same fixture.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sweep import hookimpl, hookspecs
from sweep import plugins as sweep_plugins
from sweep.cli import main
from sweep.errors import PluginError
from sweep.model import Bank, MemoryMap
from sweep_plugins import placements

README = Path(__file__).parents[1] / "README.md"
HOOKS = sorted(
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "sweep_spec")
)
GiB = 1 << 30


@pytest.fixture
def test_plugins():
    """``add(name, **hooks)`` registers a plugin of hook functions; all are removed after."""
    added = []

    def add(name: str, **hooks):
        module = types.ModuleType(name)
        for hook_name, fn in hooks.items():
            setattr(module, hook_name, hookimpl(fn))
        sweep_plugins.pm.register(module, name=name)
        added.append(name)
        sweep_plugins.reset()
        return module

    yield add
    for name in added:
        if sweep_plugins.pm.get_plugin(name) is not None:
            sweep_plugins.pm.unregister(name=name)
    sweep_plugins.reset()


# --- every hook: tested and documented --------------------------------------------------------


def test_hooks_are_the_expected_ones():
    assert HOOKS == [
        "register_granules",
        "register_layouts",
        "register_memory_maps",
        "register_placements",
        "register_va_bits",
    ]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in globals(), f"write test_hook_{hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    """As datasette checks its plugin_hooks docs: the README shows each hook's real signature."""
    fn = getattr(hookspecs, hook)
    signature = f"`{hook}({', '.join(inspect.signature(fn).parameters)})`"
    assert signature in README.read_text(), f"README.md does not document {signature}"
    assert fn.__doc__ and "register(" in fn.__doc__


def test_hook_register_granules(test_plugins):
    assert set(sweep_plugins.registry().granules) == {4096, 16384, 65536}
    test_plugins("odd-granule", register_granules=lambda register: register(8192))
    reg = sweep_plugins.registry()
    assert reg.errors["odd-granule"] == ("register_granules: 8192 is not one of 4096, 16384, 65536")
    assert set(reg.granules) == {4096, 16384, 65536}


def test_hook_register_va_bits(test_plugins):
    # MODEL.md section 8: Linux's choices per granule.
    assert sweep_plugins.kconfig_va_bits() == {
        "4K": [39, 48, 52],
        "16K": [36, 47, 48, 52],
        "64K": [42, 48, 52],
    }
    test_plugins("more-va-bits", register_va_bits=lambda register: register(4096, [40, 39]))
    assert sweep_plugins.kconfig_va_bits()["4K"] == [39, 40, 48, 52]
    test_plugins("bad-va-bits", register_va_bits=lambda register: register(4096, [60]))
    assert "va_bits: 60 is outside 32..52" in sweep_plugins.registry().errors["bad-va-bits"]


def test_hook_register_memory_maps(test_plugins):
    def register_memory_maps(register):
        register(MemoryMap("test-board", [(0x8000_0000, 2 * GiB)]), family="test")

    test_plugins("test-boards", register_memory_maps=register_memory_maps)
    reg = sweep_plugins.registry()
    assert reg.memory_maps["test-board"].banks == [Bank(0x8000_0000, 2 * GiB)]
    assert reg.families["test-board"] == "test"
    assert reg.owner[("map", "test-board")] == "test-boards"
    assert reg.owner[("map", "juno")] == "sweep_plugins.boards"

    test_plugins(
        "clash", register_memory_maps=lambda register: register(MemoryMap("juno", [(0, GiB)]))
    )
    test_plugins("not-a-map", register_memory_maps=lambda register: register((0, GiB)))
    test_plugins(
        "overlapping",
        register_memory_maps=lambda register: register(
            MemoryMap("bad", [(0, 2 * GiB), (GiB, GiB)])
        ),
    )
    errors = sweep_plugins.registry().errors
    assert errors["clash"].endswith("memory map 'juno' already comes from 'sweep_plugins.boards'")
    assert errors["not-a-map"].endswith("expected a MemoryMap, got (0, 1073741824)")
    assert errors["overlapping"] == (
        "register_memory_maps: memory map 'bad': bank [0x40000000-0x7fffffff] overlaps bank"
        " [0x0-0x7fffffff]"
    )
    assert sweep_plugins.registry().memory_maps["juno"].banks[0].base == 0x8000_0000


def test_hook_register_layouts(test_plugins):
    assert {"high-only", "merged", "tagged", "tagged-48"} <= set(sweep_plugins.get_layouts())
    builtin = sweep_plugins.get_layouts()["merged"]

    class NoSource:
        name, source, description = "no-source", "", "a layout that cites no kernel source"
        memstart_align = builtin.memstart_align
        compute = builtin.compute

    test_plugins("sourceless", register_layouts=lambda register: register(NoSource()))
    reg = sweep_plugins.registry()
    assert "no-source" not in reg.layouts
    assert "must have name, source (its kernel source)" in reg.errors["sourceless"]


def test_hook_register_placements(test_plugins):
    assert set(sweep_plugins.get_placements()) == {"kernel-load", "stride", "random", "list"}
    test_plugins(
        "every-gig",
        register_placements=lambda register: register(
            "every-gig",
            lambda banks, granule, params, context: np.arange(
                banks[0][0], banks[-1][1], GiB, dtype=np.uint64
            ),
        ),
    )
    fn = sweep_plugins.get_placements()["every-gig"]
    assert fn([(0x8000_0000, 0x1_8000_0000)], 4096, {}, {}).tolist() == [
        0x8000_0000,
        0xC000_0000,
        0x1_0000_0000,
        0x1_4000_0000,
    ]
    test_plugins("bad-kind", register_placements=lambda register: register(3, None))
    errors = sweep_plugins.registry().errors
    assert "expected register(kind: str, fn: callable)" in errors["bad-kind"]


# --- the built-in placements (MODEL.md section 8) -------------------------------------------

JUNO = [(0x8000_0000, 0xFF00_0000), (0x8_8000_0000, 0xA_0000_0000)]
CONTEXT = {"memory_map": "juno", "granule": 4096}


def test_kernel_load_is_lowest_bank_plus_text_offset():
    assert placements.kernel_load(JUNO[::-1], 4096, {"kind": "kernel-load"}, CONTEXT).tolist() == [
        0x8008_0000
    ]


def test_stride_walks_every_bank():
    out = placements.stride(JUNO, 4096, {"kind": "stride", "step": "2G"}, CONTEXT).tolist()
    assert out == [0x8000_0000, 0x8_8000_0000, 0x9_0000_0000, 0x9_8000_0000]
    # b + k*step < e: a bank shorter than one step still gives its base
    assert placements.stride(
        [(0x1000, 0x3000)], 4096, {"kind": "stride", "step": 0x1000}, CONTEXT
    ).tolist() == [0x1000, 0x2000]


def test_random_placement_is_reproducible_and_inside_the_banks():
    params = {"kind": "random", "count": 20_000, "seed": 5}
    first = placements.random_addresses(JUNO, 4096, params, CONTEXT)
    assert np.array_equal(first, placements.random_addresses(JUNO, 4096, params, CONTEXT))
    assert first.dtype == np.uint64
    inside = np.zeros(len(first), dtype=bool)
    for start, end in JUNO:
        inside |= (first >= start) & (first < end)
    assert inside.all()
    # uniform over bytes: the 6 GiB bank gets ~ 6/8 (0x7f00_0000 + 6 GiB in all) of the draws
    share = np.count_nonzero(first >= JUNO[1][0]) / len(first)
    assert abs(share - 6 / (6 + 0x7F00_0000 / GiB)) < 0.02
    other_map = placements.random_addresses(JUNO, 4096, params, {**CONTEXT, "memory_map": "x"})
    other_granule = placements.random_addresses(JUNO, 16384, params, {**CONTEXT, "granule": 16384})
    other_seed = placements.random_addresses(JUNO, 4096, {**params, "seed": 6}, CONTEXT)
    for other in (other_map, other_granule, other_seed):
        assert not np.array_equal(first, other)


def test_random_placement_is_the_same_in_another_process():
    code = textwrap.dedent("""
        from sweep_plugins.placements import random_addresses
        banks = [(0x8000_0000, 0xFF00_0000), (0x8_8000_0000, 0xA_0000_0000)]
        print(random_addresses(banks, 4096, {"kind": "random", "count": 5, "seed": 5},
                               {"memory_map": "juno", "granule": 4096}).tolist())
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "999", "PATH": "/usr/bin:/bin"},
    )
    here = placements.random_addresses(
        JUNO, 4096, {"kind": "random", "count": 5, "seed": 5}, CONTEXT
    ).tolist()
    assert out.stdout.strip() == str(here)


def test_list_placement_aligns_and_checks():
    params = {"kind": "list", "addresses": ["0x8008_1234", 0x8_8000_0001]}
    out = placements.listed(JUNO, 65536, params, CONTEXT)
    assert out.tolist() == [0x8008_0000, 0x8_8000_0000]


# --- discovery --------------------------------------------------------------------------------

GOOD_PLUGIN = """
from sweep import MemoryMap, hookimpl

@hookimpl
def register_memory_maps(register):
    register(MemoryMap("ep-board", [(0x8000_0000, 1 << 31)], source="entry point test"),
             family="ep")
"""
BAD_DATA_PLUGIN = """
from sweep import hookimpl

@hookimpl
def register_memory_maps(register):
    register("not a memory map")
"""
BROKEN_PLUGIN = "import sweep_no_such_module_anywhere\n"


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """A plugin distribution built and installed into a temp dir with pip, as a user would."""
    source = tmp_path_factory.mktemp("src")
    target = tmp_path_factory.mktemp("site")
    (source / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "sweep-test-boards"
        version = "1.2.3"

        [project.entry-points.sweep]
        aaa-broken = "sweep_test_broken"
        test-boards = "sweep_test_boards"
        zzz-bad-data = "sweep_test_bad_data"

        [tool.setuptools]
        py-modules = ["sweep_test_boards", "sweep_test_broken", "sweep_test_bad_data"]
    """)
    )
    (source / "sweep_test_boards.py").write_text(GOOD_PLUGIN)
    (source / "sweep_test_broken.py").write_text(BROKEN_PLUGIN)
    (source / "sweep_test_bad_data.py").write_text(BAD_DATA_PLUGIN)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return target


@pytest.fixture
def on_path(installed_plugins):
    sys.path.insert(0, str(installed_plugins))
    importlib.invalidate_caches()
    sweep_plugins.reset()
    yield
    sys.path.remove(str(installed_plugins))
    for name in ("aaa-broken", "test-boards", "zzz-bad-data"):
        if sweep_plugins.pm.get_plugin(name) is not None:
            sweep_plugins.pm.unregister(name=name)
    for module in ("sweep_test_boards", "sweep_test_broken", "sweep_test_bad_data"):
        sys.modules.pop(module, None)
    sweep_plugins.reset()


def test_installed_entry_point_plugin_is_discovered_and_broken_ones_do_not_stop_it(on_path):
    reg = sweep_plugins.registry()
    assert reg.memory_maps["ep-board"].banks == [Bank(0x8000_0000, 2 * GiB)]
    assert reg.families["ep-board"] == "ep"
    # the broken one sorts first and the bad-data one last: neither stops the others
    assert reg.errors["aaa-broken"] == (
        "ModuleNotFoundError: No module named 'sweep_no_such_module_anywhere' (entry point"
        " sweep_test_broken)"
    )
    assert reg.errors["zzz-bad-data"] == (
        "register_memory_maps: expected a MemoryMap, got 'not a memory map'"
    )
    assert "juno" in reg.memory_maps and "qemu-virt-4G" in reg.memory_maps
    info = {row["name"]: row for row in sweep_plugins.plugin_info()}
    assert info["test-boards"]["version"] == "1.2.3"
    assert info["test-boards"]["distribution"] == "sweep-test-boards"
    assert info["test-boards"]["hooks"] == ["register_memory_maps"]
    assert info["test-boards"]["path"].endswith("sweep_test_boards.py")
    assert info["aaa-broken"]["kind"] == "not loaded"

    out = CliRunner().invoke(main, ["plugins"])
    assert out.exit_code == 0
    assert "test-boards 1.2.3 (sweep-test-boards) [entry point]" in out.output
    assert "ERROR:  ModuleNotFoundError: No module named 'sweep_no_such" in out.output
    assert "sweep_plugins.boards" in out.output


def test_strict_mode_turns_a_broken_plugin_into_an_error(on_path, monkeypatch):
    monkeypatch.setenv(sweep_plugins.ENV_STRICT, "1")
    sweep_plugins.reset()
    with pytest.raises(PluginError, match=r"^plugin 'aaa-broken': ModuleNotFoundError"):
        sweep_plugins.registry()


def test_sweep_plugins_env_limits_what_loads(on_path, monkeypatch):
    monkeypatch.setenv(sweep_plugins.ENV_PLUGINS, "granules,sweep_plugins.layouts,test-boards,nope")
    sweep_plugins.reset()
    reg = sweep_plugins.registry()
    assert set(reg.memory_maps) == {"ep-board"}
    assert set(reg.granules) == {4096, 16384, 65536} and reg.layouts and not reg.placements
    assert set(reg.errors) == {"nope"}
    assert reg.errors["nope"].startswith("named in SWEEP_PLUGINS but no built-in plugin")
    loaded = {name for name, _ in sweep_plugins.pm.list_name_plugin()}
    assert "sweep_plugins.boards" not in loaded
    monkeypatch.delenv(sweep_plugins.ENV_PLUGINS)
    sweep_plugins.reset()
    assert "juno" in sweep_plugins.registry().memory_maps  # everything back


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_maps_shows_banks_family_and_source(tmp_path):
    path = tmp_path / "mine.iomem"
    path.write_text("80000000-ffffffff : System RAM\n")
    out = CliRunner().invoke(main, ["maps", "juno", str(path)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("juno  [board]  ARM Juno")
    assert lines[1] == "    source: torvalds/linux/arch/arm64/boot/dts/arm/juno-base.dtsi"
    assert lines[2:4] == [
        "    0x000080000000-0x0000feffffff  2032M",
        "    0x000880000000-0x0009ffffffff  6G",
    ]
    assert lines[4].startswith("mine  [file]")
    assert lines[-1] == "    0x000080000000-0x0000ffffffff  2G"


def test_cli_maps_error_is_one_line():
    out = CliRunner().invoke(main, ["maps", "junoo"])
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        "sweep: error: memory_maps: 'junoo' is not a registered memory map, family:NAME, glob or"
        " existing file (near matches: juno)"
    ]
