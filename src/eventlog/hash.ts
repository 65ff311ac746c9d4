import * as crypto from 'node:crypto';
import type { HashAlg } from '../tpm/alg.js';

// crypto.hash (Node >= 20.12) hashes small inputs without a Hash object per call: about twice as fast.
const oneShot = (crypto as unknown as { hash?: (alg: string, data: Uint8Array, enc: 'buffer') => Buffer }).hash;

/** Digest of `data` with `alg`. */
export const hashOf: (alg: HashAlg, data: Uint8Array) => Buffer = oneShot
  ? (alg, data) => oneShot(alg.nodeName, data, 'buffer')
  : (alg, data) => crypto.createHash(alg.nodeName).update(data).digest();

let nodeHashes: Set<string> | undefined;
/** Whether this Node/OpenSSL build implements the algorithm. */
export function canHash(alg: HashAlg): boolean {
  nodeHashes ??= new Set(crypto.getHashes());
  return nodeHashes.has(alg.nodeName);
}
