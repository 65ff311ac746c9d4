//! Ed25519 signing (RFC 8032 §5.1, "pure" Ed25519), written for the core: field arithmetic
//! modulo p = 2^255 - 19 in five 51-bit limbs, points in extended twisted-Edwards coordinates
//! with the complete addition law (add-2008-hwcd-3, a = -1), and a fixed 4-bit-window scalar
//! multiplication whose table lookups read every entry and select with masks. Nothing branches
//! on or indexes by a secret; the only data-dependent loop exits are on public constants (the
//! exponent p - 2, the loop counts). Only signing and public-key derivation are provided: the
//! hypervisor never verifies Ed25519 (verifiers use their own library, e.g. Node's crypto).

use super::sha512::Sha512;

const MASK: u64 = (1 << 51) - 1;

/// Field element modulo 2^255 - 19, limbs of 51 bits (value = Σ l[i]·2^(51·i)).
#[derive(Clone, Copy)]
struct Fe([u64; 5]);

const FE_ZERO: Fe = Fe([0; 5]);
const FE_ONE: Fe = Fe([1, 0, 0, 0, 0]);
/// 2·d with d = -121665/121666 (RFC 8032 §5.1).
const FE_D2: Fe = Fe([1859910466990425, 932731440258426, 1072319116312658, 1815898335770999, 633789495995903]);
/// The base point B = (x, 4/5) with x even (RFC 8032 §5.1), and T = x·y.
const B_X: Fe = Fe([1738742601995546, 1146398526822698, 2070867633025821, 562264141797630, 587772402128613]);
const B_Y: Fe = Fe([1801439850948184, 1351079888211148, 450359962737049, 900719925474099, 1801439850948198]);
const B_T: Fe = Fe([1841354044333475, 16398895984059, 755974180946558, 900171276175154, 1821297809914039]);

impl Fe {
    #[cfg(test)]
    fn from_bytes(b: &[u8; 32]) -> Fe {
        let le = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        Fe([le(0) & MASK, (le(6) >> 3) & MASK, (le(12) >> 6) & MASK, (le(19) >> 1) & MASK, (le(24) >> 12) & MASK])
    }

    /// Weak reduction: every limb below 2^51 + 2^13·19.
    fn carry(mut l: [u64; 5]) -> Fe {
        let c0 = l[0] >> 51;
        let c1 = l[1] >> 51;
        let c2 = l[2] >> 51;
        let c3 = l[3] >> 51;
        let c4 = l[4] >> 51;
        l[0] &= MASK;
        l[1] &= MASK;
        l[2] &= MASK;
        l[3] &= MASK;
        l[4] &= MASK;
        l[0] += c4 * 19;
        l[1] += c0;
        l[2] += c1;
        l[3] += c2;
        l[4] += c3;
        Fe(l)
    }

    /// The canonical 32-byte little-endian encoding (fully reduced below p).
    fn to_bytes(self) -> [u8; 32] {
        let mut l = Fe::carry(self.0).0;
        // q = 1 when the value is >= p (the value is below 2p after the weak reduction)
        let mut q = (l[0] + 19) >> 51;
        q = (l[1] + q) >> 51;
        q = (l[2] + q) >> 51;
        q = (l[3] + q) >> 51;
        q = (l[4] + q) >> 51;
        l[0] += 19 * q;
        l[1] += l[0] >> 51;
        l[0] &= MASK;
        l[2] += l[1] >> 51;
        l[1] &= MASK;
        l[3] += l[2] >> 51;
        l[2] &= MASK;
        l[4] += l[3] >> 51;
        l[3] &= MASK;
        l[4] &= MASK;
        let w = [l[0] | l[1] << 51, l[1] >> 13 | l[2] << 38, l[2] >> 26 | l[3] << 25, l[3] >> 39 | l[4] << 12];
        let mut out = [0u8; 32];
        for (i, x) in w.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
        }
        out
    }

    fn add(&self, b: &Fe) -> Fe {
        let a = &self.0;
        Fe::carry([a[0] + b.0[0], a[1] + b.0[1], a[2] + b.0[2], a[3] + b.0[3], a[4] + b.0[4]])
    }

    /// a - b, computed as a + 16p - b (limbs of b below 2^55).
    fn sub(&self, b: &Fe) -> Fe {
        const P16_0: u64 = 36028797018963664; // 16 · (2^51 - 19)
        const P16: u64 = 36028797018963952; // 16 · (2^51 - 1)
        let a = &self.0;
        Fe::carry([
            (a[0] + P16_0) - b.0[0],
            (a[1] + P16) - b.0[1],
            (a[2] + P16) - b.0[2],
            (a[3] + P16) - b.0[3],
            (a[4] + P16) - b.0[4],
        ])
    }

    fn mul(&self, b: &Fe) -> Fe {
        let m = |x: u64, y: u64| (x as u128) * (y as u128);
        let a = &self.0;
        let b = &b.0;
        let (b1, b2, b3, b4) = (b[1] * 19, b[2] * 19, b[3] * 19, b[4] * 19);
        let c0 = m(a[0], b[0]) + m(a[4], b1) + m(a[3], b2) + m(a[2], b3) + m(a[1], b4);
        let mut c1 = m(a[1], b[0]) + m(a[0], b[1]) + m(a[4], b2) + m(a[3], b3) + m(a[2], b4);
        let mut c2 = m(a[2], b[0]) + m(a[1], b[1]) + m(a[0], b[2]) + m(a[4], b3) + m(a[3], b4);
        let mut c3 = m(a[3], b[0]) + m(a[2], b[1]) + m(a[1], b[2]) + m(a[0], b[3]) + m(a[4], b4);
        let mut c4 = m(a[4], b[0]) + m(a[3], b[1]) + m(a[2], b[2]) + m(a[1], b[3]) + m(a[0], b[4]);
        c1 += c0 >> 51;
        let mut l0 = (c0 as u64) & MASK;
        c2 += c1 >> 51;
        let l1 = (c1 as u64) & MASK;
        c3 += c2 >> 51;
        let l2 = (c2 as u64) & MASK;
        c4 += c3 >> 51;
        let l3 = (c3 as u64) & MASK;
        let carry = (c4 >> 51) as u64;
        let l4 = (c4 as u64) & MASK;
        l0 += carry * 19;
        let l1 = l1 + (l0 >> 51);
        l0 &= MASK;
        Fe([l0, l1, l2, l3, l4])
    }

    fn square(&self) -> Fe {
        self.mul(self)
    }

    /// self^(p-2) = 1/self (0 for 0). The exponent is a public constant: its bits choose the
    /// multiplications, the value never does.
    fn invert(&self) -> Fe {
        // p - 2 = 2^255 - 21: bits 0..254 set except bits 2 and 4
        let mut r = FE_ONE;
        for i in (0..255).rev() {
            r = r.square();
            if i != 2 && i != 4 {
                r = r.mul(self);
            }
        }
        r
    }

    /// Replaces self by `other` when `mask` is all ones, keeps it when 0.
    fn cmov(&mut self, other: &Fe, mask: u64) {
        for i in 0..5 {
            self.0[i] ^= mask & (self.0[i] ^ other.0[i]);
        }
    }
}

/// A point in extended coordinates: x = X/Z, y = Y/Z, x·y = T/Z.
#[derive(Clone, Copy)]
struct Point {
    x: Fe,
    y: Fe,
    z: Fe,
    t: Fe,
}

const IDENTITY: Point = Point { x: FE_ZERO, y: FE_ONE, z: FE_ONE, t: FE_ZERO };
const BASE: Point = Point { x: B_X, y: B_Y, z: FE_ONE, t: B_T };

impl Point {
    /// Complete addition (Hisil-Wong-Carter-Dawson 2008, "add-2008-hwcd-3", a = -1): also
    /// correct for doubling and the identity, so the ladder below has no special cases.
    fn add(&self, q: &Point) -> Point {
        let a = self.y.sub(&self.x).mul(&q.y.sub(&q.x));
        let b = self.y.add(&self.x).mul(&q.y.add(&q.x));
        let c = self.t.mul(&FE_D2).mul(&q.t);
        let zz = self.z.mul(&q.z);
        let d = zz.add(&zz);
        let e = b.sub(&a);
        let f = d.sub(&c);
        let g = d.add(&c);
        let h = b.add(&a);
        Point { x: e.mul(&f), y: g.mul(&h), t: e.mul(&h), z: f.mul(&g) }
    }

    /// Doubling (Hisil-Wong-Carter-Dawson 2008, "dbl-2008-hwcd" with a = -1): 4 squarings and
    /// 4 multiplications instead of the addition law's 9; exception-free (the identity doubles
    /// to itself).
    fn double(&self) -> Point {
        let a = self.x.square();
        let b = self.y.square();
        let zz = self.z.square();
        let c = zz.add(&zz);
        let xy = self.x.add(&self.y);
        let e = xy.square().sub(&a).sub(&b);
        let g = b.sub(&a); // D + B with D = -A
        let f = g.sub(&c);
        let h = FE_ZERO.sub(&a).sub(&b); // D - B
        Point { x: e.mul(&f), y: g.mul(&h), t: e.mul(&h), z: f.mul(&g) }
    }

    fn cmov(&mut self, other: &Point, mask: u64) {
        self.x.cmov(&other.x, mask);
        self.y.cmov(&other.y, mask);
        self.z.cmov(&other.z, mask);
        self.t.cmov(&other.t, mask);
    }

    /// RFC 8032 §5.1.2 encoding: y, with the low bit of x in bit 255.
    fn encode(&self) -> [u8; 32] {
        let zi = self.z.invert();
        let x = self.x.mul(&zi).to_bytes();
        let mut y = self.y.mul(&zi).to_bytes();
        y[31] ^= (x[0] & 1) << 7;
        y
    }
}

/// All ones when a == b, 0 otherwise, without a branch.
fn ct_eq_mask(a: u64, b: u64) -> u64 {
    let x = a ^ b;
    let nonzero = (x | x.wrapping_neg()) >> 63; // 1 when x != 0
    core::hint::black_box(nonzero).wrapping_sub(1)
}

/// scalar·B for a 256-bit little-endian scalar: 64 windows of 4 bits from the top; each window
/// doubles four times and adds table[nibble] (complete addition, so table[0] = identity needs no
/// branch), where the lookup reads all 16 entries.
fn mul_base(scalar: &[u8; 32]) -> Point {
    let mut table = [IDENTITY; 16];
    for j in 1..16 {
        table[j] = table[j - 1].add(&BASE);
    }
    let mut r = IDENTITY;
    for i in (0..64).rev() {
        for _ in 0..4 {
            r = r.double();
        }
        let nib = ((scalar[i / 2] >> (4 * (i % 2))) & 0xf) as u64;
        let mut sel = IDENTITY;
        for (j, t) in table.iter().enumerate() {
            sel.cmov(t, ct_eq_mask(j as u64, nib));
        }
        r = r.add(&sel);
    }
    r
}

/// L = 2^252 + 27742317777372353535851937790883648493, little-endian 64-bit limbs.
const L: [u64; 4] = [0x5812631a5cf5d3ed, 0x14def9dea2f79cd6, 0, 0x1000000000000000];

/// A little-endian number of 8·N bytes (as u64 limbs) modulo L, one bit at a time with a masked
/// conditional subtraction (constant time; 512 steps for a SHA-512 output).
fn mod_l(limbs: &[u64]) -> [u64; 4] {
    let mut r = [0u64; 4];
    for i in (0..limbs.len() * 64).rev() {
        let bit = (limbs[i / 64] >> (i % 64)) & 1;
        // r = 2r + bit (r < L < 2^253, so no overflow)
        r[3] = r[3] << 1 | r[2] >> 63;
        r[2] = r[2] << 1 | r[1] >> 63;
        r[1] = r[1] << 1 | r[0] >> 63;
        r[0] = r[0] << 1 | bit;
        // t = r - L; keep it when there was no borrow
        let mut t = [0u64; 4];
        let mut borrow = 0u64;
        for k in 0..4 {
            let (d1, b1) = r[k].overflowing_sub(L[k]);
            let (d2, b2) = d1.overflowing_sub(borrow);
            t[k] = d2;
            borrow = (b1 | b2) as u64;
        }
        let keep_t = core::hint::black_box(borrow).wrapping_sub(1); // all ones when no borrow
        for k in 0..4 {
            r[k] ^= keep_t & (r[k] ^ t[k]);
        }
    }
    r
}

fn limbs_of<const N: usize>(b: &[u8]) -> [u64; N] {
    core::array::from_fn(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()))
}

fn bytes_of(l: &[u64; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, x) in l.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// (a·b + c) mod L for 256-bit a, b and c (schoolbook product, then `mod_l`).
fn mul_add_mod_l(a: &[u64; 4], b: &[u64; 4], c: &[u64; 4]) -> [u64; 4] {
    let mut p = [0u64; 9];
    for i in 0..4 {
        let mut carry = 0u128;
        for j in 0..4 {
            let v = (a[i] as u128) * (b[j] as u128) + p[i + j] as u128 + carry;
            p[i + j] = v as u64;
            carry = v >> 64;
        }
        p[i + 4] = carry as u64;
    }
    let mut carry = 0u128;
    for k in 0..9 {
        let v = p[k] as u128 + if k < 4 { c[k] as u128 } else { 0 } + carry;
        p[k] = v as u64;
        carry = v >> 64;
    }
    mod_l(&p)
}

/// Overwrites a secret with zeros in a way the compiler keeps.
pub fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference into `buf`.
        unsafe { core::ptr::write_volatile(b, 0) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

fn wipe_words(w: &mut [u64]) {
    for x in w.iter_mut() {
        // SAFETY: `x` is a valid, aligned, exclusive reference into `w`.
        unsafe { core::ptr::write_volatile(x, 0) };
    }
}

/// An Ed25519 signing key (RFC 8032 §5.1.5): the clamped scalar, the prefix and the public key.
/// Dropping it wipes the secret parts.
pub struct SigningKey {
    scalar: [u8; 32],
    prefix: [u8; 32],
    public: [u8; 32],
}

impl SigningKey {
    /// From the 32-byte private key (seed).
    pub fn from_seed(seed: &[u8; 32]) -> SigningKey {
        let mut h = {
            let mut s = Sha512::new();
            s.update(seed);
            s.finalize()
        };
        let mut scalar = [0u8; 32];
        scalar.copy_from_slice(&h[..32]);
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        let mut prefix = [0u8; 32];
        prefix.copy_from_slice(&h[32..]);
        wipe(&mut h);
        let public = mul_base(&scalar).encode();
        SigningKey { scalar, prefix, public }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The 64-byte signature R ‖ S over `msg` (RFC 8032 §5.1.6).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut hr = Sha512::new();
        hr.update(&self.prefix);
        hr.update(msg);
        let mut rh = hr.finalize();
        let r = mod_l(&limbs_of::<8>(&rh));
        wipe(&mut rh);
        let mut r_bytes = bytes_of(&r);
        let big_r = mul_base(&r_bytes).encode();
        let mut hk = Sha512::new();
        hk.update(&big_r);
        hk.update(&self.public);
        hk.update(msg);
        let k = mod_l(&limbs_of::<8>(&hk.finalize()));
        let mut a = limbs_of::<4>(&self.scalar);
        let mut r = r;
        let s = mul_add_mod_l(&k, &a, &r);
        wipe(&mut r_bytes);
        wipe_words(&mut r);
        wipe_words(&mut a);
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&big_r);
        sig[32..].copy_from_slice(&bytes_of(&s));
        sig
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        wipe(&mut self.scalar);
        wipe(&mut self.prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_util::{hex, hex_vec};

    /// RFC 8032 §7.1, TEST 1, 2 and 3 (secret key, public key, message, signature).
    const VECTORS: [(&str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    #[test]
    fn rfc8032_vectors() {
        for (sk, pk, msg, sig) in VECTORS {
            let k = SigningKey::from_seed(&hex::<32>(sk));
            assert_eq!(k.public_key().to_vec(), hex_vec(pk), "public key of {sk}");
            assert_eq!(k.sign(&hex_vec(msg)).to_vec(), hex_vec(sig), "signature by {sk}");
        }
    }

    // RFC 8032 §7.1 "TEST SHA(abc)": the message is SHA-512("abc").
    #[test]
    fn rfc8032_sha_abc_vector() {
        let k = SigningKey::from_seed(&hex("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42"));
        assert_eq!(k.public_key().to_vec(), hex_vec("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf"));
        let msg = super::super::sha512::sha512(b"abc");
        assert_eq!(
            k.sign(&msg).to_vec(),
            hex_vec("dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704")
        );
    }

    #[test]
    fn doubling_equals_the_addition_law() {
        let mut p = IDENTITY;
        for _ in 0..20 {
            assert_eq!(p.double().encode(), p.add(&p).encode());
            p = p.add(&BASE);
        }
        assert_eq!(IDENTITY.double().encode(), IDENTITY.encode());
    }

    #[test]
    fn field_encoding_is_canonical() {
        // p + 5 encodes as 5; p - 1 stays p - 1
        let mut p_plus_5 = [0xffu8; 32];
        p_plus_5[0] = 0xed + 5;
        p_plus_5[31] = 0x7f;
        let mut five = [0u8; 32];
        five[0] = 5;
        assert_eq!(Fe::from_bytes(&p_plus_5).to_bytes(), five);
        let mut pm1 = [0xffu8; 32];
        pm1[0] = 0xec;
        pm1[31] = 0x7f;
        assert_eq!(Fe::from_bytes(&pm1).to_bytes(), pm1);
        // x · 1/x = 1
        let x = Fe::from_bytes(&hex("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd0f"));
        assert_eq!(x.mul(&x.invert()).to_bytes(), FE_ONE.to_bytes());
    }

    #[test]
    fn scalar_reduction_matches_known_multiples() {
        // L reduces to 0, L + 1 to 1, and 2^256 - 1 to the value printed by `python3 -c "print(hex((2**256-1) % (2**252+27742317777372353535851937790883648493)))"`.
        assert_eq!(mod_l(&L), [0; 4]);
        let mut l1 = L;
        l1[0] += 1;
        assert_eq!(mod_l(&l1), [1, 0, 0, 0]);
        let all = mod_l(&[u64::MAX; 4]);
        assert_eq!(bytes_of(&all).to_vec(), {
            let mut v = hex_vec("0ffffffffffffffffffffffffffffffec6ef5bf4737dcf70d6ec31748d98951c");
            v.reverse();
            v
        });
    }
}
