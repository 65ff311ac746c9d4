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

/// Call numbers, statuses, record layouts and sizes: the one definition in `hyperenclave-abi`
/// (hypervisor/abi/src/lib.rs), from which the C headers and the TypeScript module are generated.
pub use hyperenclave_abi::{nr, HcStatus, ABI_VERSION};
use hyperenclave_abi::{mem_kind, slot_kind, status_flags, EnclaveInfo, MemMapEntry, StatusRecord};

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

/// Largest shared region ENCLAVE_SHARED_ADD accepts (pages).
pub const SHARED_MAX_PAGES: u64 = hyperenclave_abi::sizes::SHARED_MAX_PAGES as u64;
/// Bytes of the STATUS record.
pub const STATUS_SIZE: usize = StatusRecord::SIZE;
/// Bytes of the ENCLAVE_INFO record.
pub const ENCLAVE_INFO_SIZE: usize = EnclaveInfo::SIZE;
/// Bytes of one ENABLE memory-map entry.
pub const MEMMAP_ENTRY_SIZE: usize = MemMapEntry::SIZE;

/// The STATUS record (`hyperenclave_abi::StatusRecord`, fields named there).
pub fn encode_status(s: &Status, signatures_required: bool) -> [u8; STATUS_SIZE] {
    let (kind, min, max, st) = match s.key_slots {
        None => (slot_kind::NONE, 0, 0, Default::default()),
        Some((c, st)) => (
            if c.kind == SlotKind::Asid { slot_kind::ASID } else { slot_kind::KEYID },
            c.min as u64,
            (c.min + st.total).saturating_sub(1) as u64,
            st,
        ),
    };
    let bit = |on: bool, b: u64| if on { b } else { 0 };
    StatusRecord {
        abi_version: s.abi_version as u64,
        flags: bit(s.enabled, status_flags::ENABLED)
            | bit(s.paging == Format::Npt, status_flags::NPT)
            | bit(kind != slot_kind::NONE, status_flags::KEY_SLOTS)
            | bit(signatures_required, status_flags::SIGNATURES_REQUIRED)
            | bit(s.trust_established, status_flags::TRUST_ESTABLISHED)
            | bit(s.dma.protected, status_flags::DMA_PROTECTED),
        reserved_base: s.reserved.base,
        hypervisor_bytes: s.reserved.hypervisor_size,
        image_bytes: s.reserved.image_size,
        epc_bytes: s.reserved.epc_size,
        epc_pages_total: s.epc_pages_total,
        epc_pages_used: s.epc_pages_used,
        pool_frames_total: s.pool_frames_total,
        pool_frames_used: s.pool_frames_used,
        enclaves: s.enclaves as u64,
        max_enclaves: s.max_enclaves as u64,
        key_slot_kind: kind,
        slot_min: min,
        slot_max: max,
        slots_allocated: st.allocated as u64,
        slots_pending_flush: st.pending_flush as u64,
        flushes: st.flushes,
        faults_hypervisor: s.host_faults.hypervisor,
        faults_enclave: s.host_faults.enclave,
        faults_unmapped: s.host_faults.unmapped,
        faults_permission: s.host_faults.permission,
        hypercalls: s.hypercalls,
        enclaves_created: s.enclaves_created,
        enclaves_destroyed: s.enclaves_destroyed,
        reports_issued: s.reports_issued,
        image_digest: s.image_digest,
        dma_faults: s.dma.faults,
        iommu_base: s.dma.iommu_base,
    }
    .to_bytes()
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
                let e = MemMapEntry::from_array(&e);
                let kind = match e.kind {
                    mem_kind::RAM => MemKind::Ram,
                    mem_kind::RESERVED => MemKind::Reserved,
                    mem_kind::MMIO => MemKind::Mmio,
                    k => return Err(HvError::InvalidRange { what: "ENABLE memory-map kind", start: i as u64, size: k }),
                };
                *m = MemRange::new(e.start, e.size, kind);
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
            let b = EnclaveInfo {
                state: (i.state == EnclaveState::Initialized) as u32,
                epc_pages: i.epc_pages,
                threads_inside: i.threads_inside,
                ssa_frame_size: i.secs.ssa_frame_size,
                base: i.secs.base,
                size: i.secs.size,
                nested_pointer: i.nested_pointer,
                mrenclave: i.identity.mrenclave,
                mrsigner: i.identity.mrsigner,
                attributes: i.identity.attributes.0,
                xfrm: i.identity.attributes.1,
                misc_select: i.identity.misc_select,
                isv_prod_id: i.identity.isv_prod_id,
                isv_svn: i.identity.isv_svn,
            }
            .to_bytes();
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
