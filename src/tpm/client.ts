/**
 * TpmClient: the TPM 2.0 commands this project uses, as methods over one executor. The pieces
 * (go-tpm's shape): executor.ts sends any command (framing, sessions, parameter encryption,
 * retries), commands.ts defines each command as a typed value, flows.ts chains them (EK/AK
 * creation, quote with PCRs, chunked reads). This class only binds them to one TPM.
 */
import { TPM_ALG } from './alg.js';
import { TPM_RH } from './constants.js';
import type { AuthSession } from './session.js';
import type { AlgProperty, CapabilityData, ClockInfo, IdObject, NvPublic, PcrSelection, Scheme, TaggedHash, TaggedProperty, Ticket, TpmsContext, TpmtPublic } from './structures.js';
import type { KeyKind } from './templates.js';
import type { PcrBank } from './verify.js';
import { authOf, refOf, type AuthArg, type CreatePrimaryResult, type CreateResult, type HandleArg, type QuoteResult, type TpmObject } from './command.js';
import * as C from './commands.js';
import { TpmExecutor } from './executor.js';
import * as F from './flows.js';

export type { AuthArg, CommandRequest, CommandResult, CreatePrimaryResult, CreateResult, HandleArg, QuoteResult, TpmCommand, TpmObject } from './command.js';
export type { TpmClientOptions } from './executor.js';
export type { TpmInfo } from './flows.js';
export { TpmExecutor };

export class TpmClient extends TpmExecutor {
  // ------------------------------------------------------------ start-up and tests

  /** TPM2_Startup; returns false when the TPM was already started (TPM_RC_INITIALIZE). */
  startup(type: 'clear' | 'state' = 'clear'): Promise<boolean> {
    return F.startup(this, type);
  }
  shutdown(type: 'clear' | 'state' = 'clear'): Promise<void> {
    return this.run(C.Shutdown(type));
  }
  selfTest(full = true): Promise<void> {
    return this.run(C.SelfTest(full));
  }
  /** TPM2_DictionaryAttackLockReset: clears the failed-authorization counter (lockout auth). */
  dictionaryAttackLockReset(a?: AuthArg): Promise<void> {
    return this.run(C.DictionaryAttackLockReset(authOf(undefined, a)));
  }

  // ------------------------------------------------------------ capabilities, clock, random

  getCapability(capability: number, property: number, count: number): Promise<{ moreData: boolean; data: CapabilityData }> {
    return this.run(C.GetCapability(capability, property, count));
  }
  getAlgorithms(): Promise<AlgProperty[]> {
    return F.getAlgorithms(this);
  }
  /** PCR banks with the PCRs allocated in each (banks with no PCR allocated included, empty). */
  getPcrBanks(): Promise<PcrSelection[]> {
    return F.getPcrBanks(this);
  }
  /** Hash algorithm ids of the banks that have PCRs allocated. */
  async getActiveBanks(): Promise<number[]> {
    return (await this.getPcrBanks()).filter((b) => b.pcrs.length > 0).map((b) => b.hash);
  }
  getProperties(first: number, count = 256): Promise<TaggedProperty[]> {
    return F.getProperties(this, first, count);
  }
  /** The TPM_PT_FIXED group (cached: they never change). */
  getFixedProperties(): Promise<Map<number, number>> {
    return F.getFixedProperties(this);
  }
  getProperty(property: number): Promise<number | undefined> {
    return F.getProperty(this, property);
  }
  /** Handles of one type in use (TPM_HT_TRANSIENT, TPM_HT_PERSISTENT, TPM_HT_NV_INDEX, …). */
  getHandles(type: number): Promise<number[]> {
    return F.getHandles(this, type);
  }
  getEccCurves(): Promise<number[]> {
    return F.getEccCurves(this);
  }
  /** Manufacturer, firmware, spec level, banks and algorithms in one summary. */
  getTpmInfo(): Promise<F.TpmInfo> {
    return F.getTpmInfo(this);
  }
  /**
   * TPM2_ReadClock: time since the last power-up and TPMS_CLOCK_INFO. resetCount counts TPM
   * Resets (Startup(CLEAR) after a reboot or power cycle: PCRs reset), restartCount TPM
   * Restarts/Resumes since the last Reset, so together they identify one boot of the TPM.
   */
  readClock(): Promise<{ time: bigint } & ClockInfo> {
    return this.run(C.ReadClock());
  }
  getRandom(bytes: number): Promise<Buffer> {
    return F.getRandom(this, bytes);
  }

  // ------------------------------------------------------------ PCRs

  /** One TPM2_PCR_Read as the TPM answers it (at most 8 digests, possibly a partial selection). */
  pcrReadRaw(selection: PcrSelection[]): Promise<{ updateCounter: number; selection: PcrSelection[]; digests: Buffer[] }> {
    return this.run(C.PcrRead(selection));
  }
  /** Any number of PCRs in any banks, all from one moment (flows.ts pcrRead). */
  pcrRead(selection: PcrSelection[]): Promise<{ updateCounter: number; banks: PcrBank[] }> {
    return F.pcrRead(this, selection);
  }
  /** All PCRs of the given banks (default: every bank with PCRs allocated). */
  pcrReadAll(banks?: number[]): Promise<PcrBank[]> {
    return F.pcrReadAll(this, banks);
  }
  async pcrExtend(pcr: number, digests: TaggedHash[], a?: AuthArg): Promise<void> {
    await this.run(C.PcrExtend(pcr, digests, authOf(undefined, a), this.currentLocality));
  }
  /** TPM2_PCR_Event: the TPM hashes data (≤ 1024 bytes) in every bank and extends. */
  async pcrEvent(pcr: number, data: Uint8Array, a?: AuthArg): Promise<TaggedHash[]> {
    return this.run(C.PcrEvent(pcr, data, authOf(undefined, a), this.currentLocality));
  }
  async pcrReset(pcr: number, a?: AuthArg): Promise<void> {
    await this.run(C.PcrReset(pcr, authOf(undefined, a), this.currentLocality));
  }
  /** Data of any size measured into a PCR in every active bank with an event sequence. */
  pcrEventSequence(pcr: number, data: Uint8Array, a?: AuthArg): Promise<TaggedHash[]> {
    return F.pcrEventSequence(this, pcr, data, a);
  }

  // ------------------------------------------------------------ objects

  async createPrimary(
    hierarchy: number,
    template: TpmtPublic,
    opts: { hierarchyAuth?: AuthArg; userAuth?: Buffer; data?: Buffer; outsideInfo?: Buffer; creationPcrs?: PcrSelection[] } = {},
  ): Promise<CreatePrimaryResult> {
    return this.run(C.CreatePrimary(hierarchy, template, authOf(undefined, opts.hierarchyAuth), opts));
  }
  /** An endorsement key from the TCG EK Credential Profile default template (RSA-2048 or ECC P-256). */
  createEk(kind: KeyKind = 'rsa', opts: { hierarchyAuth?: AuthArg } = {}): Promise<TpmObject & { public: TpmtPublic }> {
    return F.createEk(this, kind, opts);
  }
  /** A storage root key in the owner hierarchy. */
  createSrk(kind: KeyKind = 'rsa', opts: { hierarchyAuth?: AuthArg } = {}): Promise<TpmObject & { public: TpmtPublic }> {
    return F.createSrk(this, kind, opts);
  }
  create(parent: TpmObject, template: TpmtPublic, opts: { parentAuth?: AuthArg; userAuth?: Buffer; data?: Buffer } = {}): Promise<CreateResult> {
    return this.run(C.Create(parent, template, authOf(parent, opts.parentAuth), opts));
  }
  load(parent: TpmObject, priv: Buffer, pub: TpmtPublic, opts: { parentAuth?: AuthArg; authValue?: Buffer } = {}): Promise<TpmObject & { public: TpmtPublic }> {
    return this.run(C.Load(parent, priv, pub, authOf(parent, opts.parentAuth), opts.authValue));
  }
  /** A restricted signing attestation key under `parent` (the EK's policy session made when the parent is an EK). */
  createAk(parent: TpmObject, kind: KeyKind = 'rsa', opts: { userAuth?: Buffer; template?: TpmtPublic } = {}): Promise<{ object: TpmObject & { public: TpmtPublic }; private: Buffer }> {
    return F.createAk(this, parent, kind, opts);
  }
  /**
   * TPM2_EvictControl: makes a transient object persistent at `persistentHandle`
   * (0x81000000-0x81ffffff), or with a persistent object, removes it. Returns the handle.
   */
  evictControl(object: TpmObject, persistentHandle: number, opts: { hierarchy?: number; auth?: AuthArg } = {}): Promise<number> {
    return this.run(C.EvictControl(opts.hierarchy ?? TPM_RH.OWNER, object, persistentHandle, authOf(undefined, opts.auth)));
  }
  /** Loads a public area only (no private part), e.g. to compute or check its Name. */
  loadExternal(pub: TpmtPublic, hierarchy: number = TPM_RH.OWNER): Promise<TpmObject & { public: TpmtPublic }> {
    return this.run(C.LoadExternal(pub, hierarchy));
  }
  readPublic(handle: HandleArg): Promise<{ public: TpmtPublic; name: Buffer; qualifiedName: Buffer }> {
    return this.run(C.ReadPublic(refOf(handle).handle));
  }
  /** An object handle already loaded (e.g. by another program), with its Name and public area. */
  async objectFromHandle(handle: number, authValue?: Buffer): Promise<TpmObject & { public: TpmtPublic }> {
    const rp = await this.readPublic(handle);
    return { handle, name: rp.name, public: rp.public, ...(authValue ? { authValue } : {}) };
  }

  // ------------------------------------------------------------ attestation

  /** TPM2_Quote over a PCR selection; scheme NULL uses the key's own scheme. */
  quote(signer: TpmObject, selection: PcrSelection[], qualifyingData: Uint8Array = Buffer.alloc(0), opts: { scheme?: Scheme; auth?: AuthArg } = {}): Promise<QuoteResult> {
    return this.run(C.Quote(signer, selection, qualifyingData, authOf(signer, opts.auth), opts.scheme));
  }
  /** A quote and the PCR values it covers, guaranteed consistent (flows.ts quoteWithPcrs). */
  quoteWithPcrs(
    signer: TpmObject & { public: TpmtPublic },
    selection: PcrSelection[],
    qualifyingData: Uint8Array = Buffer.alloc(0),
    opts: { scheme?: Scheme; auth?: AuthArg; attempts?: number } = {},
  ): Promise<QuoteResult & { banks: PcrBank[] }> {
    return F.quoteWithPcrs(this, signer, selection, qualifyingData, opts);
  }
  /** TPM2_Certify: `signer` attests that `object` is loaded in this TPM. */
  certify(object: TpmObject, signer: TpmObject, qualifyingData: Uint8Array = Buffer.alloc(0), opts: { scheme?: Scheme; objectAuth?: AuthArg; signerAuth?: AuthArg } = {}): Promise<QuoteResult> {
    return this.run(C.Certify(object, signer, qualifyingData, authOf(object, opts.objectAuth), authOf(signer, opts.signerAuth), opts.scheme));
  }

  // ------------------------------------------------------------ sessions and policy

  /** TPM2_StartAuthSession: `tpmKey` salts the session; `bind` binds it to an entity whose authValue then keys it. */
  startAuthSession(opts: C.StartAuthSessionOptions = {}): Promise<AuthSession> {
    return F.startAuthSession(this, opts);
  }
  /** TPM2_PolicySecret: asserts knowledge of `authEntity`'s authorization in a policy session. */
  policySecret(authEntity: HandleArg, session: AuthSession, opts: C.PolicySecretOptions & { auth?: AuthArg } = {}): Promise<{ timeout: Buffer; ticket: Ticket }> {
    return F.policySecret(this, authEntity, session, opts);
  }
  policyGetDigest(session: AuthSession): Promise<Buffer> {
    return this.run(C.PolicyGetDigest(session));
  }
  /**
   * TPM2_PolicyPCR: binds the policy to PCR values. With `pcrDigest` (H of the expected values)
   * the check is deferred to the command being authorized; empty = the TPM's current values.
   */
  policyPcr(session: AuthSession, selection: PcrSelection[], pcrDigest: Buffer = Buffer.alloc(0)): Promise<void> {
    return this.run(C.PolicyPcr(session, selection, pcrDigest));
  }
  /** TPM2_Unseal: the data of a sealed (keyed-hash) object. */
  unseal(item: TpmObject, a?: AuthArg): Promise<Buffer> {
    return this.run(C.Unseal(item, authOf(item, a)));
  }
  /** TPM2_PolicyAuthValue: the object's authValue then keys the session HMAC. */
  policyAuthValue(session: AuthSession): Promise<void> {
    return this.run(C.PolicyAuthValue(session));
  }
  /** TPM2_PolicyPassword: the authValue is then sent in clear. */
  policyPassword(session: AuthSession): Promise<void> {
    return this.run(C.PolicyPassword(session));
  }
  policyRestart(session: AuthSession): Promise<void> {
    return this.run(C.PolicyRestart(session));
  }
  /** A policy session satisfying the EK authPolicy: PolicySecret(TPM_RH_ENDORSEMENT). Flush it after use. */
  ekPolicySession(endorsementAuth?: Buffer): Promise<AuthSession> {
    return F.ekPolicySession(this, endorsementAuth);
  }

  // ------------------------------------------------------------ contexts

  flushContext(h: HandleArg | AuthSession): Promise<void> {
    return this.run(C.FlushContext(h));
  }
  /** Flushes every transient object and loaded session (useful without a resource manager). */
  flushAll(): Promise<number> {
    return F.flushAll(this);
  }
  contextSave(h: HandleArg | AuthSession): Promise<TpmsContext> {
    return this.run(C.ContextSave(typeof h === 'number' ? h : h.handle));
  }
  contextLoad(ctx: TpmsContext): Promise<number> {
    return this.run(C.ContextLoad(ctx));
  }

  // ------------------------------------------------------------ NV

  nvReadPublic(index: number): Promise<{ public: NvPublic; name: Buffer }> {
    return this.run(C.NvReadPublic(index));
  }
  /** Reads an NV index whole (or a range), in chunks of TPM_PT_NV_BUFFER_MAX (flows.ts nvRead). */
  nvRead(index: number, opts: { offset?: number; size?: number; authHandle?: number; auth?: AuthArg } = {}): Promise<Buffer> {
    return F.nvRead(this, index, opts);
  }
  /** The EK certificate (DER) from its TCG NV index, or undefined when the TPM has none. */
  readEkCertificate(kind: KeyKind | 'ecc-p384' = 'rsa'): Promise<Buffer | undefined> {
    return F.readEkCertificate(this, kind);
  }

  // ------------------------------------------------------------ credentials

  /** TPM2_ActivateCredential: recovers a credential made for `key` (EK) and `activate` (AK). */
  activateCredential(activate: TpmObject, key: TpmObject, credentialBlob: IdObject, secret: Buffer, opts: { activateAuth?: AuthArg; keyAuth?: AuthArg } = {}): Promise<Buffer> {
    return this.run(C.ActivateCredential(activate, key, credentialBlob, secret, authOf(activate, opts.activateAuth), authOf(key, opts.keyAuth)));
  }
  /** ActivateCredential with an EK as the key: runs the EK's PolicySecret(endorsement) session. */
  activateCredentialWithEk(ak: TpmObject, ek: TpmObject, credentialBlob: IdObject, secret: Buffer, opts: { endorsementAuth?: Buffer } = {}): Promise<Buffer> {
    return F.activateCredentialWithEk(this, ak, ek, credentialBlob, secret, opts);
  }

  // ------------------------------------------------------------ hashing

  hashSequenceStart(hashAlg: number, auth: Buffer = Buffer.alloc(0)): Promise<TpmObject> {
    return this.run(C.HashSequenceStart(hashAlg, auth));
  }
  sequenceUpdate(seq: TpmObject, data: Uint8Array): Promise<void> {
    return this.run(C.SequenceUpdate(seq, data, authOf(seq)));
  }
  sequenceComplete(seq: TpmObject, data: Uint8Array = Buffer.alloc(0), hierarchy: number = TPM_RH.NULL): Promise<{ digest: Buffer; ticket: Ticket }> {
    return this.run(C.SequenceComplete(seq, data, hierarchy, authOf(seq)));
  }
  /** Hashes data of any size in the TPM with a hash sequence (chunks of TPM_PT_INPUT_BUFFER). */
  hash(data: Uint8Array, hashAlg: number = TPM_ALG.SHA256, hierarchy: number = TPM_RH.NULL): Promise<{ digest: Buffer; ticket: Ticket }> {
    return F.hash(this, data, hashAlg, hierarchy);
  }
}
