import { describe, expect, it } from 'vitest';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { buildContainer, signingKeyFromPem, verifyContainerBytes, type ImageFields } from './container.js';
import { loadPolicy } from './policy.js';
import { planMeasurement } from './plan.js';
import { parseEventLog } from '../eventlog/parse.js';
import { writeEventLog, type EventInput } from '../eventlog/write.js';
import { checkHyperenclaveEvents } from './runtime-events.js';
import { eventLogToJson, formatEventLogText } from '../eventlog/format.js';
import { checkEventData } from '../attest/eventlog-check.js';

const fields: ImageFields = {
  arch: 'amd-svm',
  kind: 'raw',
  loadAddress: 0n,
  entryOffset: 0,
  coreSize: 0x2000,
  perCpuSize: 0,
  loadSize: 0x2000,
  featureMask: 0n,
  buildId: Buffer.from('00112233445566778899aabbccddeeff00112233', 'hex'),
};
const pem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const container = buildContainer(randomBytes(0x2000), fields, signingKeyFromPem(pem));
const img = verifyContainerBytes(container, { banks: ['sha256', 'sha384'] });
const events: (EventInput & { data: Buffer; digests: Record<string, Buffer> })[] = planMeasurement(img, loadPolicy('sha256-sha384'), ['sha256', 'sha384']).map((e) => ({
  pcr: e.pcr,
  type: e.eventType,
  digests: e.digests as Record<string, Buffer>,
  data: e.data,
}));
const logOf = (evs: EventInput[]) => parseEventLog(writeEventLog({ specId: { banks: ['sha256', 'sha384'] }, events: evs }));
/** Replaces `from` by `to` in one event's text, digests unchanged (an edited log or evidence). */
const edit = (i: number, from: RegExp, to: string): typeof events => events.map((e, j) => (j === i ? { ...e, data: Buffer.from(Buffer.from(e.data).toString('latin1').replace(from, to), 'latin1') } : e));

describe('hyperenclave runtime events: data checked against digests', () => {
  it('the measured events of a signed image verify (header digest recomputed here with Node crypto)', () => {
    const header = /header=([0-9a-f]+)/.exec(events[1]!.data.toString())![1]!;
    expect(createHash('sha256').update(Buffer.from(header, 'hex')).digest().equals(events[1]!.digests.sha256!)).toBe(true);
    const checks = checkHyperenclaveEvents(logOf(events));
    expect(checks.map((c) => c.status)).toEqual(['verified', 'verified', 'verified']);
    expect(checkEventData({ runtime: writeEventLog({ specId: { banks: ['sha256', 'sha384'] }, events }) }).status).toBe('pass');
  });

  it.each([
    ['image header-sha256', 0, /header-sha256=[0-9a-f]{4}/, 'header-sha256=0000', 'unverified'],
    ['image build-id', 0, /build-id=[0-9a-f]{4}/, 'build-id=ffff', 'forged'],
    ['image length', 0, /length=\d+/, 'length=1', 'forged'],
    ['header bytes', 1, /header=[0-9a-f]{4}/, 'header=ffff', 'forged'],
    ['signer key-id', 2, /key-id=[0-9a-f]{4}/, 'key-id=0000', 'forged'],
    ['signer spki', 2, /spki=([0-9a-f]{2})/, 'spki=00', 'forged'],
    ['signer alg', 2, /alg=ecdsa-p256-sha256/, 'alg=sm2-sm3', 'forged'],
  ] as const)('an edited %s is reported (%s)', (_what, i, from, to, status) => {
    const forged = edit(i, from, to);
    expect(forged[i]!.data.equals(events[i]!.data)).toBe(false);
    const checks = checkHyperenclaveEvents(logOf(forged));
    expect(checks[i]!.status).toBe(status);
    const verdict = checkEventData({ runtime: writeEventLog({ specId: { banks: ['sha256', 'sha384'] }, events: forged }) });
    if (status === 'forged') {
      expect(verdict.status).toBe('fail');
      expect(verdict.reason).toMatch(/runtime log event #\d+ \(PCR 12\)/);
    } else expect(verdict.details?.join('\n')).toMatch(/not carry|no measured header/);
    // `eventlog show` never prints edited text as measured.
    const text = formatEventLogText(logOf(forged), { dataChecks: checkHyperenclaveEvents });
    expect(text).toMatch(status === 'forged' ? /UNTRUSTED/ : /unverified data/);
    expect(eventLogToJson(logOf(forged), { dataChecks: checkHyperenclaveEvents }).events[i + 1]!.dataCheck?.status).toBe(status);
  });

  it('an image event without a measured header is unverified, not trusted', () => {
    const checks = checkHyperenclaveEvents(logOf([events[0]!]));
    expect(checks[0]!.status).toBe('unverified');
  });
});
