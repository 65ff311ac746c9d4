//! Host demotion plan: the nested page tables the demoted Linux runs under. Everything the
//! memory map lists (RAM, firmware-reserved, MMIO) is identity-mapped, except the reserved
//! region (hypervisor + EPC, so every enclave page), which is absent: any host access there
//! is a nested fault the hypervisor sees.

use crate::error::{HvError, HvResult};
use crate::memory::{FrameSource, MemKind, MemRange, PhysMem, ReservedRegion, PAGE_SIZE};
use crate::paging::{Format, MemType, NestedPageTable, Perms};

/// Most memory-map ranges accepted (real e820 maps have a few dozen).
pub const MAX_MAP_RANGES: usize = hyperenclave_abi::sizes::MAX_MEMMAP_ENTRIES;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
    kind: MemKind,
}

/// What the host tables will contain: page-aligned, sorted, non-overlapping spans.
pub struct HostPlan {
    spans: [Span; MAX_MAP_RANGES + 1],
    len: usize,
}

impl HostPlan {
    /// Normalizes `map` (rounds ranges out to pages, sorts, trims overlaps: the earlier range
    /// keeps a shared page) and cuts out `reserved`, which must lie in RAM/reserved ranges.
    pub fn new(map: &[MemRange], reserved: &ReservedRegion) -> HvResult<Self> {
        if map.len() > MAX_MAP_RANGES {
            return Err(HvError::InvalidRange { what: "memory map (too many ranges)", start: 0, size: map.len() as u64 });
        }
        let mut plan = HostPlan { spans: [Span { start: 0, end: 0, kind: MemKind::Ram }; MAX_MAP_RANGES + 1], len: 0 };
        for r in map {
            let end = r.start.checked_add(r.size).filter(|&e| e <= 1 << 52 && r.size > 0);
            let Some(end) = end else {
                return Err(HvError::InvalidRange { what: "memory map range", start: r.start, size: r.size });
            };
            let s = Span { start: r.start & !(PAGE_SIZE - 1), end: (end + PAGE_SIZE - 1) & !(PAGE_SIZE - 1), kind: r.kind };
            // insertion sort by start
            let mut i = plan.len;
            while i > 0 && plan.spans[i - 1].start > s.start {
                plan.spans[i] = plan.spans[i - 1];
                i -= 1;
            }
            plan.spans[i] = s;
            plan.len += 1;
        }
        // trim overlaps
        let mut out = 0;
        let mut cur_end = 0u64;
        for i in 0..plan.len {
            let mut s = plan.spans[i];
            if s.start < cur_end {
                s.start = cur_end;
            }
            if s.start >= s.end {
                continue;
            }
            cur_end = s.end;
            plan.spans[out] = s;
            out += 1;
        }
        plan.len = out;

        // the reserved region must be covered by RAM/reserved spans, never MMIO
        let (rs, re) = (reserved.base, reserved.base + reserved.total());
        let mut covered = 0u64;
        for s in plan.spans() {
            let (a, b) = (s.start.max(rs), s.end.min(re));
            if a < b {
                if s.kind == MemKind::Mmio {
                    return Err(HvError::InvalidRange { what: "reserved region overlaps MMIO", start: rs, size: re - rs });
                }
                covered += b - a;
            }
        }
        if covered != re - rs {
            return Err(HvError::InvalidRange { what: "reserved region not inside the memory map's RAM", start: rs, size: re - rs });
        }

        // cut the reserved region out (may split one span in two)
        let mut i = 0;
        while i < plan.len {
            let s = plan.spans[i];
            if s.end <= rs || s.start >= re {
                i += 1;
                continue;
            }
            let before = Span { end: rs, ..s };
            let after = Span { start: re, ..s };
            let mut parts = [before; 2];
            let mut n = 0;
            if before.start < before.end {
                parts[n] = before;
                n += 1;
            }
            if after.start < after.end {
                parts[n] = after;
                n += 1;
            }
            // replace span i with `parts`
            if n == 0 {
                plan.spans.copy_within(i + 1..plan.len, i);
                plan.len -= 1;
            } else {
                plan.spans[i] = parts[0];
                if n == 2 {
                    plan.spans.copy_within(i + 1..plan.len, i + 2);
                    plan.spans[i + 1] = parts[1];
                    plan.len += 1;
                    i += 1;
                }
                i += 1;
            }
        }
        Ok(plan)
    }

    fn spans(&self) -> impl Iterator<Item = &Span> {
        self.spans[..self.len].iter()
    }

    /// (start, size, kind) of each identity-mapped span.
    pub fn ranges(&self) -> impl Iterator<Item = MemRange> + '_ {
        self.spans().map(|s| MemRange::new(s.start, s.end - s.start, s.kind))
    }

    pub fn is_mapped(&self, pa: u64) -> bool {
        self.spans().any(|s| pa >= s.start && pa < s.end)
    }

    /// Builds the tables: RAM/reserved write-back RWX, MMIO uncacheable RW, largest pages.
    pub fn build(&self, format: Format, mem: &mut impl PhysMem, frames: &mut impl FrameSource) -> HvResult<NestedPageTable> {
        let mut t = NestedPageTable::new(format, mem, frames)?;
        for s in self.spans() {
            let (perms, mt) = match s.kind {
                MemKind::Mmio => (Perms::RW, MemType::Uc),
                _ => (Perms::RWX, MemType::Wb),
            };
            if let Err(e) = t.map_range(mem, frames, s.start, s.start, s.end - s.start, perms, mt) {
                t.destroy(mem, frames)?;
                return Err(e);
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{FrameAllocator, SliceMem};
    use crate::paging::{Access, PageSize, WalkFault};
    extern crate std;
    use std::vec;

    const GIB: u64 = 1 << 30;

    /// A realistic 8 GiB e820 map (QEMU-like), with the planner's reservation at 6 GiB.
    fn map() -> [MemRange; 7] {
        [
            MemRange::new(0, 0x9fc00, MemKind::Ram),
            MemRange::new(0x9fc00, 0x400, MemKind::Reserved),
            MemRange::new(0xf0000, 0x10000, MemKind::Reserved),
            MemRange::new(0x10_0000, 0xbff0_0000 - 0x10_0000, MemKind::Ram),
            MemRange::new(0xfec0_0000, 0x1000, MemKind::Mmio),
            MemRange::new(0xfee0_0000, 0x1000, MemKind::Mmio),
            MemRange::new(0x1_0000_0000, 4 * GIB, MemKind::Ram),
        ]
    }

    fn reserved() -> ReservedRegion {
        ReservedRegion { base: 6 * GIB, hypervisor_size: 32 << 20, image_size: 4 << 20, epc_size: 64 << 20 }
    }

    #[test]
    fn host_tables_map_everything_but_the_reserved_region() {
        let r = reserved();
        let plan = HostPlan::new(&map(), &r).unwrap();
        let pool = r.pool_range();
        let mut buf = vec![0u8; 256 * 4096];
        let mut mem = SliceMem::new(pool.start, &mut buf);
        let mut frames = FrameAllocator::<4>::new("hypervisor", MemRange::new(pool.start, 256 * 4096, MemKind::Reserved)).unwrap();
        for format in [Format::Ept, Format::Npt] {
            let t = plan.build(format, &mut mem, &mut frames).unwrap();
            // identity for RAM, MMIO and firmware ranges
            for pa in [0u64, 0x9f000, 0x9fc00, 0xf5000, 0x10_0000, 0xbfef_f000, 0x1_0000_0000, 6 * GIB - 8, 6 * GIB + (96 << 20), 8 * GIB - 1] {
                let tr = t.translate(&mem, pa).unwrap_or_else(|e| panic!("{pa:#x}: {e:?}"));
                assert_eq!(tr.hpa, pa);
            }
            let apic = t.translate(&mem, 0xfee0_0000).unwrap();
            assert_eq!(apic.mem_type, MemType::Uc);
            assert!(matches!(t.access(&mem, 0xfee0_0000, Access::Execute), Err(WalkFault::PermissionDenied { .. })));
            // the hypervisor and every EPC page are absent
            let mut pa = r.base;
            while pa < r.base + r.total() {
                assert!(matches!(t.translate(&mem, pa), Err(WalkFault::NotPresent { .. })), "{pa:#x} visible");
                pa += PAGE_SIZE;
            }
            // holes in the map are absent too
            assert!(t.translate(&mem, 0xc000_0000).is_err());
            assert!(t.translate(&mem, 8 * GIB).is_err());
            // large pages keep the table small
            assert_eq!(t.translate(&mem, GIB).unwrap().size, PageSize::Size1G);
            let mut n = 0;
            t.for_each_table(&mem, &mut |_, _| n += 1).unwrap();
            assert!(n < 20, "{n} table frames for 8 GiB");
            t.destroy(&mut mem, &mut frames).unwrap();
            assert_eq!(frames.used(), 0);
        }
    }

    #[test]
    fn bad_maps_are_refused() {
        let r = reserved();
        // reservation in a hole
        let bad = ReservedRegion { base: 0xc000_0000, ..r };
        assert!(matches!(HostPlan::new(&map(), &bad), Err(HvError::InvalidRange { what: "reserved region not inside the memory map's RAM", .. })));
        // reservation over MMIO
        let mut m = map();
        m[6] = MemRange::new(0x1_0000_0000, 4 * GIB, MemKind::Mmio);
        assert!(matches!(HostPlan::new(&m, &r), Err(HvError::InvalidRange { what: "reserved region overlaps MMIO", .. })));
        let big = [MemRange::new(0, 4096, MemKind::Ram); MAX_MAP_RANGES + 1];
        assert!(HostPlan::new(&big, &r).is_err());
        let m = [MemRange::new(u64::MAX - 10, 100, MemKind::Ram)];
        assert!(HostPlan::new(&m, &r).is_err());
    }

    #[test]
    fn overlapping_and_unaligned_ranges_are_normalized() {
        let r = ReservedRegion { base: 0x100_0000, hypervisor_size: 0x10_0000, image_size: 0x1000, epc_size: 0x10_0000 };
        let m = [
            MemRange::new(0x80_0000, 0x180_0000, MemKind::Ram),
            MemRange::new(0x0, 0x9fc00, MemKind::Ram),
            MemRange::new(0x9f800, 0x800, MemKind::Reserved), // shares page 0x9f000
            MemRange::new(0x90_0000, 0x1000, MemKind::Ram),    // inside the first
        ];
        let plan = HostPlan::new(&m, &r).unwrap();
        let v: std::vec::Vec<MemRange> = plan.ranges().collect();
        assert_eq!(
            v,
            [
                MemRange::new(0, 0xa0000, MemKind::Ram),
                MemRange::new(0x80_0000, 0x80_0000, MemKind::Ram),
                MemRange::new(0x120_0000, 0xe0_0000, MemKind::Ram),
            ]
        );
        assert!(plan.is_mapped(0x9ffff) && !plan.is_mapped(0x100_0000) && plan.is_mapped(0x120_0000));
    }
}
