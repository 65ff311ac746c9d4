/**
 * Image measurement throughput: verifying a 256 MiB container and computing its image digests
 * in one streaming pass (src/measure/container.ts), against coreutils' sha*sum on the same
 * file (page cache warm for both, median of 3 runs each).
 */
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasCommand, medianMs, type BenchRow } from './harness.js';
import { buildContainer, verifyContainerFile } from '../src/measure/container.js';
import type { HashAlgName } from '../src/tpm/alg.js';

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;

function runTool(tool: string, path: string): void {
  const r = spawnSync(tool, [path], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${tool} failed: ${r.stderr}`);
}

export default async function bench(): Promise<BenchRow[]> {
  for (const t of ['sha256sum', 'sha384sum', 'sha1sum', 'sha512sum']) if (!hasCommand(t)) throw new Error(`measure bench needs ${t} (coreutils)`);
  const dir = mkdtempSync(join(tmpdir(), 'measure-bench-'));
  try {
    const image = randomFillSync(Buffer.allocUnsafe(SIZE));
    const container = join(dir, 'hv.heimg');
    const raw = join(dir, 'hv.img');
    writeFileSync(container, buildContainer(image, { arch: 'intel-vmx', kind: 'raw', loadAddress: 0n, entryOffset: 0, coreSize: SIZE, perCpuSize: 0, loadSize: SIZE, featureMask: 0n, buildId: Buffer.alloc(20, 1) }));
    writeFileSync(raw, image);
    const mibPerS = (ms: number): number => SIZE / MiB / (ms / 1000);

    const ours = async (banks: HashAlgName[]) => mibPerS(await medianMs(3, () => verifyContainerFile(container, { banks })));
    const anchor = async (list: string[]) => mibPerS(await medianMs(3, () => list.forEach((t) => runTool(t, raw))));

    const rows: BenchRow[] = [];
    const add = (name: string, o: number, oursLabel: string, a: number, anchorLabel: string, target?: string, note?: string) =>
      rows.push({ name, ours: { label: oursLabel, value: o, unit: 'MiB/s' }, anchor: { label: anchorLabel, value: a, unit: 'MiB/s' }, ratio: o / a, higherIsBetter: true, ...(target ? { target } : {}), ...(note ? { note } : {}) });

    const s256 = await anchor(['sha256sum']);
    add('measure 256 MiB image, sha256 bank', await ours(['sha256']), 'verify + sha256 (one pass)', s256, 'sha256sum', '>= 0.9x sha256sum', 'includes header parse, digest check against the header');
    add('measure 256 MiB image, sha256+sha384 banks', await ours(['sha256', 'sha384']), 'verify + sha256 + sha384 (one pass)', s256, 'sha256sum', undefined, 'two digests per byte vs one');
    add('measure 256 MiB image, sha256+sha384 banks vs two tools', await ours(['sha256', 'sha384']), 'verify + sha256 + sha384 (one pass)', await anchor(['sha256sum', 'sha384sum']), 'sha256sum then sha384sum');
    add('measure 256 MiB image, all swtpm banks', await ours(['sha1', 'sha256', 'sha384', 'sha512']), 'verify + sha1/256/384/512 (one pass)', await anchor(['sha1sum', 'sha256sum', 'sha384sum', 'sha512sum']), 'sha1sum..sha512sum in turn');
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
