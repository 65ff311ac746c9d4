//! AES-128-GCM with 96-bit IVs (NIST SP 800-38D), the AEAD the SGX SDK seals data with.
//! Enclave payloads (no_std) can use it with an EGETKEY seal key.

use super::aes::Aes128;
use super::cmac::ct_eq;

fn gf_mul(x: u128, y: u128) -> u128 {
    const R: u128 = 0xe1 << 120;
    let mut z = 0u128;
    let mut v = y;
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 1 { (v >> 1) ^ R } else { v >> 1 };
    }
    z
}

fn ghash(h: u128, aad: &[u8], ct: &[u8]) -> u128 {
    let mut y = 0u128;
    for data in [aad, ct] {
        for chunk in data.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            y = gf_mul(y ^ u128::from_be_bytes(b), h);
        }
    }
    let lens = ((aad.len() as u128 * 8) << 64) | (ct.len() as u128 * 8);
    gf_mul(y ^ lens, h)
}

fn ctr(aes: &Aes128, j0: &[u8; 16], buf: &mut [u8]) {
    let mut counter = u32::from_be_bytes(j0[12..16].try_into().unwrap());
    for chunk in buf.chunks_mut(16) {
        counter = counter.wrapping_add(1);
        let mut ks = *j0;
        ks[12..16].copy_from_slice(&counter.to_be_bytes());
        aes.encrypt_block(&mut ks);
        for (b, k) in chunk.iter_mut().zip(ks.iter()) {
            *b ^= k;
        }
    }
}

fn setup(key: &[u8; 16], iv: &[u8; 12]) -> (Aes128, u128, [u8; 16]) {
    let aes = Aes128::new(key);
    let mut h = [0u8; 16];
    aes.encrypt_block(&mut h);
    let mut j0 = [0u8; 16];
    j0[..12].copy_from_slice(iv);
    j0[15] = 1;
    (aes, u128::from_be_bytes(h), j0)
}

fn tag(aes: &Aes128, h: u128, j0: &[u8; 16], aad: &[u8], ct: &[u8]) -> [u8; 16] {
    let mut t = *j0;
    aes.encrypt_block(&mut t);
    (u128::from_be_bytes(t) ^ ghash(h, aad, ct)).to_be_bytes()
}

/// Encrypts `buf` in place; returns the 16-byte tag.
pub fn aes128_gcm_seal(key: &[u8; 16], iv: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
    let (aes, h, j0) = setup(key, iv);
    ctr(&aes, &j0, buf);
    tag(&aes, h, &j0, aad, buf)
}

/// Checks the tag, then decrypts `buf` in place. On a bad tag `buf` is left as it was and
/// `false` is returned.
pub fn aes128_gcm_open(key: &[u8; 16], iv: &[u8; 12], aad: &[u8], buf: &mut [u8], expected_tag: &[u8; 16]) -> bool {
    let (aes, h, j0) = setup(key, iv);
    if !ct_eq(&tag(&aes, h, &j0, aad, buf), expected_tag) {
        return false;
    }
    ctr(&aes, &j0, buf);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_util::{hex, hex_vec};

    // McGrew & Viega, "The Galois/Counter Mode of Operation", appendix B, test cases 1-4
    // (also reproduced with Node's OpenSSL aes-128-gcm while writing this test).
    #[test]
    fn gcm_spec_vectors() {
        let mut empty: [u8; 0] = [];
        assert_eq!(aes128_gcm_seal(&[0; 16], &[0; 12], &[], &mut empty), hex::<16>("58e2fccefa7e3061367f1d57a4e7455a"));

        let mut b = [0u8; 16];
        let t = aes128_gcm_seal(&[0; 16], &[0; 12], &[], &mut b);
        assert_eq!(b, hex::<16>("0388dace60b6a392f328c2b971b2fe78"));
        assert_eq!(t, hex::<16>("ab6e47d42cec13bdf53a67b21257bddf"));

        let key = hex::<16>("feffe9928665731c6d6a8f9467308308");
        let iv = hex::<12>("cafebabefacedbaddecaf888");
        let p = hex_vec("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255");
        let c = hex_vec("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985");
        let mut buf = p.clone();
        assert_eq!(aes128_gcm_seal(&key, &iv, &[], &mut buf), hex::<16>("4d5c2af327cd64a62cf35abd2ba6fab4"));
        assert_eq!(buf, c);

        let aad = hex_vec("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let mut buf = p[..60].to_vec();
        let t = aes128_gcm_seal(&key, &iv, &aad, &mut buf);
        assert_eq!(t, hex::<16>("5bc94fbc3221a5db94fae95ae7121a47"));
        assert_eq!(buf, c[..60]);
        assert!(aes128_gcm_open(&key, &iv, &aad, &mut buf, &t));
        assert_eq!(buf, p[..60]);
    }

    #[test]
    fn open_refuses_tampering() {
        let key = [3u8; 16];
        let iv = [4u8; 12];
        let mut buf = *b"sealed secret!!!!";
        let t = aes128_gcm_seal(&key, &iv, b"hdr", &mut buf);
        let sealed = buf;
        let mut x = sealed;
        x[0] ^= 1;
        assert!(!aes128_gcm_open(&key, &iv, b"hdr", &mut x, &t));
        let mut x = sealed;
        assert!(!aes128_gcm_open(&key, &iv, b"hdx", &mut x, &t));
        assert_eq!(x, sealed, "left untouched on failure");
        assert!(!aes128_gcm_open(&[5; 16], &iv, b"hdr", &mut x, &t));
        assert!(aes128_gcm_open(&key, &iv, b"hdr", &mut x, &t));
        assert_eq!(&x, b"sealed secret!!!!");
    }
}
