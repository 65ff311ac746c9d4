// SPDX-License-Identifier: GPL-2.0
/*
 * hectl: minimal user-space client of /dev/hyperenclave for the system tier (the initramfs has
 * no Node). One line of output per command; exit status 0 on success.
 *   hectl version | status | load [NAME] | enable | disable | cpuid | hypercall-status | probe | probe-tpm
 *         | tpm-fifo-arm | tpm-fifo-reread | enclave | trust-init BLOBFILE | enclave-run PLAN FN INPUT
 * load without NAME lets the driver pick the image of this CPU's vendor. enclave-run replays a
 * load plan written by test/system-vmx/plan.mjs (ECREATE, EADD/EEXTEND, EINIT), checks the
 * hypervisor's MRENCLAVE against the plan's, runs ECALL FN with INPUT on the first TCS and prints
 * the output in hex, then destroys the enclave.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cpuid.h>
#include <stdint.h>
#include "hyperenclave_hypercall.h"
#include "hyperenclave_ioctl.h"

static int dev(void)
{
	int fd = open("/dev/hyperenclave", O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "hectl: /dev/hyperenclave: %s\n", strerror(errno));
		exit(1);
	}
	return fd;
}

static void hex(const unsigned char *b, int n, char *out)
{
	for (int i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static int do_ioctl(int fd, unsigned long cmd, void *arg, const char *what)
{
	if (ioctl(fd, cmd, arg) < 0) {
		fprintf(stderr, "hectl: %s: %s\n", what, strerror(errno));
		return 1;
	}
	return 0;
}

/* the STATUS hypercall record the driver copied (all zero when the hypervisor is not enabled) */
static struct he_hv_status hv(const struct he_status *s)
{
	struct he_hv_status r;
	memset(&r, 0, sizeof(r));
	if (s->hv_status_len >= sizeof(r))
		memcpy(&r, s->hv_status, sizeof(r));
	return r;
}

static unsigned long long le64(const unsigned char *p)
{
	unsigned long long v;
	memcpy(&v, p, 8);
	return v;
}

static int call(int fd, struct he_hypercall *c, const char *what)
{
	if (do_ioctl(fd, HE_IOC_HYPERCALL, c, what))
		return 1;
	if (c->rax) {
		printf("%s status=%llu\n", what, (unsigned long long)c->rax);
		return 1;
	}
	return 0;
}

/* plan header: magic, SECS, MRENCLAVE, SIGSTRUCT, ntcs u32, npages u32 (test/system-vmx/plan.mjs) */
#define PLAN_HEAD (8 + HC_SECS_SIZE + 32 + HC_SIGSTRUCT_SIZE + 8)

static int enclave_run(int fd, const char *file, unsigned long long fn, const char *input)
{
	static unsigned char plan[4 << 20];
	static unsigned char buf[4096];
	struct he_enclave_info info;
	FILE *f = fopen(file, "rb");
	size_t len, in_len = strlen(input);
	unsigned int ntcs, npages, i;
	int rc = 1, resumes = 0;

	if (!f) {
		fprintf(stderr, "hectl: %s: %s\n", file, strerror(errno));
		return 1;
	}
	len = fread(plan, 1, sizeof(plan), f);
	fclose(f);
	if (len < PLAN_HEAD || memcmp(plan, "HEPLAN1", 8)) {
		fprintf(stderr, "hectl: %s: not a load plan (magic at offset 0)\n", file);
		return 1;
	}
	memcpy(&ntcs, plan + PLAN_HEAD - 8, 4);
	memcpy(&npages, plan + PLAN_HEAD - 4, 4);
	if (ntcs == 0 || len != PLAN_HEAD + 8ULL * ntcs + (24ULL + 4096) * npages) {
		fprintf(stderr, "hectl: %s: %u TCS and %u pages do not match the file size %zu (offset %d)\n", file, ntcs, npages, len, PLAN_HEAD - 8);
		return 1;
	}
	const unsigned char *secs = plan + 8, *mr = secs + HC_SECS_SIZE, *sig = mr + 32;
	unsigned long long tcs = le64(plan + PLAN_HEAD);
	const unsigned char *pages = plan + PLAN_HEAD + 8ULL * ntcs;
	struct he_hypercall c = { .rax = HC_ENCLAVE_CREATE, .buf = (uintptr_t)secs, .buf_len = HC_SECS_SIZE, .buf_arg = 1 };
	if (call(fd, &c, "ENCLAVE_CREATE"))
		return 1;
	unsigned long long id = c.rdi;
	for (i = 0; i < npages; i++) {
		const unsigned char *p = pages + (24 + 4096) * (size_t)i;
		unsigned long long off = le64(p);
		struct he_hypercall a = { .rax = HC_ENCLAVE_ADD, .rdi = id, .rsi = off, .rcx = le64(p + 8), .buf = (uintptr_t)(p + 24), .buf_len = HC_PAGE_SIZE, .buf_arg = 3 };
		if (call(fd, &a, "ENCLAVE_ADD"))
			goto out;
		for (unsigned long long ch = 0; le64(p + 16) && ch < 4096; ch += 256) {
			struct he_hypercall x = { .rax = HC_ENCLAVE_EXTEND, .rdi = id, .rsi = off + ch };
			if (call(fd, &x, "ENCLAVE_EXTEND"))
				goto out;
		}
	}
	struct he_hypercall in = { .rax = HC_ENCLAVE_INIT, .rdi = id, .buf = (uintptr_t)sig, .buf_len = HC_SIGSTRUCT_SIZE, .buf_arg = 2 };
	if (call(fd, &in, "ENCLAVE_INIT"))
		goto out;
	struct he_hypercall q = { .rax = HC_ENCLAVE_INFO, .rdi = id, .rdx = sizeof(info), .buf = (uintptr_t)&info, .buf_len = sizeof(info), .buf_arg = 2 };
	if (call(fd, &q, "ENCLAVE_INFO"))
		goto out;
	if (memcmp(info.mrenclave, mr, sizeof(info.mrenclave))) {
		printf("enclave id=%llu: the hypervisor's MRENCLAVE differs from the plan's\n", id);
		goto out;
	}
	if (in_len > sizeof(buf))
		in_len = sizeof(buf);
	for (;;) {
		memset(buf, 0, sizeof(buf));
		memcpy(buf, input, in_len);
		struct he_hypercall e = { .rax = HC_ENCLAVE_CALL, .rdi = id, .rsi = tcs, .rdx = fn, .r8 = in_len, .buf = (uintptr_t)buf, .buf_len = sizeof(buf), .buf_arg = 4 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &e, "ENCLAVE_CALL"))
			goto out;
		if (e.rax == HC_ST_ENCLAVE_INTERRUPTED && resumes < 1000) {
			resumes++;
			continue;
		}
		if (e.rax) {
			printf("ENCLAVE_CALL status=%llu after %d resumes\n", (unsigned long long)e.rax, resumes);
			goto out;
		}
		if (e.rdi & HC_ECALL_ERROR || e.rdi > sizeof(buf)) {
			printf("ECALL %llu returned error 0x%llx\n", fn, (unsigned long long)e.rdi);
			goto out;
		}
		printf("enclave id=%llu pages=%u mrenclave-match=1 ecall=%llu resumes=%d output=", id, npages, fn, resumes);
		for (i = 0; i < e.rdi; i++)
			printf("%02x", buf[i]);
		printf("\n");
		rc = 0;
		break;
	}
out:;
	struct he_hypercall d = { .rax = HC_ENCLAVE_DESTROY, .rdi = id };
	if (call(fd, &d, "ENCLAVE_DESTROY"))
		rc = 1;
	return rc;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";

	if (!strcmp(cmd, "cpuid")) {
		unsigned int a, b, c, d, a1, b1, c1, d1;
		char sig[13];
		__cpuid(HC_CPUID_LEAF_SIGNATURE, a, b, c, d);
		memcpy(sig, &b, 4), memcpy(sig + 4, &c, 4), memcpy(sig + 8, &d, 4), sig[12] = 0;
		__cpuid(1, a1, b1, c1, d1);
		for (int i = 0; i < 12; i++)
			if (sig[i] < 0x20 || sig[i] > 0x7e)
				sig[i] = '.';
		printf("leaf 0x%x: max=0x%x signature=\"%s\" leaf1.ecx.hypervisor=%u\n", HC_CPUID_LEAF_SIGNATURE, a, sig, c1 >> 31);
		return strcmp(sig, HC_CPUID_SIGNATURE) == 0 && (c1 >> 31) ? 0 : 1;
	}
	int fd = dev();
	if (!strcmp(cmd, "version")) {
		struct he_version v = { .ioctl_abi = HE_IOCTL_ABI_VERSION };
		if (do_ioctl(fd, HE_IOC_VERSION, &v, "version"))
			return 1;
		printf("ioctl-abi=%u.%u hypercall-abi=%u.%u hypervisor=%u.%u\n", v.ioctl_abi >> 16, v.ioctl_abi & 0xffff,
		       v.hypercall_abi >> 16, v.hypercall_abi & 0xffff, v.hv_abi >> 16, v.hv_abi & 0xffff);
		return 0;
	}
	if (!strcmp(cmd, "status")) {
		struct he_status s;
		char h[65];
		static const char *st[] = { "empty", "loaded", "enabled" };
		if (do_ioctl(fd, HE_IOC_STATUS, &s, "status"))
			return 1;
		hex(s.image_sha256, 32, h);
		printf("state=%s reserved=0x%llx+0x%llx image=%llu sha256=%.16s pcr=%u cpus=%u", s.state < 3 ? st[s.state] : "?",
		       (unsigned long long)s.reserved_base, (unsigned long long)s.reserved_size,
		       (unsigned long long)s.image_length, h, s.pcr, s.cpus_enabled);
		if (s.hv_status_len)
			printf(" hv.flags=0x%llx hv.hypercalls=%llu hv.faults.hypervisor=%llu hv.faults.outside=%llu hv.pool=%llu/%llu",
			       (unsigned long long)hv(&s).flags, (unsigned long long)hv(&s).hypercalls,
			       (unsigned long long)hv(&s).faults_hypervisor, (unsigned long long)hv(&s).faults_unmapped,
			       (unsigned long long)hv(&s).pool_frames_used, (unsigned long long)hv(&s).pool_frames_total);
		if (s.hv_status_len >= sizeof(struct he_hv_status))
			printf(" dma=%s dma.faults=%llu iommu=0x%llx", hv(&s).flags & HC_STATUS_DMA_PROTECTED ? "on" : "off",
			       (unsigned long long)hv(&s).dma_faults, (unsigned long long)hv(&s).iommu_base);
		printf("\n");
		return 0;
	}
	if (!strcmp(cmd, "load")) {
		struct he_load l;
		char h[65];
		memset(&l, 0, sizeof(l));
		snprintf(l.firmware, sizeof(l.firmware), "%s", argc > 2 ? argv[2] : "");
		if (do_ioctl(fd, HE_IOC_LOAD, &l, "load"))
			return 1;
		hex(l.image_sha256, 32, h);
		printf("image=%llu bytes at 0x%llx load-size=0x%llx sha256=%s pcr=%u banks=%u\n",
		       (unsigned long long)l.image_length, (unsigned long long)l.load_address,
		       (unsigned long long)l.load_size, h, l.pcr, l.banks);
		return 0;
	}
	if (!strcmp(cmd, "enable") || !strcmp(cmd, "disable")) {
		int en = cmd[0] == 'e';
		if (do_ioctl(fd, en ? HE_IOC_ENABLE : HE_IOC_DISABLE, NULL, cmd))
			return 1;
		printf("%s\n", en ? "enabled" : "disabled");
		return 0;
	}
	if (!strcmp(cmd, "hypercall-status")) {
		/* VERSION through VMMCALL: proves the call reaches hypervisor/core's dispatch */
		struct he_hypercall h = { .rax = HC_VERSION, .rdi = HC_ABI_VERSION };
		struct he_status s;
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &h, "hypercall"))
			return 1;
		if (h.rax != HC_ST_SUCCESS || h.rdi != HC_ABI_VERSION) {
			printf("VERSION hypercall: status=%llu rdi=0x%llx\n", (unsigned long long)h.rax, (unsigned long long)h.rdi);
			return 1;
		}
		if (do_ioctl(fd, HE_IOC_STATUS, &s, "status"))
			return 1;
		if (!s.hv_status_len) {
			printf("STATUS hypercall returned nothing\n");
			return 1;
		}
		printf("VERSION=0x%llx STATUS: flags=0x%llx enabled=%llu hypercalls=%llu\n", (unsigned long long)h.rdi,
		       (unsigned long long)hv(&s).flags, (unsigned long long)(hv(&s).flags & HC_STATUS_ENABLED),
		       (unsigned long long)hv(&s).hypercalls);
		return (hv(&s).flags & HC_STATUS_ENABLED) ? 0 : 1;
	}
	if (!strcmp(cmd, "probe")) {
		/* read the image's first bytes through Linux's own mapping: nested paging must refuse */
		struct he_probe p = { .offset = 0 };
		struct he_status before, after;
		if (do_ioctl(fd, HE_IOC_STATUS, &before, "status") || do_ioctl(fd, HE_IOC_PROBE, &p, "probe") ||
		    do_ioctl(fd, HE_IOC_STATUS, &after, "status"))
			return 1;
		unsigned long long f0 = hv(&before).faults_hypervisor;
		unsigned long long f1 = hv(&after).faults_hypervisor;
		printf("read of reserved+0: result=%d value=0x%llx hypervisor-faults %llu -> %llu\n", p.result,
		       (unsigned long long)p.value, f0, f1);
		return p.result != 0 && f1 == f0 + 1 ? 0 : 1;
	}
	if (!strcmp(cmd, "probe-tpm")) {
		/* TPM_ACCESS of localities 0, 2 and 4 through Linux's own mapping: after enable the
		 * host keeps locality 0; the pages of 1-4 are absent from its nested tables */
		struct he_probe p[3] = { { .offset = 0x0000, .target = HE_PROBE_TPM_TIS },
					 { .offset = 0x2000, .target = HE_PROBE_TPM_TIS },
					 { .offset = 0x4000, .target = HE_PROBE_TPM_TIS } };
		struct he_status before, after;
		if (do_ioctl(fd, HE_IOC_STATUS, &before, "status"))
			return 1;
		for (int i = 0; i < 3; i++)
			if (do_ioctl(fd, HE_IOC_PROBE, &p[i], "probe"))
				return 1;
		if (do_ioctl(fd, HE_IOC_STATUS, &after, "status"))
			return 1;
		unsigned long long f0 = hv(&before).faults_unmapped;
		unsigned long long f1 = hv(&after).faults_unmapped;
		printf("TPM_ACCESS locality 0: result=%d value=0x%02llx; locality 2: result=%d; locality 4: result=%d; faults outside the map %llu -> %llu\n",
		       p[0].result, (unsigned long long)p[0].value, p[1].result, p[2].result, f0, f1);
		return p[0].result == 0 && (p[0].value & 0x80) && p[1].result != 0 && p[2].result != 0 && f1 == f0 + 2 ? 0 : 1;
	}
	if (!strcmp(cmd, "tpm-fifo-arm") || !strcmp(cmd, "tpm-fifo-reread")) {
		/* the hypervisor's FIFO scrub, tested from locality 0 (hyperenclave_ioctl.h) */
		int arm = !strcmp(cmd, "tpm-fifo-arm");
		struct he_tpm_fifo t = { .op = arm ? HE_TPM_FIFO_ARM : HE_TPM_FIFO_REREAD };
		char h[21];
		if (do_ioctl(fd, HE_IOC_TPM_FIFO, &t, cmd))
			return 1;
		hex(t.header, 10, h);
		if (arm) {
			printf("locality 0: GetRandom(8) answered, header %s, left in the completion state: result=%d\n", h, t.result);
			return t.result == 0 && t.size == 20 ? 0 : 1;
		}
		printf("locality 0 responseRetry re-read: result=%d header %s size %u, bytes after the header %s\n", t.result, h,
		       t.size, t.zero_tail ? "all zero" : "NOT zero");
		return t.result == 0 ? 0 : 1;
	}
	if (!strcmp(cmd, "trust-init") && argc > 2) {
		/* TRUST_INIT with the sealed root blob in BLOBFILE (missing or empty: none); a new blob the
		 * hypervisor returns replaces the file atomically. One buffer (ioctl 1.2): the blob at
		 * offset 0, the output after it with HC_TRUST_BLOB_CAPACITY bytes of capacity. */
		enum { CAP = HC_TRUST_BLOB_CAPACITY };
		static unsigned char buf[2 * CAP];
		_Static_assert(sizeof(buf) <= HE_HYPERCALL_BUF_MAX, "TRUST_INIT buffer");
		size_t len = 0;
		FILE *f = fopen(argv[2], "rb");
		if (f) {
			len = fread(buf, 1, CAP, f);
			int more = fgetc(f) != EOF;
			fclose(f);
			if (more) {
				fprintf(stderr, "hectl: %s: larger than %d bytes\n", argv[2], CAP);
				return 1;
			}
		}
		/* buf_arg bits: bit 0 = RDI (the blob), bit 2 = RDX (the output) are offsets into buf */
		struct he_hypercall h = { .rax = HC_TRUST_INIT, .rdi = 0, .rsi = len, .rdx = CAP, .rcx = CAP,
					  .buf = (uintptr_t)buf, .buf_len = sizeof(buf),
					  .buf_arg = HE_BUF_ARG_MASK | (len ? 0x1 : 0) | 0x4 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &h, "TRUST_INIT"))
			return 1;
		if (h.rax) {
			printf("TRUST_INIT: blob in %zu bytes: status=%llu\n", len, (unsigned long long)h.rax);
			return 1;
		}
		if (h.rdi > CAP) {
			printf("TRUST_INIT: new blob of %llu bytes exceeds the %d-byte output\n", (unsigned long long)h.rdi, CAP);
			return 1;
		}
		if (h.rdi) {
			char tmp[512];
			snprintf(tmp, sizeof(tmp), "%s.tmp", argv[2]);
			FILE *o = fopen(tmp, "wb");
			if (!o || fwrite(buf + CAP, 1, h.rdi, o) != h.rdi || fflush(o) || fsync(fileno(o)) || fclose(o) ||
			    rename(tmp, argv[2])) {
				fprintf(stderr, "hectl: writing %s: %s\n", argv[2], strerror(errno));
				return 1;
			}
		}
		printf("TRUST_INIT: blob in %zu bytes, new blob %llu bytes, flags 0x%llx (created %d, pcr-extended %d), HAK PCR %llu\n",
		       len, (unsigned long long)h.rdi, (unsigned long long)h.rsi, !!(h.rsi & HC_TRUST_CREATED),
		       !!(h.rsi & HC_TRUST_PCR_EXTENDED),
		       (unsigned long long)h.rdx);
		return 0;
	}
	if (!strcmp(cmd, "enclave")) {
		/* ECREATE, EADD of one page, ENCLAVE_INFO, a host read of its EPC page (must be refused
		 * as enclave memory), ENCLAVE_DESTROY: all served by the hypervisor through VMMCALL */
		struct he_secs secs = { .size = 0x10000, .base = 0x10000, .ssa_frame_size = 1,
					.attributes = HC_ATTR_MODE64BIT, .xfrm = 3 };
		struct he_enclave_info info;
		unsigned char page[HC_PAGE_SIZE];
		unsigned int pages;
		struct he_status s0, s1;
		struct he_hypercall c = { .rax = HC_ENCLAVE_CREATE, .buf = (uintptr_t)&secs, .buf_len = sizeof(secs), .buf_arg = 1 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &c, "ENCLAVE_CREATE") || c.rax) {
			printf("ENCLAVE_CREATE status=%llu\n", (unsigned long long)c.rax);
			return 1;
		}
		unsigned long long id = c.rdi;
		memset(page, 0x5a, sizeof(page));
		struct he_hypercall a = { .rax = HC_ENCLAVE_ADD, .rdi = id, .rsi = 0,
					  .rcx = HC_SECINFO_PT_REG | HC_SECINFO_R | HC_SECINFO_W,
					  .buf = (uintptr_t)page, .buf_len = sizeof(page), .buf_arg = 3 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &a, "ENCLAVE_ADD") || a.rax) {
			printf("ENCLAVE_ADD status=%llu\n", (unsigned long long)a.rax);
			return 1;
		}
		struct he_hypercall i = { .rax = HC_ENCLAVE_INFO, .rdi = id, .rdx = sizeof(info), .buf = (uintptr_t)&info,
					  .buf_len = sizeof(info), .buf_arg = 2 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &i, "ENCLAVE_INFO") || i.rax) {
			printf("ENCLAVE_INFO status=%llu\n", (unsigned long long)i.rax);
			return 1;
		}
		pages = info.epc_pages;
		if (do_ioctl(fd, HE_IOC_STATUS, &s0, "status") || !s0.hv_status_len)
			return 1;
		struct he_probe p = { .offset = hv(&s0).hypervisor_bytes }; /* first EPC page: the enclave's SECS */
		if (do_ioctl(fd, HE_IOC_PROBE, &p, "probe") || do_ioctl(fd, HE_IOC_STATUS, &s1, "status"))
			return 1;
		struct he_hypercall d = { .rax = HC_ENCLAVE_DESTROY, .rdi = id };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &d, "ENCLAVE_DESTROY") || d.rax) {
			printf("ENCLAVE_DESTROY status=%llu\n", (unsigned long long)d.rax);
			return 1;
		}
		printf("enclave id=%llu epc-pages=%u; host read of EPC at reserved+0x%llx: result=%d enclave-faults %llu -> %llu; destroy returned %llu pages\n",
		       id, pages, (unsigned long long)p.offset, p.result, (unsigned long long)hv(&s0).faults_enclave,
		       (unsigned long long)hv(&s1).faults_enclave, (unsigned long long)d.rdi);
		return pages == 2 && d.rdi == 2 && p.result != 0 && hv(&s1).faults_enclave == hv(&s0).faults_enclave + 1 ? 0 : 1;
	}
	if (!strcmp(cmd, "enclave-run") && argc > 4)
		return enclave_run(fd, argv[2], strtoull(argv[3], NULL, 0), argv[4]);
	fprintf(stderr, "usage: hectl version|status|load [NAME]|enable|disable|cpuid|hypercall-status|probe|probe-tpm|tpm-fifo-arm|tpm-fifo-reread|enclave|trust-init BLOBFILE|enclave-run PLAN FN INPUT\n");
	return 2;
}
