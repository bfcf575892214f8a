// SPDX-License-Identifier: MIT
/*
 * Run the kernel's own pKVM memory reservation: kvm_hyp_reserve() and the functions it calls,
 * cut mechanically from arch/arm64/kvm/pkvm.c by the build (extracted.h), with the formulas of
 * arch/arm64/include/asm/kvm_pkvm.h (#included whole, unmodified), for one memory map per
 * input line. One binary per kernel and granule (PAGE_SHIFT is a compile-time constant).
 *
 * Input, one machine per line (numbers in C syntax: 0x... or decimal):
 *     VA_BITS NR_CPUS NREGIONS BASE SIZE [BASE SIZE ...]
 * the memblock.memory regions as for_each_mem_region() walks them when kvm_hyp_reserve runs
 * (after arm64_memblock_init's clip; adjacent regions with the same flags already merged).
 * VA_BITS and NR_CPUS are read and checked but enter no formula: kvm_hyp_reserve reserves by
 * memory alone (stacks and per-CPU pages are allocated elsewhere, at KVM init).
 *
 * Output, one line per input line:
 *     ok S1 HOST_S2 VM_TABLE VMEMMAP SELFTEST FFA PAGES SIZE BASE
 * the page counts of hyp_s1_pgtable_pages(), host_s2_pgtable_pages(), hyp_vm_table_pages(),
 * the vmemmap (hyp_vmemmap_pages(STRUCT_HYP_PAGE_SIZE), or in 6.1 the fixed point
 * kvm_hyp_reserve computes inline), pkvm_selftest_pages(), hyp_ffa_proxy_pages() (- where the
 * kernel has no such function), PAGES kvm_hyp_reserve's hyp_mem_pages (their sum; read from
 * hyp_mem_size when it first allocates), SIZE hyp_mem_size in bytes
 * after kvm_hyp_reserve's PMD_SIZE alignment, and BASE the hyp_mem_base the allocator stand-in
 * gives (see shim-pkvm/pkvm_shim.h: an estimate). Then, on its own line, the line
 * kvm_hyp_reserve prints ("kvm [1]: Reserved N MiB at 0x...").
 *     error REASON
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <asm/kvm_pkvm.h>

struct memblock_region kvm_nvhe_sym(hyp_memory)[HYP_MEMBLOCK_REGIONS];
unsigned int kvm_nvhe_sym(hyp_memblock_nr);
unsigned long shim_warnings;
int shim_lpa2;
char shim_info[256];

#define MAX_REGIONS 256
struct memblock_region shim_memblock[MAX_REGIONS];
int shim_memblock_nr;

void sort(void *base, size_t num, size_t size, int (*cmp)(const void *, const void *),
	  void (*swap)(void *, void *, int))
{
	(void)swap;
	qsort(base, num, size, cmp);
}

#define VA_SWEEP_PKVM_FUNCTIONS
#include <extracted.h>

/* kvm_hyp_reserve sets hyp_mem_size = hyp_mem_pages << PAGE_SHIFT just before its first
 * allocation: the exact page count, before the PMD_SIZE alignment, is read there. */
static u64 reserved_pages;

phys_addr_t memblock_phys_alloc(phys_addr_t size, phys_addr_t align)
{
	if (!reserved_pages)
		reserved_pages = hyp_mem_size >> PAGE_SHIFT;
	for (int i = shim_memblock_nr - 1; i >= 0; i--) {
		phys_addr_t base = shim_memblock[i].base, end = base + shim_memblock[i].size;
		if (end < size)
			continue;
		phys_addr_t at = ALIGN_DOWN(end - size, align);
		if (at >= base)
			return at;
	}
	return 0;
}


static void put(int have, unsigned long value)
{
	if (have)
		printf(" %lu", value);
	else
		printf(" -");
}

static void run_line(char *line)
{
	u64 v[3 + 2 * MAX_REGIONS];
	char *p = line, *end;
	int k = 0;
	while (k < (int)(sizeof(v) / sizeof(v[0]))) {
		v[k] = strtoull(p, &end, 0);
		if (end == p)
			break;
		k++;
		p = end;
	}
	if (k == 0)
		return;
	if (k < 3 || v[2] > MAX_REGIONS || (u64)k != 3 + 2 * v[2]) {
		printf("error malformed line (%d numbers)\n", k);
		return;
	}
	if (v[0] < 36 || v[0] > 52 || v[1] < 1) {
		printf("error bad VA_BITS or NR_CPUS\n");
		return;
	}
	shim_memblock_nr = (int)v[2];
	for (int i = 0; i < shim_memblock_nr; i++)
		shim_memblock[i] = (struct memblock_region){ .base = v[3 + 2 * i],
							     .size = v[4 + 2 * i] };
	memset(kvm_nvhe_sym(hyp_memory), 0, sizeof(kvm_nvhe_sym(hyp_memory)));
	kvm_nvhe_sym(hyp_memblock_nr) = 0;
	hyp_mem_base = hyp_mem_size = 0;
	shim_info[0] = 0;
	reserved_pages = 0;

	kvm_hyp_reserve();
	if (!hyp_mem_size) {
		printf("error kvm_hyp_reserve reserved nothing\n");
		return;
	}
	/* The parts, from the header's own functions over the regions kvm_hyp_reserve registered. */
	unsigned long s1 = hyp_s1_pgtable_pages(), s2 = host_s2_pgtable_pages();
	unsigned long vm = 0, vmemmap = 0, selftest = 0, ffa = 0;
#ifdef VA_SWEEP_HAVE_HYP_VM_TABLE_PAGES
	vm = hyp_vm_table_pages();
#endif
#ifdef VA_SWEEP_HAVE_HYP_VMEMMAP_PAGES
	vmemmap = hyp_vmemmap_pages(STRUCT_HYP_PAGE_SIZE);
#endif
#ifdef VA_SWEEP_HAVE_PKVM_SELFTEST_PAGES
	selftest = pkvm_selftest_pages();
#endif
#ifdef VA_SWEEP_HAVE_HYP_FFA_PROXY_PAGES
	ffa = hyp_ffa_proxy_pages();
#endif
	/* PAGES is kvm_hyp_reserve's own hyp_mem_pages; in 6.1 the vmemmap is the fixed point it
	 * computes inline: the rest of that sum. */
	unsigned long pages = reserved_pages;
#ifndef VA_SWEEP_HAVE_HYP_VMEMMAP_PAGES
	vmemmap = pages - (s1 + s2 + vm + selftest + ffa);
#endif
	printf("ok %lu %lu", s1, s2);
#ifdef VA_SWEEP_HAVE_HYP_VM_TABLE_PAGES
	put(1, vm);
#else
	put(0, 0);
#endif
	put(1, vmemmap);
#ifdef VA_SWEEP_HAVE_PKVM_SELFTEST_PAGES
	put(1, selftest);
#else
	put(0, 0);
#endif
#ifdef VA_SWEEP_HAVE_HYP_FFA_PROXY_PAGES
	put(1, ffa);
#else
	put(0, 0);
#endif
	printf(" %lu 0x%lx 0x%lx\n", pages, (unsigned long)hyp_mem_size,
	       (unsigned long)hyp_mem_base);
	if (pages != s1 + s2 + vm + vmemmap + selftest + ffa)
		printf("error the parts do not add up to kvm_hyp_reserve's %lu pages\n", pages);
	printf("%s", shim_info);
}

int main(void)
{
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, stdin) > 0) {
		run_line(line);
		fflush(stdout);
	}
	free(line);
	return 0;
}
