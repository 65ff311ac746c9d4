import { expect } from 'vitest';
import type { CliResult } from './cli.js';
import { hostImageArch } from './arch.js';

/** `firmware build` of `addon` (any ELF will do) as a raw image for this machine's arch, into `img`. */
export const rawImageArgs = (addon: string, img: string): string[] => ['firmware', 'build', addon, '-o', img, '--arch', hostImageArch(), '--raw', '--entry', '0'];

/** Runs CLI steps in order (`run` is the test's CLI runner); each must exit 0, else the step and its stderr fail the test. */
export async function runSteps(run: (...args: string[]) => Promise<CliResult>, steps: string[][]): Promise<void> {
  for (const args of steps) {
    const r = await run(...args);
    expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  }
}

/** The emulated platform booted with a raw image of `addon` written to `img`. */
export const bootWithRawImage = (run: (...args: string[]) => Promise<CliResult>, addon: string, img: string): Promise<void> => runSteps(run, [rawImageArgs(addon, img), ['boot', '--image', img]]);
