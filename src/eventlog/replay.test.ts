import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { compareReplay, EVENT_TYPES, formatReplayText, parseEventLog, replay, replayToJson, writeEventLog, type BankPcrValues, type EventInput } from './index.js';

const H = (alg: string, ...p: Buffer[]): Buffer => createHash(alg).update(Buffer.concat(p)).digest();
const size = { sha1: 20, sha256: 32 } as const;
/** What a TPM holds after extending `digests` from `start`. */
function extendAll(alg: 'sha1' | 'sha256', start: Buffer, digests: Buffer[]): Buffer {
  return digests.reduce((v, d) => H(alg, v, d), start);
}
const zeros = (alg: 'sha1' | 'sha256', last = 0): Buffer => {
  const b = Buffer.alloc(size[alg]);
  b[b.length - 1] = last;
  return b;
};
const logOf = (events: EventInput[], startupLocality?: number) => parseEventLog(writeEventLog({ specId: { banks: ['sha1', 'sha256'] }, events, startupLocality }));
const bank = (alg: string, entries: [number, Buffer][]): BankPcrValues => new Map([[alg, new Map(entries)]]);

describe('replay start values', () => {
  it('PCR0 starts at …03 with StartupLocality 3 and at …04 after an H-CRTM event', () => {
    const e = { pcr: 0, type: 'EV_POST_CODE', data: Buffer.from('x') };
    const d = H('sha256', e.data);
    expect(replay(logOf([e], 3)).get('sha256')!.get(0)).toEqual(H('sha256', zeros('sha256', 3), d));
    const h = { pcr: 0, type: EVENT_TYPES.EV_EFI_HCRTM_EVENT, data: Buffer.from('HCRTM') };
    const r = replay(logOf([h, e]));
    expect(r.hcrtmEvent).toBe(1);
    expect(r.get('sha256')!.get(0)).toEqual(extendAll('sha256', zeros('sha256', 4), [H('sha256', h.data), d]));
  });

  it('PCR17-22 start at all 0xFF, at zero after a TXT HASH_START; initialValues override', () => {
    const e = { pcr: 18, type: EVENT_TYPES.EV_TXT_MLE_HASH, data: Buffer.from('mle') };
    const noLaunch = replay(logOf([e]));
    expect(noLaunch.get('sha1')!.get(18)).toEqual(H('sha1', Buffer.alloc(20, 0xff), H('sha1', e.data)));
    expect(compareReplay(noLaunch, bank('sha1', [[19, Buffer.alloc(20, 0xff)]])).ok).toBe(true);
    const launched = replay(logOf([{ pcr: 17, type: EVENT_TYPES.EV_TXT_HASH_START, data: Buffer.from('sinit') }, e]));
    expect(launched.drtmResetEvent).toBe(1);
    expect(launched.get('sha1')!.get(18)).toEqual(H('sha1', Buffer.alloc(20), H('sha1', e.data)));
    expect(compareReplay(launched, bank('sha1', [[19, Buffer.alloc(20)]])).ok).toBe(true);
    const custom = replay(logOf([e]), { initialValues: bank('sha1', [[18, Buffer.alloc(20, 7)]]) });
    expect(custom.get('sha1')!.get(18)).toEqual(H('sha1', Buffer.alloc(20, 7), H('sha1', e.data)));
  });

  it('marks a bank incomplete when an event lacks its digest', () => {
    const log = parseEventLog(writeEventLog({ specId: { banks: ['sha1', 'sha256'] }, events: [{ pcr: 5, type: 1, data: Buffer.alloc(1), digests: [{ bank: 'sha1', digest: Buffer.alloc(20, 1) }] }] }));
    const r = replay(log);
    expect(r.incomplete.get('sha256')).toEqual(new Set([5]));
    expect(replayToJson(r).incomplete).toEqual({ sha256: [5] });
  });
});

describe('mismatch diagnostics', () => {
  const events: EventInput[] = [
    { pcr: 7, type: 'EV_EFI_VARIABLE_DRIVER_CONFIG', data: Buffer.from('secureboot') },
    { pcr: 7, type: 'EV_SEPARATOR', data: Buffer.alloc(4) },
    { pcr: 4, type: 'EV_EFI_BOOT_SERVICES_APPLICATION', data: Buffer.from('shim') },
    { pcr: 7, type: 'EV_EFI_VARIABLE_AUTHORITY', data: Buffer.from('db cert') },
  ];
  const digestsOf = (alg: 'sha1' | 'sha256', idx: number[]): Buffer[] => idx.map((i) => H(alg, Buffer.from(events[i]!.data)));

  it('names PCR, bank, both values, the event count and the last event', () => {
    const r = replay(logOf(events));
    const actual = bank('sha256', [[7, Buffer.alloc(32, 0x11)]]);
    const m = compareReplay(r, actual).mismatches[0]!;
    expect(m).toMatchObject({ pcr: 7, bank: 'sha256', actual: '11'.repeat(32), eventCount: 3, lastEvent: { index: 4, type: 'EV_EFI_VARIABLE_AUTHORITY' } });
    expect(m.message).toBe(
      `PCR 7 sha256: log replays to ${r.get('sha256')!.get(7)!.toString('hex')}, TPM has ${'11'.repeat(32)}; 3 events for PCR 7, last at #4 (EV_EFI_VARIABLE_AUTHORITY); no prefix of the log's events reaches the TPM value: the TPM has extensions after #4 the log does not record (e.g. made after the log was read), or a logged digest differs from what was extended`,
    );
  });

  it('log has events the TPM never received: says through which event they agree', () => {
    const r = replay(logOf(events));
    const actual = bank('sha1', [[7, extendAll('sha1', zeros('sha1'), digestsOf('sha1', [0, 1]))]]);
    const m = compareReplay(r, actual).mismatches[0]!;
    expect(m.matchesThroughEvent).toBe(2);
    expect(m.firstDivergentEvent).toEqual({ index: 4, type: 'EV_EFI_VARIABLE_AUTHORITY' });
    expect(m.hints[0]).toBe('the TPM matches the log through #2 (EV_SEPARATOR); the log has 1 later event the TPM did not receive, first #4 (EV_EFI_VARIABLE_AUTHORITY)');
    const untouched = compareReplay(r, bank('sha1', [[4, zeros('sha1')]])).mismatches[0]!;
    expect(untouched.matchesThroughEvent).toBe(-1);
    expect(untouched.hints[0]).toMatch(/still has PCR 4's start value/);
  });

  it('a wrong digest in one bank: the other bank matching shows no event is missing; a bad separator digest is named', () => {
    const bad = events.map((e, i) => (i === 1 ? { ...e, digests: { sha256: Buffer.alloc(32, 0xee) } } : e));
    const r = replay(logOf(bad));
    const actual: BankPcrValues = new Map([
      ['sha1', new Map([[7, extendAll('sha1', zeros('sha1'), digestsOf('sha1', [0, 1, 3]))]])],
      ['sha256', new Map([[7, extendAll('sha256', zeros('sha256'), digestsOf('sha256', [0, 1, 3]))]])],
    ]);
    const cmp = compareReplay(r, actual);
    expect(cmp.matched).toEqual([{ bank: 'sha1', pcr: 7 }]);
    const m = cmp.mismatches[0]!;
    expect(m.hints).toContain('the same events replay correctly in sha1: a logged sha256 digest differs from what was extended (no event is missing)');
    expect(m.hints).toContain("event #2 (EV_SEPARATOR)'s digest does not match its data");
  });

  it('a missing StartupLocality event is recognised (tpm2-tools#3256)', () => {
    const e = { pcr: 0, type: 'EV_S_CRTM_VERSION', data: Buffer.from('1.0') };
    const r = replay(logOf([e]));
    const m = compareReplay(r, bank('sha256', [[0, H('sha256', zeros('sha256', 3), H('sha256', e.data))]])).mismatches[0]!;
    expect(m.hints).toContain("the log's events give the TPM value with StartupLocality 3: the log's start-value information is wrong or missing");
    const text = formatReplayText(r, compareReplay(r, bank('sha256', [[0, Buffer.alloc(32)]])));
    expect(text).toMatch(/1 PCR mismatch \(0 match\):\n {2}PCR 0 sha256: log replays to/);
  });

  it('works on plain Map values and lists unchecked PCRs', () => {
    const r = replay(logOf(events));
    const plain: BankPcrValues = new Map([...r].map(([b, v]) => [b, new Map(v)]));
    expect(compareReplay(plain, bank('sha1', [[4, r.get('sha1')!.get(4)!]])).ok).toBe(true);
    const cmp = compareReplay(r, bank('sha1', [[4, r.get('sha1')!.get(4)!]]));
    expect(cmp.unchecked).toEqual(expect.arrayContaining([{ bank: 'sha1', pcr: 7 }, { bank: 'sha256', pcr: 4 }]));
  });
});
