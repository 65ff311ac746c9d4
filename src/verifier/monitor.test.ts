/**
 * Continuous attestation end to end, on the embedded database and on PostgreSQL: a real TPM
 * (swtpm) behind `startAgent` answers the verifier's challenges; the verifier attests the host
 * every interval; when PCR 12 changes, the first attestation after the change revokes the host
 * (so within one interval), the revocation is recorded, shown in the hosts table, and POSTed to
 * a webhook (a local HTTP server).
 */
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, swtpmCaCertificates, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { openTpm } from '../tpm/index.js';
import type { TpmClient } from '../tpm/client.js';
import { TPM_ALG } from '../tpm/alg.js';
import { createStoredAk, loadStoredAk, type StoredAk } from '../attest/ak-store.js';
import { clientAttesterTpm, clientEnrollingTpm } from '../attest/index.js';
import { collectEvidence } from '../attest/collect.js';
import { enrollWithVerifier, VerifierClient } from '../attest/remote.js';
import { startVerifierService, type RunningService } from '../attest/service.js';
import { Verifier } from '../attest/verifier.js';
import { startAgent, type RunningAgent } from './agent.js';
import type { RevocationEvent } from './monitor.js';
import { createDatabase, postgresMissing, startPostgres, type PgCluster } from '../../test/helpers/postgres.js';

const tpmSkip = swtpmAvailable({ ek: true });
const pgSkip = postgresMissing();
if (tpmSkip) console.warn(`skipping continuous attestation: ${tpmSkip}`);

describe.skipIf(!!tpmSkip)('continuous attestation: a host whose PCR 12 changes is revoked and the webhook told', () => {
  let tpmDev: SwtpmInstance;
  let tpm: TpmClient;
  let dir: string;
  let cluster: PgCluster | undefined;
  let stored: StoredAk;
  let ak: Awaited<ReturnType<typeof loadStoredAk>>;
  let ek: Awaited<ReturnType<TpmClient['createEk']>>;
  let agent: RunningAgent;
  let hook: Server;
  let hookUrl: string;
  const events: RevocationEvent[] = [];
  let onEvent: (() => void) | undefined;
  let snapshot: () => Promise<void>;

  beforeAll(async () => {
    tpmDev = await startSwtpm({ ek: true });
    tpm = await openTpm(tpmDev.tcti);
    dir = mkdtempSync(join(tmpdir(), 'he-monitor-'));
    swtpmCaCertificates(tpmDev).forEach((pem, i) => writeFileSync(join(dir, `ca${i}.pem`), pem));
    stored = await createStoredAk(tpm, join(dir, 'attester'), 'ecc');
    ek = await tpm.createEk('rsa');
    ak = await loadStoredAk(tpm, stored);
    const collect = (nonce: Buffer) =>
      collectEvidence(clientAttesterTpm(tpm, ak.ak), {
        nonce,
        ak: { tpmtPublic: Buffer.from(stored.public, 'base64'), pem: stored.pem, name: Buffer.from(stored.name, 'hex') },
        pcrSelection: { sha256: [0, 7, 12] },
        claims: { platformKind: 'emulated' },
        logs: {},
      });
    agent = await startAgent({ collect });
    snapshot = async () => {
      // reference values: this host's PCRs as they are now
      const ev = await collect(Buffer.alloc(32, 7));
      writeFileSync(join(dir, 'reference-values.json'), JSON.stringify({ schema: 'hyperenclave/reference-values', version: 1, pcrs: { sha256: ev.quotes[0]!.pcrs } }));
    };
    writeFileSync(
      join(dir, 'policy.json'),
      JSON.stringify({
        schema: 'hyperenclave/verifier-policy',
        version: 1,
        referenceValues: 'reference-values.json',
        akProvenance: { trustedEkCaFiles: swtpmCaCertificates(tpmDev).map((_, i) => `ca${i}.pem`) },
        // this host keeps no event logs: PCR 12 is judged by its reference value alone
        checks: { 'eventlog.*': 'off' },
      }),
    );
    hook = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        events.push(JSON.parse(Buffer.concat(chunks).toString()) as RevocationEvent);
        res.writeHead(204).end();
        onEvent?.();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
    hookUrl = `http://127.0.0.1:${(hook.address() as { port: number }).port}/revoked`;
    if (!pgSkip) cluster = startPostgres();
  }, 120_000);
  afterAll(async () => {
    await agent?.close();
    hook?.close();
    await ak?.release();
    if (ek) await tpm?.flushContext(ek);
    await tpm?.close();
    await tpmDev?.stop();
    cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cases: [string, () => string, boolean][] = [
    ['SQLite', () => `sqlite:${join(dir, 'monitor.db')}`, false],
    ['PostgreSQL', () => createDatabase(cluster!, 'monitor'), !!pgSkip],
  ];
  for (const [name, dbUrl, skip] of cases)
    it.skipIf(skip)(`${name}`, async () => {
      events.length = 0;
      const INTERVAL = 1000;
      await snapshot();
      const svc: RunningService = await startVerifierService({
        verifier: new Verifier({ stateDir: join(dir, `state-${name}`), policyPath: join(dir, 'policy.json') }),
        dbUrl: dbUrl(),
        monitor: { intervalMs: INTERVAL, webhooks: [hookUrl], onVerdict: (e) => process.env.SHOW_VERDICTS && console.log(JSON.stringify(e)) },
      });
      try {
        await enrollWithVerifier(clientEnrollingTpm(tpm, ek, ak.ak), new VerifierClient(svc.url));
        await svc.store.addHost({ hostId: 'host-1', agentUrl: agent.url });
        // first rounds: the host affirms
        await svc.monitor!.tick();
        let h = await svc.store.getHost('host-1');
        const first = (await svc.store.history({ hostId: 'host-1' }))[0]!;
        expect(h, JSON.stringify(first)).toMatchObject({ state: 'affirming', lastStatus: 'affirming' });
        const hosts = (await (await fetch(`${svc.url}/hosts`)).json()) as { hosts: { hostId: string; state: string }[] };
        expect(hosts.hosts).toMatchObject([{ hostId: 'host-1', state: 'affirming' }]);

        // PCR 12 changes on the host
        const got = new Promise<void>((r) => (onEvent = r));
        const changedAt = Date.now();
        await tpm.pcrEvent(12, Buffer.from('an unexpected hypervisor'));
        await got; // the scheduler's own timer runs the next round
        h = await svc.store.getHost('host-1');
        expect(h).toMatchObject({ state: 'revoked', lastStatus: 'contraindicated' });
        expect(h!.lastReason).toMatch(/^reference\.hypervisor: sha256 PCR 12 = .* is not the reference value/);
        // revoked at the first attestation after the change: within one interval
        const after = (await svc.store.history({ hostId: 'host-1' })).filter((v) => v.at >= changedAt);
        expect(after.length).toBeGreaterThanOrEqual(1);
        expect(after[after.length - 1]!.status).toBe('contraindicated');
        expect(events).toHaveLength(1);
        expect(events[0]).toMatchObject({ type: 'hyperenclave.host.revoked', hostId: 'host-1', status: 'contraindicated', previousState: 'affirming' });
        expect(events[0]!.ear!.split('.')).toHaveLength(3);
        expect(await svc.store.revocations('host-1')).toHaveLength(1);
        // sticky: later rounds keep it revoked and do not send the event again
        await svc.monitor!.tick();
        expect((await svc.store.getHost('host-1'))!.state).toBe('revoked');
      } finally {
        await svc.close();
      }
    }, 120_000);
});
