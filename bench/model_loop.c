/* docs/model.md sections 1-6 and 9 for all-dram rows, one row at a time: the C baseline of
 * bench/bench_build.py. It computes every output column sweep.build does (phys_offset to
 * pkvm_reserve_base) for layouts of one merged tree (every era but linux-4.6's two trees),
 * reading each row's trimmed banks from TrimmedBanks' flat arrays (key = map * 3 + granule
 * code), as the builder does; the inputs in the bench frame's dtypes. Divisions by the granule and the other powers of two are
 * shifts, as a C programmer writes them. Built by the bench with the system cc. */
#include <stdint.h>

typedef int64_t i64;

enum { NONE_HIGH = 0, MERGED = 1, TAGGED = 2 };
#define NONE_BELOW (-((i64)1 << 62))
#define NONE_ABOVE ((i64)1 << 62)
#define NEVER 9
#define MAX_BANKS 64

struct era {           /* sweep.core.eras.Era, and its pKVM formula (pkvm_reserve.FORMULAS) */
    i64 formula;       /* NONE_HIGH, MERGED or TAGGED */
    i64 tag_at_hyp_va_bits, tree_floor, max_extra_levels, idmap_max_bits;
    i64 va52_granules; /* bit c: VA_BITS=52 is a Kconfig choice at granule code c */
    i64 lva_el2_fails;
    i64 align_shift[3]; /* log2 ARM64_MEMSTART_ALIGN per granule code */
    i64 pkvm_levels;   /* 0: no pKVM in this era */
    i64 hyp_page, per_region_vmemmap;
};

struct out {  /* one pointer per output column, in ROW_COLUMNS' dtypes */
    i64 *phys_offset, *clipped_bytes, *hyp_va_min, *hyp_va_max, *margin, *hyp_dram_last;
    i64 *tables[5], *table_pages, *table_bytes, *shared_tables;
    i64 *reserve_bytes, *reserve_base;
    int8_t *idmap_va_bits, *idmap_extended, *levels_runtime, *levels_idmap, *levels;
    int8_t *extra_levels, *overlap, *idmap_in_window, *runnable, *unrunnable;
};

static i64 bit_length(i64 v) { return v ? 64 - __builtin_clzll((uint64_t)v) : 0; }
static i64 bit(i64 k) { return k < 64 ? (i64)((uint64_t)1 << k) : 0; } /* numpy's 1 << k */
static i64 max64(i64 a, i64 b) { return a > b ? a : b; }
static i64 min64(i64 a, i64 b) { return a < b ? a : b; }
static i64 levels_of(i64 bits, i64 g) { return (bits - 4) / (g - 3); }
static i64 floor_shift(i64 a, i64 s) { return a >> s; } /* arithmetic: floor division */
static i64 ceil_shift(i64 a, i64 s) { return -((-a) >> s); }

static i64 max_pages(i64 nr, i64 ptr_shift, i64 levels) /* __hyp_pgtable_max_pages */
{
    i64 total = 0;
    for (i64 k = 0; k < levels; k++) {
        nr = ceil_shift(nr, ptr_shift);
        total += nr;
    }
    return total;
}

static i64 top_down(const i64 *s, const i64 *e, int nb, i64 floor, i64 size, i64 a_shift)
{
    i64 best = -1;
    for (int j = 0; j < nb; j++) {
        i64 cand = floor_shift(e[j] - size, a_shift) << a_shift;
        if (e[j] >= size && cand >= max64(s[j], floor)) best = max64(best, cand);
    }
    return best;
}

/* kvm_hyp_reserve over the row's clipped regions (sweep/model/pkvm_reserve.py). */
static void reserve(const struct era *f, i64 g, const i64 *s, const i64 *e, int nb, i64 *bytes,
                    i64 *base)
{
    i64 gran = (i64)1 << g, ptr = g - 3, total = 0, vmemmap = 0, extra = 0;
    *bytes = *base = 0;
    if (!f->pkvm_levels || nb == 0 || nb > 128) return;
    for (int j = 0; j < nb; j++) {
        i64 pages = (e[j] - s[j]) >> g;
        total += max_pages(pages, ptr, f->pkvm_levels);
        i64 lo = (s[j] >> g) * f->hyp_page, hi = lo + pages * f->hyp_page;
        vmemmap += ceil_shift(hi, g) - (lo >> g);
    }
    i64 private = max_pages(((i64)1 << 30) >> g, ptr, f->pkvm_levels);
    i64 s1 = total + private, host_s2 = total + 16 + private;
    if (f->per_region_vmemmap) {
        extra = ceil_shift(255 * 8, g) + vmemmap + 2 + ceil_shift(48 + 32 + 16 + 2048 * 16, g);
    } else { /* 6.1: the pool's own vmemmap, a fixed point */
        i64 nr = 0, prev = -1;
        while (nr != prev) {
            prev = nr;
            nr = ceil_shift((s1 + host_s2 + prev) * f->hyp_page, g);
            nr += max_pages(nr, ptr, f->pkvm_levels);
        }
        extra = nr;
    }
    i64 size = (s1 + host_s2 + extra) * gran, pmd = g + ptr;
    i64 aligned = ceil_shift(size, pmd) << pmd;
    i64 at = top_down(s, e, nb, gran, aligned, pmd);
    i64 fallback = top_down(s, e, nb, gran, size, g);
    *bytes = at >= 0 ? aligned : (fallback >= 0 ? size : 0);
    *base = at >= 0 ? at : max64(fallback, 0);
}

/* Returns -1, or the first row whose idmap page is outside its trimmed banks. */
i64 model_rows(i64 n, const i64 *bank_start, const i64 *bank_end, const i64 *offsets,
               const int8_t *map_index, const int32_t *granule, const int8_t *va_bits,
               const int8_t *layout, const uint8_t *blocks, const uint64_t *idmap_in,
               const uint64_t *tag_random, const struct era *eras, const struct out *o)
{
    for (i64 i = 0; i < n; i++) {
        i64 gran = granule[i], va = va_bits[i], g = bit_length(gran) - 1;
        i64 code = (g - 12) / 2, k = map_index[i] * 3 + code;
        const struct era *era = &eras[layout[i]];
        const i64 *bs = bank_start + offsets[k], *be = bank_end + offsets[k];
        int nb = (int)(offsets[k + 1] - offsets[k]);
        i64 idmap = (i64)idmap_in[i] & -gran, s[MAX_BANKS], e[MAX_BANKS];
        int inside = 0;
        for (int j = 0; j < nb; j++) inside |= bs[j] <= idmap && idmap < be[j];
        if (!inside) return i;
        /* section 2: arm64_memblock_init */
        i64 linear = (i64)1 << (va - 1), a = era->align_shift[code], total = 0;
        i64 phys_offset = (bs[0] >> a) << a, kernel_end = idmap + gran;
        int high = kernel_end > phys_offset + linear;
        i64 limit = high ? max64(phys_offset + linear, kernel_end) : phys_offset + linear;
        i64 dram_end = 0;
        for (int j = 0; j < nb; j++) {
            total += be[j] - bs[j];
            e[j] = min64(be[j], limit);
            if (e[j] > bs[j]) dram_end = max64(dram_end, e[j]);
        }
        if (high) phys_offset = -(floor_shift(linear - dram_end, a) << a);
        i64 kept = 0, dram_first = INT64_MAX, dram_last = dram_end - 1;
        int nv = 0;
        i64 vs[MAX_BANKS], ve[MAX_BANKS];
        for (int j = 0; j < nb; j++) {
            s[j] = max64(bs[j], phys_offset);
            if (e[j] > s[j]) {
                kept += e[j] - s[j];
                dram_first = min64(dram_first, s[j]);
                vs[nv] = s[j], ve[nv++] = e[j];
            }
        }
        i64 idmap_va_bits = bit_length(idmap + gran - 1);
        /* section 3: the era's layout */
        i64 half = (i64)1 << (va - 1), delta, lo, hi;
        if (era->formula == NONE_HIGH) {
            lo = half, hi = 2 * half - 1, delta = half - phys_offset;
        } else if (era->formula == MERGED) {
            lo = idmap > half - 1 ? 0 : half, hi = lo + half - 1, delta = lo - phys_offset;
        } else {
            i64 region = era->tag_at_hyp_va_bits ? max64(va, 48) : va;
            i64 off_first = dram_first - phys_offset;
            i64 tag_lsb = bit_length(off_first ^ (dram_last - phys_offset));
            i64 va_mask = bit(tag_lsb) - 1, top = bit(region - 1);
            i64 msb = (idmap & top) ^ top, random_bits = (top - 1) & ~va_mask;
            i64 tag = msb;
            if (tag_lsb != region - 1) tag |= (i64)(tag_random[i] & INT64_MAX) & random_bits;
            tag &= (bit(tag_lsb + 24) - 1) & ~va_mask;
            delta = ((off_first & va_mask) | tag) - dram_first, lo = tag, hi = tag | va_mask;
        }
        i64 tree = max64(max64(idmap_va_bits, va), era->tree_floor);
        /* section 4: the runtime mappings nearest the idmap page */
        i64 below_start = NONE_BELOW, below_end = NONE_BELOW, above_start = NONE_ABOVE;
        for (int j = 0; j < nb; j++) {
            if (e[j] <= s[j]) continue;
            i64 va_start = s[j] + delta;
            if (va_start <= idmap) {
                below_start = max64(below_start, va_start);
                below_end = max64(below_end, e[j] + delta);
            } else {
                above_start = min64(above_start, va_start);
            }
        }
        i64 margin = max64(min64(idmap - below_end, above_start - kernel_end), 0);
        /* section 5: levels and tables */
        i64 lv_runtime = levels_of(va, g), lv = levels_of(tree, g), root = 4 - lv;
        i64 min_block = gran == 4096 ? 1 : 2, t[5] = {0, 0, 0, 0, 0}, first_new = NEVER;
        for (i64 level = root; level < 3; level++) {
            i64 shift = g + (3 - level) * (g - 3), size = (i64)1 << shift;
            int blk = blocks[i] && level >= min_block && (delta & (size - 1)) == 0;
            i64 distinct = 0, prev_last = 0;
            int prev_has = 0;
            for (int j = 0; j < nb; j++) {
                i64 vstart = s[j] + delta, vend = e[j] + delta;
                i64 first = vstart >> shift, last = (vend - 1) >> shift;
                i64 full_lo = (vstart + size - 1) >> shift, full_hi = vend >> shift;
                i64 count = last - first + 1 - (blk ? max64(full_hi - full_lo, 0) : 0);
                int has = e[j] > s[j] && count > 0;
                i64 first_t = blk && first >= full_lo ? last : first;
                if (has) distinct += count - (prev_has && first_t == prev_last);
                prev_last = blk && last < full_hi ? first : last;
                prev_has = has;
            }
            t[level + 2] = distinct; /* tables of level + 1 */
            if (first_new == NEVER) {
                i64 entry_start = idmap & -size, entry_end = entry_start + size;
                int stops = below_end <= entry_start && above_start >= entry_end;
                stops |= blk && below_start <= entry_start && entry_end <= below_end;
                if (stops) first_new = level;
            }
        }
        i64 runtime_pages = 1, pages;
        for (int l = 0; l < 5; l++) runtime_pages += t[l];
        pages = runtime_pages + max64(3 - first_new, 0);
        for (int l = 0; l < 5; l++) o->tables[l][i] = t[l] + (first_new < l - 1) + (l - 1 == root);
        /* runnable (sweep.core.eras.unrunnable) */
        int choice = (gran == 4096 && (va == 39 || va == 48)) ||
                     (gran == 16384 && (va == 36 || va == 47 || va == 48)) ||
                     (gran == 65536 && (va == 42 || va == 48)) ||
                     (va == 52 && (era->va52_granules >> code & 1));
        int why = choice ? 0 : 1;
        if (!why && era->lva_el2_fails && gran == 65536 && va == 52) why = 2;
        if (!why && lv - lv_runtime > era->max_extra_levels) why = 3;
        if (!why && era->idmap_max_bits && idmap_va_bits > era->idmap_max_bits) why = 4;
        i64 r_bytes, r_base;
        reserve(era, g, vs, ve, nv, &r_bytes, &r_base);

        o->phys_offset[i] = phys_offset;
        o->clipped_bytes[i] = total - kept;
        o->hyp_va_min[i] = lo;
        o->hyp_va_max[i] = hi;
        o->hyp_dram_last[i] = dram_last + delta;
        o->idmap_va_bits[i] = (int8_t)idmap_va_bits;
        o->overlap[i] = (below_end > idmap || above_start < kernel_end) && delta != 0;
        o->idmap_in_window[i] = lo <= idmap && idmap <= hi;
        o->margin[i] = margin;
        o->idmap_extended[i] = idmap_va_bits > va;
        o->levels_runtime[i] = (int8_t)lv_runtime;
        o->levels_idmap[i] = (int8_t)levels_of(max64(va, idmap_va_bits), g);
        o->levels[i] = (int8_t)lv;
        o->extra_levels[i] = (int8_t)(lv - lv_runtime);
        o->table_pages[i] = pages;
        o->table_bytes[i] = pages * gran;
        o->shared_tables[i] = runtime_pages + (4 - root) - pages;
        o->runnable[i] = why == 0;
        o->unrunnable[i] = (int8_t)why;
        o->reserve_bytes[i] = r_bytes;
        o->reserve_base[i] = r_base;
    }
    return -1;
}
