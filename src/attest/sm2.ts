/**
 * SM2 verification of a TPM signature: a TPM signs the digest it is given (e = H(TPMS_ATTEST),
 * no Z_A), so this is the SM2 verification equation over e, on src/crypto's curve arithmetic.
 */
import { SM2_P256, bigFromBytes, doubleScalarMult, isOnCurve, mod } from '../crypto/ec.js';

/** Verifies (r, s) over the digest e with public point (x, y) on SM2-P256. */
export function sm2VerifyDigest(e: Uint8Array, r: Uint8Array, s: Uint8Array, x: Uint8Array, y: Uint8Array): boolean {
  const c = SM2_P256;
  const R = bigFromBytes(r);
  const S = bigFromBytes(s);
  const Q = { x: bigFromBytes(x), y: bigFromBytes(y) };
  if (R < 1n || R >= c.n || S < 1n || S >= c.n || !isOnCurve(c, Q)) return false;
  const t = mod(R + S, c.n);
  if (t === 0n) return false;
  const P = doubleScalarMult(c, S, t, Q);
  return !!P && mod(bigFromBytes(e) + P.x, c.n) === R;
}
