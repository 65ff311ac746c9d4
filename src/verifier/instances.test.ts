/**
 * Two verifier instances sharing one database (a SQLite file; a private PostgreSQL cluster):
 * an AK enrolled by credential activation started at one instance and finished at the other,
 * a challenge issued by one and answered at the other, the same evidence replayed at either
 * refused. The attester is a real TPM (swtpm with an EK certificate).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, swtpmCaCertificates, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { openTpm } from '../tpm/index.js';
import type { TpmClient } from '../tpm/client.js';
import { createStoredAk, loadStoredAk } from '../attest/ak-store.js';
import { clientAttesterTpm, clientEnrollingTpm } from '../attest/index.js';
import { collectEvidence } from '../attest/collect.js';
import { answerEnrollment, enrollmentRequest } from '../attest/enroll.js';
import { VerifierClient } from '../attest/remote.js';
import { startVerifierService, type RunningService } from '../attest/service.js';
import { Verifier } from '../attest/verifier.js';
import { createDatabase, postgresMissing, startPostgres, type PgCluster } from '../../test/helpers/postgres.js';

const tpmSkip = swtpmAvailable({ ek: true });
const pgSkip = postgresMissing();
if (tpmSkip) console.warn(`skipping shared-database instances: ${tpmSkip}`);
if (pgSkip) console.warn(`skipping PostgreSQL instances: ${pgSkip}`);

describe.skipIf(!!tpmSkip)('two verifier instances, one database', () => {
  let tpmDev: SwtpmInstance;
  let tpm: TpmClient;
  let dir: string;
  let cluster: PgCluster | undefined;

  beforeAll(async () => {
    tpmDev = await startSwtpm({ ek: true });
    tpm = await openTpm(tpmDev.tcti);
    dir = mkdtempSync(join(tmpdir(), 'he-instances-'));
    swtpmCaCertificates(tpmDev).forEach((pem, i) => writeFileSync(join(dir, `ca${i}.pem`), pem));
    writeFileSync(join(dir, 'policy.json'), JSON.stringify({ schema: 'hyperenclave/verifier-policy', version: 1, akProvenance: { trustedEkCaFiles: swtpmCaCertificates(tpmDev).map((_, i) => `ca${i}.pem`) } }));
    if (!pgSkip) cluster = startPostgres();
  }, 120_000);
  afterAll(async () => {
    await tpm?.close();
    await tpmDev?.stop();
    cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cases: [string, () => string, boolean][] = [
    ['SQLite file', () => `sqlite:${join(dir, 'shared.db')}`, false],
    ['PostgreSQL', () => createDatabase(cluster!, 'instances'), !!pgSkip],
  ];
  for (const [name, dbUrl, skip] of cases)
  it.skipIf(skip)(`${name}: enroll across instances, challenge at one, answer at the other, replay refused at both`, async () => {
    const url = dbUrl();
    // Each instance has its own state directory (own signing key): only the database is shared.
    const start = (n: string): Promise<RunningService> => startVerifierService({ verifier: new Verifier({ stateDir: join(dir, `${n}-${Math.random()}`), policyPath: join(dir, 'policy.json') }), dbUrl: url });
    const [a, b] = await Promise.all([start('a'), start('b')]);
    const ca = new VerifierClient(a.url);
    const cb = new VerifierClient(b.url);
    const stored = await createStoredAk(tpm, join(dir, `attester-${Math.random()}`), 'ecc');
    const ek = await tpm.createEk('rsa');
    const { ak, release } = await loadStoredAk(tpm, stored);
    try {
      const et = clientEnrollingTpm(tpm, ek, ak);
      const challenge = await ca.enrollStart(await enrollmentRequest(et));
      const answer = await answerEnrollment(et, challenge);
      expect(await cb.enrollFinish(answer)).toMatchObject({ method: 'credential-activation', akName: stored.name });
      // the pending challenge was consumed: answering again at the first instance is refused
      await expect(ca.enrollFinish(answer)).rejects.toThrow(/no pending enrollment .* \(unknown, or already answered\)/);

      const { nonce } = await ca.challenge();
      const evidence = await collectEvidence(clientAttesterTpm(tpm, ak), {
        nonce: Buffer.from(nonce, 'hex'),
        ak: { tpmtPublic: Buffer.from(stored.public, 'base64'), pem: stored.pem, name: Buffer.from(stored.name, 'hex') },
        pcrSelection: { sha256: [0, 7, 12] },
        claims: { platformKind: 'emulated' },
        logs: {},
      });
      const verdict = await cb.verify(evidence);
      // No reference values in this policy: the platform state is not judged, so at best warning.
      const checks = (verdict.result as { checks: { name: string; status: string }[] }).checks;
      expect(checks.filter((c) => c.status === 'fail'), JSON.stringify(verdict.result)).toEqual([]);
      for (const n of ['nonce.freshness', 'signature', 'nonce', 'ak.provenance']) expect(checks.find((c) => c.name === n)?.status, n).toBe('pass');
      expect(['affirming', 'warning']).toContain(verdict.status);
      for (const c of [ca, cb]) {
        const again = await c.verify(evidence);
        expect(again.status).toBe('contraindicated');
        expect((again.result as { checks: { name: string; status: string; reason: string }[] }).checks.find((x) => x.name === 'nonce.freshness')).toMatchObject({ status: 'fail', reason: 'challenge already used (replayed evidence)' });
      }
      // both instances recorded into the shared history, and the clock record is shared
      const hist = await a.store.history({ limit: 10 });
      expect(hist.map((h) => h.status)).toEqual(['contraindicated', 'contraindicated', verdict.status]);
      expect(new Set(hist.map((h) => h.instance)).size).toBe(2);
      expect(await a.store.getClock(hist[0]!.akSpkiSha256!)).toMatchObject({ resetCount: expect.any(Number) });
    } finally {
      await release();
      await tpm.flushContext(ek);
      await a.close();
      await b.close();
    }
  }, 120_000);
});
