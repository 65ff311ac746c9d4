//! Physical memory: the memory map the driver hands over, the reserved region (hypervisor +
//! enclave page cache) carved out of it with `memmap=`, byte access to physical frames, and a
//! bitmap frame allocator.

use crate::error::{HvError, HvResult};

pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_2M: u64 = 2 << 20;
pub const PAGE_1G: u64 = 1 << 30;

/// Kind of a memory-map range, as the driver reports it (e820 / /proc/iomem).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemKind {
    /// "System RAM" (write-back).
    Ram,
    /// Firmware-reserved, ACPI tables/NVS, and `memmap=$` carve-outs (write-back).
    Reserved,
    /// Device MMIO (uncacheable).
    Mmio,
}

/// One memory-map range: `[start, start + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRange {
    pub start: u64,
    pub size: u64,
    pub kind: MemKind,
}

impl MemRange {
    pub const fn new(start: u64, size: u64, kind: MemKind) -> Self {
        Self { start, size, kind }
    }
    pub const fn end(&self) -> u64 {
        self.start + self.size
    }
    pub const fn contains(&self, pa: u64) -> bool {
        pa >= self.start && pa < self.start + self.size
    }
    pub const fn overlaps(&self, start: u64, size: u64) -> bool {
        start < self.end() && self.start < start + size
    }
}

/// The region the driver reserved at boot (`memmap=SIZE$BASE`): the hypervisor image and its
/// frame pool first, then the enclave page cache (the convertible memory region enclaves use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedRegion {
    pub base: u64,
    /// Bytes for the hypervisor: image + page-table frame pool.
    pub hypervisor_size: u64,
    /// Bytes of the image at the start of the hypervisor part; the pool follows it.
    pub image_size: u64,
    /// Bytes of enclave page cache after the hypervisor part.
    pub epc_size: u64,
}

impl ReservedRegion {
    pub fn validate(&self) -> HvResult<()> {
        for (what, v) in [
            ("reserved base", self.base),
            ("hypervisor size", self.hypervisor_size),
            ("image size", self.image_size),
            ("EPC size", self.epc_size),
        ] {
            if v % PAGE_SIZE != 0 {
                return Err(HvError::Misaligned { what, value: v, align: PAGE_SIZE });
            }
        }
        if self.epc_size == 0 || self.hypervisor_size <= self.image_size {
            return Err(HvError::InvalidRange { what: "reserved region", start: self.base, size: self.total() });
        }
        if self.base.checked_add(self.hypervisor_size).and_then(|x| x.checked_add(self.epc_size)).is_none() {
            return Err(HvError::InvalidRange { what: "reserved region", start: self.base, size: u64::MAX });
        }
        Ok(())
    }
    pub const fn total(&self) -> u64 {
        self.hypervisor_size + self.epc_size
    }
    pub const fn hypervisor_range(&self) -> MemRange {
        MemRange::new(self.base, self.hypervisor_size, MemKind::Reserved)
    }
    /// Frame pool for page tables: the hypervisor part after the image.
    pub const fn pool_range(&self) -> MemRange {
        MemRange::new(self.base + self.image_size, self.hypervisor_size - self.image_size, MemKind::Reserved)
    }
    /// Enclave page cache: the convertible memory region.
    pub const fn epc_range(&self) -> MemRange {
        MemRange::new(self.base + self.hypervisor_size, self.epc_size, MemKind::Reserved)
    }
    pub const fn contains(&self, pa: u64) -> bool {
        pa >= self.base && pa < self.base + self.total()
    }
}

impl ReservedRegion {
    /// Splits a reservation of `total` bytes at `base` (what `memmap=` carved) into the
    /// hypervisor part (`hypervisor_size`, the image first) and the EPC (the rest).
    pub fn split(base: u64, total: u64, hypervisor_size: u64, image_size: u64) -> HvResult<Self> {
        if hypervisor_size >= total {
            return Err(HvError::InvalidRange { what: "hypervisor part larger than the reservation", start: base, size: total });
        }
        let r = ReservedRegion { base, hypervisor_size, image_size, epc_size: total - hypervisor_size };
        r.validate()?;
        Ok(r)
    }
}

/// Parses one `memmap=SIZE$BASE` kernel argument (the value, with or without `memmap=`; sizes
/// take K/M/G suffixes, numbers may be hex `0x…`). Returns (base, size).
pub fn parse_memmap_arg(arg: &str) -> HvResult<(u64, u64)> {
    let bad = HvError::InvalidRange { what: "memmap= argument (expected SIZE$BASE)", start: 0, size: arg.len() as u64 };
    let v = arg.trim().strip_prefix("memmap=").unwrap_or(arg.trim());
    let (size, base) = v.split_once('$').ok_or(bad)?;
    let num = |t: &str| -> Option<u64> {
        let t = t.trim();
        let (digits, mult) = match t.as_bytes().last()? {
            b'K' | b'k' => (&t[..t.len() - 1], 1u64 << 10),
            b'M' | b'm' => (&t[..t.len() - 1], 1 << 20),
            b'G' | b'g' => (&t[..t.len() - 1], 1 << 30),
            _ => (t, 1),
        };
        let n = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).ok()?,
            None => digits.parse::<u64>().ok()?,
        };
        n.checked_mul(mult)
    };
    let (size, base) = (num(size).ok_or(bad)?, num(base).ok_or(bad)?);
    if size == 0 || base.checked_add(size).is_none() {
        return Err(HvError::InvalidRange { what: "memmap= argument", start: base, size });
    }
    Ok((base, size))
}

/// Byte access to physical memory. On the host (tests, emulated service) it is a buffer that
/// stands for a physical range; on bare metal it is the identity-mapped RAM.
pub trait PhysMem {
    fn read(&self, pa: u64, buf: &mut [u8]) -> HvResult<()>;
    fn write(&mut self, pa: u64, data: &[u8]) -> HvResult<()>;

    fn read_u64(&self, pa: u64) -> HvResult<u64> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write_u64(&mut self, pa: u64, v: u64) -> HvResult<()> {
        self.write(pa, &v.to_le_bytes())
    }
    fn zero(&mut self, pa: u64, len: u64) -> HvResult<()> {
        let z = [0u8; 256];
        let mut off = 0;
        while off < len {
            let n = core::cmp::min(256, len - off);
            let at = pa.checked_add(off).ok_or(HvError::PhysOutOfRange { pa, len })?;
            self.write(at, &z[..n as usize])?;
            off += n;
        }
        Ok(())
    }
}

/// A byte slice standing for the physical range `[base, base + bytes.len())`.
pub struct SliceMem<'a> {
    pub base: u64,
    pub bytes: &'a mut [u8],
}

impl<'a> SliceMem<'a> {
    pub fn new(base: u64, bytes: &'a mut [u8]) -> Self {
        Self { base, bytes }
    }
    fn offset(&self, pa: u64, len: usize) -> HvResult<usize> {
        let err = HvError::PhysOutOfRange { pa, len: len as u64 };
        let off = pa.checked_sub(self.base).ok_or(err)?;
        let end = off.checked_add(len as u64).ok_or(err)?;
        if end > self.bytes.len() as u64 {
            return Err(err);
        }
        Ok(off as usize)
    }
    /// Borrow bytes of a physical range (e.g. to hand enclave pages to a VM runner).
    pub fn slice(&self, pa: u64, len: usize) -> HvResult<&[u8]> {
        let off = self.offset(pa, len)?;
        Ok(&self.bytes[off..off + len])
    }
}

impl PhysMem for SliceMem<'_> {
    fn read(&self, pa: u64, buf: &mut [u8]) -> HvResult<()> {
        let off = self.offset(pa, buf.len())?;
        buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
        Ok(())
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> HvResult<()> {
        let off = self.offset(pa, data.len())?;
        self.bytes[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// Physical memory reached through a linear mapping: virtual = physical + `delta` (the
/// bare-metal hypervisor's direct map). Accesses outside `range` are refused.
pub struct DirectMem {
    delta: u64,
    range: MemRange,
}

impl DirectMem {
    /// # Safety
    /// For every physical address in `range`, `pa + delta` (wrapping) must be valid for reads
    /// and writes for as long as this value lives, and no Rust reference may alias it.
    pub unsafe fn new(delta: u64, range: MemRange) -> Self {
        DirectMem { delta, range }
    }
    fn ptr(&self, pa: u64, len: usize) -> HvResult<*mut u8> {
        let end = pa.checked_add(len as u64).ok_or(HvError::PhysOutOfRange { pa, len: len as u64 })?;
        if pa < self.range.start || end > self.range.end() {
            return Err(HvError::PhysOutOfRange { pa, len: len as u64 });
        }
        Ok(pa.wrapping_add(self.delta) as usize as *mut u8)
    }
}

impl PhysMem for DirectMem {
    fn read(&self, pa: u64, buf: &mut [u8]) -> HvResult<()> {
        let p = self.ptr(pa, buf.len())?;
        // SAFETY: in range, and the constructor's contract makes it valid and unaliased.
        unsafe { core::ptr::copy_nonoverlapping(p as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> HvResult<()> {
        let p = self.ptr(pa, data.len())?;
        // SAFETY: as above.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }
}

/// Where page-table frames come from.
pub trait FrameSource {
    fn alloc_frame(&mut self) -> HvResult<u64>;
    fn free_frame(&mut self, pa: u64) -> HvResult<()>;
}

/// Bitmap allocator over `[base, base + frames * 4 KiB)`; capacity `WORDS * 64` frames.
/// Exhaustion is `HvError::OutOfFrames`, never a panic.
pub struct FrameAllocator<const WORDS: usize> {
    pool: &'static str,
    base: u64,
    frames: u64,
    used: u64,
    hint: usize,
    bits: [u64; WORDS],
}

impl<const WORDS: usize> FrameAllocator<WORDS> {
    /// Covers `range` (page-aligned); frames beyond `WORDS * 64` are not managed.
    pub fn new(pool: &'static str, range: MemRange) -> HvResult<Self> {
        if !range.start.is_multiple_of(PAGE_SIZE) || !range.size.is_multiple_of(PAGE_SIZE) {
            return Err(HvError::Misaligned { what: "frame pool", value: range.start | range.size, align: PAGE_SIZE });
        }
        let frames = core::cmp::min(range.size / PAGE_SIZE, (WORDS * 64) as u64);
        if frames == 0 {
            return Err(HvError::InvalidRange { what: "frame pool", start: range.start, size: range.size });
        }
        Ok(Self { pool, base: range.start, frames, used: 0, hint: 0, bits: [0; WORDS] })
    }
    pub fn capacity(&self) -> u64 {
        self.frames
    }
    pub fn used(&self) -> u64 {
        self.used
    }
    pub fn free_count(&self) -> u64 {
        self.frames - self.used
    }
    pub fn base(&self) -> u64 {
        self.base
    }
    pub fn contains(&self, pa: u64) -> bool {
        pa >= self.base && pa < self.base + self.frames * PAGE_SIZE
    }
    pub fn is_allocated(&self, pa: u64) -> bool {
        if !self.contains(pa) || !pa.is_multiple_of(PAGE_SIZE) {
            return false;
        }
        let i = ((pa - self.base) / PAGE_SIZE) as usize;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }
    pub fn alloc(&mut self) -> HvResult<u64> {
        let words = self.frames.div_ceil(64) as usize;
        for k in 0..words {
            let w = (self.hint + k) % words;
            let mut free = !self.bits[w];
            if w == words - 1 && !self.frames.is_multiple_of(64) {
                free &= (1u64 << (self.frames % 64)) - 1;
            }
            if free != 0 {
                let b = free.trailing_zeros() as usize;
                self.bits[w] |= 1 << b;
                self.used += 1;
                self.hint = w;
                return Ok(self.base + ((w * 64 + b) as u64) * PAGE_SIZE);
            }
        }
        Err(HvError::OutOfFrames { pool: self.pool, capacity: self.frames })
    }
    pub fn free(&mut self, pa: u64) -> HvResult<()> {
        if !self.is_allocated(pa) {
            return Err(HvError::FrameNotAllocated { pa });
        }
        let i = ((pa - self.base) / PAGE_SIZE) as usize;
        self.bits[i / 64] &= !(1 << (i % 64));
        self.used -= 1;
        Ok(())
    }
}

impl<const WORDS: usize> FrameSource for FrameAllocator<WORDS> {
    fn alloc_frame(&mut self) -> HvResult<u64> {
        self.alloc()
    }
    fn free_frame(&mut self, pa: u64) -> HvResult<()> {
        self.free(pa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::collections::HashSet;

    #[test]
    fn allocator_hands_out_distinct_frames_then_reports_exhaustion() {
        let mut a = FrameAllocator::<2>::new("test", MemRange::new(0x10_0000, 100 * PAGE_SIZE, MemKind::Reserved)).unwrap();
        assert_eq!(a.capacity(), 100);
        let mut seen = HashSet::new();
        for _ in 0..100 {
            let f = a.alloc().unwrap();
            assert!(f.is_multiple_of(PAGE_SIZE) && a.contains(f));
            assert!(seen.insert(f), "frame {f:#x} handed out twice");
        }
        let err = a.alloc().unwrap_err();
        assert_eq!(err, HvError::OutOfFrames { pool: "test", capacity: 100 });
        assert_eq!(std::format!("{err}"), "test exhausted: all 100 pages in use");
        let some = *seen.iter().next().unwrap();
        a.free(some).unwrap();
        assert_eq!(a.free(some), Err(HvError::FrameNotAllocated { pa: some }));
        assert_eq!(a.alloc().unwrap(), some);
        assert_eq!(a.free(0x1234), Err(HvError::FrameNotAllocated { pa: 0x1234 }));
    }

    #[test]
    fn allocator_capacity_is_clamped_to_bitmap() {
        let a = FrameAllocator::<1>::new("t", MemRange::new(0, 1000 * PAGE_SIZE, MemKind::Ram)).unwrap();
        assert_eq!(a.capacity(), 64);
        assert!(FrameAllocator::<1>::new("t", MemRange::new(0x800, PAGE_SIZE, MemKind::Ram)).is_err());
        assert!(FrameAllocator::<1>::new("t", MemRange::new(0, 0, MemKind::Ram)).is_err());
    }

    #[test]
    fn reserved_region_layout_and_validation() {
        let r = ReservedRegion { base: 0x1_0000_0000, hypervisor_size: 32 << 20, image_size: 4 << 20, epc_size: 64 << 20 };
        r.validate().unwrap();
        assert_eq!(r.pool_range().start, 0x1_0040_0000);
        assert_eq!(r.epc_range().start, 0x1_0200_0000);
        assert_eq!(r.epc_range().end(), 0x1_0600_0000);
        assert!(r.contains(0x1_05ff_ffff) && !r.contains(0x1_0600_0000));
        let bad = ReservedRegion { base: 0x1000_0800, ..r };
        assert!(matches!(bad.validate(), Err(HvError::Misaligned { what: "reserved base", .. })));
        let bad = ReservedRegion { epc_size: 0, ..r };
        assert!(matches!(bad.validate(), Err(HvError::InvalidRange { .. })));
    }

    #[test]
    fn direct_mem_uses_the_linear_mapping_and_bounds() {
        let mut backing = std::vec![0u8; 3 * 4096];
        let phys = 0x7000_0000u64;
        let delta = (backing.as_mut_ptr() as u64).wrapping_sub(phys);
        {
            // SAFETY: the range maps exactly onto `backing`, untouched while `m` lives.
            let mut m = unsafe { DirectMem::new(delta, MemRange::new(phys, 3 * 4096, MemKind::Reserved)) };
            m.write_u64(phys + 4096, 0x1122_3344_5566_7788).unwrap();
            assert_eq!(m.read_u64(phys + 4096).unwrap(), 0x1122_3344_5566_7788);
            assert!(m.read_u64(phys - 8).is_err());
            assert!(m.write(phys + 3 * 4096 - 4, &[0; 8]).is_err());
            assert!(m.read_u64(u64::MAX - 3).is_err());
        }
        assert_eq!(&backing[4096..4104], &0x1122_3344_5566_7788u64.to_le_bytes());
    }

    #[test]
    fn memmap_argument_and_split() {
        assert_eq!(parse_memmap_arg("memmap=96M$0x180000000").unwrap(), (0x1_8000_0000, 96 << 20));
        assert_eq!(parse_memmap_arg("4G$4G").unwrap(), (4 << 30, 4 << 30));
        assert_eq!(parse_memmap_arg(" memmap=0x6000000$6144M ").unwrap(), (6 << 30, 0x600_0000));
        for bad in ["memmap=96M", "96M$", "$0x1000", "0M$0x1000", "12Q$0x1000", "0xfffffffffffffffff$1", "16E$1", "1G$0xffffffffffffffff"] {
            assert!(parse_memmap_arg(bad).is_err(), "{bad}");
        }
        let r = ReservedRegion::split(0x1_8000_0000, 96 << 20, 32 << 20, 4 << 20).unwrap();
        assert_eq!((r.epc_size, r.epc_range().start), (64 << 20, 0x1_8200_0000));
        assert!(ReservedRegion::split(0x1_8000_0000, 32 << 20, 32 << 20, 4 << 20).is_err());
        assert!(ReservedRegion::split(0x1_8000_0000, 96 << 20, 32 << 20, 0x800).is_err());
    }

    #[test]
    fn slice_mem_bounds() {
        let mut buf = [0u8; 8192];
        let mut m = SliceMem::new(0x4000, &mut buf);
        m.write_u64(0x4008, 0xdead_beef).unwrap();
        assert_eq!(m.read_u64(0x4008).unwrap(), 0xdead_beef);
        assert!(matches!(m.read_u64(0x3ff8), Err(HvError::PhysOutOfRange { .. })));
        assert!(matches!(m.write_u64(0x5ffc, 1), Err(HvError::PhysOutOfRange { .. })));
        m.zero(0x4000, 8192).unwrap();
        assert_eq!(m.read_u64(0x4008).unwrap(), 0);
    }
}
