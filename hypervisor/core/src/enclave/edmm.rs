//! EDMM (SGX2-style dynamic memory) as an EPCM state machine, one definition for both runners
//! (the KVM runner's standalone enclaves and the core's `Hypervisor`, which the bare-metal
//! image uses).
//!
//! Page life (SDM vol. 3D 34.17, 38.5):
//! ```text
//!   host ENCLAVE_AUGMENT (EAUG)      → REG RW  PENDING   not accessible; enclave access = #PF
//!   enclave EACCEPT (REG|RW|PENDING) → REG RW  normal    mapped for the enclave
//!   host ENCLAVE_RESTRICT (EMODPR p) → REG p   MODIFIED  accessible with p (permissions only shrink)
//!   enclave EACCEPT (REG|p|MODIFIED) → REG p   normal
//!   host ENCLAVE_MODIFY_TYPE (TRIM)  → TRIM    MODIFIED  not accessible
//!   enclave EACCEPT (TRIM|MODIFIED)  → TRIM    normal    not accessible
//!   host ENCLAVE_REMOVE (EREMOVE)    → free (scrubbed)   only TRIM pages in the normal state
//!   enclave EMODPE (add p)           → REG perms|p       only REG pages in the normal state
//! ```
//! Every transition is a method of [`EpcmPage`]; they either apply fully or return
//! `HvError::PageState` / `HvError::InvalidPermissions` and leave the page unchanged.

use super::PageType;
use crate::error::{HvError, HvResult};

/// SECINFO.FLAGS bits (SDM vol. 3D 34.11.1) as EACCEPT takes them.
pub mod secinfo {
    use hyperenclave_abi::secinfo as abi;
    pub const R: u64 = abi::R;
    pub const W: u64 = abi::W;
    pub const X: u64 = abi::X;
    pub const PENDING: u64 = abi::PENDING;
    pub const MODIFIED: u64 = abi::MODIFIED;
    pub const PR: u64 = abi::PR;
    pub const TYPE_SHIFT: u64 = 8;
    /// Page types as numbers (the ABI's PT_* are already shifted into bits 15:8).
    pub const PT_TCS: u64 = abi::PT_TCS >> TYPE_SHIFT;
    pub const PT_REG: u64 = abi::PT_REG >> TYPE_SHIFT;
    pub const PT_TRIM: u64 = abi::PT_TRIM >> TYPE_SHIFT;
    /// The flags EACCEPT expects for a freshly augmented page.
    pub const ACCEPT_AUGMENTED: u64 = abi::ACCEPT_AUGMENTED;
    /// The flags EACCEPT expects for a page trimmed with EMODT.
    pub const ACCEPT_TRIM: u64 = abi::ACCEPT_TRIM;
    const _: () = assert!(ACCEPT_AUGMENTED == (PT_REG << TYPE_SHIFT) | R | W | PENDING && ACCEPT_TRIM == (PT_TRIM << TYPE_SHIFT) | MODIFIED);
    /// The flags EACCEPT expects after EMODPR to `perms`.
    pub const fn accept_restricted(perms: u64) -> u64 {
        (PT_REG << TYPE_SHIFT) | (perms & 7) | MODIFIED
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Accepted (or added before EINIT).
    Normal,
    /// EAUG done, EACCEPT not yet.
    Pending,
    /// EMODPR or EMODT done, EACCEPT not yet.
    Modified,
}

impl PageState {
    pub fn name(self) -> &'static str {
        match self {
            PageState::Normal => "accepted",
            PageState::Pending => "PENDING",
            PageState::Modified => "MODIFIED",
        }
    }
}

/// The EPCM fields EDMM looks at for one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpcmPage {
    pub page_type: PageType,
    /// SECINFO R=1 W=2 X=4.
    pub perms: u8,
    pub state: PageState,
}

fn err(op: &'static str, state: &'static str) -> HvError {
    // id/offset are filled in by the caller (`HvError::PageState` with where it happened).
    HvError::PageState { id: 0, offset: 0, op, state }
}

/// Sets the enclave id and offset of a `PageState` error (others pass through).
pub fn at(e: HvError, id: u32, offset: u64) -> HvError {
    match e {
        HvError::PageState { op, state, .. } => HvError::PageState { id, offset, op, state },
        other => other,
    }
}

fn check_perms(what: &'static str, p: u64) -> HvResult<u8> {
    if p & !7 != 0 {
        return Err(HvError::InvalidPermissions { what, bits: p });
    }
    if p & 2 != 0 && p & 1 == 0 {
        return Err(HvError::InvalidPermissions { what: "write without read", bits: p });
    }
    Ok(p as u8)
}

impl EpcmPage {
    /// What EAUG creates: REG, RW, PENDING.
    pub const fn augmented() -> Self {
        EpcmPage { page_type: PageType::Reg, perms: 3, state: PageState::Pending }
    }

    pub const fn added(page_type: PageType, perms: u8) -> Self {
        EpcmPage { page_type, perms, state: PageState::Normal }
    }

    /// Whether the enclave may touch the page now, and with which permissions (R/W/X bits).
    /// TCS pages are not accessible to enclave code (the runners map them read-only for
    /// their own use); PENDING pages, TRIM pages and pages being trimmed are not mapped.
    pub fn enclave_perms(&self) -> Option<u8> {
        match (self.page_type, self.state) {
            (PageType::Reg, PageState::Normal | PageState::Modified) => Some(self.perms),
            _ => None,
        }
    }

    /// EMODPR: `perms` must be a subset of the current ones; REG pages in the normal state only.
    pub fn restrict(&mut self, perms: u64) -> HvResult<()> {
        let p = check_perms("EMODPR permissions", perms)?;
        if self.page_type != PageType::Reg {
            return Err(err("EMODPR", "not a REG page"));
        }
        if self.state != PageState::Normal {
            return Err(err("EMODPR", self.state.name()));
        }
        if p & !self.perms != 0 {
            return Err(HvError::InvalidPermissions { what: "EMODPR may only remove permissions", bits: perms });
        }
        self.perms = p;
        self.state = PageState::Modified;
        Ok(())
    }

    /// EMODT: only to TRIM, from REG in the normal state.
    pub fn modify_type(&mut self, new_type: u64) -> HvResult<()> {
        if new_type != secinfo::PT_TRIM {
            return Err(HvError::SecinfoInvalid { field: "EMODT type (only TRIM = 4)", value: new_type });
        }
        if self.page_type != PageType::Reg {
            return Err(err("EMODT", "not a REG page"));
        }
        if self.state != PageState::Normal {
            return Err(err("EMODT", self.state.name()));
        }
        self.page_type = PageType::Trim;
        self.perms = 0;
        self.state = PageState::Modified;
        Ok(())
    }

    /// EREMOVE during the enclave's life: accepted TRIM pages only.
    pub fn check_remove(&self) -> HvResult<()> {
        match (self.page_type, self.state) {
            (PageType::Trim, PageState::Normal) => Ok(()),
            (PageType::Trim, s) => Err(err("EREMOVE", s.name())),
            _ => Err(err("EREMOVE", "not a trimmed page")),
        }
    }

    /// EACCEPT with the SECINFO flags the enclave expects; they must describe the page exactly.
    pub fn accept(&mut self, flags: u64) -> HvResult<()> {
        if flags & !(0xff00 | 7 | secinfo::PENDING | secinfo::MODIFIED | secinfo::PR) != 0 {
            return Err(HvError::SecinfoInvalid { field: "EACCEPT FLAGS (reserved bits)", value: flags });
        }
        let ty = (flags >> secinfo::TYPE_SHIFT) & 0xff;
        let perms = (flags & 7) as u8;
        let pending = flags & secinfo::PENDING != 0;
        let modified = flags & (secinfo::MODIFIED | secinfo::PR) != 0;
        match self.state {
            PageState::Normal => return Err(err("EACCEPT", "already accepted")),
            PageState::Pending => {
                if !(ty == secinfo::PT_REG && pending && !modified && perms == self.perms) {
                    return Err(err("EACCEPT", "PENDING (flags must be REG | RW | PENDING)"));
                }
            }
            PageState::Modified => match self.page_type {
                PageType::Trim => {
                    if !(ty == secinfo::PT_TRIM && modified && !pending && perms == 0) {
                        return Err(err("EACCEPT", "MODIFIED to TRIM (flags must be TRIM | MODIFIED)"));
                    }
                }
                _ => {
                    if !(ty == secinfo::PT_REG && modified && !pending && perms == self.perms) {
                        return Err(err("EACCEPT", "MODIFIED by EMODPR (flags must be REG | the new permissions | MODIFIED)"));
                    }
                }
            },
        }
        self.state = PageState::Normal;
        Ok(())
    }

    /// EMODPE: adds `add` to a REG page's permissions (never to TCS/TRIM, never while pending
    /// or modified; W needs R in the result).
    pub fn extend_perms(&mut self, add: u64) -> HvResult<()> {
        if add & !7 != 0 {
            return Err(HvError::InvalidPermissions { what: "EMODPE permissions", bits: add });
        }
        if self.page_type != PageType::Reg {
            return Err(err("EMODPE", "not a REG page"));
        }
        if self.state != PageState::Normal {
            return Err(err("EMODPE", self.state.name()));
        }
        let p = check_perms("EMODPE result", self.perms as u64 | add)?;
        self.perms = p;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::secinfo::*;
    use super::*;

    fn state_err(r: HvResult<()>) -> &'static str {
        match r {
            Err(HvError::PageState { op, .. }) => op,
            other => panic!("expected PageState, got {other:?}"),
        }
    }

    #[test]
    fn augment_accept_then_emodpe() {
        let mut p = EpcmPage::augmented();
        assert_eq!(p.enclave_perms(), None, "pending pages are not accessible");
        // wrong flags: no PENDING bit, wrong type, wrong perms, MODIFIED instead
        for f in [(PT_REG << 8) | R | W, (PT_TRIM << 8) | PENDING, (PT_REG << 8) | R | PENDING, (PT_REG << 8) | R | W | MODIFIED] {
            assert_eq!(state_err(p.accept(f)), "EACCEPT", "flags {f:#x}");
            assert_eq!(p, EpcmPage::augmented(), "refused EACCEPT leaves the page unchanged");
        }
        assert!(matches!(p.accept(ACCEPT_AUGMENTED | 1 << 20), Err(HvError::SecinfoInvalid { .. })));
        p.accept(ACCEPT_AUGMENTED).unwrap();
        assert_eq!(p.enclave_perms(), Some(3));
        assert_eq!(state_err(p.accept(ACCEPT_AUGMENTED)), "EACCEPT", "twice");
        p.extend_perms(X).unwrap();
        assert_eq!(p.enclave_perms(), Some(7));
        assert!(matches!(p.extend_perms(8), Err(HvError::InvalidPermissions { .. })));
    }

    #[test]
    fn emodpe_refuses_w_without_r_and_non_reg() {
        let mut p = EpcmPage::added(PageType::Reg, 4);
        assert!(matches!(p.extend_perms(W), Err(HvError::InvalidPermissions { .. })));
        assert_eq!(p.perms, 4);
        let mut t = EpcmPage::added(PageType::Tcs, 0);
        assert_eq!(state_err(t.extend_perms(R)), "EMODPE");
        let mut q = EpcmPage::augmented();
        assert_eq!(state_err(q.extend_perms(X)), "EMODPE", "pending page");
    }

    #[test]
    fn restrict_only_shrinks_and_needs_accept() {
        let mut p = EpcmPage::added(PageType::Reg, 3);
        assert!(matches!(p.restrict(7), Err(HvError::InvalidPermissions { .. })), "adding X is not a restriction");
        assert!(matches!(p.restrict(2), Err(HvError::InvalidPermissions { .. })), "W without R");
        p.restrict(1).unwrap();
        assert_eq!((p.perms, p.state), (1, PageState::Modified));
        assert_eq!(p.enclave_perms(), Some(1), "restricted permissions apply at once");
        assert_eq!(state_err(p.restrict(1)), "EMODPR", "already modified");
        assert_eq!(state_err(p.accept(accept_restricted(3))), "EACCEPT", "old permissions");
        assert_eq!(state_err(p.accept(ACCEPT_AUGMENTED)), "EACCEPT");
        p.accept(accept_restricted(1)).unwrap();
        assert_eq!(p.state, PageState::Normal);
    }

    #[test]
    fn trim_accept_remove() {
        let mut p = EpcmPage::added(PageType::Reg, 3);
        assert_eq!(state_err(p.check_remove()), "EREMOVE", "REG page cannot be removed at run time");
        assert!(matches!(p.modify_type(PT_TCS), Err(HvError::SecinfoInvalid { .. })));
        p.modify_type(PT_TRIM).unwrap();
        assert_eq!(p.enclave_perms(), None, "trimmed pages are inaccessible at once");
        assert_eq!(state_err(p.check_remove()), "EREMOVE", "not accepted yet");
        assert_eq!(state_err(p.accept((PT_REG << 8) | MODIFIED)), "EACCEPT");
        p.accept(ACCEPT_TRIM).unwrap();
        p.check_remove().unwrap();
        assert_eq!(p.enclave_perms(), None);
        assert_eq!(state_err(p.modify_type(PT_TRIM)), "EMODT", "already TRIM");
        let mut q = EpcmPage::augmented();
        assert_eq!(state_err(q.modify_type(PT_TRIM)), "EMODT", "pending page");
        let mut t = EpcmPage::added(PageType::Tcs, 0);
        assert_eq!(state_err(t.modify_type(PT_TRIM)), "EMODT");
    }

    #[test]
    fn at_fills_location() {
        let e = at(err("EACCEPT", "PENDING"), 7, 0x3000);
        assert_eq!(e, HvError::PageState { id: 7, offset: 0x3000, op: "EACCEPT", state: "PENDING" });
    }
}
