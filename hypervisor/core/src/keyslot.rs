//! Key slots for memory encryption: AMD SEV / Hygon CSV ASIDs and Intel MKTME KeyIDs.
//! Allocate, bind to an enclave, release. A released slot stays unusable until a flush is
//! recorded (WBINVD + SEV DF_FLUSH, or the MKTME cache flush before reprogramming a KeyID),
//! because lines tagged with the old key may still sit in the caches.

use crate::error::{HvError, HvResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// SEV/CSV ASIDs.
    Asid,
    /// MKTME KeyIDs (0 is TME's own key and never handed out).
    KeyId,
}

impl SlotKind {
    pub const fn name(self) -> &'static str {
        match self {
            SlotKind::Asid => "SEV/CSV ASIDs",
            SlotKind::KeyId => "MKTME KeyIDs",
        }
    }
}

/// The usable range `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySlotConfig {
    pub kind: SlotKind,
    pub min: u32,
    pub max: u32,
}

impl KeySlotConfig {
    /// SEV ASIDs from CPUID 0x8000001F: ECX = number of encrypted guests supported at once
    /// (highest ASID), EDX = lowest ASID for SEV guests without SEV-ES. ASIDs below EDX are
    /// reserved for SEV-ES guests; this range is the plain-SEV one, `EDX..=ECX`.
    pub fn sev_from_cpuid(ecx: u32, edx: u32) -> HvResult<Self> {
        let min = if edx == 0 { 1 } else { edx };
        if ecx == 0 || min > ecx {
            return Err(HvError::KeySlotConfig { what: "CPUID 0x8000001F ECX/EDX (no usable ASID)", value: ((edx as u64) << 32) | ecx as u64 });
        }
        Ok(KeySlotConfig { kind: SlotKind::Asid, min, max: ecx })
    }

    /// SEV-ES ASIDs: `1..EDX`.
    pub fn sev_es_from_cpuid(edx: u32) -> HvResult<Self> {
        if edx <= 1 {
            return Err(HvError::KeySlotConfig { what: "CPUID 0x8000001F EDX (no SEV-ES ASIDs)", value: edx as u64 });
        }
        Ok(KeySlotConfig { kind: SlotKind::Asid, min: 1, max: edx - 1 })
    }

    /// MKTME KeyIDs from IA32_TME_CAPABILITY (0x981, MK_TME_MAX_KEYS in bits 50:36) and
    /// IA32_TME_ACTIVATE (0x982, bit 1 enable, KeyID bits in 35:32): `1..=min(2^bits - 1, max_keys)`.
    pub fn mktme_from_msrs(tme_capability: u64, tme_activate: u64) -> HvResult<Self> {
        if tme_activate & 2 == 0 {
            return Err(HvError::KeySlotConfig { what: "IA32_TME_ACTIVATE.enable", value: tme_activate });
        }
        let bits = ((tme_activate >> 32) & 0xf) as u32;
        let max_keys = ((tme_capability >> 36) & 0x7fff) as u32;
        let max = core::cmp::min((1u32 << bits) - 1, max_keys);
        if bits == 0 || max == 0 {
            return Err(HvError::KeySlotConfig { what: "MKTME KeyID bits / MK_TME_MAX_KEYS", value: tme_activate });
        }
        Ok(KeySlotConfig { kind: SlotKind::KeyId, min: 1, max })
    }

    pub fn keyids(max: u32) -> HvResult<Self> {
        if max == 0 {
            return Err(HvError::KeySlotConfig { what: "max KeyID (KeyID 0 is reserved for TME)", value: 0 });
        }
        Ok(KeySlotConfig { kind: SlotKind::KeyId, min: 1, max })
    }

    pub fn asids(min: u32, max: u32) -> HvResult<Self> {
        if min == 0 || min > max {
            return Err(HvError::KeySlotConfig { what: "ASID range (ASID 0 is the host)", value: ((min as u64) << 32) | max as u64 });
        }
        Ok(KeySlotConfig { kind: SlotKind::Asid, min, max })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Free,
    Allocated { owner: Option<u32> },
    /// Released; needs a flush before reuse.
    NeedsFlush,
}

const FREE: u8 = 0;
const ALLOCATED: u8 = 1;
const NEEDS_FLUSH: u8 = 2;
const NO_OWNER: u32 = u32::MAX;

/// Slot table with capacity `N`; ranges wider than `N` are clamped to their first `N` slots.
pub struct KeySlots<const N: usize> {
    cfg: KeySlotConfig,
    count: u32,
    state: [u8; N],
    owner: [u32; N],
    flushes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KeySlotStats {
    pub total: u32,
    pub allocated: u32,
    pub pending_flush: u32,
    pub flushes: u64,
}

impl<const N: usize> KeySlots<N> {
    pub fn new(cfg: KeySlotConfig) -> HvResult<Self> {
        if cfg.min == 0 || cfg.min > cfg.max || N == 0 {
            let value = ((cfg.min as u64) << 32) | cfg.max as u64;
            return Err(HvError::KeySlotConfig { what: "slot range (0 is reserved; min <= max)", value });
        }
        let count = core::cmp::min(cfg.max - cfg.min, N as u32 - 1) + 1;
        Ok(KeySlots { cfg, count, state: [FREE; N], owner: [NO_OWNER; N], flushes: 0 })
    }

    pub fn config(&self) -> KeySlotConfig {
        self.cfg
    }
    /// Highest slot actually managed (≤ cfg.max).
    pub fn max_managed(&self) -> u32 {
        self.cfg.min + self.count - 1
    }

    fn index(&self, slot: u32) -> HvResult<usize> {
        if slot < self.cfg.min || slot > self.max_managed() {
            return Err(HvError::KeySlotInvalid { slot, state: "outside the usable range" });
        }
        Ok((slot - self.cfg.min) as usize)
    }

    pub fn state(&self, slot: u32) -> HvResult<SlotState> {
        let i = self.index(slot)?;
        Ok(match self.state[i] {
            FREE => SlotState::Free,
            ALLOCATED => SlotState::Allocated { owner: if self.owner[i] == NO_OWNER { None } else { Some(self.owner[i]) } },
            _ => SlotState::NeedsFlush,
        })
    }

    /// Lowest free slot.
    pub fn alloc(&mut self, owner: Option<u32>) -> HvResult<u32> {
        match self.state[..self.count as usize].iter().position(|&s| s == FREE) {
            Some(i) => {
                self.state[i] = ALLOCATED;
                self.owner[i] = owner.unwrap_or(NO_OWNER);
                Ok(self.cfg.min + i as u32)
            }
            None => Err(HvError::KeySlotsExhausted {
                kind: self.cfg.kind.name(),
                min: self.cfg.min,
                max: self.max_managed(),
                pending_flush: self.stats().pending_flush,
            }),
        }
    }

    pub fn bind(&mut self, slot: u32, enclave: u32) -> HvResult<()> {
        let i = self.index(slot)?;
        match (self.state[i], self.owner[i]) {
            (ALLOCATED, NO_OWNER) => {
                self.owner[i] = enclave;
                Ok(())
            }
            (ALLOCATED, o) if o == enclave => Ok(()),
            (ALLOCATED, _) => Err(HvError::KeySlotInvalid { slot, state: "bound to another enclave" }),
            _ => Err(HvError::KeySlotInvalid { slot, state: "not allocated" }),
        }
    }

    pub fn release(&mut self, slot: u32) -> HvResult<()> {
        let i = self.index(slot)?;
        if self.state[i] != ALLOCATED {
            return Err(HvError::KeySlotInvalid { slot, state: "not allocated" });
        }
        self.state[i] = NEEDS_FLUSH;
        self.owner[i] = NO_OWNER;
        Ok(())
    }

    /// Releases every slot bound to `enclave`; returns how many.
    pub fn release_owned_by(&mut self, enclave: u32) -> u32 {
        let mut n = 0;
        for i in 0..self.count as usize {
            if self.state[i] == ALLOCATED && self.owner[i] == enclave {
                self.state[i] = NEEDS_FLUSH;
                self.owner[i] = NO_OWNER;
                n += 1;
            }
        }
        n
    }

    /// Records that the flush happened; released slots become free. Returns how many.
    pub fn flush(&mut self) -> u32 {
        let mut n = 0;
        for s in self.state[..self.count as usize].iter_mut() {
            if *s == NEEDS_FLUSH {
                *s = FREE;
                n += 1;
            }
        }
        self.flushes += 1;
        n
    }

    pub fn stats(&self) -> KeySlotStats {
        let live = &self.state[..self.count as usize];
        KeySlotStats {
            total: self.count,
            allocated: live.iter().filter(|&&s| s == ALLOCATED).count() as u32,
            pending_flush: live.iter().filter(|&&s| s == NEEDS_FLUSH).count() as u32,
            flushes: self.flushes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    #[test]
    fn sev_cpuid_ranges() {
        // e.g. a Milan part: 509 ASIDs, SEV-ES below 100
        let c = KeySlotConfig::sev_from_cpuid(509, 100).unwrap();
        assert_eq!((c.min, c.max), (100, 509));
        let es = KeySlotConfig::sev_es_from_cpuid(100).unwrap();
        assert_eq!((es.min, es.max), (1, 99));
        assert_eq!(KeySlotConfig::sev_from_cpuid(15, 0).unwrap().min, 1);
        assert!(KeySlotConfig::sev_from_cpuid(0, 0).is_err());
        assert!(KeySlotConfig::sev_from_cpuid(10, 11).is_err());
        assert!(KeySlotConfig::asids(0, 4).is_err());
    }

    #[test]
    fn mktme_msr_ranges() {
        // 6 KeyID bits, 63 keys supported
        let cap = 1 | (63u64 << 36);
        let act = 0b11 | (6u64 << 32);
        let c = KeySlotConfig::mktme_from_msrs(cap, act).unwrap();
        assert_eq!((c.kind, c.min, c.max), (SlotKind::KeyId, 1, 63));
        // fewer keys than the bits allow
        let c = KeySlotConfig::mktme_from_msrs(1 | (31u64 << 36), act).unwrap();
        assert_eq!(c.max, 31);
        assert!(KeySlotConfig::mktme_from_msrs(cap, 0b01 | (6u64 << 32)).is_err(), "not enabled");
        assert!(KeySlotConfig::mktme_from_msrs(cap, 0b11).is_err(), "no KeyID bits");
        assert!(KeySlotConfig::keyids(0).is_err());
    }

    #[test]
    fn alloc_bind_release_flush_cycle() {
        let mut s = KeySlots::<16>::new(KeySlotConfig::asids(5, 7).unwrap()).unwrap();
        assert_eq!(s.alloc(Some(1)).unwrap(), 5);
        assert_eq!(s.alloc(None).unwrap(), 6);
        assert_eq!(s.alloc(None).unwrap(), 7);
        let err = s.alloc(None).unwrap_err();
        assert_eq!(err, HvError::KeySlotsExhausted { kind: "SEV/CSV ASIDs", min: 5, max: 7, pending_flush: 0 });
        assert_eq!(std::format!("{err}"), "SEV/CSV ASIDs exhausted: all of 5..=7 in use (0 released, waiting for a flush)");
        s.bind(6, 2).unwrap();
        assert!(s.bind(6, 3).is_err());
        assert_eq!(s.state(6).unwrap(), SlotState::Allocated { owner: Some(2) });
        s.release(6).unwrap();
        assert_eq!(s.state(6).unwrap(), SlotState::NeedsFlush);
        assert!(s.release(6).is_err());
        assert!(s.bind(6, 2).is_err(), "a released slot is unusable");
        assert!(matches!(s.alloc(None), Err(HvError::KeySlotsExhausted { pending_flush: 1, .. })), "not reusable before the flush");
        assert_eq!(s.flush(), 1);
        assert_eq!(s.alloc(None).unwrap(), 6);
        assert_eq!(s.release_owned_by(1), 1);
        assert_eq!(s.stats(), KeySlotStats { total: 3, allocated: 2, pending_flush: 1, flushes: 1 });
        assert!(matches!(s.state(8), Err(HvError::KeySlotInvalid { .. })));
        assert!(matches!(s.state(4), Err(HvError::KeySlotInvalid { .. })));
    }

    #[test]
    fn wide_ranges_are_clamped_to_capacity() {
        let mut s = KeySlots::<4>::new(KeySlotConfig::keyids(32767).unwrap()).unwrap();
        assert!(KeySlots::<4>::new(KeySlotConfig { kind: SlotKind::Asid, min: 9, max: 3 }).is_err());
        assert!(KeySlots::<4>::new(KeySlotConfig { kind: SlotKind::KeyId, min: 0, max: u32::MAX }).is_err());
        assert_eq!(KeySlots::<4>::new(KeySlotConfig { kind: SlotKind::KeyId, min: 1, max: u32::MAX }).unwrap().max_managed(), 4);
        for want in 1..=4 {
            assert_eq!(s.alloc(None).unwrap(), want);
        }
        assert!(matches!(s.alloc(None), Err(HvError::KeySlotsExhausted { max: 4, .. })));
    }
}
