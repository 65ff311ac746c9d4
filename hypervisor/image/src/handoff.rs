//! What the driver hands over: `Handoff` and its constants are defined once in
//! hyperenclave-abi (hypervisor/abi), from which the driver's hyperenclave_handoff.h is generated.

pub use hyperenclave_abi::handoff::{Handoff, HANDOFF_MAGIC, HANDOFF_VERSION, MAX_CPUS, MAX_RANGES, OP_INIT, OP_LAUNCH};

/// Linux's state at the call, pushed by the driver's he_enter: where it resumes as a guest.
#[repr(C)]
pub struct LinuxState {
    pub rip: u64,
    pub rsp: u64,
    pub cr3: u64,
}
