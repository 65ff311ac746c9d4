/* SPDX-License-Identifier: GPL-2.0 */
/*
 * CPU hand-over trampolines. They live in the driver's text because that is mapped both in
 * Linux's page tables and in the host tables the driver builds (which copy Linux's kernel half).
 */
#include <linux/linkage.h>
#include <asm/nospec-branch.h>

	.text
/*
 * long he_enter(u64 op, u64 handoff_pa, u64 cpu, u64 host_cr3, u64 entry_pa)
 * Saves the callee-saved registers and flags on this stack, switches to the host tables and
 * calls the image entry (identity-mapped) with rdi=op, rsi=handoff, rdx=cpu and rcx pointing at
 * a struct he_linux_state {rip, rsp, cr3} (hyperenclave_handoff.h; pushed cr3, rsp, rip below).
 * For HE_OP_LAUNCH the image VMRUNs this CPU with rip=he_resume, rsp=the saved stack,
 * cr3=Linux's and rax=0: Linux continues below as the hypervisor's guest.
 * Any other return comes back here with the image's status in rax.
 */
SYM_FUNC_START(he_enter)
	push	%rbp
	push	%rbx
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	pushfq
	cli
	mov	%cr3, %r15
	mov	%rsp, %rbx
	lea	he_resume(%rip), %rbp
	push	%r15			/* cr3 */
	push	%rbx			/* rsp */
	push	%rbp			/* rip */
	mov	%rsp, %r12
	mov	%rcx, %cr3
	mov	%r12, %rcx
	ANNOTATE_RETPOLINE_SAFE
	call	*%r8
	mov	%r15, %cr3
	mov	%rbx, %rsp
SYM_INNER_LABEL(he_resume, SYM_L_GLOBAL)
	popfq
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbx
	pop	%rbp
	RET
SYM_FUNC_END(he_enter)

/*
 * Reached from the hypervisor (host mode, host tables) when it hands a CPU back:
 * rdi = Linux cr3, rsi = rsp, rdx = rip, rcx = rflags, r8 = rax. The image has already
 * restored the other registers, CR0/CR4, EFER without SVME and set GIF.
 */
SYM_FUNC_START(he_leave_tramp)
	mov	%rdi, %cr3
	mov	%rsi, %rsp
	push	%rcx
	popfq
	mov	%r8, %rax
	ANNOTATE_RETPOLINE_SAFE
	jmp	*%rdx
SYM_FUNC_END(he_leave_tramp)
