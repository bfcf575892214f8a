"""Every kind of bad input gives one line naming the file (or map), the line or node, and the rule.

Each case states the whole message it expects, with ``{path}`` for the file written.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from sweep.core.errors import ValidationError
from sweep.formats import fdt
from sweep.formats.loaders import load_memory_map
from sweep.plan.memory_maps import select_memory_maps
from sweep_plugins import placements

GiB = 1 << 30


def _blob(*nodes: fdt.Node, address_cells: int = 2, size_cells: int = 2, **encode_args) -> bytes:
    root = fdt.Node(
        "", {"#address-cells": fdt.cells(address_cells), "#size-cells": fdt.cells(size_cells)}
    )
    for node in nodes:
        node.parent = root
        root.children.append(node)
    return fdt.encode(root, **encode_args)


def _memory(name: str, reg: bytes | None) -> fdt.Node:
    props = {"device_type": b"memory\0"}
    if reg is not None:
        props["reg"] = reg
    return fdt.Node(name, props)


def _good_blob() -> bytes:
    return _blob(_memory("memory@80000000", fdt.cells(0x8000_0000, 2 * GiB, width=2)))


def _patched(blob: bytes, offset: int, value: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into(">I", out, offset, value)
    return bytes(out)


def _unknown_token() -> bytes:
    blob = _good_blob()
    off_struct = struct.unpack_from(">I", blob, 8)[0]
    return _patched(blob, off_struct, 7)  # the root's FDT_BEGIN_NODE becomes token 7


def _no_end_token() -> bytes:
    blob = bytearray(_good_blob())
    off_struct, _, _, _, _, _, _, size_struct = struct.unpack_from(">8I", blob, 8)
    struct.pack_into(">I", blob, off_struct + size_struct - 4, fdt.FDT_NOP)  # FDT_END -> NOP
    return bytes(blob)


def _bad_string_offset() -> bytes:
    blob = _blob(fdt.Node("memory@0", {"reg": fdt.cells(0, GiB, width=2)}))
    off_struct = struct.unpack_from(">I", blob, 8)[0]
    # root BEGIN_NODE (4) + empty name (4) + PROP len/nameoff: nameoff at +16
    return _patched(blob, off_struct + 16, 0x7FFF)


TOML_CASES = [
    (
        "toml-syntax",
        "board.toml",
        'name = "x"\nbase 0x8000\n',
        r"{path}: TOML syntax error: .*\(at line 2, column \d+\)",
    ),
    (
        "toml-unknown-key",
        "board.toml",
        'name = "x"\nbank = 1\n',
        "{path}: line 2: unknown key 'bank' (a memory map has banks, description, name, platform,"
        " source)",
    ),
    (
        "toml-no-banks",
        "board.toml",
        'name = "x"\n',
        "{path}: no [[banks]] tables: a memory map needs at least one bank",
    ),
    (
        "toml-no-size",
        "board.toml",
        "[[banks]]\nbase = 0x8000_0000\n",
        "{path}: line 1 (bank 0): bank has no size",
    ),
    (
        "toml-no-base",
        "board.toml",
        '[[banks]]\nbase = 0x8000_0000\nsize = "1G"\n[[banks]]\nsize = "1G"\n',
        "{path}: line 4 (bank 1): bank has no base",
    ),
    (
        "toml-size-zero",
        "board.toml",
        "[[banks]]\nbase = 0x8000_0000\nsize = 0\n",
        "{path}: line 1 (bank 0): bank at 0x80000000 has size 0, must be above 0",
    ),
    (
        "toml-bad-size",
        "board.toml",
        '[[banks]]\nbase = 0x8000_0000\nsize = "2Q"\n',
        "{path}: line 1 (bank 0): size: expected an integer or a size string like '2G', got '2Q'",
    ),
    (
        "toml-overlap",
        "board.toml",
        '[[banks]]\nbase = 0x8000_0000\nsize = "2G"\n\n'
        '[[banks]]\nbase = 0xC000_0000\nsize = "1G"\n',
        "{path}: line 5 (bank 1): bank [0xc0000000-0xffffffff] overlaps [0x80000000-0xffffffff]"
        " (line 1 (bank 0))",
    ),
    (
        "toml-past-2^52",
        "board.toml",
        '[[banks]]\nbase = 0xF_FFFF_C000_0000\nsize = "2G"\n',
        "{path}: line 1 (bank 0): bank [0xfffffc0000000-0x1000003fffffff] ends past 2^52, the"
        " largest arm64 physical address",
    ),
    (
        "toml-name-type",
        "board.toml",
        'name = 7\n[[banks]]\nbase = 0\nsize = "1G"\n',
        "{path}: line 1: name must be a string, got 7",
    ),
    (
        "toml-bank-key",
        "board.toml",
        '[[banks]]\nbase = 0\nsise = "1G"\n',
        "{path}: line 1 (bank 0): unknown key 'sise' (a bank has base and size)",
    ),
    (
        "toml-negative-base",
        "board.toml",
        '[[banks]]\nbase = -4096\nsize = "1G"\n',
        "{path}: line 1 (bank 0): base -0x1000 is negative",
    ),
    (
        "toml-banks-not-tables",
        "board.toml",
        "banks = [1, 2]\n",
        "{path}: line 1: banks must be [[banks]] tables with base and size",
    ),
    (
        "toml-not-utf8",
        "board.toml",
        b'name = "caf\xe9"\n[[banks]]\n',
        "{path}: line 1: not UTF-8 text, so not a memory-map TOML file",
    ),
]

DTB_CASES = [
    (
        "dtb-is-text",
        "board.dtb",
        "80000000-ffffffff : System RAM\n",
        "{path}: named as a flattened device tree blob (.dtb), "
        "but its content is a /proc/iomem dump",
    ),
    (
        "dtb-bad-magic",
        "board.dtb",
        b"\xff\xfe" + bytes(62),
        "{path}: not a flattened device tree: magic 0xfffe0000, expected 0xd00dfeed",
    ),
    (
        "dtb-truncated",
        "board.dtb",
        lambda: _good_blob()[:100],
        "{path}: truncated device tree: header totalsize is 219 bytes, file has 100",
    ),
    (
        "dtb-no-memory",
        "board.dtb",
        lambda: _blob(fdt.Node("chosen", {"bootargs": b"x\0"})),
        '{path}: device tree has no memory node (device_type = "memory" in a child of /)',
    ),
    (
        "dtb-missing-reg",
        "board.dtb",
        lambda: _blob(_memory("memory@80000000", None)),
        "{path}: no DRAM bank left: node /memory@80000000: no reg property (firmware fills it in"
        " at boot? read the blob from the running board, /sys/firmware/fdt)",
    ),
    (
        "dtb-reg-length",
        "board.dtb",
        lambda: _blob(_memory("memory@80000000", fdt.cells(0, 0x8000_0000, 0x1000))),
        "{path}: no DRAM bank left: node /memory@80000000: reg has 12 trailing byte(s) short of"
        " a whole entry (4 cells): ignored",
    ),
    (
        "dtb-size-zero",
        "board.dtb",
        lambda: _blob(_memory("memory@0", fdt.cells(0, 0, width=2))),
        "{path}: no DRAM bank left: node /memory@0: size 0: skipped (firmware fills it in at"
        " boot? read the blob from the running board, /sys/firmware/fdt)",
    ),
    (
        "dtb-unknown-token",
        "board.dtb",
        _unknown_token,
        "{path}: structure block (offset 0x38): unknown token 0x7 (expected 1, 2, 3, 4 or 9)",
    ),
    # Overlapping device-tree banks are merged as Linux merges them (tests/test_dtb_overlap.py).
    (
        "dtb-past-2^52",
        "board.dtb",
        lambda: _blob(
            _memory("memory@f000000000000", fdt.cells(0xF_0000_0000_0000, (1 << 48) + GiB, width=2))
        ),
        "{path}: node /memory@f000000000000: bank [0xf000000000000-0x1000003fffffff] ends past"
        " 2^52, the largest arm64 physical address",
    ),
    (
        "dtb-version",
        "board.dtb",
        lambda: _patched(_good_blob(), 20, 15),
        "{path}: device tree version 15 (compatible with 16) is not supported: only versions 16 and"
        " 17 of the format are read",
    ),
    (
        "dtb-string-offset",
        "board.dtb",
        _bad_string_offset,
        "{path}: node / (offset 0x40): property name offset 0x7fff is past the strings block",
    ),
    (
        "dtb-no-end",
        "board.dtb",
        _no_end_token,
        "{path}: structure block (offset 0xb0): runs past the end of the structure block (no"
        " FDT_END)",
    ),
    (
        "dtb-cells",
        "board.dtb",
        lambda: _blob(_memory("memory@0", fdt.cells(0, 0)), size_cells=0),
        "{path}: no DRAM bank left: node /memory@0: size 0: skipped (firmware fills it in at"
        " boot? read the blob from the running board, /sys/firmware/fdt)",
    ),
]

TEXT_CASES = [
    (
        "iomem-bad-line",
        "board.iomem",
        "80000000-ffffffff : System RAM\nhello\n",
        "{path}: line 2: not a /proc/iomem line ('start-end : name'): 'hello'",
    ),
    (
        "iomem-not-root",
        "board.iomem",
        "00000000-00000000 : System RAM\n  00000000-00000000 : Kernel code\n",
        "{path}: line 1: addresses are all zero: /proc/iomem was read without root (the kernel"
        " hides addresses from other users); read it as root",
    ),
    (
        "iomem-no-ram",
        "board.iomem",
        "09000000-09000fff : pl011@9000000\n",
        "{path}: no top-level 'System RAM' line in this /proc/iomem dump",
    ),
    (
        "iomem-reversed",
        "board.iomem",
        "ffffffff-80000000 : System RAM\n",
        "{path}: line 1: range ends at 0x80000000, before its start 0xffffffff",
    ),
    (
        "iomem-overlap",
        "board.iomem",
        "80000000-ffffffff : System RAM\nc0000000-13fffffff : System RAM\n",
        "{path}: line 2: bank [0xc0000000-0x13fffffff] overlaps [0x80000000-0xffffffff] (line 1)",
    ),
    (
        "bootlog-no-nodes",
        "boot.log",
        "[    0.000000] Early memory node ranges\n[    0.1] next\n",
        "{path}: line 1: 'Early memory node ranges' is not followed by 'node N: [mem A-B]' lines",
    ),
    (
        "bootlog-two-boots",
        "boot.log",
        "Early memory node ranges\n  node   0: [mem 0x40000000-0x7fffffff]\nreboot\n"
        "Early memory node ranges\n  node   0: [mem 0x40000000-0xbfffffff]\n",
        "{path}: line 5: this log holds several boots with different memory (first at line 2);"
        " split it into one log per boot",
    ),
    (
        "bootlog-no-header",
        "boot.log",
        "  node   0: [mem 0x40000000-0x7fffffff]\n",
        "{path}: no 'Early memory node ranges' in this boot log (boot with loglevel=7 or higher to"
        " see it)",
    ),
    (
        "log-is-toml",
        "boot.log",
        '[[banks]]\nbase = 0\nsize = "1G"\n',
        "{path}: named as a kernel boot log (.log), but its content is a memory-map TOML file",
    ),
    (
        "unknown-kind",
        "board.txt",
        "just some notes\nabout a board\n",
        "{path}: unknown kind of memory-map file: not TOML, a device tree (blob or source), a"
        " /proc/iomem dump or a kernel boot log",
    ),
    (
        "binary-unknown",
        "board.bin",
        bytes(range(256)),
        "{path}: unknown kind of memory-map file: not TOML, a device tree (blob or source), a"
        " /proc/iomem dump or a kernel boot log",
    ),
]


def _content(content):
    return content() if callable(content) else content


@pytest.mark.parametrize(
    "filename, content, expected",
    [pytest.param(*case[1:], id=case[0]) for case in TOML_CASES + DTB_CASES + TEXT_CASES],
)
def test_bad_memory_map_file(tmp_path, filename, content, expected):
    path = tmp_path / filename
    content = _content(content)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ValidationError) as info:
        load_memory_map(path)
    message = str(info.value)
    assert "\n" not in message
    pattern = re.escape(expected).replace(re.escape("{path}"), re.escape(str(path)))
    if "TOML syntax" in expected:
        pattern = expected.replace("{path}", re.escape(str(path)))
    assert re.fullmatch(pattern, message), message


def test_missing_file(tmp_path):
    with pytest.raises(ValidationError, match=r"^.*nope\.toml: no such memory-map file$"):
        load_memory_map(tmp_path / "nope.toml")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(ValidationError) as info:
        load_memory_map(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a memory-map file"


@pytest.mark.skipif(
    shutil.which("dtc") is None, reason="dtc is not installed (Debian package device-tree-compiler)"
)
def test_dts_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "board.dts"
    path.write_text("/dts-v1/;\n/ {\n\tmemory@0 {\n\t\treg = <0 0\n\t};\n};\n")
    with pytest.raises(ValidationError) as info:
        load_memory_map(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: dtc could not compile it: Error: board.dts:5.")
    assert message.endswith("syntax error")


def test_dts_without_dtc(tmp_path, monkeypatch):
    path = tmp_path / "board.dts"
    path.write_text("/dts-v1/;\n/ { };\n")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ValidationError) as info:
        load_memory_map(path)
    assert str(info.value) == (
        f"{path}: reading device tree source needs dtc (Debian/Ubuntu: apt-get install"
        " device-tree-compiler), or compile it yourself with dtc -I dts -O dtb"
    )


# --- selecting maps ---------------------------------------------------------------------------


def test_unknown_map_name_lists_near_matches():
    with pytest.raises(ValidationError) as info:
        select_memory_maps(["qemu-virt-3G"])
    message = str(info.value)
    assert message.startswith(
        "memory_maps: 'qemu-virt-3G' is not a registered memory map, family:NAME, glob or"
        " existing file (near matches: "
    )
    assert "qemu-virt-2G" in message and "qemu-virt-32G" in message


def test_unknown_family():
    with pytest.raises(ValidationError) as info:
        select_memory_maps(["family:boards"])
    assert str(info.value) == (
        "memory_maps: family 'boards' has no maps (families: board, qemu-virt, random, single-bank)"
    )


def test_file_map_clashing_with_a_built_in_name(tmp_path):
    path = tmp_path / "juno.toml"
    path.write_text('[[banks]]\nbase = 0x8000_0000\nsize = "1G"\n')
    with pytest.raises(ValidationError) as info:
        select_memory_maps([str(path)])
    assert str(info.value) == (
        f"memory_maps: {str(path)!r} gives a map named 'juno' whose banks differ from the one from"
        " a built-in plugin; rename one (the name field of a TOML file)"
    )


def test_empty_directory(tmp_path):
    (tmp_path / "README.md").write_text("docs only\n")
    with pytest.raises(ValidationError) as info:
        select_memory_maps([str(tmp_path)])
    assert str(info.value) == f"memory_maps: directory {str(tmp_path)!r} holds no memory-map files"


# --- placements -------------------------------------------------------------------------------

BANKS = [(0x8000_0000, 0x1_0000_0000)]
CONTEXT = {"memory_map": "juno", "granule": 4096}


@pytest.mark.parametrize(
    "fn, banks, params, expected",
    [
        pytest.param(
            placements.stride,
            BANKS,
            {"kind": "stride"},
            "memory map 'juno' at 4K: placement.step: missing (stride needs step = \"2M\""
            " or similar)",
            id="stride-no-step",
        ),
        pytest.param(
            placements.stride,
            BANKS,
            {"kind": "stride", "step": 1000},
            "memory map 'juno' at 4K: placement.step: 1000 is not a positive multiple of 4K",
            id="stride-step-not-4K",
        ),
        pytest.param(
            placements.stride,
            BANKS,
            {"kind": "stride", "step": "2Q"},
            "memory map 'juno' at 4K: placement.step: expected an integer or a size"
            " string like '2G', got '2Q'",
            id="stride-step-syntax",
        ),
        pytest.param(
            placements.stride,
            BANKS,
            {"kind": "stride", "step": 4096, "count": 3},
            "memory map 'juno' at 4K: placement.count: not a key of placement kind"
            " 'stride' (it takes step)",
            id="placement-unknown-key",
        ),
        pytest.param(
            placements.random_addresses,
            BANKS,
            {"kind": "random", "seed": 1},
            "memory map 'juno' at 4K: placement.count: missing (random needs count and seed)",
            id="random-no-count",
        ),
        pytest.param(
            placements.random_addresses,
            BANKS,
            {"kind": "random", "count": 0},
            "memory map 'juno' at 4K: placement.count: expected an integer 1..134217728, got 0",
            id="random-count-zero",
        ),
        pytest.param(
            placements.random_addresses,
            BANKS,
            {"kind": "random", "count": 5, "seed": -1},
            "memory map 'juno' at 4K: placement.seed: expected an integer 0..2^64-1, got -1",
            id="random-seed-negative",
        ),
        pytest.param(
            placements.listed,
            BANKS,
            {"kind": "list", "addresses": [0x8000_0000, 0x10]},
            "memory map 'juno' at 4K: placement.addresses[1]: 16 (0x0 aligned) is not"
            " inside any trimmed bank",
            id="list-outside",
        ),
        pytest.param(
            placements.listed,
            BANKS,
            {"kind": "list", "addresses": []},
            "memory map 'juno' at 4K: placement.addresses: expected a non-empty list of"
            " addresses, got []",
            id="list-empty",
        ),
        pytest.param(
            placements.kernel_load,
            [(0x8000_0000, 0x8004_0000)],
            {"kind": "kernel-load"},
            "memory map 'juno' at 4K: placement kernel-load: the lowest bank"
            " [0x80000000-0x8003ffff] is too small to hold a page at base + 0x80000",
            id="kernel-load-small-bank",
        ),
    ],
)
def test_bad_placement(fn, banks, params, expected):
    with pytest.raises(ValidationError) as info:
        fn(banks, 4096, params, CONTEXT)
    assert str(info.value) == expected


def test_placements_accept_good_input():
    """The same functions, given good parameters, do not raise (the errors above are real)."""
    progression = placements.stride(BANKS, 4096, {"kind": "stride", "step": "1G"}, CONTEXT)
    assert (progression.starts, progression.counts, progression.step) == ((0x8000_0000,), (2,), GiB)
    assert placements.kernel_load(BANKS, 4096, {"kind": "kernel-load"}, CONTEXT).dtype == np.uint64


def test_at_least_25_kinds_of_bad_input():
    assert len(TOML_CASES + DTB_CASES + TEXT_CASES) >= 25


@pytest.mark.skipif(
    shutil.which("dtc") is None, reason="dtc is not installed (Debian package device-tree-compiler)"
)
def test_dts_with_cpp_include_says_to_preprocess(tmp_path):
    path = tmp_path / "board.dts"
    path.write_text("/dts-v1/;\n#include <dt-bindings/gpio/gpio.h>\n/ { };\n")
    with pytest.raises(ValidationError) as info:
        load_memory_map(path)
    message = str(info.value)
    assert message.startswith(f"{path}: dtc could not compile it: Error: board.dts:2.")
    assert message.endswith(
        "syntax error (#include needs the C preprocessor: run cpp -nostdinc -undef -x"
        " assembler-with-cpp first, as the kernel's Makefiles do)"
    )


# --- inputs that are not regular files, or not text --------------------------------------------

DEEP_TOML = "a = " + "[" * 500 + "]" * 500 + "\n"


def _sweep(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """The real CLI in its own process, so that a hang is a failed test, not a stuck suite."""
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "board.toml"
    os.mkfifo(path)  # no writer ever opens it: reading it would block forever
    return path


@pytest.mark.parametrize(
    "command", [["maps"], ["run", "--dry-run"], ["verify-boot"]], ids=["map", "config", "log"]
)
@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_fifos_and_devices_are_one_line_not_a_hang(command, target, fifo):
    """/dev/zero never ends and a FIFO without a writer never starts: both are refused."""
    path = str(fifo) if target == "fifo" else target
    run = _sweep(*command, path)
    kind = "a FIFO" if target == "fifo" else "a character device"
    what = {"maps": "memory-map file", "run": "config", "verify-boot": "boot log"}[command[0]]
    prefix = "sweep: error: " + ("config " if what == "config" else "")
    assert run.returncode != 0
    assert run.stderr.decode().strip().splitlines() == [
        f"{prefix}{path}: is {kind}, not a regular file (a {what} is read from a regular file,"
        " or from standard input as -)"
    ]


def test_stdin_on_purpose_for_a_map_and_a_config():
    toml = b'name = "piped"\n[[banks]]\nbase = 0x8000_0000\nsize = "2G"\n'
    run = _sweep("maps", "-", stdin=toml)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().splitlines()[0].startswith("piped  [file]")
    config = b'memory_maps = ["juno"]\ngranules = ["4K"]\nva_bits = [48]\n'
    run = _sweep("run", "--dry-run", "-", stdin=config)
    assert run.returncode == 0, run.stderr


def test_size_limit_is_checked_while_reading(tmp_path, monkeypatch):
    from sweep.formats import loaders

    monkeypatch.setattr(loaders, "MAX_FILE_BYTES", 1 << 20)
    path = tmp_path / "huge.iomem"
    path.write_bytes(b"80000000-ffffffff : System RAM\n" * 40_000)  # 1.2 MiB
    with pytest.raises(ValidationError) as info:
        load_memory_map(path)
    assert str(info.value) == f"{path}: more than 1 MiB: too large for a memory-map file"


def test_config_directory_non_utf8_and_deep_toml(tmp_path):
    from sweep.plan.config import read_config_file

    with pytest.raises(ValidationError) as info:
        read_config_file(tmp_path)
    assert str(info.value) == f"config {tmp_path}: is a directory, not a config"
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "ok"\ndescription = "caf\xe9"\n')
    with pytest.raises(ValidationError) as info:
        read_config_file(latin)
    assert str(info.value) == f"config {latin}: line 2: not UTF-8 text, so not a TOML config"
    deep = tmp_path / "deep.toml"
    deep.write_text(DEEP_TOML)
    with pytest.raises(ValidationError) as info:
        read_config_file(deep)
    assert str(info.value) == (
        f"config {deep}: TOML nested too deeply (arrays or inline tables hundreds of levels deep)"
    )


def test_memory_map_toml_nested_500_deep(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text(DEEP_TOML)
    with pytest.raises(ValidationError) as info:
        load_memory_map(path)
    assert str(info.value) == (
        f"{path}: TOML nested too deeply (arrays or inline tables hundreds of levels deep)"
    )


def test_an_override_nested_500_deep_is_a_string_not_a_traceback():
    from sweep.plan.config import parse_value

    assert parse_value("[" * 500 + "]" * 500) == "[" * 500 + "]" * 500
