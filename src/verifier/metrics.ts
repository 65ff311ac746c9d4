/**
 * Prometheus metrics for the verifier (prom-client, text exposition on GET /metrics):
 *   hyperenclave_verifications_total{status}        verdicts by EAR status (service and monitor)
 *   hyperenclave_verification_duration_seconds      POST /verify and monitor round-trip latency
 *   hyperenclave_http_requests_total{route,code}    requests by route and status code
 *   hyperenclave_hosts{state}                       enrolled hosts by state (read from the database at scrape)
 *   hyperenclave_revocations_total                  revocation events emitted by this instance
 *   hyperenclave_verification_phase_seconds{phase}  where a verification's time goes
 * plus prom-client's default process metrics. Each service has its own registry.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { VerifierStore } from './store.js';

export class VerifierMetrics {
  readonly registry = new Registry();
  readonly verifications: Counter<'status'>;
  readonly latency: Histogram<'source'>;
  readonly requests: Counter<'route' | 'code'>;
  readonly revocations: Counter;
  readonly phases: Histogram<'phase'>;
  constructor(store: VerifierStore) {
    const registers = [this.registry];
    this.verifications = new Counter({ name: 'hyperenclave_verifications_total', help: 'Verdicts issued, by EAR status', labelNames: ['status'], registers });
    this.latency = new Histogram({
      name: 'hyperenclave_verification_duration_seconds',
      help: 'Time to verify one piece of evidence (service: request received to verdict sent; monitor: challenge to verdict)',
      labelNames: ['source'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.requests = new Counter({ name: 'hyperenclave_http_requests_total', help: 'HTTP requests by route and status code', labelNames: ['route', 'code'], registers });
    this.phases = new Histogram({
      name: 'hyperenclave_verification_phase_seconds',
      help: 'Time per phase of one verification: ak (AK key from the bundle), begin (consume the nonce, read enrollment and clock), checks (verify.ts), record (clock record, history), sign (EAR JWT)',
      labelNames: ['phase'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers,
    });
    this.revocations = new Counter({ name: 'hyperenclave_revocations_total', help: 'Revocation events emitted by this instance', registers });
    new Gauge({
      name: 'hyperenclave_hosts',
      help: 'Hosts under continuous attestation, by state (from the shared database)',
      labelNames: ['state'],
      registers,
      async collect() {
        const counts: Record<string, number> = { pending: 0, affirming: 0, warning: 0, revoked: 0 };
        for (const h of await store.listHosts()) counts[h.state] = (counts[h.state] ?? 0) + 1;
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'hyperenclave_' });
  }
}

/** The route label: known paths as they are, anything else "other" (bounded label cardinality). */
export function routeOf(url: string): string {
  return ['/challenge', '/verify', '/enroll/start', '/enroll/finish', '/hosts', '/healthz', '/metrics', '/.well-known/jwks.json', '/jwks', '/kbs/resource'].includes(url) ? url : 'other';
}
