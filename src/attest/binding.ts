import { createHash } from 'node:crypto';
import { u32be } from './bytes.js';

/**
 * How claims that the TPM cannot measure are signed over by the quote.
 *
 *   enclavesDigest = SHA-256("HyperEnclave enclaves v2\0" ‖ u32 n ‖ n × (u32 len ‖ backend
 *                    ‖ u32 len ‖ enclave quote ‖ u32 len ‖ userData ‖ u32 len ‖ launchMeasurement
 *                    ‖ u32 keySlot|0xFFFFFFFF))
 *   claimsDigest   = SHA-256("HyperEnclave claims v2\0" ‖ u8 kind (0 not claimed, 1 real, 2 emulated) ‖ enclavesDigest)
 *   extraData      = SHA-256(nonce ‖ claimsDigest)          (the quote's qualifyingData)
 *
 * A verifier recomputes all three from the bundle and the nonce it issued; nothing here is
 * taken from the bundle's own copy of a digest. The platform kind in the claims is what the
 * attester believes; the verifier derives the kind from the EK certificate and only refuses a
 * claim that contradicts it. Enclave quotes are authenticated by the hypervisor's key (bound in
 * the HAK PCR), not by this binding; binding them here only ties the bundle together.
 */
export const CLAIMS_SCHEME = 'hyperenclave-claims-v2';

export type PlatformKindClaim = 'real' | 'emulated';

export interface EnclaveBindingInput {
  backend: string;
  quote: Uint8Array;
  userData: Uint8Array;
  launchMeasurement?: Uint8Array;
  keySlot?: number;
}

export interface ClaimsInput {
  platformKind?: PlatformKindClaim;
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
  const parts: Uint8Array[] = [Buffer.from('HyperEnclave enclaves v2\0'), u32be(enclaves.length)];
  for (const e of enclaves) {
    parts.push(...lv(Buffer.from(e.backend, 'utf8')), ...lv(e.quote), ...lv(e.userData), ...lv(e.launchMeasurement ?? Buffer.alloc(0)));
    parts.push(u32be(e.keySlot === undefined ? 0xffffffff : e.keySlot));
  }
  return sha256(...parts);
}

export function claimsDigest(c: ClaimsInput): Buffer {
  return sha256(Buffer.from('HyperEnclave claims v2\0'), Buffer.from([c.platformKind === 'real' ? 1 : c.platformKind === 'emulated' ? 2 : 0]), enclavesDigest(c.enclaves));
}

/** The qualifyingData a quote must carry for this nonce and these claims (32 bytes). */
export function qualifyingData(nonce: Uint8Array, claims: ClaimsInput): Buffer {
  return sha256(nonce, claimsDigest(claims));
}
