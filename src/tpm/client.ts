/** TpmClient: TPM 2.0 commands over a TpmTransport, with sessions, retries and decoded errors. */
import { randomBytes } from 'node:crypto';
import { TPM_ALG, algName, digest, hashAlgById, type HashAlg } from './alg.js';
import {
  DEFAULT_PCR_COUNT,
  EK_NV_INDEX,
  TPMA_NV,
  TPMA_SESSION,
  TPM_CAP,
  TPM_CC,
  TPM_HT,
  TPM_PT,
  TPM_RH,
  TPM_SE,
  TPM_ST,
  TPM_SU,
  commandName,
} from './constants.js';
import { handleName, hashOf, kdfa, nvName, objectName, protectSeed, trimAuth } from './crypto.js';
import { TPM_RC, TpmError, TpmProtocolError, TpmUsageError } from './errors.js';
import { TpmReader, TpmWriter } from './marshal.js';
import { AuthSession, PasswordSession, checkAuthResponse, cryptParameter, needsCpHash, refreshNonces, writeAuthCommand, type Authorization, type Session } from './session.js';
import {
  MAX,
  SCHEME_NULL,
  SYM_NULL,
  marshalContext,
  marshalDigestValues,
  marshalIdObject2B,
  marshalPcrSelectionList,
  marshalPublic2B,
  marshalScheme,
  marshalSensitiveCreate2B,
  marshalSymDef,
  parseAttest,
  readCapabilityData,
  readContext,
  readDigestList,
  readDigestValues,
  readNvPublic2B,
  readPcrSelectionList,
  readPublic2B,
  readSignature,
  readTicket,
  readClockInfo,
  type ClockInfo,
  type AlgProperty,
  type CapabilityData,
  type IdObject,
  type NvPublic,
  type PcrSelection,
  type Scheme,
  type SymDef,
  type TaggedHash,
  type TaggedProperty,
  type Ticket,
  type TpmsAttest,
  type TpmsContext,
  type TpmtPublic,
  type TpmtSignature,
} from './structures.js';
import { ekTemplate, srkTemplate, akTemplate, type KeyKind } from './templates.js';
import type { TpmTransport } from './transport/transport.js';
import { pcrDigest, type PcrBank } from './verify.js';

/** A loaded object: its handle and Name (and public area when known). */
export interface TpmObject {
  handle: number;
  name: Buffer;
  public?: TpmtPublic;
  /** authValue to use when a command authorizes this object (default empty). */
  authValue?: Buffer;
}

export type HandleArg = number | TpmObject;

/** How a command authorizes a handle: a session (default: password) and/or the authValue. */
export interface AuthArg {
  session?: Session;
  auth?: Buffer;
}

interface CmdHandle {
  handle: number;
  name?: Buffer;
}
interface CmdAuth {
  session: Session;
  authValue: Buffer;
}
export interface CommandRequest {
  cc: number;
  handles?: CmdHandle[];
  /** Authorizations for handles[0..auths.length). */
  auths?: CmdAuth[];
  params?: Buffer;
  responseHandles?: number;
  /** Replaces the generic meaning of an error code with the caller's words. */
  errorContext?: (err: TpmError) => string | undefined;
}
export interface CommandResult {
  handles: number[];
  params: TpmReader;
  rawParams: Buffer;
}

export interface QuoteResult {
  /** TPMS_ATTEST bytes exactly as signed (what tpm2_quote -m writes). */
  attest: Buffer;
  parsed: TpmsAttest;
  signature: TpmtSignature;
  /** Marshaled TPMT_SIGNATURE (what tpm2_quote -s writes in tss format). */
  signatureBytes: Buffer;
}

export interface CreatePrimaryResult {
  object: TpmObject & { public: TpmtPublic };
  creationData: Buffer;
  creationHash: Buffer;
  creationTicket: Ticket;
}

export interface CreateResult {
  /** TPM2B_PRIVATE contents (without the size). */
  private: Buffer;
  public: TpmtPublic;
  creationData: Buffer;
  creationHash: Buffer;
  creationTicket: Ticket;
}

export interface TpmInfo {
  manufacturer: string;
  vendorString: string;
  family: string;
  level: number;
  revision: string;
  year: number;
  dayOfYear: number;
  firmwareVersion: string;
  firmwareVersionRaw: [number, number];
  pcrCount: number;
  inputBuffer: number;
  nvBufferMax: number;
  maxDigest: number;
  banks: { hash: number; name: string; pcrs: number[] }[];
  algorithms: string[];
  properties: Map<number, number>;
}

export interface TpmClientOptions {
  /** Per-command timeout (default: the transport's, 30 s); key creation gets at least 180 s. */
  timeoutMs?: number;
  /** Retries for TPM_RC_RETRY / TPM_RC_YIELDED / TPM_RC_TESTING (default 10). */
  retries?: number;
  /** Milliseconds before the first retry; doubles up to 1 s (default 10). */
  retryDelayMs?: number;
}

const RETRYABLE = new Set<number>([TPM_RC.RETRY, TPM_RC.YIELDED, TPM_RC.TESTING]);
/** Key generation on a hardware TPM can take tens of seconds (RSA prime search). */
const SLOW_COMMANDS = new Set<number>([TPM_CC.CreatePrimary, TPM_CC.Create, TPM_CC.CreateLoaded]);
const SLOW_TIMEOUT_MS = 180_000;

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}
function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}
function params(fill: (w: TpmWriter) => void): Buffer {
  const w = new TpmWriter();
  fill(w);
  return w.finish();
}
/** Checks that a Name returned by the TPM matches the public area it returned with it. */
function checkName(computed: () => Buffer, name: Buffer, what: string): void {
  let mine: Buffer;
  try {
    mine = computed();
  } catch (e) {
    throw new TpmProtocolError(`${what}: cannot compute the Name of the returned public area: ${(e as Error).message}`);
  }
  if (!mine.equals(name)) throw new TpmProtocolError(`${what}: returned Name does not match the returned public area`);
}

function hex(h: number): string {
  return `0x${(h >>> 0).toString(16).padStart(8, '0')}`;
}

export class TpmClient {
  private locality = 0;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private fixedProps: Map<number, number> | undefined;
  private readonly timeoutMs: number | undefined;

  constructor(
    readonly transport: TpmTransport,
    opts: TpmClientOptions = {},
  ) {
    this.retries = opts.retries ?? 10;
    this.retryDelayMs = opts.retryDelayMs ?? 10;
    this.timeoutMs = opts.timeoutMs;
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  /** Locality of the commands that follow (swtpm: through its control channel). */
  async setLocality(locality: number): Promise<void> {
    if (!this.transport.setLocality) throw new TpmUsageError(`${this.transport.description}: locality cannot be chosen on this transport`);
    await this.transport.setLocality(locality);
    this.locality = locality;
  }
  get currentLocality(): number {
    return this.locality;
  }

  // ------------------------------------------------------------ command execution

  private async nameOf(h: CmdHandle): Promise<Buffer> {
    if (h.name) return h.name;
    const ht = h.handle >>> 24;
    if (ht === TPM_HT.TRANSIENT || ht === TPM_HT.PERSISTENT) return (await this.readPublic(h.handle)).name;
    if (ht === TPM_HT.NV_INDEX) return (await this.nvReadPublic(h.handle)).name;
    return handleName(h.handle);
  }

  /** Sends one command; decodes errors, retries transient warnings, runs sessions. */
  async execute(req: CommandRequest): Promise<CommandResult> {
    const handles = req.handles ?? [];
    const auths = req.auths ?? [];
    const body = req.params ?? Buffer.alloc(0);
    if (auths.length > handles.length) throw new TpmUsageError(`${commandName(req.cc)}: more authorizations than handles`);
    const authorizations: Authorization[] = [];
    let names: Buffer[] = [];
    const withSessions = needsCpHash(auths.map((a) => ({ session: a.session, authValue: a.authValue, entityName: Buffer.alloc(0) })));
    if (withSessions) names = await Promise.all(handles.map((h) => this.nameOf(h)));
    auths.forEach((a, i) => authorizations.push({ session: a.session, authValue: a.authValue, entityName: names[i] ?? handleName(handles[i]!.handle) }));
    const isSession = (a: Authorization): a is Authorization & { session: AuthSession } => a.session.kind !== 'password';
    const decryptAuth = authorizations.find((a) => isSession(a) && a.session.attributes & TPMA_SESSION.decrypt);
    const encryptAuth = authorizations.find((a) => isSession(a) && a.session.attributes & TPMA_SESSION.encrypt);
    if ((decryptAuth && decryptAuth !== authorizations[0]) || (encryptAuth && encryptAuth !== authorizations[0])) {
      throw new TpmUsageError(`${commandName(req.cc)}: parameter encryption is supported on the first session only`);
    }

    for (let attempt = 0; ; attempt++) {
      refreshNonces(authorizations);
      let sent = body;
      if (decryptAuth) {
        if (body.length < 2 || body.readUInt16BE(0) + 2 > body.length) throw new TpmUsageError(`${commandName(req.cc)}: first parameter is not a TPM2B, it cannot be encrypted`);
        const n = body.readUInt16BE(0);
        sent = Buffer.concat([body.subarray(0, 2), cryptParameter(decryptAuth, body.subarray(2, 2 + n), true), body.subarray(2 + n)]);
      }
      const cpHashes = new Map<number, Buffer>();
      const cpHash = (h: HashAlg): Buffer => {
        let v = cpHashes.get(h.id);
        if (!v) cpHashes.set(h.id, (v = digest(h, u32(req.cc), ...names, sent)));
        return v;
      };
      const w = new TpmWriter(64 + body.length);
      w.u16(auths.length ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS).u32(0).u32(req.cc);
      for (const h of handles) w.u32(h.handle);
      if (auths.length) {
        const aw = new TpmWriter();
        for (const a of authorizations) writeAuthCommand(aw, a, cpHash);
        const area = aw.finish();
        w.u32(area.length).bytes(area);
      }
      w.bytes(sent);
      const cmd = w.finish();
      cmd.writeUInt32BE(cmd.length, 2);

      const resp = await this.transport.send(cmd, SLOW_COMMANDS.has(req.cc) ? { timeoutMs: Math.max(SLOW_TIMEOUT_MS, this.timeoutMs ?? 0) } : this.timeoutMs ? { timeoutMs: this.timeoutMs } : {});
      const r = new TpmReader(resp, `${commandName(req.cc)} response`);
      const tag = r.u16('tag');
      const size = r.u32('responseSize');
      if (size !== resp.length) r.fail('responseSize', `says ${size} bytes, ${resp.length} received`, 2);
      const rc = r.u32('responseCode');
      if (rc !== 0) {
        if (resp.length !== 10) r.fail('responseCode', `error response 0x${rc.toString(16)} carries ${resp.length - 10} extra byte(s)`, 6);
        const err = new TpmError(rc, req.cc);
        if (RETRYABLE.has(err.base) && attempt < this.retries) {
          await new Promise((res) => setTimeout(res, Math.min(1000, this.retryDelayMs * 2 ** attempt)));
          continue;
        }
        const ctx = req.errorContext?.(err);
        throw ctx ? new TpmError(rc, req.cc, ctx) : err;
      }
      const wantTag = auths.length ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS;
      if (tag !== wantTag) r.fail('tag', `0x${tag.toString(16)} where 0x${wantTag.toString(16)} was expected`, 0);
      const outHandles: number[] = [];
      for (let i = 0; i < (req.responseHandles ?? 0); i++) outHandles.push(r.u32(`handle[${i}]`));
      let rawParams: Buffer;
      let paramsBase: number;
      if (auths.length) {
        const psize = r.u32('parameterSize');
        paramsBase = r.offset;
        rawParams = r.bytes(psize, 'parameters');
        const rp = new Map<number, Buffer>();
        const rpHash = (h: HashAlg): Buffer => {
          let v = rp.get(h.id);
          if (!v) rp.set(h.id, (v = digest(h, u32(0), u32(req.cc), rawParams)));
          return v;
        };
        authorizations.forEach((a, i) => {
          const nonce = r.tpm2b(`authResponse[${i}].nonce`, MAX.NONCE);
          const attributes = r.u8(`authResponse[${i}].sessionAttributes`);
          const hmac = r.tpm2b(`authResponse[${i}].hmac`, MAX.DIGEST);
          checkAuthResponse(a, { nonce, attributes, hmac }, rpHash, i);
        });
        r.done('response');
        if (encryptAuth) {
          if (rawParams.length < 2 || rawParams.readUInt16BE(0) + 2 > rawParams.length) r.fail('parameters', 'first response parameter is not a TPM2B, it cannot be decrypted', paramsBase);
          const n = rawParams.readUInt16BE(0);
          rawParams = Buffer.concat([rawParams.subarray(0, 2), cryptParameter(encryptAuth, rawParams.subarray(2, 2 + n), false), rawParams.subarray(2 + n)]);
        }
      } else {
        paramsBase = r.offset;
        rawParams = r.rest();
      }
      return { handles: outHandles, params: new TpmReader(rawParams, `${commandName(req.cc)} response`, paramsBase), rawParams };
    }
  }

  private auth(entity: { authValue?: Buffer } | undefined, a?: AuthArg): CmdAuth {
    const authValue = a?.auth ?? entity?.authValue ?? Buffer.alloc(0);
    return { session: a?.session ?? new PasswordSession(authValue), authValue };
  }

  private static ref(h: HandleArg): CmdHandle & { authValue?: Buffer } {
    return typeof h === 'number' ? { handle: h } : h;
  }

  // ------------------------------------------------------------ start-up and tests

  /** TPM2_Startup; returns false when the TPM was already started (TPM_RC_INITIALIZE). */
  async startup(type: 'clear' | 'state' = 'clear'): Promise<boolean> {
    try {
      await this.execute({ cc: TPM_CC.Startup, params: u16(type === 'clear' ? TPM_SU.CLEAR : TPM_SU.STATE) });
      return true;
    } catch (e) {
      if (e instanceof TpmError && e.base === TPM_RC.INITIALIZE) return false;
      throw e;
    }
  }

  async shutdown(type: 'clear' | 'state' = 'clear'): Promise<void> {
    await this.execute({ cc: TPM_CC.Shutdown, params: u16(type === 'clear' ? TPM_SU.CLEAR : TPM_SU.STATE) });
  }

  async selfTest(full = true): Promise<void> {
    await this.execute({ cc: TPM_CC.SelfTest, params: Buffer.from([full ? 1 : 0]) });
  }

  /** TPM2_DictionaryAttackLockReset: clears the failed-authorization counter (lockout auth). */
  async dictionaryAttackLockReset(a?: AuthArg): Promise<void> {
    await this.execute({ cc: TPM_CC.DictionaryAttackLockReset, handles: [{ handle: TPM_RH.LOCKOUT }], auths: [this.auth(undefined, a)] });
  }

  // ------------------------------------------------------------ capabilities

  async getCapability(capability: number, property: number, count: number): Promise<{ moreData: boolean; data: CapabilityData }> {
    const res = await this.execute({ cc: TPM_CC.GetCapability, params: params((w) => w.u32(capability).u32(property).u32(count)) });
    const moreData = res.params.u8('moreData') !== 0;
    const data = readCapabilityData(res.params);
    res.params.done('GetCapability response');
    if (data.capability !== capability) throw new TpmProtocolError(`TPM2_GetCapability: asked for capability ${capability}, got ${data.capability}`);
    return { moreData, data };
  }

  /** Every entry of a capability, following moreData. */
  private async capabilityAll<T>(capability: number, first: number, pick: (d: CapabilityData) => T[], next: (last: T) => number): Promise<T[]> {
    const out: T[] = [];
    let property = first;
    for (let i = 0; i < 256; i++) {
      const { moreData, data } = await this.getCapability(capability, property, 256);
      const items = pick(data);
      out.push(...items);
      if (!moreData || items.length === 0) return out;
      property = next(items[items.length - 1]!) + 1;
    }
    throw new TpmProtocolError(`TPM2_GetCapability ${capability}: moreData never cleared`);
  }

  async getAlgorithms(): Promise<AlgProperty[]> {
    return this.capabilityAll(TPM_CAP.ALGS, 0, (d) => ('algs' in d ? d.algs : []), (a) => a.alg);
  }

  /** PCR banks with the PCRs allocated in each (banks with no PCR allocated included, empty). */
  async getPcrBanks(): Promise<PcrSelection[]> {
    const { data } = await this.getCapability(TPM_CAP.PCRS, 0, 1);
    return 'pcrs' in data ? data.pcrs : [];
  }

  /** Hash algorithm ids of the banks that have PCRs allocated. */
  async getActiveBanks(): Promise<number[]> {
    return (await this.getPcrBanks()).filter((b) => b.pcrs.length > 0).map((b) => b.hash);
  }

  async getProperties(first: number, count = 256): Promise<TaggedProperty[]> {
    const all = await this.capabilityAll(TPM_CAP.TPM_PROPERTIES, first, (d) => ('properties' in d ? d.properties : []), (p) => p.property);
    return all.filter((p) => p.property < first + count);
  }

  /** The TPM_PT_FIXED group (cached: they never change). */
  async getFixedProperties(): Promise<Map<number, number>> {
    if (!this.fixedProps) this.fixedProps = new Map((await this.getProperties(TPM_PT.FAMILY_INDICATOR, 0x100)).map((p) => [p.property, p.value]));
    return this.fixedProps;
  }

  async getProperty(property: number): Promise<number | undefined> {
    if (property >= 0x100 && property < 0x200) return (await this.getFixedProperties()).get(property);
    const { data } = await this.getCapability(TPM_CAP.TPM_PROPERTIES, property, 1);
    const p = 'properties' in data ? data.properties.find((x) => x.property === property) : undefined;
    return p?.value;
  }

  /** Handles of one type in use (TPM_HT_TRANSIENT, TPM_HT_PERSISTENT, TPM_HT_NV_INDEX, …). */
  async getHandles(type: number): Promise<number[]> {
    const first = (type << 24) >>> 0;
    const all = await this.capabilityAll(TPM_CAP.HANDLES, first, (d) => ('handles' in d ? d.handles : []), (h) => h);
    return all.filter((h) => h >>> 24 === type);
  }

  async getEccCurves(): Promise<number[]> {
    const { data } = await this.getCapability(TPM_CAP.ECC_CURVES, 0, 64);
    return 'curves' in data ? data.curves : [];
  }

  /** Manufacturer, firmware, spec level, banks and algorithms in one summary. */
  async getTpmInfo(): Promise<TpmInfo> {
    const p = await this.getFixedProperties();
    const ascii = (v: number | undefined): string => (v === undefined ? '' : Buffer.from(u32(v)).toString('latin1').replace(/\0/g, '').trim());
    const fw1 = p.get(TPM_PT.FIRMWARE_VERSION_1) ?? 0;
    const fw2 = p.get(TPM_PT.FIRMWARE_VERSION_2) ?? 0;
    const banks = await this.getPcrBanks();
    const algs = await this.getAlgorithms();
    return {
      manufacturer: ascii(p.get(TPM_PT.MANUFACTURER)),
      vendorString: [TPM_PT.VENDOR_STRING_1, TPM_PT.VENDOR_STRING_2, TPM_PT.VENDOR_STRING_3, TPM_PT.VENDOR_STRING_4].map((k) => ascii(p.get(k))).join(''),
      family: ascii(p.get(TPM_PT.FAMILY_INDICATOR)),
      level: p.get(TPM_PT.LEVEL) ?? 0,
      revision: ((p.get(TPM_PT.REVISION) ?? 0) / 100).toFixed(2),
      year: p.get(TPM_PT.YEAR) ?? 0,
      dayOfYear: p.get(TPM_PT.DAY_OF_YEAR) ?? 0,
      firmwareVersion: `${fw1 >>> 16}.${fw1 & 0xffff}.${fw2 >>> 16}.${fw2 & 0xffff}`,
      firmwareVersionRaw: [fw1, fw2],
      pcrCount: p.get(TPM_PT.PCR_COUNT) ?? DEFAULT_PCR_COUNT,
      inputBuffer: p.get(TPM_PT.INPUT_BUFFER) ?? 1024,
      nvBufferMax: p.get(TPM_PT.NV_BUFFER_MAX) ?? 1024,
      maxDigest: p.get(TPM_PT.MAX_DIGEST) ?? 32,
      banks: banks.map((b) => ({ hash: b.hash, name: algName(b.hash), pcrs: b.pcrs })),
      algorithms: algs.map((a) => algName(a.alg)),
      properties: p,
    };
  }

  // ------------------------------------------------------------ clock

  /**
   * TPM2_ReadClock: time since the last power-up and TPMS_CLOCK_INFO. resetCount counts TPM
   * Resets (Startup(CLEAR) after a reboot or power cycle: PCRs reset), restartCount TPM
   * Restarts/Resumes since the last Reset, so together they identify one boot of the TPM.
   */
  async readClock(): Promise<{ time: bigint } & ClockInfo> {
    const res = await this.execute({ cc: TPM_CC.ReadClock });
    const time = res.params.u64('TPMS_TIME_INFO.time');
    const clock = readClockInfo(res.params);
    res.params.done('ReadClock response');
    return { time, ...clock };
  }

  // ------------------------------------------------------------ random

  async getRandom(bytes: number): Promise<Buffer> {
    const out: Buffer[] = [];
    let got = 0;
    for (let guard = 0; got < bytes; guard++) {
      if (guard > 4 * bytes + 16) throw new TpmProtocolError('TPM2_GetRandom keeps returning nothing');
      const res = await this.execute({ cc: TPM_CC.GetRandom, params: u16(Math.min(bytes - got, MAX.DIGEST)) });
      const b = res.params.tpm2b('randomBytes', MAX.DIGEST);
      res.params.done('GetRandom response');
      out.push(b);
      got += b.length;
    }
    return Buffer.concat(out).subarray(0, bytes);
  }

  // ------------------------------------------------------------ PCRs

  /** One TPM2_PCR_Read as the TPM answers it (at most 8 digests, possibly a partial selection). */
  async pcrReadRaw(selection: PcrSelection[]): Promise<{ updateCounter: number; selection: PcrSelection[]; digests: Buffer[] }> {
    const res = await this.execute({ cc: TPM_CC.PCR_Read, params: params((w) => marshalPcrSelectionList(w, selection)) });
    const updateCounter = res.params.u32('pcrUpdateCounter');
    const sel = readPcrSelectionList(res.params);
    const digests = readDigestList(res.params);
    res.params.done('PCR_Read response');
    return { updateCounter, selection: sel, digests };
  }

  /**
   * Reads any number of PCRs in any banks: splits into requests of at most 8 PCRs of one bank,
   * loops while the TPM returns partial selections, and restarts (bounded) when the PCR update
   * counter changes between requests so that all values are from one moment (PCRs 16 and
   * 21-23 of a PC Client TPM do not move the counter). PCRs the TPM does not have are absent.
   */
  async pcrRead(selection: PcrSelection[]): Promise<{ updateCounter: number; banks: PcrBank[] }> {
    for (let round = 0; round < 5; round++) {
      const banks: PcrBank[] = selection.map((s) => ({ hash: s.hash, values: new Map() }));
      let counter: number | undefined;
      let changed = false;
      for (const [bi, sel] of selection.entries()) {
        const size = hashAlgById(sel.hash)?.size;
        let pending = [...new Set(sel.pcrs)].sort((a, b) => a - b);
        while (pending.length && !changed) {
          const ask = pending.slice(0, 8);
          const got = await this.pcrReadRaw([{ hash: sel.hash, pcrs: ask, ...(sel.sizeofSelect ? { sizeofSelect: sel.sizeofSelect } : {}) }]);
          if (counter === undefined) counter = got.updateCounter;
          else if (got.updateCounter !== counter) {
            changed = true;
            break;
          }
          const returned = got.selection.filter((s) => s.hash === sel.hash).flatMap((s) => s.pcrs);
          const n = returned.length;
          if (n !== got.digests.length) throw new TpmProtocolError(`TPM2_PCR_Read: ${n} PCR(s) selected in the answer but ${got.digests.length} digest(s) returned`);
          returned.forEach((pcr, i) => {
            const d = got.digests[i]!;
            if (!ask.includes(pcr)) throw new TpmProtocolError(`TPM2_PCR_Read: returned PCR ${pcr} of bank ${algName(sel.hash)} that was not asked for`);
            if (size !== undefined && d.length !== size) throw new TpmProtocolError(`TPM2_PCR_Read: PCR ${pcr} of bank ${algName(sel.hash)} has ${d.length} bytes, expected ${size}`);
            banks[bi]!.values.set(pcr, d);
          });
          // PCRs not returned with none returned: the TPM does not have them; drop them.
          pending = n === 0 ? pending.slice(ask.length) : pending.filter((p) => !returned.includes(p));
        }
        if (changed) break;
      }
      if (!changed) return { updateCounter: counter ?? 0, banks };
    }
    throw new TpmProtocolError('TPM2_PCR_Read: PCRs kept changing while being read (5 attempts)');
  }

  /** All PCRs of the given banks (default: every bank with PCRs allocated). */
  async pcrReadAll(banks?: number[]): Promise<PcrBank[]> {
    const allocated = await this.getPcrBanks();
    const sel: PcrSelection[] = [];
    for (const b of allocated) {
      if (b.pcrs.length === 0) continue;
      if (banks && !banks.includes(b.hash)) continue;
      sel.push({ hash: b.hash, pcrs: b.pcrs });
    }
    if (banks) {
      const missing = banks.filter((h) => !sel.some((s) => s.hash === h));
      if (missing.length) throw new TpmUsageError(`PCR bank(s) ${missing.map(algName).join(', ')} not active on this TPM (active: ${sel.map((s) => algName(s.hash)).join(', ')})`);
    }
    return (await this.pcrRead(sel)).banks;
  }

  private pcrContext(pcr: number, verb: string): (e: TpmError) => string | undefined {
    return (e) => {
      if (e.base === TPM_RC.LOCALITY) return `PCR ${pcr} cannot be ${verb} at locality ${this.locality}`;
      if (e.base === 0x084 /* VALUE */ || e.base === 0x08b /* HANDLE */) return `PCR ${pcr} does not exist or cannot be ${verb}`;
      return undefined;
    };
  }

  async pcrExtend(pcr: number, digests: TaggedHash[], a?: AuthArg): Promise<void> {
    await this.execute({
      cc: TPM_CC.PCR_Extend,
      handles: [{ handle: pcr }],
      auths: [this.auth(undefined, a)],
      params: params((w) => marshalDigestValues(w, digests)),
      errorContext: this.pcrContext(pcr, 'extended'),
    });
  }

  /** TPM2_PCR_Event: the TPM hashes data (≤ 1024 bytes) in every bank and extends. */
  async pcrEvent(pcr: number, data: Uint8Array, a?: AuthArg): Promise<TaggedHash[]> {
    if (data.length > MAX.EVENT) throw new TpmUsageError(`PCR_Event data of ${data.length} bytes exceeds ${MAX.EVENT}`);
    const res = await this.execute({
      cc: TPM_CC.PCR_Event,
      handles: [{ handle: pcr }],
      auths: [this.auth(undefined, a)],
      params: params((w) => w.tpm2b(data)),
      errorContext: this.pcrContext(pcr, 'extended'),
    });
    const out = readDigestValues(res.params);
    res.params.done('PCR_Event response');
    return out;
  }

  async pcrReset(pcr: number, a?: AuthArg): Promise<void> {
    await this.execute({
      cc: TPM_CC.PCR_Reset,
      handles: [{ handle: pcr }],
      auths: [this.auth(undefined, a)],
      errorContext: this.pcrContext(pcr, 'reset'),
    });
  }

  // ------------------------------------------------------------ objects

  async createPrimary(
    hierarchy: number,
    template: TpmtPublic,
    opts: { hierarchyAuth?: AuthArg; userAuth?: Buffer; data?: Buffer; outsideInfo?: Buffer; creationPcrs?: PcrSelection[] } = {},
  ): Promise<CreatePrimaryResult> {
    const res = await this.execute({
      cc: TPM_CC.CreatePrimary,
      handles: [{ handle: hierarchy }],
      auths: [this.auth(undefined, opts.hierarchyAuth)],
      params: params((w) => {
        marshalSensitiveCreate2B(w, { userAuth: opts.userAuth ?? Buffer.alloc(0), data: opts.data ?? Buffer.alloc(0) });
        marshalPublic2B(w, template);
        w.tpm2b(opts.outsideInfo ?? Buffer.alloc(0));
        marshalPcrSelectionList(w, opts.creationPcrs ?? []);
      }),
      responseHandles: 1,
    });
    const r = res.params;
    const pub = readPublic2B(r);
    const creationData = r.tpm2b('creationData', MAX.CREATION_DATA);
    const creationHash = r.tpm2b('creationHash', MAX.DIGEST);
    const creationTicket = readTicket(r, 'creationTicket');
    const name = r.tpm2b('name', MAX.NAME);
    r.done('CreatePrimary response');
    checkName(() => objectName(pub), name, 'TPM2_CreatePrimary');
    return {
      object: { handle: res.handles[0]!, name, public: pub, ...(opts.userAuth ? { authValue: opts.userAuth } : {}) },
      creationData,
      creationHash,
      creationTicket,
    };
  }

  /** An endorsement key from the TCG EK Credential Profile default template (RSA-2048 or ECC P-256). */
  async createEk(kind: KeyKind = 'rsa', opts: { hierarchyAuth?: AuthArg } = {}): Promise<TpmObject & { public: TpmtPublic }> {
    return (await this.createPrimary(TPM_RH.ENDORSEMENT, ekTemplate(kind), opts)).object;
  }

  /** A storage root key in the owner hierarchy. */
  async createSrk(kind: KeyKind = 'rsa', opts: { hierarchyAuth?: AuthArg } = {}): Promise<TpmObject & { public: TpmtPublic }> {
    return (await this.createPrimary(TPM_RH.OWNER, srkTemplate(kind), opts)).object;
  }

  async create(parent: TpmObject, template: TpmtPublic, opts: { parentAuth?: AuthArg; userAuth?: Buffer; data?: Buffer } = {}): Promise<CreateResult> {
    const res = await this.execute({
      cc: TPM_CC.Create,
      handles: [parent],
      auths: [this.auth(parent, opts.parentAuth)],
      params: params((w) => {
        marshalSensitiveCreate2B(w, { userAuth: opts.userAuth ?? Buffer.alloc(0), data: opts.data ?? Buffer.alloc(0) });
        marshalPublic2B(w, template);
        w.tpm2b(Buffer.alloc(0));
        marshalPcrSelectionList(w, []);
      }),
    });
    const r = res.params;
    const priv = r.tpm2b('outPrivate', MAX.PRIVATE);
    const pub = readPublic2B(r);
    const creationData = r.tpm2b('creationData', MAX.CREATION_DATA);
    const creationHash = r.tpm2b('creationHash', MAX.DIGEST);
    const creationTicket = readTicket(r, 'creationTicket');
    r.done('Create response');
    return { private: priv, public: pub, creationData, creationHash, creationTicket };
  }

  async load(parent: TpmObject, priv: Buffer, pub: TpmtPublic, opts: { parentAuth?: AuthArg; authValue?: Buffer } = {}): Promise<TpmObject & { public: TpmtPublic }> {
    const res = await this.execute({
      cc: TPM_CC.Load,
      handles: [parent],
      auths: [this.auth(parent, opts.parentAuth)],
      params: params((w) => {
        w.tpm2b(priv);
        marshalPublic2B(w, pub);
      }),
      responseHandles: 1,
    });
    const name = res.params.tpm2b('name', MAX.NAME);
    res.params.done('Load response');
    checkName(() => objectName(pub), name, 'TPM2_Load');
    return { handle: res.handles[0]!, name, public: pub, ...(opts.authValue ? { authValue: opts.authValue } : {}) };
  }

  /**
   * Creates and loads a restricted signing attestation key under `parent`. When the parent is
   * an EK (adminWithPolicy, no userWithAuth) the PolicySecret(endorsement) session is made here.
   */
  async createAk(parent: TpmObject, kind: KeyKind = 'rsa', opts: { userAuth?: Buffer; template?: TpmtPublic } = {}): Promise<{ object: TpmObject & { public: TpmtPublic }; private: Buffer }> {
    const template = opts.template ?? akTemplate(kind);
    const withParentAuth = async <T>(fn: (a: AuthArg | undefined) => Promise<T>): Promise<T> => {
      if (!this.isEk(parent)) return fn(undefined);
      const s = await this.ekPolicySession();
      try {
        return await fn({ session: s });
      } finally {
        await this.flushSession(s);
      }
    };
    const created = await withParentAuth((a) => this.create(parent, template, { ...(a ? { parentAuth: a } : {}), ...(opts.userAuth ? { userAuth: opts.userAuth } : {}) }));
    const object = await withParentAuth((a) => this.load(parent, created.private, created.public, { ...(a ? { parentAuth: a } : {}), ...(opts.userAuth ? { authValue: opts.userAuth } : {}) }));
    return { object, private: created.private };
  }

  private isEk(o: TpmObject): boolean {
    const p = o.public;
    return !!p && (p.objectAttributes & (1 << 7)) !== 0 && (p.objectAttributes & (1 << 6)) === 0;
  }

  /**
   * TPM2_EvictControl: makes a transient object persistent at `persistentHandle`
   * (0x81000000-0x81ffffff), or with a persistent object, removes it. Returns the handle.
   */
  async evictControl(object: TpmObject, persistentHandle: number, opts: { hierarchy?: number; auth?: AuthArg } = {}): Promise<number> {
    const hierarchy = opts.hierarchy ?? TPM_RH.OWNER;
    await this.execute({
      cc: TPM_CC.EvictControl,
      handles: [{ handle: hierarchy }, object],
      auths: [this.auth(undefined, opts.auth)],
      params: u32(persistentHandle),
      errorContext: (e) => (e.base === 0x14c ? `persistent handle ${hex(persistentHandle)} is already in use` : undefined),
    });
    return persistentHandle;
  }

  /** Loads a public area only (no private part), e.g. to compute or check its Name. */
  async loadExternal(pub: TpmtPublic, hierarchy: number = TPM_RH.OWNER): Promise<TpmObject & { public: TpmtPublic }> {
    const res = await this.execute({
      cc: TPM_CC.LoadExternal,
      params: params((w) => {
        w.u16(0); // no sensitive area
        marshalPublic2B(w, pub);
        w.u32(hierarchy);
      }),
      responseHandles: 1,
    });
    const name = res.params.tpm2b('name', MAX.NAME);
    res.params.done('LoadExternal response');
    return { handle: res.handles[0]!, name, public: pub };
  }

  async readPublic(handle: HandleArg): Promise<{ public: TpmtPublic; name: Buffer; qualifiedName: Buffer }> {
    const h = TpmClient.ref(handle);
    const res = await this.execute({ cc: TPM_CC.ReadPublic, handles: [{ handle: h.handle }] });
    const pub = readPublic2B(res.params);
    const name = res.params.tpm2b('name', MAX.NAME);
    const qualifiedName = res.params.tpm2b('qualifiedName', MAX.NAME);
    res.params.done('ReadPublic response');
    checkName(() => objectName(pub), name, `TPM2_ReadPublic ${hex(h.handle)}`);
    return { public: pub, name, qualifiedName };
  }

  /** An object handle already loaded (e.g. by another program), with its Name and public area. */
  async objectFromHandle(handle: number, authValue?: Buffer): Promise<TpmObject & { public: TpmtPublic }> {
    const rp = await this.readPublic(handle);
    return { handle, name: rp.name, public: rp.public, ...(authValue ? { authValue } : {}) };
  }

  // ------------------------------------------------------------ attestation

  private attestResult(r: TpmReader, what: string): QuoteResult {
    const attest = r.tpm2b('TPM2B_ATTEST', MAX.ATTEST);
    const sigStart = r.offset;
    const signature = readSignature(r);
    const signatureBytes = Buffer.from(r.buf.subarray(sigStart, r.offset));
    r.done(`${what} response`);
    return { attest, parsed: parseAttest(attest), signature, signatureBytes };
  }

  /** TPM2_Quote over a PCR selection; scheme NULL uses the key's own scheme. */
  async quote(signer: TpmObject, selection: PcrSelection[], qualifyingData: Uint8Array = Buffer.alloc(0), opts: { scheme?: Scheme; auth?: AuthArg } = {}): Promise<QuoteResult> {
    if (qualifyingData.length > MAX.DATA) throw new TpmUsageError(`quote qualifying data of ${qualifyingData.length} bytes exceeds ${MAX.DATA}`);
    const res = await this.execute({
      cc: TPM_CC.Quote,
      handles: [signer],
      auths: [this.auth(signer, opts.auth)],
      params: params((w) => {
        w.tpm2b(qualifyingData);
        marshalScheme(w, opts.scheme ?? SCHEME_NULL);
        marshalPcrSelectionList(w, selection);
      }),
    });
    return this.attestResult(res.params, 'Quote');
  }

  /**
   * A quote and the PCR values it covers, guaranteed consistent: PCRs are read after the quote
   * and must hash to its pcrDigest; when a PCR moved in between, both are taken again (bounded).
   */
  async quoteWithPcrs(
    signer: TpmObject & { public: TpmtPublic },
    selection: PcrSelection[],
    qualifyingData: Uint8Array = Buffer.alloc(0),
    opts: { scheme?: Scheme; auth?: AuthArg; attempts?: number } = {},
  ): Promise<QuoteResult & { banks: PcrBank[] }> {
    const attempts = opts.attempts ?? 5;
    for (let i = 0; i < attempts; i++) {
      const q = await this.quote(signer, selection, qualifyingData, opts);
      const { banks } = await this.pcrRead(selection);
      if (q.parsed.attested.kind !== 'quote') throw new TpmProtocolError('TPM2_Quote returned a non-quote attestation');
      const hash = 'hash' in q.signature ? q.signature.hash : signer.public.nameAlg;
      const d = pcrDigest(hash, q.parsed.attested.pcrSelect, banks);
      if (d.equals(q.parsed.attested.pcrDigest)) return { ...q, banks };
    }
    throw new TpmProtocolError(`PCRs kept changing between quote and read (${attempts} attempts)`);
  }

  /** TPM2_Certify: `signer` attests that `object` is loaded in this TPM. */
  async certify(
    object: TpmObject,
    signer: TpmObject,
    qualifyingData: Uint8Array = Buffer.alloc(0),
    opts: { scheme?: Scheme; objectAuth?: AuthArg; signerAuth?: AuthArg } = {},
  ): Promise<QuoteResult> {
    const res = await this.execute({
      cc: TPM_CC.Certify,
      handles: [object, signer],
      auths: [this.auth(object, opts.objectAuth), this.auth(signer, opts.signerAuth)],
      params: params((w) => {
        w.tpm2b(qualifyingData);
        marshalScheme(w, opts.scheme ?? SCHEME_NULL);
      }),
    });
    return this.attestResult(res.params, 'Certify');
  }

  // ------------------------------------------------------------ sessions and policy

  /**
   * TPM2_StartAuthSession. `tpmKey` (with its public area) salts the session; `bind` binds
   * it to an entity whose authValue then keys the session.
   */
  async startAuthSession(
    opts: {
      type?: 'hmac' | 'policy' | 'trial';
      hashAlg?: number;
      tpmKey?: TpmObject & { public: TpmtPublic };
      bind?: { handle: number; name?: Buffer; authValue?: Buffer };
      symmetric?: SymDef;
      attributes?: number;
    } = {},
  ): Promise<AuthSession> {
    const type = opts.type ?? 'hmac';
    const hash = hashOf(opts.hashAlg ?? TPM_ALG.SHA256, 'session hash');
    const symmetric = opts.symmetric ?? SYM_NULL;
    const nonceCaller = randomBytes(hash.size);
    const salt = opts.tpmKey ? protectSeed(opts.tpmKey.public, 'SECRET') : undefined;
    const bindName = opts.bind ? (opts.bind.name ?? (await this.nameOf({ handle: opts.bind.handle }))) : undefined;
    const res = await this.execute({
      cc: TPM_CC.StartAuthSession,
      handles: [{ handle: opts.tpmKey?.handle ?? TPM_RH.NULL }, { handle: opts.bind?.handle ?? TPM_RH.NULL }],
      params: params((w) => {
        w.tpm2b(nonceCaller).tpm2b(salt?.encrypted ?? Buffer.alloc(0));
        w.u8(type === 'hmac' ? TPM_SE.HMAC : type === 'policy' ? TPM_SE.POLICY : TPM_SE.TRIAL);
        marshalSymDef(w, symmetric);
        w.u16(hash.id);
      }),
      responseHandles: 1,
    });
    const nonceTPM = res.params.tpm2b('nonceTPM', MAX.NONCE);
    res.params.done('StartAuthSession response');
    let sessionKey: Buffer = Buffer.alloc(0);
    if (opts.bind || salt) {
      const keyIn = Buffer.concat([trimAuth(opts.bind?.authValue ?? Buffer.alloc(0)), salt?.seed ?? Buffer.alloc(0)]);
      sessionKey = kdfa(hash, keyIn, 'ATH', nonceTPM, nonceCaller, hash.size * 8);
    }
    const s = new AuthSession({ kind: type, handle: res.handles[0]!, hash, symmetric, sessionKey, nonceTPM, nonceCaller, ...(bindName ? { bindName } : {}) });
    if (opts.attributes !== undefined) s.attributes = opts.attributes;
    return s;
  }

  /** TPM2_PolicySecret: asserts knowledge of `authEntity`'s authorization in a policy session. */
  async policySecret(
    authEntity: HandleArg,
    session: AuthSession,
    opts: { auth?: AuthArg; includeNonce?: boolean; cpHashA?: Buffer; policyRef?: Buffer; expiration?: number } = {},
  ): Promise<{ timeout: Buffer; ticket: Ticket }> {
    const e = TpmClient.ref(authEntity);
    const res = await this.execute({
      cc: TPM_CC.PolicySecret,
      handles: [e, { handle: session.handle, name: handleName(session.handle) }],
      auths: [this.auth(e, opts.auth)],
      params: params((w) => {
        w.tpm2b(opts.includeNonce ? session.nonceTPM : Buffer.alloc(0));
        w.tpm2b(opts.cpHashA ?? Buffer.alloc(0));
        w.tpm2b(opts.policyRef ?? Buffer.alloc(0));
        w.i32(opts.expiration ?? 0);
      }),
    });
    const timeout = res.params.tpm2b('timeout', MAX.TIMEOUT);
    const ticket = readTicket(res.params, 'policyTicket');
    res.params.done('PolicySecret response');
    return { timeout, ticket };
  }

  async policyGetDigest(session: AuthSession): Promise<Buffer> {
    const res = await this.execute({ cc: TPM_CC.PolicyGetDigest, handles: [{ handle: session.handle }] });
    const d = res.params.tpm2b('policyDigest', MAX.DIGEST);
    res.params.done('PolicyGetDigest response');
    return d;
  }

  /**
   * TPM2_PolicyPCR: binds the policy to PCR values. With `pcrDigest` (H of the expected values)
   * the check is deferred to the command being authorized; empty = the TPM's current values.
   */
  async policyPcr(session: AuthSession, selection: PcrSelection[], pcrDigest: Buffer = Buffer.alloc(0)): Promise<void> {
    await this.execute({
      cc: TPM_CC.PolicyPCR,
      handles: [{ handle: session.handle }],
      params: params((w) => {
        w.tpm2b(pcrDigest);
        marshalPcrSelectionList(w, selection);
      }),
      errorContext: (e) => (e.base === 0x09d ? 'PCR values differ from those the policy expects' : undefined),
    });
  }

  /** TPM2_Unseal: the data of a sealed (keyed-hash) object. */
  async unseal(item: TpmObject, a?: AuthArg): Promise<Buffer> {
    const res = await this.execute({
      cc: TPM_CC.Unseal,
      handles: [item],
      auths: [this.auth(item, a)],
      errorContext: (e) => (e.base === 0x09d ? 'the sealing policy is not satisfied (PCR values changed?)' : undefined),
    });
    const data = res.params.tpm2b('outData', MAX.SENSITIVE_DATA);
    res.params.done('Unseal response');
    return data;
  }

  /** TPM2_PolicyAuthValue: the object's authValue then keys the session HMAC. */
  async policyAuthValue(session: AuthSession): Promise<void> {
    await this.execute({ cc: TPM_CC.PolicyAuthValue, handles: [{ handle: session.handle }] });
    session.needsAuthValue = true;
  }

  /** TPM2_PolicyPassword: the authValue is then sent in clear. */
  async policyPassword(session: AuthSession): Promise<void> {
    await this.execute({ cc: TPM_CC.PolicyPassword, handles: [{ handle: session.handle }] });
    session.needsPassword = true;
  }

  async policyRestart(session: AuthSession): Promise<void> {
    await this.execute({ cc: TPM_CC.PolicyRestart, handles: [{ handle: session.handle }] });
    session.needsAuthValue = false;
    session.needsPassword = false;
  }

  /** A policy session satisfying the EK authPolicy: PolicySecret(TPM_RH_ENDORSEMENT). Flush it after use. */
  async ekPolicySession(endorsementAuth?: Buffer): Promise<AuthSession> {
    const s = await this.startAuthSession({ type: 'policy' });
    try {
      await this.policySecret(TPM_RH.ENDORSEMENT, s, endorsementAuth ? { auth: { auth: endorsementAuth } } : {});
    } catch (e) {
      await this.flushSession(s);
      throw e;
    }
    return s;
  }

  private async flushSession(s: AuthSession): Promise<void> {
    if (s.active) await this.flushContext(s);
  }

  // ------------------------------------------------------------ contexts

  async flushContext(h: HandleArg | AuthSession): Promise<void> {
    const handle = typeof h === 'number' ? h : h.handle;
    await this.execute({ cc: TPM_CC.FlushContext, params: u32(handle) });
    if (h instanceof AuthSession) h.active = false;
  }

  /** Flushes every transient object and loaded session (useful without a resource manager). */
  async flushAll(): Promise<number> {
    let n = 0;
    for (const ht of [TPM_HT.TRANSIENT, TPM_HT.HMAC_SESSION, TPM_HT.POLICY_SESSION]) {
      for (const h of await this.getHandles(ht)) {
        await this.flushContext(h);
        n++;
      }
    }
    return n;
  }

  async contextSave(h: HandleArg | AuthSession): Promise<TpmsContext> {
    const handle = typeof h === 'number' ? h : h.handle;
    const res = await this.execute({ cc: TPM_CC.ContextSave, handles: [{ handle }] });
    const ctx = readContext(res.params);
    res.params.done('ContextSave response');
    return ctx;
  }

  async contextLoad(ctx: TpmsContext): Promise<number> {
    const res = await this.execute({ cc: TPM_CC.ContextLoad, params: params((w) => marshalContext(w, ctx)), responseHandles: 1 });
    res.params.done('ContextLoad response');
    return res.handles[0]!;
  }

  // ------------------------------------------------------------ NV

  async nvReadPublic(index: number): Promise<{ public: NvPublic; name: Buffer }> {
    const res = await this.execute({
      cc: TPM_CC.NV_ReadPublic,
      handles: [{ handle: index }],
      errorContext: (e) => (e.base === 0x08b ? `NV index ${hex(index)} is not defined` : undefined),
    });
    const pub = readNvPublic2B(res.params);
    const name = res.params.tpm2b('nvName', MAX.NAME);
    res.params.done('NV_ReadPublic response');
    checkName(() => nvName(pub), name, `TPM2_NV_ReadPublic ${hex(index)}`);
    return { public: pub, name };
  }

  /**
   * Reads an NV index whole (or a range), in chunks of TPM_PT_NV_BUFFER_MAX. The authorizing
   * handle follows the index attributes (the index itself, else owner, else platform) unless given.
   */
  async nvRead(index: number, opts: { offset?: number; size?: number; authHandle?: number; auth?: AuthArg } = {}): Promise<Buffer> {
    const { public: pub, name } = await this.nvReadPublic(index);
    const offset = opts.offset ?? 0;
    const size = opts.size ?? pub.dataSize - offset;
    if (offset + size > pub.dataSize) throw new TpmUsageError(`NV index ${hex(index)}: range ${offset}+${size} exceeds its ${pub.dataSize} bytes`);
    const authHandle =
      opts.authHandle ??
      (pub.attributes & TPMA_NV.AUTHREAD ? index : pub.attributes & TPMA_NV.OWNERREAD ? TPM_RH.OWNER : pub.attributes & TPMA_NV.PPREAD ? TPM_RH.PLATFORM : index);
    const chunk = Math.min((await this.getFixedProperties()).get(TPM_PT.NV_BUFFER_MAX) ?? 512, MAX.NV_BUFFER);
    const out: Buffer[] = [];
    for (let done = 0; done < size; ) {
      const n = Math.min(chunk, size - done);
      const res = await this.execute({
        cc: TPM_CC.NV_Read,
        handles: [{ handle: authHandle, ...(authHandle === index ? { name } : {}) }, { handle: index, name }],
        auths: [this.auth(undefined, opts.auth)],
        params: params((w) => w.u16(n).u16(offset + done)),
      });
      const data = res.params.tpm2b('data', MAX.NV_BUFFER);
      res.params.done('NV_Read response');
      if (data.length !== n) throw new TpmProtocolError(`TPM2_NV_Read ${hex(index)}: asked for ${n} bytes at ${offset + done}, got ${data.length}`);
      out.push(data);
      done += n;
    }
    return Buffer.concat(out);
  }

  /** The EK certificate (DER) from its TCG NV index, or undefined when the TPM has none. */
  async readEkCertificate(kind: KeyKind | 'ecc-p384' = 'rsa'): Promise<Buffer | undefined> {
    const index = kind === 'rsa' ? EK_NV_INDEX.RSA_CERT : kind === 'ecc' ? EK_NV_INDEX.ECC_CERT : EK_NV_INDEX.ECC_P384_CERT;
    try {
      return await this.nvRead(index);
    } catch (e) {
      if (e instanceof TpmError && e.base === 0x08b) return undefined;
      throw e;
    }
  }

  // ------------------------------------------------------------ credentials

  /** TPM2_ActivateCredential: recovers a credential made for `key` (EK) and `activate` (AK). */
  async activateCredential(
    activate: TpmObject,
    key: TpmObject,
    credentialBlob: IdObject,
    secret: Buffer,
    opts: { activateAuth?: AuthArg; keyAuth?: AuthArg } = {},
  ): Promise<Buffer> {
    const res = await this.execute({
      cc: TPM_CC.ActivateCredential,
      handles: [activate, key],
      auths: [this.auth(activate, opts.activateAuth), this.auth(key, opts.keyAuth)],
      params: params((w) => {
        marshalIdObject2B(w, credentialBlob);
        w.tpm2b(secret);
      }),
    });
    const cert = res.params.tpm2b('certInfo', MAX.DIGEST);
    res.params.done('ActivateCredential response');
    return cert;
  }

  /** ActivateCredential with an EK as the key: runs the EK's PolicySecret(endorsement) session. */
  async activateCredentialWithEk(ak: TpmObject, ek: TpmObject, credentialBlob: IdObject, secret: Buffer, opts: { endorsementAuth?: Buffer } = {}): Promise<Buffer> {
    const s = await this.ekPolicySession(opts.endorsementAuth);
    try {
      return await this.activateCredential(ak, ek, credentialBlob, secret, { keyAuth: { session: s } });
    } finally {
      await this.flushSession(s);
    }
  }

  // ------------------------------------------------------------ hashing

  async hashSequenceStart(hashAlg: number, auth: Buffer = Buffer.alloc(0)): Promise<TpmObject> {
    const res = await this.execute({ cc: TPM_CC.HashSequenceStart, params: params((w) => w.tpm2b(auth).u16(hashAlg)), responseHandles: 1 });
    res.params.done('HashSequenceStart response');
    return { handle: res.handles[0]!, name: handleName(res.handles[0]!), authValue: auth };
  }

  async sequenceUpdate(seq: TpmObject, data: Uint8Array): Promise<void> {
    if (data.length > MAX.MAX_BUFFER) throw new TpmUsageError(`SequenceUpdate buffer of ${data.length} bytes exceeds ${MAX.MAX_BUFFER}`);
    await this.execute({ cc: TPM_CC.SequenceUpdate, handles: [seq], auths: [this.auth(seq)], params: params((w) => w.tpm2b(data)) });
  }

  async sequenceComplete(seq: TpmObject, data: Uint8Array = Buffer.alloc(0), hierarchy: number = TPM_RH.NULL): Promise<{ digest: Buffer; ticket: Ticket }> {
    const res = await this.execute({ cc: TPM_CC.SequenceComplete, handles: [seq], auths: [this.auth(seq)], params: params((w) => w.tpm2b(data).u32(hierarchy)) });
    const d = res.params.tpm2b('result', MAX.DIGEST);
    const ticket = readTicket(res.params, 'validation');
    res.params.done('SequenceComplete response');
    return { digest: d, ticket };
  }

  /**
   * Measures data of any size into a PCR in every active bank with an event sequence
   * (HashSequenceStart(TPM_ALG_NULL) … EventSequenceComplete); returns the digests extended.
   */
  async pcrEventSequence(pcr: number, data: Uint8Array, a?: AuthArg): Promise<TaggedHash[]> {
    const chunk = Math.min((await this.getFixedProperties()).get(TPM_PT.INPUT_BUFFER) ?? 1024, MAX.MAX_BUFFER);
    const seq = await this.hashSequenceStart(TPM_ALG.NULL);
    try {
      let off = 0;
      while (data.length - off > chunk) {
        await this.sequenceUpdate(seq, data.subarray(off, off + chunk));
        off += chunk;
      }
      const res = await this.execute({
        cc: TPM_CC.EventSequenceComplete,
        handles: [{ handle: pcr }, seq],
        auths: [this.auth(undefined, a), this.auth(seq)],
        params: params((w) => w.tpm2b(data.subarray(off))),
        errorContext: this.pcrContext(pcr, 'extended'),
      });
      const out = readDigestValues(res.params);
      res.params.done('EventSequenceComplete response');
      return out;
    } catch (e) {
      await this.flushContext(seq).catch(() => undefined);
      throw e;
    }
  }

  /** Hashes data of any size in the TPM with a hash sequence (chunks of TPM_PT_INPUT_BUFFER). */
  async hash(data: Uint8Array, hashAlg: number = TPM_ALG.SHA256, hierarchy: number = TPM_RH.NULL): Promise<{ digest: Buffer; ticket: Ticket }> {
    const chunk = Math.min((await this.getFixedProperties()).get(TPM_PT.INPUT_BUFFER) ?? 1024, MAX.MAX_BUFFER);
    const seq = await this.hashSequenceStart(hashAlg);
    try {
      let off = 0;
      while (data.length - off > chunk) {
        await this.sequenceUpdate(seq, data.subarray(off, off + chunk));
        off += chunk;
      }
      return await this.sequenceComplete(seq, data.subarray(off), hierarchy);
    } catch (e) {
      await this.flushContext(seq).catch(() => undefined);
      throw e;
    }
  }
}
