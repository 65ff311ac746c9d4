import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildProgram } from './program.js';
import { bashCompletion, fishCompletion, zshCompletion } from './completion.js';
import { commandMissing, skipUnless } from '../../test/helpers/require.js';

/** Every command group registered, as `--help` and completion see the tree. */
const fullProgram = await buildProgram();

const has = (c: 'bash' | 'zsh' | 'fish', what: string) => !skipUnless(what, [[c, commandMissing(c, c)]]);
const dir = mkdtempSync(join(tmpdir(), 'he-compl-'));

function complete(words: string[]): string[] {
  const file = join(dir, 'c.bash');
  writeFileSync(file, bashCompletion(fullProgram));
  const script = `source ${file}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _hyperenclave; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.split('\n').filter(Boolean);
}

describe('shell completion', () => {
  it.skipIf(!has('bash', 'bash completion'))('bash completes commands, subcommands and options from the live command tree', () => {
    expect(complete(['hyperenclave', 'fir'])).toEqual(['firmware']);
    expect(complete(['hyperenclave', 'firmware', 'mem'])).toEqual(['memmap']);
    expect(complete(['hyperenclave', '--json', 'firmware', 'memmap', '--epc'])).toEqual(['--epc-mib']);
    expect(complete(['hyperenclave', 'emulator', 's'])).toEqual(['start', 'stop', 'status']);
  });

  it.skipIf(!has('bash', 'bash completion'))('bash: each global option offered once; file names for arguments and option values (-o default)', () => {
    const script = bashCompletion(fullProgram);
    for (const line of script.split('\n').filter((l) => / opts="/.test(l))) {
      const words = /opts="([^"]*)"/.exec(line)![1]!.split(' ');
      expect(words.length, line).toBe(new Set(words).size);
    }
    expect(complete(['hyperenclave', '--j'])).toEqual(['--json']);
    expect(complete(['hyperenclave', 'pcr', 'read', '--v'])).toEqual(['--verbose']);
    expect(complete(['hyperenclave', 'pcr', 'read', '--vers'])).toEqual([]); // --version is the top level's only
    // An argument, or the value of an option: nothing from us, so bash's default completes file names.
    expect(complete(['hyperenclave', 'verify', ''])).toEqual([]);
    expect(complete(['hyperenclave', 'verify', 'ev.json', '--policy', ''])).toEqual([]);
    expect(complete(['hyperenclave', '--state-dir', ''])).toEqual([]);
    expect(script).toMatch(/^complete -o default -F _hyperenclave hyperenclave$/m);
  });

  it.skipIf(!has('fish', 'fish completion'))('fish: subcommands with descriptions, options per command, file names for arguments', () => {
    const file = join(dir, 'hyperenclave.fish');
    writeFileSync(file, fishCompletion(fullProgram));
    expect(spawnSync('fish', ['-n', file], { encoding: 'utf8' }).status).toBe(0);
    const fish = (line: string): string[] => {
      const r = spawnSync('fish', ['-c', `source ${file}; complete -C ${JSON.stringify(line)}`], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]!);
    };
    expect(fish('hyperenclave pc')).toEqual(['pcr']);
    expect(fish('hyperenclave --json pcr ').sort()).toEqual(['extend', 'read']);
    expect(fish('hyperenclave pcr read --ba')).toEqual(['--bank']);
    expect(fish('hyperenclave --platform emulated emulator st').sort()).toEqual(['start', 'status', 'stop']);
    writeFileSync(join(dir, 'evidence-1.json'), '{}');
    expect(fish(`hyperenclave verify ${join(dir, 'evidence-')}`)).toEqual([join(dir, 'evidence-1.json')]);
  });

  it.skipIf(!has('zsh', 'zsh completion syntax check'))('zsh script parses', () => {
    const file = join(dir, '_hyperenclave');
    writeFileSync(file, zshCompletion(fullProgram));
    const r = spawnSync('zsh', ['-n', file], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });
});
