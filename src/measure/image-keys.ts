/** Image signing and verification keys (ECDSA P-256/P-384, SM2) and the raw signatures of HEIMG v1. */
import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto';
import {
  type Sm2PrivateKey,
  type Sm2PublicKey,
  sm2PrivateKeyFromPem,
  sm2PublicKeyFromSpki,
  sm2PublicKeyToSpki,
  sm2Sign,
  sm2SignatureFromRaw,
  sm2SignatureToRaw,
  sm2Verify,
} from '../crypto/sm2.js';
import { ImageError } from './errors.js';

export type ImageSigningKey =
  | { alg: 'ecdsa-p256-sha256' | 'ecdsa-p384-sha384'; key: KeyObject; spki: Buffer }
  | { alg: 'sm2-sm3'; key: Sm2PrivateKey; spki: Buffer };

export type ImagePublicKey = { alg: 'ecdsa-p256-sha256' | 'ecdsa-p384-sha384'; key: KeyObject; spki: Buffer } | { alg: 'sm2-sm3'; key: Sm2PublicKey; spki: Buffer };

function ecAlg(curve: string | undefined, what: string): 'ecdsa-p256-sha256' | 'ecdsa-p384-sha384' | 'sm2-sm3' {
  if (curve === 'prime256v1' || curve === 'P-256') return 'ecdsa-p256-sha256';
  if (curve === 'secp384r1' || curve === 'P-384') return 'ecdsa-p384-sha384';
  if (curve === 'SM2') return 'sm2-sm3';
  throw new ImageError(`${what}: curve ${curve ?? '(none)'} is not supported (P-256, P-384, SM2)`);
}

/** A signing key from PEM (PKCS#8 or SEC1): ECDSA P-256/P-384 or SM2 (signed with the default distinguishing ID). */
export function signingKeyFromPem(pem: string, what = 'signing key'): ImageSigningKey {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new ImageError(`${what}: not a PEM private key (${(e as Error).message})`);
  }
  // OpenSSL 3 loads SM2-curve PEM keys as its own key type, which node does not name
  if (key.asymmetricKeyType === undefined || key.asymmetricKeyDetails?.namedCurve === 'SM2') {
    const sm2 = sm2FromPem(pem, what);
    return { alg: 'sm2-sm3', key: sm2, spki: sm2PublicKeyToSpki(sm2.publicKey) };
  }
  if (key.asymmetricKeyType !== 'ec') throw new ImageError(`${what}: ${key.asymmetricKeyType} keys are not supported (EC P-256, P-384, SM2)`);
  const alg = ecAlg(key.asymmetricKeyDetails?.namedCurve, what);
  if (alg === 'sm2-sm3') {
    throw new ImageError(`${what}: unreachable SM2 branch`);
  }
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  return { alg, key, spki };
}

/** A verification key from PEM (public or private) or a node KeyObject. */
export function publicKeyFrom(input: string | KeyObject, what = 'trusted key'): ImagePublicKey {
  let key: KeyObject;
  try {
    key = typeof input === 'string' ? createPublicKey(input) : input.type === 'private' ? createPublicKey(input) : input;
  } catch (e) {
    throw new ImageError(`${what}: not a PEM key (${(e as Error).message})`);
  }
  if (key.asymmetricKeyType === undefined && typeof input === 'string' && input.includes('PRIVATE KEY')) return publicKeyFromSpki(sm2PublicKeyToSpki(sm2FromPem(input, what).publicKey), what);
  const spki = key.export({ type: 'spki', format: 'der' });
  return publicKeyFromSpki(spki, what);
}

export function publicKeyFromSpki(spki: Buffer, what = 'signer key'): ImagePublicKey {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch (e) {
    throw new ImageError(`${what}: SubjectPublicKeyInfo does not parse (${(e as Error).message})`);
  }
  if (key.asymmetricKeyType === undefined || key.asymmetricKeyDetails?.namedCurve === 'SM2') {
    try {
      return { alg: 'sm2-sm3', key: sm2PublicKeyFromSpki(spki), spki };
    } catch (e) {
      throw new ImageError(`${what}: not an SM2 key (${(e as Error).message})`);
    }
  }
  if (key.asymmetricKeyType !== 'ec') throw new ImageError(`${what}: ${key.asymmetricKeyType} keys are not supported`);
  const alg = ecAlg(key.asymmetricKeyDetails?.namedCurve, what);
  if (alg === 'sm2-sm3') throw new ImageError(`${what}: unreachable SM2 branch`);
  return { alg, key, spki };
}

function sm2FromPem(pem: string, what: string): Sm2PrivateKey {
  try {
    return sm2PrivateKeyFromPem(pem);
  } catch (e) {
    throw new ImageError(`${what}: not an SM2 private key (${(e as Error).message})`);
  }
}

export const keyIdOf = (spki: Buffer): Buffer => createHash('sha256').update(spki).digest();

export function signBytes(k: ImageSigningKey, msg: Buffer): Buffer {
  if (k.alg === 'sm2-sm3') return sm2SignatureToRaw(sm2Sign(k.key, msg));
  return nodeSign(k.alg === 'ecdsa-p256-sha256' ? 'sha256' : 'sha384', msg, { key: k.key, dsaEncoding: 'ieee-p1363' });
}

export function verifyBytes(k: ImagePublicKey, msg: Buffer, raw: Buffer): boolean {
  if (k.alg === 'sm2-sm3') return sm2Verify(k.key, msg, sm2SignatureFromRaw(raw));
  return nodeVerify(k.alg === 'ecdsa-p256-sha256' ? 'sha256' : 'sha384', msg, { key: k.key, dsaEncoding: 'ieee-p1363' }, raw);
}
