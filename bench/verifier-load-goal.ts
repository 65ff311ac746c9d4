/**
 * `make bench-verifier`: the issue's load goal, side by side. Each setup runs 5,000 simulated
 * agents every 10 s (500 verifications/s) for HE_LOAD_DURATION seconds (default 120); then, when
 * a setup misses the goal, lower rates (250, 100 /s) to find the ceiling it holds.
 * Writes bench/results/verifier-load.{json,md}.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runLoad, type LoadResult } from './verifier-load.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const duration = Number(process.env.HE_LOAD_DURATION ?? 120);
const lost = (r: LoadResult) => r.lost.errors + r.lost.notAffirming + r.lost.missingFromHistory + r.lost.unfinished;
const holds = (r: LoadResult) => !r.stoppedEarly && lost(r) === 0 && r.overruns === 0 && r.latencyMs.p99 < 250 && r.achievedPerS >= 0.95 * r.offeredPerS;
const results: LoadResult[] = [];
for (const setup of ['1-sqlite', '1-pg', '2-pg'] as const) {
  for (const agents of [5000, 2500, 1000]) {
    process.stderr.write(`verifier load: ${setup}, ${agents} agents every 10 s, ${duration} s…\n`);
    const r = await runLoad({ agents, periodS: 10, durationS: duration, setup, maxOutstanding: 20_000 });
    results.push(r);
    if (holds(r)) break;
  }
}
const lines = [
  '# Verifier load',
  '',
  `Run ${new Date().toISOString()}, Node ${process.version}, loopback; the load generator shares the machine. "holds" = p99 < 250 ms, nothing lost, no overrun, >= 95% of the offered rate.`,
  '',
  '| setup | agents / period | offered /s | achieved /s | p50 ms | p99 ms | lost | overruns | holds | CPU ms per verification (verifiers / generator) | server ms per verification (mean, by phase) |',
  '|---|---|---|---|---|---|---|---|---|---|---|',
  ...results.map((r) => `| ${r.setup} | ${r.agents} / ${r.periodS} s | ${r.offeredPerS} | ${r.achievedPerS} | ${r.latencyMs.p50} | ${r.latencyMs.p99} | ${lost(r)} | ${r.overruns} | ${holds(r) ? 'yes' : 'no'} | ${r.cpuMsPerVerification.verifiers} / ${r.cpuMsPerVerification.generator} | ${Object.entries(r.phasesMsMean).map(([k, v]) => `${k} ${v}`).join(', ')} |`),
];
mkdirSync(join(repoRoot, 'bench', 'results'), { recursive: true });
writeFileSync(join(repoRoot, 'bench', 'results', 'verifier-load.json'), JSON.stringify({ schema: 'hyperenclave/verifier-load', version: 1, results }, null, 2) + '\n');
writeFileSync(join(repoRoot, 'bench', 'results', 'verifier-load.md'), lines.join('\n') + '\n');
process.stdout.write(lines.join('\n') + '\n');
