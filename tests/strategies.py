"""Hypothesis strategies for random configurations: memory maps anywhere below 2^52."""

from __future__ import annotations

from hypothesis import strategies as st
from randomcases import fits

from sweep.core.eras import BY_NAME
from sweep.core.memmap import PA_LIMIT, MemoryMap

LAYOUTS = tuple(BY_NAME)  # every kernel era


@st.composite
def addresses(draw, limit: int = PA_LIMIT) -> int:
    """An address with a bias towards the alignments that change the tree (pages, blocks)."""
    bits = draw(st.integers(12, 52))
    value = draw(st.integers(0, (1 << bits) - 1))
    align = draw(
        st.sampled_from(
            [
                1,
                1 << 12,
                1 << 14,
                1 << 16,
                1 << 21,
                1 << 25,
                1 << 29,
                1 << 30,
                1 << 36,
                1 << 39,
                1 << 42,
            ]
        )
    )
    jitter = draw(st.sampled_from([0, 0, 0, 1 << 12, -(1 << 12), 1 << 16]))
    return min(max(value // align * align + jitter, 0), limit - 1)


SPANS = st.one_of(
    st.integers(1, 64).map(lambda k: k << 12),  # a few pages
    st.integers(12, 45).map(lambda k: 1 << k),  # a power of two: whole blocks and tables
    st.integers(12, 45).flatmap(lambda k: st.integers(1, 1 << k)),  # anything up to 2^45
    st.integers(46, 51).flatmap(lambda k: st.integers(1, 1 << k)),  # huge: up to 2^51
)


@st.composite
def memory_maps(draw, max_banks: int = 8) -> MemoryMap:
    """1 to ``max_banks`` disjoint banks (some touching, some far apart), all below 2^52."""
    count = draw(st.integers(1, max_banks))
    cursor = draw(addresses())
    banks = []
    for _ in range(count):
        size = draw(SPANS)
        if cursor + size > PA_LIMIT:
            break
        banks.append((cursor, size))
        gap = draw(st.one_of(st.just(0), SPANS))
        cursor += size + gap
    if not banks:
        banks = [(PA_LIMIT - (1 << 30), 1 << 30)]
    return MemoryMap("random", banks)


@st.composite
def configurations(draw, max_banks: int = 8):
    """(memory map, config dict) with an idmap address inside a trimmed bank."""
    granule = draw(st.sampled_from([4096, 16384, 65536]))
    mm = draw(memory_maps(max_banks).filter(lambda m: fits(m, granule)))
    trimmed = mm.trimmed(granule)
    start, end = draw(st.sampled_from(trimmed))
    where = draw(st.sampled_from(["start", "end", "any", "any"]))
    if where == "start":
        idmap = start
    elif where == "end":
        idmap = end - granule
    else:
        idmap = draw(st.integers(start, end - 1))
    # VA_BITS near the idmap's own bit length puts the idmap at the edges that matter:
    # around 2^(V-1) (the window halves) and 2^V (the extra level).
    near = idmap.bit_length() + draw(st.integers(-1, 1))
    va_bits = draw(
        st.one_of(
            st.sampled_from([36, 39, 42, 47, 48, 52]),
            st.integers(32, 52),
            st.just(min(max(near, 32), 52)),
        )
    )
    return mm, dict(
        granule=granule,
        va_bits=va_bits,
        layout=draw(st.sampled_from(LAYOUTS)),
        block_mappings=draw(st.booleans()),
        idmap_pa=idmap,
        tag_random=draw(st.one_of(st.just(0), st.integers(0, (1 << 64) - 1))),
    )
