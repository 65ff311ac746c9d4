//! hyperenclave-addon: the Node-API addon. A hand-declared N-API layer (`napi_sys`, `napi`),
//! the syscall bridge (`sys`: ioctl, mmap, CPUID, MSRs), typed /dev/hyperenclave calls (`device`), the KVM enclave runner (`kvm`,
//! `runner`) and the bindings to hyperenclave-core (`core_binding`). The JS surface is
//! in `exports`; everything else is plain Rust, unit-tested with `cargo test`.

pub mod device;
pub mod kvm;
pub mod runner;
pub mod sys;
pub mod tpm;

#[cfg(not(test))]
mod napi;
#[cfg(not(test))]
mod napi_sys;
pub mod core_binding;
#[cfg(not(test))]
mod exports;
#[cfg(not(test))]
mod async_call;
