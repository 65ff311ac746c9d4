/* Raw KVM floor for bench/enclave.bench.ts: the cheapest possible VM lifecycle and exit.
 *   kvm_floor create N : N x (create VM + 1 vCPU + 4 KiB guest memory, run to HLT, destroy)
 *   kvm_floor exit N   : one VM whose guest loops on `out 0x10, al`; N exit round trips
 *   kvm_floor copy N B : as exit, and per exit the host copies B bytes out of guest memory and
 *                        the same bytes back (the floor of an OCALL carrying B bytes each way)
 * Prints the mean microseconds per operation. Real-mode guest, no irqchip. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int kvm;
static long run_size;
struct vm { int fd, vcpu; struct kvm_run *run; unsigned char *mem; };

static void die(const char *what) { perror(what); exit(1); }
static double now_us(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }

static void vm_create(struct vm *v, const unsigned char *code, size_t n) {
  if ((v->fd = ioctl(kvm, KVM_CREATE_VM, 0)) < 0) die("KVM_CREATE_VM");
  v->mem = mmap(0, 0x1000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  memcpy(v->mem, code, n);
  struct kvm_userspace_memory_region r = { .slot = 0, .guest_phys_addr = 0x1000, .memory_size = 0x1000, .userspace_addr = (unsigned long)v->mem };
  if (ioctl(v->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
  if ((v->vcpu = ioctl(v->fd, KVM_CREATE_VCPU, 0)) < 0) die("KVM_CREATE_VCPU");
  v->run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
  struct kvm_sregs s;
  if (ioctl(v->vcpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
  s.cs.base = 0; s.cs.selector = 0;
  if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS");
  struct kvm_regs g = { .rip = 0x1000, .rflags = 2 };
  if (ioctl(v->vcpu, KVM_SET_REGS, &g) < 0) die("KVM_SET_REGS");
}

static void vm_destroy(struct vm *v) {
  munmap(v->run, run_size); close(v->vcpu); close(v->fd); munmap(v->mem, 0x1000);
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: kvm_floor create|exit N | copy N BYTES\n"); return 2; }
  long n = atol(argv[2]);
  if ((kvm = open("/dev/kvm", O_RDWR)) < 0) die("open /dev/kvm");
  run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct vm v;
  double t0 = now_us();
  if (!strcmp(argv[1], "create")) {
    static const unsigned char hlt[] = { 0xf4 };
    for (long i = 0; i < n; i++) {
      vm_create(&v, hlt, sizeof hlt);
      if (ioctl(v.vcpu, KVM_RUN, 0) < 0 || v.run->exit_reason != KVM_EXIT_HLT) die("run to HLT");
      vm_destroy(&v);
    }
  } else if (!strcmp(argv[1], "copy")) {
    static const unsigned char loop[] = { 0xe6, 0x10, 0xeb, 0xfc }; /* out 0x10, al; jmp $-2 */
    long b = argc > 3 ? atol(argv[3]) : 64;
    if (b < 0 || b > 0x800) { fprintf(stderr, "copy: BYTES 0..2048\n"); return 2; }
    unsigned char buf[0x800];
    vm_create(&v, loop, sizeof loop);
    t0 = now_us();
    for (long i = 0; i < n; i++) {
      if (ioctl(v.vcpu, KVM_RUN, 0) < 0 || v.run->exit_reason != KVM_EXIT_IO) die("run to OUT");
      memcpy(buf, v.mem + 0x800, b);
      memcpy(v.mem + 0x800, buf, b);
    }
  } else {
    static const unsigned char loop[] = { 0xe6, 0x10, 0xeb, 0xfc }; /* out 0x10, al; jmp $-2 */
    vm_create(&v, loop, sizeof loop);
    t0 = now_us();
    for (long i = 0; i < n; i++)
      if (ioctl(v.vcpu, KVM_RUN, 0) < 0 || v.run->exit_reason != KVM_EXIT_IO) die("run to OUT");
  }
  printf("%.3f\n", (now_us() - t0) / n);
  return 0;
}
