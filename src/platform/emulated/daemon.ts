import { readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { withLock } from '../lock.js';

/** The emulated platform's long-lived processes (TPM, hypervisor service): one per state directory. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A killed daemon whose parent has not reaped it yet (a zombie) is not alive.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/** Whether a Unix socket accepts; resolves after the probe is closed (servers that take one client at a time). */
export function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.once('close', () => resolve(true));
      s.destroy();
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Returns the running daemon recorded by `current`, or starts one with `start`, under a flock on
 * `lock` (src/platform/lock.ts) so two callers never start two. The kernel drops the lock when
 * its holder dies, so a caller killed at any instant never leaves a lock behind: the next caller
 * takes it at once and, finding no running daemon, starts one.
 */
export async function ensureDaemon<R extends { pid: number }>(args: {
  what: string;
  lock: string;
  current: () => R | undefined;
  reachable: (r: R) => Promise<boolean>;
  start: () => Promise<R>;
  waitMs?: number;
}): Promise<R> {
  const running = async (): Promise<R | undefined> => {
    const r = args.current();
    return r && alive(r.pid) && (await args.reachable(r)) ? r : undefined;
  };
  const first = await running();
  if (first) return first;
  // A lock file of the former kind (open 'wx' + a .pid file) is just a file now: flock ignores it.
  rmSync(args.lock + '.pid', { force: true });
  return withLock(args.lock, { what: args.what, waitMs: args.waitMs ?? 60_000 }, async () => (await running()) ?? (await args.start()));
}
