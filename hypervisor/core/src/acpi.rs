//! ACPI tables that describe the IOMMUs (no_std, no allocation): the RSDP and the RSDT/XSDT to
//! find them, IVRS (AMD-Vi: IVHD blocks name the IOMMU's register base, IVMD blocks name memory
//! the firmware says devices DMA into) and DMAR (VT-d: DRHD units, RMRR ranges).
//!
//! The same decoding as firmware-tools/acpi.ts (the TypeScript parser the planning tools use):
//! both read the vectors in test/fixtures/acpi/ and must give the same IOMMUs, ranges, address
//! width and, for broken tables, the same byte offset in the error.

use core::fmt;

pub const HEADER_SIZE: usize = 36;
/// Most IOMMU units / reserved ranges one parse keeps (more is an error, not a silent cut).
pub const MAX_UNITS: usize = 8;
pub const MAX_RESERVED: usize = 16;

/// A table that does not decode: which one, at which byte, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiError {
    pub table: &'static str,
    pub offset: usize,
    pub what: &'static str,
    /// A value the message names (a length, a type), when there is one.
    pub value: u64,
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ACPI {}: byte {}: {} ({})", self.table, self.offset, self.what, self.value)
    }
}

fn err(table: &'static str, offset: usize, what: &'static str, value: u64) -> AcpiError {
    AcpiError { table, offset, what, value }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub signature: [u8; 4],
    pub length: u32,
    pub revision: u8,
    pub checksum_ok: bool,
}

/// The standard 36-byte header; `length` must fit in `buf`.
pub fn parse_header(buf: &[u8], table: &'static str) -> Result<Header, AcpiError> {
    if buf.len() < HEADER_SIZE {
        return Err(err(table, buf.len(), "truncated header", buf.len() as u64));
    }
    let length = u32_at(buf, 4);
    if (length as usize) < HEADER_SIZE || length as usize > buf.len() {
        return Err(err(table, 4, "length field outside 36..buffer size", length as u64));
    }
    let sum = buf[..length as usize].iter().fold(0u8, |s, b| s.wrapping_add(*b));
    Ok(Header { signature: [buf[0], buf[1], buf[2], buf[3]], length, revision: buf[8], checksum_ok: sum == 0 })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuKind {
    AmdVi,
    VtD,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuUnit {
    pub kind: IommuKind,
    pub register_base: u64,
    pub segment: u16,
    /// IVRS: the IVHD type (0x10, 0x11, 0x40) · DMAR: DRHD flags (bit 0 INCLUDE_PCI_ALL).
    pub detail: u8,
    /// IVRS: the IOMMU's own PCI requester ID (IVHD bytes 4-5) · DMAR: 0.
    pub device_id: u16,
}

/// A range the firmware says devices DMA into (RMRR / IVMD), inclusive end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaRange {
    pub base: u64,
    pub end: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuTable {
    pub header: Header,
    pub units: [Option<IommuUnit>; MAX_UNITS],
    pub reserved: [Option<DmaRange>; MAX_RESERVED],
    /// DMAR: host address width · IVRS: the physical address size from IVinfo bits 14:8.
    pub address_width: u8,
}

impl IommuTable {
    pub fn units(&self) -> impl Iterator<Item = &IommuUnit> {
        self.units.iter().flatten()
    }
    pub fn reserved(&self) -> impl Iterator<Item = &DmaRange> {
        self.reserved.iter().flatten()
    }
}

fn push<T: Copy>(slots: &mut [Option<T>], v: T, table: &'static str, off: usize, what: &'static str) -> Result<(), AcpiError> {
    match slots.iter_mut().find(|s| s.is_none()) {
        Some(s) => {
            *s = Some(v);
            Ok(())
        }
        None => Err(err(table, off, what, slots.len() as u64)),
    }
}

fn need(t: &[u8], table: &'static str, off: usize, n: usize, what: &'static str) -> Result<(), AcpiError> {
    if off + n > t.len() {
        return Err(err(table, off, what, t.len() as u64));
    }
    Ok(())
}

/// IVRS (AMD I/O Virtualization Reporting Structure). IVHD types 0x10/0x11/0x40 that name the
/// same register base describe one IOMMU (firmware lists it once per type); each is kept.
pub fn parse_ivrs(buf: &[u8]) -> Result<IommuTable, AcpiError> {
    const T: &str = "IVRS";
    let header = parse_header(buf, T)?;
    if &header.signature != b"IVRS" {
        return Err(err(T, 0, "signature is not IVRS", u32_at(buf, 0) as u64));
    }
    let t = &buf[..header.length as usize];
    need(t, T, HEADER_SIZE, 12, "IVRS fields run past the table end")?;
    let ivinfo = u32_at(t, 36);
    let mut out = IommuTable { header, units: [None; MAX_UNITS], reserved: [None; MAX_RESERVED], address_width: ((ivinfo >> 8) & 0x7f) as u8 };
    let mut off = 48;
    while off < t.len() {
        need(t, T, off, 4, "IVRS block header runs past the table end")?;
        let ty = t[off];
        let len = u16_at(t, off + 2) as usize;
        if len < 4 {
            return Err(err(T, off + 2, "block length < 4", len as u64));
        }
        need(t, T, off, len, "block runs past the table end")?;
        match ty {
            0x10 | 0x11 | 0x40 => {
                need(t, T, off, 24, "IVHD runs past the table end")?;
                let unit = IommuUnit { kind: IommuKind::AmdVi, register_base: u64_at(t, off + 8), segment: u16_at(t, off + 16), detail: ty, device_id: u16_at(t, off + 4) };
                push(&mut out.units, unit, T, off, "more IVHD blocks than the parser keeps")?;
            }
            0x20..=0x22 => {
                need(t, T, off, 32, "IVMD runs past the table end")?;
                let base = u64_at(t, off + 16);
                let size = u64_at(t, off + 24);
                let end = base.wrapping_add(size).wrapping_sub(1);
                push(&mut out.reserved, DmaRange { base, end }, T, off, "more IVMD blocks than the parser keeps")?;
            }
            _ => {}
        }
        off += len;
    }
    Ok(out)
}

/// DMAR (DMA Remapping Reporting table, VT-d).
pub fn parse_dmar(buf: &[u8]) -> Result<IommuTable, AcpiError> {
    const T: &str = "DMAR";
    let header = parse_header(buf, T)?;
    if &header.signature != b"DMAR" {
        return Err(err(T, 0, "signature is not DMAR", u32_at(buf, 0) as u64));
    }
    let t = &buf[..header.length as usize];
    need(t, T, HEADER_SIZE, 12, "DMAR fields run past the table end")?;
    let mut out = IommuTable { header, units: [None; MAX_UNITS], reserved: [None; MAX_RESERVED], address_width: t[36].wrapping_add(1) };
    let mut off = 48;
    while off < t.len() {
        need(t, T, off, 4, "remapping structure header runs past the table end")?;
        let ty = u16_at(t, off);
        let len = u16_at(t, off + 2) as usize;
        if len < 4 {
            return Err(err(T, off + 2, "structure length < 4", len as u64));
        }
        need(t, T, off, len, "structure runs past the table end")?;
        match ty {
            0 => {
                need(t, T, off, 16, "DRHD runs past the table end")?;
                let unit = IommuUnit { kind: IommuKind::VtD, register_base: u64_at(t, off + 8), segment: u16_at(t, off + 6), detail: t[off + 4] & 1, device_id: 0 };
                push(&mut out.units, unit, T, off, "more DRHD units than the parser keeps")?;
            }
            1 => {
                need(t, T, off, 24, "RMRR runs past the table end")?;
                push(&mut out.reserved, DmaRange { base: u64_at(t, off + 8), end: u64_at(t, off + 16) }, T, off, "more RMRR ranges than the parser keeps")?;
            }
            _ => {}
        }
        off += len;
    }
    Ok(out)
}

/// The RSDP (20 bytes for revision 0, 36 for 2+): where the RSDT or XSDT is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    pub revision: u8,
    pub rsdt: u32,
    pub xsdt: u64,
}

pub fn parse_rsdp(b: &[u8]) -> Result<Rsdp, AcpiError> {
    const T: &str = "RSDP";
    if b.len() < 20 {
        return Err(err(T, b.len(), "truncated RSDP", b.len() as u64));
    }
    if &b[0..8] != b"RSD PTR " {
        return Err(err(T, 0, "signature is not \"RSD PTR \"", u64_at(b, 0)));
    }
    if b[..20].iter().fold(0u8, |s, x| s.wrapping_add(*x)) != 0 {
        return Err(err(T, 8, "checksum of the first 20 bytes is not 0", b[8] as u64));
    }
    let revision = b[15];
    let rsdt = u32_at(b, 16);
    let mut xsdt = 0;
    if revision >= 2 {
        need(b, T, 0, 36, "RSDP 2.0 runs past the buffer")?;
        let len = u32_at(b, 20) as usize;
        if !(36..=b.len()).contains(&len) {
            return Err(err(T, 20, "RSDP length outside 36..buffer size", len as u64));
        }
        if b[..len].iter().fold(0u8, |s, x| s.wrapping_add(*x)) != 0 {
            return Err(err(T, 32, "extended checksum is not 0", b[32] as u64));
        }
        xsdt = u64_at(b, 24);
    }
    Ok(Rsdp { revision, rsdt, xsdt })
}

/// The table addresses an RSDT (4-byte entries) or XSDT (8-byte entries) lists.
pub fn sdt_entries(buf: &[u8]) -> Result<(usize, impl Iterator<Item = u64> + '_), AcpiError> {
    let h = parse_header(buf, "RSDT/XSDT")?;
    let width = match &h.signature {
        b"XSDT" => 8,
        b"RSDT" => 4,
        _ => return Err(err("RSDT/XSDT", 0, "signature is neither RSDT nor XSDT", u32_at(buf, 0) as u64)),
    };
    let body = &buf[HEADER_SIZE..h.length as usize];
    let n = body.len() / width;
    Ok((n, (0..n).map(move |i| if width == 8 { u64_at(body, i * 8) } else { u32_at(body, i * 4) as u64 })))
}

#[cfg(test)]
mod tests;
