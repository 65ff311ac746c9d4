//! Intel EPT entries (SDM vol. 3C 29.3.2): bit 0 read, 1 write, 2 execute, 5:3 memory type
//! (leaves), 7 page size (PDPTE/PDE leaves), 51:12 address. An entry is present if any of
//! bits 2:0 is set.

use super::{EntryCodec, MemType, PageSize, Perms, ADDR_MASK};
use crate::error::{HvError, HvResult};

pub struct Ept;

const RWX: u64 = 0x7;
const MT_SHIFT: u64 = 3;
const PS: u64 = 1 << 7;

/// EPT pointer: write-back paging-structure memory type (6), page-walk length 4 (encoded 3).
pub fn eptp(root: u64) -> u64 {
    (root & ADDR_MASK) | 6 | (3 << 3)
}

impl EntryCodec for Ept {
    fn table(pa: u64) -> u64 {
        (pa & ADDR_MASK) | RWX
    }
    fn leaf(hpa: u64, perms: Perms, mt: MemType, size: PageSize) -> u64 {
        let ps = if size == PageSize::Size4K { 0 } else { PS };
        (hpa & ADDR_MASK) | (perms.0 as u64 & RWX) | ((mt as u64) << MT_SHIFT) | ps
    }
    fn present(e: u64) -> bool {
        e & RWX != 0
    }
    fn is_large(e: u64, level: u32) -> bool {
        (level == 2 || level == 3) && e & PS != 0
    }
    fn perms(e: u64) -> Perms {
        Perms((e & RWX) as u8)
    }
    fn mem_type(e: u64) -> MemType {
        MemType::from_bits((e >> MT_SHIFT) & 7)
    }
    fn with_perms(e: u64, perms: Perms) -> u64 {
        (e & !RWX) | (perms.0 as u64 & RWX)
    }
    fn check_perms(perms: Perms) -> HvResult<()> {
        // No access at all would be "not present"; write without read is an EPT misconfiguration.
        if perms.0 & !7 != 0 || perms.0 == 0 || (perms.has(Perms::W) && !perms.has(Perms::R)) {
            return Err(HvError::InvalidPermissions { what: "EPT entry", bits: perms.0 as u64 });
        }
        Ok(())
    }
}
