//! A small TPM 2.0 command layer (TCG TPM 2.0 Library, Part 3 "Commands" and Part 2
//! "Structures"): marshaling of the few commands the hypervisor's root of trust needs, response
//! parsing where every read is bounds-checked, and the policy-digest arithmetic ([`policy`]).
//! The transport ([`TpmTransport`]) moves whole command/response byte strings and owns the
//! locality: the bare-metal image speaks TIS MMIO at locality 2, the emulated platform's addon
//! talks to swtpm's server socket after SET_LOCALITY 2 on its control channel.

pub mod policy;

use crate::error::{HvError, HvResult};

/// Why a transport could not complete one command/response exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpmIoError {
    pub what: &'static str,
}

/// Sends one complete TPM command and receives the complete response into `rsp`.
pub trait TpmTransport {
    /// Returns the response length (the response's own size field must agree).
    fn transact(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TpmIoError>;
}

/// Command and response buffers: every command here is below 1 KiB, every response below 4 KiB
/// (the largest is Create's, with the private and public areas and the creation data).
pub const CMD_MAX: usize = 1024;
pub const RSP_MAX: usize = 4096;

pub mod alg {
    pub const SHA1: u16 = 0x0004;
    pub const AES: u16 = 0x0006;
    pub const KEYEDHASH: u16 = 0x0008;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const NULL: u16 = 0x0010;
    pub const SM3_256: u16 = 0x0012;
    pub const ECC: u16 = 0x0023;
    pub const CFB: u16 = 0x0043;
}

pub mod cc {
    pub const PCR_EVENT: u32 = 0x0000_013C;
    pub const CREATE_PRIMARY: u32 = 0x0000_0131;
    pub const CREATE: u32 = 0x0000_0153;
    pub const LOAD: u32 = 0x0000_0157;
    pub const UNSEAL: u32 = 0x0000_015E;
    pub const FLUSH_CONTEXT: u32 = 0x0000_0165;
    pub const POLICY_LOCALITY: u32 = 0x0000_016F;
    pub const POLICY_OR: u32 = 0x0000_0171;
    pub const START_AUTH_SESSION: u32 = 0x0000_0176;
    pub const GET_CAPABILITY: u32 = 0x0000_017A;
    pub const GET_RANDOM: u32 = 0x0000_017B;
    pub const PCR_READ: u32 = 0x0000_017E;
    pub const POLICY_PCR: u32 = 0x0000_017F;
    pub const PCR_EXTEND: u32 = 0x0000_0182;
}

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
pub const RH_OWNER: u32 = 0x4000_0001;
pub const RH_NULL: u32 = 0x4000_0007;
const RS_PW: u32 = 0x4000_0009;
const SE_POLICY: u8 = 0x01;
const CAP_PCRS: u32 = 0x0000_0005;

/// TPMA_OBJECT bits (Part 2 §8.3).
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
}

/// A command under construction (big-endian, as the TPM wants).
pub struct Cmd {
    buf: [u8; CMD_MAX],
    len: usize,
    /// Set when a write did not fit: such a command is never sent.
    overflow: bool,
}

impl Cmd {
    pub fn new(sessions: bool, code: u32) -> Cmd {
        let mut c = Cmd { buf: [0; CMD_MAX], len: 0, overflow: false };
        c.u16(if sessions { ST_SESSIONS } else { ST_NO_SESSIONS });
        c.u32(0); // size, patched in finish()
        c.u32(code);
        c
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // A write that does not fit marks the command: `Tpm::run` refuses to send it (a blob
        // from the host could otherwise make a truncated command).
        if b.len() > CMD_MAX - self.len {
            self.overflow = true;
            return self;
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    /// A TPM2B: 16-bit size, then the bytes.
    pub fn tpm2b(&mut self, b: &[u8]) -> &mut Self {
        self.u16(b.len() as u16).bytes(b)
    }
    /// One authorization (TPMS_AUTH_COMMAND) with an empty nonce and HMAC: the password session
    /// with an empty password, or a policy session whose policy has no PolicyAuthValue.
    pub fn auth(&mut self, session: u32) -> &mut Self {
        let at = self.len;
        self.u32(0).u32(session).u16(0).u8(0).u16(0);
        if !self.overflow {
            // authorizationSize: the bytes of the TPMS_AUTH_COMMAND that follow it
            let size = (self.len - at - 4) as u32;
            self.buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
        self
    }
    pub fn finish(&mut self) -> &[u8] {
        let n = self.len as u32;
        self.buf[2..6].copy_from_slice(&n.to_be_bytes());
        &self.buf[..self.len]
    }
}

impl Drop for Cmd {
    fn drop(&mut self) {
        // a Create command carries the root secret
        crate::crypto::ed25519::wipe(&mut self.buf[..self.len]);
    }
}

/// Bounds-checked reading of a response; errors name the field and its byte offset.
pub struct Rsp<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Rsp<'a> {
    pub fn new(b: &'a [u8]) -> Rsp<'a> {
        Rsp { b, at: 0 }
    }
    pub fn at(&self) -> usize {
        self.at
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> HvResult<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or(HvError::TpmIo { what, offset: self.at as u32 })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub fn u8(&mut self, what: &'static str) -> HvResult<u8> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> HvResult<u16> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    pub fn u32(&mut self, what: &'static str) -> HvResult<u32> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    /// A TPM2B's contents.
    pub fn tpm2b(&mut self, what: &'static str) -> HvResult<&'a [u8]> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    /// A TPM2B with its size prefix (as it is fed back to the TPM).
    pub fn tpm2b_raw(&mut self, what: &'static str) -> HvResult<&'a [u8]> {
        let start = self.at;
        let n = self.u16(what)? as usize;
        self.take(n, what)?;
        Ok(&self.b[start..self.at])
    }
}

/// A TPM and the scratch buffers its exchanges use.
pub struct Tpm<'t, T: TpmTransport> {
    t: &'t mut T,
    rsp: [u8; RSP_MAX],
    rsp_len: usize,
}

/// The allocated PCR banks (GetCapability TPM_CAP_PCRS): algorithm ids with at least one PCR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Banks {
    pub algs: [u16; 8],
    pub count: usize,
}

impl Banks {
    pub fn contains(&self, a: u16) -> bool {
        self.algs[..self.count].contains(&a)
    }
}

impl<'t, T: TpmTransport> Tpm<'t, T> {
    pub fn new(t: &'t mut T) -> Self {
        Tpm { t, rsp: [0; RSP_MAX], rsp_len: 0 }
    }

    /// Sends `cmd`, checks the response header; returns a reader positioned after it.
    /// A non-zero response code becomes `TrustSealFailed { what, rc }`.
    fn run(&mut self, cmd: &mut Cmd, what: &'static str) -> HvResult<Rsp<'_>> {
        if cmd.overflow {
            return Err(HvError::TrustSealFailed { what: "a TPM command would exceed the command buffer (oversized input)", rc: 0 });
        }
        let bytes = cmd.finish();
        let n = self.t.transact(bytes, &mut self.rsp).map_err(|e| HvError::TpmIo { what: e.what, offset: 0 })?;
        if n > RSP_MAX {
            return Err(HvError::TpmIo { what: "response longer than the buffer", offset: RSP_MAX as u32 });
        }
        self.rsp_len = n;
        let mut r = Rsp::new(&self.rsp[..n]);
        let _tag = r.u16("response tag")?;
        let size = r.u32("response size")?;
        if size as usize != n {
            return Err(HvError::TpmIo { what: "response size field differs from the bytes received", offset: 2 });
        }
        let rc = r.u32("response code")?;
        if rc != 0 {
            return Err(HvError::TrustSealFailed { what, rc });
        }
        Ok(r)
    }

    /// GetCapability(TPM_CAP_PCRS): the banks with at least one PCR allocated.
    pub fn pcr_banks(&mut self) -> HvResult<Banks> {
        let mut c = Cmd::new(false, cc::GET_CAPABILITY);
        c.u32(CAP_PCRS).u32(0).u32(8);
        let mut r = self.run(&mut c, "TPM2_GetCapability(PCRS)")?;
        let _more = r.u8("moreData")?;
        if r.u32("capability")? != CAP_PCRS {
            return Err(HvError::TpmIo { what: "GetCapability answered another capability", offset: 11 });
        }
        let n = r.u32("TPML_PCR_SELECTION.count")?;
        let mut banks = Banks::default();
        for _ in 0..n {
            let a = r.u16("TPMS_PCR_SELECTION.hash")?;
            let sz = r.u8("sizeofSelect")? as usize;
            let sel = r.take(sz, "pcrSelect")?;
            if sel.iter().any(|&b| b != 0) && banks.count < banks.algs.len() {
                banks.algs[banks.count] = a;
                banks.count += 1;
            }
        }
        Ok(banks)
    }

    /// PCR_Read of one SHA-256 PCR.
    pub fn pcr_read_sha256(&mut self, index: u8) -> HvResult<[u8; 32]> {
        let mut sel = [0u8; 3];
        sel[(index / 8) as usize] = 1 << (index % 8);
        let mut c = Cmd::new(false, cc::PCR_READ);
        c.u32(1).u16(alg::SHA256).u8(3).bytes(&sel);
        let mut r = self.run(&mut c, "TPM2_PCR_Read")?;
        let _counter = r.u32("pcrUpdateCounter")?;
        let n = r.u32("pcrSelectionOut.count")?;
        for _ in 0..n {
            r.u16("pcrSelectionOut.hash")?;
            let sz = r.u8("pcrSelectionOut.sizeofSelect")? as usize;
            r.take(sz, "pcrSelectionOut.pcrSelect")?;
        }
        let count = r.u32("pcrValues.count")?;
        if count != 1 {
            return Err(HvError::TrustSealFailed { what: "TPM2_PCR_Read returned no SHA-256 value for a PCR the policy needs", rc: 0 });
        }
        let at = r.at();
        let d = r.tpm2b("pcrValues[0]")?;
        d.try_into().map_err(|_| HvError::TpmIo { what: "PCR value is not 32 bytes", offset: at as u32 })
    }

    /// PCR_Event: the TPM extends `pcr` in every allocated bank with H_bank(data).
    pub fn pcr_event(&mut self, pcr: u8, data: &[u8]) -> HvResult<()> {
        let mut c = Cmd::new(true, cc::PCR_EVENT);
        c.u32(pcr as u32).auth(RS_PW).tpm2b(data);
        self.run(&mut c, "TPM2_PCR_Event")?;
        Ok(())
    }

    /// GetRandom: up to 32 bytes from the TPM's RNG.
    pub fn get_random(&mut self, out: &mut [u8; 32]) -> HvResult<()> {
        let mut c = Cmd::new(false, cc::GET_RANDOM);
        c.u16(32);
        let mut r = self.run(&mut c, "TPM2_GetRandom")?;
        let at = r.at();
        let b = r.tpm2b("randomBytes")?;
        if b.len() != 32 {
            return Err(HvError::TpmIo { what: "GetRandom returned fewer bytes than asked", offset: at as u32 });
        }
        out.copy_from_slice(b);
        Ok(())
    }

    /// StartAuthSession: an unsalted, unbound SHA-256 policy session; returns its handle.
    pub fn start_policy_session(&mut self, nonce: &[u8; 16]) -> HvResult<u32> {
        let mut c = Cmd::new(false, cc::START_AUTH_SESSION);
        c.u32(RH_NULL).u32(RH_NULL).tpm2b(nonce).u16(0).u8(SE_POLICY).u16(alg::NULL).u16(alg::SHA256);
        let mut r = self.run(&mut c, "TPM2_StartAuthSession")?;
        r.u32("sessionHandle")
    }

    pub fn policy_locality(&mut self, session: u32, locality: u8) -> HvResult<()> {
        let mut c = Cmd::new(false, cc::POLICY_LOCALITY);
        c.u32(session).u8(locality);
        self.run(&mut c, "TPM2_PolicyLocality")?;
        Ok(())
    }

    /// PolicyPCR with an empty pcrDigest: the TPM folds in the PCRs' current values.
    pub fn policy_pcr(&mut self, session: u32, selection: &[u8]) -> HvResult<()> {
        let mut c = Cmd::new(false, cc::POLICY_PCR);
        c.u32(session).u16(0).bytes(selection);
        self.run(&mut c, "TPM2_PolicyPCR")?;
        Ok(())
    }

    pub fn policy_or(&mut self, session: u32, branches: &[[u8; 32]]) -> HvResult<()> {
        let mut c = Cmd::new(false, cc::POLICY_OR);
        c.u32(session).u32(branches.len() as u32);
        for b in branches {
            c.tpm2b(b);
        }
        self.run(&mut c, "TPM2_PolicyOR (the PCRs are not in a state the root secret was sealed to)")?;
        Ok(())
    }

    /// CreatePrimary in the owner hierarchy (empty owner authorization) from a TPMT_PUBLIC.
    pub fn create_primary(&mut self, template: &[u8]) -> HvResult<u32> {
        let mut c = Cmd::new(true, cc::CREATE_PRIMARY);
        c.u32(RH_OWNER).auth(RS_PW);
        c.u16(4).u16(0).u16(0); // TPM2B_SENSITIVE_CREATE: empty userAuth, empty data
        c.tpm2b(template).u16(0).u32(0); // inPublic, outsideInfo, creationPCR
        let mut r = self.run(&mut c, "TPM2_CreatePrimary (owner hierarchy, empty owner authorization)")?;
        r.u32("objectHandle")
    }

    /// Create under `parent` (authorized by `session`): a sealed data object holding `data`.
    /// Returns (TPM2B_PRIVATE, TPM2B_PUBLIC), each with its size prefix, copied into `out`.
    pub fn create_sealed(&mut self, parent: u32, session: u32, template: &[u8], data: &[u8], out: &mut [u8]) -> HvResult<usize> {
        let mut c = Cmd::new(true, cc::CREATE);
        c.u32(parent).auth(session);
        c.u16((4 + data.len()) as u16).u16(0).tpm2b(data);
        c.tpm2b(template).u16(0).u32(0);
        let mut r = self.run(&mut c, "TPM2_Create (sealing the root secret)")?;
        let _ps = r.u32("parameterSize")?;
        let private = r.tpm2b_raw("outPrivate")?;
        let public = r.tpm2b_raw("outPublic")?;
        let n = private.len() + public.len();
        if n > out.len() {
            return Err(HvError::BufferTooSmall { what: "sealed root blob", need: n as u64, got: out.len() as u64 });
        }
        out[..private.len()].copy_from_slice(private);
        out[private.len()..n].copy_from_slice(public);
        Ok(n)
    }

    /// Load (private, public; both with their size prefixes) under `parent`; returns the handle.
    pub fn load(&mut self, parent: u32, session: u32, private: &[u8], public: &[u8]) -> HvResult<u32> {
        let mut c = Cmd::new(true, cc::LOAD);
        c.u32(parent).auth(session).bytes(private).bytes(public);
        let mut r = self.run(&mut c, "TPM2_Load (the sealed root was not created under this TPM's hypervisor parent)")?;
        r.u32("objectHandle")
    }

    /// Unseal `item` (authorized by `session`) into `out`; returns the length.
    pub fn unseal(&mut self, item: u32, session: u32, out: &mut [u8; 32]) -> HvResult<usize> {
        let mut c = Cmd::new(true, cc::UNSEAL);
        c.u32(item).auth(session);
        let mut r = self.run(&mut c, "TPM2_Unseal")?;
        let _ps = r.u32("parameterSize")?;
        let at = r.at();
        let d = r.tpm2b("outData")?;
        if d.len() != 32 {
            return Err(HvError::TpmIo { what: "unsealed root secret is not 32 bytes", offset: at as u32 });
        }
        out.copy_from_slice(d);
        // the response buffer held the secret
        crate::crypto::ed25519::wipe(&mut self.rsp[..self.rsp_len]);
        Ok(32)
    }

    pub fn flush(&mut self, handle: u32) -> HvResult<()> {
        let mut c = Cmd::new(false, cc::FLUSH_CONTEXT);
        c.u32(handle);
        self.run(&mut c, "TPM2_FlushContext")?;
        Ok(())
    }

    /// Wipes the response buffer (it may have held a secret).
    pub fn wipe(&mut self) {
        crate::crypto::ed25519::wipe(&mut self.rsp);
    }
}

impl<T: TpmTransport> Drop for Tpm<'_, T> {
    fn drop(&mut self) {
        self.wipe();
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn command_framing_and_overflow() {
        let mut c = Cmd::new(true, cc::PCR_EVENT);
        c.u32(13).auth(RS_PW).tpm2b(b"abc");
        let b = c.finish().to_vec();
        // tag, size, code, handle, authorizationSize = 9, RS_PW, nonce 0, attrs 0, hmac 0, TPM2B "abc"
        assert_eq!(b.len(), 10 + 4 + 4 + 9 + 5);
        assert_eq!(&b[0..2], &ST_SESSIONS.to_be_bytes());
        assert_eq!(u32::from_be_bytes(b[2..6].try_into().unwrap()) as usize, b.len());
        assert_eq!(&b[14..18], &9u32.to_be_bytes());
        assert_eq!(&b[18..22], &RS_PW.to_be_bytes());
        let mut big = Cmd::new(false, cc::LOAD);
        big.bytes(&[0u8; CMD_MAX]);
        assert!(big.overflow);
        big.auth(RS_PW); // no panic after an overflow
        // a bounded reader names the field and offset
        let mut r = Rsp::new(&[0, 5, 1]);
        assert_eq!(r.tpm2b("x").unwrap_err(), HvError::TpmIo { what: "x", offset: 2 });
    }
}

#[cfg(test)]
pub(crate) mod tests;
