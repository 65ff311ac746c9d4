//! Hypercall ABI (documented in docs/hypercall-abi.md): RAX = call number, arguments in RDI,
//! RSI, RDX, RCX, R8; on return RAX = `HcStatus`, outputs in RDI, RSI, RDX. Buffers are
//! guest-physical addresses in the caller's memory; once the host is demoted, every buffer
//! page must pass the host tables (a buffer in hypervisor or enclave memory is refused).
//! `dispatch` serves the emulated service today and the bare-metal VM-exit handler later.

use crate::demote::MAX_MAP_RANGES;
use crate::enclave::report::REPORT_SIZE;
use crate::enclave::sigstruct::SIGSTRUCT_SIZE;
use crate::enclave::{SecsParams, SECS_MIN_BYTES};
use crate::error::{HvError, HvResult};
use crate::hypervisor::{EnclaveState, Hypervisor, Status};
use crate::keyslot::SlotKind;
use crate::memory::{MemKind, MemRange, PhysMem, PAGE_SIZE};
use crate::paging::{Access, Format};
use crate::tpm::TpmTransport;

/// ABI version: major in bits 31:16, minor in 15:0. A caller with another major is refused.
pub const ABI_VERSION: u32 = 0x0001_0000;

/// Call numbers (RAX).
pub mod nr {
    pub const VERSION: u64 = 0x00;
    pub const STATUS: u64 = 0x01;
    pub const ENABLE: u64 = 0x02;
    pub const DISABLE: u64 = 0x03;
    pub const IMAGE_DIGEST: u64 = 0x04;
    pub const ENCLAVE_CREATE: u64 = 0x10;
    pub const ENCLAVE_ADD: u64 = 0x11;
    pub const ENCLAVE_EXTEND: u64 = 0x12;
    pub const ENCLAVE_INIT: u64 = 0x13;
    pub const ENCLAVE_ENTER: u64 = 0x14;
    pub const ENCLAVE_EXIT: u64 = 0x15;
    pub const ENCLAVE_DESTROY: u64 = 0x16;
    pub const ENCLAVE_INFO: u64 = 0x17;
    pub const REPORT: u64 = 0x20;
    pub const VERIFY_REPORT: u64 = 0x21;
    pub const GET_KEY: u64 = 0x22;
    pub const KEYSLOT_ALLOC: u64 = 0x30;
    pub const KEYSLOT_BIND: u64 = 0x31;
    pub const KEYSLOT_RELEASE: u64 = 0x32;
    pub const KEYSLOT_FLUSH: u64 = 0x33;
    /// Runs one ECALL (RDI = id, RSI = TCS offset, RDX = ECALL number, RCX = 4 KiB in/out
    /// buffer, R8 = input length; RDI = ECALL status). Served by the platform that can execute
    /// enclave code (the bare-metal image); `dispatch` answers UNKNOWN_CALL.
    pub const ENCLAVE_CALL: u64 = 0x18;
    /// Unseals or creates the TPM-sealed root secret (RDI = blob, RSI = its length, RDX = output
    /// for a new blob, RCX = its capacity ≥ 4096; out: RDI = new blob length, RSI = flags (bit 0
    /// created, bit 1 HAK PCR extended), RDX = HAK PCR). Served by `dispatch_with_tpm` (the
    /// platform that owns a TPM transport); `dispatch` answers UNKNOWN_CALL.
    pub const TRUST_INIT: u64 = 0x40;
    /// RDI = 32-byte output for the HAK (Ed25519 public key); out: RDI = HAK PCR.
    pub const HAK_PUBLIC: u64 = 0x41;
    /// RDI = a 432-byte REPORT targeted at the quoting identity, RSI = 496-byte output.
    pub const QUOTE: u64 = 0x42;
    /// Resumes a thread parked in an OCALL (RDI = id, RSI = TCS offset, RDX = answer: output
    /// length or 0x8000_0000 | code, RCX = buffer with the output at its start). Returns like
    /// ENCLAVE_CALL. Served by the bare-metal image; `dispatch` answers UNKNOWN_CALL.
    pub const ENCLAVE_OCALL_RETURN: u64 = 0x19;
    /// Registers the enclave's shared (untrusted) region before EINIT: RDI = id, RSI = host
    /// physical address (page aligned), RDX = pages (>= 1, <= `SHARED_MAX_PAGES`). Every page
    /// must be host RAM the host may access (never hypervisor, EPC or reserved memory), else
    /// HOST_ACCESS_DENIED. The platform maps it outside ELRANGE (mailbox SHARED/CAP).
    pub const ENCLAVE_SHARED_ADD: u64 = 0x1A;
    /// EAUG: RDI = id, RSI = ELRANGE offset, RDX = page count. Zeroed EPC pages, REG, RW,
    /// PENDING (not mapped for the enclave until it EACCEPTs them). Only after EINIT, only for
    /// enclaves whose SECS.ATTRIBUTES has `attr::EDMM`, only at offsets with no page.
    pub const ENCLAVE_AUGMENT: u64 = 0x24;
    /// EMODPR: RDI = id, RSI = offset, RDX = count, RCX = new permissions (a subset of the
    /// current ones). Pages become MODIFIED until the enclave EACCEPTs them.
    pub const ENCLAVE_RESTRICT: u64 = 0x25;
    /// EMODT: RDI = id, RSI = offset, RDX = count, RCX = new type (TRIM = 4). Pages become
    /// MODIFIED (inaccessible) until EACCEPT.
    pub const ENCLAVE_MODIFY_TYPE: u64 = 0x26;
    /// EREMOVE of accepted TRIM pages: RDI = id, RSI = offset, RDX = count; out RDI = pages
    /// returned to the EPC (scrubbed).
    pub const ENCLAVE_REMOVE: u64 = 0x27;
}

/// Result codes (RAX on return).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum HcStatus {
    Success = 0,
    UnknownCall = 1,
    VersionMismatch = 2,
    InvalidArgument = 3,
    BufferTooSmall = 4,
    HostAccessDenied = 5,
    NotEnabled = 6,
    AlreadyEnabled = 7,
    EnclavesAlive = 8,
    NoSuchEnclave = 9,
    TooManyEnclaves = 10,
    EnclaveState = 11,
    SecsInvalid = 12,
    SecinfoInvalid = 13,
    TcsInvalid = 14,
    PageOverlap = 15,
    OutsideElrange = 16,
    PageNotAdded = 17,
    SigstructInvalid = 18,
    SignatureInvalid = 19,
    AttributesMismatch = 20,
    MeasurementMismatch = 21,
    TcsBusy = 22,
    TcsNotEntered = 23,
    EnclaveBusy = 24,
    EpcExhausted = 25,
    OutOfMemory = 26,
    ReportMacMismatch = 27,
    KeyRequestInvalid = 28,
    SvnTooHigh = 29,
    KeySlotsExhausted = 30,
    KeySlotInvalid = 31,
    NoKeySlots = 32,
    InternalError = 33,
    /// ENCLAVE_CALL: an interrupt arrived while the enclave ran; it is parked, call again to resume.
    EnclaveInterrupted = 34,
    /// ENCLAVE_CALL: the enclave faulted or misbehaved; that thread is dead (destroy the enclave).
    EnclaveFault = 35,
    /// REPORT / GET_KEY asked for by the host: they are served only to a running enclave.
    EnclaveOnly = 36,
    /// EREPORT/EGETKEY/QUOTE/HAK_PUBLIC/VERIFY_REPORT before TRUST_INIT.
    TrustNotEstablished = 37,
    /// The TPM refused a sealing step, or the sealed root is not the hypervisor's.
    TrustSealFailed = 38,
    /// The TPM transport failed.
    TpmIo = 39,
    /// ENCLAVE_CALL / ENCLAVE_OCALL_RETURN: the thread made an OCALL and is parked (RDI = OCALL
    /// index, RSI = input length in the caller's buffer); answer with ENCLAVE_OCALL_RETURN.
    EnclaveOcall = 40,
    /// ERESUME found a forged SSA frame (RIP/RSP outside ELRANGE, RIP not executable, reserved
    /// RFLAGS bits); the thread ended.
    SsaInvalid = 41,
    /// An EDMM step on a page in the wrong state, or EACCEPT flags that do not match the page.
    PageState = 42,
}

impl From<&HvError> for HcStatus {
    fn from(e: &HvError) -> Self {
        use HvError as E;
        match e {
            E::OutOfFrames { pool: "EPC", .. } => HcStatus::EpcExhausted,
            E::OutOfFrames { .. } => HcStatus::OutOfMemory,
            E::Misaligned { .. } | E::InvalidRange { .. } | E::InvalidPermissions { .. } => HcStatus::InvalidArgument,
            E::BufferTooSmall { .. } => HcStatus::BufferTooSmall,
            E::HostAccessDenied { .. } | E::PhysOutOfRange { .. } => HcStatus::HostAccessDenied,
            E::NotEnabled => HcStatus::NotEnabled,
            E::AlreadyEnabled => HcStatus::AlreadyEnabled,
            E::EnclavesAlive { .. } => HcStatus::EnclavesAlive,
            E::NoSuchEnclave { .. } => HcStatus::NoSuchEnclave,
            E::TooManyEnclaves { .. } => HcStatus::TooManyEnclaves,
            E::EnclaveState { .. } => HcStatus::EnclaveState,
            E::SecsInvalid { .. } => HcStatus::SecsInvalid,
            E::SecinfoInvalid { .. } => HcStatus::SecinfoInvalid,
            E::TcsInvalid { .. } => HcStatus::TcsInvalid,
            E::PageOverlap { .. } => HcStatus::PageOverlap,
            E::OutsideElrange { .. } => HcStatus::OutsideElrange,
            E::PageNotAdded { .. } => HcStatus::PageNotAdded,
            E::SigstructInvalid { .. } => HcStatus::SigstructInvalid,
            E::SignatureInvalid => HcStatus::SignatureInvalid,
            E::AttributesMismatch { .. } => HcStatus::AttributesMismatch,
            E::MeasurementMismatch { .. } => HcStatus::MeasurementMismatch,
            E::TcsBusy { .. } => HcStatus::TcsBusy,
            E::TcsNotEntered { .. } => HcStatus::TcsNotEntered,
            E::EnclaveBusy { .. } => HcStatus::EnclaveBusy,
            E::ReportMacMismatch => HcStatus::ReportMacMismatch,
            E::KeyRequestInvalid { .. } => HcStatus::KeyRequestInvalid,
            E::SvnTooHigh { .. } => HcStatus::SvnTooHigh,
            E::KeySlotsExhausted { .. } => HcStatus::KeySlotsExhausted,
            E::KeySlotInvalid { .. } => HcStatus::KeySlotInvalid,
            E::KeySlotConfig { .. } => HcStatus::NoKeySlots,
            E::UnknownHypercall { .. } => HcStatus::UnknownCall,
            E::EnclaveOnly { .. } => HcStatus::EnclaveOnly,
            E::TrustNotEstablished => HcStatus::TrustNotEstablished,
            E::TrustSealFailed { .. } => HcStatus::TrustSealFailed,
            E::TpmIo { .. } => HcStatus::TpmIo,
            E::PageState { .. } => HcStatus::PageState,
            E::SsaInvalid { .. } => HcStatus::SsaInvalid,
            E::AlreadyMapped { .. } | E::NotMapped { .. } | E::FrameNotAllocated { .. } => HcStatus::InternalError,
        }
    }
}

/// The registers a hypercall reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Regs {
    pub rax: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub r8: u64,
}

impl Regs {
    pub fn call(nr: u64, args: &[u64]) -> Regs {
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        Regs { rax: nr, rdi: a(0), rsi: a(1), rdx: a(2), rcx: a(3), r8: a(4) }
    }
}

/// Bytes of the STATUS record: 26 u64 words, then the 32-byte image digest.
pub const STATUS_SIZE: usize = 26 * 8 + 32 + 2 * 8;
/// Largest shared region ENCLAVE_SHARED_ADD accepts (pages): 1 MiB.
pub const SHARED_MAX_PAGES: u64 = 256;
/// Bytes of the ENCLAVE_INFO record.
pub const ENCLAVE_INFO_SIZE: usize = 128;
/// Bytes of one ENABLE memory-map entry: start u64, size u64, kind u64 (0 RAM, 1 reserved, 2 MMIO).
pub const MEMMAP_ENTRY_SIZE: usize = 24;

/// STATUS record, little-endian u64 words (index: meaning):
/// 0 ABI version · 1 flags (bit 0 enabled, bit 1 NPT (else EPT), bit 2 key slots present,
/// bit 3 SIGSTRUCT signatures required, bit 4 root of trust established) · 2 reserved base · 3 hypervisor bytes · 4 image bytes ·
/// 5 EPC bytes · 6 EPC pages total · 7 EPC pages used · 8 pool frames total · 9 pool frames used
/// · 10 enclaves · 11 max enclaves · 12 key-slot kind (0 none, 1 ASID, 2 KeyID) · 13 slot min ·
/// 14 slot max · 15 slots allocated · 16 slots waiting for flush · 17 flushes · 18 host faults in
/// hypervisor memory · 19 in enclave memory · 20 outside the memory map · 21 permission ·
/// 22 hypercalls · 23 enclaves created · 24 destroyed · 25 reports issued; then 32-byte image digest;
/// then (ABI 1.x, offset 240) DMA faults logged by the IOMMU · (248) the IOMMU's register base.
/// Flags bit 5: DMA protection (an IOMMU the hypervisor owns translates every device's DMA).
pub fn encode_status(s: &Status, signatures_required: bool) -> [u8; STATUS_SIZE] {
    let (kind, min, max, st) = match s.key_slots {
        None => (0, 0, 0, Default::default()),
        Some((c, st)) => (if c.kind == SlotKind::Asid { 1 } else { 2 }, c.min as u64, (c.min + st.total).saturating_sub(1) as u64, st),
    };
    let flags = s.enabled as u64
        | ((s.paging == Format::Npt) as u64) << 1
        | ((kind != 0) as u64) << 2
        | (signatures_required as u64) << 3
        | (s.trust_established as u64) << 4
        | (s.dma.protected as u64) << 5;
    let words: [u64; 26] = [
        s.abi_version as u64,
        flags,
        s.reserved.base,
        s.reserved.hypervisor_size,
        s.reserved.image_size,
        s.reserved.epc_size,
        s.epc_pages_total,
        s.epc_pages_used,
        s.pool_frames_total,
        s.pool_frames_used,
        s.enclaves as u64,
        s.max_enclaves as u64,
        kind,
        min,
        max,
        st.allocated as u64,
        st.pending_flush as u64,
        st.flushes,
        s.host_faults.hypervisor,
        s.host_faults.enclave,
        s.host_faults.unmapped,
        s.host_faults.permission,
        s.hypercalls,
        s.enclaves_created,
        s.enclaves_destroyed,
        s.reports_issued,
    ];
    let mut b = [0u8; STATUS_SIZE];
    for (i, w) in words.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    b[208..240].copy_from_slice(&s.image_digest);
    b[240..248].copy_from_slice(&s.dma.faults.to_le_bytes());
    b[248..256].copy_from_slice(&s.dma.iommu_base.to_le_bytes());
    b
}

fn check_host<M: PhysMem, const E: usize>(hv: &mut Hypervisor<M, E>, gpa: u64, len: u64, access: Access) -> HvResult<()> {
    let end = gpa.checked_add(len).ok_or(HvError::InvalidRange { what: "hypercall buffer", start: gpa, size: len })?;
    let mut page = gpa & !(PAGE_SIZE - 1);
    while page < end {
        let probe = page.max(gpa);
        hv.host_access(probe, access).map_err(|_| HvError::HostAccessDenied { gpa: probe })?;
        match page.checked_add(PAGE_SIZE) {
            Some(p) => page = p,
            None => break,
        }
    }
    Ok(())
}

fn read_in<M: PhysMem, const E: usize>(hv: &mut Hypervisor<M, E>, guest: &impl PhysMem, gpa: u64, buf: &mut [u8]) -> HvResult<()> {
    check_host(hv, gpa, buf.len() as u64, Access::Read)?;
    guest.read(gpa, buf).map_err(|_| HvError::HostAccessDenied { gpa })
}

fn write_out<M: PhysMem, const E: usize>(hv: &mut Hypervisor<M, E>, guest: &mut impl PhysMem, gpa: u64, data: &[u8]) -> HvResult<()> {
    check_host(hv, gpa, data.len() as u64, Access::Write)?;
    guest.write(gpa, data).map_err(|_| HvError::HostAccessDenied { gpa })
}

fn id_arg(v: u64) -> HvResult<u32> {
    u32::try_from(v).map_err(|_| HvError::NoSuchEnclave { id: u32::MAX })
}

fn slot_arg(v: u64) -> HvResult<u32> {
    u32::try_from(v).map_err(|_| HvError::KeySlotInvalid { slot: u32::MAX, state: "outside the usable range" })
}

/// Serves one hypercall: reads RAX and the argument registers, writes RAX (status) and the
/// output registers. `guest` is the caller's memory (GPA = offset into it as it defines).
pub fn dispatch<M: PhysMem, const E: usize>(hv: &mut Hypervisor<M, E>, regs: &mut Regs, guest: &mut impl PhysMem) -> HcStatus {
    hv.count_hypercall();
    let call = *regs;
    regs.rdi = 0;
    regs.rsi = 0;
    regs.rdx = 0;
    let status = match serve(hv, &call, regs, guest) {
        Ok(s) => s,
        Err(e) => {
            regs.rdi = 0;
            regs.rsi = 0;
            regs.rdx = 0;
            HcStatus::from(&e)
        }
    };
    regs.rax = status as u64;
    status
}

fn serve<M: PhysMem, const E: usize>(hv: &mut Hypervisor<M, E>, c: &Regs, out: &mut Regs, guest: &mut impl PhysMem) -> HvResult<HcStatus> {
    match c.rax {
        nr::VERSION => {
            out.rdi = ABI_VERSION as u64;
            if c.rdi != 0 && (c.rdi >> 16) != (ABI_VERSION >> 16) as u64 {
                return Ok(HcStatus::VersionMismatch);
            }
        }
        nr::STATUS => {
            if (c.rsi as usize) < STATUS_SIZE {
                return Err(HvError::BufferTooSmall { what: "STATUS buffer", need: STATUS_SIZE as u64, got: c.rsi });
            }
            let rec = encode_status(&hv.status(), hv.config().require_signed_sigstruct);
            write_out(hv, guest, c.rdi, &rec)?;
            out.rdi = STATUS_SIZE as u64;
        }
        nr::ENABLE => {
            let n = c.rsi as usize;
            if n == 0 || n > MAX_MAP_RANGES {
                return Err(HvError::InvalidRange { what: "ENABLE memory-map entry count", start: c.rdi, size: c.rsi });
            }
            let mut map = [MemRange::new(0, 0, MemKind::Ram); MAX_MAP_RANGES];
            for (i, m) in map.iter_mut().enumerate().take(n) {
                let mut e = [0u8; MEMMAP_ENTRY_SIZE];
                let at = c.rdi.checked_add((i * MEMMAP_ENTRY_SIZE) as u64);
                let at = at.ok_or(HvError::InvalidRange { what: "ENABLE memory map", start: c.rdi, size: c.rsi })?;
                read_in(hv, guest, at, &mut e)?;
                let w = |k: usize| u64::from_le_bytes(e[k * 8..k * 8 + 8].try_into().unwrap());
                let kind = match w(2) {
                    0 => MemKind::Ram,
                    1 => MemKind::Reserved,
                    2 => MemKind::Mmio,
                    k => return Err(HvError::InvalidRange { what: "ENABLE memory-map kind", start: i as u64, size: k }),
                };
                *m = MemRange::new(w(0), w(1), kind);
            }
            hv.enable(&map[..n])?;
        }
        nr::DISABLE => hv.disable()?,
        nr::IMAGE_DIGEST => {
            let d = hv.config().image_digest;
            write_out(hv, guest, c.rdi, &d)?;
        }
        nr::ENCLAVE_CREATE => {
            let mut secs = [0u8; SECS_MIN_BYTES];
            read_in(hv, guest, c.rdi, &mut secs)?;
            out.rdi = hv.create_enclave(&SecsParams::from_bytes(&secs)?)? as u64;
        }
        nr::ENCLAVE_ADD => {
            let mut page = [0u8; PAGE_SIZE as usize];
            read_in(hv, guest, c.rdx, &mut page)?;
            hv.add_page(id_arg(c.rdi)?, c.rsi, &page, c.rcx)?;
        }
        nr::ENCLAVE_EXTEND => hv.extend(id_arg(c.rdi)?, c.rsi)?,
        nr::ENCLAVE_INIT => {
            let mut sig = [0u8; SIGSTRUCT_SIZE];
            read_in(hv, guest, c.rsi, &mut sig)?;
            hv.init_enclave(id_arg(c.rdi)?, &sig)?;
        }
        nr::ENCLAVE_ENTER => {
            let e = hv.enter(id_arg(c.rdi)?, c.rsi)?;
            out.rdi = e.entry;
            out.rsi = e.tcs;
            out.rdx = e.ssa;
        }
        nr::ENCLAVE_EXIT => hv.exit(id_arg(c.rdi)?, c.rsi)?,
        nr::ENCLAVE_SHARED_ADD => hv.shared_add(id_arg(c.rdi)?, c.rsi, c.rdx)?,
        nr::ENCLAVE_AUGMENT => hv.augment(id_arg(c.rdi)?, c.rsi, c.rdx)?,
        nr::ENCLAVE_RESTRICT => hv.restrict(id_arg(c.rdi)?, c.rsi, c.rdx, c.rcx)?,
        nr::ENCLAVE_MODIFY_TYPE => hv.modify_type(id_arg(c.rdi)?, c.rsi, c.rdx, c.rcx)?,
        nr::ENCLAVE_REMOVE => out.rdi = hv.remove_pages(id_arg(c.rdi)?, c.rsi, c.rdx)? as u64,
        nr::ENCLAVE_DESTROY => out.rdi = hv.destroy_enclave(id_arg(c.rdi)?)? as u64,
        nr::ENCLAVE_INFO => {
            if (c.rdx as usize) < ENCLAVE_INFO_SIZE {
                return Err(HvError::BufferTooSmall { what: "ENCLAVE_INFO buffer", need: ENCLAVE_INFO_SIZE as u64, got: c.rdx });
            }
            let i = hv.enclave_info(id_arg(c.rdi)?)?;
            let mut b = [0u8; ENCLAVE_INFO_SIZE];
            b[0..4].copy_from_slice(&((i.state == EnclaveState::Initialized) as u32).to_le_bytes());
            b[4..8].copy_from_slice(&i.epc_pages.to_le_bytes());
            b[8..12].copy_from_slice(&i.threads_inside.to_le_bytes());
            b[12..16].copy_from_slice(&i.secs.ssa_frame_size.to_le_bytes());
            b[16..24].copy_from_slice(&i.secs.base.to_le_bytes());
            b[24..32].copy_from_slice(&i.secs.size.to_le_bytes());
            b[32..40].copy_from_slice(&i.nested_pointer.to_le_bytes());
            b[40..72].copy_from_slice(&i.identity.mrenclave);
            b[72..104].copy_from_slice(&i.identity.mrsigner);
            b[104..112].copy_from_slice(&i.identity.attributes.0.to_le_bytes());
            b[112..120].copy_from_slice(&i.identity.attributes.1.to_le_bytes());
            b[120..124].copy_from_slice(&i.identity.misc_select.to_le_bytes());
            b[124..126].copy_from_slice(&i.identity.isv_prod_id.to_le_bytes());
            b[126..128].copy_from_slice(&i.identity.isv_svn.to_le_bytes());
            write_out(hv, guest, c.rsi, &b)?;
            out.rdi = ENCLAVE_INFO_SIZE as u64;
        }
        // EREPORT and EGETKEY yield enclave secrets: only the enclave itself gets them (the KVM
        // runner's and the bare-metal ENCLAVE_CALL's enclave exits call hv.report / hv.get_key).
        nr::REPORT => return Err(HvError::EnclaveOnly { call: "REPORT" }),
        nr::GET_KEY => return Err(HvError::EnclaveOnly { call: "GET_KEY" }),
        nr::HAK_PUBLIC => {
            let (key, pcr) = hv.hak_public()?;
            write_out(hv, guest, c.rdi, &key)?;
            out.rdi = pcr as u64;
        }
        nr::QUOTE => {
            let mut rep = [0u8; REPORT_SIZE];
            read_in(hv, guest, c.rdi, &mut rep)?;
            let q = hv.quote(&rep)?;
            write_out(hv, guest, c.rsi, &q)?;
        }
        nr::VERIFY_REPORT => {
            let mut rep = [0u8; REPORT_SIZE];
            read_in(hv, guest, c.rdi, &mut rep)?;
            let mut target = [0u8; 32];
            read_in(hv, guest, c.rsi, &mut target)?;
            hv.verify_report(&rep, &target)?;
        }
        nr::KEYSLOT_ALLOC => {
            let owner = if c.rdi == 0 { None } else { Some(id_arg(c.rdi)?) };
            out.rdi = hv.keyslot_alloc(owner)? as u64;
        }
        nr::KEYSLOT_BIND => hv.keyslot_bind(slot_arg(c.rdi)?, id_arg(c.rsi)?)?,
        nr::KEYSLOT_RELEASE => hv.keyslot_release(slot_arg(c.rdi)?)?,
        nr::KEYSLOT_FLUSH => out.rdi = hv.keyslot_flush()? as u64,
        n => return Err(HvError::UnknownHypercall { nr: n }),
    }
    Ok(HcStatus::Success)
}

/// Largest sealed-root blob TRUST_INIT reads.
pub const TRUST_BLOB_MAX: usize = 4096;

/// `dispatch` for the platform that owns a TPM transport: serves TRUST_INIT, and at DISABLE
/// first caps the hypervisor PCR (`trust_exit`); a DISABLE whose cap fails is refused, so the
/// host never gets the localities back with the PCRs the root secret unseals in.
pub fn dispatch_with_tpm<M: PhysMem, const E: usize, T: TpmTransport>(hv: &mut Hypervisor<M, E>, regs: &mut Regs, guest: &mut impl PhysMem, tpm: &mut T) -> HcStatus {
    match regs.rax {
        nr::TRUST_INIT => {
            hv.count_hypercall();
            let c = *regs;
            regs.rdi = 0;
            regs.rsi = 0;
            regs.rdx = 0;
            let status = match trust_init_call(hv, &c, regs, guest, tpm) {
                Ok(()) => HcStatus::Success,
                Err(e) => {
                    regs.rdi = 0;
                    regs.rsi = 0;
                    regs.rdx = 0;
                    HcStatus::from(&e)
                }
            };
            regs.rax = status as u64;
            status
        }
        nr::DISABLE if hv.is_enabled() && hv.enclave_count() == 0 => {
            if let Err(e) = hv.trust_exit(tpm) {
                hv.count_hypercall();
                *regs = Regs { rax: HcStatus::from(&e) as u64, ..Regs::default() };
                return HcStatus::from(&e);
            }
            dispatch(hv, regs, guest)
        }
        _ => dispatch(hv, regs, guest),
    }
}

fn trust_init_call<M: PhysMem, const E: usize, T: TpmTransport>(hv: &mut Hypervisor<M, E>, c: &Regs, out: &mut Regs, guest: &mut impl PhysMem, tpm: &mut T) -> HvResult<()> {
    if c.rsi as usize > TRUST_BLOB_MAX {
        return Err(HvError::InvalidRange { what: "TRUST_INIT blob length", start: c.rdi, size: c.rsi });
    }
    if (c.rcx as usize) < crate::trust::TRUST_BLOB_CAPACITY {
        return Err(HvError::BufferTooSmall { what: "TRUST_INIT output buffer", need: crate::trust::TRUST_BLOB_CAPACITY as u64, got: c.rcx });
    }
    let mut blob = [0u8; TRUST_BLOB_MAX];
    let n = c.rsi as usize;
    if n > 0 {
        read_in(hv, guest, c.rdi, &mut blob[..n])?;
    }
    // the output page must be the caller's before anything is sealed
    check_host(hv, c.rdx, crate::trust::TRUST_BLOB_CAPACITY as u64, Access::Write)?;
    let mut new_blob = [0u8; crate::trust::TRUST_BLOB_CAPACITY];
    let r = hv.trust_init(tpm, &blob[..n], &mut new_blob)?;
    if r.blob_len > 0 {
        write_out(hv, guest, c.rdx, &new_blob[..r.blob_len])?;
    }
    out.rdi = r.blob_len as u64;
    out.rsi = r.created as u64 | (r.pcr_extended as u64) << 1;
    out.rdx = r.hak_pcr as u64;
    Ok(())
}

#[cfg(test)]
mod tests;
