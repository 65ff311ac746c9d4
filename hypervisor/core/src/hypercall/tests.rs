extern crate std;
use super::*;
use crate::enclave::report::{keyname, KeyRequest};
use crate::hypervisor::tests::{hv_with, memmap, small_pages, unsigned_sigstruct, Hv, BASE};
use crate::hypervisor::HostFaultReason;
use std::collections::HashMap;

/// The host's physical memory as the caller sees it: any address reads (zeros if untouched).
#[derive(Default)]
struct HostRam(HashMap<u64, [u8; 4096]>);

impl PhysMem for HostRam {
    fn read(&self, pa: u64, buf: &mut [u8]) -> HvResult<()> {
        let mut done = 0;
        while done < buf.len() {
            let a = pa.wrapping_add(done as u64);
            let (page, off) = (a & !0xfff, (a & 0xfff) as usize);
            let n = (4096 - off).min(buf.len() - done);
            match self.0.get(&page) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> HvResult<()> {
        let mut done = 0;
        while done < data.len() {
            let a = pa.wrapping_add(done as u64);
            let (page, off) = (a & !0xfff, (a & 0xfff) as usize);
            let n = (4096 - off).min(data.len() - done);
            self.0.entry(page).or_insert([0; 4096])[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

fn call(hv: &mut Hv, g: &mut HostRam, nr: u64, args: &[u64]) -> (HcStatus, Regs) {
    let mut r = Regs::call(nr, args);
    let s = dispatch(hv, &mut r, g);
    assert_eq!(r.rax, s as u64);
    (s, r)
}

const BUF: u64 = 0x20_0000;

#[test]
fn full_enclave_lifecycle_through_hypercalls() {
    let mut hv = hv_with(Format::Ept, false, 4);
    let mut g = HostRam::default();

    let (s, r) = call(&mut hv, &mut g, nr::VERSION, &[ABI_VERSION as u64]);
    assert_eq!((s, r.rdi), (HcStatus::Success, ABI_VERSION as u64));
    assert_eq!(call(&mut hv, &mut g, nr::VERSION, &[0x0002_0000]).0, HcStatus::VersionMismatch);

    // create from a SECS in host memory
    let secs = crate::hypervisor::tests::secs(0x8000);
    g.write(BUF, &secs.to_bytes()).unwrap();
    let (s, r) = call(&mut hv, &mut g, nr::ENCLAVE_CREATE, &[BUF]);
    assert_eq!(s, HcStatus::Success);
    let id = r.rdi;
    assert_ne!(id, 0);

    for (off, flags, page) in small_pages() {
        g.write(BUF + 0x1000, &page).unwrap();
        assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_ADD, &[id, off, BUF + 0x1000, flags]).0, HcStatus::Success);
        for c in 0..16 {
            assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_EXTEND, &[id, off + c * 256]).0, HcStatus::Success);
        }
    }
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_ADD, &[id, 0x1000, BUF + 0x1000, 0x203]).0, HcStatus::PageOverlap);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_ADD, &[id, 0x8000, BUF + 0x1000, 0x203]).0, HcStatus::OutsideElrange);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_ADD, &[id, 0x3800, BUF + 0x1000, 0x203]).0, HcStatus::InvalidArgument);

    // wrong hash, then the right one
    let mut info = [0u8; ENCLAVE_INFO_SIZE];
    let mr = {
        let pages = small_pages();
        crate::enclave::measure::measure_image(
            0x8000,
            1,
            pages.iter().map(|(o, f, p)| (*o, crate::enclave::SecInfo::from_flags(*f).unwrap(), &p[..])),
        )
    };
    g.write(BUF + 0x3000, &unsigned_sigstruct(&[0; 32], 4, 1, 1)).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_INIT, &[id, BUF + 0x3000]).0, HcStatus::MeasurementMismatch);
    g.write(BUF + 0x3000, &unsigned_sigstruct(&mr, 4, 1, 1)).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_INIT, &[id, BUF + 0x3000]).0, HcStatus::Success);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_ADD, &[id, 0x3000, BUF + 0x1000, 0x203]).0, HcStatus::EnclaveState);

    let (s, r) = call(&mut hv, &mut g, nr::ENCLAVE_INFO, &[id, BUF + 0x4000, ENCLAVE_INFO_SIZE as u64]);
    assert_eq!((s, r.rdi), (HcStatus::Success, ENCLAVE_INFO_SIZE as u64));
    g.read(BUF + 0x4000, &mut info).unwrap();
    assert_eq!(u32::from_le_bytes(info[0..4].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(info[4..8].try_into().unwrap()), 4);
    assert_eq!(&info[40..72], &mr);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_INFO, &[id, BUF + 0x4000, 10]).0, HcStatus::BufferTooSmall);

    let (s, r) = call(&mut hv, &mut g, nr::ENCLAVE_ENTER, &[id, 0]);
    assert_eq!((s, r.rdi, r.rsi, r.rdx), (HcStatus::Success, 0x40_2000, 0x40_0000, 0x40_1000));
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_ENTER, &[id, 0]).0, HcStatus::TcsBusy);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_DESTROY, &[id]).0, HcStatus::EnclaveBusy);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_EXIT, &[id, 0]).0, HcStatus::Success);

    // REPORT and GET_KEY are the enclave's own (EREPORT/EGETKEY from inside): the host is refused
    let mut ti = [0u8; 64];
    ti[..32].copy_from_slice(&mr);
    g.write(BUF + 0x5000, &ti).unwrap();
    g.write(BUF + 0x5100, &[0x77; 64]).unwrap();
    let (s, r) = call(&mut hv, &mut g, nr::REPORT, &[id, BUF + 0x5000, BUF + 0x5100, BUF + 0x6000]);
    assert_eq!((s, s as u64, r.rdi), (HcStatus::EnclaveOnly, 36, 0));
    let mut untouched = [0u8; REPORT_SIZE];
    g.read(BUF + 0x6000, &mut untouched).unwrap();
    assert_eq!(untouched, [0u8; REPORT_SIZE], "nothing written for the host");
    let req = KeyRequest { key_name: keyname::SEAL, key_policy: 1, ..Default::default() };
    g.write(BUF + 0x7000, &req.to_bytes()).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::GET_KEY, &[id, BUF + 0x7000, BUF + 0x7100]).0, HcStatus::EnclaveOnly);
    let mut key = [0u8; 16];
    g.read(BUF + 0x7100, &mut key).unwrap();
    assert_eq!(key, [0u8; 16]);
    // the enclave path still works; the host may verify a report's MAC
    let rep = hv.report(id as u32, &crate::enclave::report::TargetInfo::from_bytes(&ti).unwrap(), &[0x77; 64]).unwrap();
    g.write(BUF + 0x6000, &rep).unwrap();
    g.write(BUF + 0x5200, &mr).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::VERIFY_REPORT, &[BUF + 0x6000, BUF + 0x5200]).0, HcStatus::Success);
    let mut rep = rep;
    rep[330] ^= 1;
    g.write(BUF + 0x6000, &rep).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::VERIFY_REPORT, &[BUF + 0x6000, BUF + 0x5200]).0, HcStatus::ReportMacMismatch);

    // HAK_PUBLIC and QUOTE: a report for the quoting identity becomes a quote
    let (s, r) = call(&mut hv, &mut g, nr::HAK_PUBLIC, &[BUF + 0x8000]);
    assert_eq!((s, r.rdi), (HcStatus::Success, 13));
    let mut hak = [0u8; 32];
    g.read(BUF + 0x8000, &mut hak).unwrap();
    assert_eq!(hak, hv.hak_public().unwrap().0);
    let qti = crate::enclave::report::TargetInfo { mrenclave: crate::trust::quoting_target_mrenclave(), ..Default::default() };
    let qrep = hv.report(id as u32, &qti, &[0x55; 64]).unwrap();
    g.write(BUF + 0x9000, &qrep).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::QUOTE, &[BUF + 0x9000, BUF + 0xa000]).0, HcStatus::Success);
    let mut q = [0u8; 496];
    g.read(BUF + 0xa000, &mut q).unwrap();
    assert_eq!((&q[0..4], &q[16..400], &q[400..432]), (&b"HEQ1"[..], &qrep[..384], &hak[..]));
    // a report for another target (here: the enclave itself) is not quoted
    g.write(BUF + 0x9000, &rep).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::QUOTE, &[BUF + 0x9000, BUF + 0xa000]).0, HcStatus::ReportMacMismatch);
    // TRUST_INIT needs the platform's TPM: plain dispatch does not serve it
    assert_eq!(call(&mut hv, &mut g, nr::TRUST_INIT, &[0, 0, BUF + 0xb000, 4096]).0, HcStatus::UnknownCall);

    // key slots
    let (s, r) = call(&mut hv, &mut g, nr::KEYSLOT_ALLOC, &[id]);
    assert_eq!((s, r.rdi), (HcStatus::Success, 1));
    assert_eq!(call(&mut hv, &mut g, nr::KEYSLOT_RELEASE, &[1]).0, HcStatus::Success);
    assert_eq!(call(&mut hv, &mut g, nr::KEYSLOT_RELEASE, &[1]).0, HcStatus::KeySlotInvalid);
    assert_eq!(call(&mut hv, &mut g, nr::KEYSLOT_FLUSH, &[]).1.rdi, 1);
    assert_eq!(call(&mut hv, &mut g, nr::KEYSLOT_BIND, &[1 << 40, id]).0, HcStatus::KeySlotInvalid);

    let (s, r) = call(&mut hv, &mut g, nr::ENCLAVE_DESTROY, &[id]);
    assert_eq!((s, r.rdi), (HcStatus::Success, 4));
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_DESTROY, &[id]).0, HcStatus::NoSuchEnclave);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_DESTROY, &[1 << 33]).0, HcStatus::NoSuchEnclave);
    let (s, r) = call(&mut hv, &mut g, 0x99, &[]);
    assert_eq!((s, r.rdi), (HcStatus::UnknownCall, 0));

    // the hypervisor's own measurement (what the TPM holds)
    assert_eq!(call(&mut hv, &mut g, nr::IMAGE_DIGEST, &[BUF + 0x8000]).0, HcStatus::Success);
    let mut d = [0u8; 32];
    g.read(BUF + 0x8000, &mut d).unwrap();
    assert_eq!(d, crate::crypto::sha256(b"test hypervisor image"));

    // STATUS record
    let (s, r) = call(&mut hv, &mut g, nr::STATUS, &[BUF, STATUS_SIZE as u64]);
    assert_eq!((s, r.rdi), (HcStatus::Success, STATUS_SIZE as u64));
    let mut st = [0u8; STATUS_SIZE];
    g.read(BUF, &mut st).unwrap();
    let w = |i: usize| u64::from_le_bytes(st[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!(w(0), ABI_VERSION as u64);
    assert_eq!(w(1), 0b10100, "not enabled, EPT, key slots, unsigned allowed, trust established");
    assert_eq!((w(6), w(7), w(10)), (1024, 0, 0));
    assert_eq!((w(12), w(13), w(14), w(17)), (1, 1, 4, 1));
    assert_eq!(w(22), hv.status().hypercalls);
    assert_eq!((w(23), w(24), w(25)), (1, 1, 2), "two reports made on the enclave path above");
    assert_eq!(&st[208..240], &d);
    assert_eq!(call(&mut hv, &mut g, nr::STATUS, &[BUF, 16]).0, HcStatus::BufferTooSmall);
}

fn write_memmap(g: &mut HostRam, at: u64) -> u64 {
    let map = memmap();
    for (i, m) in map.iter().enumerate() {
        let kind = match m.kind {
            MemKind::Ram => 0u64,
            MemKind::Reserved => 1,
            MemKind::Mmio => 2,
        };
        let mut e = [0u8; MEMMAP_ENTRY_SIZE];
        e[0..8].copy_from_slice(&m.start.to_le_bytes());
        e[8..16].copy_from_slice(&m.size.to_le_bytes());
        e[16..24].copy_from_slice(&kind.to_le_bytes());
        g.write(at + (i * MEMMAP_ENTRY_SIZE) as u64, &e).unwrap();
    }
    map.len() as u64
}

#[test]
fn after_enable_hypercall_buffers_in_protected_memory_are_refused() {
    let mut hv = hv_with(Format::Npt, false, 4);
    let r = hv.config().reserved;
    let mut g = HostRam::default();
    let n = write_memmap(&mut g, BUF);
    let epc = r.epc_range().start;
    let secs = crate::hypervisor::tests::secs(0x8000);

    // before enable a SECS placed at an EPC address is simply read (the host owns everything)
    g.write(epc + 0x10_0000, &secs.to_bytes()).unwrap();
    let (s, r1) = call(&mut hv, &mut g, nr::ENCLAVE_CREATE, &[epc + 0x10_0000]);
    assert_eq!(s, HcStatus::Success);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_DESTROY, &[r1.rdi]).0, HcStatus::Success);

    assert_eq!(call(&mut hv, &mut g, nr::ENABLE, &[BUF, n]).0, HcStatus::Success);
    assert_eq!(call(&mut hv, &mut g, nr::ENABLE, &[BUF, n]).0, HcStatus::AlreadyEnabled);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_CREATE, &[epc + 0x10_0000]).0, HcStatus::HostAccessDenied);
    assert_eq!(call(&mut hv, &mut g, nr::STATUS, &[r.base + 0x20_0000 - 64, STATUS_SIZE as u64]).0, HcStatus::HostAccessDenied);
    // a buffer that starts in RAM and runs into the reserved region is refused too
    assert_eq!(call(&mut hv, &mut g, nr::STATUS, &[BASE + (1 << 30) - 8, STATUS_SIZE as u64]).0, HcStatus::HostAccessDenied);
    let c = hv.status().host_faults;
    assert_eq!((c.enclave, c.hypervisor, c.unmapped), (1, 1, 1));
    assert_eq!(hv.host_access(epc, Access::Read).unwrap_err().reason, HostFaultReason::EnclaveMemory { enclave: None });

    // the same call from ordinary RAM works
    g.write(BUF + 0x1000, &secs.to_bytes()).unwrap();
    let (s, r2) = call(&mut hv, &mut g, nr::ENCLAVE_CREATE, &[BUF + 0x1000]);
    assert_eq!(s, HcStatus::Success);
    assert_eq!(call(&mut hv, &mut g, nr::DISABLE, &[]).0, HcStatus::EnclavesAlive);
    call(&mut hv, &mut g, nr::ENCLAVE_DESTROY, &[r2.rdi]);
    assert_eq!(call(&mut hv, &mut g, nr::DISABLE, &[]).0, HcStatus::Success);
    assert_eq!(call(&mut hv, &mut g, nr::DISABLE, &[]).0, HcStatus::NotEnabled);

    // bad ENABLE inputs
    assert_eq!(call(&mut hv, &mut g, nr::ENABLE, &[BUF, 0]).0, HcStatus::InvalidArgument);
    assert_eq!(call(&mut hv, &mut g, nr::ENABLE, &[BUF, 500]).0, HcStatus::InvalidArgument);
    g.write(BUF + 16, &7u64.to_le_bytes()).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::ENABLE, &[BUF, n]).0, HcStatus::InvalidArgument);
}

#[test]
fn status_codes_are_distinct() {
    let all = [
        HcStatus::Success, HcStatus::UnknownCall, HcStatus::VersionMismatch, HcStatus::InvalidArgument, HcStatus::BufferTooSmall,
        HcStatus::HostAccessDenied, HcStatus::NotEnabled, HcStatus::AlreadyEnabled, HcStatus::EnclavesAlive, HcStatus::NoSuchEnclave,
        HcStatus::TooManyEnclaves, HcStatus::EnclaveState, HcStatus::SecsInvalid, HcStatus::SecinfoInvalid, HcStatus::TcsInvalid,
        HcStatus::PageOverlap, HcStatus::OutsideElrange, HcStatus::PageNotAdded, HcStatus::SigstructInvalid, HcStatus::SignatureInvalid,
        HcStatus::AttributesMismatch, HcStatus::MeasurementMismatch, HcStatus::TcsBusy, HcStatus::TcsNotEntered, HcStatus::EnclaveBusy,
        HcStatus::EpcExhausted, HcStatus::OutOfMemory, HcStatus::ReportMacMismatch, HcStatus::KeyRequestInvalid, HcStatus::SvnTooHigh,
        HcStatus::KeySlotsExhausted, HcStatus::KeySlotInvalid, HcStatus::NoKeySlots, HcStatus::InternalError,
        HcStatus::EnclaveInterrupted, HcStatus::EnclaveFault, HcStatus::EnclaveOnly, HcStatus::TrustNotEstablished,
        HcStatus::TrustSealFailed, HcStatus::TpmIo, HcStatus::EnclaveOcall, HcStatus::SsaInvalid, HcStatus::PageState,
    ];
    for (i, s) in all.iter().enumerate() {
        assert_eq!(*s as u64, i as u64);
    }
}

/// Random register values, with pointers aimed at valid structures, protected memory and the
/// ends of the address space: dispatch must always answer with a status, never panic, and
/// leave the EPC/pool accounting consistent.
#[test]
fn random_hypercalls_never_panic() {
    let mut hv = hv_with(Format::Npt, false, 4);
    let res = hv.config().reserved;
    let mut g = HostRam::default();
    let secs = crate::hypervisor::tests::secs(0x8000);
    // the structures random calls may point at (random output writes may clobber them: rewritten)
    let restore = |g: &mut HostRam| {
        let n = write_memmap(g, BUF);
        g.write(BUF + 0x1000, &secs.to_bytes()).unwrap();
        for (i, (_, _, page)) in small_pages().iter().enumerate() {
            g.write(BUF + 0x2000 + i as u64 * 0x1000, page).unwrap();
        }
        g.write(BUF + 0x6000, &unsigned_sigstruct(&[0; 32], 1, 0, 0)).unwrap();
        n
    };
    let n_map = restore(&mut g);
    let mut rng = Lcg(0x1234_5678_9abc_def0);
    let calls = [0x00, 0x01, 0x02, 0x03, 0x04, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x20, 0x21, 0x22, 0x30, 0x31, 0x32, 0x33, 0x40, 0x41, 0x42, 0x99];
    let mut seen = HashMap::new();
    for i in 0..20_000 {
        if i % 50 == 0 {
            restore(&mut g);
        }
        let mut nr = calls[(rng.next() % calls.len() as u64) as usize];
        if nr == nr::ENCLAVE_DESTROY && !rng.next().is_multiple_of(4) {
            nr = nr::ENCLAVE_ADD; // keep enclaves alive long enough to reach deeper states
        }
        // per call, the argument kinds that make sense (see `value` below); used half the time
        let plausible: &[u64] = match nr {
            nr::STATUS => &[2, 9],
            nr::ENABLE => &[12, 8],
            nr::ENCLAVE_CREATE => &[13],
            nr::ENCLAVE_ADD => &[1, 3, 14, 5],
            nr::ENCLAVE_EXTEND | nr::ENCLAVE_ENTER | nr::ENCLAVE_EXIT => &[1, 3],
            nr::ENCLAVE_INIT => &[1, 2],
            nr::ENCLAVE_INFO => &[1, 2, 9],
            nr::REPORT => &[1, 2, 2, 2],
            nr::VERIFY_REPORT => &[2, 2],
            nr::GET_KEY => &[1, 2, 2],
            nr::ENCLAVE_AUGMENT | nr::ENCLAVE_REMOVE => &[1, 3, 15],
            nr::ENCLAVE_RESTRICT | nr::ENCLAVE_MODIFY_TYPE => &[1, 3, 15, 15],
            nr::ENCLAVE_SHARED_ADD => &[1, 12, 15],
            _ => &[1, 1],
        };
        let value = |cat: u64, rng: &mut Lcg| match cat {
            0 => 0,
            1 => rng.next() % 8 + 1,                                           // enclave ids / slots
            2 => BUF + 0x1000 * (rng.next() % 8),                              // our structures
            3 => (rng.next() % 8) * 0x1000 + (rng.next() % 2) * (rng.next() % 16) * 256, // offsets
            4 => 0x100 | (rng.next() % 8),                                     // TCS flags
            5 => 0x200 | (rng.next() % 8),                                     // REG flags
            6 => res.base + rng.next() % res.total(),                          // hypervisor / EPC
            7 => u64::MAX - rng.next() % 0x2000,                               // end of the address space
            8 => n_map,
            9 => STATUS_SIZE as u64,
            10 => rng.next(),
            12 => BUF,
            13 => BUF + 0x1000,
            14 => BUF + 0x2000 + 0x1000 * (rng.next() % 3),
            15 => rng.next() % 5, // page counts, permissions, page types
            _ => rng.next() % 0x10_0000,
        };
        let mut args = [0u64; 5];
        for (i, a) in args.iter_mut().enumerate() {
            let cat = match plausible.get(i) {
                Some(&c) if rng.next().is_multiple_of(2) => c,
                _ => rng.next() % 12,
            };
            *a = value(cat, &mut rng);
        }
        let mut r = Regs::call(nr, &args);
        let s = dispatch(&mut hv, &mut r, &mut g);
        assert_eq!(r.rax, s as u64);
        *seen.entry((nr, s as u64)).or_insert(0u32) += 1;
        if s != HcStatus::Success && s != HcStatus::VersionMismatch {
            assert_eq!((r.rdi, r.rsi, r.rdx), (0, 0, 0), "outputs cleared on error ({s:?})");
        }
    }
    let st = hv.status();
    let mut ids = [0u32; MAX_ENCLAVES_T];
    let n = hv.enclave_ids(&mut ids);
    let mut pages = 0;
    for id in &ids[..n] {
        pages += hv.enclave_info(*id).unwrap().epc_pages as u64;
    }
    assert_eq!(pages, st.epc_pages_used, "EPC accounting matches the enclaves");
    assert_eq!(st.hypercalls, 20_000);
    let ok = |nr: u64| seen.get(&(nr, 0)).copied().unwrap_or(0);
    assert!(ok(nr::ENCLAVE_CREATE) > 0 && ok(nr::ENCLAVE_ADD) > 0 && ok(nr::ENCLAVE_EXTEND) > 0 && ok(nr::ENABLE) > 0, "{seen:?}");
    let distinct_statuses: std::collections::HashSet<u64> = seen.keys().map(|k| k.1).collect();
    assert!(distinct_statuses.len() >= 15, "{distinct_statuses:?}");
    for id in &ids[..n] {
        let _ = hv.exit(*id, 0);
        hv.destroy_enclave(*id).unwrap();
    }
    if hv.is_enabled() {
        hv.disable().unwrap();
    }
    assert_eq!((hv.status().epc_pages_used, hv.status().pool_frames_used), (0, 0));
}

const MAX_ENCLAVES_T: usize = crate::hypervisor::MAX_ENCLAVES;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 7
    }
}

#[test]
fn before_trust_init_keys_reports_and_quotes_are_refused() {
    let r = crate::hypervisor::tests::region(4);
    let mut cfg = crate::hypervisor::HvConfig::new(r, Format::Ept, crate::hypervisor::tests::test_entropy);
    cfg.require_signed_sigstruct = false;
    let mut hv: Hv = crate::hypervisor::Hypervisor::new(cfg, crate::hypervisor::tests::backing(&r)).unwrap();
    let mut g = HostRam::default();
    let id = crate::hypervisor::tests::build_small(&mut hv);
    let mr = crate::hypervisor::tests::small_mrenclave();
    hv.init_enclave(id, &unsigned_sigstruct(&mr, 5, 3, 2)).unwrap();
    // the enclave's own EREPORT / EGETKEY
    assert_eq!(hv.report(id, &Default::default(), &[0; 64]).unwrap_err(), HvError::TrustNotEstablished);
    let req = KeyRequest { key_name: keyname::SEAL, key_policy: 1, ..Default::default() };
    assert_eq!(hv.get_key(id, &req.to_bytes()).unwrap_err(), HvError::TrustNotEstablished);
    // the host's calls
    assert_eq!(call(&mut hv, &mut g, nr::HAK_PUBLIC, &[BUF]).0, HcStatus::TrustNotEstablished);
    assert_eq!(call(&mut hv, &mut g, nr::QUOTE, &[BUF, BUF + 0x1000]).0, HcStatus::TrustNotEstablished);
    assert_eq!(call(&mut hv, &mut g, nr::VERIFY_REPORT, &[BUF, BUF + 0x1000]).0, HcStatus::TrustNotEstablished);
    assert_eq!(HcStatus::TrustNotEstablished as u64, 37);
    assert_eq!((HcStatus::TrustSealFailed as u64, HcStatus::TpmIo as u64), (38, 39));
    assert_eq!((HcStatus::EnclaveOcall as u64, HcStatus::SsaInvalid as u64, HcStatus::PageState as u64), (40, 41, 42));
}

#[test]
fn trust_init_through_dispatch_with_tpm_and_disable_caps_the_pcr() {
    use crate::tpm::tests::{Swtpm, SwtpmTransport};
    let tpm = Swtpm::start();
    let r = crate::hypervisor::tests::region(4);
    let mut cfg = crate::hypervisor::HvConfig::new(r, Format::Ept, crate::hypervisor::tests::test_entropy);
    cfg.image_digest = crate::crypto::sha256(b"dispatch image");
    tpm.tool(&["tpm2_pcrextend", &std::format!("12:sha256={}", cfg.image_digest.iter().map(|b| std::format!("{b:02x}")).collect::<std::string::String>())]);
    let r0 = r;
    let mut hv: Hv = crate::hypervisor::Hypervisor::new(cfg, crate::hypervisor::tests::backing(&r)).unwrap();
    let mut g = HostRam::default();
    let mut t = SwtpmTransport { port: tpm.port, locality: 2 };
    let mut go = |hv: &mut Hv, g: &mut HostRam, nr: u64, args: &[u64]| {
        let mut r = Regs::call(nr, args);
        let s = dispatch_with_tpm(hv, &mut r, g, &mut t);
        assert_eq!(r.rax, s as u64);
        (s, r)
    };
    assert_eq!(go(&mut hv, &mut g, nr::TRUST_INIT, &[0, 0, BUF, 100]).0, HcStatus::BufferTooSmall);
    let (s, r) = go(&mut hv, &mut g, nr::TRUST_INIT, &[0, 0, BUF, 4096]);
    assert_eq!(s, HcStatus::Success);
    assert!(r.rdi > 100 && r.rsi == 0b11 && r.rdx == 13, "{r:?}");
    let mut blob = std::vec![0u8; r.rdi as usize];
    g.read(BUF, &mut blob).unwrap();
    assert_eq!(&blob[..4], b"HER1");
    // once per enable: a second TRUST_INIT (which could swap the root) is refused, trust stays
    g.write(BUF + 0x2000, &blob).unwrap();
    let (s, r) = go(&mut hv, &mut g, nr::TRUST_INIT, &[0, 0, BUF + 0x4000, 4096]);
    assert_eq!((s, r.rdi), (HcStatus::TrustSealFailed, 0));
    assert_eq!(go(&mut hv, &mut g, nr::HAK_PUBLIC, &[BUF + 0x6000]).0, HcStatus::Success);
    // a new instance unseals from the blob in host memory: nothing new, PCR 13 already holds the event
    let mut hv: Hv = crate::hypervisor::Hypervisor::new(cfg, crate::hypervisor::tests::backing(&r0)).unwrap();
    let (s, r) = go(&mut hv, &mut g, nr::TRUST_INIT, &[BUF + 0x2000, blob.len() as u64, BUF + 0x4000, 4096]);
    assert_eq!((s, r.rdi, r.rsi, r.rdx), (HcStatus::Success, 0, 0, 13));
    // an oversized blob (private area far beyond a sealed secret's) is refused before any Load
    let mut big = std::vec![0u8; 4 + 32 + 2 + 3000];
    big[..36].copy_from_slice(&blob[..36]);
    big[36..38].copy_from_slice(&3000u16.to_be_bytes());
    let pub_at = 36 + 2 + u16::from_be_bytes([blob[36], blob[37]]) as usize;
    big.extend_from_slice(&blob[pub_at..]);
    g.write(BUF + 0x8000, &big).unwrap();
    let mut hv3: Hv = crate::hypervisor::Hypervisor::new(cfg, crate::hypervisor::tests::backing(&r0)).unwrap();
    assert_eq!(go(&mut hv3, &mut g, nr::TRUST_INIT, &[BUF + 0x8000, big.len() as u64, BUF + 0x4000, 4096]).0, HcStatus::TrustSealFailed);
    // DISABLE caps PCR 12 and drops the secrets; a later TRUST_INIT is refused until a reload
    let map = memmap();
    for (i, m) in map.iter().enumerate() {
        let mut e = [0u8; MEMMAP_ENTRY_SIZE];
        e[0..8].copy_from_slice(&m.start.to_le_bytes());
        e[8..16].copy_from_slice(&m.size.to_le_bytes());
        e[16..24].copy_from_slice(&(if m.kind == MemKind::Mmio { 2u64 } else { 0 }).to_le_bytes());
        g.write(BUF + 0x8000 + (i * MEMMAP_ENTRY_SIZE) as u64, &e).unwrap();
    }
    assert_eq!(go(&mut hv, &mut g, nr::ENABLE, &[BUF + 0x8000, map.len() as u64]).0, HcStatus::Success);
    assert_eq!(go(&mut hv, &mut g, nr::DISABLE, &[]).0, HcStatus::Success);
    assert_eq!(go(&mut hv, &mut g, nr::HAK_PUBLIC, &[BUF]).0, HcStatus::TrustNotEstablished);
    let (s, _) = go(&mut hv, &mut g, nr::TRUST_INIT, &[BUF + 0x2000, blob.len() as u64, BUF + 0x4000, 4096]);
    assert_eq!(s, HcStatus::TrustSealFailed);
    // a TPM that does not answer: TPM_IO
    let mut dead = SwtpmTransport { port: 1, locality: 2 };
    let mut r = Regs::call(nr::TRUST_INIT, &[0, 0, BUF, 4096]);
    assert_eq!(dispatch_with_tpm(&mut hv, &mut r, &mut g, &mut dead), HcStatus::TpmIo);
}

/// The EDMM leaves and ENCLAVE_SHARED_ADD through `dispatch`, as a host would issue them.
#[test]
fn edmm_and_shared_region_through_hypercalls() {
    let mut hv = hv_with(Format::Ept, false, 4);
    let mut g = HostRam::default();
    let mut secs = crate::hypervisor::tests::secs(0x8000);
    secs.attributes |= crate::enclave::attr::EDMM;
    g.write(BUF, &secs.to_bytes()).unwrap();
    let (s, r) = call(&mut hv, &mut g, nr::ENCLAVE_CREATE, &[BUF]);
    assert_eq!(s, HcStatus::Success);
    let id = r.rdi;
    // shared region: host RAM yes, the reserved region (hypervisor memory) no, before EINIT only
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_SHARED_ADD, &[id, BASE, 1]).0, HcStatus::HostAccessDenied);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_SHARED_ADD, &[id, 0x40_0000, 0]).0, HcStatus::InvalidArgument);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_SHARED_ADD, &[id, 0x40_0000, 4]).0, HcStatus::Success);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_AUGMENT, &[id, 0x3000, 1]).0, HcStatus::EnclaveState, "before EINIT");
    for (off, flags, page) in small_pages() {
        hv.add_page_measured(id as u32, off, &page, flags).unwrap();
    }
    hv.init_enclave(id as u32, &unsigned_sigstruct(&crate::hypervisor::tests::small_mrenclave(), 1, 0, 0)).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_SHARED_ADD, &[id, 0x40_0000, 1]).0, HcStatus::EnclaveState, "after EINIT");
    let used = hv.status().epc_pages_used;
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_AUGMENT, &[id, 0x3000, 2]).0, HcStatus::Success);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_AUGMENT, &[id, 0x4000, 1]).0, HcStatus::PageOverlap);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_AUGMENT, &[id, 0x7000, 2]).0, HcStatus::OutsideElrange);
    // host leaves on PENDING pages: PAGE_STATE; on the added code page: restrict refused (adds X? no: 5 → 1 ok)
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_RESTRICT, &[id, 0x3000, 1, 1]).0, HcStatus::PageState);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_MODIFY_TYPE, &[id, 0x3000, 1, 4]).0, HcStatus::PageState);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_REMOVE, &[id, 0x3000, 1]).0, HcStatus::PageState);
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_RESTRICT, &[id, 0x1000, 1, 7]).0, HcStatus::InvalidArgument, "permissions only shrink");
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_MODIFY_TYPE, &[id, 0x1000, 1, 2]).0, HcStatus::SecinfoInvalid, "only TRIM");
    // the enclave accepts (its runtime hypercall, served by the platform), then trim + remove
    hv.accept(id as u32, 0x3000, crate::enclave::edmm::secinfo::ACCEPT_AUGMENTED).unwrap();
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_MODIFY_TYPE, &[id, 0x3000, 1, 4]).0, HcStatus::Success);
    hv.accept(id as u32, 0x3000, crate::enclave::edmm::secinfo::ACCEPT_TRIM).unwrap();
    let (s, r) = call(&mut hv, &mut g, nr::ENCLAVE_REMOVE, &[id, 0x3000, 1]);
    assert_eq!((s, r.rdi), (HcStatus::Success, 1));
    assert_eq!(hv.status().epc_pages_used, used + 1);
    // ENCLAVE_OCALL_RETURN is the bare-metal image's: dispatch does not serve it
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_OCALL_RETURN, &[id, 0, 0, BUF]).0, HcStatus::UnknownCall);
    // random EDMM leaves (and the enclave's EACCEPT/EMODPE) never panic, and the EPC accounting
    // and the nested tables stay consistent with the EPCM
    let mut rng = Lcg(0xfeed_5eed);
    let leaves = [nr::ENCLAVE_AUGMENT, nr::ENCLAVE_RESTRICT, nr::ENCLAVE_MODIFY_TYPE, nr::ENCLAVE_REMOVE];
    let flags = [crate::enclave::edmm::secinfo::ACCEPT_AUGMENTED, crate::enclave::edmm::secinfo::ACCEPT_TRIM, 0x211, 0x213, 0x210, 0x20B];
    let (mut ok, mut accepted, mut by_leaf) = (0, 0, [0u32; 4]);
    for _ in 0..5000 {
        // mostly the free part of ELRANGE (0x3000..0x8000), sometimes anywhere (added pages, beyond)
        let off = if rng.next().is_multiple_of(4) { rng.next() % 9 } else { 3 + rng.next() % 5 } * 0x1000;
        let count = if rng.next().is_multiple_of(8) { rng.next() % 4 } else { 1 + rng.next() % 2 };
        match rng.next() % 6 {
            k @ 0..=3 => {
                let arg = if k == 2 { [4, 4, 4, 2][(rng.next() % 4) as usize] } else { rng.next() % 8 };
                let (s, _) = call(&mut hv, &mut g, leaves[k as usize], &[id, off, count, arg]);
                ok += (s == HcStatus::Success) as u32;
                by_leaf[k as usize] += (s == HcStatus::Success) as u32;
            }
            4 => {
                // half the time the flags that describe the page (so the machine moves on)
                use crate::enclave::edmm::{secinfo, PageState};
                let right = hv.enclave_page(id as u32, off).ok().map(|p| match (p.state, p.page_type) {
                    (PageState::Pending, _) => secinfo::ACCEPT_AUGMENTED,
                    (_, crate::enclave::PageType::Trim) => secinfo::ACCEPT_TRIM,
                    _ => secinfo::accept_restricted(p.perms as u64),
                });
                let f = match right {
                    Some(r) if rng.next().is_multiple_of(2) => r,
                    _ => flags[(rng.next() % 6) as usize],
                };
                if hv.accept(id as u32, off, f).is_ok() {
                    accepted += 1;
                }
            }
            _ => {
                let _ = hv.extend_perms(id as u32, off, rng.next() % 8);
            }
        }
        let info = hv.enclave_info(id as u32).unwrap();
        assert_eq!(info.epc_pages as u64, hv.status().epc_pages_used);
        for o in (0..0x8000).step_by(0x1000) {
            use crate::paging::Access;
            let mapped = [Access::Read, Access::Write, Access::Execute].iter().any(|&a| hv.enclave_access(id as u32, 0x40_0000 + o, a).unwrap().is_ok());
            let want = hv.enclave_page(id as u32, o).map(|p| p.page_type == crate::enclave::PageType::Tcs || crate::enclave::edmm::EpcmPage { page_type: p.page_type, perms: p.perms, state: p.state }.enclave_perms().is_some());
            assert_eq!(mapped, want.unwrap_or(false), "offset {o:#x}");
        }
    }
    assert!(ok > 100 && accepted > 100 && by_leaf.iter().all(|&n| n > 5), "{ok} successful EDMM leaves {by_leaf:?}, {accepted} EACCEPTs");
    let pages = hv.enclave_info(id as u32).unwrap().epc_pages as u64;
    assert_eq!(call(&mut hv, &mut g, nr::ENCLAVE_DESTROY, &[id]).1.rdi, pages);
    assert_eq!(hv.status().epc_pages_used, 0);
}
