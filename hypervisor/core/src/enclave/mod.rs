//! Enclave structures with SGX layouts and checks: SECS (ECREATE), SECINFO (EADD), TCS,
//! the MRENCLAVE builder, SIGSTRUCT (EINIT), REPORT / KEYREQUEST (EREPORT / EGETKEY).
//! The lifecycle itself (EPC pages, nested tables) is driven by `Hypervisor`.

pub mod measure;
pub mod report;
pub mod sigstruct;
pub mod runtime;
pub mod edmm;
pub mod ssa;

use crate::error::{HvError, HvResult};
use crate::memory::PAGE_SIZE;

/// SECS.ATTRIBUTES.FLAGS bits (SDM vol. 3D 34.7.1).
pub mod attr {
    pub const INIT: u64 = 1 << 0;
    pub const DEBUG: u64 = 1 << 1;
    pub const MODE64BIT: u64 = 1 << 2;
    pub const PROVISIONKEY: u64 = 1 << 4;
    pub const EINITTOKENKEY: u64 = 1 << 5;
    pub const KSS: u64 = 1 << 7;
    /// HyperEnclave extension (a bit SGX reserves): the enclave opts in to dynamic memory
    /// (ENCLAVE_AUGMENT and the other EDMM leaves). ATTRIBUTES is in the REPORT and under
    /// the SIGSTRUCT's ATTRIBUTEMASK, so a verifier sees the choice; augmented pages
    /// themselves are not measured (as SGX2).
    pub const EDMM: u64 = hyperenclave_abi::attr::EDMM;
    /// Flags an enclave may request at ECREATE.
    pub const ALLOWED: u64 = DEBUG | MODE64BIT | PROVISIONKEY | EINITTOKENKEY | KSS | EDMM;
    /// XFRM bits every enclave must enable: x87 and SSE.
    pub const XFRM_REQUIRED: u64 = 0x3;
}

/// SECINFO page types (bits 15:8 of SECINFO.FLAGS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    Secs = 0,
    Tcs = 1,
    Reg = 2,
    /// A page the enclave is giving back (EMODT, then EACCEPT, then the host's EREMOVE).
    Trim = 4,
}

/// Parsed SECINFO.FLAGS: R=bit 0, W=bit 1, X=bit 2, page type in bits 15:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecInfo {
    pub page_type: PageType,
    pub perms: u8,
}

impl SecInfo {
    pub const fn reg(perms: u8) -> Self {
        SecInfo { page_type: PageType::Reg, perms }
    }
    pub const fn tcs() -> Self {
        SecInfo { page_type: PageType::Tcs, perms: 0 }
    }
    /// The u64 FLAGS word (first 8 of the 48 bytes that go into MRENCLAVE; the rest are zero).
    pub const fn flags(&self) -> u64 {
        ((self.page_type as u64) << 8) | self.perms as u64
    }
    /// Parses and checks FLAGS as EADD does: only REG or TCS, reserved bits zero, TCS has no
    /// R/W/X, a writable REG page is readable.
    pub fn from_flags(flags: u64) -> HvResult<Self> {
        if flags & !0xff07 != 0 {
            return Err(HvError::SecinfoInvalid { field: "FLAGS (reserved bits)", value: flags });
        }
        let perms = (flags & 7) as u8;
        let page_type = match (flags >> 8) & 0xff {
            1 => PageType::Tcs,
            2 => PageType::Reg,
            t => return Err(HvError::SecinfoInvalid { field: "FLAGS.PAGE_TYPE (need REG=2 or TCS=1)", value: t }),
        };
        if page_type == PageType::Tcs && perms != 0 {
            return Err(HvError::SecinfoInvalid { field: "FLAGS.RWX (must be 0 for TCS)", value: perms as u64 });
        }
        if page_type == PageType::Reg && perms & 2 != 0 && perms & 1 == 0 {
            return Err(HvError::SecinfoInvalid { field: "FLAGS.RWX (write without read)", value: perms as u64 });
        }
        Ok(SecInfo { page_type, perms })
    }
}

/// The ECREATE inputs (SECS fields that matter before EINIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecsParams {
    /// ELRANGE size in bytes: a power of two, at least two pages.
    pub size: u64,
    /// ELRANGE base: aligned to `size`.
    pub base: u64,
    /// SSA frame size in pages (≥ 1).
    pub ssa_frame_size: u32,
    pub misc_select: u32,
    /// ATTRIBUTES.FLAGS
    pub attributes: u64,
    /// ATTRIBUTES.XFRM
    pub xfrm: u64,
}

pub const SECS_MIN_BYTES: usize = hyperenclave_abi::sizes::SECS_SIZE;

impl SecsParams {
    /// Reads the SGX SECS layout: SIZE @0, BASEADDR @8, SSAFRAMESIZE @16, MISCSELECT @20,
    /// ATTRIBUTES.FLAGS @48, ATTRIBUTES.XFRM @56. Needs at least 64 bytes; bytes 24..48 reserved.
    pub fn from_bytes(b: &[u8]) -> HvResult<Self> {
        if b.len() < SECS_MIN_BYTES {
            return Err(HvError::BufferTooSmall { what: "SECS", need: SECS_MIN_BYTES as u64, got: b.len() as u64 });
        }
        if b[24..48].iter().any(|&x| x != 0) {
            return Err(HvError::SecsInvalid { field: "reserved bytes 24..48", value: 0 });
        }
        Ok(SecsParams {
            size: u64_at(b, 0),
            base: u64_at(b, 8),
            ssa_frame_size: u32_at(b, 16),
            misc_select: u32_at(b, 20),
            attributes: u64_at(b, 48),
            xfrm: u64_at(b, 56),
        })
    }

    pub fn to_bytes(&self) -> [u8; SECS_MIN_BYTES] {
        let mut b = [0u8; SECS_MIN_BYTES];
        b[0..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..16].copy_from_slice(&self.base.to_le_bytes());
        b[16..20].copy_from_slice(&self.ssa_frame_size.to_le_bytes());
        b[20..24].copy_from_slice(&self.misc_select.to_le_bytes());
        b[48..56].copy_from_slice(&self.attributes.to_le_bytes());
        b[56..64].copy_from_slice(&self.xfrm.to_le_bytes());
        b
    }

    /// ECREATE checks. `xfrm_supported` / `misc_supported` describe the platform.
    pub fn validate(&self, xfrm_supported: u64, misc_supported: u32) -> HvResult<()> {
        let s = self.size;
        if s < 2 * PAGE_SIZE || s & (s - 1) != 0 {
            return Err(HvError::SecsInvalid { field: "SIZE (power of two, at least 8 KiB)", value: s });
        }
        if self.base & (s - 1) != 0 {
            return Err(HvError::SecsInvalid { field: "BASEADDR (must be aligned to SIZE)", value: self.base });
        }
        if self.base.checked_add(s).is_none_or(|end| end > 1 << 47) {
            return Err(HvError::SecsInvalid { field: "BASEADDR+SIZE (beyond canonical lower half)", value: self.base });
        }
        if self.ssa_frame_size == 0 || self.ssa_frame_size as u64 * PAGE_SIZE > s / 2 {
            return Err(HvError::SecsInvalid { field: "SSAFRAMESIZE", value: self.ssa_frame_size as u64 });
        }
        if self.attributes & attr::INIT != 0 {
            return Err(HvError::SecsInvalid { field: "ATTRIBUTES.INIT (must be clear at ECREATE)", value: self.attributes });
        }
        if self.attributes & !attr::ALLOWED != 0 {
            return Err(HvError::SecsInvalid { field: "ATTRIBUTES (reserved bits)", value: self.attributes });
        }
        if self.attributes & attr::MODE64BIT == 0 {
            return Err(HvError::SecsInvalid { field: "ATTRIBUTES.MODE64BIT (only 64-bit enclaves)", value: self.attributes });
        }
        if self.xfrm & attr::XFRM_REQUIRED != attr::XFRM_REQUIRED || self.xfrm & !xfrm_supported != 0 {
            return Err(HvError::SecsInvalid { field: "ATTRIBUTES.XFRM", value: self.xfrm });
        }
        if self.misc_select & !misc_supported != 0 {
            return Err(HvError::SecsInvalid { field: "MISCSELECT", value: self.misc_select as u64 });
        }
        Ok(())
    }
}

/// The TCS fields the hypervisor checks at EADD and uses at EENTER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcs {
    pub flags: u64,
    pub ossa: u64,
    pub cssa: u32,
    pub nssa: u32,
    pub oentry: u64,
    pub ofsbase: u64,
    pub ogsbase: u64,
}

impl Tcs {
    /// Parses a TCS page (SGX layout) and applies the EADD checks against the enclave.
    pub fn parse_and_check(page: &[u8], secs: &SecsParams) -> HvResult<Tcs> {
        if page.len() < PAGE_SIZE as usize {
            return Err(HvError::BufferTooSmall { what: "TCS page", need: PAGE_SIZE, got: page.len() as u64 });
        }
        let t = Tcs {
            flags: u64_at(page, 8),
            ossa: u64_at(page, 16),
            cssa: u32_at(page, 24),
            nssa: u32_at(page, 28),
            oentry: u64_at(page, 32),
            ofsbase: u64_at(page, 48),
            ogsbase: u64_at(page, 56),
        };
        let bad = |field, value| Err(HvError::TcsInvalid { field, value });
        if u64_at(page, 0) != 0 {
            return bad("STATE (must be 0)", u64_at(page, 0));
        }
        if t.flags & !1 != 0 {
            return bad("FLAGS (reserved bits)", t.flags);
        }
        if page[72..PAGE_SIZE as usize].iter().any(|&x| x != 0) {
            return bad("reserved bytes 72..4096", 0);
        }
        if !t.ossa.is_multiple_of(PAGE_SIZE) {
            return bad("OSSA (page alignment)", t.ossa);
        }
        if t.nssa == 0 {
            return bad("NSSA (at least 1)", 0);
        }
        if t.cssa != 0 {
            return bad("CSSA (must be 0)", t.cssa as u64);
        }
        let ssa_bytes = (t.nssa as u64).checked_mul(secs.ssa_frame_size as u64 * PAGE_SIZE);
        if ssa_bytes.and_then(|b| t.ossa.checked_add(b)).is_none_or(|end| end > secs.size) {
            return bad("OSSA+NSSA*SSAFRAMESIZE (outside ELRANGE)", t.ossa);
        }
        if t.oentry >= secs.size {
            return bad("OENTRY (outside ELRANGE)", t.oentry);
        }
        if !t.ofsbase.is_multiple_of(PAGE_SIZE) || !t.ogsbase.is_multiple_of(PAGE_SIZE) {
            return bad("OFSBASE/OGSBASE (page alignment)", t.ofsbase | t.ogsbase);
        }
        Ok(t)
    }
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> SecsParams {
        SecsParams { size: 0x8000, base: 0x10_0000, ssa_frame_size: 1, misc_select: 0, attributes: attr::MODE64BIT, xfrm: 3 }
    }

    #[test]
    fn secs_round_trips_and_validates() {
        let s = good();
        assert_eq!(SecsParams::from_bytes(&s.to_bytes()).unwrap(), s);
        s.validate(0x7, 1).unwrap();
        let cases: [(SecsParams, &str); 9] = [
            (SecsParams { size: 0x6000, ..s }, "SIZE"),
            (SecsParams { size: 0x1000, ..s }, "SIZE"),
            (SecsParams { base: 0x10_4000, ..s }, "BASEADDR"),
            (SecsParams { base: 1 << 47, ..s }, "BASEADDR+SIZE"),
            (SecsParams { ssa_frame_size: 0, ..s }, "SSAFRAMESIZE"),
            (SecsParams { attributes: attr::MODE64BIT | attr::INIT, ..s }, "ATTRIBUTES.INIT"),
            (SecsParams { attributes: attr::MODE64BIT | 1 << 9, ..s }, "ATTRIBUTES (reserved"),
            (SecsParams { attributes: attr::DEBUG, ..s }, "ATTRIBUTES.MODE64BIT"),
            (SecsParams { xfrm: 1, ..s }, "ATTRIBUTES.XFRM"),
        ];
        for (bad, field) in cases {
            match bad.validate(0x7, 1) {
                Err(HvError::SecsInvalid { field: f, .. }) => assert!(f.starts_with(field), "{f} vs {field}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(SecsParams { xfrm: 0x1f, ..s }.validate(0x7, 1), Err(HvError::SecsInvalid { .. })));
        assert!(matches!(SecsParams { misc_select: 2, ..s }.validate(0x7, 1), Err(HvError::SecsInvalid { .. })));
        assert!(matches!(SecsParams::from_bytes(&[0u8; 63]), Err(HvError::BufferTooSmall { need: 64, got: 63, .. })));
    }

    #[test]
    fn secinfo_flags() {
        assert_eq!(SecInfo::reg(7).flags(), 0x207);
        assert_eq!(SecInfo::tcs().flags(), 0x100);
        assert_eq!(SecInfo::from_flags(0x205).unwrap(), SecInfo::reg(5));
        assert!(SecInfo::from_flags(0x0007).is_err(), "SECS type cannot be added");
        assert!(SecInfo::from_flags(0x0307).is_err(), "VA type not supported");
        assert!(SecInfo::from_flags(0x0101).is_err(), "TCS with R");
        assert!(SecInfo::from_flags(0x0202).is_err(), "W without R");
        assert!(SecInfo::from_flags(0x0208).is_err(), "PENDING bit");
    }

    #[test]
    fn tcs_checks() {
        let s = good();
        let mut page = [0u8; 4096];
        page[16..24].copy_from_slice(&0x2000u64.to_le_bytes());
        page[28..32].copy_from_slice(&1u32.to_le_bytes());
        page[32..40].copy_from_slice(&0x1075u64.to_le_bytes());
        let t = Tcs::parse_and_check(&page, &s).unwrap();
        assert_eq!((t.ossa, t.nssa, t.oentry), (0x2000, 1, 0x1075));
        let mut p = page;
        p[16..24].copy_from_slice(&0x2010u64.to_le_bytes());
        assert!(matches!(Tcs::parse_and_check(&p, &s), Err(HvError::TcsInvalid { field: "OSSA (page alignment)", .. })));
        let mut p = page;
        p[32..40].copy_from_slice(&0x8000u64.to_le_bytes());
        assert!(matches!(Tcs::parse_and_check(&p, &s), Err(HvError::TcsInvalid { field: "OENTRY (outside ELRANGE)", .. })));
        let mut p = page;
        p[28..32].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(Tcs::parse_and_check(&p, &s), Err(HvError::TcsInvalid { .. })));
        let mut p = page;
        p[100] = 1;
        assert!(matches!(Tcs::parse_and_check(&p, &s), Err(HvError::TcsInvalid { .. })));
    }
}
