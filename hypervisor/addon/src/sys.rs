//! Syscall bridge: the few libc functions std does not wrap (ioctl, mmap, munmap, signals),
//! declared by hand, plus CPUID and MSR reads. Everything here is free of N-API so it can be
//! unit-tested with `cargo test`.

use core::ffi::{c_int, c_ulong, c_void};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

extern "C" {
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn signal(sig: c_int, handler: usize) -> usize;
    fn pthread_self() -> u64;
    fn pthread_kill(thread: u64, sig: c_int) -> c_int;
}

pub const PROT_READ: c_int = 1;
pub const PROT_WRITE: c_int = 2;
const MAP_SHARED: c_int = 0x01;
const MAP_PRIVATE: c_int = 0x02;
const MAP_ANONYMOUS: c_int = 0x20;
const MAP_NORESERVE: c_int = 0x4000;
const MAP_FAILED: *mut c_void = !0usize as *mut c_void;

/// An OS error with the call that failed: "KVM_RUN: Interrupted system call (EINTR)".
#[derive(Debug)]
pub struct SysError {
    pub errno: i32,
    pub what: String,
}

impl SysError {
    pub fn last(what: impl Into<String>) -> Self {
        SysError { errno: io::Error::last_os_error().raw_os_error().unwrap_or(0), what: what.into() }
    }
    pub fn from_io(e: &io::Error, what: impl Into<String>) -> Self {
        SysError { errno: e.raw_os_error().unwrap_or(0), what: what.into() }
    }
    pub fn code(&self) -> String {
        errno_name(self.errno).map(str::to_string).unwrap_or_else(|| format!("ERRNO_{}", self.errno))
    }
}

impl std::fmt::Display for SysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = io::Error::from_raw_os_error(self.errno).to_string();
        let text = text.split(" (os error").next().unwrap_or(&text).to_string();
        write!(f, "{}: {} ({})", self.what, text, self.code())
    }
}

pub fn errno_name(e: i32) -> Option<&'static str> {
    Some(match e {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        24 => "EMFILE",
        25 => "ENOTTY",
        28 => "ENOSPC",
        38 => "ENOSYS",
        95 => "EOPNOTSUPP",
        _ => return None,
    })
}

/// ioctl with a pointer argument (the kernel reads and/or writes `*arg`).
///
/// # Safety
/// `arg` must be valid for whatever the request reads or writes.
// SAFETY (contract): see # Safety; the body passes `arg` through unchanged.
pub unsafe fn ioctl_ptr(fd: i32, request: u64, arg: *mut c_void) -> Result<i32, i32> {
    let r = ioctl(fd, request as c_ulong, arg);
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

/// ioctl with an integer argument.
///
/// # Safety
/// `request` must take its argument by value (KVM_GET_API_VERSION, KVM_CREATE_VM, ...): for a
/// request the kernel treats as a pointer, the integer becomes a user pointer it may read or write.
// SAFETY (contract): see # Safety; the body passes `arg` through by value.
pub unsafe fn ioctl_int(fd: i32, request: u64, arg: u64) -> Result<i32, i32> {
    let r = ioctl(fd, request as c_ulong, arg as c_ulong);
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

/// A mapping owned by this value (unmapped on drop).
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY (Send, Sync): the mapping is plain process memory owned by this value and unmapped once,
// on drop; the pointer is not tied to a thread. Sync lets two threads call read/write on one
// mapping at once, which would race on the same bytes: callers serialize (the core's reserved
// memory behind the Hypervisor's Mutex, the mmap exports on the JS thread).
unsafe impl Send for Mapping {}
// SAFETY: see Send above (Sync: callers serialize access to the same bytes).
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Anonymous, zero-filled, private memory (lazily committed).
    pub fn anonymous(len: usize) -> Result<Mapping, SysError> {
        Self::map(len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, "mmap(anonymous)")
    }
    /// A shared mapping of `fd` at `offset`.
    pub fn file(fd: i32, len: usize, offset: u64, writable: bool) -> Result<Mapping, SysError> {
        let prot = if writable { PROT_READ | PROT_WRITE } else { PROT_READ };
        Self::map(len, prot, MAP_SHARED, fd, offset as i64, "mmap")
    }
    fn map(len: usize, prot: c_int, flags: c_int, fd: i32, off: i64, what: &str) -> Result<Mapping, SysError> {
        if len == 0 {
            return Err(SysError { errno: 22, what: format!("{what}: length 0") });
        }
        // SAFETY: a null hint lets the kernel choose an address, so no existing mapping is
        // replaced; the result is checked against MAP_FAILED.
        let p = unsafe { mmap(core::ptr::null_mut(), len, prot, flags, fd, off) };
        if p == MAP_FAILED {
            return Err(SysError::last(format!("{what} of {len} bytes")));
        }
        Ok(Mapping { ptr: p as *mut u8, len })
    }
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bounds-checked range `[off, off+n)`.
    pub fn range(&self, off: usize, n: usize) -> Option<*mut u8> {
        if off.checked_add(n)? <= self.len {
            // SAFETY: off + n <= len (checked), so the pointer stays within (or one past the end
            // of) the mapping.
            Some(unsafe { self.ptr.add(off) })
        } else {
            None
        }
    }
    pub fn read(&self, off: usize, out: &mut [u8]) -> bool {
        match self.range(off, out.len()) {
            Some(p) => {
                // SAFETY: range() checked out.len() bytes at `p` lie in the mapping; `out` is a
                // distinct Rust buffer, so they do not overlap.
                unsafe { core::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
                true
            }
            None => false,
        }
    }
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        match self.range(off, data.len()) {
            Some(p) => {
                // SAFETY: range() checked data.len() bytes at `p` lie in the mapping; `data` is a
                // distinct Rust buffer, so they do not overlap.
                unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
                true
            }
            None => false,
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; drop runs once, and references into the
        // mapping cannot outlive `self`.
        unsafe { munmap(self.ptr as *mut c_void, self.len) };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    Cpuid { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
}

/// CPUID leaf 0 vendor string ("GenuineIntel", "AuthenticAMD", ...).
pub fn cpu_vendor() -> String {
    let r = cpuid(0, 0);
    let mut b = Vec::with_capacity(12);
    for w in [r.ebx, r.edx, r.ecx] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Reads MSR `msr` on `cpu` through /dev/cpu/N/msr (the msr driver: pread at offset = MSR).
pub fn read_msr(cpu: u32, msr: u32) -> Result<u64, String> {
    let path = format!("/dev/cpu/{cpu}/msr");
    let f = File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("MSR {msr:#x} on CPU {cpu}: {path} is absent (msr driver not loaded: modprobe msr)"),
        io::ErrorKind::PermissionDenied => format!("MSR {msr:#x} on CPU {cpu}: {path} not permitted (needs root with CAP_SYS_RAWIO)"),
        _ => format!("MSR {msr:#x} on CPU {cpu}: open {path}: {e}"),
    })?;
    let mut b = [0u8; 8];
    match f.read_at(&mut b, msr as u64) {
        Ok(8) => Ok(u64::from_le_bytes(b)),
        Ok(n) => Err(format!("MSR {msr:#x} on CPU {cpu}: short read of {n} bytes")),
        Err(e) if e.raw_os_error() == Some(5) => Err(format!("MSR {msr:#x} on CPU {cpu}: the CPU refused the read (#GP: MSR not implemented)")),
        Err(e) => Err(format!("MSR {msr:#x} on CPU {cpu}: read {path}: {e}")),
    }
}

// ---------------------------------------------------------------- thread kick (watchdog)

/// The signal the watchdog uses to kick a vCPU thread out of KVM_RUN (a real-time signal
/// nothing else in Node uses).
pub const KICK_SIGNAL: c_int = 40;

extern "C" fn kick_handler(_sig: c_int) {}

/// Installs the no-op handler once (glibc `signal` = SA_RESTART semantics, so a stray kick
/// elsewhere only restarts a syscall; KVM_RUN returns EINTR regardless).
pub fn install_kick_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: installs a handler that does nothing (async-signal-safe) for a real-time signal
    // nothing else in the process uses.
    ONCE.call_once(|| unsafe {
        signal(KICK_SIGNAL, kick_handler as *const () as usize);
    });
}

pub fn current_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { pthread_self() }
}

pub fn kick_thread(t: u64) {
    // SAFETY: pthread_kill needs a live thread's pthread_t. The only caller, the watchdog,
    // passes the one arm() recorded and holds the slot lock that disarm() needs, so that thread
    // is still inside its run loop; KICK_SIGNAL has a no-op handler (install_kick_handler).
    unsafe {
        pthread_kill(t, KICK_SIGNAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_vendor_matches_proc_cpuinfo() {
        let v = cpu_vendor();
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let line = info.lines().find(|l| l.starts_with("vendor_id")).unwrap();
        assert_eq!(line.split(':').nth(1).unwrap().trim(), v);
    }

    #[test]
    fn anonymous_mapping_bounds() {
        let m = Mapping::anonymous(8192).unwrap();
        assert!(m.write(8190, &[1, 2]));
        assert!(!m.write(8191, &[1, 2]));
        let mut b = [0u8; 2];
        assert!(m.read(8190, &mut b));
        assert_eq!(b, [1, 2]);
    }

    #[test]
    fn msr_error_is_one_clear_line() {
        if let Err(e) = read_msr(9999, 0x10) {
            assert!(e.contains("/dev/cpu/9999/msr"), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn ioctl_on_bad_fd_reports_ebadf() {
        // SAFETY: request 0 on an invalid fd: the kernel fails with EBADF before reading the argument.
        assert_eq!(unsafe { ioctl_int(-1, 0, 0) }, Err(9));
        let e = SysError { errno: 9, what: "ioctl".into() };
        assert_eq!(e.to_string(), "ioctl: Bad file descriptor (EBADF)");
    }
}
