//! The host's own descriptor tables and the address space it leaves through, so that after
//! launch nothing the hypervisor runs on belongs to the (demoted, untrusted) Linux:
//! - a GDT (64-bit code at selector 0x10, data at 0x18, Linux's selector values, so the host
//!   segment state VMRUN saves stays valid) and an IDT whose 32 exception gates log the vector and
//!   halt that CPU: a host exception never lands in Linux's handlers;
//! - a leave address space mapping only the image's `he_leave` code (identity) and the driver's
//!   `he_leave_tramp` page (at its Linux address): the last instructions of a hand-over run where
//!   neither the reservation nor the host stack is mapped, so a tampered trampoline sees nothing.
//! Linux's GDTR/IDTR are loaded back right before leaving.

use core::arch::{asm, global_asm};

use crate::cpu::{self, DescTable};

#[repr(C, align(16))]
struct Gdt([u64; 4]);
#[repr(C, align(16))]
struct Idt([[u64; 2]; 32]);
#[repr(C, align(4096))]
struct Table([u64; 512]);

const KERNEL_CS: u64 = 0x10;

static mut GDT: Gdt = Gdt([
    0,
    0,
    0x00af_9b00_0000_ffff, // 0x10: 64-bit code, DPL 0
    0x00cf_9300_0000_ffff, // 0x18: data
]);
static mut IDT: Idt = Idt([[0; 2]; 32]);
/// Leave address space: PML4, then PDPT/PD/PT for the identity page and for the trampoline.
static mut LEAVE: [Table; 7] = [const { Table([0; 512]) }; 7];

extern "C" {
    static he_exc_table: [u64; 32];
}

global_asm!(
    ".text",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "he_exc_\\n:",
    "    push \\n",
    "    jmp he_exc_common",
    ".endr",
    "he_exc_common:",
    "    mov rdi, [rsp]",
    "    lea rsi, [rsp + 8]",
    "    and rsp, -16",
    "    call he_host_exception",
    "    ud2",
    ".section .rodata",
    ".balign 8",
    ".global he_exc_table",
    "he_exc_table:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "    .quad he_exc_\\n",
    ".endr",
    ".text",
);

/// Vectors that push an error code (the frame then starts with it).
fn has_error_code(v: u64) -> bool {
    matches!(v, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

#[no_mangle]
extern "C" fn he_host_exception(vector: u64, frame: *const u64) -> ! {
    // SAFETY: the CPU pushed the frame on this stack: [error code,] RIP, CS, RFLAGS, RSP, SS.
    let (err, rip) = unsafe {
        if has_error_code(vector) {
            (*frame, *frame.add(1))
        } else {
            (0, *frame)
        }
    };
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    crate::host_exception_log(vector, err, rip, cr2);
    cpu::halt_forever()
}

/// Fills the IDT and the leave tables (once, at INIT).
pub fn init(leave_tramp: u64, tramp_pages: [u64; 2]) {
    // SAFETY: INIT runs on one CPU before any LAUNCH; nothing else uses these tables yet.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (v, gate) in idt.0.iter_mut().enumerate() {
            let off = he_exc_table[v];
            // 64-bit interrupt gate, present, DPL 0, IST 0
            gate[0] = (off & 0xffff) | (KERNEL_CS << 16) | (0x8e << 40) | (((off >> 16) & 0xffff) << 48);
            gate[1] = off >> 32;
        }
        let t = &mut *core::ptr::addr_of_mut!(LEAVE);
        for table in t.iter_mut() {
            table.0.fill(0);
        }
        let code = crate::entry::he_leave as *const () as u64;
        map_page(t, 1, code & !0xfff, code & !0xfff);
        map_page(t, 1, (code & !0xfff) + 0x1000, (code & !0xfff) + 0x1000);
        map_page(t, 4, leave_tramp & !0xfff, tramp_pages[0]);
        if tramp_pages[1] != 0 {
            map_page(t, 4, (leave_tramp & !0xfff) + 0x1000, tramp_pages[1]);
        }
    }
}

/// Maps one 4 KiB page with the PDPT/PD/PT at t[first..first+3]. Two neighbouring pages that
/// straddle a 2 MiB (or 1 GiB) line share the group's tables: the next PD (PDPT) entry points at
/// the same PT (PD), which maps the two pages right and aliases nothing else.
fn map_page(t: &mut [Table; 7], first: usize, va: u64, pa: u64) {
    const P_RW: u64 = 0x3;
    let pa_of = |i: usize| &t[i] as *const Table as u64;
    let (pdpt, pd, pt) = (pa_of(first), pa_of(first + 1), pa_of(first + 2));
    let (i4, i3, i2, i1) = ((va >> 39) & 511, (va >> 30) & 511, (va >> 21) & 511, (va >> 12) & 511);
    t[0].0[i4 as usize] = pdpt | P_RW;
    t[first].0[i3 as usize] = pd | P_RW;
    t[first + 1].0[i2 as usize] = pt | P_RW;
    t[first + 2].0[i1 as usize] = (pa & !0xfff) | P_RW;
}

/// CR3 of the leave address space.
pub fn leave_cr3() -> u64 {
    core::ptr::addr_of!(LEAVE) as u64
}

/// Loads the host's GDT and IDT on this CPU (before its first VMRUN, which saves them as host state).
pub fn load_tables() {
    // SAFETY: static, identity-mapped tables; CS/SS keep their cached descriptors and our GDT
    // has matching entries at the same selectors.
    unsafe {
        let gdt = DescTable { limit: (core::mem::size_of::<Gdt>() - 1) as u16, base: core::ptr::addr_of!(GDT) as u64 };
        let idt = DescTable { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: core::ptr::addr_of!(IDT) as u64 };
        asm!("lgdt [{}]", in(reg) &gdt as *const DescTable, options(nostack));
        asm!("lidt [{}]", in(reg) &idt as *const DescTable, options(nostack));
    }
}

/// Loads Linux's GDTR/IDTR back (the values captured at launch) right before leaving.
pub fn restore_linux_tables(gdt: DescTable, idt: DescTable) {
    // SAFETY: Linux's own tables; the CPU only reads them at the next segment load or interrupt,
    // which happen after the trampoline has switched to Linux's CR3.
    unsafe {
        asm!("lgdt [{}]", in(reg) &gdt as *const DescTable, options(nostack));
        asm!("lidt [{}]", in(reg) &idt as *const DescTable, options(nostack));
    }
}
