//! EREPORT / EGETKEY analogues with SGX layouts. MACs and keys use AES-128-CMAC, as SGX does.
//!
//! REPORT (432 bytes): CPUSVN @0 (16) · MISCSELECT @16 u32 · ATTRIBUTES @48 (FLAGS u64, XFRM u64)
//! · MRENCLAVE @64 · MRSIGNER @128 · ISVPRODID @256 u16 · ISVSVN @258 u16 · REPORTDATA @320 (64)
//! · KEYID @384 (32) · MAC @416 (16). The MAC covers bytes 0..384 (the body).
//!
//! Key derivation: key = CMAC(root, derivation record) where root is one of two keys derived
//! from the hypervisor's platform secret (one for report keys, one for EGETKEY seal keys), and
//! the record (144 bytes) is: KEYNAME u16 ‖ KEYPOLICY u16 ‖ ISVSVN u16 ‖ 0 u16 ‖ CPUSVN (16) ‖
//! FLAGS&mask u64 ‖ XFRM&mask u64 ‖ MISCSELECT&mask u32 ‖ ISVPRODID u16 ‖ 0 u16 ‖
//! MRENCLAVE-or-0 (32) ‖ MRSIGNER-or-0 (32) ‖ KEYID (32).
//! A report for target T is MAC'd with T's report key (keyname REPORT, T's MRENCLAVE, the
//! report's KEYID), so T can check it with EGETKEY(REPORT, KEYID) and the hypervisor can too.

use super::{attr, u16_at, u32_at, u64_at};
use crate::crypto::{aes_cmac, ct_eq};
use crate::error::{HvError, HvResult};

pub const REPORT_SIZE: usize = hyperenclave_abi::sizes::REPORT_SIZE;
pub const REPORT_BODY_SIZE: usize = 384;
pub const TARGETINFO_MIN: usize = 56;
pub const KEYREQUEST_MIN: usize = 80;

pub mod keyname {
    pub const PROVISION: u16 = 1;
    pub const PROVISION_SEAL: u16 = 2;
    pub const REPORT: u16 = 3;
    pub const SEAL: u16 = 4;
}

pub mod policy {
    pub const MRENCLAVE: u16 = 1 << 0;
    pub const MRSIGNER: u16 = 1 << 1;
    pub const NOISVPRODID: u16 = 1 << 2;
    pub const SUPPORTED: u16 = MRENCLAVE | MRSIGNER | NOISVPRODID;
}

/// Who an initialized enclave is: the inputs to reports and key derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EnclaveIdentity {
    pub mrenclave: [u8; 32],
    pub mrsigner: [u8; 32],
    /// (FLAGS, XFRM)
    pub attributes: (u64, u64),
    pub misc_select: u32,
    pub isv_prod_id: u16,
    pub isv_svn: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub cpu_svn: [u8; 16],
    pub identity: EnclaveIdentity,
    pub report_data: [u8; 64],
    pub key_id: [u8; 32],
    pub mac: [u8; 16],
}

impl Report {
    pub fn to_bytes(&self) -> [u8; REPORT_SIZE] {
        let mut b = [0u8; REPORT_SIZE];
        let id = &self.identity;
        b[0..16].copy_from_slice(&self.cpu_svn);
        b[16..20].copy_from_slice(&id.misc_select.to_le_bytes());
        b[48..56].copy_from_slice(&id.attributes.0.to_le_bytes());
        b[56..64].copy_from_slice(&id.attributes.1.to_le_bytes());
        b[64..96].copy_from_slice(&id.mrenclave);
        b[128..160].copy_from_slice(&id.mrsigner);
        b[256..258].copy_from_slice(&id.isv_prod_id.to_le_bytes());
        b[258..260].copy_from_slice(&id.isv_svn.to_le_bytes());
        b[320..384].copy_from_slice(&self.report_data);
        b[384..416].copy_from_slice(&self.key_id);
        b[416..432].copy_from_slice(&self.mac);
        b
    }

    pub fn from_bytes(b: &[u8]) -> HvResult<Self> {
        if b.len() < REPORT_SIZE {
            return Err(HvError::BufferTooSmall { what: "REPORT", need: REPORT_SIZE as u64, got: b.len() as u64 });
        }
        Ok(Report {
            cpu_svn: b[0..16].try_into().unwrap(),
            identity: EnclaveIdentity {
                misc_select: u32_at(b, 16),
                attributes: (u64_at(b, 48), u64_at(b, 56)),
                mrenclave: b[64..96].try_into().unwrap(),
                mrsigner: b[128..160].try_into().unwrap(),
                isv_prod_id: u16_at(b, 256),
                isv_svn: u16_at(b, 258),
            },
            report_data: b[320..384].try_into().unwrap(),
            key_id: b[384..416].try_into().unwrap(),
            mac: b[416..432].try_into().unwrap(),
        })
    }
}

/// TARGETINFO (SGX layout, first 56 bytes): MEASUREMENT @0 (32) · ATTRIBUTES @32 (16) ·
/// MISCSELECT @52 u32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TargetInfo {
    pub mrenclave: [u8; 32],
    pub attributes: (u64, u64),
    pub misc_select: u32,
}

impl TargetInfo {
    pub fn from_bytes(b: &[u8]) -> HvResult<Self> {
        if b.len() < TARGETINFO_MIN {
            return Err(HvError::BufferTooSmall { what: "TARGETINFO", need: TARGETINFO_MIN as u64, got: b.len() as u64 });
        }
        Ok(TargetInfo {
            mrenclave: b[0..32].try_into().unwrap(),
            attributes: (u64_at(b, 32), u64_at(b, 40)),
            misc_select: u32_at(b, 52),
        })
    }
}

/// KEYREQUEST (SGX layout, first 80 bytes): KEYNAME @0 u16 · KEYPOLICY @2 u16 · ISVSVN @4 u16 ·
/// CPUSVN @8 (16) · ATTRIBUTEMASK @24 (FLAGS u64, XFRM u64) · KEYID @40 (32) · MISCMASK @72 u32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KeyRequest {
    pub key_name: u16,
    pub key_policy: u16,
    pub isv_svn: u16,
    pub cpu_svn: [u8; 16],
    pub attribute_mask: (u64, u64),
    pub key_id: [u8; 32],
    pub misc_mask: u32,
}

impl KeyRequest {
    pub fn from_bytes(b: &[u8]) -> HvResult<Self> {
        if b.len() < KEYREQUEST_MIN {
            return Err(HvError::BufferTooSmall { what: "KEYREQUEST", need: KEYREQUEST_MIN as u64, got: b.len() as u64 });
        }
        Ok(KeyRequest {
            key_name: u16_at(b, 0),
            key_policy: u16_at(b, 2),
            isv_svn: u16_at(b, 4),
            cpu_svn: b[8..24].try_into().unwrap(),
            attribute_mask: (u64_at(b, 24), u64_at(b, 32)),
            key_id: b[40..72].try_into().unwrap(),
            misc_mask: u32_at(b, 72),
        })
    }

    pub fn to_bytes(&self) -> [u8; KEYREQUEST_MIN] {
        let mut b = [0u8; KEYREQUEST_MIN];
        b[0..2].copy_from_slice(&self.key_name.to_le_bytes());
        b[2..4].copy_from_slice(&self.key_policy.to_le_bytes());
        b[4..6].copy_from_slice(&self.isv_svn.to_le_bytes());
        b[8..24].copy_from_slice(&self.cpu_svn);
        b[24..32].copy_from_slice(&self.attribute_mask.0.to_le_bytes());
        b[32..40].copy_from_slice(&self.attribute_mask.1.to_le_bytes());
        b[40..72].copy_from_slice(&self.key_id);
        b[72..76].copy_from_slice(&self.misc_mask.to_le_bytes());
        b
    }
}

/// The hypervisor's key hierarchy, derived once from the platform secret.
#[derive(Clone)]
pub struct KeyRoots {
    report: [u8; 16],
    seal: [u8; 16],
    cpu_svn: [u8; 16],
}

struct Derivation {
    key_name: u16,
    key_policy: u16,
    isv_svn: u16,
    cpu_svn: [u8; 16],
    attributes: (u64, u64),
    misc_select: u32,
    isv_prod_id: u16,
    mrenclave: [u8; 32],
    mrsigner: [u8; 32],
    key_id: [u8; 32],
}

impl Derivation {
    fn bytes(&self) -> [u8; 144] {
        let mut b = [0u8; 144];
        b[0..2].copy_from_slice(&self.key_name.to_le_bytes());
        b[2..4].copy_from_slice(&self.key_policy.to_le_bytes());
        b[4..6].copy_from_slice(&self.isv_svn.to_le_bytes());
        b[8..24].copy_from_slice(&self.cpu_svn);
        b[24..32].copy_from_slice(&self.attributes.0.to_le_bytes());
        b[32..40].copy_from_slice(&self.attributes.1.to_le_bytes());
        b[40..44].copy_from_slice(&self.misc_select.to_le_bytes());
        b[44..46].copy_from_slice(&self.isv_prod_id.to_le_bytes());
        b[48..80].copy_from_slice(&self.mrenclave);
        b[80..112].copy_from_slice(&self.mrsigner);
        b[112..144].copy_from_slice(&self.key_id);
        b
    }
}

impl Drop for KeyRoots {
    fn drop(&mut self) {
        crate::crypto::ed25519::wipe(&mut self.report);
        crate::crypto::ed25519::wipe(&mut self.seal);
    }
}

impl KeyRoots {
    pub fn new(platform_secret: &[u8; 16], cpu_svn: [u8; 16]) -> Self {
        let mut label = [0u8; 32];
        label[..20].copy_from_slice(b"hyperenclave report ");
        let report = aes_cmac(platform_secret, &label);
        label[..20].copy_from_slice(b"hyperenclave seal   ");
        let seal = aes_cmac(platform_secret, &label);
        KeyRoots { report, seal, cpu_svn }
    }

    /// From the TPM-sealed 32-byte root secret (trust.rs): the same labels, keyed by
    /// HMAC-SHA-256(root, "hyperenclave key roots v1") truncated to 128 bits.
    pub fn from_root(root: &[u8; 32], cpu_svn: [u8; 16]) -> Self {
        let mut k = crate::crypto::hmac_sha256(root, b"hyperenclave key roots v1");
        let mut platform = [0u8; 16];
        platform.copy_from_slice(&k[..16]);
        let r = KeyRoots::new(&platform, cpu_svn);
        crate::crypto::ed25519::wipe(&mut k);
        crate::crypto::ed25519::wipe(&mut platform);
        r
    }

    pub fn cpu_svn(&self) -> [u8; 16] {
        self.cpu_svn
    }

    /// The report key of enclave `target` for a given KEYID.
    pub fn report_key(&self, target_mrenclave: &[u8; 32], key_id: &[u8; 32]) -> [u8; 16] {
        let d = Derivation {
            key_name: keyname::REPORT,
            key_policy: policy::MRENCLAVE,
            isv_svn: 0,
            cpu_svn: self.cpu_svn,
            attributes: (0, 0),
            misc_select: 0,
            isv_prod_id: 0,
            mrenclave: *target_mrenclave,
            mrsigner: [0; 32],
            key_id: *key_id,
        };
        aes_cmac(&self.report, &d.bytes())
    }

    /// EREPORT: a report about `me` for `target`.
    pub fn report(&self, me: &EnclaveIdentity, target: &TargetInfo, report_data: &[u8; 64], key_id: [u8; 32]) -> Report {
        let mut r = Report { cpu_svn: self.cpu_svn, identity: *me, report_data: *report_data, key_id, mac: [0; 16] };
        let bytes = r.to_bytes();
        r.mac = aes_cmac(&self.report_key(&target.mrenclave, &key_id), &bytes[..REPORT_BODY_SIZE]);
        r
    }

    /// Checks a report's MAC as if we were `target_mrenclave`.
    pub fn verify_report(&self, raw: &[u8], target_mrenclave: &[u8; 32]) -> HvResult<Report> {
        let r = Report::from_bytes(raw)?;
        let mac = aes_cmac(&self.report_key(target_mrenclave, &r.key_id), &raw[..REPORT_BODY_SIZE]);
        if !ct_eq(&mac, &r.mac) {
            return Err(HvError::ReportMacMismatch);
        }
        Ok(r)
    }

    /// EGETKEY for `me`.
    pub fn get_key(&self, me: &EnclaveIdentity, req: &KeyRequest) -> HvResult<[u8; 16]> {
        match req.key_name {
            keyname::REPORT => return Ok(self.report_key(&me.mrenclave, &req.key_id)),
            keyname::SEAL => {}
            keyname::PROVISION | keyname::PROVISION_SEAL if me.attributes.0 & attr::PROVISIONKEY == 0 => {
                return Err(HvError::KeyRequestInvalid { field: "KEYNAME (needs ATTRIBUTES.PROVISIONKEY)", value: req.key_name as u64 })
            }
            keyname::PROVISION | keyname::PROVISION_SEAL => {}
            n => return Err(HvError::KeyRequestInvalid { field: "KEYNAME", value: n as u64 }),
        }
        if req.key_policy & !policy::SUPPORTED != 0 {
            return Err(HvError::KeyRequestInvalid { field: "KEYPOLICY", value: req.key_policy as u64 });
        }
        if req.isv_svn > me.isv_svn {
            return Err(HvError::SvnTooHigh { field: "ISVSVN" });
        }
        if req.cpu_svn.iter().zip(self.cpu_svn.iter()).any(|(r, c)| r > c) {
            return Err(HvError::SvnTooHigh { field: "CPUSVN" });
        }
        // INIT and DEBUG always take part, so a debug enclave never gets a production key.
        let fmask = req.attribute_mask.0 | attr::INIT | attr::DEBUG;
        let d = Derivation {
            key_name: req.key_name,
            key_policy: req.key_policy,
            isv_svn: req.isv_svn,
            cpu_svn: req.cpu_svn,
            attributes: (me.attributes.0 & fmask, me.attributes.1 & req.attribute_mask.1),
            misc_select: me.misc_select & req.misc_mask,
            isv_prod_id: if req.key_policy & policy::NOISVPRODID != 0 { 0 } else { me.isv_prod_id },
            mrenclave: if req.key_policy & policy::MRENCLAVE != 0 { me.mrenclave } else { [0; 32] },
            mrsigner: if req.key_policy & policy::MRSIGNER != 0 { me.mrsigner } else { [0; 32] },
            key_id: req.key_id,
        };
        Ok(aes_cmac(&self.seal, &d.bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(mr: u8, signer: u8, svn: u16) -> EnclaveIdentity {
        EnclaveIdentity {
            mrenclave: [mr; 32],
            mrsigner: [signer; 32],
            attributes: (attr::INIT | attr::MODE64BIT, 3),
            misc_select: 0,
            isv_prod_id: 7,
            isv_svn: svn,
        }
    }

    #[test]
    fn report_round_trip_and_mac() {
        let k = KeyRoots::new(&[9; 16], [1; 16]);
        let me = ident(0xaa, 0xbb, 2);
        let target = TargetInfo { mrenclave: [0xcc; 32], ..Default::default() };
        let r = k.report(&me, &target, &[0x42; 64], [5; 32]);
        let raw = r.to_bytes();
        assert_eq!(Report::from_bytes(&raw).unwrap(), r);
        assert_eq!(&raw[64..96], &[0xaa; 32]);
        assert_eq!(&raw[320..384], &[0x42; 64]);
        assert_eq!(k.verify_report(&raw, &[0xcc; 32]).unwrap().identity, me);
        // wrong target, tampered body, other platform secret: all refused
        assert_eq!(k.verify_report(&raw, &[0xcd; 32]), Err(HvError::ReportMacMismatch));
        for off in [0usize, 17, 64, 130, 256, 320, 383, 384, 420] {
            let mut t = raw;
            t[off] ^= 1;
            assert_eq!(k.verify_report(&t, &[0xcc; 32]), Err(HvError::ReportMacMismatch), "byte {off}");
        }
        let other = KeyRoots::new(&[8; 16], [1; 16]);
        assert_eq!(other.verify_report(&raw, &[0xcc; 32]), Err(HvError::ReportMacMismatch));
        // the target can check it with its own EGETKEY(REPORT, keyid)
        let tk = k.get_key(&ident(0xcc, 0, 0), &KeyRequest { key_name: keyname::REPORT, key_id: r.key_id, ..Default::default() }).unwrap();
        assert_eq!(aes_cmac(&tk, &raw[..REPORT_BODY_SIZE]), r.mac);
        assert!(matches!(Report::from_bytes(&raw[..431]), Err(HvError::BufferTooSmall { .. })));
    }

    #[test]
    fn seal_keys_follow_policy() {
        let k = KeyRoots::new(&[9; 16], [1; 16]);
        let seal = |me: &EnclaveIdentity, pol: u16, svn: u16| {
            k.get_key(me, &KeyRequest { key_name: keyname::SEAL, key_policy: pol, isv_svn: svn, cpu_svn: [1; 16], ..Default::default() })
        };
        let a1 = ident(1, 9, 3);
        let a2 = ident(2, 9, 3); // same signer, different code
        let b = ident(1, 8, 3); // same code, different signer
        assert_eq!(seal(&a1, policy::MRENCLAVE, 3).unwrap(), seal(&a1, policy::MRENCLAVE, 3).unwrap());
        assert_ne!(seal(&a1, policy::MRENCLAVE, 3).unwrap(), seal(&a2, policy::MRENCLAVE, 3).unwrap());
        assert_eq!(seal(&a1, policy::MRSIGNER, 3).unwrap(), seal(&a2, policy::MRSIGNER, 3).unwrap());
        assert_ne!(seal(&a1, policy::MRSIGNER, 3).unwrap(), seal(&b, policy::MRSIGNER, 3).unwrap());
        assert_ne!(seal(&a1, policy::MRSIGNER, 3).unwrap(), seal(&a1, policy::MRSIGNER, 2).unwrap());
        let mut dbg = a1;
        dbg.attributes.0 |= attr::DEBUG;
        assert_ne!(seal(&a1, policy::MRENCLAVE, 3).unwrap(), seal(&dbg, policy::MRENCLAVE, 3).unwrap());
        assert_eq!(seal(&a1, policy::MRENCLAVE, 4), Err(HvError::SvnTooHigh { field: "ISVSVN" }));
        assert!(matches!(seal(&a1, 0x8, 3), Err(HvError::KeyRequestInvalid { field: "KEYPOLICY", .. })));
        let r = k.get_key(&a1, &KeyRequest { key_name: keyname::SEAL, cpu_svn: [2; 16], ..Default::default() });
        assert_eq!(r, Err(HvError::SvnTooHigh { field: "CPUSVN" }));
        let r = k.get_key(&a1, &KeyRequest { key_name: keyname::PROVISION, ..Default::default() });
        assert!(matches!(r, Err(HvError::KeyRequestInvalid { .. })));
        let r = k.get_key(&a1, &KeyRequest { key_name: 99, ..Default::default() });
        assert!(matches!(r, Err(HvError::KeyRequestInvalid { field: "KEYNAME", .. })));
        let req = KeyRequest { key_name: 4, key_policy: 2, isv_svn: 1, cpu_svn: [3; 16], attribute_mask: (5, 6), key_id: [7; 32], misc_mask: 8 };
        assert_eq!(KeyRequest::from_bytes(&req.to_bytes()).unwrap(), req);
    }
}
