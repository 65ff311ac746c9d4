//! The enclave runtime's protocol (hypervisor/enclaves/rt), shared by both runners that execute
//! enclave code: the addon's KVM runner (emulated platform) and the bare-metal image's
//! ENCLAVE_CALL. Register conventions are described in hypervisor/addon/src/runner.rs.

/// `in al, EEXIT`: ECALL done (status in the mailbox), park; `out EEXIT, eax`: done, no park.
pub const PORT_EEXIT: u16 = 0x10;
/// `in eax, OCALL`: call out to the host (mailbox NR, LEN; data in the shared buffer).
pub const PORT_OCALL: u16 = 0x11;
/// `in eax, HYPERCALL`: EGETKEY / EREPORT (mailbox NR, A0..A2).
pub const PORT_HYPERCALL: u16 = 0x12;
/// `out PANIC, eax`: panic message (EAX bytes) in the shared buffer.
pub const PORT_PANIC: u16 = 0x13;

/// Mailbox words (u64, little-endian) at the start of the mailbox page.
pub mod mb {
    pub const FUNC: usize = 0;
    pub const IN_LEN: usize = 1;
    pub const STATUS: usize = 2;
    pub const SHARED: usize = 3;
    pub const CAP: usize = 4;
    pub const NR: usize = 5;
    pub const A0: usize = 6;
    pub const A1: usize = 7;
    pub const A2: usize = 8;
    pub const LEN: usize = 9;
}

/// Hypercall numbers (mailbox NR at `PORT_HYPERCALL`) and the runner's own status codes.
pub mod hc {
    /// A0 = KEYREQUEST (80 B), A1 = key output (16 B); enclave addresses.
    pub const EGETKEY: u64 = 1;
    /// A0 = TARGETINFO (56 B), A1 = REPORTDATA (64 B), A2 = REPORT output (432 B).
    pub const EREPORT: u64 = 2;
    pub const STATUS_UNKNOWN: u64 = 1;
    pub const STATUS_BAD_POINTER: u64 = 0x101;
    pub const STATUS_NO_CORE: u64 = 0x102;
}

/// ECALL status bit: 0x8000_0000 | the enclave's error code (rt's `err`).
pub const ECALL_ERROR: u64 = 0x8000_0000;
/// rt's error code for a refused OCALL.
pub const ERR_OCALL: u64 = 7;
