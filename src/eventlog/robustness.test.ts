import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeEvent, eventLogToJson, EventLogError, formatEventLogText, parseEventLog, replay, writeEventLog, type ParseOptions } from './index.js';

const DIR = join(import.meta.dirname, '../../test/fixtures/eventlog');
const fixture = (f: string): Buffer => readFileSync(join(DIR, f));

/** Parses and, when that works, uses every consumer; returns the EventLogError if one was thrown. Anything else fails the test. */
function exercise(buf: Buffer, opts?: ParseOptions): EventLogError | undefined {
  try {
    const log = parseEventLog(buf, opts);
    for (const ev of log.events) decodeEvent(ev, log);
    JSON.stringify(eventLogToJson(log));
    formatEventLogText(log, { replay: replay(log) });
    return undefined;
  } catch (e) {
    if (!(e instanceof EventLogError)) throw new Error(`non-EventLogError escaped for input ${buf.subarray(0, 64).toString('hex')}…: ${(e as Error).stack}`);
    expect(e.message).not.toContain('\n');
    if (e.offset !== undefined) expect(e.offset).toBeGreaterThanOrEqual(0);
    if (e.offset !== undefined) expect(e.offset).toBeLessThanOrEqual(buf.length);
    return e;
  }
}

/** mulberry32: a small seeded PRNG so every run checks the same inputs. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const base = writeEventLog({
  specId: { banks: ['sha1', 'sha256'] },
  events: [
    { pcr: 0, type: 'EV_S_CRTM_VERSION', data: Buffer.from('v1\0', 'utf16le') },
    { pcr: 4, type: 'EV_EFI_ACTION', data: Buffer.from('Calling EFI Application') },
  ],
});
// Offsets in `base`: header record 0..(32+45); Spec ID data starts at 32.
const HEADER_LEN = 32 + 16 + 4 + 4 + 4 + 2 * 4 + 1;
const REC1 = HEADER_LEN;

function corrupt(at: number, bytes: number[] | Buffer, from: Buffer = base): Buffer {
  const b = Buffer.from(from);
  Buffer.from(bytes).copy(b, at);
  return b;
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};

describe('broken inputs: one clear EventLogError naming offset and field', () => {
  const cases: { name: string; buf: Buffer; opts?: ParseOptions; offset: number; field?: string | RegExp; message: RegExp }[] = [
    { name: 'empty', buf: Buffer.alloc(0), offset: 0, message: /empty input/ },
    { name: 'ten bytes of garbage', buf: Buffer.from('0123456789'), offset: 8, field: 'digest', message: /truncated: digest needs 20 bytes, 2 left/ },
    { name: '4 GiB event size in the header', buf: corrupt(28, u32(0xffffffff)), offset: 28, field: 'eventDataSize', message: /event data size 4294967295 exceeds/ },
    { name: '4 GiB event size in a TCG_PCR_EVENT2 record', buf: corrupt(REC1 + 12 + 22 + 34, u32(0xffffffff)), offset: REC1 + 68, field: 'eventSize', message: /event size 4294967295 exceeds/ },
    { name: 'unknown algorithm in the Spec ID event', buf: corrupt(32 + 28 + 4, [0x34, 0x12]), offset: 64, field: 'SpecIdEvent.digestSizes[1].algorithmId', message: /unknown digest algorithm 0x1234/ },
    { name: 'absurd numberOfAlgorithms', buf: corrupt(32 + 24, u32(0xffffffff)), offset: 56, field: 'SpecIdEvent.numberOfAlgorithms', message: /4294967295 does not fit/ },
    { name: 'zero algorithms', buf: corrupt(32 + 24, u32(0)), offset: 56, field: 'SpecIdEvent.numberOfAlgorithms', message: /no digest algorithms/ },
    { name: 'wrong digest size for sha256', buf: corrupt(32 + 28 + 6, [31, 0]), offset: 66, field: 'SpecIdEvent.digestSizes[1].digestSize', message: /sha256 a digest size of 31, it is 32/ },
    { name: 'algorithm listed twice', buf: corrupt(32 + 28 + 4, [0x04, 0x00, 20, 0]), offset: 64, field: 'SpecIdEvent.digestSizes[1].algorithmId', message: /listed twice/ },
    { name: 'digest count above the Spec ID count', buf: corrupt(REC1 + 8, u32(3)), offset: REC1 + 8, field: 'digests.count', message: /digest count mismatch: record has 3 digests, Spec ID event lists 2/ },
    { name: 'huge digest count', buf: corrupt(REC1 + 8, u32(0xffffffff)), offset: REC1 + 8, field: 'digests.count', message: /digest count mismatch/ },
    { name: 'digest of an algorithm not in the Spec ID event', buf: corrupt(REC1 + 12, [0x0d, 0x00]), offset: REC1 + 12, field: 'digests[0].hashAlg', message: /0x000d is not in the Spec ID event/ },
    { name: 'fewer digests than algorithms, strict', buf: Buffer.concat([base.subarray(0, REC1), u32(0), u32(1), u32(1), Buffer.from([4, 0]), Buffer.alloc(20), u32(0)]), opts: { strictDigestCount: true }, offset: REC1 + 8, field: 'digests.count', message: /record has 1 digests/ },
    { name: 'non-zero digest in the Spec ID header', buf: corrupt(8, [1]), offset: 8, field: 'digest', message: /non-zero digest/ },
    { name: 'record cut in the middle of a digest', buf: base.subarray(0, REC1 + 20), offset: REC1 + 14, field: 'digests[0].digest', message: /truncated/ },
    { name: 'garbage after the last record', buf: Buffer.concat([base, Buffer.from('GARBAGE!GARBAGE!GARBAGE!')]), offset: base.length + 8, field: 'digests.count', message: /digest count mismatch/ },
    { name: 'legacy log with a 4 GiB event', buf: Buffer.concat([u32(0), u32(1), Buffer.alloc(20), u32(0xfffffff0), Buffer.alloc(8)]), offset: 28, field: 'eventDataSize', message: /exceeds/ },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const e = exercise(c.buf, c.opts);
      expect(e, 'expected an EventLogError').toBeInstanceOf(EventLogError);
      expect(e!.offset).toBe(c.offset);
      if (c.field) expect(e!.field).toEqual(c.field);
      expect(e!.message).toMatch(c.message);
      expect(e!.message).toMatch(/^event log: .*\[.*offset \d+ \(0x[0-9a-f]+\)\]$/);
      expect(e!.exitCode).toBe(6);
    });
  }

  it('unknown Spec ID algorithms are carried (not replayed) when allowed', () => {
    const spec = { ...parseEventLog(base).specId!, algorithms: [{ algId: 0x0004, bank: 'sha1', digestSize: 20 }, { algId: 0x1234, bank: 'alg_0x1234', digestSize: 32 }] };
    const buf = writeEventLog({ specId: spec, events: [{ pcr: 1, type: 'EV_IPL', data: Buffer.from('x'), digests: [{ algId: 0x0004, digest: Buffer.alloc(20, 1) }, { algId: 0x1234, digest: Buffer.alloc(32, 2) }] }] });
    expect(exercise(buf)?.field).toBe('SpecIdEvent.digestSizes[1].algorithmId');
    const log = parseEventLog(buf, { allowUnknownAlgorithms: true });
    expect(log.banks).toEqual(['sha1', 'alg_0x1234']);
    expect(log.events[1]!.digests[1]).toMatchObject({ bank: 'alg_0x1234', digest: Buffer.alloc(32, 2) });
    const r = replay(log);
    expect(r.skippedBanks).toEqual(['alg_0x1234']);
    expect([...r.keys()]).toEqual(['sha1']);
  });

  it('a 0xFF-filled tail after the records is padding, not an error', () => {
    const log = parseEventLog(Buffer.concat([base, Buffer.alloc(100, 0xff)]));
    expect(log.padding).toEqual({ offset: base.length, length: 100 });
    expect(log.events).toHaveLength(3);
  });

  it('a malformed payload decodes to {kind: Malformed} instead of failing the log', () => {
    const buf = writeEventLog({ specId: { banks: ['sha256'] }, events: [{ pcr: 7, type: 'EV_EFI_VARIABLE_DRIVER_CONFIG', data: Buffer.concat([Buffer.alloc(16), Buffer.from('ffffffffffffffff', 'hex'), Buffer.alloc(8)]) }] });
    const log = parseEventLog(buf);
    expect(decodeEvent(log.events[1]!, log)).toMatchObject({ kind: 'Malformed', error: expect.stringMatching(/UnicodeNameLength 18446744073709551615 exceeds/) });
  });
});

describe('fuzz: only EventLogError escapes', () => {
  const real = ['tpm2-tools-event-bootorder.bin', 'go-tpm-tools-ubuntu-2404-amd-sevsnp.bin', 'go-attestation-option_rom_eventlog.bin', 'tpm2-tools-event-postcode.bin'].map(fixture);

  it('seeded random bytes (2,000 inputs, some behind a valid Spec ID header)', () => {
    const r = rng(0x5eed);
    let errors = 0;
    for (let i = 0; i < 2000; i++) {
      const len = Math.floor(r() * 600);
      const rand = Buffer.alloc(len);
      for (let j = 0; j < len; j++) rand[j] = Math.floor(r() * 256);
      const buf = i % 2 ? Buffer.concat([base.subarray(0, REC1), rand]) : rand;
      if (exercise(buf)) errors++;
    }
    expect(errors).toBeGreaterThan(1500);
  });

  it('truncation at every offset of a real log', () => {
    const log = real[0]!;
    const boundaries = new Set(parseEventLog(log).events.map((e) => e.offset + e.length));
    for (let cut = 1; cut < log.length; cut++) {
      const e = exercise(log.subarray(0, cut));
      if (boundaries.has(cut)) expect(e).toBeUndefined();
      else if (e === undefined) {
        // The cut left only zero bytes of the next record: indistinguishable from zero fill.
        expect(parseEventLog(log.subarray(0, cut)).padding, `cut at ${cut}`).toBeDefined();
      } else {
        expect(e.truncated, `cut at ${cut}`).toBe(true);
        // A reader of a log being appended to sees the whole records before the cut.
        if (cut > 1000) expect(parseEventLog(log.subarray(0, cut), { allowTornTail: true }).tornTail).toBeDefined();
      }
    }
  });

  it('random bit flips in real logs (4 x 150)', () => {
    const r = rng(42);
    for (const log of real) {
      for (let i = 0; i < 150; i++) {
        const b = Buffer.from(log);
        const flips = 1 + Math.floor(r() * 4);
        for (let k = 0; k < flips; k++) {
          const at = Math.floor(r() * b.length);
          b[at]! ^= 1 << Math.floor(r() * 8);
        }
        exercise(b);
        try {
          parseEventLog(b, { allowTornTail: true, allowUnknownAlgorithms: true });
        } catch (e) {
          expect(e).toBeInstanceOf(EventLogError);
        }
      }
    }
  });

  it('random payloads for every decoded event type', () => {
    const r = rng(7);
    const types = [0x3, 0x1, 0x4, 0x6, 0x8, 0xd, 0x80000001, 0x80000002, 0x80000003, 0x80000006, 0x80000008, 0x80000009, 0x8000000a, 0x8000000b, 0x800000e0, 0x13, 0x9];
    for (let i = 0; i < 3000; i++) {
      const len = Math.floor(r() * 200);
      const data = Buffer.alloc(len);
      for (let j = 0; j < len; j++) data[j] = r() < 0.3 ? 0 : Math.floor(r() * 256);
      const buf = writeEventLog({ specId: { banks: ['sha256'] }, events: [{ pcr: 1, type: types[i % types.length]!, data }] });
      expect(exercise(buf)).toBeUndefined();
    }
  });
});
