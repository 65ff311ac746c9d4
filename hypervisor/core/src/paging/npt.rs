//! AMD nested page table entries: ordinary long-mode PTEs (APM vol. 2 5.3 / 15.25). Bit 0
//! present, 1 read/write, 2 user (nested walks are user accesses, so always set), 3 PWT,
//! 4 PCD, 7 page size (PDPE/PDE leaves), 51:12 address, 63 no-execute. Read is implied by
//! present, so a mapping must be readable.

use super::{EntryCodec, MemType, PageSize, Perms, ADDR_MASK};
use crate::error::{HvError, HvResult};

pub struct Npt;

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;

impl EntryCodec for Npt {
    fn table(pa: u64) -> u64 {
        (pa & ADDR_MASK) | P | RW | US
    }
    fn leaf(hpa: u64, perms: Perms, mt: MemType, size: PageSize) -> u64 {
        let mut e = (hpa & ADDR_MASK) | P | US;
        if perms.has(Perms::W) {
            e |= RW;
        }
        if !perms.has(Perms::X) {
            e |= NX;
        }
        e |= match mt {
            MemType::Uc => PCD | PWT,
            MemType::Wt | MemType::Wp => PWT,
            MemType::Wc => PCD,
            MemType::Wb => 0,
        };
        if size != PageSize::Size4K {
            e |= PS;
        }
        e
    }
    fn present(e: u64) -> bool {
        e & P != 0
    }
    fn is_large(e: u64, level: u32) -> bool {
        (level == 2 || level == 3) && e & PS != 0
    }
    fn perms(e: u64) -> Perms {
        let mut p = Perms::R.0;
        if e & RW != 0 {
            p |= Perms::W.0;
        }
        if e & NX == 0 {
            p |= Perms::X.0;
        }
        Perms(p)
    }
    fn mem_type(e: u64) -> MemType {
        match (e & PCD != 0, e & PWT != 0) {
            (true, true) => MemType::Uc,
            (true, false) => MemType::Wc,
            (false, true) => MemType::Wt,
            (false, false) => MemType::Wb,
        }
    }
    fn with_perms(e: u64, perms: Perms) -> u64 {
        let mut e = e & !(RW | NX);
        if perms.has(Perms::W) {
            e |= RW;
        }
        if !perms.has(Perms::X) {
            e |= NX;
        }
        e
    }
    fn check_perms(perms: Perms) -> HvResult<()> {
        if perms.0 & !7 != 0 || !perms.has(Perms::R) {
            return Err(HvError::InvalidPermissions { what: "NPT entry (read is implied by present)", bits: perms.0 as u64 });
        }
        Ok(())
    }
}
