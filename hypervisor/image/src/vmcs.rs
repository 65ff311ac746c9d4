//! Intel VMX: the VMCS field encodings, capability MSRs and the VMX instructions the image uses
//! (Intel SDM vol. 3C, appendix B for the encodings, appendix A for the capability MSRs,
//! chapter 30 for the instructions). Only what vmx.rs needs.

#![allow(dead_code)] // the encoding tables are complete; the backend uses a subset

use core::arch::asm;

use crate::cpu;

pub mod msr {
    pub const FEATURE_CONTROL: u32 = 0x3a;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const VMX_BASIC: u32 = 0x480;
    pub const VMX_PINBASED: u32 = 0x481;
    pub const VMX_PROCBASED: u32 = 0x482;
    pub const VMX_EXIT: u32 = 0x483;
    pub const VMX_ENTRY: u32 = 0x484;
    pub const VMX_CR0_FIXED0: u32 = 0x486;
    pub const VMX_CR0_FIXED1: u32 = 0x487;
    pub const VMX_CR4_FIXED0: u32 = 0x488;
    pub const VMX_CR4_FIXED1: u32 = 0x489;
    pub const VMX_PROCBASED2: u32 = 0x48b;
    pub const VMX_EPT_VPID_CAP: u32 = 0x48c;
    pub const VMX_TRUE_PINBASED: u32 = 0x48d;
    pub const VMX_TRUE_PROCBASED: u32 = 0x48e;
    pub const VMX_TRUE_EXIT: u32 = 0x48f;
    pub const VMX_TRUE_ENTRY: u32 = 0x490;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
}

/// IA32_FEATURE_CONTROL bits.
pub const FC_LOCK: u64 = 1 << 0;
pub const FC_VMX_OUTSIDE_SMX: u64 = 1 << 2;
pub const CR4_VMXE: u64 = 1 << 13;

/// VMCS field encodings.
pub mod f {
    // 16-bit
    pub const VPID: u32 = 0x0000;
    pub const GUEST_ES_SEL: u32 = 0x0800;
    pub const GUEST_CS_SEL: u32 = 0x0802;
    pub const GUEST_SS_SEL: u32 = 0x0804;
    pub const GUEST_DS_SEL: u32 = 0x0806;
    pub const GUEST_FS_SEL: u32 = 0x0808;
    pub const GUEST_GS_SEL: u32 = 0x080a;
    pub const GUEST_LDTR_SEL: u32 = 0x080c;
    pub const GUEST_TR_SEL: u32 = 0x080e;
    pub const HOST_ES_SEL: u32 = 0x0c00;
    pub const HOST_CS_SEL: u32 = 0x0c02;
    pub const HOST_SS_SEL: u32 = 0x0c04;
    pub const HOST_DS_SEL: u32 = 0x0c06;
    pub const HOST_FS_SEL: u32 = 0x0c08;
    pub const HOST_GS_SEL: u32 = 0x0c0a;
    pub const HOST_TR_SEL: u32 = 0x0c0c;
    // 64-bit
    pub const IO_BITMAP_A: u32 = 0x2000;
    pub const IO_BITMAP_B: u32 = 0x2002;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const EPT_POINTER: u32 = 0x201a;
    pub const GUEST_PHYS_ADDR: u32 = 0x2400;
    pub const LINK_POINTER: u32 = 0x2800;
    pub const GUEST_DEBUGCTL: u32 = 0x2802;
    pub const GUEST_PAT: u32 = 0x2804;
    pub const GUEST_EFER: u32 = 0x2806;
    pub const HOST_PAT: u32 = 0x2c00;
    pub const HOST_EFER: u32 = 0x2c02;
    // 32-bit
    pub const PIN_BASED: u32 = 0x4000;
    pub const PROC_BASED: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const CR3_TARGET_COUNT: u32 = 0x400a;
    pub const EXIT_CONTROLS: u32 = 0x400c;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400e;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const ENTRY_INTR_INFO: u32 = 0x4016;
    pub const ENTRY_EXCEPTION_ERR: u32 = 0x4018;
    pub const ENTRY_INSTR_LEN: u32 = 0x401a;
    pub const PROC_BASED2: u32 = 0x401e;
    pub const VM_INSTR_ERROR: u32 = 0x4400;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INTR_INFO: u32 = 0x4404;
    pub const EXIT_INTR_ERR: u32 = 0x4406;
    pub const IDT_VECTORING_INFO: u32 = 0x4408;
    pub const IDT_VECTORING_ERR: u32 = 0x440a;
    pub const EXIT_INSTR_LEN: u32 = 0x440c;
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_AR: u32 = 0x4814;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY: u32 = 0x4826;
    pub const GUEST_SYSENTER_CS: u32 = 0x482a;
    pub const HOST_SYSENTER_CS: u32 = 0x4c00;
    // natural width
    pub const CR0_MASK: u32 = 0x6000;
    pub const CR4_MASK: u32 = 0x6002;
    pub const CR0_SHADOW: u32 = 0x6004;
    pub const CR4_SHADOW: u32 = 0x6006;
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681a;
    pub const GUEST_RSP: u32 = 0x681c;
    pub const GUEST_RIP: u32 = 0x681e;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DBG: u32 = 0x6822;
    pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u32 = 0x6826;
    pub const HOST_CR0: u32 = 0x6c00;
    pub const HOST_CR3: u32 = 0x6c02;
    pub const HOST_CR4: u32 = 0x6c04;
    pub const HOST_FS_BASE: u32 = 0x6c06;
    pub const HOST_GS_BASE: u32 = 0x6c08;
    pub const HOST_TR_BASE: u32 = 0x6c0a;
    pub const HOST_GDTR_BASE: u32 = 0x6c0c;
    pub const HOST_IDTR_BASE: u32 = 0x6c0e;
    pub const HOST_SYSENTER_ESP: u32 = 0x6c10;
    pub const HOST_SYSENTER_EIP: u32 = 0x6c12;
    pub const HOST_RSP: u32 = 0x6c14;
    pub const HOST_RIP: u32 = 0x6c16;
}

/// Segment register index (ES, CS, SS, DS, FS, GS, LDTR, TR): selector, limit, access rights
/// and base fields are laid out 2 encodings apart in this order.
pub const SEG_ES: u32 = 0;
pub const SEG_CS: u32 = 1;
pub const SEG_SS: u32 = 2;
pub const SEG_DS: u32 = 3;
pub const SEG_FS: u32 = 4;
pub const SEG_GS: u32 = 5;
pub const SEG_LDTR: u32 = 6;
pub const SEG_TR: u32 = 7;
/// Access rights: segment unusable.
pub const AR_UNUSABLE: u32 = 1 << 16;

pub mod ctl {
    // pin-based
    pub const PIN_EXT_INTR: u32 = 1 << 0;
    pub const PIN_NMI: u32 = 1 << 3;
    // primary processor-based
    pub const HLT: u32 = 1 << 7;
    pub const CR3_LOAD: u32 = 1 << 15;
    pub const CR3_STORE: u32 = 1 << 16;
    pub const UNCOND_IO: u32 = 1 << 24;
    pub const MSR_BITMAPS: u32 = 1 << 28;
    pub const SECONDARY: u32 = 1 << 31;
    // secondary
    pub const EPT: u32 = 1 << 1;
    pub const RDTSCP: u32 = 1 << 3;
    pub const INVPCID: u32 = 1 << 12;
    pub const XSAVES: u32 = 1 << 20;
    // exit
    pub const EXIT_HOST_64: u32 = 1 << 9;
    pub const EXIT_SAVE_PAT: u32 = 1 << 18;
    pub const EXIT_LOAD_PAT: u32 = 1 << 19;
    pub const EXIT_SAVE_EFER: u32 = 1 << 20;
    pub const EXIT_LOAD_EFER: u32 = 1 << 21;
    // entry
    pub const ENTRY_IA32E: u32 = 1 << 9;
    pub const ENTRY_LOAD_PAT: u32 = 1 << 14;
    pub const ENTRY_LOAD_EFER: u32 = 1 << 15;
}

/// Basic exit reasons (SDM vol. 3D appendix C).
pub mod reason {
    pub const EXCEPTION_NMI: u32 = 0;
    pub const EXTERNAL_INTR: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const CPUID: u32 = 10;
    pub const GETSEC: u32 = 11;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMXON: u32 = 27;
    pub const CR_ACCESS: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const INVALID_GUEST_STATE: u32 = 33;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const INVVPID: u32 = 53;
    pub const XSETBV: u32 = 55;
    pub const INVPCID: u32 = 58;
    pub const VMFUNC: u32 = 59;
}

/// A VMXON or VMCS region: one 4 KiB page starting with the revision identifier.
#[repr(C, align(4096))]
pub struct Region(pub [u8; 4096]);

impl Region {
    pub const fn new() -> Self {
        Region([0; 4096])
    }
    pub fn pa(&self) -> u64 {
        self as *const Region as u64 // the image runs identity-mapped
    }
    pub fn prepare(&mut self) {
        self.0.fill(0);
        let rev = (cpu::rdmsr(msr::VMX_BASIC) & 0x7fff_ffff) as u32;
        self.0[0..4].copy_from_slice(&rev.to_le_bytes());
    }
}

/// Result of a VMX instruction: VMfailInvalid (CF) or VMfailValid (ZF, error in the VMCS).
fn check(cf: u8, zf: u8) -> Result<(), u32> {
    if cf != 0 {
        Err(u32::MAX)
    } else if zf != 0 {
        Err(read(f::VM_INSTR_ERROR) as u32)
    } else {
        Ok(())
    }
}

pub fn vmxon(pa: u64) -> Result<(), u32> {
    let (cf, zf): (u8, u8);
    // SAFETY: `pa` is this CPU's VMXON region with the revision identifier; CR4.VMXE is set.
    unsafe { asm!("vmxon [{p}]", "setc {c}", "setz {z}", p = in(reg) &pa, c = out(reg_byte) cf, z = out(reg_byte) zf, options(nostack)) };
    if cf != 0 {
        return Err(u32::MAX);
    }
    if zf != 0 {
        return Err(0);
    }
    Ok(())
}

pub fn vmxoff() {
    // SAFETY: only called in VMX root operation with no VMCS needed afterwards.
    unsafe { asm!("vmxoff", options(nostack)) };
}

pub fn vmclear(pa: u64) -> Result<(), u32> {
    let (cf, zf): (u8, u8);
    // SAFETY: `pa` is a VMCS region owned by the caller.
    unsafe { asm!("vmclear [{p}]", "setc {c}", "setz {z}", p = in(reg) &pa, c = out(reg_byte) cf, z = out(reg_byte) zf, options(nostack)) };
    check(cf, zf)
}

pub fn vmptrld(pa: u64) -> Result<(), u32> {
    let (cf, zf): (u8, u8);
    // SAFETY: `pa` is a VMCS region owned by the caller, cleared or launched on this CPU.
    unsafe { asm!("vmptrld [{p}]", "setc {c}", "setz {z}", p = in(reg) &pa, c = out(reg_byte) cf, z = out(reg_byte) zf, options(nostack)) };
    check(cf, zf)
}

pub fn read(field: u32) -> u64 {
    let v: u64;
    // SAFETY: reads a field of the current VMCS; an unsupported field only sets the flags.
    unsafe { asm!("vmread {v}, {f}", v = out(reg) v, f = in(reg) field as u64, options(nostack)) };
    v
}

pub fn write(field: u32, v: u64) {
    // SAFETY: writes a field of the current VMCS, which this CPU owns.
    unsafe { asm!("vmwrite {f}, {v}", f = in(reg) field as u64, v = in(reg) v, options(nostack)) };
}

/// INVEPT all-context (type 2): drops every EPT-derived translation on this CPU.
pub fn invept_all() {
    let desc = [0u64; 2];
    // SAFETY: a valid descriptor; type 2 needs no EPTP. Only used when EPT is on.
    unsafe { asm!("invept {t}, [{d}]", t = in(reg) 2u64, d = in(reg) desc.as_ptr(), options(nostack)) };
}

/// The control value: the bits we want, forced to what the capability MSR allows
/// (low word = must be 1, high word = may be 1). Err names the bits the CPU cannot set.
pub fn adjust(cap_msr: u32, want: u32) -> Result<u32, u32> {
    let cap = cpu::rdmsr(cap_msr);
    let (must, may) = (cap as u32, (cap >> 32) as u32);
    let v = (want | must) & may;
    if v & want != want {
        return Err(want & !may);
    }
    Ok(v)
}

/// Same, for optional bits: set what the CPU allows, silently drop the rest.
pub fn adjust_optional(cap_msr: u32, want: u32, optional: u32) -> Result<u32, u32> {
    let may = (cpu::rdmsr(cap_msr) >> 32) as u32;
    adjust(cap_msr, want | (optional & may))
}

/// The capability MSR for a control: the TRUE_ one when IA32_VMX_BASIC bit 55 says it exists
/// (it allows clearing default-1 bits such as CR3-load exiting).
pub fn cap(plain: u32, true_msr: u32) -> u32 {
    if cpu::rdmsr(msr::VMX_BASIC) & (1 << 55) != 0 {
        true_msr
    } else {
        plain
    }
}

/// VMX access-rights from a GDT descriptor's attribute word in the VMCB packed format
/// (type/S/DPL/P in bits 0-7, AVL/L/DB/G in 8-11): VMX keeps the latter in bits 12-15.
pub fn ar_from_packed(attrib: u16) -> u32 {
    let a = attrib as u32;
    (a & 0xff) | ((a & 0xf00) << 4)
}
