import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withLock, lockHolder } from './lock.js';
import { EXIT, HyperEnclaveError } from '../errors.js';

/** A separate process holding `path` with util-linux flock(1) until it is killed. */
function holder(path: string): Promise<{ pid: number; kill: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    // Its own process group, so SIGKILL reaches flock and the shell it runs (which inherits the lock).
    const c = spawn('flock', ['-x', path, '-c', 'echo locked; exec sleep 60'], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
    c.on('error', reject);
    c.stdout.once('data', () =>
      resolve({
        pid: c.pid!,
        kill: () =>
          new Promise((r) => {
            c.once('exit', () => r());
            process.kill(-c.pid!, 'SIGKILL');
          }),
      }),
    );
  });
}

describe('state locks (flock, released by the kernel with their holder)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'he-lock-'));

  it('a lock held by another process is refused after the wait with exit 8; taken at once when the holder is SIGKILLed', async () => {
    const path = join(dir, 'a.lock');
    const h = await holder(path);
    const err = await withLock(path, { what: 'test', waitMs: 200 }, async () => 'no').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HyperEnclaveError);
    expect((err as HyperEnclaveError).exitCode).toBe(EXIT.BUSY);
    expect((err as Error).message).toMatch(/another hyperenclave process .*holds .*a\.lock/);
    await h.kill();
    expect(await withLock(path, { what: 'test', waitMs: 10_000 }, async () => 'got it')).toBe('got it');
  });

  it('the holder records its PID for whoever waits, and clears it on release', async () => {
    const path = join(dir, 'b.lock');
    await withLock(path, { what: 'test', waitMs: 0 }, async () => {
      expect(lockHolder(path)).toBe(process.pid);
    });
    expect(lockHolder(path)).toBeUndefined();
  });

  it('is reentrant along one call chain and serialises concurrent callers of this process', async () => {
    const path = join(dir, 'c.lock');
    const order: string[] = [];
    const job = (name: string) =>
      withLock(path, { what: 'test', waitMs: 5000 }, async () => {
        order.push(`${name}+`);
        await withLock(path, { what: 'nested', waitMs: 0 }, async () => order.push(`${name}.nested`));
        await new Promise((r) => setTimeout(r, 20));
        order.push(`${name}-`);
      });
    await Promise.all([job('a'), job('b')]);
    expect(order).toEqual(['a+', 'a.nested', 'a-', 'b+', 'b.nested', 'b-']);
    rmSync(dir, { recursive: true, force: true });
  });
});
