import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/cli.js';

/** bench/readme-table.mjs copies the headline of a results file into a README between its markers. */
const script = join(repoRoot, 'bench', 'readme-table.mjs');
const RESULTS = [
  '# Benchmarks',
  '',
  'Run: 2026-12-04T18:00:00.000Z',
  'Machine: AMD EPYC 7763 64-Core Processor (AuthenticAMD), 2 CPUs, 7.8 GiB, linux/x64, Node v20.19.0',
  '',
  '## Headline',
  '',
  '| suite | benchmark | ours | anchor | speed-up | target | note |',
  '|---|---|---|---|---|---|---|',
  '| cli | hyperenclave --version, exec to exit | process: hyperenclave --version: 50.0 ms | process: node -e 0: 45.0 ms | 0.90x | <= 1.3x node -e 0 (met) | |',
  '',
  '## All rows',
  '',
  '| suite | benchmark | ours | anchor | speed-up | target | note |',
  '|---|---|---|---|---|---|---|',
  '| cli | not a headline row | process: x: 1 ms | process: y: 1 ms | 1.00x | | |',
  '',
].join('\n');

describe('bench/readme-table.mjs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'he-readme-'));
  const results = join(dir, 'latest.md');
  const readme = join(dir, 'README.md');
  const run = (...extra: string[]) => spawnSync(process.execPath, [script, '--results', results, '--readme', readme, ...extra], { encoding: 'utf8' });

  it('replaces what lies between the markers with the run, machine, CPU vendor and headline table only', () => {
    writeFileSync(results, RESULTS);
    writeFileSync(readme, '# X\n\n## Benchmarks\n\n<!-- bench-table:begin (generated) -->\nold table\n<!-- bench-table:end -->\n\n## Next\n');
    expect(run('--check').status).toBe(1);
    const r = run();
    expect(r.status, r.stderr).toBe(0);
    const text = readFileSync(readme, 'utf8');
    expect(text).toContain('One `make bench` run, 2026-12-04T18:00:00.000Z, on AMD EPYC 7763 64-Core Processor (AuthenticAMD), 2 CPUs');
    expect(text).toContain('| cli | hyperenclave --version, exec to exit | process: hyperenclave --version: 50.0 ms | process: node -e 0: 45.0 ms | 0.90x |');
    expect(text).not.toContain('old table');
    expect(text).not.toContain('not a headline row');
    expect(text.startsWith('# X\n\n## Benchmarks\n\n<!-- bench-table:begin')).toBe(true);
    expect(text.endsWith('<!-- bench-table:end -->\n\n## Next\n')).toBe(true);
    expect(run('--check').status).toBe(0);
  });

  it('refuses a results file without a headline, and a README without markers, writing nothing', () => {
    writeFileSync(results, RESULTS.replace('## Headline', '## Other'));
    const before = readFileSync(readme, 'utf8');
    const r = run();
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/no "## Headline" section/);
    expect(readFileSync(readme, 'utf8')).toBe(before);
    writeFileSync(results, RESULTS);
    writeFileSync(readme, '# no markers\n');
    expect(run().stderr).toMatch(/no <!-- bench-table:begin/);
    rmSync(dir, { recursive: true, force: true });
  });
});
