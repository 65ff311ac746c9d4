//! The Intel VMX backend (SDM vol. 3C, chapters 24-31): VMXON per CPU, a VMCS filled from the
//! live CPU (the same capture as the SVM path), EPT with the core's identity map minus the
//! reservation, VMLAUNCH/VMRESUME; the exit loop decodes exit reasons into the neutral handlers of
//! main.rs (vcpu::Vcpu). Vendor-specific here: XSETBV (unconditional exit, executed for the
//! guest), CR3 accesses (only if the CPU cannot clear CR3 exiting), RDMSR/WRMSR outside the
//! MSR-bitmap ranges (#GP), VMX instructions (#UD), the hand-back (VMCLEAR, VMXOFF, CR4.VMXE
//! cleared, the MSRs VM exit switched restored). Enclave threads: `ThreadVm`, a second VMCS with
//! the enclave's EPT, cleared after every run so a thread can continue on another CPU.
//!
//! Not switched by VM exit and so left live for Linux: KERNEL_GS_BASE, STAR/LSTAR/CSTAR/FMASK,
//! FPU/SSE (saved around every exit by the entry stub). Switched and restored at hand-back:
//! FS/GS base, SYSENTER_*, PAT, EFER, GDTR/IDTR. TR keeps Linux's selector and base, but VM exit
//! sets its limit to 0x67: after a hand-back the TSS limit covers no I/O bitmap until Linux
//! reloads TR (only a process using ioperm() would notice, with #GP on its port accesses).

use core::arch::{asm, global_asm};
use core::sync::atomic::Ordering;

use crate::entry::{self, GuestRegs, LeaveFrame};
use crate::handoff::LinuxState;
use crate::vcpu::{EnclaveExit, EnclaveVcpu, Vcpu};
use crate::vmcs::{self, ctl, f, msr, reason, Region, AR_UNUSABLE, CR4_VMXE};
use crate::{cpu, host, lock, unlock, Console, HV, LAUNCHED, LEAVE_TRAMP, LOCK, PRINT};
use core::fmt::Write;
use hyperenclave_core::{Access, Format};

pub const PAGING: Format = Format::Ept;
pub const TABLES: &str = "EPT";

/// Guest registers for the VMX entry stub: the SVM layout (he_leave reads it) then RAX, which
/// VMX does not keep in the VMCS.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct VmxRegs {
    pub g: GuestRegs,
    pub rax: u64,
}

extern "C" {
    /// Enters the current VMCS (VMRESUME if `launched`, else VMLAUNCH) with `regs` and the FPU
    /// state at `fx`; returns 0 after a VM exit (registers and FPU state saved back), 1 if the
    /// instruction failed (VMfail: see VM_INSTR_ERROR).
    fn he_vmx_run(regs: *mut VmxRegs, fx: *mut u8, launched: u64) -> u64;
}

global_asm!(
    ".text",
    ".global he_vmx_run",
    "he_vmx_run:",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    push rdi",
    "    push rsi",
    "    fxrstor [rsi]",
    "    mov rax, {host_rsp}",
    "    vmwrite rax, rsp",
    "    lea rbx, [rip + he_vmx_exit]",
    "    mov rax, {host_rip}",
    "    vmwrite rax, rbx",
    "    test rdx, rdx", // the flags survive the moves below
    "    mov rax, [rdi + 112]",
    "    mov rbx, [rdi + 0]",
    "    mov rcx, [rdi + 8]",
    "    mov rdx, [rdi + 16]",
    "    mov rsi, [rdi + 24]",
    "    mov rbp, [rdi + 40]",
    "    mov r8, [rdi + 48]",
    "    mov r9, [rdi + 56]",
    "    mov r10, [rdi + 64]",
    "    mov r11, [rdi + 72]",
    "    mov r12, [rdi + 80]",
    "    mov r13, [rdi + 88]",
    "    mov r14, [rdi + 96]",
    "    mov r15, [rdi + 104]",
    "    mov rdi, [rdi + 32]",
    "    jnz 2f",
    "    vmlaunch",
    "    jmp 3f",
    "2:  vmresume",
    "3:  pop rsi", // VMfail: nothing ran
    "    pop rdi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    mov eax, 1",
    "    ret",
    // VM exit: RSP = HOST_RSP (fx area at [rsp], register block at [rsp + 8]), RFLAGS = 2.
    "he_vmx_exit:",
    "    push rdi",
    "    mov rdi, [rsp + 16]",
    "    mov [rdi + 112], rax",
    "    mov [rdi + 0], rbx",
    "    mov [rdi + 8], rcx",
    "    mov [rdi + 16], rdx",
    "    mov [rdi + 24], rsi",
    "    mov [rdi + 40], rbp",
    "    mov [rdi + 48], r8",
    "    mov [rdi + 56], r9",
    "    mov [rdi + 64], r10",
    "    mov [rdi + 72], r11",
    "    mov [rdi + 80], r12",
    "    mov [rdi + 88], r13",
    "    mov [rdi + 96], r14",
    "    mov [rdi + 104], r15",
    "    pop rax",
    "    mov [rdi + 32], rax",
    "    pop rsi",
    "    fxsave [rsi]",
    "    pop rdi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    xor eax, eax",
    "    ret",
    host_rsp = const f::HOST_RSP,
    host_rip = const f::HOST_RIP,
);

#[repr(C, align(4096))]
pub struct PerCpu {
    vmxon: Region,
    vmcs: Region,
    regs: VmxRegs,
    /// VMLAUNCH done (the next entry is VMRESUME).
    launched: bool,
    /// Linux's CR4 before VMXE was set (restored if the launch fails).
    cr4_before: u64,
    npf_last: u64,
    npf_repeat: u32,
    exits: u64,
}


/// Linux's MSR bitmap: all zero, no RDMSR/WRMSR in the bitmap ranges exits (the MSRs the VMCS
/// switches are the guest's own while it runs; CPUID hides VMX, so Linux does not use it).
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut MSR_BITMAP: Page = Page([0; 4096]);

pub fn init() {}

/// Why VMX cannot run here, or Ok: CPUID.1:ECX.VMX, IA32_FEATURE_CONTROL (locked without VMX
/// outside SMX = disabled by firmware; unlocked = we enable and lock it, as Linux's own
/// init_ia32_feat_ctl does), and the EPT features the core's tables use.
fn check_vmx() -> Result<(), &'static str> {
    if cpu::cpuid(1, 0)[2] & (1 << 5) == 0 {
        return Err("CPUID.1:ECX.VMX is 0");
    }
    let fc = cpu::rdmsr(msr::FEATURE_CONTROL);
    if fc & vmcs::FC_LOCK != 0 {
        if fc & vmcs::FC_VMX_OUTSIDE_SMX == 0 {
            return Err("IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled");
        }
    } else {
        cpu::wrmsr(msr::FEATURE_CONTROL, fc | vmcs::FC_LOCK | vmcs::FC_VMX_OUTSIDE_SMX);
    }
    let procs = cpu::rdmsr(msr::VMX_PROCBASED) >> 32;
    if procs & (ctl::SECONDARY as u64) == 0 || (cpu::rdmsr(msr::VMX_PROCBASED2) >> 32) & (ctl::EPT as u64) == 0 {
        return Err("no EPT (secondary controls)");
    }
    let cap = cpu::rdmsr(msr::VMX_EPT_VPID_CAP);
    for (bit, what) in [(6, "4-level EPT walks"), (14, "write-back EPT structures"), (16, "2 MiB EPT pages"), (17, "1 GiB EPT pages"), (20, "INVEPT"), (26, "INVEPT all-context")] {
        if cap & (1 << bit) == 0 {
            return Err(what);
        }
    }
    Ok(())
}

fn set_segment(i: u32, sel: u16, ar: u32, limit: u32, base: u64) {
    vmcs::write(f::GUEST_ES_SEL + 2 * i, sel as u64);
    vmcs::write(f::GUEST_ES_AR + 2 * i, ar as u64);
    vmcs::write(f::GUEST_ES_LIMIT + 2 * i, limit as u64);
    vmcs::write(f::GUEST_ES_BASE + 2 * i, base);
}

/// A segment of the live CPU from its GDT descriptor (null selectors are unusable).
fn live_segment(i: u32, gdt_base: u64, sel: u16, base_override: Option<u64>) {
    if sel & !3 == 0 {
        set_segment(i, sel, AR_UNUSABLE, 0, base_override.unwrap_or(0));
        return;
    }
    let (attrib, limit, base) = crate::vmcb::gdt_segment(gdt_base, sel);
    set_segment(i, sel, vmcs::ar_from_packed(attrib), limit, base_override.unwrap_or(base));
}

/// The 16-byte system descriptor (TSS/LDT) at `sel`: (AR, limit, 64-bit base).
fn system_segment(gdt_base: u64, sel: u16) -> (u32, u32, u64) {
    let (attrib, limit, base) = crate::vmcb::gdt_segment(gdt_base, sel);
    // SAFETY: the upper half of a system descriptor in Linux's GDT, mapped like the lower half.
    let hi = unsafe { core::ptr::read_volatile((gdt_base + (sel & !7) as u64 + 8) as *const u64) };
    (vmcs::ar_from_packed(attrib), limit, base | ((hi & 0xffff_ffff) << 32))
}

pub fn launch(cpu: usize, linux: &LinuxState) -> i64 {
    if let Err(why) = check_vmx() {
        log!("cpu{}: VMX unusable: {}", cpu, why);
        return -5;
    }
    let pc = crate::percpu_state(cpu);
    // SAFETY: this CPU's own state in its area (not zeroed by the driver); all-zero is a valid PerCpu.
    unsafe { core::ptr::write_bytes(pc as *mut PerCpu, 0, 1) };
    let eptp = {
        lock(&LOCK);
        // SAFETY: under LOCK.
        let r = unsafe { (*core::ptr::addr_of!(HV)).as_ref().and_then(|h| h.host_table()).map(|t| t.pointer()) };
        unlock(&LOCK);
        match r {
            Some(r) => r,
            None => return -4,
        }
    };
    let cr0 = cpu::cr0();
    let cr4 = cpu::cr4();
    let (f0, f1) = (cpu::rdmsr(msr::VMX_CR0_FIXED0), cpu::rdmsr(msr::VMX_CR0_FIXED1));
    if cr0 & f0 != f0 || cr0 & !f1 != 0 {
        log!("cpu{}: CR0 {:#x} outside the VMX fixed bits ({:#x}/{:#x})", cpu, cr0, f0, f1);
        return -5;
    }
    pc.cr4_before = cr4;
    let vcr4 = (cr4 | CR4_VMXE | cpu::rdmsr(msr::VMX_CR4_FIXED0)) & cpu::rdmsr(msr::VMX_CR4_FIXED1);
    cpu::write_cr4(vcr4);
    pc.vmxon.prepare();
    if let Err(e) = vmcs::vmxon(pc.vmxon.pa()) {
        cpu::write_cr4(cr4);
        log!("cpu{}: VMXON failed ({:#x})", cpu, e);
        return -3;
    }
    pc.vmcs.prepare();
    if let Err(e) = vmcs::vmclear(pc.vmcs.pa()).and_then(|_| vmcs::vmptrld(pc.vmcs.pa())) {
        vmcs::vmxoff();
        cpu::write_cr4(cr4);
        log!("cpu{}: VMCLEAR/VMPTRLD failed ({:#x})", cpu, e);
        return -3;
    }
    let controls = (|| -> Result<(), (&'static str, u32)> {
        let pin = vmcs::adjust(vmcs::cap(msr::VMX_PINBASED, msr::VMX_TRUE_PINBASED), 0).map_err(|b| ("pin-based", b))?;
        let proc1 = vmcs::adjust(vmcs::cap(msr::VMX_PROCBASED, msr::VMX_TRUE_PROCBASED), ctl::MSR_BITMAPS | ctl::SECONDARY).map_err(|b| ("processor-based", b))?;
        let proc2 = vmcs::adjust_optional(msr::VMX_PROCBASED2, ctl::EPT, ctl::RDTSCP | ctl::INVPCID | ctl::XSAVES).map_err(|b| ("secondary", b))?;
        let exit = vmcs::adjust(
            vmcs::cap(msr::VMX_EXIT, msr::VMX_TRUE_EXIT),
            ctl::EXIT_HOST_64 | ctl::EXIT_SAVE_PAT | ctl::EXIT_LOAD_PAT | ctl::EXIT_SAVE_EFER | ctl::EXIT_LOAD_EFER,
        )
        .map_err(|b| ("exit", b))?;
        let entry = vmcs::adjust(vmcs::cap(msr::VMX_ENTRY, msr::VMX_TRUE_ENTRY), ctl::ENTRY_IA32E | ctl::ENTRY_LOAD_PAT | ctl::ENTRY_LOAD_EFER).map_err(|b| ("entry", b))?;
        vmcs::write(f::PIN_BASED, pin as u64);
        vmcs::write(f::PROC_BASED, proc1 as u64);
        vmcs::write(f::PROC_BASED2, proc2 as u64);
        vmcs::write(f::EXIT_CONTROLS, exit as u64);
        vmcs::write(f::ENTRY_CONTROLS, entry as u64);
        Ok(())
    })();
    if let Err((which, bits)) = controls {
        let _ = vmcs::vmclear(pc.vmcs.pa());
        vmcs::vmxoff();
        cpu::write_cr4(cr4);
        log!("cpu{}: the CPU cannot set the {} controls {:#x}", cpu, which, bits);
        return -5;
    }
    vmcs::write(f::EXCEPTION_BITMAP, 0);
    vmcs::write(f::CR3_TARGET_COUNT, 0);
    vmcs::write(f::EXIT_MSR_STORE_COUNT, 0);
    vmcs::write(f::EXIT_MSR_LOAD_COUNT, 0);
    vmcs::write(f::ENTRY_MSR_LOAD_COUNT, 0);
    vmcs::write(f::ENTRY_INTR_INFO, 0);
    vmcs::write(f::MSR_BITMAP, core::ptr::addr_of!(MSR_BITMAP) as u64);
    vmcs::write(f::EPT_POINTER, eptp);
    // CR4.VMXE belongs to us: the guest reads it as 0 and cannot change it.
    vmcs::write(f::CR0_MASK, 0);
    vmcs::write(f::CR0_SHADOW, cr0);
    vmcs::write(f::CR4_MASK, CR4_VMXE);
    vmcs::write(f::CR4_SHADOW, cr4 & !CR4_VMXE);

    // Guest state: the live CPU (Linux) at the point it called us.
    let gdt = cpu::sgdt();
    let idt = cpu::sidt();
    let (gdt_base, idt_base) = (gdt.base, idt.base);
    let fs_base = cpu::rdmsr(msr::FS_BASE);
    let gs_base = cpu::rdmsr(msr::GS_BASE);
    live_segment(vmcs::SEG_ES, gdt_base, cpu::es(), None);
    live_segment(vmcs::SEG_CS, gdt_base, cpu::cs(), None);
    live_segment(vmcs::SEG_SS, gdt_base, cpu::ss(), None);
    live_segment(vmcs::SEG_DS, gdt_base, cpu::ds(), None);
    live_segment(vmcs::SEG_FS, gdt_base, cpu::fs(), Some(fs_base));
    live_segment(vmcs::SEG_GS, gdt_base, cpu::gs(), Some(gs_base));
    let ldtr = cpu::ldtr();
    if ldtr & !3 == 0 {
        set_segment(vmcs::SEG_LDTR, ldtr, AR_UNUSABLE, 0, 0);
    } else {
        let (ar, limit, base) = system_segment(gdt_base, ldtr);
        set_segment(vmcs::SEG_LDTR, ldtr, ar, limit, base);
    }
    let tr = cpu::tr();
    let (tr_ar, tr_limit, tr_base) = system_segment(gdt_base, tr);
    set_segment(vmcs::SEG_TR, tr, tr_ar, tr_limit, tr_base);
    vmcs::write(f::GUEST_GDTR_BASE, gdt_base);
    vmcs::write(f::GUEST_GDTR_LIMIT, gdt.limit as u64);
    vmcs::write(f::GUEST_IDTR_BASE, idt_base);
    vmcs::write(f::GUEST_IDTR_LIMIT, idt.limit as u64);
    vmcs::write(f::GUEST_CR0, cr0);
    vmcs::write(f::GUEST_CR3, linux.cr3);
    vmcs::write(f::GUEST_CR4, vcr4);
    vmcs::write(f::GUEST_DR7, 0x400);
    vmcs::write(f::GUEST_RSP, linux.rsp);
    vmcs::write(f::GUEST_RIP, linux.rip);
    vmcs::write(f::GUEST_RFLAGS, 0x2);
    vmcs::write(f::GUEST_SYSENTER_CS, cpu::rdmsr(msr::SYSENTER_CS));
    vmcs::write(f::GUEST_SYSENTER_ESP, cpu::rdmsr(msr::SYSENTER_ESP));
    vmcs::write(f::GUEST_SYSENTER_EIP, cpu::rdmsr(msr::SYSENTER_EIP));
    vmcs::write(f::GUEST_DEBUGCTL, 0);
    vmcs::write(f::GUEST_PAT, cpu::rdmsr(cpu::MSR_PAT));
    vmcs::write(f::GUEST_EFER, cpu::rdmsr(cpu::MSR_EFER));
    vmcs::write(f::LINK_POINTER, u64::MAX);
    vmcs::write(f::GUEST_ACTIVITY, 0);
    vmcs::write(f::GUEST_INTERRUPTIBILITY, 0);
    vmcs::write(f::GUEST_PENDING_DBG, 0);

    // Host state: the image's own GDT/IDT, the host page tables, Linux's TSS (never used by
    // the host: it takes no interrupts and its exception gates do not switch stacks).
    host::load_tables();
    let (hg, hi) = (cpu::sgdt(), cpu::sidt());
    let (hg_base, hi_base) = (hg.base, hi.base);
    write_host_state(tr, tr_base, fs_base, gs_base, hg_base, hi_base);
    vmcs::invept_all();

    pc.regs = VmxRegs::default();
    pc.launched = false;
    LAUNCHED.fetch_add(1, Ordering::SeqCst);
    log!(
        "cpu{}: VMLAUNCH rip {:#x} rsp {:#x} cr3 {:#x} EPTP {:#x}; host GDT {:#x} IDT {:#x}, leave CR3 {:#x}",
        cpu, linux.rip, linux.rsp, linux.cr3, eptp, hg_base, hi_base, host::leave_cr3()
    );
    run(pc, cpu);
    // only reached when the first VMLAUNCH failed
    LAUNCHED.fetch_sub(1, Ordering::SeqCst);
    let _ = vmcs::vmclear(pc.vmcs.pa());
    vmcs::vmxoff();
    cpu::write_cr4(pc.cr4_before);
    host::restore_linux_tables(gdt, idt);
    -3
}

fn write_host_state(tr: u16, tr_base: u64, fs_base: u64, gs_base: u64, gdt_base: u64, idt_base: u64) {
    vmcs::write(f::HOST_CR0, cpu::cr0());
    vmcs::write(f::HOST_CR3, cpu::cr3());
    vmcs::write(f::HOST_CR4, cpu::cr4());
    vmcs::write(f::HOST_CS_SEL, 0x10);
    vmcs::write(f::HOST_SS_SEL, 0x18);
    for s in [f::HOST_ES_SEL, f::HOST_DS_SEL, f::HOST_FS_SEL, f::HOST_GS_SEL] {
        vmcs::write(s, 0);
    }
    vmcs::write(f::HOST_TR_SEL, (tr & !7) as u64);
    vmcs::write(f::HOST_TR_BASE, tr_base);
    vmcs::write(f::HOST_FS_BASE, fs_base);
    vmcs::write(f::HOST_GS_BASE, gs_base);
    vmcs::write(f::HOST_GDTR_BASE, gdt_base);
    vmcs::write(f::HOST_IDTR_BASE, idt_base);
    vmcs::write(f::HOST_SYSENTER_CS, cpu::rdmsr(msr::SYSENTER_CS));
    vmcs::write(f::HOST_SYSENTER_ESP, cpu::rdmsr(msr::SYSENTER_ESP));
    vmcs::write(f::HOST_SYSENTER_EIP, cpu::rdmsr(msr::SYSENTER_EIP));
    vmcs::write(f::HOST_PAT, cpu::rdmsr(cpu::MSR_PAT));
    vmcs::write(f::HOST_EFER, cpu::rdmsr(cpu::MSR_EFER));
}

fn inject_event(vector: u8, error_code: Option<u32>) {
    let mut info = vector as u64 | (3 << 8) | (1 << 31); // hardware exception, valid
    if let Some(c) = error_code {
        info |= 1 << 11;
        vmcs::write(f::ENTRY_EXCEPTION_ERR, c as u64);
    }
    vmcs::write(f::ENTRY_INTR_INFO, info);
}

/// The exit loop. Returns only if the very first VMLAUNCH fails.
fn run(pc: &mut PerCpu, cpu: usize) {
    let fx = crate::fx_area(cpu);
    loop {
        // SAFETY: the current VMCS, register block and FX area belong to this CPU.
        let failed = unsafe { he_vmx_run(&mut pc.regs, fx, pc.launched as u64) };
        if failed != 0 {
            let err = vmcs::read(f::VM_INSTR_ERROR);
            if !pc.launched {
                log!("cpu{}: VMLAUNCH failed (VM-instruction error {})", cpu, err);
                return;
            }
            log!("cpu{}: VMRESUME failed (VM-instruction error {}): this CPU halts", cpu, err);
            cpu::halt_forever();
        }
        pc.exits += 1;
        let exit_reason = vmcs::read(f::EXIT_REASON) as u32;
        if exit_reason & (1 << 31) != 0 {
            log!(
                "cpu{}: VM entry failed: reason {} qualification {:#x}{}",
                cpu,
                exit_reason & 0xffff,
                vmcs::read(f::EXIT_QUALIFICATION),
                if pc.launched { ": this CPU halts" } else { "" }
            );
            if !pc.launched {
                return;
            }
            cpu::halt_forever();
        }
        if !pc.launched {
            pc.launched = true;
            log!("cpu{}: running as guest (VMX non-root), first exit reason {}", cpu, exit_reason & 0xffff);
        }
        // an event whose delivery the exit interrupted is delivered again
        let idt = vmcs::read(f::IDT_VECTORING_INFO);
        if idt & (1 << 31) != 0 {
            vmcs::write(f::ENTRY_INTR_INFO, idt & !(1 << 12));
            if idt & (1 << 11) != 0 {
                vmcs::write(f::ENTRY_EXCEPTION_ERR, vmcs::read(f::IDT_VECTORING_ERR));
            }
            if matches!((idt >> 8) & 7, 4..=6) {
                vmcs::write(f::ENTRY_INSTR_LEN, vmcs::read(f::EXIT_INSTR_LEN));
            }
        } else {
            vmcs::write(f::ENTRY_INTR_INFO, 0);
        }
        match exit_reason & 0xffff {
            reason::CPUID => crate::cpuid_exit(pc),
            reason::VMCALL => crate::hypercall_exit(pc, cpu),
            reason::EPT_VIOLATION => {
                let q = vmcs::read(f::EXIT_QUALIFICATION);
                let gpa = vmcs::read(f::GUEST_PHYS_ADDR);
                let access = if q & 4 != 0 {
                    Access::Execute
                } else if q & 2 != 0 {
                    Access::Write
                } else {
                    Access::Read
                };
                crate::nested_fault_exit(pc, cpu, gpa, access)
            }
            reason::XSETBV => {
                let (ecx, value) = (pc.regs.g.rcx as u32, (pc.regs.g.rdx << 32) | (pc.regs.rax & 0xffff_ffff));
                if ecx == 0 && value & 1 == 1 && cpu::cr4() & (1 << 18) != 0 {
                    // SAFETY: XCR0 with x87 set, as the guest asked; an unsupported value
                    // would fault in the host, so only bits CPUID.0xd reports are let through.
                    let allowed = { let r = cpu::cpuid(0xd, 0); ((r[3] as u64) << 32) | r[0] as u64 };
                    if value & !allowed == 0 {
                        unsafe { asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack)) };
                        pc.advance();
                    } else {
                        pc.inject(13, Some(0));
                    }
                } else {
                    pc.inject(13, Some(0));
                }
            }
            reason::CR_ACCESS => cr_access(pc, cpu),
            reason::RDMSR | reason::WRMSR => pc.inject(13, Some(0)), // outside the bitmap ranges
            reason::VMCLEAR..=reason::VMXON | reason::INVEPT | reason::INVVPID | reason::VMFUNC | reason::GETSEC => pc.inject(6, None),
            reason::INVD => pc.advance(), // caches stay coherent; nothing to drop
            reason::TRIPLE_FAULT => {
                log!("cpu{}: guest triple fault at rip {:#x}", cpu, vmcs::read(f::GUEST_RIP));
                cpu::halt_forever();
            }
            other => {
                log!(
                    "cpu{}: unexpected exit reason {} qualification {:#x} at rip {:#x}",
                    cpu,
                    other,
                    vmcs::read(f::EXIT_QUALIFICATION),
                    vmcs::read(f::GUEST_RIP)
                );
                cpu::halt_forever();
            }
        }
    }
}

/// MOV to/from CR3 (exits only where the CPU cannot clear CR3-load/store exiting); MOV to CR4
/// exits only when it would set VMXE (the only bit in the CR4 mask): #GP, as on a CPU without VMX.
fn cr_access(pc: &mut PerCpu, cpu: usize) {
    let q = vmcs::read(f::EXIT_QUALIFICATION);
    let (cr, kind, gpr) = (q & 0xf, (q >> 4) & 3, ((q >> 8) & 0xf) as usize);
    if cr == 4 && kind == 0 {
        pc.inject(13, Some(0));
        return;
    }
    if cr != 3 || kind > 1 {
        log!("cpu{}: unexpected control-register access {:#x}: this CPU halts", cpu, q);
        cpu::halt_forever();
    }
    let g = &mut pc.regs;
    let slot: Option<&mut u64> = match gpr {
        0 => Some(&mut g.rax),
        1 => Some(&mut g.g.rcx),
        2 => Some(&mut g.g.rdx),
        3 => Some(&mut g.g.rbx),
        5 => Some(&mut g.g.rbp),
        6 => Some(&mut g.g.rsi),
        7 => Some(&mut g.g.rdi),
        8 => Some(&mut g.g.r8),
        9 => Some(&mut g.g.r9),
        10 => Some(&mut g.g.r10),
        11 => Some(&mut g.g.r11),
        12 => Some(&mut g.g.r12),
        13 => Some(&mut g.g.r13),
        14 => Some(&mut g.g.r14),
        15 => Some(&mut g.g.r15),
        _ => None, // RSP lives in the VMCS
    };
    if kind == 0 {
        let v = match slot {
            Some(r) => *r,
            None => vmcs::read(f::GUEST_RSP),
        };
        vmcs::write(f::GUEST_CR3, v & !(1 << 63)); // bit 63: no-flush hint (PCID); entry flushes anyway
    } else {
        let v = vmcs::read(f::GUEST_CR3);
        match slot {
            Some(r) => *r = v,
            None => vmcs::write(f::GUEST_RSP, v),
        }
    }
    pc.advance();
}

impl Vcpu for PerCpu {
    fn rax(&self) -> u64 {
        self.regs.rax
    }
    fn set_rax(&mut self, v: u64) {
        self.regs.rax = v
    }
    fn regs(&mut self) -> &mut GuestRegs {
        &mut self.regs.g
    }
    fn rip(&self) -> u64 {
        vmcs::read(f::GUEST_RIP)
    }
    fn advance(&mut self) {
        let rip = vmcs::read(f::GUEST_RIP) + vmcs::read(f::EXIT_INSTR_LEN);
        vmcs::write(f::GUEST_RIP, rip);
        let i = vmcs::read(f::GUEST_INTERRUPTIBILITY);
        vmcs::write(f::GUEST_INTERRUPTIBILITY, i & !3); // blocking by STI / MOV SS ends
    }
    fn inject(&mut self, vector: u8, error_code: Option<u32>) {
        inject_event(vector, error_code)
    }
    fn fault_tracker(&mut self) -> (&mut u64, &mut u32) {
        (&mut self.npf_last, &mut self.npf_repeat)
    }
    fn hide_virtualization(leaf: u32, r: &mut [u32; 4]) {
        if leaf == 1 {
            r[2] &= !(1 << 5); // VMX
        }
    }
    fn leave(&mut self, cpu: usize) -> ! {
        let pc = self;
        let fx = crate::fx_area(cpu);
        let frame = LeaveFrame {
            cr3: vmcs::read(f::GUEST_CR3),
            rsp: vmcs::read(f::GUEST_RSP),
            rip: vmcs::read(f::GUEST_RIP) + vmcs::read(f::EXIT_INSTR_LEN),
            rflags: vmcs::read(f::GUEST_RFLAGS),
            rax: 0,
            // SAFETY: written once by INIT.
            tramp: unsafe { LEAVE_TRAMP },
            leave_cr3: host::leave_cr3(),
        };
        let gdt = cpu::DescTable { limit: vmcs::read(f::GUEST_GDTR_LIMIT) as u16, base: vmcs::read(f::GUEST_GDTR_BASE) };
        let idt = cpu::DescTable { limit: vmcs::read(f::GUEST_IDTR_LIMIT) as u16, base: vmcs::read(f::GUEST_IDTR_BASE) };
        let cr0 = vmcs::read(f::GUEST_CR0);
        let cr4 = vmcs::read(f::GUEST_CR4) & !CR4_VMXE;
        let restore = [
            (msr::FS_BASE, vmcs::read(f::GUEST_ES_BASE + 2 * vmcs::SEG_FS)),
            (msr::GS_BASE, vmcs::read(f::GUEST_ES_BASE + 2 * vmcs::SEG_GS)),
            (msr::SYSENTER_CS, vmcs::read(f::GUEST_SYSENTER_CS)),
            (msr::SYSENTER_ESP, vmcs::read(f::GUEST_SYSENTER_ESP)),
            (msr::SYSENTER_EIP, vmcs::read(f::GUEST_SYSENTER_EIP)),
            (cpu::MSR_PAT, vmcs::read(f::GUEST_PAT)),
        ];
        let efer = vmcs::read(f::GUEST_EFER);
        let _ = vmcs::vmclear(pc.vmcs.pa());
        vmcs::vmxoff();
        pc.launched = false;
        cpu::write_cr4(cr4);
        cpu::write_cr0(cr0);
        for (m, v) in restore {
            cpu::wrmsr(m, v);
        }
        if cpu::rdmsr(cpu::MSR_EFER) != efer {
            cpu::wrmsr(cpu::MSR_EFER, efer);
        }
        log!("cpu{}: handed back to Linux after {} exits (VMXOFF)", cpu, pc.exits);
        host::restore_linux_tables(gdt, idt);
        // SAFETY: frame and registers describe the guest exactly as it trapped.
        unsafe { entry::he_leave(&frame, &pc.regs.g, fx) }
    }
}

// ---- enclave threads ---------------------------------------------------------------------

/// An enclave thread's guest: its own VMCS with the enclave's EPT. The VMCS is VMCLEARed after
/// every run (a thread may continue on another CPU) and so entered with VMLAUNCH each time; the
/// fields the host side reads between runs are cached here.
#[repr(C, align(4096))]
pub struct ThreadVm {
    vmcs: Region,
    rax: u64,
    rip: u64,
    rip_dirty: bool,
    rsp: u64,
    rflags: u64,
    /// RSP / RFLAGS written since the last exit (the VMCS is not current between runs).
    sp_flags_dirty: bool,
    need_init: bool,
    fresh: bool,
    setup: (u64, u64, u64),
    bases: (u64, u64),
    kernel_gs_base: u64,
}

impl ThreadVm {
    pub const INIT: ThreadVm = ThreadVm {
        vmcs: Region::new(),
        rax: 0,
        rip: 0,
        rip_dirty: false,
        rsp: 0,
        rflags: 2,
        sp_flags_dirty: false,
        need_init: false,
        fresh: false,
        setup: (0, 0, 0),
        bases: (0, 0),
        kernel_gs_base: 0,
    };

    /// Writes the whole thread state into the (current) thread VMCS.
    fn write_state(&self) -> Result<(), (&'static str, u32)> {
        let (rip, cr3, eptp) = self.setup;
        let pin = vmcs::adjust(vmcs::cap(msr::VMX_PINBASED, msr::VMX_TRUE_PINBASED), ctl::PIN_EXT_INTR | ctl::PIN_NMI).map_err(|b| ("pin-based", b))?;
        let proc1 = vmcs::adjust(vmcs::cap(msr::VMX_PROCBASED, msr::VMX_TRUE_PROCBASED), ctl::HLT | ctl::UNCOND_IO | ctl::SECONDARY).map_err(|b| ("processor-based", b))?;
        let proc2 = vmcs::adjust(msr::VMX_PROCBASED2, ctl::EPT).map_err(|b| ("secondary", b))?;
        let exit = vmcs::adjust(vmcs::cap(msr::VMX_EXIT, msr::VMX_TRUE_EXIT), ctl::EXIT_HOST_64 | ctl::EXIT_LOAD_PAT | ctl::EXIT_LOAD_EFER).map_err(|b| ("exit", b))?;
        let entry = vmcs::adjust(vmcs::cap(msr::VMX_ENTRY, msr::VMX_TRUE_ENTRY), ctl::ENTRY_IA32E | ctl::ENTRY_LOAD_PAT | ctl::ENTRY_LOAD_EFER).map_err(|b| ("entry", b))?;
        vmcs::write(f::PIN_BASED, pin as u64);
        vmcs::write(f::PROC_BASED, proc1 as u64); // no MSR bitmap: every RDMSR/WRMSR exits
        vmcs::write(f::PROC_BASED2, proc2 as u64);
        vmcs::write(f::EXIT_CONTROLS, exit as u64);
        vmcs::write(f::ENTRY_CONTROLS, entry as u64);
        vmcs::write(f::EXCEPTION_BITMAP, 0xffff_ffff);
        vmcs::write(f::CR3_TARGET_COUNT, 0);
        vmcs::write(f::EXIT_MSR_STORE_COUNT, 0);
        vmcs::write(f::EXIT_MSR_LOAD_COUNT, 0);
        vmcs::write(f::ENTRY_MSR_LOAD_COUNT, 0);
        vmcs::write(f::ENTRY_INTR_INFO, 0);
        vmcs::write(f::EPT_POINTER, eptp);
        vmcs::write(f::CR0_MASK, u64::MAX);
        vmcs::write(f::CR4_MASK, u64::MAX);
        // 64-bit ring-0 flat segments
        set_segment(vmcs::SEG_CS, 0x08, 0xa09b, 0xffff_ffff, 0);
        for s in [vmcs::SEG_ES, vmcs::SEG_SS, vmcs::SEG_DS] {
            set_segment(s, 0x10, 0xc093, 0xffff_ffff, 0);
        }
        set_segment(vmcs::SEG_FS, 0x10, 0xc093, 0xffff_ffff, self.bases.0);
        set_segment(vmcs::SEG_GS, 0x10, 0xc093, 0xffff_ffff, self.bases.1);
        set_segment(vmcs::SEG_LDTR, 0, AR_UNUSABLE, 0, 0);
        set_segment(vmcs::SEG_TR, 0x18, 0x8b, 0x67, 0);
        vmcs::write(f::GUEST_GDTR_BASE, 0);
        vmcs::write(f::GUEST_GDTR_LIMIT, 0);
        vmcs::write(f::GUEST_IDTR_BASE, 0);
        vmcs::write(f::GUEST_IDTR_LIMIT, 0);
        let cr0 = 0x8001_0033u64; // PG, WP, NE, ET, MP, PE
        let cr4 = (0x20 | 0x200 | 0x400 | CR4_VMXE | cpu::rdmsr(msr::VMX_CR4_FIXED0)) & cpu::rdmsr(msr::VMX_CR4_FIXED1); // PAE, OSFXSR, OSXMMEXCPT
        vmcs::write(f::CR0_SHADOW, cr0);
        vmcs::write(f::CR4_SHADOW, cr4);
        vmcs::write(f::GUEST_CR0, cr0);
        vmcs::write(f::GUEST_CR3, cr3);
        vmcs::write(f::GUEST_CR4, cr4);
        vmcs::write(f::GUEST_DR7, 0x400);
        vmcs::write(f::GUEST_RSP, 0);
        vmcs::write(f::GUEST_RIP, rip);
        vmcs::write(f::GUEST_RFLAGS, 0x2);
        vmcs::write(f::GUEST_SYSENTER_CS, 0);
        vmcs::write(f::GUEST_SYSENTER_ESP, 0);
        vmcs::write(f::GUEST_SYSENTER_EIP, 0);
        vmcs::write(f::GUEST_DEBUGCTL, 0);
        vmcs::write(f::GUEST_PAT, 0x0007_0406_0007_0406);
        vmcs::write(f::GUEST_EFER, 0x100 | 0x400 | 0x800); // LME, LMA, NXE
        vmcs::write(f::LINK_POINTER, u64::MAX);
        vmcs::write(f::GUEST_ACTIVITY, 0);
        vmcs::write(f::GUEST_INTERRUPTIBILITY, 0);
        vmcs::write(f::GUEST_PENDING_DBG, 0);
        Ok(())
    }
}

/// Host-state fields a thread VMCS takes from the calling CPU's Linux VMCS (per-CPU values:
/// Linux's TSS and GS base, and the entry points and tables, the same everywhere).
const HOST_FIELDS: [u32; 17] = [
    f::HOST_CR0, f::HOST_CR3, f::HOST_CR4, f::HOST_CS_SEL, f::HOST_SS_SEL, f::HOST_DS_SEL, f::HOST_ES_SEL, f::HOST_FS_SEL,
    f::HOST_GS_SEL, f::HOST_TR_SEL, f::HOST_TR_BASE, f::HOST_FS_BASE, f::HOST_GS_BASE, f::HOST_GDTR_BASE, f::HOST_IDTR_BASE,
    f::HOST_PAT, f::HOST_EFER,
];

fn vmptrst() -> u64 {
    let mut pa = 0u64;
    // SAFETY: stores the current-VMCS pointer into `pa`.
    unsafe { asm!("vmptrst [{}]", in(reg) &mut pa as *mut u64, options(nostack)) };
    pa
}

impl EnclaveVcpu for ThreadVm {
    fn setup(&mut self, _slot: usize, fresh: bool, rip: u64, cr3: u64, nested_pointer: u64, fs_base: u64, gs_base: u64) {
        // written into the VMCS at the next run, when it is current
        self.setup = (rip, cr3, nested_pointer);
        self.bases = (fs_base, gs_base);
        self.kernel_gs_base = 0;
        self.rsp = 0;
        self.rflags = 2;
        self.sp_flags_dirty = false;
        self.need_init = true;
        self.fresh = self.fresh || fresh;
        self.rax = 0;
        self.rip = rip;
        self.rip_dirty = false;
    }

    fn run(&mut self, regs: &mut GuestRegs, fx: *mut u8) -> EnclaveExit {
        let linux_vmcs = vmptrst();
        let mut host = [0u64; HOST_FIELDS.len()];
        for (v, fld) in host.iter_mut().zip(HOST_FIELDS) {
            *v = vmcs::read(fld);
        }
        if self.need_init {
            self.vmcs.prepare();
        }
        let loaded = vmcs::vmclear(self.vmcs.pa()).and_then(|_| vmcs::vmptrld(self.vmcs.pa()));
        if let Err(e) = loaded {
            let _ = vmcs::vmptrld(linux_vmcs);
            return EnclaveExit::Invalid(e as u64);
        }
        if self.need_init {
            if let Err((which, bits)) = self.write_state() {
                let _ = vmcs::vmclear(self.vmcs.pa());
                let _ = vmcs::vmptrld(linux_vmcs);
                lock(&PRINT);
                let _ = writeln!(Console, "[hv] enclave thread: the CPU cannot set the {} controls {:#x}", which, bits);
                unlock(&PRINT);
                return EnclaveExit::Invalid(0);
            }
            self.need_init = false;
        }
        for (v, fld) in host.iter().zip(HOST_FIELDS) {
            vmcs::write(fld, *v);
        }
        vmcs::write(f::HOST_SYSENTER_CS, 0);
        vmcs::write(f::HOST_SYSENTER_ESP, 0);
        vmcs::write(f::HOST_SYSENTER_EIP, 0);
        if self.rip_dirty {
            vmcs::write(f::GUEST_RIP, self.rip);
            self.rip_dirty = false;
        }
        if self.sp_flags_dirty {
            vmcs::write(f::GUEST_RSP, self.rsp);
            vmcs::write(f::GUEST_RFLAGS, self.rflags);
            self.sp_flags_dirty = false;
        }
        // KERNEL_GS_BASE is not switched by VM entry/exit: the thread's around the run (SWAPGS)
        let linux_kgs = cpu::rdmsr(cpu::MSR_KERNEL_GS_BASE);
        cpu::wrmsr(cpu::MSR_KERNEL_GS_BASE, self.kernel_gs_base);
        if self.fresh {
            vmcs::invept_all(); // the EPT root of a reused slot may hold another enclave's translations
            self.fresh = false;
        }
        let mut r = VmxRegs { g: *regs, rax: self.rax };
        // SAFETY: the thread VMCS is current on this CPU; registers and FX area are the thread's.
        let failed = unsafe { he_vmx_run(&mut r, fx, 0) };
        self.kernel_gs_base = cpu::rdmsr(cpu::MSR_KERNEL_GS_BASE);
        cpu::wrmsr(cpu::MSR_KERNEL_GS_BASE, linux_kgs);
        let out = if failed != 0 {
            EnclaveExit::Invalid(vmcs::read(f::VM_INSTR_ERROR))
        } else {
            *regs = r.g;
            self.rax = r.rax;
            self.rip = vmcs::read(f::GUEST_RIP);
            self.rsp = vmcs::read(f::GUEST_RSP);
            self.rflags = vmcs::read(f::GUEST_RFLAGS);
            self.bases = (vmcs::read(f::GUEST_ES_BASE + 2 * vmcs::SEG_FS), vmcs::read(f::GUEST_ES_BASE + 2 * vmcs::SEG_GS));
            let why = vmcs::read(f::EXIT_REASON) as u32;
            let next = self.rip + vmcs::read(f::EXIT_INSTR_LEN);
            let q = vmcs::read(f::EXIT_QUALIFICATION);
            if why & (1 << 31) != 0 {
                EnclaveExit::Invalid(why as u64)
            } else {
                match why & 0xffff {
                    reason::IO => EnclaveExit::Io { port: (q >> 16) as u16, input: q & 8 != 0, next },
                    reason::EXTERNAL_INTR => EnclaveExit::Interrupt,
                    reason::EXCEPTION_NMI => {
                        let info = vmcs::read(f::EXIT_INTR_INFO);
                        if (info >> 8) & 7 == 2 {
                            EnclaveExit::Interrupt // NMI
                        } else {
                            EnclaveExit::Exception { vector: info & 0xff, info: (vmcs::read(f::EXIT_INTR_ERR), q) }
                        }
                    }
                    reason::EPT_VIOLATION => {
                        // qualification: bits 0-2 read/write/fetch, 3-5 the entry's R/W/X
                        let pf_error = ((q >> 3) & 7 != 0) as u32 | (q & 2) as u32 | if q & 4 != 0 { 0x10 } else { 0 };
                        EnclaveExit::NestedFault { gpa: vmcs::read(f::GUEST_PHYS_ADDR), info: q, pf_error }
                    }
                    reason::HLT => EnclaveExit::Hlt,
                    other => EnclaveExit::Other(other as u64),
                }
            }
        };
        let _ = vmcs::vmclear(self.vmcs.pa());
        let _ = vmcs::vmptrld(linux_vmcs);
        out
    }
    fn rax(&self) -> u64 {
        self.rax
    }
    fn set_rax(&mut self, v: u64) {
        self.rax = v
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, v: u64) {
        self.rip = v;
        self.rip_dirty = true;
    }
    fn rsp(&self) -> u64 {
        self.rsp
    }
    fn set_rsp(&mut self, v: u64) {
        self.rsp = v;
        self.sp_flags_dirty = true;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, v: u64) {
        self.rflags = v;
        self.sp_flags_dirty = true;
    }
    fn seg_bases(&self) -> (u64, u64) {
        self.bases
    }
    fn flush_tlb(&mut self) {
        self.fresh = true;
    }
}
