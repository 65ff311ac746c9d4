import { spawnSync } from 'node:child_process';

/** One side-by-side comparison: ours and an anchor measured in the same run. */
export interface BenchRow {
  name: string;
  ours: { label: string; value: number; unit: string };
  anchor: { label: string; value: number; unit: string };
  /** ours / anchor for rates (higherIsBetter), anchor / ours for times: >1 means we are faster. */
  ratio: number;
  higherIsBetter: boolean;
  target?: string;
  note?: string;
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
