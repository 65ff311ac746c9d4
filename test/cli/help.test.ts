import { describe, expect, it } from 'vitest';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main.js';
import { cliMissing, runCli } from '../helpers/cli.js';
import { skipUnless } from '../helpers/require.js';

const missing = skipUnless('the --help process test', [['cli', cliMissing()]]);

/** Every command path in the commander tree: [], ['tpm'], ['tpm', 'info'], … */
function commandPaths(cmd: Command, prefix: string[] = []): string[][] {
  return [prefix, ...cmd.commands.flatMap((c) => commandPaths(c, [...prefix, c.name()]))];
}

describe.skipIf(!!missing)('--help on every command (built CLI as a process)', () => {
  const paths = commandPaths(buildProgram());

  it('the tree is walked whole', () => {
    const names = paths.map((p) => p.join(' '));
    for (const expected of ['', 'measure', 'verify', 'verifier serve', 'enclave run', 'firmware reference', 'firmware launch-env', 'emulator status', 'completion'])
      expect(names).toContain(expected);
    expect(paths.length).toBeGreaterThan(35);
  });

  it('each exits 0 and shows its usage and an Example section with a hyperenclave command line', async () => {
    const problems: string[] = [];
    // Two at a time: one node process each.
    for (let i = 0; i < paths.length; i += 2) {
      await Promise.all(
        paths.slice(i, i + 2).map(async (p) => {
          const r = await runCli([...p, '--help']);
          const name = `hyperenclave ${p.join(' ')}`.trim();
          if (r.code !== 0) problems.push(`${name} --help: exit ${r.code} ${r.stderr}`);
          else if (!r.stdout.startsWith(`Usage: ${name}`)) problems.push(`${name} --help: no usage line`);
          else if (!/\nExamples?:\n {2}hyperenclave /.test(r.stdout)) problems.push(`${name} --help: no Example section`);
        }),
      );
    }
    expect(problems).toEqual([]);
  });
});
