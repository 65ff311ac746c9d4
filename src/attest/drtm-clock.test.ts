/**
 * DRTM (PCR17 after a locality-4 HASH_START/DATA/END on swtpm's control channel) and the clock
 * check (reset/restart counters between two quotes of the same AK across a TPM power cycle).
 */
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { parsePcrsFile } from './tpm2-tools.js';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { buildEvidence, qualificationFor } from './evidence.js';
import { Tpm2ToolsAttester, tpm2ToolsAvailable } from './tpm2-tools-attester.js';
import { Verifier } from './verifier.js';
import type { VerifierPolicy } from './policy.js';
import { normalizeReferenceValues } from './policy.js';
import { skipUnless } from '../../test/helpers/require.js';

const skip = skipUnless('DRTM/clock tests', [['swtpm', swtpmAvailable()], ['tpm2-tools', tpm2ToolsAvailable()]]);

/** Sends swtpm control commands (u32 BE code + payload) on one connection; resolves with each 4-byte result. */
function ctrl(port: number, cmds: Buffer[]): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    const results: number[] = [];
    let buf = Buffer.alloc(0);
    let i = 0;
    const next = (): void => {
      if (i === cmds.length) {
        // swtpm serves one control client at a time: close fully before tpm2-tools connects
        s.once('close', () => resolve(results));
        s.destroy();
        return;
      }
      s.write(cmds[i++]!);
    };
    s.on('connect', next);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && results.length < i) {
        results.push(buf.readUInt32BE(0));
        // CMD_INIT and the hash commands answer with just the result code
        buf = buf.subarray(4);
        next();
      }
    });
    s.on('error', reject);
  });
}
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

describe.skipIf(!!skip)('DRTM and clock checks on swtpm', () => {
  let tpm: SwtpmInstance;
  let att: Tpm2ToolsAttester;
  let ak: { tpmtPublic: Buffer; pem: string };
  const dirs: string[] = [];
  const MLE = Buffer.from('measured launch environment v1');

  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'tcp' });
    att = new Tpm2ToolsAttester(tpm.tcti);
    att.createEk('rsa');
    ak = att.createAk('ecc256');
    att.run('tpm2_evictcontrol', ['-C', 'o', '-c', 'ak.ctx', '0x81010002']);
    att.flush();
  });
  afterAll(async () => {
    att?.cleanup();
    await tpm?.stop();
    dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  });

  function verifier(policy: Partial<VerifierPolicy>, pcrs?: Record<string, Record<string, string>>): Verifier {
    const d = mkdtempSync(join(tmpdir(), 'attest-drtm-'));
    dirs.push(d);
    return new Verifier({
      stateDir: d,
      policy: {
        // the AK is pinned by its SPKI hash (enrollment is tested in enroll.test.ts)
        policy: { schema: 'hyperenclave/verifier-policy', version: 1, akProvenance: { trustedAkKeys: [createHash('sha256').update(createPublicKey(ak.pem).export({ type: 'spki', format: 'der' })).digest('hex')] }, ...policy },
        trustedEkCas: [],
        ...(pcrs ? { reference: normalizeReferenceValues({ pcrs }, 'test reference') } : {}),
      },
    });
  }
  function quoteBundle(pcrs: number[]) {
    const claims = { nonce: randomBytes(32), platformKind: 'emulated' as const };
    att.run('tpm2_quote', ['-c', '0x81010002', '-l', `sha256:${pcrs.join(',')}`, '-q', qualificationFor(claims).toString('hex'), '-m', 'q.msg', '-s', 'q.sig', '-o', 'q.pcrs', '-g', 'sha256']);
    att.flush();
    const values = parsePcrsFile(readFileSync(att.path('q.pcrs'))).values.get('sha256')!;
    return { claims, ev: buildEvidence(claims, { quotes: [{ bank: 'sha256', attest: readFileSync(att.path('q.msg')), signature: readFileSync(att.path('q.sig')), values }], ak }) };
  }

  it('before a dynamic launch PCR17 is initial: drtm.required refuses', () => {
    const { claims, ev } = quoteBundle([0, 17, 18]);
    const r = verifier({ drtm: { required: true } }).verifyBundle(ev, claims.nonce).result;
    expect(r.checks.find((c) => c.name === 'reference.drtm')).toMatchObject({ status: 'fail', reason: expect.stringMatching(/no dynamic launch/) });
  });

  it('after HASH_START/DATA/END PCR17 = H(0 ‖ H(data)) matches the reference; another MLE does not', async () => {
    const res = await ctrl(tpm.ctrlPort, [u32(6), Buffer.concat([u32(7), u32(MLE.length), MLE]), u32(8)]);
    expect(res).toEqual([0, 0, 0]);
    const expected = createHash('sha256').update(Buffer.concat([Buffer.alloc(32), createHash('sha256').update(MLE).digest()])).digest('hex');
    const { claims, ev } = quoteBundle([0, 12, 17, 18]);
    expect(ev.quotes[0]!.pcrs['17']).toBe(expected);
    const pcr18 = ev.quotes[0]!.pcrs['18']!;
    const ok = verifier({ drtm: { required: true } }, { sha256: { '12': ev.quotes[0]!.pcrs['12']!, '17': expected, '18': pcr18 } }).verifyBundle(ev, claims.nonce).result;
    expect(ok.checks.find((c) => c.name === 'reference.drtm')?.status, JSON.stringify(ok.checks)).toBe('pass');
    expect(ok.checks.filter((c) => c.status === 'fail')).toEqual([]);
    // no logs to replay PCR 12 and 17/18, and no EK certificate: at best warning
    expect(ok.checks.filter((c) => c.status === 'skip').map((c) => c.name).sort()).toEqual(['eventlog.drtm', 'eventlog.event-data', 'eventlog.runtime', 'platform.kind']);
    expect(ok['ear.status']).toBe('warning');
    const other = createHash('sha256').update(Buffer.concat([Buffer.alloc(32), createHash('sha256').update('other MLE').digest()])).digest('hex');
    const bad = verifier({ drtm: { required: true } }, { sha256: { '17': other } }).verifyBundle(ev, claims.nonce).result;
    expect(bad.checks.find((c) => c.name === 'reference.drtm')?.status).toBe('fail');
    expect(bad['ear.status']).toBe('contraindicated');
    const omitted = verifier({ drtm: { required: true } }, { sha256: { '17': expected } }).verifyBundle(quoteBundle([0, 7]).ev, Buffer.alloc(32)).result;
    expect(omitted.checks.find((c) => c.name === 'pcr.selection')?.reason).toMatch(/PCR 17 required/);
  });

  it('clock: each accepted quote must be newer (same boot: clock; after a TPM reset: resetCount); an older one is refused', async () => {
    const v = verifier({ checks: { clock: 'required' } });
    const clockOf = (b: ReturnType<typeof quoteBundle>) => v.verifyBundle(b.ev, b.claims.nonce).result.checks.find((c) => c.name === 'clock');
    const first = quoteBundle([0, 12]);
    expect(clockOf(first)).toMatchObject({ status: 'pass', reason: expect.stringMatching(/first accepted quote/) });
    const second = quoteBundle([0, 12]);
    expect(clockOf(second)).toMatchObject({ status: 'pass', reason: expect.stringMatching(/same boot/) });
    // orderly power cycle: TPM2_Shutdown(CLEAR), CMD_INIT, TPM2_Startup(CLEAR) -> resetCount increments
    att.run('tpm2_shutdown', ['-c']);
    expect(await ctrl(tpm.ctrlPort, [Buffer.concat([u32(2), u32(0)])])).toEqual([0]);
    att.run('tpm2_startup', ['-c']);
    const third = quoteBundle([0, 12]);
    expect(clockOf(third)).toMatchObject({ status: 'pass', reason: expect.stringMatching(/resetCount \d+ -> \d+/) });
    // the second quote (before the reset) is now older than the last accepted one
    const r = v.verifyBundle(second.ev, second.claims.nonce).result;
    expect(r.checks.find((c) => c.name === 'clock')).toMatchObject({ status: 'fail', reason: expect.stringMatching(/resetCount \d+ is older than the last accepted/) });
    expect(r['ear.status']).toBe('contraindicated');
  });
});
