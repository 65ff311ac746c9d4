//! Raw KVM: the ioctl numbers and structures (x86-64 layouts from linux/kvm.h), declared here
//! because kvm-ioctls/kvm-bindings are not available offline.

pub mod guest;

use crate::sys::{ioctl_int, ioctl_ptr, Mapping, SysError};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const KVM_GET_API_VERSION: u64 = 0xAE00;
pub const KVM_CREATE_VM: u64 = 0xAE01;
pub const KVM_CHECK_EXTENSION: u64 = 0xAE03;
pub const KVM_GET_VCPU_MMAP_SIZE: u64 = 0xAE04;
pub const KVM_GET_SUPPORTED_CPUID: u64 = 0xC008_AE05;
pub const KVM_CREATE_VCPU: u64 = 0xAE41;
pub const KVM_SET_USER_MEMORY_REGION: u64 = 0x4020_AE46;
pub const KVM_RUN: u64 = 0xAE80;
pub const KVM_GET_REGS: u64 = 0x8090_AE81;
pub const KVM_SET_REGS: u64 = 0x4090_AE82;
pub const KVM_GET_SREGS: u64 = 0x8138_AE83;
pub const KVM_SET_SREGS: u64 = 0x4138_AE84;
pub const KVM_SET_CPUID2: u64 = 0x4008_AE90;

pub const KVM_MEM_READONLY: u32 = 1 << 1;
pub const KVM_CAP_READONLY_MEM: u64 = 81;

pub const EXIT_IO: u32 = 2;
pub const EXIT_HLT: u32 = 5;
pub const EXIT_MMIO: u32 = 6;
pub const EXIT_SHUTDOWN: u32 = 8;
pub const EXIT_FAIL_ENTRY: u32 = 9;
pub const EXIT_INTR: u32 = 10;
pub const EXIT_INTERNAL_ERROR: u32 = 17;

pub fn exit_name(r: u32) -> &'static str {
    match r {
        0 => "UNKNOWN",
        1 => "EXCEPTION",
        2 => "IO",
        3 => "HYPERCALL",
        4 => "DEBUG",
        5 => "HLT",
        6 => "MMIO",
        7 => "IRQ_WINDOW_OPEN",
        8 => "SHUTDOWN",
        9 => "FAIL_ENTRY",
        10 => "INTR",
        17 => "INTERNAL_ERROR",
        24 => "SYSTEM_EVENT",
        _ => "OTHER",
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
    pub padding: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct DTable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Sregs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DTable,
    pub idt: DTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; 4],
}

#[repr(C)]
struct MemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CpuidEntry {
    function: u32,
    index: u32,
    flags: u32,
    eax: u32,
    ebx: u32,
    ecx: u32,
    edx: u32,
    padding: [u32; 3],
}

const MAX_CPUID: usize = 256;

#[repr(C)]
struct Cpuid2 {
    nent: u32,
    padding: u32,
    entries: [CpuidEntry; MAX_CPUID],
}

const _: () = assert!(core::mem::size_of::<Regs>() == 144);
const _: () = assert!(core::mem::size_of::<Sregs>() == 312);
const _: () = assert!(core::mem::size_of::<MemoryRegion>() == 32);
const _: () = assert!(core::mem::size_of::<CpuidEntry>() == 40);

fn err(what: &str) -> impl Fn(i32) -> SysError + '_ {
    move |e| SysError { errno: e, what: what.to_string() }
}

/// The opened /dev/kvm with what every VM needs cached (mmap size, supported CPUID).
pub struct Kvm {
    file: File,
    pub vcpu_mmap_size: usize,
    cpuid: Box<Cpuid2>,
    pub readonly_mem: bool,
}

impl Kvm {
    pub fn open() -> Result<Kvm, SysError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(|e| SysError::from_io(&e, "open /dev/kvm"))?;
        let fd = file.as_raw_fd();
        // SAFETY: KVM_GET_API_VERSION takes no argument (an integer 0).
        let v = unsafe { ioctl_int(fd, KVM_GET_API_VERSION, 0) }.map_err(err("KVM_GET_API_VERSION"))?;
        if v != 12 {
            return Err(SysError { errno: 95, what: format!("KVM API version {v} (need 12)") });
        }
        // SAFETY: KVM_GET_VCPU_MMAP_SIZE takes no argument (an integer 0).
        let vcpu_mmap_size = unsafe { ioctl_int(fd, KVM_GET_VCPU_MMAP_SIZE, 0) }.map_err(err("KVM_GET_VCPU_MMAP_SIZE"))? as usize;
        let mut cpuid = Box::new(Cpuid2 { nent: MAX_CPUID as u32, padding: 0, entries: [CpuidEntry::default(); MAX_CPUID] });
        // SAFETY: `cpuid` is a boxed kvm_cpuid2 with room for `nent` = MAX_CPUID entries; the
        // kernel writes at most nent entries (E2BIG otherwise) and lowers nent.
        unsafe { ioctl_ptr(fd, KVM_GET_SUPPORTED_CPUID, &mut *cpuid as *mut Cpuid2 as *mut _) }.map_err(err("KVM_GET_SUPPORTED_CPUID"))?;
        // SAFETY: KVM_CHECK_EXTENSION takes the capability number by value.
        let readonly_mem = unsafe { ioctl_int(fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) }.unwrap_or(0) > 0;
        Ok(Kvm { file, vcpu_mmap_size, cpuid, readonly_mem })
    }

    pub fn create_vm(&self) -> Result<VmFd, SysError> {
        // SAFETY: KVM_CREATE_VM takes the machine type (0) by value.
        let fd = unsafe { ioctl_int(self.file.as_raw_fd(), KVM_CREATE_VM, 0) }.map_err(err("KVM_CREATE_VM"))?;
        // SAFETY: KVM_CREATE_VM succeeded, so `fd` is a fresh descriptor owned by nobody else.
        Ok(VmFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }
}

pub struct VmFd {
    fd: OwnedFd,
}

impl VmFd {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    /// Maps `len` bytes of host memory at `host` as guest-physical `gpa`.
    ///
    /// # Safety
    /// `host..host+len` must stay mapped for as long as the VM lives.
    // SAFETY (contract): the caller keeps host..host+len mapped and does not unmap or reuse it
    // while the VM exists (KVM accesses it on behalf of the guest); the ioctl itself only reads
    // `r`.
    pub unsafe fn set_memory(&self, slot: u32, gpa: u64, len: u64, host: *mut u8, readonly: bool) -> Result<(), SysError> {
        let mut r = MemoryRegion {
            slot,
            flags: if readonly { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: host as u64,
        };
        ioctl_ptr(self.raw(), KVM_SET_USER_MEMORY_REGION, &mut r as *mut _ as *mut _)
            .map(|_| ())
            .map_err(|e| SysError { errno: e, what: format!("KVM_SET_USER_MEMORY_REGION slot {slot} gpa {gpa:#x}+{len:#x}") })
    }

    pub fn create_vcpu(&self, kvm: &Kvm) -> Result<VcpuFd, SysError> {
        self.create_vcpu_id(kvm, 0)
    }

    /// vCPU number `id` of this VM (one per TCS in the enclave runner).
    pub fn create_vcpu_id(&self, kvm: &Kvm, id: u64) -> Result<VcpuFd, SysError> {
        // SAFETY: KVM_CREATE_VCPU takes the vCPU id by value.
        let fd = unsafe { ioctl_int(self.raw(), KVM_CREATE_VCPU, id) }.map_err(err("KVM_CREATE_VCPU"))?;
        // SAFETY: KVM_CREATE_VCPU succeeded, so `fd` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let run = Mapping::file(fd.as_raw_fd(), kvm.vcpu_mmap_size, 0, true).map_err(|e| SysError { what: "mmap kvm_run".into(), ..e })?;
        // The host's supported CPUID: without it, KVM on VMX traps RDRAND (the sealer's
        // entropy) as #UD.
        // SAFETY: KVM_SET_CPUID2 only reads the kvm_cpuid2 (nent entries, filled by
        // KVM_GET_SUPPORTED_CPUID); the *mut cast is for the ioctl signature.
        unsafe { ioctl_ptr(fd.as_raw_fd(), KVM_SET_CPUID2, &*kvm.cpuid as *const Cpuid2 as *mut _) }.map_err(err("KVM_SET_CPUID2"))?;
        Ok(VcpuFd { fd, run })
    }
}

pub struct VcpuFd {
    fd: OwnedFd,
    run: Mapping,
}

// kvm_run field offsets
const RUN_IMMEDIATE_EXIT: usize = 1;
const RUN_EXIT_REASON: usize = 8;
const RUN_UNION: usize = 32;

/// A decoded exit.
#[derive(Clone, Copy, Debug)]
pub enum Exit {
    /// OUT (or IN) of `size` bytes at `port`; `data` is the value written.
    /// For IN, `data_off` is where in kvm_run the value to return goes (`set_io_in`).
    Io { port: u16, out: bool, size: u8, data: u32, data_off: usize },
    Hlt,
    Mmio { gpa: u64, write: bool, len: u32 },
    Shutdown,
    FailEntry { reason: u64 },
    Internal { suberror: u32 },
    /// KVM_RUN returned EINTR (a signal, e.g. the watchdog's kick).
    Interrupted,
    Other(u32),
}

impl VcpuFd {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    pub fn run_ptr(&self) -> *mut u8 {
        self.run.ptr()
    }
    pub fn get_regs(&self) -> Result<Regs, SysError> {
        let mut r = Regs::default();
        // SAFETY: `r` is a kvm_regs (size asserted 144 at compile time) the kernel fills.
        unsafe { ioctl_ptr(self.raw(), KVM_GET_REGS, &mut r as *mut _ as *mut _) }.map_err(err("KVM_GET_REGS"))?;
        Ok(r)
    }
    pub fn set_regs(&self, r: &Regs) -> Result<(), SysError> {
        // SAFETY: KVM_SET_REGS only reads the kvm_regs behind `r` (size asserted 144).
        unsafe { ioctl_ptr(self.raw(), KVM_SET_REGS, r as *const _ as *mut _) }.map_err(err("KVM_SET_REGS"))?;
        Ok(())
    }
    pub fn get_sregs(&self) -> Result<Sregs, SysError> {
        let mut r = Sregs::default();
        // SAFETY: `r` is a kvm_sregs (size asserted 312 at compile time) the kernel fills.
        unsafe { ioctl_ptr(self.raw(), KVM_GET_SREGS, &mut r as *mut _ as *mut _) }.map_err(err("KVM_GET_SREGS"))?;
        Ok(r)
    }
    pub fn set_sregs(&self, r: &Sregs) -> Result<(), SysError> {
        // SAFETY: KVM_SET_SREGS only reads the kvm_sregs behind `r` (size asserted 312).
        unsafe { ioctl_ptr(self.raw(), KVM_SET_SREGS, r as *const _ as *mut _) }.map_err(err("KVM_SET_SREGS"))?;
        Ok(())
    }
    /// The value the pending IN instruction returns when the vCPU next runs.
    pub fn set_io_in(&self, data_off: usize, value: u32) {
        if data_off + 4 <= self.run.len() {
            // SAFETY: data_off + 4 <= the kvm_run mapping's length (checked just above); unaligned
            // write, and the vCPU is stopped (between KVM_RUN calls on this thread).
            unsafe { core::ptr::write_unaligned(self.run.ptr().add(data_off) as *mut u32, value) };
        }
    }
    pub fn clear_immediate_exit(&self) {
        // SAFETY: kvm_run.immediate_exit is byte 1 of the vcpu mapping (at least vcpu_mmap_size
        // bytes); volatile because the watchdog thread writes it too.
        unsafe { core::ptr::write_volatile(self.run.ptr().add(RUN_IMMEDIATE_EXIT), 0) };
    }
    /// One KVM_RUN, decoded.
    pub fn run(&self) -> Result<Exit, SysError> {
        // SAFETY: KVM_RUN takes no argument; the guest memory slots were registered with
        // set_memory, whose callers keep them mapped.
        match unsafe { ioctl_ptr(self.raw(), KVM_RUN, core::ptr::null_mut()) } {
            Ok(_) => {}
            Err(4) => return Ok(Exit::Interrupted),
            Err(e) => return Err(SysError { errno: e, what: "KVM_RUN".into() }),
        }
        let p = self.run.ptr();
        // SAFETY (rd32, rd64): `p` is the kvm_run mapping (vcpu_mmap_size >= one page); the offsets
        // used are fixed kvm_run fields below 64 bytes, naturally aligned in a page-aligned
        // mapping; the kernel does not write them while KVM_RUN is not running.
        let rd32 = |off: usize| unsafe { core::ptr::read_volatile(p.add(off) as *const u32) };
        // SAFETY: as for rd32 (u64 fields at 8-aligned offsets).
        let rd64 = |off: usize| unsafe { core::ptr::read_volatile(p.add(off) as *const u64) };
        let reason = rd32(RUN_EXIT_REASON);
        Ok(match reason {
            EXIT_IO => {
                // SAFETY: kvm_run.io.direction, byte 32 of the mapping (see rd32).
                let dir = unsafe { *p.add(RUN_UNION) };
                // SAFETY: kvm_run.io.size, byte 33 of the mapping.
                let size = unsafe { *p.add(RUN_UNION + 1) };
                // SAFETY: kvm_run.io.port, a u16 at byte 34 (aligned) of the mapping.
                let port = unsafe { core::ptr::read_volatile(p.add(RUN_UNION + 2) as *const u16) };
                let off = rd64(RUN_UNION + 8) as usize;
                let data = match size {
                    // SAFETY (the three reads of the I/O data): `off` is kvm_run.io.data_offset,
                    // which the kernel points at the PIO page inside the vcpu mapping
                    // (KVM_PIO_PAGE_OFFSET, within vcpu_mmap_size); it is trusted, not re-checked
                    // against the mapping length here (set_io_in does check); unaligned reads.
                    1 => unsafe { *p.add(off) as u32 },
                    // SAFETY: as for the 1-byte read above.
                    2 => unsafe { core::ptr::read_unaligned(p.add(off) as *const u16) as u32 },
                    // SAFETY: as for the 1-byte read above.
                    _ => unsafe { core::ptr::read_unaligned(p.add(off) as *const u32) },
                };
                Exit::Io { port, out: dir == 1, size, data, data_off: off }
            }
            EXIT_HLT => Exit::Hlt,
            // SAFETY: kvm_run.mmio.is_write, byte 52 of the mapping.
            EXIT_MMIO => Exit::Mmio { gpa: rd64(RUN_UNION), len: rd32(RUN_UNION + 16), write: unsafe { *p.add(RUN_UNION + 20) } != 0 },
            EXIT_SHUTDOWN => Exit::Shutdown,
            EXIT_FAIL_ENTRY => Exit::FailEntry { reason: rd64(RUN_UNION) },
            EXIT_INTERNAL_ERROR => Exit::Internal { suberror: rd32(RUN_UNION) },
            EXIT_INTR => Exit::Interrupted,
            r => Exit::Other(r),
        })
    }
}

/// Whether /dev/kvm can be used here; Err(reason) otherwise.
pub fn availability() -> Result<(), String> {
    match Kvm::open() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("KVM unavailable: {e}")),
    }
}
