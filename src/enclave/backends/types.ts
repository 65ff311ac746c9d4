import type { KeySlotAllocator } from './keyslots.js';
import type { PlatformFacts } from './detect.js';

import { BACKEND_KINDS, type BackendKind } from './kind.js';

export { BACKEND_KINDS, type BackendKind };

export interface BackendCapabilities {
  kind: BackendKind;
  available: boolean;
  /** Software model (emulated platform) rather than hardware. */
  emulated: boolean;
  /** Why it is (un)available, naming what was found, e.g. "SEV: CPUID 0x8000001F EAX bit 1 clear; /dev/sev absent". */
  reason: string;
  /** Key-slot range guests draw from (ASIDs or KeyIDs), null for `none`. */
  slots: { label: 'ASID' | 'KeyID'; first: number; last: number } | null;
  memoryCipher: 'none' | 'aes-128-xts' | 'sm4-xts';
  measurement: 'hmac-sha256' | 'hmac-sm3' | 'sha256-hypervisor';
  secretInjection: boolean;
  /** None of these backends protects integrity (no SNP/RMP model). */
  integrity: false;
  limitations: string;
}

export interface LaunchStartOptions {
  /** Guest-physical memory size in bytes (multiple of 4 KiB). */
  memorySize: number;
  /** SEV/CSV guest policy (u32); ignored by mktme/none. */
  policy?: number;
  /** Guest-owner transport keys (TEK, TIK: 16 B each). Real SEV wraps them with the PDH; the model takes them directly. */
  session?: { tek: Buffer; tik: Buffer };
}

export interface LaunchMeasurement {
  /** HMAC-SHA-256 / HMAC-SM3 (SEV/CSV) or SHA-256 by the hypervisor (mktme/none). */
  algorithm: BackendCapabilities['measurement'];
  measurement: Buffer;
  /** Firmware nonce (SEV/CSV); empty otherwise. */
  mnonce: Buffer;
  /** The launch digest GCTX.LD over all launched plaintext. */
  launchDigest: Buffer;
  apiMajor: number;
  apiMinor: number;
  build: number;
  policy: number;
}

export type GuestState = 'launching' | 'measured' | 'running' | 'released';

/** One enclave VM's encrypted memory and its launch flow. */
export interface EncryptedGuest {
  readonly kind: BackendKind;
  /** ASID or KeyID (0 for `none`). */
  readonly slot: number;
  readonly memorySize: number;
  readonly state: GuestState;
  /** LAUNCH_UPDATE_DATA: encrypt in place with the guest key and extend the launch digest. 16-byte aligned. */
  updateData(gpa: number, plaintext: Uint8Array): void;
  /** LAUNCH_MEASURE. */
  measure(): LaunchMeasurement;
  /** LAUNCH_SECRET: header (52 B) + transport-encrypted data, written at gpa. */
  injectSecret(header: Buffer, data: Buffer, gpa: number): void;
  /** LAUNCH_FINISH: the guest may run; no more launch commands. */
  finish(): void;
  /** The enclave's own view (decrypted by the memory controller with its key). */
  guestRead(gpa: number, length: number): Buffer;
  guestWrite(gpa: number, plaintext: Uint8Array): void;
  /** The host's view of the same DRAM: what the demoted host or a physical attacker reads. */
  hostRead(gpa: number, length: number): Buffer;
  /** The host overwriting DRAM (e.g. copying ciphertext from elsewhere). */
  hostWrite(gpa: number, bytes: Uint8Array): void;
  /** DBG_DECRYPT: refused when the policy says NODBG. */
  debugDecrypt(gpa: number, length: number): Buffer;
  /** Tear down (DEACTIVATE + DECOMMISSION / key clear) and release the key slot (flush still needed before reuse). */
  release(): void;
}

export interface MemoryEncryptionBackend {
  readonly kind: BackendKind;
  readonly limitations: string;
  capabilities(): BackendCapabilities;
  launchStart(opts: LaunchStartOptions): EncryptedGuest;
  /** Flush released key slots (SEV DF_FLUSH / WBINVD) so they can be allocated again. Returns the slots flushed. */
  flushReleased(): number[];
}

export interface BackendContext {
  facts: PlatformFacts;
  allocator: KeySlotAllocator;
}
