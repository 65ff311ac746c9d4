//! The enclave runtime's protocol (hypervisor/enclaves/rt), shared by both runners that execute
//! enclave code: the addon's KVM runner (emulated platform) and the bare-metal image's
//! ENCLAVE_CALL. Defined once in hyperenclave-abi (`enclave_rt`); register conventions are
//! described in hypervisor/addon/src/runner.rs.

pub use hyperenclave_abi::enclave_rt::{ecall, err, hc, mb, PORT_EEXIT, PORT_HYPERCALL, PORT_OCALL, PORT_PANIC};

/// ECALL status bit: ECALL_ERROR | the enclave's error code (`err`).
pub const ECALL_ERROR: u64 = ecall::ERROR;
/// The runtime's error code for a refused OCALL.
pub const ERR_OCALL: u64 = err::OCALL as u64;

/// Issue 14 (exceptions, EDMM): ERESUME port, EDMM runtime hypercalls, the heap-grow OCALL and
/// the SSA frame layout, also from hyperenclave-abi.
pub use hyperenclave_abi::enclave_rt::{edmm_hc, gpr, ERESUME_ABORT, ERESUME_CONTINUE, OCALL_HEAP_GROW, PORT_ERESUME};
