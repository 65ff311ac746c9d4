/**
 * A private PostgreSQL cluster for tests: Debian's `postgresql` package (installed by the
 * Makefile), initdb into a temporary directory, listening only on a Unix socket in that
 * directory (no TCP), stopped and deleted afterwards. As root, the server runs as the
 * `postgres` user (PostgreSQL refuses to run as root).
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PgCluster {
  url: string;
  dir: string;
  stop(): void;
}

function binDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], 'bin') : undefined;
}

/** Why a cluster cannot be started here, or undefined. */
export function postgresMissing(): string | undefined {
  if (!binDir()) return 'PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql; make test installs it)';
  if (process.getuid?.() === 0 && spawnSync('id', ['-u', 'postgres']).status !== 0) return 'running as root without a postgres user to run the server as';
  return undefined;
}

export function startPostgres(): PgCluster {
  const bin = binDir()!;
  const dir = mkdtempSync(join(tmpdir(), 'he-pg-'));
  const data = join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  const run = (cmd: string, args: string[]): void => {
    const full = asRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]] : [join(bin, cmd), args];
    const r = spawnSync(full[0] as string, full[1] as string[], { encoding: 'utf8', timeout: 120_000, cwd: dir });
    if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
  };
  if (asRoot) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    chownSync(dir, uid, gid);
  }
  const port = 20000 + Math.floor(Math.random() * 20000);
  run('initdb', ['-D', data, '-A', 'trust', '-U', 'he', '--no-sync', '-E', 'UTF8']);
  run('pg_ctl', ['-D', data, '-w', '-t', '60', '-l', join(dir, 'log'), '-o', `-k ${dir} -p ${port} -c listen_addresses='' -c fsync=off -c max_connections=200`, 'start']);
  let stopped = false;
  return {
    url: `postgresql://he@${encodeURIComponent(dir)}:${port}/postgres`,
    dir,
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** A fresh database in the cluster (each test file its own). */
export function createDatabase(c: PgCluster, name: string): string {
  const bin = binDir()!;
  const u = new URL(c.url);
  const args = ['-h', c.dir, '-p', u.port, '-U', 'he', name];
  const r = spawnSync(join(bin, 'createdb'), args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`createdb ${name}: ${r.stderr.trim()}`);
  return c.url.replace(/\/postgres$/, `/${name}`);
}
