import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { openTpm } from '../tpm/index.js';
import type { TpmClient } from '../tpm/client.js';
import { compareReplay, readEventLogFile, replay } from '../eventlog/index.js';
import { runtimeLogPath } from '../platform/logs.js';
import { buildContainer, verifyContainerBytes } from './container.js';
import { loadPolicy, type PcrPolicy } from './policy.js';
import { measureImage, type MeasureTpm, type RuntimeLogAppender } from './measure.js';
import { measureTpmFor } from './tpm-adapter.js';
import { withJournaledRuntimeLog } from './journal.js';
import { HyperEnclaveError, EXIT } from '../errors.js';

/**
 * Write-ahead measurement against a real TPM (swtpm): a crash is simulated by an exception at
 * each point between the journal's records, the TPM extension and the log append (nothing runs
 * after it, as after SIGKILL); the next run must leave a log that replays exactly to the TPM
 * with each of the image's events once.
 */

const skip = swtpmAvailable();
const banks = ['sha256', 'sha384'] as const;
const img = verifyContainerBytes(
  buildContainer(randomBytes(8192), { arch: 'amd-svm', kind: 'raw', loadAddress: 0n, entryOffset: 0, coreSize: 8192, perCpuSize: 0, loadSize: 8192, featureMask: 0n, buildId: Buffer.alloc(20, 2) }),
  { banks: [...banks] },
);
/** The default policy's three events, into a PCR of the scenario's own (PCR 12 would accumulate). */
const policyOn = (pcr: number): PcrPolicy => {
  const p = structuredClone(loadPolicy('sha256-sha384'));
  return { ...p, name: `test-pcr-${pcr}`, events: p.events.map((e) => ({ ...e, pcr })) };
};

class Crash extends Error {}

describe.skipIf(!!skip)('write-ahead measurement: a crash at every point, then the next run (swtpm)', () => {
  const root = mkdtempSync(join(tmpdir(), 'he-journal-'));
  const tpmState = join(root, 'tpm');
  let sw: SwtpmInstance;
  let client: TpmClient;
  beforeAll(async () => {
    mkdirSync(tpmState);
    sw = await startSwtpm({ transport: 'tcp', banks: [...banks], stateDir: tpmState });
    client = await openTpm(sw.tcti);
  });
  afterAll(async () => {
    await client?.close();
    await sw?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  async function measure(stateDir: string, policy: PcrPolicy, crash?: { at: 'before-extend' | 'after-extend' | 'after-append'; event: number }): Promise<void> {
    const real = measureTpmFor(client);
    let n = 0;
    const tpm: MeasureTpm = {
      ...real,
      pcrExtend: async (pcr, d) => {
        if (crash?.at === 'before-extend' && n === crash.event) throw new Crash();
        await real.pcrExtend(pcr, d);
        if (crash?.at === 'after-extend' && n === crash.event) throw new Crash();
      },
    };
    await withJournaledRuntimeLog({ stateDir, tpm: real, banks: [...banks] }, async ({ log, journal }) => {
      const logged: RuntimeLogAppender = {
        get eventCount() {
          return log.eventCount;
        },
        append: async (e) => {
          await log.append(e);
          if (crash?.at === 'after-append' && n === crash.event) throw new Crash();
          n++;
        },
      };
      await measureImage({ tpm, log: logged, journal, policy, image: img });
    });
  }

  async function check(stateDir: string, pcr: number): Promise<void> {
    const log = await readEventLogFile(runtimeLogPath(stateDir));
    const live = await measureTpmFor(client).pcrRead!([pcr], [...banks]);
    const actual = new Map(banks.map((b) => [b as string, new Map([[pcr, live[b]![pcr]!]])]));
    expect(compareReplay(replay(log), actual).mismatches.map((m) => m.message)).toEqual([]);
    expect(log.events.filter((e) => e.pcr === pcr)).toHaveLength(3);
  }

  // A fresh PCR per scenario, extendable at locality 0 (not 12, which the default policy uses, nor 17-22).
  const free = [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16];
  const nextPcr = (): number => free.shift()!;
  for (const at of ['before-extend', 'after-extend', 'after-append'] as const) {
    for (const event of [0, 1, 2]) {
      it(`crash ${at} of event ${event}: the next run replays exactly, each event once`, async () => {
        const p = nextPcr();
        const stateDir = join(root, `s-${p}`);
        await expect(measure(stateDir, policyOn(p), { at, event })).rejects.toBeInstanceOf(Crash);
        await measure(stateDir, policyOn(p));
        await check(stateDir, p);
        // And a third run in the same TPM boot measures nothing again.
        await measure(stateDir, policyOn(p));
        await check(stateDir, p);
      });
    }
  }

  it('an extension by someone else while an event was pending is refused (exit 4), not papered over', async () => {
    const p = nextPcr();
    const stateDir = join(root, `s-${p}`);
    await expect(measure(stateDir, policyOn(p), { at: 'before-extend', event: 1 })).rejects.toBeInstanceOf(Crash);
    await client.pcrExtend(p, [{ hashAlg: 0x0b, digest: Buffer.alloc(32, 9) }, { hashAlg: 0x0c, digest: Buffer.alloc(48, 9) }]);
    const e = await measure(stateDir, policyOn(p)).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(HyperEnclaveError);
    expect((e as HyperEnclaveError).exitCode).toBe(EXIT.VERIFY_FAILED);
    expect((e as Error).message).toMatch(new RegExp(`PCR ${p} holds neither`));
  });

  it('after a TPM reset (swtpm restarted: resetCount moves) the old log is kept aside and a new one replays', async () => {
    const p = nextPcr();
    const stateDir = join(root, `s-${p}`);
    await measure(stateDir, policyOn(p));
    await check(stateDir, p);
    await client.close();
    await sw.stop();
    sw = await startSwtpm({ transport: 'tcp', stateDir: tpmState });
    client = await openTpm(sw.tcti);
    await measure(stateDir, policyOn(p));
    expect(existsSync(runtimeLogPath(stateDir) + '.prev')).toBe(true);
    await check(stateDir, p);
  });
});
