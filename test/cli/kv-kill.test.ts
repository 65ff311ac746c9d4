import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, repoRoot, runCli } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { bootWithRawImage } from '../helpers/boot.js';
import { withKvStore, listKeys } from '../../src/kv/store.js';
import { kvValue } from '../helpers/kv-writer.js';

/**
 * Crash safety of the sealed store: a host process doing puts (test/helpers/kv-writer.ts, one
 * store enclave, "ack i" printed after put i returned) is SIGKILLed at many instants spread
 * over the puts of an uninterrupted run measured first, counted from the writer's "ready"
 * (no assertion depends on time: where a kill lands only changes which case is checked). After each kill,
 * in a new enclave: every acknowledged put reads back exactly; the put in flight is either
 * absent or complete; nothing else is there; every blob in the directory authenticates (list
 * reads them all). Then one blob is torn on purpose and refused by name.
 * HE_KV_KILLS changes how many kills (default 10), HE_KV_PUTS the puts per run (default 10).
 */

const addon = join(repoRoot, 'hypervisor', 'addon', 'hyperenclave-addon.node');
const payload = join(repoRoot, 'hypervisor', 'enclaves', 'out', 'kvstore.bin');
const writer = join(repoRoot, 'dist', 'test', 'helpers', 'kv-writer.js');
const missing =
  cliMissing() ??
  swtpmAvailable({ ek: true }) ??
  (existsSync(writer) ? undefined : `${writer} not built (make build)`) ??
  (existsSync(addon) ? undefined : `${addon} not built (make build)`) ??
  (existsSync(payload) ? undefined : `${payload} not built (make build)`) ??
  (existsSync('/dev/kvm') ? undefined : '/dev/kvm absent: enclaves cannot run');
if (missing) console.warn(`skipping kv kill tests: ${missing}`);

const KILLS = Number(process.env.HE_KV_KILLS ?? 10);
const PUTS = Number(process.env.HE_KV_PUTS ?? 10);

interface WriterRun {
  acked: number[];
  ready: boolean;
  signal: NodeJS.Signals | null;
  code: number | null;
  stderr: string;
  ms: number;
  /** ms from "ready" (the enclave created) to the end. */
  putsMs: number;
}

/** Runs the writer; with `killAfterReadyMs`, SIGKILLs it that long after it printed "ready" (its puts started). */
function runWriter(state: string, store: string, prefix: string, killAfterReadyMs?: number): Promise<WriterRun> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [writer, state, store, prefix, String(PUTS)], {
      env: { ...process.env, HYPERENCLAVE_TCTI: '', TPM2TOOLS_TCTI: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let stderr = '';
    let readyAt = 0;
    let killer: NodeJS.Timeout | undefined;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (!readyAt && out.startsWith('ready\n')) {
        readyAt = Date.now();
        if (killAfterReadyMs !== undefined) killer = setTimeout(() => child.kill('SIGKILL'), killAfterReadyMs);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const guard = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      if (killer) clearTimeout(killer);
      const lines = out.split('\n');
      resolve({
        acked: lines.filter((l) => l.startsWith('ack ')).map((l) => Number(l.slice(4))),
        ready: lines.includes('ready'),
        signal,
        code,
        stderr: stderr.trim(),
        ms: Date.now() - t0,
        putsMs: readyAt ? Date.now() - readyAt : 0,
      });
    });
  });
}

describe.skipIf(!!missing)('kv store: SIGKILL of the host process during puts', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-kvkill-'));
  const store = join(state, 'store');
  const platform = { hypervisorTransport: { via: 'service' as const, stateDir: state }, stateDir: state };
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 120_000 });

  beforeAll(async () => {
    await bootWithRawImage(run, addon, join(state, 'hv.img'));
  }, 300_000);
  afterAll(async () => {
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  it(`every acknowledged put survives ${KILLS} kills; no torn blob is accepted`, async () => {
    const full = await runWriter(state, store, 'full');
    expect([full.code, full.stderr]).toEqual([0, '']);
    expect(full.acked).toEqual([...Array(PUTS).keys()]);
    const expected = new Map<string, Buffer>([...Array(PUTS).keys()].map((i) => [`full-${i}`, kvValue('full', i)]));
    const inFlight = new Map<string, Buffer>();
    const landed: string[] = [];
    let temps = 0;
    for (let k = 0; k < KILLS; k++) {
      const prefix = `kill${k}`;
      // Spread over the puts of the uninterrupted run, counted from "ready".
      const at = Math.round(((k + 0.5) * full.putsMs) / KILLS);
      const r = await runWriter(state, store, prefix, at);
      landed.push(`${at}ms:${r.signal ?? r.code}:${r.acked.length}`);
      // Temporary files a kill left (swept by the next session, under the store's lock).
      temps += existsSync(join(store, 'blobs')) ? readdirSync(join(store, 'blobs')).filter((n) => n.includes('.tmp-')).length : 0;
      for (const i of r.acked) expected.set(`${prefix}-${i}`, kvValue(prefix, i));
      if (r.signal === null) expect([r.code, r.stderr]).toEqual([0, '']);
      else if (r.acked.length < PUTS && r.ready) inFlight.set(`${prefix}-${r.acked.length}`, kvValue(prefix, r.acked.length));

      // A new enclave instance reads this run's keys back.
      await withKvStore(platform, store, async (kv) => {
        for (const i of r.acked) expect((await kv.get(`${prefix}-${i}`)).equals(kvValue(prefix, i)), `${prefix}-${i} after kill ${k}`).toBe(true);
        const next = `${prefix}-${r.acked.length}`;
        if (inFlight.has(next)) {
          // The put the kill cut off: absent, or there whole.
          const got = await kv.get(next).catch((e: { code?: string }) => e.code);
          if (got !== 'ERR_NOT_FOUND') expect(Buffer.isBuffer(got) && got.equals(inFlight.get(next)!), `${next}: ${String(got)}`).toBe(true);
        }
      });
    }
    // At the end, every blob in the directory authenticates (list opens them all) and holds
    // exactly the acknowledged puts plus, at most, the ones whose acknowledgment a kill cut off.
    await withKvStore(platform, store, async (kv) => {
      const keys = await listKeys(kv);
      for (const key of keys) expect(expected.has(key) || inFlight.has(key), `unexpected key ${key}`).toBe(true);
      expect(keys.filter((x) => expected.has(x)).length).toBe(expected.size);
      for (const [key, value] of expected) expect((await kv.get(key)).equals(value), key).toBe(true);
    });
    const blobs = join(store, 'blobs');
    expect(readdirSync(blobs).filter((n) => n.includes('.tmp-'))).toEqual([]);
    console.log(`kv kill sweep: uninterrupted run ${full.ms} ms, its ${PUTS} puts ${full.putsMs} ms; kills (instant:signal:acks) ${landed.join(' ')}; temporary files left by kills: ${temps}`);

    // One blob torn on purpose: refused by name, through the CLI too.
    const f = join(blobs, readdirSync(blobs).find((n) => n.endsWith('.blob'))!);
    const raw = readFileSync(f);
    writeFileSync(f, raw.subarray(0, raw.length - 7));
    await withKvStore(platform, store, async (kv) => {
      await expect(listKeys(kv)).rejects.toMatchObject({ code: 'ERR_TORN_BLOB', message: 'ECALL list: torn blob' });
    });
    const r = await run('kv', 'list', '--store', store);
    expect([r.code, r.stderr.trim()]).toEqual([4, 'hyperenclave: ECALL list: torn blob']);
  }, 900_000);
});
