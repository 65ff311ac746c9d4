import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { u32be } from './bytes.js';

/**
 * How claims that the TPM cannot measure are signed over by the quote.
 *
 *   enclavesDigest = SHA-256("HyperEnclave enclaves v1\0" ‖ u32 n ‖ n × (u32 len ‖ backend
 *                    ‖ u32 len ‖ report ‖ u32 len ‖ launchMeasurement ‖ u32 keySlot|0xFFFFFFFF))
 *   claimsDigest   = SHA-256("HyperEnclave claims v1\0" ‖ u8 kind (1 real, 2 emulated)
 *                    ‖ hypervisorKeyHash (32 B, zeros when none) ‖ enclavesDigest (32 B))
 *   extraData      = SHA-256(nonce ‖ claimsDigest)          (the quote's qualifyingData)
 *
 * hypervisorKeyHash = SHA-256 of the report-signing key's DER SubjectPublicKeyInfo.
 * A verifier recomputes all three from the bundle and the nonce it issued; nothing here is
 * taken from the bundle's own copy of a digest.
 */
export const CLAIMS_SCHEME = 'hyperenclave-claims-v1';

export type PlatformKindClaim = 'real' | 'emulated';

export interface EnclaveBindingInput {
  backend: string;
  report: Uint8Array;
  launchMeasurement?: Uint8Array;
  keySlot?: number;
}

export interface ClaimsInput {
  platformKind: PlatformKindClaim;
  hypervisorKeyHash?: Uint8Array;
  enclaves: EnclaveBindingInput[];
}

const sha256 = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

function lv(b: Uint8Array): Buffer[] {
  return [u32be(b.length), Buffer.from(b)];
}

export function enclavesDigest(enclaves: EnclaveBindingInput[]): Buffer {
  const parts: Uint8Array[] = [Buffer.from('HyperEnclave enclaves v1\0'), u32be(enclaves.length)];
  for (const e of enclaves) {
    parts.push(...lv(Buffer.from(e.backend, 'utf8')), ...lv(e.report), ...lv(e.launchMeasurement ?? Buffer.alloc(0)));
    parts.push(u32be(e.keySlot === undefined ? 0xffffffff : e.keySlot));
  }
  return sha256(...parts);
}

export function claimsDigest(c: ClaimsInput): Buffer {
  const hk = c.hypervisorKeyHash ?? Buffer.alloc(32);
  if (hk.length !== 32) throw new RangeError('hypervisorKeyHash must be 32 bytes (SHA-256 of SPKI)');
  return sha256(
    Buffer.from('HyperEnclave claims v1\0'),
    Buffer.from([c.platformKind === 'real' ? 1 : 2]),
    hk,
    enclavesDigest(c.enclaves),
  );
}

/** The qualifyingData a quote must carry for this nonce and these claims (32 bytes). */
export function qualifyingData(nonce: Uint8Array, claims: ClaimsInput): Buffer {
  return sha256(nonce, claimsDigest(claims));
}

/** SHA-256 of a public key's DER SubjectPublicKeyInfo. */
export function publicKeyHash(key: KeyObject | string): Buffer {
  const k = typeof key === 'string' ? createPublicKey(key) : key;
  return sha256(k.export({ type: 'spki', format: 'der' }));
}
