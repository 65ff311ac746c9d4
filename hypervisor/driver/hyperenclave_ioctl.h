/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * /dev/hyperenclave ioctl ABI (user space <-> driver). Versioned like the hypercall ABI
 * (docs/hypercall-abi.md): major in bits 31:16, minor in 15:0; a caller whose major differs is
 * refused with -EPROTO. The driver forwards hypercalls to the hypervisor with VMMCALL.
 */
#ifndef HYPERENCLAVE_IOCTL_H
#define HYPERENCLAVE_IOCTL_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
#else
#include <stdint.h>
#include <sys/ioctl.h>
typedef uint8_t __u8;
typedef uint32_t __u32;
typedef int32_t __s32;
typedef uint64_t __u64;
#endif

#define HE_IOCTL_ABI_VERSION 0x00010004u /* this header (1.1: HE_BUF_ARG_MASK; 1.2: he_probe.target, 16 KiB hypercall buffers; 1.3: 256-byte hv_status with DMA protection; 1.4: resume budget) */
#define HE_HYPERCALL_ABI_VERSION 0x00010000u /* hypervisor/core ABI_VERSION it was written against */
#define HE_IOC_MAGIC 'H'

struct he_version {
	__u32 ioctl_abi;      /* in: caller's HE_IOCTL_ABI_VERSION; out: the driver's */
	__u32 hypercall_abi;  /* out: ABI the driver speaks to the hypervisor */
	__u32 hv_abi;         /* out: VERSION hypercall answer when enabled, else 0 */
	__u32 reserved;
};

struct he_load {
	char firmware[128];   /* in: name under /lib/firmware (NUL-terminated) */
	__u64 image_length;   /* out */
	__u64 load_address;   /* out: physical address the image is linked at */
	__u64 load_size;      /* out */
	__u8 image_sha256[32];/* out: SHA-256 of the image (the value measured) */
	__u32 pcr;            /* out: PCR extended */
	__u32 banks;          /* out: number of PCR banks extended */
};

#define HE_STATE_EMPTY 0
#define HE_STATE_LOADED 1
#define HE_STATE_ENABLED 2

struct he_status {
	__u32 ioctl_abi;
	__u32 state;          /* HE_STATE_* */
	__u64 reserved_base;
	__u64 reserved_size;
	__u64 image_length;
	__u8 image_sha256[32];
	__u32 pcr;
	__u32 cpus_enabled;   /* CPUs running as guests of the hypervisor */
	__u64 hv_status_len;  /* bytes of hv_status filled (STATUS hypercall record), 0 when not enabled */
	__u8 hv_status[256];  /* 1.3: 256 (DMA faults and IOMMU base after the digest) */
};

/*
 * A hypercall (RAX = call, RDI.. = arguments, outputs written back). When buf_len > 0 the
 * driver copies buf_len bytes (<= 4096 before 1.2, <= HE_HYPERCALL_BUF_MAX since) from buf into
 * physically contiguous kernel pages, puts their physical address into argument buf_arg (1 = RDI
 * .. 5 = R8), and copies them back afterwards.
 * Since 1.1, buf_arg = HE_BUF_ARG_MASK | bits (bit 0 = RDI .. bit 4 = R8): each marked argument
 * holds an offset into buf (< buf_len) and the driver adds the page's physical address to it, so
 * calls with several buffers (REPORT: TARGETINFO, REPORTDATA, output) pack them into one page.
 */
#define HE_BUF_ARG_MASK 0x100u
/*
 * 1.4: buf_arg bits 31:16 = a resume budget in milliseconds, for ENCLAVE_CALL (0x18) and
 * ENCLAVE_OCALL_RETURN (0x19) only (other calls with a budget: -EINVAL). While the call returns
 * ENCLAVE_INTERRUPTED the driver resumes the thread itself (cond_resched() in between) until it
 * completes, makes an OCALL (ENCLAVE_OCALL), faults, a signal is pending or the budget is spent;
 * r8 then holds the number of resumes. Budget 0: one hypercall, as before 1.4.
 */
#define HE_RESUME_BUDGET_SHIFT 16
#define HE_HYPERCALL_BUF_MAX 16384u /* 1.2: e.g. TRUST_INIT's blob in and a 4 KiB output in one call */
struct he_hypercall {
	__u64 rax, rdi, rsi, rdx, rcx, r8;
	__u64 buf;            /* user pointer, or 0 */
	__u32 buf_len;
	__u32 buf_arg;
};

/*
 * Reads through a kernel mapping (test of the protection): target HE_PROBE_RESERVED reads 8 bytes
 * of the reserved region; HE_PROBE_TPM_TIS reads 1 byte of the TPM's TIS registers (offset from
 * 0xFED40000, locality n at n * 0x1000; after enable the pages of localities 1-4 are refused).
 */
#define HE_PROBE_RESERVED 0
#define HE_PROBE_TPM_TIS 1
struct he_probe {
	__u64 offset;         /* in: offset into the target */
	__u64 value;          /* out: the bytes read when result == 0 */
	__s32 result;         /* out: 0 read, -EFAULT refused (fault taken and survived) */
	__u32 target;         /* in: HE_PROBE_* (0 before 1.2) */
};

/*
 * 1.2, a test of the hypervisor's FIFO scrub (docs/attestation.md): QEMU's tpm-tis shares one
 * command/response buffer between localities, and a locality left in the completion state can
 * re-read it with responseRetry. HE_TPM_FIFO_ARM runs TPM2_GetRandom(8) at locality 0 and leaves
 * locality 0 in the completion state (Linux's TPM lock held); after the hypervisor has used
 * locality 2 (e.g. its self-test at ENABLE), HE_TPM_FIFO_REREAD re-reads the buffer at locality 0
 * and reports only its header and whether everything after it is zero (the scrub pattern), then
 * puts locality 0 back to ready.
 */
#define HE_TPM_FIFO_ARM 1
#define HE_TPM_FIFO_REREAD 2
struct he_tpm_fifo {
	__u32 op;             /* in: HE_TPM_FIFO_* */
	__s32 result;         /* out: 0, or -ETIMEDOUT/-EIO naming the TIS step that failed */
	__u32 size;           /* out (REREAD): the size field of the buffer's header */
	__u32 zero_tail;      /* out (REREAD): 1 when bytes 10..size are all zero */
	__u8 header[10];      /* out: the 10-byte header read (ARM: GetRandom's response header) */
	__u8 reserved[6];
};

#define HE_IOC_VERSION   _IOWR(HE_IOC_MAGIC, 0x00, struct he_version)
#define HE_IOC_LOAD      _IOWR(HE_IOC_MAGIC, 0x01, struct he_load)
#define HE_IOC_ENABLE    _IO(HE_IOC_MAGIC, 0x02)
#define HE_IOC_DISABLE   _IO(HE_IOC_MAGIC, 0x03)
#define HE_IOC_STATUS    _IOR(HE_IOC_MAGIC, 0x04, struct he_status)
#define HE_IOC_HYPERCALL _IOWR(HE_IOC_MAGIC, 0x05, struct he_hypercall)
#define HE_IOC_PROBE     _IOWR(HE_IOC_MAGIC, 0x06, struct he_probe)
#define HE_IOC_TPM_FIFO  _IOWR(HE_IOC_MAGIC, 0x07, struct he_tpm_fifo)

#endif
