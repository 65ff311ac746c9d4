//! Payload "sealer": sealing with a key only this enclave (same MRENCLAVE on the same
//! platform) can get — EGETKEY through the hypervisor, like SGX's seal key.
//! ECALL 0 seal(plaintext) → blob, 1 unseal(blob) → plaintext, 2 report(REPORTDATA 64 B
//! [‖ TARGETINFO 56 B]) → REPORT (432 B), 3 seal-key fingerprint for KEYID 0 (SHA-256 of the
//! key, so tests can check that the key is bound to MRENCLAVE without ever seeing it),
//! 4 quote-report(REPORTDATA 64 B) → REPORT (432 B) targeted at the hypervisor's quoting
//! identity, which the host turns into a HAK-signed quote with the QUOTE hypercall.
//!
//! Blob: "HESL" ‖ version u32 LE (1) ‖ KEYID (32, random) ‖ IV (12, random) ‖ tag (16) ‖
//! ciphertext. AES-128-GCM, AAD = the first 52 bytes (magic, version, KEYID, IV).
#![no_std]
#![no_main]

use enclave_rt::{ereport, err, fill_random, marshal, seal_key_mrenclave};
use hyperenclave_core::crypto::{aes128_gcm_open, aes128_gcm_seal, sha256};
use hyperenclave_core::trust::quoting_target_mrenclave;

const MAGIC: &[u8; 4] = b"HESL";
const HEADER: usize = 4 + 4 + 32 + 12;
const OVERHEAD: usize = HEADER + 16;



enclave_rt::ecalls![seal, unseal, report, key_fingerprint, quote_report];

extern "C" fn seal() -> u64 {
    marshal(|input, out| {
        let total = input.len() + OVERHEAD;
        if total > out.len() {
            return Err(err::TOO_BIG);
        }
        let mut key_id = [0u8; 32];
        let mut iv = [0u8; 12];
        fill_random(&mut key_id).ok_or(err::NO_ENTROPY)?;
        fill_random(&mut iv).ok_or(err::NO_ENTROPY)?;
        let key = seal_key_mrenclave(&key_id)?;
        out[0..4].copy_from_slice(MAGIC);
        out[4..8].copy_from_slice(&1u32.to_le_bytes());
        out[8..40].copy_from_slice(&key_id);
        out[40..52].copy_from_slice(&iv);
        let (head, rest) = out.split_at_mut(HEADER);
        let body = &mut rest[16..16 + input.len()];
        body.copy_from_slice(input);
        let tag = aes128_gcm_seal(&key, &iv, head, body);
        rest[..16].copy_from_slice(&tag);
        Ok(total)
    })
}

extern "C" fn unseal() -> u64 {
    marshal(|input, out| {
        if input.len() < OVERHEAD || &input[0..4] != MAGIC || input[4..8] != 1u32.to_le_bytes() {
            return Err(err::BAD_INPUT);
        }
        let key_id: [u8; 32] = input[8..40].try_into().unwrap();
        let iv: [u8; 12] = input[40..52].try_into().unwrap();
        let tag: [u8; 16] = input[52..68].try_into().unwrap();
        let key = seal_key_mrenclave(&key_id)?;
        let n = input.len() - OVERHEAD;
        out[..n].copy_from_slice(&input[OVERHEAD..]);
        if !aes128_gcm_open(&key, &iv, &input[..HEADER], &mut out[..n], &tag) {
            out[..n].fill(0);
            return Err(err::AUTH_FAILED);
        }
        Ok(n)
    })
}

extern "C" fn report() -> u64 {
    marshal(|input, out| {
        if input.len() != 64 && input.len() != 64 + 56 {
            return Err(err::BAD_INPUT);
        }
        let data: [u8; 64] = input[..64].try_into().unwrap();
        let mut ti = [0u8; 56];
        if input.len() > 64 {
            ti.copy_from_slice(&input[64..]);
        }
        let mut report = [0u8; 432];
        if ereport(&ti, &data, &mut report) != 0 {
            return Err(err::HYPERCALL);
        }
        out[..432].copy_from_slice(&report);
        Ok(432)
    })
}

extern "C" fn key_fingerprint() -> u64 {
    marshal(|_input, out| {
        let key = seal_key_mrenclave(&[0u8; 32])?;
        out[..32].copy_from_slice(&sha256(&key));
        Ok(32)
    })
}

/// ECALL 4: EREPORT for the quoting identity (TARGETINFO.MEASUREMENT = QUOTING_TARGET_MRENCLAVE,
/// ATTRIBUTES 0, MISCSELECT 0) with the caller's REPORTDATA.
extern "C" fn quote_report() -> u64 {
    marshal(|input, out| {
        let data: [u8; 64] = input.try_into().map_err(|_| err::BAD_INPUT)?;
        let mut ti = [0u8; 56];
        ti[..32].copy_from_slice(&quoting_target_mrenclave());
        let mut report = [0u8; 432];
        if ereport(&ti, &data, &mut report) != 0 {
            return Err(err::HYPERCALL);
        }
        out[..432].copy_from_slice(&report);
        Ok(432)
    })
}
