import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonDepthExceeds, startVerifierService, type RunningService } from './service.js';
import { Verifier } from './verifier.js';
import { NonceStore } from './nonces.js';

let svc: RunningService;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'attest-svc-'));
  const verifier = new Verifier({ stateDir: dir, policy: { schema: 'hyperenclave/verifier-policy', version: 1 } });
  svc = await startVerifierService({ verifier, maxBodyBytes: 64 * 1024, headersTimeoutMs: 1000, requestTimeoutMs: 1500, timeoutCheckMs: 200 });
});
afterAll(async () => {
  await svc?.close();
  rmSync(dir, { recursive: true, force: true });
});

function post(path: string, body: string | Buffer, contentType = 'application/json'): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request(`${svc.url}${path}`, { method: 'POST', headers: { 'content-type': contentType, 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : undefined });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('verifier service on 127.0.0.1', () => {
  it('binds to loopback', () => {
    expect(svc.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('issues distinct single-use nonces with expiry', async () => {
    const a = await post('/challenge', '{}');
    const b = await post('/challenge', '');
    expect(a.status).toBe(200);
    expect(a.json.nonce).toMatch(/^[0-9a-f]{64}$/);
    expect(a.json.nonce).not.toBe(b.json.nonce);
    expect(Date.parse(a.json.expiresAt)).toBeGreaterThan(Date.now());
  });

  it('refuses garbage, wrong content type, deep JSON, huge bodies, unknown paths and methods with JSON errors', async () => {
    expect((await post('/verify', 'not json at all')).status).toBe(400);
    expect((await post('/verify', '{"a":1}', 'text/plain')).status).toBe(415);
    expect((await post('/verify', '['.repeat(5000) + ']'.repeat(5000))).json.error).toMatch(/deeper than/);
    const huge = await post('/verify', Buffer.alloc(200 * 1024, 0x20));
    expect(huge.status).toBe(413);
    expect((await post('/nope', '{}')).status).toBe(404);
    expect((await post('/verify', '{"nonce": 5}')).status).toBe(400);
    expect((await post('/enroll/finish', '{"id": "zz", "secret": "AA=="}')).status).toBe(400);
    const g = await new Promise<number>((resolve) => request(`${svc.url}/challenge`, { method: 'GET' }, (r) => (r.resume(), resolve(r.statusCode ?? 0))).end());
    expect(g).toBe(405);
  });

  it('answers a schema-invalid bundle with a contraindicated result naming evidence.format', async () => {
    const { json: ch } = await post('/challenge', '{}');
    const r = await post('/verify', JSON.stringify({ schema: 'hyperenclave/evidence', version: 1, nonce: ch.nonce, quotes: [] }));
    expect(r.status).toBe(200);
    expect(r.json.status).toBe('contraindicated');
    expect(r.json.result.checks.find((c: any) => c.name === 'evidence.format').status).toBe('fail');
    // the nonce was consumed: sending again is a replay
    const again = await post('/verify', JSON.stringify({ schema: 'hyperenclave/evidence', version: 1, nonce: ch.nonce, quotes: [] }));
    expect(again.json.result.checks.find((c: any) => c.name === 'nonce.freshness')).toMatchObject({ status: 'fail', reason: expect.stringMatching(/already used/) });
    const unknown = await post('/verify', JSON.stringify({ nonce: 'ab'.repeat(32) }));
    expect(unknown.json.result.checks.find((c: any) => c.name === 'nonce.freshness').reason).toMatch(/not issued/);
  });

  it('closes a slowloris connection that never finishes its headers', async () => {
    const t0 = Date.now();
    const closed = await new Promise<boolean>((resolve) => {
      const s = connect(Number(new URL(svc.url).port), '127.0.0.1');
      s.on('connect', () => {
        s.write('POST /verify HTTP/1.1\r\nHost: x\r\n');
        const iv = setInterval(() => s.writable && s.write('X-Slow: 1\r\n'), 200);
        s.on('close', () => (clearInterval(iv), resolve(true)));
        setTimeout(() => (clearInterval(iv), s.destroy(), resolve(false)), 8000);
      });
      s.on('data', () => {});
      s.on('error', () => {});
    });
    expect(closed).toBe(true);
    expect(Date.now() - t0).toBeLessThan(6000);
    // and the service still answers
    expect((await post('/challenge', '{}')).status).toBe(200);
  });
});

describe('NonceStore', () => {
  it('fresh once, then used; expired after ttl; unknown otherwise; bounded', () => {
    let now = 1000;
    const s = new NonceStore(100, 3, () => now);
    const { nonce } = s.issue();
    expect(s.consume(nonce)).toBe('fresh');
    expect(s.consume(nonce)).toBe('used');
    const late = s.issue().nonce;
    now += 101;
    expect(s.consume(late)).toBe('expired');
    expect(s.consume('00'.repeat(32))).toBe('unknown');
    for (let i = 0; i < 10; i++) s.issue();
    expect(s.size).toBeLessThanOrEqual(3);
  });
  it('jsonDepthExceeds ignores brackets inside strings', () => {
    expect(jsonDepthExceeds('{"a":"[[[[[[[[[["}', 2)).toBe(false);
    expect(jsonDepthExceeds('[[[1]]]', 2)).toBe(true);
  });
});
