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

static unsigned long long word(const struct he_status *s, int i)
{
	unsigned long long v;
	memcpy(&v, s->hv_status + 8 * i, 8);
	return v;
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

#define PLAN_SIG 1808
#define PLAN_HEAD (8 + 64 + 32 + PLAN_SIG + 8)
#define HC_ENCLAVE_INTERRUPTED 34

static int enclave_run(int fd, const char *file, unsigned long long fn, const char *input)
{
	static unsigned char plan[4 << 20];
	static unsigned char buf[4096];
	unsigned char info[128];
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
	const unsigned char *secs = plan + 8, *mr = plan + 72, *sig = plan + 104;
	unsigned long long tcs = le64(plan + PLAN_HEAD);
	const unsigned char *pages = plan + PLAN_HEAD + 8ULL * ntcs;
	struct he_hypercall c = { .rax = 0x10, .buf = (uintptr_t)secs, .buf_len = 64, .buf_arg = 1 };
	if (call(fd, &c, "ENCLAVE_CREATE"))
		return 1;
	unsigned long long id = c.rdi;
	for (i = 0; i < npages; i++) {
		const unsigned char *p = pages + (24 + 4096) * (size_t)i;
		unsigned long long off = le64(p);
		struct he_hypercall a = { .rax = 0x11, .rdi = id, .rsi = off, .rcx = le64(p + 8), .buf = (uintptr_t)(p + 24), .buf_len = 4096, .buf_arg = 3 };
		if (call(fd, &a, "ENCLAVE_ADD"))
			goto out;
		for (unsigned long long ch = 0; le64(p + 16) && ch < 4096; ch += 256) {
			struct he_hypercall x = { .rax = 0x12, .rdi = id, .rsi = off + ch };
			if (call(fd, &x, "ENCLAVE_EXTEND"))
				goto out;
		}
	}
	struct he_hypercall in = { .rax = 0x13, .rdi = id, .buf = (uintptr_t)sig, .buf_len = PLAN_SIG, .buf_arg = 2 };
	if (call(fd, &in, "ENCLAVE_INIT"))
		goto out;
	struct he_hypercall q = { .rax = 0x17, .rdi = id, .rdx = sizeof(info), .buf = (uintptr_t)info, .buf_len = sizeof(info), .buf_arg = 2 };
	if (call(fd, &q, "ENCLAVE_INFO"))
		goto out;
	if (memcmp(info + 40, mr, 32)) {
		printf("enclave id=%llu: the hypervisor's MRENCLAVE differs from the plan's\n", id);
		goto out;
	}
	if (in_len > sizeof(buf))
		in_len = sizeof(buf);
	for (;;) {
		memset(buf, 0, sizeof(buf));
		memcpy(buf, input, in_len);
		struct he_hypercall e = { .rax = 0x18, .rdi = id, .rsi = tcs, .rdx = fn, .r8 = in_len, .buf = (uintptr_t)buf, .buf_len = sizeof(buf), .buf_arg = 4 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &e, "ENCLAVE_CALL"))
			goto out;
		if (e.rax == HC_ENCLAVE_INTERRUPTED && resumes < 1000) {
			resumes++;
			continue;
		}
		if (e.rax) {
			printf("ENCLAVE_CALL status=%llu after %d resumes\n", (unsigned long long)e.rax, resumes);
			goto out;
		}
		if (e.rdi & 0x80000000ULL || e.rdi > sizeof(buf)) {
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
	struct he_hypercall d = { .rax = 0x16, .rdi = id };
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
		__cpuid(0x40000000, a, b, c, d);
		memcpy(sig, &b, 4), memcpy(sig + 4, &c, 4), memcpy(sig + 8, &d, 4), sig[12] = 0;
		__cpuid(1, a1, b1, c1, d1);
		for (int i = 0; i < 12; i++)
			if (sig[i] < 0x20 || sig[i] > 0x7e)
				sig[i] = '.';
		printf("leaf 0x40000000: max=0x%x signature=\"%s\" leaf1.ecx.hypervisor=%u\n", a, sig, c1 >> 31);
		return strcmp(sig, "HyperEnclave") == 0 && (c1 >> 31) ? 0 : 1;
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
			       word(&s, 1), word(&s, 22), word(&s, 18), word(&s, 20), word(&s, 9), word(&s, 8));
		if (s.hv_status_len >= 256) /* words 30, 31: after the 32-byte digest at 208 */
			printf(" dma=%s dma.faults=%llu iommu=0x%llx", word(&s, 1) & 32 ? "on" : "off", word(&s, 30), word(&s, 31));
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
		struct he_hypercall h = { .rax = 0x00, .rdi = HE_HYPERCALL_ABI_VERSION };
		struct he_status s;
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &h, "hypercall"))
			return 1;
		if (h.rax != 0 || h.rdi != HE_HYPERCALL_ABI_VERSION) {
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
		       word(&s, 1), word(&s, 1) & 1, word(&s, 22));
		return (word(&s, 1) & 1) ? 0 : 1;
	}
	if (!strcmp(cmd, "probe")) {
		/* read the image's first bytes through Linux's own mapping: nested paging must refuse */
		struct he_probe p = { .offset = 0 };
		struct he_status before, after;
		if (do_ioctl(fd, HE_IOC_STATUS, &before, "status") || do_ioctl(fd, HE_IOC_PROBE, &p, "probe") ||
		    do_ioctl(fd, HE_IOC_STATUS, &after, "status"))
			return 1;
		unsigned long long f0 = before.hv_status_len ? word(&before, 18) : 0;
		unsigned long long f1 = after.hv_status_len ? word(&after, 18) : 0;
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
		unsigned long long f0 = before.hv_status_len ? word(&before, 20) : 0;
		unsigned long long f1 = after.hv_status_len ? word(&after, 20) : 0;
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
		/* TRUST_INIT (0x40) with the sealed root blob in BLOBFILE (missing or empty: none); a new
		 * blob the hypervisor returns replaces the file atomically. One 8 KiB buffer (ioctl 1.2):
		 * the blob at offset 0, the output at 4096 with 4096 bytes of capacity. */
		static unsigned char buf[8192];
		size_t len = 0;
		FILE *f = fopen(argv[2], "rb");
		if (f) {
			len = fread(buf, 1, 4096, f);
			int more = fgetc(f) != EOF;
			fclose(f);
			if (more) {
				fprintf(stderr, "hectl: %s: larger than 4096 bytes\n", argv[2]);
				return 1;
			}
		}
		struct he_hypercall h = { .rax = 0x40, .rdi = 0, .rsi = len, .rdx = 4096, .rcx = 4096,
					  .buf = (uintptr_t)buf, .buf_len = sizeof(buf),
					  .buf_arg = HE_BUF_ARG_MASK | (len ? 0x1 : 0) | 0x4 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &h, "TRUST_INIT"))
			return 1;
		if (h.rax) {
			printf("TRUST_INIT: blob in %zu bytes: status=%llu\n", len, (unsigned long long)h.rax);
			return 1;
		}
		if (h.rdi > 4096) {
			printf("TRUST_INIT: new blob of %llu bytes exceeds the 4096-byte output\n", (unsigned long long)h.rdi);
			return 1;
		}
		if (h.rdi) {
			char tmp[512];
			snprintf(tmp, sizeof(tmp), "%s.tmp", argv[2]);
			FILE *o = fopen(tmp, "wb");
			if (!o || fwrite(buf + 4096, 1, h.rdi, o) != h.rdi || fflush(o) || fsync(fileno(o)) || fclose(o) ||
			    rename(tmp, argv[2])) {
				fprintf(stderr, "hectl: writing %s: %s\n", argv[2], strerror(errno));
				return 1;
			}
		}
		printf("TRUST_INIT: blob in %zu bytes, new blob %llu bytes, flags 0x%llx (created %d, pcr-extended %d), HAK PCR %llu\n",
		       len, (unsigned long long)h.rdi, (unsigned long long)h.rsi, (int)(h.rsi & 1), (int)((h.rsi >> 1) & 1),
		       (unsigned long long)h.rdx);
		return 0;
	}
	if (!strcmp(cmd, "enclave")) {
		/* ECREATE, EADD of one page, ENCLAVE_INFO, a host read of its EPC page (must be refused
		 * as enclave memory), ENCLAVE_DESTROY: all served by the hypervisor through VMMCALL */
		unsigned char secs[64] = { 0 }, page[4096], info[128];
		unsigned long long size = 0x10000, base = 0x10000, flags = 0x4 /* MODE64BIT */, xfrm = 3;
		unsigned int ssa = 1, pages;
		struct he_status s0, s1;
		memcpy(secs + 0, &size, 8), memcpy(secs + 8, &base, 8), memcpy(secs + 16, &ssa, 4);
		memcpy(secs + 48, &flags, 8), memcpy(secs + 56, &xfrm, 8);
		struct he_hypercall c = { .rax = 0x10, .buf = (uintptr_t)secs, .buf_len = 64, .buf_arg = 1 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &c, "ENCLAVE_CREATE") || c.rax) {
			printf("ENCLAVE_CREATE status=%llu\n", (unsigned long long)c.rax);
			return 1;
		}
		unsigned long long id = c.rdi;
		memset(page, 0x5a, sizeof(page));
		struct he_hypercall a = { .rax = 0x11, .rdi = id, .rsi = 0, .rcx = 0x203 /* REG, RW */,
					  .buf = (uintptr_t)page, .buf_len = 4096, .buf_arg = 3 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &a, "ENCLAVE_ADD") || a.rax) {
			printf("ENCLAVE_ADD status=%llu\n", (unsigned long long)a.rax);
			return 1;
		}
		struct he_hypercall i = { .rax = 0x17, .rdi = id, .rdx = sizeof(info), .buf = (uintptr_t)info,
					  .buf_len = sizeof(info), .buf_arg = 2 };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &i, "ENCLAVE_INFO") || i.rax) {
			printf("ENCLAVE_INFO status=%llu\n", (unsigned long long)i.rax);
			return 1;
		}
		memcpy(&pages, info + 4, 4);
		if (do_ioctl(fd, HE_IOC_STATUS, &s0, "status") || !s0.hv_status_len)
			return 1;
		struct he_probe p = { .offset = word(&s0, 3) }; /* first EPC page: the enclave's SECS */
		if (do_ioctl(fd, HE_IOC_PROBE, &p, "probe") || do_ioctl(fd, HE_IOC_STATUS, &s1, "status"))
			return 1;
		struct he_hypercall d = { .rax = 0x16, .rdi = id };
		if (do_ioctl(fd, HE_IOC_HYPERCALL, &d, "ENCLAVE_DESTROY") || d.rax) {
			printf("ENCLAVE_DESTROY status=%llu\n", (unsigned long long)d.rax);
			return 1;
		}
		printf("enclave id=%llu epc-pages=%u; host read of EPC at reserved+0x%llx: result=%d enclave-faults %llu -> %llu; destroy returned %llu pages\n",
		       id, pages, (unsigned long long)p.offset, p.result, word(&s0, 19), word(&s1, 19), (unsigned long long)d.rdi);
		return pages == 2 && d.rdi == 2 && p.result != 0 && word(&s1, 19) == word(&s0, 19) + 1 ? 0 : 1;
	}
	if (!strcmp(cmd, "enclave-run") && argc > 4)
		return enclave_run(fd, argv[2], strtoull(argv[3], NULL, 0), argv[4]);
	fprintf(stderr, "usage: hectl version|status|load [NAME]|enable|disable|cpuid|hypercall-status|probe|probe-tpm|tpm-fifo-arm|tpm-fifo-reread|enclave|trust-init BLOBFILE|enclave-run PLAN FN INPUT\n");
	return 2;
}
