//! What the driver hands over: `Handoff`, `LinuxState` and their constants are defined once in
//! hyperenclave-abi (hypervisor/abi), from which the driver's hyperenclave_handoff.h is generated.

pub use hyperenclave_abi::handoff::{Handoff, LinuxState, HANDOFF_MAGIC, HANDOFF_VERSION, MAX_RANGES, OP_INIT, OP_LAUNCH};
