/** TPM 2.0 structures (Part 2): sizes, PCR selections, digests, schemes, TPMT_PUBLIC, sensitive, tickets, contexts, NV, credentials. */
import { TPM_ALG, hashAlgById } from '../alg.js';
import { TpmReader, TpmWriter } from '../marshal.js';

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
