//! COM1 output for the hypervisor's own log lines ("[hv] ..."), shared with Linux's console.

use core::arch::asm;

const COM1: u16 = 0x3f8;

fn outb(port: u16, v: u8) {
    // SAFETY: port I/O to the legacy UART, which Linux has already initialised.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) };
}
fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as above.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack)) };
    v
}

fn putc(c: u8) {
    for _ in 0..100_000 {
        if inb(COM1 + 5) & 0x20 != 0 {
            break;
        }
    }
    outb(COM1, c);
}

pub fn puts(s: &str) {
    for &b in s.as_bytes() {
        if b == b'\n' {
            putc(b'\r');
        }
        putc(b);
    }
}
