//! Payload "probe": exercises the runtime features of issue 14 on a real runner — exceptions
//! handled inside the enclave and resumed, EDMM (heap growth, PENDING pages, restrict, trim,
//! EMODPE), several threads inside at once, OCALLs with bad indices and oversize buffers.
//! Linked with 4 TCSs and 64 heap pages (build.sh). Outputs are little-endian u64 words.
//!
//! 0 thread index · 1 #UD handled (skip ud2) · 2 #DE handled (handler sets RAX) · 3 write to a
//! PENDING page: #PF, handler EACCEPTs, the write is retried · 4 heap_grow(n) and use it ·
//! 5 null write: handler aborts · 6 handler forges the SSA (RIP outside ELRANGE) · 7 fault inside the
//! handler · 8 barrier (input: rounds): reports whether another thread was inside at the same
//! time · 9 reset the barrier ·
//! 10 grow two pages, write them (for restrict/trim from the host) · 11 after RESTRICT(R): accept,
//! read, write → #PF handled · 12 after MODIFY_TYPE(TRIM): accept, read → #PF handled ·
//! 13 EMODPE adds X to a heap page, then runs code there; EMODPE on the TCS refused ·
//! 14 OCALLs: echo via index 1, unknown index 99, oversize input · 15 output of the size asked.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use enclave_rt::{err, marshal, secinfo, Exception, Resume};
use hyperenclave_core::enclave::runtime::OCALL_HEAP_GROW;

enclave_rt::ecalls![
    thread, ud, de, pending, heap, int3, forge, nested, barrier, barrier_reset, edmm_prep, after_restrict, after_trim, emodpe_exec, ocalls, output_size
];
enclave_rt::exception_handler!(handler);

const MODE_ABORT: u64 = 0;
const MODE_SKIP: u64 = 1;
const MODE_SKIP_SET_RAX: u64 = 2;
const MODE_ACCEPT: u64 = 3;
const MODE_FORGE: u64 = 4;
const MODE_NESTED: u64 = 5;

static MODE: AtomicU64 = AtomicU64::new(MODE_ABORT);
static SKIP: AtomicU64 = AtomicU64::new(0);
static ACCEPT_AT: AtomicU64 = AtomicU64::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);
static LAST_VECTOR: AtomicU64 = AtomicU64::new(0xff);
static LAST_MADDR: AtomicU64 = AtomicU64::new(0);
static LAST_ERRCD: AtomicU64 = AtomicU64::new(0);
static LAST_CSSA: AtomicU64 = AtomicU64::new(0);

fn handler(e: &mut Exception) -> Resume {
    HANDLED.fetch_add(1, SeqCst);
    LAST_VECTOR.store(e.vector().map_or(0xfe, |v| v as u64), SeqCst);
    let (maddr, errcd) = e.exinfo();
    LAST_MADDR.store(maddr, SeqCst);
    LAST_ERRCD.store(errcd as u64, SeqCst);
    LAST_CSSA.store(e.cssa, SeqCst);
    match MODE.load(SeqCst) {
        MODE_SKIP => {
            e.gpr.rip += SKIP.load(SeqCst);
            Resume::Continue
        }
        MODE_SKIP_SET_RAX => {
            e.gpr.rip += SKIP.load(SeqCst);
            e.gpr.rax = 0xDEDE;
            Resume::Continue
        }
        MODE_ACCEPT => {
            // accept the page the enclave touched, then retry the faulting instruction
            match enclave_rt::eaccept(ACCEPT_AT.load(SeqCst), secinfo::ACCEPT_AUGMENTED) {
                Ok(()) => Resume::Continue,
                Err(_) => Resume::Abort,
            }
        }
        MODE_FORGE => {
            e.gpr.rip = 0x1000;
            Resume::Continue
        }
        MODE_NESTED => {
            // SAFETY: ud2 inside the handler on purpose (no SSA frame left: the runner ends the
            // thread); it touches no memory and never returns.
            unsafe { asm!("ud2", options(noreturn)) }
        }
        _ => Resume::Abort,
    }
}

fn words(out: &mut [u8], w: &[u64]) -> Result<usize, u32> {
    for (i, v) in w.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    Ok(w.len() * 8)
}

fn arg(input: &[u8], i: usize) -> Result<u64, u32> {
    input.get(i * 8..i * 8 + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).ok_or(err::BAD_INPUT)
}

fn report() -> [u64; 4] {
    [HANDLED.load(SeqCst), LAST_VECTOR.load(SeqCst), LAST_MADDR.load(SeqCst), LAST_ERRCD.load(SeqCst)]
}

fn reset(mode: u64, skip: u64) {
    HANDLED.store(0, SeqCst);
    LAST_VECTOR.store(0xff, SeqCst);
    SKIP.store(skip, SeqCst);
    MODE.store(mode, SeqCst);
}

extern "C" fn thread() -> u64 {
    marshal(|_, out| words(out, &[enclave_rt::thread_index()]))
}

extern "C" fn ud() -> u64 {
    marshal(|_, out| {
        reset(MODE_SKIP, 2);
        let after: u64;
        // SAFETY: ud2 faults on purpose; the handler (MODE_SKIP) moves RIP past it, then the mov sets `after`; no memory or stack is touched.
        unsafe { asm!("ud2", "mov {a}, 0x600d", a = out(reg) after, options(nostack)) };
        MODE.store(MODE_ABORT, SeqCst);
        let r = report();
        words(out, &[after, r[0], r[1], LAST_CSSA.load(SeqCst)])
    })
}

extern "C" fn de() -> u64 {
    marshal(|_, out| {
        reset(MODE_SKIP_SET_RAX, 3);
        let rax: u64;
        // div rcx (48 F7 F1, 3 bytes) with RCX = 0
        // SAFETY: a divide by zero on purpose (#DE); the handler (MODE_SKIP_SET_RAX) skips the 3-byte instruction and sets RAX; only the named registers change.
        unsafe { asm!(".byte 0x48, 0xF7, 0xF1", inout("rax") 7u64 => rax, inout("rdx") 0u64 => _, in("rcx") 0u64, options(nostack)) };
        MODE.store(MODE_ABORT, SeqCst);
        let r = report();
        words(out, &[rax, r[0], r[1]])
    })
}

extern "C" {
    static __heap_end: u8;
    static __enclave_base: u8;
}

fn base() -> u64 {
    core::ptr::addr_of!(__enclave_base) as u64
}

extern "C" fn pending() -> u64 {
    marshal(|_, out| {
        // the last heap page: heap_grow never reaches it in these tests (64 pages reserved)
        let page = core::ptr::addr_of!(__heap_end) as u64 - 4096;
        let mut req = [0u8; 16];
        req[..8].copy_from_slice(&(page - base()).to_le_bytes());
        req[8..].copy_from_slice(&1u64.to_le_bytes());
        enclave_rt::ocall(OCALL_HEAP_GROW, &req, &mut [])?;
        ACCEPT_AT.store(page, SeqCst);
        reset(MODE_ACCEPT, 0);
        // SAFETY: `page` is the last page of the heap reserve inside ELRANGE, augmented just now; the write faults (#PF, still PENDING) and the handler EACCEPTs it before it is retried.
        unsafe { core::ptr::write_volatile((page + 8) as *mut u64, 0x5a5a) };
        MODE.store(MODE_ABORT, SeqCst);
        // SAFETY: the same page, accepted by the handler above: mapped RW enclave memory.
        let v = unsafe { core::ptr::read_volatile((page + 8) as *const u64) };
        let r = report();
        words(out, &[v, r[0], r[1], r[2], page])
    })
}

extern "C" fn heap() -> u64 {
    marshal(|input, out| {
        let n = arg(input, 0)?;
        let p = enclave_rt::heap_grow(n)?;
        let mut sum = 0u64;
        for i in 0..n * 512 {
            // SAFETY: `p` is the start of n freshly accepted RW heap pages from heap_grow; i < n * 512 u64s stays inside them.
            let q = unsafe { (p as *mut u64).add(i as usize) };
            // SAFETY: `q` points into those pages (see above), aligned to 8.
            let before = unsafe { core::ptr::read_volatile(q) };
            if before != 0 {
                return Err(err::BAD_INPUT); // augmented pages must come zeroed
            }
            // SAFETY: as above: inside the accepted pages.
            unsafe { core::ptr::write_volatile(q, i * 3) };
        }
        for i in 0..n * 512 {
            // SAFETY: as above: inside the accepted pages.
            sum = sum.wrapping_add(unsafe { core::ptr::read_volatile((p as *const u64).add(i as usize)) });
        }
        words(out, &[p as u64 - base(), sum])
    })
}

extern "C" fn int3() -> u64 {
    // (named for its slot; int3 itself is not emulated by kvm_pvm) a null write the handler declines
    reset(MODE_ABORT, 0);
    // SAFETY: a write to address 0 (outside ELRANGE) on purpose: the fault goes to the handler, which aborts the thread (MODE_ABORT); nothing is written.
    unsafe { core::ptr::write_volatile(core::ptr::null_mut::<u64>(), 1) };
    0x77
}

extern "C" fn forge() -> u64 {
    reset(MODE_FORGE, 0);
    // SAFETY: ud2 faults on purpose; the handler (MODE_FORGE) forges the saved RIP and the runner must refuse the frame, so execution never comes back here.
    unsafe { asm!("ud2", options(nostack)) };
    0x77
}

extern "C" fn nested() -> u64 {
    reset(MODE_NESTED, 0);
    // SAFETY: ud2 faults on purpose; the handler (MODE_NESTED) faults again with no SSA frame left, and the runner ends the thread.
    unsafe { asm!("ud2", options(nostack)) };
    0x77
}

static INSIDE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

/// Enters, then waits (at most input[0] rounds) until at least two threads have been inside at
/// the same time. Returns [thread index, 1 if it saw another thread inside while it was, peak].
extern "C" fn barrier() -> u64 {
    marshal(|input, out| {
        let rounds = arg(input, 0)?;
        let now = INSIDE.fetch_add(1, SeqCst) + 1;
        PEAK.fetch_max(now, SeqCst);
        let mut saw = 0;
        for _ in 0..rounds {
            if PEAK.load(SeqCst) >= 2 {
                saw = 1;
                break;
            }
            // SAFETY: pause only hints the CPU; it touches no memory.
            unsafe { asm!("pause", options(nomem, nostack)) };
        }
        INSIDE.fetch_sub(1, SeqCst);
        words(out, &[enclave_rt::thread_index(), saw, PEAK.load(SeqCst)])
    })
}

extern "C" fn barrier_reset() -> u64 {
    INSIDE.store(0, SeqCst);
    PEAK.store(0, SeqCst);
    0
}

extern "C" fn edmm_prep() -> u64 {
    marshal(|_, out| {
        let p = enclave_rt::heap_grow(2)? as u64;
        // SAFETY: `p` and `p + 4096` are the two RW heap pages heap_grow(2) just accepted.
        unsafe {
            core::ptr::write_volatile(p as *mut u8, 0x11);
            core::ptr::write_volatile((p + 4096) as *mut u8, 0x22);
        }
        words(out, &[p - base(), p + 4096 - base()])
    })
}

extern "C" fn after_restrict() -> u64 {
    marshal(|input, out| {
        let a = base() + arg(input, 0)?;
        let st = enclave_rt::eaccept(a, secinfo::accept_restricted(1)).err().unwrap_or(0);
        // SAFETY: `a` is a heap page this probe accepted earlier (edmm_prep) and the host restricted to read: reading is allowed.
        let v = unsafe { core::ptr::read_volatile(a as *const u8) } as u64;
        reset(MODE_SKIP, 3);
        // mov byte ptr [rdi], 1 (C6 07 01): the page is read-only now
        // SAFETY: a write to the read-only page on purpose: the handler (MODE_SKIP) skips the 3-byte instruction; memory is unchanged.
        unsafe { asm!(".byte 0xC6, 0x07, 0x01", in("rdi") a, options(nostack)) };
        MODE.store(MODE_ABORT, SeqCst);
        let r = report();
        words(out, &[st, v, r[0], r[1], r[2], r[3]])
    })
}

extern "C" fn after_trim() -> u64 {
    marshal(|input, out| {
        let b = base() + arg(input, 0)?;
        let st = enclave_rt::eaccept(b, secinfo::ACCEPT_TRIM).err().unwrap_or(0);
        reset(MODE_SKIP, 2);
        // mov al, byte ptr [rdi] (8A 07): the page is trimmed
        // SAFETY: a read of the trimmed page on purpose: the handler (MODE_SKIP) skips the 2-byte instruction; only AL changes.
        unsafe { asm!(".byte 0x8A, 0x07", in("rdi") b, out("al") _, options(nostack)) };
        MODE.store(MODE_ABORT, SeqCst);
        let r = report();
        words(out, &[st, r[0], r[1], r[2]])
    })
}

extern "C" fn emodpe_exec() -> u64 {
    marshal(|_, out| {
        let p = enclave_rt::heap_grow(1)? as u64;
        // mov eax, 0x1234; ret
        let code = [0xB8u8, 0x34, 0x12, 0, 0, 0xC3];
        for (i, b) in code.iter().enumerate() {
            // SAFETY: `p` is a RW heap page heap_grow(1) just accepted; i < 6 bytes.
            unsafe { core::ptr::write_volatile((p + i as u64) as *mut u8, *b) };
        }
        let st = enclave_rt::emodpe(p, 4).err().unwrap_or(0);
        // SAFETY: `p` holds `mov eax, 0x1234; ret` written above and was made executable by EMODPE; a failed EMODPE faults on the call and the handler aborts the thread.
        let f: extern "C" fn() -> u32 = unsafe { core::mem::transmute(p as *const u8) };
        let r = f() as u64;
        let tcs = enclave_rt::emodpe(base(), 1).err().unwrap_or(0);
        let beyond = enclave_rt::emodpe(p, 8).err().unwrap_or(0);
        words(out, &[st, r, tcs, beyond])
    })
}

extern "C" fn ocalls() -> u64 {
    marshal(|input, out| {
        let mut buf = [0u8; 64];
        let n = enclave_rt::ocall(1, input, &mut buf).map_err(|e| e | 0x100)?;
        let unknown = enclave_rt::ocall(99, b"x", &mut buf).err().unwrap_or(0);
        static BIG: [u8; 20000] = [7; 20000];
        let oversize = enclave_rt::ocall(1, &BIG, &mut buf).err().unwrap_or(0);
        let mut small = [0u8; 2];
        let answer_too_big = enclave_rt::ocall(1, b"abcdef", &mut small).err().unwrap_or(0);
        out[..n].copy_from_slice(&buf[..n]);
        let w = [unknown as u64, oversize as u64, answer_too_big as u64];
        for (i, v) in w.iter().enumerate() {
            out[n + i * 8..n + i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        Ok(n + 24)
    })
}

extern "C" fn output_size() -> u64 {
    marshal(|input, out| {
        let n = arg(input, 0)? as usize;
        if n > out.len() {
            return Ok(n); // marshal answers TOO_BIG: never more than CAP goes out
        }
        out[..n].fill(0xab);
        Ok(n)
    })
}
