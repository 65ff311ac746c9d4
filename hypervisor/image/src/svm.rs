//! The AMD SVM backend (AMD APM vol. 2, chapter 15): EFER.SVME and VM_HSAVE_PA per CPU, a VMCB
//! filled from the live CPU, nested paging (NPT) with ASID 1, VMRUN; the exit loop decodes
//! #VMEXIT codes into the neutral handlers of main.rs (vcpu::Vcpu). Vendor-specific here: MSR
//! writes to EFER (SVME kept on) and VM_HSAVE_PA (ignored), SVM instructions (#UD), and the
//! hand-back (GIF set, SVME cleared). Enclave threads: `ThreadVm` below (a VMCB per thread).

use core::sync::atomic::Ordering;

use crate::entry::{self, GuestRegs, LeaveFrame};
use crate::handoff::LinuxState;
use crate::vcpu::{EnclaveExit, EnclaveVcpu, Vcpu};
use crate::vmcb::{exit, intercept, off, Vmcb, V_INTR_MASKING};
use crate::{cpu, host, lock, unlock, Console, HV, LAUNCHED, LEAVE_TRAMP, LOCK, PRINT};
use core::fmt::Write;
use hyperenclave_core::{Access, Format};

pub const PAGING: Format = Format::Npt;
pub const TABLES: &str = "NPT";

#[repr(C, align(4096))]
pub struct PerCpu {
    vmcb: Vmcb,
    hsave: [u8; 4096],
    regs: GuestRegs,
    launched: bool,
    npf_last: u64,
    npf_repeat: u32,
    exits: u64,
}


#[repr(C, align(4096))]
struct Msrpm([u8; 8192]);

#[repr(C, align(4096))]
struct Iopm([u8; 12288]);

static mut MSRPM: Msrpm = Msrpm([0; 8192]);
static mut IOPM: Iopm = Iopm([0; 12288]);

pub fn launch(cpu: usize, linux: &LinuxState) -> i64 {
    let pc = crate::percpu_state(cpu);
    // SAFETY: this CPU's own state in its area (not zeroed by the driver); all-zero is a valid PerCpu.
    unsafe { core::ptr::write_bytes(pc as *mut PerCpu, 0, 1) };
    let root = {
        lock(&LOCK);
        // SAFETY: under LOCK.
        let r = unsafe { (*core::ptr::addr_of!(HV)).as_ref().and_then(|h| h.host_table()).map(|t| t.root()) };
        unlock(&LOCK);
        match r {
            Some(r) => r,
            None => return -4,
        }
    };
    let efer = cpu::rdmsr(cpu::MSR_EFER);
    cpu::wrmsr(cpu::MSR_EFER, efer | cpu::EFER_SVME);
    cpu::wrmsr(cpu::MSR_VM_HSAVE_PA, pc.hsave.as_ptr() as u64);

    let v = &mut pc.vmcb;
    v.0.fill(0);
    v.w32(off::INTERCEPT_MISC1, intercept::CPUID | intercept::MSR_PROT | intercept::SHUTDOWN);
    v.w32(
        off::INTERCEPT_MISC2,
        intercept::VMRUN | intercept::VMMCALL | intercept::VMLOAD | intercept::VMSAVE | intercept::STGI | intercept::CLGI | intercept::SKINIT,
    );
    // page-aligned statics; identity-mapped, so their addresses are physical
    v.w64(off::IOPM_BASE, core::ptr::addr_of!(IOPM) as u64);
    v.w64(off::MSRPM_BASE, core::ptr::addr_of!(MSRPM) as u64);
    v.w32(off::ASID, 1);
    v.0[off::TLB_CONTROL] = 1;
    v.w64(off::NP_ENABLE, 1);
    v.w64(off::N_CR3, root);

    let gdt = cpu::sgdt();
    let idt = cpu::sidt();
    for (o, sel) in [(off::ES, cpu::es()), (off::CS, cpu::cs()), (off::SS, cpu::ss()), (off::DS, cpu::ds())] {
        let (attrib, limit, base) = crate::vmcb::gdt_segment(gdt.base, sel);
        v.seg(o, sel, attrib, limit, base);
    }
    v.seg(off::GDTR, 0, 0, gdt.limit as u32, gdt.base);
    v.seg(off::IDTR, 0, 0, idt.limit as u32, idt.base);
    v.0[off::CPL] = 0;
    v.w64(off::EFER, efer | cpu::EFER_SVME);
    v.w64(off::CR0, cpu::cr0());
    v.w64(off::CR2, cpu::cr2());
    v.w64(off::CR3, linux.cr3);
    v.w64(off::CR4, cpu::cr4());
    v.w64(off::DR7, 0x400);
    v.w64(off::DR6, 0xffff_0ff0);
    v.w64(off::RFLAGS, 0x2);
    v.w64(off::RIP, linux.rip);
    v.w64(off::RSP, linux.rsp);
    v.w64(off::RAX, 0);
    v.w64(off::G_PAT, cpu::rdmsr(cpu::MSR_PAT));
    pc.regs = GuestRegs::default();
    pc.launched = true;
    LAUNCHED.fetch_add(1, Ordering::SeqCst);

    // From here the host runs on its own GDT/IDT (saved as host state by VMRUN).
    host::load_tables();
    let (hg, hi) = (cpu::sgdt(), cpu::sidt());
    let (hg_base, hi_base) = (hg.base, hi.base);
    log!(
        "cpu{}: VMRUN rip {:#x} rsp {:#x} cr3 {:#x} nCR3 {:#x}; host GDT {:#x} IDT {:#x}, leave CR3 {:#x}",
        cpu, linux.rip, linux.rsp, linux.cr3, root, hg_base, hi_base, host::leave_cr3()
    );
    run(pc, cpu);
    // only reached when the first VMRUN was refused
    host::restore_linux_tables(gdt, idt);
    pc.launched = false;
    LAUNCHED.fetch_sub(1, Ordering::SeqCst);
    cpu::stgi();
    cpu::wrmsr(cpu::MSR_EFER, efer);
    -3
}

fn inject(v: &mut Vmcb, vector: u8, error_code: Option<u32>) {
    let mut e = vector as u64 | (3 << 8) | (1 << 31);
    if let Some(c) = error_code {
        e |= (1 << 11) | ((c as u64) << 32);
    }
    v.w64(off::EVENTINJ, e);
}

fn skip(v: &mut Vmcb, len: u64) {
    let rip = v.r64(off::RIP);
    v.w64(off::RIP, rip + len);
}

/// The exit loop. Returns only if the very first VMRUN is refused.
fn run(pc: &mut PerCpu, cpu: usize) {
    let vmcb_pa = &pc.vmcb as *const Vmcb as u64;
    let fx = crate::fx_area(cpu);
    let mut first = true;
    loop {
        // SAFETY: VMCB, register block and FX area belong to this CPU and stay valid.
        unsafe { entry::he_vmrun(vmcb_pa, &mut pc.regs, fx) };
        pc.exits += 1;
        let v = &mut pc.vmcb;
        let code = v.r64(off::EXITCODE);
        if first {
            first = false;
            v.0[off::TLB_CONTROL] = 0;
            if code == exit::INVALID {
                log!("cpu{}: VMRUN refused (VMEXIT_INVALID): guest state rejected", cpu);
                return;
            }
            log!("cpu{}: running as guest, first exit {:#x}", cpu, code);
        }
        v.w64(off::EVENTINJ, 0);
        let pending = v.r64(off::EXITINTINFO);
        if pending & (1 << 31) != 0 {
            v.w64(off::EVENTINJ, pending);
        }
        match code {
            exit::CPUID => crate::cpuid_exit(pc),
            exit::MSR => msr_exit(pc, cpu),
            exit::VMMCALL => crate::hypercall_exit(pc, cpu),
            exit::NPF => {
                let err = v.r64(off::EXITINFO1);
                let gpa = v.r64(off::EXITINFO2);
                let access = if err & 0x10 != 0 {
                    Access::Execute
                } else if err & 0x2 != 0 {
                    Access::Write
                } else {
                    Access::Read
                };
                crate::nested_fault_exit(pc, cpu, gpa, access)
            }
            exit::VMRUN | exit::VMLOAD | exit::VMSAVE | exit::STGI | exit::CLGI | exit::SKINIT => inject(v, 6, None),
            exit::SHUTDOWN => {
                log!("cpu{}: guest shutdown (triple fault) at rip {:#x}", cpu, v.r64(off::RIP));
                cpu::halt_forever();
            }
            other => {
                log!("cpu{}: unexpected exit {:#x} info1 {:#x} info2 {:#x}", cpu, other, v.r64(off::EXITINFO1), v.r64(off::EXITINFO2));
                cpu::halt_forever();
            }
        }
    }
}

fn msr_exit(pc: &mut PerCpu, cpu: usize) {
    let v = &mut pc.vmcb;
    let msr = pc.regs.rcx as u32;
    let write = v.r64(off::EXITINFO1) & 1 == 1;
    if write {
        let value = (pc.regs.rdx << 32) | (v.r64(off::RAX) & 0xffff_ffff);
        match msr {
            cpu::MSR_EFER => v.w64(off::EFER, value | cpu::EFER_SVME), // SVME stays on under us
            cpu::MSR_VM_HSAVE_PA => log!("cpu{}: guest write of VM_HSAVE_PA ({:#x}) ignored", cpu, value),
            _ => cpu::wrmsr(msr, value),
        }
    } else {
        let value = match msr {
            cpu::MSR_VM_HSAVE_PA => 0,
            _ => cpu::rdmsr(msr),
        };
        v.w64(off::RAX, value & 0xffff_ffff);
        pc.regs.rdx = value >> 32;
    }
    skip(v, 2);
}

impl Vcpu for PerCpu {
    fn rax(&self) -> u64 {
        self.vmcb.r64(off::RAX)
    }
    fn set_rax(&mut self, v: u64) {
        self.vmcb.w64(off::RAX, v)
    }
    fn regs(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }
    fn rip(&self) -> u64 {
        self.vmcb.r64(off::RIP)
    }
    fn advance(&mut self) {
        // CPUID is 2 bytes, VMMCALL 3 (the only instructions advanced over); SVM has no
        // instruction length without decode assists, so the exit code says which.
        let len = if self.vmcb.r64(off::EXITCODE) == exit::CPUID { 2 } else { 3 };
        skip(&mut self.vmcb, len)
    }
    fn inject(&mut self, vector: u8, error_code: Option<u32>) {
        inject(&mut self.vmcb, vector, error_code)
    }
    fn fault_tracker(&mut self) -> (&mut u64, &mut u32) {
        (&mut self.npf_last, &mut self.npf_repeat)
    }
    fn hide_virtualization(leaf: u32, r: &mut [u32; 4]) {
        if leaf == 0x8000_0001 {
            r[2] &= !(1 << 2); // SVM
        }
    }
    fn leave(&mut self, cpu: usize) -> ! {
        let pc = self;
        let fx = crate::fx_area(cpu);
        let v = &pc.vmcb;
        let frame = LeaveFrame {
            cr3: v.r64(off::CR3),
            rsp: v.r64(off::RSP),
            rip: v.r64(off::RIP) + 3,
            rflags: v.r64(off::RFLAGS),
            rax: 0,
            // SAFETY: written once by INIT.
            tramp: unsafe { LEAVE_TRAMP },
            leave_cr3: host::leave_cr3(),
        };
        let linux_table = |o: usize| cpu::DescTable { limit: v.r64(o + 4) as u32 as u16, base: v.r64(o + 8) };
        let (gdt, idt) = (linux_table(off::GDTR), linux_table(off::IDTR));
        let efer = v.r64(off::EFER) & !cpu::EFER_SVME;
        cpu::write_cr0(v.r64(off::CR0));
        cpu::write_cr4(v.r64(off::CR4));
        pc.launched = false;
        log!("cpu{}: handed back to Linux after {} exits", cpu, pc.exits);
        cpu::stgi();
        cpu::wrmsr(cpu::MSR_EFER, efer);
        host::restore_linux_tables(gdt, idt);
        // SAFETY: frame and registers describe the guest exactly as it trapped.
        unsafe { entry::he_leave(&frame, &pc.regs, fx) }
    }
}

/// INIT: the MSR permission map (2 bits per MSR, read then write; 0xc0000000.. at 0x800,
/// 0xc0010000.. at 0x1000): writes of EFER and both directions of VM_HSAVE_PA exit.
pub fn init() {
    // SAFETY: single writer (INIT runs before any LAUNCH); a page-aligned static.
    unsafe {
        let m = &mut *core::ptr::addr_of_mut!(MSRPM);
        let efer = 0x800 + (0x80 * 2) / 8;
        m.0[efer] |= 1 << ((0x80 * 2) % 8 + 1);
        let hsave = 0x1000 + (0x117 * 2) / 8;
        m.0[hsave] |= 3 << ((0x117 * 2) % 8);
    }
}

#[repr(C, align(4096))]
struct AllOnes<const N: usize>([u8; N]);
// Enclave threads: every port and every MSR intercepted.
static mut THREAD_IOPM: AllOnes<12288> = AllOnes([0xff; 12288]);
static mut THREAD_MSRPM: AllOnes<8192> = AllOnes([0xff; 8192]);

/// An enclave thread's guest: its own VMCB (ASID 2 + slot; Linux runs with ASID 1). Slots
/// beyond the CPU's ASIDs share its last ASID and flush the TLB at every entry.
#[repr(C, align(4096))]
pub struct ThreadVm {
    vmcb: Vmcb,
    shared_asid: bool,
    /// The thread's FS / GS base and KERNEL_GS_BASE: VMRUN does not switch them (VMLOAD would),
    /// so `run` loads them into the MSRs around VMRUN and gives Linux's back afterwards.
    fs_base: u64,
    gs_base: u64,
    kernel_gs_base: u64,
}

impl ThreadVm {
    pub const INIT: ThreadVm = ThreadVm { vmcb: Vmcb([0; 4096]), shared_asid: false, fs_base: 0, gs_base: 0, kernel_gs_base: 0 };
}

impl EnclaveVcpu for ThreadVm {
    fn setup(&mut self, slot: usize, fresh: bool, rip: u64, cr3: u64, nested_pointer: u64, fs_base: u64, gs_base: u64) {
        self.fs_base = fs_base;
        self.gs_base = gs_base;
        self.kernel_gs_base = 0;
        let v = &mut self.vmcb;
        v.0.fill(0);
        v.w32(off::INTERCEPT_EXCEPTIONS, 0xffff_ffff);
        v.w32(off::INTERCEPT_MISC1, intercept::INTR | intercept::NMI | intercept::CPUID | intercept::HLT | intercept::IOIO_PROT | intercept::MSR_PROT | intercept::SHUTDOWN);
        v.w32(
            off::INTERCEPT_MISC2,
            intercept::VMRUN | intercept::VMMCALL | intercept::VMLOAD | intercept::VMSAVE | intercept::STGI | intercept::CLGI | intercept::SKINIT,
        );
        v.w64(off::IOPM_BASE, core::ptr::addr_of!(THREAD_IOPM) as u64);
        v.w64(off::MSRPM_BASE, core::ptr::addr_of!(THREAD_MSRPM) as u64);
        // Linux runs with ASID 1; CPUID 8000_000A EBX = the number of ASIDs (1..n-1 usable)
        let nasid = crate::cpu::cpuid(0x8000_000a, 0)[1] as u64;
        self.shared_asid = 2 + slot as u64 >= nasid.saturating_sub(1);
        let asid = if self.shared_asid { nasid.saturating_sub(1).max(2) } else { 2 + slot as u64 };
        v.w32(off::ASID, asid as u32);
        v.0[off::TLB_CONTROL] = if fresh || self.shared_asid { 1 } else { 0 };
        v.w64(off::V_INTR, V_INTR_MASKING);
        v.w64(off::NP_ENABLE, 1);
        v.w64(off::N_CR3, nested_pointer);
        // 64-bit ring-0 flat segments (attributes: type, S, DPL, P, AVL, L, DB, G)
        let code = 0xb | 0x10 | 0x80 | 0x200 | 0x800;
        let data = 0x3 | 0x10 | 0x80 | 0x400 | 0x800;
        v.seg(off::CS, 0x08, code, 0xffff_ffff, 0);
        for o in [off::ES, off::SS, off::DS] {
            v.seg(o, 0x10, data, 0xffff_ffff, 0);
        }
        v.0[off::CPL] = 0;
        v.w64(off::EFER, 0x100 | 0x400 | 0x800 | 0x1000); // LME, LMA, NXE, SVME
        v.w64(off::CR0, 0x8001_0033); // PG, WP, NE, ET, MP, PE
        v.w64(off::CR4, 0x20 | 0x200 | 0x400); // PAE, OSFXSR, OSXMMEXCPT
        v.w64(off::CR3, cr3);
        v.w64(off::DR7, 0x400);
        v.w64(off::DR6, 0xffff_0ff0);
        v.w64(off::RFLAGS, 0x2);
        v.w64(off::RIP, rip);
        v.w64(off::RSP, 0);
        v.w64(off::RAX, 0);
        v.w64(off::G_PAT, 0x0007_0406_0007_0406);
    }

    fn run(&mut self, regs: &mut GuestRegs, fx: *mut u8) -> EnclaveExit {
        if self.shared_asid {
            self.vmcb.0[off::TLB_CONTROL] = 1;
        }
        let vmcb_pa = &self.vmcb as *const Vmcb as u64;
        // Host IF=1 while the enclave runs, so an interrupt exits (V_INTR_MASKING); GIF is 0
        // here (after the caller's #VMEXIT), so the host itself never takes one.
        // SAFETY: this CPU owns the thread; GIF=0 keeps sti from delivering anything to the host.
        let linux = (cpu::rdmsr(cpu::MSR_FS_BASE), cpu::rdmsr(cpu::MSR_GS_BASE), cpu::rdmsr(cpu::MSR_KERNEL_GS_BASE));
        cpu::wrmsr(cpu::MSR_FS_BASE, self.fs_base);
        cpu::wrmsr(cpu::MSR_GS_BASE, self.gs_base);
        cpu::wrmsr(cpu::MSR_KERNEL_GS_BASE, self.kernel_gs_base);
        unsafe {
            core::arch::asm!("sti", options(nomem, nostack));
            entry::he_vmrun(vmcb_pa, regs, fx);
            core::arch::asm!("cli", options(nomem, nostack));
        }
        // the thread may have swapped GS (SWAPGS is not intercepted): keep what it left
        self.fs_base = cpu::rdmsr(cpu::MSR_FS_BASE);
        self.gs_base = cpu::rdmsr(cpu::MSR_GS_BASE);
        self.kernel_gs_base = cpu::rdmsr(cpu::MSR_KERNEL_GS_BASE);
        cpu::wrmsr(cpu::MSR_FS_BASE, linux.0);
        cpu::wrmsr(cpu::MSR_GS_BASE, linux.1);
        cpu::wrmsr(cpu::MSR_KERNEL_GS_BASE, linux.2);
        let v = &mut self.vmcb;
        v.0[off::TLB_CONTROL] = 0;
        let code = v.r64(off::EXITCODE);
        match code {
            exit::IOIO => {
                let info = v.r64(off::EXITINFO1);
                EnclaveExit::Io { port: (info >> 16) as u16, input: info & 1 == 1, next: v.r64(off::EXITINFO2) }
            }
            exit::INTR | exit::NMI => EnclaveExit::Interrupt,
            c if (exit::EXCP_BASE..exit::EXCP_BASE + 32).contains(&c) => {
                EnclaveExit::Exception { vector: c - exit::EXCP_BASE, info: (v.r64(off::EXITINFO1), v.r64(off::EXITINFO2)) }
            }
            exit::NPF => {
                // EXITINFO1 low bits are #PF-style: P, W, U, RSV, I/D (the enclave runs at CPL 0)
                let info = v.r64(off::EXITINFO1);
                EnclaveExit::NestedFault { gpa: v.r64(off::EXITINFO2), info, pf_error: (info & 0x13) as u32 }
            }
            exit::HLT => EnclaveExit::Hlt,
            exit::INVALID => EnclaveExit::Invalid(code),
            other => EnclaveExit::Other(other),
        }
    }
    fn rax(&self) -> u64 {
        self.vmcb.r64(off::RAX)
    }
    fn set_rax(&mut self, v: u64) {
        self.vmcb.w64(off::RAX, v)
    }
    fn rip(&self) -> u64 {
        self.vmcb.r64(off::RIP)
    }
    fn set_rip(&mut self, v: u64) {
        self.vmcb.w64(off::RIP, v)
    }
    fn rsp(&self) -> u64 {
        self.vmcb.r64(off::RSP)
    }
    fn set_rsp(&mut self, v: u64) {
        self.vmcb.w64(off::RSP, v)
    }
    fn rflags(&self) -> u64 {
        self.vmcb.r64(off::RFLAGS)
    }
    fn set_rflags(&mut self, v: u64) {
        self.vmcb.w64(off::RFLAGS, v)
    }
    fn seg_bases(&self) -> (u64, u64) {
        (self.fs_base, self.gs_base)
    }
    fn flush_tlb(&mut self) {
        self.vmcb.0[off::TLB_CONTROL] = 1;
    }
}
