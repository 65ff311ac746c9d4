//! AEX and ERESUME on SSA frames (SGX two-phase exception model, SDM vol. 3D 37.9 / 39),
//! one definition for both runners.
//!
//! AEX (the runner, on an exception inside the enclave):
//! 1. `aex_frame(tcs, frame_pages, base)` gives where frame CSSA lives, or `None` when
//!    CSSA = NSSA (no frame left: the thread ends with ENCLAVE_FAULT);
//! 2. the runner writes `Gpr::to_bytes()` at that GPRSGX offset (and, with MISCSELECT.EXINFO,
//!    MADDR/ERRCD just before it), then stores CSSA+1 in the TCS page (`runtime::gpr::TCS_CSSA`);
//! 3. it enters base+OENTRY with RAX = CSSA (new value, ≥ 1), RDI = GPRSGX address, R8 = mailbox.
//!
//! ERESUME (`out PORT_ERESUME, eax` with EAX = 0): the runner reads frame CSSA-1, checks it with
//! `validate_resume`, decrements CSSA and loads the registers; a forged frame ends the thread with
//! SSA_INVALID.

use super::runtime::gpr;
use crate::error::{HvError, HvResult};
use crate::memory::PAGE_SIZE;

/// GPRSGX: the interrupted general-purpose state (184 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gpr {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (SGX order).
    pub regs: [u64; 16],
    pub rflags: u64,
    pub rip: u64,
    pub ursp: u64,
    pub urbp: u64,
    pub exitinfo: u32,
    pub fsbase: u64,
    pub gsbase: u64,
}

/// Indices into `Gpr::regs`.
pub mod r {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
}

impl Gpr {
    pub fn from_bytes(b: &[u8; gpr::GPRSGX_SIZE as usize]) -> Gpr {
        let q = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let mut regs = [0u64; 16];
        for (i, v) in regs.iter_mut().enumerate() {
            *v = q(i * 8);
        }
        Gpr {
            regs,
            rflags: q(gpr::RFLAGS),
            rip: q(gpr::RIP),
            ursp: q(gpr::URSP),
            urbp: q(gpr::URBP),
            exitinfo: u32::from_le_bytes(b[gpr::EXITINFO..gpr::EXITINFO + 4].try_into().unwrap()),
            fsbase: q(gpr::FSBASE),
            gsbase: q(gpr::GSBASE),
        }
    }

    pub fn to_bytes(&self) -> [u8; gpr::GPRSGX_SIZE as usize] {
        let mut b = [0u8; gpr::GPRSGX_SIZE as usize];
        let mut put = |o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
        for (i, v) in self.regs.iter().enumerate() {
            put(i * 8, *v);
        }
        put(gpr::RFLAGS, self.rflags);
        put(gpr::RIP, self.rip);
        put(gpr::URSP, self.ursp);
        put(gpr::URBP, self.urbp);
        put(gpr::FSBASE, self.fsbase);
        put(gpr::GSBASE, self.gsbase);
        b[gpr::EXITINFO..gpr::EXITINFO + 4].copy_from_slice(&self.exitinfo.to_le_bytes());
        b
    }
}

/// EXITINFO for an exception vector (hardware exceptions; #BP/#OF are software).
pub fn exitinfo(vector: u8) -> u32 {
    let ty = if vector == 3 || vector == 4 { gpr::EXIT_TYPE_SW } else { gpr::EXIT_TYPE_HW };
    gpr::EXIT_VALID | (ty << 8) | vector as u32
}

/// Where AEX writes: the ELRANGE offset of frame `cssa`'s GPRSGX, or None when CSSA = NSSA
/// (every frame in use: the exception cannot be delivered and the thread ends).
pub fn aex_frame(ossa: u64, cssa: u32, nssa: u32, frame_pages: u32) -> Option<u64> {
    if cssa >= nssa {
        return None;
    }
    let frame = frame_pages as u64 * PAGE_SIZE;
    Some(ossa + (cssa as u64 + 1) * frame - gpr::GPRSGX_SIZE)
}

/// The frame ERESUME restores from (CSSA-1), or SSA_INVALID when CSSA = 0 (no AEX happened).
pub fn resume_frame(ossa: u64, cssa: u32, frame_pages: u32) -> HvResult<u64> {
    if cssa == 0 {
        return Err(HvError::SsaInvalid { field: "CSSA (no saved frame)", value: 0 });
    }
    aex_frame(ossa, cssa - 1, cssa, frame_pages).ok_or(HvError::SsaInvalid { field: "CSSA", value: cssa as u64 })
}

/// RFLAGS bits ERESUME refuses: reserved (3, 5, 15, 22..63), TF 8, IOPL 12-13, NT 14, RF 16,
/// VM 17, VIF 19, VIP 20.
pub const RFLAGS_FORBIDDEN: u64 = !0x3F_FFFF | (1 << 3) | (1 << 5) | (1 << 15) | (1 << 8) | (3 << 12) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 19) | (1 << 20);
pub const RFLAGS_IF: u64 = 1 << 9;

/// ERESUME's checks of a frame the enclave may have edited: RIP inside ELRANGE on an executable
/// page (`executable(la)`), RSP inside ELRANGE, RFLAGS bit 1 set, no forbidden bit, IF as at AEX
/// (`if_at_aex`). Returns the RFLAGS value to load.
pub fn validate_resume(g: &Gpr, base: u64, size: u64, if_at_aex: bool, executable: impl Fn(u64) -> bool) -> HvResult<u64> {
    let inside = |la: u64| la >= base && la - base < size;
    if !inside(g.rip) {
        return Err(HvError::SsaInvalid { field: "RIP (outside ELRANGE)", value: g.rip });
    }
    if !executable(g.rip) {
        return Err(HvError::SsaInvalid { field: "RIP (page not executable)", value: g.rip });
    }
    let rsp = g.regs[r::RSP];
    if !inside(rsp) {
        return Err(HvError::SsaInvalid { field: "RSP (outside ELRANGE)", value: rsp });
    }
    if g.rflags & RFLAGS_FORBIDDEN != 0 || g.rflags & 2 == 0 {
        return Err(HvError::SsaInvalid { field: "RFLAGS (reserved, TF, IOPL, NT, RF or VM bits)", value: g.rflags });
    }
    if (g.rflags & RFLAGS_IF != 0) != if_at_aex {
        return Err(HvError::SsaInvalid { field: "RFLAGS.IF (differs from AEX)", value: g.rflags });
    }
    Ok(g.rflags)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x4000_0000;
    const SIZE: u64 = 0x10_0000;

    fn frame() -> Gpr {
        let mut g = Gpr { rip: BASE + 0x1234, rflags: 0x246 & !RFLAGS_IF, ..Gpr::default() };
        g.regs[r::RSP] = BASE + 0x8000;
        g
    }

    #[test]
    fn gprsgx_layout_matches_sgx_offsets() {
        let mut g = frame();
        for i in 0..16 {
            g.regs[i] = 0x1111 * (i as u64 + 1);
        }
        g.exitinfo = exitinfo(14);
        g.fsbase = 0xf5;
        g.gsbase = 0x65;
        let b = g.to_bytes();
        // independent of Gpr: SDM vol. 3D table 37-9 offsets
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 0x2222, "RCX @8");
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 0x5555, "RSP @32");
        assert_eq!(u64::from_le_bytes(b[120..128].try_into().unwrap()), 0x1111 * 16, "R15 @120");
        assert_eq!(u64::from_le_bytes(b[136..144].try_into().unwrap()), BASE + 0x1234, "RIP @136");
        assert_eq!(u32::from_le_bytes(b[160..164].try_into().unwrap()), 0x8000_030E, "EXITINFO: valid, HW, #PF");
        assert_eq!(u64::from_le_bytes(b[168..176].try_into().unwrap()), 0xf5);
        assert_eq!(u64::from_le_bytes(b[176..184].try_into().unwrap()), 0x65);
        assert_eq!(Gpr::from_bytes(&b), g);
        assert_eq!(exitinfo(3), 0x8000_0603, "#BP is a software exception");
    }

    #[test]
    fn frames_and_cssa_limits() {
        // OSSA 0x5000, 2 frames of 1 page: frame 0 GPRSGX at 0x6000-184, frame 1 at 0x7000-184
        assert_eq!(aex_frame(0x5000, 0, 2, 1), Some(0x6000 - 184));
        assert_eq!(aex_frame(0x5000, 1, 2, 1), Some(0x7000 - 184));
        assert_eq!(aex_frame(0x5000, 2, 2, 1), None, "CSSA = NSSA: no frame left");
        assert_eq!(aex_frame(0x5000, 0, 1, 2), Some(0x7000 - 184), "2-page frames");
        assert_eq!(resume_frame(0x5000, 1, 1).unwrap(), 0x6000 - 184);
        assert!(matches!(resume_frame(0x5000, 0, 1), Err(HvError::SsaInvalid { .. })));
    }

    #[test]
    fn validate_resume_refuses_forged_frames() {
        let exec = |la: u64| la < BASE + 0x4000;
        assert_eq!(validate_resume(&frame(), BASE, SIZE, false, exec).unwrap(), 0x46);
        let field = |g: Gpr, iff: bool| match validate_resume(&g, BASE, SIZE, iff, exec) {
            Err(HvError::SsaInvalid { field, .. }) => field,
            other => panic!("{g:?}: {other:?}"),
        };
        assert!(field(Gpr { rip: BASE - 1, ..frame() }, false).starts_with("RIP (outside"));
        assert!(field(Gpr { rip: BASE + SIZE, ..frame() }, false).starts_with("RIP (outside"));
        assert!(field(Gpr { rip: 0xFFFF_8000_0000_0000, ..frame() }, false).starts_with("RIP (outside"));
        assert!(field(Gpr { rip: BASE + 0x5000, ..frame() }, false).starts_with("RIP (page not"));
        let mut g = frame();
        g.regs[r::RSP] = 0x1000;
        assert!(field(g, false).starts_with("RSP"));
        for bad in [1 << 8, 3 << 12, 1 << 14, 1 << 16, 1 << 17, 1 << 3, 1 << 40] {
            assert!(field(Gpr { rflags: 0x202 & !RFLAGS_IF | bad, ..frame() }, false).starts_with("RFLAGS ("), "bit {bad:#x}");
        }
        assert!(field(Gpr { rflags: 0, ..frame() }, false).starts_with("RFLAGS ("), "bit 1 clear");
        assert!(field(Gpr { rflags: 0x202, ..frame() }, false).starts_with("RFLAGS.IF"));
        assert!(field(frame(), true).starts_with("RFLAGS.IF"));
    }
}
