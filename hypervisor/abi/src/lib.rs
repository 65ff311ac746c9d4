//! The one definition of the HyperEnclave ABI (docs/hypercall-abi.md): hypercall numbers,
//! statuses, the records hypercalls exchange, the /dev/hyperenclave ioctls and the driver →
//! image handoff. `no_std`, no dependencies; core, image and addon use it directly, and
//! `abi-gen` (src/bin/abi-gen.rs) emits hypervisor/driver/hyperenclave_{hypercall,ioctl,handoff}.h
//! and src/hypervisor/abi.generated.ts from it (`cargo test -p hyperenclave-abi` fails when one
//! of them is stale).
//!
//! Adding a hypercall is one edit here: a line in `nr` (and, if it has one, a status in
//! `statuses!` or a record with `record!`), then `cargo run -p hyperenclave-abi --bin abi-gen`.
#![no_std]

pub mod meta;
#[macro_use]
mod macros;

pub use meta::{AbiType, ErrorClass, StatusInfo};

/// Hypercall ABI version: major in bits 31:16, minor in 15:0. A caller with another major is refused.
/// Minor 1: TRUST_INIT/HAK_PUBLIC/QUOTE (0x40-0x42), ENCLAVE_OCALL_RETURN (0x19),
/// ENCLAVE_SHARED_ADD (0x1A), the EDMM leaves (0x24-0x27) and statuses 36-42 (a 1.0 caller never
/// sees them unless it makes those calls).
pub const ABI_VERSION: u32 = 0x0001_0001;

consts! {
    /// Call numbers (RAX). Arguments in RDI, RSI, RDX, RCX, R8; outputs in RDI, RSI, RDX.
    pub mod nr ("HC_", "HC") {
        VERSION: u64 = 0x00;
        STATUS: u64 = 0x01;
        ENABLE: u64 = 0x02;
        DISABLE: u64 = 0x03;
        IMAGE_DIGEST: u64 = 0x04;
        ENCLAVE_CREATE: u64 = 0x10;
        ENCLAVE_ADD: u64 = 0x11;
        ENCLAVE_EXTEND: u64 = 0x12;
        ENCLAVE_INIT: u64 = 0x13;
        ENCLAVE_ENTER: u64 = 0x14;
        ENCLAVE_EXIT: u64 = 0x15;
        ENCLAVE_DESTROY: u64 = 0x16;
        ENCLAVE_INFO: u64 = 0x17;
        /// Runs one ECALL (RDI = id, RSI = TCS offset, RDX = ECALL number, RCX = 4 KiB in/out
        /// buffer, R8 = input length; RDI = ECALL status). Served by the platform that can execute
        /// enclave code (the bare-metal image); `dispatch` answers UNKNOWN_CALL.
        ENCLAVE_CALL: u64 = 0x18;
        /// Resumes a thread parked in an OCALL (RDI = id, RSI = TCS offset, RDX = answer: output
        /// length or 0x8000_0000 | code, RCX = buffer with the output at its start). Returns like
        /// ENCLAVE_CALL. Served by the bare-metal image; `dispatch` answers UNKNOWN_CALL.
        ENCLAVE_OCALL_RETURN: u64 = 0x19;
        /// Registers the enclave's shared (untrusted) region before EINIT: RDI = id, RSI = host
        /// physical address (page aligned), RDX = pages (1..=SHARED_MAX_PAGES). Every page must be
        /// host RAM the host may access (never hypervisor, EPC or reserved memory), else
        /// HOST_ACCESS_DENIED. The platform maps it outside ELRANGE (mailbox SHARED/CAP).
        ENCLAVE_SHARED_ADD: u64 = 0x1A;
        /// Enclave-only (EREPORT): the host gets ENCLAVE_ONLY.
        REPORT: u64 = 0x20;
        VERIFY_REPORT: u64 = 0x21;
        /// Enclave-only (EGETKEY): the host gets ENCLAVE_ONLY.
        GET_KEY: u64 = 0x22;
        KEYSLOT_ALLOC: u64 = 0x30;
        KEYSLOT_BIND: u64 = 0x31;
        KEYSLOT_RELEASE: u64 = 0x32;
        KEYSLOT_FLUSH: u64 = 0x33;
        /// Unseals or creates the TPM-sealed root secret (RDI = blob, RSI = its length, RDX = output
        /// for a new blob, RCX = its capacity ≥ 4096; out: RDI = new blob length, RSI = flags (bit 0
        /// created, bit 1 HAK PCR extended), RDX = HAK PCR). Served by `dispatch_with_tpm` (the
        /// platform that owns a TPM transport); `dispatch` answers UNKNOWN_CALL.
        TRUST_INIT: u64 = 0x40;
        /// RDI = 32-byte output for the HAK (Ed25519 public key); out: RDI = HAK PCR.
        HAK_PUBLIC: u64 = 0x41;
        /// RDI = a 432-byte REPORT targeted at the quoting identity, RSI = 496-byte output.
        QUOTE: u64 = 0x42;
        /// EAUG: RDI = id, RSI = ELRANGE offset, RDX = page count. Zeroed EPC pages, REG, RW,
        /// PENDING (not mapped for the enclave until it EACCEPTs them). Only after EINIT, only for
        /// enclaves whose SECS.ATTRIBUTES has `attr::EDMM`, only at offsets with no page.
        ENCLAVE_AUGMENT: u64 = 0x24;
        /// EMODPR: RDI = id, RSI = offset, RDX = count, RCX = new permissions (a subset of the
        /// current ones). Pages become MODIFIED until the enclave EACCEPTs them.
        ENCLAVE_RESTRICT: u64 = 0x25;
        /// EMODT: RDI = id, RSI = offset, RDX = count, RCX = new type (TRIM = 4). Pages become
        /// MODIFIED (inaccessible) until EACCEPT.
        ENCLAVE_MODIFY_TYPE: u64 = 0x26;
        /// EREMOVE of accepted TRIM pages: RDI = id, RSI = offset, RDX = count; out RDI = pages
        /// returned to the EPC (scrubbed).
        ENCLAVE_REMOVE: u64 = 0x27;
    }
}

statuses! {
    Success = 0, "SUCCESS", Ok, "success";
    UnknownCall = 1, "UNKNOWN_CALL", Unsupported, "unknown hypercall number";
    VersionMismatch = 2, "VERSION_MISMATCH", Unsupported, "caller and hypervisor ABI majors differ";
    InvalidArgument = 3, "INVALID_ARGUMENT", BadInput, "misaligned value or bad range";
    BufferTooSmall = 4, "BUFFER_TOO_SMALL", BadInput, "output buffer too small";
    HostAccessDenied = 5, "HOST_ACCESS_DENIED", BadInput, "buffer lies in hypervisor or enclave memory (host fault)";
    NotEnabled = 6, "NOT_ENABLED", Usage, "hypervisor is not enabled";
    AlreadyEnabled = 7, "ALREADY_ENABLED", Usage, "hypervisor is already enabled";
    EnclavesAlive = 8, "ENCLAVES_ALIVE", Usage, "enclaves still exist; destroy them first";
    NoSuchEnclave = 9, "NO_SUCH_ENCLAVE", NotFound, "no enclave with that id";
    TooManyEnclaves = 10, "TOO_MANY_ENCLAVES", BadInput, "enclave limit reached";
    EnclaveState = 11, "ENCLAVE_STATE", BadInput, "operation not allowed in the enclave state (e.g. add after init)";
    SecsInvalid = 12, "SECS_INVALID", BadInput, "SECS field invalid (size, base, attributes, xfrm, ssa)";
    SecinfoInvalid = 13, "SECINFO_INVALID", BadInput, "SECINFO flags invalid";
    TcsInvalid = 14, "TCS_INVALID", BadInput, "TCS page invalid";
    PageOverlap = 15, "PAGE_OVERLAP", BadInput, "a page already exists at that offset";
    OutsideElrange = 16, "OUTSIDE_ELRANGE", BadInput, "offset beyond the declared enclave size";
    PageNotAdded = 17, "PAGE_NOT_ADDED", BadInput, "no page added at that offset";
    SigstructInvalid = 18, "SIGSTRUCT_INVALID", BadInput, "SIGSTRUCT malformed";
    SignatureInvalid = 19, "SIGNATURE_INVALID", VerifyFailed, "SIGSTRUCT RSA signature does not verify";
    AttributesMismatch = 20, "ATTRIBUTES_MISMATCH", VerifyFailed, "enclave attributes/MISCSELECT differ from the SIGSTRUCT under its masks";
    MeasurementMismatch = 21, "MEASUREMENT_MISMATCH", VerifyFailed, "MRENCLAVE differs from SIGSTRUCT.ENCLAVEHASH";
    TcsBusy = 22, "TCS_BUSY", BadInput, "TCS already entered";
    TcsNotEntered = 23, "TCS_NOT_ENTERED", BadInput, "TCS was not entered";
    EnclaveBusy = 24, "ENCLAVE_BUSY", BadInput, "threads still inside the enclave";
    EpcExhausted = 25, "EPC_EXHAUSTED", BadInput, "enclave page cache exhausted";
    OutOfMemory = 26, "OUT_OF_MEMORY", Internal, "page-table pool exhausted";
    ReportMacMismatch = 27, "REPORT_MAC_MISMATCH", VerifyFailed, "REPORT MAC does not verify";
    KeyRequestInvalid = 28, "KEYREQUEST_INVALID", BadInput, "KEYREQUEST field invalid";
    SvnTooHigh = 29, "SVN_TOO_HIGH", BadInput, "requested SVN above the enclave's own";
    KeySlotsExhausted = 30, "KEYSLOTS_EXHAUSTED", BadInput, "no free key slot (ASID/KeyID); released ones need a flush";
    KeySlotInvalid = 31, "KEYSLOT_INVALID", BadInput, "key slot not allocated or out of range";
    NoKeySlots = 32, "NO_KEYSLOTS", Unsupported, "platform has no memory-encryption key slots";
    InternalError = 33, "INTERNAL_ERROR", Internal, "hypervisor internal error";
    /// ENCLAVE_CALL: an interrupt arrived while the enclave ran; it is parked, call again to resume.
    EnclaveInterrupted = 34, "ENCLAVE_INTERRUPTED", Internal, "an interrupt arrived while the enclave ran; call again to resume";
    /// ENCLAVE_CALL: the enclave faulted or misbehaved; that thread is dead (destroy the enclave).
    EnclaveFault = 35, "ENCLAVE_FAULT", BadInput, "the enclave thread faulted and was ended (see the hypervisor log)";
    /// REPORT / GET_KEY asked for by the host: they are served only to a running enclave.
    EnclaveOnly = 36, "ENCLAVE_ONLY", Usage, "REPORT and GET_KEY are served only to a running enclave, never to the host";
    /// EREPORT/EGETKEY/QUOTE/HAK_PUBLIC/VERIFY_REPORT before TRUST_INIT.
    TrustNotEstablished = 37, "TRUST_NOT_ESTABLISHED", Usage, "the root of trust is not established (TRUST_INIT has not run since load or enable)";
    /// The TPM refused a sealing step, or the sealed root is not the hypervisor's.
    TrustSealFailed = 38, "TRUST_SEAL_FAILED", VerifyFailed, "the TPM refused to seal or unseal the root secret, or the sealed root is not for this hypervisor and PCR state";
    /// The TPM transport failed.
    TpmIo = 39, "TPM_IO", Internal, "the hypervisor could not talk to the TPM";
    /// ENCLAVE_CALL / ENCLAVE_OCALL_RETURN: the thread made an OCALL and is parked (RDI = OCALL
    /// index, RSI = input length in the caller's buffer); answer with ENCLAVE_OCALL_RETURN.
    EnclaveOcall = 40, "ENCLAVE_OCALL", Internal, "the enclave thread made an OCALL and is parked; answer with ENCLAVE_OCALL_RETURN";
    /// ERESUME found a forged SSA frame (RIP/RSP outside ELRANGE, RIP not executable, reserved
    /// RFLAGS bits); the thread ended.
    SsaInvalid = 41, "SSA_INVALID", BadInput, "ERESUME found a forged SSA frame; the enclave thread was ended";
    /// An EDMM step on a page in the wrong state, or EACCEPT flags that do not match the page.
    PageState = 42, "PAGE_STATE", BadInput, "EDMM step on a page in the wrong state, or EACCEPT flags that do not match it";
}

consts! {
    /// Sizes of the buffers hypercalls read and write (bytes).
    pub mod sizes ("HC_", "SIZES") {
        PAGE_SIZE: usize = 4096;
        /// STATUS record (`StatusRecord`).
        STATUS_SIZE: usize = StatusRecord::SIZE;
        /// ENCLAVE_INFO record (`EnclaveInfo`).
        ENCLAVE_INFO_SIZE: usize = EnclaveInfo::SIZE;
        /// ENABLE memory-map entry (`MemMapEntry`).
        MEMMAP_ENTRY_SIZE: usize = MemMapEntry::SIZE;
        /// Most ENABLE memory-map entries.
        MAX_MEMMAP_ENTRIES: usize = 128;
        /// SGX REPORT.
        REPORT_SIZE: usize = 432;
        /// The part of SECS ENCLAVE_CREATE reads.
        SECS_SIZE: usize = Secs::SIZE;
        SIGSTRUCT_SIZE: usize = 1808;
        /// The part of TARGETINFO used.
        TARGETINFO_SIZE: usize = 56;
        /// The part of KEYREQUEST used.
        KEYREQUEST_SIZE: usize = 80;
        /// QUOTE output (`Quote`).
        QUOTE_SIZE: usize = Quote::SIZE;
        /// HAK: Ed25519 public key bytes.
        HAK_PUBLIC_SIZE: usize = 32;
        /// TRUST_INIT's output buffer (RCX) is at least this; a blob given in is at most this.
        TRUST_BLOB_CAPACITY: usize = 4096;
        /// Largest shared region ENCLAVE_SHARED_ADD accepts (pages): 1 MiB.
        SHARED_MAX_PAGES: usize = 256;
    }
}

consts! {
    /// STATUS record `flags` bits.
    pub mod status_flags ("HC_STATUS_", "STATUS_FLAGS") {
        ENABLED: u64 = 1 << 0;
        /// NPT (AMD); clear: EPT.
        NPT: u64 = 1 << 1;
        KEY_SLOTS: u64 = 1 << 2;
        SIGNATURES_REQUIRED: u64 = 1 << 3;
        /// TRUST_INIT ran since the last load/enable: EREPORT, EGETKEY, QUOTE and HAK_PUBLIC are served.
        TRUST_ESTABLISHED: u64 = 1 << 4;
        /// DMA protection: an IOMMU the hypervisor owns translates every device's DMA (only while enabled).
        DMA_PROTECTED: u64 = 1 << 5;
    }
}

consts! {
    /// CPUID leaves the hypervisor answers for its guest (the demoted host): leaf 1 ECX bit 31
    /// (hypervisor present) and these.
    pub mod cpuid ("HC_CPUID_", "CPUID") {
        /// EAX = the highest hypervisor leaf (LEAF_VERSION); EBX, ECX, EDX = HC_CPUID_SIGNATURE.
        LEAF_SIGNATURE: u32 = 0x4000_0000;
        /// EAX = ABI_VERSION.
        LEAF_VERSION: u32 = 0x4000_0001;
    }
}

consts! {
    /// STATUS record `key_slot_kind`.
    pub mod slot_kind ("HC_SLOT_", "SLOT_KIND") {
        NONE: u64 = 0;
        ASID: u64 = 1;
        KEYID: u64 = 2;
    }
}

consts! {
    /// TRUST_INIT flags (RSI on return).
    pub mod trust_flags ("HC_TRUST_", "TRUST_FLAGS") {
        CREATED: u64 = 1 << 0;
        PCR_EXTENDED: u64 = 1 << 1;
    }
}

consts! {
    /// Memory-map entry kinds (ENABLE's entries and the handoff's ranges).
    pub mod mem_kind ("HE_MEM_", "MEM_KIND") {
        RAM: u64 = 0;
        RESERVED: u64 = 1;
        MMIO: u64 = 2;
    }
}

byte_strings! {
    /// Byte strings the host and the hypervisor must agree on.
    pub mod labels {
        /// TARGETINFO.MEASUREMENT an enclave's EREPORT names to be quoted: SHA-256 of this.
        QUOTING_IDENTITY_LABEL = b"HyperEnclave-TS quoting identity v1";
        /// The HAK event's data: this prefix, then the key's 64 lowercase hex characters.
        HAK_EVENT_PREFIX = b"hyperenclave-hak:ed25519:";
        /// What the bare-metal hypervisor extends into its PCR at DISABLE.
        HYPERVISOR_EXIT_EVENT = b"hyperenclave:hypervisor-exit v=1";
        /// First bytes of a QUOTE.
        QUOTE_MAGIC = b"HEQ1";
        /// CPUID leaf HC_CPUID_LEAF_SIGNATURE's EBX, ECX, EDX (12 bytes, little-endian words).
        CPUID_SIGNATURE = b"HyperEnclave";
    }
}
const _: () = assert!(labels::CPUID_SIGNATURE.len() == 12, "the CPUID signature fills EBX, ECX, EDX");

consts! {
    /// SECINFO.FLAGS: R/W/X in bits 2:0, page type in 15:8 (ENCLAVE_ADD's RCX).
    pub mod secinfo ("HC_SECINFO_", "SECINFO") {
        R: u64 = 1;
        W: u64 = 2;
        X: u64 = 4;
        PT_TCS: u64 = 1 << 8;
        PT_REG: u64 = 2 << 8;
        /// A page being given back (EMODT to TRIM, EACCEPT, EREMOVE).
        PT_TRIM: u64 = 4 << 8;
        /// EACCEPT flag bits: the page was augmented / modified (SGX SECINFO bits 3, 4, 5).
        PENDING: u64 = 1 << 3;
        MODIFIED: u64 = 1 << 4;
        PR: u64 = 1 << 5;
        /// EACCEPT flags for a freshly augmented page (REG | RW | PENDING).
        ACCEPT_AUGMENTED: u64 = (2 << 8) | 1 | 2 | (1 << 3);
        /// EACCEPT flags for a page the host trimmed (TRIM | MODIFIED).
        ACCEPT_TRIM: u64 = (4 << 8) | (1 << 4);
    }
}

consts! {
    /// SECS/REPORT ATTRIBUTES.FLAGS bits.
    pub mod attr ("HC_ATTR_", "ATTR") {
        INIT: u64 = 1;
        DEBUG: u64 = 2;
        MODE64BIT: u64 = 4;
        PROVISIONKEY: u64 = 16;
        EINITTOKENKEY: u64 = 32;
        KSS: u64 = 128;
        /// HyperEnclave extension (a bit SGX reserves): dynamic memory (EDMM leaves) allowed.
        EDMM: u64 = 256;
    }
}

consts! {
    /// KEYREQUEST.KEYNAME.
    pub mod keyname ("HC_KEYNAME_", "KEYNAME") {
        REPORT: u64 = 3;
        SEAL: u64 = 4;
    }
}

consts! {
    /// KEYREQUEST.KEYPOLICY bits.
    pub mod keypolicy ("HC_KEYPOLICY_", "KEYPOLICY") {
        MRENCLAVE: u64 = 1;
        MRSIGNER: u64 = 2;
        NOISVPRODID: u64 = 4;
    }
}

record! {
    /// The SECS bytes ENCLAVE_CREATE reads (SGX layout; bytes 24..48 must be zero).
    pub struct Secs("he_secs", 64) {
        /// ELRANGE size: a power of two, at least two pages.
        pub size: u64,
        /// ELRANGE base, aligned to size.
        pub base: u64,
        /// SSA frame size in pages.
        pub ssa_frame_size: u32,
        pub misc_select: u32,
        pub reserved: [u8; 24],
        /// ATTRIBUTES.FLAGS (HC_ATTR_*).
        pub attributes: u64,
        /// ATTRIBUTES.XFRM.
        pub xfrm: u64,
    }
}

consts! {
    /// QUOTE `flags` bits (bytes 12..16), set as the platform stood when the quote was made.
    pub mod quote_flags ("HC_QUOTE_FLAG_", "QUOTE_FLAGS") {
        /// An IOMMU the hypervisor owns translated every device's DMA (the verifier's
        /// `hypervisor.requireDmaProtection` policy requires it).
        DMA_PROTECTED: u32 = 1 << 0;
    }
}

consts! {
    /// QUOTE output's fixed values (`Quote`).
    pub mod quote ("HC_QUOTE_", "QUOTE") {
        VERSION: u16 = 1;
        /// Ed25519 (RFC 8032, pure).
        SIG_ED25519: u16 = 1;
        /// The HAK's signature covers bytes [0, SIGNED_BYTES).
        SIGNED_BYTES: usize = core::mem::offset_of!(Quote, signature);
    }
}

record! {
    /// QUOTE output: an enclave REPORT whose MAC the hypervisor checked, signed by the HAK.
    pub struct Quote("he_quote", 496) {
        /// QUOTE_MAGIC ("HEQ1").
        pub magic: [u8; 4],
        /// HC_QUOTE_VERSION.
        pub version: u16,
        /// HC_QUOTE_SIG_ED25519.
        pub sig_alg: u16,
        /// The PCR the HAK event is extended into.
        pub hak_pcr: u32,
        /// Platform flags the HAK signs with the report (HC_QUOTE_FLAG_*); other bits 0.
        pub flags: u32,
        /// SGX REPORT body (the MAC-checked bytes 0..384 of the REPORT).
        pub body: [u8; 384],
        /// HAK public key (Ed25519).
        pub hak: [u8; 32],
        /// Ed25519 signature over bytes [0, HC_QUOTE_SIGNED_BYTES).
        pub signature: [u8; 64],
    }
}

record! {
    /// STATUS record: little-endian u64 words, the image digest, then (1.x, offset 240) the DMA words.
    pub struct StatusRecord("he_hv_status", 256) {
        pub abi_version: u64,
        /// HC_STATUS_* bits.
        pub flags: u64,
        pub reserved_base: u64,
        pub hypervisor_bytes: u64,
        pub image_bytes: u64,
        pub epc_bytes: u64,
        pub epc_pages_total: u64,
        pub epc_pages_used: u64,
        pub pool_frames_total: u64,
        pub pool_frames_used: u64,
        pub enclaves: u64,
        pub max_enclaves: u64,
        /// HC_SLOT_*.
        pub key_slot_kind: u64,
        pub slot_min: u64,
        pub slot_max: u64,
        pub slots_allocated: u64,
        pub slots_pending_flush: u64,
        pub flushes: u64,
        /// Host faults in hypervisor memory.
        pub faults_hypervisor: u64,
        /// Host faults in enclave memory.
        pub faults_enclave: u64,
        /// Host faults outside the memory map.
        pub faults_unmapped: u64,
        /// Host faults on permissions.
        pub faults_permission: u64,
        pub hypercalls: u64,
        pub enclaves_created: u64,
        pub enclaves_destroyed: u64,
        pub reports_issued: u64,
        /// SHA-256 of the hypervisor image.
        pub image_digest: [u8; 32],
        /// DMA faults the IOMMU logged since protection went on (0 without protection).
        pub dma_faults: u64,
        /// The IOMMU's register base (0 without one).
        pub iommu_base: u64,
    }
}

record! {
    /// ENCLAVE_INFO record.
    pub struct EnclaveInfo("he_enclave_info", 128) {
        /// 0 created, 1 initialized.
        pub state: u32,
        pub epc_pages: u32,
        pub threads_inside: u32,
        pub ssa_frame_size: u32,
        pub base: u64,
        pub size: u64,
        pub nested_pointer: u64,
        pub mrenclave: [u8; 32],
        pub mrsigner: [u8; 32],
        pub attributes: u64,
        pub xfrm: u64,
        pub misc_select: u32,
        pub isv_prod_id: u16,
        pub isv_svn: u16,
    }
}

record! {
    /// One ENABLE memory-map entry (and one handoff range).
    pub struct MemMapEntry("he_range", 24) {
        pub start: u64,
        pub size: u64,
        /// HE_MEM_*.
        pub kind: u64,
    }
}

/// The /dev/hyperenclave ioctl ABI (user space ↔ driver).
pub mod ioctl {
    use super::*;

    consts! {
        /// /dev/hyperenclave ioctl ABI: versioned like the hypercall ABI (major in bits 31:16,
        /// minor in 15:0); a caller whose major differs is refused with -EPROTO.
        pub mod consts ("", "HE") {
            /// This ABI (1.1: HE_BUF_ARG_MASK; 1.2: he_probe.target, 16 KiB hypercall buffers, HE_IOC_TPM_FIFO;
            /// 1.3: 256-byte hv_status with the DMA words; 1.4: the resume budget in buf_arg).
            HE_IOCTL_ABI_VERSION: u32 = 0x0001_0004;
            /// The hypercall ABI the driver was written against.
            HE_HYPERCALL_ABI_VERSION: u32 = ABI_VERSION;
            HE_IOC_MAGIC: u8 = b'H';
            HE_STATE_EMPTY: u32 = 0;
            HE_STATE_LOADED: u32 = 1;
            HE_STATE_ENABLED: u32 = 2;
            /// he_hypercall.buf_arg (1.1): bits 0-4 mark RDI..R8 as offsets into the buffer the driver relocates.
            HE_BUF_ARG_MASK: u32 = 0x100;
            /// Largest he_hypercall buffer the driver copies (1.2; 4096 before): physically contiguous pages.
            HE_HYPERCALL_BUF_MAX: u32 = 16384;
            /// he_hypercall.buf_arg bits 31:16 (1.4): a resume budget in milliseconds, for ENCLAVE_CALL and
            /// ENCLAVE_OCALL_RETURN only (any other call with one: -EINVAL). While the call returns
            /// ENCLAVE_INTERRUPTED the driver resumes the thread itself (cond_resched() in between) until it
            /// completes, makes an OCALL, faults, a signal is pending or the budget is spent; r8 then holds
            /// the number of resumes. Budget 0: one hypercall, as before 1.4.
            HE_RESUME_BUDGET_SHIFT: u32 = 16;
            /// he_probe.target: 8 bytes of the reserved region.
            HE_PROBE_RESERVED: u32 = 0;
            /// he_probe.target: 1 byte of the TPM's TIS registers (offset from 0xFED40000, locality n at n * 0x1000).
            HE_PROBE_TPM_TIS: u32 = 1;
            HE_TPM_FIFO_ARM: u32 = 1;
            HE_TPM_FIFO_REREAD: u32 = 2;
        }
    }
    pub use consts::*;

    byte_strings! {
        /// HE_IOC_LOAD with an empty he_load.firmware: the image of this CPU's vendor under
        /// /lib/firmware (its HEIMG arch byte must match too).
        pub mod firmware {
            /// HE_IOC_LOAD with an empty name on Intel (the VMX + EPT image).
            HE_FIRMWARE_INTEL = b"hyperenclave/hyperenclave-intel.img";
            /// HE_IOC_LOAD with an empty name on AMD and Hygon (the SVM + NPT image).
            HE_FIRMWARE_AMD = b"hyperenclave/hyperenclave-amd.img";
        }
    }

    record! {
        pub struct HeVersion("he_version", 16) {
            /// in: caller's HE_IOCTL_ABI_VERSION; out: the driver's.
            pub ioctl_abi: u32,
            /// out: ABI the driver speaks to the hypervisor.
            pub hypercall_abi: u32,
            /// out: VERSION hypercall answer when enabled, else 0.
            pub hv_abi: u32,
            pub reserved: u32,
        }
    }

    record! {
        pub struct HeLoad("he_load", 192) {
            /// in: name under /lib/firmware (NUL-terminated).
            pub firmware: [i8; 128],
            pub image_length: u64,
            /// out: physical address the image is linked at.
            pub load_address: u64,
            pub load_size: u64,
            /// out: SHA-256 of the image (the value measured).
            pub image_sha256: [u8; 32],
            /// out: PCR extended.
            pub pcr: u32,
            /// out: number of PCR banks extended.
            pub banks: u32,
        }
    }

    record! {
        pub struct HeStatus("he_status", 336) {
            pub ioctl_abi: u32,
            /// HE_STATE_*.
            pub state: u32,
            pub reserved_base: u64,
            pub reserved_size: u64,
            pub image_length: u64,
            pub image_sha256: [u8; 32],
            pub pcr: u32,
            /// CPUs running as guests of the hypervisor.
            pub cpus_enabled: u32,
            /// Bytes of hv_status filled (STATUS hypercall record), 0 when not enabled.
            pub hv_status_len: u64,
            pub hv_status: [u8; StatusRecord::SIZE],
        }
    }

    record! {
        /// A hypercall (RAX = call, RDI.. = arguments, outputs written back). When buf_len > 0 the
        /// driver copies buf_len bytes (<= HE_HYPERCALL_BUF_MAX) from buf into physically
        /// contiguous kernel pages, puts their physical address into argument buf_arg (1 = RDI
        /// .. 5 = R8), and copies them back afterwards. Since 1.1, buf_arg = HE_BUF_ARG_MASK | bits
        /// (bit 0 = RDI .. bit 4 = R8): each marked argument holds an offset into buf (< buf_len)
        /// and the driver adds the pages' physical address to it, so calls with several buffers
        /// pack them into one.
        pub struct HeHypercall("he_hypercall", 64) {
            pub rax: u64,
            pub rdi: u64,
            pub rsi: u64,
            pub rdx: u64,
            pub rcx: u64,
            pub r8: u64,
            /// User pointer, or 0.
            pub buf: u64,
            pub buf_len: u32,
            pub buf_arg: u32,
        }
    }

    record! {
        /// Reads through a kernel mapping (test of the protection): see HE_PROBE_*; after enable the
        /// TIS pages of localities 1-4 are refused.
        pub struct HeProbe("he_probe", 24) {
            /// in: offset into the target.
            pub offset: u64,
            /// out: the bytes read when result == 0.
            pub value: u64,
            /// out: 0 read, -EFAULT refused (fault taken and survived).
            pub result: i32,
            /// in: HE_PROBE_* (0 before 1.2).
            pub target: u32,
        }
    }

    record! {
        /// 1.2, a test of the hypervisor's FIFO scrub (docs/attestation.md): QEMU's tpm-tis shares
        /// one command/response buffer between localities, and a locality left in the completion
        /// state can re-read it with responseRetry. HE_TPM_FIFO_ARM runs TPM2_GetRandom(8) at
        /// locality 0 and leaves locality 0 in the completion state (Linux's TPM lock held); after
        /// the hypervisor has used locality 2, HE_TPM_FIFO_REREAD re-reads the buffer at locality 0
        /// and reports only its header and whether everything after it is zero (the scrub
        /// pattern), then puts locality 0 back to ready.
        pub struct HeTpmFifo("he_tpm_fifo", 32) {
            /// in: HE_TPM_FIFO_*.
            pub op: u32,
            /// out: 0, or -ETIMEDOUT/-EIO naming the TIS step that failed.
            pub result: i32,
            /// out (REREAD): the size field of the buffer's header.
            pub size: u32,
            /// out (REREAD): 1 when bytes 10..size are all zero.
            pub zero_tail: u32,
            /// out: the 10-byte header read (ARM: GetRandom's response header).
            pub header: [u8; 10],
            pub reserved: [u8; 6],
        }
    }

    ioctls! {
        HE_IOC_VERSION = 0x00, rw, HeVersion;
        HE_IOC_LOAD = 0x01, rw, HeLoad;
        HE_IOC_ENABLE = 0x02, none;
        HE_IOC_DISABLE = 0x03, none;
        HE_IOC_STATUS = 0x04, r, HeStatus;
        HE_IOC_HYPERCALL = 0x05, rw, HeHypercall;
        HE_IOC_PROBE = 0x06, rw, HeProbe;
        HE_IOC_TPM_FIFO = 0x07, rw, HeTpmFifo;
    }
}

/// What the driver hands the bare-metal image: one page right after the image's load size; its
/// physical address is the second argument of every image entry call.
pub mod handoff {
    use super::*;

    consts! {
        /// Handoff constants and the image entry ops (first argument).
        pub mod consts ("HE_", "HANDOFF") {
            /// "HEHANDOF" little-endian.
            HANDOFF_MAGIC: u64 = 0x464f_444e_4148_4548;
            /// 3: per-CPU areas (percpu_base, percpu_size, cpu_slots); no fixed CPU limit.
            HANDOFF_VERSION: u32 = 3;
            MAX_RANGES: usize = 64;
            /// Build the hypervisor state and the host nested tables (one CPU).
            OP_INIT: u64 = 1;
            /// Demote this CPU: capture its state into a VMCB (SVM) or VMCS (VMX) and run it as the guest.
            OP_LAUNCH: u64 = 2;
        }
    }
    pub use consts::*;

    record! {
        pub struct Handoff("he_handoff", 1696) {
            pub magic: u64,
            pub version: u32,
            pub ncpus: u32,
            /// memmap= region.
            pub reserved_base: u64,
            pub reserved_size: u64,
            /// Where the image is linked and loaded (inside the region).
            pub image_base: u64,
            /// Image + bss.
            pub image_load_size: u64,
            /// First free byte after the driver's pages.
            pub pool_base: u64,
            /// Hypervisor part from reserved_base (image, pool); EPC follows.
            pub hv_size: u64,
            /// Host page tables: identity low half + Linux's kernel half.
            pub host_cr3: u64,
            /// Linux VA of he_leave_tramp (hands a CPU back on DISABLE).
            pub leave_tramp: u64,
            /// Physical pages of the trampoline (second 0 when it fits in one).
            pub leave_tramp_pa: [u64; 2],
            pub nranges: u32,
            pub pcr: u32,
            pub image_sha256: [u8; 32],
            pub ranges: [MemMapEntry; MAX_RANGES],
            /// Version 3: cpu_slots areas of percpu_size bytes (the HEIMG header's per_cpu_size),
            /// one per possible CPU id, from percpu_base inside the hypervisor part of the region.
            /// The image keeps its FPU save area (+0), its vCPU state (+4096) and its stack (below
            /// the end) there.
            pub percpu_base: u64,
            pub percpu_size: u64,
            /// Possible CPU ids (Linux's nr_cpu_ids): an entry call's cpu is below this.
            pub cpu_slots: u32,
            pub reserved0: u32,
        }
    }

    record! {
        /// Linux's state at an image entry call: the driver's he_enter (tramp.S) pushes cr3, rsp,
        /// then rip on Linux's stack and passes that address as the fourth argument; on OP_LAUNCH
        /// the image resumes Linux there as its guest.
        pub struct LinuxState("he_linux_state", 24) {
            /// he_resume in tramp.S.
            pub rip: u64,
            pub rsp: u64,
            pub cr3: u64,
        }
    }
}

/// The HEIMG v1 hypervisor image container (docs/image-container.md): a 256-byte little-endian
/// header, the image, then an optional signature block. Written by src/measure/container.ts
/// (`hyperenclave firmware build`), read by the driver's HE_IOC_LOAD and the CLI's verifier.
pub mod image {
    #[allow(unused_imports)]
    use super::*;

    consts! {
        /// HEIMG header values (docs/image-container.md).
        pub mod consts ("HEIMG_", "HEIMG") {
            FORMAT_VERSION: u16 = 1;
            /// Header bytes (the image starts here).
            HEADER_SIZE: usize = ImageHeader::SIZE;
            /// Longest build id (bytes).
            MAX_BUILD_ID: usize = 32;
            /// Longest signature block (bytes).
            MAX_SIGNATURE_BLOCK: usize = 4096;
            /// `arch`: Intel VMX + EPT (hypercalls by VMCALL).
            ARCH_INTEL_VMX: u8 = 1;
            /// `arch`: AMD SVM + NPT (hypercalls by VMMCALL).
            ARCH_AMD_SVM: u8 = 2;
            /// `arch`: Hygon (SVM + NPT).
            ARCH_HYGON: u8 = 3;
            /// `kind`: the memory image a bare-metal loader copies to the load address.
            KIND_FLAT: u8 = 1;
            /// `kind`: opaque bytes (e.g. an ELF kept as is).
            KIND_RAW: u8 = 2;
            SIG_NONE: u8 = 0;
            SIG_ECDSA_P256_SHA256: u8 = 1;
            SIG_ECDSA_P384_SHA384: u8 = 2;
            SIG_SM2_SM3: u8 = 3;
        }
    }
    pub use consts::*;

    byte_strings! {
        /// The container's first bytes.
        pub mod magic {
            HEIMG_MAGIC = b"HEIMG\0\0\0";
        }
    }

    record! {
        /// The HEIMG header (little-endian; the signature covers these 256 bytes).
        pub struct ImageHeader("heimg_header", 256) {
            /// "HEIMG\0\0\0".
            pub magic: [u8; 8],
            /// HEIMG_FORMAT_VERSION.
            pub format_version: u16,
            /// HEIMG_HEADER_SIZE.
            pub header_size: u16,
            /// HEIMG_ARCH_*: must be the CPU vendor's.
            pub arch: u8,
            /// HEIMG_KIND_*.
            pub kind: u8,
            /// HEIMG_SIG_*.
            pub signature_alg: u8,
            pub build_id_length: u8,
            /// Lowest PT_LOAD p_vaddr (flat).
            pub load_address: u64,
            /// Entry point from the load address.
            pub entry_offset: u64,
            pub core_size: u64,
            /// Bytes of state the image needs per CPU (the driver gives every possible CPU an area of this size).
            pub per_cpu_size: u64,
            /// Memory the loader reserves (bytes past the image are zero-filled).
            pub load_size: u64,
            pub feature_mask: u64,
            pub image_length: u64,
            /// 0 when unsigned.
            pub signature_length: u32,
            pub reserved1: u32,
            /// Zero-padded.
            pub build_id: [u8; 32],
            pub image_sha256: [u8; 32],
            pub image_sha384: [u8; 48],
            /// SHA-256 of the signer's SubjectPublicKeyInfo DER (0 when unsigned).
            pub signer_key_id: [u8; 32],
            pub reserved2: [u8; 32],
        }
    }
}

/// The enclave runtime's protocol (hypervisor/enclaves/rt), shared by both runners that execute
/// enclave code: the addon's KVM runner (emulated platform) and the bare-metal image's
/// ENCLAVE_CALL. Register conventions: hypervisor/addon/src/runner.rs.
pub mod enclave_rt {
    #[allow(unused_imports)]
    use super::*;

    /// `in al, EEXIT`: ECALL done (status in the mailbox), park; `out EEXIT, eax`: done, no park.
    pub const PORT_EEXIT: u16 = 0x10;
    /// `in eax, OCALL`: call out to the host (mailbox NR, LEN; data in the shared buffer).
    pub const PORT_OCALL: u16 = 0x11;
    /// `in eax, HYPERCALL`: EGETKEY / EREPORT (mailbox NR, A0..A2).
    pub const PORT_HYPERCALL: u16 = 0x12;
    /// `out PANIC, eax`: panic message (EAX bytes) in the shared buffer.
    pub const PORT_PANIC: u16 = 0x13;
    /// `out ERESUME, eax` from the exception handler: EAX = `ERESUME_CONTINUE` resumes the
    /// interrupted context from SSA frame CSSA-1, `ERESUME_ABORT` ends the thread.
    pub const PORT_ERESUME: u16 = 0x14;
    pub const ERESUME_CONTINUE: u32 = 0;
    pub const ERESUME_ABORT: u32 = 1;
    /// Reserved OCALL index of rt's `heap_grow`: input u64 ELRANGE offset, u64 page count; the
    /// host runs ENCLAVE_AUGMENT and answers with length 0 (or ECALL_ERROR | OCALL).
    pub const OCALL_HEAP_GROW: u32 = 0xFFFF_FF00;

    /// Runtime hypercalls for EDMM (mailbox NR at `PORT_HYPERCALL`).
    pub mod edmm_hc {
        /// EACCEPT: A0 = page address, A1 = the SECINFO flags the enclave expects. EAX = 0 or
        /// `STATUS_PAGE_STATE`.
        pub const EACCEPT: u64 = 3;
        /// EMODPE: A0 = page address, A1 = permissions to add (R=1 W=2 X=4).
        pub const EMODPE: u64 = 4;
        /// The page is not in the state the step needs (= HcStatus::PageState).
        pub const STATUS_PAGE_STATE: u64 = crate::HcStatus::PageState as u64;
    }

    /// The AEX frame (SGX SSA layout, SDM vol. 3D 37.9): offsets from the start of GPRSGX, the
    /// last `GPRSGX_SIZE` bytes of an SSA frame.
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
        /// MISC EXINFO (SECS.MISCSELECT bit 0), just before GPRSGX: MADDR (CR2) at GPRSGX-16
        /// (u64), ERRCD at GPRSGX-8 (u32).
        pub const EXINFO_MADDR: i64 = -16;
        pub const EXINFO_ERRCD: i64 = -8;
        pub const MISC_EXINFO: u32 = 1;
        /// Bytes of the TCS page where CSSA lives (SGX TCS layout).
        pub const TCS_CSSA: usize = 24;
    }

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

    consts! {
        /// ECALL status (ENCLAVE_CALL's RDI, the runners' result): the output length, or this bit
        /// with the enclave's error code (HE_RT_ERR_*) in bits 30:0. OCALL answers use the same form.
        pub mod ecall ("HC_ECALL_", "ECALL") {
            ERROR: u64 = 0x8000_0000;
        }
    }

    consts! {
        /// Error codes of the enclave runtime (ECALL status = HC_ECALL_ERROR | code).
        pub mod err ("HE_RT_ERR_", "RT_ERR") {
            UNKNOWN_ECALL: u32 = 1;
            BAD_INPUT: u32 = 2;
            TOO_BIG: u32 = 3;
            AUTH_FAILED: u32 = 4;
            HYPERCALL: u32 = 5;
            NO_ENTROPY: u32 = 6;
            /// The host failed or refused an OCALL.
            OCALL: u32 = 7;
            /// heap_grow: the heap reserve is used up.
            NO_MEMORY: u32 = 8;
        }
    }
}

/// Every constant group, in the order the generated files list them.
pub const GROUPS: &[meta::Group] =
    &[nr::GROUP, sizes::GROUP, cpuid::GROUP, status_flags::GROUP, slot_kind::GROUP, trust_flags::GROUP, enclave_rt::ecall::GROUP, enclave_rt::err::GROUP, quote::GROUP, quote_flags::GROUP, mem_kind::GROUP, secinfo::GROUP, attr::GROUP, keyname::GROUP, keypolicy::GROUP];
/// Records the hypercalls exchange (C: hyperenclave_hypercall.h).
pub const HYPERCALL_RECORDS: &[meta::StructLayout] = &[StatusRecord::LAYOUT, EnclaveInfo::LAYOUT, MemMapEntry::LAYOUT, Secs::LAYOUT, Quote::LAYOUT];
/// ioctl records (C: hyperenclave_ioctl.h).
pub const IOCTL_RECORDS: &[meta::StructLayout] =
    &[ioctl::HeVersion::LAYOUT, ioctl::HeLoad::LAYOUT, ioctl::HeStatus::LAYOUT, ioctl::HeHypercall::LAYOUT, ioctl::HeProbe::LAYOUT, ioctl::HeTpmFifo::LAYOUT];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_numbered_in_order() {
        for (i, s) in STATUSES.iter().enumerate() {
            assert_eq!(s.code, i as u64, "{}", s.name);
            assert_eq!(HcStatus::from_code(i as u64).map(|h| h as u64), Some(i as u64));
        }
    }

    #[test]
    fn call_numbers_are_unique() {
        for (i, a) in nr::GROUP.items.iter().enumerate() {
            for b in &nr::GROUP.items[i + 1..] {
                assert_ne!(a.value, b.value, "{} and {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn ioctl_numbers_match_linux_encoding() {
        // independent values: _IOWR('H', 0, 16-byte struct) etc., as <asm-generic/ioctl.h> encodes them
        assert_eq!(ioctl::HE_IOC_VERSION, 0xc010_4800);
        assert_eq!(ioctl::HE_IOC_ENABLE, 0x0000_4802);
        assert_eq!(ioctl::HE_IOC_STATUS, 0x8150_4804);
        assert_eq!(ioctl::HE_IOC_HYPERCALL, 0xc040_4805);
    }

    #[test]
    fn records_round_trip_little_endian() {
        let mut s = StatusRecord::zeroed();
        s.flags = 0x0102;
        s.image_digest[31] = 0xab;
        s.iommu_base = 0xfed8_0000;
        let b = s.to_bytes();
        assert_eq!((b[8], b[9], b[239]), (0x02, 0x01, 0xab));
        assert_eq!(&b[248..256], &[0, 0, 0xd8, 0xfe, 0, 0, 0, 0]);
        assert_eq!(StatusRecord::from_bytes(&b), Some(s));
        assert_eq!(StatusRecord::from_bytes(&b[..255]), None);
        let off = |n: &str| StatusRecord::LAYOUT.fields.iter().find(|f| f.name == n).unwrap().offset;
        assert_eq!((off("key_slot_kind"), off("image_digest"), off("dma_faults"), off("iommu_base")), (96, 208, 240, 248));
    }
}
