// Runs every bench/*.bench.ts (compiled to dist/bench) and writes bench/results/latest.{json,md}.
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { speedup, type BenchFn, type BenchRow } from './harness.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..');
const only = process.argv.slice(2);
const loadAtStart = loadavg()[0]!;

const files = readdirSync(here)
  .filter((f) => f.endsWith('.bench.js'))
  .filter((f) => only.length === 0 || only.some((o) => f.startsWith(o)))
  .sort();

const results: { suite: string; rows: BenchRow[]; error?: string }[] = [];
for (const f of files) {
  const suite = f.replace(/\.bench\.js$/, '');
  process.stderr.write(`bench: ${suite}…\n`);
  try {
    const mod = (await import(pathToFileURL(join(here, f)).href)) as { default: BenchFn };
    results.push({ suite, rows: await mod.default() });
  } catch (e) {
    results.push({ suite, rows: [], error: e instanceof Error ? e.message : String(e) });
  }
}

const fmt = (n: number): string => (Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 1 ? n.toFixed(2) : n.toPrecision(3));
const cell = (s: string): string => s.replace(/\|/g, '/').replace(/\n/g, ' ');
const vendor = /^vendor_id\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
const machine = `${cpus()[0]?.model.trim() ?? 'unknown CPU'} (${vendor}), ${cpus().length} CPUs, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, ${process.platform}/${process.arch}, Node ${process.version}, 1-minute load average ${loadAtStart.toFixed(1)} at the start`;
const side = (s: BenchRow['ours']): string => `${s.scope}: ${cell(s.label)}: ${fmt(s.value)} ${s.unit}`;
const rowLine = (suite: string, row: BenchRow): string =>
  `| ${suite} | ${cell(row.name)} | ${side(row.ours)} | ${side(row.anchor)} | ${fmt(speedup(row.ours.value, row.anchor.value, row.higherIsBetter))}x | ${cell(row.target ?? '')}${row.met === undefined ? '' : row.met ? ' (met)' : ' (MISSED)'} | ${cell(row.note ?? '')} |`;
const header = ['| suite | benchmark | ours | anchor | speed-up | target | note |', '|---|---|---|---|---|---|---|'];
const lines = [
  '# Benchmarks',
  '',
  `Run: ${new Date().toISOString()}`,
  `Machine: ${machine}`,
  '',
  'Speed-up > 1 means ours is faster. Each side says how it was measured: `process` (a whole process, exec to exit),',
  '`in-process` (inside one long-lived process: no start-up, state such as a TPM connection kept) or `derived`.',
  '',
  '## Headline',
  '',
  ...header,
  ...results.flatMap((r) => r.rows.filter((row) => row.headline).map((row) => rowLine(r.suite, row))),
  '',
  '## All rows',
  '',
  ...header,
];
for (const r of results) {
  if (r.error) lines.push(`| ${r.suite} | (failed) | | | | | ${cell(r.error)} |`);
  for (const row of r.rows) lines.push(rowLine(r.suite, row));
}
const outDir = join(repoRoot, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
for (const [name, body] of [
  ['latest.json', JSON.stringify({ schema: 'hyperenclave/bench', version: 1, date: new Date().toISOString(), machine, cpuVendor: vendor, results }, null, 2) + '\n'],
  ['latest.md', lines.join('\n') + '\n'],
] as const) {
  const tmp = join(outDir, `.${name}.tmp`);
  writeFileSync(tmp, body);
  renameSync(tmp, join(outDir, name));
}
process.stdout.write(lines.join('\n') + '\n');
if (results.some((r) => r.error)) process.exitCode = 1;
