import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { compareReplay, EVENT_TYPES, EventLogAppender, EventLogError, parseEventLog, readEventLogFile, replay, type BankPcrValues } from './index.js';
import { commandMissing, skipUnless } from '../../test/helpers/require.js';

const dir = mkdtempSync(join(tmpdir(), 'eventlog-append-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => join(dir, `runtime-${n++}.log`);
const ev = (i: number) => ({ pcr: 12, type: 'EV_IPL', data: Buffer.from(`measurement ${i}\0`) });

describe('EventLogAppender', () => {
  it('creates the header on first append, then appends records that parse in order', async () => {
    const path = fresh();
    const a = await EventLogAppender.open(path, { banks: ['sha1', 'sha256'] });
    expect(existsSync(path)).toBe(false);
    const r1 = await a.append(ev(1));
    expect(r1.index).toBe(1);
    const r2 = await a.append(ev(2));
    expect(r2).toMatchObject({ index: 2, offset: r1.offset + r1.length });
    await a.close();
    const log = parseEventLog(readFileSync(path), { strictDigestCount: true });
    expect(log.events.map((e) => e.data.toString())).toEqual([log.events[0]!.data.toString(), 'measurement 1\0', 'measurement 2\0']);
    expect(a.byteLength).toBe(statSync(path).size);
  });

  it('creates the missing state directory on first append (a fresh machine has none)', async () => {
    const path = join(dir, `fresh-${n++}`, 'state', 'runtime.log');
    const a = await EventLogAppender.open(path, { banks: ['sha256'] });
    await a.append(ev(1));
    await a.close();
    expect(parseEventLog(readFileSync(path)).events).toHaveLength(2);
  });

  it('serialises concurrent appends', async () => {
    const path = fresh();
    const a = await EventLogAppender.open(path, { banks: ['sha256'] });
    await Promise.all(Array.from({ length: 40 }, (_, i) => a.append(ev(i))));
    await a.close();
    const log = parseEventLog(readFileSync(path));
    expect(log.events.slice(1).map((e) => e.data.toString())).toEqual(Array.from({ length: 40 }, (_, i) => `measurement ${i}\0`));
  });

  it('a torn last record (crash mid-write) is invisible to readers and cut off on the next open', async () => {
    const path = fresh();
    const a = await EventLogAppender.open(path, { banks: ['sha1', 'sha256'] });
    for (let i = 0; i < 3; i++) await a.append(ev(i));
    await a.close();
    const whole = readFileSync(path);
    const good = parseEventLog(whole);
    const last = good.events[3]!;
    for (let cut = last.offset + 1; cut < whole.length; cut++) {
      writeFileSync(path, whole.subarray(0, cut));
      const seen = await readEventLogFile(path);
      expect(seen.events).toHaveLength(3);
      expect(seen.tornTail).toMatchObject({ offset: last.offset, length: cut - last.offset });
      // Strict parsing names the problem precisely.
      expect(() => parseEventLog(readFileSync(path))).toThrow(EventLogError);
    }
    writeFileSync(path, whole.subarray(0, last.offset + 7));
    const b = await EventLogAppender.open(path, { banks: ['sha1', 'sha256'] });
    expect(b.repairedBytes).toBe(7);
    expect(b.eventCount).toBe(3);
    await b.append(ev(9));
    await b.close();
    const after = parseEventLog(readFileSync(path));
    expect(after.events.map((e) => e.data.toString()).slice(1)).toEqual(['measurement 0\0', 'measurement 1\0', 'measurement 9\0']);
  });

  it('ignores a zero-filled tail (size extended before data reached the disk) and repairs it', async () => {
    const path = fresh();
    const a = await EventLogAppender.open(path, { banks: ['sha256'] });
    await a.append(ev(0));
    await a.close();
    appendFileSync(path, Buffer.alloc(61));
    expect((await readEventLogFile(path)).padding).toMatchObject({ length: 61 });
    const b = await EventLogAppender.open(path, { banks: ['sha256'] });
    expect(b.repairedBytes).toBe(61);
    await b.append(ev(1));
    await b.close();
    expect(parseEventLog(readFileSync(path)).events).toHaveLength(3);
  });

  it('refuses a file with other banks or a SHA-1-only log', async () => {
    const path = fresh();
    const a = await EventLogAppender.open(path, { banks: ['sha256'] });
    await a.append(ev(0));
    await a.close();
    await expect(EventLogAppender.open(path, { banks: ['sha1', 'sha256'] })).rejects.toThrow(/carries banks sha256/);
    const legacy = fresh();
    writeFileSync(legacy, Buffer.concat([Buffer.alloc(8), createHash('sha1').update('x').digest(), Buffer.from([1, 0, 0, 0, 0x78])]));
    await expect(EventLogAppender.open(legacy, { banks: ['sha256'] })).rejects.toThrow(/SHA-1-only/);
  });

  it('an interrupted first append leaves no log at all (header appears via rename)', async () => {
    const path = fresh();
    const a = await EventLogAppender.open(path, { banks: ['sha256'] });
    // Simulate the crash window: a leftover temp file from a previous attempt does not count as the log.
    writeFileSync(join(dir, `.${path.split('/').pop()}.${process.pid}.tmp`), Buffer.from('partial'));
    expect(existsSync(path)).toBe(false);
    await a.append(ev(0));
    await a.close();
    expect(parseEventLog(readFileSync(path)).events).toHaveLength(2);
  });
});

// ---- Against a real TPM (swtpm): the runtime log replays to the live PCRs. ----

const skipTpm = skipUnless('eventlog appender: live TPM tests', [
  ['swtpm', swtpmAvailable()],
  ['tpm2-tools', commandMissing('tpm2_pcrextend', 'tpm2-tools') ?? commandMissing('tpm2_pcrread', 'tpm2-tools')],
]);

function pcrRead(tcti: string, banks: string[], pcrs: number[]): BankPcrValues {
  const r = spawnSync('tpm2_pcrread', ['-T', tcti, banks.map((b) => `${b}:${pcrs.join(',')}`).join('+')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tpm2_pcrread: ${r.stderr}`);
  const out: BankPcrValues = new Map();
  let bank: string | undefined;
  for (const line of r.stdout.split('\n')) {
    const b = /^\s{2}(\w+):\s*$/.exec(line);
    if (b) out.set((bank = b[1]!), new Map());
    const v = /^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]+)/.exec(line);
    if (v && bank) out.get(bank)!.set(Number(v[1]), Buffer.from(v[2]!, 'hex'));
  }
  return out;
}

function pcrExtend(tcti: string, pcr: number, digests: Record<string, Buffer>): void {
  const spec = `${pcr}:${Object.entries(digests).map(([b, d]) => `${b}=${d.toString('hex')}`).join(',')}`;
  const r = spawnSync('tpm2_pcrextend', ['-T', tcti, spec], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tpm2_pcrextend: ${r.stderr}`);
}

/** swtpm control channel: 4-byte BE command, payload; 4-byte BE result. */
async function ctrl(port: number, cmd: number, payload = Buffer.alloc(0)): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    s.on('data', (d) => {
      chunks.push(d);
      const all = Buffer.concat(chunks);
      if (all.length >= 4) {
        s.destroy();
        resolve(all.readUInt32BE(0));
      }
    });
    s.on('error', reject);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(cmd);
    s.write(Buffer.concat([head, payload]));
  });
}

describe.skipIf(skipTpm !== undefined)('runtime log vs a real TPM (swtpm)', () => {
  let tpm: SwtpmInstance | undefined;
  const banks = ['sha1', 'sha256', 'sha384'];
  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'tcp', banks });
  });
  afterAll(async () => tpm?.stop());

  it('every appended+extended event replays to the live PCRs; mismatches say where the log and TPM part', async () => {
    const path = fresh();
    const a = await EventLogAppender.open(path, { banks });
    const pcrs = [8, 9, 12, 14];
    for (let i = 0; i < 8; i++) {
      const e = { pcr: pcrs[i % pcrs.length]!, type: 'EV_IPL', data: Buffer.from(`component ${i}\0`) };
      pcrExtend(tpm!.tcti, e.pcr, Object.fromEntries(banks.map((b) => [b, createHash(b).update(e.data).digest()])));
      await a.append(e);
    }
    const live = pcrRead(tpm!.tcti, banks, [...pcrs, 10]);
    const ok = compareReplay(replay(await readEventLogFile(path)), live);
    expect(ok.mismatches.map((m) => m.message)).toEqual([]);
    expect(ok.matched).toHaveLength(15); // PCR 10 has no events and is still zero in the TPM

    // Logged but never extended: the TPM matches the log up to the event before.
    const r1 = await a.append({ pcr: 12, type: 'EV_IPL', data: Buffer.from('not extended\0') });
    const c1 = compareReplay(replay(await readEventLogFile(path)), pcrRead(tpm!.tcti, banks, [12]));
    expect(c1.mismatches).toHaveLength(3);
    const m1 = c1.mismatches.find((m) => m.bank === 'sha256')!;
    expect(m1.firstDivergentEvent).toEqual({ index: r1.index, type: 'EV_IPL' });
    expect(m1.matchesThroughEvent).toBe(r1.index - 2); // PCR 12 got events #3 and #7 before
    expect(m1.message).toMatch(new RegExp(`PCR 12 sha256: log replays to [0-9a-f]{64}, TPM has [0-9a-f]{64}; 3 events for PCR 12, last at #${r1.index} \\(EV_IPL\\); the TPM matches the log through #${r1.index - 2} \\(EV_IPL\\); the log has 1 later event the TPM did not receive, first #${r1.index}`));

    // Extended but never logged (PCR 14): no prefix reaches the TPM value.
    pcrExtend(tpm!.tcti, 14, Object.fromEntries(banks.map((b) => [b, createHash(b).update('unlogged').digest()])));
    const c2 = compareReplay(replay(await readEventLogFile(path)), pcrRead(tpm!.tcti, banks, [14]));
    const m2 = c2.mismatches.find((m) => m.bank === 'sha1')!;
    expect(m2.matchesThroughEvent).toBeUndefined();
    expect(m2.message).toMatch(/PCR 14 sha1: .*2 events for PCR 14, last at #8 \(EV_IPL\); no prefix of the log's events reaches the TPM value/);
    await a.close();
  });

  it('a locality-4 DRTM launch (HASH_START/DATA/END) logged as EV_TXT_HASH_START replays PCR17/18 from zero', async () => {
    const before = pcrRead(tpm!.tcti, ['sha256'], [17, 18]);
    // Before any launch PCR17/18 are all 0xFF, which is also what replay assumes without a reset.
    expect(before.get('sha256')!.get(17)!.equals(Buffer.alloc(32, 0xff))).toBe(true);
    const launch = Buffer.from('emulated SINIT + MLE launch environment');
    expect(await ctrl(tpm!.ctrlPort, 6)).toBe(0); // HASH_START
    const len = Buffer.alloc(4);
    len.writeUInt32BE(launch.length);
    expect(await ctrl(tpm!.ctrlPort, 7, Buffer.concat([len, launch]))).toBe(0); // HASH_DATA
    expect(await ctrl(tpm!.ctrlPort, 8)).toBe(0); // HASH_END
    const path = fresh();
    const a = await EventLogAppender.open(path, { banks });
    await a.append({ pcr: 17, type: EVENT_TYPES.EV_TXT_HASH_START, data: launch });
    await a.close();
    const r = replay(await readEventLogFile(path));
    expect(r.drtmResetEvent).toBe(1);
    const cmp = compareReplay(r, pcrRead(tpm!.tcti, banks, [17, 18]));
    expect(cmp.mismatches.map((m) => m.message)).toEqual([]);
    expect(cmp.matched).toHaveLength(6);
  });
});

it('readEventLogFile on a missing file fails with ENOENT, not a parse error', async () => {
  await expect(readEventLogFile(join(dir, 'absent'))).rejects.toMatchObject({ code: 'ENOENT' });
  truncateSync(join(dir, (writeFileSync(join(dir, 'empty'), ''), 'empty')));
  await expect(readEventLogFile(join(dir, 'empty'))).rejects.toThrow(/empty input/);
});
