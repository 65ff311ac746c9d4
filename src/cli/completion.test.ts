import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildProgram } from './program.js';
import { bashCompletion, zshCompletion } from './completion.js';
import { commandMissing, skipUnless } from '../../test/helpers/require.js';

/** Every command group registered, as `--help` and completion see the tree. */
const fullProgram = await buildProgram();

const has = (c: 'bash' | 'zsh', what: string) => !skipUnless(what, [[c, commandMissing(c, c)]]);
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

  it.skipIf(!has('zsh', 'zsh completion syntax check'))('zsh script parses', () => {
    const file = join(dir, '_hyperenclave');
    writeFileSync(file, zshCompletion(fullProgram));
    const r = spawnSync('zsh', ['-n', file], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });
});
