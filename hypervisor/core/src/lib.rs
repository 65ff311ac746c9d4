//! hyperenclave-core: the `#![no_std]`, dependency-free heart of the hypervisor. It builds for
//! the host (tests, the emulated service behind the Node addon) and, later, bare metal.
//!
//! # Public API (what the addon binds to)
//!
//! Everything goes through one [`Hypervisor`] value; every fallible call returns
//! `Result<_, HvError>` ([`HvError`] implements `Display` with one clear line).
//!
//! ```text
//! // set-up
//! parse_memmap_arg("memmap=96M$0x180000000") -> HvResult<(base, size)>
//! ReservedRegion::split(base, total, hypervisor_size, image_size) -> HvResult<ReservedRegion>
//! HvConfig::new(reserved: ReservedRegion, paging: Format, entropy: fn(&mut [u8]) -> bool) -> HvConfig
//!   (pub fields: key_slots: Option<KeySlotConfig>, cpu_svn, image_digest, xfrm_supported,
//!    misc_supported, require_signed_sigstruct, trust: TrustConfig {hypervisor_pcr 12, hak_pcr 13, …})
//! Hypervisor::<M: PhysMem, const EPC_PAGES: usize = 4096>::new(cfg, mem) -> HvResult<Hypervisor>
//!   M backs [reserved.base, reserved.base + reserved.total()): SliceMem over a Vec<u8> on
//!   the host, DirectMem (linear map, unsafe constructor) on bare metal.
//! hv.status() -> Status            hv.config() -> &HvConfig        hv.mem() -> &M
//!
//! // demotion of the host
//! hv.enable(map: &[MemRange]) -> HvResult<()>      hv.disable() -> HvResult<()>
//! hv.is_enabled() -> bool                          hv.host_table() -> Option<&NestedPageTable>
//! hv.host_access(gpa: u64, access: Access) -> Result<(), HostFault>   // counted in status
//!
//! // enclaves (SGX semantics; ids are u32, never 0)
//! hv.create_enclave(&SecsParams) -> HvResult<u32>
//! hv.create_enclave_from_secs(secs: &[u8]) -> HvResult<u32>           // SGX SECS bytes, >= 64
//! hv.add_page(id, offset: u64, page: &[u8] /*4096*/, secinfo_flags: u64) -> HvResult<()>
//! hv.extend(id, offset: u64 /*256-aligned*/) -> HvResult<()>
//! hv.add_page_measured(id, offset, page, secinfo_flags) -> HvResult<()>  // EADD + 16 EEXTEND
//! hv.init_enclave(id, sigstruct: &[u8] /*1808*/) -> HvResult<EnclaveIdentity>
//! hv.enter(id, tcs_offset: u64) -> HvResult<EntryInfo>     hv.exit(id, tcs_offset) -> HvResult<()>
//! hv.destroy_enclave(id) -> HvResult<u32 /*EPC pages returned*/>
//! hv.enclave_info(id) -> HvResult<EnclaveInfo>             hv.enclave_ids(&mut [u32]) -> usize
//! hv.enclave_pages(id, |EnclavePage| ...) -> HvResult<()>  // offset, hpa, type, perms
//! hv.enclave_access(id, la: u64, Access) -> HvResult<Result<u64 /*hpa*/, WalkFault>>
//! hv.enclave_page(id, offset) -> HvResult<EnclavePage>      // any EDMM state (EPCM scan)
//!
//! // shared regions and EDMM (issue 14; enclave::edmm is the EPCM state machine, enclave::ssa
//! // the AEX/ERESUME frame rules, enclave::runtime the enclave-visible protocol)
//! hv.shared_check(hpa, pages) -> HvResult<()>   hv.shared_add(id, hpa, pages)  // before EINIT
//! hv.enclave_shared(id) -> HvResult<Option<(hpa, pages)>>
//! hv.augment(id, offset, count)               // EAUG: REG RW PENDING, needs attr::EDMM, after EINIT
//! hv.restrict(id, offset, count, perms)       // EMODPR → MODIFIED
//! hv.modify_type(id, offset, count, 4 /*TRIM*/) // EMODT → MODIFIED, unmapped
//! hv.remove_pages(id, offset, count) -> u32   // EREMOVE of accepted TRIM pages
//! hv.accept(id, offset, secinfo_flags)        // EACCEPT (the enclave's runtime hypercall)
//! hv.extend_perms(id, offset, perms)          // EMODPE
//!   every EDMM call is all-or-nothing over its range; wrong state = HvError::PageState
//!   (PAGE_STATE 42); the nested tables always match the EPCM (only accessible pages mapped)
//!
//! // root of trust (trust.rs, docs/attestation.md): TPM-sealed root secret → keys and HAK
//! hv.trust_init(&mut impl TpmTransport, blob: &[u8], out: &mut [u8] /*>= 4096*/) -> HvResult<TrustInit>
//! hv.trust_exit(&mut impl TpmTransport) -> HvResult<()>   // DISABLE: cap the hypervisor PCR
//! hv.hak_public() -> HvResult<([u8; 32], u8)>             hv.quote(report) -> HvResult<[u8; 496]>
//!
//! // attestation and keys (AES-128-CMAC, as SGX; TRUST_NOT_ESTABLISHED before trust_init)
//! hv.report(id, &TargetInfo, report_data: &[u8; 64]) -> HvResult<[u8; 432]>
//! hv.verify_report(report: &[u8], target_mrenclave: &[u8; 32]) -> HvResult<Report>
//! hv.get_key(id, key_request: &[u8] /*>= 80*/) -> HvResult<[u8; 16]>
//!
//! // memory-encryption key slots (ASIDs / MKTME KeyIDs)
//! hv.keyslot_alloc(owner: Option<u32>) -> HvResult<u32>    hv.keyslot_bind(slot, id)
//! hv.keyslot_release(slot) -> HvResult<()>                 hv.keyslot_flush() -> HvResult<u32>
//!
//! // the hypercall ABI (docs/hypercall-abi.md)
//! hypercall::dispatch(&mut hv, &mut Regs, guest: &mut impl PhysMem) -> HcStatus
//! hypercall::dispatch_with_tpm(&mut hv, &mut Regs, guest, &mut impl TpmTransport) -> HcStatus
//!   (adds TRUST_INIT, and caps the hypervisor PCR at DISABLE)
//! ```
//!
//! Helpers usable on their own: [`enclave::measure::measure_image`] (predict MRENCLAVE),
//! [`enclave::sigstruct`] (`Sigstruct::parse`, `build_unsigned` → sign `signed_message` with
//! any RSA-3072 e=3 signer, e.g. `openssl dgst -sha256 -sign` → `attach_signature`), the crypto
//! in [`crypto`] (SHA-256, HMAC-SHA-256, AES-128, AES-CMAC, AES-128-GCM for sealing, RSA-3072
//! e=3 verification; all `no_std`, usable inside enclave payloads),
//! [`paging::NestedPageTable`] (EPT/NPT), [`demote::HostPlan`], [`keyslot::KeySlotConfig`]
//! (from CPUID 0x8000001F or the TME MSRs).
//!
//! Module map: `memory` (memory map, reserved region, `PhysMem`, frame allocator), `paging`
//! (EPT/NPT), `demote` (host tables), `enclave` (SECS/SECINFO/TCS, MRENCLAVE, SIGSTRUCT,
//! REPORT/KEYREQUEST), `keyslot`, `hypervisor` (the state), `hypercall` (ABI), `crypto`, `error`.

#![no_std]

#[cfg(test)]
extern crate std;

pub mod acpi;
pub mod crypto;
pub mod demote;
pub mod enclave;
pub mod error;
pub mod hypercall;
pub mod hypervisor;
pub mod keyslot;
pub mod memory;
pub mod paging;
pub mod tpm;
pub mod trust;

pub use enclave::report::{EnclaveIdentity, KeyRequest, Report, TargetInfo, REPORT_SIZE};
pub use enclave::sigstruct::SIGSTRUCT_SIZE;
pub use enclave::edmm::{EpcmPage, PageState};
pub use enclave::{PageType, SecInfo, SecsParams};
pub use error::{HvError, HvResult};
pub use hypercall::{dispatch, HcStatus, Regs, ABI_VERSION};
pub use hypervisor::{
    DmaStatus, EnclaveInfo, EnclavePage, EnclaveState, EntryInfo, HostFault, HostFaultCounts, HostFaultReason, HvConfig, Hypervisor, Status,
    MAX_ENCLAVES,
};
pub use keyslot::{KeySlotConfig, SlotKind};
pub use memory::{parse_memmap_arg, DirectMem, MemKind, MemRange, PhysMem, ReservedRegion, SliceMem, PAGE_SIZE};
pub use paging::{Access, Format, Perms, WalkFault};
pub use tpm::{TpmIoError, TpmTransport};
pub use trust::{EntropySource, TrustConfig, TrustInit};
