import { describe, expect, it } from 'vitest';
import type { Command } from 'commander';
import { Command as CommanderCommand } from 'commander';
import { buildProgram } from '../../src/cli/program.js';
import { COMMAND_GROUPS, invokedGroup } from '../../src/cli/commands/index.js';
import { cliMissing, runCli } from '../helpers/cli.js';
import { skipUnless } from '../helpers/require.js';

/** Every command group registered, as `--help` and completion see the tree. */
const fullProgram = await buildProgram();

const missing = skipUnless('the --help process test', [['cli', cliMissing()]]);

describe('command groups (src/cli/commands/index.ts): a run loads only the group it invokes', () => {
  it('each group registers exactly the top-level commands it names, and together they are the whole tree', async () => {
    for (const g of COMMAND_GROUPS) {
      const p = new CommanderCommand('x');
      (await g.load())(p);
      expect(p.commands.map((c) => c.name()), g.file).toEqual(g.names);
    }
    expect(COMMAND_GROUPS.flatMap((g) => g.names)).toEqual(fullProgram.commands.map((c) => c.name()));
  });

  it('finds the command word past global options and their values', () => {
    const values = new Set(['--platform', '--config', '--state-dir', '--tcti']);
    const file = (args: string[]) => invokedGroup(args, values)?.file;
    expect(file(['pcr', 'read'])).toBe('tpm');
    expect(file(['--platform', 'emulated', '--state-dir', 'verify', 'status'])).toBe('hypervisor');
    expect(file(['--tcti=swtpm:port=1', '--json', 'verify', 'x.json'])).toBe('attest');
    expect(file(['--help'])).toBeUndefined();
    expect(file(['help', 'pcr'])).toBeUndefined();
    expect(file(['completion', 'bash'])).toBeUndefined();
    expect(file(['no-such-command'])).toBeUndefined();
  });

  it('a single command loads only its group (exact same help as in the whole tree)', async () => {
    const one = await buildProgram(['node', 'hyperenclave', '--json', 'pcr', 'read']);
    expect(one.commands.map((c) => c.name())).toEqual(['tpm', 'pcr']);
    const pcrRead = (p: Command) => p.commands.find((c) => c.name() === 'pcr')!.commands.find((c) => c.name() === 'read')!.helpInformation();
    expect(pcrRead(one)).toBe(pcrRead(fullProgram));
  });
});

/** Every command path in the commander tree: [], ['tpm'], ['tpm', 'info'], … */
function commandPaths(cmd: Command, prefix: string[] = []): string[][] {
  return [prefix, ...cmd.commands.flatMap((c) => commandPaths(c, [...prefix, c.name()]))];
}

describe.skipIf(!!missing)('--help on every command (built CLI as a process)', () => {
  const paths = commandPaths(fullProgram);

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
