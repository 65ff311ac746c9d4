import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { HyperEnclaveError, EXIT } from '../../errors.js';
import { writeFileAtomic } from '../state.js';

/** The emulated platform's long-lived processes (TPM, hypervisor service): one per state directory. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
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
 * Returns the running daemon recorded by `current`, or starts one with `start`, with an exclusive
 * lock file so two callers never start two; a lock left by a dead process is taken over.
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
  const deadline = Date.now() + (args.waitMs ?? 15_000);
  for (;;) {
    try {
      closeSync(openSync(args.lock, 'wx'));
      writeFileAtomic(args.lock + '.pid', String(process.pid));
      break;
    } catch {
      const holder = Number(existsSync(args.lock + '.pid') ? readFileSync(args.lock + '.pid', 'utf8') : 0);
      if (holder && !alive(holder)) rmSync(args.lock, { force: true });
      if (Date.now() > deadline) throw new HyperEnclaveError(`${args.what}: lock ${args.lock} held by pid ${holder}`, EXIT.INTERNAL);
      await new Promise((r) => setTimeout(r, 50));
      const started = await running();
      if (started) return started;
    }
  }
  try {
    return (await running()) ?? (await args.start());
  } finally {
    rmSync(args.lock, { force: true });
    rmSync(args.lock + '.pid', { force: true });
  }
}
