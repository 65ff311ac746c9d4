/**
 * Image measurement throughput on a 256 MiB container (page cache warm for every side, median of 3):
 *  - in-process: verifying the container and computing its image digests in one streaming pass
 *    (src/measure/container.ts) inside this process, against `openssl dgst` run as a process per
 *    digest on the same image bytes (OpenSSL is the hash anchor; coreutils sha256sum is shown too);
 *  - whole process: `hyperenclave firmware reference IMAGE --banks sha256` from exec to exit
 *    against `openssl dgst -sha256 IMAGE` from exec to exit (target >= 0.9x).
 */
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasCommand, medianMs, processMs, speedup, type BenchRow, type Side } from './harness.js';
import { buildContainer, verifyContainerFile } from '../src/measure/container.js';
import type { HashAlgName } from '../src/tpm/alg.js';

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
const cli = join(dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');

function runTool(tool: string, args: string[]): void {
  const r = spawnSync(tool, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${tool} failed: ${r.stderr}`);
}

export default async function bench(): Promise<BenchRow[]> {
  for (const t of ['openssl', 'sha256sum']) if (!hasCommand(t)) throw new Error(`measure bench needs ${t}`);
  const dir = mkdtempSync(join(tmpdir(), 'measure-bench-'));
  try {
    const image = randomFillSync(Buffer.allocUnsafe(SIZE));
    const container = join(dir, 'hv.heimg');
    const raw = join(dir, 'hv.img');
    writeFileSync(container, buildContainer(image, { arch: 'intel-vmx', kind: 'raw', loadAddress: 0n, entryOffset: 0, coreSize: SIZE, perCpuSize: 0, loadSize: SIZE, featureMask: 0n, buildId: Buffer.alloc(20, 1) }));
    writeFileSync(raw, image);
    const mibPerS = (ms: number): number => SIZE / MiB / (ms / 1000);

    const ours = async (banks: HashAlgName[]) => mibPerS(await medianMs(3, () => verifyContainerFile(container, { banks })));
    const openssl = async (digests: string[]) => mibPerS(await medianMs(3, () => digests.forEach((d) => runTool('openssl', ['dgst', `-${d}`, raw]))));

    const rows: BenchRow[] = [];
    const side = (label: string, value: number, scope: Side['scope']): Side => ({ label, value, unit: 'MiB/s', scope });
    const add = (name: string, o: Side, a: Side, extra: Partial<BenchRow> = {}) => rows.push({ name, ours: o, anchor: a, ratio: o.value / a.value, higherIsBetter: true, ...extra });

    // Whole process against whole process: the CLI a user runs against the tool a user runs.
    const cliMs = await processMs(3, process.execPath, [cli, 'firmware', 'reference', container, '--banks', 'sha256']);
    const opensslMs = await processMs(3, 'openssl', ['dgst', '-sha256', container]);
    const wholeRatio = speedup(cliMs, opensslMs, false);
    rows.push({
      name: 'hash a 256 MiB image (sha256), exec to exit',
      ours: { label: 'hyperenclave firmware reference IMAGE --banks sha256', value: cliMs, unit: 'ms', scope: 'process' },
      anchor: { label: 'openssl dgst -sha256 IMAGE', value: opensslMs, unit: 'ms', scope: 'process' },
      ratio: wholeRatio,
      higherIsBetter: false,
      target: '>= 0.9',
      met: wholeRatio >= 0.9,
      note: 'ours also parses and checks the container header against the digest and predicts PCR 12',
      headline: true,
    });

    const s256 = await openssl(['sha256']);
    add('measure 256 MiB image, sha256 bank', side('verifyContainerFile, sha256 (one pass)', await ours(['sha256']), 'in-process'), side('openssl dgst -sha256', s256, 'process'), { note: 'ours without process start-up; includes header parse and the digest check against the header' });
    add('measure 256 MiB image, sha256 bank', side('verifyContainerFile, sha256 (one pass)', await ours(['sha256']), 'in-process'), side('sha256sum (coreutils)', mibPerS(await medianMs(3, () => runTool('sha256sum', [raw]))), 'process'), { note: 'coreutils, for reference: slower than OpenSSL where it has no SHA extensions' });
    add('measure 256 MiB image, sha256+sha384 banks', side('verifyContainerFile, sha256 + sha384 (one pass, a thread per bank)', await ours(['sha256', 'sha384']), 'in-process'), side('openssl dgst -sha256, then -sha384', await openssl(['sha256', 'sha384']), 'process'));
    add('measure 256 MiB image, all swtpm banks', side('verifyContainerFile, sha1/256/384/512 (one pass)', await ours(['sha1', 'sha256', 'sha384', 'sha512']), 'in-process'), side('openssl dgst -sha1 … -sha512 in turn', await openssl(['sha1', 'sha256', 'sha384', 'sha512']), 'process'));
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
