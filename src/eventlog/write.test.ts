import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EVENT_TYPES, EventLogError, parseEventLog, replay, writeEventLog, type EventInput } from './index.js';
import { runTpm2Eventlog, tpm2EventlogUnavailable } from './tpm2-eventlog.js';
import { skipUnless } from '../../test/helpers/require.js';

const sha = (alg: string, ...parts: Buffer[]): Buffer => createHash(alg).update(Buffer.concat(parts)).digest();
const dir = mkdtempSync(join(tmpdir(), 'eventlog-write-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const noTool = skipUnless('eventlog write: tpm2_eventlog comparisons', [['tpm2-tools', tpm2EventlogUnavailable()]]);

/** A small but varied log: strings, a UEFI variable, an image load, a separator, a DRTM-free set of PCRs. */
function sampleEvents(): EventInput[] {
  const varData = Buffer.alloc(16 + 8 + 8 + 20 + 1);
  Buffer.from('61dfe48bca93d211aa0d00e098032b8c', 'hex').copy(varData, 0);
  varData.writeBigUInt64LE(10n, 16);
  varData.writeBigUInt64LE(1n, 24);
  Buffer.from('SecureBoot', 'utf16le').copy(varData, 32);
  varData[52] = 1;
  return [
    { pcr: 0, type: 'EV_S_CRTM_VERSION', data: Buffer.from('HyperEnclave test firmware\0', 'utf16le') },
    { pcr: 7, type: 'EV_EFI_VARIABLE_DRIVER_CONFIG', data: varData },
    { pcr: 7, type: EVENT_TYPES.EV_SEPARATOR, data: Buffer.alloc(4) },
    { pcr: 12, type: 'EV_IPL', data: Buffer.from('hypervisor image hyperenclave.bin\0') },
    { pcr: 12, type: 'EV_EVENT_TAG', data: Buffer.concat([Buffer.from([1, 0, 0, 0, 5, 0, 0, 0]), Buffer.from('hello')]) },
    { pcr: 14, type: 'EV_EFI_ACTION', data: Buffer.from('Calling EFI Application from Boot Option') },
  ];
}

describe('writeEventLog', () => {
  it('writes a crypto-agile log that parses back to the same events with digests = hash(data)', () => {
    const events = sampleEvents();
    const buf = writeEventLog({ specId: { banks: ['sha1', 'sha256', 'sha384'] }, events });
    const log = parseEventLog(buf, { strictDigestCount: true });
    expect(log.format).toBe('crypto-agile');
    expect(log.banks).toEqual(['sha1', 'sha256', 'sha384']);
    expect(log.specId).toMatchObject({ signature: 'Spec ID Event03', specVersionMajor: 2, uintnSize: 2 });
    expect(log.events).toHaveLength(events.length + 1);
    events.forEach((e, i) => {
      const ev = log.events[i + 1]!;
      expect(ev.pcr).toBe(e.pcr);
      expect(Buffer.compare(ev.data, e.data as Buffer)).toBe(0);
      expect(ev.digests.map((d) => d.bank)).toEqual(['sha1', 'sha256', 'sha384']);
      for (const d of ev.digests) expect(d.digest.equals(sha(d.bank, e.data as Buffer))).toBe(true);
    });
  });

  it('replays by the TPM extend rule', () => {
    const buf = writeEventLog({ specId: { banks: ['sha256'] }, events: [{ pcr: 12, type: 'EV_IPL', data: Buffer.from('a') }, { pcr: 12, type: 'EV_IPL', data: Buffer.from('b') }] });
    const v1 = sha('sha256', Buffer.alloc(32), sha('sha256', Buffer.from('a')));
    const v2 = sha('sha256', v1, sha('sha256', Buffer.from('b')));
    expect(replay(parseEventLog(buf)).get('sha256')!.get(12)!.equals(v2)).toBe(true);
  });

  it('writes a StartupLocality event and replays PCR0 from …03', () => {
    const buf = writeEventLog({ specId: { banks: ['sha256'] }, startupLocality: 3, events: [{ pcr: 0, type: 'EV_POST_CODE', data: Buffer.from('x') }] });
    const r = replay(parseEventLog(buf));
    const start = Buffer.alloc(32);
    start[31] = 3;
    expect(r.startupLocality).toBe(3);
    expect(r.get('sha256')!.get(0)!.equals(sha('sha256', start, sha('sha256', Buffer.from('x'))))).toBe(true);
  });

  it('writes given digests as given and a legacy SHA-1 log', () => {
    const d = Buffer.alloc(32, 0xab);
    const buf = writeEventLog({ specId: { banks: ['sha1', 'sha256'] }, events: [{ pcr: 1, type: 5, data: Buffer.alloc(0), digests: { sha256: d } }] });
    const ev = parseEventLog(buf).events[1]!;
    expect(ev.digests[1]!.digest.equals(d)).toBe(true);
    const legacy = parseEventLog(writeEventLog({ format: 'sha1', events: [{ pcr: 4, type: 'EV_IPL', data: Buffer.from('grub') }] }));
    expect(legacy.format).toBe('sha1');
    expect(legacy.events[0]!.digests[0]!.digest.equals(sha('sha1', Buffer.from('grub')))).toBe(true);
  });

  it('refuses bad input with EventLogError', () => {
    expect(() => writeEventLog({ specId: { banks: ['md5'] }, events: [] })).toThrow(EventLogError);
    expect(() => writeEventLog({ specId: { banks: ['sha256'] }, events: [{ pcr: 1, type: 'EV_NOPE', data: Buffer.alloc(0) }] })).toThrow(/unknown event type/);
    expect(() => writeEventLog({ specId: { banks: ['sha256'] }, events: [{ pcr: 1, type: 1, data: Buffer.alloc(0), digests: { sha256: Buffer.alloc(3) } }] })).toThrow(/3 bytes, expected 32/);
    expect(() => writeEventLog({ specId: { banks: ['sha256'] }, events: [{ pcr: -1, type: 1, data: Buffer.alloc(0) }] })).toThrow(/PCR index/);
  });
});

describe.skipIf(noTool !== undefined)('logs we write, read by tpm2_eventlog', () => {
  it('agree on every event and replay to the PCRs it reports (sha1, sha256, sha384, sha512)', () => {
    const events = sampleEvents();
    const buf = writeEventLog({ specId: { banks: ['sha1', 'sha256', 'sha384', 'sha512'] }, events });
    const file = join(dir, 'ours.bin');
    writeFileSync(file, buf);
    const theirs = runTpm2Eventlog(file);
    const log = parseEventLog(buf);
    expect(theirs.events).toHaveLength(log.events.length);
    for (const t of theirs.events) {
      const ev = log.events[t.num]!;
      expect([t.pcr, t.type]).toEqual([ev.pcr, ev.typeName]);
      expect(t.digests).toEqual(Object.fromEntries(ev.digests.map((d) => [d.bank, d.digest.toString('hex')])));
    }
    const r = replay(log);
    let n = 0;
    for (const [bank, pcrs] of Object.entries(theirs.pcrs)) {
      for (const [pcr, v] of Object.entries(pcrs)) {
        expect(r.get(bank)!.get(Number(pcr))!.toString('hex'), `PCR ${pcr} ${bank}`).toBe(v);
        n++;
      }
    }
    expect(n).toBe(4 * 4); // PCR 0, 7, 12, 14 in four banks
  });

  it('a large written log (5,000 events) agrees too', () => {
    const events: EventInput[] = [];
    for (let i = 0; i < 5000; i++) events.push({ pcr: 8 + (i % 8), type: 'EV_IPL', data: Buffer.from(`event ${i}\0`) });
    const buf = writeEventLog({ specId: { banks: ['sha1', 'sha256'] }, events });
    const file = join(dir, 'large.bin');
    writeFileSync(file, buf);
    const theirs = runTpm2Eventlog(file);
    expect(theirs.events).toHaveLength(5001);
    const r = replay(parseEventLog(buf));
    for (const [bank, pcrs] of Object.entries(theirs.pcrs)) for (const [pcr, v] of Object.entries(pcrs)) expect(r.get(bank)!.get(Number(pcr))!.toString('hex')).toBe(v);
  });
});
