"""Kernel profiles (sweep/formats/kernel_profile.py) and the shipped plugins/kernels/*.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.formats.kernel_profile import (
    ESSENTIAL,
    KernelProfile,
    dump_profile,
    load_profile,
    profile_from_files,
    profile_from_text,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "plugins/kernels").glob("*.toml"))

# A made-up 4K build: _text at the 6.12 link address, section markers where a hand count
# is easy. Lines are `nm -n` style; symbols the profile ignores are mixed in.
BASE = 0xFFFF800080000000
MAP_SYMBOLS = {
    "_text": 0x0,
    "_stext": 0x10000,
    "__hyp_idmap_text_start": 0x100000,
    "__hyp_idmap_text_end": 0x100800,
    "__hyp_text_start": 0x100800,
    "__hyp_text_end": 0x105000,  # pages 0x100..0x104: 5
    "__start_rodata": 0x110000,
    "__end_rodata": 0x210000,  # 0x100000 bytes: 256 pages
    "__hyp_rodata_start": 0x210000,
    "__hyp_rodata_end": 0x212001,  # one byte into a third page: 3
    "__init_begin": 0x220000,
    "__per_cpu_start": 0x230000,
    "__per_cpu_end": 0x238000,
    "__kvm_nvhe___per_cpu_start": 0x238000,
    "__kvm_nvhe___per_cpu_end": 0x23A100,  # 0x2100 bytes: 3 pages, an order-2 block (4)
    "__init_end": 0x240000,
    "__hyp_bss_start": 0x300000,
    "__bss_start": 0x300000,
    "__hyp_bss_end": 0x302000,  # 2
    "__bss_stop": 0x3100F0,  # 0x302000..0x3100f0: pages 0x302..0x310: 15
    "_end": 0x320000,  # 0x320 pages
}
MAP_TEXT = "\n".join(
    [
        f"{BASE + off:016x} {'B' if 'bss' in s or s == '_end' else 'T'} {s}"
        for s, off in sorted(MAP_SYMBOLS.items(), key=lambda kv: kv[1])
    ]
    + ["0000000000000000 A _kernel_flags_le_lo32", f"{BASE + 0x12345:016x} t some_function"]
)
CONFIG_TEXT = """#
# Automatically generated file; DO NOT EDIT.
# Linux/arm64 6.12.118 Kernel Configuration
#
CONFIG_ARM64_4K_PAGES=y
# CONFIG_ARM64_16K_PAGES is not set
CONFIG_ARM64_VA_BITS_48=y
CONFIG_ARM64_VA_BITS=48
CONFIG_ARM64_PA_BITS=48
CONFIG_NR_CPUS=256
CONFIG_LOCALVERSION=""
"""


def _hand_profile() -> KernelProfile:
    return profile_from_text(MAP_TEXT, CONFIG_TEXT, "6.12.118-test")


def test_hand_excerpt_offsets_and_config():
    profile = _hand_profile()
    assert profile.release == "6.12.118-test"
    assert profile.version == "6.12.118"
    assert (profile.granule, profile.va_bits, profile.pa_bits, profile.nr_cpus) == (
        4096,
        48,
        48,
        256,
    )
    assert profile.text_address == BASE
    assert profile.offsets["__hyp_idmap_text_start"] == 0x100000
    assert profile.offsets["__kvm_nvhe___per_cpu_end"] == 0x23A100
    assert "__hyp_data_start" not in profile.offsets  # optional: absent before 7.x
    assert "some_function" not in profile.offsets


def test_hand_excerpt_pages():
    pages = _hand_profile().pages
    assert pages["hyp_idmap"] == 1
    assert pages["hyp_text"] == 5
    assert pages["rodata"] == 256
    assert pages["hyp_rodata"] == 3
    assert pages["hyp_bss"] == 2
    assert pages["bss_after_hyp_bss"] == 15
    assert "hyp_data" not in pages
    assert pages["nvhe_percpu"] == 3
    assert pages["nvhe_percpu_alloc"] == 4
    # Disjoint here, so the union is the sum (idmap is inside hyp.text's first page).
    assert pages["image_total"] == 5 + 256 + 3 + 2 + 15
    assert pages["kernel_image"] == 0x320


def test_toml_round_trip(tmp_path):
    profile = _hand_profile()
    path = tmp_path / "p.toml"
    dump_profile(profile, path, header="made by hand")
    assert path.read_text().startswith("# made by hand\n")
    assert load_profile(path) == profile


def test_files_give_release_from_names(tmp_path):
    system_map = tmp_path / "System.map-6.12.118-test"
    config = tmp_path / "config-6.12.118-test"
    system_map.write_text(MAP_TEXT)
    config.write_text(CONFIG_TEXT)
    assert profile_from_files(system_map, config) == _hand_profile()


@pytest.mark.parametrize("missing", ["__hyp_bss_end", "__kvm_nvhe___per_cpu_start", "_text"])
def test_missing_symbol_is_one_line_naming_file(tmp_path, missing):
    system_map = tmp_path / "System.map-x"
    system_map.write_text(
        "\n".join(x for x in MAP_TEXT.splitlines() if not x.endswith(f" {missing}"))
    )
    config = tmp_path / "config-x"
    config.write_text(CONFIG_TEXT)
    with pytest.raises(ValueError) as info:
        profile_from_files(system_map, config)
    message = str(info.value)
    assert "\n" not in message
    assert str(system_map) in message and missing in message


def test_not_a_system_map(tmp_path):
    notmap = tmp_path / "System.map-x"
    notmap.write_text(CONFIG_TEXT)
    config = tmp_path / "config-x"
    config.write_text(CONFIG_TEXT)
    with pytest.raises(ValueError, match=r"System\.map-x: not a System\.map"):
        profile_from_files(notmap, config)


def test_not_an_arm64_config(tmp_path):
    system_map = tmp_path / "System.map-x"
    system_map.write_text(MAP_TEXT)
    config = tmp_path / "config-x"
    config.write_text("CONFIG_X86_64=y\n")
    with pytest.raises(ValueError, match=r"config-x: no CONFIG_ARM64_4K/16K/64K_PAGES"):
        profile_from_files(system_map, config)


def test_bad_toml_names_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    text = _hand_profile().to_toml()
    path.write_text(text.replace('"__hyp_text_end" = ', '"__hyp_text_gone" = '))
    with pytest.raises(ValueError, match=r"bad\.toml: no symbol __hyp_text_end"):
        load_profile(path)
    path.write_text(text.replace("hyp_text = 5", "hyp_text = 6"))
    with pytest.raises(ValueError, match=r"bad\.toml: pages\.hyp_text = 6"):
        load_profile(path)


def test_shipped_profiles_load():
    assert SHIPPED, "plugins/kernels has no profiles"
    for path in SHIPPED:
        profile = load_profile(path)
        assert path.stem == profile.release
        assert all(symbol in profile.offsets for symbol in ESSENTIAL)
        assert profile.pages["nvhe_percpu"] >= 1


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("release", "package"),
    [
        # 6.1.0-57's profile comes from its -dbg package's System.map (804 MB): too large for
        # every CI run; `tools/kernel-profiles 6.1.0-57-arm64` remakes it by hand.
        # kallsyms of the image (12 MB): also needs vmlinux-to-elf.
        (
            "7.3.4+deb13-arm64",
            "linux-binary-unsigned-7.3.4+deb13-arm64 and linux-base-7.3.4+deb13-arm64",
        ),
    ],
)
def test_shipped_profile_regenerates(tmp_path, release, package):
    """tools/kernel-profiles remakes the committed TOML from Debian's packages, byte for byte."""
    for tool in ("dpkg-deb", "apt-get"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing (Debian package dpkg/apt): cannot read {package}")
    out = tmp_path / f"{release}.toml"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools/kernel-profiles"), release, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text() == (ROOT / f"plugins/kernels/{release}.toml").read_text()
