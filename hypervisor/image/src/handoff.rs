//! What the driver hands over (mirror of hypervisor/driver/hyperenclave_handoff.h).

pub const MAGIC: u64 = 0x464f_444e_4148_4548; // "HEHANDOF"
pub const VERSION: u32 = 3;
pub const MAX_RANGES: usize = 64;

pub const OP_INIT: u64 = 1;
pub const OP_LAUNCH: u64 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Range {
    pub start: u64,
    pub size: u64,
    pub kind: u64,
}

#[repr(C)]
pub struct Handoff {
    pub magic: u64,
    pub version: u32,
    pub ncpus: u32,
    pub reserved_base: u64,
    pub reserved_size: u64,
    pub image_base: u64,
    pub image_load_size: u64,
    pub pool_base: u64,
    pub hv_size: u64,
    pub host_cr3: u64,
    pub leave_tramp: u64,
    pub leave_tramp_pa: [u64; 2],
    pub nranges: u32,
    pub pcr: u32,
    pub image_sha256: [u8; 32],
    pub ranges: [Range; MAX_RANGES],
    /// Version 3: one area of `percpu_size` bytes per possible CPU id from `percpu_base` (no fixed
    /// CPU limit): FPU save area at +0, the backend's vCPU state at +4096, the stack below the end.
    pub percpu_base: u64,
    pub percpu_size: u64,
    pub cpu_slots: u32,
    pub reserved0: u32,
}

/// Linux's state at the call, pushed by the driver's he_enter: where it resumes as a guest.
#[repr(C)]
pub struct LinuxState {
    pub rip: u64,
    pub rsp: u64,
    pub cr3: u64,
}
