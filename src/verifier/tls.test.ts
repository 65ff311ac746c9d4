/**
 * TLS and mutual TLS with certificates from files (made by the openssl CLI): the verifier API
 * over HTTPS refuses a client without a certificate from the configured CA and serves one with
 * it; the monitor reaches an agent over mutual TLS and a host whose agent rejects it is revoked.
 */
import { execFileSync } from 'node:child_process';
import { request } from 'node:https';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Verifier } from '../attest/verifier.js';
import { startVerifierService } from '../attest/service.js';
import { startAgent } from './agent.js';
import { loadTls, type TlsMaterial } from './tls.js';

const dir = mkdtempSync(join(tmpdir(), 'he-tls-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const ossl = (...a: string[]) => execFileSync('openssl', a, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });

function issue(name: string, ca: string, san?: string): void {
  ossl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`);
  ossl('req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`);
  writeFileSync(join(dir, `${name}.ext`), san ? `subjectAltName=${san}\n` : 'basicConstraints=CA:FALSE\n');
  ossl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-days', '2', '-set_serial', String(Date.now() % 100000), '-extfile', `${name}.ext`, '-out', `${name}.pem`);
}

let server: TlsMaterial;
let client: TlsMaterial;
let stranger: TlsMaterial;
beforeAll(() => {
  for (const ca of ['ca', 'otherca']) {
    ossl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${ca}.key`);
    ossl('req', '-new', '-x509', '-key', `${ca}.key`, '-subj', `/CN=${ca}`, '-days', '2', '-out', `${ca}.pem`);
  }
  issue('server', 'ca', 'IP:127.0.0.1');
  issue('client', 'ca');
  issue('stranger', 'otherca');
  const f = (n: string) => join(dir, n);
  server = loadTls({ cert: f('server.pem'), key: f('server.key'), ca: f('ca.pem') });
  client = loadTls({ cert: f('client.pem'), key: f('client.key'), ca: f('ca.pem') });
  stranger = loadTls({ cert: f('stranger.pem'), key: f('stranger.key'), ca: f('ca.pem') });
}, 60_000);

function get(url: string, tls: Partial<TlsMaterial>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', ...tls, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('TLS and mutual TLS from certificate files', () => {
  it('the API over HTTPS requires a client certificate from the configured CA', async () => {
    const svc = await startVerifierService({ verifier: new Verifier({ stateDir: join(dir, 'v1') }), tls: server });
    try {
      expect(svc.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      expect(await get(`${svc.url}/healthz`, { ca: client.ca!, cert: client.cert, key: client.key })).toBe(200);
      await expect(get(`${svc.url}/healthz`, { ca: client.ca! })).rejects.toThrow(/certificate|alert|socket hang up|ECONNRESET/i);
      await expect(get(`${svc.url}/healthz`, { ca: client.ca!, cert: stranger.cert, key: stranger.key })).rejects.toThrow(/certificate|alert|socket hang up|ECONNRESET/i);
      // and the client checks the server: a client trusting another CA refuses it
      await expect(get(`${svc.url}/healthz`, { ca: readFileSync(join(dir, 'otherca.pem')), cert: client.cert, key: client.key })).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
    } finally {
      await svc.close();
    }
  });

  it('the monitor reaches an agent over mutual TLS; without the right client certificate the host gets no evidence', async () => {
    const agent = await startAgent({ tls: server, collect: async () => ({ schema: 'hyperenclave/evidence' }) as never });
    const svc = await startVerifierService({ verifier: new Verifier({ stateDir: join(dir, 'v2') }), monitor: { intervalMs: 60_000, agentTls: client } });
    const svc2 = await startVerifierService({ verifier: new Verifier({ stateDir: join(dir, 'v3') }), monitor: { intervalMs: 60_000, agentTls: stranger } });
    try {
      await svc.store.addHost({ hostId: 'tls-host', agentUrl: agent.url });
      await svc.monitor!.tick();
      // the agent answered (its dummy evidence is refused by the verifier, not by TLS)
      expect((await svc.store.getHost('tls-host'))!.lastReason).toMatch(/^evidence\.format: /);
      await svc2.store.addHost({ hostId: 'tls-host', agentUrl: agent.url });
      await svc2.monitor!.tick();
      expect((await svc2.store.getHost('tls-host'))!).toMatchObject({ state: 'revoked', lastStatus: 'none', lastReason: expect.stringMatching(/^no evidence from https:/) });
    } finally {
      await svc.close();
      await svc2.close();
      await agent.close();
    }
  });
});
