/**
 * Continuous attestation: every enrolled host (table `hosts`) is attested at a fixed interval.
 * Each round an instance leases the hosts that are due (several instances sharing PostgreSQL
 * split them, a host is never attested by two at once), sends each agent a fresh nonce,
 * verifies the evidence with the shared state (verifyWithStore), records the verdict and the
 * host's state. A host that stops affirming (evidence contraindicated, evidence refused, no
 * answer) is revoked: a revocation event is recorded and POSTed to every configured webhook.
 * Revocation is sticky: `verifier hosts add` again (after the host is repaired) resets it.
 */
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Verifier } from '../attest/verifier.js';
import { issueChallenge, verifyWithStore } from './engine.js';
import type { HostRecord, HostState, VerifierStore } from './store.js';
import type { TlsMaterial } from './tls.js';

export interface MonitorOptions {
  verifier: Verifier;
  store: VerifierStore;
  /** Attestation period per host. */
  intervalMs: number;
  /** URLs that receive revocation events (POST, JSON). */
  webhooks?: string[];
  /** Client certificate and CA for mutual TLS to agents (https agent URLs). */
  agentTls?: TlsMaterial;
  /** Hosts attested at once by this instance (default 32). */
  concurrency?: number;
  /** How long an agent may take to quote (default 30 s). */
  agentTimeoutMs?: number;
  /** Revoke on `warning` too (default: only on contraindicated/none/unreachable). */
  revokeOnWarning?: boolean;
  onVerdict?: (e: { hostId: string; status: string; state: HostState; ms: number; reason?: string }) => void;
  onRevocation?: (event: RevocationEvent) => void;
  onWebhookError?: (url: string, error: string) => void;
}

export interface RevocationEvent {
  type: 'hyperenclave.host.revoked';
  hostId: string;
  agentUrl: string;
  at: string;
  /** The verdict that revoked it: an EAR status, or "none" when the agent gave no evidence. */
  status: string;
  reason: string;
  previousState: HostState;
  akSpkiSha256?: string;
  verifierInstance: string;
  /** The EAR JWT of the revoking verdict, when evidence was verified. */
  ear?: string;
}

export interface RunningMonitor {
  /** Runs one round now (tests and `verifier attest-now`); resolves when its hosts are done. */
  tick(): Promise<number>;
  stop(): Promise<void>;
}

function postJson(url: string, body: unknown, timeoutMs: number, tls?: TlsMaterial): Promise<{ status: number; json: unknown }> {
  const u = new URL(url);
  const text = JSON.stringify(body);
  const send = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(
      u,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
        timeout: timeoutMs,
        ...(u.protocol === 'https:' && tls ? { cert: tls.cert, key: tls.key, ...(tls.ca ? { ca: tls.ca } : {}) } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > 16 * 1024 * 1024) req.destroy(new Error('answer larger than 16 MiB'));
          else chunks.push(c);
        });
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: res.statusCode ?? 0, json: raw ? JSON.parse(raw) : undefined });
          } catch {
            resolve({ status: res.statusCode ?? 0, json: undefined });
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(text);
  });
}

/** Delivers an event to one webhook: 3 attempts, 5 s each, 1 s then 2 s apart. */
async function deliver(url: string, event: RevocationEvent, onError?: (url: string, e: string) => void): Promise<boolean> {
  let last = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt) await new Promise((r) => setTimeout(r, attempt * 1000));
    try {
      const r = await postJson(url, event, 5000);
      if (r.status >= 200 && r.status < 300) return true;
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
  }
  onError?.(url, last);
  return false;
}

export function startMonitor(opts: MonitorOptions): RunningMonitor {
  const { store, verifier } = opts;
  const concurrency = opts.concurrency ?? 32;
  const ttlMs = (verifier.loaded.policy.nonce?.ttlSeconds ?? 300) * 1000;
  let stopped = false;
  let running: Promise<number> | undefined;
  const pendingDeliveries = new Set<Promise<unknown>>();

  async function attestHost(h: HostRecord): Promise<void> {
    const t0 = Date.now();
    const nonce = randomBytes(32).toString('hex');
    let status = 'none';
    let reason = '';
    let ak: string | undefined;
    let ear: string | undefined;
    try {
      await issueChallenge(store, ttlMs, nonce);
      const answer = await postJson(new URL('quote', h.agentUrl.endsWith('/') ? h.agentUrl : h.agentUrl + '/').href, { nonce }, opts.agentTimeoutMs ?? 30_000, opts.agentTls);
      if (answer.status !== 200) {
        const msg = answer.json && typeof answer.json === 'object' ? (answer.json as { error?: unknown }).error : undefined;
        throw new Error(`agent answered HTTP ${answer.status}${typeof msg === 'string' ? `: ${msg.slice(0, 200)}` : ''}`);
      }
      const out = await verifyWithStore(verifier, store, answer.json, nonce, { hostId: h.hostId });
      status = out.result['ear.status'];
      reason = out.result.firstFailure ?? (status === 'affirming' ? 'evidence affirming' : `evidence ${status}`);
      ak = out.akSpkiSha256;
      if (status !== 'affirming') ear = await out.ear();
      if (h.akSpkiSha256 && ak && ak !== h.akSpkiSha256) {
        status = 'contraindicated';
        reason = `the agent quoted with AK ${ak.slice(0, 16)}…, not the host's AK ${h.akSpkiSha256.slice(0, 16)}…`;
      }
    } catch (e) {
      status = 'none';
      reason = `no evidence from ${h.agentUrl}: ${(e as Error).message}`;
      await store.recordVerdict({ at: Date.now(), instance: store.instance, hostId: h.hostId, status: 'none', firstFailure: reason, nonce }).catch(() => undefined);
    }
    const bad = status === 'contraindicated' || status === 'none' || (status === 'warning' && opts.revokeOnWarning);
    const state: HostState = h.state === 'revoked' || bad ? 'revoked' : status === 'affirming' ? 'affirming' : 'warning';
    const now = Date.now();
    const newlyRevoked = state === 'revoked' && h.state !== 'revoked';
    await store.updateHost(h.hostId, {
      state,
      lastStatus: status,
      lastReason: reason,
      at: now,
      nextDueAt: now + opts.intervalMs,
      failures: bad ? h.failures + 1 : 0,
      ...(ak && !h.akSpkiSha256 ? { akSpkiSha256: ak } : {}),
      ...(newlyRevoked ? { revokedAt: now } : {}),
      ...(status === 'affirming' && state === 'affirming' ? { affirmedAt: now } : {}),
    });
    opts.onVerdict?.({ hostId: h.hostId, status, state, ms: now - t0, ...(reason ? { reason } : {}) });
    if (newlyRevoked) {
      const event: RevocationEvent = {
        type: 'hyperenclave.host.revoked',
        hostId: h.hostId,
        agentUrl: h.agentUrl,
        at: new Date(now).toISOString(),
        status,
        reason,
        previousState: h.state,
        ...(ak ?? h.akSpkiSha256 ? { akSpkiSha256: (ak ?? h.akSpkiSha256)! } : {}),
        verifierInstance: store.instance,
        ...(ear ? { ear } : {}),
      };
      await store.recordRevocation(h.hostId, event as unknown as Record<string, unknown>, now);
      opts.onRevocation?.(event);
      for (const url of opts.webhooks ?? []) {
        const p = deliver(url, event, opts.onWebhookError);
        pendingDeliveries.add(p);
        void p.finally(() => pendingDeliveries.delete(p));
      }
    }
  }

  async function round(): Promise<number> {
    let n = 0;
    for (;;) {
      if (stopped) return n;
      // Lease a bounded batch; the lease outlives the batch so no other instance takes these hosts.
      const due = await store.claimDueHosts(Date.now(), Math.max(opts.intervalMs, (opts.agentTimeoutMs ?? 30_000) * 2), concurrency);
      if (!due.length) return n;
      await Promise.all(due.map((h) => attestHost(h).catch(() => undefined)));
      n += due.length;
    }
  }

  const tick = (): Promise<number> => {
    running ??= round().finally(() => (running = undefined));
    return running;
  };
  const timer = setInterval(() => void tick().catch(() => undefined), Math.max(50, Math.min(1000, opts.intervalMs / 4)));
  timer.unref();
  return {
    tick,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running?.catch(() => undefined);
      await Promise.allSettled([...pendingDeliveries]);
    },
  };
}
