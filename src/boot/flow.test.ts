/**
 * The boot flow's bookkeeping across runs in one boot and across boots, with steps that only record
 * what they were asked (the real steps run in test/cli/flow.test.ts and the system tier): a start
 * after a disable in the same boot reloads the image; the last run's outcome is what `status` shows.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatLastBoot, lastBootRecord, runBoot, type BootSteps } from './flow.js';
import { errorLine } from '../cli/program.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function machine(bootId: { v: string }, opts: { imageError?: string } = {}) {
  const calls: string[] = [];
  let enabled = false;
  const steps: BootSteps = {
    bootId: async () => bootId.v,
    checkPlatform: async () => {},
    verifyImage: async () => {
      if (opts.imageError) throw new Error(opts.imageError);
      return { id: 'img-1', path: '/lib/firmware/hyperenclave/hyperenclave.img' };
    },
    measure: async () => {
      calls.push('measure');
      return { events: 1 };
    },
    load: async (_img, o) => {
      calls.push(o?.reload ? 'load:reload' : 'load');
    },
    enable: async () => {
      calls.push('enable');
      enabled = true;
    },
    isEnabled: async () => enabled,
    rollback: async () => {
      enabled = false;
    },
  };
  return { steps, calls, disable: () => (enabled = false) };
}

describe('boot flow across runs and boots', () => {
  it('a second run while enabled does nothing; after a disable in the same boot the image is reloaded, not measured again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'he-flow-unit-'));
    dirs.push(dir);
    const boot = { v: 'boot-1' };
    const m = machine(boot);
    expect((await runBoot(dir, m.steps)).alreadyEnabled).toBe(false);
    expect((await runBoot(dir, m.steps)).alreadyEnabled).toBe(true);
    expect(m.calls).toEqual(['measure', 'load', 'enable']);
    m.disable(); // systemctl stop
    const again = await runBoot(dir, m.steps);
    expect(m.calls.slice(3)).toEqual(['load:reload', 'enable']);
    expect(again.state.steps.find((s) => s.name === 'measure')?.status).toBe('skipped');
    boot.v = 'boot-2'; // reboot
    m.disable();
    await runBoot(dir, m.steps);
    expect(m.calls.slice(5)).toEqual(['measure', 'load', 'enable']);
    const last = await lastBootRecord(dir, async () => 'boot-2');
    expect(last).toMatchObject({ phase: 'enabled', thisBoot: true });
    expect((await lastBootRecord(dir, async () => 'boot-3'))?.thisBoot).toBe(false);
  });

  it('a failed run is recorded with its step and reason, which status prints', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'he-flow-unit-'));
    dirs.push(dir);
    const m = machine({ v: 'b' }, { imageError: 'image: cannot open /x.img: no such file (ENOENT)' });
    await expect(runBoot(dir, m.steps)).rejects.toThrow(/no such file/);
    const last = await lastBootRecord(dir, async () => 'b');
    expect(last).toMatchObject({ phase: 'failed', thisBoot: true, failedStep: 'verify-image' });
    expect(formatLastBoot(last!)).toMatch(/^last boot flow: FAILED in this boot at step verify-image \(.*\): image: cannot open \/x\.img: no such file \(ENOENT\)$/);
    expect(await lastBootRecord(join(dir, 'none'), async () => 'b')).toBeUndefined();
  });
});

describe('the error line', () => {
  it('carries the sd-daemon err prefix only under journald, on one line', () => {
    expect(errorLine('image: bad\nsignature', { JOURNAL_STREAM: '8:1234' })).toBe('<3>hyperenclave: image: bad signature\n');
    expect(errorLine('image: bad', {})).toBe('hyperenclave: image: bad\n');
  });
});
