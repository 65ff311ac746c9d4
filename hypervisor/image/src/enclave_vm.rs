//! ENCLAVE_CALL: runs an enclave thread as a second guest on the calling CPU (a VMCB on SVM, a
//! VMCS on VMX: the backend's `ThreadVm`, vcpu::EnclaveVcpu; everything here is vendor-neutral),
//! with the enclave's own nested tables (EPC pages at GPA = linear address, from hypervisor/core) plus
//! four runner pages (guest PML4 and PDPT identity-mapping 512 GiB with 1 GiB pages, the
//! mailbox and the 4 KiB shared buffer). The register and port protocol is the enclave
//! runtime's (hypervisor/enclaves/rt, hypervisor/addon/src/runner.rs), so the same payloads run
//! here and on KVM:
//! - first entry: RIP = base + OENTRY, RDI = ECALL number, RSI = shared buffer, RDX = input
//!   length, RCX = capacity, R8 = mailbox; mailbox FUNC, IN_LEN, SHARED, CAP;
//! - `in al, 0x10` = EEXIT with the status in the mailbox; the thread parks there and the next
//!   ECALL resumes it with AL = ECALL number; `out 0x10, eax` ends without parking;
//! - `in eax, 0x12` = EGETKEY/EREPORT served by the core; `in eax, 0x11` = OCALL (refused);
//!   `out 0x13, eax` = panic.
//! Every exception, HLT, CPUID, MSR access, virtualization instruction and nested fault ends the thread
//! with one log line. A physical interrupt (or NMI) exits to here and the thread is parked
//! mid-ECALL (AEX): the caller gets ENCLAVE_INTERRUPTED and calls again to resume, or aborts.

use core::sync::atomic::AtomicBool;

use crate::backend::ThreadVm;
use crate::entry::GuestRegs;
use crate::vcpu::{EnclaveExit, EnclaveVcpu};
use crate::{lock, unlock, Console, Hv, PRINT};
use core::fmt::Write;
use hyperenclave_core::enclave::runtime::{hc, mb, ECALL_ERROR, ERR_OCALL, PORT_EEXIT, PORT_HYPERCALL, PORT_OCALL, PORT_PANIC};
use hyperenclave_core::{Access, HcStatus, HvError, Perms, TargetInfo};

const SLOTS: usize = 4;
const PAGE: u64 = 4096;
/// R8 = ABORT on an interrupted call ends that thread (the caller's watchdog).
pub const ABORT: u64 = u64::MAX;

const OCALL_UNSUPPORTED: u64 = ECALL_ERROR | ERR_OCALL;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    /// Allocated; the next call enters at OENTRY.
    Fresh,
    /// Parked at its EEXIT; the next call resumes it with AL = ECALL number.
    Parked,
    /// Running on some CPU.
    Running,
    /// Parked mid-ECALL by an interrupt; the next call resumes it as it was.
    Interrupted,
    /// Faulted: refused until the enclave is destroyed.
    Dead,
}

#[repr(C, align(4096))]
struct RunnerPages {
    pml4: [u64; 512],
    pdpt: [u64; 512],
    mailbox: [u64; 512],
    shared: [u8; 4096],
}

#[repr(C, align(4096))]
struct Ctx {
    vm: ThreadVm,
    fx: [u8; 512],
    regs: GuestRegs,
    state: State,
    id: u32,
    tcs: u64,
    /// The caller's buffer (host physical) of the call in progress.
    buf: u64,
    asid_fresh: bool,
}

const PAGES_INIT: RunnerPages = RunnerPages { pml4: [0; 512], pdpt: [0; 512], mailbox: [0; 512], shared: [0; 4096] };
const CTX_INIT: Ctx = Ctx { vm: ThreadVm::INIT, fx: [0; 512], regs: GuestRegs { rbx: 0, rcx: 0, rdx: 0, rsi: 0, rdi: 0, rbp: 0, r8: 0, r9: 0, r10: 0, r11: 0, r12: 0, r13: 0, r14: 0, r15: 0 }, state: State::Free, id: 0, tcs: 0, buf: 0, asid_fresh: false };

static mut PAGES: [RunnerPages; SLOTS] = [PAGES_INIT; SLOTS];
static mut CTX: [Ctx; SLOTS] = [CTX_INIT; SLOTS];
/// Guards CTX slot states (slot contents belong to whoever moved it to Running).
static SLOTS_LOCK: AtomicBool = AtomicBool::new(false);

fn pa<T>(p: *const T) -> u64 {
    p as u64 // the image runs identity-mapped
}

/// What the exit loop decided.
enum Outcome {
    /// EEXIT: ECALL status; `parked` when the thread waits at its EEXIT for the next ECALL.
    Done { status: u64, parked: bool },
    Interrupted,
    Fault,
}

/// ENCLAVE_CALL from `cpu`. Returns (status, RDI). `hv_lock` is the global hypervisor lock.
pub fn call(hv_lock: &AtomicBool, hv: *mut Hv, cpu: usize, id: u64, tcs: u64, func: u64, buf: u64, len: u64) -> (HcStatus, u64) {
    let Ok(id) = u32::try_from(id) else { return (HcStatus::NoSuchEnclave, 0) };
    lock(&SLOTS_LOCK);
    // SAFETY: slot states are only read or changed under SLOTS_LOCK.
    let ctxs = unsafe { &mut *core::ptr::addr_of_mut!(CTX) };
    let slot = match ctxs.iter().position(|c| c.state != State::Free && c.id == id && c.tcs == tcs) {
        Some(i) => i,
        None => match ctxs.iter().position(|c| c.state == State::Free) {
            Some(i) => {
                ctxs[i].state = State::Fresh;
                ctxs[i].id = id;
                ctxs[i].tcs = tcs;
                ctxs[i].asid_fresh = true;
                // map the runner pages into this enclave's nested tables (once per slot and enclave)
                lock(hv_lock);
                // SAFETY: under the hypervisor lock.
                let r = unsafe { map_runner_pages(&mut *hv, id, i) };
                unlock(hv_lock);
                if let Err(e) = r {
                    ctxs[i].state = State::Free;
                    unlock(&SLOTS_LOCK);
                    log!("cpu{}: ENCLAVE_CALL enclave {}: runner pages: {}", cpu, id, e);
                    return (HcStatus::from(&e), 0);
                }
                i
            }
            None => {
                unlock(&SLOTS_LOCK);
                return (HcStatus::EnclaveBusy, 0);
            }
        },
    };
    let ctx = &mut ctxs[slot];
    let prior = ctx.state;
    match prior {
        State::Running => {
            unlock(&SLOTS_LOCK);
            return (HcStatus::TcsBusy, 0);
        }
        State::Dead => {
            unlock(&SLOTS_LOCK);
            return (HcStatus::EnclaveFault, 0);
        }
        State::Interrupted if len == ABORT => {
            ctx.state = State::Dead;
            unlock(&SLOTS_LOCK);
            end_thread(hv_lock, hv, id, tcs);
            log!("cpu{}: enclave {} TCS {:#x}: interrupted ECALL aborted by the caller", cpu, id, tcs);
            return (HcStatus::EnclaveFault, 0);
        }
        _ => {}
    }
    ctx.state = State::Running;
    unlock(&SLOTS_LOCK);
    // SAFETY: slot `slot` is ours while Running; its pages likewise.
    let pages = unsafe { &mut (*core::ptr::addr_of_mut!(PAGES))[slot] };

    // Every call, a resume too, names the page the output goes to: it must be the host's own RAM.
    if (prior != State::Interrupted && len > PAGE) || buf % PAGE != 0 {
        return finish(ctx, prior, (HcStatus::InvalidArgument, 0));
    }
    lock(hv_lock);
    // SAFETY: under the hypervisor lock.
    let allowed = unsafe { (*hv).host_access(buf, Access::Write) }.is_ok();
    unlock(hv_lock);
    if !allowed {
        return finish(ctx, prior, (HcStatus::HostAccessDenied, 0));
    }
    if prior != State::Interrupted {
        lock(hv_lock);
        // SAFETY: under the hypervisor lock.
        let entered = unsafe { (*hv).enter(id, tcs) };
        unlock(hv_lock);
        let entry = match entered {
            Ok(e) => e,
            Err(e) => return finish(ctx, prior, (HcStatus::from(&e), 0)),
        };
        // SAFETY: the host allowed this page of its own RAM; identity-mapped.
        unsafe { core::ptr::copy_nonoverlapping(buf as *const u8, pages.shared.as_mut_ptr(), len as usize) };
        pages.mailbox[mb::FUNC] = func;
        pages.mailbox[mb::IN_LEN] = len;
        pages.mailbox[mb::STATUS] = 0;
        pages.mailbox[mb::SHARED] = pa(pages.shared.as_ptr());
        pages.mailbox[mb::CAP] = PAGE;
        if prior == State::Fresh {
            first_entry(ctx, slot, entry.entry, entry.tcs, entry.nested_pointer, (entry.fs_base, entry.gs_base), func, len, pa(pages.pml4.as_ptr()), pa(pages.mailbox.as_ptr()), pa(pages.shared.as_ptr()));
        } else {
            // parked at `in al, 0x10`: AL = ECALL number
            let rax = ctx.vm.rax();
            ctx.vm.set_rax((rax & !0xff) | (func & 0xff));
        }
    }
    ctx.buf = buf;

    let outcome = run(ctx, cpu, hv_lock, hv, pages);
    match outcome {
        Outcome::Done { status, parked } => {
            if status < ECALL_ERROR && status <= PAGE {
                // SAFETY: checked host page (above), identity-mapped.
                unsafe { core::ptr::copy_nonoverlapping(pages.shared.as_ptr(), ctx.buf as *mut u8, status as usize) };
            }
            end_thread(hv_lock, hv, id, tcs);
            finish(ctx, if parked { State::Parked } else { State::Fresh }, (HcStatus::Success, status))
        }
        Outcome::Interrupted => finish(ctx, State::Interrupted, (HcStatus::EnclaveInterrupted, 0)),
        Outcome::Fault => {
            end_thread(hv_lock, hv, id, tcs);
            finish(ctx, State::Dead, (HcStatus::EnclaveFault, 0))
        }
    }
}

fn finish(ctx: &mut Ctx, next: State, r: (HcStatus, u64)) -> (HcStatus, u64) {
    lock(&SLOTS_LOCK);
    ctx.state = next;
    unlock(&SLOTS_LOCK);
    r
}

fn end_thread(hv_lock: &AtomicBool, hv: *mut Hv, id: u32, tcs: u64) {
    lock(hv_lock);
    // SAFETY: under the hypervisor lock.
    let _ = unsafe { (*hv).exit(id, tcs) };
    unlock(hv_lock);
}

/// After ENCLAVE_DESTROY: the enclave's threads and runner pages are gone with it.
pub fn forget(id: u32) {
    lock(&SLOTS_LOCK);
    // SAFETY: under SLOTS_LOCK.
    for c in unsafe { (*core::ptr::addr_of_mut!(CTX)).iter_mut() } {
        if c.state != State::Free && c.id == id {
            c.state = State::Free;
        }
    }
    unlock(&SLOTS_LOCK);
}

fn map_runner_pages(hv: &mut Hv, id: u32, slot: usize) -> Result<(), HvError> {
    // SAFETY: the slot was just allocated under SLOTS_LOCK; nobody else touches its pages.
    let p = unsafe { &mut (*core::ptr::addr_of_mut!(PAGES))[slot] };
    const P: u64 = 1;
    const RW: u64 = 2;
    const US: u64 = 4;
    const A: u64 = 1 << 5;
    const D: u64 = 1 << 6;
    const PS: u64 = 1 << 7;
    // Writable in the nested tables: the walker may set A/D bits (QEMU's does even when preset).
    // The enclave can only remap itself onto GPAs its nested tables map anyway.
    p.pml4.fill(0);
    p.pml4[0] = pa(p.pdpt.as_ptr()) | P | RW | US | A;
    for (i, e) in p.pdpt.iter_mut().enumerate() {
        *e = ((i as u64) << 30) | P | RW | US | A | D | PS;
    }
    for (gpa, perms) in [(pa(p.pml4.as_ptr()), Perms::RW), (pa(p.pdpt.as_ptr()), Perms::RW), (pa(p.mailbox.as_ptr()), Perms::RW), (pa(p.shared.as_ptr()), Perms::RW)] {
        match hv.map_runner_page(id, gpa, gpa, perms) {
            Ok(()) | Err(HvError::AlreadyMapped { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn first_entry(ctx: &mut Ctx, slot: usize, rip: u64, tcs_la: u64, ncr3: u64, fs_gs: (u64, u64), func: u64, len: u64, cr3: u64, mailbox: u64, shared: u64) {
    ctx.vm.setup(slot, ctx.asid_fresh, rip, cr3, ncr3, fs_gs);
    ctx.asid_fresh = false;
    ctx.regs = GuestRegs { rbx: tcs_la, rcx: PAGE, rdx: len, rsi: shared, rdi: func, r8: mailbox, ..GuestRegs::default() };
    ctx.fx.fill(0);
    ctx.fx[0..2].copy_from_slice(&0x037fu16.to_le_bytes()); // FCW
    ctx.fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes()); // MXCSR: all SIMD exceptions masked
}

fn run(ctx: &mut Ctx, cpu: usize, hv_lock: &AtomicBool, hv: *mut Hv, pages: &mut RunnerPages) -> Outcome {
    let (id, tcs) = (ctx.id, ctx.tcs);
    let mut exits = 0u64;
    loop {
        let outcome = ctx.vm.run(&mut ctx.regs, ctx.fx.as_mut_ptr());
        exits += 1;
        let v = &mut ctx.vm;
        let rip = v.rip();
        match outcome {
            EnclaveExit::Io { port, input, next } => match (port, input) {
                (PORT_EEXIT, true) => {
                    v.set_rip(next);
                    return Outcome::Done { status: pages.mailbox[mb::STATUS], parked: true };
                }
                (PORT_EEXIT, false) => {
                    let status = v.rax() & 0xffff_ffff;
                    return Outcome::Done { status, parked: false };
                }
                (PORT_HYPERCALL, true) => {
                    lock(hv_lock);
                    // SAFETY: under the hypervisor lock.
                    let r = unsafe { enclave_hypercall(&mut *hv, id, &pages.mailbox) };
                    unlock(hv_lock);
                    v.set_rax(r);
                    v.set_rip(next);
                }
                (PORT_OCALL, true) => {
                    v.set_rax(OCALL_UNSUPPORTED);
                    v.set_rip(next);
                }
                (PORT_PANIC, false) => {
                    let n = core::cmp::min(v.rax() & 0xffff_ffff, 200) as usize;
                    let msg = core::str::from_utf8(&pages.shared[..n]).unwrap_or("(not UTF-8)");
                    log!("cpu{}: enclave {} TCS {:#x} panicked: {}", cpu, id, tcs, msg);
                    return Outcome::Fault;
                }
                _ => {
                    log!("cpu{}: enclave {} TCS {:#x}: port I/O to {:#x} at rip {:#x}: thread ended", cpu, id, tcs, port, rip);
                    return Outcome::Fault;
                }
            },
            EnclaveExit::Interrupt => return Outcome::Interrupted,
            EnclaveExit::Exception { vector, info } => {
                log!(
                    "cpu{}: enclave {} TCS {:#x}: exception {} at rip {:#x} (info {:#x} {:#x}) after {} exits: thread ended",
                    cpu, id, tcs, vector_name(vector), rip, info.0, info.1, exits
                );
                return Outcome::Fault;
            }
            EnclaveExit::NestedFault { gpa, info } => {
                log!("cpu{}: enclave {} TCS {:#x}: nested page fault at gpa {:#x} (error {:#x}) rip {:#x}: outside the enclave, thread ended", cpu, id, tcs, gpa, info, rip);
                return Outcome::Fault;
            }
            EnclaveExit::Hlt => {
                log!("cpu{}: enclave {} TCS {:#x}: HLT at rip {:#x}: thread ended", cpu, id, tcs, rip);
                return Outcome::Fault;
            }
            EnclaveExit::Invalid(code) => {
                log!("cpu{}: enclave {}: the CPU refused the enclave state ({:#x})", cpu, id, code);
                return Outcome::Fault;
            }
            EnclaveExit::Other(code) => {
                log!("cpu{}: enclave {} TCS {:#x}: exit {:#x} (CPUID/MSR/virtualization instruction or shutdown) at rip {:#x}: thread ended", cpu, id, tcs, code, rip);
                return Outcome::Fault;
            }
        }
    }
}

fn vector_name(v: u64) -> &'static str {
    match v {
        0 => "#DE",
        1 => "#DB",
        3 => "#BP",
        6 => "#UD",
        8 => "#DF",
        13 => "#GP",
        14 => "#PF",
        17 => "#AC",
        19 => "#XM",
        _ => "exception",
    }
}

/// EGETKEY / EREPORT for the enclave; buffers are enclave linear addresses checked through its
/// own nested tables. Returns the runtime's status (0 = done).
fn enclave_hypercall(hv: &mut Hv, id: u32, mbx: &[u64; 512]) -> u64 {
    let (a0, a1, a2) = (mbx[mb::A0], mbx[mb::A1], mbx[mb::A2]);
    let r = match mbx[mb::NR] {
        hc::EGETKEY => {
            let mut req = [0u8; 80];
            copy_in(hv, id, a0, &mut req).and_then(|_| hv.get_key(id, &req).map_err(|e| HcStatus::from(&e) as u64)).and_then(|key| copy_out(hv, id, a1, &key))
        }
        hc::EREPORT => {
            let (mut ti, mut data) = ([0u8; 56], [0u8; 64]);
            copy_in(hv, id, a0, &mut ti)
                .and_then(|_| copy_in(hv, id, a1, &mut data))
                .and_then(|_| TargetInfo::from_bytes(&ti).and_then(|t| hv.report(id, &t, &data)).map_err(|e| HcStatus::from(&e) as u64))
                .and_then(|rep| copy_out(hv, id, a2, &rep))
        }
        _ => Err(HcStatus::UnknownCall as u64),
    };
    match r {
        Ok(()) => 0,
        Err(code) => code,
    }
}

/// Calls `f(hpa, offset, n)` for each piece of [la, la+len) within one page, translated through
/// the enclave's own nested tables for `access`.
fn each_page(hv: &Hv, id: u32, la: u64, len: usize, access: Access, mut f: impl FnMut(u64, usize, usize)) -> Result<(), u64> {
    let mut done = 0;
    while done < len {
        let at = la.wrapping_add(done as u64);
        let n = core::cmp::min(len - done, (PAGE - at % PAGE) as usize);
        match hv.enclave_access(id, at, access) {
            Ok(Ok(hpa)) => f(hpa, done, n),
            _ => return Err(hc::STATUS_BAD_POINTER),
        }
        done += n;
    }
    Ok(())
}

fn copy_in(hv: &Hv, id: u32, la: u64, out: &mut [u8]) -> Result<(), u64> {
    let len = out.len();
    // SAFETY: an EPC page of this enclave (or one of its runner pages), identity-mapped.
    each_page(hv, id, la, len, Access::Read, |hpa, at, n| unsafe { core::ptr::copy_nonoverlapping(hpa as *const u8, out[at..].as_mut_ptr(), n) })
}

fn copy_out(hv: &Hv, id: u32, la: u64, data: &[u8]) -> Result<(), u64> {
    // SAFETY: as copy_in, and the enclave's tables allow writing there.
    each_page(hv, id, la, data.len(), Access::Write, |hpa, at, n| unsafe { core::ptr::copy_nonoverlapping(data[at..].as_ptr(), hpa as *mut u8, n) })
}
