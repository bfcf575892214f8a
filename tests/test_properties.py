"""The builder against the scalar reference on random configurations, and invariants.

``test_build_matches_reference_in_bulk`` puts 10^5 seeded configurations (mixed maps,
granules, VA_BITS, layouts, blocks, tags, in random order, a fifth with the idmap inside a
runtime mapping that blocks may hold) through one ``build`` call and compares every column of
every row with the reference; the ``slow`` variant does 10^6.
"""

from __future__ import annotations

import random
import types

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from randomcases import block_cases, random_configs
from strategies import configurations

from sweep import build
from sweep.core.columns import ROW_COLUMNS
from sweep.core.eras import BY_NAME
from sweep.model.builder import build_table, build_unit
from sweep.model.reference import build_tree, compute_row, prepare
from sweep.plan.plugins import get_layouts


def _compare(memory_maps, configs) -> int:
    out = build(pd.DataFrame(configs), memory_maps)
    got = {c: out[c].to_numpy() for c in ROW_COLUMNS}
    for i, config in enumerate(configs):
        args = {k: v for k, v in config.items() if k != "memory_map"}
        expected = compute_row(memory_maps[config["memory_map"]], **args)
        for column, value in expected.items():
            actual = got[column][i]
            if column in ("memory_map", "layout"):
                actual = str(actual)
            assert actual == value, (column, i, config, actual, value)
    return len(configs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(configurations())
def test_build_matches_reference(case):
    memory_map, config = case
    _compare({memory_map.name: memory_map}, [{"memory_map": memory_map.name, **config}])


def test_build_matches_reference_in_bulk():
    memory_maps, configs = random_configs(seed=2026, rows=100_000)
    assert _compare(memory_maps, configs) == 100_000


def _compare_table(table, memory_maps, configs) -> None:
    got = table.to_pydict()
    for i, config in enumerate(configs):
        args = {k: v for k, v in config.items() if k != "memory_map"}
        expected = compute_row(memory_maps[config["memory_map"]], **args)
        for column, value in expected.items():
            assert got[column][i] == value, (column, i, config, got[column][i], value)


def test_build_table_with_shared_values_matches_reference():
    # build_table takes a value shared by all rows as one value (a work unit's granule,
    # VA_BITS, layout, blocks; many maps by index): every row is held to the reference.
    memory_maps, configs = random_configs(seed=11, rows=6000)
    layouts = get_layouts()
    groups = {}
    for config in configs:
        key = tuple(config[k] for k in ("granule", "va_bits", "layout", "block_mappings"))
        groups.setdefault(key, []).append(config)
    for (granule, va_bits, layout, blocks), rows in groups.items():
        names = sorted({c["memory_map"] for c in rows})
        table = build_table(
            [memory_maps[name] for name in names],
            np.array([names.index(c["memory_map"]) for c in rows]),
            granule,
            va_bits,
            [layouts[layout]],
            0,
            blocks,
            np.array([c["idmap_pa"] for c in rows], dtype=np.uint64),
            np.array([c["tag_random"] for c in rows], dtype=np.uint64),
        )
        _compare_table(table, memory_maps, rows)
    first = configs[0]
    unit = [c for c in configs if all(c[k] == first[k] for k in list(first)[:5])]
    table = build_unit(
        memory_maps[first["memory_map"]],
        first["granule"],
        first["va_bits"],
        layouts[first["layout"]],
        first["block_mappings"],
        np.array([c["idmap_pa"] for c in unit], dtype=np.uint64),
    )
    _compare_table(table, memory_maps, [{**c, "tag_random": 0} for c in unit])


def _stride_configs(memory_maps, rng: random.Random, maps: int = 12) -> list[dict]:
    """A work unit's shape: per (map, granule, VA_BITS, layout, blocks) a run of idmap pages at
    a stride through every bank from its first page, in order, tagged layouts with random tags;
    half of the maps are ``block_cases``' (idmap pages on runtime blocks, ``delta`` 0 or not)."""
    configs = []
    blocks = [name for name in sorted(memory_maps) if name.startswith("blocks-")]
    for name in rng.sample(sorted(memory_maps), maps) + rng.sample(blocks, maps):
        granule = rng.choice([4096, 16384, 65536])
        try:
            banks = memory_maps[name].trimmed(granule)
        except ValueError:
            continue
        va_bits = rng.choice([39, 48, 52, max(36, min(52, banks[-1][1].bit_length()))])
        if name in blocks:  # its high bank at 2^(V-1): pages of it are runtime aliases
            va_bits = memory_maps[name].banks[-1][0].bit_length()
        for layout in BY_NAME:
            block_mappings = rng.random() < 0.5
            for start, end in banks:
                step = max(granule, (end - start) // 40 // granule * granule)
                for idmap in range(start, end, step):
                    tag = rng.getrandbits(64) if BY_NAME[layout].formula == "tagged" else 0
                    configs.append(
                        dict(
                            memory_map=name,
                            granule=granule,
                            va_bits=va_bits,
                            layout=layout,
                            block_mappings=block_mappings,
                            idmap_pa=idmap,
                            tag_random=tag,
                        )
                    )
    return configs


@pytest.mark.parametrize(
    "path", ["runs", "per-row", "per-row-hashed", "per-row-sampled", "grouped", "by-layout"]
)
def test_runs_and_per_row_match_reference(monkeypatch, path):
    # The builder computes rows that come in long runs of one (map, granule, VA_BITS, layout,
    # blocks) with those values shared (a work unit), shuffled rows of few such groups in group
    # order (then put back), other batches per row: the same rows through each path, in chunks
    # that cut runs, are held to the reference, the oracle. Per row, runtime trees are counted
    # once per run of equal keys (rows of a board in order) or, "hashed", once per distinct key,
    # or, "sampled", for every row when most of a chunk's first rows differ (random tags).
    # Rows in runs too short for either (a unit of many boards) are put in layout order, each
    # piece of one layout and block setting ("by-layout").
    import sweep.model.builder
    import sweep.model.grouping
    import sweep.model.rows

    minimum = 10**9 if path.startswith("per-row") else {"runs": 1, "grouped": 20}.get(path, 60)
    monkeypatch.setattr(sweep.model.grouping, "MIN_RUN_ROWS", minimum)
    if path in ("per-row-hashed", "per-row-sampled"):
        monkeypatch.setattr(sweep.model.rows, "MIN_RUN_KEYS", 10**12)
    counted = []
    if path == "per-row-sampled":
        monkeypatch.setattr(sweep.model.rows, "SAMPLE_ROWS", 8)
        spied_pd = types.SimpleNamespace(
            unique=lambda v: counted.append("unique") or pd.unique(v),
            factorize=lambda v: counted.append("factorize") or pd.factorize(v),
        )
        monkeypatch.setattr(sweep.model.rows, "pd", spied_pd)
    monkeypatch.setattr(sweep.model.builder, "CHUNK_ROWS", 97)
    memory_maps, configs = random_configs(
        seed=5, rows=3000, rows_per_group=40, shuffle=path == "grouped"
    )
    configs += _stride_configs(memory_maps, random.Random(5))
    groupings = []

    def spy(rows):
        groupings.append(sweep.model.grouping.grouping(rows))
        return groupings[-1]

    monkeypatch.setattr(sweep.model.builder, "grouping", spy)
    if path == "grouped":
        random.Random(6).shuffle(configs)
    assert _compare(memory_maps, configs) == len(configs)
    grouped = groupings[0] is not None and groupings[0].order is not None
    assert grouped == (path in ("grouped", "by-layout"))
    assert (groupings[0] is None) == path.startswith("per-row")
    if path == "per-row-sampled":  # some chunks counted every row, told apart by no hash table
        assert 0 < counted.count("factorize") < counted.count("unique")
    if grouped:
        by_layout = groupings[0].shared == ("layout_index", "block_mappings")
        assert by_layout == (path == "by-layout")


def test_block_settings_of_one_layout_share_their_other_work(monkeypatch):
    # A unit of many boards holds each layout's rows twice, once per block setting, with the
    # same maps, pages and tags: the builder computes what does not depend on blocks (clipping,
    # layouts, nearest ranges, levels, pKVM's reservation) once for both (``_Unblocked``), and
    # the banks and clipping once for layouts of one memstart alignment (64K: 4.17 clips at
    # 1G, 6.9 and 7.0 at 512M). Every row is held to the reference; the sharing is seen.
    import sweep.model.builder
    import sweep.model.grouping

    monkeypatch.setattr(sweep.model.grouping, "MIN_RUN_ROWS", 60)
    made, clipped = [], []
    real, clip = sweep.model.builder._Unblocked, sweep.model.builder.clip_dram
    monkeypatch.setattr(
        sweep.model.builder, "_Unblocked", lambda *args: made.append(1) or real(*args)
    )
    monkeypatch.setattr(
        sweep.model.builder, "clip_dram", lambda *args: clipped.append(1) or clip(*args)
    )
    rng = random.Random(8)
    memory_maps, _ = random_configs(seed=8, rows=10, maps=120)
    memory_maps = {k: m for k, m in memory_maps.items() if k.startswith("random-")}  # fit 64K
    layouts = ["linux-4.6", "linux-4.17", "linux-6.9", "linux-7.0"]
    for granule, va_bits in ((4096, 48), (65536, 42)):
        configs = []
        for name, memory_map in memory_maps.items():
            pages = []
            for _ in range(5):
                start, end = rng.choice(memory_map.trimmed(granule))
                pages.append((rng.randrange(start, end) // granule * granule, rng.getrandbits(64)))
            for layout in layouts:
                for blocks in (False, True):
                    configs += [
                        dict(memory_map=name, granule=granule, va_bits=va_bits, layout=layout,
                             block_mappings=blocks, idmap_pa=idmap, tag_random=tag)
                        for idmap, tag in pages
                    ]  # fmt: skip
        made.clear()
        clipped.clear()
        assert _compare(memory_maps, configs) == len(configs)
        assert len(made) == len(layouts)  # one for each layout's two pieces
        assert len(clipped) == (1 if granule == 4096 else 2)  # one per alignment in a row


def _few_configurations_shuffled(seed: int, rows: int):
    """Rows of eight configurations of two maps in random order, half of them tagged."""
    memory_maps, configs = random_configs(
        seed=seed, rows=rows, maps=2, rows_per_group=rows // 8, shuffle=False
    )
    configs = [c for c in configs if c["memory_map"].startswith("random-")]  # no block cases
    random.Random(seed).shuffle(configs)
    return memory_maps, pd.DataFrame(configs)


def test_grouped_rows_cut_in_chunks_are_put_back_in_place(monkeypatch):
    # A shuffled batch of few configurations is computed group by group (groups in the order
    # of their first rows), each group here cut in several chunks (values constant in some
    # chunks of a group, varying in others): the frame equals the per-row path's, and an error
    # names the first bad row of the first group that holds one.
    import sweep.model.builder
    import sweep.model.grouping

    monkeypatch.setattr(sweep.model.grouping, "MIN_RUN_ROWS", 100)
    monkeypatch.setattr(sweep.model.builder, "CHUNK_ROWS", 300)
    memory_maps, frame = _few_configurations_shuffled(seed=8, rows=8000)
    group = frame.groupby(
        ["memory_map", "granule", "va_bits", "layout", "block_mappings"], sort=False
    ).ngroup()
    first, second, third = (group.index[group == k] for k in range(3))
    bad, rows = frame.copy(), (first[-1], second[0], third[1])  # the first is met last
    for row in rows:  # a page outside every bank, a different one in each row
        page = bad.loc[row, "granule"] * (row + 1)
        while any(s <= page < e for s, e in memory_maps[bad.loc[row, "memory_map"]].banks):
            page += 1 << 40
        bad.loc[row, "idmap_pa"] = page
    spied = []
    monkeypatch.setattr(
        sweep.model.builder,
        "grouping",
        lambda r: spied.append(sweep.model.grouping.grouping(r)) or spied[-1],
    )
    grouped = build(frame, memory_maps)
    assert spied[0].order is not None and len(spied[0].bounds) == group.max() + 2
    with pytest.raises(ValueError, match=f"idmap_pa {bad.loc[rows[0], 'idmap_pa']:#x} "):
        build(bad, memory_maps)
    # VA_BITS 48 met first, 39 after: the groups are computed in that order, not by value
    juno = {"juno": [(0x8000_0000, 1 << 31)]}
    va_bits = np.where(np.arange(2000) % 3 == 0, 48, 39)
    two = pd.DataFrame(
        dict(
            memory_map="juno",
            granule=4096,
            va_bits=va_bits,
            layout="linux-4.8",
            block_mappings=False,
            idmap_pa=0x8000_0000 + (np.arange(2000) << 12),
        )
    )
    two.loc[[1, 1998], "idmap_pa"] = [0x1000, 0x2000]  # VA_BITS 39, 48
    with pytest.raises(ValueError, match="idmap_pa 0x2000 "):
        build(two, juno)
    monkeypatch.setattr(sweep.model.grouping, "MIN_RUN_ROWS", 10**9)
    pd.testing.assert_frame_equal(grouped, build(frame, memory_maps))
    assert spied[-1] is None


def test_random_cases_meet_runtime_blocks():
    # The bulk cases hold idmap pages whose walk meets a runtime block (docs/model.md section 5,
    # examples 3 and 4), as the reference's tree records them: the new rule is compared too.
    memory_maps, configs = block_cases(random.Random(3), 400)
    met = 0
    for c in configs:
        args = {k: v for k, v in c.items() if k != "memory_map"}
        conf = prepare(memory_maps[c["memory_map"]], **args)
        tree = build_tree(
            conf.runtime, conf.idmap_pa, conf.granule, conf.hyp.tree_va_bits, c["block_mappings"]
        )
        met += bool(tree.split)
    assert met >= 40


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_build_matches_reference_million(seed):
    memory_maps, configs = random_configs(seed=seed, rows=100_000, rows_per_group=64)
    assert _compare(memory_maps, configs) == 100_000


@pytest.fixture(scope="module")
def bulk():
    memory_maps, configs = random_configs(seed=7, rows=20_000)
    return build(pd.DataFrame(configs), memory_maps)


def test_invariant_shared_tables_at_least_root(bulk):
    # one merged tree shares at least its root; 4.6-4.7's two trees share nothing
    two = bulk["layout"] == "linux-4.6"
    assert (bulk["shared_tables"][~two] >= 1).all()
    assert (bulk["shared_tables"][two] == 0).all() and two.sum() > 1000


def test_invariant_idmap_outside_runtime_needs_a_full_walk(bulk):
    # An idmap page that is not inside a runtime mapping (margin > 0 says so for sure) needs a
    # table at every level of its walk, the root among them: at least `levels` tables.
    rows = bulk[bulk["margin"] > 0]
    assert len(rows) > 10_000
    assert (rows["table_pages"] >= rows["levels"]).all()


def test_invariant_no_overlap_below_2_pow_v_for_split_layouts(bulk):
    below = bulk["idmap_pa"].to_numpy() < (
        np.uint64(1) << bulk["va_bits"].to_numpy().astype(np.uint64)
    )
    split = (bulk["layout"] != "linux-4.6").to_numpy()
    assert not bulk["overlap"].to_numpy()[below & split].any()
    assert (below & split).sum() > 1000  # the check saw real rows


def test_invariant_levels(bulk):
    assert (bulk["extra_levels"] == bulk["levels"] - bulk["levels_runtime"]).all()
    assert (bulk["idmap_extended"] == (bulk["idmap_va_bits"] > bulk["va_bits"])).all()
    assert (
        bulk["table_pages"]
        == bulk[["tables_lm1", "tables_l0", "tables_l1", "tables_l2", "tables_l3"]].sum(axis=1)
    ).all()
