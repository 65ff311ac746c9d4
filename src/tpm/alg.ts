import { createHash, getHashes } from 'node:crypto';

/** TPM_ALG_ID values (TPM 2.0 Part 2, table 9) used across the project. */
export const TPM_ALG = {
  ERROR: 0x0000,
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  MGF1: 0x0007,
  KEYEDHASH: 0x0008,
  XOR: 0x000a,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  SM3_256: 0x0012,
  SM4: 0x0013,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  SM2: 0x001b,
  ECSCHNORR: 0x001c,
  ECMQV: 0x001d,
  KDF1_SP800_56A: 0x0020,
  KDF2: 0x0021,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CAMELLIA: 0x0026,
  SHA3_256: 0x0027,
  SHA3_384: 0x0028,
  SHA3_512: 0x0029,
  CTR: 0x0040,
  OFB: 0x0041,
  CBC: 0x0042,
  CFB: 0x0043,
  ECB: 0x0044,
} as const;

export type HashAlgName = 'sha1' | 'sha256' | 'sha384' | 'sha512' | 'sm3_256' | 'sha3_256' | 'sha3_384' | 'sha3_512';

export interface HashAlg {
  readonly id: number;
  /** tpm2-tools spelling: sha1, sha256, sha384, sha512, sm3_256. */
  readonly name: HashAlgName;
  /** Digest size in bytes. */
  readonly size: number;
  /** Name for node:crypto createHash. */
  readonly nodeName: string;
}

export const HASH_ALGS: readonly HashAlg[] = [
  { id: TPM_ALG.SHA1, name: 'sha1', size: 20, nodeName: 'sha1' },
  { id: TPM_ALG.SHA256, name: 'sha256', size: 32, nodeName: 'sha256' },
  { id: TPM_ALG.SHA384, name: 'sha384', size: 48, nodeName: 'sha384' },
  { id: TPM_ALG.SHA512, name: 'sha512', size: 64, nodeName: 'sha512' },
  { id: TPM_ALG.SM3_256, name: 'sm3_256', size: 32, nodeName: 'sm3' },
  { id: TPM_ALG.SHA3_256, name: 'sha3_256', size: 32, nodeName: 'sha3-256' },
  { id: TPM_ALG.SHA3_384, name: 'sha3_384', size: 48, nodeName: 'sha3-384' },
  { id: TPM_ALG.SHA3_512, name: 'sha3_512', size: 64, nodeName: 'sha3-512' },
];

const byId = new Map(HASH_ALGS.map((a) => [a.id, a]));
const byName = new Map<string, HashAlg>();
for (const a of HASH_ALGS) {
  byName.set(a.name, a);
  byName.set(a.nodeName, a);
}
byName.set('sm3', byName.get('sm3_256')!);
byName.set('sha-256', byName.get('sha256')!);
byName.set('sha-384', byName.get('sha384')!);
byName.set('sha-1', byName.get('sha1')!);

/** Looks a hash algorithm up by its tpm2-tools or node name (case-insensitive); undefined when unknown. */
export function hashAlgByName(name: string): HashAlg | undefined {
  return byName.get(name.toLowerCase());
}

/** Looks a hash algorithm up by its TPM_ALG_ID; undefined when unknown. */
export function hashAlgById(id: number): HashAlg | undefined {
  return byId.get(id);
}

/** Name of any TPM_ALG_ID, or 0x.... when not known. */
export function algName(id: number): string {
  for (const [k, v] of Object.entries(TPM_ALG)) if (v === id) return k.toLowerCase();
  return `0x${id.toString(16).padStart(4, '0')}`;
}

let nodeHashes: Set<string> | undefined;
/** Whether this Node/OpenSSL build can compute the algorithm. */
export function nodeSupports(alg: HashAlg): boolean {
  nodeHashes ??= new Set(getHashes());
  return nodeHashes.has(alg.nodeName);
}

export function digest(alg: HashAlg, ...parts: Uint8Array[]): Buffer {
  const h = createHash(alg.nodeName);
  for (const p of parts) h.update(p);
  return h.digest();
}
