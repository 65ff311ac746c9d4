//! AES-128 block encryption (FIPS 197). Only the forward cipher: CMAC needs nothing else.
//! The S-box is derived at compile time (GF(2^8) inverse + affine map) instead of typed in.

const fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let hi = a & 0x80;
        a <<= 1;
        if hi != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

const fn build_sbox() -> [u8; 256] {
    let mut s = [0u8; 256];
    let mut x = 0usize;
    while x < 256 {
        // inverse = x^254 (0 maps to 0)
        let mut inv = 1u8;
        let mut i = 0;
        while i < 254 {
            inv = gf_mul(inv, x as u8);
            i += 1;
        }
        if x == 0 {
            inv = 0;
        }
        let b = inv;
        s[x] = b ^ b.rotate_left(1) ^ b.rotate_left(2) ^ b.rotate_left(3) ^ b.rotate_left(4) ^ 0x63;
        x += 1;
    }
    s
}

static SBOX: [u8; 256] = build_sbox();

/// Expanded AES-128 key (11 round keys).
#[derive(Clone)]
pub struct Aes128 {
    rk: [[u8; 16]; 11],
}

impl Aes128 {
    pub fn new(key: &[u8; 16]) -> Self {
        let mut w = [[0u8; 4]; 44];
        for i in 0..4 {
            w[i].copy_from_slice(&key[4 * i..4 * i + 4]);
        }
        let mut rcon = 1u8;
        for i in 4..44 {
            let mut t = w[i - 1];
            if i % 4 == 0 {
                t = [SBOX[t[1] as usize] ^ rcon, SBOX[t[2] as usize], SBOX[t[3] as usize], SBOX[t[0] as usize]];
                rcon = gf_mul(rcon, 2);
            }
            for j in 0..4 {
                w[i][j] = w[i - 4][j] ^ t[j];
            }
        }
        let mut rk = [[0u8; 16]; 11];
        for r in 0..11 {
            for c in 0..4 {
                rk[r][4 * c..4 * c + 4].copy_from_slice(&w[4 * r + c]);
            }
        }
        Self { rk }
    }

    pub fn encrypt_block(&self, block: &mut [u8; 16]) {
        xor16(block, &self.rk[0]);
        for round in 1..11 {
            for b in block.iter_mut() {
                *b = SBOX[*b as usize];
            }
            // ShiftRows: state is column-major, byte (row r, col c) at 4c + r.
            let s = *block;
            for c in 0..4 {
                for r in 0..4 {
                    block[4 * c + r] = s[4 * ((c + r) % 4) + r];
                }
            }
            if round != 10 {
                for c in 0..4 {
                    let col = [block[4 * c], block[4 * c + 1], block[4 * c + 2], block[4 * c + 3]];
                    for r in 0..4 {
                        block[4 * c + r] = gf_mul(col[r], 2)
                            ^ gf_mul(col[(r + 1) % 4], 3)
                            ^ col[(r + 2) % 4]
                            ^ col[(r + 3) % 4];
                    }
                }
            }
            xor16(block, &self.rk[round]);
        }
    }
}

pub(crate) fn xor16(a: &mut [u8; 16], b: &[u8; 16]) {
    for i in 0..16 {
        a[i] ^= b[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_util::hex;

    #[test]
    fn sbox_spot_values() {
        // FIPS 197 figure 7
        assert_eq!(SBOX[0x00], 0x63);
        assert_eq!(SBOX[0x53], 0xed);
        assert_eq!(SBOX[0xff], 0x16);
    }

    // FIPS 197 appendix C.1 (AES-128) and appendix B.
    #[test]
    fn fips197_vectors() {
        let aes = Aes128::new(&hex::<16>("000102030405060708090a0b0c0d0e0f"));
        let mut b = hex::<16>("00112233445566778899aabbccddeeff");
        aes.encrypt_block(&mut b);
        assert_eq!(b, hex::<16>("69c4e0d86a7b0430d8cdb78070b4c55a"));

        let aes = Aes128::new(&hex::<16>("2b7e151628aed2a6abf7158809cf4f3c"));
        let mut b = hex::<16>("3243f6a8885a308d313198a2e0370734");
        aes.encrypt_block(&mut b);
        assert_eq!(b, hex::<16>("3925841d02dc09fbdc118597196a0b32"));
    }
}
