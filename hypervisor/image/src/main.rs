//! HyperEnclave bare-metal image (AMD SVM + nested paging). The driver loads it at its link
//! address inside the memmap= reservation and calls `he_image_entry` (entry.rs) through its
//! trampoline with the host page tables loaded:
//! - `OP_INIT` (one CPU): builds the hypervisor state of hypervisor/core and the host nested
//!   tables (identity map of the memory map minus the reservation);
//! - `OP_LAUNCH` (every CPU): enables SVM, captures the running Linux into a VMCB and VMRUNs it;
//!   from then on this CPU runs the exit loop below and Linux continues as its guest.
//! Exits handled: CPUID (hypervisor bit, signature leaf 0x40000000 "HyperEnclave"), MSR writes
//! to EFER (SVME kept on) and VM_HSAVE_PA (ignored), VMMCALL (hypercall ABI through
//! hyperenclave_core::dispatch; DISABLE hands the CPU back), nested page faults (counted by core,
//! #GP injected), SVM instructions (#UD).
#![no_std]
#![no_main]

mod cpu;
mod entry;
mod handoff;
mod host;
mod serial;
mod tis;
mod vmcb;

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use entry::{GuestRegs, LeaveFrame};
use handoff::{Handoff, LinuxState, MAX_CPUS};
use hyperenclave_abi::mem_kind;
use hyperenclave_core::hypercall::{dispatch_with_tpm, nr};
use hyperenclave_core::{dispatch, Access, DirectMem, Format, HcStatus, HvConfig, HvError, HvResult, Hypervisor, MemKind, MemRange, Regs, ReservedRegion, ABI_VERSION};
use vmcb::{exit, intercept, off, Vmcb};

pub(crate) type Hv = Hypervisor<DirectMem, 4096>;

/// Physical memory the guest (Linux) can name in hypercall buffers: the host identity map.
const GUEST_SPAN: u64 = 8 << 30;
const NPF_RETRY_LIMIT: u32 = 16;

#[repr(C, align(4096))]
struct PerCpu {
    vmcb: Vmcb,
    hsave: [u8; 4096],
    regs: GuestRegs,
    launched: bool,
    npf_last: u64,
    npf_repeat: u32,
    exits: u64,
}

const PERCPU_INIT: PerCpu = PerCpu {
    vmcb: Vmcb([0; 4096]),
    hsave: [0; 4096],
    regs: GuestRegs { rbx: 0, rcx: 0, rdx: 0, rsi: 0, rdi: 0, rbp: 0, r8: 0, r9: 0, r10: 0, r11: 0, r12: 0, r13: 0, r14: 0, r15: 0 },
    launched: false,
    npf_last: 0,
    npf_repeat: 0,
    exits: 0,
};

#[repr(C, align(16))]
pub struct Stacks([[u8; 1 << entry::STACK_SHIFT]; MAX_CPUS]);
#[repr(C, align(64))]
pub struct FxAreas([[u8; 512]; MAX_CPUS]);
#[repr(C, align(4096))]
struct Msrpm([u8; 8192]);
#[repr(C, align(4096))]
struct Iopm([u8; 12288]);

#[no_mangle]
static mut HE_STACKS: Stacks = Stacks([[0; 1 << entry::STACK_SHIFT]; MAX_CPUS]);
#[no_mangle]
static mut HE_FX: FxAreas = FxAreas([[0; 512]; MAX_CPUS]);
static mut PERCPU: [PerCpu; MAX_CPUS] = [PERCPU_INIT; MAX_CPUS];
static mut MSRPM: Msrpm = Msrpm([0; 8192]);
static mut IOPM: Iopm = Iopm([0; 12288]);
static mut HV: Option<Hv> = None;
static mut LEAVE_TRAMP: u64 = 0;
static LOCK: AtomicBool = AtomicBool::new(false);
pub(crate) static PRINT: AtomicBool = AtomicBool::new(false);
static LAUNCHED: AtomicU32 = AtomicU32::new(0);
/// The hypervisor PCR was capped at this enable's first DISABLE (reset at INIT).
static CAPPED: AtomicBool = AtomicBool::new(false);

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

mod enclave_vm; // after log! so it can use it
mod iommu;

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
    if ho.magic != handoff::HANDOFF_MAGIC || ho.version != handoff::HANDOFF_VERSION || cpu as usize >= MAX_CPUS {
        return -1;
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
        handoff::OP_LAUNCH => launch(cpu as usize, unsafe { &*linux }),
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
    match tis::self_test(pcr) {
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
            let mut cfg = HvConfig::new(reserved, Format::Npt, rdrand_fill);
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
            "init: {} memory ranges, host NPT root {:#x}, {} of {} pool frames, EPC {} pages, crypto {}",
            n,
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
    host::init(ho.leave_tramp, ho.leave_tramp_pa);
    // SAFETY: single writer (INIT runs before any LAUNCH); the bitmaps are page-aligned statics.
    unsafe {
        LEAVE_TRAMP = ho.leave_tramp;
        let m = &mut *core::ptr::addr_of_mut!(MSRPM);
        // 2 bits per MSR (read, write); 0xc0000000.. at 0x800, 0xc0010000.. at 0x1000
        let efer = 0x800 + (0x80 * 2) / 8;
        m.0[efer] |= 1 << ((0x80 * 2) % 8 + 1);
        let hsave = 0x1000 + (0x117 * 2) / 8;
        m.0[hsave] |= 3 << ((0x117 * 2) % 8);
    }
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

fn launch(cpu: usize, linux: &LinuxState) -> i64 {
    // SAFETY: each CPU only touches its own PerCpu slot.
    let pc = unsafe { &mut (*core::ptr::addr_of_mut!(PERCPU))[cpu] };
    let root = {
        lock(&LOCK);
        // SAFETY: under LOCK.
        let r = unsafe { (*core::ptr::addr_of!(HV)).as_ref().and_then(|h| h.host_table()).map(|t| t.root()) };
        unlock(&LOCK);
        match r {
            Some(r) => r,
            None => return -4,
        }
    };
    let efer = cpu::rdmsr(cpu::MSR_EFER);
    cpu::wrmsr(cpu::MSR_EFER, efer | cpu::EFER_SVME);
    cpu::wrmsr(cpu::MSR_VM_HSAVE_PA, pc.hsave.as_ptr() as u64);

    let v = &mut pc.vmcb;
    v.0.fill(0);
    v.w32(off::INTERCEPT_MISC1, intercept::CPUID | intercept::MSR_PROT | intercept::SHUTDOWN);
    v.w32(
        off::INTERCEPT_MISC2,
        intercept::VMRUN | intercept::VMMCALL | intercept::VMLOAD | intercept::VMSAVE | intercept::STGI | intercept::CLGI | intercept::SKINIT,
    );
    // page-aligned statics; identity-mapped, so their addresses are physical
    v.w64(off::IOPM_BASE, core::ptr::addr_of!(IOPM) as u64);
    v.w64(off::MSRPM_BASE, core::ptr::addr_of!(MSRPM) as u64);
    v.w32(off::ASID, 1);
    v.0[off::TLB_CONTROL] = 1;
    v.w64(off::NP_ENABLE, 1);
    v.w64(off::N_CR3, root);

    let gdt = cpu::sgdt();
    let idt = cpu::sidt();
    for (o, sel) in [(off::ES, cpu::es()), (off::CS, cpu::cs()), (off::SS, cpu::ss()), (off::DS, cpu::ds())] {
        let (attrib, limit, base) = vmcb::gdt_segment(gdt.base, sel);
        v.seg(o, sel, attrib, limit, base);
    }
    v.seg(off::GDTR, 0, 0, gdt.limit as u32, gdt.base);
    v.seg(off::IDTR, 0, 0, idt.limit as u32, idt.base);
    v.0[off::CPL] = 0;
    v.w64(off::EFER, efer | cpu::EFER_SVME);
    v.w64(off::CR0, cpu::cr0());
    v.w64(off::CR2, cpu::cr2());
    v.w64(off::CR3, linux.cr3);
    v.w64(off::CR4, cpu::cr4());
    v.w64(off::DR7, 0x400);
    v.w64(off::DR6, 0xffff_0ff0);
    v.w64(off::RFLAGS, 0x2);
    v.w64(off::RIP, linux.rip);
    v.w64(off::RSP, linux.rsp);
    v.w64(off::RAX, 0);
    v.w64(off::G_PAT, cpu::rdmsr(cpu::MSR_PAT));
    pc.regs = GuestRegs::default();
    pc.launched = true;
    LAUNCHED.fetch_add(1, Ordering::SeqCst);

    // From here the host runs on its own GDT/IDT (saved as host state by VMRUN).
    host::load_tables();
    let (hg, hi) = (cpu::sgdt(), cpu::sidt());
    let (hg_base, hi_base) = (hg.base, hi.base);
    log!(
        "cpu{}: VMRUN rip {:#x} rsp {:#x} cr3 {:#x} nCR3 {:#x}; host GDT {:#x} IDT {:#x}, leave CR3 {:#x}",
        cpu, linux.rip, linux.rsp, linux.cr3, root, hg_base, hi_base, host::leave_cr3()
    );
    run(pc, cpu);
    // only reached when the first VMRUN was refused
    host::restore_linux_tables(gdt, idt);
    pc.launched = false;
    LAUNCHED.fetch_sub(1, Ordering::SeqCst);
    cpu::stgi();
    cpu::wrmsr(cpu::MSR_EFER, efer);
    -3
}

fn inject(v: &mut Vmcb, vector: u8, error_code: Option<u32>) {
    let mut e = vector as u64 | (3 << 8) | (1 << 31);
    if let Some(c) = error_code {
        e |= (1 << 11) | ((c as u64) << 32);
    }
    v.w64(off::EVENTINJ, e);
}

fn skip(v: &mut Vmcb, len: u64) {
    let rip = v.r64(off::RIP);
    v.w64(off::RIP, rip + len);
}

/// The exit loop. Returns only if the very first VMRUN is refused.
fn run(pc: &mut PerCpu, cpu: usize) {
    let vmcb_pa = &pc.vmcb as *const Vmcb as u64;
    // SAFETY: this CPU's FX area.
    let fx = unsafe { (*core::ptr::addr_of_mut!(HE_FX)).0[cpu].as_mut_ptr() };
    let mut first = true;
    loop {
        // SAFETY: VMCB, register block and FX area belong to this CPU and stay valid.
        unsafe { entry::he_vmrun(vmcb_pa, &mut pc.regs, fx) };
        pc.exits += 1;
        let v = &mut pc.vmcb;
        let code = v.r64(off::EXITCODE);
        if first {
            first = false;
            v.0[off::TLB_CONTROL] = 0;
            if code == exit::INVALID {
                log!("cpu{}: VMRUN refused (VMEXIT_INVALID): guest state rejected", cpu);
                return;
            }
            log!("cpu{}: running as guest, first exit {:#x}", cpu, code);
        }
        v.w64(off::EVENTINJ, 0);
        let pending = v.r64(off::EXITINTINFO);
        if pending & (1 << 31) != 0 {
            v.w64(off::EVENTINJ, pending);
        }
        match code {
            exit::CPUID => cpuid_exit(pc),
            exit::MSR => msr_exit(pc, cpu),
            exit::VMMCALL => vmmcall_exit(pc, cpu, fx),
            exit::NPF => npf_exit(pc, cpu),
            exit::VMRUN | exit::VMLOAD | exit::VMSAVE | exit::STGI | exit::CLGI | exit::SKINIT => inject(v, 6, None),
            exit::SHUTDOWN => {
                log!("cpu{}: guest shutdown (triple fault) at rip {:#x}", cpu, v.r64(off::RIP));
                cpu::halt_forever();
            }
            other => {
                log!("cpu{}: unexpected exit {:#x} info1 {:#x} info2 {:#x}", cpu, other, v.r64(off::EXITINFO1), v.r64(off::EXITINFO2));
                cpu::halt_forever();
            }
        }
    }
}

fn cpuid_exit(pc: &mut PerCpu) {
    let v = &mut pc.vmcb;
    let leaf = v.r64(off::RAX) as u32;
    let sub = pc.regs.rcx as u32;
    let mut r = cpu::cpuid(leaf, sub);
    match leaf {
        1 => r[2] |= 1 << 31, // hypervisor present
        0x4000_0000 => {
            r = [
                0x4000_0001,
                u32::from_le_bytes(*b"Hype"),
                u32::from_le_bytes(*b"rEnc"),
                u32::from_le_bytes(*b"lave"),
            ]
        }
        0x4000_0001 => r = [ABI_VERSION, 0, 0, 0],
        0x8000_0001 => r[2] &= !(1 << 2), // no SVM for the guest: nested virtualization is not offered
        _ => {}
    }
    v.w64(off::RAX, r[0] as u64);
    pc.regs.rbx = r[1] as u64;
    pc.regs.rcx = r[2] as u64;
    pc.regs.rdx = r[3] as u64;
    skip(v, 2);
}

fn msr_exit(pc: &mut PerCpu, cpu: usize) {
    let v = &mut pc.vmcb;
    let msr = pc.regs.rcx as u32;
    let write = v.r64(off::EXITINFO1) & 1 == 1;
    if write {
        let value = (pc.regs.rdx << 32) | (v.r64(off::RAX) & 0xffff_ffff);
        match msr {
            cpu::MSR_EFER => v.w64(off::EFER, value | cpu::EFER_SVME), // SVME stays on under us
            cpu::MSR_VM_HSAVE_PA => log!("cpu{}: guest write of VM_HSAVE_PA ({:#x}) ignored", cpu, value),
            _ => cpu::wrmsr(msr, value),
        }
    } else {
        let value = match msr {
            cpu::MSR_VM_HSAVE_PA => 0,
            _ => cpu::rdmsr(msr),
        };
        v.w64(off::RAX, value & 0xffff_ffff);
        pc.regs.rdx = value >> 32;
    }
    skip(v, 2);
}

fn vmmcall_exit(pc: &mut PerCpu, cpu: usize, fx: *mut u8) {
    let v = &mut pc.vmcb;
    let mut regs = Regs { rax: v.r64(off::RAX), rdi: pc.regs.rdi, rsi: pc.regs.rsi, rdx: pc.regs.rdx, rcx: pc.regs.rcx, r8: pc.regs.r8 };
    lock(&LOCK);
    // SAFETY: under LOCK.
    let hv = unsafe { (*core::ptr::addr_of_mut!(HV)).as_mut().unwrap() };
    if regs.rax == nr::DISABLE {
        let alive = hv.status().enclaves;
        if alive > 0 {
            unlock(&LOCK);
            v.w64(off::RAX, HcStatus::EnclavesAlive as u64);
            skip(v, 3);
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
                Err((e, detail)) => {
                    unlock(&LOCK);
                    match detail {
                        Some(d) => log!("cpu{}: DISABLE refused: PCR cap failed: {} ({})", cpu, e, d),
                        None => log!("cpu{}: DISABLE refused: PCR cap failed: {}", cpu, e),
                    }
                    v.w64(off::RAX, HcStatus::from(&e) as u64);
                    skip(v, 3);
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
        leave(pc, cpu, fx);
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
        v.w64(off::RAX, regs.rax);
        pc.regs.rdi = regs.rdi;
        pc.regs.rsi = regs.rsi;
        pc.regs.rdx = regs.rdx;
        skip(v, 3);
        return;
    }
    if regs.rax == nr::ENCLAVE_CALL {
        // runs enclave code: the lock is taken only around core state, not while the enclave runs
        unlock(&LOCK);
        let (st, out) = enclave_vm::call(&LOCK, hv as *mut Hv, cpu, regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8);
        v.w64(off::RAX, st as u64);
        pc.regs.rdi = out;
        skip(v, 3);
        return;
    }
    iommu::poll(hv); // DMA faults reach STATUS before it is read
    // SAFETY: as above; dispatch checks every buffer page against the host tables first.
    let mut guest = unsafe { DirectMem::new(0, MemRange::new(0, GUEST_SPAN, MemKind::Ram)) };
    let destroyed = (regs.rax == nr::ENCLAVE_DESTROY).then_some(regs.rdi as u32);
    let st = dispatch(hv, &mut regs, &mut guest);
    if let (Some(id), HcStatus::Success) = (destroyed, st) {
        enclave_vm::forget(id);
    }
    unlock(&LOCK);
    v.w64(off::RAX, regs.rax);
    pc.regs.rdi = regs.rdi;
    pc.regs.rsi = regs.rsi;
    pc.regs.rdx = regs.rdx;
    skip(v, 3);
}

fn npf_exit(pc: &mut PerCpu, cpu: usize) {
    let v = &mut pc.vmcb;
    let err = v.r64(off::EXITINFO1);
    let gpa = v.r64(off::EXITINFO2);
    let access = if err & 0x10 != 0 {
        Access::Execute
    } else if err & 0x2 != 0 {
        Access::Write
    } else {
        Access::Read
    };
    lock(&LOCK);
    // SAFETY: under LOCK.
    let r = unsafe { (*core::ptr::addr_of_mut!(HV)).as_mut().unwrap().host_access(gpa, access) };
    unlock(&LOCK);
    match r {
        Ok(()) => {
            // mapped: a stale translation; retry a few times, then treat it as refused
            if pc.npf_last == gpa {
                pc.npf_repeat += 1;
            } else {
                pc.npf_last = gpa;
                pc.npf_repeat = 0;
            }
            if pc.npf_repeat >= NPF_RETRY_LIMIT {
                log!("cpu{}: nested fault at {:#x} repeats on a mapped page: #GP", cpu, gpa);
                inject(v, 13, Some(0));
            }
        }
        Err(f) if (tis::HIDDEN.0..tis::HIDDEN.1).contains(&gpa) => {
            log!(
                "cpu{}: host access to TPM locality {} at {:#x} refused (rip {:#x}): #GP injected",
                cpu,
                (gpa - tis::TIS_BASE) / tis::LOCALITY_STRIDE,
                f.gpa,
                v.r64(off::RIP)
            );
            inject(v, 13, Some(0));
        }
        Err(f) => {
            log!("cpu{}: {} (rip {:#x}): #GP injected", cpu, f, v.r64(off::RIP));
            inject(v, 13, Some(0));
        }
    }
}

/// Hands this CPU back to Linux right after its VMMCALL(DISABLE), with status SUCCESS.
fn leave(pc: &mut PerCpu, cpu: usize, fx: *mut u8) -> ! {
    let v = &pc.vmcb;
    let frame = LeaveFrame {
        cr3: v.r64(off::CR3),
        rsp: v.r64(off::RSP),
        rip: v.r64(off::RIP) + 3,
        rflags: v.r64(off::RFLAGS),
        rax: 0,
        // SAFETY: written once by INIT.
        tramp: unsafe { LEAVE_TRAMP },
        leave_cr3: host::leave_cr3(),
    };
    let linux_table = |o: usize| cpu::DescTable { limit: v.r64(o + 4) as u32 as u16, base: v.r64(o + 8) };
    let (gdt, idt) = (linux_table(off::GDTR), linux_table(off::IDTR));
    let efer = v.r64(off::EFER) & !cpu::EFER_SVME;
    cpu::write_cr0(v.r64(off::CR0));
    cpu::write_cr4(v.r64(off::CR4));
    pc.launched = false;
    log!("cpu{}: handed back to Linux after {} exits", cpu, pc.exits);
    cpu::stgi();
    cpu::wrmsr(cpu::MSR_EFER, efer);
    host::restore_linux_tables(gdt, idt);
    // SAFETY: frame and registers describe the guest exactly as it trapped.
    unsafe { entry::he_leave(&frame, &pc.regs, fx) }
}
