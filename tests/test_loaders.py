"""Memory maps read from files: TOML, device tree blobs and source, /proc/iomem, boot logs.

Expected banks are the facts stated beside the real inputs (their READMEs) or written by hand.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest
from conftest import ERA_NAMES
from hypothesis import given, settings
from hypothesis import strategies as st

import sweep
from sweep.core.memmap import Bank, MemoryMap
from sweep.formats import fdt
from sweep.formats.loaders import detect_kind, load_memory_map, memory_map_from_boot_log

DATA = Path(__file__).with_name("data")
REALINPUTS = DATA / "realinputs"  # made by tools/boot-kernels --inputs (its README)
KERNELBOOT = DATA / "kernelboot"  # made by tools/boot-kernels --out (its README)
GiB = 1 << 30

needs_dtc = pytest.mark.skipif(
    shutil.which("dtc") is None,
    reason="dtc is not installed (Debian package device-tree-compiler)",
)

VIRT_4G = (Bank(0x4000_0000, 4 * GiB),)
VERSAL_4G = (Bank(0, 2 * GiB), Bank(0x8_0000_0000, 2 * GiB))


def banks(memory_map: MemoryMap) -> tuple[Bank, ...]:
    return tuple(sorted(memory_map.banks, key=lambda b: b.base))


# --- a blob written by hand -------------------------------------------------------------------


def memory_node(name: str, reg: bytes, **props: bytes) -> fdt.Node:
    return fdt.Node(name, {"device_type": b"memory\0", "reg": reg, **props})


def tree(*children: fdt.Node, address_cells: int = 2, size_cells: int = 2) -> fdt.Node:
    root = fdt.Node(
        "",
        {
            "#address-cells": fdt.cells(address_cells),
            "#size-cells": fdt.cells(size_cells),
            "model": b"test board\0",
        },
    )
    for child in children:
        child.parent = root
        root.children.append(child)
        for grandchild in child.children:
            grandchild.parent = child
    return root


def blob_of(memory_map_banks, **encode_args) -> bytes:
    """A DTB with one memory node per bank (2/2 cells)."""
    nodes = [
        memory_node(f"memory@{base:x}", fdt.cells(base, size, width=2))
        for base, size in memory_map_banks
    ]
    return fdt.encode(tree(*nodes), **encode_args)


# --- real inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("virt-4G.dtb", VIRT_4G),
        ("virt-4G-guest.dtb", VIRT_4G),
        ("virt-4G.iomem", VIRT_4G),
        ("versal-4G.dtb", VERSAL_4G),
        ("versal-4G-guest.dtb", VERSAL_4G),
        ("versal-4G.iomem", VERSAL_4G),
    ],
)
def test_real_inputs_load_exactly(name, expected):
    memory_map = load_memory_map(REALINPUTS / name)
    assert banks(memory_map) == expected
    assert memory_map.name == Path(name).stem


def test_guest_blobs_carry_nop_tokens():
    """What makes them hard: the kernel's FDT_NOPs (the fdt package stops on them)."""
    data = (REALINPUTS / "virt-4G-guest.dtb").read_bytes()
    _, _, off_struct, *_, size_struct = fdt.HEADER.unpack_from(data)
    tokens, pos = [], off_struct
    while True:  # walk tokens only, independently of fdt.parse
        token = struct.unpack_from(">I", data, pos)[0]
        tokens.append(token)
        pos += 4
        if token == fdt.FDT_BEGIN_NODE:
            pos = (data.index(b"\0", pos) + 4) & ~3
        elif token == fdt.FDT_PROP:
            length = struct.unpack_from(">I", data, pos)[0]
            pos = (pos + 8 + length + 3) & ~3
        elif token == fdt.FDT_END:
            break
    assert tokens.count(fdt.FDT_NOP) > 0


@pytest.mark.parametrize("name", ["virt-4G.dtb", "versal-4G-guest.dtb"])
def test_unpacked_1mib_blob_reads_like_the_packed_one(tmp_path, name):
    packed = (REALINPUTS / name).read_bytes()
    unpacked = bytearray(packed) + bytes((1 << 20) - len(packed))
    struct.pack_into(">I", unpacked, 4, 1 << 20)  # totalsize, as QEMU's dumpdtb writes it
    path = tmp_path / name
    path.write_bytes(bytes(unpacked))
    assert len(path.read_bytes()) == 1 << 20
    assert banks(load_memory_map(path)) == banks(load_memory_map(REALINPUTS / name))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("6.1-virt-512M.log", (Bank(0x4000_0000, 512 << 20),)),
        ("6.1-virt-3G.log", (Bank(0x4000_0000, 3 * GiB),)),
        ("6.1-virt-6G.log", (Bank(0x4000_0000, 6 * GiB),)),
        ("6.1-versal-4G.log", VERSAL_4G),
        ("6.12-virt-2G-lpa2.log", (Bank(0x4000_0000, 2 * GiB),)),
        ("6.12-16k-virt-2G-lpa2off.log", (Bank(0x4000_0000, 2 * GiB),)),
        ("6.12-16k-virt-2G-lpa2.log", (Bank(0x4000_0000, 2 * GiB),)),
    ],
)
def test_kernel_boot_logs_load_exactly(name, expected):
    assert banks(load_memory_map(KERNELBOOT / name)) == expected


def test_every_kernel_boot_log_is_covered():
    assert {p.name for p in KERNELBOOT.glob("*.log")} == {
        "6.1-virt-512M.log",
        "6.1-virt-3G.log",
        "6.1-virt-6G.log",
        "6.1-versal-4G.log",
        "6.12-virt-2G-lpa2.log",
        "6.12-16k-virt-2G-lpa2off.log",
        "6.12-16k-virt-2G-lpa2.log",
    }


# --- untidy blobs of our own ------------------------------------------------------------------


def test_blob_with_nops_several_nodes_and_32bit_cells(tmp_path):
    """NOPs before every token, memory nodes out of order with numa-node-id, 1/1 cells, a
    non-empty reservation block and /reserved-memory entries that are not banks."""
    reserved = fdt.Node(
        "reserved-memory",
        {"#address-cells": fdt.cells(1), "#size-cells": fdt.cells(1), "ranges": b""},
    )
    reserved.children = [
        fdt.Node("linux,cma", {"size": fdt.cells(0x400_0000), "reusable": b""}),
        fdt.Node("memory@90000000", {"reg": fdt.cells(0x9000_0000, 0x10_0000)}),
    ]
    root = tree(
        memory_node(
            "memory@c0000000", fdt.cells(0xC000_0000, 0x2000_0000), **{"numa-node-id": fdt.cells(1)}
        ),
        reserved,
        memory_node(
            "memory@80000000", fdt.cells(0x8000_0000, 0x4000_0000), **{"numa-node-id": fdt.cells(0)}
        ),
        address_cells=1,
        size_cells=1,
    )
    path = tmp_path / "board.dtb"
    path.write_bytes(fdt.encode(root, reservations=[(0x8000_0000, 0x1_0000)], nops=True))
    memory_map = load_memory_map(path)
    assert banks(memory_map) == (Bank(0x8000_0000, 0x4000_0000), Bank(0xC000_0000, 0x2000_0000))
    assert "test board" in memory_map.description


def test_blob_node_kinds(tmp_path):
    """device_type alone makes a memory node; a disabled one is skipped (as the kernel does);
    linux,usable-memory wins over reg (kdump); one node may hold several reg tuples."""
    root = tree(
        fdt.Node(
            "ram@100000000",
            {
                "device_type": b"memory\0",
                "reg": fdt.cells(0x1_0000_0000, GiB, 0x2_0000_0000, GiB, width=2),
            },
        ),
        memory_node(
            "memory@300000000", fdt.cells(0x3_0000_0000, GiB, width=2), status=b"disabled\0"
        ),
        memory_node(
            "memory@40000000",
            fdt.cells(0x4000_0000, 4 * GiB, width=2),
            **{"linux,usable-memory": fdt.cells(0x4800_0000, GiB, width=2)},
        ),
    )
    path = tmp_path / "kinds.dtb"
    path.write_bytes(fdt.encode(root))
    assert banks(load_memory_map(path)) == (
        Bank(0x4800_0000, GiB),
        Bank(0x1_0000_0000, GiB),
        Bank(0x2_0000_0000, GiB),
    )


def test_root_without_cells_takes_the_kernels_defaults(tmp_path):
    """drivers/of/of_private.h: OF_ROOT_NODE_ADDR_CELLS_DEFAULT and OF_ROOT_NODE_SIZE_CELLS_DEFAULT
    are 1 and 1 (2 only on SPARC), so a root without them reads reg as (1 cell, 1 cell)."""
    root = fdt.Node("", {})
    node = memory_node("memory@80000000", fdt.cells(0x8000_0000, 0x4000_0000, 0xC000_0000, 0x1000))
    node.parent = root
    root.children.append(node)
    path = tmp_path / "defaults.dtb"
    path.write_bytes(fdt.encode(root))
    assert banks(load_memory_map(path)) == (
        Bank(0x8000_0000, 0x4000_0000),
        Bank(0xC000_0000, 0x1000),
    )


def test_kind_is_told_by_content_not_suffix(tmp_path):
    """/sys/firmware/fdt has no suffix, iomem copies are often .txt, TOML may be anything."""
    (tmp_path / "fdt").write_bytes(blob_of([(0x8000_0000, 2 * GiB)]))
    (tmp_path / "iomem.txt").write_text("80000000-ffffffff : System RAM\n")
    (tmp_path / "board.cfg").write_text('[[banks]]\nbase = 0x8000_0000\nsize = "2G"\n')
    (tmp_path / "dmesg").write_text(
        "[    0.000000] Early memory node ranges\n"
        "[    0.000000]   node   0: [mem 0x0000000080000000-0x00000000ffffffff]\n"
        "[    0.000000] Initmem setup node 0 [mem 0x0000000080000000-0x00000000ffffffff]\n"
    )
    expected = (Bank(0x8000_0000, 2 * GiB),)
    kinds = {}
    for name in ("fdt", "iomem.txt", "board.cfg", "dmesg"):
        memory_map = load_memory_map(tmp_path / name)
        assert banks(memory_map) == expected, name
        assert memory_map.name == Path(name).stem
        kinds[name] = detect_kind((tmp_path / name).read_bytes())
    assert kinds == {"fdt": "dtb", "iomem.txt": "iomem", "board.cfg": "toml", "dmesg": "bootlog"}


def test_toml_memory_map(tmp_path):
    path = tmp_path / "my-file.toml"
    path.write_text(
        'name = "my-board"\ndescription = "what it is"\nsource = "where"\n'
        '[[banks]]\nbase = 0x8000_0000\nsize = "2G"\n'
        '[[banks]]\nbase = "34G"\nsize = 0x1_8000_0000\n'
    )
    memory_map = load_memory_map(path)
    assert memory_map.name == "my-board"
    assert (memory_map.description, memory_map.source) == ("what it is", "where")
    assert banks(memory_map) == (Bank(0x8000_0000, 2 * GiB), Bank(0x8_8000_0000, 6 * GiB))


def test_iomem_reads_top_level_system_ram_only():
    text = (
        "00000000-3fffffff : System RAM\n"
        "  00200000-01ffffff : Kernel code\n"
        "  10000000-1fffffff : System RAM\n"  # indented: a child, not a bank
        "40000000-4fffffff : reserved\n"
        "80000000-bfffffff : System RAM\n"
        "c0000000-ffffffff : System RAM\n"  # touching banks stay two raw banks
    )
    memory_map = sweep.formats.loaders.memory_map_from_iomem(text, "x")
    assert banks(memory_map) == (Bank(0, GiB), Bank(0x8000_0000, GiB), Bank(0xC000_0000, GiB))


def test_boot_log_memory_part_for_other_modules():
    text = (
        "Booting Linux on physical CPU 0x0\n"
        "Early memory node ranges\n"
        "  node   0: [mem 0x0000000080000000-0x00000000bfffffff]\n"
        "  node   1: [mem 0x0000000880000000-0x00000009ffffffff]\n"
        "Initmem setup node 0 [mem 0x0000000080000000-0x00000000bfffffff]\n"
        "  node   0: [mem 0x00000000c0000000-0x00000000cfffffff]\n"  # not in the block
    )
    memory_map = memory_map_from_boot_log(text, "numa")
    assert memory_map.name == "numa"
    assert banks(memory_map) == (Bank(0x8000_0000, GiB), Bank(0x8_8000_0000, 6 * GiB))


@needs_dtc
def test_dts_through_dtc(tmp_path):
    path = tmp_path / "board.dts"
    path.write_text(
        "/dts-v1/;\n/ {\n\t#address-cells = <2>;\n\t#size-cells = <2>;\n"
        '\tmemory@80000000 {\n\t\tdevice_type = "memory";\n'
        "\t\treg = <0x0 0x80000000 0x0 0x80000000>, <0x8 0x80000000 0x1 0x80000000>;\n\t};\n};\n"
    )
    assert banks(load_memory_map(path)) == (
        Bank(0x8000_0000, 2 * GiB),
        Bank(0x8_8000_0000, 6 * GiB),
    )


@needs_dtc
def test_real_blob_round_trips_through_dtc(tmp_path):
    """dtc's own reading of a real blob, written back as source, gives the same banks."""
    import subprocess

    for name in ("virt-4G-guest.dtb", "versal-4G-guest.dtb"):
        dts = tmp_path / (Path(name).stem + ".dts")
        subprocess.run(
            ["dtc", "-q", "-I", "dtb", "-O", "dts", "-o", str(dts), str(REALINPUTS / name)],
            check=True,
        )
        assert banks(load_memory_map(dts)) == banks(load_memory_map(REALINPUTS / name))


# --- the same banks in three kinds give the same rows ---------------------------------------


def _three_kinds(tmp_path: Path, name: str, bank_list: list[tuple[int, int]]) -> list[MemoryMap]:
    toml = tmp_path / f"{name}.toml"
    toml.write_text("".join(f"[[banks]]\nbase = {b:#x}\nsize = {s:#x}\n" for b, s in bank_list))
    dtb = tmp_path / f"{name}.dtb"
    dtb.write_bytes(blob_of(bank_list, nops=True))
    iomem = tmp_path / f"{name}.iomem"
    iomem.write_text(
        "".join(
            f"{b:08x}-{b + s - 1:08x} : System RAM\n  {b:08x}-{b + 0xFFF:08x} : reserved\n"
            for b, s in bank_list
        )
    )
    return [load_memory_map(p) for p in (toml, dtb, iomem)]


@pytest.mark.parametrize(
    "bank_list, idmap",
    [
        ([(0x8000_0000, 2 * GiB)], [0x8008_0000, 0xFFFF_F000]),  # docs/model.md example 1
        ([(0x8000_0000, 2 * GiB), (0x40_0000_0000, 2 * GiB)], [0x8008_0000, 0x40_0008_0000]),
        ([(0x80_0000_0000, 8 * GiB)], [0x80_0008_0000]),  # the seed's odd case
    ],
)
def test_toml_dtb_and_iomem_give_identical_build_results(tmp_path, bank_list, idmap):
    maps = _three_kinds(tmp_path, "board", bank_list)
    assert {banks(m) for m in maps} == {tuple(Bank(b, s) for b, s in bank_list)}
    rows = [
        {
            "memory_map": "board",
            "granule": granule,
            "va_bits": va_bits,
            "layout": layout,
            "block_mappings": blocks,
            "idmap_pa": pa,
        }
        for granule, va_bits in ((4096, 39), (4096, 48), (16384, 47), (65536, 42))
        for layout in ERA_NAMES
        for blocks in (False, True)
        for pa in idmap
    ]
    configs = pd.DataFrame(rows)
    results = [sweep.build(configs, {"board": m}) for m in maps]
    pd.testing.assert_frame_equal(results[0], results[1])
    pd.testing.assert_frame_equal(results[0], results[2])
    example_1 = results[0][
        (results[0].layout == "linux-4.8")
        & (results[0].granule == 4096)
        & (results[0].va_bits == 39)
        & ~results[0].block_mappings
    ]
    if len(bank_list) == 1 and bank_list[0][0] == 0x8000_0000:
        assert int(example_1.iloc[0].table_pages) == 1029  # docs/model.md section 7, example 1


def test_real_dtb_and_iomem_give_identical_build_results():
    for board in ("virt-4G", "versal-4G"):
        maps = [
            load_memory_map(REALINPUTS / f"{board}{suffix}")
            for suffix in (".dtb", "-guest.dtb", ".iomem")
        ]
        low = min(b.base for b in maps[0].banks)
        configs = pd.DataFrame(
            [
                {
                    "memory_map": board,
                    "granule": g,
                    "va_bits": v,
                    "layout": layout,
                    "block_mappings": True,
                    "idmap_pa": low + 0x80000,
                }
                for g, v in ((4096, 48), (16384, 47), (65536, 52))
                for layout in ("linux-4.8", "linux-6.9")
            ]
        )
        results = [sweep.build(configs, {board: m}) for m in maps]
        for other in results[1:]:
            pd.testing.assert_frame_equal(results[0], other)


# --- fixtures of our own: one board as source, blob (compiled by dtc) and TOML ----------------


def test_dtc_compiled_blob_with_memreserve_and_reserved_memory():
    """dtc, not our writer, made numa-board.dtb: the reader agrees with another writer."""
    memory_map = load_memory_map(DATA / "numa-board.dtb")
    assert banks(memory_map) == banks(load_memory_map(DATA / "numa-board.toml"))
    assert banks(memory_map) == (Bank(0x8000_0000, GiB), Bank(0xC000_0000, 512 << 20))
    assert "test two-socket board" in memory_map.description


@needs_dtc
def test_dts_fixture_matches_its_blob():
    assert banks(load_memory_map(DATA / "numa-board.dts")) == banks(
        load_memory_map(DATA / "numa-board.dtb")
    )


def test_directory_of_maps_in_every_kind_selects_one_map():
    from sweep.plan.memory_maps import select_memory_maps

    selected = select_memory_maps(["data/"], base_dir=Path(__file__).parent)
    assert list(selected) == ["numa-board"]
    selected = select_memory_maps(
        ["data/*.toml", "juno", "qemu-virt-1*", "family:single-bank"],
        base_dir=Path(__file__).parent,
    )
    assert list(selected)[:6] == [
        "numa-board",
        "juno",
        "qemu-virt-128M",
        "qemu-virt-1G",
        "qemu-virt-16G",
        "qemu-virt-128G",
    ]
    assert len(selected) == 6 + 22 and list(selected)[6] == "single-2^30"


# --- any banks, any kind ----------------------------------------------------------------------


@st.composite
def bank_lists(draw):
    """1 to 8 non-overlapping banks ending at or below 2^52, in any order."""
    # even cuts: no bank is the single byte 0-0, which reads as an iomem dump made without root
    cuts = sorted(
        2 * c for c in draw(st.sets(st.integers(0, (1 << 51) - 1), min_size=2, max_size=16))
    )
    pairs = [(cuts[i], cuts[i + 1] - cuts[i]) for i in range(0, len(cuts) - 1, 2)]
    return draw(st.permutations(pairs))


@settings(max_examples=60, deadline=None)
@given(bank_list=bank_lists(), nops=st.booleans(), padding=st.sampled_from([None, 1 << 16]))
def test_any_banks_read_the_same_from_every_kind(tmp_path_factory, bank_list, nops, padding):
    folder = tmp_path_factory.mktemp("any")
    expected = tuple(Bank(b, s) for b, s in sorted(bank_list))
    one_node = memory_node("memory@0", b"".join(fdt.cells(b, s, width=2) for b, s in bank_list))
    blobs = [blob_of(bank_list, nops=nops, totalsize=padding), fdt.encode(tree(one_node))]
    iomem = "".join(f"{b:x}-{b + s - 1:x} : System RAM\n" for b, s in bank_list)
    log = "Early memory node ranges\n" + "".join(
        f"  node   0: [mem {b:#018x}-{b + s - 1:#018x}]\n" for b, s in bank_list
    )
    toml = "".join(f"[[banks]]\nbase = {b}\nsize = {s:#x}\n" for b, s in bank_list)
    files = {"a.dtb": blobs[0], "b.dtb": blobs[1], "c.iomem": iomem, "d.log": log, "e.toml": toml}
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        assert tuple(sorted(load_memory_map(path).banks, key=lambda b: b.base)) == expected, name


def test_relative_paths_try_the_config_folder_then_the_working_directory(tmp_path, monkeypatch):
    from sweep.plan.memory_maps import select_memory_maps

    config_dir, work = tmp_path / "configs", tmp_path / "work"
    (config_dir / "maps").mkdir(parents=True)
    (work / "maps").mkdir(parents=True)
    (config_dir / "maps" / "a.toml").write_text('[[banks]]\nbase = 0\nsize = "1G"\n')
    (work / "maps" / "b.iomem").write_text("80000000-bfffffff : System RAM\n")
    monkeypatch.chdir(work)
    assert list(select_memory_maps(["maps/a.toml"], base_dir=config_dir)) == ["a"]
    assert list(select_memory_maps(["maps/b.iomem"], base_dir=config_dir)) == ["b"]
    assert list(select_memory_maps(["maps/"], base_dir=config_dir)) == ["a"]
    assert list(select_memory_maps(["maps/*.iomem"], base_dir=config_dir)) == ["b"]
    with pytest.raises(sweep.ValidationError) as info:
        select_memory_maps(["maps/c.dtb"], base_dir=config_dir)
    assert str(info.value) == f"{config_dir / 'maps' / 'c.dtb'}: no such memory-map file"


# --- device trees read as Linux 6.x reads them (drivers/of/fdt.c, early_init_dt_scan_memory) ---


def _load_with_warnings(tmp_path, root: fdt.Node, caplog) -> tuple[tuple[Bank, ...], list[str]]:
    path = tmp_path / "linux.dtb"
    path.write_bytes(fdt.encode(root))
    caplog.clear()
    with caplog.at_level("WARNING", logger="sweep.formats.loaders"):
        memory_map = load_memory_map(path)
    prefix = f"{path}: "
    lines = [r.getMessage() for r in caplog.records]
    assert all(line.startswith(prefix) and "\n" not in line for line in lines), lines
    return banks(memory_map), [line.removeprefix(prefix) for line in lines]


def test_linux_reads_only_root_children_with_device_type_memory(tmp_path, caplog):
    """fdt_for_each_subnode(node, fdt, 0) visits the root's children only, and the test is
    strcmp(device_type, "memory"): a memory@ name without it, an SRAM named memory@ deeper down
    and a device_type = "memory" node under /soc add nothing."""
    soc = fdt.Node("soc", {"#address-cells": fdt.cells(1), "#size-cells": fdt.cells(1)})
    soc.children = [
        fdt.Node("memory@10000000", {"reg": fdt.cells(0x1000_0000, 0x4_0000)}),
        fdt.Node(
            "dram@20000000",
            {"device_type": b"memory\0", "reg": fdt.cells(0x2000_0000, 0x1000_0000)},
        ),
    ]
    root = tree(
        fdt.Node("memory@0", {"reg": fdt.cells(0, GiB, width=2)}),
        fdt.Node("sram@1", {"device_type": b"memory-sram\0", "reg": fdt.cells(1, 1, width=2)}),
        memory_node("ram@80000000", fdt.cells(0x8000_0000, GiB, width=2)),
        soc,
    )
    found, warnings = _load_with_warnings(tmp_path, root, caplog)
    assert found == (Bank(0x8000_0000, GiB),)
    assert warnings == [
        'node /memory@0: no device_type = "memory": skipped (Linux does not go by the name)',
        'node /soc/dram@20000000: device_type = "memory" below the root\'s children: skipped'
        " (Linux reads only children of the root)",
    ]


@pytest.mark.parametrize(
    "status, kept",
    [
        (None, True),
        (b"okay\0", True),
        (b"ok\0", True),
        (b"disabled\0", False),
        (b"fail\0", False),
        (b"okay-ish\0", False),
    ],
)
def test_status_other_than_okay_or_ok_is_skipped(tmp_path, caplog, status, kept):
    """of_fdt_device_is_available: no status, or strcmp equal to "ok" or "okay"."""
    extra = {} if status is None else {"status": status}
    root = tree(
        memory_node("memory@40000000", fdt.cells(0x4000_0000, GiB, width=2)),
        memory_node("memory@100000000", fdt.cells(0x1_0000_0000, GiB, width=2), **extra),
    )
    found, warnings = _load_with_warnings(tmp_path, root, caplog)
    second = (Bank(0x1_0000_0000, GiB),) if kept else ()
    assert found == (Bank(0x4000_0000, GiB), *second)
    if not kept:
        assert warnings == [
            f"node /memory@100000000: status {status[:-1].decode()!r}: skipped (not okay)"
        ]


def test_usable_memory_replaces_reg_and_size_zero_entries_are_skipped(tmp_path, caplog):
    """reg = of_get_flat_dt_prop(node, "linux,usable-memory") first, then "reg"; and in the entry
    loop `if (size == 0) continue;`."""
    root = tree(
        memory_node(
            "memory@40000000",
            fdt.cells(0x4000_0000, 8 * GiB, width=2),
            **{"linux,usable-memory": fdt.cells(0x5000_0000, GiB, 0x9000_0000, 0, width=2)},
        ),
        memory_node("memory@300000000", fdt.cells(0x3_0000_0000, 0, 0x4_0000_0000, GiB, width=2)),
    )
    found, warnings = _load_with_warnings(tmp_path, root, caplog)
    assert found == (Bank(0x5000_0000, GiB), Bank(0x4_0000_0000, GiB))
    hint = "(firmware fills it in at boot? read the blob from the running board, /sys/firmware/fdt)"
    assert warnings == [
        f"node /memory@40000000 linux,usable-memory entry 1: size 0: skipped {hint}",
        f"node /memory@300000000 reg entry 0: size 0: skipped {hint}",
    ]


def test_trailing_partial_cells_are_ignored(tmp_path, caplog):
    """`while ((endp - reg) >= (dt_root_addr_cells + dt_root_size_cells))`: what is left after
    the last whole entry (here one cell and two stray bytes, with 2/1 cells) is never read."""
    raw = fdt.cells(0, 0x8000_0000, GiB) + fdt.cells(0x1) + b"\xab\xcd"
    root = tree(memory_node("memory@80000000", raw), address_cells=2, size_cells=1)
    found, warnings = _load_with_warnings(tmp_path, root, caplog)
    assert found == (Bank(0x8000_0000, GiB),)
    assert warnings == [
        "node /memory@80000000: reg has 6 trailing byte(s) short of a whole entry (3 cells):"
        " ignored"
    ]


def test_a_blob_nested_100000_deep_is_one_line_and_stops_at_fdt_max_depth():
    """Nothing recursive: the reader stops at the 64th level (FDT_MAX_DEPTH, drivers/of/fdt.c),
    so the error names the offset of that node's FDT_BEGIN_NODE, not the 100,000th."""
    import time

    struct_block = bytearray(struct.pack(">II", fdt.FDT_BEGIN_NODE, 0))  # the root, name ""
    for _ in range(100_000):
        struct_block += struct.pack(">I4s", fdt.FDT_BEGIN_NODE, b"n\0\0\0")
    struct_block += struct.pack(">I", fdt.FDT_END_NODE) * 100_001 + struct.pack(">I", fdt.FDT_END)
    off_rsvmap, off_struct = 40, 56
    total = off_struct + len(struct_block)
    header = fdt.HEADER.pack(
        fdt.FDT_MAGIC, total, off_struct, total, off_rsvmap, 17, 16, 0, 0, len(struct_block)
    )
    blob = header + bytes(16) + bytes(struct_block)
    start = time.perf_counter()
    with pytest.raises(sweep.ValidationError) as info:
        fdt.parse(blob, "deep.dtb")
    seconds = time.perf_counter() - start
    message = str(info.value)
    # root at 56 (8 bytes), then each level 8 bytes: level 64 begins at 56 + 8 + 63 * 8
    assert message == (
        f"deep.dtb: node /n/...(60 more)/n/n (offset {56 + 8 + 63 * 8:#x}): nodes nested deeper"
        " than 64 levels (FDT_MAX_DEPTH of drivers/of/fdt.c)"
    )
    print(f"100,000-deep blob ({len(blob)} bytes): one line in {seconds * 1000:.1f} ms")


def test_error_lines_stay_short_with_4k_node_names(tmp_path):
    """A 4 KiB node name shows as its first 29 characters and '...'."""
    name = "memory@" + "8" * 4096
    root = tree(memory_node(name, fdt.cells(0x8000_0000, 0, width=2)))
    path = tmp_path / "long.dtb"
    path.write_bytes(fdt.encode(root))
    with pytest.raises(sweep.ValidationError) as info:
        load_memory_map(path)
    message = str(info.value).removeprefix(f"{path}: ")
    assert message.startswith("no DRAM bank left: node /memory@8888888888888888888888...: size 0")
    assert len(message) < 200


def test_a_blob_with_every_node_skipped_names_the_first_reason(tmp_path):
    root = tree(memory_node("memory@0", fdt.cells(0, GiB, width=2), status=b"disabled\0"))
    path = tmp_path / "off.dtb"
    path.write_bytes(fdt.encode(root))
    with pytest.raises(sweep.ValidationError) as info:
        load_memory_map(path)
    assert str(info.value) == (
        f"{path}: no DRAM bank left: node /memory@0: status 'disabled': skipped (not okay)"
    )
