//! The shared vectors of test/fixtures/acpi (firmware-tools/acpi.test.ts reads the same files
//! and the same expected.txt).
use super::*;
use std::format;
use std::string::String;
use std::vec::Vec;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/acpi")
}

fn describe(t: &IommuTable) -> String {
    let mut s = format!("ok width={}", t.address_width);
    for u in t.units() {
        let kind = match u.kind {
            IommuKind::AmdVi => "amd-vi",
            IommuKind::VtD => "vt-d",
        };
        s += &format!(" unit={}:{:#x}:{}:{:#x}:{:#x}", kind, u.register_base, u.segment, u.detail, u.device_id);
    }
    for r in t.reserved() {
        s += &format!(" reserved={:#x}-{:#x}", r.base, r.end);
    }
    s
}

#[test]
fn shared_vectors_decode_as_expected() {
    let list = std::fs::read_to_string(fixtures().join("expected.txt")).unwrap();
    let mut n = 0;
    for line in list.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (file, want) = line.split_once(' ').unwrap();
        let buf = std::fs::read(fixtures().join(file)).unwrap();
        let r = if file.starts_with("ivrs") { parse_ivrs(&buf) } else { parse_dmar(&buf) };
        let got = match r {
            Ok(t) => {
                assert!(t.header.checksum_ok, "{file}: checksum");
                describe(&t)
            }
            Err(e) => format!("error={}", e.offset),
        };
        assert_eq!(got, want, "{file}");
        n += 1;
    }
    assert!(n >= 6, "only {n} vectors listed");
}

#[test]
fn errors_name_table_offset_and_reason() {
    let buf = std::fs::read(fixtures().join("dmar-synthetic.bin")).unwrap();
    let e = parse_dmar(&buf[..20]).unwrap_err();
    assert_eq!(std::string::ToString::to_string(&e), "ACPI DMAR: byte 20: truncated header (20)");
    assert_eq!(parse_ivrs(&buf).unwrap_err().offset, 0);
    let mut flipped = buf.clone();
    flipped[60] ^= 1;
    assert!(!parse_dmar(&flipped).unwrap().header.checksum_ok);
}

fn checksummed(mut t: Vec<u8>, at: usize, upto: usize) -> Vec<u8> {
    t[at] = 0;
    let s = t[..upto].iter().fold(0u8, |s, b| s.wrapping_add(*b));
    t[at] = 0u8.wrapping_sub(s);
    t
}

#[test]
fn rsdp_and_xsdt_lead_to_the_tables() {
    // ACPI 6.5 section 5.2.5.3: "RSD PTR ", checksum, OEMID, revision, RSDT, length, XSDT, ext checksum
    let mut r = Vec::new();
    r.extend_from_slice(b"RSD PTR ");
    r.push(0);
    r.extend_from_slice(b"HETEST");
    r.push(2);
    r.extend_from_slice(&0x7ffe_0000u32.to_le_bytes());
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&0x7ffe_1000u64.to_le_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    let r = checksummed(r, 8, 20);
    let r = checksummed(r, 32, 36);
    assert_eq!(parse_rsdp(&r).unwrap(), Rsdp { revision: 2, rsdt: 0x7ffe_0000, xsdt: 0x7ffe_1000 });
    let mut bad = r.clone();
    bad[16] ^= 1;
    assert_eq!(parse_rsdp(&bad).unwrap_err().offset, 8);
    // an XSDT listing two tables
    let mut x = Vec::new();
    x.extend_from_slice(b"XSDT");
    x.extend_from_slice(&52u32.to_le_bytes());
    x.resize(36, 0);
    x.extend_from_slice(&0x1000u64.to_le_bytes());
    x.extend_from_slice(&0x2000u64.to_le_bytes());
    let x = checksummed(x, 9, 52);
    let (n, it) = sdt_entries(&x).unwrap();
    assert_eq!((n, it.collect::<Vec<_>>()), (2, std::vec![0x1000, 0x2000]));
}
