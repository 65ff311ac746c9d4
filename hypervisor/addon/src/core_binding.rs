//! The core's `Hypervisor` in this process: reserved memory is an anonymous mapping standing
//! for the physical range [base, base + total), so enclave pages (EPC frames) have host
//! addresses the KVM runner maps directly as guest memory — what runs is exactly what the
//! core measured.

use crate::runner::{self, Backend, Edmm, EnclaveVm, Entry, VmSpec};
use crate::kvm::guest::PageDesc;
use crate::sys::Mapping;
use hyperenclave_core::{HvConfig, HvError, HvResult, Hypervisor, KeySlotConfig, PhysMem, ReservedRegion, TargetInfo};
use hyperenclave_core::{EnclaveState, EpcmPage, Format, HcStatus, PageType};
use std::sync::{Arc, Mutex};

pub struct ReservedMem {
    map: Mapping,
    base: u64,
}

impl ReservedMem {
    fn offset(&self, pa: u64, len: usize) -> HvResult<usize> {
        let err = HvError::PhysOutOfRange { pa, len: len as u64 };
        let off = pa.checked_sub(self.base).ok_or(err)?;
        let end = off.checked_add(len as u64).ok_or(err)?;
        if end > self.map.len() as u64 {
            return Err(err);
        }
        Ok(off as usize)
    }
    /// Host address of physical `pa` (bounds-checked for `len` bytes).
    pub fn host_ptr(&self, pa: u64, len: usize) -> HvResult<*mut u8> {
        // SAFETY: offset() checked off + len <= map.len(), so the result stays inside the mapping.
        Ok(unsafe { self.map.ptr().add(self.offset(pa, len)?) })
    }
}

impl PhysMem for ReservedMem {
    fn read(&self, pa: u64, buf: &mut [u8]) -> HvResult<()> {
        let off = self.offset(pa, buf.len())?;
        self.map.read(off, buf);
        Ok(())
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> HvResult<()> {
        let off = self.offset(pa, data.len())?;
        self.map.write(off, data);
        Ok(())
    }
}

pub type Hv = Hypervisor<ReservedMem>;

pub struct CoreOptions {
    pub base: u64,
    pub total: u64,
    pub hypervisor_size: u64,
    pub image_size: u64,
    pub paging: Format,
    pub image_digest: [u8; 32],
    /// PCR indices of the root of trust (hypervisor measurement, HAK event); None: 12 and 13.
    pub trust_pcrs: Option<(u8, u8)>,
    /// (kind "asid"/"keyid", min, max)
    pub key_slots: Option<(String, u32, u32)>,
    pub require_signed_sigstruct: bool,
}

pub fn create(o: &CoreOptions) -> Result<Box<Hv>, String> {
    let reserved = ReservedRegion::split(o.base, o.total, o.hypervisor_size, o.image_size).map_err(|e| e.to_string())?;
    let mut cfg = HvConfig::new(reserved, o.paging, crate::tpm::entropy);
    cfg.image_digest = o.image_digest;
    if let Some((hv_pcr, hak_pcr)) = o.trust_pcrs {
        cfg.trust.hypervisor_pcr = hv_pcr;
        cfg.trust.hak_pcr = hak_pcr;
    }
    cfg.require_signed_sigstruct = o.require_signed_sigstruct;
    cfg.key_slots = match &o.key_slots {
        None => None,
        Some((k, min, max)) => Some(match k.as_str() {
            "asid" => KeySlotConfig::asids(*min, *max),
            "keyid" => KeySlotConfig::keyids(*max),
            other => return Err(format!("keySlots.kind: {other:?} is not \"asid\" or \"keyid\"")),
        }
        .map_err(|e| e.to_string())?),
    };
    let len = usize::try_from(o.total).map_err(|_| "reserved size too large".to_string())?;
    let map = Mapping::anonymous(len).map_err(|e| format!("reserved memory: {e}"))?;
    let mem = ReservedMem { map, base: o.base };
    Ok(Box::new(Hypervisor::new(cfg, mem).map_err(|e| e.to_string())?))
}

/// EENTER/EEXIT, EGETKEY and EREPORT served by the core for enclave `id`.
pub struct CoreBackend {
    pub hv: Arc<Mutex<Box<Hv>>>,
    pub id: u32,
}

impl Backend for CoreBackend {
    fn enter(&mut self, tcs_offset: u64) -> Result<Entry, String> {
        let mut hv = self.hv.lock().unwrap();
        let e = hv.enter(self.id, tcs_offset).map_err(|e| format!("EENTER: {e}"))?;
        Ok(Entry { entry: e.entry, tcs: e.tcs, fs_base: e.fs_base, gs_base: e.gs_base })
    }
    fn exit(&mut self, tcs_offset: u64) {
        let _ = self.hv.lock().unwrap().exit(self.id, tcs_offset);
    }
    fn get_key(&mut self, req: &[u8; 80]) -> Result<[u8; 16], u64> {
        self.hv.lock().unwrap().get_key(self.id, req).map_err(|e| hyperenclave_core::HcStatus::from(&e) as u64)
    }
    fn report(&mut self, ti: &[u8; 56], data: &[u8; 64]) -> Result<[u8; 432], u64> {
        let ti = TargetInfo::from_bytes(ti).map_err(|e| hyperenclave_core::HcStatus::from(&e) as u64)?;
        self.hv.lock().unwrap().report(self.id, &ti, data).map_err(|e| hyperenclave_core::HcStatus::from(&e) as u64)
    }
    fn edmm(&mut self, op: Edmm) -> Result<u32, (u64, String)> {
        let mut hv = self.hv.lock().unwrap();
        let id = self.id;
        let r = match op {
            Edmm::Augment { offset, count } => hv.augment(id, offset, count).map(|_| count as u32),
            Edmm::Restrict { offset, count, perms } => hv.restrict(id, offset, count, perms).map(|_| count as u32),
            Edmm::ModifyType { offset, count, page_type } => hv.modify_type(id, offset, count, page_type).map(|_| count as u32),
            Edmm::Remove { offset, count } => hv.remove_pages(id, offset, count),
            Edmm::Accept { offset, flags } => hv.accept(id, offset, flags).map(|_| 1),
            Edmm::Extend { offset, perms } => hv.extend_perms(id, offset, perms).map(|_| 1),
        };
        r.map_err(|e| (HcStatus::from(&e) as u64, e.to_string()))
    }
    fn page(&mut self, offset: u64) -> Option<(*mut u8, EpcmPage)> {
        let hv = self.hv.lock().unwrap();
        let p = hv.enclave_page(self.id, offset).ok()?;
        let host = hv.mem().host_ptr(p.hpa, 4096).ok()?;
        Some((host, EpcmPage { page_type: p.page_type, perms: p.perms, state: p.state }))
    }
}

/// A KVM VM over the EPC pages of initialized enclave `id`.
pub fn run_enclave(hv: &Arc<Mutex<Box<Hv>>>, id: u32, shared_pages: u64, timeout_ms: u64) -> Result<EnclaveVm, String> {
    let (spec, name) = {
        let g = hv.lock().unwrap();
        let info = g.enclave_info(id).map_err(|e| e.to_string())?;
        if info.state != EnclaveState::Initialized {
            return Err(format!("enclave {id} is not initialized (EINIT first)"));
        }
        let mut pages = Vec::new();
        let mut host = Vec::new();
        let mut bad = None;
        g.enclave_pages(id, |p| {
            let tcs = p.page_type == PageType::Tcs;
            let epcm = EpcmPage { page_type: p.page_type, perms: p.perms, state: p.state };
            if !tcs && epcm.enclave_perms().is_none() {
                return; // PENDING / trimmed: mapped only once accepted
            }
            pages.push(PageDesc { offset: p.offset, perms: p.perms, tcs });
            match g.mem().host_ptr(p.hpa, 4096) {
                Ok(ptr) => host.push((p.offset, ptr, tcs || p.perms & 2 == 0)),
                Err(e) => bad = Some(e),
            }
        })
        .map_err(|e| e.to_string())?;
        if let Some(e) = bad {
            return Err(e.to_string());
        }
        let regions = runner::coalesce(host.into_iter());
        (VmSpec { base: info.secs.base, size: info.secs.size, pages, regions, shared_pages, timeout_ms, misc_select: info.secs.misc_select, ssa_frame_size: info.secs.ssa_frame_size }, format!("{id}"))
    };
    EnclaveVm::create(&name, spec, Box::new(CoreBackend { hv: hv.clone(), id }), None)
}
