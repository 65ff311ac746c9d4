//! Assembly glue: the image entry (switch to the per-CPU stack), the VMRUN round trip (guest
//! general-purpose and FPU/SSE registers saved around the host), and the hand-back of a CPU.

use core::arch::global_asm;

use crate::backend::PerCpu;
use crate::handoff::{self, Handoff};

pub const STACK_SHIFT: u32 = 19; // 512 KiB per CPU (Hypervisor::new builds its state on it)

/// Where the backend's vCPU state starts in a CPU's area (after the FPU save area).
pub const PERCPU_STATE: u64 = 4096;
/// Where the CPU's enclave runner slots start (enclave_vm.rs), after the backend's state.
pub const PERCPU_RUNNERS: u64 = PERCPU_STATE + ((core::mem::size_of::<PerCpu>() as u64 + 4095) & !4095);
/// Bytes of one CPU's area: FPU save area page, the backend's vCPU state, the enclave runner
/// slots, the stack. The container header's per-CPU size (build.sh reads it from
/// `HE_PERCPU_SIZE`); the driver gives every possible CPU id an area of that size, so the CPU
/// count (and with it the number of enclave threads) is bounded only by the region.
pub const PERCPU_BYTES: u64 = PERCPU_RUNNERS + crate::enclave_vm::PERCPU_RUNNER_BYTES + (1 << STACK_SHIFT);

#[no_mangle]
#[used]
#[link_section = ".he_info"]
pub static HE_PERCPU_SIZE: u64 = PERCPU_BYTES;

/// Guest registers the VMCB does not hold (RAX and RSP live in the VMCB).
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct GuestRegs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// Where a CPU goes when it is handed back (read by he_leave).
#[repr(C)]
pub struct LeaveFrame {
    pub cr3: u64,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
    pub rax: u64,
    pub tramp: u64,
    /// CR3 of the leave address space (host.rs): only he_leave and the trampoline are mapped.
    pub leave_cr3: u64,
}

extern "C" {
    /// Runs the guest until the next #VMEXIT.
    pub fn he_vmrun(vmcb_pa: u64, regs: *mut GuestRegs, fx: *mut u8);
    /// Restores the guest's registers and jumps to the driver's leave trampoline. Never returns.
    pub fn he_leave(frame: *const LeaveFrame, regs: *const GuestRegs, fx: *const u8) -> !;
}

global_asm!(
    ".section .text.entry, \"ax\"",
    ".global he_image_entry",
    // rdi = op, rsi = handoff, rdx = cpu, rcx = &LinuxState; on Linux's stack, host tables loaded.
    // This CPU's area (handoff v3): FPU save area at +0, stack top at +percpu_size. A handoff of
    // another version, a CPU id beyond its slots or an area smaller than the image needs: -1.
    "he_image_entry:",
    "    push rbx",
    "    push rbp",
    "    mov rbx, rsp",
    "    mov rax, -1",
    "    cmp dword ptr [rsi + {off_version}], {version}",
    "    jne 9f",
    "    mov r10d, dword ptr [rsi + {off_slots}]",
    "    cmp rdx, r10",
    "    jae 9f",
    "    mov r10, [rsi + {off_size}]",
    "    mov r11, {needed}",
    "    cmp r10, r11",
    "    jb 9f",
    "    mov rbp, rdx",
    "    imul rbp, r10",
    "    add rbp, [rsi + {off_base}]",
    "    fxsave [rbp]",            // Linux's FPU/SSE state: the guest's first state
    "    lea rsp, [rbp + r10]",
    "    call he_main",
    "    fxrstor [rbp]",
    "    mov rsp, rbx",
    "9:  pop rbp",
    "    pop rbx",
    "    ret",
    ".text",
    ".global he_vmrun",
    "he_vmrun:",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    push rsi",
    "    push rdx",
    "    fxrstor [rdx]",
    "    mov rax, rdi",
    "    mov rbx, [rsi + 0]",
    "    mov rcx, [rsi + 8]",
    "    mov rdx, [rsi + 16]",
    "    mov rdi, [rsi + 32]",
    "    mov rbp, [rsi + 40]",
    "    mov r8, [rsi + 48]",
    "    mov r9, [rsi + 56]",
    "    mov r10, [rsi + 64]",
    "    mov r11, [rsi + 72]",
    "    mov r12, [rsi + 80]",
    "    mov r13, [rsi + 88]",
    "    mov r14, [rsi + 96]",
    "    mov r15, [rsi + 104]",
    "    mov rsi, [rsi + 24]",
    "    .byte 0x0f, 0x01, 0xd8", // vmrun rax
    "    push rsi",
    "    mov rsi, [rsp + 16]",
    "    mov [rsi + 0], rbx",
    "    mov [rsi + 8], rcx",
    "    mov [rsi + 16], rdx",
    "    mov [rsi + 32], rdi",
    "    mov [rsi + 40], rbp",
    "    mov [rsi + 48], r8",
    "    mov [rsi + 56], r9",
    "    mov [rsi + 64], r10",
    "    mov [rsi + 72], r11",
    "    mov [rsi + 80], r12",
    "    mov [rsi + 88], r13",
    "    mov [rsi + 96], r14",
    "    mov [rsi + 104], r15",
    "    pop rax",
    "    mov [rsi + 24], rax",
    "    pop rdx",
    "    fxsave [rdx]",
    "    pop rsi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    ret",
    ".global he_leave",
    // rdi = &LeaveFrame, rsi = &GuestRegs, rdx = fx area. r9-r11 are the driver's VMMCALL
    // clobbers, so they carry the trampoline and the leave CR3; no stack after the CR3 switch.
    "he_leave:",
    "    fxrstor [rdx]",
    "    mov rax, rdi",
    "    mov r11, rsi",
    "    mov rbx, [r11 + 0]",
    "    mov rbp, [r11 + 40]",
    "    mov r12, [r11 + 80]",
    "    mov r13, [r11 + 88]",
    "    mov r14, [r11 + 96]",
    "    mov r15, [r11 + 104]",
    "    mov rdi, [rax + 0]",
    "    mov rsi, [rax + 8]",
    "    mov rdx, [rax + 16]",
    "    mov rcx, [rax + 24]",
    "    mov r8, [rax + 32]",
    "    mov r9, [rax + 40]",
    "    mov r10, [rax + 48]",
    "    mov cr3, r10",
    "    jmp r9",
    off_version = const core::mem::offset_of!(Handoff, version),
    off_slots = const core::mem::offset_of!(Handoff, cpu_slots),
    off_size = const core::mem::offset_of!(Handoff, percpu_size),
    off_base = const core::mem::offset_of!(Handoff, percpu_base),
    version = const handoff::HANDOFF_VERSION,
    needed = const PERCPU_BYTES,
);
