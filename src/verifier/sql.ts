/**
 * One small SQL surface over the two databases the verifier runs on: SQLite (better-sqlite3,
 * embedded, the zero-setup default, a file in the state directory) and PostgreSQL (`pg`, for
 * several verifier instances sharing state). Queries are written once with `?` placeholders;
 * the PostgreSQL side numbers them ($1, $2, ...). Every statement the store issues is atomic on
 * its own (UPDATE ... RETURNING, INSERT ... ON CONFLICT, DELETE ... RETURNING), so no
 * multi-statement transaction is needed outside migrations.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { createRequire } from 'node:module';
import { AttestError } from '../attest/errors.js';

export type Dialect = 'sqlite' | 'postgres';
export type Row = Record<string, unknown>;

export interface SqlDb {
  readonly dialect: Dialect;
  /** Where the data lives, for messages (never carries a password). */
  readonly where: string;
  all(sql: string, params?: unknown[]): Promise<Row[]>;
  run(sql: string, params?: unknown[]): Promise<number>;
  /** Runs `fn` in one transaction holding the migration lock (PostgreSQL: an advisory lock). */
  exclusive<T>(fn: (db: SqlDb) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

const require = createRequire(import.meta.url);

type BetterSqlite = import('better-sqlite3').Database;

const sqliteLocks = new Map<string, Promise<void>>();

class SqliteDb implements SqlDb {
  readonly dialect = 'sqlite' as const;
  private readonly stmts = new Map<string, import('better-sqlite3').Statement>();
  constructor(
    private readonly db: BetterSqlite,
    readonly where: string,
  ) {}
  private stmt(sql: string): import('better-sqlite3').Statement {
    let s = this.stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }
  async all(sql: string, params: unknown[] = []): Promise<Row[]> {
    const s = this.stmt(sql);
    if (s.reader) return s.all(...params) as Row[];
    s.run(...params);
    return [];
  }
  async run(sql: string, params: unknown[] = []): Promise<number> {
    return this.stmt(sql).run(...params).changes;
  }
  async exclusive<T>(fn: (db: SqlDb) => Promise<T>): Promise<T> {
    // Two handles on one file in one process would deadlock on the lock (busy_timeout blocks the
    // only thread), so this process queues them; other processes wait on SQLite's own lock.
    const prev = sqliteLocks.get(this.where) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    sqliteLocks.set(this.where, prev.then(() => mine));
    await prev;
    try {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const r = await fn(this);
        this.db.exec('COMMIT');
        return r;
      } catch (e) {
        this.db.exec('ROLLBACK');
        throw e;
      }
    } finally {
      release();
    }
  }
  async close(): Promise<void> {
    this.db.close();
  }
}

type PgPool = import('pg').Pool;
type PgClient = import('pg').PoolClient;

/** `?` placeholders to `$n` (the store's SQL has no `?` inside string literals). */
export function numberPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

class PgDb implements SqlDb {
  readonly dialect = 'postgres' as const;
  private readonly texts = new Map<string, string>();
  constructor(
    private readonly pool: PgPool | PgClient,
    readonly where: string,
    private readonly owner = true,
  ) {}
  private text(sql: string): string {
    let t = this.texts.get(sql);
    if (!t) {
      t = numberPlaceholders(sql);
      this.texts.set(sql, t);
    }
    return t;
  }
  async all(sql: string, params: unknown[] = []): Promise<Row[]> {
    return (await this.pool.query(this.text(sql), params)).rows as Row[];
  }
  async run(sql: string, params: unknown[] = []): Promise<number> {
    return (await this.pool.query(this.text(sql), params)).rowCount ?? 0;
  }
  async exclusive<T>(fn: (db: SqlDb) => Promise<T>): Promise<T> {
    const client = await (this.pool as PgPool).connect();
    try {
      await client.query('BEGIN');
      // One migration at a time across every instance sharing this database.
      await client.query('SELECT pg_advisory_xact_lock(7370001)');
      const r = await fn(new PgDb(client, this.where, false));
      await client.query('COMMIT');
      return r;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }
  async close(): Promise<void> {
    if (this.owner) await (this.pool as PgPool).end();
  }
}

/** Redacts the password of a URL for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.href;
  } catch {
    return url.replace(/:[^:@/]*@/, ':***@');
  }
}

export interface OpenOptions {
  /** PostgreSQL pool size (default 16). */
  poolSize?: number;
}

/**
 * Opens a database by URL: `postgres://` / `postgresql://` (anything libpq-style `pg` accepts,
 * e.g. a socket directory as `postgresql://user@%2Frun%2Fpg:5432/db`), `sqlite:<path>` or a bare
 * file path (SQLite, WAL mode), or `sqlite::memory:`.
 */
export async function openSqlDb(url: string, opts: OpenOptions = {}): Promise<SqlDb> {
  if (/^postgres(ql)?:\/\//i.test(url)) {
    const pg = require('pg') as typeof import('pg');
    const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 16, connectionTimeoutMillis: 10_000 });
    pool.on('error', () => undefined); // an idle client's connection dropped: the next query reconnects
    const db = new PgDb(pool, redactUrl(url));
    try {
      await db.all('SELECT 1');
    } catch (e) {
      await pool.end().catch(() => undefined);
      throw new AttestError(`database ${redactUrl(url)}: cannot connect: ${(e as Error).message}`, 3);
    }
    return db;
  }
  const path = url.replace(/^sqlite:/i, '');
  if (!path) throw new AttestError(`database "${url}": no SQLite file path`, 2);
  const Database = require('better-sqlite3') as typeof import('better-sqlite3');
  let db: BetterSqlite;
  try {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    db.pragma('foreign_keys = ON');
  } catch (e) {
    throw new AttestError(`database ${path}: cannot open SQLite file: ${(e as Error).message}`, 6);
  }
  return new SqliteDb(db, path);
}
