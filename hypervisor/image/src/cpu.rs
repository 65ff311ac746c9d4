//! Privileged instructions the hypervisor uses.

use core::arch::asm;

pub const MSR_EFER: u32 = 0xc000_0080;
pub const MSR_PAT: u32 = 0x277;
pub const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
pub const MSR_FS_BASE: u32 = 0xc000_0100;
pub const MSR_GS_BASE: u32 = 0xc000_0101;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const EFER_SVME: u64 = 1 << 12;

pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads an architectural MSR at CPL0.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    ((hi as u64) << 32) | lo as u64
}

pub fn wrmsr(msr: u32, v: u64) {
    // SAFETY: callers write architectural MSRs with values they own.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack)) };
}

macro_rules! read_cr {
    ($name:ident, $reg:literal) => {
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading a control register has no side effects.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack)) };
            v
        }
    };
}
read_cr!(cr0, "cr0");
read_cr!(cr2, "cr2");
read_cr!(cr3, "cr3");
read_cr!(cr4, "cr4");

pub fn write_cr0(v: u64) {
    // SAFETY: restores a value Linux itself ran with.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack)) };
}
pub fn write_cr4(v: u64) {
    // SAFETY: as above.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack)) };
}

macro_rules! read_seg {
    ($name:ident, $reg:literal) => {
        pub fn $name() -> u16 {
            let v: u16;
            // SAFETY: reading a segment selector has no side effects.
            unsafe { asm!(concat!("mov {0:x}, ", $reg), out(reg) v, options(nomem, nostack)) };
            v
        }
    };
}
read_seg!(cs, "cs");
read_seg!(ss, "ss");
read_seg!(ds, "ds");
read_seg!(es, "es");
read_seg!(fs, "fs");
read_seg!(gs, "gs");

/// The task register's selector.
pub fn tr() -> u16 {
    let v: u16;
    // SAFETY: `str` only reads the task register.
    unsafe { asm!("str {0:x}", out(reg) v, options(nomem, nostack)) };
    v
}
/// The LDT register's selector.
pub fn ldtr() -> u16 {
    let v: u16;
    // SAFETY: `sldt` only reads the LDT register.
    unsafe { asm!("sldt {0:x}", out(reg) v, options(nomem, nostack)) };
    v
}

#[repr(C, packed)]
#[derive(Default, Clone, Copy)]
pub struct DescTable {
    pub limit: u16,
    pub base: u64,
}

pub fn sgdt() -> DescTable {
    let mut d = DescTable::default();
    // SAFETY: stores 10 bytes into `d`.
    unsafe { asm!("sgdt [{}]", in(reg) &mut d as *mut DescTable, options(nostack)) };
    d
}
pub fn sidt() -> DescTable {
    let mut d = DescTable::default();
    // SAFETY: as above.
    unsafe { asm!("sidt [{}]", in(reg) &mut d as *mut DescTable, options(nostack)) };
    d
}

pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: cpuid has no side effects; rbx is saved around it (LLVM reserves it).
    unsafe {
        asm!("mov {t:r}, rbx", "cpuid", "xchg {t:r}, rbx", t = out(reg) b,
             inout("eax") leaf => a, inout("ecx") sub => c, out("edx") d, options(nomem, nostack))
    };
    [a, b, c, d]
}

pub fn stgi() {
    // SAFETY: sets GIF; EFER.SVME is on whenever this runs.
    unsafe { asm!(".byte 0x0f, 0x01, 0xdc", options(nomem, nostack)) };
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: parks the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
