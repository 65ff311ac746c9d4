import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileSchema } from '../../schemas.js';
import { EmulatedHypervisorClient } from '../../hypervisor/emulated-client.js';
import { statusToJson } from '../../hypervisor/status.js';
import { alive as daemonAlive } from './daemon.js';
import { placeReservedRegion } from './reservation.js';
import { ensureHypervisorService, serviceEntry, serviceRecord, stopHypervisorService } from './service-process.js';
import { readMachineMemoryMap, SYNTHETIC_MEMORY_MAP } from '../memory-map.js';
import { skipUnless } from '../../../test/helpers/require.js';

const entryMissing = skipUnless('emulated hypervisor service process tests', [['cli', existsSync(serviceEntry()) ? undefined : `${serviceEntry()} missing (run npm run build first)`]]);
const validStatus = compileSchema('hypervisor-status.schema.json');

/** Exited processes not yet reaped by their parent (zombies) count as dead, as in daemon.ts. */
const alive = daemonAlive;

describe('memory map and reservation placement', () => {
  it('places the 192 MiB reservation at the top of the highest RAM range, 2 MiB aligned', () => {
    const p = placeReservedRegion(SYNTHETIC_MEMORY_MAP, 192n << 20n);
    expect(p.base).toBe(0x200000000n - (192n << 20n));
    expect(p.memmap).toBe('memmap=192M$0x1f4000000');
    const machine = readMachineMemoryMap();
    if (machine) expect(machine.some((r) => r.kind === 'ram')).toBe(true);
    expect(() => placeReservedRegion([{ start: 0n, size: 1n << 20n, kind: 'ram' }], 192n << 20n)).toThrow(/no RAM range/);
  });
});

describe.skipIf(!!entryMissing)('emulated hypervisor service process', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'he-hv-'));
  afterAll(async () => {
    await stopHypervisorService(stateDir);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('starts once under concurrent callers, survives clients, reports status, and stops', async () => {
    const recs = await Promise.all([1, 2, 3].map(() => ensureHypervisorService(stateDir)));
    const pids = new Set(recs.map((r) => r.pid));
    expect(pids.size).toBe(1);
    const pid = recs[0]!.pid;
    expect(pid).not.toBe(process.pid);
    expect(alive(pid)).toBe(true);

    const c1 = await EmulatedHypervisorClient.connect(stateDir);
    const s = await c1.status();
    c1.close();
    expect(s.platform).toBe('emulated');
    expect(s.loaded).toBe(false);
    expect(s.process?.pid).toBe(pid);
    const doc = statusToJson(s);
    expect(validStatus(doc)).toBeUndefined();

    // A second "CLI invocation" finds the same process.
    const c2 = await EmulatedHypervisorClient.connect(stateDir);
    expect((await c2.status()).process?.pid).toBe(pid);
    await expect(c2.enclaveList()).resolves.toEqual([]);
    await expect(c2.imageDigest()).rejects.toThrow(/no hypervisor image loaded/);
    c2.close();

    expect(await stopHypervisorService(stateDir)).toBe(true);
    expect(alive(pid)).toBe(false);
    expect(serviceRecord(stateDir)).toBeUndefined();
    await expect(EmulatedHypervisorClient.connect(stateDir, { start: false })).rejects.toThrow(/not running/);
    expect(await stopHypervisorService(stateDir)).toBe(false);
    expect(readFileSync(join(stateDir, 'emulated', 'hypervisor', 'service.log'), 'utf8')).toMatch(/ready/);
  }, 30_000);

  it('replaces a stale record (dead pid) and a stale start lock', async () => {
    const dir = join(stateDir, 'emulated', 'hypervisor');
    writeFileSync(join(dir, 'instance.json'), JSON.stringify({ pid: 999_999_999, socket: join(dir, 'gone.sock'), startedAt: '', log: '' }));
    writeFileSync(join(dir, 'start.lock'), '');
    writeFileSync(join(dir, 'start.lock.pid'), '999999999');
    const rec = await ensureHypervisorService(stateDir);
    expect(rec.pid).not.toBe(999_999_999);
    expect(alive(rec.pid)).toBe(true);
    // start.lock is now a flock file: it stays, held by nobody; the old-style .pid file is gone.
    expect(existsSync(join(dir, 'start.lock.pid'))).toBe(false);
    expect(await stopHypervisorService(stateDir)).toBe(true);
  }, 30_000);

  it('a service killed while holding an image is reported after its restart, naming what was lost and the command that fixes it (exit 3)', async () => {
    const image = join(stateDir, 'raw.img');
    const bytes = Buffer.alloc(64 * 1024, 0x90);
    writeFileSync(image, bytes);
    const c = await EmulatedHypervisorClient.connect(stateDir);
    const loaded = await c.load(image, createHash('sha256').update(bytes).digest('hex'));
    c.close();
    const first = serviceRecord(stateDir)!;
    process.kill(first.pid, 'SIGKILL');
    for (let i = 0; i < 200 && alive(first.pid); i++) await new Promise((r) => setTimeout(r, 10));
    const c2 = await EmulatedHypervisorClient.connect(stateDir);
    const s = await c2.status();
    expect(s.process?.pid).not.toBe(first.pid);
    expect(s.lost).toMatchObject({ previousPid: first.pid, image: (loaded as { id: string }).id, enabled: false, enclaves: [] });
    expect(s.lost!.message).toMatch(/^the hypervisor service restarted at \S+ \(pid \d+, started .*\); the loaded image [0-9a-f]{16}… was lost: run `hyperenclave boot`/);
    expect(validStatus(statusToJson(s))).toBeUndefined();
    const e = (await c2.imageDigest().then(() => new Error("resolved"), (x: unknown) => x)) as Error & { exitCode?: number };
    expect(e.message).toMatch(/restarted at .*hyperenclave boot/);
    expect(e.exitCode).toBe(3);
    c2.close();
    expect(await stopHypervisorService(stateDir)).toBe(true);
  }, 30_000);
});
