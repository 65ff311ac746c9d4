//! Enclave runtime for payloads run by the addon's KVM runner (see
//! hypervisor/addon/src/runner.rs for the register and port conventions).
//!
//! The vCPU runs one loop: park in `in al, 0x10` (EEXIT) until the runner resumes it with the
//! ECALL number, call that entry of the payload's `ENCLAVE_ECALLS` table, store the status in
//! the mailbox, park again. The loop is a few instructions of assembly because kvm_pvm
//! interprets guest code (~0.3-0.6 µs per instruction): an empty ECALL costs ~6 instructions.
//! Payloads list their ECALLs with `ecalls![f0, f1, ...]`; each is `extern "C" fn() -> u64`
//! returning the status, usually written with `marshal`, which copies the input from the
//! shared (untrusted) buffer into enclave memory and the output back.
#![no_std]

use core::arch::{asm, global_asm};
pub use hyperenclave_abi::enclave_rt::err;
use hyperenclave_abi::enclave_rt::{ecall, hc, mb as mbw, PORT_EEXIT, PORT_HYPERCALL, PORT_OCALL, PORT_PANIC};

/// ECALL status bit (hyperenclave-abi `enclave_rt::ecall::ERROR`): set = error code in bits 30:0.
const ECALL_ERROR: u32 = ecall::ERROR as u32;

/// Largest ECALL input and output (enclave-side copies).
pub const IO_MAX: usize = 16 * 1024;


// First entry: RDI = ECALL number, R8 = mailbox. Kept in callee-saved registers across the
// loop: R15 = mailbox (also in MAILBOX), R14 = the 256-entry ECALL table. The ECALL number is
// one byte (`in al`), so any value the host sends indexes the table: no bounds check. The body
// (call, store status, EEXIT, widen the number) is repeated four times to spread the jump.
global_asm!(
    ".section .text.entry,\"ax\",@progbits",
    ".global _start",
    "_start:",
    "mov r15, r8",
    "mov [rip + {mb}], r8",
    "lea rsp, [rip + __stack_top]",
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
    mb = sym MAILBOX,
    status = const mbw::STATUS * 8,
    eexit = const PORT_EEXIT,
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

/// Mailbox words (see the runner): FUNC, IN_LEN, STATUS, SHARED, CAP, NR, A0, A1, A2, LEN.
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

static mut MAILBOX: *mut Mailbox = core::ptr::null_mut();
static mut INBUF: [u8; IO_MAX] = [0; IO_MAX];
static mut OUTBUF: [u8; IO_MAX] = [0; IO_MAX];

#[inline(always)]
fn mb() -> *mut Mailbox {
    unsafe { MAILBOX }
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

fn shared() -> (*mut u8, usize) {
    (rd!(shared) as *mut u8, rd!(cap) as usize)
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
    unsafe {
        let inp = &mut *core::ptr::addr_of_mut!(INBUF);
        let out = &mut *core::ptr::addr_of_mut!(OUTBUF);
        if len != 0 {
            core::ptr::copy_nonoverlapping(shared, inp.as_mut_ptr(), len);
        }
        let limit = cap.min(IO_MAX);
        (match f(&inp[..len], &mut out[..limit]) {
            Ok(0) => 0,
            Ok(n) if n <= limit => {
                core::ptr::copy_nonoverlapping(out.as_ptr(), shared, n);
                n as u32
            }
            Ok(_) => ECALL_ERROR | err::TOO_BIG,
            Err(code) => ECALL_ERROR | (code & !ECALL_ERROR),
        }) as u64
    }
}

/// Hypercall numbers (see the runner): EGETKEY and EREPORT.
pub const HC_EGETKEY: u64 = hc::EGETKEY;
pub const HC_EREPORT: u64 = hc::EREPORT;

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

/// EREPORT: TARGETINFO (56 bytes used), REPORTDATA (64), REPORT output (432).
pub fn ereport(target_info: &[u8; 56], report_data: &[u8; 64], report: &mut [u8; 432]) -> u64 {
    hypercall(HC_EREPORT, target_info.as_ptr() as u64, report_data.as_ptr() as u64, report.as_mut_ptr() as u64)
}

/// OCALL `nr` to the host: `input` goes out through the shared buffer, the host's answer comes
/// back into `out`. Returns the answer's length.
pub fn ocall(nr: u32, input: &[u8], out: &mut [u8]) -> Result<usize, u32> {
    let (shared, cap) = shared();
    if input.len() > cap {
        return Err(err::TOO_BIG);
    }
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
        return Err(err::OCALL);
    }
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
