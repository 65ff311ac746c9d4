import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostImageArch } from '../helpers/arch.js';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, cliPath, repoRoot } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { parseTpm2EventlogYaml, tpm2EventlogUnavailable } from '../../src/eventlog/tpm2-eventlog.js';

/**
 * Crash safety of `boot` (issue 20): SIGKILL at many instants across a run (from the first
 * TPM manufacture to the end), then `boot` again, then the runtime log is replayed by
 * tpm2_eventlog (an independent peer) and compared with PCR 12 read by tpm2_pcrread: it must
 * match exactly, with the image's three events there once. Then pairs of `boot` started at once
 * on one state directory must extend PCR 12 once between them.
 *
 * Instants are spread evenly over the duration of an uninterrupted run measured first (no
 * assertion depends on time). HE_SWEEP_INSTANTS changes how many (default 50: 12 across a first
 * boot that manufactures the TPM, 38 across a boot with a manufactured TPM); HE_SWEEP_CLI runs
 * the sweep against another build (how the numbers before the fix were taken).
 */

const cli = process.env.HE_SWEEP_CLI ?? cliPath;
const addon = join(repoRoot, 'hypervisor', 'addon', 'hyperenclave-addon.node');
const missing =
  cliMissing() ??
  swtpmAvailable({ ek: true }) ??
  tpm2EventlogUnavailable() ??
  (spawnSync('tpm2_pcrread', ['--version']).error ? 'tpm2_pcrread missing (apt-get install tpm2-tools)' : undefined) ??
  (existsSync(addon) ? undefined : `${addon} not built (make build)`);
if (missing) console.warn(`skipping kill-sweep tests: ${missing}`);

const INSTANTS = Number(process.env.HE_SWEEP_INSTANTS ?? 50);
const PAIRS = Number(process.env.HE_SWEEP_PAIRS ?? 10);
/** Events the default PCR policy puts into PCR 12 for one image. */
const IMAGE_EVENTS = 3;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  ms: number;
}

function runBoot(state: string, image: string, killAfterMs?: number, timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [cli, '--platform', 'emulated', '--state-dir', state, 'boot', '--image', image], {
      env: { ...process.env, HYPERENCLAVE_TCTI: '', TPM2TOOLS_TCTI: '', HYPERENCLAVE_LOCK_WAIT: '60' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const killer = killAfterMs !== undefined ? setTimeout(() => child.kill('SIGKILL'), killAfterMs) : undefined;
    const guard = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      if (killer) clearTimeout(killer);
      resolve({ code, signal, stderr: stderr.trim(), ms: Date.now() - t0 });
    });
  });
}

/** Processes whose command line names this state directory (swtpm, swtpm_setup, the hypervisor service). */
function processesOf(state: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      // The directory itself or a path inside it (t1 must not match t10).
      if (cmd.includes(`${state}/`) || cmd.includes(`${state}\0`)) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Ends every process of this trial's state directory (its swtpm, its hypervisor service, an orphan swtpm_setup). */
async function cleanup(state: string): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const left = processesOf(state);
    if (!left.length) break;
    for (const pid of left) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  rmSync(state, { recursive: true, force: true });
}

/** What is wrong with the state after the recovery boot, or undefined: replay(log) = PCR 12, image events once. */
function checkState(state: string): string | undefined {
  const inst = join(state, 'emulated', 'tpm', 'instance.json');
  if (!existsSync(inst)) return 'no emulated TPM record after boot';
  const tcti = (JSON.parse(readFileSync(inst, 'utf8')) as { tcti: string }).tcti;
  const pr = spawnSync('tpm2_pcrread', ['-T', tcti, 'sha256:12'], { encoding: 'utf8', timeout: 20_000 });
  const m = /12\s*:\s*0x([0-9A-Fa-f]{64})/.exec(pr.stdout ?? '');
  if (!m) return `tpm2_pcrread failed: ${pr.stderr}`;
  const pcr = m[1]!.toLowerCase();
  const logPath = join(state, 'runtime-measurements.log');
  if (!existsSync(logPath)) return `no runtime log; PCR 12 = ${pcr.slice(0, 16)}…`;
  const ev = spawnSync('tpm2_eventlog', [logPath], { encoding: 'utf8', timeout: 20_000 });
  if (ev.status !== 0) return `tpm2_eventlog failed: ${ev.stderr}`;
  const parsed = parseTpm2EventlogYaml(ev.stdout);
  const replayed = parsed.pcrs.sha256?.[12];
  const n = parsed.events.filter((e) => e.pcr === 12).length;
  if (replayed !== pcr) return `log replays PCR 12 to ${replayed?.slice(0, 16)}…, the TPM holds ${pcr.slice(0, 16)}… (${n} events in the log)`;
  if (n !== IMAGE_EVENTS) return `${n} PCR 12 events in the log, want ${IMAGE_EVENTS} (image measured ${n / IMAGE_EVENTS} times)`;
  return undefined;
}

describe.skipIf(!!missing)('boot survives SIGKILL at any instant and a second copy of itself (emulated platform)', () => {
  const root = mkdtempSync(join(tmpdir(), 'he-sweep-'));
  const image = join(root, 'hv.img');
  /** A state directory whose TPM is manufactured (EK certificates) but not running. */
  const template = join(root, 'template');
  let freshMs = 0;
  let warmMs = 0;

  beforeAll(async () => {
    const arch = hostImageArch();
    const b = spawnSync(process.execPath, [cli, 'firmware', 'build', addon, '-o', image, '--arch', arch, '--raw', '--entry', '0'], { encoding: 'utf8' });
    expect(b.status, b.stderr).toBe(0);
    // Reference runs: how long a boot takes here, fresh (manufactures the TPM) and warm.
    mkdirSync(template);
    const fresh = await runBoot(template, image);
    expect(fresh.code, fresh.stderr).toBe(0);
    freshMs = fresh.ms;
    expect(checkState(template)).toBeUndefined();
    spawnSync(process.execPath, [cli, '--platform', 'emulated', '--state-dir', template, 'emulator', 'stop'], { stdio: 'ignore' });
    for (const f of readdirSync(template)) if (f !== 'emulated') rmSync(join(template, f), { recursive: true, force: true });
    rmSync(join(template, 'emulated', 'hypervisor'), { recursive: true, force: true });
    const warmDir = join(root, 'warm');
    cpSync(template, warmDir, { recursive: true });
    const warm = await runBoot(warmDir, image);
    expect(warm.code, warm.stderr).toBe(0);
    warmMs = warm.ms;
    await cleanup(warmDir);
  }, 120_000);

  afterAll(() => {
    for (const pid of processesOf(root)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(root, { recursive: true, force: true });
  });

  it(`a kill at ${INSTANTS} instants, then boot: the log replays exactly to PCR 12 with the image measured once`, async () => {
    const freshN = Math.max(1, Math.round(INSTANTS * 0.24));
    const trials = [
      ...Array.from({ length: freshN }, (_, i) => ({ fresh: true, at: Math.round(((i + 0.5) * freshMs) / freshN) })),
      ...Array.from({ length: INSTANTS - freshN }, (_, i) => ({ fresh: false, at: Math.round(((i + 0.5) * warmMs) / (INSTANTS - freshN)) })),
    ];
    const failures: string[] = [];
    let killedMidway = 0;
    const trial = async (i: number): Promise<void> => {
      const t = trials[i]!;
      const state = join(root, `t${i}`);
      if (t.fresh) mkdirSync(state);
      else cpSync(template, state, { recursive: true });
      try {
        const first = await runBoot(state, image, t.at);
        if (first.signal === 'SIGKILL') killedMidway++;
        const second = await runBoot(state, image, undefined, 90_000);
        const why = second.code !== 0 ? `boot after the kill exited ${second.code ?? second.signal}: ${second.stderr}` : checkState(state);
        if (why) failures.push(`${t.fresh ? 'first boot' : 'boot'} killed at ${t.at} ms: ${why}`);
      } finally {
        await cleanup(state);
      }
    };
    // Two trials at a time (each on its own state directory): the machine's load shifts the
    // instants a little, which only spreads them further.
    let next = 0;
    await Promise.all([0, 1].map(async () => {
      while (next < trials.length) await trial(next++);
    }));
    console.log(`kill sweep: ${trials.length} instants (fresh boot ${freshMs} ms, warm ${warmMs} ms), ${killedMidway} killed mid-run, ${failures.length} failures`);
    expect(killedMidway).toBeGreaterThan(trials.length / 2);
    expect(failures).toEqual([]);
  }, 900_000);

  it(`${PAIRS} pairs of boots started at once extend PCR 12 once each pair`, async () => {
    const failures: string[] = [];
    for (let i = 0; i < PAIRS; i++) {
      const state = join(root, `p${i}`);
      cpSync(template, state, { recursive: true });
      try {
        const [a, b] = await Promise.all([runBoot(state, image), runBoot(state, image)]);
        const bad = [a, b].filter((r) => r.code !== 0);
        const why = bad.length ? `a boot exited ${bad[0]!.code}: ${bad[0]!.stderr}` : checkState(state);
        if (why) failures.push(`pair ${i}: ${why}`);
      } finally {
        await cleanup(state);
      }
    }
    expect(failures).toEqual([]);
  }, 600_000);
});
