//! Payload "kvstore": a sealed key-value store (docs/kvstore.md). Its interface is
//! kvstore.edl; `edl.rs` is generated from it (decoding, bounds, OCALL wrappers).
//!
//! Each value lives in a host file as a sealed blob, named by the key's id (HMAC-SHA-256 of the
//! key under a sealing-derived key, so the host never sees key names):
//!
//! ```text
//! 0  "HEKV"   4 format u32 = 1   8 version u64   16 KEYID (32, random)   48 IV (12, random)
//! 60 key check (8) = HMAC-SHA-256(blob key, "kvstore key check")[..8]
//! 68 tag (16) 84 AES-128-GCM ciphertext of: key length u16 ‖ key ‖ value
//! ```
//! AAD = bytes 0..68 (magic, format, version, KEYID, IV, key check). A blob whose key check
//! differs was sealed under another key (another enclave build, platform or hypervisor root
//! secret: FOREIGN_BLOB); one whose check matches but does not authenticate is TORN_BLOB. The key inside the ciphertext is
//! compared with the file's id after decryption: an authentic blob of another key put under
//! this key's file is refused (SWAPPED_BLOB); a blob that does not authenticate (torn, cut,
//! flipped) is refused (TORN_BLOB); a version lower than one this enclave instance already
//! saw or wrote, or a deleted key coming back, is refused (ROLLED_BACK).
//!
//! Keys: SGX-style EGETKEY, KEYNAME SEAL, KEYPOLICY MRENCLAVE (only this exact enclave build on
//! this platform can unseal; no MRSIGNER-wide sharing), a random KEYID per blob. AES-GCM and
//! HMAC are the core's constant-time implementations (bitsliced AES, no tables).
//!
//! Values are never held beyond one ECALL (stack buffers). The table of the versions seen starts
//! static (8 ids) and grows on demand into the heap, a page at a time, through rt's heap_grow
//! (EDMM augment + EACCEPT; the manifest opts in with ATTRIBUTES.EDMM); once the reserve
//! (64 pages, 5440 ids) is used up or the host refuses to grow it, the oldest entries are
//! replaced.
#![no_std]
#![no_main]

#[macro_use]
mod edl;

use core::sync::atomic::{AtomicBool, Ordering};
use edl::errors::{EMPTY_KEY, FOREIGN_BLOB, NOT_FOUND, ROLLED_BACK, SWAPPED_BLOB, TORN_BLOB};
use edl::{BytesOut, ListOut};
use enclave_rt::{err, fill_random, seal_key_mrenclave};
use hyperenclave_core::crypto::{aes128_gcm_open, aes128_gcm_seal, ct_eq, hmac_sha256};

const MAGIC: &[u8; 4] = b"HEKV";
const FORMAT: u32 = 1;
const CHECK_AT: usize = 60;
const AAD_LEN: usize = 68;
const HEADER: usize = AAD_LEN + 16;
const KEY_MAX: usize = 64;
const VALUE_MAX: usize = 3072;
const PLAIN_MAX: usize = 2 + KEY_MAX + VALUE_MAX;
const BLOB_MAX: usize = HEADER + PLAIN_MAX;
const _: () = assert!(BLOB_MAX <= 3300, "blob bound in kvstore.edl");

/// KEYID of the key the ids are derived with (fixed: the same key gives the same file name).
const ID_KEYID: &[u8; 32] = b"hyperenclave kvstore key ids v1\0";

fn key_check(key: &[u8; 16]) -> [u8; 8] {
    let m = hmac_sha256(key, b"kvstore key check");
    let mut c = [0u8; 8];
    c.copy_from_slice(&m[..8]);
    c
}

fn key_id(name: &str) -> Result<[u8; 32], u32> {
    if name.is_empty() {
        return Err(EMPTY_KEY);
    }
    let k = seal_key_mrenclave(ID_KEYID)?;
    Ok(hmac_sha256(&k, name.as_bytes()))
}

// ------------------------------------------------------------ versions seen by this instance

#[derive(Clone, Copy)]
struct Known {
    id: [u8; 32],
    version: u64,
    deleted: bool,
    used: bool,
}

/// Entries in the static part of the table; beyond them the table grows into the heap, one
/// page (85 entries) at a time, with rt's heap_grow (EDMM: augmented pages, EACCEPTed).
const STATIC_KNOWN: usize = 8;
const PER_PAGE: usize = 4096 / core::mem::size_of::<Known>();
/// Heap pages reserved for the table (build.sh: kvstore:1:HEAP_PAGES).
const HEAP_PAGES: usize = 64;
const EMPTY: Known = Known { id: [0; 32], version: 0, deleted: false, used: false };

struct Table {
    fixed: [Known; STATIC_KNOWN],
    /// Heap part: `heap_pages` pages from `heap`, contiguous (the table is the only heap user).
    heap: *mut Known,
    heap_pages: usize,
    /// Entries in use (fixed first, then heap), and the next one to replace once nothing grows.
    len: usize,
    next: usize,
}

static mut TABLE: Table = Table { fixed: [EMPTY; STATIC_KNOWN], heap: core::ptr::null_mut(), heap_pages: 0, len: 0, next: 0 };
static KNOWN_LOCK: AtomicBool = AtomicBool::new(false);

impl Table {
    fn cap(&self) -> usize {
        STATIC_KNOWN + self.heap_pages * PER_PAGE
    }
    fn slot(&mut self, i: usize) -> &mut Known {
        if i < STATIC_KNOWN {
            &mut self.fixed[i]
        } else {
            // SAFETY: i < cap(): the entry lies in the heap_pages pages from `heap`, which
            // heap_grow augmented and EACCEPTed (zeroed, RW, enclave memory, used by nothing else).
            unsafe { &mut *self.heap.add(i - STATIC_KNOWN) }
        }
    }
    fn find(&mut self, id: &[u8; 32]) -> Option<&mut Known> {
        let n = self.len;
        for i in 0..n {
            if self.slot(i).id == *id {
                return Some(self.slot(i));
            }
        }
        None
    }
    /// One more page for the table; false when the reserve is used up or the host refused.
    fn grow(&mut self) -> bool {
        if self.heap_pages == HEAP_PAGES {
            return false;
        }
        match enclave_rt::heap_grow(1) {
            Ok(p) => {
                let want = if self.heap.is_null() { p } else { self.heap.wrapping_add(self.heap_pages * PER_PAGE) as *mut u8 };
                // Contiguous with the pages before (the heap is a bump allocator used only here).
                if self.heap.is_null() {
                    self.heap = p as *mut Known;
                } else if p != want {
                    return false;
                }
                self.heap_pages += 1;
                true
            }
            Err(_) => false,
        }
    }
}

/// Runs `f` over the table with the lock held (one ECALL per TCS; several TCSs may share it).
fn with_known<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    while KNOWN_LOCK.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
    // SAFETY: KNOWN_LOCK is held, so this is the only reference to TABLE until it is released
    // below; TABLE is enclave memory.
    let r = unsafe { f(&mut *core::ptr::addr_of_mut!(TABLE)) };
    KNOWN_LOCK.store(false, Ordering::Release);
    r
}

fn known(id: &[u8; 32]) -> Option<(u64, bool)> {
    with_known(|t| t.find(id).map(|k| (k.version, k.deleted)))
}

fn note(id: &[u8; 32], version: u64, deleted: bool) {
    with_known(|t| {
        if let Some(k) = t.find(id) {
            k.version = k.version.max(version);
            k.deleted = deleted;
            return;
        }
        let fresh = Known { id: *id, version, deleted, used: true };
        if t.len < t.cap() || t.grow() {
            let i = t.len;
            *t.slot(i) = fresh;
            t.len += 1;
            return;
        }
        // Full and nothing left to grow into: the oldest entry is replaced (round robin).
        let i = t.next;
        *t.slot(i) = fresh;
        t.next = (t.next + 1) % t.cap();
    })
}

/// Refuses a version older than what this instance saw (or a deleted key back).
fn check_fresh(id: &[u8; 32], version: u64) -> Result<(), u32> {
    match known(id) {
        Some((v, false)) if version < v => Err(ROLLED_BACK),
        Some((v, true)) if version <= v => Err(ROLLED_BACK),
        _ => Ok(()),
    }
}

// ------------------------------------------------------------ blobs

/// Authenticates `blob` as the blob of `id` and decrypts it into `plain`; returns the version
/// and the plaintext length (key length u16 ‖ key ‖ value).
fn open_blob(id: &[u8; 32], blob: &[u8], plain: &mut [u8; PLAIN_MAX]) -> Result<(u64, usize), u32> {
    if blob.len() < HEADER + 2 || blob.len() > BLOB_MAX || &blob[0..4] != MAGIC || blob[4..8] != FORMAT.to_le_bytes() {
        return Err(TORN_BLOB);
    }
    let version = u64::from_le_bytes(blob[8..16].try_into().unwrap());
    let kid: [u8; 32] = blob[16..48].try_into().unwrap();
    let iv: [u8; 12] = blob[48..60].try_into().unwrap();
    let tag: [u8; 16] = blob[AAD_LEN..HEADER].try_into().unwrap();
    let n = blob.len() - HEADER;
    let key = seal_key_mrenclave(&kid)?;
    if !ct_eq(&key_check(&key), &blob[CHECK_AT..AAD_LEN]) {
        return Err(FOREIGN_BLOB);
    }
    plain[..n].copy_from_slice(&blob[HEADER..]);
    if !aes128_gcm_open(&key, &iv, &blob[..AAD_LEN], &mut plain[..n], &tag) {
        plain[..n].fill(0);
        return Err(TORN_BLOB);
    }
    let klen = u16::from_le_bytes([plain[0], plain[1]]) as usize;
    if klen == 0 || klen > KEY_MAX || 2 + klen > n {
        return Err(TORN_BLOB);
    }
    let name = core::str::from_utf8(&plain[2..2 + klen]).map_err(|_| TORN_BLOB)?;
    if !ct_eq(&key_id(name)?, id) {
        return Err(SWAPPED_BLOB);
    }
    Ok((version, n))
}

/// The version of `id`'s current blob (0: none); refuses torn, swapped or rolled-back blobs.
#[inline(never)]
fn current_version(id: &[u8; 32]) -> Result<u64, u32> {
    let mut ans = [0u8; edl::BLOB_READ_OUT_MAX];
    let blob = edl::blob_read(id, &mut ans)?;
    if blob.is_empty() {
        return Ok(0);
    }
    let mut plain = [0u8; PLAIN_MAX];
    let (v, _) = open_blob(id, blob, &mut plain)?;
    plain.fill(0);
    check_fresh(id, v)?;
    Ok(v)
}

#[inline(never)]
fn write_blob(id: &[u8; 32], version: u64, name: &str, value: &[u8]) -> Result<(), u32> {
    let mut blob = [0u8; BLOB_MAX];
    let n = HEADER + 2 + name.len() + value.len();
    let mut kid = [0u8; 32];
    let mut iv = [0u8; 12];
    fill_random(&mut kid).ok_or(err::NO_ENTROPY)?;
    fill_random(&mut iv).ok_or(err::NO_ENTROPY)?;
    let key = seal_key_mrenclave(&kid)?;
    blob[0..4].copy_from_slice(MAGIC);
    blob[4..8].copy_from_slice(&FORMAT.to_le_bytes());
    blob[8..16].copy_from_slice(&version.to_le_bytes());
    blob[16..48].copy_from_slice(&kid);
    blob[48..60].copy_from_slice(&iv);
    blob[CHECK_AT..AAD_LEN].copy_from_slice(&key_check(&key));
    let (head, rest) = blob.split_at_mut(AAD_LEN);
    let (tag, body) = rest.split_at_mut(16);
    body[0..2].copy_from_slice(&(name.len() as u16).to_le_bytes());
    body[2..2 + name.len()].copy_from_slice(name.as_bytes());
    body[2 + name.len()..2 + name.len() + value.len()].copy_from_slice(value);
    let t = aes128_gcm_seal(&key, &iv, head, &mut body[..n - HEADER]);
    tag.copy_from_slice(&t);
    // The put is acknowledged only once the host said the blob is durable.
    if !edl::blob_write(id, &blob[..n])? {
        return Err(err::OCALL);
    }
    Ok(())
}

// ------------------------------------------------------------ ECALLs

struct Store;

impl edl::Ecalls for Store {
    fn put(key: &str, value: &[u8]) -> Result<u64, u32> {
        let id = key_id(key)?;
        let prev = current_version(&id)?;
        let seen = known(&id).map_or(0, |(v, _)| v);
        let version = prev.max(seen) + 1;
        write_blob(&id, version, key, value)?;
        note(&id, version, false);
        Ok(version)
    }

    fn get(key: &str, ret: &mut BytesOut<'_, '_>) -> Result<(), u32> {
        let id = key_id(key)?;
        let mut ans = [0u8; edl::BLOB_READ_OUT_MAX];
        let blob = edl::blob_read(&id, &mut ans)?;
        if blob.is_empty() {
            // A key this instance saw alive and the host now says is gone: rolled back.
            return Err(if matches!(known(&id), Some((_, false))) { ROLLED_BACK } else { NOT_FOUND });
        }
        let mut plain = [0u8; PLAIN_MAX];
        let (version, n) = open_blob(&id, blob, &mut plain)?;
        check_fresh(&id, version)?;
        note(&id, version, false);
        let klen = u16::from_le_bytes([plain[0], plain[1]]) as usize;
        let r = ret.set(&plain[2 + klen..n]);
        plain.fill(0);
        r
    }

    fn remove(key: &str) -> Result<bool, u32> {
        let id = key_id(key)?;
        // A torn, swapped or rolled-back blob can still be removed (how a key is recovered).
        let version = match current_version(&id) {
            Ok(v) => v,
            Err(TORN_BLOB) | Err(SWAPPED_BLOB) | Err(ROLLED_BACK) | Err(FOREIGN_BLOB) => 0,
            Err(e) => return Err(e),
        };
        let existed = edl::blob_delete(&id)?;
        let seen = known(&id).map_or(0, |(v, _)| v);
        note(&id, version.max(seen), true);
        Ok(existed)
    }

    fn list(start: u32, ret: &mut ListOut<'_, '_>) -> Result<(), u32> {
        let mut ids_ans = [0u8; edl::BLOB_LIST_OUT_MAX];
        let ids = edl::blob_list(start, &mut ids_ans)?;
        for raw in ids.iter() {
            let id: [u8; 32] = raw.try_into().map_err(|_| TORN_BLOB)?;
            let mut ans = [0u8; edl::BLOB_READ_OUT_MAX];
            let blob = edl::blob_read(&id, &mut ans)?;
            if blob.is_empty() {
                continue; // removed since the listing
            }
            let mut plain = [0u8; PLAIN_MAX];
            let (version, _) = open_blob(&id, blob, &mut plain)?;
            check_fresh(&id, version)?;
            let klen = u16::from_le_bytes([plain[0], plain[1]]) as usize;
            let r = ret.push(&plain[2..2 + klen]);
            plain.fill(0);
            r?;
        }
        Ok(())
    }

    fn stats() -> Result<u64, u32> {
        Ok(with_known(|t| ((t.heap_pages as u64) << 32) | t.len as u64))
    }

    fn echo_rounds(rounds: u32, data: &[u8]) -> Result<u32, u32> {
        let mut same = 0;
        let mut ans = [0u8; edl::ECHO_OUT_MAX];
        for _ in 0..rounds {
            if edl::echo(data, &mut ans)? == data {
                same += 1;
            }
        }
        Ok(same)
    }
}

edl_ecalls!(Store);
