//! The KVM enclave runner: one KVM VM per enclave with one vCPU per TCS, the enclave's pages as
//! guest memory, entered in 64-bit mode at the TCS entry. ECALL = write the input to the
//! thread's shared buffer, set the entry registers (first entry) or resume the vCPU parked at its
//! last EEXIT, KVM_RUN until the next EEXIT. ECALLs on distinct TCSs run at the same time (each
//! thread has its own vCPU, mailbox, shared buffer and IST stack; only EDMM page changes take
//! the VM-wide memory lock). OCALLs and hypercalls (EGETKEY, EREPORT, EACCEPT, EMODPE) are port
//! I/O. An exception is delivered to the enclave by AEX (SSA frame, CSSA++, re-entry at OENTRY
//! with RAX = CSSA) and ERESUME restores the frame after `ssa::validate_resume`. A fault with no
//! SSA frame left, an abort from the handler, a forged SSA, a triple fault, an unexpected exit
//! or a runaway ECALL (watchdog budget) ends that thread only, with a one-line reason.
//!
//! Protocol (hyperenclave_core::enclave::runtime; no register crosses after the first entry:
//! register ioctls cost ~7 µs each on kvm_pvm, about as much as an exit). Arguments and results
//! travel in the thread's mailbox page (`guest::mb` words) and shared buffer, outside the enclave:
//! - First ECALL on a TCS: RIP = base + OENTRY, RAX = 0, RBX = TCS address, RDI = ECALL number,
//!   RSI = shared buffer, RDX = input length, RCX = shared capacity, R8 = mailbox (all also in
//!   the mailbox); RSP = 0 (the enclave sets its own stack); FS/GS.base = base + OFSBASE/OGSBASE.
//! - ECALL numbers are 0..=255.
//! - EEXIT: mailbox STATUS = output length (output at the start of the shared buffer) or
//!   0x8000_0000 | error code, then `in al, PORT_EEXIT` (any IN size works). The vCPU parks
//!   there; the next ECALL on the same TCS resumes it with AL/EAX = ECALL number (mailbox
//!   FUNC/IN_LEN updated). A plain `out PORT_EEXIT, eax` (EAX = status) also ends an ECALL,
//!   without parking.
//! - OCALL: mailbox NR, LEN (input in the shared buffer), `in eax, PORT_OCALL` → EAX =
//!   output length or 0x8000_0000 | code. NR = OCALL_HEAP_GROW is served here (ENCLAVE_AUGMENT).
//! - Hypercall: mailbox NR, A0..A2 (enclave addresses), `in eax, PORT_HYPERCALL` → EAX = status.
//! - Panic: message in the shared buffer, `out PORT_PANIC, eax` (EAX = length).
//! - Exceptions go through the runner's IDT stubs (`push rax; out PORT_FAULT, al` = vector) on
//!   the thread's IST stack; the runner then performs the AEX. `out PORT_ERESUME, eax` ends the
//!   handler (0 resume, 1 abort).

use crate::kvm::guest::{self, mb, Layout, PageDesc, ThreadLayout, ENCLAVE_GPA, PAGE, PORT_EEXIT, PORT_ERESUME, PORT_FAULT, PORT_HYPERCALL, PORT_OCALL, PORT_PANIC};
use crate::kvm::{Exit, Kvm, Regs, Segment, VcpuFd, VmFd};
use crate::sys::{self, Mapping};
use hyperenclave_core::enclave::edmm::{self, EpcmPage};
use hyperenclave_core::{HcStatus, HvError, PageType};
use hyperenclave_core::enclave::runtime::{edmm_hc, gpr, ERESUME_CONTINUE, OCALL_HEAP_GROW};
use hyperenclave_core::enclave::ssa::{self, Gpr};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Hypercall numbers (mailbox NR at `PORT_HYPERCALL`) and statuses: the runtime protocol in core.
pub use hyperenclave_core::enclave::runtime::hc;
use hyperenclave_core::enclave::runtime::ECALL_ERROR;

/// Enclave memory handed to KVM: `len` bytes at `host`, guest-physical ENCLAVE_GPA + `offset`.
#[derive(Clone, Copy, Debug)]
pub struct HostRegion {
    pub offset: u64,
    pub len: u64,
    pub host: *mut u8,
    pub readonly: bool,
}

/// One EDMM step (host leaves ENCLAVE_AUGMENT/RESTRICT/MODIFY_TYPE/REMOVE, enclave leaves
/// EACCEPT/EMODPE). Offsets are inside ELRANGE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edmm {
    Augment { offset: u64, count: u64 },
    Restrict { offset: u64, count: u64, perms: u64 },
    ModifyType { offset: u64, count: u64, page_type: u64 },
    Remove { offset: u64, count: u64 },
    Accept { offset: u64, flags: u64 },
    Extend { offset: u64, perms: u64 },
}

impl Edmm {
    pub fn range(&self) -> (u64, u64) {
        match *self {
            Edmm::Augment { offset, count } | Edmm::Restrict { offset, count, .. } | Edmm::ModifyType { offset, count, .. } | Edmm::Remove { offset, count } => (offset, count),
            Edmm::Accept { offset, .. } | Edmm::Extend { offset, .. } => (offset, 1),
        }
    }
}

/// Where the entry is and what the hypervisor answers; standalone or the core.
pub trait Backend: Send {
    fn enter(&mut self, tcs_offset: u64) -> Result<Entry, String>;
    fn exit(&mut self, tcs_offset: u64);
    fn get_key(&mut self, key_request: &[u8; 80]) -> Result<[u8; 16], u64>;
    fn report(&mut self, target_info: &[u8; 56], report_data: &[u8; 64]) -> Result<[u8; 432], u64>;
    /// One EDMM step, all or nothing; Ok(pages affected) or Err((hypercall status, message)).
    fn edmm(&mut self, op: Edmm) -> Result<u32, (u64, String)>;
    /// Host address and EPCM state of the page at `offset` (None: no page there).
    fn page(&mut self, offset: u64) -> Option<(*mut u8, EpcmPage)>;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Entry {
    pub entry: u64,
    pub tcs: u64,
    pub fs_base: u64,
    pub gs_base: u64,
}

pub struct VmSpec {
    pub base: u64,
    pub size: u64,
    pub pages: Vec<PageDesc>,
    pub regions: Vec<HostRegion>,
    pub shared_pages: u64,
    pub timeout_ms: u64,
    /// SECS.MISCSELECT (bit 0: AEX writes MISC EXINFO) and SSAFRAMESIZE (pages).
    pub misc_select: u32,
    pub ssa_frame_size: u32,
}

/// An ECALL that reached EEXIT.
#[derive(Debug)]
pub struct EcallOut {
    /// EAX at EEXIT.
    pub status: u32,
    pub output: Vec<u8>,
    pub exits: u64,
    /// Exceptions delivered to the enclave (AEX) during this ECALL.
    pub aex: u64,
}

/// Error code (EAX = 0x8000_0000 | code) an enclave sees when the host fails an OCALL.
pub const OCALL_FAILED: u32 = hyperenclave_core::enclave::runtime::err::OCALL;

pub type OcallFn<'a> = &'a mut dyn FnMut(u32, &[u8]) -> Result<Vec<u8>, String>;

/// Why a call failed: `Dead` means the thread (or the whole VM) ended (fault, abort, runaway,
/// unexpected exit); `SsaInvalid` that ERESUME found a forged frame (the thread ended too).
#[derive(Debug, Clone)]
pub enum RunError {
    Dead(String),
    SsaInvalid(String),
    Bad(String),
}

impl RunError {
    pub fn message(&self) -> &str {
        match self {
            RunError::Dead(m) | RunError::SsaInvalid(m) | RunError::Bad(m) => m,
        }
    }
}

/// One TCS: its vCPU and its part of the runner area.
struct Thread {
    tcs: u64,
    /// None once the thread ended (its descriptor given back at once).
    vcpu: Option<VcpuFd>,
    slot: Arc<RunSlot>,
    l: ThreadLayout,
    /// The vCPU waits in its EEXIT `in` (kvm_run data offset).
    parked: Option<usize>,
    dead: Option<String>,
    entry: Entry,
    /// The last exception delivered (for messages).
    last_fault: String,
    /// FS/GS.base loaded into the vCPU.
    fs_gs: (u64, u64),
}

/// The VM's memory view, changed only by EDMM (under this lock).
struct Mem {
    layout: Layout,
    /// KVM slot → region (slot 0 is the runner area).
    slots: BTreeMap<u32, HostRegion>,
    free_slots: Vec<u32>,
    next_slot: u32,
    /// ELRANGE page number → (host address, SECINFO permissions the enclave has now).
    pages: BTreeMap<u64, (*mut u8, u8)>,
}

pub struct EnclaveVm {
    pub name: String,
    // field order = drop order: vCPUs and the VM go before the memory they map
    threads: Vec<Mutex<Thread>>,
    tcs_list: Vec<u64>,
    /// None once every thread ended or the VM was killed (descriptor given back).
    vm: Mutex<Option<VmFd>>,
    base: u64,
    size: u64,
    runner: Mapping,
    mem: Mutex<Mem>,
    backend: Mutex<Box<dyn Backend>>,
    dead: Mutex<Option<String>>,
    misc_select: u32,
    ssa_frame_size: u32,
    pub timeout_ms: u64,
    ecalls: AtomicU64,
    exits: AtomicU64,
    _regions_keepalive: Option<Mapping>,
}

// SAFETY (Send, Sync): the raw pointers in `mem.pages`/`mem.slots` point into mappings this value
// keeps alive (`_regions_keepalive`, or the core's reserved memory held through CoreBackend's
// Arc). Mutable state is behind Mutexes: each thread's vCPU and runner pages behind its own
// Mutex<Thread> (the runner-area bytes of one thread are touched only by the holder of that
// lock), page tables and KVM slots behind `mem`, the backend behind `backend`. Enclave memory
// itself is shared with the running vCPUs, as on hardware.
unsafe impl Send for EnclaveVm {}
// SAFETY: see Send.
unsafe impl Sync for EnclaveVm {}

fn kvm() -> Result<&'static Kvm, String> {
    static KVM: OnceLock<Result<Kvm, String>> = OnceLock::new();
    KVM.get_or_init(|| Kvm::open().map_err(|e| format!("KVM unavailable: {e}"))).as_ref().map_err(|e| e.clone())
}

pub fn kvm_available() -> Result<(), String> {
    kvm().map(|_| ())
}

impl EnclaveVm {
    /// Builds the VM: one vCPU per TCS page in `spec.pages`. `keepalive` owns the enclave
    /// memory when the runner allocated it.
    pub fn create(name: &str, spec: VmSpec, backend: Box<dyn Backend>, keepalive: Option<Mapping>) -> Result<EnclaveVm, String> {
        let kvm = kvm()?;
        let tcs_list: Vec<u64> = spec.pages.iter().filter(|p| p.tcs).map(|p| p.offset).collect();
        if tcs_list.is_empty() {
            return Err(format!("enclave {name}: no TCS page"));
        }
        let nthreads = tcs_list.len() as u64;
        let rp = guest::runner_pages(spec.size, spec.shared_pages, nthreads);
        let runner = Mapping::anonymous((rp * PAGE) as usize).map_err(|e| e.to_string())?;
        // SAFETY: `runner` is a fresh anonymous mapping of runner.len() bytes, not yet given to KVM
        // nor referenced elsewhere, so this is the only reference while guest::build fills it.
        let rmem = unsafe { core::slice::from_raw_parts_mut(runner.ptr(), runner.len()) };
        let layout = guest::build(rmem, spec.base, spec.size, &spec.pages, spec.shared_pages, nthreads).map_err(|e| format!("enclave {name}: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| e.to_string())?;
        // SAFETY: `runner` moves into the EnclaveVm that also owns `vm` (dropped after it), so it
        // stays mapped while the VM exists.
        unsafe { vm.set_memory(0, 0, runner.len() as u64, runner.ptr(), false) }.map_err(|e| e.to_string())?;
        let mut slots = BTreeMap::new();
        for (i, r) in spec.regions.iter().enumerate() {
            if r.offset % PAGE != 0 || r.len % PAGE != 0 || r.offset + r.len > spec.size {
                return Err(format!("enclave {name}: memory region {:#x}+{:#x} outside ELRANGE", r.offset, r.len));
            }
            let ro = r.readonly && kvm.readonly_mem;
            let slot = 1 + i as u32;
            // SAFETY: each region's host range is kept mapped for the VM's life by `keepalive`
            // (standalone) or by the core's reserved mapping behind CoreBackend's Arc (core
            // enclaves). EREMOVE of a page deletes its slot first (carve), so a frame the core
            // reuses is no longer in this VM.
            unsafe { vm.set_memory(slot, ENCLAVE_GPA + r.offset, r.len, r.host, ro) }.map_err(|e| e.to_string())?;
            slots.insert(slot, HostRegion { readonly: ro, ..*r });
        }
        let mut pages = BTreeMap::new();
        for p in &spec.pages {
            let host = spec
                .regions
                .iter()
                .find(|r| p.offset >= r.offset && p.offset < r.offset + r.len)
                // SAFETY: the filter guarantees r.offset <= p.offset < r.offset + r.len, so the
                // pointer stays in the region's r.len host bytes.
                .map(|r| unsafe { r.host.add((p.offset - r.offset) as usize) })
                .ok_or_else(|| format!("enclave {name}: page at offset {:#x} has no backing memory", p.offset))?;
            pages.insert(p.offset / PAGE, (host, if p.tcs { 0 } else { p.perms }));
        }
        sys::install_kick_handler();
        let mut threads = Vec::new();
        for (i, &tcs) in tcs_list.iter().enumerate() {
            let vcpu = vm.create_vcpu_id(kvm, i as u64).map_err(|e| e.to_string())?;
            // FS/GS.base = base + TCS.OFSBASE/OGSBASE (fixed: the TCS is measured and read-only),
            // loaded now so the first ECALL needs no segment-register ioctl
            let (host, _) = pages[&(tcs / PAGE)];
            let mut f = [0u8; 16];
            // SAFETY: `host` is the TCS page (4096 bytes of enclave memory); bytes 48..64 are
            // OFSBASE and OGSBASE, read before any vCPU runs.
            unsafe { core::ptr::copy_nonoverlapping(host.add(48), f.as_mut_ptr(), 16) };
            let fs_gs = (spec.base.wrapping_add(u64::from_le_bytes(f[..8].try_into().unwrap())), spec.base.wrapping_add(u64::from_le_bytes(f[8..].try_into().unwrap())));
            setup_sregs(&vcpu, &layout, &layout.threads[i], fs_gs).map_err(|e| e.to_string())?;
            let slot = Arc::new(RunSlot::default());
            watchdog().register(&slot);
            threads.push(Mutex::new(Thread { tcs, vcpu: Some(vcpu), slot, l: layout.threads[i], parked: None, dead: None, entry: Entry::default(), last_fault: String::new(), fs_gs }));
        }
        let next_slot = 1 + spec.regions.len() as u32;
        Ok(EnclaveVm {
            name: name.to_string(),
            threads,
            tcs_list,
            vm: Mutex::new(Some(vm)),
            base: spec.base,
            size: spec.size,
            runner,
            mem: Mutex::new(Mem { layout, slots, free_slots: Vec::new(), next_slot, pages }),
            backend: Mutex::new(backend),
            dead: Mutex::new(None),
            misc_select: spec.misc_select,
            ssa_frame_size: spec.ssa_frame_size.max(1),
            timeout_ms: spec.timeout_ms,
            ecalls: AtomicU64::new(0),
            exits: AtomicU64::new(0),
            _regions_keepalive: keepalive,
        })
    }

    /// Why the VM (or, with one TCS, its only thread) ended.
    pub fn dead_reason(&self) -> Option<String> {
        if let Some(d) = self.dead.lock().unwrap().clone() {
            return Some(d);
        }
        let dead: Vec<String> = self.threads.iter().filter_map(|t| t.try_lock().ok().and_then(|t| t.dead.clone())).collect();
        if dead.len() == self.threads.len() {
            dead.into_iter().next()
        } else {
            None
        }
    }

    /// TCS offsets, in thread order.
    pub fn tcs_offsets(&self) -> Vec<u64> {
        self.tcs_list.clone()
    }

    pub fn shared_capacity(&self) -> usize {
        self.mem.lock().unwrap().layout.threads[0].shared_len as usize
    }

    pub fn ecalls(&self) -> u64 {
        self.ecalls.load(Ordering::Relaxed)
    }
    pub fn exits(&self) -> u64 {
        self.exits.load(Ordering::Relaxed)
    }

    /// Ends the VM: every later ECALL fails with `reason`; the KVM descriptors of threads not
    /// inside an ECALL right now are given back at once (the others at the end of theirs).
    pub fn kill(&self, reason: String) -> RunError {
        *self.dead.lock().unwrap() = Some(reason.clone());
        for t in &self.threads {
            if let Ok(mut g) = t.try_lock() {
                g.vcpu = None;
                g.parked = None;
            }
        }
        self.vm.lock().unwrap().take();
        RunError::Dead(reason)
    }

    fn thread_of(&self, tcs_offset: u64) -> Result<&Mutex<Thread>, RunError> {
        match self.tcs_list.iter().position(|&t| t == tcs_offset) {
            Some(i) => Ok(&self.threads[i]),
            None => Err(RunError::Bad(format!("no TCS page at offset {tcs_offset:#x}"))),
        }
    }

    /// Whether an ECALL is in progress on the TCS at `tcs_offset` right now (e.g. parked in an
    /// OCALL): a new one there would be refused with TCS_BUSY.
    pub fn tcs_busy(&self, tcs_offset: u64) -> bool {
        self.thread_of(tcs_offset).is_ok_and(|t| matches!(t.try_lock(), Err(std::sync::TryLockError::WouldBlock)))
    }

    /// One ECALL on the TCS at `tcs_offset` (its own vCPU; other TCSs may run at the same time).
    pub fn ecall(&self, tcs_offset: u64, func: u64, input: &[u8], timeout_ms: Option<u64>, ocall: Option<OcallFn>) -> Result<EcallOut, RunError> {
        if let Some(d) = self.dead.lock().unwrap().as_ref() {
            return Err(RunError::Dead(format!("enclave {} is dead: {d}", self.name)));
        }
        if func > 255 {
            return Err(RunError::Bad(format!("ECALL number {func} out of range (0..=255)")));
        }
        let cell = self.thread_of(tcs_offset)?;
        let mut th = match cell.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(RunError::Bad(format!("TCS at offset {tcs_offset:#x} is busy (TCS_BUSY): an ECALL is in progress on it")))
            }
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if let Some(d) = &th.dead {
            return Err(RunError::Dead(format!("enclave {}: TCS {tcs_offset:#x} is dead: {d}", self.name)));
        }
        let cap = th.l.shared_len as usize;
        if input.len() > cap {
            return Err(RunError::Bad(format!("ECALL {func}: input of {} bytes exceeds the shared buffer ({cap} bytes)", input.len())));
        }
        let entry = self.backend.lock().unwrap().enter(tcs_offset).map_err(RunError::Bad)?;
        th.entry = entry;
        let l = th.l;
        self.runner.write(l.shared_off as usize, input);
        let words = [(mb::FUNC, func), (mb::IN_LEN, input.len() as u64), (mb::STATUS, 0), (mb::SHARED, l.shared_la), (mb::CAP, cap as u64)];
        for (i, v) in words {
            self.runner.write(l.mailbox_off as usize + i * 8, &v.to_le_bytes());
        }
        if th.vcpu.is_none() {
            return Err(RunError::Dead(format!("enclave {} is dead: {}", self.name, self.dead.lock().unwrap().clone().unwrap_or_default())));
        }
        let resume = match th.parked.take() {
            Some(data_off) => {
                th.vcpu.as_ref().unwrap().set_io_in(data_off, func as u32);
                None
            }
            None => Some(Regs {
                rip: entry.entry,
                rbx: entry.tcs,
                rdi: func,
                rsi: l.shared_la,
                rdx: input.len() as u64,
                rcx: cap as u64,
                r8: l.mailbox_la,
                rflags: 2,
                ..Regs::default()
            }),
        };
        let r = self.run_ecall(&mut th, resume, timeout_ms.unwrap_or(self.timeout_ms), ocall);
        self.backend.lock().unwrap().exit(tcs_offset);
        self.ecalls.fetch_add(1, Ordering::Relaxed);
        r
    }

    fn mailbox(&self, l: &ThreadLayout, i: usize) -> u64 {
        let mut b = [0u8; 8];
        self.runner.read(l.mailbox_off as usize + i * 8, &mut b);
        u64::from_le_bytes(b)
    }

    fn run_ecall(&self, th: &mut Thread, fresh: Option<Regs>, timeout_ms: u64, mut ocall: Option<OcallFn>) -> Result<EcallOut, RunError> {
        let name = &self.name;
        let vcpu_fd = th.vcpu.take().ok_or_else(|| RunError::Dead(format!("enclave {name}: TCS {:#x} has no vCPU", th.tcs)))?;
        let r = self.run_loop(th, &vcpu_fd, fresh, timeout_ms, &mut ocall);
        if th.dead.is_none() && self.dead.lock().unwrap().is_none() {
            th.vcpu = Some(vcpu_fd);
        } else {
            drop(vcpu_fd);
            // the last thread gone: the VM descriptor goes too
            if self.threads.iter().zip(&self.tcs_list).all(|(t, &tcs)| tcs == th.tcs || t.try_lock().map(|g| g.vcpu.is_none()).unwrap_or(false)) {
                self.vm.lock().unwrap().take();
            }
        }
        r
    }

    fn run_loop(&self, th: &mut Thread, vcpu: &VcpuFd, fresh: Option<Regs>, timeout_ms: u64, ocall: &mut Option<OcallFn>) -> Result<EcallOut, RunError> {
        let name = &self.name;
        let fail = |e: sys::SysError| RunError::Bad(format!("enclave {name}: {e}"));
        if let Some(regs) = fresh {
            vcpu.set_regs(&regs).map_err(fail)?;
            if th.fs_gs != (th.entry.fs_base, th.entry.gs_base) {
                let mut s = vcpu.get_sregs().map_err(fail)?;
                s.fs.base = th.entry.fs_base;
                s.gs.base = th.entry.gs_base;
                vcpu.set_sregs(&s).map_err(fail)?;
                th.fs_gs = (th.entry.fs_base, th.entry.gs_base);
            }
        }
        vcpu.clear_immediate_exit();
        th.slot.arm(vcpu.run_ptr(), timeout_ms);
        let mut exits = 0u64;
        let mut aex = 0u64;
        let l = th.l;
        enum Fail {
            Dead(String),
            Ssa(String),
        }
        let outcome: Result<EcallOut, Fail> = loop {
            let exit = match vcpu.run() {
                Ok(x) => x,
                Err(e) => break Err(Fail::Dead(format!("KVM_RUN failed: {e}"))),
            };
            exits += 1;
            match exit {
                Exit::Io { port: PORT_EEXIT, out, data, data_off, .. } => {
                    let status = if out { data } else { self.mailbox(&l, mb::STATUS) as u32 };
                    let n = if status as u64 & ECALL_ERROR != 0 { 0 } else { status as usize };
                    if n > l.shared_len as usize {
                        break Err(Fail::Dead(format!("EEXIT with output length {n} beyond the shared buffer ({} bytes)", l.shared_len)));
                    }
                    let mut out_buf = vec![0u8; n];
                    self.runner.read(l.shared_off as usize, &mut out_buf);
                    if !out {
                        th.parked = Some(data_off);
                    }
                    break Ok(EcallOut { status, output: out_buf, exits, aex });
                }
                Exit::Io { port: PORT_OCALL, out: false, data_off, .. } => {
                    let v = self.serve_ocall(&l, ocall);
                    vcpu.set_io_in(data_off, v);
                }
                Exit::Io { port: PORT_HYPERCALL, out: false, data_off, .. } => {
                    let v = self.serve_hypercall(&l);
                    vcpu.set_io_in(data_off, v as u32);
                }
                Exit::Io { port: PORT_PANIC, out: true, data, .. } => {
                    let n = (data as usize).min(256).min(l.shared_len as usize);
                    let mut m = vec![0u8; n];
                    self.runner.read(l.shared_off as usize, &mut m);
                    let text: String = String::from_utf8_lossy(&m).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                    break Err(Fail::Dead(format!("enclave panicked: {text}")));
                }
                Exit::Io { port: PORT_FAULT, out: true, data, .. } => match self.aex(th, vcpu, data as u8) {
                    Ok(()) => aex += 1,
                    Err(why) => break Err(Fail::Dead(why)),
                },
                Exit::Io { port: PORT_ERESUME, out: true, data, .. } => {
                    if data != ERESUME_CONTINUE {
                        break Err(Fail::Dead(format!("the enclave's exception handler aborted the thread ({})", th.last_fault)));
                    }
                    match self.eresume(th, vcpu) {
                        Ok(()) => {}
                        Err(RunError::SsaInvalid(m)) => break Err(Fail::Ssa(m)),
                        Err(e) => break Err(Fail::Dead(e.message().to_string())),
                    }
                }
                Exit::Io { port, out, .. } => break Err(Fail::Dead(format!("unexpected I/O {} port {port:#x}", if out { "write to" } else { "read from" }))),
                Exit::Hlt => break Err(Fail::Dead("enclave executed HLT (unexpected exit)".into())),
                Exit::Mmio { gpa, write, .. } => {
                    break Err(Fail::Dead(format!(
                        "{} of guest-physical {gpa:#x} outside the enclave's memory{}",
                        if write { "write" } else { "read" },
                        if write && gpa >= ENCLAVE_GPA { " (read-only page)" } else { "" }
                    )))
                }
                Exit::Shutdown => break Err(Fail::Dead("triple fault (KVM_EXIT_SHUTDOWN)".into())),
                Exit::FailEntry { reason } => break Err(Fail::Dead(format!("VM entry failed (hardware reason {reason:#x})"))),
                Exit::Internal { suberror } => {
                    let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                    break Err(Fail::Dead(format!(
                        "KVM internal error (suberror {suberror}{}) at rip {rip:#x}{}",
                        if suberror == 1 { ": instruction emulation failed" } else { "" },
                        self.offset_note(rip)
                    )));
                }
                Exit::Interrupted => {
                    if th.slot.fired.load(Ordering::SeqCst) {
                        break Err(Fail::Dead(format!("runaway: ECALL exceeded its budget of {timeout_ms} ms")));
                    }
                }
                Exit::Other(r) => break Err(Fail::Dead(format!("unexpected exit {} ({r})", crate::kvm::exit_name(r)))),
            }
        };
        th.slot.disarm();
        self.exits.fetch_add(exits, Ordering::Relaxed);
        outcome.map_err(|f| {
            let (why, ssa) = match f {
                Fail::Dead(w) => (w, false),
                Fail::Ssa(w) => (w, true),
            };
            let why = format!("enclave {}: {why} [TCS {:#x}]", self.name, th.tcs);
            th.dead = Some(why.clone());
            th.parked = None;
            if ssa {
                RunError::SsaInvalid(why)
            } else {
                RunError::Dead(why)
            }
        })
    }

    fn offset_note(&self, la: u64) -> String {
        if la >= self.base && la < self.base + self.size {
            format!(" (offset {:#x})", la - self.base)
        } else {
            String::new()
        }
    }

    /// The exception frame the IDT stub left on the thread's IST stack: (RIP, RFLAGS, RSP,
    /// error code, RAX as the stub saved it).
    fn ist_frame(&self, l: &ThreadLayout, vector: u8) -> (u64, u64, u64, u64, u64) {
        let (_, has_code) = guest::vector_name(vector);
        let top = l.ist_top_off as usize;
        let q = |from_top: usize| {
            let mut b = [0u8; 8];
            self.runner.read(top - from_top, &mut b);
            u64::from_le_bytes(b)
        };
        let err = if has_code { q(48) } else { 0 };
        let rax = if has_code { q(56) } else { q(48) };
        (q(40), q(24), q(16), err, rax)
    }

    fn describe_fault(&self, th: &Thread, vcpu: &VcpuFd, vector: u8) -> String {
        let (name, has_code) = guest::vector_name(vector);
        let (rip, _, _, code, _) = self.ist_frame(&th.l, vector);
        let mut s = format!("enclave fault: {name} (vector {vector}) at rip {rip:#x}");
        s += &self.offset_note(rip);
        if vector == 14 {
            let cr2 = vcpu.get_sregs().map(|s| s.cr2).unwrap_or(0);
            let what = if code & 16 != 0 {
                "execute"
            } else if code & 2 != 0 {
                "write"
            } else {
                "read"
            };
            let why = if code & 1 != 0 { "permission denied" } else { "page not present" };
            s += &format!(", {what} of {cr2:#x}: {why}");
        } else if has_code {
            s += &format!(", error code {code:#x}");
        }
        s
    }

    /// TCS fields the AEX/ERESUME need: (host address of the TCS page, OSSA, CSSA, NSSA).
    fn tcs_state(&self, tcs: u64) -> Result<(*mut u8, u64, u32, u32), String> {
        let host = self.mem.lock().unwrap().pages.get(&(tcs / PAGE)).map(|p| p.0).ok_or_else(|| format!("no TCS page at {tcs:#x}"))?;
        let mut b = [0u8; 32];
        // SAFETY: `host` is the TCS page (4096 bytes of enclave memory kept alive by this VM's
        // owner); the first 32 bytes are read while this thread's vCPU is stopped.
        unsafe { core::ptr::copy_nonoverlapping(host, b.as_mut_ptr(), 32) };
        let ossa = u64::from_le_bytes(b[16..24].try_into().unwrap());
        let cssa = u32::from_le_bytes(b[24..28].try_into().unwrap());
        let nssa = u32::from_le_bytes(b[28..32].try_into().unwrap());
        Ok((host, ossa, cssa, nssa))
    }

    fn set_cssa(host: *mut u8, cssa: u32) {
        // SAFETY: `host` is the TCS page; CSSA is the u32 at offset 24 (TCS_CSSA). The enclave
        // cannot write its TCS (mapped read-only to it), only the runner does, under the TCS's
        // thread lock.
        unsafe { core::ptr::write_unaligned(host.add(gpr::TCS_CSSA) as *mut u32, cssa) };
    }

    /// AEX: saves the interrupted state into SSA frame CSSA, CSSA++, and enters the enclave's
    /// handler path (OENTRY with RAX = CSSA). Err = the thread ends (no frame left, bad SSA).
    fn aex(&self, th: &mut Thread, vcpu: &VcpuFd, vector: u8) -> Result<(), String> {
        let desc = self.describe_fault(th, vcpu, vector);
        let (rip, rflags, rsp, code, rax) = self.ist_frame(&th.l, vector);
        let regs = vcpu.get_regs().map_err(|e| format!("{desc} (AEX: {e})"))?;
        let (host, ossa, cssa, nssa) = self.tcs_state(th.tcs)?;
        let Some(frame) = ssa::aex_frame(ossa, cssa, nssa, self.ssa_frame_size) else {
            return Err(format!("{desc}; no free SSA frame (CSSA = NSSA = {nssa}): not delivered"));
        };
        let sregs = vcpu.get_sregs().map_err(|e| format!("{desc} (AEX: {e})"))?;
        let g = Gpr {
            regs: [rax, regs.rcx, regs.rdx, regs.rbx, rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15],
            // RF (bit 16) is set in the frame the CPU pushes for a fault; the saved state is the
            // context to resume, which ERESUME accepts only with RF clear
            rflags: rflags & !(1 << 16),
            rip,
            ursp: 0,
            urbp: 0,
            exitinfo: ssa::exitinfo(vector),
            fsbase: sregs.fs.base,
            gsbase: sregs.gs.base,
        };
        let la = self.base + frame;
        if !self.enclave_write(la, &g.to_bytes()) {
            return Err(format!("{desc}; SSA frame at {la:#x} is not writable enclave memory"));
        }
        if self.misc_select & gpr::MISC_EXINFO != 0 {
            let maddr = if vector == 14 { sregs.cr2 } else { 0 };
            let mut misc = [0u8; 16];
            misc[..8].copy_from_slice(&maddr.to_le_bytes());
            misc[8..12].copy_from_slice(&(code as u32).to_le_bytes());
            if !self.enclave_write(la - 16, &misc) {
                return Err(format!("{desc}; SSA MISC at {:#x} is not writable", la - 16));
            }
        }
        Self::set_cssa(host, cssa + 1);
        th.last_fault = desc;
        let entry = Regs { rip: th.entry.entry, rax: cssa as u64 + 1, rbx: th.entry.tcs, rdi: la, r8: th.l.mailbox_la, rflags: 2, ..Regs::default() };
        vcpu.set_regs(&entry).map_err(|e| format!("AEX: {e}"))?;
        Ok(())
    }

    /// ERESUME: checks frame CSSA-1 (a forged frame ends the thread with SSA_INVALID), CSSA--,
    /// loads the saved registers.
    fn eresume(&self, th: &mut Thread, vcpu: &VcpuFd) -> Result<(), RunError> {
        let (host, ossa, cssa, _) = self.tcs_state(th.tcs).map_err(RunError::Dead)?;
        let frame = ssa::resume_frame(ossa, cssa, self.ssa_frame_size).map_err(|e| RunError::SsaInvalid(e.to_string()))?;
        let la = self.base + frame;
        let mut b = [0u8; gpr::GPRSGX_SIZE as usize];
        if !self.enclave_read(la, &mut b) {
            return Err(RunError::SsaInvalid(format!("ERESUME: SSA frame at {la:#x} unreadable")));
        }
        let g = Gpr::from_bytes(&b);
        let exec = |x: u64| {
            let m = self.mem.lock().unwrap();
            x >= self.base && m.pages.get(&((x - self.base) / PAGE)).is_some_and(|&(_, p)| p & 4 != 0)
        };
        let rflags = ssa::validate_resume(&g, self.base, self.size, false, exec).map_err(|e| RunError::SsaInvalid(format!("SSA_INVALID: {e}")))?;
        Self::set_cssa(host, cssa - 1);
        let r = &g.regs;
        let regs = Regs {
            rax: r[0],
            rcx: r[1],
            rdx: r[2],
            rbx: r[3],
            rsp: r[4],
            rbp: r[5],
            rsi: r[6],
            rdi: r[7],
            r8: r[8],
            r9: r[9],
            r10: r[10],
            r11: r[11],
            r12: r[12],
            r13: r[13],
            r14: r[14],
            r15: r[15],
            rip: g.rip,
            rflags,
        };
        vcpu.set_regs(&regs).map_err(|e| RunError::Dead(format!("ERESUME: {e}")))
    }

    /// Copies `len` bytes of enclave memory at linear `la` (pages the enclave can access now).
    fn enclave_read(&self, la: u64, out: &mut [u8]) -> bool {
        // SAFETY: enclave_span hands out `host` with n bytes left in its enclave page and off + n
        // <= out.len(); the enclave page is guest memory a vCPU may also write, hence a plain
        // byte copy and no reference into it.
        self.enclave_span(la, out.len() as u64, false, |host, off, n| unsafe { core::ptr::copy_nonoverlapping(host, out.as_mut_ptr().add(off), n) })
    }
    /// Writes enclave memory at linear `la`; every page must be enclave-writable.
    fn enclave_write(&self, la: u64, data: &[u8]) -> bool {
        // SAFETY: as in enclave_read, with every touched page enclave-writable (checked by
        // enclave_span) and off + n <= data.len().
        self.enclave_span(la, data.len() as u64, true, |host, off, n| unsafe { core::ptr::copy_nonoverlapping(data.as_ptr().add(off), host, n) })
    }
    fn enclave_span(&self, la: u64, len: u64, write: bool, mut f: impl FnMut(*mut u8, usize, usize)) -> bool {
        let Some(end) = la.checked_add(len) else { return false };
        if la < self.base || end > self.base + self.size {
            return false;
        }
        let m = self.mem.lock().unwrap();
        let mut plan = Vec::new();
        let mut at = la;
        while at < end {
            let off = at - self.base;
            let Some(&(host, perms)) = m.pages.get(&(off / PAGE)) else { return false };
            if perms & 1 == 0 || (write && perms & 2 == 0) {
                return false;
            }
            let in_page = off % PAGE;
            let n = (PAGE - in_page).min(end - at);
            // SAFETY: `host` is the start of a PAGE-byte enclave page and in_page < PAGE.
            plan.push((unsafe { host.add(in_page as usize) }, (at - la) as usize, n as usize));
            at += n;
        }
        drop(m);
        for (h, o, n) in plan {
            f(h, o, n);
        }
        true
    }

    /// Serves the hypercall described in the thread's mailbox; returns the status for EAX.
    fn serve_hypercall(&self, l: &ThreadLayout) -> u64 {
        let (nr, a0, a1, a2) = (self.mailbox(l, mb::NR), self.mailbox(l, mb::A0), self.mailbox(l, mb::A1), self.mailbox(l, mb::A2));
        match nr {
            hc::EGETKEY => {
                let mut req = [0u8; 80];
                if !self.enclave_read(a0, &mut req) {
                    return hc::STATUS_BAD_POINTER;
                }
                let key = self.backend.lock().unwrap().get_key(&req);
                match key {
                    Ok(mut key) => {
                        let ok = self.enclave_write(a1, &key);
                        key.fill(0);
                        if ok {
                            0
                        } else {
                            hc::STATUS_BAD_POINTER
                        }
                    }
                    Err(s) => s,
                }
            }
            hc::EREPORT => {
                let mut ti = [0u8; 56];
                let mut data = [0u8; 64];
                if !self.enclave_read(a0, &mut ti) || !self.enclave_read(a1, &mut data) {
                    return hc::STATUS_BAD_POINTER;
                }
                let rep = self.backend.lock().unwrap().report(&ti, &data);
                match rep {
                    Ok(rep) if self.enclave_write(a2, &rep) => 0,
                    Ok(_) => hc::STATUS_BAD_POINTER,
                    Err(s) => s,
                }
            }
            edmm_hc::EACCEPT | edmm_hc::EMODPE => {
                if a0 < self.base || a0 - self.base >= self.size || !(a0 - self.base).is_multiple_of(PAGE) {
                    return hc::STATUS_BAD_POINTER;
                }
                let offset = a0 - self.base;
                let op = if nr == edmm_hc::EACCEPT { Edmm::Accept { offset, flags: a1 } } else { Edmm::Extend { offset, perms: a1 } };
                match self.edmm(op) {
                    Ok(_) => 0,
                    Err((s, _)) => s,
                }
            }
            _ => hc::STATUS_UNKNOWN,
        }
    }

    /// Serves the OCALL described in the thread's mailbox; returns EAX (output length or error).
    fn serve_ocall(&self, l: &ThreadLayout, ocall: &mut Option<OcallFn>) -> u32 {
        let nr = self.mailbox(l, mb::NR) as u32;
        let cap = l.shared_len as usize;
        let off = l.shared_off as usize;
        let n = (self.mailbox(l, mb::LEN) as usize).min(cap);
        let mut input = vec![0u8; n];
        self.runner.read(off, &mut input);
        if nr == OCALL_HEAP_GROW {
            // rt's heap_grow: u64 offset, u64 pages → ENCLAVE_AUGMENT
            if n != 16 {
                return ECALL_ERROR as u32 | OCALL_FAILED;
            }
            let offset = u64::from_le_bytes(input[..8].try_into().unwrap());
            let count = u64::from_le_bytes(input[8..].try_into().unwrap());
            return match self.edmm(Edmm::Augment { offset, count }) {
                Ok(_) => 0,
                Err(_) => ECALL_ERROR as u32 | OCALL_FAILED,
            };
        }
        // A host that does not serve the OCALL (no handler, or the handler failed) answers
        // with an error code; the enclave decides what to do with it.
        let answer = match ocall.as_mut() {
            Some(f) => f(nr, &input),
            None => Err(format!("OCALL {nr} with no OCALL handler")),
        };
        match answer {
            Ok(out) if out.len() <= cap => {
                self.runner.write(off, &out);
                out.len() as u32
            }
            _ => ECALL_ERROR as u32 | OCALL_FAILED,
        }
    }

    /// One EDMM step through the backend, then the guest view follows the new EPCM state
    /// (pages mapped only when accessible; restricted, trimmed and removed pages get their KVM
    /// slot re-registered, which drops every cached translation of them).
    pub fn edmm(&self, op: Edmm) -> Result<u32, (u64, String)> {
        if let Edmm::Remove { offset, count } = op {
            self.before_remove(offset, count).map_err(|e| (hc::STATUS_NO_CORE, e))?;
        }
        let n = self.backend.lock().unwrap().edmm(op)?;
        let (offset, count) = op.range();
        self.resync(offset, count).map_err(|m| (hc::STATUS_NO_CORE, m))?;
        Ok(n)
    }

    /// Before an EREMOVE of [offset, offset + count pages): the frames go back to the EPC pool
    /// (and maybe to another enclave) as soon as the backend removes them, so every page of the
    /// range the guest cannot reach now (the only removable ones: accepted TRIM pages) leaves
    /// this VM's memory slots first.
    pub fn before_remove(&self, offset: u64, count: u64) -> Result<(), String> {
        let mut m = self.mem.lock().unwrap();
        for k in 0..count.min(self.size / PAGE) {
            let off = offset.wrapping_add(k * PAGE);
            if !m.pages.contains_key(&(off / PAGE)) {
                self.carve(&mut m, off)?;
            }
        }
        Ok(())
    }

    /// Makes the guest page tables and KVM slots of pages [offset, offset + count × 4096) match
    /// the backend's EPCM (also after EDMM leaves served outside this VM, e.g. by the core's
    /// hypercall dispatch).
    pub fn resync(&self, offset: u64, count: u64) -> Result<(), String> {
        let kvm = kvm()?;
        let mut want = Vec::new();
        {
            let mut b = self.backend.lock().unwrap();
            for k in 0..count {
                let off = offset + k * PAGE;
                want.push((off, b.page(off)));
            }
        }
        let mut m = self.mem.lock().unwrap();
        for (off, st) in want {
            if st.is_some_and(|(_, p)| p.page_type == hyperenclave_core::PageType::Tcs) {
                continue; // TCS pages never change
            }
            let access = st.and_then(|(h, p)| p.enclave_perms().map(|perms| (h, perms)));
            if m.pages.get(&(off / PAGE)).map(|&(_, p)| p) == access.map(|(_, p)| p) && access.is_some() {
                continue; // unchanged
            }
            self.carve(&mut m, off)?;
            // SAFETY: the runner area is this VM's own mapping. Through this slice only the
            // page-table pool (and the PML4) is written, under the mem lock; other threads touch
            // only their own mailbox, shared and IST pages (never through this slice), and vCPUs
            // walking the tables see whole entries (guest::store_entry writes each with one
            // aligned 8-byte store).
            let rmem = unsafe { core::slice::from_raw_parts_mut(self.runner.ptr(), self.runner.len()) };
            match access {
                Some((host, perms)) => {
                    let ro = perms & 2 == 0 && kvm.readonly_mem;
                    let slot = m.free_slots.pop().unwrap_or_else(|| {
                        m.next_slot += 1;
                        m.next_slot - 1
                    });
                    if let Some(vm) = self.vm.lock().unwrap().as_ref() {
                        // SAFETY: `host` is one EPC page kept alive by the backend's owner (the
                        // core's reserved memory or the standalone mapping); its slot is deleted
                        // before the page is removed (carve above, on the next resync of a REMOVE).
                        unsafe { vm.set_memory(slot, ENCLAVE_GPA + off, PAGE, host, ro) }.map_err(|e| e.to_string())?;
                    }
                    m.slots.insert(slot, HostRegion { offset: off, len: PAGE, host, readonly: ro });
                    let base = self.base;
                    guest::map_page(rmem, &mut m.layout, base, off, perms).map_err(|e| e.to_string())?;
                    m.pages.insert(off / PAGE, (host, perms));
                }
                None => {
                    guest::unmap_page(rmem, &m.layout, self.base, off);
                    m.pages.remove(&(off / PAGE));
                }
            }
        }
        Ok(())
    }

    /// Takes the page at `off` out of whatever KVM slot holds it: the slot is deleted (KVM drops
    /// its cached translations) and the rest of its region registered again.
    fn carve(&self, m: &mut Mem, off: u64) -> Result<(), String> {
        let Some((&slot, &r)) = m.slots.iter().find(|(_, r)| off >= r.offset && off < r.offset + r.len) else { return Ok(()) };
        let vm_guard = self.vm.lock().unwrap();
        let Some(vm) = vm_guard.as_ref() else { return Ok(()) };
        // SAFETY: deleting a slot (size 0) only makes KVM forget the range.
        unsafe { vm.set_memory(slot, ENCLAVE_GPA + r.offset, 0, r.host, false) }.map_err(|e| e.to_string())?;
        m.slots.remove(&slot);
        m.free_slots.push(slot);
        let head = off - r.offset;
        let tail = r.offset + r.len - (off + PAGE);
        // SAFETY: both parts lie inside the region being split (head < r.len, off + PAGE <= end).
        let parts = [(r.offset, head, r.host), (off + PAGE, tail, unsafe { r.host.add((head + PAGE) as usize) })];
        for (o, len, host) in parts {
            if len == 0 {
                continue;
            }
            let s = m.free_slots.pop().unwrap_or_else(|| {
                m.next_slot += 1;
                m.next_slot - 1
            });
            // SAFETY: a sub-range of a region that was registered (and kept alive) already.
            unsafe { vm.set_memory(s, ENCLAVE_GPA + o, len, host, r.readonly) }.map_err(|e| e.to_string())?;
            m.slots.insert(s, HostRegion { offset: o, len, host, readonly: r.readonly });
        }
        Ok(())
    }
}

fn setup_sregs(vcpu: &VcpuFd, l: &Layout, t: &ThreadLayout, fs_gs: (u64, u64)) -> Result<(), sys::SysError> {
    let mut s = vcpu.get_sregs()?;
    let code = Segment { base: 0, limit: 0xFFFF_FFFF, selector: guest::SEL_CODE, type_: 11, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, ..Default::default() };
    let data = Segment { base: 0, limit: 0xFFFF_FFFF, selector: guest::SEL_DATA, type_: 3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, ..Default::default() };
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.ss = data;
    s.fs = Segment { base: fs_gs.0, ..data };
    s.gs = Segment { base: fs_gs.1, ..data };
    s.tr = Segment { base: t.tss_la, limit: 103, selector: guest::SEL_TSS, type_: 11, present: 1, s: 0, ..Default::default() };
    s.gdt.base = t.gdt_la;
    s.gdt.limit = 39;
    s.idt.base = t.idt_la;
    s.idt.limit = (guest::IDT_VECTORS * 16 - 1) as u16;
    s.cr3 = l.cr3;
    s.cr4 = 0x20 | 0x200 | 0x400; // PAE, OSFXSR, OSXMMEXCPT
    s.cr0 = 0x8001_0033; // PG, WP, NE, ET, MP, PE
    s.efer = 0x100 | 0x400 | 0x800; // LME, LMA, NXE
    vcpu.set_sregs(&s)
}

// ---------------------------------------------------------------- watchdog

#[derive(Default)]
struct SlotState {
    deadline: Option<Instant>,
    thread: u64,
    run: usize,
}

#[derive(Default)]
pub struct RunSlot {
    state: Mutex<SlotState>,
    fired: AtomicBool,
}

impl RunSlot {
    fn arm(&self, run: *mut u8, timeout_ms: u64) {
        self.fired.store(false, Ordering::SeqCst);
        let mut s = self.state.lock().unwrap();
        s.deadline = Some(Instant::now() + Duration::from_millis(timeout_ms));
        s.thread = sys::current_thread();
        s.run = run as usize;
    }
    fn disarm(&self) {
        let mut s = self.state.lock().unwrap();
        s.deadline = None;
        s.run = 0;
    }
}

struct Watchdog {
    slots: Mutex<Vec<Weak<RunSlot>>>,
    thread: std::thread::Thread,
}

const WATCHDOG_TICK: Duration = Duration::from_millis(2);

fn watchdog() -> &'static Watchdog {
    static W: OnceLock<Watchdog> = OnceLock::new();
    W.get_or_init(|| {
        let t = std::thread::Builder::new()
            .name("enclave-watchdog".into())
            .spawn(|| loop {
                let w = watchdog();
                let any = {
                    let mut slots = w.slots.lock().unwrap();
                    slots.retain(|s| s.strong_count() > 0);
                    let now = Instant::now();
                    for s in slots.iter().filter_map(|s| s.upgrade()) {
                        let st = s.state.lock().unwrap();
                        if st.deadline.is_some_and(|d| now >= d) && st.run != 0 && !s.fired.load(Ordering::SeqCst) {
                            s.fired.store(true, Ordering::SeqCst);
                            // kvm_run.immediate_exit: the next KVM_RUN returns at once; the
                            // signal kicks a vCPU that is inside KVM_RUN now.
                            // SAFETY: st.run is non-zero only between arm() and disarm() (same
                            // mutex, held here), i.e. while the vCPU's run loop holds &mut
                            // EnclaveVm and so keeps its kvm_run mapping alive; byte 1 is
                            // kvm_run.immediate_exit, written volatile as the vCPU thread and the
                            // kernel read it.
                            unsafe { core::ptr::write_volatile((st.run as *mut u8).add(1), 1) };
                            sys::kick_thread(st.thread);
                        }
                    }
                    !slots.is_empty()
                };
                if any {
                    std::thread::sleep(WATCHDOG_TICK);
                } else {
                    std::thread::park();
                }
            })
            .expect("spawn watchdog thread");
        Watchdog { slots: Mutex::new(Vec::new()), thread: t.thread().clone() }
    })
}

impl Watchdog {
    fn register(&self, s: &Arc<RunSlot>) {
        self.slots.lock().unwrap().push(Arc::downgrade(s));
        self.thread.unpark();
    }
}

// ---------------------------------------------------------------- standalone enclaves

/// A flat image laid out by `hypervisor/enclaves/build.sh`, loaded without the core (no
/// measurement, no EGETKEY/EREPORT): the TCS is read from the image itself.
pub struct Standalone {
    mem: *mut u8,
    size: u64,
    base: u64,
    tcs_busy: Vec<u64>,
    tcs_pages: Vec<u64>,
    /// ELRANGE offset → EPCM state (the same state machine as the core's; no SECS here, so
    /// no EDMM opt-in check).
    epcm: BTreeMap<u64, EpcmPage>,
}

impl Standalone {
    fn edmm_step(&mut self, op: Edmm) -> Result<u32, HvError> {
        let (offset, count) = op.range();
        let end = count.checked_mul(PAGE).and_then(|l| offset.checked_add(l));
        if !offset.is_multiple_of(PAGE) || count == 0 || end.is_none_or(|e| e > self.size) {
            return Err(HvError::OutsideElrange { id: 0, offset, size: self.size });
        }
        let offs: Vec<u64> = (0..count).map(|k| offset + k * PAGE).collect();
        if let Edmm::Augment { .. } = op {
            if let Some(&o) = offs.iter().find(|o| self.epcm.contains_key(o)) {
                return Err(HvError::PageOverlap { id: 0, offset: o });
            }
            for o in offs {
                // SAFETY: o + PAGE <= size (checked), inside the ELRANGE-sized mapping at `mem`.
                unsafe { core::ptr::write_bytes(self.mem.add(o as usize), 0, PAGE as usize) };
                self.epcm.insert(o, EpcmPage::augmented());
            }
            return Ok(count as u32);
        }
        let step = |p: &mut EpcmPage| match op {
            Edmm::Restrict { perms, .. } => p.restrict(perms),
            Edmm::ModifyType { page_type, .. } => p.modify_type(page_type),
            Edmm::Remove { .. } => p.check_remove(),
            Edmm::Accept { flags, .. } => p.accept(flags),
            Edmm::Extend { perms, .. } => p.extend_perms(perms),
            Edmm::Augment { .. } => Ok(()),
        };
        let mut next = Vec::new();
        for &o in &offs {
            let mut p = *self.epcm.get(&o).ok_or(HvError::PageNotAdded { id: 0, offset: o })?;
            step(&mut p).map_err(|e| edmm::at(e, 0, o))?;
            next.push((o, p));
        }
        for (o, p) in next {
            if let Edmm::Remove { .. } = op {
                // SAFETY: as above; the page is scrubbed before it is forgotten.
                unsafe { core::ptr::write_bytes(self.mem.add(o as usize), 0, PAGE as usize) };
                self.epcm.remove(&o);
            } else {
                self.epcm.insert(o, p);
            }
        }
        Ok(count as u32)
    }
}

// SAFETY: `mem` points into the Mapping the owning EnclaveVm keeps in `_regions_keepalive` (dropped
// after the backend); Standalone is only used through that EnclaveVm.
unsafe impl Send for Standalone {}

impl Backend for Standalone {
    fn enter(&mut self, tcs_offset: u64) -> Result<Entry, String> {
        if !self.tcs_pages.contains(&tcs_offset) {
            return Err(format!("no TCS page at offset {tcs_offset:#x}"));
        }
        if self.tcs_busy.contains(&tcs_offset) {
            return Err(format!("TCS at offset {tcs_offset:#x} is busy"));
        }
        self.tcs_busy.push(tcs_offset);
        // SAFETY: tcs_offset is one of the TCS pages, which EnclaveVm::create accepted only inside
        // page-aligned regions within `size`, the length of the mapping at `mem`; the bytes are
        // read while the vCPU is parked, not running.
        let page = unsafe { core::slice::from_raw_parts(self.mem.add(tcs_offset as usize), PAGE as usize) };
        let q = |o: usize| u64::from_le_bytes(page[o..o + 8].try_into().unwrap());
        let (oentry, ofs, ogs) = (q(32), q(48), q(56));
        if oentry >= self.size {
            self.tcs_busy.retain(|&t| t != tcs_offset);
            return Err(format!("TCS.OENTRY {oentry:#x} outside ELRANGE"));
        }
        let b = self.base;
        // as EENTER (and the core): FS/GS.base = base + OFSBASE/OGSBASE
        Ok(Entry { entry: b + oentry, tcs: b + tcs_offset, fs_base: b.wrapping_add(ofs), gs_base: b.wrapping_add(ogs) })
    }
    fn exit(&mut self, tcs_offset: u64) {
        self.tcs_busy.retain(|&t| t != tcs_offset);
    }
    fn get_key(&mut self, _: &[u8; 80]) -> Result<[u8; 16], u64> {
        Err(hc::STATUS_NO_CORE)
    }
    fn report(&mut self, _: &[u8; 56], _: &[u8; 64]) -> Result<[u8; 432], u64> {
        Err(hc::STATUS_NO_CORE)
    }
    fn edmm(&mut self, op: Edmm) -> Result<u32, (u64, String)> {
        self.edmm_step(op).map_err(|e| (HcStatus::from(&e) as u64, e.to_string()))
    }
    fn page(&mut self, offset: u64) -> Option<(*mut u8, EpcmPage)> {
        let p = *self.epcm.get(&offset)?;
        // SAFETY: every EPCM offset is a page inside `size`, the mapping's length.
        Some((unsafe { self.mem.add(offset as usize) }, p))
    }
}

/// Loads `image` (flat, from ELRANGE offset `image_offset`) into fresh memory with the given
/// page permissions and starts a VM for it.
pub fn create_standalone(
    name: &str,
    base: u64,
    size: u64,
    image: &[u8],
    image_offset: u64,
    pages: Vec<PageDesc>,
    shared_pages: u64,
    timeout_ms: u64,
) -> Result<EnclaveVm, String> {
    if size == 0 || !size.is_multiple_of(PAGE) || !image_offset.is_multiple_of(PAGE) || image_offset + image.len() as u64 > size {
        return Err(format!("enclave {name}: image of {} bytes at offset {image_offset:#x} does not fit the declared size {size:#x}", image.len()));
    }
    let mem = Mapping::anonymous(size as usize).map_err(|e| e.to_string())?;
    mem.write(image_offset as usize, image);
    let tcs_pages: Vec<u64> = pages.iter().filter(|p| p.tcs).map(|p| p.offset).collect();
    let epcm = pages.iter().map(|p| (p.offset, EpcmPage::added(if p.tcs { PageType::Tcs } else { PageType::Reg }, if p.tcs { 0 } else { p.perms }))).collect();
    let backend = Standalone { mem: mem.ptr(), size, base, tcs_busy: Vec::with_capacity(tcs_pages.len()), tcs_pages, epcm };
    // one region per page so read-only pages get read-only slots; coalesced by writability
    // SAFETY: NOT established for every input: p.offset comes from the caller's page list and is
    // checked against `size` (by EnclaveVm::create's region check) only after this pointer is
    // computed; an offset past the mapping makes `add` out of bounds (wrapping_add would make the
    // computation well-defined until the check rejects it). Flagged for the typed-boundary work
    // (issue 13 item 2).
    let regions = coalesce(pages.iter().map(|p| (p.offset, unsafe { mem.ptr().add(p.offset as usize) }, p.tcs || p.perms & 2 == 0)));
    // No SECS here: MISCSELECT.EXINFO on, one-page SSA frames (what build.sh links).
    let spec = VmSpec { base, size, pages, regions, shared_pages, timeout_ms, misc_select: gpr::MISC_EXINFO, ssa_frame_size: 1 };
    EnclaveVm::create(name, spec, Box::new(backend), Some(mem))
}

/// Merges pages (offset, host, readonly) into maximal runs contiguous in offset and host memory.
pub fn coalesce(pages: impl Iterator<Item = (u64, *mut u8, bool)>) -> Vec<HostRegion> {
    let mut v: Vec<(u64, *mut u8, bool)> = pages.collect();
    v.sort_by_key(|p| p.0);
    let mut out: Vec<HostRegion> = Vec::new();
    for (off, host, ro) in v {
        if let Some(last) = out.last_mut() {
            if last.offset + last.len == off && last.host as usize + last.len as usize == host as usize && last.readonly == ro {
                last.len += PAGE;
                continue;
            }
        }
        out.push(HostRegion { offset: off, len: PAGE, host, readonly: ro });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_contiguous_runs_only() {
        let base = 0x10000 as *mut u8;
        // SAFETY: test-only fake addresses: the pointers are compared, never dereferenced (for
        // `add` they should still lie in one allocation; a wrapping_add would be exact).
        let p = |o: u64, h: usize, ro| (o, unsafe { base.add(h) }, ro);
        let r = coalesce([p(0x2000, 0x2000, false), p(0, 0, true), p(0x1000, 0x1000, false), p(0x3000, 0x5000, false)].into_iter());
        let got: Vec<(u64, u64, bool)> = r.iter().map(|r| (r.offset, r.len, r.readonly)).collect();
        assert_eq!(got, vec![(0, 0x1000, true), (0x1000, 0x2000, false), (0x3000, 0x1000, false)]);
    }

    /// A hand-assembled guest: proves long mode, the EEXIT port and the fault stubs work
    /// without any payload build. Skips (with the reason) where /dev/kvm is unusable.
    #[test]
    fn tiny_guest_runs_ecalls_and_faults_cleanly() {
        if let Err(why) = kvm_available() {
            eprintln!("skipped: {why}");
            return;
        }
        let base = 0x4000_0000u64;
        let mut image = vec![0u8; 0x2000];
        // TCS at 0: OSSA 0x1000 is irrelevant here; NSSA 1; OENTRY 0x1000.
        image[28..32].copy_from_slice(&1u32.to_le_bytes());
        image[32..40].copy_from_slice(&0x1000u64.to_le_bytes());
        // code at 0x1000: rdi == 0 → eax = rdx + 1 → out 0x10; rdi == 1 → ud2; else jmp $
        let code: &[u8] = &[
            0x48, 0x83, 0xFF, 0x00, // cmp rdi, 0
            0x75, 0x07, // jne +7
            0x8D, 0x42, 0x01, // lea eax, [rdx+1]
            0xE6, 0x10, // out 0x10, al  (size 1)
            0xEB, 0xFE, // jmp $ (never reached)
            0x48, 0x83, 0xFF, 0x01, // cmp rdi, 1
            0x75, 0x02, // jne +2
            0x0F, 0x0B, // ud2
            0xEB, 0xFE, // jmp $
        ];
        image[0x1000..0x1000 + code.len()].copy_from_slice(code);
        let pages = vec![PageDesc { offset: 0, perms: 0, tcs: true }, PageDesc { offset: 0x1000, perms: 5, tcs: false }];
        let vm = create_standalone("tiny", base, 0x2000, &image, 0, pages.clone(), 1, 200).unwrap();
        let out = vm.ecall(0, 0, &[1, 2, 3], None, None).unwrap();
        assert_eq!(out.status, 4);
        let e = vm.ecall(0, 1, &[], None, None).unwrap_err();
        assert!(e.message().contains("#UD invalid opcode") && e.message().contains("offset 0x1013"), "{}", e.message());
        assert!(vm.ecall(0, 0, &[], None, None).unwrap_err().message().contains("is dead"));

        let vm2 = create_standalone("spin", base, 0x2000, &image, 0, pages, 1, 50).unwrap();
        let t = Instant::now();
        let e = vm2.ecall(0, 2, &[], None, None).unwrap_err();
        assert!(e.message().contains("runaway"), "{}", e.message());
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
