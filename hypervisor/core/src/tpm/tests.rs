//! The TPM layer and TRUST_INIT against a real TPM 2.0 (swtpm), with tpm2-tools and openssl as
//! the independent peers: policy digests equal tpm2_policylocality/policypcr/policyor output,
//! the HAK PCR equals tpm2_pcrread, quotes verify with `openssl pkeyutl`, and a blob the host
//! made itself (same policy, its own parent) is refused.

extern crate std;

use super::policy::*;
use super::*;
use crate::hypervisor::tests::{backing, region, Hv};
use crate::hypervisor::{HvConfig, Hypervisor};
use crate::paging::Format;
use crate::trust::{hak_event, TrustInit, EXIT_EVENT};
use std::format;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::string::String;
use std::vec::Vec;

/// swtpm on two free TCP ports with its state in a temporary directory; killed on drop.
pub(crate) struct Swtpm {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

impl Swtpm {
    pub fn start() -> Swtpm {
        let dir = std::env::temp_dir().join(format!("he-core-swtpm-{}-{}", std::process::id(), free_port_pair()));
        std::fs::create_dir_all(&dir).unwrap();
        Swtpm::start_in(dir)
    }

    /// A reboot: the TPM process stops and starts again on the same state (same seeds, PCRs reset).
    pub fn reboot(self) -> Swtpm {
        let mut me = std::mem::ManuallyDrop::new(self);
        let _ = me.child.kill();
        let _ = me.child.wait();
        let dir = std::mem::take(&mut me.dir);
        // SAFETY: `me` is never used or dropped again; its Child was waited for above.
        unsafe { std::ptr::drop_in_place(&mut me.child) };
        Swtpm::start_in(dir)
    }

    fn start_in(dir: PathBuf) -> Swtpm {
        for _ in 0..5 {
            let port = free_port_pair();
            let child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", dir.display()))
                .args(["--server", &format!("type=tcp,port={port}"), "--ctrl", &format!("type=tcp,port={}", port + 1)])
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("swtpm (apt: swtpm) must be installed for the TPM tests");
            let mut s = Swtpm { child, port, dir: dir.clone() };
            for _ in 0..200 {
                if TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                    return s;
                }
                if let Ok(Some(_)) = s.child.try_wait() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = s.child.kill();
            let _ = s.child.wait();
            std::mem::forget(s);
        }
        panic!("swtpm did not start");
    }

    /// Runs a tpm2-tools command against this TPM; panics with its stderr on failure.
    pub fn tool(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(args[0]).args(&args[1..]).env("TPM2TOOLS_TCTI", format!("swtpm:port={}", self.port)).current_dir(&self.dir).output().unwrap();
        assert!(out.status.success(), "{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    pub fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A std transport: one connection per command to swtpm's server port; around each command the
/// control channel sets `locality` (SET_LOCALITY = 5) and restores 0 afterwards.
pub(crate) struct SwtpmTransport {
    pub port: u16,
    pub locality: u8,
}

fn ctrl_set_locality(port: u16, loc: u8) -> Result<(), TpmIoError> {
    let io = |_| TpmIoError { what: "swtpm control channel" };
    let mut c = TcpStream::connect(("127.0.0.1", port + 1)).map_err(io)?;
    c.write_all(&[0, 0, 0, 5, loc]).map_err(io)?;
    let mut r = [0u8; 4];
    c.read_exact(&mut r).map_err(io)?;
    if r != [0; 4] {
        return Err(TpmIoError { what: "swtpm refused SET_LOCALITY" });
    }
    Ok(())
}

impl TpmTransport for SwtpmTransport {
    fn transact(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TpmIoError> {
        let io = |_| TpmIoError { what: "swtpm server socket" };
        ctrl_set_locality(self.port, self.locality)?;
        let r = (|| {
            let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(io)?;
            s.write_all(cmd).map_err(io)?;
            s.read_exact(&mut rsp[..6]).map_err(io)?;
            let n = u32::from_be_bytes(rsp[2..6].try_into().unwrap()) as usize;
            if !(10..=rsp.len()).contains(&n) {
                return Err(TpmIoError { what: "response size out of range" });
            }
            s.read_exact(&mut rsp[6..n]).map_err(io)?;
            Ok(n)
        })();
        ctrl_set_locality(self.port, 0)?;
        r
    }
}

fn urandom(b: &mut [u8]) -> bool {
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(b)).is_ok()
}

fn image_digest(tag: &[u8]) -> [u8; 32] {
    crate::crypto::sha256(tag)
}

fn hv_for(image: [u8; 32]) -> Hv {
    let r = region(4);
    let mut cfg = HvConfig::new(r, Format::Ept, urandom);
    cfg.image_digest = image;
    Hypervisor::new(cfg, backing(&r)).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Measures `image` into PCR 12 (SHA-256 bank) as a loader would.
fn measure(tpm: &Swtpm, image: &[u8; 32]) {
    tpm.tool(&["tpm2_pcrextend", &format!("12:sha256={}", hex(image))]);
}

fn pcr_sha256(tpm: &Swtpm, i: u8) -> Vec<u8> {
    // `tpm2_pcrread -o FILE sha256:i` writes the raw value
    tpm.tool(&["tpm2_pcrread", "-o", "pcr.bin", &format!("sha256:{i}")]);
    tpm.file("pcr.bin")
}

#[test]
fn policy_digests_equal_tpm2_tools() {
    let tpm = Swtpm::start();
    tpm.tool(&["tpm2_pcrextend", "0:sha256=1111111111111111111111111111111111111111111111111111111111111111"]);
    measure(&tpm, &image_digest(b"img"));
    let mut t = SwtpmTransport { port: tpm.port, locality: 0 };
    let mut values = Vec::new();
    {
        let mut c = Tpm::new(&mut t);
        for i in [0u8, 1, 2, 3, 4, 5, 6, 12] {
            values.push(c.pcr_read_sha256(i).unwrap());
        }
        assert!(c.pcr_banks().unwrap().contains(alg::SHA256));
    }
    let ours_loc = policy_locality(&[0; 32], LOCALITY_TWO);
    // tpm2_policypcr takes at most 8 PCRs (a tool limit; the TRUST_INIT test below has the TPM
    // itself evaluate the 9-PCR policy)
    let ours = policy_pcr(&ours_loc, &sha256_selection(0x107f), &values);
    tpm.tool(&["tpm2_startauthsession", "-S", "s.ctx"]);
    tpm.tool(&["tpm2_policylocality", "-S", "s.ctx", "-L", "loc.bin", "two"]);
    tpm.tool(&["tpm2_policypcr", "-S", "s.ctx", "-l", "sha256:0,1,2,3,4,5,6,12", "-L", "pcr.policy"]);
    tpm.tool(&["tpm2_flushcontext", "s.ctx"]);
    assert_eq!(tpm.file("loc.bin"), ours_loc.to_vec(), "PolicyLocality(two)");
    assert_eq!(tpm.file("pcr.policy"), ours.to_vec(), "PolicyLocality ∧ PolicyPCR");
    // PolicyOR of two branches
    let other = [0x42u8; 32];
    std::fs::write(tpm.dir.join("b2.bin"), other).unwrap();
    tpm.tool(&["tpm2_startauthsession", "-S", "s.ctx"]);
    tpm.tool(&["tpm2_policyor", "-S", "s.ctx", "-L", "or.bin", "-l", "sha256:pcr.policy,b2.bin"]);
    tpm.tool(&["tpm2_flushcontext", "s.ctx"]);
    assert_eq!(tpm.file("or.bin"), policy_or(&[ours, other]).to_vec(), "PolicyOR");
}

fn init(hv: &mut Hv, tpm: &Swtpm, blob: &[u8], locality: u8) -> (Result<TrustInit, crate::HvError>, Vec<u8>) {
    let mut t = SwtpmTransport { port: tpm.port, locality };
    let mut out = std::vec![0u8; 4096];
    let r = hv.trust_init(&mut t, blob, &mut out);
    let n = r.as_ref().map(|r| r.blob_len).unwrap_or(0);
    out.truncate(n);
    (r, out)
}

#[test]
fn root_secret_seals_unseals_caps_and_survives_a_reload() {
    let tpm = Swtpm::start();
    let img = image_digest(b"hypervisor image v1");
    measure(&tpm, &img);

    // a configuration whose HAK PCR is one the policy covers is refused before any TPM command
    let mut bad_cfg = hv_for(img);
    let mut c = *bad_cfg.config();
    c.trust.hak_pcr = 12;
    bad_cfg = Hypervisor::new(c, backing(&c.reserved)).unwrap();
    assert!(matches!(init(&mut bad_cfg, &tpm, &[], 2).0, Err(crate::HvError::InvalidRange { .. })));

    // before TRUST_INIT nothing derived from the root is served
    let mut hv = hv_for(img);
    assert_eq!(hv.hak_public().unwrap_err(), crate::HvError::TrustNotEstablished);
    assert_eq!(hv.quote(&[0u8; 432]).unwrap_err(), crate::HvError::TrustNotEstablished);

    // first boot: a new root, sealed; the HAK event goes into PCR 13
    let (r, blob) = init(&mut hv, &tpm, &[], 2);
    let r = r.unwrap();
    assert!(r.created && r.pcr_extended && r.blob_len == blob.len() && blob.len() > 100);
    assert_eq!(r.hak_pcr, 13);
    let event = format!("hyperenclave-hak:ed25519:{}", hex(&r.hak_public));
    assert_eq!(event.len(), 89);
    let mut want13 = [0u8; 64];
    want13[32..].copy_from_slice(&crate::crypto::sha256(event.as_bytes()));
    assert_eq!(pcr_sha256(&tpm, 13), crate::crypto::sha256(&want13).to_vec(), "PCR 13 = extend(0, H(event)) read by tpm2_pcrread");
    assert_eq!(hak_event(&r.hak_public).to_vec(), event.as_bytes().to_vec());

    // the same stack again (a reboot without the PCR reset is modelled by a new instance): unseals
    // the same root, does not extend PCR 13 again
    let mut hv2 = hv_for(img);
    let (r2, b2) = init(&mut hv2, &tpm, &blob, 2);
    let r2 = r2.unwrap();
    assert!(!r2.created && !r2.pcr_extended && b2.is_empty());
    assert_eq!(r2.hak_public, r.hak_public);

    // locality 0 (the demoted host's) cannot use the parent or the sealed object
    let mut hv3 = hv_for(img);
    let (r3, _) = init(&mut hv3, &tpm, &blob, 0);
    assert!(matches!(r3, Err(crate::HvError::TrustSealFailed { rc, .. }) if rc != 0), "{r3:?}");

    // an image that claims another digest without its measurement in PCR 12 gets another policy
    let mut other = img;
    other[0] ^= 1;
    let (r4, _) = init(&mut hv_for(other), &tpm, &blob, 2);
    assert!(matches!(r4, Err(crate::HvError::TrustSealFailed { rc: 0, .. })), "{r4:?}");

    // a tampered blob is refused (public area changed: attributes)
    let mut bad = blob.clone();
    let pub_at = 36 + 2 + u16::from_be_bytes([blob[36], blob[37]]) as usize;
    bad[pub_at + 2 + 7] ^= 0x40; // userWithAuth
    let (r5, _) = init(&mut hv_for(img), &tpm, &bad, 2);
    assert!(matches!(r5, Err(crate::HvError::TrustSealFailed { rc: 0, .. })), "{r5:?}");
    // a blob claiming another boot measurement (v0) is not in the PCR state: refused
    let mut lied = blob.clone();
    lied[4] ^= 1;
    let (r9, _) = init(&mut hv_for(img), &tpm, &lied, 2);
    assert!(matches!(r9, Err(crate::HvError::TrustSealFailed { rc: 0, .. })), "{r9:?}");
    // and truncated
    let (r6, _) = init(&mut hv_for(img), &tpm, &blob[..blob.len() - 1], 2);
    assert!(matches!(r6, Err(crate::HvError::TrustSealFailed { .. })), "{r6:?}");

    // DISABLE caps PCR 12: the host with every locality back cannot unseal
    let mut t = SwtpmTransport { port: tpm.port, locality: 2 };
    hv2.trust_exit(&mut t).unwrap();
    assert!(!hv2.trust_established());
    let capped = crate::tpm::policy::extend_event(&crate::tpm::policy::extend(&[0; 32], &img), EXIT_EVENT);
    assert_eq!(pcr_sha256(&tpm, 12), capped.to_vec());
    let (r7, _) = init(&mut hv_for(img), &tpm, &blob, 2);
    assert!(matches!(r7, Err(crate::HvError::TrustSealFailed { rc: 0, what }) if what.contains("exit cap")), "{r7:?}");

    // a reload measures the image again: the same root unseals (seal-survives-reload)
    measure(&tpm, &img);
    let (r8, _) = init(&mut hv_for(img), &tpm, &blob, 2);
    assert_eq!(r8.unwrap().hak_public, r.hak_public);

    // reboot of the same stack: unseals, PCR 13 gets the same event again
    let tpm = tpm.reboot();
    measure(&tpm, &img);
    let (r10, _) = init(&mut hv_for(img), &tpm, &blob, 2);
    let r10 = r10.unwrap();
    assert!(r10.hak_public == r.hak_public && !r10.created && r10.pcr_extended);
    // reboot with another image (one byte changed), measured as the loader does: refused
    let tpm = tpm.reboot();
    measure(&tpm, &other);
    let (r11, _) = init(&mut hv_for(other), &tpm, &blob, 2);
    assert!(matches!(r11, Err(crate::HvError::TrustSealFailed { rc: 0, what }) if what.contains("not the measurement")), "{r11:?}");
}

#[test]
fn a_blob_the_host_sealed_itself_is_refused() {
    // The host knows the policy (it is in the blob's public area) and can create a sealed object
    // with that policy and a secret of its choice under a parent it controls; our parent needs
    // locality 2 and the PCRs, so that object does not load under it.
    let tpm = Swtpm::start();
    let img = image_digest(b"hypervisor image v1");
    measure(&tpm, &img);
    let (r, blob) = init(&mut hv_for(img), &tpm, &[], 2);
    r.unwrap();
    let priv_len = u16::from_be_bytes([blob[36], blob[37]]) as usize;
    let public = &blob[36 + 2 + priv_len..];
    let policy = &public[2 + 10..2 + 42];
    std::fs::write(tpm.dir.join("policy.bin"), policy).unwrap();
    std::fs::write(tpm.dir.join("secret.bin"), [7u8; 32]).unwrap();
    tpm.tool(&["tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", "host.ctx"]);
    tpm.tool(&[
        "tpm2_create", "-C", "host.ctx", "-L", "policy.bin", "-a", "fixedtpm|fixedparent|adminwithpolicy|noda", "-i", "secret.bin", "-u", "h.pub", "-r", "h.priv",
    ]);
    tpm.tool(&["tpm2_flushcontext", "-t"]);
    let mut forged = blob[..36].to_vec();
    forged.extend(tpm.file("h.priv"));
    forged.extend(tpm.file("h.pub"));
    // the public area is exactly what the hypervisor expects…
    assert_eq!(&forged[36 + 2 + u16::from_be_bytes([forged[36], forged[37]]) as usize..][..2 + 44], &public[..2 + 44]);
    // …but it was not created under the hypervisor's parent: Load fails integrity
    let (r2, _) = init(&mut hv_for(img), &tpm, &forged, 2);
    assert!(matches!(r2, Err(crate::HvError::TrustSealFailed { rc, .. }) if rc != 0), "{r2:?}");
}

#[test]
fn quote_verifies_with_openssl_and_report_mac_is_checked() {
    use crate::enclave::report::TargetInfo;
    let tpm = Swtpm::start();
    let img = image_digest(b"hypervisor image v1");
    measure(&tpm, &img);
    let mut hv = crate::hypervisor::tests::hv_with(Format::Ept, false, 4);
    let mut cfg = *hv.config();
    cfg.image_digest = img;
    cfg.entropy = urandom;
    let r = cfg.reserved;
    hv = Hypervisor::new(cfg, backing(&r)).unwrap();
    let (ti, _) = init(&mut hv, &tpm, &[], 2);
    let hak = ti.unwrap().hak_public;
    let id = crate::hypervisor::tests::build_small(&mut hv);
    let mr = crate::hypervisor::tests::small_mrenclave();
    hv.init_enclave(id, &crate::hypervisor::tests::unsigned_sigstruct(&mr, 5, 3, 2)).unwrap();
    let target = TargetInfo { mrenclave: crate::trust::quoting_target_mrenclave(), ..Default::default() };
    assert_eq!(hex(&target.mrenclave), hex(&crate::crypto::sha256(b"HyperEnclave-TS quoting identity v1")));
    let report = hv.report(id, &target, &[0x33; 64]).unwrap();
    let q = hv.quote(&report).unwrap();
    assert_eq!(&q[0..4], b"HEQ1");
    assert_eq!(u16::from_le_bytes([q[4], q[5]]), 1);
    assert_eq!(u16::from_le_bytes([q[6], q[7]]), 1);
    assert_eq!(u32::from_le_bytes(q[8..12].try_into().unwrap()), 13);
    assert_eq!(&q[16..400], &report[..384]);
    assert_eq!(&q[400..432], &hak);
    // openssl verifies the Ed25519 signature over bytes [0, 432)
    let mut spki = std::vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    spki.extend_from_slice(&hak);
    let d = &tpm.dir;
    std::fs::write(d.join("hak.der"), &spki).unwrap();
    std::fs::write(d.join("msg.bin"), &q[..432]).unwrap();
    std::fs::write(d.join("sig.bin"), &q[432..]).unwrap();
    let verify = |msg: &Path| {
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-rawin", "-inkey"])
            .arg(d.join("hak.der"))
            .arg("-in")
            .arg(msg)
            .arg("-sigfile")
            .arg(d.join("sig.bin"))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(verify(&d.join("msg.bin")), "openssl verifies the quote signature");
    let mut tampered = q[..432].to_vec();
    tampered[100] ^= 1;
    std::fs::write(d.join("bad.bin"), &tampered).unwrap();
    assert!(!verify(&d.join("bad.bin")), "openssl refuses a changed quote");
    // a report for another target, or with a changed byte, is not quoted
    let other = hv.report(id, &TargetInfo { mrenclave: [9; 32], ..Default::default() }, &[0x33; 64]).unwrap();
    assert_eq!(hv.quote(&other).unwrap_err(), crate::HvError::ReportMacMismatch);
    let mut forged = report;
    forged[320] ^= 1;
    assert_eq!(hv.quote(&forged).unwrap_err(), crate::HvError::ReportMacMismatch);
}

/// Wraps the swtpm transport and damages the response of one chosen exchange.
struct Damaging {
    inner: SwtpmTransport,
    at: usize,
    calls: usize,
    how: u8,
}

impl TpmTransport for Damaging {
    fn transact(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TpmIoError> {
        let n = self.inner.transact(cmd, rsp)?;
        let this = self.calls;
        self.calls += 1;
        if this != self.at {
            return Ok(n);
        }
        match self.how {
            // cut the parameters in half and make the header agree: every field read must be bounded
            0 => {
                let m = 10 + (n - 10) / 2;
                rsp[2..6].copy_from_slice(&(m as u32).to_be_bytes());
                Ok(m)
            }
            // a size field that disagrees with the bytes received
            1 => {
                rsp[2..6].copy_from_slice(&((n + 1) as u32).to_be_bytes());
                Ok(n)
            }
            // every TPM2B size at its maximum: reads past the end must be refused
            _ => {
                for b in rsp[10..n].iter_mut() {
                    *b = 0xff;
                }
                Ok(n)
            }
        }
    }
}

#[test]
fn damaged_responses_are_named_errors_never_panics_or_stale_trust() {
    let tpm = Swtpm::start();
    let img = image_digest(b"hypervisor image v1");
    measure(&tpm, &img);
    // a clean run counts the exchanges of a creation and of an unseal
    let (r, blob) = init(&mut hv_for(img), &tpm, &[], 2);
    r.unwrap();
    for blob_in in [std::vec::Vec::new(), blob.clone()] {
        let mut counter = Damaging { inner: SwtpmTransport { port: tpm.port, locality: 2 }, at: usize::MAX, calls: 0, how: 0 };
        let mut out = std::vec![0u8; 4096];
        let mut hv = hv_for(img);
        hv.trust_init(&mut counter, &blob_in, &mut out).unwrap();
        let exchanges = counter.calls;
        assert!(exchanges >= 10, "{exchanges}");
        let mut refused = 0;
        for at in 0..exchanges {
            for how in 0..3u8 {
                let mut t = Damaging { inner: SwtpmTransport { port: tpm.port, locality: 2 }, at, calls: 0, how };
                let mut hv = hv_for(img);
                let r = hv.trust_init(&mut t, &blob_in, &mut out);
                // flushes are best effort (their damage is ignored); every other damaged exchange fails
                if let Err(e) = r {
                    assert!(matches!(e, crate::HvError::TpmIo { .. } | crate::HvError::TrustSealFailed { .. }), "exchange {at} damage {how}: {e:?}");
                    assert!(!hv.trust_established());
                    refused += 1;
                }
                // leave no transient objects or sessions behind for the next round
                tpm.tool(&["tpm2_flushcontext", "-t"]);
                tpm.tool(&["tpm2_flushcontext", "-s"]);
            }
        }
        // the size-mismatch damage (1) fails every exchange; most others fail too
        std::eprintln!("{} exchanges ({}), {refused} of {} damaged runs refused", exchanges, if blob_in.is_empty() { "create" } else { "unseal" }, 3 * exchanges);
        assert!(refused >= 2 * exchanges, "{refused} of {}", 3 * exchanges);
    }
}

#[test]
fn the_tpm_itself_refuses_other_pcr_values_when_a_caller_skips_the_cores_checks() {
    // What stops a malicious hypervisor image (which would skip trust_init's own checks) is the
    // TPM evaluating the policy. Here a caller at locality 2 rebuilds exactly the policy the root
    // was sealed with and tries to satisfy it after a firmware PCR, then the hypervisor PCR,
    // changed: the TPM refuses (a TPM response code, not the core's check).
    use crate::trust::{parent_template, satisfy, split_blob};
    let tpm = Swtpm::start();
    let img = image_digest(b"hypervisor image v1");
    measure(&tpm, &img);
    let (r, blob) = init(&mut hv_for(img), &tpm, &[], 2);
    r.unwrap();
    let (v0, private, public) = split_blob(&blob).unwrap();
    let policy: [u8; 32] = public[2 + 10..2 + 42].try_into().unwrap();
    // the branches as the core builds them, from the PCRs as they are now
    let mut t = SwtpmTransport { port: tpm.port, locality: 2 };
    let mut values = Vec::new();
    {
        let mut c = Tpm::new(&mut t);
        for i in [0u8, 1, 2, 3, 4, 5, 6, 7] {
            values.push(c.pcr_read_sha256(i).unwrap());
        }
    }
    let (open, _) = crate::trust::hypervisor_pcr_chain(&v0, &img);
    let sel = sha256_selection(0x10ff);
    let loc = policy_locality(&[0; 32], LOCALITY_TWO);
    let branches: Vec<[u8; 32]> = open
        .iter()
        .map(|v| {
            let mut all = values.clone();
            all.push(*v);
            policy_pcr(&loc, &sel, &all)
        })
        .collect();
    assert_eq!(policy_or(&branches), policy, "the rebuilt policy is the sealed object's");
    let nonce = [3u8; 16];
    let try_unseal = |t: &mut SwtpmTransport| -> Result<(), crate::HvError> {
        let mut c = Tpm::new(t);
        let parent = c.create_primary(&parent_template(&policy))?;
        let r = satisfy(&mut c, &nonce, &sel, &branches).and_then(|s| c.load(parent, s, private, public).map(|h| (s, h)));
        let _ = c.flush(parent);
        let (_, item) = r?;
        let r = satisfy(&mut c, &nonce, &sel, &branches).and_then(|s| {
            let mut out = [0u8; 32];
            c.unseal(item, s, &mut out).map(|_| ())
        });
        let _ = c.flush(item);
        r
    };
    // unchanged PCRs: this caller gets through (the check below is not vacuous)
    try_unseal(&mut t).unwrap();
    // a firmware PCR changes: PolicyOR is refused by the TPM
    tpm.tool(&["tpm2_pcrextend", "3:sha256=2222222222222222222222222222222222222222222222222222222222222222"]);
    let e = try_unseal(&mut t).unwrap_err();
    assert!(matches!(e, crate::HvError::TrustSealFailed { rc, what } if rc != 0 && what.contains("PolicyOR")), "{e:?}");
    tpm.tool(&["tpm2_flushcontext", "-s"]);
    tpm.tool(&["tpm2_flushcontext", "-t"]);
    // after a reboot (PCRs reset, same seeds) with the same firmware but the hypervisor PCR off
    // by one event: refused by the TPM too
    let tpm = tpm.reboot();
    measure(&tpm, &img);
    tpm.tool(&["tpm2_pcrextend", "12:sha256=3333333333333333333333333333333333333333333333333333333333333333"]);
    let mut t = SwtpmTransport { port: tpm.port, locality: 2 };
    let e = try_unseal(&mut t).unwrap_err();
    assert!(matches!(e, crate::HvError::TrustSealFailed { rc, .. } if rc != 0), "{e:?}");
}
