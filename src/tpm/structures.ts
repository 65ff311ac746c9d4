/**
 * Typed TPM 2.0 structures (Part 2) with marshal/unmarshal. No command logic here.
 * Naming: marshalX(w, v) writes X; readX(r) reads X; unions are read by their selector.
 */
import { TPM_ALG, hashAlgById } from './alg.js';
import { TPM_CAP, TPM_GENERATED_VALUE, TPM_ST } from './constants.js';
import { TpmReader, TpmWriter } from './marshal.js';

// Maximum sizes for the TPM2B types (generous versions of the reference implementation's).
export const MAX = {
  DIGEST: 64,
  NAME: 2 + 64,
  DATA: 2 + 64,
  NONCE: 64,
  AUTH: 64,
  RSA_KEY: 512,
  ECC_PARAM: 128,
  SENSITIVE_DATA: 256,
  MAX_BUFFER: 1024,
  NV_BUFFER: 2048,
  EVENT: 1024,
  ATTEST: 4096,
  PUBLIC: 4096,
  PRIVATE: 4096,
  CREATION_DATA: 4096,
  CONTEXT_DATA: 16384,
  ID_OBJECT: 1024,
  ENCRYPTED_SECRET: 1024,
  TIMEOUT: 8,
  NV_PUBLIC: 1024,
  /** Hash banks a TPM can have (HASH_COUNT) with slack. */
  PCR_BANKS: 16,
  PCR_SELECT: 8,
  DIGESTS: 8,
  CAP_ENTRIES: 1024,
} as const;

// ---------------------------------------------------------------- PCR selections

/** One bank and the PCR indices selected in it. */
export interface PcrSelection {
  hash: number;
  pcrs: number[];
  /** Bytes of the bitmap; default max(3, enough for the highest PCR). */
  sizeofSelect?: number;
}

export function pcrSelectBytes(sel: PcrSelection): Buffer {
  const max = sel.pcrs.length ? Math.max(...sel.pcrs) : 0;
  const size = sel.sizeofSelect ?? Math.max(3, Math.floor(max / 8) + 1);
  const bits = Buffer.alloc(size);
  for (const p of sel.pcrs) {
    if (!Number.isInteger(p) || p < 0 || p >= size * 8) throw new RangeError(`PCR index ${p} does not fit a ${size}-byte selection`);
    bits[p >> 3]! |= 1 << (p & 7);
  }
  return bits;
}

export function pcrsFromBits(bits: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < bits.length * 8; i++) if (bits[i >> 3]! & (1 << (i & 7))) out.push(i);
  return out;
}

export function marshalPcrSelection(w: TpmWriter, sel: PcrSelection): void {
  const bits = pcrSelectBytes(sel);
  w.u16(sel.hash).u8(bits.length).bytes(bits);
}

export function readPcrSelection(r: TpmReader): PcrSelection {
  const hash = r.u16('TPMS_PCR_SELECTION.hash');
  const at = r.offset;
  const size = r.u8('TPMS_PCR_SELECTION.sizeofSelect');
  if (size > MAX.PCR_SELECT) r.fail('TPMS_PCR_SELECTION.sizeofSelect', `${size} exceeds ${MAX.PCR_SELECT}`, at);
  const bits = r.bytes(size, 'TPMS_PCR_SELECTION.pcrSelect');
  return { hash, pcrs: pcrsFromBits(bits), sizeofSelect: size };
}

export function marshalPcrSelectionList(w: TpmWriter, list: readonly PcrSelection[]): void {
  w.u32(list.length);
  for (const s of list) marshalPcrSelection(w, s);
}

export function readPcrSelectionList(r: TpmReader): PcrSelection[] {
  const n = r.count('TPML_PCR_SELECTION', MAX.PCR_BANKS, 3);
  const out: PcrSelection[] = [];
  for (let i = 0; i < n; i++) out.push(readPcrSelection(r));
  return out;
}

// ---------------------------------------------------------------- digests

export function readDigest(r: TpmReader, field = 'TPM2B_DIGEST'): Buffer {
  return r.tpm2b(field, MAX.DIGEST);
}

export function marshalDigestList(w: TpmWriter, list: readonly Uint8Array[]): void {
  w.u32(list.length);
  for (const d of list) w.tpm2b(d);
}

export function readDigestList(r: TpmReader): Buffer[] {
  const n = r.count('TPML_DIGEST', MAX.DIGESTS, 2);
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) out.push(readDigest(r, `TPML_DIGEST[${i}]`));
  return out;
}

/** TPMT_HA: a hash algorithm and a digest of exactly its size. */
export interface TaggedHash {
  hashAlg: number;
  digest: Buffer;
}

export function marshalTaggedHash(w: TpmWriter, h: TaggedHash): void {
  w.u16(h.hashAlg).bytes(h.digest);
}

export function readTaggedHash(r: TpmReader, field = 'TPMT_HA'): TaggedHash {
  const at = r.offset;
  const hashAlg = r.u16(`${field}.hashAlg`);
  if (hashAlg === TPM_ALG.NULL) return { hashAlg, digest: Buffer.alloc(0) };
  const alg = hashAlgById(hashAlg);
  if (!alg) r.fail(`${field}.hashAlg`, `unknown hash algorithm 0x${hashAlg.toString(16)}`, at);
  return { hashAlg, digest: r.bytes(alg.size, `${field}.digest`) };
}

export function marshalDigestValues(w: TpmWriter, list: readonly TaggedHash[]): void {
  w.u32(list.length);
  for (const h of list) marshalTaggedHash(w, h);
}

export function readDigestValues(r: TpmReader): TaggedHash[] {
  const n = r.count('TPML_DIGEST_VALUES', MAX.PCR_BANKS, 2);
  const out: TaggedHash[] = [];
  for (let i = 0; i < n; i++) out.push(readTaggedHash(r, `TPML_DIGEST_VALUES[${i}]`));
  return out;
}

// ---------------------------------------------------------------- schemes and parameters

/**
 * TPMT_SYM_DEF(_OBJECT): alg NULL means no symmetric algorithm (keyBits/mode ignored); for XOR,
 * keyBits holds the hash algorithm and there is no mode.
 */
export interface SymDef {
  alg: number;
  keyBits: number;
  mode: number;
}
export const SYM_NULL: SymDef = { alg: TPM_ALG.NULL, keyBits: 0, mode: 0 };
export const SYM_AES128_CFB: SymDef = { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB };

export function marshalSymDef(w: TpmWriter, s: SymDef): void {
  w.u16(s.alg);
  if (s.alg === TPM_ALG.NULL) return;
  w.u16(s.keyBits);
  if (s.alg !== TPM_ALG.XOR) w.u16(s.mode);
}

export function readSymDef(r: TpmReader, field = 'TPMT_SYM_DEF'): SymDef {
  const alg = r.u16(`${field}.algorithm`);
  if (alg === TPM_ALG.NULL) return { ...SYM_NULL };
  const keyBits = r.u16(`${field}.keyBits`);
  if (alg === TPM_ALG.XOR) return { alg, keyBits, mode: TPM_ALG.NULL };
  return { alg, keyBits, mode: r.u16(`${field}.mode`) };
}

/**
 * Any TPMT_*_SCHEME (signature, RSA, ECC, keyed-hash, KDF): scheme NULL has no details,
 * RSAES none, ECDAA a hash and count, XOR a hash and KDF, all others one hash algorithm.
 */
export interface Scheme {
  scheme: number;
  hashAlg?: number;
  count?: number;
  kdf?: number;
}
export const SCHEME_NULL: Scheme = { scheme: TPM_ALG.NULL };

export function marshalScheme(w: TpmWriter, s: Scheme): void {
  w.u16(s.scheme);
  if (s.scheme === TPM_ALG.NULL || s.scheme === TPM_ALG.RSAES) return;
  w.u16(s.hashAlg ?? TPM_ALG.NULL);
  if (s.scheme === TPM_ALG.ECDAA) w.u16(s.count ?? 0);
  if (s.scheme === TPM_ALG.XOR) w.u16(s.kdf ?? TPM_ALG.NULL);
}

export function readScheme(r: TpmReader, field: string): Scheme {
  const scheme = r.u16(`${field}.scheme`);
  if (scheme === TPM_ALG.NULL || scheme === TPM_ALG.RSAES) return { scheme };
  const out: Scheme = { scheme, hashAlg: r.u16(`${field}.hashAlg`) };
  if (scheme === TPM_ALG.ECDAA) out.count = r.u16(`${field}.count`);
  if (scheme === TPM_ALG.XOR) out.kdf = r.u16(`${field}.kdf`);
  return out;
}

export interface RsaParms {
  symmetric: SymDef;
  scheme: Scheme;
  keyBits: number;
  /** 0 means the default 65537. */
  exponent: number;
}
export interface EccParms {
  symmetric: SymDef;
  scheme: Scheme;
  curveId: number;
  kdf: Scheme;
}
export interface KeyedHashParms {
  scheme: Scheme;
}
export interface SymCipherParms {
  sym: SymDef;
}
export interface EccPoint {
  x: Buffer;
  y: Buffer;
}

export function marshalEccPoint(w: TpmWriter, p: EccPoint): void {
  w.tpm2b(p.x).tpm2b(p.y);
}
export function readEccPoint(r: TpmReader, field = 'TPMS_ECC_POINT'): EccPoint {
  return { x: r.tpm2b(`${field}.x`, MAX.ECC_PARAM), y: r.tpm2b(`${field}.y`, MAX.ECC_PARAM) };
}

// ---------------------------------------------------------------- TPMT_PUBLIC

interface PublicCommon {
  nameAlg: number;
  objectAttributes: number;
  authPolicy: Buffer;
}
export type TpmtPublic =
  | (PublicCommon & { type: typeof TPM_ALG.RSA; parameters: RsaParms; unique: Buffer })
  | (PublicCommon & { type: typeof TPM_ALG.ECC; parameters: EccParms; unique: EccPoint })
  | (PublicCommon & { type: typeof TPM_ALG.KEYEDHASH; parameters: KeyedHashParms; unique: Buffer })
  | (PublicCommon & { type: typeof TPM_ALG.SYMCIPHER; parameters: SymCipherParms; unique: Buffer });

export function marshalPublic(w: TpmWriter, p: TpmtPublic): void {
  w.u16(p.type).u16(p.nameAlg).u32(p.objectAttributes).tpm2b(p.authPolicy);
  switch (p.type) {
    case TPM_ALG.RSA:
      marshalSymDef(w, p.parameters.symmetric);
      marshalScheme(w, p.parameters.scheme);
      w.u16(p.parameters.keyBits).u32(p.parameters.exponent);
      w.tpm2b(p.unique);
      return;
    case TPM_ALG.ECC:
      marshalSymDef(w, p.parameters.symmetric);
      marshalScheme(w, p.parameters.scheme);
      w.u16(p.parameters.curveId);
      marshalScheme(w, p.parameters.kdf);
      marshalEccPoint(w, p.unique);
      return;
    case TPM_ALG.KEYEDHASH:
      marshalScheme(w, p.parameters.scheme);
      w.tpm2b(p.unique);
      return;
    case TPM_ALG.SYMCIPHER:
      marshalSymDef(w, p.parameters.sym);
      w.tpm2b(p.unique);
      return;
  }
}

export function readPublic(r: TpmReader): TpmtPublic {
  const at = r.offset;
  const type = r.u16('TPMT_PUBLIC.type');
  const nameAlg = r.u16('TPMT_PUBLIC.nameAlg');
  const objectAttributes = r.u32('TPMT_PUBLIC.objectAttributes');
  const authPolicy = r.tpm2b('TPMT_PUBLIC.authPolicy', MAX.DIGEST);
  const common = { nameAlg, objectAttributes, authPolicy };
  switch (type) {
    case TPM_ALG.RSA: {
      const symmetric = readSymDef(r, 'TPMS_RSA_PARMS.symmetric');
      const scheme = readScheme(r, 'TPMS_RSA_PARMS.scheme');
      const keyBits = r.u16('TPMS_RSA_PARMS.keyBits');
      const exponent = r.u32('TPMS_RSA_PARMS.exponent');
      const unique = r.tpm2b('TPMT_PUBLIC.unique.rsa', MAX.RSA_KEY);
      return { type, ...common, parameters: { symmetric, scheme, keyBits, exponent }, unique };
    }
    case TPM_ALG.ECC: {
      const symmetric = readSymDef(r, 'TPMS_ECC_PARMS.symmetric');
      const scheme = readScheme(r, 'TPMS_ECC_PARMS.scheme');
      const curveId = r.u16('TPMS_ECC_PARMS.curveID');
      const kdf = readScheme(r, 'TPMS_ECC_PARMS.kdf');
      const unique = readEccPoint(r, 'TPMT_PUBLIC.unique.ecc');
      return { type, ...common, parameters: { symmetric, scheme, curveId, kdf }, unique };
    }
    case TPM_ALG.KEYEDHASH: {
      const scheme = readScheme(r, 'TPMS_KEYEDHASH_PARMS.scheme');
      return { type, ...common, parameters: { scheme }, unique: r.tpm2b('TPMT_PUBLIC.unique.keyedHash', MAX.DIGEST) };
    }
    case TPM_ALG.SYMCIPHER: {
      const sym = readSymDef(r, 'TPMS_SYMCIPHER_PARMS.sym');
      return { type, ...common, parameters: { sym }, unique: r.tpm2b('TPMT_PUBLIC.unique.sym', MAX.DIGEST) };
    }
    default:
      return r.fail('TPMT_PUBLIC.type', `unknown object type 0x${type.toString(16)}`, at);
  }
}

export function publicBytes(p: TpmtPublic): Buffer {
  const w = new TpmWriter();
  marshalPublic(w, p);
  return w.finish();
}

/** TPM2B_PUBLIC: u16 size + TPMT_PUBLIC. */
export function marshalPublic2B(w: TpmWriter, p: TpmtPublic): void {
  w.sized((i) => marshalPublic(i, p));
}
export function readPublic2B(r: TpmReader): TpmtPublic {
  const sub = r.sized('TPM2B_PUBLIC', MAX.PUBLIC);
  const p = readPublic(sub);
  sub.done('TPM2B_PUBLIC');
  return p;
}

// ---------------------------------------------------------------- sensitive create

export interface SensitiveCreate {
  userAuth: Buffer;
  data: Buffer;
}
export function marshalSensitiveCreate2B(w: TpmWriter, s: SensitiveCreate): void {
  w.sized((i) => i.tpm2b(s.userAuth).tpm2b(s.data));
}
export function readSensitiveCreate2B(r: TpmReader): SensitiveCreate {
  const sub = r.sized('TPM2B_SENSITIVE_CREATE', MAX.SENSITIVE_DATA + MAX.AUTH + 4);
  const v = { userAuth: sub.tpm2b('TPMS_SENSITIVE_CREATE.userAuth', MAX.AUTH), data: sub.tpm2b('TPMS_SENSITIVE_CREATE.data', MAX.SENSITIVE_DATA) };
  sub.done('TPM2B_SENSITIVE_CREATE');
  return v;
}

// ---------------------------------------------------------------- tickets

/** TPMT_TK_CREATION / VERIFIED / AUTH / HASHCHECK. */
export interface Ticket {
  tag: number;
  hierarchy: number;
  digest: Buffer;
}
export function marshalTicket(w: TpmWriter, t: Ticket): void {
  w.u16(t.tag).u32(t.hierarchy).tpm2b(t.digest);
}
export function readTicket(r: TpmReader, field = 'TPMT_TK'): Ticket {
  return { tag: r.u16(`${field}.tag`), hierarchy: r.u32(`${field}.hierarchy`), digest: r.tpm2b(`${field}.digest`, MAX.DIGEST) };
}

// ---------------------------------------------------------------- attestation

export interface ClockInfo {
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
}
export function readClockInfo(r: TpmReader): ClockInfo {
  return {
    clock: r.u64('TPMS_CLOCK_INFO.clock'),
    resetCount: r.u32('TPMS_CLOCK_INFO.resetCount'),
    restartCount: r.u32('TPMS_CLOCK_INFO.restartCount'),
    safe: r.u8('TPMS_CLOCK_INFO.safe') !== 0,
  };
}
function marshalClockInfo(w: TpmWriter, c: ClockInfo): void {
  w.u64(c.clock).u32(c.resetCount).u32(c.restartCount).u8(c.safe ? 1 : 0);
}

export type Attested =
  | { kind: 'quote'; pcrSelect: PcrSelection[]; pcrDigest: Buffer }
  | { kind: 'certify'; name: Buffer; qualifiedName: Buffer }
  | { kind: 'creation'; objectName: Buffer; creationHash: Buffer }
  | { kind: 'time'; time: bigint; clockInfo: ClockInfo; firmwareVersion: bigint }
  | { kind: 'sessionAudit'; exclusiveSession: boolean; sessionDigest: Buffer }
  | { kind: 'commandAudit'; auditCounter: bigint; digestAlg: number; auditDigest: Buffer; commandDigest: Buffer }
  | { kind: 'nv'; indexName: Buffer; offset: number; nvContents: Buffer }
  | { kind: 'nvDigest'; indexName: Buffer; nvDigest: Buffer };

const ATTEST_TAG: Record<Attested['kind'], number> = {
  quote: TPM_ST.ATTEST_QUOTE,
  certify: TPM_ST.ATTEST_CERTIFY,
  creation: TPM_ST.ATTEST_CREATION,
  time: TPM_ST.ATTEST_TIME,
  sessionAudit: TPM_ST.ATTEST_SESSION_AUDIT,
  commandAudit: TPM_ST.ATTEST_COMMAND_AUDIT,
  nv: TPM_ST.ATTEST_NV,
  nvDigest: TPM_ST.ATTEST_NV_DIGEST,
};

export interface TpmsAttest {
  magic: number;
  type: number;
  qualifiedSigner: Buffer;
  extraData: Buffer;
  clockInfo: ClockInfo;
  firmwareVersion: bigint;
  attested: Attested;
}

export function marshalAttest(w: TpmWriter, a: TpmsAttest): void {
  w.u32(a.magic).u16(ATTEST_TAG[a.attested.kind]).tpm2b(a.qualifiedSigner).tpm2b(a.extraData);
  marshalClockInfo(w, a.clockInfo);
  w.u64(a.firmwareVersion);
  const t = a.attested;
  switch (t.kind) {
    case 'quote':
      marshalPcrSelectionList(w, t.pcrSelect);
      w.tpm2b(t.pcrDigest);
      return;
    case 'certify':
      w.tpm2b(t.name).tpm2b(t.qualifiedName);
      return;
    case 'creation':
      w.tpm2b(t.objectName).tpm2b(t.creationHash);
      return;
    case 'time':
      w.u64(t.time);
      marshalClockInfo(w, t.clockInfo);
      w.u64(t.firmwareVersion);
      return;
    case 'sessionAudit':
      w.u8(t.exclusiveSession ? 1 : 0).tpm2b(t.sessionDigest);
      return;
    case 'commandAudit':
      w.u64(t.auditCounter).u16(t.digestAlg).tpm2b(t.auditDigest).tpm2b(t.commandDigest);
      return;
    case 'nv':
      w.tpm2b(t.indexName).u16(t.offset).tpm2b(t.nvContents);
      return;
    case 'nvDigest':
      w.tpm2b(t.indexName).tpm2b(t.nvDigest);
      return;
  }
}

export function readAttest(r: TpmReader): TpmsAttest {
  const at = r.offset;
  const magic = r.u32('TPMS_ATTEST.magic');
  if (magic !== TPM_GENERATED_VALUE) r.fail('TPMS_ATTEST.magic', `0x${magic.toString(16)} is not TPM_GENERATED_VALUE 0xff544347`, at);
  const tat = r.offset;
  const type = r.u16('TPMS_ATTEST.type');
  const qualifiedSigner = r.tpm2b('TPMS_ATTEST.qualifiedSigner', MAX.NAME);
  const extraData = r.tpm2b('TPMS_ATTEST.extraData', MAX.DATA);
  const clockInfo = readClockInfo(r);
  const firmwareVersion = r.u64('TPMS_ATTEST.firmwareVersion');
  let attested: Attested;
  switch (type) {
    case TPM_ST.ATTEST_QUOTE:
      attested = { kind: 'quote', pcrSelect: readPcrSelectionList(r), pcrDigest: r.tpm2b('TPMS_QUOTE_INFO.pcrDigest', MAX.DIGEST) };
      break;
    case TPM_ST.ATTEST_CERTIFY:
      attested = { kind: 'certify', name: r.tpm2b('TPMS_CERTIFY_INFO.name', MAX.NAME), qualifiedName: r.tpm2b('TPMS_CERTIFY_INFO.qualifiedName', MAX.NAME) };
      break;
    case TPM_ST.ATTEST_CREATION:
      attested = { kind: 'creation', objectName: r.tpm2b('TPMS_CREATION_INFO.objectName', MAX.NAME), creationHash: r.tpm2b('TPMS_CREATION_INFO.creationHash', MAX.DIGEST) };
      break;
    case TPM_ST.ATTEST_TIME:
      attested = { kind: 'time', time: r.u64('TPMS_TIME_INFO.time'), clockInfo: readClockInfo(r), firmwareVersion: r.u64('TPMS_TIME_ATTEST_INFO.firmwareVersion') };
      break;
    case TPM_ST.ATTEST_SESSION_AUDIT:
      attested = { kind: 'sessionAudit', exclusiveSession: r.u8('TPMS_SESSION_AUDIT_INFO.exclusiveSession') !== 0, sessionDigest: r.tpm2b('TPMS_SESSION_AUDIT_INFO.sessionDigest', MAX.DIGEST) };
      break;
    case TPM_ST.ATTEST_COMMAND_AUDIT:
      attested = {
        kind: 'commandAudit',
        auditCounter: r.u64('TPMS_COMMAND_AUDIT_INFO.auditCounter'),
        digestAlg: r.u16('TPMS_COMMAND_AUDIT_INFO.digestAlg'),
        auditDigest: r.tpm2b('TPMS_COMMAND_AUDIT_INFO.auditDigest', MAX.DIGEST),
        commandDigest: r.tpm2b('TPMS_COMMAND_AUDIT_INFO.commandDigest', MAX.DIGEST),
      };
      break;
    case TPM_ST.ATTEST_NV:
      attested = { kind: 'nv', indexName: r.tpm2b('TPMS_NV_CERTIFY_INFO.indexName', MAX.NAME), offset: r.u16('TPMS_NV_CERTIFY_INFO.offset'), nvContents: r.tpm2b('TPMS_NV_CERTIFY_INFO.nvContents', MAX.NV_BUFFER) };
      break;
    case TPM_ST.ATTEST_NV_DIGEST:
      attested = { kind: 'nvDigest', indexName: r.tpm2b('TPMS_NV_DIGEST_CERTIFY_INFO.indexName', MAX.NAME), nvDigest: r.tpm2b('TPMS_NV_DIGEST_CERTIFY_INFO.nvDigest', MAX.DIGEST) };
      break;
    default:
      return r.fail('TPMS_ATTEST.type', `unknown attestation type 0x${type.toString(16)}`, tat);
  }
  return { magic, type, qualifiedSigner, extraData, clockInfo, firmwareVersion, attested };
}

/** Parses raw TPMS_ATTEST bytes (the content of TPM2B_ATTEST, what tpm2_quote -m writes). */
export function parseAttest(bytes: Uint8Array): TpmsAttest {
  const r = new TpmReader(bytes, 'TPMS_ATTEST');
  const a = readAttest(r);
  r.done('TPMS_ATTEST');
  return a;
}

// ---------------------------------------------------------------- signatures

export type TpmtSignature =
  | { kind: 'rsa'; sigAlg: number; hash: number; sig: Buffer }
  | { kind: 'ecc'; sigAlg: number; hash: number; r: Buffer; s: Buffer }
  | { kind: 'hmac'; sigAlg: number; hmac: TaggedHash }
  | { kind: 'null'; sigAlg: number };

export function marshalSignature(w: TpmWriter, s: TpmtSignature): void {
  w.u16(s.sigAlg);
  switch (s.kind) {
    case 'rsa':
      w.u16(s.hash).tpm2b(s.sig);
      return;
    case 'ecc':
      w.u16(s.hash).tpm2b(s.r).tpm2b(s.s);
      return;
    case 'hmac':
      marshalTaggedHash(w, s.hmac);
      return;
    case 'null':
      return;
  }
}

export function readSignature(r: TpmReader): TpmtSignature {
  const at = r.offset;
  const sigAlg = r.u16('TPMT_SIGNATURE.sigAlg');
  switch (sigAlg) {
    case TPM_ALG.RSASSA:
    case TPM_ALG.RSAPSS:
      return { kind: 'rsa', sigAlg, hash: r.u16('TPMS_SIGNATURE_RSA.hash'), sig: r.tpm2b('TPMS_SIGNATURE_RSA.sig', MAX.RSA_KEY) };
    case TPM_ALG.ECDSA:
    case TPM_ALG.ECDAA:
    case TPM_ALG.SM2:
    case TPM_ALG.ECSCHNORR:
      return {
        kind: 'ecc',
        sigAlg,
        hash: r.u16('TPMS_SIGNATURE_ECC.hash'),
        r: r.tpm2b('TPMS_SIGNATURE_ECC.signatureR', MAX.ECC_PARAM),
        s: r.tpm2b('TPMS_SIGNATURE_ECC.signatureS', MAX.ECC_PARAM),
      };
    case TPM_ALG.HMAC:
      return { kind: 'hmac', sigAlg, hmac: readTaggedHash(r, 'TPMT_SIGNATURE.hmac') };
    case TPM_ALG.NULL:
      return { kind: 'null', sigAlg };
    default:
      return r.fail('TPMT_SIGNATURE.sigAlg', `unknown signature algorithm 0x${sigAlg.toString(16)}`, at);
  }
}

export function parseSignature(bytes: Uint8Array): TpmtSignature {
  const r = new TpmReader(bytes, 'TPMT_SIGNATURE');
  const s = readSignature(r);
  r.done('TPMT_SIGNATURE');
  return s;
}

// ---------------------------------------------------------------- contexts, NV

export interface TpmsContext {
  sequence: bigint;
  savedHandle: number;
  hierarchy: number;
  contextBlob: Buffer;
}
export function marshalContext(w: TpmWriter, c: TpmsContext): void {
  w.u64(c.sequence).u32(c.savedHandle).u32(c.hierarchy).tpm2b(c.contextBlob);
}
export function readContext(r: TpmReader): TpmsContext {
  return {
    sequence: r.u64('TPMS_CONTEXT.sequence'),
    savedHandle: r.u32('TPMS_CONTEXT.savedHandle'),
    hierarchy: r.u32('TPMS_CONTEXT.hierarchy'),
    contextBlob: r.tpm2b('TPMS_CONTEXT.contextBlob', MAX.CONTEXT_DATA),
  };
}

export interface NvPublic {
  nvIndex: number;
  nameAlg: number;
  attributes: number;
  authPolicy: Buffer;
  dataSize: number;
}
export function marshalNvPublic(w: TpmWriter, n: NvPublic): void {
  w.u32(n.nvIndex).u16(n.nameAlg).u32(n.attributes).tpm2b(n.authPolicy).u16(n.dataSize);
}
export function readNvPublic(r: TpmReader): NvPublic {
  return {
    nvIndex: r.u32('TPMS_NV_PUBLIC.nvIndex'),
    nameAlg: r.u16('TPMS_NV_PUBLIC.nameAlg'),
    attributes: r.u32('TPMS_NV_PUBLIC.attributes'),
    authPolicy: r.tpm2b('TPMS_NV_PUBLIC.authPolicy', MAX.DIGEST),
    dataSize: r.u16('TPMS_NV_PUBLIC.dataSize'),
  };
}
export function readNvPublic2B(r: TpmReader): NvPublic {
  const sub = r.sized('TPM2B_NV_PUBLIC', MAX.NV_PUBLIC);
  const v = readNvPublic(sub);
  sub.done('TPM2B_NV_PUBLIC');
  return v;
}
export function nvPublicBytes(n: NvPublic): Buffer {
  const w = new TpmWriter();
  marshalNvPublic(w, n);
  return w.finish();
}

// ---------------------------------------------------------------- credentials

/** TPMS_ID_OBJECT inside TPM2B_ID_OBJECT: integrity HMAC then the encrypted credential. */
export interface IdObject {
  integrityHmac: Buffer;
  encIdentity: Buffer;
}
export function marshalIdObject2B(w: TpmWriter, o: IdObject): void {
  w.sized((i) => i.tpm2b(o.integrityHmac).bytes(o.encIdentity));
}
export function readIdObject2B(r: TpmReader): IdObject {
  const sub = r.sized('TPM2B_ID_OBJECT', MAX.ID_OBJECT);
  const integrityHmac = sub.tpm2b('TPMS_ID_OBJECT.integrityHMAC', MAX.DIGEST);
  return { integrityHmac, encIdentity: sub.rest() };
}

// ---------------------------------------------------------------- capabilities

export interface AlgProperty {
  alg: number;
  properties: number;
}
export interface TaggedProperty {
  property: number;
  value: number;
}
export interface TaggedPcrProperty {
  tag: number;
  pcrs: number[];
}
export interface TaggedPolicy {
  handle: number;
  policyHash: TaggedHash;
}
export type CapabilityData =
  | { capability: typeof TPM_CAP.ALGS; algs: AlgProperty[] }
  | { capability: typeof TPM_CAP.HANDLES; handles: number[] }
  | { capability: typeof TPM_CAP.COMMANDS; commands: number[] }
  | { capability: typeof TPM_CAP.PP_COMMANDS | typeof TPM_CAP.AUDIT_COMMANDS; commandCodes: number[] }
  | { capability: typeof TPM_CAP.PCRS; pcrs: PcrSelection[] }
  | { capability: typeof TPM_CAP.TPM_PROPERTIES; properties: TaggedProperty[] }
  | { capability: typeof TPM_CAP.PCR_PROPERTIES; pcrProperties: TaggedPcrProperty[] }
  | { capability: typeof TPM_CAP.ECC_CURVES; curves: number[] }
  | { capability: typeof TPM_CAP.AUTH_POLICIES; policies: TaggedPolicy[] };

export function readCapabilityData(r: TpmReader): CapabilityData {
  const at = r.offset;
  const capability = r.u32('TPMS_CAPABILITY_DATA.capability');
  const list = <T>(field: string, minElem: number, read: (i: number) => T): T[] => {
    const n = r.count(field, MAX.CAP_ENTRIES, minElem);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(read(i));
    return out;
  };
  switch (capability) {
    case TPM_CAP.ALGS:
      return { capability, algs: list('TPML_ALG_PROPERTY', 6, () => ({ alg: r.u16('TPMS_ALG_PROPERTY.alg'), properties: r.u32('TPMS_ALG_PROPERTY.algProperties') })) };
    case TPM_CAP.HANDLES:
      return { capability, handles: list('TPML_HANDLE', 4, () => r.u32('TPML_HANDLE.handle')) };
    case TPM_CAP.COMMANDS:
      return { capability, commands: list('TPML_CCA', 4, () => r.u32('TPMA_CC')) };
    case TPM_CAP.PP_COMMANDS:
    case TPM_CAP.AUDIT_COMMANDS:
      return { capability, commandCodes: list('TPML_CC', 4, () => r.u32('TPM_CC')) };
    case TPM_CAP.PCRS:
      return { capability, pcrs: readPcrSelectionList(r) };
    case TPM_CAP.TPM_PROPERTIES:
      return { capability, properties: list('TPML_TAGGED_TPM_PROPERTY', 8, () => ({ property: r.u32('TPMS_TAGGED_PROPERTY.property'), value: r.u32('TPMS_TAGGED_PROPERTY.value') })) };
    case TPM_CAP.PCR_PROPERTIES:
      return {
        capability,
        pcrProperties: list('TPML_TAGGED_PCR_PROPERTY', 5, () => {
          const tag = r.u32('TPMS_TAGGED_PCR_SELECT.tag');
          const sat = r.offset;
          const size = r.u8('TPMS_TAGGED_PCR_SELECT.sizeofSelect');
          if (size > MAX.PCR_SELECT) r.fail('TPMS_TAGGED_PCR_SELECT.sizeofSelect', `${size} exceeds ${MAX.PCR_SELECT}`, sat);
          return { tag, pcrs: pcrsFromBits(r.bytes(size, 'TPMS_TAGGED_PCR_SELECT.pcrSelect')) };
        }),
      };
    case TPM_CAP.ECC_CURVES:
      return { capability, curves: list('TPML_ECC_CURVE', 2, () => r.u16('TPM_ECC_CURVE')) };
    case TPM_CAP.AUTH_POLICIES:
      return { capability, policies: list('TPML_TAGGED_POLICY', 6, () => ({ handle: r.u32('TPMS_TAGGED_POLICY.handle'), policyHash: readTaggedHash(r, 'TPMS_TAGGED_POLICY.policyHash') })) };
    default:
      return r.fail('TPMS_CAPABILITY_DATA.capability', `unknown capability 0x${capability.toString(16)}`, at);
  }
}

export function marshalCapabilityData(w: TpmWriter, c: CapabilityData): void {
  w.u32(c.capability);
  switch (c.capability) {
    case TPM_CAP.ALGS:
      w.u32(c.algs.length);
      for (const a of c.algs) w.u16(a.alg).u32(a.properties);
      return;
    case TPM_CAP.HANDLES:
      w.u32(c.handles.length);
      for (const h of c.handles) w.u32(h);
      return;
    case TPM_CAP.COMMANDS:
      w.u32(c.commands.length);
      for (const h of c.commands) w.u32(h);
      return;
    case TPM_CAP.PP_COMMANDS:
    case TPM_CAP.AUDIT_COMMANDS:
      w.u32(c.commandCodes.length);
      for (const h of c.commandCodes) w.u32(h);
      return;
    case TPM_CAP.PCRS:
      marshalPcrSelectionList(w, c.pcrs);
      return;
    case TPM_CAP.TPM_PROPERTIES:
      w.u32(c.properties.length);
      for (const p of c.properties) w.u32(p.property).u32(p.value);
      return;
    case TPM_CAP.PCR_PROPERTIES:
      w.u32(c.pcrProperties.length);
      for (const p of c.pcrProperties) {
        const bits = pcrSelectBytes({ hash: 0, pcrs: p.pcrs });
        w.u32(p.tag).u8(bits.length).bytes(bits);
      }
      return;
    case TPM_CAP.ECC_CURVES:
      w.u32(c.curves.length);
      for (const x of c.curves) w.u16(x);
      return;
    case TPM_CAP.AUTH_POLICIES:
      w.u32(c.policies.length);
      for (const p of c.policies) {
        w.u32(p.handle);
        marshalTaggedHash(w, p.policyHash);
      }
      return;
  }
}

/**
 * Every unmarshaler by name, for the fuzz test and for tools that decode an arbitrary
 * structure from bytes.
 */
export const UNMARSHALERS: Record<string, (r: TpmReader) => unknown> = {
  TPML_PCR_SELECTION: readPcrSelectionList,
  TPML_DIGEST: readDigestList,
  TPML_DIGEST_VALUES: readDigestValues,
  TPMT_HA: (r) => readTaggedHash(r),
  TPMT_SYM_DEF: (r) => readSymDef(r),
  TPMT_PUBLIC: readPublic,
  TPM2B_PUBLIC: readPublic2B,
  TPM2B_SENSITIVE_CREATE: readSensitiveCreate2B,
  TPMS_ATTEST: readAttest,
  TPMT_SIGNATURE: readSignature,
  TPMT_TK: (r) => readTicket(r),
  TPMS_CONTEXT: readContext,
  TPMS_NV_PUBLIC: readNvPublic,
  TPM2B_NV_PUBLIC: readNvPublic2B,
  TPM2B_ID_OBJECT: readIdObject2B,
  TPMS_CAPABILITY_DATA: readCapabilityData,
  TPMS_ECC_POINT: (r) => readEccPoint(r),
};
