/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the driver hands the bare-metal image (hypervisor/image/src/handoff.rs mirrors it).
 * The driver writes one page right after the image's load size; its physical address is the
 * second argument of every image entry call.
 */
#ifndef HYPERENCLAVE_HANDOFF_H
#define HYPERENCLAVE_HANDOFF_H

#define HE_HANDOFF_MAGIC 0x464f444e41484548ULL /* "HEHANDOF" little-endian */
#define HE_HANDOFF_VERSION 3
#define HE_MAX_RANGES 64

/* image entry ops (first argument) */
#define HE_OP_INIT 1   /* build the hypervisor state and the host nested tables (one CPU) */
#define HE_OP_LAUNCH 2 /* demote this CPU: capture its state into a VMCB and VMRUN it */

/* memory-map kinds, as the ENABLE hypercall's entries (docs/hypercall-abi.md) */
#define HE_MEM_RAM 0
#define HE_MEM_RESERVED 1
#define HE_MEM_MMIO 2

struct he_range {
	__u64 start, size, kind;
};

struct he_handoff {
	__u64 magic;
	__u32 version;
	__u32 ncpus;
	__u64 reserved_base;   /* memmap= region */
	__u64 reserved_size;
	__u64 image_base;      /* where the image is linked and loaded (inside the region) */
	__u64 image_load_size; /* image + bss */
	__u64 pool_base;       /* first free byte after the driver's pages */
	__u64 hv_size;         /* hypervisor part from reserved_base (image, pool); EPC follows */
	__u64 host_cr3;        /* host page tables: identity low half + Linux's kernel half */
	__u64 leave_tramp;     /* Linux VA of he_leave_tramp (hands a CPU back on DISABLE) */
	__u64 leave_tramp_pa[2]; /* physical pages of the trampoline (second 0 when it fits in one) */
	__u32 nranges;
	__u32 pcr;
	__u8 image_sha256[32];
	struct he_range ranges[HE_MAX_RANGES];
	/*
	 * Version 3: per-CPU areas, one per possible CPU id (no fixed CPU limit): cpu_slots areas of
	 * percpu_size bytes (the container header's per-CPU size, offset 0x28) from percpu_base,
	 * inside the hypervisor part of the region. The image keeps its FPU save area, its vCPU
	 * state and its stack there.
	 */
	__u64 percpu_base;
	__u64 percpu_size;
	__u32 cpu_slots;
	__u32 reserved0;
};

#endif
