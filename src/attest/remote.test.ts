import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, swtpmCaCertificates, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { openTpm } from '../tpm/index.js';
import type { TpmClient } from '../tpm/client.js';
import { createStoredAk, loadStoredAk } from './ak-store.js';
import { clientAttesterTpm, clientEnrollingTpm } from './index.js';
import { collectEvidence } from './collect.js';
import { enrollWithVerifier, VerifierClient } from './remote.js';
import { startVerifierService, type RunningService } from './service.js';
import { Verifier } from './verifier.js';
import { skipUnless } from '../../test/helpers/require.js';

describe('VerifierClient failures are one line naming the endpoint', () => {
  it('refuses a non-URL and a non-HTTP scheme', () => {
    expect(() => new VerifierClient('10.0.2.2:8437')).toThrow('verifier endpoint "10.0.2.2:8437" is not a URL (expected http://host:port)');
    expect(() => new VerifierClient('ftp://h/')).toThrow('only http and https are supported');
  });
  it('unreachable: exit 3 with the address', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as { port: number }).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const err = (await new VerifierClient(`http://127.0.0.1:${port}`).challenge().then(
      () => new Error('no error'),
      (e: unknown) => e as Error,
    )) as Error & { exitCode?: number };
    expect(err.message).toMatch(new RegExp(`^verifier http://127\\.0\\.0\\.1:${port}/challenge: .*ECONNREFUSED`));
    expect(err.exitCode).toBe(3);
  });
  it('an HTTP error carries the verifier\'s own message; a non-JSON answer is named', async () => {
    const srv = createServer((req, res) => {
      if (req.url === '/verify') res.writeHead(415, { 'content-type': 'application/json' }).end('{"error":"content-type must be application/json"}');
      else res.writeHead(200).end('<html>');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const base = `http://127.0.0.1:${(srv.address() as { port: number }).port}/api`;
    try {
      await expect(new VerifierClient(base.replace('/api', '')).verify({})).rejects.toThrow(/\/verify: HTTP 415: content-type must be application\/json$/);
      await expect(new VerifierClient(base).challenge()).rejects.toThrow(`verifier ${base}/challenge: HTTP 200, answer is not JSON: <html>`);
    } finally {
      srv.close();
    }
  });
  it('a silent verifier times out', async () => {
    const srv = createServer(() => undefined);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    try {
      await expect(new VerifierClient(`http://127.0.0.1:${(srv.address() as { port: number }).port}`, 300).challenge()).rejects.toThrow(/no answer within 300 ms/);
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });
});

const skip = skipUnless('remote enrollment', [['swtpm', swtpmAvailable({ ek: true })]]);

describe.skipIf(!!skip)('enrollment and attestation against the verifier service over HTTP (swtpm with EK certificate)', () => {
  let tpmDev: SwtpmInstance;
  let tpm: TpmClient;
  let dir: string;
  let svc: RunningService;

  beforeAll(async () => {
    tpmDev = await startSwtpm({ ek: true });
    tpm = await openTpm(tpmDev.tcti);
    dir = mkdtempSync(join(tmpdir(), 'attest-remote-'));
    swtpmCaCertificates(tpmDev).forEach((pem, i) => writeFileSync(join(dir, `ca${i}.pem`), pem));
    writeFileSync(
      join(dir, 'policy.json'),
      JSON.stringify({ schema: 'hyperenclave/verifier-policy', version: 1, akProvenance: { trustedEkCaFiles: swtpmCaCertificates(tpmDev).map((_, i) => `ca${i}.pem`) } }),
    );
    svc = await startVerifierService({ verifier: new Verifier({ stateDir: join(dir, 'verifier'), policyPath: join(dir, 'policy.json') }) });
  }, 120_000);
  afterAll(async () => {
    await svc?.close();
    await tpm?.close();
    await tpmDev?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('enrolls the AK by credential activation, then a quote on the verifier\'s nonce passes every check it can run; a replay is refused', async () => {
    const client = new VerifierClient(svc.url);
    const stored = await createStoredAk(tpm, join(dir, 'attester'), 'ecc');
    const ek = await tpm.createEk('rsa');
    const { ak, release } = await loadStoredAk(tpm, stored);
    try {
      const rec = await enrollWithVerifier(clientEnrollingTpm(tpm, ek, ak), client);
      expect(rec).toMatchObject({ method: 'credential-activation', akName: stored.name });

      const { nonce } = await client.challenge();
      const evidence = await collectEvidence(clientAttesterTpm(tpm, ak), {
        nonce: Buffer.from(nonce, 'hex'),
        ak: { tpmtPublic: Buffer.from(stored.public, 'base64'), pem: stored.pem, name: Buffer.from(stored.name, 'hex') },
        pcrSelection: { sha256: [0, 7, 12] },
        claims: { platformKind: 'emulated' },
        logs: {},
      });
      const verdict = await client.verify(evidence);
      // every check that runs passes; this service has no reference values, so the platform state is not judged: warning
      expect((verdict.result as { checks: { status: string }[] }).checks.filter((c) => c.status === 'fail'), JSON.stringify(verdict.result)).toEqual([]);
      expect(verdict.status).toBe('warning');
      expect(verdict.jwt.split('.')).toHaveLength(3);
      expect((await client.verify(evidence)).status).toBe('contraindicated');
      // a second enrollment of the same AK from the same TPM is accepted again (idempotent re-enrollment)
      await expect(enrollWithVerifier(clientEnrollingTpm(tpm, ek, ak), client)).resolves.toMatchObject({ akName: stored.name });
      // a forged answer is refused by the verifier, and the client says so
      const ch = await client.enrollStart({ ekCertificates: [], ekPublic: '', akPublic: '' }).catch((e: Error) => e);
      expect((ch as Error).message).toMatch(/\/enroll\/start: HTTP 400: /);
      await expect(client.enrollFinish({ id: randomBytes(16).toString('hex'), secret: 'AA==' })).rejects.toThrow(/\/enroll\/finish: HTTP 400: /);
    } finally {
      await release();
      await tpm.flushContext(ek);
    }
  });
});
