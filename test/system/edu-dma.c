/*
 * Drives QEMU's "edu" PCI device (hw/misc/edu.c) from user space in the system-tier guest, as a
 * demoted (untrusted) host would: BAR 0 mmapped through sysfs, bus mastering switched on in the
 * PCI command register, DMA started by register writes. Register layout (edu.c): 0x80 DMA source,
 * 0x88 DMA destination, 0x90 count, 0x98 command (bit 0 start/busy, bit 1 direction: 0 = RAM to
 * the device's buffer, 1 = buffer to RAM); the device's 4 KiB buffer is at device address 0x40000.
 * QEMU must run it with dma_mask wide enough for the targets (edu clamps to 28 bits by default).
 * QEMU 7.2's edu aborts the whole VM (hw_error) on a transfer that ends at the buffer's last byte,
 * so every DMA here moves at most CHUNK bytes at the buffer's start.
 *
 *   edu-dma selftest            RAM -> device -> RAM between two pages of this process: prints
 *                               "ok <bytes>" or "mismatch at <offset>"
 *   edu-dma read PA LEN         fills the device buffer with 0xa5, DMAs LEN (<= 2048) bytes from
 *                               PA into it, then back into a page of this process; prints them as hex
 *   edu-dma write PA LEN BYTE   DMAs LEN (<= 4096) bytes of value BYTE to PA, in 2048-byte pieces
 * Exit 0 when the DMA engine finished (whatever the IOMMU did to the data), 1 on a usage or
 * device error (one line on stderr).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_BUF 0x40000ULL
#define CHUNK 2048

static volatile uint8_t *bar;

static void die(const char *what)
{
	fprintf(stderr, "edu-dma: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
	exit(1);
}

static unsigned read_hex_file(const char *path)
{
	char b[32] = { 0 };
	int fd = open(path, O_RDONLY);
	if (fd < 0 || read(fd, b, sizeof(b) - 1) <= 0)
		die(path);
	close(fd);
	return (unsigned)strtoul(b, NULL, 16);
}

static void find_and_map(void)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e;
	char p[512];
	if (!d)
		die("/sys/bus/pci/devices");
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (read_hex_file(p) != EDU_VENDOR)
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/device", e->d_name);
		if (read_hex_file(p) != EDU_DEVICE)
			continue;
		/* memory decoding on, then bus mastering (PCI command register bits 1 and 2) */
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/enable", e->d_name);
		int fd = open(p, O_WRONLY);
		if (fd >= 0) {
			if (write(fd, "1", 1) < 0 && errno != EBUSY)
				die("enable the edu device");
			close(fd);
		}
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/config", e->d_name);
		fd = open(p, O_RDWR);
		uint16_t cmd;
		if (fd < 0 || pread(fd, &cmd, 2, 4) != 2)
			die("read the edu PCI command register");
		cmd |= 0x6;
		if (pwrite(fd, &cmd, 2, 4) != 2)
			die("write the edu PCI command register");
		close(fd);
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/resource0", e->d_name);
		fd = open(p, O_RDWR | O_SYNC);
		if (fd < 0)
			die("open edu resource0");
		bar = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (bar == MAP_FAILED)
			die("mmap edu resource0");
		if (*(volatile uint32_t *)bar != 0x010000ed)
			die("edu identification register is not 0x010000ed");
		closedir(d);
		return;
	}
	errno = 0;
	die("no edu device (1234:11e8) on the PCI bus");
}

static void w64(unsigned off, uint64_t v) { *(volatile uint64_t *)(bar + off) = v; }
static uint64_t r64(unsigned off) { return *(volatile uint64_t *)(bar + off); }

/* One DMA; waits for the engine (edu runs it from a 100 ms virtual-time timer). */
static void dma(uint64_t src, uint64_t dst, uint64_t len, int to_ram)
{
	int i;
	w64(0x80, src);
	w64(0x88, dst);
	w64(0x90, len);
	w64(0x98, 1 | (to_ram ? 2 : 0));
	for (i = 0; i < 20000 && (r64(0x98) & 1); i++)
		usleep(1000);
	if (r64(0x98) & 1) {
		errno = 0;
		die("the edu DMA engine did not finish");
	}
}

/* A locked page of this process and its physical address (/proc/self/pagemap, root only). */
static uint8_t *page(uint64_t *pa)
{
	uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE, -1, 0);
	uint64_t ent;
	int fd;
	if (p == MAP_FAILED)
		die("mmap a page");
	memset(p, 0, 4096);
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0 || pread(fd, &ent, 8, ((uintptr_t)p / 4096) * 8) != 8)
		die("/proc/self/pagemap");
	close(fd);
	if (!(ent & (1ULL << 63)) || !(ent & ((1ULL << 55) - 1))) {
		errno = 0;
		die("page not present or PFN hidden (run as root)");
	}
	*pa = (ent & ((1ULL << 55) - 1)) * 4096;
	return p;
}

int main(int argc, char **argv)
{
	uint64_t pa_a, pa_b;
	uint8_t *a, *b;
	int i;
	if (argc < 2)
		goto usage;
	find_and_map();
	a = page(&pa_a);
	b = page(&pa_b);
	if (!strcmp(argv[1], "selftest")) {
		for (i = 0; i < 4096; i++)
			a[i] = (uint8_t)(i * 7 + 3);
		for (i = 0; i < 4096; i += CHUNK) {
			dma(pa_a + i, EDU_BUF, CHUNK, 0);
			dma(EDU_BUF, pa_b + i, CHUNK, 1);
		}
		for (i = 0; i < 4096; i++)
			if (a[i] != b[i]) {
				printf("mismatch at %d (sent 0x%02x, got 0x%02x) pages 0x%llx -> 0x%llx\n", i, a[i], b[i],
				       (unsigned long long)pa_a, (unsigned long long)pa_b);
				return 0;
			}
		printf("ok 4096 bytes 0x%llx -> device -> 0x%llx\n", (unsigned long long)pa_a, (unsigned long long)pa_b);
		return 0;
	}
	if (!strcmp(argv[1], "read") && argc == 4) {
		uint64_t pa = strtoull(argv[2], NULL, 0), len = strtoull(argv[3], NULL, 0);
		if (!len || len > CHUNK)
			goto usage;
		memset(a, 0xa5, 4096);
		dma(pa_a, EDU_BUF, CHUNK, 0);  /* marker into the device buffer */
		dma(pa, EDU_BUF, len, 0);      /* the read under test */
		dma(EDU_BUF, pa_b, len, 1);    /* what the device got, into our page */
		for (i = 0; i < (int)len; i++)
			printf("%02x", b[i]);
		printf("\n");
		return 0;
	}
	if (!strcmp(argv[1], "write") && argc == 5) {
		uint64_t pa = strtoull(argv[2], NULL, 0), len = strtoull(argv[3], NULL, 0);
		if (!len || len > 4096)
			goto usage;
		memset(a, (int)strtoul(argv[4], NULL, 0), 4096);
		dma(pa_a, EDU_BUF, CHUNK, 0);
		for (i = 0; i < (int)len; i += CHUNK)
			dma(EDU_BUF, pa + i, len - i < CHUNK ? len - i : CHUNK, 1);
		printf("wrote %llu bytes of 0x%02x to 0x%llx\n", (unsigned long long)len, a[0], (unsigned long long)pa);
		return 0;
	}
usage:
	fprintf(stderr, "usage: edu-dma selftest | read PA LEN (<= 2048) | write PA LEN BYTE (LEN <= 4096)\n");
	return 1;
}
