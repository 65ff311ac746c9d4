/**
 * The attestation agent (`hyperenclave agent serve`): answers the verifier's challenges.
 *
 * Pull, not push (as Keylime's verifier pulls from its agents): the verifier picks every nonce,
 * so freshness never depends on the host's clock or goodwill; the verifier notices a host that
 * stops answering (a missing quote is itself a verdict), and the agent keeps no state about the
 * verifier. The agent's one endpoint, POST /quote {"nonce": hex}, returns an evidence bundle
 * quoting the configured PCRs over that nonce. Quotes are public evidence, so answering anyone
 * leaks nothing; mutual TLS (--tls-ca) restricts who may make the TPM work.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Evidence } from '../attest/evidence.js';
import { serverTlsOptions, type TlsMaterial } from './tls.js';

export interface AgentOptions {
  /** Collects one evidence bundle over the verifier's nonce (the TPM work). */
  collect(nonce: Buffer): Promise<Evidence>;
  host?: string;
  port?: number;
  tls?: TlsMaterial;
  /** Called once per request with what happened (the CLI logs it). */
  onRequest?: (e: { status: number; ms: number; error?: string; peer?: string }) => void;
}

export interface RunningAgent {
  server: Server;
  url: string;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  // One quote at a time: the TPM is a serial device, and a queue bounds the work a caller can cause.
  let chain: Promise<unknown> = Promise.resolve();
  let queued = 0;
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const t0 = Date.now();
    const done = (status: number, body: unknown, error?: string): void => {
      send(res, status, body);
      opts.onRequest?.({ status, ms: Date.now() - t0, ...(error ? { error } : {}), ...(req.socket.remoteAddress ? { peer: req.socket.remoteAddress } : {}) });
    };
    const url = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && url === '/healthz') return done(200, { ok: true });
    if (req.method !== 'POST' || url !== '/quote') return done(404, { error: 'POST /quote {"nonce": hex}' });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 4096) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      let nonce: unknown;
      try {
        nonce = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { nonce?: unknown }).nonce;
      } catch {
        return done(400, { error: 'body is not JSON' });
      }
      if (typeof nonce !== 'string' || !/^([0-9a-f]{2}){8,64}$/.test(nonce)) return done(400, { error: 'expected {"nonce": 8-64 bytes of lower-case hex}' });
      if (queued >= 16) return done(503, { error: 'busy: 16 quotes already queued' });
      queued++;
      const job = chain.then(() => opts.collect(Buffer.from(nonce as string, 'hex')));
      chain = job.catch(() => undefined);
      job.then(
        (ev) => done(200, ev),
        (e: unknown) => done(500, { error: `quote failed: ${(e as Error).message}` }, (e as Error).message),
      ).finally(() => queued--);
    });
  };
  const server = opts.tls ? createHttpsServer(serverTlsOptions(opts.tls), handler) : createHttpServer(handler);
  server.headersTimeout = 10_000;
  server.requestTimeout = 60_000;
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    url: `${opts.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
