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

/// `out ERESUME, eax` from the exception handler (issue 14): EAX = `ERESUME_CONTINUE` resumes
/// the interrupted context from SSA frame CSSA-1 (after `ssa::validate_resume`), EAX =
/// `ERESUME_ABORT` ends the thread (the ECALL returns ENCLAVE_FAULT).
pub const PORT_ERESUME: u16 = 0x14;
pub const ERESUME_CONTINUE: u32 = 0;
pub const ERESUME_ABORT: u32 = 1;

/// Runtime hypercalls added for EDMM (mailbox NR at `PORT_HYPERCALL`).
pub mod edmm_hc {
    /// EACCEPT: A0 = page address (linear, page aligned, inside ELRANGE), A1 = the SECINFO flags
    /// the enclave expects (see `crate::enclave::edmm::secinfo`). EAX = 0 or `STATUS_PAGE_STATE`.
    pub const EACCEPT: u64 = 3;
    /// EMODPE: A0 = page address, A1 = permissions to add (R=1 W=2 X=4). EAX = 0 or
    /// `STATUS_PAGE_STATE`.
    pub const EMODPE: u64 = 4;
    /// The page is not in the state the step needs, or EACCEPT's flags do not match it.
    pub const STATUS_PAGE_STATE: u64 = 42;
}

/// Reserved OCALL index of rt's `heap_grow`: input u64 ELRANGE offset, u64 page count (16
/// bytes LE); the host runs ENCLAVE_AUGMENT on that range and answers with length 0 (or
/// 0x8000_0000 | 7 when it refused).
pub const OCALL_HEAP_GROW: u32 = 0xFFFF_FF00;

/// The AEX frame the runners write (SGX SSA layout, SDM vol. 3D 37.9). Offsets are from the
/// start of GPRSGX, which occupies the last `GPRSGX_SIZE` bytes of an SSA frame.
pub mod gpr {
    pub const GPRSGX_SIZE: u64 = 184;
    pub const RAX: usize = 0;
    pub const RCX: usize = 8;
    pub const RDX: usize = 16;
    pub const RBX: usize = 24;
    pub const RSP: usize = 32;
    pub const RBP: usize = 40;
    pub const RSI: usize = 48;
    pub const RDI: usize = 56;
    /// R8..R15 at 64, 72, ..., 120.
    pub const R8: usize = 64;
    pub const RFLAGS: usize = 128;
    pub const RIP: usize = 136;
    pub const URSP: usize = 144;
    pub const URBP: usize = 152;
    /// u32: vector in bits 7:0, type in 10:8 (`EXIT_TYPE_HW` / `EXIT_TYPE_SW`), bit 31 valid.
    pub const EXITINFO: usize = 160;
    pub const FSBASE: usize = 168;
    pub const GSBASE: usize = 176;
    pub const EXIT_TYPE_HW: u32 = 3;
    pub const EXIT_TYPE_SW: u32 = 6;
    pub const EXIT_VALID: u32 = 1 << 31;
    /// MISC EXINFO (SECS.MISCSELECT bit 0), just before GPRSGX: MADDR (CR2) at GPRSGX-16 (u64),
    /// ERRCD at GPRSGX-8 (u32).
    pub const EXINFO_MADDR: i64 = -16;
    pub const EXINFO_ERRCD: i64 = -8;
    pub const MISC_EXINFO: u32 = 1;
    /// Bytes of the TCS page where CSSA lives (SGX TCS layout).
    pub const TCS_CSSA: usize = 24;
}
