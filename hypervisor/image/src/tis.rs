//! The hypervisor's own TPM transport: the TCG PC Client TPM Interface Specification (TIS/FIFO)
//! at its fixed MMIO address, one 4 KiB page per locality (locality n at base + n * 0x1000).
//! The hypervisor uses locality 2; after launch the host's nested tables no longer map the pages
//! of localities 1-4 (main.rs cuts them out of the memory map), so only the hypervisor can
//! reach locality 2 (the host keeps locality 0, which Linux's tpm_tis driver uses).
//!
//! A `Tis` value holds the locality from `open` until it is dropped: every command of one
//! hypervisor operation (e.g. TRUST_INIT's whole sequence) runs without the host interleaving.
//! Every wait is bounded by TSC cycles (`budget`); a bound that runs out is a named error.
//! On drop the FIFO buffer is overwritten (QEMU's tpm-tis shares one command/response buffer
//! between localities and a locality left in the completion state can re-read it with
//! responseRetry: docs/attestation.md) and the locality is relinquished.

use core::fmt;
use core::ptr::{read_volatile, write_volatile};

/// QEMU's tpm-tis and PC platforms put the TIS registers here (TCG PC Client PTP, "FIFO
/// interface": 0xFED4_0000 + 0x1000 per locality, localities 0-4).
pub const TIS_BASE: u64 = 0xFED4_0000;
pub const LOCALITY_STRIDE: u64 = 0x1000;
/// The locality the hypervisor uses.
pub const HV_LOCALITY: u8 = 2;
/// Pages the demoted host must not reach: localities 1-4.
pub const HIDDEN: (u64, u64) = (TIS_BASE + LOCALITY_STRIDE, TIS_BASE + 5 * LOCALITY_STRIDE);

// Register offsets within a locality page.
const ACCESS: u64 = 0x00;
const STS: u64 = 0x18;
const DATA_FIFO: u64 = 0x24;
const INTERFACE_ID: u64 = 0x30;
const DID_VID: u64 = 0xF00;
/// TPM_INTERFACE_ID.InterfaceType (bits 3:0): 0 = FIFO (PTP), 0xF = FIFO (TIS 1.3); 1 = CRB.
const IFACE_FIFO_PTP: u32 = 0x0;
const IFACE_FIFO_TIS: u32 = 0xF;

// TPM_ACCESS bits.
const ACCESS_VALID: u8 = 0x80;
const ACCESS_ACTIVE: u8 = 0x20;
const ACCESS_SEIZE: u8 = 0x08;
const ACCESS_REQUEST_USE: u8 = 0x02;

// TPM_STS bits (low byte) and the burst count (bits 8..24).
const STS_VALID: u32 = 0x80;
const STS_COMMAND_READY: u32 = 0x40;
const STS_GO: u32 = 0x20;
const STS_DATA_AVAIL: u32 = 0x10;
const STS_EXPECT: u32 = 0x08;

/// TPM response/command header: tag (2), size (4), code (4), big-endian.
const HEADER: usize = 10;

/// Bounds, in TSC cycles. At 1 GHz (the slowest TSC we expect) they are the seconds named;
/// a faster TSC shortens them proportionally (at 4 GHz, a quarter).
pub mod budget {
    /// Locality grant after a request (the host holds Linux's TPM lock around our calls, so
    /// locality 0 is normally idle; if it is not, the request is followed by a seize).
    pub const LOCALITY: u64 = 2_000_000_000;
    /// commandReady, burst count, Expect transitions.
    pub const STATE: u64 = 5_000_000_000;
    /// One command's execution (key generation in a software TPM under TCG can take seconds).
    pub const EXECUTE: u64 = 120_000_000_000;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TisError {
    /// DID_VID reads all-ones or zero: nothing answers at TIS_BASE.
    NoDevice { did_vid: u32 },
    /// The TPM there speaks another interface (e.g. CRB, as firmware TPMs do), not the FIFO.
    NotFifo { interface_id: u32 },
    /// Neither a request nor a seize made `locality` active; `access` = its TPM_ACCESS.
    LocalityNotGranted { locality: u8, access: u8 },
    /// A wait ran out of its budget; `phase` names it, `sts` = the last TPM_STS read.
    Timeout { phase: &'static str, sts: u32 },
    /// The command is shorter than a header or its size field disagrees with its length.
    BadCommand { len: usize },
    /// The TPM still expected bytes after the last one, or stopped expecting before it.
    ExpectMismatch { at: usize, sts: u32 },
    /// The response header's size is below 10 or above the caller's buffer.
    BadResponseSize { size: u32, capacity: usize },
    /// dataAvail stayed set after the whole response was read.
    TrailingData { size: usize },
}

impl fmt::Display for TisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TisError::NoDevice { did_vid } => write!(f, "TIS: no TPM at {:#x} (DID_VID {:#010x})", TIS_BASE, did_vid),
            TisError::NotFifo { interface_id } => {
                write!(f, "TIS: the TPM at {:#x} is not a FIFO interface (TPM_INTERFACE_ID {:#010x}, type {:#x}; CRB is not supported)", TIS_BASE, interface_id, interface_id & 0xf)
            }
            TisError::LocalityNotGranted { locality, access } => {
                write!(f, "TIS: locality {} not granted after request and seize (TPM_ACCESS {:#04x})", locality, access)
            }
            TisError::Timeout { phase, sts } => write!(f, "TIS: timed out waiting for {} (TPM_STS {:#010x})", phase, sts),
            TisError::BadCommand { len } => write!(f, "TIS: command of {} bytes has no valid header", len),
            TisError::ExpectMismatch { at, sts } => write!(f, "TIS: TPM_STS.expect wrong after byte {} (TPM_STS {:#010x})", at, sts),
            TisError::BadResponseSize { size, capacity } => {
                write!(f, "TIS: response header size {} outside 10..={} bytes", size, capacity)
            }
            TisError::TrailingData { size } => write!(f, "TIS: dataAvail still set after the {}-byte response", size),
        }
    }
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads the time-stamp counter; no memory access, no side effects.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    ((hi as u64) << 32) | lo as u64
}

/// Locality `locality` of the TIS, held from `open` until drop.
pub struct Tis {
    base: u64,
    /// Most bytes one command or response put into the FIFO buffer (scrubbed on drop).
    high_water: usize,
    /// Whether the locality was seized from the host (logged by the caller).
    pub seized: bool,
    /// The last transport error, in full (the core's TpmIoError carries only a static name).
    pub last_error: Option<TisError>,
}

impl Tis {
    /// Requests `locality` (then seizes it if a lower locality keeps it) and waits until it is
    /// active. The caller must run with the TIS pages identity-mapped (the image always does).
    pub fn open(locality: u8) -> Result<Tis, TisError> {
        let mut t = Tis { base: TIS_BASE + locality as u64 * LOCALITY_STRIDE, high_water: 0, seized: false, last_error: None };
        let did_vid = t.r32(DID_VID);
        // nothing requested yet: on these refusals nothing is written (no relinquish on drop)
        if did_vid == 0 || did_vid == u32::MAX {
            core::mem::forget(t);
            return Err(TisError::NoDevice { did_vid });
        }
        let interface_id = t.r32(INTERFACE_ID);
        if !matches!(interface_id & 0xf, IFACE_FIFO_PTP | IFACE_FIFO_TIS) {
            core::mem::forget(t);
            return Err(TisError::NotFifo { interface_id });
        }
        let want = ACCESS_VALID | ACCESS_ACTIVE;
        if t.r8(ACCESS) & want != want {
            t.w8(ACCESS, ACCESS_REQUEST_USE);
            if !t.wait_access(want, budget::LOCALITY) {
                // a lower locality (the host's 0) did not give it up: a higher locality may seize
                t.w8(ACCESS, ACCESS_SEIZE);
                t.seized = true;
                if !t.wait_access(want, budget::EXECUTE) {
                    let access = t.r8(ACCESS);
                    // withdraw the request so a later holder is not handed a locality nobody polls
                    t.w8(ACCESS, ACCESS_ACTIVE);
                    return Err(TisError::LocalityNotGranted { locality, access });
                }
            }
        }
        Ok(t)
    }

    /// Sends `cmd` and reads the response into `rsp`; returns the response length.
    pub fn transact(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TisError> {
        if cmd.len() < HEADER || be32(&cmd[2..6]) as usize != cmd.len() {
            return Err(TisError::BadCommand { len: cmd.len() });
        }
        self.high_water = self.high_water.max(cmd.len());
        self.ready()?;
        self.write_fifo(cmd, true)?;
        self.w32(STS, STS_GO);
        let sts = self.wait_sts(STS_VALID | STS_DATA_AVAIL, STS_VALID | STS_DATA_AVAIL, budget::EXECUTE, "dataAvail (command execution)")?;
        let _ = sts;
        // header first (its size says how much follows), then the rest
        if rsp.len() < HEADER {
            return Err(TisError::BadResponseSize { size: 0, capacity: rsp.len() });
        }
        self.read_fifo(&mut rsp[..HEADER])?;
        let size = be32(&rsp[2..6]);
        if (size as usize) < HEADER || size as usize > rsp.len() {
            self.high_water = self.high_water.max(rsp.len());
            let _ = self.ready();
            return Err(TisError::BadResponseSize { size, capacity: rsp.len() });
        }
        let size = size as usize;
        self.high_water = self.high_water.max(size);
        self.read_fifo(&mut rsp[HEADER..size])?;
        let sts = self.wait_sts(STS_VALID, STS_VALID, budget::STATE, "stsValid after the response")?;
        if sts & STS_DATA_AVAIL != 0 {
            let _ = self.ready();
            return Err(TisError::TrailingData { size });
        }
        // back to idle/ready: the response leaves the FIFO state machine
        self.w32(STS, STS_COMMAND_READY);
        Ok(size)
    }

    fn ready(&mut self) -> Result<(), TisError> {
        self.w32(STS, STS_COMMAND_READY);
        self.wait_sts(STS_COMMAND_READY, STS_COMMAND_READY, budget::STATE, "commandReady").map(|_| ())
    }

    /// Writes `data` honouring the burst count. `check_expect`: the TPM must expect more after
    /// every byte but the last and nothing after it (a full command).
    fn write_fifo(&mut self, data: &[u8], check_expect: bool) -> Result<(), TisError> {
        let last = data.len() - 1;
        let mut i = 0;
        while i < last {
            let burst = self.burst("burstCount for the command")?;
            let n = core::cmp::min(burst, last - i);
            for &b in &data[i..i + n] {
                self.w8(DATA_FIFO, b);
            }
            i += n;
            if check_expect {
                let sts = self.wait_sts(STS_VALID, STS_VALID, budget::STATE, "stsValid while writing")?;
                if sts & STS_EXPECT == 0 {
                    return Err(TisError::ExpectMismatch { at: i, sts });
                }
            }
        }
        self.burst("burstCount for the last byte")?;
        self.w8(DATA_FIFO, data[last]);
        if check_expect {
            let sts = self.wait_sts(STS_VALID, STS_VALID, budget::STATE, "stsValid after the last byte")?;
            if sts & STS_EXPECT != 0 {
                return Err(TisError::ExpectMismatch { at: data.len(), sts });
            }
        }
        Ok(())
    }

    fn read_fifo(&mut self, out: &mut [u8]) -> Result<(), TisError> {
        let mut i = 0;
        while i < out.len() {
            let burst = self.burst("burstCount for the response")?;
            let n = core::cmp::min(burst, out.len() - i);
            for b in &mut out[i..i + n] {
                *b = self.r8(DATA_FIFO);
            }
            i += n;
        }
        Ok(())
    }

    fn burst(&self, phase: &'static str) -> Result<usize, TisError> {
        let start = rdtsc();
        loop {
            let sts = self.r32(STS);
            let burst = ((sts >> 8) & 0xffff) as usize;
            if sts != u32::MAX && burst > 0 {
                return Ok(burst);
            }
            if rdtsc().wrapping_sub(start) > budget::STATE {
                return Err(TisError::Timeout { phase, sts });
            }
            core::hint::spin_loop();
        }
    }

    fn wait_sts(&self, mask: u32, want: u32, cycles: u64, phase: &'static str) -> Result<u32, TisError> {
        let start = rdtsc();
        loop {
            let sts = self.r32(STS);
            // all-ones: this locality is not (or no longer) the active one
            if sts != u32::MAX && sts & mask == want {
                return Ok(sts);
            }
            if rdtsc().wrapping_sub(start) > cycles {
                return Err(TisError::Timeout { phase, sts });
            }
            core::hint::spin_loop();
        }
    }

    fn wait_access(&self, want: u8, cycles: u64) -> bool {
        let start = rdtsc();
        loop {
            if self.r8(ACCESS) & want == want {
                return true;
            }
            if rdtsc().wrapping_sub(start) > cycles {
                return false;
            }
            core::hint::spin_loop();
        }
    }

    /// Overwrites the FIFO buffer up to the largest command/response this session moved: a
    /// header whose size covers the span, then zeros; then aborts it with commandReady (never
    /// sent to the TPM).
    fn scrub(&mut self) -> Result<(), TisError> {
        if self.high_water == 0 {
            return Ok(());
        }
        // at most the FIFO buffer (4 KiB in QEMU and the PTP's TPM2 maximum): beyond it QEMU drops bytes
        let n = self.high_water.clamp(HEADER + 1, 4096);
        self.ready()?;
        let mut hdr = [0u8; HEADER];
        hdr[0..2].copy_from_slice(&0x8001u16.to_be_bytes());
        hdr[2..6].copy_from_slice(&(n as u32).to_be_bytes());
        self.write_fifo(&hdr, false)?;
        let mut left = n - HEADER;
        while left > 0 {
            let burst = self.burst("burstCount while scrubbing")?;
            for _ in 0..core::cmp::min(burst, left) {
                self.w8(DATA_FIFO, 0);
            }
            left -= core::cmp::min(burst, left);
        }
        // RECEPTION -> abort -> READY; the bytes stay overwritten
        self.w32(STS, STS_COMMAND_READY);
        self.high_water = 0;
        Ok(())
    }

    fn reg(&self, off: u64) -> u64 {
        self.base + off
    }
    fn r8(&self, off: u64) -> u8 {
        // SAFETY: a TIS register of this locality; the image's page tables identity-map the
        // MMIO hole, and the access has no effect on memory the compiler knows about.
        unsafe { read_volatile(self.reg(off) as *const u8) }
    }
    fn r32(&self, off: u64) -> u32 {
        // SAFETY: as r8; 4-byte aligned register.
        unsafe { read_volatile(self.reg(off) as *const u32) }
    }
    fn w8(&self, off: u64, v: u8) {
        // SAFETY: as r8.
        unsafe { write_volatile(self.reg(off) as *mut u8, v) }
    }
    fn w32(&self, off: u64, v: u32) {
        // SAFETY: as r32.
        unsafe { write_volatile(self.reg(off) as *mut u32, v) }
    }
}

impl TisError {
    /// A static name for the core's TpmIoError (the full error stays in `Tis::last_error`).
    pub fn name(&self) -> &'static str {
        match self {
            TisError::NoDevice { .. } => "TIS: no TPM at 0xfed40000",
            TisError::NotFifo { .. } => "TIS: the TPM is not a FIFO interface (CRB?)",
            TisError::LocalityNotGranted { .. } => "TIS: locality 2 not granted",
            TisError::Timeout { .. } => "TIS: timed out",
            TisError::BadCommand { .. } => "TIS: command without a valid header",
            TisError::ExpectMismatch { .. } => "TIS: TPM_STS.expect wrong while writing",
            TisError::BadResponseSize { .. } => "TIS: response size out of bounds",
            TisError::TrailingData { .. } => "TIS: data left after the response",
        }
    }
}

/// The core's TPM layer runs its commands through the open locality.
impl hyperenclave_core::TpmTransport for Tis {
    fn transact(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, hyperenclave_core::TpmIoError> {
        Tis::transact(self, cmd, rsp).map_err(|e| {
            self.last_error = Some(e);
            hyperenclave_core::TpmIoError { what: e.name() }
        })
    }
}

impl Drop for Tis {
    fn drop(&mut self) {
        let _ = self.scrub();
        // relinquish: writing activeLocality gives the locality up
        self.w8(ACCESS, ACCESS_ACTIVE);
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// TPM2_GetRandom(n) and TPM2_PCR_Read(sha256, pcr) at the hypervisor's locality: the
/// transport's self-test. Returns (random bytes, PCR digest) lengths and the PCR digest.
pub fn self_test(pcr: u32) -> Result<(usize, [u8; 32], bool), TisError> {
    let mut t = Tis::open(HV_LOCALITY)?;
    let mut rsp = [0u8; 128];
    // TPM2_GetRandom: TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom (0x17B), bytesRequested 16
    let get_random = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 16];
    let n = t.transact(&get_random, &mut rsp)?;
    let rc = be32(&rsp[6..10]);
    let got = if rc == 0 && n >= 12 { u16::from_be_bytes([rsp[10], rsp[11]]) as usize } else { 0 };
    // TPM2_PCR_Read: one TPMS_PCR_SELECTION (sha256 = 0x000B, 3 select bytes)
    let mut pcr_read = [0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7e, 0, 0, 0, 1, 0x00, 0x0b, 3, 0, 0, 0];
    pcr_read[17 + (pcr / 8) as usize] = 1 << (pcr % 8);
    let n = t.transact(&pcr_read, &mut rsp)?;
    let mut digest = [0u8; 32];
    // response: header, pcrUpdateCounter (4), pcrSelectionOut (4 + 2 + 1 + 3), TPML_DIGEST count (4), size (2), digest
    let at = HEADER + 4 + 10 + 4 + 2;
    let ok = be32(&rsp[6..10]) == 0 && n >= at + 32;
    if ok {
        digest.copy_from_slice(&rsp[at..at + 32]);
    }
    let seized = t.seized;
    drop(t);
    Ok((got, digest, ok && !seized))
}
