// SPDX-License-Identifier: GPL-2.0
/*
 * hyperenclave: loads the measured HyperEnclave image into the memory reserved with
 * memmap=SIZE$BASE, measures it into a TPM PCR (every allocated bank), and hands every CPU to
 * it (the running Linux becomes its guest). /dev/hyperenclave speaks hyperenclave_ioctl.h.
 */
#define pr_fmt(fmt) "hyperenclave: " fmt

#include <linux/module.h>
#include <linux/vmalloc.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/io.h>
#include <linux/ioport.h>
#include <linux/firmware.h>
#include <linux/tpm.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/cpumask.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/reboot.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/sched/signal.h>
#include <crypto/hash.h>
#include <crypto/hash_info.h>
#include <asm/tlbflush.h>
#include <asm/processor.h>
#include <asm/unaligned.h>

#include "hyperenclave_hypercall.h"
#include "hyperenclave_ioctl.h"
#include "hyperenclave_handoff.h"
#include "hyperenclave_image.h"

static unsigned long reserved_base;
module_param(reserved_base, ulong, 0444);
MODULE_PARM_DESC(reserved_base, "physical base of the memmap=SIZE$BASE region");
static unsigned long reserved_size;
module_param(reserved_size, ulong, 0444);
MODULE_PARM_DESC(reserved_size, "size of the memmap= region");
static unsigned long hv_size = 16UL << 20;
module_param(hv_size, ulong, 0444);
MODULE_PARM_DESC(hv_size, "bytes for the hypervisor (image + page-table pool); the rest is EPC");
static int pcr = 12;
module_param(pcr, int, 0444);
static bool unmeasured_ok;
module_param(unmeasured_ok, bool, 0444);
MODULE_PARM_DESC(unmeasured_ok, "load without a TPM, unmeasured (emulators without a TPM, e.g. the Bochs VMX tier); default off");
MODULE_PARM_DESC(pcr, "PCR the image is measured into (8-16 or 23)");

#define HE_HYPERCALL_BUF_ORDER 2 /* 4 pages = HE_HYPERCALL_BUF_MAX */
_Static_assert((PAGE_SIZE << HE_HYPERCALL_BUF_ORDER) == HE_HYPERCALL_BUF_MAX, "hypercall buffer order");
_Static_assert(sizeof(((struct he_status *)0)->hv_status) == sizeof(struct he_hv_status), "he_status.hv_status");
_Static_assert(sizeof(struct he_handoff) <= PAGE_SIZE, "the handoff is one page");

long he_enter(u64 op, u64 handoff_pa, u64 cpu, u64 host_cr3, u64 entry_pa);
void he_leave_tramp(void);

static struct {
	struct mutex lock;
	/* HE_IOC_HYPERCALL holds it shared (ECALLs of several threads run at once, each on its own
	 * CPU); everything that changes the driver's state holds it exclusive, after `lock`. */
	struct rw_semaphore calls;
	void *virt;                /* memremap of the whole reserved region */
	u32 state;
	u64 image_length, load_addr, load_size, entry_pa;
	u8 sha256[32];
	struct he_handoff *handoff;
	u64 handoff_pa, host_cr3;
	u64 percpu_size;           /* container header offset 0x28 */
	long *cpu_result;          /* nr_cpu_ids entries (no fixed CPU limit) */
	bool *cpu_on;
	bool pinned;               /* a module reference while CPUs run under the hypervisor */
} he;

/*
 * One image per CPU vendor (docs/image-container.md arch byte): Intel runs the VMX + EPT image
 * (hypercalls by VMCALL), AMD and Hygon the SVM + NPT one (VMMCALL). On Intel VMMCALL is #UD in
 * VMX non-root operation and vice versa, so the instruction follows the vendor.
 */
static bool he_intel;

static inline u64 he_vmmcall(u64 nr, u64 *rdi, u64 *rsi, u64 *rdx, u64 rcx, u64 r8v)
{
	register u64 r8 asm("r8") = r8v;
	if (he_intel)
		asm volatile("vmcall"
			     : "+a"(nr), "+D"(*rdi), "+S"(*rsi), "+d"(*rdx), "+c"(rcx), "+r"(r8)
			     :
			     : "memory", "cc", "r9", "r10", "r11");
	else
		asm volatile("vmmcall"
			     : "+a"(nr), "+D"(*rdi), "+S"(*rsi), "+d"(*rdx), "+c"(rcx), "+r"(r8)
			     :
			     : "memory", "cc", "r9", "r10", "r11");
	return nr;
}

/* The image name when HE_IOC_LOAD names none: the vendor's own container. */
static const char *he_default_image(void)
{
	return he_intel ? HE_FIRMWARE_INTEL : HE_FIRMWARE_AMD;
}

/*
 * Why this CPU cannot run the hypervisor, or NULL. Intel: VMX, and IA32_FEATURE_CONTROL either
 * unlocked (the image locks it with VMX enabled) or locked with VMX outside SMX allowed; EPT
 * with 4-level walks, 1 GiB pages and INVEPT (the core's tables use the largest pages).
 * AMD/Hygon: SVM with nested paging.
 */
static const char *he_cpu_unsupported(void)
{
	if (he_intel) {
		u64 fc, ept;

		if (!boot_cpu_has(X86_FEATURE_VMX))
			return "CPU lacks VMX (or firmware disabled it: IA32_FEATURE_CONTROL)";
		if (rdmsrl_safe(MSR_IA32_FEAT_CTL, &fc))
			return "IA32_FEATURE_CONTROL (MSR 0x3a) is not readable";
		if ((fc & FEAT_CTL_LOCKED) && !(fc & FEAT_CTL_VMX_ENABLED_OUTSIDE_SMX))
			return "IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled";
		if (rdmsrl_safe(MSR_IA32_VMX_EPT_VPID_CAP, &ept))
			return "IA32_VMX_EPT_VPID_CAP (MSR 0x48c) is not readable: no EPT";
		if (!(ept & (1ULL << 6)) || !(ept & (1ULL << 17)) || !(ept & (1ULL << 20)))
			return "EPT lacks 4-level walks, 1 GiB pages or INVEPT (IA32_VMX_EPT_VPID_CAP)";
		return NULL;
	}
	if (!boot_cpu_has(X86_FEATURE_SVM) || !boot_cpu_has(X86_FEATURE_NPT))
		return "CPU lacks SVM with nested paging";
	return NULL;
}

static u32 hv_cpus_on(void)
{
	u32 n = 0, i;

	for (i = 0; i < nr_cpu_ids; i++)
		n += he.cpu_on[i];
	return n;
}

/* ---- measurement ---------------------------------------------------------------------- */

static int he_digest(const char *alg, const u8 *data, size_t len, u8 *out, unsigned int out_len)
{
	struct crypto_shash *tfm = crypto_alloc_shash(alg, 0, 0);
	int rc;

	if (IS_ERR(tfm))
		return PTR_ERR(tfm);
	if (crypto_shash_digestsize(tfm) != out_len) {
		crypto_free_shash(tfm);
		return -EINVAL;
	}
	{
		SHASH_DESC_ON_STACK(desc, tfm);
		desc->tfm = tfm;
		rc = crypto_shash_digest(desc, data, len, out);
		shash_desc_zero(desc);
	}
	crypto_free_shash(tfm);
	return rc;
}

/* Extends `pcr` with H(image) in every bank the TPM has allocated (one TPM2_PCR_Extend). */
static int he_measure(const u8 *image, size_t len, u32 *banks)
{
	struct tpm_chip *chip = tpm_default_chip();
	struct tpm_digest *digests;
	u32 i;
	int rc = 0;

	if (!chip) {
		if (unmeasured_ok) {
			pr_warn("no TPM: loading the image UNMEASURED (unmeasured_ok=1; test beds without a TPM only)\n");
			*banks = 0;
			return 0;
		}
		pr_err("no TPM: refusing to load an unmeasured image\n");
		return -ENODEV;
	}
	digests = kcalloc(chip->nr_allocated_banks, sizeof(*digests), GFP_KERNEL);
	if (!digests) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < chip->nr_allocated_banks; i++) {
		struct tpm_bank_info *b = &chip->allocated_banks[i];

		if (b->crypto_id >= HASH_ALGO__LAST) {
			pr_err("TPM bank alg 0x%04x has no kernel hash: cannot measure into it\n", b->alg_id);
			rc = -EOPNOTSUPP;
			goto out;
		}
		digests[i].alg_id = b->alg_id;
		rc = he_digest(hash_algo_name[b->crypto_id], image, len, digests[i].digest, b->digest_size);
		if (rc) {
			pr_err("hash %s failed: %d\n", hash_algo_name[b->crypto_id], rc);
			goto out;
		}
	}
	rc = tpm_pcr_extend(chip, pcr, digests);
	if (rc)
		pr_err("TPM2_PCR_Extend of PCR %d failed: %d\n", pcr, rc);
	else
		*banks = chip->nr_allocated_banks;
out:
	kfree(digests);
	put_device(&chip->dev);
	return rc;
}

/*
 * The hypervisor drives the TPM itself through the TIS registers of locality 2 (the image's
 * tis.rs); Linux's tpm_tis uses locality 0 of the same FIFO. Around every operation that makes
 * the hypervisor use the TPM (ENABLE: its transport self-test; TRUST_INIT; DISABLE: the core
 * caps its PCR) the driver holds the chip the way tpm_try_get_ops does, minus tpm_chip_start:
 * ops_sem (the chip stays registered) and tpm_mutex (no Linux command runs, and tpm_chip_stop has
 * relinquished locality 0). This is liveness only: the hypervisor does not rely on it (it would
 * seize locality 2 from a host that keeps locality 0, and the host cannot reach locality 2's
 * page after launch). docs/attestation.md, "The hypervisor's TPM".
 */
static struct tpm_chip *he_tpm_hold(void)
{
	struct tpm_chip *chip = tpm_default_chip();

	if (!chip)
		return NULL;
	down_read(&chip->ops_sem);
	if (!chip->ops) {
		up_read(&chip->ops_sem);
		put_device(&chip->dev);
		return NULL;
	}
	mutex_lock(&chip->tpm_mutex);
	return chip;
}

static void he_tpm_release(struct tpm_chip *chip)
{
	if (!chip)
		return;
	mutex_unlock(&chip->tpm_mutex);
	up_read(&chip->ops_sem);
	put_device(&chip->dev);
}

/*
 * HE_IOC_TPM_FIFO: locality 0 driven by hand (TIS FIFO), to test the hypervisor's scrub of the
 * shared FIFO buffer. Every wait is bounded (2 s); Linux's TPM lock is held throughout.
 */
#define TIS_ACCESS 0x00
#define TIS_STS 0x18
#define TIS_FIFO 0x24
#define TIS_VALID 0x80
#define TIS_ACTIVE 0x20
#define TIS_REQUEST 0x02
#define TIS_STS_VALID 0x80
#define TIS_STS_READY 0x40
#define TIS_STS_GO 0x20
#define TIS_STS_AVAIL 0x10
#define TIS_STS_RETRY 0x02

static int tis_wait(void __iomem *r, unsigned int off, u32 mask, u32 want, bool byte)
{
	int i;

	for (i = 0; i < 2000; i++) {
		u32 v = byte ? ioread8(r + off) : ioread32(r + off);

		if (v != 0xffffffff && (v & mask) == want)
			return 0;
		usleep_range(500, 1000);
	}
	return -ETIMEDOUT;
}

static int tis_read_response(void __iomem *r, struct he_tpm_fifo *t)
{
	u32 i, size;
	bool zero = true;

	if (tis_wait(r, TIS_STS, TIS_STS_VALID | TIS_STS_AVAIL, TIS_STS_VALID | TIS_STS_AVAIL, false))
		return -ETIMEDOUT;
	for (i = 0; i < 10; i++)
		t->header[i] = ioread8(r + TIS_FIFO);
	size = get_unaligned_be32(t->header + 2);
	t->size = size;
	if (size < 10 || size > 4096)
		return -EIO;
	for (i = 10; i < size; i++)
		zero &= ioread8(r + TIS_FIFO) == 0; /* the bytes themselves are not kept */
	t->zero_tail = zero;
	return 0;
}

static int he_tpm_fifo(struct he_tpm_fifo *t)
{
	static const u8 get_random8[12] = { 0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8 };
	struct tpm_chip *chip = he_tpm_hold();
	void __iomem *r = ioremap(0xfed40000UL, PAGE_SIZE);
	int rc = -EIO, i;

	if (!r) {
		he_tpm_release(chip);
		return -ENOMEM;
	}
	iowrite8(TIS_REQUEST, r + TIS_ACCESS);
	if (tis_wait(r, TIS_ACCESS, TIS_VALID | TIS_ACTIVE, TIS_VALID | TIS_ACTIVE, true)) {
		rc = -ETIMEDOUT;
		goto out;
	}
	if (t->op == HE_TPM_FIFO_ARM) {
		iowrite32(TIS_STS_READY, r + TIS_STS);
		if (tis_wait(r, TIS_STS, TIS_STS_READY, TIS_STS_READY, false)) {
			rc = -ETIMEDOUT;
			goto relinquish;
		}
		for (i = 0; i < sizeof(get_random8); i++)
			iowrite8(get_random8[i], r + TIS_FIFO);
		iowrite32(TIS_STS_GO, r + TIS_STS);
		rc = tis_read_response(r, t);
		/* no commandReady: locality 0 stays in the completion state */
	} else if (t->op == HE_TPM_FIFO_REREAD) {
		iowrite32(TIS_STS_RETRY, r + TIS_STS);
		rc = tis_read_response(r, t);
		iowrite32(TIS_STS_READY, r + TIS_STS); /* back to ready for Linux */
	} else {
		rc = -EINVAL;
	}
relinquish:
	iowrite8(TIS_ACTIVE, r + TIS_ACCESS);
out:
	iounmap(r);
	he_tpm_release(chip);
	return rc;
}

/* ---- image container (docs/image-container.md) ---------------------------------------- */

static int he_load(struct he_load *req)
{
	const struct firmware *fw;
	struct heimg_header h;
	const u8 *image;
	u64 image_len, sig_len, load_addr, entry_off, load_size;
	u8 digest[32];
	u32 banks = 0;
	int rc;

	if (he.state == HE_STATE_ENABLED)
		return -EBUSY;
	req->firmware[sizeof(req->firmware) - 1] = 0;
	if (!req->firmware[0])
		strscpy(req->firmware, he_default_image(), sizeof(req->firmware));
	rc = request_firmware(&fw, req->firmware, NULL);
	if (rc) {
		pr_err("request_firmware(%s) failed: %d\n", req->firmware, rc);
		return rc;
	}
	rc = -EINVAL;
	/* header layout and codes: hyperenclave_image.h, generated from hypervisor/abi (x86 reads
	 * the little-endian fields as they are) */
	if (fw->size < sizeof(h) || memcmp(fw->data, HEIMG_MAGIC, sizeof(h.magic))) {
		pr_err("%s: bad magic at offset 0x0\n", req->firmware);
		goto out;
	}
	memcpy(&h, fw->data, sizeof(h));
	if (h.format_version != HEIMG_FORMAT_VERSION || h.header_size != HEIMG_HEADER_SIZE) {
		pr_err("%s: unsupported format version/header size at offset 0x%zx\n", req->firmware,
		       offsetof(struct heimg_header, format_version));
		goto out;
	}
	if (he_intel ? h.arch != HEIMG_ARCH_INTEL_VMX : h.arch != HEIMG_ARCH_AMD_SVM && h.arch != HEIMG_ARCH_HYGON) {
		pr_err("%s: arch %u at offset 0x%zx is not %s (this CPU's vendor)\n", req->firmware, h.arch,
		       offsetof(struct heimg_header, arch), he_intel ? "intel-vmx" : "amd-svm/hygon");
		goto out;
	}
	if (h.kind != HEIMG_KIND_FLAT) {
		pr_err("%s: image kind %u at offset 0x%zx is not flat\n", req->firmware, h.kind, offsetof(struct heimg_header, kind));
		goto out;
	}
	load_addr = h.load_address;
	entry_off = h.entry_offset;
	load_size = h.load_size;
	if (h.per_cpu_size < PAGE_SIZE || h.per_cpu_size > (64UL << 20) ||
	    (h.per_cpu_size & (PAGE_SIZE - 1))) {
		pr_err("%s: per-CPU size 0x%llx at offset 0x%zx is not a page multiple between 4 KiB and 64 MiB\n",
		       req->firmware, h.per_cpu_size, offsetof(struct heimg_header, per_cpu_size));
		goto out;
	}
	image_len = h.image_length;
	sig_len = h.signature_length;
	if (image_len == 0 || sizeof(h) + image_len + sig_len != fw->size) {
		pr_err("%s: image length %llu at offset 0x%zx does not match the file size %zu\n",
		       req->firmware, image_len, offsetof(struct heimg_header, image_length), fw->size);
		goto out;
	}
	if (load_size < image_len || entry_off >= load_size || (load_addr & (PAGE_SIZE - 1)) ||
	    load_addr < reserved_base || load_addr + load_size + 64 * PAGE_SIZE > reserved_base + hv_size) {
		pr_err("%s: load address 0x%llx (+0x%llx) at offset 0x%zx is not inside the hypervisor part of the reservation 0x%lx+0x%lx\n",
		       req->firmware, load_addr, load_size, offsetof(struct heimg_header, load_address), reserved_base, hv_size);
		goto out;
	}
	image = fw->data + sizeof(h);
	rc = he_digest("sha256", image, image_len, digest, 32);
	if (rc)
		goto out;
	if (memcmp(digest, h.image_sha256, sizeof(h.image_sha256))) {
		pr_err("%s: SHA-256 of the image differs from the header (offset 0x%zx)\n", req->firmware,
		       offsetof(struct heimg_header, image_sha256));
		rc = -EBADMSG;
		goto out;
	}
	rc = he_measure(image, image_len, &banks);
	if (rc)
		goto out;
	memcpy(he.virt + (load_addr - reserved_base), image, image_len);
	memset(he.virt + (load_addr - reserved_base) + image_len, 0, load_size - image_len);
	he.image_length = image_len;
	he.load_addr = load_addr;
	he.load_size = load_size;
	he.percpu_size = h.per_cpu_size;
	he.entry_pa = load_addr + entry_off;
	memcpy(he.sha256, digest, 32);
	he.state = HE_STATE_LOADED;
	req->image_length = image_len;
	req->load_address = load_addr;
	req->load_size = load_size;
	memcpy(req->image_sha256, digest, 32);
	req->pcr = pcr;
	req->banks = banks;
	pr_info("loaded %s: %llu bytes at 0x%llx, measured into PCR %d (%u banks)\n",
		req->firmware, image_len, load_addr, pcr, banks);
out:
	release_firmware(fw);
	return rc;
}

/* ---- hand-over ------------------------------------------------------------------------ */

/* Memory map for the host nested tables: RAM as the kernel sees it, the reservation, MMIO between. */
static void he_build_map(struct he_handoff *ho)
{
	const u64 chunk = 2UL << 20, top = 4UL << 30;
	u64 a, res_end = reserved_base + reserved_size;
	u32 n = 0;

	for (a = 0; a < top || (a < (64UL << 30) && n < HE_MAX_RANGES - 1); a += chunk) {
		u64 kind;

		if (a >= reserved_base && a < res_end)
			kind = HE_MEM_RESERVED;
		else if (region_intersects(a, chunk, IORESOURCE_SYSTEM_RAM, IORES_DESC_NONE) != REGION_DISJOINT)
			kind = HE_MEM_RAM;
		else if (a < top)
			kind = HE_MEM_MMIO;
		else
			continue;
		if (n && ho->ranges[n - 1].kind == kind && ho->ranges[n - 1].start + ho->ranges[n - 1].size == a) {
			ho->ranges[n - 1].size += chunk;
		} else if (n < HE_MAX_RANGES) {
			ho->ranges[n].start = a;
			ho->ranges[n].size = chunk;
			ho->ranges[n].kind = kind;
			n++;
		}
	}
	ho->nranges = n;
}

/*
 * Host page tables in the reservation after the handoff page: the low half identity-maps the
 * first 8 GiB with 2 MiB pages (the image runs at its physical address); the kernel half is
 * Linux's, so the trampolines, this stack and the leave path stay mapped across the switch.
 */
static u64 he_build_host_tables(u64 *next_pa)
{
	u64 pa = *next_pa, pml4_pa = pa, pdpt_pa = pa + PAGE_SIZE;
	u64 *pml4 = he.virt + (pml4_pa - reserved_base);
	u64 *pdpt = he.virt + (pdpt_pa - reserved_base);
	u64 *linux_pgd = __va(__read_cr3() & PAGE_MASK & ~(1UL << 63));
	int g, i;

	memset(pml4, 0, 2 * PAGE_SIZE);
	for (i = 256; i < 512; i++)
		pml4[i] = linux_pgd[i];
	pml4[0] = pdpt_pa | 0x3; /* present, writable */
	for (g = 0; g < 8; g++) {
		u64 pd_pa = pa + (2 + g) * PAGE_SIZE;
		u64 *pd = he.virt + (pd_pa - reserved_base);

		for (i = 0; i < 512; i++)
			pd[i] = (((u64)g << 30) + ((u64)i << 21)) | 0x83; /* present, writable, 2 MiB */
		pdpt[g] = pd_pa | 0x3;
	}
	*next_pa = pa + 10 * PAGE_SIZE;
	return pml4_pa;
}

static void he_launch_cpu(void *unused)
{
	int cpu = smp_processor_id();

	he.cpu_result[cpu] = he_enter(HE_OP_LAUNCH, he.handoff_pa, cpu, he.host_cr3, he.entry_pa);
	he.cpu_on[cpu] = he.cpu_result[cpu] == 0;
}

static void he_disable_cpu(void *unused)
{
	int cpu = smp_processor_id();
	u64 a = 0, b = 0, c = 0, st;

	if (!he.cpu_on[cpu])
		return;
	st = he_vmmcall(HC_DISABLE, &a, &b, &c, 0, 0);
	he.cpu_result[cpu] = st;
	if (st == 0)
		he.cpu_on[cpu] = false;
}

static int he_disable_all(void)
{
	struct tpm_chip *chip;
	int cpu;

	if (!hv_cpus_on())
		return 0;
	chip = he_tpm_hold();
	on_each_cpu(he_disable_cpu, NULL, 1);
	he_tpm_release(chip);
	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		if (he.cpu_on[cpu]) {
			pr_err("CPU %d still runs under the hypervisor (status %ld)\n", cpu, he.cpu_result[cpu]);
			return -EBUSY;
		}
	he.state = HE_STATE_LOADED;
	if (he.pinned) {
		he.pinned = false;
		module_put(THIS_MODULE);
	}
	pr_info("disabled: every CPU handed back\n");
	return 0;
}

static int he_enable(void)
{
	struct tpm_chip *chip;
	struct he_handoff *ho;
	u64 next, init;
	int cpu, ok = 0;

	if (he.state == HE_STATE_ENABLED)
		return -EALREADY;
	if (he.state != HE_STATE_LOADED)
		return -ENOEXEC;
	if (he_cpu_unsupported()) {
		pr_err("%s\n", he_cpu_unsupported());
		return -ENODEV;
	}
	next = PAGE_ALIGN(he.load_addr + he.load_size);
	he.handoff_pa = next;
	ho = he.virt + (next - reserved_base);
	he.handoff = ho;
	memset(ho, 0, PAGE_SIZE);
	next += PAGE_SIZE;
	he.host_cr3 = he_build_host_tables(&next);
	/* per-CPU areas for every possible CPU id, then core's page-table pool (at least 1 MiB) */
	ho->percpu_base = next;
	ho->percpu_size = he.percpu_size;
	ho->cpu_slots = nr_cpu_ids;
	next += (u64)nr_cpu_ids * he.percpu_size;
	if (next + (1UL << 20) > reserved_base + hv_size) {
		pr_err("%u CPUs x 0x%llx bytes of per-CPU state do not fit in hv_size 0x%lx: raise hv_size and the memmap= region\n",
		       nr_cpu_ids, he.percpu_size, hv_size);
		return -ENOSPC;
	}
	ho->magic = HE_HANDOFF_MAGIC;
	ho->version = HE_HANDOFF_VERSION;
	ho->ncpus = num_online_cpus();
	ho->reserved_base = reserved_base;
	ho->reserved_size = reserved_size;
	ho->image_base = he.load_addr;
	ho->image_load_size = he.load_size;
	ho->pool_base = next;
	ho->hv_size = hv_size;
	ho->host_cr3 = he.host_cr3;
	ho->leave_tramp = (u64)he_leave_tramp;
	/* module text is vmalloc'ed: the image maps these pages in the address space it leaves through */
	ho->leave_tramp_pa[0] = page_to_phys(vmalloc_to_page((void *)he_leave_tramp));
	ho->leave_tramp_pa[1] = offset_in_page(he_leave_tramp) + 64 > PAGE_SIZE ?
		page_to_phys(vmalloc_to_page((void *)((u64)he_leave_tramp + PAGE_SIZE))) : 0;
	ho->pcr = pcr;
	memcpy(ho->image_sha256, he.sha256, 32);
	he_build_map(ho);

	chip = he_tpm_hold();
	cpu = get_cpu();
	init = he_enter(HE_OP_INIT, he.handoff_pa, cpu, he.host_cr3, he.entry_pa);
	put_cpu();
	he_tpm_release(chip);
	if (init) {
		pr_err("image init failed: %lld\n", init);
		return -EIO;
	}
	memset(he.cpu_result, 0, nr_cpu_ids * sizeof(*he.cpu_result));
	on_each_cpu(he_launch_cpu, NULL, 1);
	for_each_online_cpu(cpu) {
		if (he.cpu_result[cpu])
			pr_err("CPU %d: launch failed: %ld\n", cpu, he.cpu_result[cpu]);
		else
			ok++;
	}
	he.state = HE_STATE_ENABLED;
	if (ok != num_online_cpus()) {
		he_disable_all();
		he.state = HE_STATE_LOADED;
		return -EIO;
	}
	/* rmmod is refused (in use) until every CPU is handed back: the leave trampoline is module text */
	__module_get(THIS_MODULE);
	he.pinned = true;
	pr_info("enabled: %d CPUs run as guests of the hypervisor\n", ok);
	return 0;
}

/* ---- /dev/hyperenclave ---------------------------------------------------------------- */

static long he_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	void __user *up = (void __user *)arg;
	long rc = 0;

	bool shared = cmd == HE_IOC_HYPERCALL;

	/*
	 * CAP_SYS_RAWIO, as for /dev/mem and /dev/cpu/N/msr: every request here reaches physical
	 * memory (the reservation, contiguous hypercall buffers) or MSRs (EFER.SVME, VM_HSAVE_PA),
	 * and loading and enabling demote the running kernel. The boot unit keeps only this one
	 * (systemd/hyperenclave.service CapabilityBoundingSet=).
	 */
	if (!capable(CAP_SYS_RAWIO))
		return -EPERM;
	if (shared) {
		down_read(&he.calls);
	} else {
		mutex_lock(&he.lock);
		down_write(&he.calls);
	}
	switch (cmd) {
	case HE_IOC_VERSION: {
		struct he_version v;
		u64 a = HE_HYPERCALL_ABI_VERSION, b = 0, c = 0;

		if (copy_from_user(&v, up, sizeof(v))) {
			rc = -EFAULT;
			break;
		}
		if (v.ioctl_abi >> 16 != HE_IOCTL_ABI_VERSION >> 16) {
			rc = -EPROTO;
			break;
		}
		memset(&v, 0, sizeof(v));
		v.ioctl_abi = HE_IOCTL_ABI_VERSION;
		v.hypercall_abi = HE_HYPERCALL_ABI_VERSION;
		if (he.state == HE_STATE_ENABLED && he_vmmcall(HC_VERSION, &a, &b, &c, 0, 0) == 0)
			v.hv_abi = a;
		if (copy_to_user(up, &v, sizeof(v)))
			rc = -EFAULT;
		break;
	}
	case HE_IOC_LOAD: {
		struct he_load *l = kzalloc(sizeof(*l), GFP_KERNEL);

		if (!l) {
			rc = -ENOMEM;
			break;
		}
		if (copy_from_user(l, up, sizeof(*l)))
			rc = -EFAULT;
		if (!rc)
			rc = he_load(l);
		if (!rc && copy_to_user(up, l, sizeof(*l)))
			rc = -EFAULT;
		kfree(l);
		break;
	}
	case HE_IOC_ENABLE:
		rc = he_enable();
		break;
	case HE_IOC_DISABLE:
		rc = he.state == HE_STATE_ENABLED ? he_disable_all() : -ENOTCONN;
		break;
	case HE_IOC_STATUS: {
		struct he_status *s = kzalloc(sizeof(*s), GFP_KERNEL);
		u8 *buf = kzalloc(HC_STATUS_SIZE, GFP_KERNEL);

		if (!s || !buf) {
			kfree(s);
			kfree(buf);
			rc = -ENOMEM;
			break;
		}
		s->ioctl_abi = HE_IOCTL_ABI_VERSION;
		s->state = he.state;
		s->reserved_base = reserved_base;
		s->reserved_size = reserved_size;
		s->image_length = he.image_length;
		memcpy(s->image_sha256, he.sha256, 32);
		s->pcr = pcr;
		s->cpus_enabled = hv_cpus_on();
		if (he.state == HE_STATE_ENABLED) {
			u64 a = __pa(buf), b = HC_STATUS_SIZE, c = 0;

			if (he_vmmcall(HC_STATUS, &a, &b, &c, 0, 0) == 0 && a == HC_STATUS_SIZE) {
				memcpy(s->hv_status, buf, HC_STATUS_SIZE);
				s->hv_status_len = HC_STATUS_SIZE;
			}
		}
		if (copy_to_user(up, s, sizeof(*s)))
			rc = -EFAULT;
		kfree(s);
		kfree(buf);
		break;
	}
	case HE_IOC_HYPERCALL: {
		struct he_hypercall h;
		u64 *args[5];
		void *page = NULL;
		u32 budget_ms, barg;

		if (he.state != HE_STATE_ENABLED) {
			rc = -ENOTCONN;
			break;
		}
		if (copy_from_user(&h, up, sizeof(h))) {
			rc = -EFAULT;
			break;
		}
		if (h.rax == HC_DISABLE || h.rax == HC_ENABLE) {
			rc = -EINVAL; /* the driver owns the CPU hand-over */
			break;
		}
		args[0] = &h.rdi, args[1] = &h.rsi, args[2] = &h.rdx, args[3] = &h.rcx, args[4] = &h.r8;
		/* 1.4: bits 31:16 of buf_arg = the resume budget of ENCLAVE_CALL / ENCLAVE_OCALL_RETURN */
		budget_ms = h.buf_arg >> HE_RESUME_BUDGET_SHIFT;
		barg = h.buf_arg & 0xffffu;
		if (budget_ms && h.rax != HC_ENCLAVE_CALL && h.rax != HC_ENCLAVE_OCALL_RETURN) {
			rc = -EINVAL;
			break;
		}
		if (h.buf_len) {
			/* 1.0: buf_arg names one argument; 1.1: HE_BUF_ARG_MASK with a bit per argument whose
			 * value is an offset into the buffer (several buffers packed into one page). */
			u32 mask = barg & HE_BUF_ARG_MASK ? barg & 0x1f :
				   barg >= 1 && barg <= 5 ? 1u << (barg - 1) : 0;
			int i;

			if (h.buf_len > HE_HYPERCALL_BUF_MAX || !mask || (barg & HE_BUF_ARG_MASK && barg & ~(HE_BUF_ARG_MASK | 0x1fu))) {
				rc = -EINVAL;
				break;
			}
			for (i = 0; i < 5; i++)
				if (barg & HE_BUF_ARG_MASK && mask & (1u << i) && *args[i] >= h.buf_len)
					rc = -EINVAL;
			if (rc)
				break;
			/* physically contiguous: the hypervisor sees one buffer at one physical address */
			page = (void *)__get_free_pages(GFP_KERNEL | __GFP_ZERO, HE_HYPERCALL_BUF_ORDER);
			if (!page) {
				rc = -ENOMEM;
				break;
			}
			if (copy_from_user(page, u64_to_user_ptr(h.buf), h.buf_len)) {
				free_pages((unsigned long)page, HE_HYPERCALL_BUF_ORDER);
				rc = -EFAULT;
				break;
			}
			for (i = 0; i < 5; i++)
				if (mask & (1u << i))
					*args[i] = __pa(page) + (barg & HE_BUF_ARG_MASK ? *args[i] : 0);
		}
		if (h.rax == HC_TRUST_INIT) {
			struct tpm_chip *chip = he_tpm_hold();

			h.rax = he_vmmcall(h.rax, &h.rdi, &h.rsi, &h.rdx, h.rcx, h.r8);
			he_tpm_release(chip);
		} else if (budget_ms) {
			/*
			 * 1.4: an interrupted ECALL is resumed here, not by one ioctl per timer tick: the
			 * same thread (id, TCS) with the same buffer page, until it completes, makes an
			 * OCALL or faults, a signal is pending, or the budget is spent (user space then
			 * sees ENCLAVE_INTERRUPTED and may resume or abort). R8 out = resumes made.
			 */
			u64 id = h.rdi, tcs = h.rsi, bufpa = h.rcx, nr = h.rax, r8v = h.r8, resumes = 0;
			unsigned long deadline = jiffies + msecs_to_jiffies(budget_ms);

			for (;;) {
				h.rax = he_vmmcall(nr, &h.rdi, &h.rsi, &h.rdx, h.rcx, r8v);
				if (h.rax != HC_ST_ENCLAVE_INTERRUPTED || signal_pending(current) || time_after(jiffies, deadline))
					break;
				cond_resched();
				resumes++;
				/* ENCLAVE_CALL on an interrupted thread resumes it (number and length unused) */
				nr = HC_ENCLAVE_CALL;
				h.rdi = id, h.rsi = tcs, h.rdx = 0, h.rcx = bufpa, r8v = 0;
			}
			h.r8 = resumes;
		} else {
			h.rax = he_vmmcall(h.rax, &h.rdi, &h.rsi, &h.rdx, h.rcx, h.r8);
		}
		if (page) {
			if (copy_to_user(u64_to_user_ptr(h.buf), page, h.buf_len))
				rc = -EFAULT;
			free_pages((unsigned long)page, HE_HYPERCALL_BUF_ORDER);
		}
		if (!rc && copy_to_user(up, &h, sizeof(h)))
			rc = -EFAULT;
		break;
	}
	case HE_IOC_PROBE: {
		struct he_probe p;

		if (copy_from_user(&p, up, sizeof(p))) {
			rc = -EFAULT;
			break;
		}
		if (p.target == HE_PROBE_TPM_TIS) {
			/* one byte of the TIS registers, e.g. TPM_ACCESS (no side effect on read) */
			void __iomem *tis;

			if (p.offset >= 5 * PAGE_SIZE) {
				rc = -EINVAL;
				break;
			}
			tis = ioremap(0xfed40000UL + (p.offset & PAGE_MASK), PAGE_SIZE);
			if (!tis) {
				rc = -ENOMEM;
				break;
			}
			p.value = 0;
			p.result = copy_from_kernel_nofault(&p.value, (void __force *)tis + offset_in_page(p.offset), 1);
			iounmap(tis);
			if (p.result)
				p.value = 0;
			if (copy_to_user(up, &p, sizeof(p)))
				rc = -EFAULT;
			break;
		}
		if (p.target != HE_PROBE_RESERVED || p.offset > reserved_size - 8 || (p.offset & 7)) {
			rc = -EINVAL;
			break;
		}
		p.value = 0;
		p.result = copy_from_kernel_nofault(&p.value, he.virt + p.offset, 8);
		if (p.result)
			p.value = 0;
		if (copy_to_user(up, &p, sizeof(p)))
			rc = -EFAULT;
		break;
	}
	case HE_IOC_TPM_FIFO: {
		struct he_tpm_fifo t;

		if (copy_from_user(&t, up, sizeof(t))) {
			rc = -EFAULT;
			break;
		}
		t.size = 0;
		t.zero_tail = 0;
		memset(t.header, 0, sizeof(t.header));
		memset(t.reserved, 0, sizeof(t.reserved));
		t.result = he_tpm_fifo(&t);
		if (copy_to_user(up, &t, sizeof(t)))
			rc = -EFAULT;
		break;
	}
	default:
		rc = -ENOTTY;
	}
	if (shared) {
		up_read(&he.calls);
	} else {
		up_write(&he.calls);
		mutex_unlock(&he.lock);
	}
	return rc;
}

static const struct file_operations he_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = he_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice he_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "hyperenclave",
	.fops = &he_fops,
	.mode = 0600,
};

static int he_reboot(struct notifier_block *nb, unsigned long action, void *data)
{
	mutex_lock(&he.lock);
	down_write(&he.calls);
	if (he.state == HE_STATE_ENABLED)
		he_disable_all();
	up_write(&he.calls);
	mutex_unlock(&he.lock);
	return NOTIFY_DONE;
}

static struct notifier_block he_reboot_nb = { .notifier_call = he_reboot };

static int __init he_init(void)
{
	int rc;

	mutex_init(&he.lock);
	init_rwsem(&he.calls);
	he_intel = boot_cpu_data.x86_vendor == X86_VENDOR_INTEL;
	if (!reserved_base || !reserved_size || (reserved_base | reserved_size) & (PAGE_SIZE - 1)) {
		pr_err("reserved_base/reserved_size must name the page-aligned memmap=SIZE$BASE region\n");
		return -EINVAL;
	}
	if (hv_size >= reserved_size || (hv_size & (PAGE_SIZE - 1))) {
		pr_err("hv_size 0x%lx must be page-aligned and smaller than reserved_size 0x%lx\n", hv_size, reserved_size);
		return -EINVAL;
	}
	if (pcr < 8 || (pcr > 16 && pcr != 23)) {
		pr_err("pcr %d: use 8-16 or 23 (0-7 belong to firmware, 17-22 to the dynamic launch)\n", pcr);
		return -EINVAL;
	}
	if (region_intersects(reserved_base, reserved_size, IORESOURCE_SYSTEM_RAM, IORES_DESC_NONE) != REGION_DISJOINT) {
		pr_err("0x%lx+0x%lx overlaps System RAM: boot with memmap=0x%lx$0x%lx\n",
		       reserved_base, reserved_size, reserved_size, reserved_base);
		return -EINVAL;
	}
	he.cpu_result = kcalloc(nr_cpu_ids, sizeof(*he.cpu_result), GFP_KERNEL);
	he.cpu_on = kcalloc(nr_cpu_ids, sizeof(*he.cpu_on), GFP_KERNEL);
	if (!he.cpu_result || !he.cpu_on) {
		kfree(he.cpu_result);
		kfree(he.cpu_on);
		return -ENOMEM;
	}
	he.virt = memremap(reserved_base, reserved_size, MEMREMAP_WB);
	if (!he.virt) {
		kfree(he.cpu_result);
		kfree(he.cpu_on);
		pr_err("memremap of 0x%lx+0x%lx failed\n", reserved_base, reserved_size);
		return -ENOMEM;
	}
	rc = misc_register(&he_misc);
	if (rc) {
		memunmap(he.virt);
		kfree(he.cpu_result);
		kfree(he.cpu_on);
		return rc;
	}
	register_reboot_notifier(&he_reboot_nb);
	pr_info("ready: reserved 0x%lx+0x%lx (hypervisor 0x%lx), PCR %d, ioctl ABI %u.%u\n", reserved_base,
		reserved_size, hv_size, pcr, HE_IOCTL_ABI_VERSION >> 16, HE_IOCTL_ABI_VERSION & 0xffff);
	return 0;
}

static void __exit he_exit(void)
{
	unregister_reboot_notifier(&he_reboot_nb);
	mutex_lock(&he.lock);
	down_write(&he.calls);
	if (he.state == HE_STATE_ENABLED && he_disable_all())
		pr_emerg("CPUs still under the hypervisor at unload\n");
	up_write(&he.calls);
	mutex_unlock(&he.lock);
	misc_deregister(&he_misc);
	memunmap(he.virt);
	if (!hv_cpus_on()) { /* CPUs still on the hypervisor keep their state: leak it rather than free it */
		kfree(he.cpu_result);
		kfree(he.cpu_on);
	}
}

module_init(he_init);
module_exit(he_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("HyperEnclave loader: measured late launch of the SVM hypervisor");
