//! Policy digests as the TPM computes them (TPM 2.0 Part 3: §23.5 PolicyLocality, §23.7
//! PolicyPCR, §23.6 PolicyOR), all with SHA-256 as the session's hash, and PCR_Extend's
//! arithmetic. Used to build the authPolicy of the hypervisor's parent key and sealed root.

use super::{alg, cc};
use crate::crypto::{sha256, Sha256};

/// TPMA_LOCALITY for locality 2 (TPM_LOC_TWO).
pub const LOCALITY_TWO: u8 = 1 << 2;

/// Bytes of a TPML_PCR_SELECTION naming one SHA-256 bank (count, hash, sizeofSelect, 3 bytes).
pub const SELECTION_SIZE: usize = 10;

/// TPML_PCR_SELECTION for the SHA-256 bank and the PCRs set in `mask` (bits 0..23).
pub fn sha256_selection(mask: u32) -> [u8; SELECTION_SIZE] {
    let mut s = [0u8; SELECTION_SIZE];
    s[0..4].copy_from_slice(&1u32.to_be_bytes());
    s[4..6].copy_from_slice(&alg::SHA256.to_be_bytes());
    s[6] = 3;
    s[7] = mask as u8;
    s[8] = (mask >> 8) as u8;
    s[9] = (mask >> 16) as u8;
    s
}

/// new = H(old ‖ TPM_CC_PolicyLocality ‖ locality).
pub fn policy_locality(old: &[u8; 32], locality: u8) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(&cc::POLICY_LOCALITY.to_be_bytes());
    h.update(&[locality]);
    h.finalize()
}

/// new = H(old ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ H(selected PCR values in order)).
pub fn policy_pcr(old: &[u8; 32], selection: &[u8; SELECTION_SIZE], values: &[[u8; 32]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for v in values {
        d.update(v);
    }
    let pcr_digest = d.finalize();
    let mut h = Sha256::new();
    h.update(old);
    h.update(&cc::POLICY_PCR.to_be_bytes());
    h.update(selection);
    h.update(&pcr_digest);
    h.finalize()
}

/// new = H(0…0 ‖ TPM_CC_PolicyOR ‖ branch digests concatenated).
pub fn policy_or(branches: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&[0u8; 32]);
    h.update(&cc::POLICY_OR.to_be_bytes());
    for b in branches {
        h.update(b);
    }
    h.finalize()
}

/// PCR_Extend in the SHA-256 bank: H(old ‖ digest).
pub fn extend(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(digest);
    h.finalize()
}

/// What PCR_Event(data) does to a SHA-256 PCR.
pub fn extend_event(old: &[u8; 32], data: &[u8]) -> [u8; 32] {
    extend(old, &sha256(data))
}
