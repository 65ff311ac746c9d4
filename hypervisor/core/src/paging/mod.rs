//! Nested page tables in the real x86-64 formats: Intel EPT and AMD NPT (long-mode PTEs).
//! Four levels (PML4 → PDPT → PD → PT), 4 KiB / 2 MiB / 1 GiB leaves. Tables live in frames
//! reached through `PhysMem` and allocated from a `FrameSource`.

pub mod ept;
pub mod npt;

use crate::error::{HvError, HvResult};
use crate::memory::{FrameSource, PhysMem, PAGE_1G, PAGE_2M, PAGE_SIZE};

/// Which hardware entry format the tables use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Intel VT-x extended page tables.
    Ept,
    /// AMD-V nested paging (also Hygon): ordinary long-mode page-table entries.
    Npt,
}

/// Access permissions, same bit values as SGX SECINFO: R = 1, W = 2, X = 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms(pub u8);

impl Perms {
    pub const R: Perms = Perms(1);
    pub const W: Perms = Perms(2);
    pub const X: Perms = Perms(4);
    pub const RW: Perms = Perms(3);
    pub const RX: Perms = Perms(5);
    pub const RWX: Perms = Perms(7);
    pub const NONE: Perms = Perms(0);
    pub const fn has(self, p: Perms) -> bool {
        self.0 & p.0 == p.0
    }
}

/// Memory type (EPT encodings; NPT approximates with PWT/PCD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    Uc = 0,
    Wc = 1,
    Wt = 4,
    Wp = 5,
    Wb = 6,
}

impl MemType {
    fn from_bits(b: u64) -> MemType {
        match b {
            0 => MemType::Uc,
            1 => MemType::Wc,
            4 => MemType::Wt,
            5 => MemType::Wp,
            _ => MemType::Wb,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    Size4K,
    Size2M,
    Size1G,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_SIZE,
            PageSize::Size2M => PAGE_2M,
            PageSize::Size1G => PAGE_1G,
        }
    }
    /// Table level that holds a leaf of this size (1 = PT, 2 = PD, 3 = PDPT).
    const fn level(self) -> u32 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
    fn from_level(level: u32) -> PageSize {
        match level {
            1 => PageSize::Size4K,
            2 => PageSize::Size2M,
            _ => PageSize::Size1G,
        }
    }
}

/// Kind of access, for permission checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Execute,
}

impl Access {
    pub const fn perm(self) -> Perms {
        match self {
            Access::Read => Perms::R,
            Access::Write => Perms::W,
            Access::Execute => Perms::X,
        }
    }
}

/// Result of a successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub hpa: u64,
    pub perms: Perms,
    pub size: PageSize,
    pub mem_type: MemType,
}

/// Why a walk or access faulted (EPT violation / nested page fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// No present entry at `level` (4 = PML4 … 1 = PT).
    NotPresent { level: u32 },
    /// Mapped, but the access kind is not permitted.
    PermissionDenied { perms: Perms },
}

pub(crate) const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const ENTRIES: u64 = 512;

/// Encoding of one format's entries.
pub(crate) trait EntryCodec {
    fn table(pa: u64) -> u64;
    fn leaf(hpa: u64, perms: Perms, mt: MemType, size: PageSize) -> u64;
    fn present(e: u64) -> bool;
    fn is_large(e: u64, level: u32) -> bool;
    fn perms(e: u64) -> Perms;
    fn mem_type(e: u64) -> MemType;
    fn with_perms(e: u64, perms: Perms) -> u64;
    fn check_perms(perms: Perms) -> HvResult<()>;
}

fn index(gpa: u64, level: u32) -> u64 {
    (gpa >> (12 + 9 * (level - 1))) & (ENTRIES - 1)
}

/// A four-level nested page table rooted at one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedPageTable {
    format: Format,
    root: u64,
}

macro_rules! with_codec {
    ($fmt:expr, $C:ident => $body:expr) => {
        match $fmt {
            Format::Ept => {
                type $C = ept::Ept;
                $body
            }
            Format::Npt => {
                type $C = npt::Npt;
                $body
            }
        }
    };
}

impl NestedPageTable {
    /// Allocates and zeroes the root (PML4) frame.
    pub fn new(format: Format, mem: &mut impl PhysMem, frames: &mut impl FrameSource) -> HvResult<Self> {
        let root = frames.alloc_frame()?;
        if let Err(e) = mem.zero(root, PAGE_SIZE) {
            frames.free_frame(root)?;
            return Err(e);
        }
        Ok(Self { format, root })
    }

    pub fn format(&self) -> Format {
        self.format
    }
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The value the CPU is given: the EPTP (WB walks, 4 levels) or nCR3.
    pub fn pointer(&self) -> u64 {
        match self.format {
            Format::Ept => ept::eptp(self.root),
            Format::Npt => self.root,
        }
    }

    /// Maps one page. Fails if anything is already mapped there or inputs are misaligned.
    #[allow(clippy::too_many_arguments)]
    pub fn map(
        &mut self,
        mem: &mut impl PhysMem,
        frames: &mut impl FrameSource,
        gpa: u64,
        hpa: u64,
        size: PageSize,
        perms: Perms,
        mt: MemType,
    ) -> HvResult<()> {
        with_codec!(self.format, C => self.map_with::<C>(mem, frames, gpa, hpa, size, perms, mt))
    }

    #[allow(clippy::too_many_arguments)]
    fn map_with<C: EntryCodec>(
        &mut self,
        mem: &mut impl PhysMem,
        frames: &mut impl FrameSource,
        gpa: u64,
        hpa: u64,
        size: PageSize,
        perms: Perms,
        mt: MemType,
    ) -> HvResult<()> {
        let align = size.bytes();
        if !gpa.is_multiple_of(align) {
            return Err(HvError::Misaligned { what: "guest-physical address", value: gpa, align });
        }
        if !hpa.is_multiple_of(align) {
            return Err(HvError::Misaligned { what: "host-physical address", value: hpa, align });
        }
        if hpa & !ADDR_MASK & !(align - 1) != 0 || gpa >> 48 != 0 {
            return Err(HvError::InvalidRange { what: "address beyond 4-level paging", start: gpa, size: hpa });
        }
        C::check_perms(perms)?;
        let target = size.level();
        let mut table = self.root;
        let mut level = 4;
        while level > target {
            let slot = table + index(gpa, level) * 8;
            let e = mem.read_u64(slot)?;
            if C::present(e) {
                if C::is_large(e, level) {
                    return Err(HvError::AlreadyMapped { gpa });
                }
                table = e & ADDR_MASK;
            } else {
                let f = frames.alloc_frame()?;
                mem.zero(f, PAGE_SIZE)?;
                mem.write_u64(slot, C::table(f))?;
                table = f;
            }
            level -= 1;
        }
        let slot = table + index(gpa, level) * 8;
        if C::present(mem.read_u64(slot)?) {
            return Err(HvError::AlreadyMapped { gpa });
        }
        mem.write_u64(slot, C::leaf(hpa, perms, mt, size))
    }

    /// Maps `[gpa, gpa+len)` → `[hpa, …)` with the largest pages alignment allows.
    #[allow(clippy::too_many_arguments)]
    pub fn map_range(
        &mut self,
        mem: &mut impl PhysMem,
        frames: &mut impl FrameSource,
        gpa: u64,
        hpa: u64,
        len: u64,
        perms: Perms,
        mt: MemType,
    ) -> HvResult<()> {
        if !(gpa | hpa | len).is_multiple_of(PAGE_SIZE) {
            return Err(HvError::Misaligned { what: "range", value: gpa | hpa | len, align: PAGE_SIZE });
        }
        let mut off = 0;
        while off < len {
            let (g, h, left) = (gpa + off, hpa + off, len - off);
            let size = [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K]
                .into_iter()
                .find(|s| g % s.bytes() == 0 && h % s.bytes() == 0 && left >= s.bytes())
                .unwrap_or(PageSize::Size4K);
            self.map(mem, frames, g, h, size, perms, mt)?;
            off += size.bytes();
        }
        Ok(())
    }

    /// Walks the tables for `gpa`; path[l] = (table frame, entry value) at level l.
    fn walk<C: EntryCodec>(&self, mem: &impl PhysMem, gpa: u64, path: &mut [(u64, u64); 5]) -> Result<u32, WalkFault> {
        let mut table = self.root;
        let mut level = 4;
        loop {
            let e = mem.read_u64(table + index(gpa, level) * 8).map_err(|_| WalkFault::NotPresent { level })?;
            path[level as usize] = (table, e);
            if !C::present(e) {
                return Err(WalkFault::NotPresent { level });
            }
            if level == 1 || C::is_large(e, level) {
                return Ok(level);
            }
            table = e & ADDR_MASK;
            level -= 1;
        }
    }

    /// Translates a guest-physical address (the hardware walk, without permission checks).
    pub fn translate(&self, mem: &impl PhysMem, gpa: u64) -> Result<Translation, WalkFault> {
        if gpa >> 48 != 0 {
            return Err(WalkFault::NotPresent { level: 4 }); // beyond what 4-level tables reach
        }
        with_codec!(self.format, C => {
            let mut path = [(0, 0); 5];
            let level = self.walk::<C>(mem, gpa, &mut path)?;
            let e = path[level as usize].1;
            let size = PageSize::from_level(level);
            let base = e & ADDR_MASK & !(size.bytes() - 1);
            Ok(Translation { hpa: base + (gpa & (size.bytes() - 1)), perms: C::perms(e), size, mem_type: C::mem_type(e) })
        })
    }

    /// Translates and checks that `access` is permitted, as the CPU would.
    pub fn access(&self, mem: &impl PhysMem, gpa: u64, access: Access) -> Result<Translation, WalkFault> {
        let t = self.translate(mem, gpa)?;
        if !t.perms.has(access.perm()) {
            return Err(WalkFault::PermissionDenied { perms: t.perms });
        }
        Ok(t)
    }

    /// Changes the permissions of the 4 KiB page at `gpa` (or of the whole leaf if `gpa` starts
    /// a large page); a large page that only partly changes is split first.
    pub fn protect(&mut self, mem: &mut impl PhysMem, frames: &mut impl FrameSource, gpa: u64, perms: Perms) -> HvResult<()> {
        with_codec!(self.format, C => {
            C::check_perms(perms)?;
            let (level, path) = self.walk_split::<C>(mem, frames, gpa)?;
            let (table, e) = path[level as usize];
            mem.write_u64(table + index(gpa, level) * 8, C::with_perms(e, perms))
        })
    }

    /// Walks to the leaf for `gpa`, splitting large pages until the leaf starts at `gpa`
    /// (down to 4 KiB).
    fn walk_split<C: EntryCodec>(
        &mut self,
        mem: &mut impl PhysMem,
        frames: &mut impl FrameSource,
        gpa: u64,
    ) -> HvResult<(u32, [(u64, u64); 5])> {
        if !gpa.is_multiple_of(PAGE_SIZE) {
            return Err(HvError::Misaligned { what: "guest-physical address", value: gpa, align: PAGE_SIZE });
        }
        loop {
            let mut path = [(0, 0); 5];
            let level = self.walk::<C>(mem, gpa, &mut path).map_err(|_| HvError::NotMapped { gpa })?;
            if gpa.is_multiple_of(PageSize::from_level(level).bytes()) {
                return Ok((level, path));
            }
            let (table, e) = path[level as usize];
            Self::split::<C>(mem, frames, table + index(gpa, level) * 8, e, level)?;
        }
    }

    /// Replaces the large leaf `e` (at `slot`, table level `level`) by a table of 512 leaves
    /// one level down with the same permissions and memory type.
    fn split<C: EntryCodec>(mem: &mut impl PhysMem, frames: &mut impl FrameSource, slot: u64, e: u64, level: u32) -> HvResult<()> {
        let child = PageSize::from_level(level - 1);
        let base = e & ADDR_MASK & !(PageSize::from_level(level).bytes() - 1);
        let f = frames.alloc_frame()?;
        let mut buf = [0u8; 512];
        for part in 0..8u64 {
            for k in 0..64u64 {
                let i = part * 64 + k;
                let leaf = C::leaf(base + i * child.bytes(), C::perms(e), C::mem_type(e), child);
                buf[(k * 8) as usize..(k * 8 + 8) as usize].copy_from_slice(&leaf.to_le_bytes());
            }
            if let Err(err) = mem.write(f + part * 512, &buf) {
                frames.free_frame(f)?;
                return Err(err);
            }
        }
        mem.write_u64(slot, C::table(f))
    }

    /// Removes the page at `gpa`: the whole leaf if `gpa` starts it, else the 4 KiB page (large
    /// pages are split). Frees tables left empty. Returns (hpa, size) of what was removed.
    pub fn unmap(&mut self, mem: &mut impl PhysMem, frames: &mut impl FrameSource, gpa: u64) -> HvResult<(u64, PageSize)> {
        with_codec!(self.format, C => {
            let (level, path) = self.walk_split::<C>(mem, frames, gpa)?;
            let size = PageSize::from_level(level);
            let hpa = path[level as usize].1 & ADDR_MASK;
            mem.write_u64(path[level as usize].0 + index(gpa, level) * 8, 0)?;
            // Free tables that became empty, bottom-up; never the root.
            let mut l = level;
            while l < 4 {
                let table = path[l as usize].0;
                if !Self::table_empty(mem, table)? {
                    break;
                }
                let parent = path[l as usize + 1].0;
                mem.write_u64(parent + index(gpa, l + 1) * 8, 0)?;
                frames.free_frame(table)?;
                l += 1;
            }
            Ok((hpa, size))
        })
    }

    fn table_empty(mem: &impl PhysMem, table: u64) -> HvResult<bool> {
        let mut buf = [0u8; 512];
        for half in 0..8 {
            mem.read(table + half * 512, &mut buf)?;
            if buf.iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Calls `f(frame, level)` for every table frame, root first.
    pub fn for_each_table(&self, mem: &impl PhysMem, f: &mut impl FnMut(u64, u32)) -> HvResult<()> {
        with_codec!(self.format, C => self.visit::<C>(mem, self.root, 4, f))
    }

    fn visit<C: EntryCodec>(&self, mem: &impl PhysMem, table: u64, level: u32, f: &mut impl FnMut(u64, u32)) -> HvResult<()> {
        f(table, level);
        if level == 1 {
            return Ok(());
        }
        for i in 0..ENTRIES {
            let e = mem.read_u64(table + i * 8)?;
            if C::present(e) && !C::is_large(e, level) {
                self.visit::<C>(mem, e & ADDR_MASK, level - 1, f)?;
            }
        }
        Ok(())
    }

    /// Frees every table frame, root included. Returns how many frames were freed.
    pub fn destroy(self, mem: &mut impl PhysMem, frames: &mut impl FrameSource) -> HvResult<u64> {
        let mut err = None;
        let mut n = 0;
        self.for_each_table(mem, &mut |pa, _| match frames.free_frame(pa) {
            Ok(()) => n += 1,
            Err(e) => err = Some(e),
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests;
