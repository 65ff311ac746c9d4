//! Payload "misbehave": each ECALL does one thing an enclave must not get away with, so the
//! tests can check that the runner ends this enclave cleanly and nothing else.
//! 0 answer "alive" · 1 write through a null pointer · 2 spin forever · 3 ud2 · 4 write to its
//! own code page · 5 hlt · 6 divide by zero · 7 panic · 8 read outside ELRANGE (runner memory) ·
//! 9 triple fault (empty IDT, then an exception).
//! And one well-behaved probe the system tier uses: 10 OCALL (input = u32 LE OCALL index, then
//! the OCALL's input; output = the host's answer, or the OCALL error code 7).
#![no_std]
#![no_main]

use core::arch::asm;
use enclave_rt::marshal;

enclave_rt::ecalls![alive, null_write, spin, undefined, write_code, halt, divide_by_zero, panics, read_outside, triple_fault, ocall];

extern "C" fn alive() -> u64 {
    marshal(|_, out| {
        out[..5].copy_from_slice(b"alive");
        Ok(5)
    })
}

extern "C" fn null_write() -> u64 {
    unsafe { core::ptr::write_volatile(core::ptr::null_mut::<u64>(), 0xdead) };
    0
}

extern "C" fn spin() -> u64 {
    loop {
        unsafe { asm!("pause", options(nomem, nostack)) };
    }
}

extern "C" fn undefined() -> u64 {
    unsafe { asm!("ud2", options(noreturn)) }
}

extern "C" fn write_code() -> u64 {
    unsafe { core::ptr::write_volatile(alive as *const u8 as *mut u8, 0xCC) };
    0
}

extern "C" fn halt() -> u64 {
    unsafe { asm!("hlt", options(nomem, nostack)) };
    0
}

extern "C" fn divide_by_zero() -> u64 {
    marshal(|input, _| {
        let d = unsafe { core::ptr::read_volatile(&(input.len() as u64)) };
        let r: u64;
        unsafe { asm!("div {d}", d = in(reg) d, inout("rax") 1u64 => r, inout("rdx") 0u64 => _, options(nomem, nostack)) };
        Ok(r as usize)
    })
}

extern "C" fn panics() -> u64 {
    marshal(|input, _| panic!("deliberate panic with {} input bytes", input.len()))
}

extern "C" fn read_outside() -> u64 {
    unsafe { core::ptr::read_volatile(0x1000 as *const u64) }
}

extern "C" fn triple_fault() -> u64 {
    let idtr = [0u8; 10]; // limit 0: every exception now escalates to a triple fault
    unsafe { asm!("lidt [{0}]", "ud2", in(reg) idtr.as_ptr(), options(noreturn)) }
}

extern "C" fn ocall() -> u64 {
    marshal(|input, out| {
        if input.len() < 4 {
            return Err(enclave_rt::err::BAD_INPUT);
        }
        let nr = u32::from_le_bytes([input[0], input[1], input[2], input[3]]);
        enclave_rt::ocall(nr, &input[4..], out)
    })
}
