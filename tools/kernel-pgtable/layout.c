// SPDX-License-Identifier: MIT
/*
 * Run the kernel's own kvm_compute_layout() (arch/arm64/kvm/va_layout.c, #included below
 * unmodified, compiled against shim-layout/) for one machine per input line, and print the HYP
 * VA layout it computes.
 *
 * Input, one machine per line (numbers in C syntax: 0x... or decimal):
 *     VA_BITS VABITS_ACTUAL GRANULE DRAM_START DRAM_END MEMSTART_ADDR IDMAP_PA TAG_RANDOM
 * VA_BITS the kernel's configured VA size, VABITS_ACTUAL the one it runs with; GRANULE the page
 * size in bytes (4096, 16384, 65536); DRAM_START and DRAM_END memblock_start_of_DRAM() and
 * memblock_end_of_DRAM() (exclusive) after arm64_memblock_init's clip; MEMSTART_ADDR the
 * kernel's memstart_addr (PHYS_OFFSET) as arm64_memblock_init leaves it (for VA_BITS 52 on a
 * CPU without 52-bit VAs, already lowered by _PAGE_OFFSET(vabits_actual) - _PAGE_OFFSET(52),
 * so it may wrap: 0xfff1000080000000); IDMAP_PA the physical
 * address of __hyp_idmap_text_start; TAG_RANDOM what get_random_long() returns.
 * high_memory is __va(DRAM_END - 1) + 1 (arch/arm64/mm/init.c, 6.x).
 *
 * Output, one line per input line:
 *     ok HYP_VA_BITS TAG_LSB TAG_VAL VA_MASK RANGE_START RANGE_END HYP_DRAM_START HYP_PHYSVIRT
 * HYP_VA_BITS kvm_hyp_va_bits() (7.0+) or - (before: the layout uses vabits_actual);
 * TAG_LSB, TAG_VAL (already shifted right by TAG_LSB, as the kernel keeps it) and VA_MASK
 * kvm_compute_layout's three statics; RANGE_START and RANGE_END what kvm_mmu_init prints as
 * "HYP VA range: %lx:%lx", kern_hyp_va(PAGE_OFFSET) and kern_hyp_va(high_memory - 1);
 * HYP_DRAM_START the hyp VA of the first DRAM byte (__early_kern_hyp_va of its linear address);
 * HYP_PHYSVIRT hyp_physvirt_offset (PA - hyp VA, signed) as init_hyp_physvirt_offset sets it.
 *     error REASON          (bad input: nothing is computed)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include VA_LAYOUT_C

u64 shim_va_bits, vabits_actual, kimage_voffset, shim_random;
s64 memstart_addr, hyp_physvirt_offset;
phys_addr_t shim_dram_start;
void *high_memory;
char __hyp_reloc_begin[1], __hyp_reloc_end[1], __kvm_hyp_vector[1];

u64 shim_idmap_kimg, shim_text_kimg;

/* The kernel image mapped at KIMAGE_VADDR-like addresses: PA + this offset (any value works). */
#define SHIM_KIMAGE_VOFFSET 0xffff800000000000UL

/*
 * kern_hyp_va() as the patched alternative in asm/kvm_mmu.h (__kern_hyp_va, filled in by
 * kvm_update_va_mask) executes it: "and va_mask; ror tag_lsb; add tag_val[11:0];
 * add tag_val[23:12], lsl 12; ror 64 - tag_lsb", or the AND alone when tag_val is 0.
 */
static u64 ror(u64 x, unsigned n)
{
	n &= 63;
	return n ? (x >> n) | (x << (64 - n)) : x;
}

static u64 kern_hyp_va(u64 v)
{
	v &= va_mask;
	if (!tag_val)
		return v;
	v = ror(v, tag_lsb);
	v += tag_val & GENMASK(11, 0);
	v += tag_val & GENMASK(23, 12);
	return ror(v, 64 - tag_lsb);
}

static void run_line(char *line)
{
	u64 v[8];
	char *p = line, *end;
	int k = 0;
	while (k < 8) {
		v[k] = strtoull(p, &end, 0);
		if (end == p)
			break;
		k++;
		p = end;
	}
	if (k == 0)
		return;
	if (k != 8) {
		printf("error malformed line (%d numbers, want 8)\n", k);
		return;
	}
	u64 granule = v[2];
	if (v[0] < 36 || v[0] > 52 || v[1] < 36 || v[1] > v[0] || v[3] >= v[4] ||
	    (granule != 4096 && granule != 16384 && granule != 65536)) {
		printf("error bad machine\n");
		return;
	}
	shim_va_bits = v[0];
	vabits_actual = v[1];
	shim_dram_start = v[3];
	memstart_addr = (s64)v[5];
	kimage_voffset = SHIM_KIMAGE_VOFFSET;
	shim_random = v[7];
	high_memory = (char *)__va(v[4] - 1) + 1;
	tag_lsb = 0, tag_val = 0, va_mask = 0, hyp_physvirt_offset = 0;

	/* Point the symbols at the idmap page: __hyp_text_start's PA only feeds
	 * hyp_physvirt_offset, which is PA - hyp VA for any linear address. */
	shim_idmap_kimg = v[6] + kimage_voffset;
	shim_text_kimg = v[6] + kimage_voffset;
	kvm_compute_layout();

	char bits[16] = "-";
#ifdef VA_SWEEP_HAVE_KVM_HYP_VA_BITS
	snprintf(bits, sizeof(bits), "%u", (unsigned)kvm_hyp_va_bits());
#endif
	u64 lin_start = (u64)__va(v[3]);
	printf("ok %s %u 0x%lx 0x%lx 0x%lx 0x%lx 0x%lx %ld\n", bits, (unsigned)tag_lsb,
	       (unsigned long)tag_val, (unsigned long)va_mask, (unsigned long)kern_hyp_va(PAGE_OFFSET),
	       (unsigned long)kern_hyp_va((u64)high_memory - 1),
	       (unsigned long)__early_kern_hyp_va(lin_start), (long)hyp_physvirt_offset);
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
