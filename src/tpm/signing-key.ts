/**
 * A signing key as a verifier holds it (an AK from evidence): the TPM public area and/or a PEM,
 * imported once, with its Name and SPKI hash. No TPM needed.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { TPM_ALG, algName, digest, hashAlgById } from './alg.js';
import { TPM_ECC_CURVE } from './constants.js';
import { TpmProtocolError, TpmUsageError } from './errors.js';
import { unmarshalExact } from './marshal.js';
import { readPublic, type TpmtPublic } from './structures.js';
import { publicKeyFromTpmt, type SigningKey } from './verify.js';

export type { SigningKey };

/** TPMT_PUBLIC, or TPM2B_PUBLIC (a leading u16 size equal to the rest): the structure and its exact TPMT bytes. */
export function parsePublicArea(bytes: Uint8Array): { public: TpmtPublic; bytes: Buffer } {
  const sized = bytes.length >= 2 && ((bytes[0]! << 8) | bytes[1]!) === bytes.length - 2;
  const tpmt = Buffer.from(sized ? bytes.subarray(2) : bytes);
  return { public: unmarshalExact(tpmt, 'TPMT_PUBLIC', readPublic), bytes: tpmt };
}

/** Object Name = nameAlg (u16) ‖ H_nameAlg(TPMT_PUBLIC), over the bytes as given. */
export function publicAreaName(tpmt: Uint8Array, nameAlg: number): Buffer {
  const alg = hashAlgById(nameAlg);
  if (!alg) throw new TpmProtocolError(`TPMT_PUBLIC: unknown nameAlg ${algName(nameAlg)}`);
  const head = Buffer.alloc(2);
  head.writeUInt16BE(nameAlg);
  return Buffer.concat([head, digest(alg, tpmt)]);
}


// Verifiers see the same few keys again and again; importing one costs ~100 µs.
const cache = new Map<string, SigningKey>();
const CACHE_ENTRIES = 4096;

/**
 * The key from its TPMT_PUBLIC (or TPM2B_PUBLIC) and/or PEM. With both they must be the same key:
 * the Name comes from the public area, the signature check from the same key.
 */
const RSA_SIGNING_SCHEMES: readonly number[] = [TPM_ALG.RSASSA, TPM_ALG.RSAPSS];
const ECC_SIGNING_SCHEMES: readonly number[] = [TPM_ALG.ECDSA, TPM_ALG.SM2, TPM_ALG.ECSCHNORR, TPM_ALG.ECDAA];

export function signingKeyFrom(input: { tpmtPublic?: Uint8Array; pem?: string }): SigningKey {
  const id = `${input.tpmtPublic ? Buffer.from(input.tpmtPublic).toString('base64') : ''}|${input.pem ?? ''}`;
  const hit = cache.get(id);
  if (hit) return hit;
  const made = importSigningKey(input);
  if (cache.size >= CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
  cache.set(id, made);
  return made;
}

function importSigningKey(input: { tpmtPublic?: Uint8Array; pem?: string }): SigningKey {
  let key: KeyObject | undefined;
  let area: { public: TpmtPublic; bytes: Buffer } | undefined;
  let hashName = 'sha256';
  let declaredScheme: number | undefined;
  if (input.tpmtPublic) {
    area = parsePublicArea(input.tpmtPublic);
    key = publicKeyFromTpmt(area.public);
    const p = area.public;
    const scheme = p.type === TPM_ALG.RSA || p.type === TPM_ALG.ECC ? p.parameters.scheme : undefined;
    // A key's declared scheme is part of what the TPM enforces; one we do not know (a changed
    // field) must not be read as "any scheme".
    if (scheme && scheme.scheme !== TPM_ALG.NULL) {
      const known = p.type === TPM_ALG.RSA ? RSA_SIGNING_SCHEMES : ECC_SIGNING_SCHEMES;
      if (!known.includes(scheme.scheme)) throw new TpmUsageError(`TPMT_PUBLIC: signing scheme ${algName(scheme.scheme)} is not a known ${p.type === TPM_ALG.RSA ? 'RSA' : 'ECC'} signing scheme`);
      const h = hashAlgById(scheme.hashAlg ?? TPM_ALG.NULL);
      if (!h) throw new TpmUsageError(`TPMT_PUBLIC: the signing scheme's hash ${algName(scheme.hashAlg ?? TPM_ALG.NULL)} is not a known hash`);
      hashName = h.name;
      declaredScheme = scheme.scheme;
    }
  }
  if (input.pem) {
    let fromPem: KeyObject;
    try {
      fromPem = createPublicKey(input.pem);
    } catch (e) {
      throw new TpmUsageError(`PEM: not a public key (${(e as Error).message.split('\n')[0]})`);
    }
    if (key && !key.equals(fromPem)) throw new TpmUsageError('PEM and TPMT_PUBLIC are different keys');
    key ??= fromPem;
  }
  if (!key) throw new TpmUsageError('public key missing (neither TPMT_PUBLIC nor PEM given)');
  const sm2 = area?.public.type === TPM_ALG.ECC && area.public.parameters.curveId === TPM_ECC_CURVE.SM2_P256;
  const d = key.asymmetricKeyDetails ?? {};
  const curve = d.namedCurve === 'prime256v1' ? 'P-256' : d.namedCurve === 'secp384r1' ? 'P-384' : d.namedCurve;
  const description = sm2 ? 'sm2 SM2-P256' : key.asymmetricKeyType === 'ec' ? `ecdsa ${curve}` : `${key.asymmetricKeyType} ${d.modulusLength ?? ''}`.trim();
  return {
    key,
    ...(area ? { public: area.public, name: publicAreaName(area.bytes, area.public.nameAlg).toString('hex') } : {}),
    description,
    hashName,
    ...(declaredScheme !== undefined ? { scheme: declaredScheme } : {}),
    spkiSha256: createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex'),
  };
}
