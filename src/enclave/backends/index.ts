/** Memory-encryption backends for enclave VMs: none | sev | sev-es | csv | mktme. */
export type { BackendCapabilities, BackendContext, BackendKind, EncryptedGuest, GuestState, LaunchMeasurement, LaunchStartOptions, MemoryEncryptionBackend } from './types.js';
export { BACKEND_KINDS } from './types.js';
export { BackendError, FirmwareError, KeySlotError, SEV_STATUS } from './errors.js';
export { EmulatedKeySlotAllocator, type KeySlotAllocator, type KeySlotKind, type SlotRange } from './keyslots.js';
export {
  type AmdMemEncryptLeaf,
  type CpuidRegs,
  type DetectSources,
  type PlatformFacts,
  type TmeActivate,
  type TmeCapability,
  decodeCpuVendor,
  decodeCpuid7,
  decodeCpuid8000001F,
  decodeTmeActivate,
  decodeTmeCapability,
  detectPlatformFacts,
  emulatedPlatformFacts,
  hardwareSupport,
} from './detect.js';
export {
  CSV_SUITE,
  type FirmwareSuite,
  type LaunchImage,
  SECRET_HEADER_SIZE,
  SEV_POLICY,
  SEV_SUITE,
  SevFirmware,
  type SevFirmwareOptions,
  expectedSevMeasurement,
  launchDigest,
  launchMeasurement,
  packageLaunchSecret,
  policyApiMinimum,
  secretPacketMac,
} from './sev-firmware.js';
export { MeasurementMismatchError, type ReportedLaunch, SevGuestOwner, verifySevMeasurement } from './guest-owner.js';
export { type CsvChain, type CsvChipIdentity, type CsvVendor, CsvCertError, KEY_USAGE, makeCsvChip, makeCsvVendor, parseCsvCert, verifyCsvChain } from './csv-certs.js';
export { type CsvReportBody, parseCsvReport, verifyCsvReport } from './csv-report.js';
export { KEY_PROGRAM_STRUCT_SIZE, MKTME_ALG_AES_XTS_128, MKTME_CMD, MKTME_DEFAULTS, MKTME_STATUS, MktmePlatform, type MktmeOptions, keyProgramStruct } from './mktme.js';
export { LIMITATIONS } from './limitations.js';
export { EMULATED_CSV, EMULATED_KEY_SLOTS, EMULATED_MKTME, EMULATED_SEV, FirmwareBackend, FirmwareGuest, MktmeBackend, MktmeGuest, emulatedSlotRanges } from './backends.js';
export { BACKENDS, type BackendDescriptor, type CreateBackendOptions, type LaunchInputs, type LaunchReference, backendDescriptor, createBackend, describeBackend } from './registry.js';
