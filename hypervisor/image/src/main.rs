//! HyperEnclave bare-metal image: one vendor-neutral part (this file, vcpu.rs, enclave_vm.rs)
//! and one backend per CPU vendor, chosen at build time (one image per arch, as HyperEnclave
//! ships `rust-hypervisor-intel` and `-amd`): svm.rs (AMD SVM + NPT, the default) or vmx.rs
//! (Intel VMX + EPT, cargo feature `vmx`). The driver loads the image at its link address inside
//! the memmap= reservation and calls `he_image_entry` (entry.rs) through its trampoline with the
//! host page tables loaded:
//! - `OP_INIT` (one CPU): builds the hypervisor state of hypervisor/core and the host nested
//!   tables (identity map of the memory map minus the reservation), NPT or EPT format;
//! - `OP_LAUNCH` (every CPU): the backend enables virtualization, captures the running Linux
//!   into a VMCB / VMCS and enters it; from then on this CPU runs the backend's exit loop and
//!   Linux continues as its guest.
//! The backend decodes each exit and calls the neutral handlers here (vcpu::Vcpu is what it
//! implements): CPUID (hypervisor bit, signature leaf 0x40000000 "HyperEnclave"), hypercalls
//! (VMMCALL / VMCALL through hyperenclave_core::dispatch; DISABLE hands the CPU back), nested
//! page faults (counted by core, #GP injected). Vendor instructions get #UD in the backend.
#![no_std]
#![no_main]

#[allow(dead_code)] // privileged instructions of both backends
mod cpu;
#[cfg_attr(feature = "vmx", allow(dead_code))]
mod entry;
mod handoff;
mod host;
mod serial;
mod tis;
mod vcpu;
#[cfg_attr(feature = "vmx", allow(dead_code))]
mod vmcb;
#[cfg_attr(not(feature = "vmx"), allow(dead_code))]
mod vmcs;

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use handoff::{Handoff, LinuxState};
use hyperenclave_abi::{cpuid, labels, mem_kind};
use hyperenclave_core::hypercall::{dispatch_with_tpm, nr};
use hyperenclave_core::{dispatch, Access, DirectMem, HcStatus, HvConfig, HvError, HvResult, Hypervisor, MemKind, MemRange, Regs, ReservedRegion, ABI_VERSION};
use vcpu::Vcpu;

pub(crate) type Hv = Hypervisor<DirectMem, 4096>;

/// Physical memory the guest (Linux) can name in hypercall buffers: the host identity map.
const GUEST_SPAN: u64 = 8 << 30;
const NPF_RETRY_LIMIT: u32 = 16;

/// The per-CPU areas (handoff v3), recorded at every entry (the driver passes the same values).
static mut PERCPU_BASE: u64 = 0;
static mut PERCPU_SIZE: u64 = 0;

/// This CPU's FPU save area (the first 512 bytes of its area).
pub(crate) fn fx_area(cpu: usize) -> *mut u8 {
    // SAFETY: set at entry before any backend code runs; never changed while CPUs run.
    unsafe { (PERCPU_BASE + cpu as u64 * PERCPU_SIZE) as *mut u8 }
}

/// This CPU's backend vCPU state, in its own area (entry.rs checked the area's size).
pub(crate) fn percpu_state(cpu: usize) -> &'static mut backend::PerCpu {
    // SAFETY: each CPU only touches its own area; the page-aligned offset suits PerCpu's alignment.
    unsafe { &mut *((PERCPU_BASE + cpu as u64 * PERCPU_SIZE + entry::PERCPU_STATE) as *mut backend::PerCpu) }
}

/// This CPU id's enclave runner slots (enclave_vm.rs), in its area after the backend's state.
pub(crate) fn percpu_runners(cpu: usize) -> *mut u8 {
    // SAFETY: reads values set at entry; the area was checked to hold PERCPU_BYTES.
    unsafe { (PERCPU_BASE + cpu as u64 * PERCPU_SIZE + entry::PERCPU_RUNNERS) as *mut u8 }
}

static mut HV: Option<Hv> = None;
static mut LEAVE_TRAMP: u64 = 0;
static LOCK: AtomicBool = AtomicBool::new(false);
pub(crate) static PRINT: AtomicBool = AtomicBool::new(false);
static LAUNCHED: AtomicU32 = AtomicU32::new(0);
/// The hypervisor PCR was capped at this enable's first DISABLE (reset at INIT).
static CAPPED: AtomicBool = AtomicBool::new(false);
/// INIT's self-test found no TPM at all (nothing answers at the TIS address: Bochs, a machine
/// without a TPM). DISABLE then has no PCR to cap, as long as there is still none.
static NO_TPM_AT_INIT: AtomicBool = AtomicBool::new(false);

pub(crate) fn lock(l: &AtomicBool) {
    while l.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
}
pub(crate) fn unlock(l: &AtomicBool) {
    l.store(false, Ordering::Release);
}

pub(crate) struct Console;
impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        serial::puts(s);
        Ok(())
    }
}

macro_rules! log {
    ($($arg:tt)*) => {{
        lock(&PRINT);
        let _ = write!(Console, "[hv] ");
        let _ = writeln!(Console, $($arg)*);
        unlock(&PRINT);
    }};
}

mod enclave_vm; // after log! so they can use it
mod iommu;
#[cfg(not(feature = "vmx"))]
mod svm;
#[cfg(not(feature = "vmx"))]
use svm as backend;
#[cfg(feature = "vmx")]
mod vmx;
#[cfg(feature = "vmx")]
use vmx as backend;

/// A host exception (host.rs's IDT): one line, then that CPU halts.
pub(crate) fn host_exception_log(vector: u64, err: u64, rip: u64, cr2: u64) {
    log!("HOST EXCEPTION vector {} error {:#x} at rip {:#x} (cr2 {:#x}): this CPU halts", vector, err, rip, cr2);
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Console, "[hv] PANIC: {}", info);
    cpu::halt_forever()
}

// Freestanding memory routines (no libc in the image).
#[no_mangle]
pub unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") d => _, inout("rsi") s => _, options(nostack));
    d
}
#[no_mangle]
pub unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    if (d as usize) <= (s as usize) || (d as usize) >= (s as usize + n) {
        return memcpy(d, s, n);
    }
    core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") d.add(n - 1) => _,
                     inout("rsi") s.add(n - 1) => _, options(nostack));
    d
}
#[no_mangle]
pub unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") d => _, in("al") c as u8, options(nostack));
    d
}
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        let (x, y) = (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i)));
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}

#[no_mangle]
extern "C" fn he_main(op: u64, handoff: u64, cpu: u64, linux: *const LinuxState) -> i64 {
    // SAFETY: the driver passes the physical (= identity-mapped) address of its handoff page.
    let ho = unsafe { &*(handoff as *const Handoff) };
    if ho.magic != handoff::HANDOFF_MAGIC || ho.version != handoff::HANDOFF_VERSION || cpu >= ho.cpu_slots as u64 || ho.percpu_size < entry::PERCPU_BYTES {
        return -1;
    }
    // SAFETY: the same values on every entry (the driver's layout); read by fx_area/percpu_state.
    unsafe {
        PERCPU_BASE = ho.percpu_base;
        PERCPU_SIZE = ho.percpu_size;
    }
    match op {
        handoff::OP_INIT => match init(ho) {
            Ok(()) => 0,
            Err(e) => {
                log!("init failed: {}", e);
                -2
            }
        },
        // SAFETY: `linux` points at the three words he_enter pushed on Linux's stack.
        handoff::OP_LAUNCH => backend::launch(cpu as usize, unsafe { &*linux }),
        _ => -1,
    }
}

/// The core's entropy source: RDRAND (10 tries per word); false without RDRAND or when it keeps
/// failing. (The core mixes it with TPM2_GetRandom for a new root secret.)
fn rdrand_fill(buf: &mut [u8]) -> bool {
    if cpu::cpuid(1, 0)[2] & (1 << 30) == 0 {
        return false;
    }
    for chunk in buf.chunks_mut(8) {
        let mut v = 0u64;
        let mut ok = 0u8;
        for _ in 0..10 {
            // SAFETY: RDRAND is present (CPUID.1:ECX[30]); it only writes the register and CF.
            unsafe { core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack)) };
            if ok == 1 {
                break;
            }
        }
        if ok != 1 {
            return false;
        }
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    true
}

fn init(ho: &Handoff) -> HvResult<()> {
    let n = core::cmp::min(ho.nranges as usize, handoff::MAX_RANGES);
    let mut map = [MemRange::new(0, 0, MemKind::Ram); handoff::MAX_RANGES + 2];
    for (i, r) in ho.ranges[..n].iter().enumerate() {
        let kind = match r.kind {
            mem_kind::RAM => MemKind::Ram,
            mem_kind::RESERVED => MemKind::Reserved,
            _ => MemKind::Mmio,
        };
        map[i] = MemRange::new(r.start, r.size, kind);
    }
    // The TPM's locality 1-4 pages stay out of the host tables: after launch only the
    // hypervisor reaches locality 2 (the host keeps locality 0 for Linux's driver).
    let n = cut_out(&mut map, n, tis::HIDDEN);
    // DMA protection: the IOMMU's registers leave the host tables like the TPM's localities.
    lock(&LOCK);
    let window = iommu::prepare();
    unlock(&LOCK);
    let window = window?;
    let n = match window {
        Some(w) => cut_out(&mut map, n, w),
        None => n,
    };
    // The transport's self-test at the hypervisor's locality (before launch; the driver holds
    // Linux's TPM lock around ENABLE): GetRandom and PCR_Read of the measurement PCR.
    let pcr = if ho.pcr < 24 { ho.pcr } else { 12 };
    let self_test = tis::self_test(pcr);
    NO_TPM_AT_INIT.store(matches!(self_test, Err(tis::TisError::NoDevice { .. })), Ordering::SeqCst);
    match self_test {
        Ok((random, digest, clean)) => {
            log!(
                "TPM: locality {} at {:#x}: GetRandom gave {} bytes, PCR{} sha256 {}{}",
                tis::HV_LOCALITY,
                tis::TIS_BASE + tis::HV_LOCALITY as u64 * tis::LOCALITY_STRIDE,
                random,
                pcr,
                Hex(&digest),
                if clean { "" } else { " (locality seized from the host)" }
            );
        }
        Err(e) => log!("TPM: locality {} self-test failed: {}", tis::HV_LOCALITY, e),
    }
    CAPPED.store(false, Ordering::SeqCst);
    lock(&LOCK);
    // SAFETY: HV is only touched under LOCK.
    let hv = unsafe { &mut *core::ptr::addr_of_mut!(HV) };
    let r = (|| {
        if hv.is_none() {
            let reserved = ReservedRegion::split(ho.reserved_base, ho.reserved_size, ho.hv_size, ho.pool_base - ho.reserved_base)?;
            let mut cfg = HvConfig::new(reserved, backend::PAGING, rdrand_fill);
            cfg.image_digest = ho.image_sha256;
            cfg.trust.hypervisor_pcr = pcr as u8;
            // SAFETY: the host tables identity-map the reservation; nothing else aliases it.
            let mem = unsafe { DirectMem::new(0, MemRange::new(ho.reserved_base, ho.reserved_size, MemKind::Reserved)) };
            *hv = Some(Hv::new(cfg, mem)?);
        }
        let h = hv.as_mut().unwrap();
        h.enable(&map[..n])?;
        let t = h.host_table().unwrap();
        let visible = |pa: u64| t.translate(h.mem(), pa).is_ok();
        let hidden = (tis::HIDDEN.0..tis::HIDDEN.1).step_by(4096).all(|pa| !visible(pa));
        log!(
            "TPM: TIS localities 1-4 ({:#x}-{:#x}) {} the host tables, locality 0 {}",
            tis::HIDDEN.0,
            tis::HIDDEN.1 - 1,
            if hidden { "absent from" } else { "STILL MAPPED in" },
            if visible(tis::TIS_BASE) { "mapped" } else { "absent" }
        );
        if !hidden {
            h.disable()?;
            return Err(HvError::InvalidRange { what: "TPM locality pages still mapped for the host", start: tis::HIDDEN.0, size: tis::HIDDEN.1 - tis::HIDDEN.0 });
        }
        if let Some(w) = window {
            if (w.0..w.1).step_by(4096).any(visible) {
                h.disable()?;
                return Err(HvError::InvalidRange { what: "IOMMU registers still mapped for the host", start: w.0, size: w.1 - w.0 });
            }
        }
        let reserved = (ho.reserved_base, ho.reserved_base + ho.reserved_size);
        if let Err(e) = iommu::start(h, &map[..n], reserved) {
            h.disable()?;
            return Err(e);
        }
        let s = h.status();
        log!(
            "init: {} memory ranges, host {} root {:#x}, {} of {} pool frames, EPC {} pages, crypto {}",
            n,
            backend::TABLES,
            h.host_table().map(|t| t.root()).unwrap_or(0),
            s.pool_frames_used,
            s.pool_frames_total,
            s.epc_pages_total,
            hyperenclave_core::crypto::aes::Backend::detect().name()
        );
        Ok(())
    })();
    unlock(&LOCK);
    r?;
    enclave_vm::init_slots(ho.cpu_slots as usize);
    host::init(ho.leave_tramp, ho.leave_tramp_pa);
    // SAFETY: single writer (INIT runs before any LAUNCH).
    unsafe { LEAVE_TRAMP = ho.leave_tramp };
    backend::init();
    Ok(())
}

/// Removes [cut.0, cut.1) from the first `n` ranges of `map` (splitting one in two where the
/// cut lies inside it; `map` has one spare slot). Returns the new count.
fn cut_out(map: &mut [MemRange], n: usize, cut: (u64, u64)) -> usize {
    let mut n = n;
    let mut i = 0;
    while i < n {
        let (s, e) = (map[i].start, map[i].start + map[i].size);
        if e <= cut.0 || s >= cut.1 {
            i += 1;
            continue;
        }
        let kind = map[i].kind;
        let before = (s < cut.0).then(|| MemRange::new(s, cut.0 - s, kind));
        let after = (e > cut.1).then(|| MemRange::new(cut.1, e - cut.1, kind));
        match (before, after) {
            (Some(b), Some(a)) if n < map.len() => {
                map.copy_within(i + 1..n, i + 2);
                map[i] = b;
                map[i + 1] = a;
                n += 1;
                i += 2;
            }
            (Some(b), Some(_)) => {
                map[i] = b; // no spare slot: drop what follows the cut rather than expose it
                i += 1;
            }
            (Some(r), None) | (None, Some(r)) => {
                map[i] = r;
                i += 1;
            }
            (None, None) => {
                map.copy_within(i + 1..n, i);
                n -= 1;
            }
        }
    }
    n
}

pub(crate) struct Hex<'a>(pub &'a [u8]);
impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{:02x}", b)?;
        }
        Ok(())
    }
}

pub(crate) fn cpuid_exit<V: Vcpu>(vc: &mut V) {
    let leaf = vc.rax() as u32;
    let sub = vc.regs().rcx as u32;
    let mut r = cpu::cpuid(leaf, sub);
    V::hide_virtualization(leaf, &mut r); // nested virtualization is not offered
    match leaf {
        1 => r[2] |= 1 << 31, // hypervisor present
        cpuid::LEAF_SIGNATURE => {
            let sig = labels::CPUID_SIGNATURE;
            let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
            r = [cpuid::LEAF_VERSION, word(0), word(4), word(8)]
        }
        cpuid::LEAF_VERSION => r = [ABI_VERSION, 0, 0, 0],
        _ => {}
    }
    vc.set_rax(r[0] as u64);
    vc.regs().rbx = r[1] as u64;
    vc.regs().rcx = r[2] as u64;
    vc.regs().rdx = r[3] as u64;
    vc.advance();
}

/// A hypercall (VMMCALL / VMCALL) from the demoted Linux, through the core's `dispatch`.
pub(crate) fn hypercall_exit<V: Vcpu>(vc: &mut V, cpu: usize) {
    let mut regs = Regs { rax: vc.rax(), rdi: vc.regs().rdi, rsi: vc.regs().rsi, rdx: vc.regs().rdx, rcx: vc.regs().rcx, r8: vc.regs().r8 };
    lock(&LOCK);
    // SAFETY: under LOCK.
    let hv = unsafe { (*core::ptr::addr_of_mut!(HV)).as_mut().unwrap() };
    if regs.rax == nr::DISABLE {
        let alive = hv.status().enclaves;
        if alive > 0 {
            unlock(&LOCK);
            vc.set_rax(HcStatus::EnclavesAlive as u64);
            vc.advance();
            return;
        }
        // Before the first CPU leaves (from then on the host could reach locality 2 through it)
        // the core caps the hypervisor PCR and wipes the root of trust; if the cap fails, no CPU
        // leaves.
        if !CAPPED.load(Ordering::SeqCst) {
            let r = tis::Tis::open(tis::HV_LOCALITY).map_err(|e| (HvError::TpmIo { what: e.name(), offset: 0 }, Some(e))).and_then(|mut t| {
                let r = hv.trust_exit(&mut t).map_err(|e| (e, t.last_error));
                drop(t);
                r
            });
            match r {
                Ok(()) => {
                    CAPPED.store(true, Ordering::SeqCst);
                    log!("cpu{}: DISABLE: hypervisor PCR capped, root of trust wiped", cpu);
                }
                Err((_, Some(tis::TisError::NoDevice { did_vid }))) if NO_TPM_AT_INIT.load(Ordering::SeqCst) => {
                    // no TPM at INIT and none now: no PCR was ever the hypervisor's, nothing to cap
                    CAPPED.store(true, Ordering::SeqCst);
                    log!("cpu{}: DISABLE: no TPM at INIT nor now (DID_VID {:#010x}): no PCR to cap", cpu, did_vid);
                }
                Err((e, detail)) => {
                    unlock(&LOCK);
                    match detail {
                        Some(d) => log!("cpu{}: DISABLE refused: PCR cap failed: {} ({})", cpu, e, d),
                        None => log!("cpu{}: DISABLE refused: PCR cap failed: {}", cpu, e),
                    }
                    vc.set_rax(HcStatus::from(&e) as u64);
                    vc.advance();
                    return;
                }
            }
        }
        // the last CPU out tears the host tables down (the others may still run on them)
        let last = LAUNCHED.fetch_sub(1, Ordering::SeqCst) == 1;
        if last {
            // SAFETY: the identity map covers GUEST_SPAN; DISABLE reads no guest memory.
            let mut guest = unsafe { DirectMem::new(0, MemRange::new(0, GUEST_SPAN, MemKind::Ram)) };
            let st = dispatch(hv, &mut regs, &mut guest);
            iommu::poll(hv);
            iommu::stop();
            log!("cpu{}: DISABLE: host tables released ({:?})", cpu, st);
        }
        unlock(&LOCK);
        vc.leave(cpu);
    }
    if regs.rax == nr::TRUST_INIT {
        // The core's TPM sequence at locality 2, held for the whole call.
        // SAFETY: as below; the core checks the blob and output pages against the host tables.
        let mut guest = unsafe { DirectMem::new(0, MemRange::new(0, GUEST_SPAN, MemKind::Ram)) };
        let (st, detail, seized) = match tis::Tis::open(tis::HV_LOCALITY) {
            Ok(mut t) => {
                let st = dispatch_with_tpm(hv, &mut regs, &mut guest, &mut t);
                let (d, s) = (t.last_error, t.seized);
                drop(t);
                (st, d, s)
            }
            Err(e) => {
                regs = Regs { rax: HcStatus::TpmIo as u64, ..Regs::default() };
                (HcStatus::TpmIo, Some(e), false)
            }
        };
        unlock(&LOCK);
        match (st, detail) {
            (HcStatus::Success, _) => log!(
                "cpu{}: TRUST_INIT: root {}, HAK PCR {}{}{}",
                cpu,
                if regs.rsi & 1 != 0 { "created and sealed" } else { "unsealed" },
                regs.rdx,
                if regs.rsi & 2 != 0 { " extended with the HAK event" } else { " already holds the HAK event" },
                if seized { " (locality 2 seized from the host)" } else { "" }
            ),
            (st, Some(d)) => log!("cpu{}: TRUST_INIT failed: {:?} ({})", cpu, st, d),
            (st, None) => log!("cpu{}: TRUST_INIT failed: {:?}", cpu, st),
        }
        vc.set_rax(regs.rax);
        vc.regs().rdi = regs.rdi;
        vc.regs().rsi = regs.rsi;
        vc.regs().rdx = regs.rdx;
        vc.advance();
        return;
    }
    if regs.rax == nr::ENCLAVE_CALL {
        // runs enclave code: the lock is taken only around core state, not while the enclave runs
        unlock(&LOCK);
        let (st, rdi, rsi) = enclave_vm::call(&LOCK, hv as *mut Hv, cpu, regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8);
        vc.set_rax(st as u64);
        vc.regs().rdi = rdi;
        vc.regs().rsi = rsi;
        vc.advance();
        return;
    }
    if regs.rax == nr::ENCLAVE_OCALL_RETURN {
        unlock(&LOCK);
        let (st, rdi, rsi) = enclave_vm::ocall_return(&LOCK, hv as *mut Hv, cpu, regs.rdi, regs.rsi, regs.rdx, regs.rcx);
        vc.set_rax(st as u64);
        vc.regs().rdi = rdi;
        vc.regs().rsi = rsi;
        vc.advance();
        return;
    }
    iommu::poll(hv); // DMA faults reach STATUS before it is read
    // SAFETY: as above; dispatch checks every buffer page against the host tables first.
    let mut guest = unsafe { DirectMem::new(0, MemRange::new(0, GUEST_SPAN, MemKind::Ram)) };
    let destroyed = (regs.rax == nr::ENCLAVE_DESTROY).then_some(regs.rdi as u32);
    // EDMM steps that can take mappings away from the enclave's running threads
    let shrunk = matches!(regs.rax, nr::ENCLAVE_RESTRICT | nr::ENCLAVE_MODIFY_TYPE | nr::ENCLAVE_REMOVE).then_some(regs.rdi as u32);
    let st = dispatch(hv, &mut regs, &mut guest);
    unlock(&LOCK);
    // after the hypervisor lock: enclave_vm takes its slot lock first, then the hypervisor's
    match (destroyed, shrunk, st) {
        (Some(id), _, HcStatus::Success) => enclave_vm::forget(id),
        (_, Some(id), HcStatus::Success) => enclave_vm::mappings_changed(id),
        _ => {}
    }
    vc.set_rax(regs.rax);
    vc.regs().rdi = regs.rdi;
    vc.regs().rsi = regs.rsi;
    vc.regs().rdx = regs.rdx;
    vc.advance();
}

/// A nested-paging (NPT / EPT) violation of the demoted Linux: core classifies and counts it;
/// the guest gets #GP(0), as it would for a non-canonical access.
pub(crate) fn nested_fault_exit<V: Vcpu>(vc: &mut V, cpu: usize, gpa: u64, access: Access) {
    lock(&LOCK);
    // SAFETY: under LOCK.
    let r = unsafe { (*core::ptr::addr_of_mut!(HV)).as_mut().unwrap().host_access(gpa, access) };
    unlock(&LOCK);
    match r {
        Ok(()) => {
            // mapped: a stale translation; retry a few times, then treat it as refused
            let (last, repeat) = vc.fault_tracker();
            if *last == gpa {
                *repeat += 1;
            } else {
                *last = gpa;
                *repeat = 0;
            }
            if *repeat >= NPF_RETRY_LIMIT {
                log!("cpu{}: nested fault at {:#x} repeats on a mapped page: #GP", cpu, gpa);
                vc.inject(13, Some(0));
            }
        }
        Err(f) if (tis::HIDDEN.0..tis::HIDDEN.1).contains(&gpa) => {
            log!(
                "cpu{}: host access to TPM locality {} at {:#x} refused (rip {:#x}): #GP injected",
                cpu,
                (gpa - tis::TIS_BASE) / tis::LOCALITY_STRIDE,
                f.gpa,
                vc.rip()
            );
            vc.inject(13, Some(0));
        }
        Err(f) => {
            log!("cpu{}: {} (rip {:#x}): #GP injected", cpu, f, vc.rip());
            vc.inject(13, Some(0));
        }
    }
}

