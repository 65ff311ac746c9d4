extern crate std;
use super::*;
use crate::crypto::aes_cmac;
use crate::crypto::test_util::hex;
use crate::enclave::measure::tests::{ENCL_BIN, ENCL_MRENCLAVE, ENCL_SS};
use crate::enclave::report::{keyname, policy, KeyRequest, REPORT_BODY_SIZE};
use crate::enclave::sigstruct::{HEADER, HEADER2, SIGSTRUCT_SIZE};
use crate::keyslot::SlotState;
use crate::memory::{MemKind, SliceMem};
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

pub(crate) const BASE: u64 = 0x1_0000_0000;
pub(crate) const MIB: u64 = 1 << 20;

pub(crate) fn region(epc_mib: u64) -> ReservedRegion {
    ReservedRegion { base: BASE, hypervisor_size: 2 * MIB, image_size: MIB, epc_size: epc_mib * MIB }
}

pub(crate) fn backing(r: &ReservedRegion) -> SliceMem<'static> {
    SliceMem::new(r.base, Box::leak(vec![0u8; r.total() as usize].into_boxed_slice()))
}

pub(crate) fn memmap() -> [MemRange; 4] {
    [
        MemRange::new(0, 0x9fc00, MemKind::Ram),
        MemRange::new(0x10_0000, 0x7ff0_0000, MemKind::Ram),
        MemRange::new(0xfee0_0000, 0x1000, MemKind::Mmio),
        MemRange::new(BASE, 1 << 30, MemKind::Ram),
    ]
}

pub(crate) type Hv = Hypervisor<SliceMem<'static>, 1024>;

/// Entropy for tests that never create a root (fixed bytes; the swtpm tests use getrandom).
pub(crate) fn test_entropy(b: &mut [u8]) -> bool {
    b.fill(0x5a);
    true
}

pub(crate) fn hv_with(format: Format, signed: bool, epc_mib: u64) -> Hv {
    let r = region(epc_mib);
    let mut cfg = HvConfig::new(r, format, test_entropy);
    cfg.require_signed_sigstruct = signed;
    cfg.key_slots = Some(KeySlotConfig::asids(1, 4).unwrap());
    cfg.image_digest = crate::crypto::sha256(b"test hypervisor image");
    let mut hv = Hypervisor::new(cfg, backing(&r)).unwrap();
    hv.trust_from_root_for_test(&[0x11; 32]);
    hv
}

pub(crate) fn secs(size: u64) -> SecsParams {
    SecsParams { size, base: 0x40_0000, ssa_frame_size: 1, misc_select: 0, attributes: attr::MODE64BIT | attr::DEBUG, xfrm: 3 }
}

/// TCS at 0 (SSA at 0x1000, entry at 0x2000), SSA page RW, code page RX.
pub(crate) fn small_pages() -> [(u64, u64, [u8; 4096]); 3] {
    let mut tcs = [0u8; 4096];
    tcs[16..24].copy_from_slice(&0x1000u64.to_le_bytes());
    tcs[28..32].copy_from_slice(&1u32.to_le_bytes());
    tcs[32..40].copy_from_slice(&0x2000u64.to_le_bytes());
    let mut code = [0u8; 4096];
    code[0] = 0xf4; // hlt
    code[100..112].copy_from_slice(b"hello, world");
    [(0, 0x100, tcs), (0x1000, 0x203, [0u8; 4096]), (0x2000, 0x205, code)]
}

/// A SIGSTRUCT with the right structure and hash but a dummy (unsigned) RSA part.
pub(crate) fn unsigned_sigstruct(mrenclave: &[u8; 32], signer: u8, prod: u16, svn: u16) -> Vec<u8> {
    let mut s = vec![0u8; SIGSTRUCT_SIZE];
    s[0..16].copy_from_slice(&HEADER);
    s[24..40].copy_from_slice(&HEADER2);
    s[128..512].fill(signer);
    s[512..516].copy_from_slice(&3u32.to_le_bytes());
    s[960..992].copy_from_slice(mrenclave);
    s[1024..1026].copy_from_slice(&prod.to_le_bytes());
    s[1026..1028].copy_from_slice(&svn.to_le_bytes());
    s
}

pub(crate) fn build_small(hv: &mut Hv) -> u32 {
    let id = hv.create_enclave(&secs(0x8000)).unwrap();
    for (off, flags, page) in small_pages() {
        hv.add_page_measured(id, off, &page, flags).unwrap();
    }
    id
}

pub(crate) fn small_mrenclave() -> [u8; 32] {
    let pages = small_pages();
    crate::enclave::measure::measure_image(
        0x8000,
        1,
        pages.iter().map(|(o, f, p)| (*o, SecInfo::from_flags(*f).unwrap(), &p[..])),
    )
}

#[test]
fn selftest_enclave_measures_and_inits_with_its_real_sigstruct() {
    for format in [Format::Ept, Format::Npt] {
        let mut hv = hv_with(format, true, 4);
        let s = SecsParams { size: 0x8000, base: 0, ssa_frame_size: 1, misc_select: 0, attributes: attr::MODE64BIT, xfrm: 3 };
        let id = hv.create_enclave(&s).unwrap();
        for (i, page) in ENCL_BIN.chunks_exact(4096).enumerate() {
            let flags = if i == 0 { 0x100 } else { 0x207 };
            hv.add_page_measured(id, i as u64 * 4096, page, flags).unwrap();
        }
        let ident = hv.init_enclave(id, ENCL_SS).unwrap();
        assert_eq!(ident.mrenclave, hex::<32>(ENCL_MRENCLAVE));
        assert_eq!(ident.mrsigner, hex::<32>("2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4"));
        assert_eq!(ident.attributes.0, attr::MODE64BIT | attr::INIT);
        let info = hv.enclave_info(id).unwrap();
        assert_eq!((info.state, info.epc_pages), (EnclaveState::Initialized, 7));
        // the enclave's own view: its pages at base + offset, with SECINFO permissions
        let hpa = hv.enclave_access(id, 0x1075, Access::Execute).unwrap().unwrap();
        let mut byte = [0u8; 1];
        hv.mem().read(hpa, &mut byte).unwrap();
        assert_eq!(byte[0], ENCL_BIN[0x1075]);
        assert!(hv.enclave_access(id, 0x6000, Access::Read).unwrap().is_err(), "beyond the image");
        let entry = hv.enter(id, 0).unwrap();
        assert_eq!((entry.entry, entry.ssa, entry.tcs), (0x1075, 0x2000, 0));
        hv.exit(id, 0).unwrap();
        assert_eq!(hv.destroy_enclave(id).unwrap(), 7);
        assert_eq!(hv.status().epc_pages_used, 0);
        assert_eq!(hv.status().pool_frames_used, 0);
    }
}

#[test]
fn tampered_page_gives_measurement_mismatch() {
    let mut hv = hv_with(Format::Ept, true, 4);
    let s = SecsParams { size: 0x8000, base: 0, ssa_frame_size: 1, misc_select: 0, attributes: attr::MODE64BIT, xfrm: 3 };
    let id = hv.create_enclave(&s).unwrap();
    for (i, page) in ENCL_BIN.chunks_exact(4096).enumerate() {
        let mut p = page.to_vec();
        if i == 3 {
            p[17] ^= 0x80;
        }
        hv.add_page_measured(id, i as u64 * 4096, &p, if i == 0 { 0x100 } else { 0x207 }).unwrap();
    }
    assert_eq!(hv.init_enclave(id, ENCL_SS), Err(HvError::MeasurementMismatch { id }));
    // EINIT failure leaves the enclave uninitialized and destroyable
    assert_eq!(hv.enclave_info(id).unwrap().state, EnclaveState::Created);
    assert_eq!(hv.destroy_enclave(id).unwrap(), 7);
}

#[test]
fn signature_and_attribute_checks_at_einit() {
    let mut hv = hv_with(Format::Npt, true, 4);
    let id = build_small(&mut hv);
    let mr = small_mrenclave();
    let sig = unsigned_sigstruct(&mr, 0xab, 1, 1);
    assert_eq!(hv.init_enclave(id, &sig), Err(HvError::SignatureInvalid), "unsigned refused when signatures are required");

    let mut hv = hv_with(Format::Npt, false, 4);
    let id = build_small(&mut hv);
    let mut bad = unsigned_sigstruct(&mr, 0xab, 1, 1);
    // signer demands DEBUG clear (mask DEBUG, value 0) but the enclave is a debug enclave
    bad[944..952].copy_from_slice(&attr::DEBUG.to_le_bytes());
    assert_eq!(hv.init_enclave(id, &bad), Err(HvError::AttributesMismatch { field: "ATTRIBUTES.FLAGS" }));
    let mut bad = unsigned_sigstruct(&mr, 0xab, 1, 1);
    bad[952..960].copy_from_slice(&u64::MAX.to_le_bytes());
    bad[936..944].copy_from_slice(&7u64.to_le_bytes());
    assert_eq!(hv.init_enclave(id, &bad), Err(HvError::AttributesMismatch { field: "ATTRIBUTES.XFRM" }));
    assert!(matches!(hv.init_enclave(id, &sig[..100]), Err(HvError::BufferTooSmall { .. })));
    let ident = hv.init_enclave(id, &sig).unwrap();
    assert_eq!(ident.mrenclave, mr);
    assert_eq!(ident.mrsigner, crate::crypto::sha256(&[0xab; 384]));
    assert_eq!((ident.isv_prod_id, ident.isv_svn), (1, 1));
    assert!(matches!(hv.init_enclave(id, &sig), Err(HvError::EnclaveState { op: "EINIT", .. })));
}

#[test]
fn bad_lifecycle_inputs_are_refused() {
    let mut hv = hv_with(Format::Ept, false, 4);
    let id = hv.create_enclave(&secs(0x4000)).unwrap();
    let page = [0u8; 4096];
    hv.add_page(id, 0x1000, &page, 0x203).unwrap();
    assert_eq!(hv.add_page(id, 0x1000, &page, 0x201), Err(HvError::PageOverlap { id, offset: 0x1000 }));
    assert!(matches!(hv.add_page(id, 0x1800, &page, 0x203), Err(HvError::Misaligned { what: "EADD offset", .. })));
    assert_eq!(hv.add_page(id, 0x4000, &page, 0x203), Err(HvError::OutsideElrange { id, offset: 0x4000, size: 0x4000 }));
    assert!(matches!(hv.add_page(id, 0x2000, &page[..100], 0x203), Err(HvError::BufferTooSmall { .. })));
    assert!(matches!(hv.add_page(id, 0x2000, &page, 0x003), Err(HvError::SecinfoInvalid { .. })), "SECS type");
    assert!(matches!(hv.add_page(id, 0x2000, &page, 0x100), Err(HvError::TcsInvalid { field: "NSSA (at least 1)", .. })));
    assert_eq!(hv.extend(id, 0x2000), Err(HvError::PageNotAdded { id, offset: 0x2000 }));
    assert!(matches!(hv.extend(id, 0x1080), Err(HvError::Misaligned { align: 256, .. })));
    assert!(matches!(hv.extend(id, 0x4000), Err(HvError::OutsideElrange { .. })));
    assert!(matches!(hv.enter(id, 0), Err(HvError::EnclaveState { .. })), "EENTER before EINIT");
    assert!(matches!(hv.report(id, &TargetInfo::default(), &[0; 64]), Err(HvError::EnclaveState { .. })));
    assert!(matches!(hv.create_enclave(&SecsParams { size: 0x3000, ..secs(0x4000) }), Err(HvError::SecsInvalid { .. })));
    assert!(matches!(hv.create_enclave(&SecsParams { base: 0x40_1000, ..secs(0x4000) }), Err(HvError::SecsInvalid { .. })));
    assert_eq!(hv.add_page(99, 0, &page, 0x203), Err(HvError::NoSuchEnclave { id: 99 }));

    // adds after init
    let mr = {
        let mut m = Measurement::ecreate(1, 0x4000);
        m.eadd(0x1000, SecInfo::reg(3));
        m.value()
    };
    hv.init_enclave(id, &unsigned_sigstruct(&mr, 1, 0, 0)).unwrap();
    assert_eq!(hv.add_page(id, 0x2000, &page, 0x203), Err(HvError::EnclaveState { id, op: "EADD", state: "initialized" }));
    assert_eq!(hv.extend(id, 0x1000), Err(HvError::EnclaveState { id, op: "EEXTEND", state: "initialized" }));
    assert!(matches!(hv.enter(id, 0x1000), Err(HvError::TcsInvalid { .. })), "a REG page is not a TCS");
    assert!(matches!(hv.enter(id, 0x2000), Err(HvError::PageNotAdded { .. })));
}

#[test]
fn epc_exhaustion_is_an_error_and_destroy_returns_pages() {
    // EPCM capacity 8 pages although the region has 4 MiB
    let r = region(4);
    let mut cfg = HvConfig::new(r, Format::Ept, test_entropy);
    cfg.require_signed_sigstruct = false;
    let mut hv: Hypervisor<SliceMem<'static>, 8> = Hypervisor::new(cfg, backing(&r)).unwrap();
    assert_eq!(hv.status().epc_pages_total, 8);
    let id = hv.create_enclave(&secs(0x10_0000)).unwrap(); // SECS takes one page
    let page = [7u8; 4096];
    for i in 0..7 {
        hv.add_page(id, i * 4096, &page, 0x203).unwrap();
    }
    let err = hv.add_page(id, 7 * 4096, &page, 0x203).unwrap_err();
    assert_eq!(err, HvError::OutOfFrames { pool: "EPC", capacity: 8 });
    assert_eq!(std::format!("{err}"), "EPC exhausted: all 8 pages in use");
    assert!(hv.enclave_access(id, 0x40_0000 + 7 * 4096, Access::Read).unwrap().is_err(), "failed add left nothing mapped");
    assert!(matches!(hv.create_enclave(&secs(0x4000)), Err(HvError::OutOfFrames { pool: "EPC", .. })));
    let pool_before = hv.status().pool_frames_used;
    assert_eq!(hv.destroy_enclave(id).unwrap(), 8);
    assert_eq!(hv.status().epc_pages_used, 0);
    assert!(hv.status().pool_frames_used < pool_before);
    // returned pages are scrubbed and reusable
    let id2 = hv.create_enclave(&secs(0x4000)).unwrap();
    hv.add_page(id2, 0, &[0u8; 4096], 0x201).unwrap();
    let hpa = hv.enclave_access(id2, 0x40_0000, Access::Read).unwrap().unwrap();
    let mut b = [1u8; 4096];
    hv.mem().read(hpa, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    let mut secs_bytes = [0u8; 64];
    let mut any_secs = false;
    for i in 0..8 {
        hv.mem().read(r.epc_range().start + i * 4096, &mut secs_bytes).unwrap();
        any_secs |= SecsParams::from_bytes(&secs_bytes).is_ok_and(|s| s == secs(0x4000));
    }
    assert!(any_secs, "the SECS lives in an EPC page");
}

#[test]
fn enclave_limit_and_page_table_pool_exhaustion() {
    let mut hv = hv_with(Format::Npt, false, 4);
    let mut ids = Vec::new();
    for _ in 0..MAX_ENCLAVES {
        ids.push(hv.create_enclave(&secs(0x4000)).unwrap());
    }
    assert_eq!(hv.create_enclave(&secs(0x4000)), Err(HvError::TooManyEnclaves { max: MAX_ENCLAVES as u32 }));
    for id in &ids {
        hv.destroy_enclave(*id).unwrap();
    }
    assert_eq!(hv.status().enclaves, 0);

    // a pool of 8 frames: each enclave needs a root, each page up to 3 more tables
    let r = ReservedRegion { base: BASE, hypervisor_size: MIB + 8 * 4096, image_size: MIB, epc_size: 4 * MIB };
    let mut cfg = HvConfig::new(r, Format::Ept, test_entropy);
    cfg.require_signed_sigstruct = false;
    let mut hv: Hv = Hypervisor::new(cfg, backing(&r)).unwrap();
    let id = hv.create_enclave(&SecsParams { base: 1 << 32, ..secs(1 << 32) }).unwrap();
    let page = [0u8; 4096];
    let mut n = 0;
    let err = loop {
        match hv.add_page(id, n * (1 << 30), &page, 0x201) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, HvError::OutOfFrames { pool: "hypervisor page-table pool", capacity: 8 });
    assert_eq!(hv.status().epc_pages_used, 1 + n, "the EPC page of the failed add was given back");
    assert_eq!(hv.destroy_enclave(id).unwrap() as u64, 1 + n);
    assert_eq!(hv.status().pool_frames_used, 0);
}

#[test]
fn enter_exit_and_destroy_while_inside() {
    let mut hv = hv_with(Format::Ept, false, 4);
    let id = build_small(&mut hv);
    hv.init_enclave(id, &unsigned_sigstruct(&small_mrenclave(), 2, 0, 0)).unwrap();
    let e = hv.enter(id, 0).unwrap();
    assert_eq!((e.tcs, e.entry, e.ssa, e.nssa), (0x40_0000, 0x40_2000, 0x40_1000, 1));
    assert_eq!(e.nested_pointer, hv.enclave_info(id).unwrap().nested_pointer);
    assert_eq!(hv.enter(id, 0), Err(HvError::TcsBusy { id, offset: 0 }));
    assert_eq!(hv.destroy_enclave(id), Err(HvError::EnclaveBusy { id, threads: 1 }));
    hv.exit(id, 0).unwrap();
    assert_eq!(hv.exit(id, 0), Err(HvError::TcsNotEntered { id, offset: 0 }));
    // permissions in the enclave's nested tables follow SECINFO
    assert!(hv.enclave_access(id, 0x40_2000, Access::Execute).unwrap().is_ok());
    assert!(hv.enclave_access(id, 0x40_2000, Access::Write).unwrap().is_err());
    assert!(hv.enclave_access(id, 0x40_1000, Access::Write).unwrap().is_ok());
    assert!(hv.enclave_access(id, 0x40_1000, Access::Execute).unwrap().is_err());
    let mut pages = Vec::new();
    hv.enclave_pages(id, |p| pages.push((p.offset, p.page_type, p.perms))).unwrap();
    pages.sort_by_key(|p| p.0);
    assert_eq!(pages, [(0, PageType::Tcs, 0), (0x1000, PageType::Reg, 3), (0x2000, PageType::Reg, 5)]);
    assert_eq!(hv.destroy_enclave(id).unwrap(), 4);
    assert_eq!(hv.destroy_enclave(id), Err(HvError::NoSuchEnclave { id }));
}

#[test]
fn runner_pages_map_outside_elrange_only_and_never_epc() {
    let mut hv = hv_with(Format::Npt, false, 4);
    let pool_empty = hv.status().pool_frames_used;
    let id = build_small(&mut hv);
    let r = hv.config().reserved;
    let runner_hpa = r.base + 0x1000; // hypervisor memory, not EPC
    let pool_before = hv.status().pool_frames_used;
    hv.map_runner_page(id, 0x10_0000, runner_hpa, Perms::RW).unwrap();
    assert_eq!(hv.enclave_access(id, 0x10_0010, Access::Write).unwrap().unwrap(), runner_hpa + 0x10);
    assert!(hv.enclave_access(id, 0x10_0010, Access::Execute).unwrap().is_err(), "runner pages are not executable unless asked");
    assert!(matches!(hv.map_runner_page(id, 0x40_4000, runner_hpa, Perms::R), Err(HvError::InvalidRange { what: "runner page inside ELRANGE", .. })));
    let epc = r.epc_range().start;
    assert!(matches!(hv.map_runner_page(id, 0x20_0000, epc, Perms::R), Err(HvError::InvalidRange { what: "runner page in the EPC", .. })));
    assert!(matches!(hv.map_runner_page(id, 0x20_0800, runner_hpa, Perms::R), Err(HvError::Misaligned { .. })));
    assert!(matches!(hv.map_runner_page(id, 0x10_0000, runner_hpa, Perms::R), Err(HvError::AlreadyMapped { .. })));
    assert!(hv.status().pool_frames_used > pool_before);
    // destroy frees the table frames (the runner's pages stay the runner's)
    hv.destroy_enclave(id).unwrap();
    assert_eq!(hv.status().pool_frames_used, pool_empty);
}

#[test]
fn host_loses_access_to_hypervisor_and_enclave_memory_after_enable() {
    for format in [Format::Ept, Format::Npt] {
        let mut hv = hv_with(format, false, 4);
        let r = hv.config().reserved;
        let id = build_small(&mut hv);
        let enclave_hpa = hv.enclave_access(id, 0x40_2000, Access::Read).unwrap().unwrap();
        let mut owned = vec![r.epc_range().start]; // the SECS page is the first EPC page handed out
        hv.enclave_pages(id, |p| owned.push(p.hpa)).unwrap();
        assert_eq!(owned.len(), 4);
        // before enable: the host may touch anything
        assert_eq!(hv.host_access(r.base, Access::Read), Ok(()));
        assert_eq!(hv.host_access(enclave_hpa, Access::Write), Ok(()));
        assert_eq!(hv.status().host_faults.total(), 0);

        hv.enable(&memmap()).unwrap();
        assert_eq!(hv.enable(&memmap()), Err(HvError::AlreadyEnabled));
        assert!(hv.status().enabled);
        // ordinary RAM and MMIO still work
        for pa in [0x1000u64, 0x7fff_ffff, r.base + r.total(), BASE + (1 << 30) - 1] {
            assert_eq!(hv.host_access(pa, Access::Write), Ok(()), "{pa:#x}");
        }
        assert_eq!(hv.host_access(0xfee0_0000, Access::Read), Ok(()));
        let f = hv.host_access(0xfee0_0000, Access::Execute).unwrap_err();
        assert_eq!(f.reason, HostFaultReason::PermissionDenied);
        // every page of the reserved region faults, for every access kind
        let mut expected = 0;
        let mut pa = r.base;
        while pa < r.base + r.total() {
            for access in [Access::Read, Access::Write, Access::Execute] {
                let f = hv.host_access(pa + 0x123, access).unwrap_err();
                let want = if pa < r.epc_range().start {
                    HostFaultReason::HypervisorMemory
                } else {
                    HostFaultReason::EnclaveMemory { enclave: if owned.contains(&pa) { Some(id) } else { None } }
                };
                assert_eq!(f.reason, want, "{pa:#x}");
                expected += 1;
            }
            pa += PAGE_SIZE;
        }
        let enclave_fault = hv.host_access(enclave_hpa, Access::Read).unwrap_err();
        assert_eq!(enclave_fault.reason, HostFaultReason::EnclaveMemory { enclave: Some(id) });
        assert_eq!(std::format!("{enclave_fault}"), std::format!("host read at {enclave_hpa:#x} refused: memory of enclave {id}"));
        assert_eq!(hv.host_access(0xc000_0000, Access::Read).unwrap_err().reason, HostFaultReason::NotInMemoryMap);
        let c = hv.status().host_faults;
        assert_eq!(c.hypervisor + c.enclave, expected + 1);
        assert_eq!((c.unmapped, c.permission), (1, 1));

        assert_eq!(hv.disable(), Err(HvError::EnclavesAlive { count: 1 }));
        hv.destroy_enclave(id).unwrap();
        hv.disable().unwrap();
        assert_eq!(hv.host_access(enclave_hpa, Access::Read), Ok(()));
        assert_eq!(hv.status().pool_frames_used, 0);
        assert_eq!(hv.disable(), Err(HvError::NotEnabled));
    }
}


#[test]
fn reports_between_enclaves_and_seal_keys() {
    let mut hv = hv_with(Format::Ept, false, 4);
    let a = build_small(&mut hv);
    let mr_a = small_mrenclave();
    hv.init_enclave(a, &unsigned_sigstruct(&mr_a, 5, 3, 2)).unwrap();
    // enclave B: same pages plus one more page, same signer
    let b = build_small(&mut hv);
    hv.add_page_measured(b, 0x3000, &[9u8; 4096], 0x201).unwrap();
    let mr_b = {
        let mut pages: Vec<(u64, SecInfo, Vec<u8>)> =
            small_pages().iter().map(|(o, f, p)| (*o, SecInfo::from_flags(*f).unwrap(), p.to_vec())).collect();
        pages.push((0x3000, SecInfo::reg(1), vec![9u8; 4096]));
        crate::enclave::measure::measure_image(0x8000, 1, pages.iter().map(|(o, s, p)| (*o, *s, &p[..])))
    };
    hv.init_enclave(b, &unsigned_sigstruct(&mr_b, 5, 3, 2)).unwrap();

    let target_b = TargetInfo { mrenclave: mr_b, ..Default::default() };
    let raw = hv.report(a, &target_b, &[0x5a; 64]).unwrap();
    let r = hv.verify_report(&raw, &mr_b).unwrap();
    assert_eq!(r.identity.mrenclave, mr_a);
    assert_eq!(r.identity.mrsigner, crate::crypto::sha256(&[5; 384]));
    assert_eq!((r.identity.isv_prod_id, r.identity.isv_svn), (3, 2));
    assert_eq!(r.report_data, [0x5a; 64]);
    assert_eq!(hv.verify_report(&raw, &mr_a), Err(HvError::ReportMacMismatch), "not for A");
    // B checks it itself with EGETKEY(REPORT, KEYID)
    let req = KeyRequest { key_name: keyname::REPORT, key_id: r.key_id, ..Default::default() };
    let kb = hv.get_key(b, &req.to_bytes()).unwrap();
    assert_eq!(aes_cmac(&kb, &raw[..REPORT_BODY_SIZE]), r.mac);
    // two reports use different KEYIDs (wear-out protection)
    let raw2 = hv.report(a, &target_b, &[0x5a; 64]).unwrap();
    assert_ne!(raw[384..416], raw2[384..416]);
    assert_eq!(hv.status().reports_issued, 2);

    // seal keys: MRSIGNER policy shared by A and B, MRENCLAVE policy not
    let seal = |hv: &Hv, id, pol| {
        hv.get_key(id, &KeyRequest { key_name: keyname::SEAL, key_policy: pol, isv_svn: 2, ..Default::default() }.to_bytes()).unwrap()
    };
    assert_eq!(seal(&hv, a, policy::MRSIGNER), seal(&hv, b, policy::MRSIGNER));
    assert_ne!(seal(&hv, a, policy::MRENCLAVE), seal(&hv, b, policy::MRENCLAVE));
    let sealed_a = seal(&hv, a, policy::MRENCLAVE);
    // the same enclave rebuilt later gets the same key: it can unseal
    hv.destroy_enclave(a).unwrap();
    let a2 = build_small(&mut hv);
    hv.init_enclave(a2, &unsigned_sigstruct(&mr_a, 5, 3, 2)).unwrap();
    assert_ne!(a, a2);
    assert_eq!(seal(&hv, a2, policy::MRENCLAVE), sealed_a);
    // another root secret: different keys
    let mut other = hv_with(Format::Ept, false, 4);
    let o = build_small(&mut other);
    other.init_enclave(o, &unsigned_sigstruct(&mr_a, 5, 3, 2)).unwrap();
    let cfg = *other.config();
    let r2 = cfg.reserved;
    let mut other2: Hv = Hypervisor::new(cfg, backing(&r2)).unwrap();
    other2.trust_from_root_for_test(&[0x22; 32]);
    let o2 = build_small(&mut other2);
    other2.init_enclave(o2, &unsigned_sigstruct(&mr_a, 5, 3, 2)).unwrap();
    assert_eq!(seal(&other, o, policy::MRENCLAVE), sealed_a);
    assert_ne!(seal(&other2, o2, policy::MRENCLAVE), sealed_a);
}

#[test]
fn key_slots_follow_enclaves() {
    let mut hv = hv_with(Format::Npt, false, 4);
    let a = build_small(&mut hv);
    let s1 = hv.keyslot_alloc(Some(a)).unwrap();
    let s2 = hv.keyslot_alloc(None).unwrap();
    hv.keyslot_bind(s2, a).unwrap();
    let s3 = hv.keyslot_alloc(None).unwrap();
    let s4 = hv.keyslot_alloc(None).unwrap();
    assert_eq!([s1, s2, s3, s4], [1, 2, 3, 4]);
    assert!(matches!(hv.keyslot_alloc(None), Err(HvError::KeySlotsExhausted { min: 1, max: 4, .. })));
    assert_eq!(hv.keyslot_alloc(Some(77)), Err(HvError::NoSuchEnclave { id: 77 }));
    hv.destroy_enclave(a).unwrap();
    let st = hv.status().key_slots.unwrap().1;
    assert_eq!((st.allocated, st.pending_flush), (2, 2), "destroy released the enclave's slots");
    assert!(matches!(hv.keyslot_alloc(None), Err(HvError::KeySlotsExhausted { pending_flush: 2, .. })));
    hv.keyslot_release(s3).unwrap();
    assert_eq!(hv.keyslot_flush().unwrap(), 3);
    assert_eq!(hv.keyslot_alloc(None).unwrap(), 1);
    assert_eq!(hv.slots.as_ref().unwrap().state(s4).unwrap(), SlotState::Allocated { owner: None });

    let r = region(4);
    let mut cfg = HvConfig::new(r, Format::Npt, test_entropy);
    cfg.key_slots = None;
    let mut none: Hv = Hypervisor::new(cfg, backing(&r)).unwrap();
    assert!(matches!(none.keyslot_alloc(None), Err(HvError::KeySlotConfig { .. })));
}

#[test]
fn construction_checks_the_backing() {
    let r = region(4);
    let short = SliceMem::new(r.base, Box::leak(vec![0u8; (r.total() - 4096) as usize].into_boxed_slice()));
    let cfg = HvConfig::new(r, Format::Ept, test_entropy);
    assert!(matches!(Hv::new(cfg, short), Err(HvError::PhysOutOfRange { .. })));
    let bad = HvConfig::new(ReservedRegion { base: BASE + 1, ..r }, Format::Ept, test_entropy);
    assert!(matches!(Hv::new(bad, backing(&r)), Err(HvError::Misaligned { .. })));
}

#[test]
fn dma_status_shows_while_enabled_and_goes_with_disable() {
    let r = region(4);
    let mut hv = Hv::new(HvConfig::new(r, Format::Npt, test_entropy), backing(&r)).unwrap();
    let dma = DmaStatus { protected: true, faults: 3, iommu_base: 0xfed8_0000 };
    hv.set_dma(dma);
    assert_eq!(hv.status().dma, DmaStatus::default(), "not enabled: nothing to report");
    hv.enable(&memmap()).unwrap();
    assert_eq!(hv.status().dma, dma);
    let b = crate::hypercall::encode_status(&hv.status(), false);
    assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()) & (1 << 5), 1 << 5, "flags bit 5");
    assert_eq!(u64::from_le_bytes(b[240..248].try_into().unwrap()), 3);
    assert_eq!(u64::from_le_bytes(b[248..256].try_into().unwrap()), 0xfed8_0000);
    hv.disable().unwrap();
    hv.enable(&memmap()).unwrap();
    assert_eq!(hv.status().dma, DmaStatus::default(), "a new enable starts without protection until the platform sets it");
}

fn build_edmm(hv: &mut Hv, attributes: u64) -> u32 {
    let id = hv.create_enclave(&SecsParams { attributes, ..secs(0x8000) }).unwrap();
    for (off, flags, page) in small_pages() {
        hv.add_page_measured(id, off, &page, flags).unwrap();
    }
    hv.init_enclave(id, &unsigned_sigstruct(&small_mrenclave(), 1, 0, 0)).unwrap();
    id
}

fn page_state_op(r: HvResult<impl core::fmt::Debug>) -> &'static str {
    match r {
        Err(HvError::PageState { op, .. }) => op,
        other => panic!("expected PAGE_STATE, got {other:?}"),
    }
}

#[test]
fn edmm_augment_accept_restrict_trim_remove() {
    for format in [Format::Ept, Format::Npt] {
        let mut hv = hv_with(format, false, 1);
        let plain = build_edmm(&mut hv, attr::MODE64BIT | attr::DEBUG);
        assert!(matches!(hv.augment(plain, 0x3000, 1), Err(HvError::EnclaveState { state: "without ATTRIBUTES.EDMM", .. })));
        let id = build_edmm(&mut hv, attr::MODE64BIT | attr::DEBUG | attr::EDMM);
        let mr = hv.enclave_info(id).unwrap().identity.mrenclave;
        let used = hv.status().epc_pages_used;
        let la = 0x40_0000 + 0x3000;

        // bad ranges: overlap with an added page, beyond ELRANGE, misaligned, zero; nothing added
        assert!(matches!(hv.augment(id, 0x2000, 2), Err(HvError::PageOverlap { offset: 0x2000, .. })));
        assert!(matches!(hv.augment(id, 0x7000, 2), Err(HvError::OutsideElrange { .. })));
        assert!(matches!(hv.augment(id, 0x3001, 1), Err(HvError::Misaligned { .. })));
        assert!(matches!(hv.augment(id, 0x3000, 0), Err(HvError::InvalidRange { .. })));
        assert_eq!(hv.status().epc_pages_used, used);

        hv.augment(id, 0x3000, 3).unwrap();
        assert_eq!(hv.status().epc_pages_used, used + 3);
        assert!(matches!(hv.augment(id, 0x5000, 1), Err(HvError::PageOverlap { offset: 0x5000, .. })));
        let p = hv.enclave_page(id, 0x3000).unwrap();
        assert_eq!((p.page_type, p.perms, p.state), (PageType::Reg, 3, PageState::Pending));
        // a PENDING page is not reachable by the enclave until EACCEPT
        assert!(hv.enclave_access(id, la, Access::Read).unwrap().is_err());
        assert_eq!(page_state_op(hv.accept(id, 0x3000, edmm::secinfo::ACCEPT_TRIM)), "EACCEPT");
        assert!(matches!(hv.extend_perms(id, 0x3000, 4), Err(HvError::PageState { offset: 0x3000, .. })));
        hv.accept(id, 0x3000, edmm::secinfo::ACCEPT_AUGMENTED).unwrap();
        assert_eq!(hv.enclave_access(id, la, Access::Write).unwrap().unwrap(), p.hpa);
        assert!(hv.enclave_access(id, la, Access::Execute).unwrap().is_err());
        hv.extend_perms(id, 0x3000, 4).unwrap();
        assert!(hv.enclave_access(id, la, Access::Execute).unwrap().is_ok());
        assert_eq!(hv.enclave_info(id).unwrap().identity.mrenclave, mr, "augmented pages are not measured");

        // EMODPR to R: write refused at once, MODIFIED until EACCEPT
        hv.restrict(id, 0x3000, 1, 1).unwrap();
        assert!(hv.enclave_access(id, la, Access::Write).unwrap().is_err());
        assert!(hv.enclave_access(id, la, Access::Read).unwrap().is_ok());
        assert!(matches!(hv.restrict(id, 0x2000, 1, 7), Err(HvError::InvalidPermissions { .. })), "adding X to the code page");
        hv.accept(id, 0x3000, edmm::secinfo::accept_restricted(1)).unwrap();
        assert_eq!(hv.enclave_page(id, 0x3000).unwrap().state, PageState::Normal);

        // trim: all-or-nothing over a range with a PENDING page in it
        assert_eq!(page_state_op(hv.modify_type(id, 0x3000, 2, 4)), "EMODT");
        assert_eq!(hv.enclave_page(id, 0x3000).unwrap().page_type, PageType::Reg, "refused range left unchanged");
        hv.modify_type(id, 0x3000, 1, 4).unwrap();
        assert!(hv.enclave_access(id, la, Access::Read).unwrap().is_err(), "trimmed page unmapped at once");
        assert_eq!(page_state_op(hv.remove_pages(id, 0x3000, 1)), "EREMOVE", "not accepted yet");
        hv.accept(id, 0x3000, edmm::secinfo::ACCEPT_TRIM).unwrap();
        assert_eq!(page_state_op(hv.remove_pages(id, 0x2000, 2)), "EREMOVE");
        assert_eq!(hv.remove_pages(id, 0x3000, 1).unwrap(), 1);
        assert_eq!(hv.status().epc_pages_used, used + 2);
        assert!(matches!(hv.enclave_page(id, 0x3000), Err(HvError::PageNotAdded { .. })));
        // the freed frame was scrubbed; augment again reuses a zeroed page
        hv.augment(id, 0x3000, 1).unwrap();
        let mut b = [0xffu8; 4096];
        hv.mem().read(hv.enclave_page(id, 0x3000).unwrap().hpa, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(hv.destroy_enclave(id).unwrap(), 1 + 3 + 3, "SECS, three added, three augmented");
        hv.destroy_enclave(plain).unwrap();
        assert_eq!(hv.status().epc_pages_used, 0);
    }
}

#[test]
fn edmm_refused_before_einit_and_status_codes() {
    let mut hv = hv_with(Format::Ept, false, 1);
    let id = hv.create_enclave(&SecsParams { attributes: attr::MODE64BIT | attr::EDMM, ..secs(0x8000) }).unwrap();
    assert!(matches!(hv.augment(id, 0x3000, 1), Err(HvError::EnclaveState { .. })));
    let e = HvError::PageState { id, offset: 0, op: "EACCEPT", state: "PENDING" };
    assert_eq!(crate::hypercall::HcStatus::from(&e) as u64, 42);
    assert_eq!(crate::hypercall::HcStatus::from(&HvError::SsaInvalid { field: "RIP", value: 0 }) as u64, 41);
    assert_eq!(crate::hypercall::HcStatus::EnclaveOcall as u64, 40);
}

#[test]
fn shared_region_checks() {
    let mut hv = hv_with(Format::Ept, false, 1);
    let id = hv.create_enclave(&secs(0x8000)).unwrap();
    // host RAM below the reserved region: fine, also after demotion
    hv.shared_check(0x20_0000, 4).unwrap();
    assert!(matches!(hv.shared_check(0x20_0800, 1), Err(HvError::Misaligned { .. })));
    assert!(matches!(hv.shared_check(0x20_0000, 0), Err(HvError::InvalidRange { .. })));
    assert!(matches!(hv.shared_check(0x20_0000, crate::hypercall::SHARED_MAX_PAGES + 1), Err(HvError::InvalidRange { .. })));
    // overlapping the reserved region (hypervisor memory, EPC): refused, even by one page
    assert!(matches!(hv.shared_check(BASE - 0x1000, 2), Err(HvError::HostAccessDenied { gpa: BASE })));
    let epc = region(1).epc_range().start;
    assert!(matches!(hv.shared_check(epc, 1), Err(HvError::HostAccessDenied { .. })));
    hv.enable(&memmap()).unwrap();
    // MMIO and holes are not host RAM the host may write
    assert!(matches!(hv.shared_check(0xfee0_0000, 1), Err(HvError::HostAccessDenied { .. })));
    assert!(matches!(hv.shared_check(0xa0000, 1), Err(HvError::HostAccessDenied { gpa: 0xa0000 })));
    hv.shared_add(id, 0x20_0000, 4).unwrap();
    assert_eq!(hv.enclave_shared(id).unwrap(), Some((0x20_0000, 4)));
    for (off, flags, page) in small_pages() {
        hv.add_page_measured(id, off, &page, flags).unwrap();
    }
    hv.init_enclave(id, &unsigned_sigstruct(&small_mrenclave(), 1, 0, 0)).unwrap();
    assert!(matches!(hv.shared_add(id, 0x30_0000, 1), Err(HvError::EnclaveState { .. })), "after EINIT");
}
