/** TPM key derivation, names, and secrets sealed to a TPM key (salts, credentials). */
import { createCipheriv, createECDH, createHmac, publicEncrypt, randomBytes, constants } from 'node:crypto';
import { TPM_ALG, algName, digest, hashAlgById, type HashAlg } from './alg.js';
import { TpmUsageError } from './errors.js';
import { TpmWriter } from './marshal.js';
import { marshalEccPoint, marshalIdObject2B, nvPublicBytes, publicBytes, type IdObject, type NvPublic, type TpmtPublic } from './structures.js';
import { curveInfo, nodeCurveName, publicKeyFromTpmt } from './verify.js';

export function hashOf(id: number, what = 'hash algorithm'): HashAlg {
  const h = hashAlgById(id);
  if (!h) throw new TpmUsageError(`${what} ${algName(id)} is not supported`);
  return h;
}

function labelBytes(label: string): Buffer {
  // A label is used with its terminating zero octet.
  return Buffer.from(label.endsWith('\0') ? label : label + '\0', 'latin1');
}

/** KDFa (TPM 2.0 Part 1, 11.4.10.2): SP 800-108 counter-mode HMAC. */
export function kdfa(hash: HashAlg, key: Uint8Array, label: string, contextU: Uint8Array, contextV: Uint8Array, bits: number): Buffer {
  const out: Buffer[] = [];
  const bytes = Math.ceil(bits / 8);
  const lb = labelBytes(label);
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(bits);
  let got = 0;
  for (let i = 1; got < bytes; i++) {
    const ctr = Buffer.alloc(4);
    ctr.writeUInt32BE(i);
    const block = createHmac(hash.nodeName, key).update(ctr).update(lb).update(contextU).update(contextV).update(tail).digest();
    out.push(block);
    got += block.length;
  }
  const res = Buffer.concat(out).subarray(0, bytes);
  if (bits % 8) res[0]! &= (1 << bits % 8) - 1;
  return Buffer.from(res);
}

/** KDFe (TPM 2.0 Part 1, 11.4.10.3): SP 800-56A concatenation KDF. */
export function kdfe(hash: HashAlg, z: Uint8Array, label: string, partyU: Uint8Array, partyV: Uint8Array, bits: number): Buffer {
  const out: Buffer[] = [];
  const bytes = Math.ceil(bits / 8);
  const lb = labelBytes(label);
  let got = 0;
  for (let i = 1; got < bytes; i++) {
    const ctr = Buffer.alloc(4);
    ctr.writeUInt32BE(i);
    const block = digest(hash, ctr, z, lb, partyU, partyV);
    out.push(block);
    got += block.length;
  }
  return Buffer.concat(out).subarray(0, bytes);
}

function algPrefix(id: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(id);
  return b;
}

/** Object Name: nameAlg || H_nameAlg(TPMT_PUBLIC). */
export function objectName(pub: TpmtPublic): Buffer {
  return Buffer.concat([algPrefix(pub.nameAlg), digest(hashOf(pub.nameAlg, 'nameAlg'), publicBytes(pub))]);
}

/** NV index Name: nameAlg || H_nameAlg(TPMS_NV_PUBLIC). */
export function nvName(nv: NvPublic): Buffer {
  return Buffer.concat([algPrefix(nv.nameAlg), digest(hashOf(nv.nameAlg, 'nameAlg'), nvPublicBytes(nv))]);
}

/** Name of a PCR, session or permanent handle: the handle itself. */
export function handleName(handle: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(handle >>> 0);
  return b;
}

/** The authValue as the TPM uses it in HMAC keys: trailing zero octets removed. */
export function trimAuth(auth: Uint8Array): Buffer {
  let n = auth.length;
  while (n > 0 && auth[n - 1] === 0) n--;
  return Buffer.from(auth.subarray(0, n));
}

/**
 * A seed protected by a TPM key for `label` ("IDENTITY" for credentials, "SECRET" for session
 * salts, "DUPLICATE" for imports): RSA-OAEP with the key's nameAlg, or ECDH + KDFe.
 * Returns the seed and the TPM2B_ENCRYPTED_SECRET contents.
 */
export function protectSeed(key: TpmtPublic, label: string): { seed: Buffer; encrypted: Buffer } {
  const hash = hashOf(key.nameAlg, 'nameAlg');
  if (key.type === TPM_ALG.RSA) {
    const seed = randomBytes(hash.size);
    const encrypted = publicEncrypt({ key: publicKeyFromTpmt(key), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash.nodeName, oaepLabel: labelBytes(label) }, seed);
    return { seed, encrypted };
  }
  if (key.type === TPM_ALG.ECC) {
    const c = curveInfo(key.parameters.curveId);
    // ECDH objects rather than a KeyObject JWK export: exporting a fresh key as JWK can hang Node 20 under GC.
    const pad = (b: Buffer): Buffer => (b.length >= c.size ? b : Buffer.concat([Buffer.alloc(c.size - b.length), b]));
    const eph = createECDH(nodeCurveName(key.parameters.curveId));
    const ephPub = eph.generateKeys();
    const ex = ephPub.subarray(1, 1 + c.size);
    const ey = ephPub.subarray(1 + c.size);
    const z = eph.computeSecret(Buffer.concat([Buffer.from([4]), pad(key.unique.x), pad(key.unique.y)]));
    const seed = kdfe(hash, pad(z), label, pad(ex), pad(key.unique.x), hash.size * 8);
    const w = new TpmWriter();
    marshalEccPoint(w, { x: pad(ex), y: pad(ey) });
    return { seed, encrypted: w.finish() };
  }
  throw new TpmUsageError(`cannot protect a secret with a ${algName(key.type)} key`);
}

export interface MadeCredential {
  /** TPM2B_ID_OBJECT contents as a structure. */
  credentialBlob: IdObject;
  /** TPM2B_ID_OBJECT bytes including its size (what tpm2_makecredential writes after its header). */
  credentialBlobBytes: Buffer;
  /** TPM2B_ENCRYPTED_SECRET contents. */
  secret: Buffer;
}

/**
 * TPM2_MakeCredential in software (Part 1, 24): protects `credential` (≤ nameAlg digest size)
 * so that only the TPM holding `ekPublic`'s private key, with `objectName` loaded, recovers it.
 */
export function makeCredential(ekPublic: TpmtPublic, credential: Uint8Array, objectName: Uint8Array): MadeCredential {
  const hash = hashOf(ekPublic.nameAlg, 'EK nameAlg');
  if (credential.length > hash.size) throw new TpmUsageError(`credential of ${credential.length} bytes exceeds the ${hash.size}-byte digest size of the EK's nameAlg`);
  if (ekPublic.type !== TPM_ALG.RSA && ekPublic.type !== TPM_ALG.ECC) throw new TpmUsageError('MakeCredential needs an RSA or ECC storage key');
  const sym = ekPublic.parameters.symmetric;
  if (sym.alg !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB) throw new TpmUsageError(`EK symmetric ${algName(sym.alg)}/${algName(sym.mode)} is not supported (AES-CFB is)`);
  const { seed, encrypted } = protectSeed(ekPublic, 'IDENTITY');
  const symKey = kdfa(hash, seed, 'STORAGE', objectName, Buffer.alloc(0), sym.keyBits);
  const plain = new TpmWriter().tpm2b(credential).finish();
  const cipher = createCipheriv(`aes-${sym.keyBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(plain), cipher.final()]);
  const hmacKey = kdfa(hash, seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), hash.size * 8);
  const integrityHmac = createHmac(hash.nodeName, hmacKey).update(encIdentity).update(objectName).digest();
  const credentialBlob = { integrityHmac, encIdentity };
  const w = new TpmWriter();
  marshalIdObject2B(w, credentialBlob);
  return { credentialBlob, credentialBlobBytes: w.finish(), secret: encrypted };
}

