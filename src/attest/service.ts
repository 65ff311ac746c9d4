import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { startMonitor, type MonitorOptions, type RunningMonitor } from '../verifier/monitor.js';
import { serverTlsOptions, type TlsMaterial } from '../verifier/tls.js';
import { VerifierMetrics, routeOf } from '../verifier/metrics.js';
import type { Logger } from '../log.js';
import { releaseResource, type KbsResource } from '../verifier/kbs.js';
import type { AddressInfo } from 'node:net';
import { AttestError } from './errors.js';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Verifier } from './verifier.js';
import type { EnrollStartRequest } from './enroll.js';
import { finishEnrollmentStored, importFileEnrollments, issueChallenge, startEnrollmentStored, verifyWithStore } from '../verifier/engine.js';
import { publicJwk } from '../verifier/ear.js';
import { defaultDbUrl, openVerifierStore, type VerifierStore } from '../verifier/store.js';

export interface ServiceOptions {
  verifier: Verifier;
  /**
   * Shared state (nonces, enrollments, clocks, history): an open store, or a database URL
   * (`postgresql://…`, `sqlite:<file>`); default: SQLite in the verifier's state directory.
   */
  store?: VerifierStore;
  dbUrl?: string;
  /** Serve HTTPS; with `ca`, clients must present a certificate chaining to it (mutual TLS). */
  tls?: TlsMaterial;
  /** Attest every host in the `hosts` table at this interval (continuous attestation). */
  monitor?: Omit<MonitorOptions, 'verifier' | 'store'>;
  /** How long attestation history is kept (default 7 days; 0 keeps it forever). */
  historyRetentionMs?: number;
  /** Key broker resources (verifier serve --kbs-policy): POST /kbs/resource. */
  kbs?: Map<string, KbsResource>;
  /** One line per request (method, route, status, duration, peer) at info; errors at warn/error. */
  logger?: Logger;
  host?: string;
  port?: number;
  /** Largest accepted request body (default 4 MiB). */
  maxBodyBytes?: number;
  /** Deepest accepted JSON nesting (default 32). */
  maxJsonDepth?: number;
  nonceTtlMs?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** How often Node checks the two timeouts above (default 1 s). */
  timeoutCheckMs?: number;
  maxConnections?: number;
}

export interface RunningService {
  server: Server;
  url: string;
  store: VerifierStore;
  monitor?: RunningMonitor;
  metrics: VerifierMetrics;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Nesting depth of a JSON text, counted outside strings, stopping early past `limit`. */
export function jsonDepthExceeds(text: string, limit: number): boolean {
  let depth = 0;
  let inStr = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inStr) {
      if (ch === 0x5c) i++;
      else if (ch === 0x22) inStr = false;
    } else if (ch === 0x22) inStr = true;
    else if (ch === 0x7b || ch === 0x5b) {
      if (++depth > limit) return true;
    } else if (ch === 0x7d || ch === 0x5d) depth--;
  }
  return false;
}

function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > max) {
      reject(new HttpError(413, `request body of ${declared} bytes exceeds ${max}`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > max) {
        failed = true;
        reject(new HttpError(413, `request body exceeds ${max} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => !failed && resolve(Buffer.concat(chunks)));
    req.on('error', (e) => !failed && ((failed = true), reject(new HttpError(400, `request error: ${e.message}`))));
  });
}

function send(res: ServerResponse, status: number, body: unknown, close = false): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...(close ? { connection: 'close' } : {}) });
  res.end(text);
}

/**
 * The verifier service: POST /challenge, /verify, /enroll/start, /enroll/finish; JSON in and
 * out; loopback by default; bounded body size, nesting depth, header and request time.
 */
export async function startVerifierService(opts: ServiceOptions): Promise<RunningService> {
  const maxBody = opts.maxBodyBytes ?? 4 * 1024 * 1024;
  const maxDepth = opts.maxJsonDepth ?? 32;
  const ttl = opts.nonceTtlMs ?? (opts.verifier.loaded.policy.nonce?.ttlSeconds ?? 300) * 1000;
  const v = opts.verifier;
  const ownStore = !opts.store;
  const store = opts.store ?? (await openVerifierStore(opts.dbUrl ?? defaultDbUrl(v.state.dir)));
  await importFileEnrollments(v, store);
  await store.publishKey(v.state.key().kid, { ...(await publicJwk(v.state.key())) });
  // Expired nonces are dropped once they can no longer be told "expired" rather than "unknown".
  const metrics = new VerifierMetrics(store);
  const retention = opts.historyRetentionMs ?? 7 * 86_400_000;
  const pruner = setInterval(() => {
    void store.pruneNonces(Date.now() - ttl).catch(() => undefined);
    if (retention > 0) void store.pruneHistory(Date.now() - retention).catch(() => undefined);
  }, Math.max(1000, Math.min(ttl, 60_000)));
  pruner.unref();

  async function json(req: IncomingMessage): Promise<unknown> {
    const ct = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (ct !== 'application/json') throw new HttpError(415, `content-type must be application/json, got "${ct.slice(0, 60)}"`);
    const body = await readBody(req, maxBody);
    const text = body.toString('utf8');
    if (jsonDepthExceeds(text, maxDepth)) throw new HttpError(400, `JSON nested deeper than ${maxDepth}`);
    try {
      return text.length ? JSON.parse(text) : {};
    } catch (e) {
      throw new HttpError(400, `body is not JSON: ${(e as Error).message}`);
    }
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && url === '/healthz') return send(res, 200, { ok: true });
    // Every instance's result-signing key (instances sharing a database publish theirs there).
    if (req.method === 'GET' && (url === '/.well-known/jwks.json' || url === '/jwks')) return send(res, 200, { keys: (await store.listKeys()).map((k) => k.jwk) });
    if (req.method === 'GET' && url === '/hosts') return send(res, 200, { hosts: await store.listHosts() });
    if (req.method === 'GET' && url === '/metrics') {
      const text = await metrics.registry.metrics();
      res.writeHead(200, { 'content-type': metrics.registry.contentType, 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if (req.method !== 'POST') throw new HttpError(405, `${req.method} not allowed; use POST`);
    switch (url) {
      case '/challenge': {
        await json(req);
        return send(res, 200, await issueChallenge(store, ttl, randomBytes(32).toString('hex')));
      }
      case '/verify': {
        const doc = await json(req);
        const nonce = doc && typeof doc === 'object' ? (doc as { nonce?: unknown }).nonce : undefined;
        if (typeof nonce !== 'string' || !/^([0-9a-f]{2}){8,64}$/.test(nonce)) throw new HttpError(400, 'evidence has no hex "nonce" (8-64 bytes)');
        const t0 = process.hrtime.bigint();
        const out = await verifyWithStore(v, store, doc, nonce);
        const ts = process.hrtime.bigint();
        const jwt = await out.ear();
        for (const [phase, sec] of Object.entries(out.phases)) metrics.phases.observe({ phase }, sec);
        metrics.phases.observe({ phase: 'sign' }, Number(process.hrtime.bigint() - ts) / 1e9);
        metrics.verifications.inc({ status: out.result['ear.status'] });
        metrics.latency.observe({ source: 'service' }, Number(process.hrtime.bigint() - t0) / 1e9);
        return send(res, 200, { status: out.result['ear.status'], result: out.result, jwt });
      }
      case '/kbs/resource': {
        if (!opts.kbs) throw new HttpError(404, 'no key broker: start the verifier with --kbs-policy');
        const body = (await json(req)) as { resource?: unknown; evidence?: unknown };
        const out = await releaseResource(v, store, opts.kbs, body ?? {});
        return send(res, out.status, out.body);
      }
      case '/enroll/start': {
        const body = (await json(req)) as EnrollStartRequest;
        return send(res, 200, await startEnrollmentStored(v, store, body));
      }
      case '/enroll/finish': {
        const body = (await json(req)) as { id?: unknown; secret?: unknown };
        if (typeof body?.id !== 'string' || typeof body.secret !== 'string') throw new HttpError(400, 'expected {"id": hex, "secret": base64}');
        return send(res, 200, await finishEnrollmentStored(v, store, { id: body.id, secret: body.secret }));
      }
      default:
        throw new HttpError(404, `no endpoint ${url?.slice(0, 100)}`);
    }
  };

  const serverOpts = {
    headersTimeout: opts.headersTimeoutMs ?? 10_000,
    requestTimeout: opts.requestTimeoutMs ?? 30_000,
    connectionsCheckingInterval: opts.timeoutCheckMs ?? 1_000,
    maxHeaderSize: 16 * 1024,
    keepAliveTimeout: 5_000,
  };
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    const t0 = process.hrtime.bigint();
    const route = routeOf((req.url ?? '/').split('?')[0]!);
    res.on('finish', () => {
      metrics.requests.inc({ route, code: String(res.statusCode) });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const line = { method: req.method, route, status: res.statusCode, ms: Math.round(ms * 10) / 10, peer: req.socket.remoteAddress };
      if (res.statusCode >= 500) opts.logger?.error(line, 'request failed');
      else if (res.statusCode >= 400) opts.logger?.warn(line, 'request refused');
      else opts.logger?.info(line, 'request');
    });
    handle(req, res).catch((e: unknown) => {
      if (e instanceof HttpError) send(res, e.status, { error: e.message }, e.status === 413);
      else if (e instanceof AttestError) send(res, 400, { error: e.message });
      else {
        opts.logger?.error({ err: (e as Error).message, route }, 'internal error');
        send(res, 500, { error: 'internal error' });
      }
      if (e instanceof HttpError && e.status === 413) req.destroy();
    });
  };
  const server: Server = opts.tls ? createHttpsServer({ ...serverOpts, ...serverTlsOptions(opts.tls) }, listener) : createServer(serverOpts, listener);
  server.maxConnections = opts.maxConnections ?? 512;
  server.on('clientError', (_err: Error, socket: import('node:stream').Duplex) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"error":"bad request"}');
    else socket.destroy();
  });
  const host = opts.host ?? '127.0.0.1';
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, host, () => resolve());
    });
  } catch (e) {
    clearInterval(pruner);
    if (ownStore) await store.close();
    throw e;
  }
  const addr = server.address() as AddressInfo;
  const m = opts.monitor;
  const monitor = m
    ? startMonitor({
        ...m,
        verifier: v,
        store,
        onVerdict: (e) => {
          metrics.verifications.inc({ status: e.status });
          metrics.latency.observe({ source: 'monitor' }, e.ms / 1000);
          opts.logger?.[e.state === 'revoked' ? 'warn' : 'info']({ host: e.hostId, status: e.status, state: e.state, ms: e.ms, ...(e.status !== 'affirming' ? { reason: e.reason } : {}) }, 'host attested');
          m.onVerdict?.(e);
        },
        onRevocation: (ev) => {
          metrics.revocations.inc();
          opts.logger?.error({ host: ev.hostId, status: ev.status, reason: ev.reason }, 'host revoked');
          m.onRevocation?.(ev);
        },
        onWebhookError: (url, err) => {
          opts.logger?.error({ webhook: url, err }, 'revocation webhook not delivered');
          m.onWebhookError?.(url, err);
        },
      })
    : undefined;
  return {
    server,
    url: `${opts.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${addr.port}`,
    store,
    metrics,
    ...(monitor ? { monitor } : {}),
    close: async () => {
      clearInterval(pruner);
      await monitor?.stop();
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      if (ownStore) await store.close();
    },
  };
}
