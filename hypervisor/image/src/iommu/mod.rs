//! DMA protection: the hypervisor finds the IOMMU in the ACPI tables (hypervisor/core's acpi
//! parsers), owns it from INIT to the last DISABLE, and lets devices reach the host's RAM only.
//! AMD-Vi (IVRS) is implemented (amdvi.rs); a DMAR table (VT-d) is recognised and reported as
//! "found, not programmed" so `status` says protection is off rather than pretending.
//!
//! ACPI tables are read where the firmware left them, through the identity map the driver's
//! host tables give the image (the first 8 GiB): the RSDP is searched in the first KiB of the EBDA
//! and in 0xE0000-0xFFFFF (BIOS firmware; an UEFI RSDP is not found this way, see
//! docs/system-tier.md).

pub mod amdvi;

use hyperenclave_core::acpi::{self, IommuKind, IommuUnit};

/// The identity map the image runs on covers this much physical memory.
const IDENTITY_SPAN: u64 = 8 << 30;

/// A physical range as a byte slice (identity-mapped).
fn phys(pa: u64, len: usize) -> Option<&'static [u8]> {
    if pa == 0 || pa.checked_add(len as u64)? > IDENTITY_SPAN {
        return None;
    }
    // SAFETY: the host tables identity-map [0, IDENTITY_SPAN) (driver he_build_host_tables);
    // firmware tables are only read, never written, and nothing else writes them after boot.
    Some(unsafe { core::slice::from_raw_parts(pa as *const u8, len) })
}

fn find_rsdp() -> Option<acpi::Rsdp> {
    let scan = |start: u64, end: u64| -> Option<acpi::Rsdp> {
        let mut a = start & !15;
        while a + 36 <= end {
            let b = phys(a, 36)?;
            if &b[..8] == b"RSD PTR " {
                if let Ok(r) = acpi::parse_rsdp(b) {
                    return Some(r);
                }
            }
            a += 16;
        }
        None
    };
    // the EBDA segment is the word at 0x40e
    let ebda = phys(0x40e, 2).map(|b| (u16::from_le_bytes([b[0], b[1]]) as u64) << 4).unwrap_or(0);
    (if ebda >= 0x8_0000 && ebda < 0xa_0000 { scan(ebda, ebda + 1024) } else { None }).or_else(|| scan(0xe_0000, 0x10_0000))
}

/// A whole ACPI table at `pa` (its length from its header), checksum verified.
fn table_at(pa: u64) -> Option<&'static [u8]> {
    let h = phys(pa, acpi::HEADER_SIZE)?;
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let t = phys(pa, len)?;
    acpi::parse_header(t, "table").ok().filter(|h| h.checksum_ok).map(|_| t)
}

/// The table with this signature listed by the XSDT (or RSDT).
pub fn find_table(sig: &[u8; 4]) -> Option<&'static [u8]> {
    let rsdp = find_rsdp()?;
    let root = if rsdp.xsdt != 0 { rsdp.xsdt } else { rsdp.rsdt as u64 };
    let sdt = table_at(root)?;
    let (_, entries) = acpi::sdt_entries(sdt).ok()?;
    for pa in entries {
        if let Some(t) = phys(pa, 4).filter(|s| s == sig).and_then(|_| table_at(pa)) {
            return Some(t);
        }
    }
    None
}

/// What the ACPI tables say about IOMMUs.
pub enum Found {
    None,
    AmdVi(IommuUnit),
    /// DMAR present: VT-d is not programmed by this image (protection stays off, reported).
    VtD(IommuUnit),
    Broken(acpi::AcpiError),
}

pub fn discover() -> Found {
    if let Some(t) = find_table(b"IVRS") {
        return match acpi::parse_ivrs(t) {
            Ok(tab) => match tab.units().find(|u| u.kind == IommuKind::AmdVi) {
                Some(u) => Found::AmdVi(*u),
                None => Found::None,
            },
            Err(e) => Found::Broken(e),
        };
    }
    if let Some(t) = find_table(b"DMAR") {
        return match acpi::parse_dmar(t) {
            Ok(tab) => tab.units().next().map(|u| Found::VtD(*u)).unwrap_or(Found::None),
            Err(e) => Found::Broken(e),
        };
    }
    Found::None
}

// ---- the image's glue (called from main.rs under its LOCK) -----------------------------------

use crate::{lock, unlock, Console, Hv, PRINT};
use core::fmt::Write;
use hyperenclave_core::{DmaStatus, HvError, HvResult, MemRange};

/// The AMD-Vi unit the hypervisor owns between INIT and the last DISABLE.
static mut UNIT: Option<amdvi::AmdVi> = None;

fn unit() -> &'static mut Option<amdvi::AmdVi> {
    // SAFETY: only called under main.rs's LOCK (INIT, hypercalls, DISABLE).
    unsafe { &mut *core::ptr::addr_of_mut!(UNIT) }
}

/// Finds the IOMMU and checks it can be taken over. Returns the register window to hide from the
/// host, or None (no IOMMU, or one this image does not program: DMA protection stays off).
pub fn prepare() -> HvResult<Option<(u64, u64)>> {
    *unit() = None;
    match discover() {
        Found::AmdVi(u) => {
            log!("IOMMU: AMD-Vi at {:#x} (IVHD type {:#x}, segment {}, requester ID {:#06x})", u.register_base, u.detail, u.segment, u.device_id);
            let v = amdvi::AmdVi::new(u.register_base, u.device_id).map_err(|what| HvError::InvalidRange { what, start: u.register_base, size: amdvi::MMIO_SPAN })?;
            *unit() = Some(v);
            Ok(Some((u.register_base, u.register_base + amdvi::MMIO_SPAN)))
        }
        Found::VtD(u) => {
            log!("IOMMU: VT-d unit at {:#x} in DMAR: not programmed by this image, DMA protection OFF", u.register_base);
            Ok(None)
        }
        Found::Broken(e) => {
            log!("IOMMU: {}: DMA protection OFF", e);
            Ok(None)
        }
        Found::None => {
            log!("IOMMU: no IVRS or DMAR table: DMA protection OFF");
            Ok(None)
        }
    }
}

/// Builds the I/O tables for `map` minus the reservation and turns translation on.
pub fn start(hv: &mut Hv, map: &[MemRange], reserved: (u64, u64)) -> HvResult<()> {
    let Some(v) = unit().as_mut() else {
        hv.set_dma(DmaStatus::default());
        return Ok(());
    };
    v.enable(map, reserved).map_err(|what| HvError::InvalidRange { what, start: v.base(), size: amdvi::MMIO_SPAN })?;
    log!(
        "IOMMU: translation on: {} MiB of host RAM mapped for DMA in {} table pages, reservation {:#x}-{:#x} and the IOMMU's own tables left out; 65536 device table entries",
        v.mapped_bytes >> 20,
        v.table_pages,
        reserved.0,
        reserved.1 - 1
    );
    hv.set_dma(DmaStatus { protected: true, faults: 0, iommu_base: v.base() });
    Ok(())
}

/// Drains the IOMMU event log into the log and the STATUS counter.
pub fn poll(hv: &mut Hv) {
    let Some(v) = unit().as_mut() else { return };
    v.poll(|e| {
        if e.code == 0 {
            log!(
                "IOMMU: DMA fault: the IOMMU ({:02x}:{:02x}.{}) signalled a target abort without an event log entry (QEMU 7.2): blocked, counted",
                e.device >> 8,
                (e.device >> 3) & 0x1f,
                e.device & 7
            );
            return;
        }
        log!(
            "IOMMU: DMA fault {} from device {:02x}:{:02x}.{} at {:#x} (flags {:#x}): blocked",
            e.name(),
            e.device >> 8,
            (e.device >> 3) & 0x1f,
            e.device & 7,
            e.address,
            e.flags
        )
    });
    hv.set_dma(DmaStatus { protected: true, faults: v.faults, iommu_base: v.base() });
}

/// Hands the IOMMU back (translation off) when the last CPU leaves.
pub fn stop() {
    if let Some(mut v) = unit().take() {
        v.disable();
        log!("IOMMU: translation off, handed back to the host after {} DMA faults", v.faults);
    }
}
