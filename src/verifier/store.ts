/**
 * The verifier's storage interface and its SQL implementation (SQLite or PostgreSQL, see sql.ts).
 * Everything a verifier instance must share with the others lives here: enrollments, pending
 * enrollment challenges, single-use expiring nonces, per-AK clock records, attestation history,
 * enrolled hosts and their state, revocation events, the instances' result-signing public keys
 * (JWKS), and the key broker's release audit.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { chmodSync, existsSync } from 'node:fs';
import type { EnrollmentRecord, PendingEnrollment } from '../attest/enroll.js';
import type { ClockRecord } from '../attest/verify.js';
import type { EarStatus } from '../attest/result.js';
import { migrate } from './migrations.js';
import { openSqlDb, type OpenOptions, type Row, type SqlDb } from './sql.js';

export type NonceState = 'fresh' | 'unknown' | 'expired' | 'used';
export type HostState = 'pending' | 'affirming' | 'warning' | 'revoked';

export interface VerdictRecord {
  at: number;
  instance: string;
  hostId?: string;
  akSpkiSha256?: string;
  nonce?: string;
  status: EarStatus;
  firstFailure?: string;
  /** The EAR JWT (or result JSON) as issued. */
  result?: string;
}

export interface HostRecord {
  hostId: string;
  agentUrl: string;
  akSpkiSha256?: string;
  state: HostState;
  lastStatus?: string;
  lastReason?: string;
  lastAttestedAt?: number;
  affirmedAt?: number;
  revokedAt?: number;
  failures: number;
  nextDueAt: number;
  addedAt: number;
}

export interface RevocationRecord {
  id: number;
  at: number;
  hostId: string;
  instance: string;
  event: Record<string, unknown>;
}

export interface ReleaseAudit {
  at: number;
  instance: string;
  resource: string;
  outcome: 'released' | 'refused';
  reason: string;
  akSpkiSha256?: string;
  mrenclave?: string;
  nonce?: string;
}

/** What src/attest/service.ts and the attestation scheduler need from storage. */
export interface VerifierStore {
  readonly dialect: 'sqlite' | 'postgres';
  readonly where: string;
  /** This process's name in shared tables (hostname:pid:random). */
  readonly instance: string;

  issueNonce(nonce: string, expiresAt: number): Promise<void>;
  /** Marks the nonce used, atomically across instances; tells what it was before. */
  consumeNonce(nonce: string, now?: number): Promise<NonceState>;
  /** Deletes nonces expired before `before`; returns how many. */
  pruneNonces(before: number): Promise<number>;

  savePending(p: PendingEnrollment): Promise<void>;
  /** Reads and removes a pending enrollment (single use across instances). */
  takePending(id: string): Promise<PendingEnrollment | undefined>;
  saveEnrollment(r: EnrollmentRecord): Promise<void>;
  findEnrollment(akSpkiSha256: string): Promise<EnrollmentRecord | undefined>;
  listEnrollments(): Promise<EnrollmentRecord[]>;

  /** Last accepted (resetCount, restartCount, clock) of this AK. */
  getClock(akSpkiSha256: string): Promise<ClockRecord | undefined>;
  /**
   * Records a clock reading if it is not older than the stored one (ordered by resetCount,
   * restartCount, clock); returns false when a newer reading is already stored (a concurrent or
   * replayed quote).
   */
  putClock(akSpkiSha256: string, rec: ClockRecord): Promise<boolean>;

  recordVerdict(v: VerdictRecord): Promise<void>;
  /**
   * The reads one verification starts with: consume the nonce, fetch the AK's enrollment and
   * clock record (PostgreSQL: one round trip).
   */
  beginVerification(nonce: string, akSpkiSha256: string | undefined, now?: number): Promise<{ nonceState: NonceState; enrollment?: EnrollmentRecord; clock?: ClockRecord }>;
  /** The writes it ends with: the clock record (when given) and the verdict (PostgreSQL: one round trip). */
  finishVerification(clock: { ak: string; rec: ClockRecord } | undefined, v: VerdictRecord): Promise<void>;
  /** Deletes verdicts recorded before `before` (history retention); returns how many. */
  pruneHistory(before: number): Promise<number>;
  /** How many verdicts were recorded at or after `since` (ms). */
  countVerdicts(since: number): Promise<number>;
  history(filter?: { hostId?: string; limit?: number }): Promise<VerdictRecord[]>;

  addHost(h: { hostId: string; agentUrl: string; akSpkiSha256?: string }, now?: number): Promise<void>;
  removeHost(hostId: string): Promise<boolean>;
  getHost(hostId: string): Promise<HostRecord | undefined>;
  listHosts(): Promise<HostRecord[]>;
  /** Leases up to `limit` hosts due at `now` to this instance for `leaseMs` (no other instance gets them meanwhile). */
  claimDueHosts(now: number, leaseMs: number, limit: number): Promise<HostRecord[]>;
  /** Stores the outcome of one attestation of a host and releases its lease. */
  updateHost(hostId: string, u: { state: HostState; lastStatus: string; lastReason?: string; at: number; nextDueAt: number; akSpkiSha256?: string; failures: number; revokedAt?: number | null; affirmedAt?: number }): Promise<void>;
  recordRevocation(hostId: string, event: Record<string, unknown>, at?: number): Promise<void>;
  revocations(hostId?: string): Promise<RevocationRecord[]>;

  publishKey(kid: string, jwk: Record<string, unknown>): Promise<void>;
  listKeys(): Promise<{ kid: string; jwk: Record<string, unknown> }[]>;

  auditRelease(a: Omit<ReleaseAudit, 'at' | 'instance'> & { at?: number }): Promise<void>;
  releases(resource?: string): Promise<ReleaseAudit[]>;

  close(): Promise<void>;
}

const num = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : Number(v));
const str = (v: unknown): string | undefined => (v === null || v === undefined ? undefined : String(v));

function hostOf(r: Row): HostRecord {
  const h: HostRecord = {
    hostId: String(r.host_id),
    agentUrl: String(r.agent_url),
    state: String(r.state) as HostState,
    failures: Number(r.failures),
    nextDueAt: Number(r.next_due_at),
    addedAt: Number(r.added_at),
  };
  const opt: [keyof HostRecord, unknown][] = [
    ['akSpkiSha256', str(r.ak_spki_sha256)],
    ['lastStatus', str(r.last_status)],
    ['lastReason', str(r.last_reason)],
    ['lastAttestedAt', num(r.last_attested_at)],
    ['affirmedAt', num(r.affirmed_at)],
    ['revokedAt', num(r.revoked_at)],
  ];
  for (const [k, v] of opt) if (v !== undefined) (h as unknown as Record<string, unknown>)[k] = v;
  return h;
}

/** TPMS_CLOCK_INFO.clock is a UINT64: stored as 20 zero-padded digits (text order = numeric order). */
function clockParam(rec: ClockRecord): string {
  if (!/^\d{1,20}$/.test(rec.clock) || BigInt(rec.clock) >= 1n << 64n) throw new Error(`clock record: "${rec.clock.slice(0, 30)}" is not a UINT64`);
  return rec.clock.padStart(20, '0');
}

export class SqlVerifierStore implements VerifierStore {
  readonly instance: string;
  constructor(private readonly db: SqlDb) {
    this.instance = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  }
  get dialect(): 'sqlite' | 'postgres' {
    return this.db.dialect;
  }
  get where(): string {
    return this.db.where;
  }

  async issueNonce(nonce: string, expiresAt: number): Promise<void> {
    await this.db.run('INSERT INTO nonces (nonce, issued_by, issued_at, expires_at) VALUES (?, ?, ?, ?)', [nonce.toLowerCase(), this.instance, Date.now(), expiresAt]);
  }

  async consumeNonce(nonce: string, now = Date.now()): Promise<NonceState> {
    const n = nonce.toLowerCase();
    const got = await this.db.all('UPDATE nonces SET used_at = ?, used_by = ? WHERE nonce = ? AND used_at IS NULL RETURNING expires_at', [now, this.instance, n]);
    if (got.length) return now > Number(got[0]!.expires_at) ? 'expired' : 'fresh';
    const seen = await this.db.all('SELECT used_at FROM nonces WHERE nonce = ?', [n]);
    return seen.length ? 'used' : 'unknown';
  }

  async pruneNonces(before: number): Promise<number> {
    return this.db.run('DELETE FROM nonces WHERE expires_at < ?', [before]);
  }

  async savePending(p: PendingEnrollment): Promise<void> {
    await this.db.run('INSERT INTO pending_enrollments (id, record, expires_at) VALUES (?, ?, ?)', [p.id, JSON.stringify(p), Date.parse(p.expiresAt)]);
  }

  async takePending(id: string): Promise<PendingEnrollment | undefined> {
    const rows = await this.db.all('DELETE FROM pending_enrollments WHERE id = ? RETURNING record', [id]);
    return rows.length ? (JSON.parse(String(rows[0]!.record)) as PendingEnrollment) : undefined;
  }

  async saveEnrollment(r: EnrollmentRecord): Promise<void> {
    await this.db.run(
      'INSERT INTO enrollments (ak_spki_sha256, ak_name, record, enrolled_at) VALUES (?, ?, ?, ?) ON CONFLICT (ak_spki_sha256) DO UPDATE SET ak_name = excluded.ak_name, record = excluded.record, enrolled_at = excluded.enrolled_at',
      [r.akSpkiSha256, r.akName, JSON.stringify(r), Date.parse(r.enrolledAt) || Date.now()],
    );
  }

  async findEnrollment(akSpkiSha256: string): Promise<EnrollmentRecord | undefined> {
    const rows = await this.db.all('SELECT record FROM enrollments WHERE ak_spki_sha256 = ?', [akSpkiSha256]);
    return rows.length ? (JSON.parse(String(rows[0]!.record)) as EnrollmentRecord) : undefined;
  }

  async listEnrollments(): Promise<EnrollmentRecord[]> {
    return (await this.db.all('SELECT record FROM enrollments ORDER BY enrolled_at')).map((r) => JSON.parse(String(r.record)) as EnrollmentRecord);
  }

  async getClock(ak: string): Promise<ClockRecord | undefined> {
    const rows = await this.db.all('SELECT reset_count, restart_count, clock, at FROM clocks WHERE ak_spki_sha256 = ?', [ak]);
    const r = rows[0];
    return r ? { clock: BigInt(String(r.clock)).toString(), resetCount: Number(r.reset_count), restartCount: Number(r.restart_count), at: String(r.at) } : undefined;
  }

  async putClock(ak: string, rec: ClockRecord): Promise<boolean> {
    const param = clockParam(rec);
    const n = await this.db.run(
      `INSERT INTO clocks (ak_spki_sha256, reset_count, restart_count, clock, at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (ak_spki_sha256) DO UPDATE SET reset_count = excluded.reset_count, restart_count = excluded.restart_count, clock = excluded.clock, at = excluded.at
       WHERE (excluded.reset_count, excluded.restart_count, excluded.clock) >= (clocks.reset_count, clocks.restart_count, clocks.clock)`,
      [ak, rec.resetCount, rec.restartCount, param, rec.at],
    );
    return n > 0;
  }

  async recordVerdict(v: VerdictRecord): Promise<void> {
    await this.db.run('INSERT INTO attestations (at, instance, host_id, ak_spki_sha256, nonce, status, first_failure, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [
      v.at,
      v.instance,
      v.hostId ?? null,
      v.akSpkiSha256 ?? null,
      v.nonce ?? null,
      v.status,
      v.firstFailure ?? null,
      v.result ?? null,
    ]);
  }

  async beginVerification(nonce: string, ak: string | undefined, now = Date.now()): Promise<{ nonceState: NonceState; enrollment?: EnrollmentRecord; clock?: ClockRecord }> {
    if (this.db.dialect !== 'postgres') {
      const nonceState = await this.consumeNonce(nonce, now);
      if (!ak) return { nonceState };
      const [enrollment, clock] = await Promise.all([this.findEnrollment(ak), this.getClock(ak)]);
      return { nonceState, ...(enrollment ? { enrollment } : {}), ...(clock ? { clock } : {}) };
    }
    // One statement: the UPDATE consumes the nonce; the sub-selects read the snapshot before it
    // (so "seen" tells a used nonce from one never issued).
    const rows = await this.db.all(
      `WITH c AS (UPDATE nonces SET used_at = ?, used_by = ? WHERE nonce = ? AND used_at IS NULL RETURNING expires_at)
       SELECT (SELECT expires_at FROM c) AS consumed, (SELECT 1 FROM nonces WHERE nonce = ?) AS seen,
              e.record AS enrollment, k.reset_count, k.restart_count, k.clock, k.at
       FROM (SELECT 1) AS one
       LEFT JOIN enrollments e ON e.ak_spki_sha256 = ?
       LEFT JOIN clocks k ON k.ak_spki_sha256 = ?`,
      [now, this.instance, nonce.toLowerCase(), nonce.toLowerCase(), ak ?? '', ak ?? ''],
    );
    const r = rows[0]!;
    const nonceState: NonceState = r.consumed != null ? (now > Number(r.consumed) ? 'expired' : 'fresh') : r.seen != null ? 'used' : 'unknown';
    return {
      nonceState,
      ...(ak && r.enrollment != null ? { enrollment: JSON.parse(String(r.enrollment)) as EnrollmentRecord } : {}),
      ...(ak && r.clock != null ? { clock: { clock: BigInt(String(r.clock)).toString(), resetCount: Number(r.reset_count), restartCount: Number(r.restart_count), at: String(r.at) } } : {}),
    };
  }

  async finishVerification(clock: { ak: string; rec: ClockRecord } | undefined, v: VerdictRecord): Promise<void> {
    if (this.db.dialect !== 'postgres' || !clock) {
      if (clock) await this.putClock(clock.ak, clock.rec);
      return this.recordVerdict(v);
    }
    const c = clockParam(clock.rec);
    await this.db.run(
      `WITH k AS (INSERT INTO clocks (ak_spki_sha256, reset_count, restart_count, clock, at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (ak_spki_sha256) DO UPDATE SET reset_count = excluded.reset_count, restart_count = excluded.restart_count, clock = excluded.clock, at = excluded.at
         WHERE (excluded.reset_count, excluded.restart_count, excluded.clock) >= (clocks.reset_count, clocks.restart_count, clocks.clock) RETURNING 1)
       INSERT INTO attestations (at, instance, host_id, ak_spki_sha256, nonce, status, first_failure, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      [clock.ak, clock.rec.resetCount, clock.rec.restartCount, c, clock.rec.at, v.at, v.instance, v.hostId ?? null, v.akSpkiSha256 ?? null, v.nonce ?? null, v.status, v.firstFailure ?? null, v.result ?? null],
    );
  }

  async pruneHistory(before: number): Promise<number> {
    return this.db.run('DELETE FROM attestations WHERE at < ?', [before]);
  }

  async countVerdicts(since: number): Promise<number> {
    return Number((await this.db.all('SELECT COUNT(*) AS n FROM attestations WHERE at >= ?', [since]))[0]!.n);
  }

  async history(filter: { hostId?: string; limit?: number } = {}): Promise<VerdictRecord[]> {
    const limit = Math.max(1, Math.min(filter.limit ?? 100, 10_000));
    const rows = filter.hostId
      ? await this.db.all('SELECT * FROM attestations WHERE host_id = ? ORDER BY id DESC LIMIT ?', [filter.hostId, limit])
      : await this.db.all('SELECT * FROM attestations ORDER BY id DESC LIMIT ?', [limit]);
    return rows.map((r) => {
      const v: VerdictRecord = { at: Number(r.at), instance: String(r.instance), status: String(r.status) as EarStatus };
      if (r.host_id != null) v.hostId = String(r.host_id);
      if (r.ak_spki_sha256 != null) v.akSpkiSha256 = String(r.ak_spki_sha256);
      if (r.nonce != null) v.nonce = String(r.nonce);
      if (r.first_failure != null) v.firstFailure = String(r.first_failure);
      if (r.result != null) v.result = String(r.result);
      return v;
    });
  }

  async addHost(h: { hostId: string; agentUrl: string; akSpkiSha256?: string }, now = Date.now()): Promise<void> {
    await this.db.run(
      `INSERT INTO hosts (host_id, agent_url, ak_spki_sha256, state, failures, next_due_at, added_at) VALUES (?, ?, ?, 'pending', 0, ?, ?)
       ON CONFLICT (host_id) DO UPDATE SET agent_url = excluded.agent_url, ak_spki_sha256 = excluded.ak_spki_sha256`,
      [h.hostId, h.agentUrl, h.akSpkiSha256 ?? null, now, now],
    );
  }

  async removeHost(hostId: string): Promise<boolean> {
    return (await this.db.run('DELETE FROM hosts WHERE host_id = ?', [hostId])) > 0;
  }

  async getHost(hostId: string): Promise<HostRecord | undefined> {
    const rows = await this.db.all('SELECT * FROM hosts WHERE host_id = ?', [hostId]);
    return rows[0] ? hostOf(rows[0]) : undefined;
  }

  async listHosts(): Promise<HostRecord[]> {
    return (await this.db.all('SELECT * FROM hosts ORDER BY host_id')).map(hostOf);
  }

  async claimDueHosts(now: number, leaseMs: number, limit: number): Promise<HostRecord[]> {
    // The lease condition is repeated outside the subquery: PostgreSQL re-checks it on the row it
    // locks, so two instances never both win the same host.
    // SKIP LOCKED (PostgreSQL): an instance claiming at the same moment takes the due hosts the
    // other has not locked, instead of waiting for them and then finding them leased (which left it
    // with none). SQLite serializes writers, so it needs no such clause (and has none).
    const skipLocked = this.db.dialect === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : '';
    const rows = await this.db.all(
      `UPDATE hosts SET lease_owner = ?, lease_until = ?
       WHERE host_id IN (SELECT host_id FROM hosts WHERE next_due_at <= ? AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_due_at LIMIT ?${skipLocked})
         AND next_due_at <= ? AND (lease_until IS NULL OR lease_until < ?)
       RETURNING *`,
      [this.instance, now + leaseMs, now, now, limit, now, now],
    );
    return rows.map(hostOf);
  }

  async updateHost(hostId: string, u: { state: HostState; lastStatus: string; lastReason?: string; at: number; nextDueAt: number; akSpkiSha256?: string; failures: number; revokedAt?: number | null; affirmedAt?: number }): Promise<void> {
    await this.db.run(
      `UPDATE hosts SET state = ?, last_status = ?, last_reason = ?, last_attested_at = ?, next_due_at = ?, failures = ?,
         ak_spki_sha256 = COALESCE(?, ak_spki_sha256),
         revoked_at = CASE WHEN ? = 1 THEN ? ELSE revoked_at END,
         affirmed_at = COALESCE(?, affirmed_at),
         lease_owner = NULL, lease_until = NULL
       WHERE host_id = ?`,
      [u.state, u.lastStatus, u.lastReason ?? null, u.at, u.nextDueAt, u.failures, u.akSpkiSha256 ?? null, u.revokedAt !== undefined ? 1 : 0, u.revokedAt ?? null, u.affirmedAt ?? null, hostId],
    );
  }

  async recordRevocation(hostId: string, event: Record<string, unknown>, at = Date.now()): Promise<void> {
    await this.db.run('INSERT INTO revocations (at, host_id, instance, event) VALUES (?, ?, ?, ?)', [at, hostId, this.instance, JSON.stringify(event)]);
  }

  async revocations(hostId?: string): Promise<RevocationRecord[]> {
    const rows = hostId ? await this.db.all('SELECT * FROM revocations WHERE host_id = ? ORDER BY id', [hostId]) : await this.db.all('SELECT * FROM revocations ORDER BY id');
    return rows.map((r) => ({ id: Number(r.id), at: Number(r.at), hostId: String(r.host_id), instance: String(r.instance), event: JSON.parse(String(r.event)) as Record<string, unknown> }));
  }

  async publishKey(kid: string, jwk: Record<string, unknown>): Promise<void> {
    await this.db.run('INSERT INTO verifier_keys (kid, jwk, instance, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (kid) DO NOTHING', [kid, JSON.stringify(jwk), this.instance, Date.now()]);
  }

  async listKeys(): Promise<{ kid: string; jwk: Record<string, unknown> }[]> {
    return (await this.db.all('SELECT kid, jwk FROM verifier_keys ORDER BY created_at')).map((r) => ({ kid: String(r.kid), jwk: JSON.parse(String(r.jwk)) as Record<string, unknown> }));
  }

  async auditRelease(a: Omit<ReleaseAudit, 'at' | 'instance'> & { at?: number }): Promise<void> {
    await this.db.run('INSERT INTO secret_releases (at, instance, resource, outcome, reason, ak_spki_sha256, mrenclave, nonce) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [
      a.at ?? Date.now(),
      this.instance,
      a.resource,
      a.outcome,
      a.reason,
      a.akSpkiSha256 ?? null,
      a.mrenclave ?? null,
      a.nonce ?? null,
    ]);
  }

  async releases(resource?: string): Promise<ReleaseAudit[]> {
    const rows = resource ? await this.db.all('SELECT * FROM secret_releases WHERE resource = ? ORDER BY id', [resource]) : await this.db.all('SELECT * FROM secret_releases ORDER BY id');
    return rows.map((r) => {
      const a: ReleaseAudit = { at: Number(r.at), instance: String(r.instance), resource: String(r.resource), outcome: String(r.outcome) as ReleaseAudit['outcome'], reason: String(r.reason) };
      if (r.ak_spki_sha256 != null) a.akSpkiSha256 = String(r.ak_spki_sha256);
      if (r.mrenclave != null) a.mrenclave = String(r.mrenclave);
      if (r.nonce != null) a.nonce = String(r.nonce);
      return a;
    });
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

/** The embedded default: `<stateDir>/verifier.db`. */
export function defaultDbUrl(stateDir: string): string {
  return `sqlite:${join(stateDir, 'verifier.db')}`;
}

/** Opens (and migrates) the store at `url` (see openSqlDb for the forms accepted). */
export async function openVerifierStore(url: string, opts: OpenOptions = {}): Promise<SqlVerifierStore> {
  const db = await openSqlDb(url, opts);
  try {
    await migrate(db);
  } catch (e) {
    await db.close().catch(() => undefined);
    throw e;
  }
  if (db.dialect === 'sqlite' && db.where !== ':memory:' && existsSync(db.where)) chmodSync(db.where, 0o600);
  return new SqlVerifierStore(db);
}
