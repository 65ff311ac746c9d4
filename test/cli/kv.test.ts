import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, repoRoot, runCli, schemaProblems } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { bootWithRawImage } from '../helpers/boot.js';
import { withKvStore } from '../../src/kv/store.js';

const addon = join(repoRoot, 'hypervisor', 'addon', 'hyperenclave-addon.node');
const payload = join(repoRoot, 'hypervisor', 'enclaves', 'out', 'kvstore.bin');
const missing =
  cliMissing() ??
  swtpmAvailable({ ek: true }) ??
  (existsSync(addon) ? undefined : `${addon} not built (make build)`) ??
  (existsSync(payload) ? undefined : `${payload} not built (make build)`) ??
  (existsSync('/dev/kvm') ? undefined : '/dev/kvm absent: enclaves cannot run');
if (missing) console.warn(`skipping kv store tests: ${missing}`);

/**
 * The sealed key-value store on the emulated platform: the built CLI as a process (boot first:
 * EGETKEY needs the hypervisor's root of trust), then the host as the adversary editing the
 * blob files: a flipped byte or a cut file (torn), another key's blob (swapped), an older blob
 * or a deleted key brought back within one enclave's run (rolled back) are each refused by name.
 */
describe.skipIf(!!missing)('kv put|get|delete|list (emulated platform, built CLI)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-kv-'));
  const store = join(state, 'store');
  const blobs = join(store, 'blobs');
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 120_000 });
  const kv = (...a: string[]) => run('kv', ...a, '--store', store);
  const blobFiles = () => readdirSync(blobs).filter((n) => n.endsWith('.blob'));

  beforeAll(async () => {
    await bootWithRawImage(run, addon, join(state, 'hv.img'));
  }, 300_000);
  afterAll(async () => {
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  it('put, get, list, delete; JSON documents match their schema; a missing key is exit 3', async () => {
    const p = await kv('put', 'greeting', 'hello, enclave', '--json');
    expect(p.code, p.stderr).toBe(0);
    expect(schemaProblems(p.json!)).toBeUndefined();
    expect(p.json!.written).toBe('1');
    expect((await kv('put', 'greeting', 'hello again', '--json')).json!.written).toBe('2');
    writeFileSync(join(state, 'bin'), Buffer.from([0, 1, 2, 255]));
    expect((await kv('put', 'binary', '--file', join(state, 'bin'))).code).toBe(0);
    const g = await kv('get', 'greeting');
    expect([g.code, g.stdout]).toEqual([0, 'hello again']);
    const gj = await kv('get', 'binary', '--json');
    expect(gj.json!.value).toBe('000102ff');
    const l = await kv('list', '--json');
    expect(schemaProblems(l.json!)).toBeUndefined();
    expect((l.json!.keys as string[]).sort()).toEqual(['binary', 'greeting']);
    // The host sees ids, never the keys or values.
    for (const f of blobFiles()) {
      const raw = readFileSync(join(blobs, f));
      expect(f).toMatch(/^[0-9a-f]{64}\.blob$/);
      expect(raw.includes('greeting')).toBe(false);
      expect(raw.includes('hello')).toBe(false);
    }
    // A temporary file a killed writer left behind is swept under the store's lock.
    writeFileSync(join(blobs, `${'0'.repeat(64)}.blob.tmp-99999999`), 'half a blob');
    const d = await kv('delete', 'binary', '--json');
    expect(readdirSync(blobs).filter((n) => n.includes('.tmp-'))).toEqual([]);
    expect(d.json!.existed).toBe(true);
    const gone = await kv('get', 'binary');
    expect(gone.code).toBe(3);
    expect(gone.stderr).toContain('not found');
    expect(gone.stderr.trim().split('\n')).toHaveLength(1);
    const bad = await kv('put', 'k'.repeat(65), 'v');
    expect([bad.code, bad.stderr.trim()]).toEqual([6, 'hyperenclave: ECALL put parameter "key": 65 bytes, more than its bound 64']);
  }, 120_000);

  it('refuses a flipped, a cut and a swapped blob by name', async () => {
    expect((await kv('put', 'alpha', 'A'.repeat(100))).code).toBe(0);
    expect((await kv('put', 'beta', 'B'.repeat(100))).code).toBe(0);
    const before = new Set(blobFiles());
    const l = await kv('list', '--json');
    expect(l.json!.keys).toEqual(expect.arrayContaining(['alpha', 'beta']));
    // Which file is alpha's: the one that changes when alpha is written again.
    const snapshot = new Map([...before].map((f) => [f, readFileSync(join(blobs, f))]));
    expect((await kv('put', 'alpha', 'A'.repeat(100))).code).toBe(0);
    const alpha = blobFiles().find((f) => !readFileSync(join(blobs, f)).equals(snapshot.get(f)!))!;
    expect((await kv('put', 'beta', 'B'.repeat(100))).code).toBe(0);
    const beta = blobFiles().find((f) => f !== alpha && !readFileSync(join(blobs, f)).equals(snapshot.get(f)!))!;
    const a = join(blobs, alpha);
    const saved = readFileSync(a);

    const flipped = Buffer.from(saved);
    flipped[flipped.length - 5]! ^= 0x01;
    writeFileSync(a, flipped);
    let r = await kv('get', 'alpha');
    expect([r.code, r.stderr.trim()]).toEqual([4, 'hyperenclave: ECALL get: torn blob']);

    writeFileSync(a, saved);
    truncateSync(a, saved.length - 40);
    r = await kv('get', 'alpha');
    expect([r.code, r.stderr.trim()]).toEqual([4, 'hyperenclave: ECALL get: torn blob']);

    copyFileSync(join(blobs, beta), a);
    r = await kv('get', 'alpha');
    expect([r.code, r.stderr.trim()]).toEqual([4, 'hyperenclave: ECALL get: swapped blob']);

    writeFileSync(a, saved);
    r = await kv('get', 'alpha');
    expect([r.code, r.stdout]).toEqual([0, 'A'.repeat(100)]);
  }, 120_000);

  it('refuses an older blob, or a deleted key brought back, within one enclave run', async () => {
    const platform = { hypervisorTransport: { via: 'service' as const, stateDir: state }, stateDir: state };
    await withKvStore(platform, store, async (s) => {
      expect(await s.put('counter', Buffer.from('v1'))).toBe(1n);
      const file = blobFiles().find((f) => readFileSync(join(blobs, f)).readBigUInt64LE(8) === 1n)!;
      const v1 = readFileSync(join(blobs, file));
      expect(await s.put('counter', Buffer.from('v2'))).toBe(2n);
      writeFileSync(join(blobs, file), v1); // the host rolls the file back
      await expect(s.get('counter')).rejects.toThrowError('ECALL get: rolled back');
      await expect(s.put('counter', Buffer.from('v3'))).rejects.toThrowError('ECALL put: rolled back');
      expect(await s.remove('counter')).toBe(true);
      writeFileSync(join(blobs, file), v1); // a deleted key brought back
      await expect(s.get('counter')).rejects.toThrowError('ECALL get: rolled back');
      rmSync(join(blobs, file));
    });
  }, 120_000);

  it('grows the version table into the heap on demand (EDMM) and still refuses a rollback there', async () => {
    const platform = { hypervisorTransport: { via: 'service' as const, stateDir: state }, stateDir: state };
    await withKvStore(platform, store, async (s) => {
      expect(await s.stats()).toBe(0n); // a fresh instance: nothing seen, no heap page
      const files = new Set(blobFiles());
      for (let i = 0; i < 11; i++) await s.put(`heap-${i}`, Buffer.from([i]));
      const last = blobFiles().filter((f) => !files.has(f));
      expect(last).toHaveLength(11);
      // 8 ids fit in the static part: the 9th made the enclave grow its heap by one page.
      expect(await s.stats()).toBe((1n << 32n) | 11n);
      // heap-10's id lives in the grown page: roll its file back.
      const before = new Map(last.map((f) => [f, readFileSync(join(blobs, f))]));
      expect(await s.put('heap-10', Buffer.from('newer'))).toBe(2n);
      const changed = last.find((f) => !readFileSync(join(blobs, f)).equals(before.get(f)!))!;
      writeFileSync(join(blobs, changed), before.get(changed)!);
      await expect(s.get('heap-10')).rejects.toThrowError('ECALL get: rolled back');
      for (let i = 0; i < 11; i++) await s.remove(`heap-${i}`);
    });
  }, 300_000);
});
