//! AES-128 block encryption (FIPS 197). Only the forward cipher: CMAC, GCM and the key
//! derivations need nothing else.
//!
//! These keys are enclave secrets and the demoted host shares the caches, so no path here
//! indexes memory or branches on secret data. Two backends:
//!
//! - [`Backend::AesNi`]: AES-NI (and PCLMULQDQ for GHASH, see `gcm.rs`) through
//!   `core::arch::x86_64`, chosen when CPUID reports AES-NI, PCLMULQDQ, SSE2 and SSSE3.
//! - [`Backend::Soft`]: a constant-time software AES. SubBytes is Boyar and Peralta's depth-16
//!   S-box circuit (J. Boyar, R. Peralta, "A depth-16 circuit for the AES S-box", SEC 2012,
//!   eprint 2011/332: 34 AND + 94 XOR/XNOR gates), evaluated bitsliced on the eight bit planes
//!   of up to four blocks at once (64 S-boxes per gate); ShiftRows is a fixed byte permutation
//!   and MixColumns a SWAR `xtime` (shift, mask, multiply by a constant). No table, no
//!   secret-dependent branch or index.
//!
//! Why the software path is kept rather than refused: it is constant-time by construction, so
//! refusing CPUs without AES-NI would buy no security, only lose platforms: the enclave payloads
//! (built without SSE: the KVM here interprets guest code and has no SSE, and an enclave may not
//! execute CPUID at all) and QEMU's default `qemu64` CPU model, which lacks AES-NI. It is slower
//! (see `bench_backends`), and both paths are tested against the same FIPS 197 / SP 800-38A
//! vectors.
//!
//! Builds without SSE2 (the enclave payloads) never execute CPUID and always use the software
//! path.

/// Which implementation an [`Aes128`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AES-NI + PCLMULQDQ instructions.
    AesNi,
    /// Constant-time bitsliced software.
    Soft,
}

impl Backend {
    /// The backend this CPU supports: `AesNi` when CPUID reports AES-NI, PCLMULQDQ, SSE2 and
    /// SSSE3 (checked once, then cached), `Soft` otherwise and in builds without SSE2.
    pub fn detect() -> Backend {
        if ni::available() {
            Backend::AesNi
        } else {
            Backend::Soft
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::AesNi => "aes-ni+pclmulqdq",
            Backend::Soft => "constant-time software (bitsliced)",
        }
    }
}

/// Expanded AES-128 key (11 round keys) and the backend that encrypts with it.
#[derive(Clone)]
pub struct Aes128 {
    rk: [[u8; 16]; 11],
    // Invariant: AesNi only if `ni::available()` returned true (checked by every constructor).
    backend: Backend,
}

impl Aes128 {
    /// Expands `key` for the backend [`Backend::detect`] picks.
    pub fn new(key: &[u8; 16]) -> Self {
        Self::with_backend(key, Backend::detect()).expect("the detected backend is available")
    }

    /// Expands `key` for a given backend; `None` if `AesNi` is asked for on a CPU (or build)
    /// without it. Tests and benchmarks use this to run both paths.
    pub fn with_backend(key: &[u8; 16], backend: Backend) -> Option<Self> {
        let rk = match backend {
            Backend::AesNi => {
                if !ni::available() {
                    return None;
                }
                ni::expand(key)?
            }
            Backend::Soft => soft::expand(key),
        };
        Some(Self { rk, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn encrypt_block(&self, block: &mut [u8; 16]) {
        self.encrypt_blocks(core::slice::from_mut(block));
    }

    /// Encrypts each block independently (ECB on a slice: CTR and CMAC build on this); four at a
    /// time are interleaved (AES-NI) or bitsliced together (software).
    pub fn encrypt_blocks(&self, blocks: &mut [[u8; 16]]) {
        match self.backend {
            Backend::AesNi => ni::encrypt_blocks(&self.rk, blocks),
            Backend::Soft => {
                for chunk in blocks.chunks_mut(4) {
                    soft::encrypt_up_to_4(&self.rk, chunk);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn round_keys(&self) -> &[[u8; 16]; 11] {
        &self.rk
    }
}

pub(crate) fn xor16(a: &mut [u8; 16], b: &[u8; 16]) {
    for i in 0..16 {
        a[i] ^= b[i];
    }
}

/// Constant-time software AES-128.
mod soft {
    /// Bit-matrix transpose of an 8x8 block held in a u64 (byte r = row r, bit c = column c):
    /// afterwards byte c holds bit c of every input byte. An involution (Hacker's Delight 7-3).
    fn transpose8(mut x: u64) -> u64 {
        let t = (x ^ (x >> 7)) & 0x00aa_00aa_00aa_00aa;
        x ^= t ^ (t << 7);
        let t = (x ^ (x >> 14)) & 0x0000_cccc_0000_cccc;
        x ^= t ^ (t << 14);
        let t = (x ^ (x >> 28)) & 0x0000_0000_f0f0_f0f0;
        x ^ t ^ (t << 28)
    }

    /// The first `words` u64 words (8 bytes each) of `bytes` → 8 bit planes: bit k of plane j
    /// is bit j of byte k. `words` is public (the number of blocks).
    fn to_planes(bytes: &[u8; 64], words: usize) -> [u64; 8] {
        let mut planes = [0u64; 8];
        for w in 0..words {
            let t = transpose8(u64::from_le_bytes(bytes[8 * w..8 * w + 8].try_into().unwrap()));
            for (j, plane) in planes.iter_mut().enumerate() {
                *plane |= ((t >> (8 * j)) & 0xff) << (8 * w);
            }
        }
        planes
    }

    fn from_planes(planes: &[u64; 8], words: usize) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        for w in 0..words {
            let mut t = 0u64;
            for (j, plane) in planes.iter().enumerate() {
                t |= ((plane >> (8 * w)) & 0xff) << (8 * j);
            }
            bytes[8 * w..8 * w + 8].copy_from_slice(&transpose8(t).to_le_bytes());
        }
        bytes
    }

    /// The AES S-box on 64 bytes at once: Boyar–Peralta's depth-16 circuit (eprint 2011/332:
    /// top linear, shared non-linear middle, bottom linear), gate for gate, on bit planes. Their
    /// U0..U7 are the input bits from the most significant down (U0 = plane 7) and S0..S7 the
    /// output bits likewise; XNOR is written `^ !`.
    fn sub_bytes_planes(p: &mut [u64; 8]) {
        let (u0, u1, u2, u3, u4, u5, u6, u7) = (p[7], p[6], p[5], p[4], p[3], p[2], p[1], p[0]);
        // top linear transform
        let t1 = u0 ^ u3;
        let t2 = u0 ^ u5;
        let t3 = u0 ^ u6;
        let t4 = u3 ^ u5;
        let t5 = u4 ^ u6;
        let t6 = t1 ^ t5;
        let t7 = u1 ^ u2;
        let t8 = u7 ^ t6;
        let t9 = u7 ^ t7;
        let t10 = t6 ^ t7;
        let t11 = u1 ^ u5;
        let t12 = u2 ^ u5;
        let t13 = t3 ^ t4;
        let t14 = t6 ^ t11;
        let t15 = t5 ^ t11;
        let t16 = t5 ^ t12;
        let t17 = t9 ^ t16;
        let t18 = u3 ^ u7;
        let t19 = t7 ^ t18;
        let t20 = t1 ^ t19;
        let t21 = u6 ^ u7;
        let t22 = t7 ^ t21;
        let t23 = t2 ^ t22;
        let t24 = t2 ^ t10;
        let t25 = t20 ^ t17;
        let t26 = t3 ^ t16;
        let t27 = t1 ^ t12;
        // shared non-linear middle (GF(2^4) inversion)
        let m1 = t13 & t6;
        let m2 = t23 & t8;
        let m3 = t14 ^ m1;
        let m4 = t19 & u7;
        let m5 = m4 ^ m1;
        let m6 = t3 & t16;
        let m7 = t22 & t9;
        let m8 = t26 ^ m6;
        let m9 = t20 & t17;
        let m10 = m9 ^ m6;
        let m11 = t1 & t15;
        let m12 = t4 & t27;
        let m13 = m12 ^ m11;
        let m14 = t2 & t10;
        let m15 = m14 ^ m11;
        let m16 = m3 ^ m2;
        let m17 = m5 ^ t24;
        let m18 = m8 ^ m7;
        let m19 = m10 ^ m15;
        let m20 = m16 ^ m13;
        let m21 = m17 ^ m15;
        let m22 = m18 ^ m13;
        let m23 = m19 ^ t25;
        let m24 = m22 ^ m23;
        let m25 = m22 & m20;
        let m26 = m21 ^ m25;
        let m27 = m20 ^ m21;
        let m28 = m23 ^ m25;
        let m29 = m28 & m27;
        let m30 = m26 & m24;
        let m31 = m20 & m23;
        let m32 = m27 & m31;
        let m33 = m27 ^ m25;
        let m34 = m21 & m22;
        let m35 = m24 & m34;
        let m36 = m24 ^ m25;
        let m37 = m21 ^ m29;
        let m38 = m32 ^ m33;
        let m39 = m23 ^ m30;
        let m40 = m35 ^ m36;
        let m41 = m38 ^ m40;
        let m42 = m37 ^ m39;
        let m43 = m37 ^ m38;
        let m44 = m39 ^ m40;
        let m45 = m42 ^ m41;
        let m46 = m44 & t6;
        let m47 = m40 & t8;
        let m48 = m39 & u7;
        let m49 = m43 & t16;
        let m50 = m38 & t9;
        let m51 = m37 & t17;
        let m52 = m42 & t15;
        let m53 = m45 & t27;
        let m54 = m41 & t10;
        let m55 = m44 & t13;
        let m56 = m40 & t23;
        let m57 = m39 & t19;
        let m58 = m43 & t3;
        let m59 = m38 & t22;
        let m60 = m37 & t20;
        let m61 = m42 & t1;
        let m62 = m45 & t4;
        let m63 = m41 & t2;
        // bottom linear transform (with the affine constant 0x63 as XNORs)
        let l0 = m61 ^ m62;
        let l1 = m50 ^ m56;
        let l2 = m46 ^ m48;
        let l3 = m47 ^ m55;
        let l4 = m54 ^ m58;
        let l5 = m49 ^ m61;
        let l6 = m62 ^ l5;
        let l7 = m46 ^ l3;
        let l8 = m51 ^ m59;
        let l9 = m52 ^ m53;
        let l10 = m53 ^ l4;
        let l11 = m60 ^ l2;
        let l12 = m48 ^ m51;
        let l13 = m50 ^ l0;
        let l14 = m52 ^ m61;
        let l15 = m55 ^ l1;
        let l16 = m56 ^ l0;
        let l17 = m57 ^ l1;
        let l18 = m58 ^ l8;
        let l19 = m63 ^ l4;
        let l20 = l0 ^ l1;
        let l21 = l1 ^ l7;
        let l22 = l3 ^ l12;
        let l23 = l18 ^ l2;
        let l24 = l15 ^ l9;
        let l25 = l6 ^ l10;
        let l26 = l7 ^ l9;
        let l27 = l8 ^ l10;
        let l28 = l11 ^ l14;
        let l29 = l11 ^ l17;
        let s0 = l6 ^ l24;
        let s1 = !(l16 ^ l26);
        let s2 = !(l19 ^ l28);
        let s3 = l6 ^ l21;
        let s4 = l20 ^ l22;
        let s5 = l25 ^ l29;
        let s6 = !(l13 ^ l27);
        let s7 = !(l6 ^ l23);
        *p = [s7, s6, s5, s4, s3, s2, s1, s0];
    }

    /// SubBytes on the first `words` x 8 bytes of `bytes` (the rest comes back zero).
    fn sub_bytes(bytes: &mut [u8; 64], words: usize) {
        let mut planes = to_planes(bytes, words);
        sub_bytes_planes(&mut planes);
        *bytes = from_planes(&planes, words);
    }

    /// S-box of every byte of `w` (key schedule SubWord).
    fn sub_word(w: [u8; 4]) -> [u8; 4] {
        let mut b = [0u8; 64];
        b[..4].copy_from_slice(&w);
        sub_bytes(&mut b, 1);
        [b[0], b[1], b[2], b[3]]
    }

    /// Multiplies each byte of `x` by 2 in GF(2^8): shift, then the reduction 0x1b selected by
    /// a multiply of the carried-out bit (no branch).
    fn xtime4(x: u32) -> u32 {
        ((x & 0x7f7f_7f7f) << 1) ^ (((x >> 7) & 0x0101_0101) * 0x1b)
    }

    pub(super) fn expand(key: &[u8; 16]) -> [[u8; 16]; 11] {
        let mut rk = [[0u8; 16]; 11];
        rk[0] = *key;
        let mut rcon = 1u8;
        for r in 1..11 {
            let prev = rk[r - 1];
            let mut t = sub_word([prev[13], prev[14], prev[15], prev[12]]);
            t[0] ^= rcon;
            // rcon is public: the schedule's constants, not key material.
            rcon = (rcon << 1) ^ if rcon & 0x80 != 0 { 0x1b } else { 0 };
            for c in 0..4 {
                for i in 0..4 {
                    let v = prev[4 * c + i] ^ t[i];
                    rk[r][4 * c + i] = v;
                    t[i] = v;
                }
            }
        }
        rk
    }

    /// Encrypts 1 to 4 blocks together (bitsliced SubBytes covers all of them).
    pub(super) fn encrypt_up_to_4(rk: &[[u8; 16]; 11], blocks: &mut [[u8; 16]]) {
        debug_assert!(!blocks.is_empty() && blocks.len() <= 4);
        let n = blocks.len();
        let mut s = [0u8; 64];
        for (i, b) in blocks.iter().enumerate() {
            s[16 * i..16 * i + 16].copy_from_slice(b);
            for j in 0..16 {
                s[16 * i + j] ^= rk[0][j];
            }
        }
        for (round, k) in rk.iter().enumerate().skip(1) {
            sub_bytes(&mut s, 2 * n);
            for i in 0..n {
                let b = &mut s[16 * i..16 * i + 16];
                // ShiftRows: state is column-major, byte (row r, col c) at 4c + r; the
                // permutation is fixed (public indices).
                let t: [u8; 16] = b.try_into().unwrap();
                for c in 0..4 {
                    for r in 0..4 {
                        b[4 * c + r] = t[4 * ((c + r) % 4) + r];
                    }
                }
                for c in 0..4 {
                    let col = &mut b[4 * c..4 * c + 4];
                    let mut x = u32::from_le_bytes(col.try_into().unwrap());
                    if round != 10 {
                        // MixColumns: out_r = 2a_r ^ 3a_(r+1) ^ a_(r+2) ^ a_(r+3)
                        let r1 = x.rotate_right(8);
                        x = xtime4(x ^ r1) ^ r1 ^ x.rotate_right(16) ^ x.rotate_right(24);
                    }
                    x ^= u32::from_le_bytes(k[4 * c..4 * c + 4].try_into().unwrap());
                    col.copy_from_slice(&x.to_le_bytes());
                }
            }
        }
        for (i, b) in blocks.iter_mut().enumerate() {
            b.copy_from_slice(&s[16 * i..16 * i + 16]);
        }
    }

    #[cfg(test)]
    pub(super) fn sbox_all() -> [u8; 256] {
        let mut out = [0u8; 256];
        for q in 0..4 {
            let mut b = [0u8; 64];
            for (i, v) in b.iter_mut().enumerate() {
                *v = (64 * q + i) as u8;
            }
            sub_bytes(&mut b, 8);
            out[64 * q..64 * q + 64].copy_from_slice(&b);
        }
        out
    }

    #[cfg(test)]
    pub(super) fn transpose_roundtrip(bytes: &[u8; 64]) -> ([u64; 8], [u8; 64]) {
        let p = to_planes(bytes, 8);
        (p, from_planes(&p, 8))
    }
}

/// AES-NI backend. Compiled only where SSE2 is part of the build (the hypervisor image, the host
/// builds); elsewhere `available()` is a constant `false` and nothing here exists.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod ni {
    use core::arch::x86_64::*;
    use core::sync::atomic::{AtomicU8, Ordering};

    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;
    static DETECTED: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// CPUID.1: ECX[25] AES, ECX[1] PCLMULQDQ, ECX[9] SSSE3, EDX[26] SSE2. Cached; a race only
    /// runs CPUID twice.
    pub(super) fn available() -> bool {
        match DETECTED.load(Ordering::Relaxed) {
            YES => true,
            NO => false,
            _ => {
                // CPUID is always present in 64-bit mode and has no side effects.
                let r = __cpuid(1);
                let ok = r.ecx & (1 << 25) != 0 && r.ecx & (1 << 1) != 0 && r.ecx & (1 << 9) != 0 && r.edx & (1 << 26) != 0;
                DETECTED.store(if ok { YES } else { NO }, Ordering::Relaxed);
                ok
            }
        }
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    fn load(b: &[u8; 16]) -> __m128i {
        // SAFETY: `b` is 16 readable bytes and loadu has no alignment requirement.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    fn store(b: &mut [u8; 16], v: __m128i) {
        // SAFETY: `b` is 16 writable bytes and storeu has no alignment requirement.
        unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
    }

    #[target_feature(enable = "aes,pclmulqdq,sse2,ssse3")]
    fn expand_ni(key: &[u8; 16]) -> [[u8; 16]; 11] {
        // FIPS 197 key expansion: w[4i..4i+4] = previous round key prefix-XORed, XOR
        // RotWord(SubWord(last word)) ^ rcon, which AESKEYGENASSIST computes in dword 3.
        let mut out = [[0u8; 16]; 11];
        let mut k = load(key);
        store(&mut out[0], k);
        macro_rules! round {
            ($i:expr, $rcon:expr) => {
                let t = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(k));
                k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
                k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
                k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
                k = _mm_xor_si128(k, t);
                store(&mut out[$i], k);
            };
        }
        round!(1, 0x01);
        round!(2, 0x02);
        round!(3, 0x04);
        round!(4, 0x08);
        round!(5, 0x10);
        round!(6, 0x20);
        round!(7, 0x40);
        round!(8, 0x80);
        round!(9, 0x1b);
        round!(10, 0x36);
        out
    }

    pub(super) fn expand(key: &[u8; 16]) -> Option<[[u8; 16]; 11]> {
        if !available() {
            return None;
        }
        // SAFETY: available() saw AES-NI, PCLMULQDQ, SSE2 and SSSE3 in CPUID.1, the features
        // expand_ni is compiled for.
        Some(unsafe { expand_ni(key) })
    }

    #[target_feature(enable = "aes,pclmulqdq,sse2,ssse3")]
    fn encrypt_blocks_ni(rk: &[[u8; 16]; 11], blocks: &mut [[u8; 16]]) {
        let mut k = [_mm_setzero_si128(); 11];
        for (ki, r) in k.iter_mut().zip(rk) {
            *ki = load(r);
        }
        let mut chunks = blocks.chunks_exact_mut(4);
        for c in &mut chunks {
            // four independent blocks keep the AES unit's pipeline busy
            let mut s = [load(&c[0]), load(&c[1]), load(&c[2]), load(&c[3])];
            for v in s.iter_mut() {
                *v = _mm_xor_si128(*v, k[0]);
            }
            for ki in &k[1..10] {
                for v in s.iter_mut() {
                    *v = _mm_aesenc_si128(*v, *ki);
                }
            }
            for (b, v) in c.iter_mut().zip(s) {
                store(b, _mm_aesenclast_si128(v, k[10]));
            }
        }
        for b in chunks.into_remainder() {
            let mut v = _mm_xor_si128(load(b), k[0]);
            for ki in &k[1..10] {
                v = _mm_aesenc_si128(v, *ki);
            }
            store(b, _mm_aesenclast_si128(v, k[10]));
        }
    }

    pub(super) fn encrypt_blocks(rk: &[[u8; 16]; 11], blocks: &mut [[u8; 16]]) {
        // Only reached through an Aes128 whose backend is AesNi, which its constructor grants
        // only after available() returned true; checked again here (a cached load) so this
        // function is sound on its own.
        assert!(available(), "AES-NI backend used on a CPU without AES-NI");
        // SAFETY: available() saw AES-NI, PCLMULQDQ, SSE2 and SSSE3 in CPUID.1.
        unsafe { encrypt_blocks_ni(rk, blocks) }
    }
}

/// No SSE2 in this build (the enclave payloads): the software backend only, and no CPUID.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod ni {
    pub(super) fn available() -> bool {
        false
    }
    pub(super) fn expand(_key: &[u8; 16]) -> Option<[[u8; 16]; 11]> {
        None
    }
    pub(super) fn encrypt_blocks(_rk: &[[u8; 16]; 11], _blocks: &mut [[u8; 16]]) {
        unreachable!("no AES-NI backend in a build without SSE2")
    }
}

#[cfg(test)]
extern crate std;

/// Both backends when this CPU has AES-NI, the software one alone otherwise (tests use this to
/// exercise every available path).
#[cfg(test)]
pub(crate) fn test_backends() -> std::vec::Vec<Backend> {
    let mut v = std::vec![Backend::Soft];
    if Backend::detect() == Backend::AesNi {
        v.push(Backend::AesNi);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_util::{hex, hex_vec};

    /// The S-box by its definition (FIPS 197 5.1.1): multiplicative inverse in GF(2^8) mod
    /// x^8+x^4+x^3+x+1, then the affine map; an independent (slow, variable-time) reference.
    fn sbox_by_definition(x: u8) -> u8 {
        fn mul(mut a: u8, mut b: u8) -> u8 {
            let mut p = 0u8;
            while b != 0 {
                if b & 1 != 0 {
                    p ^= a;
                }
                a = (a << 1) ^ if a & 0x80 != 0 { 0x1b } else { 0 };
                b >>= 1;
            }
            p
        }
        let inv = (1..=255u8).find(|&y| mul(x, y) == 1).unwrap_or(0);
        inv ^ inv.rotate_left(1) ^ inv.rotate_left(2) ^ inv.rotate_left(3) ^ inv.rotate_left(4) ^ 0x63
    }

    #[test]
    fn soft_sbox_circuit_matches_definition_for_all_256_bytes() {
        let s = soft::sbox_all();
        // FIPS 197 figure 7 spot values
        assert_eq!(s[0x00], 0x63);
        assert_eq!(s[0x01], 0x7c);
        assert_eq!(s[0x53], 0xed);
        assert_eq!(s[0x9a], 0xb8);
        assert_eq!(s[0xff], 0x16);
        for x in 0..=255u8 {
            assert_eq!(s[x as usize], sbox_by_definition(x), "S-box({x:#04x})");
        }
    }

    #[test]
    fn bit_planes_roundtrip_and_layout() {
        let mut b = [0u8; 64];
        for (i, v) in b.iter_mut().enumerate() {
            *v = (i as u8).wrapping_mul(37) ^ 0xa5;
        }
        let (planes, back) = soft::transpose_roundtrip(&b);
        assert_eq!(back, b);
        for (k, byte) in b.iter().enumerate() {
            for (j, plane) in planes.iter().enumerate() {
                assert_eq!((plane >> k) & 1, ((byte >> j) & 1) as u64, "byte {k} bit {j}");
            }
        }
    }

    fn encrypt(backend: Backend, key: &str, pt: &str) -> [u8; 16] {
        let aes = Aes128::with_backend(&hex::<16>(key), backend).unwrap();
        assert_eq!(aes.backend(), backend);
        let mut b = hex::<16>(pt);
        aes.encrypt_block(&mut b);
        b
    }

    // FIPS 197 appendix C.1 (AES-128) and appendix B, on every available backend.
    #[test]
    fn fips197_vectors() {
        for be in test_backends() {
            assert_eq!(encrypt(be, "000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff"), hex::<16>("69c4e0d86a7b0430d8cdb78070b4c55a"), "{be:?}");
            assert_eq!(encrypt(be, "2b7e151628aed2a6abf7158809cf4f3c", "3243f6a8885a308d313198a2e0370734"), hex::<16>("3925841d02dc09fbdc118597196a0b32"), "{be:?}");
        }
    }

    // FIPS 197 appendix A.1: the expanded key of 2b7e1516…, round keys 1, 2 and 10.
    #[test]
    fn fips197_key_expansion() {
        for be in test_backends() {
            let aes = Aes128::with_backend(&hex::<16>("2b7e151628aed2a6abf7158809cf4f3c"), be).unwrap();
            let rk = aes.round_keys();
            assert_eq!(rk[1], hex::<16>("a0fafe1788542cb123a339392a6c7605"), "{be:?}");
            assert_eq!(rk[2], hex::<16>("f2c295f27a96b9435935807a7359f67f"), "{be:?}");
            assert_eq!(rk[10], hex::<16>("d014f9a8c9ee2589e13f0cc8b6630ca6"), "{be:?}");
        }
    }

    // NIST SP 800-38A F.1.1 ECB-AES128.Encrypt: four blocks (also through encrypt_blocks with
    // 1..=9 blocks, so the 4-wide paths and their remainders are all exercised).
    #[test]
    fn sp800_38a_ecb_vectors() {
        let key = hex::<16>("2b7e151628aed2a6abf7158809cf4f3c");
        let pt = [
            "6bc1bee22e409f96e93d7e117393172a",
            "ae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52ef",
            "f69f2445df4f9b17ad2b417be66c3710",
        ];
        let ct = [
            "3ad77bb40d7a3660a89ecaf32466ef97",
            "f5d3d58503b9699de785895a96fdbaaf",
            "43b1cd7f598ece23881b00e3ed030688",
            "7b0c785e27e8ad3f8223207104725dd4",
        ];
        for be in test_backends() {
            for (p, c) in pt.iter().zip(ct) {
                assert_eq!(encrypt(be, "2b7e151628aed2a6abf7158809cf4f3c", p), hex::<16>(c), "{be:?}");
            }
            let aes = Aes128::with_backend(&key, be).unwrap();
            for n in 1..=9 {
                let mut blocks: std::vec::Vec<[u8; 16]> = (0..n).map(|i| hex::<16>(pt[i % 4])).collect();
                aes.encrypt_blocks(&mut blocks);
                for (i, b) in blocks.iter().enumerate() {
                    assert_eq!(*b, hex::<16>(ct[i % 4]), "{be:?}: {n} blocks, block {i}");
                }
            }
        }
    }

    // NIST SP 800-38A F.5.1 CTR-AES128.Encrypt (counter block f0f1…feff, incremented).
    #[test]
    fn sp800_38a_ctr_vector() {
        let pt = hex_vec("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710");
        let ct = hex_vec("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee");
        for be in test_backends() {
            let aes = Aes128::with_backend(&hex::<16>("2b7e151628aed2a6abf7158809cf4f3c"), be).unwrap();
            let ctr0 = u128::from_be_bytes(hex::<16>("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"));
            let mut ks: std::vec::Vec<[u8; 16]> = (0..4u128).map(|i| ctr0.wrapping_add(i).to_be_bytes()).collect();
            aes.encrypt_blocks(&mut ks);
            let out: std::vec::Vec<u8> = pt.iter().zip(ks.iter().flatten()).map(|(p, k)| p ^ k).collect();
            assert_eq!(out, ct, "{be:?}");
        }
    }

    #[test]
    fn backends_agree_on_many_keys_and_blocks() {
        let backends = test_backends();
        let mut key = [0u8; 16];
        let mut blocks = [[0u8; 16]; 7];
        for round in 0..64u8 {
            for (i, k) in key.iter_mut().enumerate() {
                *k = k.wrapping_mul(31).wrapping_add(round ^ i as u8);
            }
            for (j, b) in blocks.iter_mut().enumerate() {
                b[j] ^= round;
            }
            let mut expected = blocks;
            Aes128::with_backend(&key, Backend::Soft).unwrap().encrypt_blocks(&mut expected);
            for be in &backends {
                let mut got = blocks;
                Aes128::with_backend(&key, *be).unwrap().encrypt_blocks(&mut got);
                assert_eq!(got, expected, "{be:?} round {round}");
            }
            blocks = expected;
        }
    }

    #[test]
    fn detection_is_consistent() {
        let be = Backend::detect();
        assert_eq!(Aes128::new(&[0; 16]).backend(), be);
        // AES-NI is granted only when detected; the software backend is always there.
        assert_eq!(Aes128::with_backend(&[0; 16], Backend::AesNi).is_some(), be == Backend::AesNi);
        assert!(Aes128::with_backend(&[0; 16], Backend::Soft).is_some());
    }
}
