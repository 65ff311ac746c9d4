import { UsageError } from './output.js';

/** `--pcrs`: "sha256:0-7,12+sha384:0,12" as bank -> PCR indices (0..23). */
export function pcrSelectionOf(spec: string): Record<string, number[]> {
  // "sha256:0-7,12+sha384:0,12"
  const out: Record<string, number[]> = {};
  for (const part of spec.split('+')) {
    const m = /^([a-z0-9_]+):([\d,\-]+)$/.exec(part.trim());
    if (!m) throw new UsageError(`--pcrs: expected bank:list[+bank:list], e.g. sha256:0-7,12; got "${spec}"`);
    const pcrs: number[] = [];
    for (const r of m[2]!.split(',')) {
      const [a, b] = r.split('-').map(Number) as [number, number | undefined];
      for (let i = a; i <= (b ?? a); i++) if (i >= 0 && i < 24) pcrs.push(i);
    }
    out[m[1]!] = pcrs;
  }
  return out;
}
