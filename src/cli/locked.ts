import type { Command } from 'commander';

/**
 * A state-changing command's action run under the state directory's lock (src/platform/lock.ts):
 * a second copy waits for the first (HYPERENCLAVE_LOCK_WAIT) or reports its PID (exit 8).
 * The context and the lock are loaded when the action runs (not for --help or other commands).
 */
export function locked<A extends unknown[]>(what: string, action: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const cmd = args[args.length - 1] as Command;
    const { context } = await import('./context.js');
    const { withStateLock } = await import('../platform/lock.js');
    const { platform } = context(cmd);
    await withStateLock(platform.stateDir, what, async () => {
      await action(...args);
    });
  };
}
