"""Every-page runs expand to exactly the rows of a page-by-page stride sweep.

The page-by-page rows come from ``placement.kind = "stride"`` with a 4K step (at 16K and 64K a
step below the granule reaches every page, docs/model.md section 8), run through the same driver;
the runs come from breakpoints and a handful of builder calls. Row by row, every column must agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import ERA_NAMES, HIGH_ONLY_ONE_TREE
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep.core.errors import ValidationError
from sweep.core.memmap import MemoryMap
from sweep.model import refine, runs, windows
from sweep.model.builder import CODED, NUMPY_DTYPES, build_table, compute_columns
from sweep.model.intervals import AFFINE, OUTPUTS
from sweep.model.runs import Group, _Evaluator, expand, group_runs, groups_runs, runs_table
from sweep.plan.config import validate_config
from sweep.plan.plugins import registry
from sweep.plan.units import make_plan
from sweep.read.results import load as read_results
from sweep.run.driver import run_sweep
from sweep.run.task import unit_table

MIB, GIB = 1 << 20, 1 << 30
KEYS = ["memory_map", "granule", "va_bits", "layout", "block_mappings", "idmap_pa"]

# Small maps that still cross what matters: banks above PHYS_OFFSET + 2^(V-1) for V = 36
# (16K) and 39 (4K), so the kernel sits high and DRAM is clipped at the idmap page; a bank
# across 2^32 and a block boundary; unaligned bases; banks that trimming changes per granule.
MAPS = {
    "runs-high": [(0x8000_0000, 16 * MIB), (0x9_0000_0000, 8 * MIB), (0x40_8000_0000, 6 * MIB)],
    "runs-straddle": [(0xFFE0_0000, 4 * MIB), (0x1_4000_0000 - 2 * MIB, 4 * MIB + 0x3000)],
    "runs-ragged": [(0x8000_1000, 3 * MIB), (0x8800_0000, 5 * MIB + 0x8000)],
}


def write_maps(folder) -> list[str]:
    paths = []
    for name, banks in MAPS.items():
        text = f'name = "{name}"\n' + "".join(
            f"[[banks]]\nbase = {base}\nsize = {size}\n" for base, size in banks
        )
        (folder / f"{name}.toml").write_text(text)
        paths.append(str(folder / f"{name}.toml"))
    return paths


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"memory_map": str, "layout": str})
    return frame.sort_values(KEYS).reset_index(drop=True)


def test_runs_expand_to_the_page_by_page_sweep(tmp_path):
    maps = write_maps(tmp_path)
    common = {"memory_maps": maps, "unit_rows": 100_000}
    pages = validate_config({**common, "placement": {"kind": "stride", "step": "4K"}})
    runs = validate_config({**common, "placement": {"kind": "every-page"}})
    assert run_sweep(pages, out=str(tmp_path / "pages"), workers=2, progress=False).ok
    report = run_sweep(runs, out=str(tmp_path / "runs"), workers=2, progress=False)
    assert report.ok and report.rows_written == report.configurations
    written = read_results(str(tmp_path / "runs"))
    expected = sorted_rows(read_results(str(tmp_path / "pages")))
    assert len(written) < len(expected) / 20  # runs, not pages
    assert (written["pages"] > 0).all()
    got = sorted_rows(expand(written))
    assert len(got) == len(expected) == report.configurations
    for column in expected.columns:
        assert (got[column].to_numpy() == expected[column].to_numpy()).all(), column
    # The kernel-high rows are there, with their clipped DRAM changing page by page.
    high = written[written["clipped_bytes"] != written["clipped_bytes_last"]]
    assert len(high) and (high["memory_map"].astype(str) == "runs-high").all()


def test_every_page_needs_tag_seed_zero():
    config = validate_config(
        {"memory_maps": ["juno"], "placement": {"kind": "every-page"}, "tag": {"seed": 3}}
    )
    with pytest.raises(ValidationError, match="tag.seed: placement every-page writes runs"):
        make_plan(config)


def test_a_run_is_maximal_and_its_margin_affine():
    # Juno at 4K, VA_BITS 39, linux-4.8, blocks: docs/model.md example 1's board. Adjacent runs
    # differ in some output (or their margins do not continue one line), and every run's margin
    # changes by a whole number of pages from page to page.
    reg = registry()
    runs = group_runs(reg.memory_maps["juno"], 4096, 39, reg.layouts["linux-4.8"], True).to_pandas()
    assert runs["pages"].sum() == (0x7F00_0000 + 6 * GIB) // 4096
    step = (runs["margin_last"].astype(np.int64) - runs["margin"].astype(np.int64)) // np.maximum(
        runs["pages"] - 1, 1
    )
    assert set(step.abs().unique()) <= {0, 4096}
    assert len(runs) < 40


@st.composite
def small_maps(draw):
    """One to three banks of up to 8 MiB, anywhere below 2^44, far apart or close."""
    count = draw(st.integers(1, 3))
    base, banks = draw(st.integers(1, 1 << 20)) << 12, []
    for _ in range(count):
        size = draw(st.integers(1, 2048)) << 12
        banks.append((base, size))
        gap = draw(st.sampled_from([1 << 12, 1 << 21, 1 << 30, 1 << 35, 1 << 38, 1 << 40]))
        base += size + draw(st.integers(1, 64)) * gap
    return MemoryMap("random-map", [b for b in banks if b[0] + b[1] <= 1 << 44])


@settings(max_examples=40, deadline=None)
@given(
    memory_map=small_maps(),
    granule=st.sampled_from([4096, 16384, 65536]),
    va_bits=st.sampled_from([36, 39, 42, 47, 48, 52]),
    # Every era, and the what-if of 4.6's alias in one merged tree, whose idmap overlaps the
    # runtime alias (eras' layouts essentially never do): runs must split there too.
    layout=st.sampled_from(
        [
            *ERA_NAMES,
            HIGH_ONLY_ONE_TREE.name,
        ]
    ),
    blocks=st.booleans(),
)
def test_runs_of_random_maps_are_the_builder_page_by_page(
    memory_map, granule, va_bits, layout, blocks
):
    if all((b.base + b.size) // granule <= -(-b.base // granule) for b in memory_map.banks):
        return  # no whole page at this granule (docs/model.md section 1: a validation error)
    layouts = {**registry().layouts, HIGH_ONLY_ONE_TREE.name: HIGH_ONLY_ONE_TREE}
    reg_layout = layouts[layout]
    runs = group_runs(memory_map, granule, va_bits, reg_layout, blocks)
    rows = expand(runs)
    pages = np.concatenate([np.arange(s, e, granule) for s, e in memory_map.trimmed(granule)])
    assert rows["idmap_pa"].tolist() == pages.tolist()
    reference = _Evaluator(memory_map, granule, va_bits, reg_layout, blocks)(pages)
    for column, values in reference.items():
        if column in CODED:  # the builder's codes, the rows' strings: compare them as strings
            values = np.asarray(CODED[column], dtype=object)[values]
            assert rows[column].dtype == "category", column
        assert (rows[column].to_numpy() == values).all(), column


def _page_by_page(group: Group) -> dict[str, np.ndarray]:
    """Every page of a group through the builder's public entry (``build_table``), one row per
    page: what the runs must expand to, computed without the runs code."""
    g = group.granule
    pages = np.concatenate([np.arange(s, e, g) for s, e in group.memory_map.trimmed(g)])
    table = build_table(
        [group.memory_map], 0, g, group.va_bits, [group.layout], 0, group.blocks, pages
    )
    return {"idmap_pa": pages, **{c: table[c].to_numpy() for c in table.column_names[10:]}}


def test_a_group_refined_in_small_windows_gives_the_runs_of_one_window(monkeypatch):
    # runs-high at 4K and VA_BITS 36 sits above PHYS_OFFSET + 2^35 (kernel high, DRAM clipped at
    # the idmap page) and has intervals whose three samples disagree (halved): with windows of 7
    # intervals, builder calls of at most 50 pages and room for 64 intervals, its groups are
    # refined in hundreds of windows, share calls, and wait for room: the tables must not change.
    reg = registry()
    maps = [MemoryMap(name, banks) for name, banks in MAPS.items()]
    groups = [
        Group(m, 4096, 36, reg.layouts[layout], blocks)
        for m in maps
        for layout in ("linux-4.8", "linux-6.9")
        for blocks in (False, True)
    ]
    whole = [group_runs(x.memory_map, x.granule, x.va_bits, x.layout, x.blocks) for x in groups]
    calls = []

    def counted(banks, layouts, rows, *args, **kwargs):
        calls.append(len(rows))
        return compute_columns(banks, layouts, rows, *args, **kwargs)

    monkeypatch.setattr(runs, "compute_columns", counted)
    monkeypatch.setattr(refine, "WINDOW", 7)
    monkeypatch.setattr(runs, "BATCH", 50)
    monkeypatch.setattr(runs, "HELD", 64)
    windowed = groups_runs(groups)
    assert len(calls) > 300 and max(calls) <= 50
    for group, table, expected in zip(groups, windowed, whole, strict=True):
        assert table.equals(expected), (group.memory_map.name, group.layout.name, group.blocks)
    high = [t.num_rows for x, t in zip(groups, whole, strict=True) if x.layout.name == "linux-6.9"]
    assert min(high[:2]) > 900  # runs-high's: over a hundred windows of 7 intervals each
    for group, table in zip(groups, whole, strict=True):
        rows, truth = expand(table), _page_by_page(group)
        for column, values in truth.items():
            got = rows[column].astype(str) if column in CODED else rows[column]
            assert (got.to_numpy() == values).all(), (group.memory_map.name, column)


def test_the_groups_of_a_unit_share_builder_calls():
    # Three small maps x seven eras x two block settings: 42 groups, two builder calls in all
    # (the breakpoints' first pages, then every interval's samples), where one group at a time
    # made two each; the tables are those of each group alone.
    reg = registry()
    maps = [MemoryMap(name, banks) for name, banks in MAPS.items()]
    groups = [
        Group(m, 4096, 39, reg.layouts[layout], blocks)
        for m in maps
        for layout in ERA_NAMES
        for blocks in (False, True)
    ]
    calls = []

    def counted(banks, layouts, rows, *args, **kwargs):
        calls.append(len(rows))
        return compute_columns(banks, layouts, rows, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "compute_columns", counted)
        together = groups_runs(groups)
    assert len(groups) == 42 and len(calls) <= 4
    for group, table in zip(groups, together, strict=True):
        alone = group_runs(
            group.memory_map, group.granule, group.va_bits, group.layout, group.blocks
        )
        assert table.equals(alone)


def test_units_cut_between_groups_write_the_runs_of_the_uncut_partition(tmp_path):
    # unit_rows = 1 makes every group (map x layout x block setting) a unit of its own: the
    # units' tables, one after another, are the partition's runs computed in one call, and
    # each group's are those of the group alone.
    config = validate_config(
        {
            "memory_maps": write_maps(tmp_path),
            "granules": ["4K"],
            "va_bits": [36],
            "layouts": ["linux-4.8", "linux-6.9"],
            "unit_rows": 1,
            "placement": {"kind": "every-page"},
        }
    )
    plan = make_plan(config, base_dir=str(tmp_path))
    units = list(plan.units())
    groups = [
        Group(m, 4096, 36, layout, blocks)
        for m in plan.map_list
        for layout in plan.layouts
        for blocks in config.block_mappings
    ]
    assert [len(plan.decoder.unit_groups(u)) for u in units] == [1] * len(groups)
    assert units[0].start == 0 and units[-1].stop == plan.partition_rows(4096)
    cut = pa.concat_tables([unit_table(plan, u) for u in units]).unify_dictionaries()
    whole = runs_table(groups)
    assert cut.num_rows == whole.num_rows > 1000
    for column in whole.column_names:
        assert cut[column].to_pylist() == whole[column].to_pylist(), column
    alone = pa.concat_tables([group_runs(x.memory_map, 4096, 36, x.layout, x.blocks)
                              for x in groups]).unify_dictionaries()  # fmt: skip
    assert alone.to_pylist() == whole.to_pylist()


def _greedy_starts(truth: dict[str, np.ndarray], g: int) -> list[int]:
    """Where runs start, taken page by page from the first: a page goes on its run if it follows
    the run's last page, every other output is equal and each affine one steps by the run's
    slope (anything, on its second page). A plain loop over the builder's pages."""
    pages, affine = truth["idmap_pa"], ("margin", "clipped_bytes", "hyp_dram_last")
    other = [c for c in truth if c != "idmap_pa" and c not in affine]
    starts, slope = [int(pages[0])], None
    for k in range(1, len(pages)):
        step = tuple(int(truth[c][k]) - int(truth[c][k - 1]) for c in affine)
        fits = pages[k] == pages[k - 1] + g and all(truth[c][k] == truth[c][k - 1] for c in other)
        if fits and (slope is None or step == slope):
            slope = step
        else:
            starts.append(int(pages[k]))
            slope = None
    return starts


def test_a_group_cut_into_small_windows_gives_the_runs_of_the_uncut_group(monkeypatch):
    # runs-high sits above the clip threshold at 4K / VA_BITS 36 and 16K / VA_BITS 36, where a
    # group is cut into windows of pages above the threshold: with windows of 61 pages (60 a 4K
    # group, 15 a 16K one, cutting intervals and runs anywhere), every run open at a window's end
    # is carried into the next: the tables must be those of one window, and both the runs taken
    # page by page from the builder's own rows.
    reg = registry()
    high = MemoryMap("runs-high", MAPS["runs-high"])
    groups = [
        Group(high, g, 36, reg.layouts[layout], blocks)
        for g in (4096, 16384)
        for layout in ("linux-4.8", "linux-6.9")
        for blocks in (False, True)
    ]
    whole = groups_runs(groups)
    joins = []

    def counted(*args, **kwargs):
        joins.append(1)
        return windows.join(*args, **kwargs)

    monkeypatch.setattr(runs, "join", counted)
    monkeypatch.setattr(windows, "WINDOW_PAGES", 61)
    cut = groups_runs(groups)
    assert len(joins) == 4 * (1 + -(-3584 // 61)) + 4 * (1 + -(-896 // 61)) == 304
    for group, table, expected in zip(groups, cut, whole, strict=True):
        assert table.equals(expected), (group.granule, group.layout.name, group.blocks)
        truth = _page_by_page(group)
        assert table["idmap_pa"].to_numpy().tolist() == _greedy_starts(truth, group.granule)
        rows = expand(table)
        for column, values in truth.items():
            got = rows[column].astype(str) if column in CODED else rows[column]
            assert (got.to_numpy() == values).all(), (group.granule, column)


def _one_page_intervals(margins: list[int], g: int = 4096):
    """One-page intervals with these margins and every other output zero."""
    n = len(margins)
    first = np.arange(n, dtype=np.int64) * g
    a = {c: np.zeros(n, dtype=NUMPY_DTYPES[c]) for c in OUTPUTS}
    a["margin"] = np.array(margins, dtype=np.uint64)
    return first, first + g, a, {c: a[c].copy() for c in AFFINE}


def _at(columns: dict, rows) -> dict:
    return {name: values[rows] for name, values in columns.items()}


@pytest.mark.parametrize(
    ("margins", "pages"),
    [
        ([0, 1, 3, 6, 9], [2, 3]),  # steps 1, 2, 3, 3: the second run is 3 pages, not 2 and 2
        ([5, 4, 3, 3, 3, 4], [3, 2, 1]),  # a run of two pages takes any step, then keeps it
        ([0, 2, 4, 7, 9, 11, 13], [3, 4]),
        ([7], [1]),
    ],
)
def test_runs_are_taken_page_by_page_wherever_the_windows_cut(margins, pages):
    # Hand-counted runs of one-page intervals; joined whole, or cut after any page with the
    # open run carried on, the runs are the same.
    g = 4096
    first, end, a, c = _one_page_intervals(margins, g)
    whole, _ = windows.join((first, end, a, c), g, None, last=True)
    assert whole["pages"].tolist() == pages
    assert whole["margin"].tolist() == [margins[sum(pages[:k])] for k in range(len(pages))]
    for k in range(1, len(margins)):
        head = (
            first[:k],
            end[:k],
            {x: v[:k] for x, v in a.items()},
            {x: v[:k] for x, v in c.items()},
        )
        tail = (
            first[k:],
            end[k:],
            {x: v[k:] for x, v in a.items()},
            {x: v[k:] for x, v in c.items()},
        )
        done, carry = windows.join(head, g, None, last=False)
        rest, _ = windows.join(tail, g, carry, last=True)
        for column in whole:
            got = np.concatenate([done[column], rest[column]])
            assert got.tolist() == whole[column].tolist(), (k, column)
