/**
 * The verifier's schema, as numbered migrations applied in order under one lock (an advisory
 * lock on PostgreSQL, BEGIN IMMEDIATE on SQLite), recorded in schema_migrations. A migration is
 * never edited once released: a change is a new entry. Times are milliseconds since the epoch
 * (BIGINT); JSON documents are TEXT; a TPM clock (UINT64) is 20 zero-padded decimal digits, so
 * text order is numeric order on both databases.
 */
import type { Dialect, SqlDb } from './sql.js';

interface Migration {
  version: number;
  name: string;
  sql: (d: Dialect) => string[];
}

const serial = (d: Dialect): string => (d === 'postgres' ? 'BIGSERIAL PRIMARY KEY' : 'INTEGER PRIMARY KEY AUTOINCREMENT');

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'enrollments, challenges, nonces, clocks, history, hosts, keys, releases',
    sql: (d) => [
      `CREATE TABLE enrollments (
         ak_spki_sha256 TEXT PRIMARY KEY,
         ak_name TEXT NOT NULL,
         record TEXT NOT NULL,
         enrolled_at BIGINT NOT NULL)`,
      `CREATE TABLE pending_enrollments (
         id TEXT PRIMARY KEY,
         record TEXT NOT NULL,
         expires_at BIGINT NOT NULL)`,
      `CREATE TABLE nonces (
         nonce TEXT PRIMARY KEY,
         issued_by TEXT NOT NULL,
         issued_at BIGINT NOT NULL,
         expires_at BIGINT NOT NULL,
         used_at BIGINT,
         used_by TEXT)`,
      `CREATE INDEX nonces_expiry ON nonces (expires_at)`,
      `CREATE TABLE clocks (
         ak_spki_sha256 TEXT PRIMARY KEY,
         reset_count BIGINT NOT NULL,
         restart_count BIGINT NOT NULL,
         clock TEXT NOT NULL,
         at TEXT NOT NULL)`,
      `CREATE TABLE attestations (
         id ${serial(d)},
         at BIGINT NOT NULL,
         instance TEXT NOT NULL,
         host_id TEXT,
         ak_spki_sha256 TEXT,
         nonce TEXT,
         status TEXT NOT NULL,
         first_failure TEXT,
         result TEXT)`,
      `CREATE INDEX attestations_host ON attestations (host_id, at)`,
      `CREATE INDEX attestations_at ON attestations (at)`,
      `CREATE TABLE hosts (
         host_id TEXT PRIMARY KEY,
         agent_url TEXT NOT NULL,
         ak_spki_sha256 TEXT,
         state TEXT NOT NULL,
         last_status TEXT,
         last_reason TEXT,
         last_attested_at BIGINT,
         affirmed_at BIGINT,
         revoked_at BIGINT,
         failures INTEGER NOT NULL DEFAULT 0,
         next_due_at BIGINT NOT NULL,
         lease_owner TEXT,
         lease_until BIGINT,
         added_at BIGINT NOT NULL)`,
      `CREATE INDEX hosts_due ON hosts (next_due_at)`,
      `CREATE TABLE revocations (
         id ${serial(d)},
         at BIGINT NOT NULL,
         host_id TEXT NOT NULL,
         instance TEXT NOT NULL,
         event TEXT NOT NULL)`,
      `CREATE TABLE verifier_keys (
         kid TEXT PRIMARY KEY,
         jwk TEXT NOT NULL,
         instance TEXT NOT NULL,
         created_at BIGINT NOT NULL)`,
      `CREATE TABLE secret_releases (
         id ${serial(d)},
         at BIGINT NOT NULL,
         instance TEXT NOT NULL,
         resource TEXT NOT NULL,
         outcome TEXT NOT NULL,
         reason TEXT NOT NULL,
         ak_spki_sha256 TEXT,
         mrenclave TEXT,
         nonce TEXT)`,
    ],
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** Applies every migration not yet recorded; returns the schema version reached. */
export async function migrate(db: SqlDb): Promise<number> {
  return db.exclusive(async (tx) => {
    await tx.run('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)');
    const done = new Set((await tx.all('SELECT version FROM schema_migrations')).map((r) => Number(r.version)));
    const newest = Math.max(0, ...done);
    if (newest > SCHEMA_VERSION) throw new Error(`database ${db.where}: schema version ${newest} is newer than this verifier's ${SCHEMA_VERSION} (downgrade refused)`);
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      for (const stmt of m.sql(db.dialect)) await tx.run(stmt);
      await tx.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [m.version, m.name, Date.now()]);
    }
    return SCHEMA_VERSION;
  });
}
