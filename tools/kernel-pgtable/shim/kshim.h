/* SPDX-License-Identifier: MIT */
/*
 * va-sweep's own stand-ins for the few kernel headers that arch/arm64/kvm/hyp/pgtable.c needs,
 * so that the kernel's file compiles unmodified in userspace (see README.md beside shim/).
 * Written for this project from the kernel's documented semantics; no kernel code is copied.
 *
 * One binary per granule: PAGE_SHIFT (12, 14, 16) comes from the compiler's command line.
 * Barriers are no-ops (one thread); WARN_ON counts into shim_warnings; system_supports_lpa2()
 * reads shim_lpa2, which the harness sets.
 */
#ifndef VA_SWEEP_KSHIM_H
#define VA_SWEEP_KSHIM_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef PAGE_SHIFT
#error "PAGE_SHIFT must be given on the command line (12, 14 or 16)"
#endif

/* --- types ------------------------------------------------------------------------------- */
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t s8;
typedef int16_t s16;
typedef int32_t s32;
typedef int64_t s64;
typedef u64 phys_addr_t;
typedef u64 kvm_pfn_t;
typedef u64 gfn_t;
typedef u64 hpa_t;
#define __rcu
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#define __maybe_unused __attribute__((unused))
#define __must_check
#define noinline __attribute__((noinline))

/* --- bits and fields --------------------------------------------------------------------- */
#define _AC(x, y) (x##y)
#define UL(x) _AC(x, UL)
#define ULL(x) _AC(x, ULL)
#define BIT(n) (1UL << (n))
#define BIT_ULL(n) (1ULL << (n))
#define GENMASK(h, l) ((~0UL << (l)) & (~0UL >> (63 - (h))))
#define GENMASK_ULL(h, l) GENMASK(h, l)
#define __bf_shf(x) (__builtin_ctzll(x))
#define FIELD_PREP(mask, val) ((((u64)(val)) << __bf_shf(mask)) & (u64)(mask))
#define FIELD_GET(mask, reg) ((((u64)(reg)) & (u64)(mask)) >> __bf_shf(mask))
#define IS_ENABLED(option) (option##_ENABLED + 0)
#define IS_ALIGNED(x, a) (((x) & ((typeof(x))(a) - 1)) == 0)
#define ALIGN_DOWN(x, a) ((x) & ~((typeof(x))(a) - 1))
#define ALIGN(x, a) ALIGN_DOWN((x) + ((typeof(x))(a) - 1), (a))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define min(a, b) ((a) < (b) ? (a) : (b))
#define max(a, b) ((a) > (b) ? (a) : (b))
#define min_t(t, a, b) min((t)(a), (t)(b))
#define max_t(t, a, b) max((t)(a), (t)(b))
#define PAGE_SIZE (1UL << PAGE_SHIFT)
#define PAGE_MASK (~(PAGE_SIZE - 1))
#define PAGE_ALIGN(x) ALIGN((u64)(x), PAGE_SIZE)
#define __phys_to_pfn(p) ((u64)(p) >> PAGE_SHIFT)
#define __pfn_to_phys(p) ((u64)(p) << PAGE_SHIFT)

/* --- compiler, memory ordering (one thread: plain accesses), warnings -------------------- */
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))
#define smp_store_release(p, v) WRITE_ONCE(*(p), (v))
#define smp_load_acquire(p) READ_ONCE(*(p))
#define cmpxchg(p, o, n) __sync_val_compare_and_swap((p), (o), (n))
#define dsb(opt) do { } while (0)
#define isb() do { } while (0)
#define BUILD_BUG_ON(c) _Static_assert(!(c), #c)
extern unsigned long shim_warnings;
#define WARN_ON(c) ({ int __w = !!(c); if (__w) shim_warnings++; __w; })
#define WARN_ON_ONCE(c) WARN_ON(c)
#define BUG_ON(c) do { if (c) __builtin_trap(); } while (0)

/* --- CPU features: what the harness says the CPU has ------------------------------------- */
extern int shim_lpa2;
#define system_supports_lpa2() (shim_lpa2 != 0)
#define system_supports_bti_kernel() false
#define cpus_have_final_cap(cap) false
#define cpus_have_const_cap(cap) false
#define ARM64_KVM_HVHE 0
#define ID_AA64MMFR0_EL1_PARANGE_48 5
#define ID_AA64MMFR0_EL1_PARANGE_52 6
#define ID_AA64MMFR0_PARANGE_48 ID_AA64MMFR0_EL1_PARANGE_48
#define ID_AA64MMFR0_PARANGE_52 ID_AA64MMFR0_EL1_PARANGE_52
#define ID_AA64MMFR0_EL1_PARANGE_SHIFT 0
#define ID_AA64MMFR0_PARANGE_SHIFT 0
/* 6.1's PA size (arch/arm64/include/asm/sysreg.h): 52 bits only with CONFIG_ARM64_PA_BITS_52,
 * which 6.1's Kconfig allows with 64K pages only. */
#if PAGE_SHIFT == 16
#define ID_AA64MMFR0_EL1_PARANGE_MAX ID_AA64MMFR0_EL1_PARANGE_52
#else
#define ID_AA64MMFR0_EL1_PARANGE_MAX ID_AA64MMFR0_EL1_PARANGE_48
#endif
static inline u32 id_aa64mmfr0_parange_to_phys_shift(int parange)
{
	static const u32 shifts[] = { 32, 36, 40, 42, 44, 48, 52 };
	return parange >= 0 && parange <= 6 ? shifts[parange] : 48;
}
static inline unsigned int cpuid_feature_extract_unsigned_field(u64 reg, int shift)
{
	return (reg >> shift) & 0xf;
}

/* Memory types (MAIR indices); only their values as attribute bits matter here. */
#define MT_NORMAL 0
#define MT_NORMAL_TAGGED 1
#define MT_NORMAL_NC 2
#define MT_DEVICE_nGnRnE 3
#define MT_DEVICE_nGnRE 4

/* --- Stage 2 (compiled, never called by the harness): just enough to compile ------------- */
#define IS_ERR(p) ((unsigned long)(void *)(p) >= (unsigned long)-4095)
#define PTR_ERR(p) ((long)(p))
#define ERR_PTR(e) ((void *)(long)(e))
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
struct kvm_pgtable;
struct kvm_mmu_memory_cache {
	int nobjs;
};
struct kvm_arch {
	u64 vtcr; /* 6.1 reads mmu->arch->vtcr */
};
struct kvm_s2_mmu {
	u64 vtcr;
	struct kvm_arch *arch;
	struct kvm_pgtable *pgt;
	struct kvm_mmu_memory_cache split_page_cache;
};
#define kvm_call_hyp(f, ...) do { } while (0)
#define __tlbi_level(op, addr, level) do { } while (0)
#define __TLBI_VADDR(addr, asid) ((u64)(addr))
#define __tlbi_sync_s1ish_hyp() do { } while (0)
#define TLBI_TTL_UNKNOWN 0
#define MAX_TLBI_RANGE_PAGES 1UL
#define system_supports_tlb_range() false
#define get_vmid_bits(mmfr1) 8
#define VTCR_EL2_FLAGS 0UL
#define VTCR_EL2_PS_SHIFT 16
#define VTCR_EL2_T0SZ(x) (64 - (x))
#define VTCR_EL2_LVLS_TO_SL0(l) 0UL
#define VTCR_EL2_LVLS(vtcr) 0
#define VTCR_EL2_HA 0UL
#define VTCR_EL2_DS 0UL
#define VTCR_EL2_VS_16BIT 0UL
#define VTCR_EL2_VS_8BIT 0UL
#define VTCR_EL2_SL0_MASK (3UL << 6)
#define VTCR_EL2_TGRAN_SL0_BASE 2
#define VTCR_EL2_IPA(vtcr) (64 - ((vtcr) & 63))
#define MT_S2_NORMAL 0xf
#define MT_S2_NORMAL_NC 0x5
#define MT_S2_DEVICE_nGnRE 0x1
#define MT_S2_FWB_NORMAL 6
#define MT_S2_FWB_NORMAL_NC 5
#define MT_S2_FWB_DEVICE_nGnRE 1
#define PAGE_S2_MEMATTR(attr, has_fwb) ((has_fwb) ? MT_S2_FWB_##attr : MT_S2_##attr)
#define ARM64_HAS_STAGE2_FWB 0
#define ARM64_WORKAROUND_AMPERE_AC03_CPU_38 0
/* Stage 2 as 7.x spells it (VA_SWEEP_KERNEL, major * 100 + minor, comes from the build):
 * PAGE_S2_MEMATTR lost its has_fwb argument, VTCR_EL2 fields became FIELD_PREP masks, and
 * struct kvm_pgtable holds a pKVM interval tree in a union. */
struct rb_root_cached {
	void *rb_node, *rb_leftmost;
};
#if defined(VA_SWEEP_KERNEL) && VA_SWEEP_KERNEL >= 700
#undef PAGE_S2_MEMATTR
#undef VTCR_EL2_T0SZ
#undef VTCR_EL2_IPA
#define PAGE_S2_MEMATTR(attr) MT_S2_##attr
#define MT_S2_AS_S1 MT_S2_NORMAL
#define VTCR_EL2_T0SZ GENMASK(5, 0)
#define VTCR_EL2_PS GENMASK(18, 16)
#define VTCR_EL2_VS BIT(19)
#define VTCR_EL2_IPA(vtcr) (64 - FIELD_GET(VTCR_EL2_T0SZ, (vtcr)))
#endif

/* 52-bit PAs with 64K pages (LPA), as Debian configures 6.12; 4K and 16K get them from LPA2. */
#define CONFIG_ARM64_PA_BITS_52_ENABLED (PAGE_SHIFT == 16)

#endif
