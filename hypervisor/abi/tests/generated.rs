//! The generated C headers and TypeScript module equal what abi-gen emits from this crate, and
//! abi-gen --check fails (naming the file) when one of them is stale.
use std::path::Path;
use std::process::Command;

const GEN: &str = env!("CARGO_BIN_EXE_abi-gen");
const FILES: [&str; 6] = [
    "hypervisor/driver/hyperenclave_hypercall.h",
    "hypervisor/driver/hyperenclave_ioctl.h",
    "hypervisor/driver/hyperenclave_handoff.h",
    "hypervisor/driver/hyperenclave_image.h",
    "src/hypervisor/abi.generated.ts",
    "src/measure/image-abi.generated.ts",
];

#[test]
fn generated_files_are_current() {
    let out = Command::new(GEN).arg("--check").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_stale_generated_file_fails_the_check() {
    let dir = std::env::temp_dir().join(format!("abi-gen-test-{}", std::process::id()));
    for f in FILES {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
    }
    let st = Command::new(GEN).arg("--root").arg(&dir).status().unwrap();
    assert!(st.success());
    assert!(Command::new(GEN).args(["--check", "--root"]).arg(&dir).status().unwrap().success());
    for f in FILES {
        let p = dir.join(f);
        let good = std::fs::read_to_string(&p).unwrap();
        // a hand edit: one call number changed in the copy
        std::fs::write(&p, good.replacen("0x", "0x1", 1)).unwrap();
        let out = Command::new(GEN).args(["--check", "--root"]).arg(&dir).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{f}: {err}");
        assert!(err.contains(&format!("{f} is stale")), "{err}");
        std::fs::write(&p, good).unwrap();
    }
    assert!(Path::new(&dir).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
