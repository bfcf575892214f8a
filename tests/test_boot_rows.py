"""Boot-time mapping sets as rows (docs/model.md section 10): ``sweep.build`` and ``sweep run``
against the scalar tree (``bootmap.boot_tables``, ``reference_tree.Tree``) and against the EL2
tables read back from booted kernels (``tests/data/kernelboot/walks``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sweep
from sweep.bootset import profile_for
from sweep.core.errors import ValidationError
from sweep.core.memmap import MemoryMap
from sweep.formats.bootlog import parse_boot_log
from sweep.model import bootmap
from sweep.plan.kernels import boot_kernel, shipped_profiles
from sweep.verify import verify_boot_file

WALKS = Path(__file__).resolve().parent / "data" / "kernelboot" / "walks"
LEVELS = ("tables_lm1", "tables_l0", "tables_l1", "tables_l2", "tables_l3", "table_pages")


def _random_banks(rng: random.Random, granule: int) -> list[tuple[int, int]]:
    """1-3 banks below the linear map's reach (no clip), some above 4 GiB (ZONE_NORMAL)."""
    base = rng.choice([0x4000_0000, 0x8000_0000, 0x8_8000_0000])
    banks = []
    for _ in range(rng.choice([1, 2, 3])):
        size = rng.choice([1, 2, 3, 6]) << 30
        banks.append((base, size))
        base += size + rng.choice([0, 1 << 30, 0x7_8000_0000])
    return banks


def _cases(n: int, seed: int = 7):
    rng = random.Random(seed)
    kernels = sorted(shipped_profiles())
    for i in range(n):
        release = kernels[i % len(kernels)]
        profile = profile_for(release)
        g = profile.granule
        banks = _random_banks(rng, g)
        lo, size = banks[0]
        idmap = lo + rng.randrange(64 << 20, size - (64 << 20), g)
        va_bits = 48 if g == 16384 or rng.random() < 0.6 else 39
        layout = sweep.core.eras.era_of_version(profile.version).name
        if va_bits == 39 and layout == "linux-5.12":
            va_bits = 48
        yield dict(
            memory_map=f"m{i}", granule=g, va_bits=va_bits, layout=layout, block_mappings=False,
            idmap_pa=idmap, tag_random=rng.getrandbits(64) if rng.random() < 0.5 else 0,
            mappings=rng.choice(["nvhe-boot", "pkvm-boot"]), cpus=rng.choice([1, 2, 4, 8]),
            kernel=release,
        ), banks  # fmt: skip


def _scalar(case: dict, banks, row) -> dict:
    """The row's boot set listed and counted by ``bootmap``'s scalar tree (48-bit trees), with
    the row's alias offset and reservation (held to the kernel's elsewhere)."""
    g, mode = case["granule"], case["mappings"].removesuffix("-boot")
    kernel = boot_kernel(profile_for(case["kernel"]))
    delta = (int(row.hyp_dram_last) - (banks[-1][0] + banks[-1][1] - 1)) % (1 << 64)
    size = int(row.pkvm_reserve_bytes) if mode == "pkvm" else 0
    leaves = bootmap.boot_leaves(
        mode, kernel.image, g, 48, delta, kernel.image.image_pa(case["idmap_pa"]), banks,
        case["cpus"], reserve_base=bootmap.pool_base(banks, size, g) if size else 0,
        reserve_size=size,
    )  # fmt: skip
    assert leaves[0].what == "idmap"
    want = bootmap.tree_tables(leaves, g, 48)
    alone, rest = (bootmap.tree_tables(x, g, 48) for x in (leaves[:1], leaves[1:]))
    want["shared_tables"] = alone["table_pages"] + rest["table_pages"] - want["table_pages"]
    return want


def test_boot_rows_agree_with_the_scalar_tree():
    cases = list(_cases(260))
    frame = pd.DataFrame([c for c, _ in cases])
    maps = {c["memory_map"]: MemoryMap(c["memory_map"], banks) for c, banks in cases}
    out = sweep.build(frame, maps)
    assert out["mappings"].astype(str).tolist() == frame["mappings"].tolist()
    for (case, banks), (_, row) in zip(cases, out.iterrows(), strict=True):
        want = _scalar(case, banks, row)
        got = {name: int(row[name]) for name in want}
        assert got == want, (case, got, want)
        assert int(row.table_bytes) == want["table_pages"] * case["granule"]


def _row_for(report, mappings: str, cpus: int) -> pd.Series:
    frame = pd.DataFrame(
        [
            dict(
                memory_map=report.memory_map.name,
                granule=report.granule,
                va_bits=report.va_bits,
                layout=report.layout,
                block_mappings=False,
                idmap_pa=report.idmap_pa,
                tag_random=report.tag_random,
                mappings=mappings,
                cpus=cpus,
                kernel=report.boot.release,
            )
        ]  # fmt: skip
    )
    return sweep.build(frame, {report.memory_map.name: report.memory_map}).iloc[0]


def _plain_cpu(boot) -> bool:
    """A boot the sweep's rows describe: no Spectre-v3a vectors, no SVE state mapped at EL2
    (pKVM 6.10+ maps it), no GICv2 (docs/model.md section 10)."""
    version = tuple(int(x) for x in boot.release.split("-")[0].split("+")[0].split(".")[:2])
    sve = boot.protected and version >= bootmap.HOST_SVE_SINCE and boot.sve_vector_bytes
    return not boot.spectre_v3a and not sve


PLAIN = [p for p in sorted(WALKS.glob("*.log")) if _plain_cpu(parse_boot_log(p.read_text()))]
"""The walks whose CPU maps nothing of its own at EL2 (the others: verify-boot's tests)."""


@pytest.mark.parametrize("log", PLAIN, ids=lambda p: p.stem)
def test_boot_rows_agree_with_the_tables_kernels_built(log):
    walk = verify_boot_file(log, tables=log.with_name(log.stem + ".walk.json"))
    boot = walk.boot
    real = json.loads(log.with_name(log.stem + ".walk.json").read_text())
    row = _row_for(walk, "pkvm-boot" if boot.protected else "nvhe-boot", boot.cpus or 1)
    assert {k: int(row[k]) for k in LEVELS} == {k: real[k] for k in LEVELS}


def test_the_walks_hold_enough_plain_boots():
    plain = [parse_boot_log(p.read_text()) for p in PLAIN]
    assert sum(b.protected for b in plain) >= 4 and sum(not b.protected for b in plain) >= 15


def test_a_boot_set_without_its_kernel_is_refused():
    frame = pd.DataFrame([dict(
        memory_map="m", granule=65536, va_bits=48, layout="linux-7.0", block_mappings=False,
        idmap_pa=0x8000_0000, mappings="nvhe-boot", cpus=4, kernel="7.3.4+deb13-arm64",
    )])  # fmt: skip
    with pytest.raises(ValidationError, match="granule build, but the row's granule is 65536"):
        sweep.build(frame, {"m": [(0x8000_0000, 1 << 30)]})
    frame["granule"] = 4096
    frame["layout"] = "linux-6.9"
    with pytest.raises(ValidationError, match="a linux-7.0 build, but the row's layout is"):
        sweep.build(frame, {"m": [(0x8000_0000, 1 << 30)]})


def test_all_dram_rows_are_unchanged_by_the_new_inputs():
    base = dict(
        memory_map="m", granule=4096, va_bits=48, layout="linux-6.9", block_mappings=False,
        idmap_pa=0x8008_0000,
    )  # fmt: skip
    maps = {"m": [(0x8000_0000, 2 << 30)]}
    old = sweep.build(pd.DataFrame([base]), maps)
    new = sweep.build(pd.DataFrame([dict(base, mappings="all-dram", cpus=0, kernel="")]), maps)
    assert old.equals(new)
    assert np.asarray(old["mappings"].astype(str))[0] == "all-dram"


@pytest.mark.parametrize("release", sorted(shipped_profiles()))
def test_a_unit_of_placements_counts_as_the_scalar_tree(release):
    """One map, the idmap page every 1 MiB + 12 KiB of its low bank (a stride unit), both boot
    sets (pKVM's with a random tag a row); 40 rows each held to the scalar tree."""
    profile = profile_for(release)
    g = profile.granule
    banks = [(0x8000_0000, 3 << 30), (0x8_8000_0000, 4 << 30)]
    idmaps = np.arange(0x8000_0000 + (64 << 20), 0x8000_0000 + (3 << 30) - (64 << 20),
                       (1 << 20) + 3 * 4096, dtype=np.uint64) // g * g  # fmt: skip
    layout = sweep.core.eras.era_of_version(profile.version).name
    rng = random.Random(release)
    for mappings in ("nvhe-boot", "pkvm-boot"):
        base = dict(memory_map="m", granule=g, va_bits=48, layout=layout, block_mappings=False,
                    mappings=mappings, cpus=4, kernel=release)  # fmt: skip
        frame = pd.DataFrame(
            {**{k: [v] * len(idmaps) for k, v in base.items()}, "idmap_pa": idmaps}
        )
        if mappings == "pkvm-boot":  # a tag per row, as a seeded sweep gives: the alias moves
            frame["tag_random"] = np.array([rng.getrandbits(64) for _ in idmaps], np.uint64)
        out = sweep.build(frame, {"m": MemoryMap("m", banks)})
        for i in rng.sample(range(len(idmaps)), 40):
            case = dict(base, idmap_pa=int(idmaps[i]))
            want = _scalar(case, banks, out.iloc[i])
            assert {k: int(out.iloc[i][k]) for k in want} == want, (mappings, hex(case["idmap_pa"]))


def test_boot_tables_lists_the_mappings_and_agrees():
    from click.testing import CliRunner

    from sweep.cli import main

    args = ["boot-tables", "--map", "juno", "--granule", "4K", "--va-bits", "48"]
    args += ["--layout", "linux-7.0", "--idmap", "0x8008_0000", "--kernel", "7.3.4+deb13-arm64"]
    for mappings, stacks in (("nvhe-boot", 4), ("pkvm-boot", 4)):
        got = CliRunner().invoke(main, [*args, "--mappings", mappings, "--cpus", "4"])
        assert got.exit_code == 0, got.output
        lines = got.output.splitlines()
        assert lines[-1] == "agree"
        lines = [line.split()[1] for line in lines if line.startswith("  0x")]  # what each maps
        assert lines.count("stack") == stacks and lines.count("idmap") == 1
        assert ("pool" in lines) == (mappings == "pkvm-boot")
    bad = CliRunner().invoke(main, [*args, "--granule", "64K"])
    assert bad.exit_code == 2 and "a 4096-byte granule build" in bad.output
