import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { connect } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, cliPath, repoRoot, runCli, schemaProblems, writeEmulatedVerifierPolicy } from '../helpers/cli.js';
import { compileSchema } from '../../src/schemas.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { parseEventLog } from '../../src/eventlog/index.js';
import { lastScreenLine, runCliOnTty, scriptMissing } from './tty.js';
import { hostImageArch } from '../helpers/arch.js';
import { skipUnless } from '../helpers/require.js';

const missing = skipUnless('verifier service CLI tests', [['cli', cliMissing()], ['swtpm', swtpmAvailable({ ek: true })]]);
const noPty = missing ?? skipUnless('verifier batch progress on a terminal', [['script', scriptMissing()]]);

const verdictProblems = compileSchema('verifier-verdict.schema.json');
const resultProblems = compileSchema('attestation-result.schema.json');

interface HttpAnswer {
  status: number;
  contentType: string;
  text: string;
}

/** One POST with node:http; resolves with the answer even when the server closes right after it. */
function post(url: string, body: string | Buffer, headers: Record<string, string | number> = { 'content-type': 'application/json' }, method = 'POST'): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), text }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The port accepts no connection any more. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

/** `{"error": "…"}`: one line, says what was wrong. */
function expectOneLineError(a: HttpAnswer, status: number, what: RegExp): void {
  expect(a.status, a.text).toBe(status);
  expect(a.contentType).toBe('application/json');
  expect(a.text).not.toContain('\n');
  const doc = JSON.parse(a.text) as { error?: unknown };
  expect(Object.keys(doc)).toEqual(['error']);
  expect(doc.error).toMatch(what);
}

describe.skipIf(!!missing)('verifier serve as a process: HTTP API, refusals, SIGTERM', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-serve-'));
  const f = (n: string) => join(state, n);
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 120_000 });
  let server: ChildProcess | undefined;
  let serverOut = '';
  let serverErr = '';
  let url = '';
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  beforeAll(async () => {
    const img = f('hv.img');
    for (const args of [
      ['firmware', 'build', join(repoRoot, 'test/fixtures/measure/tiny.elf'), '-o', img, '--arch', hostImageArch()],
      ['measure', img],
      ['firmware', 'reference', img, '-o', f('reference-values.json')],
      ['ak', 'create'],
    ]) {
      const r = await run(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    }
    writeEmulatedVerifierPolicy(state, f('.'));
    for (const args of [
      ['ak', 'enroll', '--request', f('req.json')],
      ['verifier', 'enroll', '--policy', f('policy.json'), '--request', f('req.json'), '--challenge', f('ch.json')],
      ['ak', 'enroll', '--challenge', f('ch.json'), '--answer', f('ans.json')],
      ['verifier', 'enroll', '--policy', f('policy.json'), '--answer', f('ans.json')],
    ]) {
      const r = await run(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    }

    // Port 0: the kernel picks a free port; the service prints the address it bound.
    server = spawn(
      process.execPath,
      [cliPath, '--platform', 'emulated', '--state-dir', state, 'verifier', 'serve', '--listen', '127.0.0.1:0', '--policy', f('policy.json'), '--max-body', String(256 * 1024)],
      { env: { ...process.env, HYPERENCLAVE_TCTI: '', HYPERENCLAVE_LOG_LEVEL: 'info', HYPERENCLAVE_LOG_FORMAT: '' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    exited = new Promise((resolve) => server!.once('exit', (code, signal) => resolve({ code, signal })));
    server.stderr!.setEncoding('utf8').on('data', (d: string) => (serverErr += d));
    url = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`verifier serve printed no address: ${serverOut} ${serverErr}`)), 30_000);
      server!.stdout!.setEncoding('utf8').on('data', (d: string) => {
        serverOut += d;
        const m = /^verifier listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(serverOut);
        if (m) {
          clearTimeout(t);
          resolve(m[1]!);
        }
      });
      void exited.then(({ code }) => reject(new Error(`verifier serve exited ${code}: ${serverErr}`)));
    });
  });

  afterAll(async () => {
    if (server && server.exitCode === null && server.signalCode === null) {
      server.kill('SIGKILL');
      await exited;
    }
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  it('challenge → hyperenclave attest → POST /verify: affirming, the verdict valid against its schema; a replay is refused', async () => {
    const ch = await post(`${url}/challenge`, '{}');
    expect(ch.status, ch.text).toBe(200);
    const { nonce, expiresAt } = JSON.parse(ch.text) as { nonce: string; expiresAt: string };
    expect(nonce).toMatch(/^[0-9a-f]{64}$/);
    expect(Date.parse(expiresAt)).toBeGreaterThan(Date.now());

    const a = await run('attest', '--nonce', nonce, '--out', f('ev.json'), '--pcrs', 'sha256:0-7,12');
    expect(a.code, a.stderr).toBe(0);
    const evidence = readFileSync(f('ev.json'));
    const v = await post(`${url}/verify`, evidence);
    expect(v.status, v.text).toBe(200);
    const verdict = JSON.parse(v.text) as { status: string; result: Record<string, unknown>; jwt: string };
    expect(verdictProblems(verdict)).toBeUndefined();
    expect(resultProblems(verdict.result)).toBeUndefined();
    expect(verdict.status, JSON.stringify(verdict.result.firstFailure)).toBe('affirming');
    expect(verdict.result.nonce).toBe(nonce);
    const checks = verdict.result.checks as { name: string; status: string }[];
    expect(checks.find((c) => c.name === 'nonce.freshness')?.status).toBe('pass');
    expect(checks.find((c) => c.name === 'ak.provenance')?.status).toBe('pass');

    const again = await post(`${url}/verify`, evidence);
    expect(again.status).toBe(200);
    const replay = JSON.parse(again.text) as { status: string; result: { checks: { name: string; status: string; reason: string }[] } };
    expect(replay.status).toBe('contraindicated');
    expect(replay.result.checks.find((c) => c.name === 'nonce.freshness')).toMatchObject({ status: 'fail', reason: expect.stringMatching(/already used/) });
  });

  it('malformed requests get a clear 4xx with a one-line error', async () => {
    expectOneLineError(await post(`${url}/verify`, '{"nonce": '), 400, /not JSON/);
    expectOneLineError(await post(`${url}/verify`, '{}', { 'content-type': 'text/plain' }), 415, /content-type must be application\/json/);
    expectOneLineError(await post(`${url}/verify`, '{}'), 400, /no hex "nonce"/);
    expectOneLineError(await post(`${url}/verify`, '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]'), 400, /nested deeper/);
    // Over --max-body (256 KiB): refused from the declared length, and while streaming a chunked body.
    const big = Buffer.alloc(300 * 1024, 0x20);
    expectOneLineError(await post(`${url}/verify`, big, { 'content-type': 'application/json', 'content-length': big.length }), 413, /exceeds 262144/);
    expectOneLineError(await post(`${url}/verify`, big, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }), 413, /exceeds 262144 bytes/);
    expectOneLineError(await post(`${url}/verify`, '', {}, 'GET'), 405, /GET not allowed/);
    expectOneLineError(await post(`${url}/no-such-endpoint`, '{}'), 404, /no endpoint \/no-such-endpoint/);
    expectOneLineError(await post(`${url}/enroll/finish`, '{}'), 400, /expected \{"id"/);
    // The service is still up after all of that.
    expect((await post(`${url}/challenge`, '{}')).status).toBe(200);
  });

  /** Fresh evidence for the fixed nonce (each file's quote newer than the ones before it). */
  async function attestFiles(...names: string[]): Promise<void> {
    for (const n of names) {
      const a = await run('attest', '--nonce', 'ab'.repeat(16), '--out', f(n), '--pcrs', 'sha256:0-7,12');
      expect(a.code, a.stderr).toBe(0);
    }
  }

  it('verify takes a batch of evidence files: a line each, exit code of the first that fails, --json valid; an accepted quote seen again is refused', async () => {
    const nonce = 'ab'.repeat(16);
    await attestFiles('b1.json', 'b2.json', 'b3.json', 'b4.json', 'b5.json');
    const ok = await run('verify', f('b1.json'), f('b2.json'), '--policy', f('policy.json'), '--nonce', nonce);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^PASS  \S*b1\.json: affirming\nPASS  \S*b2\.json: affirming\n2 evidence files: 2 affirming, 0 warning, 0 contraindicated, 0 unreadable\n$/);

    // A log with its last event removed no longer replays to PCR 12.
    const ev = JSON.parse(readFileSync(f('b4.json'), 'utf8'));
    const log = Buffer.from(ev.eventLogs.runtime, 'base64');
    const parsed = parseEventLog(log);
    ev.eventLogs.runtime = log.subarray(0, parsed.events[parsed.events.length - 1]!.offset).toString('base64');
    writeFileSync(f('b4-cut.json'), JSON.stringify(ev));

    const mixed = await run('verify', f('b3.json'), f('absent.json'), f('b4-cut.json'), f('b1.json'), '--policy', f('policy.json'), '--nonce', nonce);
    expect(mixed.code).toBe(3); // absent.json is the first that fails
    const lines = mixed.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatch(/^PASS  \S*b3\.json: affirming$/);
    expect(lines[1]).toMatch(/^ERROR \S*absent\.json: not found$/);
    expect(lines[2]).toMatch(/^FAIL  \S*b4-cut\.json: contraindicated \(eventlog\.runtime: /);
    // b1 was accepted before b3: its quote is older than the last accepted one (a replay)
    expect(lines[3]).toMatch(/^FAIL  \S*b1\.json: contraindicated \(clock: .*not newer than the last accepted/);
    expect(lines[4]).toBe('4 evidence files: 1 affirming, 0 warning, 2 contraindicated, 1 unreadable');

    const json = await run('verify', f('b4-cut.json'), f('b5.json'), '--policy', f('policy.json'), '--nonce', nonce, '--json');
    expect(json.code).toBe(4);
    const doc = JSON.parse(json.stdout) as { schema: string; results: { status: string; exitCode: number; result?: unknown }[] };
    expect(schemaProblems(doc)).toBeUndefined();
    expect(doc.results.map((r) => r.exitCode)).toEqual([4, 0]);
    for (const r of doc.results) expect(resultProblems(r.result)).toBeUndefined();

    expect((await run('verify', f('b1.json'), f('b2.json'), '--jwt', f('x.jwt'))).code).toBe(2);
  });

  it.skipIf(!!noPty)('a batch on a terminal shows files verified, cleared before the result lines', async () => {
    const out = f('batch.out');
    await attestFiles('t1.json', 't2.json', 't3.json', 't4.json');
    const files = ['t1.json', 't2.json', 't3.json', 't4.json'].map(f);
    const r = await runCliOnTty(['--platform', 'emulated', '--state-dir', state, 'verify', ...files, '--policy', f('policy.json'), '--nonce', 'ab'.repeat(16)], { stdoutFile: out });
    expect(r.code, r.terminal).toBe(0);
    expect(r.terminal).toMatch(/\rverify \[[#.]{20}\] +\d+%  \d\/4 files/);
    expect(lastScreenLine(r.terminal)).toBe('');
    expect(readFileSync(out, 'utf8').split('\n').filter((l) => /^PASS /.test(l))).toHaveLength(4);
  });

  it('SIGTERM: the service closes its port and exits 0; its logs on a pipe are JSON lines', async () => {
    const port = Number(new URL(url).port);
    expect(await refused(port)).toBe(false);
    server!.kill('SIGTERM');
    const { code, signal } = await exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(await refused(port)).toBe(true);
    const logs = serverErr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { name: string; msg: string; signal?: string; route?: string; status?: number });
    // one line per request (info; warn for a refused one), the rest is the service's life
    const requests = logs.filter((l) => /^request/.test(l.msg));
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.every((l) => typeof l.route === 'string' && typeof l.status === 'number')).toBe(true);
    const life = logs.filter((l) => !/^request/.test(l.msg));
    expect(life.map((l) => l.msg)).toEqual(['verifier listening', 'verifier stopped']);
    expect(life[1]!.signal).toBe('SIGTERM');
    expect(logs.every((l) => l.name === 'hyperenclave')).toBe(true);
  });
});
