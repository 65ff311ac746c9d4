//! Cryptography written here (the core has no dependencies): SHA-256, HMAC-SHA-256,
//! AES-128 (encrypt), AES-CMAC, AES-128-GCM, and RSA-3072 (e = 3) SIGSTRUCT signature checking.

pub mod aes;
pub mod cmac;
pub mod ed25519;
pub mod gcm;
pub mod hmac;
pub mod rsa;
pub mod sha256;
pub mod sha512;

pub use cmac::{aes_cmac, ct_eq, Cmac};
pub use gcm::{aes128_gcm_open, aes128_gcm_seal};
pub use hmac::{hmac_sha256, HmacSha256};
pub use sha256::{sha256, Sha256};

#[cfg(test)]
pub(crate) mod test_util {
    extern crate std;
    use std::vec::Vec;

    pub fn hex_vec(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
    }

    pub fn hex<const N: usize>(s: &str) -> [u8; N] {
        hex_vec(s).try_into().expect("hex length")
    }
}
