"""``sweep verify-boot`` against the real consoles in tests/data/kernelboot/.

What each console must give (kernel release, page size, VA_BITS, DRAM) is how
``tools/boot-kernels`` booted it (its README); the HYP VA range is what the kernel printed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweep.cli import main
from sweep.core.errors import SweepError
from sweep.formats.bootlog import BootLogError, parse_boot_log
from sweep.formats.loaders import load_memory_map
from sweep.verify import (
    FieldCheck,
    UnknownEra,
    layout_for_release,
    verify_boot,
    verify_boot_file,
)

FIXTURES = Path(__file__).with_name("data") / "kernelboot"
G = 1 << 30

# name: (release, granule, va_bits, EL2 levels, banks), as tests/data/kernelboot/README.md says
# they were booted: QEMU virt puts RAM at 1 GiB (hw/arm/virt.c); xlnx-versal-virt 2 GiB at 0 and
# the rest at 32 GiB; 6.12 on -cpu max has LPA2 (52 bits, 5 levels at 4K); a 16K 52-bit kernel
# without LPA2 runs with 47 bits, while EL2 keeps 48 (4 levels).
EXPECTED = {
    "6.1-virt-512M": ("6.1.0-57-arm64", 4096, 48, 4, [(G, 512 << 20)]),
    "6.1-virt-3G": ("6.1.0-57-arm64", 4096, 48, 4, [(G, 3 * G)]),
    "6.1-virt-6G": ("6.1.0-57-arm64", 4096, 48, 4, [(G, 6 * G)]),
    "6.1-versal-4G": ("6.1.0-57-arm64", 4096, 48, 4, [(0, 2 * G), (32 * G, 2 * G)]),
    "6.12-virt-2G-lpa2": ("6.12.117+deb12-arm64", 4096, 52, 5, [(G, 2 * G)]),
    "6.12-16k-virt-2G-lpa2off": ("6.12.117+deb12-arm64-16k", 16384, 47, 4, [(G, 2 * G)]),
    "6.12-16k-virt-2G-lpa2": ("6.12.117+deb12-arm64-16k", 16384, 52, 4, [(G, 2 * G)]),
}


def read(name: str) -> str:
    return (FIXTURES / f"{name}.log").read_text()


def with_range(text: str, start: int, end: int) -> str:
    return re.sub(r"HYP VA range: \w+:\w+", f"HYP VA range: {start:x}:{end:x}", text)


def test_every_fixture_is_expected():
    assert sorted(p.stem for p in FIXTURES.glob("*.log")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_agrees_on_every_field(name):
    release, granule, va_bits, n_levels, banks = EXPECTED[name]
    report = verify_boot_file(FIXTURES / f"{name}.log")
    assert report.boot.release == release
    assert (report.granule, report.va_bits) == (granule, va_bits)
    assert [(b.base, b.size) for b in report.memory_map.banks] == banks
    assert report.memory_map.name == name
    # The IDMAP page is an input (read from the log), not a compared field.
    assert [c.field for c in report.checks] == [
        "VA_BITS",
        "EL2 levels",
        "HYP VA start",
        "HYP VA end",
    ]
    assert report.idmap_pa == report.boot.idmap_pa
    assert report.agree, report.format()
    assert report.row["levels"] == n_levels
    assert report.row["hyp_va_min"] == report.boot.hyp_va_start
    assert report.row["hyp_dram_last"] == report.boot.hyp_va_end


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builder_and_reference_agree(name):
    text = read(name)
    by_builder = verify_boot(text, engine="builder")
    by_reference = verify_boot(text, engine="reference")
    assert by_builder.checks == by_reference.checks
    for column in ("levels", "idmap_pa", "hyp_va_min", "hyp_va_max", "hyp_dram_last"):
        assert by_builder.row[column] == by_reference.row[column], column


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_banks_agree_with_load_memory_map(name, tmp_path):
    path = tmp_path / f"{name}.log"
    path.write_text(read(name))
    via_loader = load_memory_map(path)
    assert [(b.base, b.size) for b in via_loader.banks] == EXPECTED[name][4]


def test_hand_computed_range_of_the_3g_boot():
    # 3 GiB at 1 GiB, V = 48: PHYS_OFFSET 1 GiB, lin(p) = 2^64 - 2^47 + (p - 1 GiB);
    # lin(first) ^ lin(last) = 0xbfff_ffff -> tag_lsb = 32; msb = bit 47 (idmap low);
    # tag = bit 47 | (START & bits 46..32) = 0x9dfb_0000_0000, window up to tag | 0xffff_ffff,
    # and the last DRAM byte at tag + 0xbfff_ffff: the END the kernel printed.
    report = verify_boot(read("6.1-virt-3G"))
    assert report.tag_random == 0x9DFB_0000_0000  # the start: the era masks its own bits
    assert report.row["hyp_va_min"] == 0x9DFB_0000_0000
    assert report.row["hyp_va_max"] == 0x9DFB_FFFF_FFFF
    assert report.row["hyp_dram_last"] == 0x9DFB_BFFF_FFFF


# --- one-bit edits -------------------------------------------------------------------------


def disagreeing(text: str, **kwargs) -> list[str]:
    return verify_boot(text, **kwargs).disagreeing()


def test_start_edited_below_tag_lsb_disagrees_on_start():
    log = parse_boot_log(read("6.1-virt-3G"))
    for bit in (0, 12, 31):  # tag_lsb is 32 for 3 GiB: these bits are the DRAM offset
        text = with_range(read("6.1-virt-3G"), log.hyp_va_start ^ (1 << bit), log.hyp_va_end)
        assert disagreeing(text) == ["HYP VA start"], bit


def test_end_edited_disagrees_on_end():
    log = parse_boot_log(read("6.1-versal-4G"))
    for bit in range(48):
        text = with_range(read("6.1-versal-4G"), log.hyp_va_start, log.hyp_va_end ^ (1 << bit))
        assert disagreeing(text) == ["HYP VA end"], bit


def test_start_edited_in_the_random_tag_disagrees_on_end():
    # Bits 46..32 of START are the random tag the model takes from START itself, so a flipped
    # tag bit moves the model's whole range: START then matches and END (same tag) does not.
    log = parse_boot_log(read("6.1-virt-3G"))
    for bit in (32, 40, 46):
        text = with_range(read("6.1-virt-3G"), log.hyp_va_start ^ (1 << bit), log.hyp_va_end)
        assert disagreeing(text) == ["HYP VA end"], bit


def test_start_edited_in_its_top_bit():
    log = parse_boot_log(read("6.1-virt-3G"))
    text = with_range(read("6.1-virt-3G"), log.hyp_va_start ^ (1 << 47), log.hyp_va_end)
    # Given VA_BITS, bit 47 is the tag's msb: START is wrong.
    assert "HYP VA start" in disagreeing(text, va_bits=48)
    # Inferred, the top bit says VA_BITS = 47, which no 4K kernel runs with.
    assert disagreeing(text)[0] == "VA_BITS"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_any_one_bit_edit_of_the_range_is_caught(name):
    log = parse_boot_log(read(name))
    for bit in range(52):
        for start, end in (
            (log.hyp_va_start ^ (1 << bit), log.hyp_va_end),
            (log.hyp_va_start, log.hyp_va_end ^ (1 << bit)),
        ):
            report = verify_boot(with_range(read(name), start, end))
            assert not report.agree, (name, bit, hex(start), hex(end))


def test_el2_bits_edited_disagrees_on_levels():
    text = read("6.1-virt-3G").replace("Using 48-bit virtual", "Using 39-bit virtual")
    assert disagreeing(text) == ["EL2 levels"]


def test_wrong_granule_disagrees_with_the_log():
    # The log's pcpu-alloc atom says 4K, and its IDMAP page 0x40eed000 is not 16K-aligned.
    report = verify_boot(read("6.1-virt-3G"), granule="16K")
    assert report.disagreeing() == ["granule"]
    check = report.checks[0]
    assert check.kernel == "4K (pcpu-alloc atom); IDMAP page 0x40eed000 is not 16K-aligned"
    assert check.model == "16K (given)"
    # The model still takes the page the kernel's would be: aligned down, said so.
    assert report.idmap_pa == 0x40EEC000
    assert "idmap_pa:   0x40eec000 (input: the log's IDMAP page 0x40eed000, aligned down" in (
        report.format()
    )


def test_given_granule_that_the_log_confirms_is_checked():
    report = verify_boot(read("6.1-virt-3G"), granule="4K")
    assert report.checks[0] == FieldCheck("granule", "4K (pcpu-alloc atom)", "4K (given)", True)
    assert report.agree


def test_the_idmap_page_is_shown_as_an_input_not_a_check():
    text = verify_boot(read("6.1-virt-3G")).format()
    assert "idmap_pa:   0x40eed000 (input: the log's IDMAP page)" in text
    assert not re.search(r"^IDMAP page", text, re.MULTILINE)


def test_given_va_bits_that_contradicts_the_log_disagrees():
    # The 3 GiB boot's range start 0x9dfb00000000 has bit 47 set (the idmap is low): VA_BITS 48.
    report = verify_boot(read("6.1-virt-3G"), va_bits=39)
    assert "VA_BITS" in report.disagreeing()
    check = next(c for c in report.checks if c.field == "VA_BITS")
    assert check.kernel == "48 (top bit of the range start; the idmap is low)"
    assert check.model == "39 (given)"
    assert not check.agree
    result = invoke(str(FIXTURES / "6.1-virt-3G.log"), "--va-bits", "39")
    assert result.exit_code == 1
    assert re.search(r"^VA_BITS\s+48 \(top bit .*\)\s+39 \(given\)\s+NO$", result.output, re.M)


def test_given_va_bits_that_the_log_confirms_agrees():
    report = verify_boot(read("6.12-virt-2G-lpa2"), va_bits=52)
    check = next(c for c in report.checks if c.field == "VA_BITS")
    assert check == FieldCheck(
        "VA_BITS", "52 (the log says '52-bit Virtual Addressing (LPA2)')", "52 (given)", True
    )
    assert report.agree


def test_given_va_bits_where_the_log_cannot_tell():
    # A range start whose top bit is below the idmap page: the log cannot tell VA_BITS, so the
    # given value is used, said so, and not claimed as checked.
    log = parse_boot_log(read("6.1-virt-3G"))
    text = with_range(read("6.1-virt-3G"), 0x1000, log.hyp_va_end)
    report = verify_boot(text, va_bits=48)
    assert report.va_bits_source == "given; the log cannot tell"
    assert "VA_BITS" not in [c.field for c in report.checks]


# --- logs that cannot be checked -----------------------------------------------------------


def without_kvm_layout(text: str) -> str:
    keep = ("HYP VA range", "IDMAP page", "virtual addresses at EL2")
    return "\n".join(line for line in text.splitlines() if not any(k in line for k in keep))


def test_log_without_kvm_lines_names_the_boot_options():
    with pytest.raises(BootLogError) as info:
        verify_boot(without_kvm_layout(read("6.1-virt-512M")), name="board")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("board: ")
    assert "kvm-arm.mode=nvhe" in message and 'dyndbg="file arch/arm64/kvm/* +p"' in message


def test_vhe_log_says_why():
    text = without_kvm_layout(read("6.1-virt-3G")).replace(
        "Hyp mode initialized successfully", "VHE mode initialized successfully"
    )
    with pytest.raises(BootLogError, match="VHE mode"):
        verify_boot(text)


def test_log_without_memory_lines():
    lines = read("6.1-virt-3G").splitlines()
    no_block = "\n".join(
        line
        for line in lines
        if "node   0: [mem" not in line and "Early memory node ranges" not in line
    )
    with pytest.raises(BootLogError, match="first line"):
        verify_boot(no_block)
    no_nodes = "\n".join(line for line in lines if "node   0: [mem" not in line)
    with pytest.raises(SweepError, match=r"line 16: 'Early memory node ranges' is not followed"):
        verify_boot(no_nodes)


def test_two_boots_in_one_log_are_refused():
    with pytest.raises(BootLogError, match="2 boots"):
        verify_boot(read("6.1-virt-3G") + read("6.1-virt-6G"))


def test_dmesg_without_timestamps_and_crlf_console_read_the_same():
    text = read("6.12-virt-2G-lpa2")
    plain = re.sub(r"(?m)^\[\s*\d+\.\d+\] ", "", text)
    crlf = text.replace("\n", "\r\n")
    expected = parse_boot_log(text)
    assert parse_boot_log(plain) == expected
    assert parse_boot_log(crlf) == expected
    assert verify_boot(plain).agree


# --- the command line ----------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(main, ["verify-boot", *args])


def test_cli_agreeing_log_exits_0():
    result = invoke(str(FIXTURES / "6.12-16k-virt-2G-lpa2off.log"))
    assert result.exit_code == 0, result.output
    assert "granule:    16K" in result.output
    assert re.search(
        r"HYP VA end\s+0x5a75ffffffff\s+0x5a75ffffffff \(hyp_dram_last\)\s+yes", result.output
    )
    assert result.output.rstrip().endswith("all fields agree")


def test_cli_disagreeing_log_exits_1(tmp_path):
    log = parse_boot_log(read("6.1-virt-6G"))
    path = tmp_path / "edited.log"
    path.write_text(with_range(read("6.1-virt-6G"), log.hyp_va_start, log.hyp_va_end ^ 1))
    result = invoke(str(path))
    assert result.exit_code == 1
    assert "DISAGREE on: HYP VA end" in result.output


def test_cli_options_override_the_log():
    result = invoke(
        str(FIXTURES / "6.1-virt-3G.log"),
        "--granule",
        "4K",
        "--va-bits",
        "48",
        "--layout",
        "tagged",
    )
    assert result.exit_code == 0, result.output
    assert "VA_BITS:    48 (given)" in result.output


def test_cli_user_mistakes_exit_2_with_one_line(tmp_path):
    path = tmp_path / "nokvm.log"
    path.write_text(without_kvm_layout(read("6.1-virt-3G")))
    for args in (
        [str(path)],
        [str(tmp_path / "missing.log")],
        [str(FIXTURES / "6.1-virt-3G.log"), "--granule", "8K"],
        [str(FIXTURES / "6.1-virt-3G.log"), "--layout", "nonesuch"],
    ):
        result = CliRunner().invoke(main, ["verify-boot", *args])
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("sweep: error: ")


def test_boot_without_nokaslr_gets_a_note():
    text = read("6.1-virt-3G").replace("earlycon nokaslr", "earlycon")
    report = verify_boot(text)
    assert "booted without nokaslr" in report.format()
    assert "nokaslr" not in verify_boot(read("6.1-virt-3G")).format()


@pytest.mark.parametrize(
    ("release", "layout"),
    [
        ("7.3.4+deb13-arm64", "linux-7.0"),
        ("7.0.13+deb13-arm64-16k", "linux-7.0"),
        ("6.19.14+deb13-arm64-16k", "linux-6.9"),
        ("6.12.117+deb13-arm64", "linux-6.9"),
        ("6.9.0", "linux-6.9"),
        ("6.8.12-arm64", "linux-6.2"),
        ("6.2.0", "linux-6.2"),
        ("6.1.0-57-arm64", "linux-5.12"),
        ("5.12.0", "linux-5.12"),
        ("5.10.0-32-arm64", "linux-4.17"),
        ("4.17.0", "linux-4.17"),
        ("4.16.18", "linux-4.8"),
        ("4.8.0", "linux-4.8"),
        ("4.7.10", "linux-4.6"),
        ("4.6.0", "linux-4.6"),
    ],
)
def test_layout_follows_the_kernel_release(release, layout):
    assert layout_for_release(release)[0] == layout


@pytest.mark.parametrize("release", [None, "4.5.7", "3.18.0", "not-a-version"])
def test_a_release_whose_era_cannot_be_told_is_refused(release):
    with pytest.raises(UnknownEra):
        layout_for_release(release)


def test_a_4x_release_is_checked_with_its_layout():
    # The same 6.1 console claiming to be 4.14: merged puts the aliases in the high half with
    # delta = 2^47 - PHYS_OFFSET, so the printed start (a tagged one) no longer agrees.
    text = read("6.1-virt-3G").replace("Linux version 6.1.0-57-arm64", "Linux version 4.14.0-arm64")
    report = verify_boot(text)
    assert report.layout == "linux-4.8"
    assert report.row["hyp_va_min"] == 1 << 47
    assert "HYP VA start" in report.disagreeing()
    assert verify_boot(text, layout="linux-5.12").agree
