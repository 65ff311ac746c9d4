//! AES-128-GCM with 96-bit IVs (NIST SP 800-38D), the AEAD the SGX SDK seals data with.
//! Enclave payloads (no_std) can use it with an EGETKEY seal key.

use super::aes::{Aes128, Backend};
use super::cmac::ct_eq;

// GHASH works on field elements as `u128::from_be_bytes(block)`: bit 127 is the coefficient of
// x^0, bit 0 that of x^127 (SP 800-38D's bit order). H is secret (derived from the key), so
// neither multiplication below branches on or indexes with its operands.

/// Constant-time software multiplication in GF(2^128) (SP 800-38D algorithm 1), with each
/// conditional XOR replaced by an AND with an all-ones/all-zeros mask.
fn gf_mul_soft(x: u128, y: u128) -> u128 {
    const R: u128 = 0xe1 << 120;
    let mut z = 0u128;
    let mut v = y;
    for i in 0..128 {
        let xi = (x >> (127 - i)) & 1;
        z ^= v & 0u128.wrapping_sub(xi);
        v = (v >> 1) ^ (R & 0u128.wrapping_sub(v & 1));
    }
    z
}

/// Reduces the carry-less product `hi:lo` of two field elements in the bit order above
/// modulo g = x^128 + x^7 + x^2 + x + 1. Shifts by constants and XORs only.
///
/// In this bit order the 255-bit carry-less product c of x and y holds the coefficient of
/// x^(254-k) in bit k, so d = c << 1 holds that of x^(255-m) in bit m: its high half is the
/// low-degree half of the product, its low half `h` the coefficients of x^128..x^255. Folding
/// with x^128 = x^7 + x^2 + x + 1 (multiplying by x is a right shift here) spills the bits
/// shifted out of `h` into `o`, which is folded once more (no further spill: degree < 14).
#[cfg_attr(not(all(target_arch = "x86_64", target_feature = "sse2")), allow(dead_code))]
fn reduce(hi: u128, lo: u128) -> u128 {
    let d_hi = (hi << 1) | (lo >> 127);
    let h = lo << 1;
    let o = (h << 127) ^ (h << 126) ^ (h << 121);
    d_hi ^ h ^ (h >> 1) ^ (h >> 2) ^ (h >> 7) ^ o ^ (o >> 1) ^ (o >> 2) ^ (o >> 7)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod clmul {
    use core::arch::x86_64::*;

    #[target_feature(enable = "pclmulqdq,sse2")]
    #[inline]
    fn to_xmm(v: u128) -> __m128i {
        _mm_set_epi64x((v >> 64) as i64, v as i64)
    }

    #[target_feature(enable = "pclmulqdq,sse2")]
    #[inline]
    fn from_xmm(v: __m128i) -> u128 {
        let lo = _mm_cvtsi128_si64(v) as u64 as u128;
        let hi = _mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)) as u64 as u128;
        (hi << 64) | lo
    }

    /// x·y in GF(2^128) with PCLMULQDQ (3 carry-less 64x64 products, Karatsuba) and `reduce`.
    #[target_feature(enable = "pclmulqdq,sse2")]
    #[inline]
    fn mul(x: u128, y: u128) -> u128 {
        let (a, b) = (to_xmm(x), to_xmm(y));
        let lo = from_xmm(_mm_clmulepi64_si128::<0x00>(a, b));
        let hi = from_xmm(_mm_clmulepi64_si128::<0x11>(a, b));
        let a_mid = to_xmm((x >> 64) ^ (x & u64::MAX as u128));
        let b_mid = to_xmm((y >> 64) ^ (y & u64::MAX as u128));
        let mid = from_xmm(_mm_clmulepi64_si128::<0x00>(a_mid, b_mid)) ^ lo ^ hi;
        super::reduce(hi ^ (mid >> 64), lo ^ (mid << 64))
    }

    #[target_feature(enable = "aes,pclmulqdq,sse2,ssse3")]
    fn ghash_ni(h: u128, aad: &[u8], ct: &[u8]) -> u128 {
        super::ghash_with(h, aad, ct, |a, b| mul(a, b))
    }

    pub(super) fn ghash(h: u128, aad: &[u8], ct: &[u8]) -> u128 {
        assert!(super::Backend::detect() == super::Backend::AesNi, "PCLMULQDQ used on a CPU without it");
        // SAFETY: Backend::detect() returns AesNi only when CPUID.1 reports AES-NI, PCLMULQDQ,
        // SSE2 and SSSE3, the features ghash_ni is compiled for.
        unsafe { ghash_ni(h, aad, ct) }
    }

    #[cfg(test)]
    pub(super) fn mul_checked(x: u128, y: u128) -> u128 {
        assert!(super::Backend::detect() == super::Backend::AesNi);
        // SAFETY: as in ghash: the features were detected just above.
        unsafe { mul(x, y) }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod clmul {
    pub(super) fn ghash(_h: u128, _aad: &[u8], _ct: &[u8]) -> u128 {
        unreachable!("no PCLMULQDQ backend in a build without SSE2")
    }
}

#[inline(always)]
fn ghash_with(h: u128, aad: &[u8], ct: &[u8], mul: impl Fn(u128, u128) -> u128) -> u128 {
    let mut y = 0u128;
    for data in [aad, ct] {
        for chunk in data.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            y = mul(y ^ u128::from_be_bytes(b), h);
        }
    }
    let lens = ((aad.len() as u128 * 8) << 64) | (ct.len() as u128 * 8);
    mul(y ^ lens, h)
}

/// GHASH_H(A, C) with the multiplier matching the AES backend (PCLMULQDQ goes with AES-NI).
fn ghash(backend: Backend, h: u128, aad: &[u8], ct: &[u8]) -> u128 {
    match backend {
        Backend::AesNi => clmul::ghash(h, aad, ct),
        Backend::Soft => ghash_with(h, aad, ct, gf_mul_soft),
    }
}

fn ctr(aes: &Aes128, j0: &[u8; 16], buf: &mut [u8]) {
    let mut counter = u32::from_be_bytes(j0[12..16].try_into().unwrap());
    for chunk in buf.chunks_mut(64) {
        let mut ks = [*j0; 4];
        let n = chunk.len().div_ceil(16);
        for k in ks[..n].iter_mut() {
            counter = counter.wrapping_add(1);
            k[12..16].copy_from_slice(&counter.to_be_bytes());
        }
        aes.encrypt_blocks(&mut ks[..n]);
        for (b, k) in chunk.iter_mut().zip(ks.iter().flatten()) {
            *b ^= k;
        }
    }
}

fn setup(aes: &Aes128, iv: &[u8; 12]) -> (u128, [u8; 16]) {
    let mut h = [0u8; 16];
    aes.encrypt_block(&mut h);
    let mut j0 = [0u8; 16];
    j0[..12].copy_from_slice(iv);
    j0[15] = 1;
    (u128::from_be_bytes(h), j0)
}

fn tag(aes: &Aes128, h: u128, j0: &[u8; 16], aad: &[u8], ct: &[u8]) -> [u8; 16] {
    let mut t = *j0;
    aes.encrypt_block(&mut t);
    (u128::from_be_bytes(t) ^ ghash(aes.backend(), h, aad, ct)).to_be_bytes()
}

fn seal_with(aes: &Aes128, iv: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
    let (h, j0) = setup(aes, iv);
    ctr(aes, &j0, buf);
    tag(aes, h, &j0, aad, buf)
}

fn open_with(aes: &Aes128, iv: &[u8; 12], aad: &[u8], buf: &mut [u8], expected_tag: &[u8; 16]) -> bool {
    let (h, j0) = setup(aes, iv);
    if !ct_eq(&tag(aes, h, &j0, aad, buf), expected_tag) {
        return false;
    }
    ctr(aes, &j0, buf);
    true
}

/// Encrypts `buf` in place; returns the 16-byte tag.
pub fn aes128_gcm_seal(key: &[u8; 16], iv: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
    seal_with(&Aes128::new(key), iv, aad, buf)
}

/// Checks the tag, then decrypts `buf` in place. On a bad tag `buf` is left as it was and
/// `false` is returned.
pub fn aes128_gcm_open(key: &[u8; 16], iv: &[u8; 12], aad: &[u8], buf: &mut [u8], expected_tag: &[u8; 16]) -> bool {
    open_with(&Aes128::new(key), iv, aad, buf, expected_tag)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::crypto::aes::test_backends;
    use crate::crypto::test_util::{hex, hex_vec};
    use std::vec::Vec;

    fn seal(be: Backend, key: &[u8; 16], iv: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        seal_with(&Aes128::with_backend(key, be).unwrap(), iv, aad, buf)
    }

    fn open(be: Backend, key: &[u8; 16], iv: &[u8; 12], aad: &[u8], buf: &mut [u8], t: &[u8; 16]) -> bool {
        open_with(&Aes128::with_backend(key, be).unwrap(), iv, aad, buf, t)
    }

    // McGrew & Viega, "The Galois/Counter Mode of Operation", appendix B, test cases 1-4 (the
    // AES-128 cases with 96-bit IVs; 5 and 6 use other IV lengths, which this API does not
    // take), on every available backend, the software one forced.
    #[test]
    fn gcm_spec_vectors() {
        for be in test_backends() {
            let mut empty: [u8; 0] = [];
            assert_eq!(seal(be, &[0; 16], &[0; 12], &[], &mut empty), hex::<16>("58e2fccefa7e3061367f1d57a4e7455a"), "{be:?}");

            let mut b = [0u8; 16];
            let t = seal(be, &[0; 16], &[0; 12], &[], &mut b);
            assert_eq!(b, hex::<16>("0388dace60b6a392f328c2b971b2fe78"), "{be:?}");
            assert_eq!(t, hex::<16>("ab6e47d42cec13bdf53a67b21257bddf"), "{be:?}");

            let key = hex::<16>("feffe9928665731c6d6a8f9467308308");
            let iv = hex::<12>("cafebabefacedbaddecaf888");
            let p = hex_vec("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255");
            let c = hex_vec("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985");
            let mut buf = p.clone();
            assert_eq!(seal(be, &key, &iv, &[], &mut buf), hex::<16>("4d5c2af327cd64a62cf35abd2ba6fab4"), "{be:?}");
            assert_eq!(buf, c, "{be:?}");

            let aad = hex_vec("feedfacedeadbeeffeedfacedeadbeefabaddad2");
            let mut buf = p[..60].to_vec();
            let t = seal(be, &key, &iv, &aad, &mut buf);
            assert_eq!(t, hex::<16>("5bc94fbc3221a5db94fae95ae7121a47"), "{be:?}");
            assert_eq!(buf, c[..60], "{be:?}");
            assert!(open(be, &key, &iv, &aad, &mut buf, &t), "{be:?}");
            assert_eq!(buf, p[..60], "{be:?}");
        }
        // the public functions (detected backend) give the same answer
        let mut b = [0u8; 16];
        assert_eq!(aes128_gcm_seal(&[0; 16], &[0; 12], &[], &mut b), hex::<16>("ab6e47d42cec13bdf53a67b21257bddf"));
    }

    // Generated with Node v20.20.2 (OpenSSL 3.0.19) crypto.createCipheriv('aes-128-gcm'):
    // AAD byte i = 7i+3, plaintext byte i = 13i+5 (mod 256); 33 + 100 bytes make partial last
    // blocks in both and a 4-block + 3-block CTR split.
    #[test]
    fn openssl_peer_vector_with_partial_blocks() {
        let key = hex::<16>("000102030405060708090a0b0c0d0e0f");
        let iv = hex::<12>("101112131415161718191a1b");
        let aad: Vec<u8> = (0..33u32).map(|i| (i * 7 + 3) as u8).collect();
        let pt: Vec<u8> = (0..100u32).map(|i| (i * 13 + 5) as u8).collect();
        let ct = hex_vec("c13c1c833609e58f7aa7da61668950f6ef5e9b7b3fe2488fb8817e75167b9a35776b9ef35840081ceebaf2fc9b9e0a73fc3a7eb750757838b6ffdab2968e6da01b0a4dc85b11ee3b633abd944c4f572963a09bb23095cda020f20443416e36ae74d23f94");
        let tag = hex::<16>("946cf79f96a79d117018bb8e699b7852");
        for be in test_backends() {
            let mut buf = pt.clone();
            assert_eq!(seal(be, &key, &iv, &aad, &mut buf), tag, "{be:?}");
            assert_eq!(buf, ct, "{be:?}");
            assert!(open(be, &key, &iv, &aad, &mut buf, &tag), "{be:?}");
            assert_eq!(buf, pt, "{be:?}");
        }
    }

    #[test]
    fn clmul_multiplier_matches_the_software_one() {
        if Backend::detect() != Backend::AesNi {
            std::eprintln!("no PCLMULQDQ on this CPU: the software multiplier alone is tested");
            return;
        }
        let mut x = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        let mut y = 0x66e9_4bd4_ef8a_2c3b_884c_fa59_ca34_2b2eu128; // GCM test case 2's H
        for _ in 0..1000 {
            assert_eq!(clmul::mul_checked(x, y), gf_mul_soft(x, y), "{x:#x} * {y:#x}");
            x = x.rotate_left(13) ^ y.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            y = y.rotate_right(7) ^ x;
        }
        for (a, b) in [(0, 0), (1 << 127, 1 << 127), (1, 1), (u128::MAX, u128::MAX), (1, u128::MAX)] {
            assert_eq!(clmul::mul_checked(a, b), gf_mul_soft(a, b), "{a:#x} * {b:#x}");
        }
    }

    #[test]
    fn software_multiplier_identities() {
        // 1 (bit 127 in this order) is the identity; x * x^127 = x^128 = x^7 + x^2 + x + 1.
        let one = 1u128 << 127;
        let h = 0x66e9_4bd4_ef8a_2c3b_884c_fa59_ca34_2b2eu128;
        assert_eq!(gf_mul_soft(one, h), h);
        assert_eq!(gf_mul_soft(h, one), h);
        assert_eq!(gf_mul_soft(1u128 << 126, 1), 0xe1 << 120);
        assert_eq!(reduce(0, 1 << 126), 0xe1 << 120, "reduce agrees: x^1 * x^127 as a raw product");
    }

    #[test]
    fn open_refuses_tampering() {
        for be in test_backends() {
            let key = [3u8; 16];
            let iv = [4u8; 12];
            let mut buf = *b"sealed secret!!!!";
            let t = seal(be, &key, &iv, b"hdr", &mut buf);
            let sealed = buf;
            let mut x = sealed;
            x[0] ^= 1;
            assert!(!open(be, &key, &iv, b"hdr", &mut x, &t));
            let mut x = sealed;
            assert!(!open(be, &key, &iv, b"hdx", &mut x, &t));
            assert_eq!(x, sealed, "left untouched on failure");
            assert!(!open(be, &[5; 16], &iv, b"hdr", &mut x, &t));
            let mut bad = t;
            bad[15] ^= 0x80;
            assert!(!open(be, &key, &iv, b"hdr", &mut x, &bad));
            assert!(open(be, &key, &iv, b"hdr", &mut x, &t));
            assert_eq!(&x, b"sealed secret!!!!");
        }
    }

    /// Throughput of each available backend, in-process (not a pass/fail test; no timing is
    /// asserted): `cargo test --release -p hyperenclave-core bench_backends -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_backends() {
        use crate::crypto::cmac::Cmac;
        use std::time::Instant;
        let key = [7u8; 16];
        let iv = [9u8; 12];
        let mut buf = std::vec![0x5au8; 4096];
        let mb = |bytes: usize, t: std::time::Duration| bytes as f64 / t.as_secs_f64() / 1e6;
        for be in test_backends() {
            let aes = Aes128::with_backend(&key, be).unwrap();
            let n = if be == Backend::Soft { 200 } else { 20000 };
            let mut blocks = [[0x11u8; 16]; 256];
            let t = Instant::now();
            for _ in 0..n {
                aes.encrypt_blocks(&mut blocks);
            }
            let ecb = mb(n * 4096, t.elapsed());
            let t = Instant::now();
            for _ in 0..n {
                core::hint::black_box(seal_with(&aes, &iv, b"aad", &mut buf));
            }
            let gcm = mb(n * 4096, t.elapsed());
            let t = Instant::now();
            for _ in 0..n {
                let mut c = Cmac::with_aes(aes.clone());
                c.update(&buf);
                core::hint::black_box(c.finalize());
            }
            let cmac = mb(n * 4096, t.elapsed());
            let t = Instant::now();
            for i in 0..n * 10 {
                core::hint::black_box(Aes128::with_backend(&[i as u8; 16], be).unwrap());
            }
            let setup_ns = t.elapsed().as_nanos() as f64 / (n * 10) as f64;
            std::println!("{:<36} AES-128 ECB {ecb:8.1} MB/s | GCM seal 4 KiB {gcm:8.1} MB/s | CMAC 4 KiB {cmac:8.1} MB/s | key setup {setup_ns:6.0} ns", be.name());
        }
    }
}
