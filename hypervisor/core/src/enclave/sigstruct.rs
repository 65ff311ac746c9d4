//! SIGSTRUCT (SDM vol. 3D 34.13), 1808 bytes:
//!   HEADER @0 (16) · VENDOR @16 u32 · DATE @20 u32 · HEADER2 @24 (16) · SWDEFINED @40 u32 ·
//!   MODULUS @128 (384, LE) · EXPONENT @512 u32 (= 3) · SIGNATURE @516 (384, LE) ·
//!   MISCSELECT @900 · MISCMASK @904 · ATTRIBUTES @928 (16) · ATTRIBUTEMASK @944 (16) ·
//!   ENCLAVEHASH @960 (32) · ISVPRODID @1024 u16 · ISVSVN @1026 u16 · Q1 @1040 · Q2 @1424.
//! The signed message is bytes 0..128 ‖ 900..1028 (SHA-256, PKCS#1 v1.5).

use super::{u16_at, u32_at, u64_at};
use crate::crypto::rsa;
use crate::crypto::Sha256;
use crate::error::{HvError, HvResult};

pub const SIGSTRUCT_SIZE: usize = hyperenclave_abi::sizes::SIGSTRUCT_SIZE;
pub const HEADER: [u8; 16] = [6, 0, 0, 0, 0xe1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
pub const HEADER2: [u8; 16] = [1, 1, 0, 0, 0x60, 0, 0, 0, 0x60, 0, 0, 0, 1, 0, 0, 0];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sigstruct<'a> {
    raw: &'a [u8],
}

impl<'a> Sigstruct<'a> {
    /// Checks length, headers, vendor and exponent.
    pub fn parse(raw: &'a [u8]) -> HvResult<Self> {
        if raw.len() < SIGSTRUCT_SIZE {
            return Err(HvError::BufferTooSmall { what: "SIGSTRUCT", need: SIGSTRUCT_SIZE as u64, got: raw.len() as u64 });
        }
        let raw = &raw[..SIGSTRUCT_SIZE];
        if raw[0..16] != HEADER {
            return Err(HvError::SigstructInvalid { field: "HEADER", offset: 0 });
        }
        let vendor = u32_at(raw, 16);
        if vendor != 0 && vendor != 0x8086 {
            return Err(HvError::SigstructInvalid { field: "VENDOR", offset: 16 });
        }
        if raw[24..40] != HEADER2 {
            return Err(HvError::SigstructInvalid { field: "HEADER2", offset: 24 });
        }
        if u32_at(raw, 512) != 3 {
            return Err(HvError::SigstructInvalid { field: "EXPONENT (must be 3)", offset: 512 });
        }
        Ok(Sigstruct { raw })
    }

    pub fn modulus(&self) -> &'a [u8] {
        &self.raw[128..512]
    }
    pub fn signature(&self) -> &'a [u8] {
        &self.raw[516..900]
    }
    pub fn misc_select(&self) -> u32 {
        u32_at(self.raw, 900)
    }
    pub fn misc_mask(&self) -> u32 {
        u32_at(self.raw, 904)
    }
    /// (FLAGS, XFRM)
    pub fn attributes(&self) -> (u64, u64) {
        (u64_at(self.raw, 928), u64_at(self.raw, 936))
    }
    pub fn attribute_mask(&self) -> (u64, u64) {
        (u64_at(self.raw, 944), u64_at(self.raw, 952))
    }
    pub fn enclave_hash(&self) -> [u8; 32] {
        self.raw[960..992].try_into().unwrap()
    }
    pub fn isv_prod_id(&self) -> u16 {
        u16_at(self.raw, 1024)
    }
    pub fn isv_svn(&self) -> u16 {
        u16_at(self.raw, 1026)
    }
    /// MRSIGNER = SHA-256 of the modulus as stored (little-endian), as SGX computes it.
    pub fn mrsigner(&self) -> [u8; 32] {
        rsa::mrsigner(self.modulus())
    }
    /// SHA-256 of the signed portion.
    pub fn signed_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(&self.raw[0..128]);
        h.update(&self.raw[900..1028]);
        h.finalize()
    }
    /// RSA-3072 e=3 check with Q1/Q2, as EINIT does.
    pub fn verify_signature(&self) -> HvResult<()> {
        let ok = rsa::verify_e3(
            self.modulus(),
            self.signature(),
            &self.raw[1040..1424],
            &self.raw[1424..1808],
            &self.signed_digest(),
        );
        if ok {
            Ok(())
        } else {
            Err(HvError::SignatureInvalid)
        }
    }
}

/// The signer-chosen SIGSTRUCT fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SigstructBody {
    /// 0 or 0x8086.
    pub vendor: u32,
    /// BCD yyyymmdd, as sgx_sign writes it (0 allowed).
    pub date: u32,
    pub sw_defined: u32,
    pub misc_select: u32,
    pub misc_mask: u32,
    /// (FLAGS, XFRM)
    pub attributes: (u64, u64),
    pub attribute_mask: (u64, u64),
    pub enclave_hash: [u8; 32],
    pub isv_prod_id: u16,
    pub isv_svn: u16,
}

impl SigstructBody {
    /// Reads the body fields back out of a SIGSTRUCT.
    pub fn of(s: &Sigstruct) -> Self {
        SigstructBody {
            vendor: u32_at(s.raw, 16),
            date: u32_at(s.raw, 20),
            sw_defined: u32_at(s.raw, 40),
            misc_select: s.misc_select(),
            misc_mask: s.misc_mask(),
            attributes: s.attributes(),
            attribute_mask: s.attribute_mask(),
            enclave_hash: s.enclave_hash(),
            isv_prod_id: s.isv_prod_id(),
            isv_svn: s.isv_svn(),
        }
    }
}

/// An unsigned SIGSTRUCT: headers, body, EXPONENT = 3; MODULUS, SIGNATURE, Q1, Q2 zero.
/// Sign `signed_message(&raw)` (RSA-3072, e = 3, PKCS#1 v1.5 SHA-256), then `attach_signature`.
pub fn build_unsigned(body: &SigstructBody) -> [u8; SIGSTRUCT_SIZE] {
    let mut raw = [0u8; SIGSTRUCT_SIZE];
    raw[0..16].copy_from_slice(&HEADER);
    raw[16..20].copy_from_slice(&body.vendor.to_le_bytes());
    raw[20..24].copy_from_slice(&body.date.to_le_bytes());
    raw[24..40].copy_from_slice(&HEADER2);
    raw[40..44].copy_from_slice(&body.sw_defined.to_le_bytes());
    raw[512..516].copy_from_slice(&3u32.to_le_bytes());
    raw[900..904].copy_from_slice(&body.misc_select.to_le_bytes());
    raw[904..908].copy_from_slice(&body.misc_mask.to_le_bytes());
    raw[928..936].copy_from_slice(&body.attributes.0.to_le_bytes());
    raw[936..944].copy_from_slice(&body.attributes.1.to_le_bytes());
    raw[944..952].copy_from_slice(&body.attribute_mask.0.to_le_bytes());
    raw[952..960].copy_from_slice(&body.attribute_mask.1.to_le_bytes());
    raw[960..992].copy_from_slice(&body.enclave_hash);
    raw[1024..1026].copy_from_slice(&body.isv_prod_id.to_le_bytes());
    raw[1026..1028].copy_from_slice(&body.isv_svn.to_le_bytes());
    raw
}

/// The 256 bytes the signer signs: bytes 0..128 ‖ 900..1028.
pub fn signed_message(raw: &[u8]) -> HvResult<[u8; 256]> {
    if raw.len() < SIGSTRUCT_SIZE {
        return Err(HvError::BufferTooSmall { what: "SIGSTRUCT", need: SIGSTRUCT_SIZE as u64, got: raw.len() as u64 });
    }
    let mut m = [0u8; 256];
    m[..128].copy_from_slice(&raw[..128]);
    m[128..].copy_from_slice(&raw[900..1028]);
    Ok(m)
}

/// Stores MODULUS and SIGNATURE (both big-endian, as `openssl` prints and writes them),
/// computes Q1/Q2, and checks the result verifies.
pub fn attach_signature(raw: &mut [u8], modulus_be: &[u8], signature_be: &[u8]) -> HvResult<()> {
    if raw.len() < SIGSTRUCT_SIZE {
        return Err(HvError::BufferTooSmall { what: "SIGSTRUCT", need: SIGSTRUCT_SIZE as u64, got: raw.len() as u64 });
    }
    if modulus_be.len() != rsa::RSA_BYTES {
        return Err(HvError::SigstructInvalid { field: "MODULUS (need 384 bytes)", offset: 128 });
    }
    if signature_be.len() != rsa::RSA_BYTES {
        return Err(HvError::SigstructInvalid { field: "SIGNATURE (need 384 bytes)", offset: 516 });
    }
    for i in 0..rsa::RSA_BYTES {
        raw[128 + i] = modulus_be[rsa::RSA_BYTES - 1 - i];
        raw[516 + i] = signature_be[rsa::RSA_BYTES - 1 - i];
    }
    fill_quotients(raw)?;
    Sigstruct::parse(raw)?.verify_signature()
}

/// Fills Q1/Q2 of a SIGSTRUCT whose MODULUS and SIGNATURE are set (for signers that only
/// produce a plain PKCS#1 v1.5 signature, e.g. `openssl dgst -sha256 -sign`).
pub fn fill_quotients(raw: &mut [u8]) -> HvResult<()> {
    if raw.len() < SIGSTRUCT_SIZE {
        return Err(HvError::BufferTooSmall { what: "SIGSTRUCT", need: SIGSTRUCT_SIZE as u64, got: raw.len() as u64 });
    }
    let (q1, q2) = rsa::quotients_e3(&raw[128..512], &raw[516..900])
        .ok_or(HvError::SigstructInvalid { field: "MODULUS/SIGNATURE", offset: 128 })?;
    raw[1040..1424].copy_from_slice(&q1);
    raw[1424..1808].copy_from_slice(&q2);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_util::hex;
    use crate::enclave::measure::tests::{ENCL_MRENCLAVE, ENCL_SS};

    #[test]
    fn linux_selftest_sigstruct_parses_and_verifies() {
        let s = Sigstruct::parse(ENCL_SS).unwrap();
        assert_eq!(s.enclave_hash(), hex::<32>(ENCL_MRENCLAVE));
        assert_eq!(s.attributes(), (0x4, 0x3));
        assert_eq!((s.isv_prod_id(), s.isv_svn()), (0, 0));
        // MRSIGNER recomputed independently with Python hashlib over bytes 128..512 (NOTES.md)
        assert_eq!(s.mrsigner(), hex::<32>("2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4"));
        s.verify_signature().unwrap();
    }

    #[test]
    fn tampering_breaks_the_signature() {
        for (off, what) in [(960usize, "ENCLAVEHASH"), (1026, "ISVSVN"), (600, "SIGNATURE"), (1100, "Q1"), (1500, "Q2"), (200, "MODULUS")] {
            let mut raw = [0u8; SIGSTRUCT_SIZE];
            raw.copy_from_slice(ENCL_SS);
            raw[off] ^= 0x01;
            let s = Sigstruct::parse(&raw).unwrap();
            assert_eq!(s.verify_signature(), Err(HvError::SignatureInvalid), "{what}");
        }
    }

    #[test]
    fn quotients_are_recomputed_exactly() {
        let mut raw = [0u8; SIGSTRUCT_SIZE];
        raw.copy_from_slice(ENCL_SS);
        raw[1040..].fill(0);
        fill_quotients(&mut raw).unwrap();
        assert_eq!(&raw[..], ENCL_SS);
    }

    #[test]
    fn builder_reproduces_the_sgxsign_output_byte_for_byte() {
        let s = Sigstruct::parse(ENCL_SS).unwrap();
        let body = SigstructBody::of(&s);
        let mut raw = build_unsigned(&body);
        assert_eq!(signed_message(&raw).unwrap()[..], [&ENCL_SS[..128], &ENCL_SS[900..1028]].concat()[..]);
        let mut m: std::vec::Vec<u8> = s.modulus().to_vec();
        m.reverse();
        let mut sig: std::vec::Vec<u8> = s.signature().to_vec();
        sig.reverse();
        attach_signature(&mut raw, &m, &sig).unwrap();
        assert_eq!(&raw[..], ENCL_SS);
        sig[0] ^= 1;
        assert_eq!(attach_signature(&mut raw, &m, &sig), Err(HvError::SignatureInvalid));
        assert!(matches!(attach_signature(&mut raw, &m[..10], &sig), Err(HvError::SigstructInvalid { .. })));
    }

    /// Signing with a freshly generated key through the openssl CLI (a real peer), the way a
    /// build script would: the SIGSTRUCT then passes EINIT's signature check.
    #[test]
    fn openssl_signed_sigstruct_verifies() {
        use std::process::Command;
        if Command::new("openssl").arg("version").output().is_err() {
            std::eprintln!("SKIP openssl_signed_sigstruct_verifies: openssl CLI not found");
            return;
        }
        let dir = std::env::temp_dir().join(std::format!("he-sig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", std::string::String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072", "-pkeyopt", "rsa_keygen_pubexp:3", "-out", key.to_str().unwrap()]);
        let modulus_hex = std::string::String::from_utf8(run(&["rsa", "-in", key.to_str().unwrap(), "-noout", "-modulus"])).unwrap();
        let modulus = crate::crypto::test_util::hex_vec(modulus_hex.trim().trim_start_matches("Modulus="));
        let body = SigstructBody { attributes: (4, 3), enclave_hash: [0x42; 32], isv_prod_id: 9, isv_svn: 4, ..Default::default() };
        let mut raw = build_unsigned(&body);
        let msg = dir.join("msg.bin");
        std::fs::write(&msg, signed_message(&raw).unwrap()).unwrap();
        let sig = run(&["dgst", "-sha256", "-sign", key.to_str().unwrap(), msg.to_str().unwrap()]);
        attach_signature(&mut raw, &modulus, &sig).unwrap();
        let s = Sigstruct::parse(&raw).unwrap();
        s.verify_signature().unwrap();
        let mut le = modulus.clone();
        le.reverse();
        assert_eq!(s.mrsigner(), crate::crypto::sha256(&le));
        assert_eq!(SigstructBody::of(&s), body);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn malformed_headers_are_named() {
        let mut raw = [0u8; SIGSTRUCT_SIZE];
        raw.copy_from_slice(ENCL_SS);
        raw[3] = 1;
        assert_eq!(Sigstruct::parse(&raw), Err(HvError::SigstructInvalid { field: "HEADER", offset: 0 }));
        raw.copy_from_slice(ENCL_SS);
        raw[512] = 65;
        assert!(matches!(Sigstruct::parse(&raw), Err(HvError::SigstructInvalid { offset: 512, .. })));
        assert!(matches!(Sigstruct::parse(&raw[..1000]), Err(HvError::BufferTooSmall { .. })));
    }
}
