import { createHash, randomBytes } from 'node:crypto';
import { PAGE_SIZE } from '../../crypto/xts.js';
import { EXIT } from '../../errors.js';
import { type CsvChipIdentity, type CsvVendor, makeCsvChip, makeCsvVendor } from './csv-certs.js';
import { makeCsvReport } from './csv-report.js';
import { decodeTmeCapability } from './detect.js';
import { EncryptedMemory } from './encrypted-memory.js';
import { BackendError } from './errors.js';
import type { KeySlotKind } from './keyslots.js';
import { LIMITATIONS } from './limitations.js';
import { MKTME_ALG_AES_XTS_128, MKTME_CMD, MKTME_STATUS, MktmePlatform, type MktmeOptions, keyProgramStruct } from './mktme.js';
import { CSV_SUITE, SEV_POLICY, SEV_SUITE, SevFirmware, type SevFirmwareOptions } from './sev-firmware.js';
import type {
  BackendCapabilities,
  BackendContext,
  BackendKind,
  EncryptedGuest,
  GuestState,
  LaunchMeasurement,
  LaunchStartOptions,
  MemoryEncryptionBackend,
} from './types.js';

/** Emulated-platform defaults (small, so limits are easy to reach; real parts report theirs via CPUID). */
export const EMULATED_SEV: Omit<SevFirmwareOptions, 'suite'> = { apiMajor: 0, apiMinor: 24, build: 15, maxAsid: 15, minSevAsid: 6, esSupported: true };
export const EMULATED_CSV: Omit<SevFirmwareOptions, 'suite'> = { apiMajor: 1, apiMinor: 3, build: 2, maxAsid: 15, minSevAsid: 1, esSupported: false };

/**
 * The emulated platform's one key-slot table: the core's (KEYSLOT_ALLOC/RELEASE/FLUSH) as the
 * emulated service configures it. Every backend model draws from it, each in its hardware range.
 */
export const EMULATED_KEY_SLOTS = { first: 1, last: EMULATED_SEV.maxAsid } as const;

/** The emulated MKTME: 4 KeyID bits and 15 keys (KeyIDs 1..15, the whole key-slot table), 46-bit addresses. */
export const EMULATED_MKTME: MktmeOptions = { tmeCapability: 1n | (4n << 32n) | (15n << 36n), tmeActivate: 1n | 2n | (4n << 32n) | (1n << 48n), physAddrBits: 46 };

/**
 * Key-slot ranges of the emulated platform, the one definition (the service's allocator, the
 * TypeScript allocator of the tests and `hyperenclave platform` use it): SEV-ES ASIDs 1..5,
 * SEV 6..15, CSV 1..15, MKTME KeyIDs 1..15.
 */
export function emulatedSlotRanges(): Record<KeySlotKind, { first: number; last: number }> {
  return {
    'sev-es': { first: EMULATED_KEY_SLOTS.first, last: EMULATED_SEV.minSevAsid - 1 },
    sev: { first: EMULATED_SEV.minSevAsid, last: EMULATED_SEV.maxAsid },
    csv: { first: EMULATED_CSV.minSevAsid, last: EMULATED_CSV.maxAsid },
    mktme: { first: 1, last: Math.min(decodeTmeCapability(EMULATED_MKTME.tmeCapability).maxKeys, EMULATED_KEY_SLOTS.last) },
  };
}

function hypervisorDigest(): { update(gpa: number, data: Uint8Array): void; digest(): Buffer } {
  const h = createHash('sha256');
  return {
    update(gpa, data) {
      const hdr = Buffer.alloc(16);
      hdr.writeBigUInt64LE(BigInt(gpa), 0);
      hdr.writeBigUInt64LE(BigInt(data.length), 8);
      h.update(hdr).update(data);
    },
    digest: () => h.digest(),
  };
}

function wrongState(kind: BackendKind, op: string, state: GuestState, need: string): never {
  throw new BackendError(`${kind} guest: ${op} in state ${state} (needs ${need})`, EXIT.USAGE);
}

// ---------------------------------------------------------------- none

class PlainGuest implements EncryptedGuest {
  readonly kind = 'none' as const;
  readonly slot = 0;
  state: GuestState = 'launching';
  private readonly mem: EncryptedMemory;
  private readonly ld = hypervisorDigest();
  private result?: LaunchMeasurement;

  constructor(readonly memorySize: number) {
    this.mem = new EncryptedMemory(memorySize);
  }
  updateData(gpa: number, plaintext: Uint8Array): void {
    if (this.state !== 'launching') wrongState(this.kind, 'updateData', this.state, 'launching');
    this.ld.update(gpa, plaintext);
    this.mem.write(null, gpa, plaintext);
  }
  measure(): LaunchMeasurement {
    if (this.state !== 'launching') wrongState(this.kind, 'measure', this.state, 'launching');
    const d = this.ld.digest();
    this.state = 'measured';
    this.result = { algorithm: 'sha256-hypervisor', measurement: d, launchDigest: d, mnonce: Buffer.alloc(0), apiMajor: 0, apiMinor: 0, build: 0, policy: 0 };
    return this.result;
  }
  injectSecret(): void {
    throw new BackendError('none: no firmware secret injection (deliver secrets after attestation)');
  }
  finish(): void {
    if (this.state !== 'measured') wrongState(this.kind, 'finish', this.state, 'measured');
    this.state = 'running';
  }
  guestRead(gpa: number, length: number): Buffer {
    return this.mem.read(null, gpa, length);
  }
  guestWrite(gpa: number, plaintext: Uint8Array): void {
    this.mem.write(null, gpa, plaintext);
  }
  hostRead(gpa: number, length: number): Buffer {
    return this.mem.raw(gpa, length);
  }
  hostWrite(gpa: number, bytes: Uint8Array): void {
    this.mem.setRaw(gpa, bytes);
  }
  debugDecrypt(gpa: number, length: number): Buffer {
    return this.mem.raw(gpa, length);
  }
  release(): void {
    this.mem.wipe();
    this.state = 'released';
  }
}

export class NoneBackend implements MemoryEncryptionBackend {
  readonly kind = 'none' as const;
  readonly limitations = LIMITATIONS.none;
  constructor(private readonly ctx: BackendContext) {}
  capabilities(): BackendCapabilities {
    return {
      kind: 'none',
      available: true,
      emulated: this.ctx.facts.platform === 'emulated',
      reason: 'no memory encryption',
      slots: null,
      memoryCipher: 'none',
      measurement: 'sha256-hypervisor',
      secretInjection: false,
      integrity: false,
      limitations: this.limitations,
    };
  }
  launchStart(opts: LaunchStartOptions): EncryptedGuest {
    return new PlainGuest(opts.memorySize);
  }
  flushReleased(): number[] {
    return [];
  }
}

// ---------------------------------------------------------------- SEV, SEV-ES, CSV

/** One SEV/SEV-ES/CSV guest: firmware handle + ASID. */
export class FirmwareGuest implements EncryptedGuest {
  state: GuestState = 'launching';
  private result?: LaunchMeasurement;

  constructor(
    readonly kind: 'sev' | 'sev-es' | 'csv',
    private readonly fw: SevFirmware,
    readonly handle: number,
    readonly slot: number,
    readonly memorySize: number,
    private readonly onRelease: (slot: number) => void,
    private readonly chip?: CsvChipIdentity,
  ) {}

  get policy(): number {
    return this.fw.policyOf(this.handle);
  }
  updateData(gpa: number, plaintext: Uint8Array): void {
    this.fw.launchUpdateData(this.handle, gpa, plaintext);
  }
  /** SEV-ES: LAUNCH_UPDATE_VMSA for one vCPU save area (4 KiB). */
  updateVmsa(gpa: number, vmsa: Uint8Array): void {
    this.fw.launchUpdateVmsa(this.handle, gpa, vmsa);
  }
  measure(mnonce?: Uint8Array): LaunchMeasurement {
    const m = this.fw.launchMeasure(this.handle, mnonce);
    this.state = 'measured';
    this.result = {
      algorithm: this.kind === 'csv' ? 'hmac-sm3' : 'hmac-sha256',
      measurement: m.measurement,
      mnonce: m.mnonce,
      launchDigest: m.launchDigest,
      apiMajor: this.fw.api.apiMajor,
      apiMinor: this.fw.api.apiMinor,
      build: this.fw.api.build,
      policy: this.policy,
    };
    return this.result;
  }
  injectSecret(header: Buffer, data: Buffer, gpa: number): void {
    this.fw.launchSecret(this.handle, header, data, gpa);
  }
  finish(): void {
    this.fw.launchFinish(this.handle);
    this.state = 'running';
  }
  guestRead(gpa: number, length: number): Buffer {
    return this.fw.guestRead(this.handle, gpa, length);
  }
  guestWrite(gpa: number, plaintext: Uint8Array): void {
    this.fw.guestWrite(this.handle, gpa, plaintext);
  }
  hostRead(gpa: number, length: number): Buffer {
    return this.fw.memory(this.handle).raw(gpa, length);
  }
  hostWrite(gpa: number, bytes: Uint8Array): void {
    this.fw.memory(this.handle).setRaw(gpa, bytes);
  }
  debugDecrypt(gpa: number, length: number): Buffer {
    return this.fw.dbgDecrypt(this.handle, gpa, length);
  }
  /** The transport keys, when the firmware generated them (model of the session the owner holds). */
  sessionKeys(): { tek: Buffer; tik: Buffer } {
    return this.fw.sessionKeys(this.handle);
  }
  /** CSV: an SM2-signed attestation report (PEK) over the launch measurement and 64 bytes of user data. */
  attest(userData: Uint8Array): Buffer {
    if (this.kind !== 'csv' || !this.chip) throw new BackendError(`${this.kind}: attestation reports are a CSV feature here (SEV-SNP is not modelled)`);
    if (!this.result) wrongState(this.kind, 'attest', this.state, 'measured or running');
    if (userData.length !== 64) throw new BackendError(`CSV attestation: user data must be 64 bytes, got ${userData.length}`, EXIT.BAD_INPUT);
    return makeCsvReport(
      { ...this.result, measurement: this.result.measurement, mnonce: this.result.mnonce, chipId: this.chip.chipId, userData: Buffer.from(userData) },
      this.chip.pek,
    );
  }
  release(): void {
    if (this.state === 'released') return;
    this.fw.deactivate(this.handle);
    this.fw.decommission(this.handle);
    this.state = 'released';
    this.onRelease(this.slot);
  }
}

export interface FirmwareBackendOptions {
  /** Share one PSP between the sev and sev-es backends (one ASID space). */
  firmware?: SevFirmware;
  config?: Partial<Omit<SevFirmwareOptions, 'suite'>>;
  /** CSV: the vendor (HRK/HSK) and this chip's identity; generated when absent. */
  csvVendor?: CsvVendor;
  csvChip?: CsvChipIdentity;
}

export class FirmwareBackend implements MemoryEncryptionBackend {
  readonly limitations: string;
  readonly firmware: SevFirmware;
  readonly csvVendor?: CsvVendor;
  readonly csvChip?: CsvChipIdentity;
  private readonly released: number[] = [];

  constructor(
    readonly kind: 'sev' | 'sev-es' | 'csv',
    private readonly ctx: BackendContext,
    opts: FirmwareBackendOptions = {},
  ) {
    this.limitations = LIMITATIONS[kind];
    const base = kind === 'csv' ? EMULATED_CSV : EMULATED_SEV;
    this.firmware = opts.firmware ?? new SevFirmware({ ...base, ...opts.config, suite: kind === 'csv' ? CSV_SUITE : SEV_SUITE });
    if (this.firmware.suite !== (kind === 'csv' ? CSV_SUITE : SEV_SUITE)) throw new BackendError(`${kind}: firmware suite ${this.firmware.suite.name} does not match`);
    if (kind === 'sev-es' && !this.firmware.esSupported) throw new BackendError('SEV-ES: the firmware model was configured without SEV-ES');
    if (kind === 'csv') {
      this.csvVendor = opts.csvVendor ?? makeCsvVendor();
      this.csvChip = opts.csvChip ?? makeCsvChip(this.csvVendor);
    }
  }

  capabilities(): BackendCapabilities {
    const fw = this.firmware;
    const es = this.kind === 'sev-es';
    return {
      kind: this.kind,
      available: true,
      emulated: true,
      reason: `${this.kind.toUpperCase()}: software model of the ${fw.suite.name === 'csv' ? 'Hygon CSV' : 'AMD SEV'} firmware API ${fw.api.apiMajor}.${fw.api.apiMinor} build ${fw.api.build} (emulated platform)`,
      slots: { label: 'ASID', first: es ? 1 : fw.minSevAsid, last: es ? fw.minSevAsid - 1 : fw.maxAsid },
      memoryCipher: this.kind === 'csv' ? 'sm4-xts' : 'aes-128-xts',
      measurement: this.kind === 'csv' ? 'hmac-sm3' : 'hmac-sha256',
      secretInjection: true,
      integrity: false,
      limitations: this.limitations,
    };
  }

  launchStart(opts: LaunchStartOptions): FirmwareGuest {
    const policy = opts.policy ?? (SEV_POLICY.NODBG | SEV_POLICY.NOKS | (this.kind === 'sev-es' ? SEV_POLICY.ES : 0));
    if (this.kind === 'sev-es' && !(policy & SEV_POLICY.ES)) throw new BackendError(`sev-es: policy 0x${policy.toString(16)} lacks the ES bit`, EXIT.BAD_INPUT);
    if (this.kind !== 'sev-es' && policy & SEV_POLICY.ES) throw new BackendError(`${this.kind}: policy 0x${policy.toString(16)} has the ES bit (use --backend sev-es)`, EXIT.BAD_INPUT);
    const handle = this.firmware.launchStart(policy, opts.memorySize, opts.session);
    let asid: number;
    try {
      asid = this.ctx.allocator.allocate(this.kind);
    } catch (e) {
      this.firmware.decommission(handle);
      throw e;
    }
    try {
      this.firmware.activate(handle, asid);
    } catch (e) {
      this.firmware.decommission(handle);
      this.ctx.allocator.release(asid);
      this.released.push(asid);
      throw e;
    }
    return new FirmwareGuest(this.kind, this.firmware, handle, asid, opts.memorySize, (s) => {
      this.ctx.allocator.release(s);
      this.released.push(s);
    }, this.csvChip);
  }

  flushReleased(): number[] {
    this.firmware.dfFlush();
    const slots = this.released.splice(0);
    for (const s of slots) this.ctx.allocator.flush(s);
    return slots;
  }
}

// ---------------------------------------------------------------- MKTME

export class MktmeGuest implements EncryptedGuest {
  readonly kind = 'mktme' as const;
  state: GuestState = 'launching';
  private readonly ld = hypervisorDigest();

  constructor(
    private readonly platform: MktmePlatform,
    readonly slot: number,
    /** Host physical base address (without KeyID bits). */
    readonly hostBase: bigint,
    readonly memorySize: number,
    private readonly policy: number,
    private readonly onRelease: (guest: MktmeGuest) => void,
  ) {}

  private pa(gpa: number): bigint {
    return this.platform.physicalAddress(this.slot, this.hostBase + BigInt(gpa));
  }
  private check(gpa: number, length: number): void {
    if (!Number.isInteger(gpa) || gpa < 0 || length < 0 || gpa + length > this.memorySize)
      throw new BackendError(`mktme guest: range 0x${gpa.toString(16)}+0x${length.toString(16)} outside guest memory (0x${this.memorySize.toString(16)} bytes)`);
  }
  private span(gpa: number, length: number): [number, number] {
    return [Math.floor(gpa / PAGE_SIZE) * PAGE_SIZE, Math.ceil((gpa + length) / PAGE_SIZE) * PAGE_SIZE];
  }
  updateData(gpa: number, plaintext: Uint8Array): void {
    if (this.state !== 'launching') wrongState(this.kind, 'updateData', this.state, 'launching');
    this.ld.update(gpa, plaintext);
    this.guestWrite(gpa, plaintext);
  }
  measure(): LaunchMeasurement {
    if (this.state !== 'launching') wrongState(this.kind, 'measure', this.state, 'launching');
    const d = this.ld.digest();
    this.state = 'measured';
    return { algorithm: 'sha256-hypervisor', measurement: d, launchDigest: d, mnonce: Buffer.alloc(0), apiMajor: 0, apiMinor: 0, build: 0, policy: this.policy };
  }
  injectSecret(): void {
    throw new BackendError('mktme: no firmware secret injection (MKTME has no launch protocol; deliver secrets after attestation)');
  }
  finish(): void {
    if (this.state !== 'measured') wrongState(this.kind, 'finish', this.state, 'measured');
    this.state = 'running';
  }
  guestRead(gpa: number, length: number): Buffer {
    this.check(gpa, length);
    if (this.state === 'released') throw new BackendError('mktme guest: released');
    const [s, e] = this.span(gpa, length);
    return this.platform.read(this.pa(s), e - s).subarray(gpa - s, gpa - s + length);
  }
  guestWrite(gpa: number, plaintext: Uint8Array): void {
    this.check(gpa, plaintext.length);
    if (this.state === 'released') throw new BackendError('mktme guest: released');
    const [s, e] = this.span(gpa, plaintext.length);
    const pages = s === gpa && e === gpa + plaintext.length ? plaintext : (() => {
      const b = this.platform.read(this.pa(s), e - s);
      b.set(plaintext, gpa - s);
      return b;
    })();
    this.platform.write(this.pa(s), pages);
  }
  hostRead(gpa: number, length: number): Buffer {
    this.check(gpa, length);
    const [s, e] = this.span(gpa, length);
    return this.platform.readRaw(this.hostBase + BigInt(s), e - s).subarray(gpa - s, gpa - s + length);
  }
  /** The host reading the same frames through its own mapping (KeyID 0, the TME key): garbage, not plaintext. */
  hostReadKeyId0(gpa: number, length: number): Buffer {
    this.check(gpa, length);
    const [s, e] = this.span(gpa, length);
    return this.platform.read(this.platform.physicalAddress(0, this.hostBase + BigInt(s)), e - s).subarray(gpa - s, gpa - s + length);
  }
  hostWrite(gpa: number, bytes: Uint8Array): void {
    this.check(gpa, bytes.length);
    const [s, e] = this.span(gpa, bytes.length);
    const raw = this.platform.readRaw(this.hostBase + BigInt(s), e - s);
    raw.set(bytes, gpa - s);
    this.platform.writeRaw(this.hostBase + BigInt(s), raw);
  }
  debugDecrypt(gpa: number, length: number): Buffer {
    if (this.policy & SEV_POLICY.NODBG) throw new BackendError('mktme: guest launched with NODBG; the hypervisor refuses debug reads', EXIT.VERIFY_FAILED);
    return this.guestRead(gpa, length);
  }
  release(): void {
    if (this.state === 'released') return;
    this.state = 'released';
    this.onRelease(this);
  }
}

export class MktmeBackend implements MemoryEncryptionBackend {
  readonly kind = 'mktme' as const;
  readonly limitations = LIMITATIONS.mktme;
  readonly platform: MktmePlatform;
  private nextFrame = 0x1_0000_0000n; // guests' host-physical memory starts at 4 GiB in the model
  private readonly released: number[] = [];
  /** Host-physical ranges of released guests, handed to the next guest of the same size. */
  private readonly freeRanges: { base: bigint; size: number }[] = [];

  constructor(
    private readonly ctx: BackendContext,
    opts: MktmeOptions | { platform: MktmePlatform } = {} as MktmeOptions,
  ) {
    this.platform = 'platform' in opts ? opts.platform : new MktmePlatform('tmeCapability' in opts ? opts : undefined);
  }

  capabilities(): BackendCapabilities {
    return {
      kind: 'mktme',
      available: true,
      emulated: true,
      reason: `MKTME: software model, ${this.platform.activate.keyIdBits} KeyID bits, KeyIDs 1..${this.platform.maxKeyId} (emulated platform)`,
      slots: { label: 'KeyID', first: 1, last: this.platform.maxKeyId },
      memoryCipher: 'aes-128-xts',
      measurement: 'sha256-hypervisor',
      secretInjection: false,
      integrity: false,
      limitations: this.limitations,
    };
  }

  launchStart(opts: LaunchStartOptions): MktmeGuest {
    const size = opts.memorySize;
    if (!Number.isInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) throw new BackendError(`guest memory size ${size} is not a positive multiple of 4 KiB`, EXIT.BAD_INPUT);
    const keyId = this.ctx.allocator.allocate('mktme');
    if (keyId > this.platform.maxKeyId) {
      this.ctx.allocator.release(keyId);
      this.released.push(keyId);
      throw new BackendError(`mktme: allocator gave KeyID ${keyId}, above the platform's ${this.platform.maxKeyId}`);
    }
    const rc = this.platform.pconfig(0, keyProgramStruct(keyId, MKTME_CMD.SET_KEY_RANDOM, MKTME_ALG_AES_XTS_128, randomBytes(64), randomBytes(64)));
    if (rc !== MKTME_STATUS.PROG_SUCCESS) {
      this.ctx.allocator.release(keyId);
      this.released.push(keyId);
      throw new BackendError(`mktme: PCONFIG MKTME_KEY_PROGRAM for KeyID ${keyId} returned ${rc}`);
    }
    const reuse = this.freeRanges.findIndex((r) => r.size === size);
    let base: bigint;
    if (reuse >= 0) base = this.freeRanges.splice(reuse, 1)[0]!.base;
    else {
      base = this.nextFrame;
      this.nextFrame += BigInt(size);
    }
    return new MktmeGuest(this.platform, keyId, base, size, opts.policy ?? SEV_POLICY.NODBG, (g) => {
      // Replace the key so stale ciphertext can never be read through this KeyID again.
      this.platform.pconfig(0, keyProgramStruct(g.slot, MKTME_CMD.SET_KEY_RANDOM, MKTME_ALG_AES_XTS_128));
      this.platform.freeFrames(g.hostBase, g.memorySize);
      this.freeRanges.push({ base: g.hostBase, size: g.memorySize });
      this.ctx.allocator.release(g.slot);
      this.released.push(g.slot);
    });
  }

  /** WBINVD, then the released KeyIDs can be handed out again. */
  flushReleased(): number[] {
    const slots = this.released.splice(0);
    for (const s of slots) this.ctx.allocator.flush(s);
    return slots;
  }
}
