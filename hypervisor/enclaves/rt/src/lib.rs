//! Enclave runtime for payloads run by both enclave runners (the addon's KVM runner on the
//! emulated platform, ENCLAVE_CALL in the bare-metal image); the protocol is defined once in
//! hyperenclave-abi (`enclave_rt`, re-exported by `hyperenclave_core::enclave::runtime`) and
//! docs/hypercall-abi.md ("Runtime protocol").
//!
//! Threads: one per TCS (the linker script from gen-link.mjs makes N). The runner enters a TCS
//! with GS.base = base + TCS.OGSBASE, that thread's TLS page: mailbox, stack, exception stack and
//! I/O buffers are all per thread, so ECALLs on distinct TCSs run at the same time.
//!
//! ECALLs: the vCPU parks in `in al, EEXIT` until the runner resumes it with the ECALL number,
//! calls that entry of the payload's `ENCLAVE_ECALLS` table, stores the status in the mailbox,
//! parks again (a few instructions: kvm_pvm interprets guest code). Payloads list their ECALLs
//! with `ecalls![f0, f1, ...]`; each is `extern "C" fn() -> u64` returning the status, usually
//! written with `marshal`, which copies the input from the shared (untrusted) buffer into
//! enclave memory once and the output back once.
//!
//! Exceptions (SGX two-phase model): after an AEX the runner enters `_start` again with
//! RAX = CSSA (≥ 1) and RDI = the saved GPRSGX; rt switches to the thread's exception stack and
//! calls the handler registered with `exception_handler!(f)` (default: abort), then ERESUMEs
//! (`out ERESUME, eax`: 0 resume the saved context, possibly edited; 1 abort the thread).
//!
//! Dynamic memory: `eaccept` / `emodpe` (runtime hypercalls 3 and 4), `heap_grow(pages)` (the
//! reserved OCALL asks the host to augment, then rt EACCEPTs each page).
#![no_std]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use hyperenclave_abi::enclave_rt as proto;
use hyperenclave_abi::enclave_rt::{ecall, mb as mbw, PORT_EEXIT, PORT_ERESUME, PORT_HYPERCALL, PORT_OCALL, PORT_PANIC};
pub use hyperenclave_abi::enclave_rt::err;

/// ECALL status bit (hyperenclave-abi `enclave_rt::ecall::ERROR`): set = error code in bits 30:0.
const ECALL_ERROR: u32 = ecall::ERROR as u32;

/// SECINFO flags for EACCEPT (hyperenclave-abi `secinfo`).
pub mod secinfo {
    pub use hyperenclave_abi::secinfo::*;
    /// The flags EACCEPT expects after the host restricted the page to `perms` (EMODPR).
    pub const fn accept_restricted(perms: u64) -> u64 {
        PT_REG | (perms & 7) | MODIFIED
    }
}

/// Largest ECALL input and output (enclave-side copies, per thread).
pub const IO_MAX: usize = 16 * 1024;

// Entry. RAX = 0: first ECALL on this TCS (RDI = ECALL number, R8 = mailbox). Kept in
// callee-saved registers across the loop: R15 = mailbox (also TLS word 0), R14 = the 256-entry
// ECALL table. The ECALL number is one byte (`in al`), so any value the host sends indexes the
// table: no bounds check. The body is repeated four times to spread the jump.
// RAX ≠ 0: exception entry after an AEX (RAX = CSSA, RDI = GPRSGX of the saved frame).
// ENCLAVE_EXCEPTION_HANDLER is 0 unless the payload registered one (PROVIDE in gen-link.mjs).
global_asm!(
    ".section .text.entry,\"ax\",@progbits",
    ".global _start",
    "_start:",
    "test rax, rax",
    "jnz 3f",
    "mov r15, r8",
    "mov gs:[0], r8",
    "mov rsp, gs:[8]",
    "lea r14, [rip + ENCLAVE_ECALLS]",
    "movzx eax, dil",
    "2:",
    ".rept 4",
    "call [r14 + rax * 8]",
    "mov [r15 + {status}], rax",
    "in al, {eexit}",
    "movzx eax, al",
    ".endr",
    "jmp 2b",
    "3:",
    "mov rsp, gs:[16]",
    "mov rsi, rax",
    "movabs rdx, offset ENCLAVE_EXCEPTION_HANDLER",
    "call {exc}",
    "out {eresume}, eax",
    "ud2",
    status = const mbw::STATUS * 8,
    eexit = const PORT_EEXIT,
    eresume = const PORT_ERESUME,
    exc = sym rt_exception,
);

/// One ECALL: returns the status (output length, or ECALL_ERROR | error code).
pub type EcallFn = extern "C" fn() -> u64;

/// Entries 0..=255, indexed by the ECALL number; unused ones answer UNKNOWN_ECALL.
#[repr(C)]
pub struct EcallTable {
    pub fns: [EcallFn; 256],
}

pub extern "C" fn unknown_ecall() -> u64 {
    (ECALL_ERROR | err::UNKNOWN_ECALL) as u64
}

impl EcallTable {
    pub const fn new<const N: usize>(fns: [EcallFn; N]) -> Self {
        assert!(N <= 256, "at most 256 ECALLs");
        let mut t = [unknown_ecall as EcallFn; 256];
        let mut i = 0;
        while i < N {
            t[i] = fns[i];
            i += 1;
        }
        EcallTable { fns: t }
    }
}

/// Declares the payload's ECALL table: `ecalls![echo, add, ...]` (index = ECALL number).
#[macro_export]
macro_rules! ecalls {
    ($($f:expr),* $(,)?) => {
        #[no_mangle]
        pub static ENCLAVE_ECALLS: $crate::EcallTable = $crate::EcallTable::new([$($f as $crate::EcallFn),*]);
    };
}

// ---------------------------------------------------------------- exceptions

/// GPRSGX as the runner saved it (SGX layout, 184 bytes): edit `rip`/registers and return
/// `Resume::Continue` to resume there.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Gpr {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r: [u64; 8],
    pub rflags: u64,
    pub rip: u64,
    pub ursp: u64,
    pub urbp: u64,
    pub exitinfo: u32,
    pub reserved: u32,
    pub fsbase: u64,
    pub gsbase: u64,
}
const _: () = assert!(core::mem::size_of::<Gpr>() == proto::gpr::GPRSGX_SIZE as usize);
const _: () = assert!(core::mem::offset_of!(Gpr, rip) == proto::gpr::RIP);
const _: () = assert!(core::mem::offset_of!(Gpr, exitinfo) == proto::gpr::EXITINFO);

/// What the handler decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Resume {
    /// ERESUME the saved (possibly edited) context.
    Continue = proto::ERESUME_CONTINUE,
    /// End the thread: the ECALL returns ENCLAVE_FAULT.
    Abort = proto::ERESUME_ABORT,
}

/// One delivered exception.
pub struct Exception<'a> {
    pub gpr: &'a mut Gpr,
    /// CSSA at entry (≥ 1).
    pub cssa: u64,
}

impl Exception<'_> {
    /// The vector (0 #DE, 6 #UD, 13 #GP, 14 #PF, ...), or None when EXITINFO is not valid.
    pub fn vector(&self) -> Option<u8> {
        (self.gpr.exitinfo & proto::gpr::EXIT_VALID != 0).then_some(self.gpr.exitinfo as u8)
    }
    /// MISC EXINFO (only meaningful when SECS.MISCSELECT bit 0 is set): the faulting address
    /// (CR2) of a #PF/#GP and the error code.
    pub fn exinfo(&self) -> (u64, u32) {
        let g = self.gpr as *const Gpr as *const u8;
        // SAFETY: the runner saved GPRSGX at the end of an SSA frame page, MISC (16 bytes)
        // precedes it in the same frame, inside this thread's SSA (enclave memory).
        unsafe {
            let maddr = core::ptr::read_volatile(g.offset(proto::gpr::EXINFO_MADDR as isize) as *const u64);
            let errcd = core::ptr::read_volatile(g.offset(proto::gpr::EXINFO_ERRCD as isize) as *const u32);
            (maddr, errcd)
        }
    }
}

pub type ExceptionHandler = fn(&mut Exception) -> Resume;

/// Registers the payload's exception handler: `exception_handler!(my_handler)` with
/// `fn my_handler(e: &mut enclave_rt::Exception) -> enclave_rt::Resume`. Without one, every
/// exception aborts the thread.
#[macro_export]
macro_rules! exception_handler {
    ($f:expr) => {
        #[no_mangle]
        pub static ENCLAVE_EXCEPTION_HANDLER: $crate::ExceptionHandler = $f;
    };
}

extern "C" fn rt_exception(gpr: *mut Gpr, cssa: u64, handler: *const ExceptionHandler) -> u32 {
    if handler.is_null() || gpr.is_null() {
        return Resume::Abort as u32;
    }
    // The frame must be this thread's SSA (inside the enclave), never host memory.
    let g = gpr as u64;
    if !in_enclave(g, core::mem::size_of::<Gpr>() as u64) {
        return Resume::Abort as u32;
    }
    // SAFETY: `handler` is the address of the payload's ENCLAVE_EXCEPTION_HANDLER static (the
    // weak symbol resolved non-null); `gpr` points at this thread's saved frame in enclave memory
    // (checked just above), which nothing else touches while the handler runs.
    let (f, gpr) = unsafe { (*handler, &mut *gpr) };
    let mut e = Exception { gpr, cssa };
    f(&mut e) as u32
}

// ---------------------------------------------------------------- per-thread state

/// TLS word `i` of this thread (GS.base = its TLS page, see gen-link.mjs).
#[inline(always)]
fn tls(i: usize) -> u64 {
    let v: u64;
    // SAFETY: reads the thread's own TLS page through GS (set by the runner at entry).
    unsafe { asm!("mov {v}, gs:[{o}]", v = out(reg) v, o = in(reg) i * 8, options(nostack, readonly, preserves_flags)) };
    v
}

/// This thread's index (0 for the first TCS).
pub fn thread_index() -> u64 {
    tls(5)
}

extern "C" {
    static __enclave_base: u8;
    static __heap_start: u8;
    static __heap_end: u8;
}

fn enclave_range() -> (u64, u64) {
    // SAFETY: linker-defined symbols; only their addresses are taken.
    unsafe { (core::ptr::addr_of!(__enclave_base) as u64, core::ptr::addr_of!(__heap_end) as u64) }
}

/// Whether [addr, addr+len) lies inside the enclave's image and heap range.
pub fn in_enclave(addr: u64, len: u64) -> bool {
    let (lo, hi) = enclave_range();
    addr >= lo && addr.checked_add(len).is_some_and(|e| e <= hi)
}

/// Whether [addr, addr+len) lies entirely outside it (for host-supplied pointers).
fn outside_enclave(addr: u64, len: u64) -> bool {
    let (lo, hi) = enclave_range();
    addr.checked_add(len).is_some_and(|e| e <= lo || addr >= hi)
}

/// Mailbox words (see runtime.rs): FUNC, IN_LEN, STATUS, SHARED, CAP, NR, A0, A1, A2, LEN.
#[repr(C)]
struct Mailbox {
    func: u64,
    in_len: u64,
    status: u64,
    shared: u64,
    cap: u64,
    nr: u64,
    a0: u64,
    a1: u64,
    a2: u64,
    len: u64,
}

// the struct's fields are the protocol's mailbox words (hyperenclave-abi `enclave_rt::mb`)
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Mailbox, func) == mbw::FUNC * 8 && offset_of!(Mailbox, in_len) == mbw::IN_LEN * 8);
    assert!(offset_of!(Mailbox, status) == mbw::STATUS * 8 && offset_of!(Mailbox, shared) == mbw::SHARED * 8);
    assert!(offset_of!(Mailbox, cap) == mbw::CAP * 8 && offset_of!(Mailbox, nr) == mbw::NR * 8);
    assert!(offset_of!(Mailbox, a0) == mbw::A0 * 8 && offset_of!(Mailbox, a1) == mbw::A1 * 8);
    assert!(offset_of!(Mailbox, a2) == mbw::A2 * 8 && offset_of!(Mailbox, len) == mbw::LEN * 8);
};

#[inline(always)]
fn mb() -> *mut Mailbox {
    tls(0) as *mut Mailbox
}

macro_rules! rd {
    ($f:ident) => {
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*mb()).$f)) }
    };
}
macro_rules! wr {
    ($f:ident, $v:expr) => {
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*mb()).$f), $v) }
    };
}

/// The shared buffer (read once from the mailbox); empty when the host described one that
/// overlaps the enclave (a host pointer is never trusted to be outside).
fn shared() -> (*mut u8, usize) {
    let (p, cap) = (rd!(shared), rd!(cap));
    if !outside_enclave(p, cap) {
        return (core::ptr::null_mut(), 0);
    }
    (p as *mut u8, cap as usize)
}

fn io_bufs() -> (&'static mut [u8; IO_MAX], &'static mut [u8; IO_MAX]) {
    // SAFETY: TLS words 3 and 4 are this thread's own IO_MAX-byte buffers (gen-link.mjs); only
    // this thread uses them, and marshal is not reentrant (ECALLs do not nest on a TCS).
    unsafe { (&mut *(tls(3) as *mut [u8; IO_MAX]), &mut *(tls(4) as *mut [u8; IO_MAX])) }
}

/// Runs `f` over the ECALL's input (copied into enclave memory first: the host could change
/// the shared buffer meanwhile) and an output buffer in enclave memory, then copies the output
/// to the shared buffer. Returns the status for the mailbox.
pub fn marshal(f: impl FnOnce(&[u8], &mut [u8]) -> Result<usize, u32>) -> u64 {
    let len = rd!(in_len) as usize;
    let (shared, cap) = shared();
    if len > cap || len > IO_MAX {
        return (ECALL_ERROR | err::TOO_BIG) as u64;
    }
    let (inp, out) = io_bufs();
    if len != 0 {
        // SAFETY: shared..shared+cap is outside the enclave (checked by shared()), len <= cap.
        unsafe { core::ptr::copy_nonoverlapping(shared, inp.as_mut_ptr(), len) };
    }
    let limit = cap.min(IO_MAX);
    (match f(&inp[..len], &mut out[..limit]) {
        Ok(0) => 0,
        Ok(n) if n <= limit => {
            // SAFETY: n <= limit <= cap bytes of the shared buffer.
            unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), shared, n) };
            n as u32
        }
        Ok(_) => ECALL_ERROR | err::TOO_BIG,
        Err(code) => ECALL_ERROR | (code & !ECALL_ERROR),
    }) as u64
}

/// Hypercall numbers (runtime.rs): EGETKEY, EREPORT, EACCEPT, EMODPE.
pub const HC_EGETKEY: u64 = proto::hc::EGETKEY;
pub const HC_EREPORT: u64 = proto::hc::EREPORT;
pub const HC_EACCEPT: u64 = proto::edmm_hc::EACCEPT;
pub const HC_EMODPE: u64 = proto::edmm_hc::EMODPE;

fn hypercall(nr: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    wr!(nr, nr);
    wr!(a0, a0);
    wr!(a1, a1);
    wr!(a2, a2);
    let status: u32;
    unsafe { asm!("in eax, {p}", p = const PORT_HYPERCALL, out("eax") status, options(nostack)) };
    status as u64
}

/// EGETKEY: `request` is an 80-byte SGX KEYREQUEST; the key is written by the hypervisor
/// straight into `key` (enclave memory). Returns the hypercall status (0 = success).
pub fn egetkey(request: &[u8; 80], key: &mut [u8; 16]) -> u64 {
    hypercall(HC_EGETKEY, request.as_ptr() as u64, key.as_mut_ptr() as u64, 0)
}

/// This enclave's SEAL key bound to its MRENCLAVE (KEYPOLICY MRENCLAVE, the SGX SDK's default
/// ATTRIBUTEMASK and MISCMASK) for `key_id`: what `sgx_get_key` gives an SGX enclave. The key is
/// written by the hypervisor into enclave memory; Err(err::HYPERCALL) when EGETKEY is refused.
pub fn seal_key_mrenclave(key_id: &[u8; 32]) -> Result<[u8; 16], u32> {
    // KEYREQUEST (SGX layout): KEYNAME @0, KEYPOLICY @2, ATTRIBUTEMASK.FLAGS @24, KEYID @40, MISCMASK @72
    let mut req = [0u8; 80];
    req[0..2].copy_from_slice(&(hyperenclave_abi::keyname::SEAL as u16).to_le_bytes());
    req[2..4].copy_from_slice(&(hyperenclave_abi::keypolicy::MRENCLAVE as u16).to_le_bytes());
    req[24..32].copy_from_slice(&0xFF00_0000_0000_000Bu64.to_le_bytes());
    req[40..72].copy_from_slice(key_id);
    req[72..76].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    let mut key = [0u8; 16];
    if egetkey(&req, &mut key) != 0 {
        return Err(err::HYPERCALL);
    }
    Ok(key)
}

/// EREPORT: TARGETINFO (56 bytes used), REPORTDATA (64), REPORT output (432).
pub fn ereport(target_info: &[u8; 56], report_data: &[u8; 64], report: &mut [u8; 432]) -> u64 {
    hypercall(HC_EREPORT, target_info.as_ptr() as u64, report_data.as_ptr() as u64, report.as_mut_ptr() as u64)
}

/// EACCEPT of the page at `addr` with the SECINFO flags the enclave expects (see `secinfo`:
/// `ACCEPT_AUGMENTED`, `ACCEPT_TRIM`, `accept_restricted(p)`). Err(status) otherwise
/// (PAGE_STATE 42 when the page is not in that state).
pub fn eaccept(addr: u64, flags: u64) -> Result<(), u64> {
    match hypercall(HC_EACCEPT, addr, flags, 0) {
        0 => Ok(()),
        s => Err(s),
    }
}

/// EMODPE: adds permissions (R=1 W=2 X=4) to the REG page at `addr`.
pub fn emodpe(addr: u64, perms: u64) -> Result<(), u64> {
    match hypercall(HC_EMODPE, addr, perms, 0) {
        0 => Ok(()),
        s => Err(s),
    }
}

static HEAP_NEXT: AtomicU64 = AtomicU64::new(0);

/// Grows the heap by `pages` fresh zeroed pages (RW) and returns their start: reserves the range
/// above the image (linker symbols __heap_start..__heap_end), asks the host to augment it
/// through the reserved OCALL `OCALL_HEAP_GROW` (input: u64 offset, u64 count), then EACCEPTs
/// every page. Err(err::NO_MEMORY) when the reserved range is used up, Err(err::OCALL) when the
/// host refused, Err(err::HYPERCALL) when an EACCEPT failed (the host gave something else).
pub fn heap_grow(pages: u64) -> Result<*mut u8, u32> {
    // SAFETY: linker-defined symbols; only their addresses are taken.
    let (start, end) = unsafe { (core::ptr::addr_of!(__heap_start) as u64, core::ptr::addr_of!(__heap_end) as u64) };
    let (base, _) = enclave_range();
    let bytes = pages.checked_mul(4096).ok_or(err::NO_MEMORY)?;
    if pages == 0 {
        return Err(err::BAD_INPUT);
    }
    let mut at = HEAP_NEXT.load(Ordering::Acquire);
    loop {
        let cur = if at == 0 { start } else { at };
        let next = cur.checked_add(bytes).filter(|&n| n <= end).ok_or(err::NO_MEMORY)?;
        match HEAP_NEXT.compare_exchange(at, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                at = cur;
                break;
            }
            Err(seen) => at = seen,
        }
    }
    let mut req = [0u8; 16];
    req[..8].copy_from_slice(&(at - base).to_le_bytes());
    req[8..].copy_from_slice(&pages.to_le_bytes());
    let mut none = [0u8; 0];
    ocall(proto::OCALL_HEAP_GROW, &req, &mut none)?;
    for k in 0..pages {
        eaccept(at + k * 4096, secinfo::ACCEPT_AUGMENTED).map_err(|_| err::HYPERCALL)?;
    }
    Ok(at as *mut u8)
}

/// OCALL `nr` to the host: `input` goes out through the shared buffer, the host's answer comes
/// back into `out`. Returns the answer's length (never more than CAP or `out.len()`).
pub fn ocall(nr: u32, input: &[u8], out: &mut [u8]) -> Result<usize, u32> {
    let (shared, cap) = shared();
    if input.len() > cap {
        return Err(err::TOO_BIG);
    }
    // SAFETY: shared..shared+cap is outside the enclave (checked by shared()), input.len() <= cap.
    unsafe { core::ptr::copy_nonoverlapping(input.as_ptr(), shared, input.len()) };
    wr!(nr, nr as u64);
    wr!(len, input.len() as u64);
    let r: u32;
    unsafe { asm!("in eax, {p}", p = const PORT_OCALL, out("eax") r, options(nostack)) };
    if r & ECALL_ERROR != 0 {
        return Err(err::OCALL);
    }
    let n = r as usize;
    if n > cap || n > out.len() {
        return Err(err::TOO_BIG);
    }
    // SAFETY: n <= cap bytes of the shared buffer into n <= out.len() bytes of `out`.
    unsafe { core::ptr::copy_nonoverlapping(shared, out.as_mut_ptr(), n) };
    Ok(n)
}

/// 64 random bits from RDRAND (retried as Intel recommends), or None.
pub fn rdrand64() -> Option<u64> {
    for _ in 0..10 {
        let (v, ok): (u64, u8);
        unsafe { asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack)) };
        if ok != 0 {
            return Some(v);
        }
    }
    None
}

pub fn fill_random(buf: &mut [u8]) -> Option<()> {
    for chunk in buf.chunks_mut(8) {
        let v = rdrand64()?.to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    Some(())
}

struct PanicBuf {
    buf: [u8; 200],
    n: usize,
}

impl core::fmt::Write for PanicBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.n < self.buf.len() {
                self.buf[self.n] = b;
                self.n += 1;
            }
        }
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let mut p = PanicBuf { buf: [0; 200], n: 0 };
    let _ = write!(p, "{}", info.message());
    if let Some(l) = info.location() {
        let _ = write!(p, " at {}:{}", l.file(), l.line());
    }
    unsafe {
        let (shared, cap) = if mb().is_null() { (core::ptr::null_mut(), 0) } else { shared() };
        let n = p.n.min(cap);
        if !shared.is_null() {
            core::ptr::copy_nonoverlapping(p.buf.as_ptr(), shared, n);
        }
        asm!("out {p}, eax", p = const PORT_PANIC, in("rax") n as u64, options(nostack));
        loop {
            asm!("ud2", options(noreturn));
        }
    }
}

// The C memory functions the compiler emits calls to (no libc in an enclave).
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags));
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        return memcpy(dst, src, n);
    }
    // overlapping with dst above src: copy backwards
    asm!("std", "rep movsb", "cld",
         inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _, options(nostack));
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack, preserves_flags));
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    // asm, not a loop: the compiler would turn a byte loop back into a memcmp call.
    let (pa, pb): (*const u8, *const u8);
    asm!("repe cmpsb", inout("rcx") n => _, inout("rsi") a => pa, inout("rdi") b => pb, options(nostack, readonly));
    *pa.sub(1) as i32 - *pb.sub(1) as i32
}

#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}
