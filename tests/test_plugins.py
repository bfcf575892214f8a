"""The plugin layer: every hook tested and documented, discovery, broken plugins, the CLI.

Test plugins are registered under a name and unregistered after (the ``add_plugin`` fixture of
conftest.py);
installed third-party plugins are kept out by the same fixture.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sweep.cli import main
from sweep.core.errors import PluginError, ValidationError
from sweep.core.memmap import Bank, MemoryMap
from sweep.plan import hookspecs
from sweep.plan import plugins as sweep_plugins
from sweep.plan.config import validate_config
from sweep.plan.placements import StridedPlacements
from sweep_plugins import placements

README = Path(__file__).parents[1] / "README.md"
HOOKS = sorted(
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "sweep_spec")
)
GiB = 1 << 30


# --- every hook: tested and documented --------------------------------------------------------


def test_hooks_are_the_expected_ones():
    assert HOOKS == ["register_layouts", "register_memory_maps", "register_placements"]


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


KCONFIG_VA_BITS = {"4K": [39, 48, 52], "16K": [36, 47, 48, 52], "64K": [42, 48, 52]}
REMOVED = (
    "implements {hooks}, removed from va-sweep: granules and VA_BITS choices are the"
    " architecture's (sweep.core.kconfig); list other va_bits in the sweep config"
)


def test_granules_and_va_bits_are_the_architectures():
    """No plugin registers them: arm64's three granules and Linux's VA_BITS choices per granule
    (docs/model.md section 8) come from sweep.core.kconfig."""
    reg = sweep_plugins.registry()
    owner = "arm64 (sweep.core.kconfig)"
    assert reg.granules == {4096: owner, 16384: owner, 65536: owner}
    assert reg.va_bits == {4096: [39, 48, 52], 16384: [36, 47, 48, 52], 65536: [42, 48, 52]}
    assert sweep_plugins.kconfig_va_bits() == KCONFIG_VA_BITS
    assert not reg.errors


def test_a_plugin_implementing_a_removed_hook_is_reported(add_plugin, caplog):
    called = []
    add_plugin("old-granules", register_granules=lambda register: called.append(register(8192)))
    add_plugin(
        "old-both",
        register_granules=lambda register: called.append(register(4096)),
        register_va_bits=lambda register: called.append(register(4096, [40])),
    )
    with caplog.at_level("WARNING", logger=sweep_plugins.__name__):
        reg = sweep_plugins.registry()
    assert reg.errors == {
        "old-granules": REMOVED.format(hooks="register_granules"),
        "old-both": REMOVED.format(hooks="register_granules, register_va_bits"),
    }
    warned = [r.getMessage() for r in caplog.records]
    assert f"plugin 'old-granules' skipped: {reg.errors['old-granules']}" in warned
    assert f"plugin 'old-both' skipped: {reg.errors['old-both']}" in warned
    assert not called  # never called: the granules and VA_BITS stay the architecture's
    assert sweep_plugins.kconfig_va_bits() == KCONFIG_VA_BITS
    assert set(reg.granules) == {4096, 16384, 65536}
    info = {row["name"]: row for row in sweep_plugins.plugin_info()}
    assert info["old-both"]["error"] == reg.errors["old-both"]


def test_a_removed_hook_is_an_error_in_strict_mode(add_plugin, monkeypatch):
    monkeypatch.setenv(sweep_plugins.ENV_STRICT, "1")
    add_plugin("old-va-bits", register_va_bits=lambda register: register(4096, [40]))
    message = "plugin 'old-va-bits': " + REMOVED.format(hooks="register_va_bits")
    with pytest.raises(PluginError) as raised:
        sweep_plugins.registry()
    assert str(raised.value) == message


def test_hook_register_memory_maps(add_plugin):
    def register_memory_maps(register):
        register(MemoryMap("test-board", [(0x8000_0000, 2 * GiB)]), family="test")

    add_plugin("test-boards", register_memory_maps=register_memory_maps)
    reg = sweep_plugins.registry()
    assert reg.memory_maps["test-board"].banks == [Bank(0x8000_0000, 2 * GiB)]
    assert reg.families["test-board"] == "test"
    assert reg.owner[("map", "test-board")] == "test-boards"
    assert reg.owner[("map", "juno")] == "sweep_plugins.boards"

    add_plugin(
        "clash", register_memory_maps=lambda register: register(MemoryMap("juno", [(0, GiB)]))
    )
    add_plugin("not-a-map", register_memory_maps=lambda register: register((0, GiB)))
    add_plugin(
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


def test_hook_register_layouts(add_plugin):
    eras = "linux-4.6 linux-4.8 linux-4.17 linux-5.12 linux-6.2 linux-6.9 linux-7.0".split()
    assert set(eras) <= set(sweep_plugins.get_layouts())
    builtin = sweep_plugins.get_layouts()["linux-4.8"]

    class NoSource:
        name, source, description = "no-source", "", "a layout that cites no kernel source"
        memstart_align = builtin.memstart_align
        compute = builtin.compute

    add_plugin("sourceless", register_layouts=lambda register: register(NoSource()))
    reg = sweep_plugins.registry()
    assert "no-source" not in reg.layouts
    assert "must have name, source (its kernel source)" in reg.errors["sourceless"]


def test_hook_register_placements(add_plugin):
    assert set(sweep_plugins.get_placements()) == {
        "kernel-load",
        "stride",
        "random",
        "list",
        "every-page",
    }
    add_plugin(
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
    add_plugin("bad-kind", register_placements=lambda register: register(3, None))
    errors = sweep_plugins.registry().errors
    assert "expected register(kind: str, fn: callable, check" in errors["bad-kind"]


def test_va_bits_need_no_plugin_and_a_config_lists_any(monkeypatch):
    monkeypatch.setenv(sweep_plugins.ENV_PLUGINS, "layouts,granules")  # granules: a removed one
    sweep_plugins.reset()
    reg = sweep_plugins.registry()
    assert sweep_plugins.kconfig_va_bits() == KCONFIG_VA_BITS
    assert reg.errors == {
        "granules": "named in SWEEP_PLUGINS, a removed built-in: granules and VA_BITS choices are"
        " the architecture's (sweep.core.kconfig); list other va_bits in the sweep config"
    }
    monkeypatch.delenv(sweep_plugins.ENV_PLUGINS)
    sweep_plugins.reset()
    config = validate_config({"memory_maps": ["juno"], "granules": ["4K"], "va_bits": [40, 39]})
    assert config.va_bits == (39, 40)  # VA_BITS Kconfig has no choice of: any 32..52
    assert validate_config({"memory_maps": ["juno"]}).va_bits == "kconfig"


DUPLICATES = {
    # kind: (hook, what the plugin registers again, its error, how to see the built-in kept)
    "memory map": (
        "register_memory_maps",
        lambda register: register(MemoryMap("qemu-virt-1G", [(0, GiB)])),
        "register_memory_maps: memory map 'qemu-virt-1G' already comes from"
        " 'sweep_plugins.families'",
        lambda reg: reg.memory_maps["qemu-virt-1G"].banks == [Bank(0x4000_0000, GiB)],
    ),
    "layout": (
        "register_layouts",
        lambda register: register(sweep_plugins.get_layouts()["linux-4.8"]),
        "register_layouts: layout 'linux-4.8' already comes from 'sweep_plugins.layouts'",
        lambda reg: reg.owner[("layout", "linux-4.8")] == "sweep_plugins.layouts",
    ),
    "placement": (
        "register_placements",
        lambda register: register("stride", lambda banks, granule, params, context: None),
        "register_placements: placement 'stride' already comes from 'sweep_plugins.placements'",
        lambda reg: reg.placements["stride"] is placements.stride,
    ),
}


@pytest.mark.parametrize("kind", list(DUPLICATES))
def test_a_second_registration_of_a_name_is_refused_for_every_kind(add_plugin, kind):
    """One policy (sweep.plan.plugins._claim): the built-in keeps its name, the newcomer is refused
    and reported under its own plugin name, for maps, layouts and placements."""
    hook, again, error, kept = DUPLICATES[kind]
    add_plugin("again", **{hook: again})
    reg = sweep_plugins.registry()
    assert reg.errors["again"] == error
    assert kept(reg)
    info = {row["name"]: row for row in sweep_plugins.plugin_info()}
    assert info["again"]["error"] == error


def test_one_plugin_registering_a_name_twice_is_refused_too(add_plugin):
    def twice(register):
        register(MemoryMap("twice", [(0, GiB)]))
        register(MemoryMap("twice", [(0, 2 * GiB)]))

    add_plugin("twice", register_memory_maps=twice)
    reg = sweep_plugins.registry()
    assert reg.errors["twice"] == (
        "register_memory_maps: memory map 'twice' already comes from 'twice'"
    )
    assert reg.memory_maps["twice"].banks == [Bank(0, GiB)]


# --- the built-in placements (docs/model.md section 8) -------------------------------------------


def test_a_placement_plugin_checks_its_own_parameters(add_plugin):
    def check(params):
        if not isinstance(params.get("every"), int):
            raise ValidationError("placement.every: expected an integer")

    def every_nth(banks, granule, params, context):
        return np.array([banks[0][0] + granule * params["every"]], dtype=np.uint64)

    add_plugin(
        "every-nth",
        register_placements=lambda register: register("every-nth", every_nth, check=check),
    )
    with pytest.raises(ValidationError) as error:
        validate_config(
            {"memory_maps": ["juno"], "placement": {"kind": "every-nth", "every": "x"}}, "c.toml"
        )
    assert str(error.value) == "c.toml: placement.every: expected an integer"
    config = validate_config(
        {"memory_maps": ["juno"], "placement": {"kind": "every-nth", "every": 3}}
    )
    assert config.placement == {"kind": "every-nth", "every": 3}
    # The built-in stride's own check: the config names the key.
    with pytest.raises(ValidationError, match="placement.step: '3K' is not a positive multiple"):
        validate_config({"memory_maps": ["juno"], "placement": {"kind": "stride", "step": "3K"}})
    add_plugin("bad-check", register_placements=lambda register: register("x", every_nth, check=1))
    assert "check: callable = None" in sweep_plugins.registry().errors["bad-check"]


JUNO = [(0x8000_0000, 0xFF00_0000), (0x8_8000_0000, 0xA_0000_0000)]
CONTEXT = {"memory_map": "juno", "granule": 4096}


def test_kernel_load_is_lowest_bank_plus_text_offset():
    assert placements.kernel_load(JUNO[::-1], 4096, {"kind": "kernel-load"}, CONTEXT).tolist() == [
        0x8008_0000
    ]


def _strided(banks, granule, step):
    progression = placements.stride(banks, granule, {"kind": "stride", "step": step}, CONTEXT)
    found = StridedPlacements(progression, granule)
    return found.take(np.arange(len(found))).tolist()


def test_stride_walks_every_bank():
    out = _strided(JUNO, 4096, "2G")
    assert out == [0x8000_0000, 0x8_8000_0000, 0x9_0000_0000, 0x9_8000_0000]
    # b + k*step < e: a bank shorter than one step still gives its base
    assert _strided([(0x1000, 0x3000)], 4096, 0x1000) == [0x1000, 0x2000]


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
    monkeypatch.setenv(sweep_plugins.ENV_PLUGINS, "sweep_plugins.layouts,test-boards,nope")
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


# --- random memory maps: pinned, so that a change of algorithm fails here ----------------------

PINNED_RANDOM_MAPS = {
    # (seed, index): banks of random-<seed>-<index>, pinned on 2026-12-02 from the algorithm in
    # families.random_memory_maps' docstring (re-derived step by step by _random_map_by_hand)
    (1, 0): [
        (0x60_0000, 0xE0_0000),
        (0x140_0000, 0x80_0000),
        (0x2C0_0000, 0x7B60_0000),
        (0x7E20_0000, 0x7BC0_0000),
        (0x16F_8480_0000, 0x840_0000),
        (0x338_3760_0000, 0x340_0000),
        (0x2_1CE8_A580_0000, 0x100_0000_0000),
        (0x2_5FDD_E740_0000, 0x5340_0000),
    ],
    (0, 2): [(0x6C0_0000, 0x1440_0000), (0x1B00_0000, 0x12_5560_0000)],
    (7, 3): [
        (0x20_0000, 0x3_4B20_0000),
        (0xA_81E0_0000, 0x77_99E0_0000),
        (0x101_5580_0000, 0xCC00_0000),
        (0x25A_F200_0000, 0x40_0000),
        (0xABB_EEA0_0000, 0x100_0000_0000),
        (0x25A3_4340_0000, 0x300_0000),
        (0x32D2_D660_0000, 0x21E0_0000),
        (0x9_CC2C_4B20_0000, 0x16_2D80_0000),
    ],
}


def _random_map_by_hand(seed: int, index: int) -> list[tuple[int, int]]:
    """The docstring's recipe, drawn one call at a time from random.Random (whose algorithm is
    fixed for a string seed): a count 1..8, then per draw an exponent 21..51 and a base in
    [2^e, 2^(e+1)) cut to 2 MiB; then per distinct base, in order, an exponent 21..40 and a size
    in [2^e, 2^(e+1)), at most 1 TiB and the gap to the next base (2^52 for the last), cut to
    2 MiB and at least 2 MiB."""
    import random

    mib2 = 2 << 20
    rng = random.Random(f"sweep.random-memory-map:{seed}:{index}")
    draws = rng.randint(1, 8)
    bases = set()
    for _ in range(draws):
        e = rng.randint(21, 51)
        bases.add(rng.randrange(2**e, 2 ** (e + 1)) // mib2 * mib2)
    ordered = sorted(bases)
    ends = ordered[1:] + [2**52]
    out = []
    for base, end in zip(ordered, ends, strict=True):
        e = rng.randint(21, 40)
        size = min(rng.randrange(2**e, 2 ** (e + 1)), 2**40, end - base)
        out.append((base, max(size - size % mib2, mib2)))
    return out


@pytest.mark.parametrize("seed, index", list(PINNED_RANDOM_MAPS))
def test_random_memory_maps_are_pinned(seed, index):
    from sweep_plugins.families import random_memory_maps

    pinned = PINNED_RANDOM_MAPS[(seed, index)]
    assert _random_map_by_hand(seed, index) == pinned
    memory_map = random_memory_maps(seed, index + 1)[index]
    assert memory_map.name == f"random-{seed}-{index}"
    assert [(b.base, b.size) for b in memory_map.banks] == pinned


def test_placement_cache_tells_maps_of_one_name_apart(tmp_path):
    """Two plans in one process (a Dask worker, a notebook), each with a map named "board" but
    other banks: kernel-load is each lowest bank + 0x80000 (docs/model.md section 8), never the
    other plan's cached address."""
    from sweep.plan.config import validate_config
    from sweep.plan.units import make_plan

    found = []
    for base in (0x8000_0000, 0x4000_0000):
        folder = tmp_path / f"{base:x}"
        folder.mkdir()
        (folder / "board.toml").write_text(f'[[banks]]\nbase = {base:#x}\nsize = "1G"\n')
        config = validate_config(
            {"memory_maps": ["board.toml"], "granules": ["4K"], "va_bits": [48]}, "c"
        )
        plan = make_plan(config, str(folder))
        found.append(plan.decoder.placements_of(4096)[0].addresses.tolist())
    assert found == [[0x8008_0000], [0x4008_0000]]


def test_runs_are_a_row_format_the_placement_declares(add_plugin):
    """Issue 18: the plan asks a placement function whether its rows are runs of pages
    (``rows = "runs"``), never the kind's name: every-page says so, stride does not, and a
    plugin's function says so through the boundary's wrapper too."""
    from sweep.plan.placements import RUNS, writes_runs

    reg = sweep_plugins.registry()
    assert writes_runs(reg.placements["every-page"])
    assert not writes_runs(reg.placements["stride"]) and not writes_runs(None)

    def all_pages(banks, granule, params, context):
        return reg.placements["every-page"](banks, granule, params, context)

    all_pages.rows = RUNS
    add_plugin("pages-too", register_placements=lambda register: register("pages-too", all_pages))
    wrapped = sweep_plugins.registry().placements["pages-too"]
    assert wrapped is not all_pages and writes_runs(wrapped)
