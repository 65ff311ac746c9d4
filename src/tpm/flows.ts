/**
 * Higher-level TPM flows: several commands (commands.ts) chained through one executor — every
 * entry of a capability, PCR reads of any size that are consistent, EK/SRK/AK creation with the
 * EK's policy session, a quote with the PCR values it covers, NV and hash sequences in chunks.
 */
import { TPM_ALG, algName, hashAlgById } from './alg.js';
import { DEFAULT_PCR_COUNT, EK_NV_INDEX, TPMA_NV, TPM_CAP, TPM_HT, TPM_PT, TPM_RH } from './constants.js';
import { TPM_RC, TpmError, TpmProtocolError, TpmUsageError } from './errors.js';
import type { AuthSession } from './session.js';
import { MAX, type AlgProperty, type CapabilityData, type IdObject, type PcrSelection, type Scheme, type TaggedHash, type TaggedProperty, type Ticket, type TpmtPublic } from './structures.js';
import { akTemplate, ekTemplate, srkTemplate, type KeyKind } from './templates.js';
import { pcrDigest, type PcrBank } from './verify.js';
import { authOf, hex, refOf, u32, type AuthArg, type HandleArg, type QuoteResult, type TpmObject } from './command.js';
import {
  ActivateCredential,
  Create,
  CreatePrimary,
  EventSequenceComplete,
  FlushContext,
  GetCapability,
  GetRandom,
  HashSequenceStart,
  Load,
  NvRead,
  NvReadPublic,
  PcrRead,
  PolicySecret,
  Quote,
  SequenceComplete,
  SequenceUpdate,
  StartAuthSession,
  Startup,
  type PolicySecretOptions,
  type StartAuthSessionOptions,
} from './commands.js';
import type { TpmExecutor } from './executor.js';

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

/** TPM2_Startup; false when the TPM was already started (TPM_RC_INITIALIZE). */
export async function startup(x: TpmExecutor, type: 'clear' | 'state'): Promise<boolean> {
  try {
    await x.run(Startup(type));
    return true;
  } catch (e) {
    if (e instanceof TpmError && e.base === TPM_RC.INITIALIZE) return false;
    throw e;
  }
}

// ------------------------------------------------------------ capabilities

/** Every entry of a capability, following moreData. */
async function capabilityAll<T>(x: TpmExecutor, capability: number, first: number, pick: (d: CapabilityData) => T[], next: (last: T) => number): Promise<T[]> {
  const out: T[] = [];
  let property = first;
  for (let i = 0; i < 256; i++) {
    const { moreData, data } = await x.run(GetCapability(capability, property, 256));
    const items = pick(data);
    out.push(...items);
    if (!moreData || items.length === 0) return out;
    property = next(items[items.length - 1]!) + 1;
  }
  throw new TpmProtocolError(`TPM2_GetCapability ${capability}: moreData never cleared`);
}

export function getAlgorithms(x: TpmExecutor): Promise<AlgProperty[]> {
  return capabilityAll(x, TPM_CAP.ALGS, 0, (d) => ('algs' in d ? d.algs : []), (a) => a.alg);
}

/** PCR banks with the PCRs allocated in each (banks with no PCR allocated included, empty). */
export async function getPcrBanks(x: TpmExecutor): Promise<PcrSelection[]> {
  const { data } = await x.run(GetCapability(TPM_CAP.PCRS, 0, 1));
  return 'pcrs' in data ? data.pcrs : [];
}

export async function getProperties(x: TpmExecutor, first: number, count: number): Promise<TaggedProperty[]> {
  const all = await capabilityAll(x, TPM_CAP.TPM_PROPERTIES, first, (d) => ('properties' in d ? d.properties : []), (p) => p.property);
  return all.filter((p) => p.property < first + count);
}

/** The TPM_PT_FIXED group (cached on the executor: they never change). */
export async function getFixedProperties(x: TpmExecutor): Promise<Map<number, number>> {
  if (!x.fixedProps) x.fixedProps = new Map((await getProperties(x, TPM_PT.FAMILY_INDICATOR, 0x100)).map((p) => [p.property, p.value]));
  return x.fixedProps;
}

export async function getProperty(x: TpmExecutor, property: number): Promise<number | undefined> {
  if (property >= 0x100 && property < 0x200) return (await getFixedProperties(x)).get(property);
  const { data } = await x.run(GetCapability(TPM_CAP.TPM_PROPERTIES, property, 1));
  const p = 'properties' in data ? data.properties.find((v) => v.property === property) : undefined;
  return p?.value;
}

/** Handles of one type in use (TPM_HT_TRANSIENT, TPM_HT_PERSISTENT, TPM_HT_NV_INDEX, …). */
export async function getHandles(x: TpmExecutor, type: number): Promise<number[]> {
  const first = (type << 24) >>> 0;
  const all = await capabilityAll(x, TPM_CAP.HANDLES, first, (d) => ('handles' in d ? d.handles : []), (h) => h);
  return all.filter((h) => h >>> 24 === type);
}

export async function getEccCurves(x: TpmExecutor): Promise<number[]> {
  const { data } = await x.run(GetCapability(TPM_CAP.ECC_CURVES, 0, 64));
  return 'curves' in data ? data.curves : [];
}

/** Manufacturer, firmware, spec level, banks and algorithms in one summary. */
export async function getTpmInfo(x: TpmExecutor): Promise<TpmInfo> {
  const p = await getFixedProperties(x);
  const ascii = (v: number | undefined): string => (v === undefined ? '' : Buffer.from(u32(v)).toString('latin1').replace(/\0/g, '').trim());
  const fw1 = p.get(TPM_PT.FIRMWARE_VERSION_1) ?? 0;
  const fw2 = p.get(TPM_PT.FIRMWARE_VERSION_2) ?? 0;
  const banks = await getPcrBanks(x);
  const algs = await getAlgorithms(x);
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

export async function getRandom(x: TpmExecutor, bytes: number): Promise<Buffer> {
  const out: Buffer[] = [];
  let got = 0;
  for (let guard = 0; got < bytes; guard++) {
    if (guard > 4 * bytes + 16) throw new TpmProtocolError('TPM2_GetRandom keeps returning nothing');
    const b = await x.run(GetRandom(bytes - got));
    out.push(b);
    got += b.length;
  }
  return Buffer.concat(out).subarray(0, bytes);
}

// ------------------------------------------------------------ PCRs

/**
 * Reads any number of PCRs in any banks: splits into requests of at most 8 PCRs of one bank,
 * loops while the TPM returns partial selections, and restarts (bounded) when the PCR update
 * counter changes between requests so that all values are from one moment (PCRs 16 and
 * 21-23 of a PC Client TPM do not move the counter). PCRs the TPM does not have are absent.
 */
export async function pcrRead(x: TpmExecutor, selection: PcrSelection[]): Promise<{ updateCounter: number; banks: PcrBank[] }> {
  for (let round = 0; round < 5; round++) {
    const banks: PcrBank[] = selection.map((s) => ({ hash: s.hash, values: new Map() }));
    let counter: number | undefined;
    let changed = false;
    for (const [bi, sel] of selection.entries()) {
      const size = hashAlgById(sel.hash)?.size;
      let pending = [...new Set(sel.pcrs)].sort((a, b) => a - b);
      while (pending.length && !changed) {
        const ask = pending.slice(0, 8);
        const got = await x.run(PcrRead([{ hash: sel.hash, pcrs: ask, ...(sel.sizeofSelect ? { sizeofSelect: sel.sizeofSelect } : {}) }]));
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
export async function pcrReadAll(x: TpmExecutor, banks?: number[]): Promise<PcrBank[]> {
  const allocated = await getPcrBanks(x);
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
  return (await pcrRead(x, sel)).banks;
}

/**
 * Measures data of any size into a PCR in every active bank with an event sequence
 * (HashSequenceStart(TPM_ALG_NULL) … EventSequenceComplete); returns the digests extended.
 */
export async function pcrEventSequence(x: TpmExecutor, pcr: number, data: Uint8Array, a?: AuthArg): Promise<TaggedHash[]> {
  const chunk = Math.min((await getFixedProperties(x)).get(TPM_PT.INPUT_BUFFER) ?? 1024, MAX.MAX_BUFFER);
  const seq = await x.run(HashSequenceStart(TPM_ALG.NULL, Buffer.alloc(0)));
  try {
    let off = 0;
    while (data.length - off > chunk) {
      await x.run(SequenceUpdate(seq, data.subarray(off, off + chunk), authOf(seq)));
      off += chunk;
    }
    return await x.run(EventSequenceComplete(pcr, seq, data.subarray(off), authOf(undefined, a), authOf(seq), x.currentLocality));
  } catch (e) {
    await x.run(FlushContext(seq.handle)).catch(() => undefined);
    throw e;
  }
}

/** Hashes data of any size in the TPM with a hash sequence (chunks of TPM_PT_INPUT_BUFFER). */
export async function hash(x: TpmExecutor, data: Uint8Array, hashAlg: number, hierarchy: number): Promise<{ digest: Buffer; ticket: Ticket }> {
  const chunk = Math.min((await getFixedProperties(x)).get(TPM_PT.INPUT_BUFFER) ?? 1024, MAX.MAX_BUFFER);
  const seq = await x.run(HashSequenceStart(hashAlg, Buffer.alloc(0)));
  try {
    let off = 0;
    while (data.length - off > chunk) {
      await x.run(SequenceUpdate(seq, data.subarray(off, off + chunk), authOf(seq)));
      off += chunk;
    }
    return await x.run(SequenceComplete(seq, data.subarray(off), hierarchy, authOf(seq)));
  } catch (e) {
    await x.run(FlushContext(seq.handle)).catch(() => undefined);
    throw e;
  }
}

// ------------------------------------------------------------ keys

/** An endorsement key from the TCG EK Credential Profile default template (RSA-2048 or ECC P-256). */
export async function createEk(x: TpmExecutor, kind: KeyKind, opts: { hierarchyAuth?: AuthArg }): Promise<TpmObject & { public: TpmtPublic }> {
  return (await x.run(CreatePrimary(TPM_RH.ENDORSEMENT, ekTemplate(kind), authOf(undefined, opts.hierarchyAuth)))).object;
}

/** A storage root key in the owner hierarchy. */
export async function createSrk(x: TpmExecutor, kind: KeyKind, opts: { hierarchyAuth?: AuthArg }): Promise<TpmObject & { public: TpmtPublic }> {
  return (await x.run(CreatePrimary(TPM_RH.OWNER, srkTemplate(kind), authOf(undefined, opts.hierarchyAuth)))).object;
}

/** An EK: adminWithPolicy set, userWithAuth clear (its authorization is PolicySecret(endorsement)). */
function isEk(o: TpmObject): boolean {
  const p = o.public;
  return !!p && (p.objectAttributes & (1 << 7)) !== 0 && (p.objectAttributes & (1 << 6)) === 0;
}

/**
 * Creates and loads a restricted signing attestation key under `parent`. When the parent is
 * an EK (adminWithPolicy, no userWithAuth) the PolicySecret(endorsement) session is made here.
 */
export async function createAk(x: TpmExecutor, parent: TpmObject, kind: KeyKind, opts: { userAuth?: Buffer; template?: TpmtPublic }): Promise<{ object: TpmObject & { public: TpmtPublic }; private: Buffer }> {
  const template = opts.template ?? akTemplate(kind);
  const withParentAuth = async <T>(fn: (a: AuthArg | undefined) => Promise<T>): Promise<T> => {
    if (!isEk(parent)) return fn(undefined);
    const s = await ekPolicySession(x);
    try {
      return await fn({ session: s });
    } finally {
      await flushSession(x, s);
    }
  };
  const created = await withParentAuth((a) => x.run(Create(parent, template, authOf(parent, a), opts.userAuth ? { userAuth: opts.userAuth } : {})));
  const object = await withParentAuth((a) => x.run(Load(parent, created.private, created.public, authOf(parent, a), opts.userAuth)));
  return { object, private: created.private };
}

/**
 * A quote and the PCR values it covers, guaranteed consistent: PCRs are read after the quote
 * and must hash to its pcrDigest; when a PCR moved in between, both are taken again (bounded).
 */
export async function quoteWithPcrs(
  x: TpmExecutor,
  signer: TpmObject & { public: TpmtPublic },
  selection: PcrSelection[],
  qualifyingData: Uint8Array,
  opts: { scheme?: Scheme; auth?: AuthArg; attempts?: number },
): Promise<QuoteResult & { banks: PcrBank[] }> {
  const attempts = opts.attempts ?? 5;
  for (let i = 0; i < attempts; i++) {
    const q = await x.run(Quote(signer, selection, qualifyingData, authOf(signer, opts.auth), opts.scheme));
    const { banks } = await pcrRead(x, selection);
    if (q.parsed.attested.kind !== 'quote') throw new TpmProtocolError('TPM2_Quote returned a non-quote attestation');
    const h = 'hash' in q.signature ? q.signature.hash : signer.public.nameAlg;
    const d = pcrDigest(h, q.parsed.attested.pcrSelect, banks);
    if (d.equals(q.parsed.attested.pcrDigest)) return { ...q, banks };
  }
  throw new TpmProtocolError(`PCRs kept changing between quote and read (${attempts} attempts)`);
}

// ------------------------------------------------------------ sessions

/** TPM2_StartAuthSession, resolving the Name of the bound entity first when not given. */
export async function startAuthSession(x: TpmExecutor, opts: StartAuthSessionOptions): Promise<AuthSession> {
  const bindName = opts.bind ? (opts.bind.name ?? (await x.nameOf({ handle: opts.bind.handle }))) : undefined;
  return x.run(StartAuthSession(opts, bindName));
}

export function policySecret(x: TpmExecutor, authEntity: HandleArg, session: AuthSession, opts: PolicySecretOptions & { auth?: AuthArg }): Promise<{ timeout: Buffer; ticket: Ticket }> {
  const e = refOf(authEntity);
  return x.run(PolicySecret(e, session, authOf(e, opts.auth), opts));
}

/** A policy session satisfying the EK authPolicy: PolicySecret(TPM_RH_ENDORSEMENT). Flush it after use. */
export async function ekPolicySession(x: TpmExecutor, endorsementAuth?: Buffer): Promise<AuthSession> {
  const s = await startAuthSession(x, { type: 'policy' });
  try {
    await policySecret(x, TPM_RH.ENDORSEMENT, s, endorsementAuth ? { auth: { auth: endorsementAuth } } : {});
  } catch (e) {
    await flushSession(x, s);
    throw e;
  }
  return s;
}

export async function flushSession(x: TpmExecutor, s: AuthSession): Promise<void> {
  if (s.active) await x.run(FlushContext(s));
}

/** Flushes every transient object and loaded session (useful without a resource manager). */
export async function flushAll(x: TpmExecutor): Promise<number> {
  let n = 0;
  for (const ht of [TPM_HT.TRANSIENT, TPM_HT.HMAC_SESSION, TPM_HT.POLICY_SESSION]) {
    for (const h of await getHandles(x, ht)) {
      await x.run(FlushContext(h));
      n++;
    }
  }
  return n;
}

/** ActivateCredential with an EK as the key: runs the EK's PolicySecret(endorsement) session. */
export async function activateCredentialWithEk(x: TpmExecutor, ak: TpmObject, ek: TpmObject, credentialBlob: IdObject, secret: Buffer, opts: { endorsementAuth?: Buffer }): Promise<Buffer> {
  const s = await ekPolicySession(x, opts.endorsementAuth);
  try {
    return await x.run(ActivateCredential(ak, ek, credentialBlob, secret, authOf(ak), authOf(ek, { session: s })));
  } finally {
    await flushSession(x, s);
  }
}

// ------------------------------------------------------------ NV

/**
 * Reads an NV index whole (or a range), in chunks of TPM_PT_NV_BUFFER_MAX. The authorizing
 * handle follows the index attributes (the index itself, else owner, else platform) unless given.
 */
export async function nvRead(x: TpmExecutor, index: number, opts: { offset?: number; size?: number; authHandle?: number; auth?: AuthArg }): Promise<Buffer> {
  const { public: pub, name } = await x.run(NvReadPublic(index));
  const offset = opts.offset ?? 0;
  const size = opts.size ?? pub.dataSize - offset;
  if (offset + size > pub.dataSize) throw new TpmUsageError(`NV index ${hex(index)}: range ${offset}+${size} exceeds its ${pub.dataSize} bytes`);
  const authHandle =
    opts.authHandle ?? (pub.attributes & TPMA_NV.AUTHREAD ? index : pub.attributes & TPMA_NV.OWNERREAD ? TPM_RH.OWNER : pub.attributes & TPMA_NV.PPREAD ? TPM_RH.PLATFORM : index);
  const chunk = Math.min((await getFixedProperties(x)).get(TPM_PT.NV_BUFFER_MAX) ?? 512, MAX.NV_BUFFER);
  const out: Buffer[] = [];
  for (let done = 0; done < size; ) {
    const n = Math.min(chunk, size - done);
    out.push(await x.run(NvRead({ handle: authHandle, ...(authHandle === index ? { name } : {}) }, { handle: index, name }, n, offset + done, authOf(undefined, opts.auth))));
    done += n;
  }
  return Buffer.concat(out);
}

/** The EK certificate (DER) from its TCG NV index, or undefined when the TPM has none. */
export async function readEkCertificate(x: TpmExecutor, kind: KeyKind | 'ecc-p384'): Promise<Buffer | undefined> {
  const index = kind === 'rsa' ? EK_NV_INDEX.RSA_CERT : kind === 'ecc' ? EK_NV_INDEX.ECC_CERT : EK_NV_INDEX.ECC_P384_CERT;
  try {
    return await nvRead(x, index, {});
  } catch (e) {
    if (e instanceof TpmError && e.base === 0x08b) return undefined;
    throw e;
  }
}
