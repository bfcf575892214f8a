"""Real kernels: boot Debian's arm64 kernels under QEMU now and check each console with the model.

``tools/boot-kernels`` fetches the kernels with apt (kept in its cache, which ``.ci/run`` fills
first) and boots them two at a time; each fresh console then goes through ``sweep verify-boot``.
The random tag differs at every boot, so these ranges were never seen before the test ran.
Skipped only when QEMU is missing and cannot be installed (the tool's exit code 3).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_bootmap import _allocated, _counts, _inputs, _split

from sweep.formats.loaders import load_memory_map
from sweep.model.bootmap import boot_leaves, tree_tables
from sweep.verify import verify_boot_file

pytestmark = pytest.mark.kernel

TOOL = Path(__file__).resolve().parents[1] / "tools" / "boot-kernels"
G, M = 1 << 30, 1 << 20

# name: (page size, VA_BITS the kernel runs with, EL2 levels, DRAM banks). QEMU's virt puts
# all RAM at 1 GiB (hw/arm/virt.c); xlnx-versal-virt puts 2 GiB at 0 and the rest at 32 GiB
# (hw/arm/xlnx-versal-virt.c). 6.12 on `-cpu max` has LPA2 (52 bits); with lpa2=off a 16K
# 52-bit kernel falls back to 47 bits (docs/model.md section 1), while EL2 keeps 48.
EXPECTED = {
    "6.1-virt-512M": (4096, 48, 4, [(G, 512 * M)]),
    "6.1-virt-1G": (4096, 48, 4, [(G, G)]),
    "6.1-virt-3G": (4096, 48, 4, [(G, 3 * G)]),
    "6.1-virt-6G": (4096, 48, 4, [(G, 6 * G)]),
    "6.1-versal-4G": (4096, 48, 4, [(0, 2 * G), (32 * G, 2 * G)]),
    "6.1-versal-6G": (4096, 48, 4, [(0, 2 * G), (32 * G, 4 * G)]),
    "6.12-virt-2G-lpa2": (4096, 52, 5, [(G, 2 * G)]),
    "6.12-16k-virt-2G-lpa2off": (16384, 47, 4, [(G, 2 * G)]),
    "6.12-16k-virt-2G-lpa2": (16384, 52, 4, [(G, 2 * G)]),
}


@pytest.fixture(scope="session")
def boots(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("boots")
    cmd = [sys.executable, str(TOOL), "--out", str(out), "--jobs", "2"]
    proc = subprocess.run(
        [*cmd, "--only", ",".join(EXPECTED)], capture_output=True, text=True, timeout=1200
    )
    if proc.returncode == 3:
        reason = (proc.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"QEMU cannot be installed here (Debian package qemu-system-arm): {reason}")
    assert proc.returncode in (0, 1), f"tools/boot-kernels failed:\n{proc.stderr}"
    return {entry["name"]: entry for entry in json.loads((out / "boots.json").read_text())}


def test_fresh_guest_inputs_load_as_the_machines_place_dram(tmp_path):
    """``--inputs`` (what made tests/data/realinputs/) again: QEMU's blobs and the guest's
    /sys/firmware/fdt and /proc/iomem give the banks QEMU's sources place."""
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--inputs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode == 3:
        reason = (proc.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"QEMU cannot be installed here (Debian package qemu-system-arm): {reason}")
    assert proc.returncode == 0, proc.stderr
    expected = {"virt-4G": [(G, 4 * G)], "versal-4G": [(0, 2 * G), (32 * G, 2 * G)]}
    for board, banks in expected.items():
        for suffix in (".dtb", "-guest.dtb", ".iomem"):
            memory_map = load_memory_map(tmp_path / f"{board}{suffix}")
            assert sorted((b.base, b.size) for b in memory_map.banks) == banks, board + suffix


def test_the_tool_plans_every_expected_boot():
    listed = subprocess.run(
        [sys.executable, str(TOOL), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(EXPECTED) <= set(listed)
    sizes = {name.rsplit("-", 1)[-1] for name in EXPECTED if name.startswith("6.1-virt-")}
    assert len(sizes) >= 4


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fresh_boot_agrees_with_the_model(boots, name):
    entry = boots[name]
    console = Path(entry["log"])
    tail = "\n".join(console.read_text(errors="replace").splitlines()[-15:])
    assert entry["ok"], f"{name}: no KVM layout in the console after {entry['seconds']}s:\n{tail}"

    cli = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "verify-boot", str(console)],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, f"{name}:\n{cli.stdout}{cli.stderr}"
    assert cli.stdout.rstrip().endswith("all fields agree")

    granule, va_bits, n_levels, banks = EXPECTED[name]
    report = verify_boot_file(console)
    assert report.boot.release == entry["release"]
    assert [(b.base, b.size) for b in report.memory_map.banks] == banks
    assert (report.granule, report.va_bits, report.row["levels"]) == (granule, va_bits, n_levels)
    assert report.row["hyp_va_min"] == report.boot.hyp_va_start
    assert report.row["hyp_dram_last"] == report.boot.hyp_va_end


# --- EL2 page tables read back through QEMU's gdbstub (`tools/boot-kernels --walk`) -----------

WALKS_DATA = Path(__file__).with_name("data") / "kernelboot" / "walks"
# nVHE and protected (a Cortex-A72: true nVHE pKVM, no VHE), 6.1, 6.12 and 7.3, 1 and 3 GiB,
# 1 and 4 CPUs: each fresh boot's tables are held to the model per level below.
LIVE_WALKS = [
    "6.1-nvhe-1G-1c-max",
    "6.12-pkvm-3G-1c-a72",
    "7.3-pkvm-1G-4c-a72",
    "7.3-nvhe-3G-4c-max",
]
FRESH: dict[str, Path] = {}
"""Where the session's fresh walks were written (NAME.log and NAME.walk.json)."""
LEVELS = ("tables_lm1", "tables_l0", "tables_l1", "tables_l2", "tables_l3")


def load_tool():
    """tools/boot-kernels as a module (it has no .py suffix), for its walker."""
    loader = importlib.machinery.SourceFileLoader("boot_kernels", str(TOOL))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def walks(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("walks")
    cmd = [sys.executable, str(TOOL), "--walk", "--out", str(out), "--jobs", "2"]
    proc = subprocess.run(
        [*cmd, "--only", ",".join(LIVE_WALKS)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode == 3:
        reason = (proc.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(
            "QEMU or gdb cannot be installed here (Debian packages qemu-system-arm, "
            f"gdb-multiarch): {reason}"
        )
    assert proc.returncode == 0, f"tools/boot-kernels --walk failed:\n{proc.stderr}"
    FRESH.update({name: out / f"{name}.walk.json" for name in LIVE_WALKS})
    return {name: json.loads((out / f"{name}.walk.json").read_text()) for name in LIVE_WALKS}


def hyp_alias(walk: dict, pa: int) -> int:
    """The HYP VA of PA: the printed range starts at the alias of the first DRAM byte (1 GiB on
    QEMU's virt)."""
    return int(walk["hyp_va_range"][0], 16) + pa - G


def leaf_at(walk: dict, va: int) -> tuple[int, int] | None:
    """(PA of VA, bytes mapped from VA on in that range) from the merged leaves, or None."""
    for leaf in walk["leaves"]:
        start, size = int(leaf["va"], 16), int(leaf["size"], 16)
        if start <= va < start + size:
            return int(leaf["pa"], 16) + va - start, start + size - va
    return None


def check_walk(walk: dict) -> None:
    """What every walk must hold, whatever the kernel: the counts add up, the root is one table
    at the start level, the idmap page is mapped VA == PA, and the hyp text at its alias."""
    name = walk["name"]
    assert walk["table_pages"] == sum(walk[k] for k in LEVELS), name
    assert walk["start_level"] == 4 - (walk["ia_bits"] - 4) // (walk["granule"].bit_length() - 4)
    assert walk[LEVELS[walk["start_level"] + 1]] == 1, f"{name}: one root table"
    assert all(walk[k] == 0 for k in LEVELS[: walk["start_level"] + 1]), name
    assert walk["release"] and walk["idmap_page"] and walk["hyp_va_range"], name
    for leaf in walk["leaves"]:
        for key in ("va", "pa", "size"):
            assert int(leaf[key], 16) % walk["granule"] == 0, f"{name}: {leaf}"
    idmap = int(walk["idmap_page"], 16)
    assert leaf_at(walk, idmap) == (idmap, leaf_at(walk, idmap)[1]), f"{name}: idmap not VA==PA"
    alias = leaf_at(walk, hyp_alias(walk, idmap))
    assert alias is not None and alias[0] == idmap, f"{name}: no HYP alias of the idmap page"
    if walk["mode"] == "protected":
        assert walk["reserved"], f"{name}: pKVM printed no reservation"
        base, size = int(walk["reserved"]["address"], 16), walk["reserved"]["bytes"]
        mapped = leaf_at(walk, hyp_alias(walk, base))
        assert mapped is not None and mapped == (base, mapped[1]), name
        assert mapped[1] >= size, f"{name}: pKVM's carve-out is not mapped whole"
    else:
        assert walk["reserved"] is None, name


@pytest.mark.parametrize("name", LIVE_WALKS)
def test_fresh_walk_agrees_with_the_model_per_level(walks, name):
    """A kernel booted now: the model's boot-time tables (sweep/model/bootmap.py) agree with the
    tables read back, level by level, and its printed pKVM reservation with kvm_hyp_reserve.
    Where the page allocator put the per-CPU regions is read from the walk, as the random tag is
    from the log: its per-CPU lists can split them across 2 MiB chunks from boot to boot (the
    committed walks hold the placement rule itself, tests/test_verify_walks.py)."""
    walk = FRESH[name]
    kw = _inputs(walk)
    percpu, sve = _split(_allocated(walk, kw), kw)
    leaves = boot_leaves(**kw, percpu_pa=percpu, sve_pa=sve)
    assert _counts(tree_tables(leaves, kw["granule"], kw["hyp_va_bits"])) == [
        walks[name][c] for c in (*LEVELS, "table_pages")
    ]
    report = verify_boot_file(walk.with_name(f"{name}.log"))
    assert report.agree, report.format()  # the layout, and a protected boot's reservation
    assert ("pKVM reserved" in {c.field for c in report.checks}) == ("-pkvm-" in name)


@pytest.mark.parametrize("name", LIVE_WALKS)
def test_fresh_walk_reads_a_sane_el2_tree(walks, name):
    walk = walks[name]
    check_walk(walk)
    assert walk["name"] == name
    assert walk["mode"] == ("protected" if "-pkvm-" in name else "nvhe")
    # Cortex-A72 has no VHE (its pKVM is true nVHE) and no LPA2: 48 bits at EL2; on `-cpu max`
    # a 52-bit kernel (Debian's from 6.12) runs 52 bits with LPA2.
    assert walk["hvhe"] is False
    lpa2 = name.endswith("-max") and not name.startswith("6.1-")
    assert (walk["granule"], walk["ia_bits"]) == (4096, 52 if lpa2 else 48)


def test_fresh_walks_count_what_the_kernels_map(walks):
    """nVHE 6.1 at boot: 15 or 16 table pages (1/2/2/10 at 3 GiB); pKVM maps its carve-out and
    so needs more; at 3 GiB the carve-out is 10 MiB or more."""
    nvhe, pkvm = walks[LIVE_WALKS[0]], walks[LIVE_WALKS[1]]
    assert 15 <= nvhe["table_pages"] <= 22
    assert [nvhe[k] for k in LEVELS[1:4]] == [1, 2, 2]
    assert pkvm["table_pages"] > nvhe["table_pages"]
    assert pkvm["reserved"]["bytes"] >= 10 * M


def test_walker_on_a_made_tree():
    """The walker on a tree built here: 4K, 48 bits; one 2 MiB block, two pages that merge, a
    table reached twice (counted once), and hVHE TCRs (DS at bit 59) and an LPA2 address."""
    tool = load_tool()
    memory: dict[int, bytearray] = {n: bytearray(4096) for n in (0x1000, 0x2000, 0x3000, 0x4000)}

    def put(table: int, index: int, value: int) -> None:
        memory[table][index * 8 : index * 8 + 8] = value.to_bytes(8, "little")

    put(0x1000, 0, 0x2000 | 3)  # L0[0] -> L1 at 0x2000
    put(0x1000, 1, 0x2000 | 3)  # L0[1] -> the same L1: counted once
    put(0x2000, 1, 0x3000 | 3)  # L1[1] (VA 1 GiB) -> L2 at 0x3000
    put(0x3000, 0, 0x8000_0000 | 0x401)  # 2 MiB block at VA 1 GiB -> PA 2 GiB
    put(0x3000, 1, 0x4000 | 3)  # L2[1] -> L3 at 0x4000
    put(0x4000, 0, 0x9000_0000 | 0x403)  # two pages, contiguous in VA and PA
    put(0x4000, 1, 0x9000_1000 | 0x403)
    put(0x4000, 5, 0xA000_0000 | 0x483)  # read-only: not merged with them

    def read(pa: int, size: int) -> bytes:
        return bytes(memory[pa & ~0xFFF][pa & 0xFFF : (pa & 0xFFF) + size])

    walked = tool.walk(read, 0x1000 | 1, 16 | 0x8080_3500, 0x8000_0000)
    assert walked["tables"] == {-1: 0, 0: 1, 1: 1, 2: 1, 3: 1}
    assert walked["start_level"] == 0 and walked["root"] == 0x1000
    leaves = [(va, pa, size, level) for va, pa, size, level, _ in walked["leaves"]]
    once = [
        (G, 2 * G, 2 * M, 2),
        (G + 2 * M, 0x9000_0000, 0x2000, 3),
        (G + 2 * M + 0x5000, 0xA000_0000, 0x1000, 3),
    ]
    # The shared L1 maps its leaves under both L0 entries (512 GiB apart).
    assert leaves == once + [(va + (1 << 39), pa, size, level) for va, pa, size, level in once]
    geo = tool.translation(12 | 2 << 14 | 1 << 59, 1 << 34)
    assert (geo["hvhe"], geo["ds"], geo["granule"], geo["start_level"]) == (True, True, 16384, 0)
    geo = tool.translation(12 | 1 << 59, 1 << 34)
    assert (geo["ia_bits"], geo["start_level"]) == (52, -1)
    assert tool.output_address(0x4000_0000 | 1 << 8 | 0x403, 12, 4096, True) == 1 << 50 | G


@pytest.mark.parametrize("path", sorted(WALKS_DATA.glob("*.walk.json")), ids=lambda p: p.stem)
def test_committed_walks_hold_together(path):
    """The read-backs kept in tests/data/kernelboot/walks/ (its README) pass the same checks."""
    walk = json.loads(path.read_text())
    check_walk(walk)
    log = path.with_name(path.name.replace(".walk.json", ".log")).read_text(errors="replace")
    assert f"Linux version {walk['release']} " in log
