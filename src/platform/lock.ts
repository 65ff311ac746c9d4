import { AsyncLocalStorage } from 'node:async_hooks';
import { spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { fileSystemError } from '../fs/fs-errors.js';

/**
 * Advisory locks that cannot go stale: flock(2) on a lock file, which the kernel releases when
 * the last descriptor of the holder closes (exit, crash, SIGKILL).
 *
 * Node has no flock(), so the lock is taken by util-linux `flock(1)` (Essential on Debian; the
 * system tier copies it into its initramfs, whose busybox has no flock applet) on a descriptor
 * this process opened and passes as fd 3: flock locks belong to the open file description,
 * which the child shares, so when `flock -xn 3` exits with 0 the lock stays held by this
 * process's descriptor until it closes it or dies.
 * The alternative, a `flock` export in the N-API addon, would tie every state-changing command
 * (and the linux platform, where the addon is not otherwise needed) to the addon being built.
 * Descriptors Node opens are close-on-exec, so daemons started while holding a lock do not
 * inherit (and keep) it.
 *
 * The holder writes its PID into the file so a waiting copy can name it; the PID is information
 * only: a stale PID in a file nobody has locked means nothing.
 */

export interface LockHandle {
  readonly path: string;
  release(): void;
}

/** How long a state-changing command waits for another one (HYPERENCLAVE_LOCK_WAIT seconds, default 60). */
export function defaultLockWaitMs(): number {
  const v = process.env.HYPERENCLAVE_LOCK_WAIT;
  if (v === undefined || v === '') return 60_000;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new HyperEnclaveError(`HYPERENCLAVE_LOCK_WAIT: expected seconds ≥ 0, got "${v}"`, EXIT.USAGE);
  return Math.round(n * 1000);
}

function tryFlock(fd: number): boolean {
  const r = spawnSync('flock', ['-xn', '3'], { stdio: ['ignore', 'ignore', 'pipe', fd] });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    throw new HyperEnclaveError(
      code === 'ENOENT' ? 'lock: flock(1) not found (install util-linux)' : `lock: cannot run flock(1): ${r.error.message}`,
      EXIT.UNSUPPORTED,
    );
  }
  if (r.status === 0) return true;
  if (r.status === 1) return false; // held by someone else (-n)
  throw new HyperEnclaveError(`lock: flock(1) failed (exit ${r.status}): ${String(r.stderr ?? '').trim()}`, EXIT.INTERNAL);
}

/** The PID recorded in a lock file, or undefined. */
export function lockHolder(path: string): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Takes the exclusive flock on `path`, waiting up to `waitMs`; throws exit 8 (busy) naming the
 * holder's PID when it is still held after that. Not reentrant: use withLock.
 */
export async function acquireLock(path: string, opts: { what: string; waitMs?: number; onWait?: (holder: number | undefined) => void }): Promise<LockHandle> {
  let fd: number;
  try {
    mkdirSync(dirname(path), { recursive: true });
    fd = openSync(path, 'a+', 0o600);
  } catch (e) {
    throw fileSystemError(e, `${opts.what}: lock file`) ?? e;
  }
  const waitMs = opts.waitMs ?? defaultLockWaitMs();
  const deadline = Date.now() + waitMs;
  let told = false;
  try {
    while (!tryFlock(fd)) {
      const holder = lockHolder(path);
      if (Date.now() >= deadline)
        throw new HyperEnclaveError(
          `${opts.what}: another hyperenclave process${holder ? ` (pid ${holder})` : ''} holds ${path}${waitMs ? `; waited ${Math.round(waitMs / 1000)} s` : ''} (set HYPERENCLAVE_LOCK_WAIT to wait longer)`,
          EXIT.BUSY,
        );
      if (!told) {
        told = true;
        opts.onWait?.(holder);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`);
  } catch {
    // The PID is information only; a full disk must not stop the lock from working.
  }
  let released = false;
  return {
    path,
    release() {
      if (released) return;
      released = true;
      try {
        ftruncateSync(fd, 0);
      } catch {
        /* informational */
      }
      closeSync(fd); // the kernel drops the flock with the last descriptor
    },
  };
}

/** Locks held by the current async call chain (so a nested withLock on the same path does not wait for itself). */
const heldHere = new AsyncLocalStorage<ReadonlySet<string>>();
/** In this process, callers of one path queue here before taking the flock (flock is per open file, not per process). */
const queues = new Map<string, Promise<void>>();

/**
 * Runs `fn` holding the lock `path`: reentrant along one async call chain, queued between
 * concurrent callers in this process, and a flock between processes.
 */
export async function withLock<T>(path: string, opts: { what: string; waitMs?: number; onWait?: (holder: number | undefined) => void }, fn: () => Promise<T>): Promise<T> {
  const mine = heldHere.getStore();
  if (mine?.has(path)) return fn();
  const prev = queues.get(path) ?? Promise.resolve();
  let done!: () => void;
  const turn = new Promise<void>((r) => (done = r));
  const tail = prev.then(() => turn);
  queues.set(path, tail);
  await prev;
  try {
    const l = await acquireLock(path, opts);
    try {
      return await heldHere.run(new Set([...(mine ?? []), path]), fn);
    } finally {
      l.release();
    }
  } finally {
    done();
    if (queues.get(path) === tail) queues.delete(path);
  }
}

/** The state directory's lock: the boot flow and every state-changing command hold it. */
export const stateLockPath = (stateDir: string): string => join(stateDir, 'hyperenclave.lock');

/**
 * Runs `fn` holding the state directory's lock (reentrant in this process). A second copy waits
 * (HYPERENCLAVE_LOCK_WAIT seconds, default 60), saying once on stderr whom it waits for, then
 * gives up with exit 8 naming the holder's PID.
 */
export function withStateLock<T>(stateDir: string, what: string, fn: () => Promise<T>): Promise<T> {
  return withLock(
    stateLockPath(stateDir),
    {
      what,
      onWait: (holder) => {
        if (!process.env.VITEST) process.stderr.write(`hyperenclave: ${what}: waiting for another hyperenclave process${holder ? ` (pid ${holder})` : ''} to finish\n`);
      },
    },
    fn,
  );
}
