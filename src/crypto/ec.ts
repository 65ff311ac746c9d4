import { randomBytes } from 'node:crypto';
import { CryptoError } from './errors.js';

/**
 * Short-Weierstrass curves y² = x³ + ax + b over F_p, BigInt arithmetic in Jacobian coordinates.
 * Generic in (p, a, b) so the same code runs the SM2 recommended curve and the test curve the
 * GB/T 32918 drafts use for their worked examples.
 *
 * Side channels (scalarMult, used with secret scalars: private keys, signing nonces): the
 * Montgomery ladder's control flow, its sequence of point operations and its memory accesses
 * do not depend on the scalar (a fixed number of steps; the bit only builds a mask for a
 * conditional swap, no branch and no index). On top of that every call blinds the scalar
 * (k + r·n with a fresh 63-bit r chosen so the top bit is fixed) and the base point's
 * Jacobian coordinates (a fresh random Z), so the values the ladder computes on differ from
 * call to call for the same secret.
 *
 * That is NOT constant-time code: V8's BigInt arithmetic takes time that depends on operand
 * values and sizes, and the exceptional branches in jAdd/jDouble (infinity, equal points) are
 * taken only for degenerate scalars. Blinding decorrelates those timings from the secret
 * across calls; it does not remove them. Where a local attacker can time many signatures,
 * use a constant-time native implementation instead.
 */
export interface Curve {
  name: string;
  p: bigint;
  a: bigint;
  b: bigint;
  gx: bigint;
  gy: bigint;
  n: bigint;
  h: bigint;
  /** Byte length of field elements and scalars. */
  size: number;
}

export interface AffinePoint {
  x: bigint;
  y: bigint;
}

/** Jacobian (X, Y, Z) ↔ affine (X/Z², Y/Z³); Z = 0 is the point at infinity. */
interface Jacobian {
  x: bigint;
  y: bigint;
  z: bigint;
}

function curve(name: string, hex: Record<'p' | 'a' | 'b' | 'gx' | 'gy' | 'n', string>): Curve {
  const v = (s: string): bigint => BigInt('0x' + s);
  return { name, p: v(hex.p), a: v(hex.a), b: v(hex.b), gx: v(hex.gx), gy: v(hex.gy), n: v(hex.n), h: 1n, size: 32 };
}

/** SM2 recommended curve (GB/T 32918.5-2017 / GM/T 0003.5-2012), OID 1.2.156.10197.1.301. */
export const SM2_P256 = curve('sm2p256v1', {
  p: 'FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF',
  a: 'FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC',
  b: '28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93',
  gx: '32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7',
  gy: 'BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0',
  n: 'FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123',
});

/** The 256-bit F_p test curve of the GB/T 32918 / draft-shen-sm2-ecdsa worked examples (not for real use). */
export const SM2_TEST_FP256 = curve('sm2-test-fp256', {
  p: '8542D69E4C044F18E8B92435BF6FF7DE457283915C45517D722EDB8B08F1DFC3',
  a: '787968B4FA32C3FD2417842E73BBFEFF2F3C848B6831D7E0EC65228B3937E498',
  b: '63E4C6D3B23B0C849CF84241484BFE48F61D59A5B16BA06E6E12D1DA27C5249A',
  gx: '421DEBD61B62EAB6746434EBC3CC315E32220B3BADD50BDC4C4E6C147FEDD43D',
  gy: '0680512BCBB42C07D47349D2153B70C4E5D7FDFCBFA36EA1A85841B9E46E09A2',
  n: '8542D69E4C044F18E8B92435BF6FF7DD297720630485628D5AE74EE7C32E79B7',
});

export function mod(a: bigint, m: bigint): bigint {
  const r = a % m;
  return r < 0n ? r + m : r;
}

export function modPow(base: bigint, exp: bigint, m: bigint): bigint {
  let result = 1n;
  let b = mod(base, m);
  let e = exp;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % m;
    b = (b * b) % m;
    e >>= 1n;
  }
  return result;
}

/** Inverse modulo a prime (Fermat), for a ≠ 0 mod m. */
export function modInv(a: bigint, m: bigint): bigint {
  const r = mod(a, m);
  if (r === 0n) throw new CryptoError('modular inverse of zero');
  return modPow(r, m - 2n, m);
}

const INF: Jacobian = { x: 1n, y: 1n, z: 0n };

function jDouble(c: Curve, P: Jacobian): Jacobian {
  const { p } = c;
  if (P.z === 0n || P.y === 0n) return INF;
  const xx = (P.x * P.x) % p;
  const yy = (P.y * P.y) % p;
  const yyyy = (yy * yy) % p;
  const zz = (P.z * P.z) % p;
  const s = (4n * P.x * yy) % p;
  const m = (3n * xx + c.a * ((zz * zz) % p)) % p;
  const x3 = mod(m * m - 2n * s, p);
  const y3 = mod(m * (s - x3) - 8n * yyyy, p);
  const z3 = (2n * P.y * P.z) % p;
  return { x: x3, y: y3, z: z3 };
}

function jAdd(c: Curve, P: Jacobian, Q: Jacobian): Jacobian {
  const { p } = c;
  if (P.z === 0n) return Q;
  if (Q.z === 0n) return P;
  const z1z1 = (P.z * P.z) % p;
  const z2z2 = (Q.z * Q.z) % p;
  const u1 = (P.x * z2z2) % p;
  const u2 = (Q.x * z1z1) % p;
  const s1 = (P.y * Q.z * z2z2) % p;
  const s2 = (Q.y * P.z * z1z1) % p;
  const h = mod(u2 - u1, p);
  const r = mod(s2 - s1, p);
  if (h === 0n) return r === 0n ? jDouble(c, P) : INF;
  const hh = (h * h) % p;
  const hhh = (h * hh) % p;
  const v = (u1 * hh) % p;
  const x3 = mod(r * r - hhh - 2n * v, p);
  const y3 = mod(r * (v - x3) - s1 * hhh, p);
  const z3 = (P.z * Q.z * h) % p;
  return { x: x3, y: y3, z: z3 };
}

function toAffine(c: Curve, P: Jacobian): AffinePoint | null {
  if (P.z === 0n) return null;
  const zi = modInv(P.z, c.p);
  const zi2 = (zi * zi) % c.p;
  return { x: (P.x * zi2) % c.p, y: (P.y * zi2 * zi) % c.p };
}

/** Random bits of the scalar blinding factor r (k + r·n); 63 of them are free (see scalarMult). */
const BLIND_BITS = 64;

/**
 * Swaps a and b when mask = -1n, leaves them when mask = 0n, by XOR-and-mask on every
 * coordinate: the same operations either way, no branch on the mask.
 */
function cswap(a: Jacobian, b: Jacobian, mask: bigint): [Jacobian, Jacobian] {
  const dx = (a.x ^ b.x) & mask;
  const dy = (a.y ^ b.y) & mask;
  const dz = (a.z ^ b.z) & mask;
  return [
    { x: a.x ^ dx, y: a.y ^ dy, z: a.z ^ dz },
    { x: b.x ^ dx, y: b.y ^ dy, z: b.z ^ dz },
  ];
}

/**
 * k·P for a point P of the curve's order-n group (every affine point of these h = 1 curves),
 * k any integer (taken mod n). Null = infinity. Meant for secret k; see the side-channel note
 * at the top of this file.
 *
 * The scalar is blinded: k' = (k mod n) + r·n ≡ k (mod n), with r uniform in the range that
 * puts k' in [2^(L-1), 2^L), L = bitLength(n) + 64. The ladder then starts from the known top
 * bit (R0 = P, R1 = 2P) and runs exactly L - 1 identical steps: conditional swap by bit,
 * R1 = R0 + R1, R0 = 2·R0, swap back. P enters with random Jacobian Z (λ²x, λ³y, λ).
 */
export function scalarMult(c: Curve, k: bigint, P: AffinePoint): AffinePoint | null {
  const { n, p } = c;
  const L = n.toString(2).length + BLIND_BITS;
  const top = 1n << BigInt(L - 1);
  const rLo = (top + n - 1n) / n; // smallest r with r·n ≥ 2^(L-1)
  const rHi = (2n * top) / n - 1n; // largest r with (n - 1) + r·n < 2^L
  const kb = mod(k, n) + randomInRange(rLo, rHi) * n;
  const lambda = randomInRange(1n, p - 1n);
  const l2 = (lambda * lambda) % p;
  let r0: Jacobian = { x: (P.x * l2) % p, y: (((P.y * l2) % p) * lambda) % p, z: lambda };
  let r1 = jDouble(c, r0);
  for (let i = L - 2; i >= 0; i--) {
    const mask = -((kb >> BigInt(i)) & 1n);
    [r0, r1] = cswap(r0, r1, mask);
    r1 = jAdd(c, r0, r1);
    r0 = jDouble(c, r0);
    [r0, r1] = cswap(r0, r1, mask);
  }
  return toAffine(c, r0);
}

/** u·G + v·Q (public inputs only: verification). */
export function doubleScalarMult(c: Curve, u: bigint, v: bigint, Q: AffinePoint): AffinePoint | null {
  const G: Jacobian = { x: c.gx, y: c.gy, z: 1n };
  const Qj: Jacobian = { x: Q.x, y: Q.y, z: 1n };
  const GQ = jAdd(c, G, Qj);
  let acc: Jacobian = INF;
  const bits = Math.max(u.toString(2).length, v.toString(2).length);
  for (let i = bits - 1; i >= 0; i--) {
    acc = jDouble(c, acc);
    const bu = (u >> BigInt(i)) & 1n;
    const bv = (v >> BigInt(i)) & 1n;
    if (bu && bv) acc = jAdd(c, acc, GQ);
    else if (bu) acc = jAdd(c, acc, G);
    else if (bv) acc = jAdd(c, acc, Qj);
  }
  return toAffine(c, acc);
}

export function isOnCurve(c: Curve, P: AffinePoint): boolean {
  if (P.x < 0n || P.x >= c.p || P.y < 0n || P.y >= c.p) return false;
  return mod(P.y * P.y - (P.x * P.x * P.x + c.a * P.x + c.b), c.p) === 0n;
}

export function generator(c: Curve): AffinePoint {
  return { x: c.gx, y: c.gy };
}

/** Uniform random integer in [lo, hi]. */
export function randomInRange(lo: bigint, hi: bigint): bigint {
  const span = hi - lo + 1n;
  const bytes = Math.ceil(span.toString(2).length / 8) + 8; // 64 extra bits: negligible modulo bias
  return lo + (bigFromBytes(randomBytes(bytes)) % span);
}

export function bigFromBytes(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt('0x' + Buffer.from(b).toString('hex'));
}

export function bigToBytes(v: bigint, len: number): Buffer {
  if (v < 0n) throw new CryptoError('cannot encode a negative integer');
  const hex = v.toString(16).padStart(len * 2, '0');
  if (hex.length > len * 2) throw new CryptoError(`integer does not fit in ${len} bytes`);
  return Buffer.from(hex, 'hex');
}
