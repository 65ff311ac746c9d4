extern crate std;
use super::*;
use crate::memory::{FrameAllocator, MemKind, MemRange, SliceMem};
use std::collections::{HashMap, HashSet};
use std::vec;
use std::vec::Vec;

const POOL: u64 = 0x8000_0000;

struct Rig {
    buf: Vec<u8>,
    frames: FrameAllocator<16>,
}

impl Rig {
    fn new(pages: u64) -> Self {
        Rig {
            buf: vec![0xa5; (pages * PAGE_SIZE) as usize], // garbage: tables must be zeroed on allocation
            frames: FrameAllocator::new("pool", MemRange::new(POOL, pages * PAGE_SIZE, MemKind::Reserved)).unwrap(),
        }
    }
    fn parts(&mut self) -> (SliceMem<'_>, &mut FrameAllocator<16>) {
        (SliceMem::new(POOL, &mut self.buf), &mut self.frames)
    }
}

/// Tiny deterministic generator for property-style tests.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
}

fn table_frames(t: &NestedPageTable, mem: &SliceMem) -> Vec<u64> {
    let mut v = Vec::new();
    t.for_each_table(mem, &mut |pa, _| v.push(pa)).unwrap();
    v
}

#[test]
fn ept_leaf_bits_are_the_hardware_layout() {
    let mut rig = Rig::new(16);
    let (mut mem, frames) = rig.parts();
    let mut t = NestedPageTable::new(Format::Ept, &mut mem, frames).unwrap();
    t.map(&mut mem, frames, 0x1000, 0x1234_5000, PageSize::Size4K, Perms::RWX, MemType::Wb).unwrap();
    t.map(&mut mem, frames, 0x4000_0000, 0x8_0000_0000, PageSize::Size2M, Perms::RX, MemType::Uc).unwrap();
    // Walk by hand: PML4[0] → PDPT[0] → PD[0] → PT[1]
    let pml4e = mem.read_u64(t.root()).unwrap();
    assert_eq!(pml4e & 0xfff, 0x7, "non-leaf EPT entries carry R|W|X");
    let pdpte = mem.read_u64(pml4e & ADDR_MASK).unwrap();
    let pde = mem.read_u64(pdpte & ADDR_MASK).unwrap();
    let pte = mem.read_u64((pde & ADDR_MASK) + 8).unwrap();
    assert_eq!(pte, 0x1234_5000 | 0x7 | (6 << 3));
    // 2 MiB leaf at PD index 0 of PDPT[1]
    let pdpte1 = mem.read_u64((pml4e & ADDR_MASK) + 8).unwrap();
    let pde_large = mem.read_u64(pdpte1 & ADDR_MASK).unwrap();
    assert_eq!(pde_large, (0x8_0000_0000 | 0x5) | (1 << 7));
    assert_eq!(t.pointer(), t.root() | 0x1e, "EPTP = root | WB | walk length 4");
}

#[test]
fn npt_leaf_bits_are_the_hardware_layout() {
    let mut rig = Rig::new(16);
    let (mut mem, frames) = rig.parts();
    let mut t = NestedPageTable::new(Format::Npt, &mut mem, frames).unwrap();
    t.map(&mut mem, frames, 0x0, 0xabc000, PageSize::Size4K, Perms::R, MemType::Wb).unwrap();
    t.map(&mut mem, frames, 0x1000, 0xabd000, PageSize::Size4K, Perms::RWX, MemType::Uc).unwrap();
    let pml4e = mem.read_u64(t.root()).unwrap();
    assert_eq!(pml4e & 0xfff, 0x7, "non-leaf NPT entries: P|RW|US");
    let pdpte = mem.read_u64(pml4e & ADDR_MASK).unwrap();
    let pde = mem.read_u64(pdpte & ADDR_MASK).unwrap();
    let pt = pde & ADDR_MASK;
    assert_eq!(mem.read_u64(pt).unwrap(), 0xabc000 | 1 | 4 | (1 << 63), "read-only: P|US|NX");
    assert_eq!(mem.read_u64(pt + 8).unwrap(), 0xabd000 | 1 | 2 | 4 | 8 | 16, "RWX UC: P|RW|US|PWT|PCD");
    assert_eq!(t.pointer(), t.root());
}

#[test]
fn translate_of_map_is_identity_and_unmapped_faults() {
    for format in [Format::Ept, Format::Npt] {
        let mut rig = Rig::new(1024);
        let (mut mem, frames) = rig.parts();
        let mut t = NestedPageTable::new(format, &mut mem, frames).unwrap();
        let mut rng = Lcg(42);
        let mut mapped: HashMap<u64, u64> = HashMap::new();
        while mapped.len() < 300 {
            let gpa = (rng.next() % (1 << 36)) & !0xfff;
            let hpa = (rng.next() % (1 << 40)) & !0xfff;
            if mapped.contains_key(&gpa) {
                assert_eq!(
                    t.map(&mut mem, frames, gpa, hpa, PageSize::Size4K, Perms::RW, MemType::Wb),
                    Err(HvError::AlreadyMapped { gpa })
                );
                continue;
            }
            t.map(&mut mem, frames, gpa, hpa, PageSize::Size4K, Perms::RW, MemType::Wb).unwrap();
            mapped.insert(gpa, hpa);
        }
        for (&gpa, &hpa) in &mapped {
            let off = rng.next() % PAGE_SIZE;
            let tr = t.translate(&mem, gpa + off).unwrap();
            assert_eq!(tr.hpa, hpa + off, "{format:?}");
            assert_eq!(tr.size, PageSize::Size4K);
            assert_eq!(tr.perms, Perms::RW);
            assert!(t.access(&mem, gpa, Access::Write).is_ok());
            assert!(matches!(t.access(&mem, gpa, Access::Execute), Err(WalkFault::PermissionDenied { .. })));
        }
        let mut misses = 0;
        for _ in 0..300 {
            let gpa = (rng.next() % (1 << 36)) & !0xfff;
            if !mapped.contains_key(&gpa) {
                assert!(matches!(t.translate(&mem, gpa), Err(WalkFault::NotPresent { .. })));
                misses += 1;
            }
        }
        assert!(misses > 250);

        // Invariant: table frames are distinct, come from the pool, and never alias a mapped page.
        let tables = table_frames(&t, &mem);
        let set: HashSet<u64> = tables.iter().copied().collect();
        assert_eq!(set.len(), tables.len(), "a table frame is referenced twice");
        assert_eq!(tables.len() as u64, frames.used(), "every allocated frame is reachable");
        for f in &tables {
            assert!(frames.is_allocated(*f));
            assert!(!mapped.values().any(|h| h == f));
        }

        // Unmap everything: all tables but the root are freed.
        for (&gpa, &hpa) in &mapped {
            assert_eq!(t.unmap(&mut mem, frames, gpa).unwrap(), (hpa, PageSize::Size4K));
            assert!(matches!(t.translate(&mem, gpa), Err(WalkFault::NotPresent { .. })));
        }
        assert_eq!(frames.used(), 1, "{format:?}: only the root remains");
        assert_eq!(t.unmap(&mut mem, frames, 0x5000), Err(HvError::NotMapped { gpa: 0x5000 }));
        assert_eq!(t.destroy(&mut mem, frames).unwrap(), 1);
        assert_eq!(frames.used(), 0);
    }
}

#[test]
fn large_pages_translate_inside_and_block_smaller_maps() {
    for format in [Format::Ept, Format::Npt] {
        let mut rig = Rig::new(32);
        let (mut mem, frames) = rig.parts();
        let mut t = NestedPageTable::new(format, &mut mem, frames).unwrap();
        t.map(&mut mem, frames, 0x4000_0000, 0x1_4000_0000, PageSize::Size1G, Perms::RWX, MemType::Wb).unwrap();
        t.map(&mut mem, frames, 0x20_0000, 0x60_0000, PageSize::Size2M, Perms::RX, MemType::Wb).unwrap();
        let tr = t.translate(&mem, 0x4123_4567).unwrap();
        assert_eq!((tr.hpa, tr.size), (0x1_4123_4567, PageSize::Size1G));
        let tr = t.translate(&mem, 0x3f_fff8).unwrap();
        assert_eq!((tr.hpa, tr.size, tr.perms), (0x7f_fff8, PageSize::Size2M, Perms::RX));
        assert_eq!(
            t.map(&mut mem, frames, 0x4000_1000, 0x1000, PageSize::Size4K, Perms::R, MemType::Wb),
            Err(HvError::AlreadyMapped { gpa: 0x4000_1000 })
        );
        // removing one 4 KiB page inside the 1 GiB page splits it (1G -> 2M -> 4K)
        let before = frames.used();
        assert_eq!(t.unmap(&mut mem, frames, 0x4000_1000).unwrap(), (0x1_4000_1000, PageSize::Size4K));
        assert_eq!(frames.used(), before + 2);
        assert!(t.translate(&mem, 0x4000_1000).is_err());
        let tr = t.translate(&mem, 0x4000_0fff).unwrap();
        assert_eq!((tr.hpa, tr.size, tr.perms), (0x1_4000_0fff, PageSize::Size4K, Perms::RWX));
        let tr = t.translate(&mem, 0x4000_2000).unwrap();
        assert_eq!((tr.hpa, tr.size), (0x1_4000_2000, PageSize::Size4K));
        let tr = t.translate(&mem, 0x4020_0000).unwrap();
        assert_eq!((tr.hpa, tr.size), (0x1_4020_0000, PageSize::Size2M));
        let tr = t.translate(&mem, 0x7fff_ffff).unwrap();
        assert_eq!((tr.hpa, tr.size), (0x1_7fff_ffff, PageSize::Size2M));
        // re-map the hole, then remove a whole 2 MiB leaf
        t.map(&mut mem, frames, 0x4000_1000, 0x5000, PageSize::Size4K, Perms::R, MemType::Wb).unwrap();
        assert_eq!(t.translate(&mem, 0x4000_1234).unwrap().hpa, 0x5234);
        assert_eq!(t.unmap(&mut mem, frames, 0x4020_0000).unwrap(), (0x1_4020_0000, PageSize::Size2M));
        assert!(t.translate(&mem, 0x4020_0000).is_err());
        assert!(matches!(t.unmap(&mut mem, frames, 0x4000_1800), Err(HvError::Misaligned { .. })));
    }
}

#[test]
fn map_range_uses_large_pages_when_aligned() {
    let mut rig = Rig::new(32);
    let (mut mem, frames) = rig.parts();
    let mut t = NestedPageTable::new(Format::Ept, &mut mem, frames).unwrap();
    // 4 KiB head, 2 MiB body, 1 GiB, 4 KiB tail
    let start = 0x3fdf_f000u64;
    let len = 0x8000_1000 - start;
    t.map_range(&mut mem, frames, start, start, len, Perms::RW, MemType::Wb).unwrap();
    assert_eq!(t.translate(&mem, 0x3fdf_f000).unwrap().size, PageSize::Size4K);
    assert_eq!(t.translate(&mem, 0x3fe0_0000).unwrap().size, PageSize::Size2M);
    assert_eq!(t.translate(&mem, 0x4000_0000).unwrap().size, PageSize::Size1G);
    assert_eq!(t.translate(&mem, 0x8000_0000).unwrap().size, PageSize::Size4K);
    assert!(t.translate(&mem, 0x8000_1000).is_err());
    assert!(t.translate(&mem, 0x3fdf_e000).is_err());
    assert!(frames.used() <= 6, "used {} table frames", frames.used());
}

#[test]
fn protect_changes_permissions() {
    for format in [Format::Ept, Format::Npt] {
        let mut rig = Rig::new(16);
        let (mut mem, frames) = rig.parts();
        let mut t = NestedPageTable::new(format, &mut mem, frames).unwrap();
        t.map(&mut mem, frames, 0x7000, 0x9000, PageSize::Size4K, Perms::RWX, MemType::Wb).unwrap();
        t.protect(&mut mem, frames, 0x7000, Perms::R).unwrap();
        let tr = t.translate(&mem, 0x7000).unwrap();
        assert_eq!((tr.hpa, tr.perms), (0x9000, Perms::R));
        assert!(matches!(t.access(&mem, 0x7010, Access::Write), Err(WalkFault::PermissionDenied { perms: Perms::R })));
        t.protect(&mut mem, frames, 0x7000, Perms::RX).unwrap();
        assert!(t.access(&mem, 0x7010, Access::Execute).is_ok());
        assert_eq!(t.protect(&mut mem, frames, 0x8000, Perms::R), Err(HvError::NotMapped { gpa: 0x8000 }));
        // a 4 KiB permission change inside a 2 MiB page splits it; the neighbours keep theirs
        t.map(&mut mem, frames, 0x20_0000, 0x80_0000, PageSize::Size2M, Perms::RW, MemType::Wb).unwrap();
        t.protect(&mut mem, frames, 0x20_3000, Perms::R).unwrap();
        assert_eq!(t.translate(&mem, 0x20_3000).unwrap().perms, Perms::R);
        assert_eq!(t.translate(&mem, 0x20_3000).unwrap().hpa, 0x80_3000);
        assert_eq!(t.translate(&mem, 0x20_2000).unwrap().perms, Perms::RW);
        assert_eq!(t.translate(&mem, 0x3f_f000).unwrap().perms, Perms::RW);
        assert_eq!(t.translate(&mem, 0x3f_f000).unwrap().size, PageSize::Size4K);
    }
}

#[test]
fn bad_inputs_are_refused() {
    let mut rig = Rig::new(16);
    let (mut mem, frames) = rig.parts();
    let mut ept = NestedPageTable::new(Format::Ept, &mut mem, frames).unwrap();
    let mut npt = NestedPageTable::new(Format::Npt, &mut mem, frames).unwrap();
    let r = ept.map(&mut mem, frames, 0x1800, 0x2000, PageSize::Size4K, Perms::R, MemType::Wb);
    assert!(matches!(r, Err(HvError::Misaligned { what: "guest-physical address", .. })));
    let r = ept.map(&mut mem, frames, 0x20_0000, 0x1000, PageSize::Size2M, Perms::R, MemType::Wb);
    assert!(matches!(r, Err(HvError::Misaligned { what: "host-physical address", .. })));
    let r = ept.map(&mut mem, frames, 0x1000, 0x2000, PageSize::Size4K, Perms::W, MemType::Wb);
    assert!(matches!(r, Err(HvError::InvalidPermissions { .. })), "EPT write-only is a misconfiguration");
    let r = ept.map(&mut mem, frames, 0x1000, 0x2000, PageSize::Size4K, Perms::NONE, MemType::Wb);
    assert!(matches!(r, Err(HvError::InvalidPermissions { .. })));
    ept.map(&mut mem, frames, 0x1000, 0x2000, PageSize::Size4K, Perms::X, MemType::Wb).unwrap(); // execute-only is fine on EPT
    let r = npt.map(&mut mem, frames, 0x1000, 0x2000, PageSize::Size4K, Perms::X, MemType::Wb);
    assert!(matches!(r, Err(HvError::InvalidPermissions { .. })), "NPT cannot express execute-only");
    let r = npt.map(&mut mem, frames, 1 << 48, 0x2000, PageSize::Size4K, Perms::R, MemType::Wb);
    assert!(matches!(r, Err(HvError::InvalidRange { .. })));
}

#[test]
fn table_frame_exhaustion_is_an_error_not_a_panic() {
    let mut rig = Rig::new(3);
    let (mut mem, frames) = rig.parts();
    let mut t = NestedPageTable::new(Format::Ept, &mut mem, frames).unwrap();
    let r = t.map(&mut mem, frames, 0x1000, 0x2000, PageSize::Size4K, Perms::R, MemType::Wb);
    assert_eq!(r, Err(HvError::OutOfFrames { pool: "pool", capacity: 3 }));
    assert!(t.translate(&mem, 0x1000).is_err());
    // 1 GiB leaves need only a PDPT
    t.map(&mut mem, frames, 0x4000_0000, 0x4000_0000, PageSize::Size1G, Perms::R, MemType::Wb).unwrap();
}
