/**
 * The fleet commands as processes: `verifier hosts add/remove/list` (--json against its schema),
 * `verifier serve --attest-interval` revoking a host whose agent does not answer, the hosts table
 * showing it, /metrics counting it (prom-client text format), one request log line per request,
 * with journald priorities when JOURNAL_STREAM is set.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, cliPath, runCli, schemaProblems } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { randomBytes } from 'node:crypto';

const missing = cliMissing();
if (missing) console.warn(`skipping fleet CLI tests: ${missing}`);

/** A loopback port nothing listens on (bound, then released). */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe.skipIf(!!missing)('verifier hosts and continuous attestation (built CLI)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-fleet-cli-'));
  afterAll(() => rmSync(state, { recursive: true, force: true }));
  const run = (...args: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...args], { timeoutMs: 30_000 });

  it('add, list (--json with schema), remove; removing twice is exit 3', async () => {
    const add = await run('verifier', 'hosts', 'add', 'web-1', 'http://127.0.0.1:9', '--json');
    expect(add.code, add.stderr).toBe(0);
    expect(schemaProblems(add.json!)).toBeUndefined();
    const list = await run('verifier', 'hosts', '--json');
    expect(list.code, list.stderr).toBe(0);
    expect(schemaProblems(list.json!)).toBeUndefined();
    expect(list.json!.hosts).toMatchObject([{ hostId: 'web-1', agentUrl: 'http://127.0.0.1:9', state: 'pending', failures: 0 }]);
    expect((await run('verifier', 'hosts', 'remove', 'web-1')).code).toBe(0);
    const again = await run('verifier', 'hosts', 'remove', 'web-1');
    expect(again.code).toBe(3);
    expect(again.stderr).toMatch(/no host "web-1"/);
  });

  it('serve --attest-interval revokes a host whose agent is silent; hosts shows it; /metrics and the request log see it', async () => {
    const agentPort = await deadPort();
    expect((await run('verifier', 'hosts', 'add', 'db-1', `http://127.0.0.1:${agentPort}`)).code).toBe(0);
    const child = spawn(process.execPath, [cliPath, '--platform', 'emulated', '--state-dir', state, 'verifier', 'serve', '--listen', '127.0.0.1:0', '--attest-interval', '1', '--json'], {
      env: { ...process.env, HYPERENCLAVE_LOG_LEVEL: 'info', HYPERENCLAVE_LOG_FORMAT: 'json', JOURNAL_STREAM: '8:1234' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.stdout.on('data', () => {
          const m = /"url": "([^"]+)"/.exec(out);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (c) => reject(new Error(`serve exited ${c}: ${err}`)));
      });
      // wait (no timed assertion: the test's own timeout bounds it) until the host is revoked
      for (;;) {
        const h = (await (await fetch(`${url}/hosts`)).json()) as { hosts: { hostId: string; state: string; lastReason?: string }[] };
        const db = h.hosts.find((x) => x.hostId === 'db-1');
        if (db?.state === 'revoked') {
          expect(db.lastReason).toMatch(new RegExp(`^no evidence from http://127\\.0\\.0\\.1:${agentPort}: .*ECONNREFUSED`));
          break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      const metrics = await (await fetch(`${url}/metrics`)).text();
      expect(metrics).toMatch(/^hyperenclave_hosts\{state="revoked"\} 1$/m);
      expect(metrics).toMatch(/^hyperenclave_verifications_total\{status="none"\} [1-9]/m);
      expect(metrics).toMatch(/^hyperenclave_http_requests_total\{route="\/hosts",code="200"\} [1-9]/m);
      expect(metrics).toMatch(/^# TYPE hyperenclave_verification_duration_seconds histogram$/m);
      const table = await run('verifier', 'hosts');
      expect(table.code).toBe(4); // a revoked host: the listing says so in its exit code
      expect(table.stdout).toMatch(/^db-1\s+REVOKED\s+none\s/m);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    // journald: every log line carries its syslog priority; one line per request, at info (6)
    const lines = err.split('\n').filter(Boolean);
    expect(lines.every((l) => /^<[2-7]>\{/.test(l)), lines.slice(0, 3).join('\n')).toBe(true);
    const requests = lines.filter((l) => l.includes('"msg":"request"'));
    expect(requests.length).toBeGreaterThanOrEqual(2);
    expect(requests.every((l) => l.startsWith('<6>'))).toBe(true);
    expect(JSON.parse(requests[0]!.slice(3))).toMatchObject({ method: 'GET', route: '/hosts', status: 200, ms: expect.any(Number) });
    expect(lines.some((l) => l.startsWith('<3>') && l.includes('"msg":"host revoked"'))).toBe(true);
  }, 60_000);
});

const noTpm = missing ?? swtpmAvailable();
describe.skipIf(!!noTpm)('agent serve on the emulated platform (built CLI)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-agent-cli-'));
  const run = (...args: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...args], { timeoutMs: 60_000 });
  afterAll(async () => {
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  it('answers POST /quote with an evidence bundle over the nonce; refuses a bad nonce; --json with schema', async () => {
    expect((await run('ak', 'create')).code).toBe(0);
    const child = spawn(process.execPath, [cliPath, '--platform', 'emulated', '--state-dir', state, 'agent', 'serve', '--listen', '127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    try {
      const doc = await new Promise<{ schema: string; url: string }>((resolve, reject) => {
        child.stdout.on('data', () => {
          try {
            resolve(JSON.parse(out));
          } catch {
            /* not complete yet */
          }
        });
        child.once('exit', (c) => reject(new Error(`agent exited ${c}: ${err}`)));
      });
      expect(schemaProblems(doc)).toBeUndefined();
      const nonce = randomBytes(32).toString('hex');
      const r = await fetch(`${doc.url}/quote`, { method: 'POST', body: JSON.stringify({ nonce }) });
      expect(r.status).toBe(200);
      const ev = (await r.json()) as { schema: string; nonce: string; quotes: { bank: string; pcrs: Record<string, string> }[] };
      expect(schemaProblems(ev)).toBeUndefined();
      expect(ev.nonce).toBe(nonce);
      expect(Object.keys(ev.quotes[0]!.pcrs)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '12', '13']);
      const bad = await fetch(`${doc.url}/quote`, { method: 'POST', body: '{"nonce":"zz"}' });
      expect(bad.status).toBe(400);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    }
  }, 120_000);
});
