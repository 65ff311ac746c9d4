//! RSA-3072 with public exponent 3, checked the way SGX EINIT checks a SIGSTRUCT: with the
//! signer-supplied quotients Q1 = floor(S² / N) and Q2 = floor(S · (S² mod N) / N), so only
//! multiplication and subtraction are needed. Numbers are little-endian byte strings (SGX
//! layout), held as 96 little-endian u32 limbs.

use super::sha256::sha256;

pub const RSA_BYTES: usize = 384;
const L: usize = RSA_BYTES / 4;

type Num = [u32; L];
type Wide = [u32; 2 * L];

fn from_le(bytes: &[u8]) -> Num {
    let mut n = [0u32; L];
    for i in 0..L {
        n[i] = u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    }
    n
}

fn to_le(n: &Num, out: &mut [u8]) {
    for i in 0..L {
        out[4 * i..4 * i + 4].copy_from_slice(&n[i].to_le_bytes());
    }
}

fn mul(a: &Num, b: &Num) -> Wide {
    let mut r = [0u32; 2 * L];
    for i in 0..L {
        let mut carry = 0u64;
        for j in 0..L {
            let t = r[i + j] as u64 + a[i] as u64 * b[j] as u64 + carry;
            r[i + j] = t as u32;
            carry = t >> 32;
        }
        r[i + L] = carry as u32;
    }
    r
}

/// a - b, or None if negative.
fn sub_wide(a: &Wide, b: &Wide) -> Option<Wide> {
    let mut r = [0u32; 2 * L];
    let mut borrow = 0i64;
    for i in 0..2 * L {
        let t = a[i] as i64 - b[i] as i64 - borrow;
        r[i] = t as u32;
        borrow = if t < 0 { 1 } else { 0 };
    }
    if borrow != 0 {
        None
    } else {
        Some(r)
    }
}

/// Low half if the high half is zero and the value is below `m`.
fn narrow_below(w: &Wide, m: &Num) -> Option<Num> {
    if w[L..].iter().any(|&x| x != 0) {
        return None;
    }
    let mut n = [0u32; L];
    n.copy_from_slice(&w[..L]);
    if cmp(&n, m) != core::cmp::Ordering::Less {
        return None;
    }
    Some(n)
}

fn cmp(a: &Num, b: &Num) -> core::cmp::Ordering {
    for i in (0..L).rev() {
        if a[i] != b[i] {
            return a[i].cmp(&b[i]);
        }
    }
    core::cmp::Ordering::Equal
}

/// EMSA-PKCS1-v1_5 encoding of a SHA-256 digest for a 3072-bit modulus, as a big-endian block.
pub fn pkcs1_sha256_em(digest: &[u8; 32]) -> [u8; RSA_BYTES] {
    const DIGEST_INFO: [u8; 19] =
        [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];
    let mut em = [0xffu8; RSA_BYTES];
    em[0] = 0x00;
    em[1] = 0x01;
    let t = RSA_BYTES - 32 - DIGEST_INFO.len();
    em[t - 1] = 0x00;
    em[t..t + 19].copy_from_slice(&DIGEST_INFO);
    em[t + 19..].copy_from_slice(digest);
    em
}

/// Verifies `signature` (LE) over `message` under `modulus` (LE), e = 3, using Q1/Q2 (LE).
pub fn verify_e3(modulus: &[u8], signature: &[u8], q1: &[u8], q2: &[u8], message_digest: &[u8; 32]) -> bool {
    if modulus.len() != RSA_BYTES || signature.len() != RSA_BYTES || q1.len() != RSA_BYTES || q2.len() != RSA_BYTES {
        return false;
    }
    let n = from_le(modulus);
    let s = from_le(signature);
    if cmp(&s, &n) != core::cmp::Ordering::Less || n[L - 1] & 0x8000_0000 == 0 {
        return false;
    }
    let (q1, q2) = (from_le(q1), from_le(q2));
    // r1 = S² − Q1·N must lie in [0, N)
    let Some(r1) = sub_wide(&mul(&s, &s), &mul(&q1, &n)).and_then(|w| narrow_below(&w, &n)) else {
        return false;
    };
    // r2 = S·r1 − Q2·N = S³ mod N
    let Some(r2) = sub_wide(&mul(&s, &r1), &mul(&q2, &n)).and_then(|w| narrow_below(&w, &n)) else {
        return false;
    };
    let mut got = [0u8; RSA_BYTES];
    to_le(&r2, &mut got);
    got.reverse();
    got == pkcs1_sha256_em(message_digest)
}

/// Computes Q1 and Q2 for a signature (so a signer that only has `openssl dgst -sign` output
/// can complete a SIGSTRUCT). Bitwise long division: slow-ish but a few milliseconds.
pub fn quotients_e3(modulus: &[u8], signature: &[u8]) -> Option<([u8; RSA_BYTES], [u8; RSA_BYTES])> {
    if modulus.len() != RSA_BYTES || signature.len() != RSA_BYTES {
        return None;
    }
    let n = from_le(modulus);
    let s = from_le(signature);
    if n.iter().all(|&x| x == 0) {
        return None;
    }
    let (q1, r1) = divrem(&mul(&s, &s), &n)?;
    let (q2, _) = divrem(&mul(&s, &r1), &n)?;
    let mut a = [0u8; RSA_BYTES];
    let mut b = [0u8; RSA_BYTES];
    to_le(&q1, &mut a);
    to_le(&q2, &mut b);
    Some((a, b))
}

/// (w / n, w % n); None if the quotient does not fit in L limbs.
fn divrem(w: &Wide, n: &Num) -> Option<(Num, Num)> {
    let mut q = [0u32; 2 * L];
    let mut r = [0u32; L + 1];
    for bit in (0..64 * L).rev() {
        // r = (r << 1) | bit
        let mut carry = (w[bit / 32] >> (bit % 32)) & 1;
        for limb in r.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | carry;
            carry = next;
        }
        // if r >= n { r -= n; set q bit }
        let ge = r[L] != 0 || cmp(r[..L].try_into().unwrap(), n) != core::cmp::Ordering::Less;
        if ge {
            let mut borrow = 0i64;
            for i in 0..=L {
                let t = r[i] as i64 - if i < L { n[i] as i64 } else { 0 } - borrow;
                r[i] = t as u32;
                borrow = if t < 0 { 1 } else { 0 };
            }
            q[bit / 32] |= 1 << (bit % 32);
        }
    }
    if q[L..].iter().any(|&x| x != 0) {
        return None;
    }
    Some((q[..L].try_into().unwrap(), r[..L].try_into().unwrap()))
}

/// MRSIGNER: SHA-256 of the modulus bytes as stored in the SIGSTRUCT (little-endian).
pub fn mrsigner(modulus: &[u8]) -> [u8; 32] {
    sha256(modulus)
}
