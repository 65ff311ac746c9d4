import { hashAlgById } from '../tpm/alg.js';
import { canHash, hashOf } from './hash.js';
import type { LogEvent } from './parse.js';
import { EVENT_TYPES } from './types.js';

/** Event types whose digest is, by the PC Client spec, the hash of the event data itself. */
const HASH_OF_DATA = new Set<number>([
  EVENT_TYPES.EV_SEPARATOR,
  EVENT_TYPES.EV_S_CRTM_VERSION,
  EVENT_TYPES.EV_EFI_VARIABLE_DRIVER_CONFIG,
  EVENT_TYPES.EV_EFI_GPT_EVENT,
  EVENT_TYPES.EV_EFI_ACTION,
]);

/**
 * For event types whose digest must equal the hash of their data, whether it does (per bank).
 * Undefined for events whose digest covers something not in the log (images, blobs).
 */
export function checkPayloadDigest(ev: LogEvent): { ok: boolean; badBanks: string[] } | undefined {
  if (!HASH_OF_DATA.has(ev.type)) return undefined;
  const badBanks: string[] = [];
  for (const d of ev.digests) {
    const alg = hashAlgById(d.algId);
    if (!alg || !canHash(alg)) continue;
    if (!hashOf(alg, ev.data).equals(d.digest)) badBanks.push(d.bank);
  }
  return { ok: badBanks.length === 0, badBanks };
}
