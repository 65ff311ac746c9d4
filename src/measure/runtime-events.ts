import { createHash } from 'node:crypto';
import { hashAlgById } from '../tpm/alg.js';
import { canHash, hashOf } from '../eventlog/hash.js';
import type { EventLog, LogEvent } from '../eventlog/parse.js';
import { EVENT_TYPES } from '../eventlog/types.js';
import type { EventDataCheck, EventDataStatus } from '../eventlog/data-check.js';
import { IMAGE_HEADER_SIZE, parseHeader, type ImageHeader } from './container.js';
import { eventDataFor } from './plan.js';

/**
 * The event data of our own runtime events (docs/pcr-policy.md: `hyperenclave:<kind> v=1 …`)
 * checked against their digests, so that text edited in a log or in evidence is never shown or
 * accepted as what was measured:
 *
 * - `config` (header): the digest is the hash of the header bytes the data carries: recomputed
 *   per bank; the header must also parse.
 * - `signer`: the digest is the hash of the SPKI the data carries; key-id must be SHA-256 of it;
 *   alg must be the signature algorithm of a measured header with that key id.
 * - `image`: the digest is the image's, which no log carries, but the header does (imageSha256,
 *   imageSha384): with the measured header of the same header-sha256 in the log, the digests and
 *   every field of the text are checked; without one the text is `unverified`.
 *
 * `verified`: data and digest agree. `forged`: they do not (an edited event). `unverified`: the
 * digest covers something the log does not carry, so the text cannot be trusted either way.
 */

export type { EventDataCheck, EventDataStatus } from '../eventlog/data-check.js';

const PREFIX = 'hyperenclave:';
const HEX = /^(?:[0-9a-f]{2})+$/;

/** Whether an event's data claims to be one of ours. */
export function isHyperenclaveEvent(ev: LogEvent): boolean {
  return ev.type !== EVENT_TYPES.EV_NO_ACTION && ev.data.length >= PREFIX.length && ev.data.subarray(0, PREFIX.length).toString('latin1') === PREFIX;
}

/** Banks whose digest is not the hash of `bytes` (banks this Node cannot hash are skipped). */
function badBanks(ev: LogEvent, bytes: Buffer): string[] {
  const bad: string[] = [];
  for (const d of ev.digests) {
    const alg = hashAlgById(d.algId);
    if (!alg || !canHash(alg)) continue;
    if (!hashOf(alg, bytes).equals(d.digest)) bad.push(d.bank);
  }
  return bad;
}

interface MeasuredHeader {
  header: ImageHeader;
  bytes: Buffer;
  sha256: string;
}

/** Checks every `hyperenclave:` event of a log; events that are not ours are not listed. */
export function checkHyperenclaveEvents(log: EventLog): EventDataCheck[] {
  const out: EventDataCheck[] = [];
  const ours = log.events.filter(isHyperenclaveEvent);
  // First the header (config) events: the image and signer events are checked against them.
  const headers: MeasuredHeader[] = [];
  const results = new Map<number, EventDataCheck>();
  const res = (ev: LogEvent, status: EventDataStatus, reason: string): void => {
    results.set(ev.index, { index: ev.index, pcr: ev.pcr, status, reason });
  };
  for (const ev of ours) {
    const text = ev.data.toString('latin1');
    if (!text.startsWith(`${PREFIX}config `)) continue;
    const m = /^hyperenclave:config v=1 header=([0-9a-f]+)$/.exec(text);
    if (!m || !HEX.test(m[1]!) || m[1]!.length !== IMAGE_HEADER_SIZE * 2) {
      res(ev, 'forged', `header event: data is not "hyperenclave:config v=1 header=<${IMAGE_HEADER_SIZE} bytes hex>"`);
      continue;
    }
    const bytes = Buffer.from(m[1]!, 'hex');
    const bad = badBanks(ev, bytes);
    if (bad.length) {
      res(ev, 'forged', `header event: the ${bad.join(', ')} digest is not the hash of the header in its data`);
      continue;
    }
    try {
      const header = parseHeader(bytes, { maxImageLength: Number.MAX_SAFE_INTEGER });
      headers.push({ header, bytes, sha256: createHash('sha256').update(bytes).digest('hex') });
      res(ev, 'verified', 'digest is the hash of the header in the data');
    } catch (e) {
      res(ev, 'forged', `header event: the header in the data does not parse (${(e as Error).message})`);
    }
  }
  for (const ev of ours) {
    if (results.has(ev.index)) continue;
    const text = ev.data.toString('latin1');
    const kind = /^hyperenclave:([a-z-]+) /.exec(text)?.[1];
    if (kind === 'signer') {
      if (text === 'hyperenclave:signer v=1 alg=none') {
        const bad = badBanks(ev, Buffer.alloc(0));
        if (bad.length) res(ev, 'forged', `signer event: alg=none, but the ${bad.join(', ')} digest is not the hash of an empty key`);
        else res(ev, 'verified', 'unsigned image: digest is the hash of no key');
        continue;
      }
      const m = /^hyperenclave:signer v=1 alg=(\S+) key-id=([0-9a-f]{64}) spki=([0-9a-f]+)$/.exec(text);
      if (!m || !HEX.test(m[3]!)) {
        res(ev, 'forged', 'signer event: data is not "hyperenclave:signer v=1 alg=<alg> key-id=<hex> spki=<hex>"');
        continue;
      }
      const spki = Buffer.from(m[3]!, 'hex');
      const bad = badBanks(ev, spki);
      if (bad.length) {
        res(ev, 'forged', `signer event: the ${bad.join(', ')} digest is not the hash of the SPKI in its data`);
        continue;
      }
      const keyId = createHash('sha256').update(spki).digest('hex');
      if (keyId !== m[2]) {
        res(ev, 'forged', `signer event: key-id ${m[2]!.slice(0, 16)}… is not SHA-256 of the SPKI (${keyId.slice(0, 16)}…)`);
        continue;
      }
      const h = headers.find((x) => x.header.signerKeyId.toString('hex') === keyId);
      if (!h) res(ev, 'unverified', 'signer event: key-id and SPKI agree with the digest; no measured header names this key, so alg is unchecked');
      else if (h.header.signatureAlg !== m[1]) res(ev, 'forged', `signer event: alg=${m[1]}, the measured header says ${h.header.signatureAlg}`);
      else res(ev, 'verified', 'digest is the hash of the SPKI in the data; key-id and alg match the measured header');
      continue;
    }
    if (kind === 'image') {
      const hs = /(?:^| )header-sha256=([0-9a-f]{64})(?: |$)/.exec(text)?.[1];
      const h = hs ? headers.find((x) => x.sha256 === hs) : undefined;
      if (!h) {
        res(ev, 'unverified', 'image event: its digest covers the image, which the log does not carry, and no measured header in the log has its header-sha256');
        continue;
      }
      const expected = eventDataFor('image', { header: h.header, headerBytes: h.bytes } as Parameters<typeof eventDataFor>[1]);
      if (!expected.equals(ev.data)) {
        res(ev, 'forged', 'image event: the data does not match the measured header (arch, kind, build-id or length edited)');
        continue;
      }
      const want: Record<string, Buffer> = { sha256: h.header.imageSha256, sha384: h.header.imageSha384 };
      const bad = ev.digests.filter((d) => want[d.bank] && !want[d.bank]!.equals(d.digest)).map((d) => d.bank);
      if (bad.length) res(ev, 'forged', `image event: the ${bad.join(', ')} digest is not the image digest the measured header records`);
      else res(ev, 'verified', 'data matches the measured header, whose image digests match the event');
      continue;
    }
    res(ev, 'unverified', `unknown hyperenclave event kind "${kind ?? text.slice(PREFIX.length, PREFIX.length + 16)}"`);
  }
  for (const ev of ours) out.push(results.get(ev.index)!);
  return out;
}
