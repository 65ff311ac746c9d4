//! The vendor-neutral vCPU interface (Jailhouse's `vcpu_vendor_*` split): what an exit handler in
//! main.rs needs from the CPU it runs on. svm.rs (VMCB) and vmx.rs (VMCS) implement it; each
//! backend's exit loop decodes its own exit codes into calls of `cpuid_exit`,
//! `hypercall_exit` and `nested_fault_exit`, which are written once.
//! Enclave threads (enclave_vm.rs) use the second half: `EnclaveVcpu`, one guest per thread with
//! its own nested tables, whose exits the backend decodes into `EnclaveExit`.

use crate::entry::GuestRegs;

/// The demoted Linux on one CPU, as the neutral exit handlers see it.
pub(crate) trait Vcpu {
    /// RAX (SVM keeps it in the VMCB, VMX in the saved registers).
    fn rax(&self) -> u64;
    fn set_rax(&mut self, v: u64);
    /// The general-purpose registers the hardware does not save.
    fn regs(&mut self) -> &mut GuestRegs;
    fn rip(&self) -> u64;
    /// Moves RIP past the instruction that exited (CPUID, VMMCALL/VMCALL) and drops an
    /// interrupt shadow it would have left.
    fn advance(&mut self);
    /// Injects a hardware exception at the next entry.
    fn inject(&mut self, vector: u8, error_code: Option<u32>);
    /// (last faulting GPA, repeats) for the stale-translation retry of `nested_fault_exit`.
    fn fault_tracker(&mut self) -> (&mut u64, &mut u32);
    /// Hands this CPU back to Linux right after its DISABLE hypercall, with status SUCCESS:
    /// leaves virtualization and restores the state the hardware does not switch.
    fn leave(&mut self, cpu: usize) -> !;
    /// Hides this vendor's virtualization from CPUID (nested virtualization is not offered).
    fn hide_virtualization(leaf: u32, r: &mut [u32; 4]);
}

/// Why an enclave thread's guest stopped, decoded by the backend.
pub(crate) enum EnclaveExit {
    /// Port I/O: `next` is the RIP after the instruction.
    Io { port: u16, input: bool, next: u64 },
    /// A physical interrupt or NMI (the thread is parked mid-ECALL).
    Interrupt,
    /// An exception (vector) with the backend's two information words.
    Exception { vector: u64, info: (u64, u64) },
    /// A nested fault: `gpa` not mapped (or not with that access) in the enclave's tables;
    /// `pf_error` is the access as a #PF error code (bit 0 present, 1 write, 4 fetch).
    NestedFault { gpa: u64, info: u64, pf_error: u32 },
    Hlt,
    /// The hardware refused the thread's state (VMEXIT_INVALID / VM-entry failure).
    Invalid(u64),
    /// Anything else (CPUID, MSR, virtualization instruction, shutdown): the backend's code.
    Other(u64),
}

/// One enclave thread's guest (a VMCB or a VMCS with its own nested tables).
pub(crate) trait EnclaveVcpu {
    /// Fresh 64-bit ring-0 state: flat segments (FS and GS based at `fs_base` / `gs_base`, the
    /// TCS's OFSBASE / OGSBASE), paging with `cr3`, entry at `rip`, nested tables
    /// `nested_pointer` (nCR3 / EPTP), tag `slot` (ASID / VPID), every exception, interrupt,
    /// NMI, HLT, port and MSR intercepted. `fresh` = first use of this slot for this enclave:
    /// flush what the tag may still cache.
    #[allow(clippy::too_many_arguments)]
    fn setup(&mut self, slot: usize, fresh: bool, rip: u64, cr3: u64, nested_pointer: u64, fs_base: u64, gs_base: u64);
    /// Runs the thread until the next exit on this CPU.
    fn run(&mut self, regs: &mut GuestRegs, fx: *mut u8) -> EnclaveExit;
    fn rax(&self) -> u64;
    fn set_rax(&mut self, v: u64);
    fn rip(&self) -> u64;
    fn set_rip(&mut self, v: u64);
    fn rsp(&self) -> u64;
    fn set_rsp(&mut self, v: u64);
    fn rflags(&self) -> u64;
    fn set_rflags(&mut self, v: u64);
    /// (FS base, GS base) of the thread.
    fn seg_bases(&self) -> (u64, u64);
    /// Flushes what this thread's tag may have cached on the CPU of the next run (the thread
    /// moved to another CPU).
    fn flush_tlb(&mut self);
}
