//! Assembly glue: the image entry (switch to the per-CPU stack), the VMRUN round trip (guest
//! general-purpose and FPU/SSE registers saved around the host), and the hand-back of a CPU.

use core::arch::global_asm;

pub const STACK_SHIFT: u32 = 19; // 512 KiB per CPU (Hypervisor::new builds its state on it)

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
    "he_image_entry:",
    "    push rbx",
    "    push rbp",
    "    mov rbx, rsp",
    "    mov r10, rdx",
    "    shl r10, 9",
    "    lea rbp, [rip + HE_FX]",
    "    add rbp, r10",
    "    fxsave [rbp]",            // Linux's FPU/SSE state: the guest's first state
    "    mov r10, rdx",
    "    inc r10",
    "    shl r10, {stack_shift}",
    "    lea rax, [rip + HE_STACKS]",
    "    add rax, r10",
    "    mov rsp, rax",
    "    call he_main",
    "    fxrstor [rbp]",
    "    mov rsp, rbx",
    "    pop rbp",
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
    stack_shift = const STACK_SHIFT,
);
