//! The VMCB (AMD APM vol. 2, appendix B): a 4 KiB page, control area then state save area at 0x400.

pub mod off {
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE: usize = 0x040;
    pub const MSRPM_BASE: usize = 0x048;
    pub const ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    pub const V_INTR: usize = 0x060;
    pub const EXITCODE: usize = 0x070;
    pub const EXITINFO1: usize = 0x078;
    pub const EXITINFO2: usize = 0x080;
    pub const EXITINTINFO: usize = 0x088;
    pub const NP_ENABLE: usize = 0x090;
    pub const EVENTINJ: usize = 0x0a8;
    pub const N_CR3: usize = 0x0b0;
    // state save area
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const GDTR: usize = 0x460;
    pub const IDTR: usize = 0x480;
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

pub mod intercept {
    // misc vector 1 (offset 0x0c)
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const CPUID: u32 = 1 << 18;
    pub const HLT: u32 = 1 << 24;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
    // misc vector 2 (offset 0x10)
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
}

/// V_INTR_MASKING (offset 0x60 bit 24): physical interrupts follow the host's RFLAGS.IF.
pub const V_INTR_MASKING: u64 = 1 << 24;

pub mod exit {
    /// 0x40 + vector: an intercepted exception.
    pub const EXCP_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const CPUID: u64 = 0x72;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const MSR: u64 = 0x7c;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
}

#[repr(C, align(4096))]
pub struct Vmcb(pub [u8; 4096]);

impl Vmcb {
    pub fn r64(&self, o: usize) -> u64 {
        u64::from_le_bytes(self.0[o..o + 8].try_into().unwrap())
    }
    pub fn w64(&mut self, o: usize, v: u64) {
        self.0[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    pub fn w32(&mut self, o: usize, v: u32) {
        self.0[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub fn w16(&mut self, o: usize, v: u16) {
        self.0[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    /// A segment register: selector, attributes (VMCB packed format), limit, base.
    pub fn seg(&mut self, o: usize, sel: u16, attrib: u16, limit: u32, base: u64) {
        self.w16(o, sel);
        self.w16(o + 2, attrib);
        self.w32(o + 4, limit);
        self.w64(o + 8, base);
    }
}

/// Converts a GDT descriptor to the VMCB's (attributes, limit, base); a null selector is all 0.
pub fn gdt_segment(gdt_base: u64, sel: u16) -> (u16, u32, u64) {
    if sel & !3 == 0 {
        return (0, 0, 0);
    }
    // SAFETY: the GDT is Linux's per-CPU GDT, mapped through the copied kernel half.
    let d = unsafe { core::ptr::read_volatile((gdt_base + (sel & !7) as u64) as *const u64) };
    let attrib = (((d >> 40) & 0xff) | (((d >> 52) & 0xf) << 8)) as u16;
    let mut limit = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
    if d & (1 << 55) != 0 {
        limit = (limit << 12) | 0xfff;
    }
    let base = ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24);
    (attrib, limit, base)
}
