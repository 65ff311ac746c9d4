#!/bin/sh
# PID 1 of the Bochs VMX tier's initramfs (test/system-vmx/run.sh): Debian's kernel on an
# emulated Intel CPU with VMX + EPT, the driver picks the intel-vmx image, hectl drives it (no Node
# in this guest: see docs/system-tier.md for why). Reports "@@HE:" lines on the serial console for
# test/system-vmx/judge.mjs. Always powers off at the end.
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
dmesg -n 1
. /etc.scenario

check() { n=$1; r=$2; shift 2; echo "@@HE:CHECK $n $r $*"; }
now() { cut -d' ' -f1 /proc/uptime; }
dmesg_he() { dmesg | grep -i -E "hyperenclave|vmx" | sed 's/^/@@HE:DMESG /'; }
# The serial console drains after the shell's writes: give it time before the power goes off.
finish() { echo "@@HE:DONE uptime=$(now)"; sync; sleep 5; poweroff -f; sleep 5; }

NCPU=$(grep -c ^processor /proc/cpuinfo)
echo "@@HE:BOOTED kernel=$(uname -r) cpus=$NCPU uptime=$(now)"
grep -q ' vmx' /proc/cpuinfo && check cpu-vmx PASS "vmx flag in /proc/cpuinfo" || check cpu-vmx FAIL "no vmx flag: $(dmesg | grep -i vmx | head -2 | tr '\n' ' ')"
grep -q ' ept' /proc/cpuinfo && check cpu-ept PASS "ept in /proc/cpuinfo" || check cpu-ept FAIL "no ept flag"
[ -e /dev/tpm0 ] && echo "@@HE:INFO a TPM exists" || echo "@@HE:INFO no TPM (Bochs has none): the image is loaded unmeasured"

if ! insmod /lib/modules/hyperenclave.ko reserved_base=$RESERVED_BASE reserved_size=$RESERVED_SIZE unmeasured_ok=1; then
  check module-load FAIL "insmod failed"; dmesg | tail -20 | sed 's/^/@@HE:DMESG /'; finish
fi
check module-load PASS "hyperenclave.ko loaded (unmeasured_ok=1: no TPM)"
out=$(hectl cpuid 2>&1); case "$out" in *HyperEnclave*) check cpuid-before-enable FAIL "$out" ;; *) check cpuid-before-enable PASS "$out" ;; esac
# no name: the driver picks hyperenclave-intel.img by CPU vendor (and checks the container's arch)
out=$(hectl load 2>&1) && check image-load PASS "$out" || { check image-load FAIL "$out"; dmesg_he; finish; }
T0=$(now)
out=$(hectl enable 2>&1); rc=$?
echo "@@HE:INFO enable took $(awk "BEGIN{print $(now) - $T0}") s: $out"
st=$(hectl status 2>&1)
echo "@@HE:INFO status: $st"
if [ $rc = 0 ]; then check vmx-launch PASS "enable: $out; $st"; else check vmx-launch FAIL "enable: $out"; dmesg_he; finish; fi
c=0; fail=""
while [ $c -lt $NCPU ]; do
  o=$(taskset -c $c hectl cpuid 2>&1) || fail="$fail cpu$c:[$o]"
  echo "@@HE:INFO cpu$c $o"
  c=$((c+1))
done
[ -z "$fail" ] && check vmx-cpuid PASS "leaf 0x40000000 = HyperEnclave on all $NCPU CPUs" || check vmx-cpuid FAIL "$fail"
taskset -c $((NCPU-1)) sh -c 'i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; echo $i > /tmp/busy.done' &
BUSY=$!
n=0; for f in /bin/*; do n=$((n+1)); done
wait $BUSY
[ "$(cat /tmp/busy.done 2>/dev/null)" = 2000 ] && check guest-alive PASS "busy loop on cpu$((NCPU-1)) done, $n files listed" || check guest-alive FAIL "busy loop did not finish"
out=$(hectl hypercall-status 2>&1) && check vmcall-status PASS "$out" || check vmcall-status FAIL "$out"
out=$(hectl probe 2>&1) && check ept-protects PASS "$out" || check ept-protects FAIL "$out"
# an enclave from the project's loader (plan written on the host), ECALL 2 = SHA-256 of "abc"
out=$(hectl enclave-run /opt/enclave/crypto.plan 2 abc 2>&1); rc=$?
echo "@@HE:ECALL rc=$rc $out"
[ $rc = 0 ] && check vmx-ecall-run PASS "$out" || check vmx-ecall-run FAIL "$out"
out=$(hectl enclave 2>&1) && check enclave-lifecycle PASS "$out" || check enclave-lifecycle FAIL "$out"
out=$(hectl disable 2>&1); rc=$?
st=$(hectl status 2>&1)
c=0; back=""
while [ $c -lt $NCPU ]; do
  o=$(taskset -c $c hectl cpuid 2>&1) && back="$back cpu$c:still-HyperEnclave"
  c=$((c+1))
done
[ $rc = 0 ] && [ -z "$back" ] && check vmx-disable PASS "disable: $out; cpuid is the CPU's own again on all $NCPU CPUs; $st" \
  || check vmx-disable FAIL "disable rc=$rc: $out;$back"
taskset -c $((NCPU-1)) sh -c 'echo alive > /tmp/after'
[ "$(cat /tmp/after 2>/dev/null)" = alive ] && check alive-after-disable PASS "every CPU runs Linux again" || check alive-after-disable FAIL "no"
dmesg_he
finish
