import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { collectEvidence, type AttesterTpm } from './collect.js';
import { Tpm2ToolsAttester, tpm2ToolsAttesterTpm, tpm2ToolsAvailable } from './tpm2-tools-attester.js';
import { Verifier } from './verifier.js';
import { skipUnless } from '../../test/helpers/require.js';

const skip = skipUnless('collectEvidence tests', [['swtpm', swtpmAvailable()], ['tpm2-tools', tpm2ToolsAvailable()]]);

describe.skipIf(!!skip)('collectEvidence: PCR read and quote taken consistently', () => {
  let tpm: SwtpmInstance;
  let att: Tpm2ToolsAttester;
  let ak: { tpmtPublic: Buffer; pem: string };
  let dir: string;
  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'tcp' });
    att = new Tpm2ToolsAttester(tpm.tcti);
    att.createEk('rsa');
    ak = att.createAk('ecc256');
    dir = mkdtempSync(join(tmpdir(), 'attest-collect-'));
  });
  afterAll(async () => {
    att?.cleanup();
    await tpm?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // the AK is pinned by its SPKI hash (enrollment is tested in enroll.test.ts)
  const verify = (ev: Awaited<ReturnType<typeof collectEvidence>>, nonce: Buffer) =>
    new Verifier({ stateDir: join(dir, 'v'), policy: { schema: 'hyperenclave/verifier-policy', version: 1, akProvenance: { trustedAkKeys: [createHash('sha256').update(createPublicKey(ak.pem).export({ type: 'spki', format: 'der' })).digest('hex')] }, requiredPcrs: { sha256: [0, 7], sha384: [0] } } }).verifyBundle(ev, nonce).result;

  it('one quote per bank, verifiable', async () => {
    const nonce = randomBytes(32);
    const ev = await collectEvidence(tpm2ToolsAttesterTpm(att), { nonce, ak, pcrSelection: { sha256: [0, 7, 12], sha384: [0] }, claims: { platformKind: 'emulated' } });
    expect(ev.quotes.map((q) => q.bank)).toEqual(['sha256', 'sha384']);
    const r = verify(ev, nonce);
    expect(r.checks.filter((c) => c.status === 'fail')).toEqual([]);
    // no reference values and a pinned AK (no EK certificate: platform kind unknown): not judged, so at best warning
    expect(r.checks.filter((c) => c.status === 'skip').map((c) => c.name).sort()).toEqual(['eventlog.event-data', 'platform.kind', 'reference.hypervisor', 'reference.pcrs']);
    expect(r['ear.status']).toBe('warning');
  });

  it('a PCR extended between read and quote is detected and the pair retaken', async () => {
    const inner = tpm2ToolsAttesterTpm(att);
    let raced = 0;
    const racing: AttesterTpm = {
      async readPcrs(bank, pcrs) {
        const v = await inner.readPcrs(bank, pcrs);
        if (raced++ === 0) att.extend(7, 'sha256', 'cd'.repeat(32)); // lands after the read, before the quote
        return v;
      },
      quote: inner.quote,
    };
    const nonce = randomBytes(32);
    const ev = await collectEvidence(racing, { nonce, ak, pcrSelection: { sha256: [0, 7] }, claims: { platformKind: 'emulated' } });
    expect(raced).toBeGreaterThanOrEqual(3); // read, re-read after the mismatch, read again
    expect(verify(ev, nonce).checks.find((c) => c.name === 'pcr.digest')?.status).toBe('pass');
  });

  it('a PCR that never settles fails with its index after a bounded number of attempts', async () => {
    const inner = tpm2ToolsAttesterTpm(att);
    const busy: AttesterTpm = {
      async readPcrs(bank, pcrs) {
        const v = await inner.readPcrs(bank, pcrs);
        att.extend(7, 'sha256', 'ef'.repeat(32));
        return v;
      },
      quote: inner.quote,
    };
    await expect(collectEvidence(busy, { nonce: randomBytes(32), ak, pcrSelection: { sha256: [0, 7] }, claims: { platformKind: 'emulated' }, maxAttempts: 2 })).rejects.toThrow(/sha256 PCR\(s\) 7 kept changing .*2 attempts/);
  });
});
