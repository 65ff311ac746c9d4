//! The one error type of the core. Every variant names what was wrong and where; `Display`
//! gives one line fit for the CLI. Hypercalls map each variant to an `HcStatus` code.

use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvError {
    /// A frame pool has no free frame left (`pool` is "EPC" or "hypervisor").
    OutOfFrames { pool: &'static str, capacity: u64 },
    /// A physical address lies outside the memory the backend can reach.
    PhysOutOfRange { pa: u64, len: u64 },
    /// A value that must be aligned is not.
    Misaligned { what: &'static str, value: u64, align: u64 },
    /// A range or size is empty, overflows, overlaps something it must not, or is too big.
    InvalidRange { what: &'static str, start: u64, size: u64 },
    /// A frame handed back was not allocated from this pool (double free or foreign).
    FrameNotAllocated { pa: u64 },
    /// A nested mapping already exists at `gpa`.
    AlreadyMapped { gpa: u64 },
    /// No nested mapping at `gpa`.
    NotMapped { gpa: u64 },
    /// Permission combination not expressible or not allowed (e.g. W without R).
    InvalidPermissions { what: &'static str, bits: u64 },
    /// A SECS field is invalid.
    SecsInvalid { field: &'static str, value: u64 },
    /// All enclave slots are in use.
    TooManyEnclaves { max: u32 },
    NoSuchEnclave { id: u32 },
    /// The operation is not allowed in the enclave's current state (e.g. EADD after EINIT).
    EnclaveState { id: u32, op: &'static str, state: &'static str },
    /// A page already exists at this ELRANGE offset.
    PageOverlap { id: u32, offset: u64 },
    /// The offset is beyond the size declared at ECREATE.
    OutsideElrange { id: u32, offset: u64, size: u64 },
    /// No page has been added at this offset.
    PageNotAdded { id: u32, offset: u64 },
    /// SECINFO page type is not REG or TCS, or reserved SECINFO bits are set.
    SecinfoInvalid { field: &'static str, value: u64 },
    /// A TCS field is invalid (checked at EADD as SGX does).
    TcsInvalid { field: &'static str, value: u64 },
    /// The enclave hash in the SIGSTRUCT differs from the computed MRENCLAVE.
    MeasurementMismatch { id: u32 },
    /// A SIGSTRUCT field is malformed (`offset` is the byte offset in the SIGSTRUCT).
    SigstructInvalid { field: &'static str, offset: u32 },
    /// The RSA signature over the SIGSTRUCT does not verify.
    SignatureInvalid,
    /// The enclave's attributes or MISCSELECT differ from the signer's under the masks.
    AttributesMismatch { field: &'static str },
    /// The TCS is already in use by another thread.
    TcsBusy { id: u32, offset: u64 },
    /// EEXIT without EENTER on this TCS.
    TcsNotEntered { id: u32, offset: u64 },
    /// The enclave has threads inside and cannot be destroyed.
    EnclaveBusy { id: u32, threads: u32 },
    /// A REPORT's MAC does not verify.
    ReportMacMismatch,
    /// A KEYREQUEST field is invalid.
    KeyRequestInvalid { field: &'static str, value: u64 },
    /// Requested SVN is above the enclave's own (SGX: INVALID_ISVSVN / INVALID_CPUSVN).
    SvnTooHigh { field: &'static str },
    /// All key slots are allocated or wait for a flush.
    KeySlotsExhausted { kind: &'static str, min: u32, max: u32, pending_flush: u32 },
    /// The slot number is outside the range or not in the state the operation needs.
    KeySlotInvalid { slot: u32, state: &'static str },
    /// Key-slot limits are not representable (e.g. min > max, KeyID 0 requested).
    KeySlotConfig { what: &'static str, value: u64 },
    NotEnabled,
    AlreadyEnabled,
    /// Disable refused while enclaves exist (their pages would become host-visible).
    EnclavesAlive { count: u32 },
    /// A caller buffer is too short.
    BufferTooSmall { what: &'static str, need: u64, got: u64 },
    /// A hypercall buffer points into memory the caller may not touch.
    HostAccessDenied { gpa: u64 },
    UnknownHypercall { nr: u64 },
    /// A leaf that yields enclave secrets (REPORT, GET_KEY) was asked for by the host.
    EnclaveOnly { call: &'static str },
    /// EREPORT/EGETKEY/QUOTE/HAK_PUBLIC before TRUST_INIT established the root secret.
    TrustNotEstablished,
    /// The TPM refused a step of sealing/unsealing the root secret, or the sealed root is not
    /// ours (`rc` is the TPM response code, 0 when the check was the hypervisor's own).
    TrustSealFailed { what: &'static str, rc: u32 },
    /// The TPM transport failed (no answer, short or oversized response, malformed framing).
    TpmIo { what: &'static str, offset: u32 },
    /// An EDMM step (augment, restrict, modify type, remove, EACCEPT, EMODPE) on a page in
    /// the wrong EPCM state, or EACCEPT flags that do not match the page.
    PageState { id: u32, offset: u64, op: &'static str, state: &'static str },
    /// ERESUME found a forged SSA frame (field = what was wrong, value = what it held).
    SsaInvalid { field: &'static str, value: u64 },
}

impl fmt::Display for HvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HvError::*;
        match *self {
            OutOfFrames { pool, capacity } => write!(f, "{pool} exhausted: all {capacity} pages in use"),
            PhysOutOfRange { pa, len } => write!(f, "physical range {pa:#x}+{len:#x} outside backed memory"),
            Misaligned { what, value, align } => write!(f, "{what} {value:#x} is not aligned to {align:#x}"),
            InvalidRange { what, start, size } => write!(f, "{what}: invalid range {start:#x}+{size:#x}"),
            FrameNotAllocated { pa } => write!(f, "frame {pa:#x} was not allocated from this pool"),
            AlreadyMapped { gpa } => write!(f, "guest-physical {gpa:#x} is already mapped"),
            NotMapped { gpa } => write!(f, "guest-physical {gpa:#x} is not mapped"),
            InvalidPermissions { what, bits } => write!(f, "{what}: permission bits {bits:#x} not allowed"),
            SecsInvalid { field, value } => write!(f, "SECS.{field} = {value:#x} is invalid"),
            TooManyEnclaves { max } => write!(f, "enclave limit reached ({max} enclaves)"),
            NoSuchEnclave { id } => write!(f, "no enclave with id {id}"),
            EnclaveState { id, op, state } => write!(f, "enclave {id}: {op} not allowed when {state}"),
            PageOverlap { id, offset } => write!(f, "enclave {id}: a page already exists at offset {offset:#x}"),
            OutsideElrange { id, offset, size } => {
                write!(f, "enclave {id}: offset {offset:#x} is beyond the declared size {size:#x}")
            }
            PageNotAdded { id, offset } => write!(f, "enclave {id}: no page added at offset {offset:#x}"),
            SecinfoInvalid { field, value } => write!(f, "SECINFO.{field} = {value:#x} is invalid"),
            TcsInvalid { field, value } => write!(f, "TCS.{field} = {value:#x} is invalid"),
            MeasurementMismatch { id } => {
                write!(f, "enclave {id}: SIGSTRUCT enclave hash differs from the measured MRENCLAVE")
            }
            SigstructInvalid { field, offset } => write!(f, "SIGSTRUCT.{field} (byte {offset}) is invalid"),
            SignatureInvalid => write!(f, "SIGSTRUCT RSA signature does not verify"),
            AttributesMismatch { field } => write!(f, "enclave {field} do not match the SIGSTRUCT under its mask"),
            TcsBusy { id, offset } => write!(f, "enclave {id}: TCS at offset {offset:#x} is busy"),
            TcsNotEntered { id, offset } => write!(f, "enclave {id}: TCS at offset {offset:#x} was not entered"),
            EnclaveBusy { id, threads } => write!(f, "enclave {id}: {threads} thread(s) still inside"),
            ReportMacMismatch => write!(f, "REPORT MAC does not verify"),
            KeyRequestInvalid { field, value } => write!(f, "KEYREQUEST.{field} = {value:#x} is invalid"),
            SvnTooHigh { field } => write!(f, "KEYREQUEST.{field} is above the enclave's own"),
            KeySlotsExhausted { kind, min, max, pending_flush } => write!(
                f,
                "{kind} exhausted: all of {min}..={max} in use ({pending_flush} released, waiting for a flush)"
            ),
            KeySlotInvalid { slot, state } => write!(f, "key slot {slot}: {state}"),
            KeySlotConfig { what, value } => write!(f, "key slot config: {what} = {value:#x} is invalid"),
            NotEnabled => write!(f, "hypervisor is not enabled"),
            AlreadyEnabled => write!(f, "hypervisor is already enabled"),
            EnclavesAlive { count } => write!(f, "{count} enclave(s) still exist; destroy them first"),
            BufferTooSmall { what, need, got } => write!(f, "{what}: need {need} bytes, got {got}"),
            HostAccessDenied { gpa } => write!(f, "host buffer at {gpa:#x} is in protected memory"),
            UnknownHypercall { nr } => write!(f, "unknown hypercall {nr:#x}"),
            EnclaveOnly { call } => write!(f, "{call} is served only to a running enclave, not to the host"),
            TrustNotEstablished => write!(f, "the hypervisor's root of trust is not established (TRUST_INIT has not run)"),
            TrustSealFailed { what, rc: 0 } => write!(f, "sealed root secret: {what}"),
            TrustSealFailed { what, rc } => write!(f, "sealed root secret: {what} (TPM response code {rc:#x})"),
            TpmIo { what, offset } => write!(f, "TPM transport: {what} (at byte {offset})"),
            PageState { id, offset, op, state } => write!(f, "enclave {id}: {op} of the page at offset {offset:#x} refused: page is {state}"),
            SsaInvalid { field, value } => write!(f, "ERESUME: SSA frame {field} invalid ({value:#x})"),
        }
    }
}

pub type HvResult<T> = Result<T, HvError>;
