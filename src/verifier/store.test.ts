/**
 * The verifier store on both databases: SQLite (a file, two handles = two instances) and a
 * private PostgreSQL cluster (two pools = two instances). Nonces are single use across
 * instances, pending enrollments are taken once, clocks only move forward, leases split hosts.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, postgresMissing, startPostgres, type PgCluster } from '../../test/helpers/postgres.js';
import { openSqlDb } from './sql.js';
import { SCHEMA_VERSION, migrate } from './migrations.js';
import { openVerifierStore, type SqlVerifierStore } from './store.js';

const pgSkip = postgresMissing();
if (pgSkip) console.warn(`skipping PostgreSQL store tests: ${pgSkip}`);

let cluster: PgCluster | undefined;
const tmp = mkdtempSync(join(tmpdir(), 'he-store-'));
beforeAll(() => {
  if (!pgSkip) cluster = startPostgres();
}, 120_000);
afterAll(() => {
  cluster?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

let dbCount = 0;
const backends: [string, () => string, boolean][] = [
  ['sqlite', () => `sqlite:${join(tmp, `v${++dbCount}.db`)}`, false],
  ['postgres', () => createDatabase(cluster!, `v${++dbCount}`), !!pgSkip],
];

describe.each(backends)('verifier store on %s', (kind, newUrl, skip) => {
  let a: SqlVerifierStore;
  let b: SqlVerifierStore;
  beforeAll(async () => {
    if (skip) return;
    const url = newUrl();
    [a, b] = await Promise.all([openVerifierStore(url), openVerifierStore(url)]);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it.skipIf(skip)('migrates once, concurrently, and records the version', async () => {
    expect(a.dialect).toBe(kind);
    expect(a.instance).not.toBe(b.instance);
    if (kind === 'sqlite') expect(statSync(a.where).mode & 0o777).toBe(0o600);
  });

  it.skipIf(skip)('a nonce issued by one instance is consumed once, at either instance', async () => {
    await a.issueNonce('AB'.repeat(16), Date.now() + 60_000);
    expect(await b.consumeNonce('ab'.repeat(16))).toBe('fresh');
    expect(await a.consumeNonce('ab'.repeat(16))).toBe('used');
    expect(await b.consumeNonce('ab'.repeat(16))).toBe('used');
    expect(await a.consumeNonce('cd'.repeat(16))).toBe('unknown');
    await a.issueNonce('ef'.repeat(16), Date.now() - 1);
    expect(await b.consumeNonce('ef'.repeat(16))).toBe('expired');
    expect(await b.consumeNonce('ef'.repeat(16))).toBe('used');
    // a race: many consumers, exactly one wins
    await a.issueNonce('12'.repeat(16), Date.now() + 60_000);
    const states = await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? a : b).consumeNonce('12'.repeat(16))));
    expect(states.filter((s) => s === 'fresh')).toHaveLength(1);
    expect(await a.pruneNonces(Date.now())).toBeGreaterThanOrEqual(1);
    expect(await a.consumeNonce('ef'.repeat(16))).toBe('unknown');
  });

  it.skipIf(skip)('a pending enrollment is taken exactly once; enrollments are seen by every instance', async () => {
    const p = { id: '0f'.repeat(16), secretSha256: '00'.repeat(32), akName: '000b' + '11'.repeat(32), akSpkiSha256: '22'.repeat(32), akPublic: 'AA==', ekCertSha256: '33'.repeat(32), expiresAt: new Date(Date.now() + 60_000).toISOString() };
    await a.savePending(p);
    const [x, y] = await Promise.all([b.takePending(p.id), a.takePending(p.id)]);
    expect([x, y].filter(Boolean)).toEqual([p]);
    const rec = { schema: 'hyperenclave/ak-enrollment' as const, version: 1 as const, akName: p.akName, akSpkiSha256: p.akSpkiSha256, akPublic: 'AA==', ekCertSha256: p.ekCertSha256, enrolledAt: new Date().toISOString(), method: 'credential-activation' as const };
    await a.saveEnrollment(rec);
    await a.saveEnrollment({ ...rec, akPublic: 'AQ==' });
    expect(await b.findEnrollment(p.akSpkiSha256)).toEqual({ ...rec, akPublic: 'AQ==' });
    expect(await b.listEnrollments()).toHaveLength(1);
    expect(await b.findEnrollment('44'.repeat(32))).toBeUndefined();
  });

  it.skipIf(skip)('clock records only move forward (resetCount, restartCount, clock)', async () => {
    const ak = '55'.repeat(32);
    const at = new Date().toISOString();
    expect(await a.putClock(ak, { clock: '1000', resetCount: 1, restartCount: 0, at })).toBe(true);
    expect(await b.putClock(ak, { clock: '999', resetCount: 1, restartCount: 0, at })).toBe(false);
    expect(await b.putClock(ak, { clock: '18446744073709551000', resetCount: 1, restartCount: 0, at })).toBe(true);
    expect(await a.putClock(ak, { clock: '18446744073709550999', resetCount: 1, restartCount: 0, at })).toBe(false);
    await expect(a.putClock(ak, { clock: '18446744073709551616', resetCount: 1, restartCount: 0, at })).rejects.toThrow(/is not a UINT64/);
    expect(await b.putClock(ak, { clock: '5', resetCount: 2, restartCount: 0, at })).toBe(true);
    expect(await a.getClock(ak)).toEqual({ clock: '5', resetCount: 2, restartCount: 0, at });
  });

  it.skipIf(skip)('beginVerification consumes the nonce and reads enrollment and clock; finishVerification writes clock and verdict', async () => {
    const ak = '66'.repeat(32);
    const at = new Date().toISOString();
    await a.issueNonce('77'.repeat(16), Date.now() + 60_000);
    expect(await b.beginVerification('77'.repeat(16), ak)).toEqual({ nonceState: 'fresh' });
    expect(await a.beginVerification('77'.repeat(16), ak)).toEqual({ nonceState: 'used' });
    expect(await a.beginVerification('78'.repeat(16), undefined)).toEqual({ nonceState: 'unknown' });
    const rec = { schema: 'hyperenclave/ak-enrollment' as const, version: 1 as const, akName: '000b' + '66'.repeat(32), akSpkiSha256: ak, akPublic: 'AA==', ekCertSha256: '33'.repeat(32), enrolledAt: at, method: 'credential-activation' as const };
    await a.saveEnrollment(rec);
    const t = Date.now();
    await b.finishVerification({ ak, rec: { clock: '500', resetCount: 3, restartCount: 0, at } }, { at: t, instance: b.instance, akSpkiSha256: ak, status: 'affirming', nonce: '79'.repeat(16) });
    await b.finishVerification({ ak, rec: { clock: '400', resetCount: 3, restartCount: 0, at } }, { at: t, instance: b.instance, akSpkiSha256: ak, status: 'contraindicated' });
    await a.issueNonce('79'.repeat(16), Date.now() - 1);
    expect(await a.beginVerification('79'.repeat(16), ak)).toEqual({ nonceState: 'expired', enrollment: rec, clock: { clock: '500', resetCount: 3, restartCount: 0, at } });
    expect((await a.history({ limit: 2 })).map((h) => h.status)).toEqual(['contraindicated', 'affirming']);
  });

  it.skipIf(skip)('hosts are leased to one instance at a time; history, revocations, keys and release audit are shared', async () => {
    // strictly after the verdicts earlier tests recorded at Date.now() (the same millisecond happens)
    const now = Date.now() + 1000;
    for (let i = 0; i < 10; i++) await a.addHost({ hostId: `h${i}`, agentUrl: `http://127.0.0.1:${9000 + i}` }, now);
    const [ca, cb] = await Promise.all([a.claimDueHosts(now, 60_000, 6), b.claimDueHosts(now, 60_000, 6)]);
    const ids = [...ca, ...cb].map((h) => h.hostId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBe(10);
    expect(await a.claimDueHosts(now, 60_000, 10)).toEqual([]);
    await a.updateHost('h0', { state: 'revoked', lastStatus: 'contraindicated', lastReason: 'pcr', at: now, nextDueAt: now, failures: 1, revokedAt: now });
    expect((await b.getHost('h0'))!).toMatchObject({ state: 'revoked', revokedAt: now, failures: 1, lastReason: 'pcr' });
    expect((await b.claimDueHosts(now, 60_000, 10)).map((h) => h.hostId)).toEqual(['h0']);
    await b.recordVerdict({ at: now, instance: b.instance, hostId: 'h0', status: 'contraindicated', firstFailure: 'x' });
    expect((await a.history({ hostId: 'h0' }))[0]).toMatchObject({ instance: b.instance, status: 'contraindicated' });
    expect(await a.countVerdicts(now)).toBe(1);
    await a.pruneHistory(now); // earlier tests' verdicts
    expect(await a.pruneHistory(now + 1)).toBe(1);
    expect(await a.history({ hostId: 'h0' })).toEqual([]);
    await b.recordRevocation('h0', { type: 'revocation' }, now);
    expect((await a.revocations('h0'))[0]).toMatchObject({ hostId: 'h0', event: { type: 'revocation' } });
    await a.publishKey('k1', { kty: 'EC' });
    await b.publishKey('k2', { kty: 'EC' });
    await b.publishKey('k1', { kty: 'EC' });
    expect((await a.listKeys()).map((k) => k.kid).sort()).toEqual(['k1', 'k2']);
    await a.auditRelease({ resource: 'r', outcome: 'refused', reason: 'reference.enclaves: no', mrenclave: 'aa' });
    expect(await b.releases('r')).toMatchObject([{ resource: 'r', outcome: 'refused', mrenclave: 'aa', instance: a.instance }]);
    expect(await b.removeHost('h9')).toBe(true);
    expect((await a.listHosts()).length).toBe(9);
  });
});

describe('migrations', () => {
  it('refuses a database newer than this verifier', async () => {
    const db = await openSqlDb(`sqlite:${join(tmp, 'newer.db')}`);
    try {
      expect(await migrate(db)).toBe(SCHEMA_VERSION);
      await db.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [SCHEMA_VERSION + 1, 'future', 0]);
      await expect(migrate(db)).rejects.toThrow(/schema version 2 is newer than this verifier's 1 \(downgrade refused\)/);
    } finally {
      await db.close();
    }
  });
  it('names an unreachable PostgreSQL without its password', async () => {
    await expect(openVerifierStore('postgresql://u:hunter2@127.0.0.1:1/db')).rejects.toThrow(/^database postgresql:\/\/u:\*\*\*@127\.0\.0\.1:1\/db: cannot connect: /);
  });
});
