//! ENCLAVE_CALL: runs an enclave thread as a second guest on the calling CPU (a VMCB on SVM, a
//! VMCS on VMX: the backend's `ThreadVm`, vcpu::EnclaveVcpu; everything here is vendor-neutral),
//! with the enclave's own nested tables (EPC pages at GPA = linear address, from hypervisor/core) plus
//! four runner pages (guest PML4 and PDPT identity-mapping 512 GiB with 1 GiB pages, the
//! mailbox and the 4 KiB shared buffer).
//! Threads live in runner slots: `SLOTS_PER_CPU` in every CPU's area (handoff v3), so the number
//! of threads that may be parked or running at once is sized at launch (4 × CPU slots), and a
//! thread may run on any CPU (threads of one enclave run on several CPUs at once). The register and port protocol is the enclave
//! runtime's (hypervisor/enclaves/rt, hypervisor/addon/src/runner.rs), so the same payloads run
//! here and on KVM:
//! - first entry: RIP = base + OENTRY, RDI = ECALL number, RSI = shared buffer, RDX = input
//!   length, RCX = capacity, R8 = mailbox; mailbox FUNC, IN_LEN, SHARED, CAP;
//! - `in al, 0x10` = EEXIT with the status in the mailbox; the thread parks there and the next
//!   ECALL resumes it with AL = ECALL number; `out 0x10, eax` ends without parking;
//! - `in eax, 0x12` = EGETKEY/EREPORT served by the core; `out 0x13, eax` = panic;
//! - `in eax, 0x11` = OCALL: the thread parks in its OCALL and the call returns ENCLAVE_OCALL
//!   (RDI = mailbox NR, RSI = mailbox LEN, the input copied to the caller's buffer); the host's
//!   ENCLAVE_OCALL_RETURN copies its output into the shared buffer and resumes the thread with
//!   EAX = the answer. An ECALL into a TCS parked in an OCALL is TCS_BUSY.
//! Every exception, HLT, CPUID, MSR access, virtualization instruction and nested fault ends the thread
//! with one log line. A physical interrupt (or NMI) exits to here and the thread is parked
//! mid-ECALL (AEX): the caller gets ENCLAVE_INTERRUPTED and calls again to resume, or aborts.

use core::sync::atomic::AtomicBool;

use crate::backend::ThreadVm;
use crate::entry::GuestRegs;
use crate::vcpu::{EnclaveExit, EnclaveVcpu};
use crate::{lock, unlock, Console, Hv, PRINT};
use core::fmt::Write;
use core::sync::atomic::Ordering;
use hyperenclave_core::enclave::runtime::{edmm_hc, gpr, hc, mb, ECALL_ERROR, ERESUME_ABORT, ERESUME_CONTINUE, ERR_OCALL, PORT_EEXIT, PORT_ERESUME, PORT_HYPERCALL, PORT_OCALL, PORT_PANIC};
use hyperenclave_core::enclave::ssa::{self, Gpr};
use hyperenclave_core::{Access, EntryInfo, HcStatus, HvError, Perms, TargetInfo};

/// Runner slots in each CPU's area.
pub const SLOTS_PER_CPU: usize = 4;
/// Bytes of one slot (page multiple).
pub const SLOT_BYTES: u64 = (core::mem::size_of::<Slot>() as u64 + 4095) & !4095;
/// The runner slots of one CPU's area (entry.rs reserves this much after the backend's state).
pub const PERCPU_RUNNER_BYTES: u64 = SLOTS_PER_CPU as u64 * SLOT_BYTES;
const PAGE: u64 = 4096;
/// R8 = ABORT on an interrupted call ends that thread (the caller's watchdog); ENCLAVE_OCALL_RETURN
/// with RDX = ABORT ends a thread parked in an OCALL.
pub const ABORT: u64 = u64::MAX;

/// The answer an enclave gets for an OCALL whose input length exceeds the shared buffer.
const OCALL_REFUSED: u64 = ECALL_ERROR | ERR_OCALL;

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
    /// Parked in an OCALL; ENCLAVE_OCALL_RETURN resumes it with the host's answer.
    Ocall,
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
    /// The CPU the thread last ran on (usize::MAX: none): a move flushes the tag's TLB there.
    last_cpu: usize,
    /// RFLAGS.IF at each AEX still to be resumed (bit n: CSSA n), for ERESUME's check.
    aex_if: u64,
    /// Set when the enclave's page permissions shrank (EDMM): flush the tag at the next entry.
    tlb_stale: AtomicBool,
}

/// One runner slot: a thread's runner pages and its guest.
#[repr(C, align(4096))]
pub(crate) struct Slot {
    pages: RunnerPages,
    ctx: Ctx,
}

const CTX_INIT: Ctx = Ctx {
    vm: ThreadVm::INIT,
    fx: [0; 512],
    regs: GuestRegs { rbx: 0, rcx: 0, rdx: 0, rsi: 0, rdi: 0, rbp: 0, r8: 0, r9: 0, r10: 0, r11: 0, r12: 0, r13: 0, r14: 0, r15: 0 },
    state: State::Free,
    id: 0,
    tcs: 0,
    buf: 0,
    asid_fresh: false,
    last_cpu: usize::MAX,
    aex_if: 0,
    tlb_stale: AtomicBool::new(false),
};

/// Slots in use by this launch (CPU slots × SLOTS_PER_CPU), set by `init_slots`.
static mut NSLOTS: usize = 0;
/// Guards slot states (slot contents belong to whoever moved it to Running or parked it).
static SLOTS_LOCK: AtomicBool = AtomicBool::new(false);

fn slot_ptr(i: usize) -> *mut Slot {
    crate::percpu_runners(i / SLOTS_PER_CPU).wrapping_add((i % SLOTS_PER_CPU) * SLOT_BYTES as usize) as *mut Slot
}

/// INIT (before any LAUNCH, no enclave alive): every slot of every CPU's area free.
pub fn init_slots(cpu_slots: usize) {
    lock(&SLOTS_LOCK);
    let n = cpu_slots * SLOTS_PER_CPU;
    for i in 0..n {
        // SAFETY: the slot lies in a CPU area the driver reserved for this launch (entry.rs checked
        // its size); no CPU runs an enclave thread during INIT. Written whole, never read before.
        unsafe { core::ptr::addr_of_mut!((*slot_ptr(i)).ctx).write(CTX_INIT) };
    }
    // SAFETY: under SLOTS_LOCK; INIT runs before any LAUNCH.
    unsafe { NSLOTS = n };
    unlock(&SLOTS_LOCK);
}

/// The slots, under SLOTS_LOCK.
fn ctx_at(i: usize) -> &'static mut Ctx {
    // SAFETY: i < NSLOTS (callers iterate 0..NSLOTS); initialised by init_slots.
    unsafe { &mut (*slot_ptr(i)).ctx }
}

fn nslots() -> usize {
    // SAFETY: written once per INIT, before any LAUNCH.
    unsafe { NSLOTS }
}

fn pa<T>(p: *const T) -> u64 {
    p as u64 // the image runs identity-mapped
}

/// What the exit loop decided.
enum Outcome {
    /// EEXIT: ECALL status; `parked` when the thread waits at its EEXIT for the next ECALL.
    Done { status: u64, parked: bool },
    /// OCALL `nr` with `len` bytes of input in the shared buffer (RIP already past the `in`).
    Ocall { nr: u64, len: u64 },
    Interrupted,
    Fault,
    /// ERESUME from a frame that failed `ssa::validate_resume`: the thread ends.
    SsaInvalid,
}

/// What a call returns: status, RDI, RSI.
pub type Answer = (HcStatus, u64, u64);

/// Finds the slot of (id, tcs) or allocates one (mapping its runner pages into the enclave).
fn find_or_alloc(hv_lock: &AtomicBool, hv: *mut Hv, cpu: usize, id: u32, tcs: u64, alloc: bool) -> Result<usize, HcStatus> {
    let n = nslots();
    if let Some(i) = (0..n).find(|&i| {
        let c = ctx_at(i);
        c.state != State::Free && c.id == id && c.tcs == tcs
    }) {
        return Ok(i);
    }
    if !alloc {
        return Err(HcStatus::TcsNotEntered);
    }
    let Some(i) = (0..n).find(|&i| ctx_at(i).state == State::Free) else {
        log!("cpu{}: ENCLAVE_CALL enclave {} TCS {:#x}: all {} runner slots hold threads", cpu, id, tcs, n);
        return Err(HcStatus::EnclaveBusy);
    };
    let c = ctx_at(i);
    c.state = State::Fresh;
    c.id = id;
    c.tcs = tcs;
    c.asid_fresh = true;
    c.last_cpu = usize::MAX;
    // map the runner pages into this enclave's nested tables (once per slot and enclave)
    lock(hv_lock);
    // SAFETY: under the hypervisor lock.
    let r = unsafe { map_runner_pages(&mut *hv, id, i) };
    unlock(hv_lock);
    if let Err(e) = r {
        c.state = State::Free;
        log!("cpu{}: ENCLAVE_CALL enclave {}: runner pages: {}", cpu, id, e);
        return Err(HcStatus::from(&e));
    }
    Ok(i)
}

/// The caller's buffer page must be its own RAM (every call names it, a resume too).
fn host_page_ok(hv_lock: &AtomicBool, hv: *mut Hv, buf: u64) -> Result<(), HcStatus> {
    if buf % PAGE != 0 {
        return Err(HcStatus::InvalidArgument);
    }
    lock(hv_lock);
    // SAFETY: under the hypervisor lock.
    let allowed = unsafe { (*hv).host_access(buf, Access::Write) }.is_ok();
    unlock(hv_lock);
    if allowed {
        Ok(())
    } else {
        Err(HcStatus::HostAccessDenied)
    }
}

/// ENCLAVE_CALL from `cpu`. `hv_lock` is the global hypervisor lock.
pub fn call(hv_lock: &AtomicBool, hv: *mut Hv, cpu: usize, id: u64, tcs: u64, func: u64, buf: u64, len: u64) -> Answer {
    let Ok(id) = u32::try_from(id) else { return (HcStatus::NoSuchEnclave, 0, 0) };
    lock(&SLOTS_LOCK);
    let slot = match find_or_alloc(hv_lock, hv, cpu, id, tcs, true) {
        Ok(i) => i,
        Err(st) => {
            unlock(&SLOTS_LOCK);
            return (st, 0, 0);
        }
    };
    let ctx = ctx_at(slot);
    let prior = ctx.state;
    match prior {
        State::Running | State::Ocall => {
            unlock(&SLOTS_LOCK);
            return (HcStatus::TcsBusy, 0, 0);
        }
        State::Dead => {
            unlock(&SLOTS_LOCK);
            return (HcStatus::EnclaveFault, 0, 0);
        }
        State::Interrupted if len == ABORT => {
            ctx.state = State::Dead;
            unlock(&SLOTS_LOCK);
            end_thread(hv_lock, hv, id, tcs);
            log!("cpu{}: enclave {} TCS {:#x}: interrupted ECALL aborted by the caller", cpu, id, tcs);
            return (HcStatus::EnclaveFault, 0, 0);
        }
        _ => {}
    }
    ctx.state = State::Running;
    unlock(&SLOTS_LOCK);
    // SAFETY: slot `slot` is ours while Running; its pages likewise.
    let pages = unsafe { &mut (*slot_ptr(slot)).pages };

    if prior != State::Interrupted && len > PAGE {
        return finish(ctx, prior, (HcStatus::InvalidArgument, 0, 0));
    }
    if let Err(st) = host_page_ok(hv_lock, hv, buf) {
        return finish(ctx, prior, (st, 0, 0));
    }
    if prior != State::Interrupted {
        lock(hv_lock);
        // SAFETY: under the hypervisor lock.
        let entered = unsafe { (*hv).enter(id, tcs) };
        unlock(hv_lock);
        let entry = match entered {
            Ok(e) => e,
            Err(e) => return finish(ctx, prior, (HcStatus::from(&e), 0, 0)),
        };
        // SAFETY: the host allowed this page of its own RAM; identity-mapped.
        unsafe { core::ptr::copy_nonoverlapping(buf as *const u8, pages.shared.as_mut_ptr(), len as usize) };
        pages.mailbox[mb::FUNC] = func;
        pages.mailbox[mb::IN_LEN] = len;
        pages.mailbox[mb::STATUS] = 0;
        pages.mailbox[mb::SHARED] = pa(pages.shared.as_ptr());
        pages.mailbox[mb::CAP] = PAGE;
        if prior == State::Fresh {
            first_entry(ctx, slot, &entry, func, len, pa(pages.pml4.as_ptr()), pa(pages.mailbox.as_ptr()), pa(pages.shared.as_ptr()));
        } else {
            // parked at `in al, 0x10`: AL = ECALL number
            let rax = ctx.vm.rax();
            ctx.vm.set_rax((rax & !0xff) | (func & 0xff));
        }
    }
    ctx.buf = buf;
    run_thread(ctx, pages, cpu, hv_lock, hv)
}

/// ENCLAVE_OCALL_RETURN from `cpu`: `answer` = output length (output at the start of `buf`) or
/// 0x8000_0000 | code, or ABORT.
pub fn ocall_return(hv_lock: &AtomicBool, hv: *mut Hv, cpu: usize, id: u64, tcs: u64, answer: u64, buf: u64) -> Answer {
    let Ok(id) = u32::try_from(id) else { return (HcStatus::NoSuchEnclave, 0, 0) };
    lock(&SLOTS_LOCK);
    let slot = match find_or_alloc(hv_lock, hv, cpu, id, tcs, false) {
        Ok(i) if ctx_at(i).state == State::Ocall => i,
        Ok(i) if ctx_at(i).state == State::Running => {
            unlock(&SLOTS_LOCK);
            return (HcStatus::TcsBusy, 0, 0);
        }
        _ => {
            unlock(&SLOTS_LOCK);
            return (HcStatus::TcsNotEntered, 0, 0);
        }
    };
    let ctx = ctx_at(slot);
    if answer == ABORT {
        ctx.state = State::Dead;
        unlock(&SLOTS_LOCK);
        end_thread(hv_lock, hv, id, tcs);
        log!("cpu{}: enclave {} TCS {:#x}: OCALL aborted by the caller", cpu, id, tcs);
        return (HcStatus::EnclaveFault, 0, 0);
    }
    ctx.state = State::Running;
    unlock(&SLOTS_LOCK);
    // SAFETY: slot `slot` is ours while Running.
    let pages = unsafe { &mut (*slot_ptr(slot)).pages };
    // a refused answer leaves the thread parked in its OCALL
    let failed = answer & ECALL_ERROR != 0;
    if answer > u32::MAX as u64 || (!failed && answer > PAGE) {
        return finish(ctx, State::Ocall, (HcStatus::InvalidArgument, 0, 0));
    }
    if let Err(st) = host_page_ok(hv_lock, hv, buf) {
        return finish(ctx, State::Ocall, (st, 0, 0));
    }
    if !failed {
        // SAFETY: the host's own page (checked); identity-mapped; answer ≤ PAGE.
        unsafe { core::ptr::copy_nonoverlapping(buf as *const u8, pages.shared.as_mut_ptr(), answer as usize) };
    }
    ctx.vm.set_rax(answer);
    ctx.buf = buf;
    run_thread(ctx, pages, cpu, hv_lock, hv)
}

/// Runs a thread already moved to Running until it ends, parks or makes an OCALL.
fn run_thread(ctx: &mut Ctx, pages: &mut RunnerPages, cpu: usize, hv_lock: &AtomicBool, hv: *mut Hv) -> Answer {
    let (id, tcs) = (ctx.id, ctx.tcs);
    if ctx.last_cpu != cpu {
        // another CPU's TLB may hold this tag's translations of an earlier thread
        if ctx.last_cpu != usize::MAX {
            ctx.vm.flush_tlb();
        }
        ctx.last_cpu = cpu;
    }
    let outcome = run(ctx, cpu, hv_lock, hv, pages);
    match outcome {
        Outcome::Done { status, parked } => {
            if status < ECALL_ERROR && status <= PAGE {
                // SAFETY: checked host page (above), identity-mapped.
                unsafe { core::ptr::copy_nonoverlapping(pages.shared.as_ptr(), ctx.buf as *mut u8, status as usize) };
            }
            end_thread(hv_lock, hv, id, tcs);
            finish(ctx, if parked { State::Parked } else { State::Fresh }, (HcStatus::Success, status, 0))
        }
        Outcome::Ocall { nr, len } => {
            // SAFETY: checked host page (above), identity-mapped; len ≤ PAGE (run checked it).
            unsafe { core::ptr::copy_nonoverlapping(pages.shared.as_ptr(), ctx.buf as *mut u8, len as usize) };
            finish(ctx, State::Ocall, (HcStatus::EnclaveOcall, nr, len))
        }
        Outcome::Interrupted => finish(ctx, State::Interrupted, (HcStatus::EnclaveInterrupted, 0, 0)),
        Outcome::Fault => {
            end_thread(hv_lock, hv, id, tcs);
            finish(ctx, State::Dead, (HcStatus::EnclaveFault, 0, 0))
        }
        Outcome::SsaInvalid => {
            end_thread(hv_lock, hv, id, tcs);
            finish(ctx, State::Dead, (HcStatus::SsaInvalid, 0, 0))
        }
    }
}

fn finish(ctx: &mut Ctx, next: State, r: Answer) -> Answer {
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

/// After an EDMM step that may shrink enclave `id`'s mappings (RESTRICT, MODIFY_TYPE, REMOVE,
/// an EACCEPT): every thread of it flushes its TLB tag at its next entry. Takes SLOTS_LOCK:
/// never call it holding the hypervisor lock (call order is SLOTS_LOCK, then the hypervisor's).
pub fn mappings_changed(id: u32) {
    lock(&SLOTS_LOCK);
    for i in 0..nslots() {
        let c = ctx_at(i);
        if c.state != State::Free && c.id == id {
            c.tlb_stale.store(true, Ordering::SeqCst);
        }
    }
    unlock(&SLOTS_LOCK);
}

/// After ENCLAVE_DESTROY: the enclave's threads and runner pages are gone with it.
pub fn forget(id: u32) {
    lock(&SLOTS_LOCK);
    for i in 0..nslots() {
        let c = ctx_at(i);
        if c.state != State::Free && c.id == id {
            c.state = State::Free;
        }
    }
    unlock(&SLOTS_LOCK);
}

fn map_runner_pages(hv: &mut Hv, id: u32, slot: usize) -> Result<(), HvError> {
    // SAFETY: the slot was just allocated under SLOTS_LOCK; nobody else touches its pages.
    let p = unsafe { &mut (*slot_ptr(slot)).pages };
    // nothing of the slot's previous enclave stays visible to this one
    p.mailbox.fill(0);
    p.shared.fill(0);
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
fn first_entry(ctx: &mut Ctx, slot: usize, e: &EntryInfo, func: u64, len: u64, cr3: u64, mailbox: u64, shared: u64) {
    ctx.vm.setup(slot, ctx.asid_fresh, e.entry, cr3, e.nested_pointer, e.fs_base, e.gs_base);
    ctx.asid_fresh = false;
    ctx.regs = GuestRegs { rbx: e.tcs, rcx: PAGE, rdx: len, rsi: shared, rdi: func, r8: mailbox, ..GuestRegs::default() };
    ctx.fx.fill(0);
    ctx.fx[0..2].copy_from_slice(&0x037fu16.to_le_bytes()); // FCW
    ctx.fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes()); // MXCSR: all SIMD exceptions masked
    ctx.aex_if = 0;
}

/// What AEX and ERESUME need of the enclave and the thread's TCS.
struct TcsView {
    base: u64,
    size: u64,
    frame_pages: u32,
    exinfo: bool,
    /// Host physical address of the TCS page (the hypervisor's to write: CSSA).
    tcs_hpa: u64,
    ossa: u64,
    cssa: u32,
    nssa: u32,
    oentry: u64,
}

fn tcs_view(hv: &Hv, id: u32, tcs: u64) -> Result<TcsView, HvError> {
    let info = hv.enclave_info(id)?;
    let page = hv.enclave_page(id, tcs)?;
    let at = |o: u64| page.hpa + o;
    // SAFETY: the TCS is an EPC page of this enclave (enclave_page), identity-mapped; reads only.
    let (ossa, cssa, nssa, oentry) = unsafe {
        (
            core::ptr::read_volatile(at(16) as *const u64),
            core::ptr::read_volatile(at(gpr::TCS_CSSA as u64) as *const u32),
            core::ptr::read_volatile(at(28) as *const u32),
            core::ptr::read_volatile(at(32) as *const u64),
        )
    };
    Ok(TcsView {
        base: info.secs.base,
        size: info.secs.size,
        frame_pages: info.secs.ssa_frame_size,
        exinfo: info.secs.misc_select & gpr::MISC_EXINFO != 0,
        tcs_hpa: page.hpa,
        ossa,
        cssa,
        nssa,
        oentry,
    })
}

fn set_cssa(t: &TcsView, cssa: u32) {
    // SAFETY: the thread's TCS page (EPC, identity-mapped); the enclave cannot reach it.
    unsafe { core::ptr::write_volatile((t.tcs_hpa + gpr::TCS_CSSA as u64) as *mut u32, cssa) };
}

/// AEX (SGX's first phase): saves the interrupted state into SSA frame CSSA (and MISC EXINFO
/// when the enclave asked for it), CSSA++, and enters the enclave again at OENTRY with RAX =
/// CSSA, RDI = the frame's GPRSGX, R8 = the mailbox: rt runs the enclave's handler. Err: the
/// thread must end (no frame left, SSA not writable).
fn aex(ctx: &mut Ctx, cpu: usize, hv_lock: &AtomicBool, hv: *mut Hv, mailbox: u64, vector: u8, maddr: u64, errcd: u32) -> Result<(), ()> {
    let (id, tcs) = (ctx.id, ctx.tcs);
    let v = &ctx.vm;
    let r = &ctx.regs;
    let (fs, gs) = v.seg_bases();
    let g = Gpr {
        regs: [v.rax(), r.rcx, r.rdx, r.rbx, v.rsp(), r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15],
        rflags: v.rflags(),
        rip: v.rip(),
        ursp: 0,
        urbp: 0,
        exitinfo: ssa::exitinfo(vector),
        fsbase: fs,
        gsbase: gs,
    };
    lock(hv_lock);
    // SAFETY: under the hypervisor lock.
    let hvr = unsafe { &mut *hv };
    let r = (|| {
        let t = tcs_view(hvr, id, tcs).map_err(|e| log!("cpu{}: enclave {} TCS {:#x}: AEX: {}", cpu, id, tcs, e))?;
        let Some(off) = ssa::aex_frame(t.ossa, t.cssa, t.nssa, t.frame_pages) else {
            log!("cpu{}: enclave {} TCS {:#x}: {} at rip {:#x} with CSSA {} = NSSA (no SSA frame left): thread ended", cpu, id, tcs, vector_name(vector as u64), g.rip, t.cssa);
            return Err(());
        };
        let frame = t.base + off;
        copy_out(hvr, id, frame, &g.to_bytes()).map_err(|_| log!("cpu{}: enclave {} TCS {:#x}: SSA frame at {:#x} not writable: thread ended", cpu, id, tcs, frame))?;
        if t.exinfo {
            let mut misc = [0u8; 16];
            misc[..8].copy_from_slice(&maddr.to_le_bytes());
            misc[8..12].copy_from_slice(&errcd.to_le_bytes());
            copy_out(hvr, id, frame.wrapping_add(gpr::EXINFO_MADDR as u64), &misc).map_err(|_| ())?;
        }
        set_cssa(&t, t.cssa + 1);
        Ok((t, frame))
    })();
    unlock(hv_lock);
    let (t, frame) = r?;
    if t.cssa < 64 {
        ctx.aex_if = (ctx.aex_if & !(1 << t.cssa)) | (((g.rflags >> 9) & 1) << t.cssa);
    }
    let v = &mut ctx.vm;
    v.set_rip(t.base + t.oentry);
    v.set_rax(t.cssa as u64 + 1);
    v.set_rflags(2);
    ctx.regs.rdi = frame;
    ctx.regs.r8 = mailbox;
    Ok(())
}

/// ERESUME (`out PORT_ERESUME, eax` = ERESUME_CONTINUE): restores frame CSSA-1 after
/// `ssa::validate_resume`, CSSA--.
fn eresume(ctx: &mut Ctx, cpu: usize, hv_lock: &AtomicBool, hv: *mut Hv) -> Result<(), Outcome> {
    let (id, tcs) = (ctx.id, ctx.tcs);
    lock(hv_lock);
    // SAFETY: under the hypervisor lock.
    let hvr = unsafe { &mut *hv };
    let r = (|| {
        let t = tcs_view(hvr, id, tcs).map_err(|e| {
            log!("cpu{}: enclave {} TCS {:#x}: ERESUME: {}", cpu, id, tcs, e);
            Outcome::Fault
        })?;
        let at = ssa::resume_frame(t.ossa, t.cssa, t.frame_pages).map_err(|e| {
            log!("cpu{}: enclave {} TCS {:#x}: ERESUME: {}: thread ended", cpu, id, tcs, e);
            Outcome::SsaInvalid
        })?;
        let mut b = [0u8; gpr::GPRSGX_SIZE as usize];
        copy_in(hvr, id, t.base + at, &mut b).map_err(|_| Outcome::SsaInvalid)?;
        let g = Gpr::from_bytes(&b);
        let level = t.cssa - 1;
        let if_at_aex = level < 64 && ctx.aex_if & (1 << level) != 0;
        let rflags = ssa::validate_resume(&g, t.base, t.size, if_at_aex, |la| matches!(hvr.enclave_access(id, la, Access::Execute), Ok(Ok(_)))).map_err(|e| {
            log!("cpu{}: enclave {} TCS {:#x}: ERESUME from a forged SSA frame: {}: thread ended (SSA_INVALID)", cpu, id, tcs, e);
            Outcome::SsaInvalid
        })?;
        set_cssa(&t, level);
        Ok((g, rflags))
    })();
    unlock(hv_lock);
    let (g, rflags) = r?;
    let q = &g.regs;
    ctx.regs = GuestRegs { rbx: q[3], rcx: q[1], rdx: q[2], rsi: q[6], rdi: q[7], rbp: q[5], r8: q[8], r9: q[9], r10: q[10], r11: q[11], r12: q[12], r13: q[13], r14: q[14], r15: q[15] };
    let v = &mut ctx.vm;
    v.set_rax(q[0]);
    v.set_rsp(q[4]);
    v.set_rflags(rflags);
    v.set_rip(g.rip);
    Ok(())
}

fn run(ctx: &mut Ctx, cpu: usize, hv_lock: &AtomicBool, hv: *mut Hv, pages: &mut RunnerPages) -> Outcome {
    let (id, tcs) = (ctx.id, ctx.tcs);
    let mut exits = 0u64;
    let mailbox = pa(pages.mailbox.as_ptr());
    loop {
        if ctx.tlb_stale.swap(false, Ordering::SeqCst) {
            ctx.vm.flush_tlb();
        }
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
                    if pages.mailbox[mb::NR] == edmm_hc::EACCEPT {
                        mappings_changed(id); // a trimmed or restricted page may have lost its mapping
                    }
                    v.set_rax(r);
                    v.set_rip(next);
                }
                (PORT_OCALL, true) => {
                    v.set_rip(next);
                    let (nr, len) = (pages.mailbox[mb::NR] & 0xffff_ffff, pages.mailbox[mb::LEN]);
                    if len > PAGE {
                        v.set_rax(OCALL_REFUSED);
                        continue;
                    }
                    return Outcome::Ocall { nr, len };
                }
                (PORT_ERESUME, false) => match (v.rax() & 0xffff_ffff) as u32 {
                    ERESUME_CONTINUE => {
                        if let Err(o) = eresume(ctx, cpu, hv_lock, hv) {
                            return o;
                        }
                    }
                    ERESUME_ABORT => {
                        log!("cpu{}: enclave {} TCS {:#x}: its exception handler aborted the thread", cpu, id, tcs);
                        return Outcome::Fault;
                    }
                    other => {
                        log!("cpu{}: enclave {} TCS {:#x}: ERESUME with EAX {:#x}: thread ended", cpu, id, tcs, other);
                        return Outcome::Fault;
                    }
                },
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
                // AEX into the enclave's own handler (rt aborts when the payload has none)
                let (errcd, maddr) = (info.0 as u32, if vector == 14 { info.1 } else { 0 });
                if aex(ctx, cpu, hv_lock, hv, mailbox, vector as u8, maddr, errcd).is_err() {
                    log!("cpu{}: enclave {} TCS {:#x}: exception {} at rip {:#x} (info {:#x} {:#x}) after {} exits: thread ended", cpu, id, tcs, vector_name(vector), rip, info.0, info.1, exits);
                    return Outcome::Fault;
                }
            }
            EnclaveExit::NestedFault { gpa, info, pf_error } => {
                // inside ELRANGE (a PENDING, trimmed or restricted page): a #PF for the enclave's
                // handler, as SGX reports EPCM faults; elsewhere the thread ends
                lock(hv_lock);
                // SAFETY: under the hypervisor lock.
                let secs = unsafe { (*hv).enclave_info(id) }.map(|i| i.secs);
                unlock(hv_lock);
                let inside = matches!(secs, Ok(s) if gpa >= s.base && gpa - s.base < s.size);
                if !inside || aex(ctx, cpu, hv_lock, hv, mailbox, 14, gpa, pf_error | 1).is_err() {
                    log!("cpu{}: enclave {} TCS {:#x}: nested page fault at gpa {:#x} (error {:#x}) rip {:#x}: {}, thread ended", cpu, id, tcs, gpa, info, rip, if inside { "not delivered" } else { "outside the enclave" });
                    return Outcome::Fault;
                }
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
        edmm_hc::EACCEPT | edmm_hc::EMODPE => {
            let nr = mbx[mb::NR];
            let r = hv.enclave_info(id).and_then(|i| {
                let off = a0.wrapping_sub(i.secs.base);
                if nr == edmm_hc::EACCEPT {
                    hv.accept(id, off, a1)
                } else {
                    hv.extend_perms(id, off, a1)
                }
            });
            r.map_err(|e| HcStatus::from(&e) as u64)
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
