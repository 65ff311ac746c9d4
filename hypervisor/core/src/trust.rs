//! The hypervisor's root of trust (docs/attestation.md): a 32-byte root secret sealed in the TPM
//! to the measured state, the SEAL/REPORT key roots and the hypervisor attestation key (HAK,
//! Ed25519) derived from it, the HAK bound into a PCR, and quotes signed by the HAK.
//!
//! Sealing. The parent is a primary storage key (owner hierarchy, ECC P-256) whose use needs the
//! same policy as the sealed object, and userWithAuth is clear on both, so only a caller that
//! satisfies that policy can Create or Load under it:
//!   P = PolicyOR(branch_0 … branch_7),
//!   branch_k = PolicyPCR(PolicyLocality(0, TPM_LOC_TWO), sha256:{firmware PCRs, hypervisor PCR},
//!              firmware values read at TRUST_INIT ‖ v_k)
//!   v_0 = the hypervisor PCR after the boot-time measurement (read at creation, kept in the blob),
//!   v_{k+1} = extend(extend(v_k, H(EXIT_EVENT)), reload digest): k disable/reload cycles.
//! A blob (untrusted host input) is accepted only when its public area is exactly the sealed
//! object the hypervisor creates (attributes, nameAlg, authPolicy = P) and it loads under the
//! parent (the TPM checks the private part's integrity with the parent's keys). v_0 travels in
//! the blob: a blob naming another v_0 yields another P, hence another parent, under which only
//! a caller at locality 2 in that PCR state could have created an object — the hypervisor, or
//! the host while it holds locality 2 (before launch, trusted by assumption; after DISABLE, the
//! reload weakness docs/attestation.md states).

use crate::crypto::ed25519::{wipe, SigningKey};
use crate::crypto::{hmac_sha256, sha256};
use crate::enclave::report::{KeyRoots, REPORT_BODY_SIZE, REPORT_SIZE};
use crate::error::{HvError, HvResult};
use crate::hypervisor::Hypervisor;
use crate::memory::PhysMem;
use crate::tpm::policy::{extend, extend_event, policy_locality, policy_or, policy_pcr, sha256_selection, LOCALITY_TWO};
use crate::tpm::{alg, attr, Tpm, TpmTransport};

/// Where the hypervisor's root of trust lives and what its policy covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustConfig {
    /// The PCR the hypervisor image is measured into (12).
    pub hypervisor_pcr: u8,
    /// The PCR the HAK event is extended into (13).
    pub hak_pcr: u8,
    /// Firmware PCRs in the seal policy (bit i = PCR i; default 0-7).
    pub firmware_pcrs: u32,
    /// The hypervisor PCR's SHA-256 value after the boot-time measurement (v0 of the chain).
    /// None: a new root takes the value the PCR has at TRUST_INIT (the first launch of a boot
    /// is measured by the still-trusted host) and records it in the blob; an unseal takes it
    /// from the blob (the TPM enforces it: another v0 means another policy and another parent).
    pub boot_value: Option<[u8; 32]>,
    /// What each reload extends into the hypervisor PCR; None: the image digest.
    pub reload_digest: Option<[u8; 32]>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig { hypervisor_pcr: 12, hak_pcr: 13, firmware_pcrs: 0xff, boot_value: None, reload_digest: None }
    }
}

/// Fills the buffer with random bytes from the platform (RDRAND/RDSEED on bare metal, getrandom
/// on the emulated platform); false when it cannot.
pub type EntropySource = fn(&mut [u8]) -> bool;

/// The event the hypervisor extends into its PCR at DISABLE: afterwards the PCR is in no state
/// the root secret unseals in until a reload measures the image again. Mirrored as
/// HYPERVISOR_EXIT_EVENT in the generated TypeScript (the CLI logs it after a linux DISABLE).
pub const EXIT_EVENT: &[u8] = hyperenclave_abi::labels::HYPERVISOR_EXIT_EVENT;
/// The HAK event data prefix; the 64 lowercase hex characters of the public key follow.
pub const HAK_EVENT_PREFIX: &[u8] = hyperenclave_abi::labels::HAK_EVENT_PREFIX;
pub const HAK_EVENT_SIZE: usize = HAK_EVENT_PREFIX.len() + 64;
/// Reload cycles (disable → reload → enable) within one boot the seal policy covers.
pub const MAX_RELOADS: usize = 7;
const BRANCHES: usize = MAX_RELOADS + 1;
/// Smallest output buffer TRUST_INIT accepts for a new blob.
pub const TRUST_BLOB_CAPACITY: usize = hyperenclave_abi::sizes::TRUST_BLOB_CAPACITY;
/// Blob header ("HER1": HyperEnclave root, version 1), then v0 (32 bytes, the hypervisor PCR
/// after the boot-time measurement), TPM2B_PRIVATE, TPM2B_PUBLIC.
pub const BLOB_MAGIC: [u8; 4] = *b"HER1";

/// MRENCLAVE of the quoting identity: SHA-256("HyperEnclave-TS quoting identity v1").
/// An enclave asks for a quote with EREPORT targeted at it (ATTRIBUTES = 0, MISCSELECT = 0).
pub const QUOTING_IDENTITY_LABEL: &[u8] = hyperenclave_abi::labels::QUOTING_IDENTITY_LABEL;
pub fn quoting_target_mrenclave() -> [u8; 32] {
    sha256(QUOTING_IDENTITY_LABEL)
}
pub const QUOTE_SIZE: usize = hyperenclave_abi::sizes::QUOTE_SIZE;
pub const QUOTE_MAGIC: [u8; 4] = {
    let m = hyperenclave_abi::labels::QUOTE_MAGIC;
    [m[0], m[1], m[2], m[3]]
};
/// Quote bytes 12-15 (`Quote::flags`), platform flags the HAK signs with the report: DMA
/// protection was on (an IOMMU the hypervisor owns translated every device's DMA) when the quote
/// was made.
pub const QUOTE_FLAG_DMA_PROTECTED: u32 = hyperenclave_abi::quote_flags::DMA_PROTECTED;

const SEALED_ATTRS: u32 = attr::FIXED_TPM | attr::FIXED_PARENT | attr::ADMIN_WITH_POLICY | attr::NO_DA;
const PARENT_ATTRS: u32 =
    attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN | attr::ADMIN_WITH_POLICY | attr::NO_DA | attr::RESTRICTED | attr::DECRYPT;
/// TPMT_PUBLIC bytes of the sealed object before its `unique` field.
const SEALED_FIXED: usize = 2 + 2 + 4 + 2 + 32 + 2;

/// The secrets held while trust is established. Dropping wipes them (KeyRoots and SigningKey
/// wipe themselves).
pub(crate) struct TrustState {
    pub keys: KeyRoots,
    pub hak: SigningKey,
    pub hak_pcr: u8,
}

/// What TRUST_INIT did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustInit {
    /// Bytes of the new blob written to `out` (0 when the given blob unsealed).
    pub blob_len: usize,
    /// A new root secret was created (flag bit 0).
    pub created: bool,
    /// The HAK PCR was extended by this call (flag bit 1).
    pub pcr_extended: bool,
    pub hak_pcr: u8,
    pub hak_public: [u8; 32],
}

/// TPMT_PUBLIC of the sealed data object (unique empty; the TPM fills it).
pub(crate) fn sealed_template(policy: &[u8; 32]) -> [u8; SEALED_FIXED + 2] {
    let mut t = [0u8; SEALED_FIXED + 2];
    t[0..2].copy_from_slice(&alg::KEYEDHASH.to_be_bytes());
    t[2..4].copy_from_slice(&alg::SHA256.to_be_bytes());
    t[4..8].copy_from_slice(&SEALED_ATTRS.to_be_bytes());
    t[8..10].copy_from_slice(&32u16.to_be_bytes());
    t[10..42].copy_from_slice(policy);
    t[42..44].copy_from_slice(&alg::NULL.to_be_bytes()); // TPMT_KEYEDHASH_SCHEME
    t
}

/// TPMT_PUBLIC of the parent: an ECC P-256 restricted decryption (storage) key, AES-128-CFB.
pub(crate) fn parent_template(policy: &[u8; 32]) -> [u8; 58] {
    let mut t = [0u8; 58];
    let mut at = 0;
    let mut put = |b: &[u8]| {
        t[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    };
    put(&alg::ECC.to_be_bytes());
    put(&alg::SHA256.to_be_bytes());
    put(&PARENT_ATTRS.to_be_bytes());
    put(&32u16.to_be_bytes());
    put(policy);
    put(&alg::AES.to_be_bytes());
    put(&128u16.to_be_bytes());
    put(&alg::CFB.to_be_bytes());
    put(&alg::NULL.to_be_bytes()); // scheme
    put(&0x0003u16.to_be_bytes()); // TPM_ECC_NIST_P256
    put(&alg::NULL.to_be_bytes()); // kdf
    put(&[0, 0, 0, 0]); // unique: empty x, empty y
    assert_eq!(at, 58);
    t
}

/// The hypervisor PCR values the seal policy accepts, and the capped value after each.
pub fn hypervisor_pcr_chain(boot_value: &[u8; 32], reload_digest: &[u8; 32]) -> ([[u8; 32]; BRANCHES], [[u8; 32]; BRANCHES]) {
    let mut open = [[0u8; 32]; BRANCHES];
    let mut capped = [[0u8; 32]; BRANCHES];
    open[0] = *boot_value;
    for k in 0..BRANCHES {
        capped[k] = extend_event(&open[k], EXIT_EVENT);
        if k + 1 < BRANCHES {
            open[k + 1] = extend(&capped[k], reload_digest);
        }
    }
    (open, capped)
}

/// The HAK event data: "hyperenclave-hak:ed25519:" ‖ lowercase hex of the public key.
pub fn hak_event(public: &[u8; 32]) -> [u8; HAK_EVENT_SIZE] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut e = [0u8; HAK_EVENT_SIZE];
    let p = HAK_EVENT_PREFIX.len();
    e[..p].copy_from_slice(HAK_EVENT_PREFIX);
    for (i, b) in public.iter().enumerate() {
        e[p + 2 * i] = HEX[(b >> 4) as usize];
        e[p + 1 + 2 * i] = HEX[(b & 15) as usize];
    }
    e
}

/// Runs the policy in a new session; on failure the session is flushed.
pub(crate) fn satisfy<T: TpmTransport>(tpm: &mut Tpm<'_, T>, nonce: &[u8; 16], selection: &[u8; 10], branches: &[[u8; 32]]) -> HvResult<u32> {
    let s = tpm.start_policy_session(nonce)?;
    let r = tpm.policy_locality(s, LOCALITY_TWO).and_then(|_| tpm.policy_pcr(s, selection)).and_then(|_| tpm.policy_or(s, branches));
    match r {
        Ok(()) => Ok(s),
        Err(e) => {
            let _ = tpm.flush(s);
            Err(e)
        }
    }
}

/// Largest TPM2B_PRIVATE accepted: a sealed 32-byte secret's is about 150 bytes.
const BLOB_PRIVATE_MAX: usize = 512;

/// Bytes before the TPM2B_PRIVATE: magic and v0.
const BLOB_HEADER: usize = 4 + 32;

/// Splits a blob into (v0, TPM2B_PRIVATE, TPM2B_PUBLIC) with their size prefixes, checking bounds.
pub(crate) fn split_blob(blob: &[u8]) -> HvResult<([u8; 32], &[u8], &[u8])> {
    if blob.len() < BLOB_HEADER || blob[..4] != BLOB_MAGIC {
        return Err(HvError::TrustSealFailed { what: "blob does not start with \"HER1\" and a 32-byte PCR value (byte 0)", rc: 0 });
    }
    let v0: [u8; 32] = blob[4..BLOB_HEADER].try_into().unwrap();
    let mut r = crate::tpm::Rsp::new(&blob[BLOB_HEADER..]);
    let bad = |_| HvError::TrustSealFailed { what: "blob truncated inside its private or public area", rc: 0 };
    let private = r.tpm2b_raw("blob private").map_err(bad)?;
    let public = r.tpm2b_raw("blob public").map_err(bad)?;
    if r.at() != blob.len() - BLOB_HEADER {
        return Err(HvError::TrustSealFailed { what: "blob has bytes after its public area", rc: 0 });
    }
    if private.len() > BLOB_PRIVATE_MAX {
        return Err(HvError::TrustSealFailed { what: "blob's private area is larger than a sealed 32-byte secret's", rc: 0 });
    }
    Ok((v0, private, public))
}

impl<M: PhysMem, const E: usize> Hypervisor<M, E> {
    /// TRUST_INIT: unseals the root secret from `blob` (when not empty) or creates and seals a
    /// new one into `out` (≥ TRUST_BLOB_CAPACITY bytes), then derives the SEAL/REPORT key roots
    /// and the HAK and extends the HAK event into the HAK PCR when it is not already the only
    /// event there. A given blob that does not unseal is an error, never replaced silently.
    pub fn trust_init<T: TpmTransport>(&mut self, t: &mut T, blob: &[u8], out: &mut [u8]) -> HvResult<TrustInit> {
        if out.len() < TRUST_BLOB_CAPACITY {
            return Err(HvError::BufferTooSmall { what: "TRUST_INIT blob output", need: TRUST_BLOB_CAPACITY as u64, got: out.len() as u64 });
        }
        if self.trust.is_some() {
            // once per enable: a second call could only swap the root under running enclaves
            return Err(HvError::TrustSealFailed { what: "the root of trust is already established (TRUST_INIT runs once per enable; DISABLE drops it)", rc: 0 });
        }
        let tc = self.config().trust;
        // the HAK PCR must not be one the policy covers (extending it would lock the root out)
        if tc.hypervisor_pcr > 23
            || tc.hak_pcr > 23
            || tc.firmware_pcrs >> 24 != 0
            || tc.firmware_pcrs & (1 << tc.hypervisor_pcr) != 0
            || tc.firmware_pcrs & (1 << tc.hak_pcr) != 0
            || tc.hak_pcr == tc.hypervisor_pcr
        {
            return Err(HvError::InvalidRange { what: "trust PCR configuration", start: tc.hypervisor_pcr as u64, size: tc.firmware_pcrs as u64 });
        }
        let mut nonce = [0u8; 16];
        if !(self.config().entropy)(&mut nonce) {
            return Err(HvError::TrustSealFailed { what: "the platform entropy source failed", rc: 0 });
        }
        let mut tpm = Tpm::new(t);
        if !tpm.pcr_banks()?.contains(alg::SHA256) {
            return Err(HvError::TrustSealFailed { what: "the TPM has no SHA-256 PCR bank allocated", rc: 0 });
        }
        // PCR values in selection order (ascending index), the hypervisor PCR included.
        let mask = tc.firmware_pcrs | 1 << tc.hypervisor_pcr;
        let mut values = [[0u8; 32]; 24];
        let mut n = 0;
        let mut hv_at = 0;
        for i in 0..24u8 {
            if mask & (1 << i) != 0 {
                values[n] = tpm.pcr_read_sha256(i)?;
                if i == tc.hypervisor_pcr {
                    hv_at = n;
                }
                n += 1;
            }
        }
        let parsed = if blob.is_empty() { None } else { Some(split_blob(blob)?) };
        let boot = match (&parsed, tc.boot_value) {
            (Some((v0, _, _)), _) => *v0,
            (None, Some(v)) => v,
            (None, None) => values[hv_at],
        };
        let (open, capped) = hypervisor_pcr_chain(&boot, &tc.reload_digest.unwrap_or(self.config().image_digest));
        if !open.contains(&values[hv_at]) {
            return Err(HvError::TrustSealFailed {
                what: if capped.contains(&values[hv_at]) {
                    "the hypervisor PCR holds the hypervisor-exit cap: reload the hypervisor (a new measurement) before TRUST_INIT"
                } else {
                    "the hypervisor PCR is not the measurement the root was sealed to (another image or boot chain, or more reloads than the policy covers)"
                },
                rc: 0,
            });
        }
        let selection = sha256_selection(mask);
        let mut branches = [[0u8; 32]; BRANCHES];
        let loc = policy_locality(&[0; 32], LOCALITY_TWO);
        for (k, b) in branches.iter_mut().enumerate() {
            values[hv_at] = open[k];
            *b = policy_pcr(&loc, &selection, &values[..n]);
        }
        let policy = policy_or(&branches);

        let parent = tpm.create_primary(&parent_template(&policy))?;
        let mut root = [0u8; 32];
        let res = (|| -> HvResult<usize> {
            if let Some((_, private, public)) = parsed {
                let want = sealed_template(&policy);
                let body = &public[2..];
                if body.len() != SEALED_FIXED + 2 + 32 || body[..SEALED_FIXED] != want[..SEALED_FIXED] || body[SEALED_FIXED..SEALED_FIXED + 2] != 32u16.to_be_bytes() {
                    return Err(HvError::TrustSealFailed {
                        what: "the blob's public area is not the hypervisor's sealed root (type, attributes, nameAlg or a policy for other PCR values)",
                        rc: 0,
                    });
                }
                let s = satisfy(&mut tpm, &nonce, &selection, &branches)?;
                let item = match tpm.load(parent, s, private, public) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = tpm.flush(s);
                        return Err(e);
                    }
                };
                nonce[0] ^= 1;
                let r = satisfy(&mut tpm, &nonce, &selection, &branches).and_then(|s| {
                    tpm.unseal(item, s, &mut root).inspect_err(|_| {
                        let _ = tpm.flush(s);
                    })
                });
                let _ = tpm.flush(item);
                r.map(|_| 0)
            } else {
                let mut a = [0u8; 32];
                let mut b = [0u8; 32];
                if !(self.config().entropy)(&mut a) {
                    return Err(HvError::TrustSealFailed { what: "the platform entropy source failed", rc: 0 });
                }
                tpm.get_random(&mut b)?;
                // both sources: a weak one alone does not make the root guessable
                root = hmac_sha256(&a, &b);
                wipe(&mut a);
                wipe(&mut b);
                let s = satisfy(&mut tpm, &nonce, &selection, &branches)?;
                out[..4].copy_from_slice(&BLOB_MAGIC);
                out[4..BLOB_HEADER].copy_from_slice(&boot);
                match tpm.create_sealed(parent, s, &sealed_template(&policy), &root, &mut out[BLOB_HEADER..]) {
                    Ok(len) => Ok(BLOB_HEADER + len),
                    Err(e) => {
                        let _ = tpm.flush(s);
                        Err(e)
                    }
                }
            }
        })();
        let _ = tpm.flush(parent);
        let blob_len = match res {
            Ok(l) => l,
            Err(e) => {
                wipe(&mut root);
                return Err(e);
            }
        };
        let keys = KeyRoots::from_root(&root, self.config().cpu_svn);
        let mut seed = hmac_sha256(&root, b"hyperenclave hak ed25519 v1");
        wipe(&mut root);
        let hak = SigningKey::from_seed(&seed);
        wipe(&mut seed);
        let hak_public = hak.public_key();
        let event = hak_event(&hak_public);
        let pcr_extended = if tpm.pcr_read_sha256(tc.hak_pcr)? != extend_event(&[0; 32], &event) {
            tpm.pcr_event(tc.hak_pcr, &event)?;
            true
        } else {
            false
        };
        self.trust = Some(TrustState { keys, hak, hak_pcr: tc.hak_pcr });
        Ok(TrustInit { blob_len, created: blob.is_empty(), pcr_extended, hak_pcr: tc.hak_pcr, hak_public })
    }

    /// The hypervisor leaves (DISABLE): caps its PCR with EXIT_EVENT so the root secret does not
    /// unseal for the host that gets every locality back, then wipes the secrets. The cap must
    /// succeed before the hypervisor may go (the platform refuses DISABLE otherwise).
    pub fn trust_exit<T: TpmTransport>(&mut self, t: &mut T) -> HvResult<()> {
        let mut tpm = Tpm::new(t);
        tpm.pcr_event(self.config().trust.hypervisor_pcr, EXIT_EVENT)?;
        self.trust = None;
        Ok(())
    }

    pub fn trust_established(&self) -> bool {
        self.trust.is_some()
    }

    pub(crate) fn trust_keys(&self) -> HvResult<&KeyRoots> {
        self.trust.as_ref().map(|t| &t.keys).ok_or(HvError::TrustNotEstablished)
    }

    /// HAK_PUBLIC: the Ed25519 public key and the PCR it is bound in.
    pub fn hak_public(&self) -> HvResult<([u8; 32], u8)> {
        let t = self.trust.as_ref().ok_or(HvError::TrustNotEstablished)?;
        Ok((t.hak.public_key(), t.hak_pcr))
    }

    /// The quote's platform flags: DMA protection as STATUS reports it.
    fn quote_flags(&self) -> u32 {
        if self.status().dma.protected {
            QUOTE_FLAG_DMA_PROTECTED
        } else {
            0
        }
    }

    /// QUOTE: checks the REPORT's MAC as the quoting identity, then signs (layout in
    /// docs/hypercall-abi.md): magic, version 1, algorithm 1, HAK PCR, flags, body, HAK, signature.
    pub fn quote(&self, report: &[u8]) -> HvResult<[u8; QUOTE_SIZE]> {
        let t = self.trust.as_ref().ok_or(HvError::TrustNotEstablished)?;
        if report.len() < REPORT_SIZE {
            return Err(HvError::BufferTooSmall { what: "QUOTE report", need: REPORT_SIZE as u64, got: report.len() as u64 });
        }
        t.keys.verify_report(&report[..REPORT_SIZE], &quoting_target_mrenclave())?;
        let mut body = [0u8; REPORT_BODY_SIZE];
        body.copy_from_slice(&report[..REPORT_BODY_SIZE]);
        let mut q = hyperenclave_abi::Quote {
            magic: QUOTE_MAGIC,
            version: hyperenclave_abi::quote::VERSION,
            sig_alg: hyperenclave_abi::quote::SIG_ED25519,
            hak_pcr: t.hak_pcr as u32,
            flags: self.quote_flags(),
            body,
            hak: t.hak.public_key(),
            signature: [0; 64],
        }
        .to_bytes();
        let signed = hyperenclave_abi::quote::SIGNED_BYTES;
        let sig = t.hak.sign(&q[..signed]);
        q[signed..].copy_from_slice(&sig);
        Ok(q)
    }
}
