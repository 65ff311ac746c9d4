//! AES-CMAC (NIST SP 800-38B, RFC 4493), the MAC SGX uses for REPORT and EGETKEY.

use super::aes::{xor16, Aes128};

fn dbl(b: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut carry = 0u8;
    for i in (0..16).rev() {
        out[i] = (b[i] << 1) | carry;
        carry = b[i] >> 7;
    }
    // L = AES_K(0) is secret: the reduction is masked in, not branched on.
    out[15] ^= 0x87 & 0u8.wrapping_sub(carry);
    out
}

/// Streaming AES-128-CMAC.
#[derive(Clone)]
pub struct Cmac {
    aes: Aes128,
    k1: [u8; 16],
    k2: [u8; 16],
    state: [u8; 16],
    buf: [u8; 16],
    buf_len: usize,
}

impl Cmac {
    pub fn new(key: &[u8; 16]) -> Self {
        Self::with_aes(Aes128::new(key))
    }

    /// CMAC over an already expanded key (any [`super::aes::Backend`]).
    pub fn with_aes(aes: Aes128) -> Self {
        let mut l = [0u8; 16];
        aes.encrypt_block(&mut l);
        let k1 = dbl(&l);
        let k2 = dbl(&k1);
        Self { aes, k1, k2, state: [0; 16], buf: [0; 16], buf_len: 0 }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // Keep the last (possibly full) block buffered: it is treated specially at the end.
            if self.buf_len == 16 {
                xor16(&mut self.state, &self.buf);
                self.aes.encrypt_block(&mut self.state);
                self.buf_len = 0;
            }
            let take = core::cmp::min(16 - self.buf_len, data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
        }
    }

    pub fn finalize(mut self) -> [u8; 16] {
        let mut last = [0u8; 16];
        if self.buf_len == 16 {
            last = self.buf;
            xor16(&mut last, &self.k1);
        } else {
            last[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
            last[self.buf_len] = 0x80;
            xor16(&mut last, &self.k2);
        }
        xor16(&mut self.state, &last);
        self.aes.encrypt_block(&mut self.state);
        self.state
    }
}

pub fn aes_cmac(key: &[u8; 16], data: &[u8]) -> [u8; 16] {
    let mut c = Cmac::new(key);
    c.update(data);
    c.finalize()
}

/// Constant-time comparison for MACs.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    d == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_util::{hex, hex_vec};

    // RFC 4493 section 4: subkeys and examples 1-4, on every available AES backend (the
    // software one forced) and through the public function (detected backend).
    #[test]
    fn rfc4493_vectors() {
        use crate::crypto::aes::test_backends;
        let key = hex::<16>("2b7e151628aed2a6abf7158809cf4f3c");
        let msg = hex_vec(
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
        );
        let expected = [
            (0, "bb1d6929e95937287fa37d129b756746"),
            (16, "070a16b46b4d4144f79bdd9dd04a287c"),
            (40, "dfa66747de9ae63030ca32611497c827"),
            (64, "51f0bebf7e3b9d92fc49741779363cfe"),
        ];
        for be in test_backends() {
            let mac = || Cmac::with_aes(Aes128::with_backend(&key, be).unwrap());
            let c = mac();
            assert_eq!(c.k1, hex::<16>("fbeed618357133667c85e08f7236a8de"), "{be:?}");
            assert_eq!(c.k2, hex::<16>("f7ddac306ae266ccf90bc11ee46d513b"), "{be:?}");
            for (len, tag) in expected {
                let mut c = mac();
                c.update(&msg[..len]);
                assert_eq!(c.finalize(), hex::<16>(tag), "{be:?}: {len} bytes");
            }
            // streaming in odd pieces gives the same tag
            let mut s = mac();
            for piece in msg[..40].chunks(7) {
                s.update(piece);
            }
            assert_eq!(s.finalize(), hex::<16>("dfa66747de9ae63030ca32611497c827"), "{be:?}");
        }
        for (len, tag) in expected {
            assert_eq!(aes_cmac(&key, &msg[..len]), hex::<16>(tag));
        }
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
