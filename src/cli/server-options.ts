/** Options the serving commands share (`verifier serve`, `agent serve`): listen address, database, TLS. */
import { UsageError } from './output.js';
import { defaultDbUrl } from '../verifier/store.js';
import { loadTls } from '../verifier/tls.js';

export function parseListen(listen: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(listen);
  if (!m || Number(m[2]) > 65535) throw new UsageError(`${flag}: expected host:port, got "${listen}"`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

export function dbUrlOption(db: string | undefined, stateDir: string): string {
  if (db === undefined) return defaultDbUrl(`${stateDir}/verifier`);
  if (!/^(postgres(ql)?:\/\/|sqlite:)./i.test(db)) throw new UsageError(`--db: expected postgresql://… or sqlite:<file>, got "${db.replace(/:[^:@/]*@/, ':***@').slice(0, 80)}"`);
  return db;
}

export function tlsOption(o: { tlsCert?: string; tlsKey?: string; tlsCa?: string }, prefix = '--tls'): ReturnType<typeof loadTls> | undefined {
  if (!o.tlsCert && !o.tlsKey && !o.tlsCa) return undefined;
  if (!o.tlsCert || !o.tlsKey) throw new UsageError(`${prefix}-cert and ${prefix}-key go together${o.tlsCa ? ` (${prefix}-ca needs them)` : ''}`);
  return loadTls({ cert: o.tlsCert, key: o.tlsKey, ...(o.tlsCa ? { ca: o.tlsCa } : {}) });
}
