import { spawnSync } from 'node:child_process';

/**
 * How a side was measured: inside one long-lived process (`in-process`: no start-up, state such
 * as a TPM connection kept), as whole processes from exec to exit (`process`), or computed from
 * other measurements (`derived`, e.g. from `openssl speed` rates).
 */
export type Scope = 'in-process' | 'process' | 'derived';

export interface Side {
  label: string;
  value: number;
  unit: string;
  scope: Scope;
}

/** One side-by-side comparison: ours and an anchor measured in the same run. */
export interface BenchRow {
  name: string;
  ours: Side;
  anchor: Side;
  /** ours / anchor for rates (higherIsBetter), anchor / ours for times: >1 means we are faster. */
  ratio: number;
  higherIsBetter: boolean;
  target?: string;
  /** Whether the target is met (rows with a numeric target). */
  met?: boolean;
  note?: string;
  /** Shown in the README's table (bench/readme-table.mjs copies the headline rows). */
  headline?: boolean;
}

export type BenchFn = () => Promise<BenchRow[]>;

/** Speed-up of ours over the anchor, >1 = ours faster, whatever the unit's direction. */
export function speedup(ours: number, anchor: number, higherIsBetter: boolean): number {
  if (higherIsBetter) return anchor === 0 ? Infinity : ours / anchor;
  return ours === 0 ? Infinity : anchor / ours;
}

/** Median wall time in ms of `runs` calls of fn (after one warm-up). */
export async function medianMs(runs: number, fn: () => unknown | Promise<unknown>): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Median wall time in ms of `runs` executions of a command as a whole process (exec to exit). */
export async function processMs(runs: number, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<number> {
  return medianMs(runs, () => {
    const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 30, ...(opts.env ? { env: opts.env } : {}), ...(opts.cwd ? { cwd: opts.cwd } : {}) });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr?.toString().slice(0, 300)}`);
  });
}
