/**
 * The verifier under load (bench/verifier-load.ts), short: 5,000 simulated agents attesting
 * every 10 s (500 verifications/s offered) for 20 s, one instance on SQLite against two
 * instances sharing PostgreSQL. `make bench-verifier` runs the full two-minute goal.
 */
import type { BenchRow } from './harness.js';
import { runLoad, type LoadResult } from './verifier-load.js';

export default async function bench(): Promise<BenchRow[]> {
  const agents = Number(process.env.HE_LOAD_AGENTS ?? 5000);
  const periodS = Number(process.env.HE_LOAD_PERIOD ?? 10);
  const durationS = Number(process.env.HE_LOAD_DURATION ?? 20);
  const one = await runLoad({ agents, periodS, durationS, setup: '1-sqlite', maxOutstanding: 20_000 });
  const two = await runLoad({ agents, periodS, durationS, setup: '2-pg', maxOutstanding: 20_000 });
  const lost = (r: LoadResult) => r.lost.errors + r.lost.notAffirming + r.lost.missingFromHistory + r.lost.unfinished;
  const note = (r: LoadResult) => `${r.setup}: p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, lost ${lost(r)}, overruns ${r.overruns}; server ms/verification ${JSON.stringify(r.phasesMsMean)}`;
  return [
    {
      name: `verifications/s held, ${agents} agents every ${periodS} s for ${durationS} s`,
      ours: { label: '2 instances + PostgreSQL (processes, loopback HTTP)', value: two.achievedPerS, unit: '/s', scope: 'process' },
      anchor: { label: '1 instance + SQLite (process, loopback HTTP)', value: one.achievedPerS, unit: '/s', scope: 'process' },
      ratio: two.achievedPerS / one.achievedPerS,
      higherIsBetter: true,
      target: `${agents / periodS}/s, p99 < 250 ms, none lost`,
      note: `${note(two)} | ${note(one)}`,
    },
    {
      name: 'p99 latency, challenge to verdict',
      ours: { label: '2 instances + PostgreSQL (processes, loopback HTTP)', value: two.latencyMs.p99, unit: 'ms', scope: 'process' },
      anchor: { label: '1 instance + SQLite (process, loopback HTTP)', value: one.latencyMs.p99, unit: 'ms', scope: 'process' },
      ratio: one.latencyMs.p99 / two.latencyMs.p99,
      higherIsBetter: false,
      target: '< 250 ms',
      note: 'loopback; load generator in its own process on the same machine',
    },
  ];
}
