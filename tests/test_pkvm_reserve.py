"""sweep.model.pkvm_reserve: kvm_hyp_reserve's pages by hand, against real boots, and against the
kernel's own formulas compiled in userspace (tools/kernel-pgtable, ``pkvm`` oracles)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import kernel_oracles

from sweep import MemoryMap, build
from sweep.core.eras import ERAS, era_of_version
from sweep.formats.loaders import load_memory_map
from sweep.model.pkvm_reserve import PARTS, reserve_many, reserve_parts

ROOT = Path(__file__).resolve().parents[1]
WALKS = ROOT / "tests" / "data" / "kernelboot" / "walks"
MIB, GIB = 1 << 20, 1 << 30


# --- (a) worked by hand: one 2 GiB bank at 0x8000_0000, 4K pages ------------------------------
#
# n = 2 GiB >> 12 = 524288 pages, PTRS_PER_PTE = 512, PMD_SIZE = 2 MiB.
# __hyp_pgtable_max_pages(n): 5 levels (6.9+): 1024 + 2 + 1 + 1 + 1 = 1029; 4 levels (6.1): 1028.
# The 1 GiB term, 262144 pages: 512 + 1 + 1 + 1 + 1 = 516 (5 levels), 515 (4 levels).
# s1 = total + 1 GiB term: 1029 + 516 = 1545 (6.1: 1543); host_s2 = s1 + 16: 1561 (6.1: 1559).
# vm_table = PAGE_ALIGN(255 * 8 = 2040) >> 12 = 1.
# vmemmap = 524288 * sizeof(struct hyp_page) bytes from a page-aligned start (0x80000 * 4 or 8):
#   4 bytes -> 512 pages (6.2 to 6.19), 8 bytes -> 1024 pages (7.x).
# ffa = 2 mailboxes + DIV_ROUND_UP(48 + 32 + 16 + 2048 * 16 = 32864, 4096) = 2 + 9 = 11.
# 6.9:  1545 + 1561 + 1 + 512 + 11 = 3630 pages = 14.18 MiB -> ALIGN(2 MiB) 16 MiB.
# 7.0:  1545 + 1561 + 1 + 1024 + 0 + 11 = 4142 pages = 16.18 MiB -> 18 MiB.
# 6.1:  pool 1543 + 1559 = 3102; fixed point: nr = DIV_ROUND_UP((3102 + 0) * 4, 4096) = 4,
#       + max_pages(4) = 4 (1 per level) -> 8; again from 8: DIV_ROUND_UP(3110 * 4, 4096) = 4,
#       + 4 = 8: stable. 3102 + 8 = 3110 pages = 12.15 MiB -> 14 MiB.
# Base: top-down, the highest 2 MiB-aligned range below 0x1_0000_0000.
HAND = {
    "linux-5.12": (1543, 1559, 0, 8, 0, 0, 3110, 14 * MIB),
    "linux-6.2": (1545, 1561, 1, 512, 0, 11, 3630, 16 * MIB),
    "linux-6.9": (1545, 1561, 1, 512, 0, 11, 3630, 16 * MIB),
    "linux-7.0": (1545, 1561, 1, 1024, 0, 11, 4142, 18 * MIB),
}


@pytest.mark.parametrize("era", sorted(HAND))
def test_one_2g_bank_at_4k_by_hand(era):
    *parts, pages, size = HAND[era]
    got = reserve_parts(era, 4096, np.array([0x8000_0000]), np.array([2 * GIB]))
    assert [got[p] for p in PARTS] == parts
    assert got["pages"] == pages
    assert got["reserve_bytes"] == size
    assert got["reserve_base"] == (1 << 32) - size


@pytest.mark.parametrize("era", ["linux-4.6", "linux-4.8", "linux-4.17", "merged"])
def test_eras_before_pkvm_reserve_nothing(era):
    got = reserve_parts(era, 4096, np.array([0x8000_0000]), np.array([2 * GIB]))
    assert set(got.values()) == {0}


def test_fallback_and_failure():
    # 64K: PMD_SIZE is 512 MiB, which a 64 MiB bank cannot hold: the kernel falls back to the
    # unaligned size, page-aligned, at the top of the bank.
    got = reserve_parts("linux-7.0", 65536, np.array([0x4000_0000]), np.array([64 * MIB]))
    assert got["reserve_bytes"] == got["pages"] * 65536
    assert got["reserve_base"] == 0x4000_0000 + 64 * MIB - got["reserve_bytes"]
    # Nothing fits above the first page (memblock never allocates page 0): nothing is reserved.
    tiny = reserve_parts("linux-7.0", 4096, np.array([0]), np.array([1 * MIB]))
    assert (tiny["reserve_bytes"], tiny["reserve_base"]) == (0, 0)


# --- (b) real boots: every pKVM console in tests/data/kernelboot/walks --------------------------


BOOTS = sorted(WALKS.glob("*pkvm*.log"))


@pytest.mark.parametrize("log", BOOTS, ids=[p.stem for p in BOOTS])
def test_real_boot_reservation(log):
    text = log.read_text(errors="replace")
    version = re.search(r"Linux version (\S+)", text)
    reserved = re.search(r"kvm \[\d+\]: Reserved (\d+) MiB at (0x[0-9a-f]+)", text)
    assert version and reserved, log
    granule = {"16k": 16384, "64k": 65536}.get(version.group(1).rsplit("-", 1)[-1], 4096)
    era = era_of_version(version.group(1)).name
    banks = np.array(load_memory_map(log).trimmed(granule), dtype=np.int64)
    got = reserve_parts(era, granule, banks[:, 0], banks[:, 1] - banks[:, 0])
    assert got["reserve_bytes"] == int(reserved.group(1)) * MIB
    # The model's base is the top candidate; the kernel's other early reservations (DTB, ...)
    # can only push the real one down, by whole PMDs.
    real_base, pmd = int(reserved.group(2), 16), granule * granule // 8
    assert real_base <= got["reserve_base"] and (got["reserve_base"] - real_base) % pmd == 0


# --- (c) the kernel's formulas compiled in userspace ---------------------------------------------

PKVM_ERAS = {era.name: era.pkvm for era in ERAS if era.pkvm}  # era -> its kernel's sources
NAMES = {4096: "4k", 16384: "16k", 65536: "64k"}
MAPS = 10_000


@pytest.fixture(scope="module")
def pkvm_oracles() -> dict:
    """{"6.12": {"4096": binary, ...}, ...}, built on first use."""
    return kernel_oracles("pkvm", "7.3,6.12,6.1")["pkvm"]


def random_maps(rng: np.random.Generator, granule: int, count: int):
    """``count`` maps of 1 to 8 regions, granule-aligned, sorted, apart, ending below 2^48:
    flat ``start``, ``end`` and ``offsets``."""
    starts, ends, offsets = [], [], [0]
    while len(offsets) <= count:
        k = int(rng.integers(1, 9))
        scale = int(rng.integers(0, 4))  # tiny, small, typical, huge maps
        top = (25, 32, 37, 42)[scale]
        size = (2 ** rng.uniform(0, top - 12, k)).astype(np.int64) * 4096 // granule + 1
        gap = (2 ** rng.uniform(0, top - 12, k)).astype(np.int64) * 4096 // granule + 1
        gap[0] = 0 if rng.random() < 0.05 else gap[0] * int(rng.integers(1, 64))
        base = np.cumsum(gap + np.concatenate([[0], size[:-1]])) * granule
        end = base + size * granule
        if end[-1] >= 1 << 48:
            continue
        starts.append(base)
        ends.append(end)
        offsets.append(offsets[-1] + k)
    return np.concatenate(starts), np.concatenate(ends), np.array(offsets, dtype=np.int64)


@pytest.mark.kernel
@pytest.mark.parametrize("granule", [4096, 16384, 65536], ids=["4K", "16K", "64K"])
def test_random_maps_match_the_kernel(pkvm_oracles, granule):
    rng = np.random.default_rng(0x9C3 + granule)
    start, end, offsets = random_maps(rng, granule, MAPS)
    lines = [
        " ".join(
            ["48", "4", str(b - a)]
            + [f"{s:#x} {e - s:#x}" for s, e in zip(start[a:b], end[a:b], strict=True)]
        )
        for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    ]
    assert set(PKVM_ERAS) == {"linux-5.12", "linux-6.2", "linux-6.9", "linux-7.0"}
    for era, kernel in PKVM_ERAS.items():
        binary = pkvm_oracles[kernel][str(granule)]
        done = subprocess.run(
            [binary], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120
        )
        answers = [ln.split() for ln in done.stdout.splitlines() if not ln.startswith("kvm")]
        assert len(answers) == MAPS and all(a[0] == "ok" for a in answers), done.stdout[:500]
        want = np.array([[0 if x == "-" else int(x, 0) for x in a[1:]] for a in answers])
        got = reserve_many(era, granule, start, end, offsets)
        for i, name in enumerate((*PARTS, "pages")):
            np.testing.assert_array_equal(got[name], want[:, i], err_msg=f"{era} {name}")
        placed = want[:, 8] != 0  # the oracle's base 0: nothing could be allocated
        np.testing.assert_array_equal(got["reserve_bytes"], np.where(placed, want[:, 7], 0))
        np.testing.assert_array_equal(got["reserve_base"], want[:, 8])
        print(f"{era} {NAMES[granule]}: {MAPS} maps agree, {int((~placed).sum())} unplaced")


@pytest.mark.kernel
@pytest.mark.parametrize("granule", [4096, 16384, 65536], ids=["4K", "16K", "64K"])
def test_the_row_column_is_the_kernels(pkvm_oracles, granule):
    """The same through ``sweep.build``: each map as a memory map, a row of every pKVM era with
    the idmap in its first bank at VA_BITS 48 (no clip below 2^47 of DRAM), and the row's
    ``pkvm_reserve_bytes`` against the kernel's ``Reserved`` size."""
    rng = np.random.default_rng(0x51 + granule)
    start, end, offsets = random_maps(rng, granule, 2000)
    maps, lines, rows = {}, [], []
    for k, (a, b) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)):
        banks = [(int(s), int(e - s)) for s, e in zip(start[a:b], end[a:b], strict=True)]
        if banks[-1][0] + banks[-1][1] - banks[0][0] > 1 << 46:
            continue  # would be clipped at V = 48: the kernel's regions would differ
        maps[f"m{k}"] = MemoryMap(f"m{k}", banks)
        lines.append(" ".join(["48", "4", str(len(banks))] + [f"{s:#x} {n:#x}" for s, n in banks]))
        rows.append(dict(memory_map=f"m{k}", granule=granule, va_bits=48, block_mappings=False,
                         idmap_pa=banks[0][0]))  # fmt: skip
    frame = pd.DataFrame(rows).astype({"idmap_pa": "uint64"})
    for era, kernel in PKVM_ERAS.items():
        done = subprocess.run(
            [pkvm_oracles[kernel][str(granule)]], input="\n".join(lines) + "\n",
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        answers = [ln.split() for ln in done.stdout.splitlines() if not ln.startswith("kvm")]
        want = [int(a[8], 0) if int(a[9], 0) else 0 for a in answers]  # SIZE, where BASE
        got = build(frame.assign(layout=era), maps)["pkvm_reserve_bytes"].tolist()
        assert got == want, era
    assert len(rows) > 1000
