/* SPDX-License-Identifier: MIT */
/*
 * va-sweep's own stand-ins for the kernel headers arch/arm64/kvm/va_layout.c includes, so that
 * the kernel's file compiles unmodified in userspace, #included by ../layout.c. Written for this
 * project from the kernel's documented semantics; no kernel code is copied.
 *
 * The machine is described by variables ../layout.c sets from its input: VA_BITS (a kernel
 * constant, here a variable: one binary serves every configuration), vabits_actual,
 * memstart_addr (PHYS_OFFSET), the memblock's first and last byte, high_memory, the kernel
 * image's offset and where __hyp_idmap_text_start and __hyp_text_start lie, and the value
 * get_random_long() returns. IDMAP_VA_BITS is the kernel's own, cut from its
 * asm/kernel-pgtable.h into extracted.h by the build (6.9 and later).
 */
#ifndef VA_SWEEP_LAYOUT_SHIM_H
#define VA_SWEEP_LAYOUT_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;
typedef u64 phys_addr_t;
typedef u32 __le32;

#define __init
#define __always_inline inline __attribute__((always_inline))
#define UL(x) (x##UL)
#define BIT(n) (1UL << (n))
#define GENMASK(h, l) ((~0UL << (l)) & (~0UL >> (63 - (h))))
#define GENMASK_ULL(h, l) GENMASK(h, l)
#define IS_ENABLED(option) (option##_ENABLED + 0)
#define CONFIG_RANDOMIZE_BASE_ENABLED 1 /* Debian's arm64 kernels: CONFIG_RANDOMIZE_BASE=y */
#define max(a, b) ((a) > (b) ? (a) : (b))
#define BUG_ON(c) do { if (c) __builtin_trap(); } while (0)
#define WARN_ON_ONCE(c) (!!(c))
#define cpu_to_le32(x) ((u32)(x))
#define le32_to_cpu(x) ((u32)(x))
/* fls64: the 1-based index of the most significant set bit, 0 for 0 (linux/bitops.h). */
static inline int fls64(u64 x)
{
	return x ? 64 - __builtin_clzll(x) : 0;
}

/* --- the machine (set by ../layout.c) -------------------------------------------------------- */
extern u64 shim_va_bits;           /* VA_BITS, the kernel's configured VA size */
extern u64 vabits_actual;          /* what the CPU gives it (52 only with LVA/LPA2) */
extern s64 memstart_addr;          /* PHYS_OFFSET */
extern u64 kimage_voffset;         /* kernel image VA - PA */
extern phys_addr_t shim_dram_start; /* memblock_start_of_DRAM() */
extern void *high_memory;          /* __va(memblock_end_of_DRAM() - 1) + 1 */
extern u64 shim_random;            /* what get_random_long() returns */
extern s64 hyp_physvirt_offset;    /* written by init_hyp_physvirt_offset() */
extern u64 shim_idmap_kimg, shim_text_kimg; /* kernel-image VAs of the two hyp symbols */

/* --- asm/memory.h: the linear map and the kernel image ---------------------------------------- */
#define VA_BITS shim_va_bits
#define _PAGE_OFFSET(va) (-(UL(1) << (va)))
#define PAGE_OFFSET (_PAGE_OFFSET(VA_BITS))
#define PAGE_END (_PAGE_OFFSET(vabits_actual - 1)) /* 5.11+: the linear map's end */
#define PHYS_OFFSET ((u64)memstart_addr)
#define __is_lm_address(addr) (((u64)(addr) - PAGE_OFFSET) < (PAGE_END - PAGE_OFFSET))
#define __lm_to_phys(addr) (((addr) - PAGE_OFFSET) + PHYS_OFFSET)
#define __kimg_to_phys(addr) ((addr) - kimage_voffset)
#define __pa(x)                                                                             \
	({                                                                                  \
		u64 __x = (u64)(x);                                                         \
		__is_lm_address(__x) ? __lm_to_phys(__x) : __kimg_to_phys(__x);             \
	})
#define __pa_symbol(x) __kimg_to_phys((u64)(x))
#define __phys_to_virt(x) ((u64)((x) - PHYS_OFFSET) | PAGE_OFFSET)
#define __va(x) ((void *)__phys_to_virt((phys_addr_t)(x)))
#define phys_to_virt(x) __va(x)
#define lm_alias(x) __va(__pa_symbol(x))
#define kvm_ksym_ref(sym) ((void *)(sym))

/* --- linux/memblock.h, linux/random.h ---------------------------------------------------------- */
#define memblock_start_of_DRAM() shim_dram_start
#define get_random_long() ((unsigned long)shim_random)

/* --- asm/sections.h: the hyp sections, in the kernel image ------------------------------------ */
#define __hyp_idmap_text_start ((char *)shim_idmap_kimg)
#define __hyp_text_start ((char *)shim_text_kimg)
extern char __hyp_reloc_begin[], __hyp_reloc_end[], __kvm_hyp_vector[];
#define KVM_VECTOR_PREAMBLE (2 * 4)

/* --- alternatives and instruction encoding: compiled, never called by ../layout.c ------------- */
struct alt_instr {
	s32 orig_offset, alt_offset;
	u16 cpucap;
	u8 orig_len, alt_len;
};
#define ARM64_HAS_VIRT_HOST_EXTN 0
#define ARM64_SPECTRE_V3A 1
#define cpus_have_cap(cap) false
#define SYS_CTR_EL0 0
static inline u64 read_sanitised_ftr_reg(u32 id)
{
	(void)id;
	return 0;
}
#define AARCH64_BREAK_FAULT 0xd4200000u
enum aarch64_insn_variant { AARCH64_INSN_VARIANT_32BIT, AARCH64_INSN_VARIANT_64BIT };
enum aarch64_insn_logic_type { AARCH64_INSN_LOGIC_AND };
enum aarch64_insn_adsb_type { AARCH64_INSN_ADSB_ADD };
enum aarch64_insn_movewide_type { AARCH64_INSN_MOVEWIDE_ZERO, AARCH64_INSN_MOVEWIDE_KEEP };
enum aarch64_insn_branch_type { AARCH64_INSN_BRANCH_NOLINK };
enum aarch64_insn_register_type { AARCH64_INSN_REGTYPE_RD, AARCH64_INSN_REGTYPE_RN };
enum aarch64_insn_register { AARCH64_INSN_REG_0 = 0 };
static inline u32 aarch64_insn_gen_logical_immediate(int t, int v, int rn, int rd, u64 imm)
{
	(void)t, (void)v, (void)rn, (void)rd, (void)imm;
	return 0;
}
static inline u32 aarch64_insn_gen_extr(int v, int rm, int rn, int rd, int lsb)
{
	(void)v, (void)rm, (void)rn, (void)rd, (void)lsb;
	return 0;
}
static inline u32 aarch64_insn_gen_add_sub_imm(int rd, int rn, int imm, int v, int t)
{
	(void)rd, (void)rn, (void)imm, (void)v, (void)t;
	return 0;
}
static inline u32 aarch64_insn_gen_movewide(int rd, int imm, int shift, int v, int t)
{
	(void)rd, (void)imm, (void)shift, (void)v, (void)t;
	return 0;
}
static inline u32 aarch64_insn_gen_branch_reg(int reg, int type)
{
	(void)reg, (void)type;
	return 0;
}
static inline u32 aarch64_insn_gen_nop(void)
{
	return 0xd503201fu;
}
static inline u32 aarch64_insn_decode_register(int type, u32 insn)
{
	(void)type, (void)insn;
	return 0;
}

#include <extracted.h> /* IDMAP_VA_BITS, where the kernel defines it (6.9+) */

#endif
