// Runs every bench/*.bench.ts (compiled to dist/bench) and writes bench/results/latest.{json,md}.
import { mkdirSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { speedup, type BenchFn, type BenchRow } from './harness.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..');
const only = process.argv.slice(2);

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
const lines = [
  '# Benchmarks',
  '',
  `Run ${new Date().toISOString()} on ${process.platform}/${process.arch}, Node ${process.version}. Speed-up > 1 means ours is faster.`,
  '',
  '| suite | benchmark | ours | anchor | speed-up | target | note |',
  '|---|---|---|---|---|---|---|',
];
for (const r of results) {
  if (r.error) lines.push(`| ${r.suite} | (failed) | | | | | ${r.error.replace(/\|/g, '/')} |`);
  for (const row of r.rows) {
    const s = speedup(row.ours.value, row.anchor.value, row.higherIsBetter);
    lines.push(
      `| ${r.suite} | ${row.name} | ${row.ours.label}: ${fmt(row.ours.value)} ${row.ours.unit} | ${row.anchor.label}: ${fmt(row.anchor.value)} ${row.anchor.unit} | ${fmt(s)}x | ${row.target ?? ''} | ${row.note ?? ''} |`,
    );
  }
}
const outDir = join(repoRoot, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
for (const [name, body] of [
  ['latest.json', JSON.stringify({ schema: 'hyperenclave/bench', version: 1, results }, null, 2) + '\n'],
  ['latest.md', lines.join('\n') + '\n'],
] as const) {
  const tmp = join(outDir, `.${name}.tmp`);
  writeFileSync(tmp, body);
  renameSync(tmp, join(outDir, name));
}
process.stdout.write(lines.join('\n') + '\n');
if (results.some((r) => r.error)) process.exitCode = 1;
