/**
 * Measured load against a real TPM (swtpm, driven by src/tpm's client and swtpm's control channel):
 * the PCR values firmware-tools predicts from the artifacts alone equal the TPM's after
 * (a) the static measurement into PCR 12 and (b) the emulated TXT dynamic launch.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImageFile } from '../../firmware-tools/image.js';
import { referenceValuesFile } from '../../firmware-tools/reference.js';
import { compileSchema } from '../schemas.js';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { verifyContainerFile } from '../measure/container.js';
import { measureImage } from '../measure/measure.js';
import { loadPolicy } from '../measure/policy.js';
import { measureTpmFor } from '../measure/tpm-adapter.js';
import type { MeasureTpm } from '../measure/measure.js';
import { openTpm } from '../tpm/index.js';
import type { TpmClient } from '../tpm/client.js';
import { swtpmControlFor } from '../tpm/tcti.js';
import { drtmTpmFor } from './emulated.js';
import type { DrtmTpm } from './drtm.js';import type { HashAlgName } from '../tpm/alg.js';
import { parseEventLog } from '../eventlog/parse.js';
import { replay } from '../eventlog/replay.js';
import { EventLogAppender } from '../eventlog/appender.js';
import { DRTM_EVTYPE, DrtmLogRecorder, emulatedLaunch, planDrtmLaunch } from './drtm.js';
import { buildLaunchEnvironment } from './launch-env.js';
import { present, skipUnless } from '../../test/helpers/require.js';

const fx = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures', 'measure');
const skip = skipUnless('measured-load tests against swtpm', [['swtpm', swtpmAvailable()]]);

type Logged = { pcr: number; type: number; digests: Record<string, Buffer>; data: Buffer };
const hexPcrs = (v: Partial<Record<string, Record<number, Buffer>>>) =>
  Object.fromEntries(Object.entries(v).map(([b, m]) => [b, Object.fromEntries(Object.entries(m ?? {}).map(([i, d]) => [i, d.toString('hex')]))]));

/** tpm2_eventlog (tpm2-tools) parses the log and its final PCRs (from zero) equal `live`. */
function expectTpm2EventlogPcrs(file: string, live: Record<string, Record<string, string>>, pcrs: number[]): void {
  const r = spawnSync('tpm2_eventlog', [file], { encoding: 'utf8' });
  if (!present('tpm2_eventlog cross-check of the DRTM log', 'tpm2-tools', (r.error || r.status === null) && `tpm2_eventlog not runnable: ${r.error?.message ?? 'killed'} (apt-get install tpm2-tools)`)) return;
  expect(r.status, r.stderr).toBe(0);
  const out = r.stdout;
  const section = out.slice(out.indexOf("pcrs:"));
  for (const [bank, m] of Object.entries(live)) {
    const block = new RegExp(`\\n\\s+${bank}:\\n((?:\\s+\\d+\\s*:\\s*0x[0-9A-Fa-f]+\\n?)+)`).exec(section);
    expect(block, `tpm2_eventlog has no ${bank} bank`).not.toBeNull();
    for (const p of pcrs) {
      const v = new RegExp(`\\s${p}\\s*:\\s*0x([0-9A-Fa-f]+)`).exec(block![1]!);
      expect(v?.[1]?.toLowerCase(), `tpm2_eventlog ${bank}:${p}`).toBe(m[String(p)]);
    }
  }
}

describe.skipIf(!!skip)('measured load on swtpm', () => {
  let tpm: SwtpmInstance;
  let client: TpmClient;
  let peer: MeasureTpm & { pcrRead: NonNullable<MeasureTpm['pcrRead']> };
  let drtm: DrtmTpm;
  const dir = mkdtempSync(join(tmpdir(), 'drtm-'));
  const image = join(dir, 'hv.heimg');
  const le = buildLaunchEnvironment({ name: 'emulated-sinit', version: 3, arch: 'intel-vmx', payload: Buffer.alloc(5000, 0xa5) });

  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'tcp' });
    client = await openTpm(tpm.tcti);
    peer = measureTpmFor(client) as typeof peer;
    drtm = drtmTpmFor(client, swtpmControlFor(tpm.tcti)!);
    buildImageFile(join(fx, 'tiny.elf'), image, { arch: 'intel-vmx', perCpuSize: 0x1000 }, join(fx, 'sm2.pem'));
  });
  afterAll(async () => {
    await client?.close();
    await tpm?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('static measurement: PCR 12 in every active bank equals the reference values; the SM3 policy is refused on swtpm', async () => {
    const policy = loadPolicy('sha256-sha384');
    const logFile = join(dir, 'runtime.log');
    const appender = await EventLogAppender.open(logFile, { banks: await peer.activeBanks() });
    const r = await measureImage({ tpm: peer, log: appender, policy, image });
    await appender.close();
    const runtimeLog = parseEventLog(readFileSync(logFile));
    const logged = runtimeLog.events.slice(1);
    expect(r.banks).toEqual(['sha1', 'sha256', 'sha384', 'sha512']);
    expect(compileSchema('measurement.schema.json')(r)).toBeUndefined();
    expect(logged.map((e) => [e.pcr, e.type, e.data.toString().split(' ')[0]])).toEqual([
      [12, 0x0d, 'hyperenclave:image'],
      [12, 0x0d, 'hyperenclave:config'],
      [12, 0x0d, 'hyperenclave:signer'],
    ]);
    const ref = await referenceValuesFile(image, { policy, banks: r.banks });
    const live = hexPcrs(await peer.pcrRead([12], r.banks));
    for (const b of r.banks) expect(live[b]!['12'], b).toBe(ref.pcrs[b]!['12']);
    expect(r.pcrs).toEqual(live);
    // the runtime log (src/eventlog's appender) replays to the TPM's values, in our replay and in tpm2_eventlog's
    const replayed = replay(runtimeLog);
    for (const b of r.banks) expect(replayed.get(b)!.get(12)!.toString('hex'), b).toBe(live[b]!['12']);
    expectTpm2EventlogPcrs(logFile, live, [12]);
    await expect(measureImage({ tpm: peer, log: { append: () => undefined }, policy: loadPolicy('hyperenclave-sm3'), image })).rejects.toThrow(/needs the sm3_256 PCR bank/);
  });

  it('emulated dynamic launch: PCR17/18 equal the prediction in every bank; locality 0 cannot touch PCR17', async () => {
    const policy = loadPolicy('sha256-sha384');
    const banks: HashAlgName[] = ['sha1', 'sha256', 'sha384', 'sha512'];
    const img = await verifyContainerFile(image, { banks });
    const steps = planDrtmLaunch(le, img, policy, banks);
    const drtmLog: Logged[] = [];
    await emulatedLaunch(drtm, le, steps, { append: (e) => void drtmLog.push(e) });
    expect(drtmLog.map((e) => [e.pcr, e.type])).toEqual([
      [17, DRTM_EVTYPE.HASH_START],
      [17, DRTM_EVTYPE.MLE_HASH],
      [17, DRTM_EVTYPE.LCP_DETAILS_HASH],
      [17, DRTM_EVTYPE.LCP_CONTROL_HASH],
      [18, DRTM_EVTYPE.LCP_AUTHORITIES_HASH],
    ]);
    const leFile = join(dir, 'le.bin');
    writeFileSync(leFile, le);
    const ref = await referenceValuesFile(image, { policy, banks, launchEnvironmentPath: leFile });
    const live = hexPcrs(await peer.pcrRead([17, 18], banks));
    for (const b of banks) {
      expect(live[b]!['17'], `${b}:17`).toBe(ref.drtm!.pcrs[b]!['17']);
      expect(live[b]!['18'], `${b}:18`).toBe(ref.drtm!.pcrs[b]!['18']);
    }
    // the DRTM log replays (HASH_START resets 17-22) to the TPM's values
    const rec = new DrtmLogRecorder();
    drtmLog.forEach((e) => rec.append(e));
    const logFile = join(dir, 'drtm.log');
    rec.writeTo(logFile, banks);
    const replayed = replay(parseEventLog(readFileSync(logFile)));
    for (const b of banks) for (const p of [17, 18]) expect(replayed.get(b)!.get(p)!.toString('hex'), `${b}:${p}`).toBe(live[b]![String(p)]);
    expectTpm2EventlogPcrs(logFile, live, [17, 18]);
    // back at locality 0: the OS cannot extend the DRTM PCRs
    await expect(peer.pcrExtend(17, [{ alg: 'sha256', digest: Buffer.alloc(32) }])).rejects.toThrow(/^TPM_RC_LOCALITY: PCR 17 cannot be extended at locality 0/);
  });

  it('a changed image byte gives different PCR17 on the TPM and in the prediction, and they still agree', async () => {
    const elf = Buffer.from(readFileSync(join(fx, 'tiny.elf')));
    elf[0x1001]! ^= 0x01;
    writeFileSync(join(dir, 'b.elf'), elf);
    const other = join(dir, 'b.heimg');
    buildImageFile(join(dir, 'b.elf'), other, { arch: 'intel-vmx', perCpuSize: 0x1000 }, join(fx, 'sm2.pem'));
    const policy = loadPolicy();
    const banks: HashAlgName[] = ['sha256', 'sha384'];
    const before = hexPcrs(await peer.pcrRead([17, 18], banks));
    const img = await verifyContainerFile(other, { banks: ['sha1', 'sha256', 'sha384', 'sha512'] });
    await emulatedLaunch(drtm, le, planDrtmLaunch(le, img, policy, ['sha1', 'sha256', 'sha384', 'sha512']));
    const after = hexPcrs(await peer.pcrRead([17, 18], banks));
    const leFile = join(dir, 'le.bin');
    const ref = await referenceValuesFile(other, { policy, banks, launchEnvironmentPath: leFile });
    for (const b of banks) {
      expect(after[b]!['17']).not.toBe(before[b]!['17']);
      expect(after[b]!['17']).toBe(ref.drtm!.pcrs[b]!['17']);
      expect(after[b]!['18']).toBe(before[b]!['18']); // same signer
    }
  });
});
