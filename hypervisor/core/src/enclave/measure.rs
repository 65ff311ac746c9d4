//! MRENCLAVE exactly as SGX builds it (SDM vol. 3D, ECREATE / EADD / EEXTEND operation):
//! SHA-256 over 64-byte records.
//!   ECREATE: "ECREATE\0" ‖ SSAFRAMESIZE u32 ‖ SIZE u64 ‖ 44 zero bytes
//!   EADD:    "EADD\0\0\0\0" ‖ offset u64 ‖ SECINFO (FLAGS u64 + 40 zero bytes)
//!   EEXTEND: "EEXTEND\0" ‖ offset u64 ‖ 48 zero bytes, then the 256 data bytes (4 blocks)
//! Offsets are relative to the enclave base. All integers little-endian.

use super::SecInfo;
use crate::crypto::Sha256;

#[derive(Clone)]
pub struct Measurement(Sha256);

impl Measurement {
    pub fn ecreate(ssa_frame_size: u32, size: u64) -> Self {
        let mut rec = [0u8; 64];
        rec[..8].copy_from_slice(b"ECREATE\0");
        rec[8..12].copy_from_slice(&ssa_frame_size.to_le_bytes());
        rec[12..20].copy_from_slice(&size.to_le_bytes());
        let mut h = Sha256::new();
        h.update(&rec);
        Measurement(h)
    }

    pub fn eadd(&mut self, offset: u64, secinfo: SecInfo) {
        let mut rec = [0u8; 64];
        rec[..8].copy_from_slice(b"EADD\0\0\0\0");
        rec[8..16].copy_from_slice(&offset.to_le_bytes());
        rec[16..24].copy_from_slice(&secinfo.flags().to_le_bytes());
        self.0.update(&rec);
    }

    pub fn eextend(&mut self, offset: u64, chunk: &[u8; 256]) {
        let mut rec = [0u8; 64];
        rec[..8].copy_from_slice(b"EEXTEND\0");
        rec[8..16].copy_from_slice(&offset.to_le_bytes());
        self.0.update(&rec);
        self.0.update(chunk);
    }

    /// The value so far (EINIT finalizes a copy).
    pub fn value(&self) -> [u8; 32] {
        self.0.clone().finalize()
    }
}

/// Measures a whole image the way a loader that EADDs and fully EEXTENDs every page would:
/// `pages` is (offset, secinfo, 4096 bytes). Used by tests and by tools that predict MRENCLAVE.
pub fn measure_image<'a>(size: u64, ssa_frame_size: u32, pages: impl IntoIterator<Item = (u64, SecInfo, &'a [u8])>) -> [u8; 32] {
    let mut m = Measurement::ecreate(ssa_frame_size, size);
    for (off, si, page) in pages {
        m.eadd(off, si);
        for (i, chunk) in page.chunks_exact(256).enumerate() {
            m.eextend(off + i as u64 * 256, chunk.try_into().unwrap());
        }
    }
    m.value()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::test_util::hex;

    /// Known answer: the Linux kernel SGX selftest enclave (tools/testing/selftests/sgx) as
    /// built and signed upstream, taken from enarx/sgx `tests/encl.bin` + `tests/encl.ss`
    /// (commit 05c571cf9a2e3919e69d5588e46cf1b96aee7449). The SIGSTRUCT's ENCLAVEHASH (bytes
    /// 960..992) was produced by the kernel's `sgxsign`; layout: 32 KiB ELRANGE (next power of
    /// two of the 24 KiB image), SSAFRAMESIZE 1, page 0 TCS, pages 1..5 REG RWX, all measured.
    /// See testdata/NOTES.md.
    pub const ENCL_BIN: &[u8] = include_bytes!("../../testdata/encl.bin");
    pub const ENCL_SS: &[u8] = include_bytes!("../../testdata/encl.ss");
    pub const ENCL_MRENCLAVE: &str = "b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0";

    #[test]
    fn linux_selftest_enclave_known_answer() {
        assert_eq!(ENCL_BIN.len(), 24576);
        let pages = ENCL_BIN.chunks_exact(4096).enumerate().map(|(i, p)| {
            let si = if i == 0 { SecInfo::tcs() } else { SecInfo::reg(7) };
            (i as u64 * 4096, si, p)
        });
        let mr = measure_image(0x8000, 1, pages);
        assert_eq!(mr, hex::<32>(ENCL_MRENCLAVE));
        assert_eq!(&ENCL_SS[960..992], &mr[..], "equals the SIGSTRUCT ENCLAVEHASH from sgxsign");
    }

    #[test]
    fn every_record_field_changes_the_value() {
        let page = [0x5au8; 4096];
        let base = measure_image(0x4000, 1, [(0, SecInfo::reg(3), &page[..])]);
        assert_ne!(base, measure_image(0x8000, 1, [(0, SecInfo::reg(3), &page[..])]), "SIZE");
        assert_ne!(base, measure_image(0x4000, 2, [(0, SecInfo::reg(3), &page[..])]), "SSAFRAMESIZE");
        assert_ne!(base, measure_image(0x4000, 1, [(0x1000, SecInfo::reg(3), &page[..])]), "offset");
        assert_ne!(base, measure_image(0x4000, 1, [(0, SecInfo::reg(1), &page[..])]), "perms");
        assert_ne!(base, measure_image(0x4000, 1, [(0, SecInfo::tcs(), &page[..])]), "type");
        let mut p2 = page;
        p2[4095] ^= 1;
        assert_ne!(base, measure_image(0x4000, 1, [(0, SecInfo::reg(3), &p2[..])]), "data");
    }
}
