//! The KVM enclave runner: one KVM VM (one vCPU) per enclave, the enclave's pages as guest
//! memory, entered in 64-bit mode at the TCS entry. ECALL = write the input to the shared
//! buffer, set the entry registers (first entry) or resume the vCPU parked at its last EEXIT,
//! KVM_RUN until the next EEXIT. OCALLs and hypercalls (EGETKEY, EREPORT) are port I/O too. A fault, a triple fault, an unexpected
//! exit or a runaway ECALL (watchdog budget) kills that VM only, with a one-line reason.
//!
//! Protocol (no register crosses after the first entry: register ioctls cost ~7 µs each on
//! kvm_pvm, about as much as an exit). Arguments and results travel in a mailbox page
//! (`guest::mb` words) and the shared buffer, both outside the enclave:
//! - First ECALL on a TCS: RIP = base + OENTRY, RBX = TCS address, RDI = ECALL number,
//!   RSI = shared buffer, RDX = input length, RCX = shared capacity, R8 = mailbox (all also in
//!   the mailbox); RSP = 0 (the enclave sets its own stack).
//! - ECALL numbers are 0..=255.
//! - EEXIT: mailbox STATUS = output length (output at the start of the shared buffer) or
//!   0x8000_0000 | error code, then `in al, PORT_EEXIT` (any IN size works). The vCPU parks
//!   there; the next ECALL on the same TCS resumes it with AL/EAX = ECALL number (mailbox
//!   FUNC/IN_LEN updated).
//!   A plain `out PORT_EEXIT, eax` (EAX = status) also ends an ECALL, without parking.
//! - OCALL: mailbox NR, LEN (input in the shared buffer), `in eax, PORT_OCALL` → EAX =
//!   output length or 0x8000_0000 | code.
//! - Hypercall: mailbox NR, A0..A2 (enclave addresses), `in eax, PORT_HYPERCALL` → EAX = status.
//! - Panic: message in the shared buffer, `out PORT_PANIC, eax` (EAX = length). Exceptions go
//!   through the runner's IDT stubs (`out PORT_FAULT, al` = vector).

use crate::kvm::guest::{self, mb, Layout, PageDesc, ENCLAVE_GPA, PAGE, PORT_EEXIT, PORT_FAULT, PORT_HYPERCALL, PORT_OCALL, PORT_PANIC};
use crate::kvm::{Exit, Kvm, Regs, Segment, VcpuFd, VmFd};
use crate::sys::{self, Mapping};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Where the entry is and what the hypervisor answers; standalone or the core.
pub trait Backend: Send {
    fn enter(&mut self, tcs_offset: u64) -> Result<Entry, String>;
    fn exit(&mut self, tcs_offset: u64);
    fn get_key(&mut self, key_request: &[u8; 80]) -> Result<[u8; 16], u64>;
    fn report(&mut self, target_info: &[u8; 56], report_data: &[u8; 64]) -> Result<[u8; 432], u64>;
}

#[derive(Clone, Copy, Debug)]
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
}

/// An ECALL that reached EEXIT.
#[derive(Debug)]
pub struct EcallOut {
    /// EAX at EEXIT.
    pub status: u32,
    pub output: Vec<u8>,
    pub exits: u64,
}

/// Error code (EAX = 0x8000_0000 | code) an enclave sees when the host fails an OCALL.
pub const OCALL_FAILED: u32 = hyperenclave_core::enclave::runtime::err::OCALL;

pub type OcallFn<'a> = &'a mut dyn FnMut(u32, &[u8]) -> Result<Vec<u8>, String>;

/// Why a call failed: `Dead` means the VM was killed (fault, runaway, unexpected exit).
#[derive(Debug, Clone)]
pub enum RunError {
    Dead(String),
    Bad(String),
}

impl RunError {
    pub fn message(&self) -> &str {
        match self {
            RunError::Dead(m) | RunError::Bad(m) => m,
        }
    }
}

struct Live {
    vcpu: VcpuFd,
    _vm: VmFd,
    runner: Mapping,
    layout: Layout,
    slot: Arc<RunSlot>,
}

pub struct EnclaveVm {
    pub name: String,
    base: u64,
    size: u64,
    live: Option<Live>,
    dead: Option<String>,
    /// The vCPU waits in its EEXIT `in` on this TCS: (TCS offset, kvm_run data offset).
    parked: Option<(u64, usize)>,
    /// ELRANGE page number → (host address, writable by the enclave).
    pages: BTreeMap<u64, (*mut u8, bool)>,
    backend: Box<dyn Backend>,
    pub timeout_ms: u64,
    pub ecalls: u64,
    pub exits: u64,
    _regions_keepalive: Option<Mapping>,
}

// SAFETY: the raw pointers in `pages` point into mappings this value keeps alive
// (`_regions_keepalive`, or the core's reserved memory held through CoreBackend's Arc); every
// access goes through &mut self or &self methods of one owner, so moving it to another thread does
// not share them.
unsafe impl Send for EnclaveVm {}

fn kvm() -> Result<&'static Kvm, String> {
    static KVM: OnceLock<Result<Kvm, String>> = OnceLock::new();
    KVM.get_or_init(|| Kvm::open().map_err(|e| format!("KVM unavailable: {e}"))).as_ref().map_err(|e| e.clone())
}

pub fn kvm_available() -> Result<(), String> {
    kvm().map(|_| ())
}

impl EnclaveVm {
    /// Builds the VM. `keepalive` owns the enclave memory when the runner allocated it.
    pub fn create(name: &str, spec: VmSpec, backend: Box<dyn Backend>, keepalive: Option<Mapping>) -> Result<EnclaveVm, String> {
        let kvm = kvm()?;
        let rp = guest::runner_pages(spec.size, spec.shared_pages);
        let runner = Mapping::anonymous((rp * PAGE) as usize).map_err(|e| e.to_string())?;
        // SAFETY: `runner` is a fresh anonymous mapping of runner.len() bytes, not yet given to KVM
        // nor referenced elsewhere, so this is the only reference while guest::build fills it.
        let rmem = unsafe { core::slice::from_raw_parts_mut(runner.ptr(), runner.len()) };
        let layout = guest::build(rmem, spec.base, spec.size, &spec.pages, spec.shared_pages).map_err(|e| format!("enclave {name}: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| e.to_string())?;
        // SAFETY: `runner` moves into the Live that also owns `vm`, so it stays mapped while the VM
        // exists.
        unsafe { vm.set_memory(0, 0, runner.len() as u64, runner.ptr(), false) }.map_err(|e| e.to_string())?;
        for (i, r) in spec.regions.iter().enumerate() {
            if r.offset % PAGE != 0 || r.len % PAGE != 0 || r.offset + r.len > spec.size {
                return Err(format!("enclave {name}: memory region {:#x}+{:#x} outside ELRANGE", r.offset, r.len));
            }
            let ro = r.readonly && kvm.readonly_mem;
            // SAFETY: each region's host range is kept mapped for the VM's life by `keepalive`
            // (standalone) or by the core's reserved mapping behind CoreBackend's Arc (core
            // enclaves). Not guarded: if the core destroys the enclave and reuses those EPC frames
            // while this VM lives, the VM still maps them (memory stays valid, isolation does not).
            unsafe { vm.set_memory(1 + i as u32, ENCLAVE_GPA + r.offset, r.len, r.host, ro) }.map_err(|e| e.to_string())?;
        }
        let vcpu = vm.create_vcpu(kvm).map_err(|e| e.to_string())?;
        setup_sregs(&vcpu, &layout).map_err(|e| e.to_string())?;

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
            pages.insert(p.offset / PAGE, (host, !p.tcs && p.perms & 2 != 0));
        }
        sys::install_kick_handler();
        let slot = Arc::new(RunSlot::default());
        watchdog().register(&slot);
        Ok(EnclaveVm {
            name: name.to_string(),
            base: spec.base,
            size: spec.size,
            live: Some(Live { vcpu, _vm: vm, runner, layout, slot }),
            dead: None,
            parked: None,
            pages,
            backend,
            timeout_ms: spec.timeout_ms,
            ecalls: 0,
            exits: 0,
            _regions_keepalive: keepalive,
        })
    }

    pub fn dead_reason(&self) -> Option<&str> {
        self.dead.as_deref()
    }

    pub fn shared_capacity(&self) -> usize {
        self.live.as_ref().map(|l| l.layout.shared_len as usize).unwrap_or(0)
    }

    /// Ends the VM now (frees the KVM objects; the enclave's memory stays with its owner).
    pub fn kill(&mut self, reason: String) -> RunError {
        self.live = None;
        self.parked = None;
        self.dead = Some(reason.clone());
        RunError::Dead(reason)
    }

    /// One ECALL on the TCS at `tcs_offset`.
    pub fn ecall(&mut self, tcs_offset: u64, func: u64, input: &[u8], timeout_ms: Option<u64>, ocall: Option<OcallFn>) -> Result<EcallOut, RunError> {
        if let Some(d) = &self.dead {
            return Err(RunError::Dead(format!("enclave {} is dead: {d}", self.name)));
        }
        let live = self.live.as_ref().unwrap();
        let cap = live.layout.shared_len as usize;
        if input.len() > cap {
            return Err(RunError::Bad(format!("ECALL {func}: input of {} bytes exceeds the shared buffer ({cap} bytes)", input.len())));
        }
        if func > 255 {
            return Err(RunError::Bad(format!("ECALL number {func} out of range (0..=255)")));
        }
        let entry = self.backend.enter(tcs_offset).map_err(RunError::Bad)?;
        let l = &live.layout;
        live.runner.write(l.shared_off as usize, input);
        let words = [(mb::FUNC, func), (mb::IN_LEN, input.len() as u64), (mb::STATUS, 0), (mb::SHARED, l.shared_la), (mb::CAP, cap as u64)];
        for (i, v) in words {
            live.runner.write(l.mailbox_off as usize + i * 8, &v.to_le_bytes());
        }
        let resume = match self.parked.take() {
            Some((tcs, data_off)) if tcs == tcs_offset => {
                live.vcpu.set_io_in(data_off, func as u32);
                None
            }
            _ => Some(Regs {
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
        let r = self.run_ecall(tcs_offset, resume, &entry, timeout_ms.unwrap_or(self.timeout_ms), ocall);
        self.backend.exit(tcs_offset);
        self.ecalls += 1;
        r
    }

    fn mailbox(&self, i: usize) -> u64 {
        let live = self.live.as_ref().unwrap();
        let mut b = [0u8; 8];
        live.runner.read(live.layout.mailbox_off as usize + i * 8, &mut b);
        u64::from_le_bytes(b)
    }

    fn run_ecall(&mut self, tcs_offset: u64, fresh: Option<Regs>, entry: &Entry, timeout_ms: u64, mut ocall: Option<OcallFn>) -> Result<EcallOut, RunError> {
        let live = self.live.as_ref().unwrap();
        let name = &self.name;
        let fail = |e: sys::SysError| RunError::Bad(format!("enclave {name}: {e}"));
        if let Some(regs) = fresh {
            live.vcpu.set_regs(&regs).map_err(fail)?;
            if entry.fs_base != 0 || entry.gs_base != 0 {
                let mut s = live.vcpu.get_sregs().map_err(fail)?;
                s.fs.base = entry.fs_base;
                s.gs.base = entry.gs_base;
                live.vcpu.set_sregs(&s).map_err(fail)?;
            }
        }
        live.vcpu.clear_immediate_exit();
        live.slot.arm(live.vcpu.run_ptr(), timeout_ms);
        let mut exits = 0u64;
        let outcome = loop {
            let live = self.live.as_ref().unwrap();
            let exit = match live.vcpu.run() {
                Ok(x) => x,
                Err(e) => break Err(format!("KVM_RUN failed: {e}")),
            };
            exits += 1;
            match exit {
                Exit::Io { port: PORT_EEXIT, out, data, data_off, .. } => {
                    let status = if out { data } else { self.mailbox(mb::STATUS) as u32 };
                    let n = if status as u64 & ECALL_ERROR != 0 { 0 } else { status as usize };
                    if n > live.layout.shared_len as usize {
                        break Err(format!("EEXIT with output length {n} beyond the shared buffer ({} bytes)", live.layout.shared_len));
                    }
                    let mut out_buf = vec![0u8; n];
                    live.runner.read(live.layout.shared_off as usize, &mut out_buf);
                    if !out {
                        self.parked = Some((tcs_offset, data_off));
                    }
                    break Ok(EcallOut { status, output: out_buf, exits });
                }
                Exit::Io { port: PORT_OCALL, out: false, data_off, .. } => {
                    let v = self.serve_ocall(&mut ocall);
                    self.live.as_ref().unwrap().vcpu.set_io_in(data_off, v);
                }
                Exit::Io { port: PORT_HYPERCALL, out: false, data_off, .. } => {
                    let v = self.serve_hypercall();
                    self.live.as_ref().unwrap().vcpu.set_io_in(data_off, v as u32);
                }
                Exit::Io { port: PORT_PANIC, out: true, data, .. } => {
                    let n = (data as usize).min(256).min(live.layout.shared_len as usize);
                    let mut m = vec![0u8; n];
                    live.runner.read(live.layout.shared_off as usize, &mut m);
                    let text: String = String::from_utf8_lossy(&m).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                    break Err(format!("enclave panicked: {text}"));
                }
                Exit::Io { port: PORT_FAULT, out: true, data, .. } => break Err(self.describe_fault(data as u8)),
                Exit::Io { port, out, .. } => {
                    break Err(format!("unexpected I/O {} port {port:#x}", if out { "write to" } else { "read from" }))
                }
                Exit::Hlt => break Err("enclave executed HLT (unexpected exit)".into()),
                Exit::Mmio { gpa, write, .. } => {
                    break Err(format!(
                        "{} of guest-physical {gpa:#x} outside the enclave's memory{}",
                        if write { "write" } else { "read" },
                        if write && gpa >= ENCLAVE_GPA { " (read-only page)" } else { "" }
                    ))
                }
                Exit::Shutdown => break Err("triple fault (KVM_EXIT_SHUTDOWN)".into()),
                Exit::FailEntry { reason } => break Err(format!("VM entry failed (hardware reason {reason:#x})")),
                Exit::Internal { suberror } => {
                    let rip = live.vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                    break Err(format!(
                        "KVM internal error (suberror {suberror}{}) at rip {rip:#x}{}",
                        if suberror == 1 { ": instruction emulation failed" } else { "" },
                        self.offset_note(rip)
                    ));
                }
                Exit::Interrupted => {
                    if live.slot.fired.load(Ordering::SeqCst) {
                        break Err(format!("runaway: ECALL exceeded its budget of {timeout_ms} ms"));
                    }
                }
                Exit::Other(r) => break Err(format!("unexpected exit {} ({r})", crate::kvm::exit_name(r))),
            }
        };
        if let Some(l) = self.live.as_ref() {
            l.slot.disarm();
        }
        self.exits += exits;
        outcome.map_err(|reason| {
            let why = format!("enclave {}: {reason}", self.name);
            self.kill(why)
        })
    }

    fn offset_note(&self, la: u64) -> String {
        if la >= self.base && la < self.base + self.size {
            format!(" (offset {:#x})", la - self.base)
        } else {
            String::new()
        }
    }

    fn describe_fault(&self, vector: u8) -> String {
        let live = self.live.as_ref().unwrap();
        let (name, has_code) = guest::vector_name(vector);
        let top = live.layout.ist_top_off as usize;
        let mut f = [0u8; 48];
        live.runner.read(top - 48, &mut f);
        let q = |i: usize| u64::from_le_bytes(f[i * 8..i * 8 + 8].try_into().unwrap());
        let rip = q(1);
        let mut s = format!("enclave fault: {name} (vector {vector}) at rip {rip:#x}");
        if rip >= self.base && rip < self.base + self.size {
            s += &format!(" (offset {:#x})", rip - self.base);
        }
        if vector == 14 {
            let cr2 = live.vcpu.get_sregs().map(|s| s.cr2).unwrap_or(0);
            let code = q(0);
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
            s += &format!(", error code {:#x}", q(0));
        }
        s
    }

    /// Copies `len` bytes of enclave memory at linear `la` (ELRANGE only).
    fn enclave_read(&self, la: u64, out: &mut [u8]) -> bool {
        // SAFETY: enclave_span hands out `host` with n bytes left in its enclave page and off + n
        // <= out.len(); the enclave page is guest memory the vCPU (stopped during this call) may
        // also write, hence a plain byte copy and no reference into it.
        self.enclave_span(la, out.len() as u64, false, |host, off, n| unsafe {
            core::ptr::copy_nonoverlapping(host, out.as_mut_ptr().add(off), n)
        })
    }
    /// Writes enclave memory at linear `la`; every page must be enclave-writable.
    fn enclave_write(&self, la: u64, data: &[u8]) -> bool {
        // SAFETY: as in enclave_read, with every touched page enclave-writable (checked by
        // enclave_span) and off + n <= data.len().
        self.enclave_span(la, data.len() as u64, true, |host, off, n| unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr().add(off), host, n)
        })
    }
    fn enclave_span(&self, la: u64, len: u64, write: bool, mut f: impl FnMut(*mut u8, usize, usize)) -> bool {
        let Some(end) = la.checked_add(len) else { return false };
        if la < self.base || end > self.base + self.size {
            return false;
        }
        let mut plan = Vec::new();
        let mut at = la;
        while at < end {
            let off = at - self.base;
            let Some(&(host, writable)) = self.pages.get(&(off / PAGE)) else { return false };
            if write && !writable {
                return false;
            }
            let in_page = off % PAGE;
            let n = (PAGE - in_page).min(end - at);
            // SAFETY: `host` is the start of a PAGE-byte enclave page and in_page < PAGE.
            plan.push((unsafe { host.add(in_page as usize) }, (at - la) as usize, n as usize));
            at += n;
        }
        for (h, o, n) in plan {
            f(h, o, n);
        }
        true
    }

    /// Serves the hypercall described in the mailbox; returns the status for EAX.
    fn serve_hypercall(&mut self) -> u64 {
        let (nr, a0, a1, a2) = (self.mailbox(mb::NR), self.mailbox(mb::A0), self.mailbox(mb::A1), self.mailbox(mb::A2));
        match nr {
            hc::EGETKEY => {
                let mut req = [0u8; 80];
                if !self.enclave_read(a0, &mut req) {
                    return hc::STATUS_BAD_POINTER;
                }
                match self.backend.get_key(&req) {
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
                match self.backend.report(&ti, &data) {
                    Ok(rep) if self.enclave_write(a2, &rep) => 0,
                    Ok(_) => hc::STATUS_BAD_POINTER,
                    Err(s) => s,
                }
            }
            _ => hc::STATUS_UNKNOWN,
        }
    }

    /// Serves the OCALL described in the mailbox; returns EAX (output length or error).
    fn serve_ocall(&mut self, ocall: &mut Option<OcallFn>) -> u32 {
        let nr = self.mailbox(mb::NR) as u32;
        let live = self.live.as_ref().unwrap();
        let cap = live.layout.shared_len as usize;
        let off = live.layout.shared_off as usize;
        let n = (self.mailbox(mb::LEN) as usize).min(cap);
        let mut input = vec![0u8; n];
        live.runner.read(off, &mut input);
        // A host that does not serve the OCALL (no handler, or the handler failed) answers
        // with an error code; the enclave decides what to do with it.
        let answer = match ocall.as_mut() {
            Some(f) => f(nr, &input),
            None => Err(format!("OCALL {nr} with no OCALL handler")),
        };
        match answer {
            Ok(out) if out.len() <= cap => {
                self.live.as_ref().unwrap().runner.write(off, &out);
                out.len() as u32
            }
            _ => ECALL_ERROR as u32 | OCALL_FAILED,
        }
    }
}

fn setup_sregs(vcpu: &VcpuFd, l: &Layout) -> Result<(), sys::SysError> {
    let mut s = vcpu.get_sregs()?;
    let code = Segment { base: 0, limit: 0xFFFF_FFFF, selector: guest::SEL_CODE, type_: 11, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, ..Default::default() };
    let data = Segment { base: 0, limit: 0xFFFF_FFFF, selector: guest::SEL_DATA, type_: 3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, ..Default::default() };
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.ss = data;
    s.fs = data;
    s.gs = data;
    s.tr = Segment { base: l.tss_la, limit: 103, selector: guest::SEL_TSS, type_: 11, present: 1, s: 0, ..Default::default() };
    s.gdt.base = l.gdt_la;
    s.gdt.limit = 39;
    s.idt.base = l.idt_la;
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
    mem: *const u8,
    size: u64,
    base: u64,
    tcs_busy: Vec<u64>,
    tcs_pages: Vec<u64>,
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
        Ok(Entry {
            entry: b + oentry,
            tcs: b + tcs_offset,
            fs_base: if ofs != 0 { b + ofs } else { 0 },
            gs_base: if ogs != 0 { b + ogs } else { 0 },
        })
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
    let backend = Standalone { mem: mem.ptr(), size, base, tcs_busy: Vec::with_capacity(tcs_pages.len()), tcs_pages };
    // one region per page so read-only pages get read-only slots; coalesced by writability
    // SAFETY: NOT established for every input: p.offset comes from the caller's page list and is
    // checked against `size` (by EnclaveVm::create's region check) only after this pointer is
    // computed; an offset past the mapping makes `add` out of bounds (wrapping_add would make the
    // computation well-defined until the check rejects it). Flagged for the typed-boundary work
    // (issue 13 item 2).
    let regions = coalesce(pages.iter().map(|p| (p.offset, unsafe { mem.ptr().add(p.offset as usize) }, p.tcs || p.perms & 2 == 0)));
    let spec = VmSpec { base, size, pages, regions, shared_pages, timeout_ms };
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
        let mut vm = create_standalone("tiny", base, 0x2000, &image, 0, pages.clone(), 1, 200).unwrap();
        let out = vm.ecall(0, 0, &[1, 2, 3], None, None).unwrap();
        assert_eq!(out.status, 4);
        let e = vm.ecall(0, 1, &[], None, None).unwrap_err();
        assert!(e.message().contains("#UD invalid opcode") && e.message().contains("offset 0x1013"), "{}", e.message());
        assert!(vm.ecall(0, 0, &[], None, None).unwrap_err().message().contains("is dead"));

        let mut vm2 = create_standalone("spin", base, 0x2000, &image, 0, pages, 1, 50).unwrap();
        let t = Instant::now();
        let e = vm2.ecall(0, 2, &[], None, None).unwrap_err();
        assert!(e.message().contains("runaway"), "{}", e.message());
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
