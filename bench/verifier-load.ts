/**
 * Verifier load harness (loopback only, bounded in count and time): N simulated agents, each
 * with a software-held P-256 AK enrolled in the verifier's database (a real enrollment record
 * row) and validly signed quotes (TPMS_ATTEST marshalled here, clock advancing), attest every
 * T seconds: POST /challenge at one instance, POST /verify at the next (with two instances the
 * challenge and the answer always cross instances). The verifier instances are the built CLI
 * (`verifier serve`) in their own processes; this process is the load generator.
 *
 *   node dist/bench/verifier-load.js --agents 5000 --period 10 --duration 120 --setup 1-sqlite|1-pg|2-pg [--json out.json]
 *
 * Reports offered and achieved verifications/s, latency percentiles (challenge sent -> verdict
 * received), verdicts lost (errors, timeouts, non-affirming, or missing from the database's
 * history), schedule lag of the generator, and the server-side time per phase (from /metrics).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { Agent, request } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { publicBytes } from '../src/tpm/structures.js';
import { akTemplate } from '../src/tpm/templates.js';
import { buildEvidence, qualificationFor, type BundleClaims } from '../src/attest/evidence.js';
import { openVerifierStore } from '../src/verifier/store.js';
import type { EnrollmentRecord } from '../src/attest/enroll.js';
import { createDatabase, postgresMissing, startPostgres, type PgCluster } from '../test/helpers/postgres.js';

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '..', 'src', 'cli', 'main.js');

export interface LoadOptions {
  agents: number;
  periodS: number;
  durationS: number;
  setup: '1-sqlite' | '1-pg' | '2-pg';
  /** PostgreSQL URL (needed for the -pg setups). */
  pgUrl?: string;
  /** Stop early when more than this many verdicts are outstanding (the verifier is past its ceiling). */
  maxOutstanding?: number;
}

export interface LoadResult {
  setup: string;
  agents: number;
  periodS: number;
  durationS: number;
  offeredPerS: number;
  achievedPerS: number;
  sent: number;
  /** Rounds skipped because the agent's previous attestation had not finished (the verifier is behind). */
  overruns: number;
  affirming: number;
  lost: { errors: number; notAffirming: number; missingFromHistory: number; unfinished: number };
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  scheduleLagMsP99: number;
  phasesMsMean: Record<string, number>;
  /** CPU milliseconds per verification: the verifier processes (from their process_cpu_seconds_total) and this generator. */
  cpuMsPerVerification: { verifiers: number; generator: number };
  firstError?: string;
  stoppedEarly?: string;
}

const PCRS = [0, 7, 12];
const PCR_VALUES = new Map(PCRS.map((i) => [i, createHash('sha256').update(`load pcr ${i}`).digest()]));
const PCR_DIGEST = createHash('sha256').update(Buffer.concat(PCRS.map((i) => PCR_VALUES.get(i)!))).digest();

interface SimAgent {
  key: KeyObject;
  tpmt: Buffer;
  name: Buffer;
  pem: string;
  spki: string;
  clock: bigint;
}

function makeAgent(): SimAgent {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' }) as { x: string; y: string };
  const t = akTemplate('ecc');
  t.unique = { x: Buffer.from(jwk.x, 'base64url'), y: Buffer.from(jwk.y, 'base64url') };
  const tpmt = publicBytes(t);
  const name = Buffer.concat([Buffer.from([0x00, 0x0b]), createHash('sha256').update(tpmt).digest()]);
  return { key: privateKey, tpmt, name, pem: publicKey.export({ type: 'spki', format: 'pem' }) as string, spki: createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex'), clock: 1000n };
}

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const tpm2b = (b: Buffer) => Buffer.concat([u16(b.length), b]);

/** TPMS_ATTEST of a quote and its TPMT_SIGNATURE (ECDSA P-256, SHA-256), as a TPM makes them. */
function quote(a: SimAgent, qualifyingData: Buffer): { attest: Buffer; signature: Buffer } {
  a.clock += 10_000n;
  const clock = Buffer.alloc(8);
  clock.writeBigUInt64BE(a.clock);
  const select = Buffer.alloc(3);
  for (const p of PCRS) select[p >> 3]! |= 1 << (p & 7);
  const attest = Buffer.concat([
    u32(0xff544347), u16(0x8018), tpm2b(a.name), tpm2b(qualifyingData),
    clock, u32(1), u32(0), Buffer.from([1]), Buffer.alloc(8),
    u32(1), u16(0x000b), Buffer.from([3]), select, tpm2b(PCR_DIGEST),
  ]);
  const sig = sign('sha256', attest, { key: a.key, dsaEncoding: 'ieee-p1363' });
  return { attest, signature: Buffer.concat([u16(0x0018), u16(0x000b), tpm2b(sig.subarray(0, 32)), tpm2b(sig.subarray(32))]) };
}

function post(agent: Agent, url: string, body: unknown): Promise<any> {
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) return reject(new Error(`${url}: HTTP ${res.statusCode}: ${raw.slice(0, 200)}`));
        try {
          resolve(JSON.parse(raw));
        } catch {
          reject(new Error(`${url}: not JSON`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer within 30 s`)));
    req.on('error', reject);
    req.end(text);
  });
}

async function startInstance(stateDir: string, policy: string, db: string): Promise<{ url: string; child: ChildProcess }> {
  const prof = process.env.HE_LOAD_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.HE_LOAD_PROFILE_DIR}`] : [];
  const child = spawn(process.execPath, [...prof, cli, '--platform', 'emulated', '--state-dir', stateDir, 'verifier', 'serve', '--listen', '127.0.0.1:0', '--policy', policy, '--db', db, '--json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HYPERENCLAVE_LOG_LEVEL: 'warn' },
  });
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /"url": "([^"]+)"/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (c) => reject(new Error(`verifier exited ${c}: ${err}`)));
  });
  return { url, child };
}

const pct = (sorted: number[], p: number): number => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN);

/** Sum of the instances' process CPU seconds (prom-client's default metric). */
async function cpuSeconds(urls: string[]): Promise<number> {
  let total = 0;
  for (const u of urls) {
    const m = /^hyperenclave_process_cpu_seconds_total ([\d.e+-]+)$/m.exec(await (await fetch(`${u}/metrics`)).text());
    if (m) total += Number(m[1]);
  }
  return total;
}

/** Mean ms per phase from the instances' /metrics histograms (sum / count). */
async function phaseMeans(urls: string[]): Promise<Record<string, number>> {
  const sum: Record<string, number> = {};
  const count: Record<string, number> = {};
  for (const u of urls) {
    const text = await (await fetch(`${u}/metrics`)).text();
    for (const m of text.matchAll(/^hyperenclave_verification_phase_seconds_(sum|count)\{phase="([a-z]+)"\} ([\d.e+-]+)$/gm)) {
      const tbl = m[1] === 'sum' ? sum : count;
      tbl[m[2]!] = (tbl[m[2]!] ?? 0) + Number(m[3]);
    }
    const lat = /^hyperenclave_verification_duration_seconds_sum\{source="service"\} ([\d.e+-]+)$/m.exec(text);
    const latN = /^hyperenclave_verification_duration_seconds_count\{source="service"\} ([\d.e+-]+)$/m.exec(text);
    if (lat && latN) {
      sum.server = (sum.server ?? 0) + Number(lat[1]);
      count.server = (count.server ?? 0) + Number(latN[1]);
    }
  }
  const out: Record<string, number> = {};
  for (const k of Object.keys(sum)) if (count[k]) out[k] = Math.round((sum[k]! / count[k]!) * 1e6) / 1e3;
  return out;
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  if (o.agents < 1 || o.agents > 20_000) throw new Error('--agents: 1..20000');
  if (o.durationS < 1 || o.durationS > 600) throw new Error('--duration: 1..600 s');
  if (o.periodS < 0.1 || o.periodS > 600) throw new Error('--period: 0.1..600 s');
  const dir = mkdtempSync(join(tmpdir(), 'he-load-'));
  const children: ChildProcess[] = [];
  let cluster: PgCluster | undefined;
  try {
    let db = o.setup === '1-sqlite' ? `sqlite:${join(dir, 'verifier.db')}` : o.pgUrl;
    if (!db) {
      // a private cluster on a Unix socket, stopped at the end (as the tests do)
      const why = postgresMissing();
      if (why) throw new Error(`setup ${o.setup}: ${why}`);
      cluster = startPostgres();
      db = createDatabase(cluster, 'load');
    }
    writeFileSync(join(dir, 'reference-values.json'), JSON.stringify({ schema: 'hyperenclave/reference-values', version: 1, pcrs: { sha256: Object.fromEntries(PCRS.map((i) => [String(i), PCR_VALUES.get(i)!.toString('hex')])) } }));
    writeFileSync(join(dir, 'policy.json'), JSON.stringify({ schema: 'hyperenclave/verifier-policy', version: 1, referenceValues: 'reference-values.json', checks: { 'eventlog.*': 'off' } }));
    // enroll every simulated AK: the same record rows credential activation writes
    const agents = Array.from({ length: o.agents }, makeAgent);
    const store = await openVerifierStore(db);
    const now = new Date().toISOString();
    for (const a of agents) {
      const rec: EnrollmentRecord & { platformKind: 'emulated'; platformReason: string } = {
        schema: 'hyperenclave/ak-enrollment', version: 1, akName: a.name.toString('hex'), akSpkiSha256: a.spki, akPublic: a.tpmt.toString('base64'),
        ekCertSha256: '00'.repeat(32), enrolledAt: now, method: 'credential-activation', platformKind: 'emulated', platformReason: 'load harness: software-held AK',
      };
      await store.saveEnrollment(rec);
    }
    const n = o.setup === '2-pg' ? 2 : 1;
    const instances = [];
    for (let i = 0; i < n; i++) instances.push(await startInstance(join(dir, `state${i}`), join(dir, 'policy.json'), db));
    children.push(...instances.map((x) => x.child));
    const urls = instances.map((x) => x.url);
    const httpAgent = new Agent({ keepAlive: true, maxSockets: 128 });

    const cpu0 = await cpuSeconds(urls);
    const gen0 = process.cpuUsage();
    const latencies: number[] = [];
    const lags: number[] = [];
    let sent = 0;
    let affirming = 0;
    let errors = 0;
    let notAffirming = 0;
    let outstanding = 0;
    let firstError: string | undefined;
    let stoppedEarly: string | undefined;
    const t0 = Date.now() + 500;
    const end = t0 + o.durationS * 1000;
    const periodMs = o.periodS * 1000;
    const inflight = new Set<Promise<void>>();
    const since = Date.now();

    const busy = new Uint8Array(o.agents);
    let overruns = 0;
    const fire = async (i: number, due: number): Promise<void> => {
      const a = agents[i]!;
      // An agent attests once at a time: a round due while its previous one is still running is skipped.
      if (busy[i]) {
        overruns++;
        return;
      }
      busy[i] = 1;
      const start = Date.now();
      lags.push(start - due);
      sent++;
      outstanding++;
      try {
        const { nonce } = (await post(httpAgent, `${urls[i % n]}/challenge`, {})) as { nonce: string };
        const claims: BundleClaims = { nonce: Buffer.from(nonce, 'hex'), platformKind: 'emulated' };
        const q = quote(a, qualificationFor(claims));
        const ev = buildEvidence(claims, { quotes: [{ bank: 'sha256', attest: q.attest, signature: q.signature, values: PCR_VALUES }], ak: { tpmtPublic: a.tpmt, pem: a.pem, name: a.name } });
        const v = (await post(httpAgent, `${urls[(i + 1) % n]}/verify`, ev)) as { status: string; result: { firstFailure?: string } };
        latencies.push(Date.now() - start);
        if (v.status === 'affirming') affirming++;
        else {
          notAffirming++;
          firstError ??= `verdict ${v.status}: ${v.result.firstFailure ?? ''}`;
        }
      } catch (e) {
        errors++;
        firstError ??= (e as Error).message;
      } finally {
        outstanding--;
        busy[i] = 0;
      }
    };

    // Each agent fires at its own phase within the period, then every period.
    await new Promise<void>((resolve) => {
      let next = 0;
      const slots = o.agents;
      const tick = (): void => {
        const now = Date.now();
        if (now >= end || stoppedEarly) return resolve();
        if (o.maxOutstanding && outstanding > o.maxOutstanding) stoppedEarly = `${outstanding} verdicts outstanding at ${((now - t0) / 1000).toFixed(1)} s: past the ceiling`;
        for (;;) {
          const round = Math.floor(next / slots);
          const i = next % slots;
          const due = t0 + round * periodMs + (i * periodMs) / slots;
          if (due > now || due >= end) break;
          const p = fire(i, due);
          inflight.add(p);
          void p.finally(() => inflight.delete(p));
          next++;
        }
        setTimeout(tick, 5);
      };
      setTimeout(tick, Math.max(0, t0 - Date.now()));
    });
    await Promise.race([Promise.allSettled([...inflight]), new Promise((r) => setTimeout(r, 35_000))]);
    const unfinished = inflight.size;
    const cpu1 = await cpuSeconds(urls);
    const gen1 = process.cpuUsage(gen0);
    // Verdicts received before the count must all be in the history (rows are written before the answer is sent).
    const receivedBeforeCount = latencies.length;
    const recorded = await store.countVerdicts(since);
    const phases = await phaseMeans(urls);
    await store.close();
    httpAgent.destroy();
    latencies.sort((x, y) => x - y);
    lags.sort((x, y) => x - y);
    const completed = latencies.length;
    const elapsed = Math.min(o.durationS, (Date.now() - t0) / 1000);
    return {
      setup: o.setup,
      agents: o.agents,
      periodS: o.periodS,
      durationS: o.durationS,
      offeredPerS: Math.round((o.agents / o.periodS) * 10) / 10,
      achievedPerS: Math.round((completed / elapsed) * 10) / 10,
      sent,
      overruns,
      affirming,
      lost: { errors, notAffirming, missingFromHistory: Math.max(0, receivedBeforeCount - recorded), unfinished },
      latencyMs: { p50: pct(latencies, 50), p90: pct(latencies, 90), p99: pct(latencies, 99), max: latencies[latencies.length - 1] ?? NaN },
      scheduleLagMsP99: pct(lags, 99),
      phasesMsMean: phases,
      cpuMsPerVerification: {
        verifiers: Math.round(((cpu1 - cpu0) * 1000 * 100) / Math.max(1, latencies.length)) / 100,
        generator: Math.round(((gen1.user + gen1.system) / 1000 * 100) / Math.max(1, latencies.length)) / 100,
      },
      ...(firstError ? { firstError } : {}),
      ...(stoppedEarly ? { stoppedEarly } : {}),
    };
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// CLI
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const arg = (k: string, d?: string): string | undefined => {
    const i = process.argv.indexOf(`--${k}`);
    return i >= 0 ? process.argv[i + 1] : d;
  };
  const r = await runLoad({
    agents: Number(arg('agents', '1000')),
    periodS: Number(arg('period', '10')),
    durationS: Number(arg('duration', '20')),
    setup: (arg('setup', '1-sqlite') as LoadOptions['setup']),
    ...(arg('pg') ? { pgUrl: arg('pg')! } : {}),
    maxOutstanding: Number(arg('max-outstanding', '5000')),
  });
  process.stdout.write(JSON.stringify(r, null, 2) + '\n');
}
