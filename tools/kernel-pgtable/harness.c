// SPDX-License-Identifier: MIT
/*
 * Drive the kernel's own hyp page-table code (arch/arm64/kvm/hyp/pgtable.c, compiled unmodified
 * beside this file against shim/) with the map calls of one va-sweep configuration per input
 * line, and print what the finished tree holds.
 *
 * Input, one configuration per line (numbers in C syntax: 0x... or decimal):
 *     TREE_VA_BITS BLOCKS NRANGES VA END PA [VA END PA ...] IDMAP_PA
 * the runtime ranges [VA, END) -> PA (each clipped, merged bank's HYP alias), mapped first, one
 * kvm_pgtable_hyp_map call each, then the idmap page (VA == PA). BLOCKS 0 cuts every runtime
 * range into calls of half the smallest block size, aligned to it, so that no call can fill a
 * block (docs/model.md section 5: block_mappings off).
 *
 * Output, one line per input line:
 *     ok TLM1 TL0 TL1 TL2 TL3 T_RUNTIME T_IDMAP RUNTIME_RET IDMAP_RET WARNINGS
 * tables whose entries are level -1..3 descriptors in the merged tree (found by walking it; the
 * root counts at its level), the table count of the tree holding only the runtime ranges
 * (counted before the idmap call) and of one holding only the idmap page, the first error of the runtime calls and the idmap call (0,
 * or a negative errno, as the kernel returns them), and how many WARN_ONs fired;
 *     unsupported REASON    (a tree this kernel cannot build, e.g. level -1 before 6.9)
 *     error REASON          (bad input or an arena too small: nothing is counted)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <asm/kvm_pgtable.h>

unsigned long shim_warnings;
int shim_lpa2;

/* --- kvm_pgtable_mm_ops backed by an arena of zeroed pages ---------------------------------- */

#define ARENA_PHYS (1UL << 32) /* the arena's "physical" base: page-aligned, below 2^48 */
static char *arena;
static size_t arena_size, arena_used, arena_touched;

static void *zalloc_page(void *arg)
{
	(void)arg;
	if (arena_used + PAGE_SIZE > arena_size)
		return NULL;
	void *page = arena + arena_used;
	arena_used += PAGE_SIZE;
	if (arena_used > arena_touched)
		arena_touched = arena_used;
	return page;
}

static void arena_reset(void)
{
	/* Give the pages back to the OS: they come back zeroed, as zalloc_page promises. */
	if (arena_touched)
		madvise(arena, arena_touched, MADV_DONTNEED);
	arena_used = arena_touched = 0;
}

static void *phys_to_virt(phys_addr_t phys)
{
	return arena + (phys - ARENA_PHYS);
}

static phys_addr_t virt_to_phys(void *addr)
{
	return ARENA_PHYS + (phys_addr_t)((char *)addr - arena);
}

static void get_page(void *addr)
{
	(void)addr;
}

static void put_page(void *addr)
{
	(void)addr;
}

static int page_count(void *addr)
{
	(void)addr;
	return 1;
}

static struct kvm_pgtable_mm_ops mm_ops = {
	.zalloc_page = zalloc_page,
	.get_page = get_page,
	.put_page = put_page,
	.page_count = page_count,
	.phys_to_virt = phys_to_virt,
	.virt_to_phys = virt_to_phys,
};

/* --- the finished tree, walked ------------------------------------------------------------- */

#define PTRS (1UL << (PAGE_SHIFT - 3))

/* A valid table descriptor below level 3: bits[1:0] == 0b11 (as pgtable.c's kvm_pte_table). */
static int is_table(kvm_pte_t pte, int level)
{
	return level < 3 && kvm_pte_valid(pte) && (pte & BIT(1));
}

static phys_addr_t table_phys(kvm_pte_t pte)
{
	return kvm_pte_to_phys(pte); /* the header's own decoding */
}

static void count_tables(kvm_pte_t *table, size_t entries, int level, long counts[5])
{
	counts[level + 1]++;
	for (size_t i = 0; i < entries; i++)
		if (is_table(table[i], level))
			count_tables(phys_to_virt(table_phys(table[i])), PTRS, level + 1, counts);
}

/* --- one configuration --------------------------------------------------------------------- */

struct range {
	u64 va, end, pa;
};

static int levels_of(unsigned bits)
{
	return (bits - 4) / (PAGE_SHIFT - 3); /* ARM64_HW_PGTABLE_LEVELS */
}

#ifdef KVM_PGTABLE_FIRST_LEVEL
#define MAX_LEVELS (KVM_PGTABLE_LAST_LEVEL - KVM_PGTABLE_FIRST_LEVEL + 1)
#else
#define MAX_LEVELS KVM_PGTABLE_MAX_LEVELS /* before 6.9: levels 0 to 3 only */
#endif

/* The smallest block: a level-2 entry (2 MiB, 32 MiB, 512 MiB), the last level with blocks. */
static u64 min_block_size(void)
{
	return 1UL << ((PAGE_SHIFT - 3) + PAGE_SHIFT);
}

static int map_range(struct kvm_pgtable *pgt, const struct range *r, int blocks)
{
	int first = 0;
	u64 step = blocks ? r->end - r->va : min_block_size() / 2;
	for (u64 va = r->va; va < r->end;) {
		u64 next = blocks ? r->end : (va / step + 1) * step;
		if (next > r->end)
			next = r->end;
		int ret = kvm_pgtable_hyp_map(pgt, va, next - va, r->pa + (va - r->va), PAGE_HYP);
		if (ret && !first)
			first = ret;
		va = next;
	}
	return first;
}

static void count_tree(struct kvm_pgtable *pgt, unsigned bits, long counts[5])
{
	int root = 4 - levels_of(bits);
	memset(counts, 0, 5 * sizeof(long));
	count_tables((kvm_pte_t *)pgt->pgd, 1UL << (bits - ((PAGE_SHIFT - 3) * (4 - root) + 3)), root,
		     counts);
}

/*
 * The runtime ranges into a new tree, counted (T(runtime)), then the idmap page into the same
 * tree, counted again (the merged tree). Returns -1 when the arena is full.
 */
static int build(unsigned bits, int blocks, const struct range *ranges, int n, u64 idmap,
		 long runtime[5], long both[5], int *runtime_ret, int *idmap_ret)
{
	struct kvm_pgtable pgt;
	memset(&pgt, 0, sizeof(pgt));
	arena_reset();
	if (kvm_pgtable_hyp_init(&pgt, bits, &mm_ops))
		return -1;
	*runtime_ret = 0;
	for (int i = 0; i < n; i++) {
		int ret = map_range(&pgt, &ranges[i], blocks);
		if (ret && !*runtime_ret)
			*runtime_ret = ret;
	}
	count_tree(&pgt, bits, runtime);
	*idmap_ret = kvm_pgtable_hyp_map(&pgt, idmap, PAGE_SIZE, idmap, PAGE_HYP_EXEC);
	if (*runtime_ret == -ENOMEM || *idmap_ret == -ENOMEM)
		return -1;
	count_tree(&pgt, bits, both);
	return 0;
}

static long total(const long counts[5])
{
	return counts[0] + counts[1] + counts[2] + counts[3] + counts[4];
}

#define MAX_RANGES 64

static void run_line(char *line)
{
	char *p = line, *end;
	u64 v[3 + 3 * MAX_RANGES + 1];
	int k = 0;
	while (k < (int)(sizeof(v) / sizeof(v[0]))) {
		v[k] = strtoull(p, &end, 0);
		if (end == p)
			break;
		k++;
		p = end;
	}
	if (k == 0)
		return; /* blank line */
	if (k < 4 || v[2] > MAX_RANGES || (u64)k != 3 + 3 * v[2] + 1) {
		printf("error malformed line (%d numbers)\n", k);
		return;
	}
	unsigned bits = (unsigned)v[0];
	int blocks = v[1] != 0, n = (int)v[2];
	struct range ranges[MAX_RANGES];
	for (int i = 0; i < n; i++)
		ranges[i] = (struct range){ v[3 + 3 * i], v[4 + 3 * i], v[5 + 3 * i] };
	u64 idmap = v[3 + 3 * n];
	int n_levels = levels_of(bits);
	if (bits > 52 || n_levels < 1 || n_levels > MAX_LEVELS) {
		printf("unsupported %d levels (%u-bit tree); this kernel builds 1 to %d\n", n_levels,
		       bits, (int)MAX_LEVELS);
		return;
	}
	long both[5], runtime[5], none[5], idmap_only[5];
	int rret = 0, iret = 0, unused;
	shim_warnings = 0;
	if (build(bits, blocks, NULL, 0, idmap, none, idmap_only, &unused, &unused) ||
	    build(bits, blocks, ranges, n, idmap, runtime, both, &rret, &iret)) {
		printf("error arena full (%zu bytes)\n", arena_size);
		return;
	}
	printf("ok %ld %ld %ld %ld %ld %ld %ld %d %d %lu\n", both[0], both[1], both[2], both[3],
	       both[4], total(runtime), total(idmap_only), rret, iret, shim_warnings);
}

int main(int argc, char **argv)
{
	/* LPA2 (52-bit VA and PA at 4K and 16K) as a 6.9+ kernel uses it on a CPU that has it. */
	shim_lpa2 = PAGE_SHIFT != 16;
	arena_size = (argc > 1 ? strtoull(argv[1], NULL, 0) : 4096UL) << 20; /* MiB */
	arena = mmap(NULL, arena_size, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (arena == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, stdin) > 0) {
		run_line(line);
		fflush(stdout);
	}
	free(line);
	return 0;
}
