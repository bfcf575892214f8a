"""The builder against the kernel's own page-table code, on every table column.

``tools/kernel-pgtable/build`` fetches Debian's ``linux-source-6.12`` and ``linux-source-6.1``
with apt and compiles their ``arch/arm64/kvm/hyp/pgtable.c``, unmodified, in userspace (one
binary per granule). Each binary reads configurations as the map calls a kernel would make
(``kvm_pgtable_hyp_init(tree_va_bits)``, one ``kvm_pgtable_hyp_map`` per clipped bank alias,
then the idmap page) and prints the tables of the finished tree per level, and the table counts
of the runtime mappings and of the idmap page alone. ``sweep.build`` must give the same
``tables_lm1`` .. ``tables_l3``, ``table_pages``, ``table_bytes`` and ``shared_tables``.

The map calls' inputs (the clipped banks, ``delta``, ``tree_va_bits``: docs/model.md sections 1-3)
come from the scalar reference's ``prepare``; section 5 is then the kernel's alone.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from conftest import HIGH_ONLY_ONE_TREE

from sweep import build
from sweep.core.errors import ValidationError
from sweep.core.memmap import PA_LIMIT, MemoryMap, level_shift, levels
from sweep.model.reference import prepare
from sweep.model.reference_tree import build_tree
from sweep.plan.plugins import get_layouts

pytestmark = pytest.mark.kernel

TOOL = Path(__file__).resolve().parents[1] / "tools" / "kernel-pgtable" / "build"
SEED = 20261202
ROWS = 6000
# The eras of one merged tree (linux-4.6's two trees are two calls, held by the reference).
LAYOUTS = ("linux-4.8", "linux-4.17", "linux-5.12", "linux-6.2", "linux-6.9", "linux-7.0")
GRANULES = (4096, 16384, 65536)
COLUMNS = (
    "tables_lm1",
    "tables_l0",
    "tables_l1",
    "tables_l2",
    "tables_l3",
    "table_pages",
    "table_bytes",
    "shared_tables",
)
# What one configuration may cost the kernel's walk: pages mapped one by one (blocks off), or
# level-2 entries (blocks on: any bigger run is made of level-1 blocks or has few edges).
MAX_PAGES = 1 << 16
MAX_L2_ENTRIES = 1 << 16


@pytest.fixture(scope="module")
def binaries() -> dict[str, dict[int, str]]:
    """{kernel: {granule: binary}}, built (and the sources fetched) on first use."""
    result = subprocess.run([str(TOOL), "--json"], capture_output=True, text=True, timeout=1800)
    if result.returncode == 3:  # a system tool is missing; the message names its package
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr[-2000:]
    return {k: {int(g): p for g, p in v.items()} for k, v in json.loads(result.stdout).items()}


# --- configurations ---------------------------------------------------------------------------


def _random_map(rng: random.Random, granule: int, va_bits: int, blocks: bool) -> list:
    """1 to 4 banks, sorted and apart, near block boundaries, often on unaligned bases."""
    budget = (MAX_L2_ENTRIES << level_shift(2, granule)) if blocks else MAX_PAGES * granule
    block = 1 << rng.choice([level_shift(1, granule), level_shift(2, granule), 30])
    cursor = rng.randrange(1, (1 << rng.randint(31, 51)) // block + 2) * block
    cursor += rng.choice([0, 0, granule, -granule, rng.randrange(0, block, granule)])
    cursor = max(cursor, granule)
    banks = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(4)
        if kind == 0:
            size = rng.randint(1, 64) * granule
        elif kind == 1:
            size = block * rng.randint(1, 4)
        else:
            size = rng.randrange(granule, max(budget // 4, 2 * granule))
        size += rng.choice([0, 0, granule, 4096])  # sometimes not a whole page of the granule
        if cursor + size > PA_LIMIT or size > budget:
            break
        banks.append((cursor, size))
        budget -= size
        gap = rng.choice([0, granule, block, rng.randrange(granule, 1 << 36)])
        cursor += size + gap
    return banks


def _crafted(rng: random.Random, granule: int, va_bits: int, blocks: bool) -> tuple:
    """Conflicts: 4.6's alias in one tree (``high-only-merged``, tests/conftest.py) with
    PHYS_OFFSET at 2^(V-1) (delta == 0), or a bank whose alias
    covers the idmap (a second bank at 2^(V-1) + offset, the alias of bank 0 + offset)."""
    half = 1 << (va_bits - 1)
    size = rng.choice([1 << level_shift(2, granule), 1 << 30, 3 << 29, 2 << 30, 64 * granule])
    size = min(size, (MAX_L2_ENTRIES << level_shift(2, granule)) if blocks else MAX_PAGES * granule)
    if rng.random() < 0.5:
        base = half + rng.choice([0, 0, granule, 1 << level_shift(2, granule)])
        banks = [(base, size)]
        idmap = base + rng.randrange(0, size, granule)
        return banks, idmap, HIGH_ONLY_ONE_TREE.name
    # bank 0 at B (PHYS_OFFSET B, 1 GiB aligned): its alias under high-only is 2^(V-1) + (p - B)
    low = 1 << rng.randint(30, max(30, va_bits - 3))
    offset = rng.randrange(0, size, granule)
    banks = [(low, size), (half + offset - offset % (1 << 30), size + (1 << 30))]
    if banks[1][0] < low + size:
        return _crafted(rng, granule, va_bits, blocks)
    idmap = half + offset
    return (
        banks,
        idmap,
        rng.choice([HIGH_ONLY_ONE_TREE.name, HIGH_ONLY_ONE_TREE.name, "linux-4.8", "linux-4.17"]),
    )


def _args(config: dict) -> dict:
    """``prepare``'s arguments: the one-tree what-if of 4.6's alias is a plugin layout."""
    args = {k: v for k, v in config.items() if k != "memory_map"}
    if args["layout"] == HIGH_ONLY_ONE_TREE.name:
        args["layout_plugin"] = HIGH_ONLY_ONE_TREE
    return args


def configurations(seed: int, rows: int) -> tuple[dict[str, MemoryMap], list[dict]]:
    rng = random.Random(seed)
    maps: dict[str, MemoryMap] = {}
    configs: list[dict] = []
    while len(configs) < rows:
        granule = rng.choice(GRANULES)
        va_bits = rng.randint(36, 52)
        blocks = rng.random() < 0.5
        if rng.random() < 0.25:
            banks, idmap, layout = _crafted(rng, granule, va_bits, blocks)
        else:
            banks = _random_map(rng, granule, va_bits, blocks)
            layout = rng.choice(LAYOUTS)
            idmap = None
        if not banks:
            continue
        name = f"kernel-{len(configs)}"
        try:
            mm = MemoryMap(name, banks)
            trimmed = mm.trimmed(granule)
        except (ValidationError, ValueError):
            continue
        if idmap is None:
            start, end = rng.choice(trimmed)
            where = rng.randrange(3)
            idmap = start if where == 0 else end - granule if where == 1 else start
            if where == 2:
                idmap = rng.randrange(start, end)
        config = dict(
            memory_map=name,
            granule=granule,
            va_bits=va_bits,
            layout=layout,
            block_mappings=blocks,
            idmap_pa=idmap // granule * granule,
            tag_random=0 if rng.random() < 0.5 else rng.getrandbits(64),
        )
        try:
            prepare(mm, **_args(config))
        except ValidationError:
            continue
        maps[name] = mm
        configs.append(config)
    return maps, configs


# --- the kernel's answer ----------------------------------------------------------------------


def kernel_lines(maps: dict[str, MemoryMap], configs: list[dict]) -> list[tuple]:
    """Per configuration: (tree_va_bits, input line for the harness, class)."""
    out = []
    for config in configs:
        c = prepare(maps[config["memory_map"]], **_args(config))
        ranges = c.runtime
        bits = c.hyp.tree_va_bits
        assert all(0 <= va < end <= 1 << bits for va, end, _pa in ranges), config
        fields = [bits, int(c.block_mappings), len(ranges)]
        for va, end, pa in ranges:
            fields += [hex(va), hex(end), hex(pa)]
        fields.append(hex(c.idmap_pa))
        # The class of the configuration: what the idmap's walk meets (reference's tree).
        tree = build_tree(ranges, c.idmap_pa, c.granule, bits, c.block_mappings)
        met = "empty"
        if tree.split:
            met = f"block at L{tree.split[0][0]}"
        elif any(va <= c.idmap_pa < end for va, end, _pa in ranges):
            met = "page"
        conflict = (
            "overlap"
            if any(va <= c.idmap_pa < end and va != pa for va, end, pa in ranges)
            else ("delta 0" if met != "empty" else "apart")
        )
        out.append((bits, " ".join(map(str, fields)), (met, conflict)))
    return out


def run_kernel(binary: str, lines: list[str]) -> list[str]:
    result = subprocess.run(
        [binary], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr
    answers = result.stdout.splitlines()
    assert len(answers) == len(lines)
    return answers


def kernel_columns(answer: str, granule: int, bits: int) -> dict:
    """The table columns of docs/model.md section 5 from the kernel's tree."""
    status, *values = answer.split()
    assert status == "ok", answer
    lm1, l0, l1, l2, l3, t_runtime, t_idmap, _rret, _iret, warnings = map(int, values)
    pages = lm1 + l0 + l1 + l2 + l3
    return dict(
        tables_lm1=lm1,
        tables_l0=l0,
        tables_l1=l1,
        tables_l2=l2,
        tables_l3=l3,
        table_pages=pages,
        table_bytes=pages * granule,  # kvm_pgtable_hyp_init: the root is a zeroed page too
        shared_tables=t_runtime + t_idmap - pages,
    ), warnings


@pytest.fixture(scope="module")
def cases():
    maps, configs = configurations(SEED, ROWS)
    frame = pd.DataFrame(configs).astype({"idmap_pa": "uint64", "tag_random": "uint64"})
    rows = build(frame, maps, {**get_layouts(), HIGH_ONLY_ONE_TREE.name: HIGH_ONLY_ONE_TREE})
    return configs, rows, kernel_lines(maps, configs)


@pytest.mark.parametrize("kernel", ["7.3", "6.12", "6.1"])
def test_builder_equals_the_kernel_on_every_table_column(binaries, cases, kernel):
    configs, rows, lines = cases
    max_levels = 4 if kernel == "6.1" else 5  # 6.1 has no level -1 (KVM_PGTABLE_MAX_LEVELS 4)
    compared, skipped, classes, differences = 0, 0, Counter(), []
    table_columns = rows[list(COLUMNS)].to_numpy()
    block_warnings = Counter()  # rows where the idmap meets a block: with / without a WARN_ON
    for granule in GRANULES:
        picked = [
            i
            for i, cfg in enumerate(configs)
            if cfg["granule"] == granule and levels(lines[i][0], granule) <= max_levels
        ]
        skipped += sum(1 for cfg in configs if cfg["granule"] == granule) - len(picked)
        answers = run_kernel(binaries[kernel][granule], [lines[i][1] for i in picked])
        for i, answer in zip(picked, answers, strict=True):
            want, warnings = kernel_columns(answer, granule, lines[i][0])
            if lines[i][2][0].startswith("block"):
                block_warnings[warnings > 0] += 1
            got = dict(zip(COLUMNS, map(int, table_columns[i]), strict=True))
            if got != want:
                differences.append((configs[i], lines[i][1], got, want))
            compared += 1
            cfg = configs[i]
            classes[
                (granule, cfg["block_mappings"], levels(lines[i][0], granule), *lines[i][2])
            ] += 1
    met = Counter(k[3] for k in classes.elements())
    conflicts = Counter(k[4] for k in classes.elements())
    print(
        f"\nLinux {kernel}: {compared} rows compared with the kernel's pgtable.c, "
        f"{len(classes)} distinct classes (granule, blocks, levels, idmap meets, conflict); "
        f"idmap meets: {dict(met)}; conflicts: {dict(conflicts)}"
        + (
            f"; {skipped} rows skipped: 5-level trees (level -1), which 6.1 cannot build"
            if skipped
            else ""
        )
    )
    assert compared >= (5000 if kernel == "6.12" else 4000)
    # docs/model.md 5: replacing a block, 6.1 warns (kvm_set_table_pte:
    # WARN_ON(kvm_pte_valid(old))); 6.12 installs the table with no warning.
    assert block_warnings[kernel == "6.1"] > 0 and not block_warnings[kernel != "6.1"]
    for level in (1, 2):
        assert met[f"block at L{level}"] > 0, "no row has the idmap meet a block at this level"
    assert not differences, (
        "\n".join(
            f"{cfg} | {line} | builder {got} | kernel {want}"
            for cfg, line, got, want in differences[:10]
        )
        + f"\n{len(differences)} rows differ"
    )
