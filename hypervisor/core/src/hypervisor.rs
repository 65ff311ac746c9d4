//! `Hypervisor`: the state that ties the core together — reserved memory, the page-table frame
//! pool, the EPC and its EPCM, enclaves, key slots, the host demotion tables and counters.

use crate::demote::HostPlan;
use crate::enclave::measure::Measurement;
use crate::enclave::report::{EnclaveIdentity, KeyRequest, Report, TargetInfo, REPORT_SIZE};
use crate::enclave::sigstruct::Sigstruct;
use crate::enclave::edmm::{self, EpcmPage, PageState};
use crate::enclave::{attr, PageType, SecInfo, SecsParams, Tcs};
use crate::error::{HvError, HvResult};
use crate::keyslot::{KeySlotConfig, KeySlotStats, KeySlots};
use crate::memory::{FrameAllocator, MemRange, PhysMem, ReservedRegion, PAGE_SIZE};
use crate::paging::{Access, Format, MemType, NestedPageTable, PageSize, Perms, WalkFault};
use crate::trust::{EntropySource, TrustConfig, TrustState};

/// Most enclaves alive at once.
pub const MAX_ENCLAVES: usize = 32;
/// Key-slot table capacity (ranges wider than this are clamped).
pub const KEY_SLOT_CAPACITY: usize = 1024;
/// Page-table pool bitmap words: 1024 × 64 frames = 256 MiB of table frames at most.
pub const POOL_WORDS: usize = 1024;

/// How the hypervisor is set up at load time.
#[derive(Clone, Copy, Debug)]
pub struct HvConfig {
    pub reserved: ReservedRegion,
    /// EPT on Intel, NPT on AMD/Hygon.
    pub paging: Format,
    /// None when the platform has no memory encryption.
    pub key_slots: Option<KeySlotConfig>,
    /// Randomness for a new root secret and TPM session nonces (RDRAND on bare metal,
    /// getrandom on the emulated platform).
    pub entropy: EntropySource,
    /// The TPM-sealed root of trust: PCRs of the seal policy and of the HAK event.
    pub trust: TrustConfig,
    /// Security version of the hypervisor (goes into reports and keys).
    pub cpu_svn: [u8; 16],
    /// SHA-256 of the loaded hypervisor image (what was extended into the TPM).
    pub image_digest: [u8; 32],
    /// XCR0 bits enclaves may enable (x87 and SSE are always required).
    pub xfrm_supported: u64,
    /// MISCSELECT bits supported (bit 0: EXINFO).
    pub misc_supported: u32,
    /// EINIT checks the SIGSTRUCT RSA signature (true = SGX behaviour). When false, the
    /// management plane must have verified it; MRSIGNER is still SHA-256(modulus).
    pub require_signed_sigstruct: bool,
}

impl HvConfig {
    pub fn new(reserved: ReservedRegion, paging: Format, entropy: EntropySource) -> Self {
        HvConfig {
            reserved,
            paging,
            key_slots: None,
            entropy,
            trust: TrustConfig::default(),
            cpu_svn: [0; 16],
            image_digest: [0; 32],
            xfrm_supported: 0x7,
            misc_supported: 1,
            require_signed_sigstruct: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnclaveState {
    /// After ECREATE: pages may be added and measured.
    Created,
    /// After EINIT: may be entered; no more pages.
    Initialized,
}

impl EnclaveState {
    fn name(self) -> &'static str {
        match self {
            EnclaveState::Created => "not initialized",
            EnclaveState::Initialized => "initialized",
        }
    }
}

/// Public view of one enclave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnclaveInfo {
    pub id: u32,
    pub state: EnclaveState,
    pub secs: SecsParams,
    /// EPC pages held, the SECS page included.
    pub epc_pages: u32,
    pub threads_inside: u32,
    /// Set at EINIT (MRENCLAVE zero before).
    pub identity: EnclaveIdentity,
    /// EPTP or nCR3 of the enclave's nested tables.
    pub nested_pointer: u64,
}

/// One page of an enclave, as the EPCM records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnclavePage {
    /// Offset inside ELRANGE.
    pub offset: u64,
    /// EPC frame holding it.
    pub hpa: u64,
    pub page_type: PageType,
    /// SECINFO R/W/X bits.
    pub perms: u8,
    /// EDMM state (PENDING after ENCLAVE_AUGMENT, MODIFIED after RESTRICT / MODIFY_TYPE).
    pub state: PageState,
}

/// What EENTER hands the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// Linear address of the TCS (RBX at the entry point on SGX).
    pub tcs: u64,
    /// base + OENTRY.
    pub entry: u64,
    /// base + OSSA.
    pub ssa: u64,
    pub nssa: u32,
    pub fs_base: u64,
    pub gs_base: u64,
    pub nested_pointer: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostFaultReason {
    /// Inside the hypervisor's own memory.
    HypervisorMemory,
    /// Inside the EPC; `enclave` owns the page if it is allocated.
    EnclaveMemory { enclave: Option<u32> },
    /// Not in the memory map the host tables were built from.
    NotInMemoryMap,
    /// Mapped, but not for this kind of access (e.g. executing MMIO).
    PermissionDenied,
}

/// A nested fault the host took after demotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFault {
    pub gpa: u64,
    pub access: Access,
    pub reason: HostFaultReason,
}

impl core::fmt::Display for HostFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match self.access {
            Access::Read => "read",
            Access::Write => "write",
            Access::Execute => "execute",
        };
        match self.reason {
            HostFaultReason::HypervisorMemory => write!(f, "host {what} at {:#x} refused: hypervisor memory", self.gpa),
            HostFaultReason::EnclaveMemory { enclave: Some(id) } => {
                write!(f, "host {what} at {:#x} refused: memory of enclave {id}", self.gpa)
            }
            HostFaultReason::EnclaveMemory { enclave: None } => write!(f, "host {what} at {:#x} refused: enclave page cache", self.gpa),
            HostFaultReason::NotInMemoryMap => write!(f, "host {what} at {:#x} refused: not in the memory map", self.gpa),
            HostFaultReason::PermissionDenied => write!(f, "host {what} at {:#x} refused: not permitted there", self.gpa),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostFaultCounts {
    pub hypervisor: u64,
    pub enclave: u64,
    pub unmapped: u64,
    pub permission: u64,
}

impl HostFaultCounts {
    pub fn total(&self) -> u64 {
        self.hypervisor + self.enclave + self.unmapped + self.permission
    }
}

/// DMA protection as the platform reports it (the bare-metal image's IOMMU code sets it with
/// [`Hypervisor::set_dma`]; the emulated platform has no IOMMU and leaves it off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaStatus {
    /// An IOMMU translates every device's DMA through tables that omit the reservation.
    pub protected: bool,
    /// DMA faults the IOMMU logged since protection was switched on (event log, all kinds).
    pub faults: u64,
    /// The IOMMU's register base (0 when none was found).
    pub iommu_base: u64,
}

/// Snapshot for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub abi_version: u32,
    pub enabled: bool,
    pub paging: Format,
    pub reserved: ReservedRegion,
    pub epc_pages_total: u64,
    pub epc_pages_used: u64,
    pub pool_frames_total: u64,
    pub pool_frames_used: u64,
    pub enclaves: u32,
    pub max_enclaves: u32,
    pub key_slots: Option<(KeySlotConfig, KeySlotStats)>,
    pub host_faults: HostFaultCounts,
    pub hypercalls: u64,
    pub enclaves_created: u64,
    pub enclaves_destroyed: u64,
    pub reports_issued: u64,
    pub image_digest: [u8; 32],
    /// TRUST_INIT has run since the last enable/load (keys, HAK and QUOTE available).
    pub trust_established: bool,
    pub dma: DmaStatus,
}

#[derive(Clone, Copy)]
struct EpcmEntry {
    valid: bool,
    busy: bool,
    page_type: PageType,
    perms: u8,
    enclave: u32,
    offset: u64,
    state: PageState,
}

impl EpcmEntry {
    fn edmm(&self) -> EpcmPage {
        EpcmPage { page_type: self.page_type, perms: self.perms, state: self.state }
    }
    fn set_edmm(&mut self, p: EpcmPage) {
        self.page_type = p.page_type;
        self.perms = p.perms;
        self.state = p.state;
    }
}

const EPCM_FREE: EpcmEntry = EpcmEntry { valid: false, busy: false, page_type: PageType::Reg, perms: 0, enclave: 0, offset: 0, state: PageState::Normal };

struct Enclave {
    id: u32,
    secs: SecsParams,
    state: EnclaveState,
    measurement: Measurement,
    identity: EnclaveIdentity,
    table: NestedPageTable,
    epc_pages: u32,
    threads: u32,
    /// ENCLAVE_SHARED_ADD: (host physical address, pages).
    shared: Option<(u64, u64)>,
}

/// The hypervisor. `M` reaches physical memory (the whole reserved region must be backed);
/// `EPC_PAGES` is the EPCM capacity (EPC beyond it is not used).
pub struct Hypervisor<M: PhysMem, const EPC_PAGES: usize = 4096> {
    cfg: HvConfig,
    mem: M,
    pool: FrameAllocator<POOL_WORDS>,
    epc_base: u64,
    epc_pages: usize,
    epc_used: usize,
    epc_hint: usize,
    epcm: [EpcmEntry; EPC_PAGES],
    enclaves: [Option<Enclave>; MAX_ENCLAVES],
    next_id: u32,
    /// The root of trust once TRUST_INIT ran (None before, and after DISABLE).
    pub(crate) trust: Option<TrustState>,
    slots: Option<KeySlots<KEY_SLOT_CAPACITY>>,
    host: Option<NestedPageTable>,
    faults: HostFaultCounts,
    dma: DmaStatus,
    hypercalls: u64,
    created: u64,
    destroyed: u64,
    reports: u64,
}

impl<M: PhysMem, const EPC_PAGES: usize> Hypervisor<M, EPC_PAGES> {
    /// Takes over the reserved region described by `cfg` through `mem`.
    pub fn new(cfg: HvConfig, mut mem: M) -> HvResult<Self> {
        let r = cfg.reserved;
        r.validate()?;
        // the backend must reach the whole region
        let mut probe = [0u8; 1];
        mem.read(r.base, &mut probe)?;
        mem.read(r.base + r.total() - 1, &mut probe)?;
        let pool = FrameAllocator::new("hypervisor page-table pool", r.pool_range())?;
        mem.zero(r.epc_range().start, r.epc_size)?;
        let epc_pages = core::cmp::min((r.epc_size / PAGE_SIZE) as usize, EPC_PAGES);
        Ok(Hypervisor {
            trust: None,
            slots: match cfg.key_slots {
                Some(k) => Some(KeySlots::new(k)?),
                None => None,
            },
            cfg,
            mem,
            pool,
            epc_base: r.epc_range().start,
            epc_pages,
            epc_used: 0,
            epc_hint: 0,
            epcm: [EPCM_FREE; EPC_PAGES],
            enclaves: core::array::from_fn(|_| None),
            next_id: 1,
            host: None,
            faults: HostFaultCounts::default(),
            dma: DmaStatus::default(),
            hypercalls: 0,
            created: 0,
            destroyed: 0,
            reports: 0,
        })
    }

    pub fn config(&self) -> &HvConfig {
        &self.cfg
    }
    /// Physical memory (e.g. to hand enclave pages to a VM runner).
    pub fn mem(&self) -> &M {
        &self.mem
    }

    pub fn status(&self) -> Status {
        Status {
            abi_version: crate::hypercall::ABI_VERSION,
            enabled: self.host.is_some(),
            paging: self.cfg.paging,
            reserved: self.cfg.reserved,
            epc_pages_total: self.epc_pages as u64,
            epc_pages_used: self.epc_used as u64,
            pool_frames_total: self.pool.capacity(),
            pool_frames_used: self.pool.used(),
            enclaves: self.enclaves.iter().filter(|e| e.is_some()).count() as u32,
            max_enclaves: MAX_ENCLAVES as u32,
            key_slots: self.slots.as_ref().map(|s| (s.config(), s.stats())),
            host_faults: self.faults,
            hypercalls: self.hypercalls,
            enclaves_created: self.created,
            enclaves_destroyed: self.destroyed,
            reports_issued: self.reports,
            image_digest: self.cfg.image_digest,
            trust_established: self.trust.is_some(),
            dma: if self.host.is_some() { self.dma } else { DmaStatus::default() },
        }
    }

    /// The platform's DMA protection (shown in STATUS while enabled, and in the flags of every
    /// enclave quote the HAK signs).
    pub fn set_dma(&mut self, dma: DmaStatus) {
        self.dma = dma;
    }

    /// Enclaves alive (DISABLE is refused while any exists).
    pub fn enclave_count(&self) -> u32 {
        self.enclaves.iter().filter(|e| e.is_some()).count() as u32
    }

    pub(crate) fn count_hypercall(&mut self) {
        self.hypercalls += 1;
    }

    // ---------------------------------------------------------------- demotion

    pub fn is_enabled(&self) -> bool {
        self.host.is_some()
    }

    /// Builds the host tables from the memory map and switches to "demoted".
    pub fn enable(&mut self, map: &[MemRange]) -> HvResult<()> {
        if self.host.is_some() {
            return Err(HvError::AlreadyEnabled);
        }
        let plan = HostPlan::new(map, &self.cfg.reserved)?;
        self.host = Some(plan.build(self.cfg.paging, &mut self.mem, &mut self.pool)?);
        Ok(())
    }

    /// Tears the host tables down; refused while enclaves exist.
    pub fn disable(&mut self) -> HvResult<()> {
        let Some(t) = self.host else { return Err(HvError::NotEnabled) };
        let alive = self.enclaves.iter().filter(|e| e.is_some()).count() as u32;
        if alive > 0 {
            return Err(HvError::EnclavesAlive { count: alive });
        }
        t.destroy(&mut self.mem, &mut self.pool)?;
        self.host = None;
        self.dma = DmaStatus::default();
        // the secrets go with the hypervisor (dropping TrustState wipes them)
        self.trust = None;
        Ok(())
    }

    /// The host (demoted Linux) tables, once enabled.
    pub fn host_table(&self) -> Option<&NestedPageTable> {
        self.host.as_ref()
    }

    /// What a host access at `gpa` does: allowed before enable; after enable, walked through
    /// the host tables, and every fault is classified and counted.
    pub fn host_access(&mut self, gpa: u64, access: Access) -> Result<(), HostFault> {
        let Some(t) = self.host else { return Ok(()) };
        let reason = match t.access(&self.mem, gpa, access) {
            Ok(tr) if tr.hpa == gpa => return Ok(()),
            Ok(_) => HostFaultReason::NotInMemoryMap, // never built; kept so a broken table cannot pass
            Err(WalkFault::PermissionDenied { .. }) => HostFaultReason::PermissionDenied,
            Err(WalkFault::NotPresent { .. }) => {
                let r = self.cfg.reserved;
                if r.hypervisor_range().contains(gpa) {
                    HostFaultReason::HypervisorMemory
                } else if r.epc_range().contains(gpa) {
                    let i = ((gpa - self.epc_base) / PAGE_SIZE) as usize;
                    let owner = self.epcm.get(i).filter(|e| e.valid).map(|e| e.enclave);
                    HostFaultReason::EnclaveMemory { enclave: owner }
                } else {
                    HostFaultReason::NotInMemoryMap
                }
            }
        };
        match reason {
            HostFaultReason::HypervisorMemory => self.faults.hypervisor += 1,
            HostFaultReason::EnclaveMemory { .. } => self.faults.enclave += 1,
            HostFaultReason::NotInMemoryMap => self.faults.unmapped += 1,
            HostFaultReason::PermissionDenied => self.faults.permission += 1,
        }
        Err(HostFault { gpa, access, reason })
    }

    // ---------------------------------------------------------------- EPC

    fn epc_alloc(&mut self) -> HvResult<usize> {
        for k in 0..self.epc_pages {
            let i = (self.epc_hint + k) % self.epc_pages;
            if !self.epcm[i].valid {
                self.epc_hint = i + 1;
                self.epc_used += 1;
                self.epcm[i].valid = true;
                return Ok(i);
            }
        }
        Err(HvError::OutOfFrames { pool: "EPC", capacity: self.epc_pages as u64 })
    }

    fn epc_free(&mut self, i: usize) -> HvResult<()> {
        self.mem.zero(self.epc_hpa(i), PAGE_SIZE)?; // scrub before reuse
        self.epcm[i] = EPCM_FREE;
        self.epc_used -= 1;
        Ok(())
    }

    fn epc_hpa(&self, i: usize) -> u64 {
        self.epc_base + i as u64 * PAGE_SIZE
    }

    fn epc_index(&self, hpa: u64) -> usize {
        ((hpa - self.epc_base) / PAGE_SIZE) as usize
    }

    // ---------------------------------------------------------------- enclaves

    fn slot_of(&self, id: u32) -> HvResult<usize> {
        self.enclaves
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.id == id))
            .ok_or(HvError::NoSuchEnclave { id })
    }

    fn enclave(&self, id: u32) -> HvResult<&Enclave> {
        Ok(self.enclaves[self.slot_of(id)?].as_ref().unwrap())
    }

    /// ECREATE. Returns the enclave id (never 0).
    pub fn create_enclave(&mut self, secs: &SecsParams) -> HvResult<u32> {
        secs.validate(self.cfg.xfrm_supported, self.cfg.misc_supported)?;
        let slot = self
            .enclaves
            .iter()
            .position(|e| e.is_none())
            .ok_or(HvError::TooManyEnclaves { max: MAX_ENCLAVES as u32 })?;
        let secs_page = self.epc_alloc()?;
        let made = self
            .mem
            .write(self.epc_hpa(secs_page), &secs.to_bytes())
            .and_then(|_| NestedPageTable::new(self.cfg.paging, &mut self.mem, &mut self.pool));
        let table = match made {
            Ok(t) => t,
            Err(e) => {
                self.epc_free(secs_page)?;
                return Err(e);
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        self.epcm[secs_page] = EpcmEntry { valid: true, busy: false, page_type: PageType::Secs, perms: 0, enclave: id, offset: 0, state: PageState::Normal };
        self.enclaves[slot] = Some(Enclave {
            id,
            secs: *secs,
            state: EnclaveState::Created,
            measurement: Measurement::ecreate(secs.ssa_frame_size, secs.size),
            identity: EnclaveIdentity::default(),
            table,
            epc_pages: 1,
            threads: 0,
            shared: None,
        });
        self.created += 1;
        Ok(id)
    }

    /// ECREATE from an SGX SECS byte image (≥ 64 bytes).
    pub fn create_enclave_from_secs(&mut self, secs: &[u8]) -> HvResult<u32> {
        self.create_enclave(&SecsParams::from_bytes(secs)?)
    }

    /// EADD: copies a 4 KiB page into a fresh EPC page at `offset` inside ELRANGE.
    /// `secinfo_flags` is SECINFO.FLAGS (R=1, W=2, X=4, page type in bits 15:8: TCS=1, REG=2).
    pub fn add_page(&mut self, id: u32, offset: u64, page: &[u8], secinfo_flags: u64) -> HvResult<()> {
        let slot = self.slot_of(id)?;
        let e = self.enclaves[slot].as_ref().unwrap();
        if e.state != EnclaveState::Created {
            return Err(HvError::EnclaveState { id, op: "EADD", state: e.state.name() });
        }
        if page.len() != PAGE_SIZE as usize {
            return Err(HvError::BufferTooSmall { what: "EADD page (exactly 4096 bytes)", need: PAGE_SIZE, got: page.len() as u64 });
        }
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(HvError::Misaligned { what: "EADD offset", value: offset, align: PAGE_SIZE });
        }
        if offset >= e.secs.size {
            return Err(HvError::OutsideElrange { id, offset, size: e.secs.size });
        }
        let si = SecInfo::from_flags(secinfo_flags)?;
        if si.page_type == PageType::Tcs {
            Tcs::parse_and_check(page, &e.secs)?;
        }
        let gpa = e.secs.base + offset;
        if e.table.translate(&self.mem, gpa).is_ok() {
            return Err(HvError::PageOverlap { id, offset });
        }
        let mut table = e.table;
        // Nested permissions: the SECINFO ones; NPT cannot drop read. The TCS is mapped
        // read-only so the runner can find OENTRY; on SGX it is not accessible at all.
        let mut perms = match si.page_type {
            PageType::Tcs => Perms::R,
            _ => Perms(si.perms),
        };
        if self.cfg.paging == Format::Npt || perms == Perms::NONE {
            perms = Perms(perms.0 | Perms::R.0);
        }
        let i = self.epc_alloc()?;
        let hpa = self.epc_hpa(i);
        let mapped = self
            .mem
            .write(hpa, page)
            .and_then(|_| table.map(&mut self.mem, &mut self.pool, gpa, hpa, PageSize::Size4K, perms, MemType::Wb));
        if let Err(err) = mapped {
            self.epc_free(i)?;
            return Err(err);
        }
        self.epcm[i] = EpcmEntry { valid: true, busy: false, page_type: si.page_type, perms: si.perms, enclave: id, offset, state: PageState::Normal };
        let e = self.enclaves[slot].as_mut().unwrap();
        e.measurement.eadd(offset, si);
        e.epc_pages += 1;
        Ok(())
    }

    /// EEXTEND: measures the 256 bytes at `offset` (256-aligned) of an added page.
    pub fn extend(&mut self, id: u32, offset: u64) -> HvResult<()> {
        let slot = self.slot_of(id)?;
        let e = self.enclaves[slot].as_ref().unwrap();
        if e.state != EnclaveState::Created {
            return Err(HvError::EnclaveState { id, op: "EEXTEND", state: e.state.name() });
        }
        if !offset.is_multiple_of(256) {
            return Err(HvError::Misaligned { what: "EEXTEND offset", value: offset, align: 256 });
        }
        if offset >= e.secs.size {
            return Err(HvError::OutsideElrange { id, offset, size: e.secs.size });
        }
        let tr = e
            .table
            .translate(&self.mem, e.secs.base + offset)
            .map_err(|_| HvError::PageNotAdded { id, offset: offset & !(PAGE_SIZE - 1) })?;
        let mut chunk = [0u8; 256];
        self.mem.read(tr.hpa, &mut chunk)?;
        self.enclaves[slot].as_mut().unwrap().measurement.eextend(offset, &chunk);
        Ok(())
    }

    /// EADD followed by EEXTEND of all 16 chunks (what SDK loaders do for measured pages).
    pub fn add_page_measured(&mut self, id: u32, offset: u64, page: &[u8], secinfo_flags: u64) -> HvResult<()> {
        self.add_page(id, offset, page, secinfo_flags)?;
        for c in 0..16 {
            self.extend(id, offset + c * 256)?;
        }
        Ok(())
    }

    /// Maps a page the platform's enclave runner owns (guest page tables, mailbox, shared buffer)
    /// into the enclave's nested tables at `gpa`, outside ELRANGE. EPC pages are refused: enclave
    /// memory is only ever mapped by EADD, into its own enclave.
    pub fn map_runner_page(&mut self, id: u32, gpa: u64, hpa: u64, perms: Perms) -> HvResult<()> {
        let slot = self.slot_of(id)?;
        let e = self.enclaves[slot].as_ref().unwrap();
        if !gpa.is_multiple_of(PAGE_SIZE) || !hpa.is_multiple_of(PAGE_SIZE) {
            return Err(HvError::Misaligned { what: "runner page", value: gpa | hpa, align: PAGE_SIZE });
        }
        if gpa < e.secs.base.saturating_add(e.secs.size) && gpa.saturating_add(PAGE_SIZE) > e.secs.base {
            return Err(HvError::InvalidRange { what: "runner page inside ELRANGE", start: gpa, size: PAGE_SIZE });
        }
        if hpa >= self.epc_base && hpa < self.epc_base + self.epc_pages as u64 * PAGE_SIZE {
            return Err(HvError::InvalidRange { what: "runner page in the EPC", start: hpa, size: PAGE_SIZE });
        }
        let mut table = e.table;
        table.map(&mut self.mem, &mut self.pool, gpa, hpa, PageSize::Size4K, perms, MemType::Wb)?;
        self.enclaves[slot].as_mut().unwrap().table = table;
        Ok(())
    }

    /// EINIT: checks the SIGSTRUCT (signature if configured, attributes under its masks,
    /// ENCLAVEHASH == MRENCLAVE) and fixes the enclave's identity.
    pub fn init_enclave(&mut self, id: u32, sigstruct: &[u8]) -> HvResult<EnclaveIdentity> {
        let slot = self.slot_of(id)?;
        let e = self.enclaves[slot].as_ref().unwrap();
        if e.state != EnclaveState::Created {
            return Err(HvError::EnclaveState { id, op: "EINIT", state: e.state.name() });
        }
        let sig = Sigstruct::parse(sigstruct)?;
        if self.cfg.require_signed_sigstruct {
            sig.verify_signature()?;
        }
        let (mflags, mxfrm) = sig.attribute_mask();
        let (sflags, sxfrm) = sig.attributes();
        if e.secs.attributes & mflags != sflags & mflags {
            return Err(HvError::AttributesMismatch { field: "ATTRIBUTES.FLAGS" });
        }
        if e.secs.xfrm & mxfrm != sxfrm & mxfrm {
            return Err(HvError::AttributesMismatch { field: "ATTRIBUTES.XFRM" });
        }
        if e.secs.misc_select & sig.misc_mask() != sig.misc_select() & sig.misc_mask() {
            return Err(HvError::AttributesMismatch { field: "MISCSELECT" });
        }
        let mrenclave = e.measurement.value();
        if mrenclave != sig.enclave_hash() {
            return Err(HvError::MeasurementMismatch { id });
        }
        let identity = EnclaveIdentity {
            mrenclave,
            mrsigner: sig.mrsigner(),
            attributes: (e.secs.attributes | attr::INIT, e.secs.xfrm),
            misc_select: e.secs.misc_select,
            isv_prod_id: sig.isv_prod_id(),
            isv_svn: sig.isv_svn(),
        };
        let e = self.enclaves[slot].as_mut().unwrap();
        e.identity = identity;
        e.state = EnclaveState::Initialized;
        Ok(identity)
    }

    fn tcs_page(&self, id: u32, tcs_offset: u64) -> HvResult<(usize, usize)> {
        let slot = self.slot_of(id)?;
        let e = self.enclaves[slot].as_ref().unwrap();
        if e.state != EnclaveState::Initialized {
            return Err(HvError::EnclaveState { id, op: "EENTER/EEXIT", state: e.state.name() });
        }
        if !tcs_offset.is_multiple_of(PAGE_SIZE) || tcs_offset >= e.secs.size {
            return Err(HvError::OutsideElrange { id, offset: tcs_offset, size: e.secs.size });
        }
        let tr = e
            .table
            .translate(&self.mem, e.secs.base + tcs_offset)
            .map_err(|_| HvError::PageNotAdded { id, offset: tcs_offset })?;
        let i = self.epc_index(tr.hpa);
        if self.epcm[i].page_type != PageType::Tcs {
            return Err(HvError::TcsInvalid { field: "page type (not a TCS page)", value: tcs_offset });
        }
        Ok((slot, i))
    }

    /// EENTER on the TCS at `tcs_offset`: marks it busy and returns where to start.
    pub fn enter(&mut self, id: u32, tcs_offset: u64) -> HvResult<EntryInfo> {
        let (slot, i) = self.tcs_page(id, tcs_offset)?;
        if self.epcm[i].busy {
            return Err(HvError::TcsBusy { id, offset: tcs_offset });
        }
        let mut page = [0u8; PAGE_SIZE as usize];
        self.mem.read(self.epc_hpa(i), &mut page)?;
        let e = self.enclaves[slot].as_mut().unwrap();
        let tcs = Tcs::parse_and_check(&page, &e.secs)?;
        self.epcm[i].busy = true;
        e.threads += 1;
        let base = e.secs.base;
        Ok(EntryInfo {
            tcs: base + tcs_offset,
            entry: base + tcs.oentry,
            ssa: base + tcs.ossa,
            nssa: tcs.nssa,
            fs_base: base.wrapping_add(tcs.ofsbase),
            gs_base: base.wrapping_add(tcs.ogsbase),
            nested_pointer: e.table.pointer(),
        })
    }

    /// EEXIT (or an exit after a fault) from the TCS at `tcs_offset`.
    pub fn exit(&mut self, id: u32, tcs_offset: u64) -> HvResult<()> {
        let (slot, i) = self.tcs_page(id, tcs_offset)?;
        if !self.epcm[i].busy {
            return Err(HvError::TcsNotEntered { id, offset: tcs_offset });
        }
        self.epcm[i].busy = false;
        self.enclaves[slot].as_mut().unwrap().threads -= 1;
        Ok(())
    }

    /// EREMOVE of every page: scrubs and returns all EPC pages and table frames, releases the
    /// enclave's key slots (they then wait for a flush). Returns the EPC pages returned.
    pub fn destroy_enclave(&mut self, id: u32) -> HvResult<u32> {
        let slot = self.slot_of(id)?;
        let e = self.enclaves[slot].as_ref().unwrap();
        if e.threads > 0 {
            return Err(HvError::EnclaveBusy { id, threads: e.threads });
        }
        let table = e.table;
        let mut returned = 0;
        for i in 0..self.epc_pages {
            if self.epcm[i].valid && self.epcm[i].enclave == id {
                self.epc_free(i)?;
                returned += 1;
            }
        }
        table.destroy(&mut self.mem, &mut self.pool)?;
        if let Some(s) = self.slots.as_mut() {
            s.release_owned_by(id);
        }
        self.enclaves[slot] = None;
        self.destroyed += 1;
        Ok(returned)
    }

    pub fn enclave_info(&self, id: u32) -> HvResult<EnclaveInfo> {
        let e = self.enclave(id)?;
        Ok(EnclaveInfo {
            id,
            state: e.state,
            secs: e.secs,
            epc_pages: e.epc_pages,
            threads_inside: e.threads,
            identity: e.identity,
            nested_pointer: e.table.pointer(),
        })
    }

    /// Ids of live enclaves, written into `out`; returns how many.
    pub fn enclave_ids(&self, out: &mut [u32]) -> usize {
        let mut n = 0;
        for e in self.enclaves.iter().flatten() {
            if n < out.len() {
                out[n] = e.id;
            }
            n += 1;
        }
        n
    }

    /// Calls `f` for every page of the enclave (SECS excluded), in EPC order.
    pub fn enclave_pages(&self, id: u32, mut f: impl FnMut(EnclavePage)) -> HvResult<()> {
        self.slot_of(id)?;
        for i in 0..self.epc_pages {
            let m = self.epcm[i];
            if m.valid && m.enclave == id && m.page_type != PageType::Secs {
                f(EnclavePage { offset: m.offset, hpa: self.epc_hpa(i), page_type: m.page_type, perms: m.perms, state: m.state });
            }
        }
        Ok(())
    }

    /// An access by the enclave itself at linear address `la`, through its nested tables.
    pub fn enclave_access(&self, id: u32, la: u64, access: Access) -> HvResult<Result<u64, WalkFault>> {
        let e = self.enclave(id)?;
        Ok(e.table.access(&self.mem, la, access).map(|t| t.hpa))
    }


    // ---------------------------------------------------------------- shared regions and EDMM

    /// The EPCM entry of enclave `id`'s page at `offset` (any state), by scanning the EPCM: a
    /// PENDING or trimmed page is not in the nested tables.
    fn page_index(&self, id: u32, offset: u64) -> Option<usize> {
        (0..self.epc_pages).find(|&i| {
            let m = &self.epcm[i];
            m.valid && m.enclave == id && m.offset == offset && m.page_type != PageType::Secs
        })
    }

    fn nested_perms(&self, page_type: PageType, perms: u8) -> Perms {
        let mut p = match page_type {
            PageType::Tcs => Perms::R,
            _ => Perms(perms),
        };
        if self.cfg.paging == Format::Npt || p == Perms::NONE {
            p = Perms(p.0 | Perms::R.0);
        }
        p
    }

    /// The page of enclave `id` at `offset`, with its EDMM state.
    pub fn enclave_page(&self, id: u32, offset: u64) -> HvResult<EnclavePage> {
        self.slot_of(id)?;
        let i = self.page_index(id, offset).ok_or(HvError::PageNotAdded { id, offset })?;
        let m = self.epcm[i];
        Ok(EnclavePage { offset, hpa: self.epc_hpa(i), page_type: m.page_type, perms: m.perms, state: m.state })
    }

    /// Checks a shared (untrusted) region: `pages` ≥ 1 pages of host RAM at `hpa` (page
    /// aligned) that the host may read and write: never the reserved region (hypervisor, image,
    /// EPC) and, once the host is demoted, only RAM (write-back, not MMIO) its nested tables
    /// grant read+write.
    pub fn shared_check(&self, hpa: u64, pages: u64) -> HvResult<()> {
        if !hpa.is_multiple_of(PAGE_SIZE) {
            return Err(HvError::Misaligned { what: "shared region address", value: hpa, align: PAGE_SIZE });
        }
        if pages == 0 || pages > crate::hypercall::SHARED_MAX_PAGES {
            return Err(HvError::InvalidRange { what: "shared region pages (1..=SHARED_MAX_PAGES)", start: hpa, size: pages });
        }
        let len = pages * PAGE_SIZE;
        let end = hpa.checked_add(len).ok_or(HvError::InvalidRange { what: "shared region", start: hpa, size: len })?;
        let r = self.cfg.reserved;
        if hpa < r.base + r.total() && end > r.base {
            return Err(HvError::HostAccessDenied { gpa: hpa.max(r.base) });
        }
        if let Some(t) = self.host {
            let mut pa = hpa;
            while pa < end {
                match t.access(&self.mem, pa, Access::Write) {
                    Ok(tr) if tr.hpa == pa && tr.mem_type == MemType::Wb => {} // RAM, not MMIO
                    _ => return Err(HvError::HostAccessDenied { gpa: pa }),
                }
                pa += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// ENCLAVE_SHARED_ADD (before EINIT): records the enclave's shared region after
    /// `shared_check`. The platform maps it outside ELRANGE and describes it in the mailbox.
    pub fn shared_add(&mut self, id: u32, hpa: u64, pages: u64) -> HvResult<()> {
        let slot = self.slot_of(id)?;
        let e = self.enclaves[slot].as_ref().unwrap();
        if e.state != EnclaveState::Created {
            return Err(HvError::EnclaveState { id, op: "ENCLAVE_SHARED_ADD", state: e.state.name() });
        }
        self.shared_check(hpa, pages)?;
        self.enclaves[slot].as_mut().unwrap().shared = Some((hpa, pages));
        Ok(())
    }

    /// The registered shared region (host physical address, pages), if any.
    pub fn enclave_shared(&self, id: u32) -> HvResult<Option<(u64, u64)>> {
        Ok(self.enclave(id)?.shared)
    }

    /// Common checks of the host EDMM leaves: initialized, opted in, range inside ELRANGE.
    fn edmm_range(&self, id: u32, op: &'static str, offset: u64, count: u64) -> HvResult<usize> {
        let slot = self.slot_of(id)?;
        let e = self.enclaves[slot].as_ref().unwrap();
        if e.state != EnclaveState::Initialized {
            return Err(HvError::EnclaveState { id, op, state: e.state.name() });
        }
        if e.secs.attributes & attr::EDMM == 0 {
            return Err(HvError::EnclaveState { id, op, state: "without ATTRIBUTES.EDMM" });
        }
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(HvError::Misaligned { what: "EDMM offset", value: offset, align: PAGE_SIZE });
        }
        if count == 0 {
            return Err(HvError::InvalidRange { what: "EDMM page count", start: offset, size: 0 });
        }
        let end = count.checked_mul(PAGE_SIZE).and_then(|l| offset.checked_add(l));
        if end.is_none_or(|end| end > e.secs.size) {
            return Err(HvError::OutsideElrange { id, offset, size: e.secs.size });
        }
        Ok(slot)
    }

    /// Applies `f` to the EDMM state of every page in the range, all or nothing: every page is
    /// checked on a copy first; returns the EPCM indices.
    fn edmm_apply(&mut self, id: u32, offset: u64, count: u64, mut f: impl FnMut(&mut EpcmPage) -> HvResult<()>) -> HvResult<()> {
        for k in 0..count {
            let off = offset + k * PAGE_SIZE;
            let i = self.page_index(id, off).ok_or(HvError::PageNotAdded { id, offset: off })?;
            let mut p = self.epcm[i].edmm();
            f(&mut p).map_err(|e| edmm::at(e, id, off))?;
        }
        for k in 0..count {
            let off = offset + k * PAGE_SIZE;
            let i = self.page_index(id, off).unwrap();
            let mut p = self.epcm[i].edmm();
            f(&mut p)?;
            self.epcm[i].set_edmm(p);
            self.sync_nested(id, i)?;
        }
        Ok(())
    }

    /// Makes the enclave's nested mapping of EPCM page `i` match its EDMM state: mapped with
    /// the page's permissions when the enclave may access it, absent otherwise.
    fn sync_nested(&mut self, id: u32, i: usize) -> HvResult<()> {
        let slot = self.slot_of(id)?;
        let m = self.epcm[i];
        let mut table = self.enclaves[slot].as_ref().unwrap().table;
        let gpa = self.enclaves[slot].as_ref().unwrap().secs.base + m.offset;
        let mapped = table.translate(&self.mem, gpa).is_ok();
        let want = if m.page_type == PageType::Tcs { Some(0) } else { m.edmm().enclave_perms() };
        match (want, mapped) {
            (Some(p), true) => {
                let perms = self.nested_perms(m.page_type, p);
                table.protect(&mut self.mem, &mut self.pool, gpa, perms)?
            }
            (Some(p), false) => {
                let (perms, hpa) = (self.nested_perms(m.page_type, p), self.epc_hpa(i));
                table.map(&mut self.mem, &mut self.pool, gpa, hpa, PageSize::Size4K, perms, MemType::Wb)?
            }
            (None, true) => {
                table.unmap(&mut self.mem, &mut self.pool, gpa)?;
            }
            (None, false) => {}
        }
        self.enclaves[slot].as_mut().unwrap().table = table;
        Ok(())
    }

    /// ENCLAVE_AUGMENT (EAUG): `count` zeroed EPC pages at `offset`, REG RW PENDING, not mapped
    /// for the enclave until it EACCEPTs them; not measured (MRENCLAVE unchanged). All or
    /// nothing: on any error no page is added.
    pub fn augment(&mut self, id: u32, offset: u64, count: u64) -> HvResult<()> {
        let slot = self.edmm_range(id, "ENCLAVE_AUGMENT", offset, count)?;
        for k in 0..count {
            let off = offset + k * PAGE_SIZE;
            if self.page_index(id, off).is_some() {
                return Err(HvError::PageOverlap { id, offset: off });
            }
        }
        if (self.epc_pages - self.epc_used) < count as usize {
            return Err(HvError::OutOfFrames { pool: "EPC", capacity: self.epc_pages as u64 });
        }
        for k in 0..count {
            let i = self.epc_alloc()?; // epc_alloc hands out zeroed (scrubbed) frames
            let p = EpcmPage::augmented();
            self.epcm[i] = EpcmEntry { valid: true, busy: false, page_type: p.page_type, perms: p.perms, enclave: id, offset: offset + k * PAGE_SIZE, state: p.state };
            self.enclaves[slot].as_mut().unwrap().epc_pages += 1;
        }
        Ok(())
    }

    /// ENCLAVE_RESTRICT (EMODPR): permissions only shrink; pages become MODIFIED.
    pub fn restrict(&mut self, id: u32, offset: u64, count: u64, perms: u64) -> HvResult<()> {
        self.edmm_range(id, "ENCLAVE_RESTRICT", offset, count)?;
        self.edmm_apply(id, offset, count, |p| p.restrict(perms))
    }

    /// ENCLAVE_MODIFY_TYPE (EMODT) to TRIM: pages become MODIFIED and inaccessible.
    pub fn modify_type(&mut self, id: u32, offset: u64, count: u64, new_type: u64) -> HvResult<()> {
        self.edmm_range(id, "ENCLAVE_MODIFY_TYPE", offset, count)?;
        self.edmm_apply(id, offset, count, |p| p.modify_type(new_type))
    }

    /// ENCLAVE_REMOVE (EREMOVE) of accepted TRIM pages: scrubbed, back to the EPC. Returns the
    /// number of pages freed.
    pub fn remove_pages(&mut self, id: u32, offset: u64, count: u64) -> HvResult<u32> {
        let slot = self.edmm_range(id, "ENCLAVE_REMOVE", offset, count)?;
        self.edmm_apply(id, offset, count, |p| p.check_remove())?;
        for k in 0..count {
            let i = self.page_index(id, offset + k * PAGE_SIZE).unwrap();
            self.epc_free(i)?;
            self.enclaves[slot].as_mut().unwrap().epc_pages -= 1;
        }
        Ok(count as u32)
    }

    /// EACCEPT by the enclave itself (runtime hypercall): `flags` are the SECINFO flags it
    /// expects for the page at `offset`. The page is mapped for the enclave afterwards when its
    /// new state allows access.
    pub fn accept(&mut self, id: u32, offset: u64, flags: u64) -> HvResult<()> {
        self.edmm_range(id, "EACCEPT", offset, 1)?;
        self.edmm_apply(id, offset, 1, |p| p.accept(flags))
    }

    /// EMODPE by the enclave itself: adds permissions to a REG page.
    pub fn extend_perms(&mut self, id: u32, offset: u64, add: u64) -> HvResult<()> {
        self.edmm_range(id, "EMODPE", offset, 1)?;
        self.edmm_apply(id, offset, 1, |p| p.extend_perms(add))
    }

    // ---------------------------------------------------------------- reports and keys

    fn identity_of(&self, id: u32) -> HvResult<EnclaveIdentity> {
        let e = self.enclave(id)?;
        if e.state != EnclaveState::Initialized {
            return Err(HvError::EnclaveState { id, op: "EREPORT/EGETKEY", state: e.state.name() });
        }
        Ok(e.identity)
    }

    /// Test-only: establishes the key roots and HAK from a given root secret, as TRUST_INIT does
    /// after unsealing (the TPM path itself is tested against swtpm in tpm/tests.rs).
    #[cfg(test)]
    pub(crate) fn trust_from_root_for_test(&mut self, root: &[u8; 32]) {
        let keys = crate::enclave::report::KeyRoots::from_root(root, self.cfg.cpu_svn);
        let seed = crate::crypto::hmac_sha256(root, b"hyperenclave hak ed25519 v1");
        let hak = crate::crypto::ed25519::SigningKey::from_seed(&seed);
        self.trust = Some(TrustState { keys, hak, hak_pcr: self.cfg.trust.hak_pcr });
    }

    /// EREPORT: a REPORT about enclave `id` for `target`, MAC'd with the target's report key.
    pub fn report(&mut self, id: u32, target: &TargetInfo, report_data: &[u8; 64]) -> HvResult<[u8; REPORT_SIZE]> {
        let me = self.identity_of(id)?;
        self.trust_keys()?;
        self.reports += 1;
        let mut key_id = [0u8; 32];
        key_id[..8].copy_from_slice(&self.reports.to_le_bytes());
        Ok(self.trust_keys()?.report(&me, target, report_data, key_id).to_bytes())
    }

    /// Checks a REPORT's MAC as enclave `target_mrenclave` would (the hypervisor can derive
    /// every report key). Returns the parsed report.
    pub fn verify_report(&self, report: &[u8], target_mrenclave: &[u8; 32]) -> HvResult<Report> {
        self.trust_keys()?.verify_report(report, target_mrenclave)
    }

    /// EGETKEY for enclave `id` (KEYREQUEST bytes, SGX layout, ≥ 80 bytes).
    pub fn get_key(&self, id: u32, key_request: &[u8]) -> HvResult<[u8; 16]> {
        let me = self.identity_of(id)?;
        self.trust_keys()?.get_key(&me, &KeyRequest::from_bytes(key_request)?)
    }

    // ---------------------------------------------------------------- key slots

    fn slots_mut(&mut self) -> HvResult<&mut KeySlots<KEY_SLOT_CAPACITY>> {
        self.slots.as_mut().ok_or(HvError::KeySlotConfig { what: "no key slots on this platform", value: 0 })
    }

    /// Allocates the lowest free ASID/KeyID, optionally bound to an enclave at once.
    pub fn keyslot_alloc(&mut self, owner: Option<u32>) -> HvResult<u32> {
        if let Some(id) = owner {
            self.slot_of(id)?;
        }
        self.slots_mut()?.alloc(owner)
    }

    pub fn keyslot_bind(&mut self, slot: u32, id: u32) -> HvResult<()> {
        self.slot_of(id)?;
        self.slots_mut()?.bind(slot, id)
    }

    pub fn keyslot_release(&mut self, slot: u32) -> HvResult<()> {
        self.slots_mut()?.release(slot)
    }

    /// Records the cache flush (WBINVD / DF_FLUSH); returns the slots made reusable.
    pub fn keyslot_flush(&mut self) -> HvResult<u32> {
        Ok(self.slots_mut()?.flush())
    }
}

#[cfg(test)]
pub(crate) mod tests;
