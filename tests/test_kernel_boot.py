"""Real kernels: boot Debian's arm64 kernels under QEMU now and check each console with the model.

``tools/boot-kernels`` fetches the kernels with apt (kept in its cache, which ``.ci/run`` fills
first) and boots them two at a time; each fresh console then goes through ``sweep verify-boot``.
The random tag differs at every boot, so these ranges were never seen before the test ran.
Skipped only when QEMU is missing and cannot be installed (the tool's exit code 3).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.formats.loaders import load_memory_map
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
