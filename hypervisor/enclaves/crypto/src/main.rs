//! Payload "crypto": ECALLs 0 echo, 1 add (two u64 LE → u64 LE), 2 SHA-256 of the input,
//! 3 OCALL round trip (sends the input to host OCALL 7, returns its answer reversed), 4 empty
//! (no input, no output: the ECALL round-trip benchmark).
#![no_std]
#![no_main]

use enclave_rt::{err, marshal};
use hyperenclave_core::crypto::sha256::sha256;

enclave_rt::ecalls![echo, add, hash, via_host, empty];

extern "C" fn empty() -> u64 {
    0
}

extern "C" fn echo() -> u64 {
    marshal(|input, out| {
        out[..input.len()].copy_from_slice(input);
        Ok(input.len())
    })
}

extern "C" fn add() -> u64 {
    marshal(add_u64)
}

extern "C" fn hash() -> u64 {
    marshal(|input, out| {
        out[..32].copy_from_slice(&sha256(input));
        Ok(32)
    })
}

extern "C" fn via_host() -> u64 {
    marshal(|input, out| {
        let n = enclave_rt::ocall(7, input, out)?;
        out[..n].reverse();
        Ok(n)
    })
}

fn add_u64(input: &[u8], out: &mut [u8]) -> Result<usize, u32> {
    if input.len() != 16 {
        return Err(err::BAD_INPUT);
    }
    let a = u64::from_le_bytes(input[..8].try_into().unwrap());
    let b = u64::from_le_bytes(input[8..].try_into().unwrap());
    out[..8].copy_from_slice(&a.wrapping_add(b).to_le_bytes());
    Ok(8)
}

