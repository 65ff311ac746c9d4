import { join } from 'node:path';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { readJsonIfExists, writeFileAtomic } from '../platform/state.js';
import type { Logger } from '../log.js';
import { withStateLock } from '../platform/lock.js';
import { fileSystemError } from '../platform/fs-errors.js';

/** What the boot flow needs from the platform; the CLI wires real implementations. */
export interface BootSteps {
  /** Identifies the current boot: a new value after every reboot (TPM reset). */
  bootId(): Promise<string>;
  /** Throws with the missing feature named when the platform cannot run the hypervisor. */
  checkPlatform(): Promise<void>;
  /** Parses and verifies the image container; returns its identity (digest of header+image). */
  verifyImage(): Promise<{ id: string; path: string }>;
  /** Extends the configured PCRs (and performs the DRTM launch when configured), appends the runtime log. */
  measure(image: { id: string; path: string }): Promise<Record<string, unknown>>;
  /**
   * reload: the hypervisor was enabled earlier in this boot and disabled since (`systemctl stop`):
   * its DISABLE capped the measurement PCR, so the image must be loaded (and measured) again for
   * the sealed root to unseal (docs/attestation.md "DISABLE and reloads").
   */
  load(image: { id: string; path: string }, opts?: { reload?: boolean }): Promise<void>;
  enable(): Promise<void>;
  /** After enable: the hypervisor unseals (or creates) its TPM-sealed root and binds its HAK in a PCR (src/boot/trust-step.ts). */
  trust?(): Promise<Record<string, unknown>>;
  isEnabled(): Promise<boolean>;
  /** Undoes load/enable after a failure, so nothing is left half-enabled. */
  rollback(): Promise<void>;
}

export interface BootState {
  schema: 'hyperenclave/boot-state';
  version: 1;
  bootId: string;
  phase: 'measured' | 'enabled' | 'failed';
  image?: { id: string; path: string };
  measurement?: Record<string, unknown>;
  /** The trust step's result: HAK, whether a new root was created, whether its event was logged. */
  trust?: Record<string, unknown>;
  error?: string;
  steps: { name: string; status: 'done' | 'skipped' | 'failed'; ms: number; detail?: string }[];
  updatedAt: string;
}

export interface BootResult {
  state: BootState;
  /** True when the hypervisor was already enabled in this boot and nothing was done. */
  alreadyEnabled: boolean;
}

export const bootStatePath = (stateDir: string): string => join(stateDir, 'boot-state.json');

/**
 * platform check → verify image → measure (once per boot) → load → enable → record.
 * Idempotent within a boot; a failure rolls back load/enable and records why. Holds the state
 * directory's lock throughout; the measure step's write-ahead journal (src/measure/journal.ts)
 * makes a kill at any instant recoverable by running boot again.
 */
export function runBoot(stateDir: string, steps: BootSteps, log?: Logger): Promise<BootResult> {
  // One boot at a time per state directory: a second copy waits, then finds the work done.
  return withStateLock(stateDir, 'boot', () => runBootLocked(stateDir, steps, log));
}

async function runBootLocked(stateDir: string, steps: BootSteps, log?: Logger): Promise<BootResult> {
  const path = bootStatePath(stateDir);
  const previous = readJsonIfExists<BootState>(path);
  const bootId = await steps.bootId();
  const sameBoot = previous?.bootId === bootId;
  if (sameBoot && previous.phase === 'enabled' && (await steps.isEnabled())) {
    log?.info({ bootId }, 'hypervisor already enabled in this boot; nothing to do');
    return { state: previous, alreadyEnabled: true };
  }

  const state: BootState = { schema: 'hyperenclave/boot-state', version: 1, bootId, phase: 'failed', steps: [], updatedAt: '' };
  const save = () => {
    state.updatedAt = new Date().toISOString();
    writeFileAtomic(path, JSON.stringify(state, null, 2) + '\n', 0o600);
  };
  const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      const v = await fn();
      state.steps.push({ name, status: 'done', ms: Date.now() - t0 });
      log?.info({ step: name, ms: Date.now() - t0 }, 'boot step done');
      return v;
    } catch (e) {
      state.steps.push({ name, status: 'failed', ms: Date.now() - t0, detail: (e as Error).message });
      throw e;
    }
  };

  let loaded = false;
  try {
    await step('platform', () => steps.checkPlatform());
    const image = await step('verify-image', () => steps.verifyImage());
    state.image = image;
    // PCRs only move forward: measuring the same image twice in one boot would leave a log
    // that no longer matches what a verifier expects, so a retry reuses the recorded measurement.
    if (sameBoot && previous.measurement && previous.image?.id === image.id) {
      state.measurement = previous.measurement;
      state.steps.push({ name: 'measure', status: 'skipped', ms: 0, detail: 'already measured in this boot' });
    } else {
      state.measurement = await step('measure', () => steps.measure(image));
    }
    state.phase = 'measured';
    save();
    loaded = true;
    const reload = sameBoot && previous.phase === 'enabled';
    await step('load', () => steps.load(image, { reload }));
    await step('enable', () => steps.enable());
    if (steps.trust) state.trust = await step('trust', () => steps.trust!());
    state.phase = 'enabled';
    delete state.error;
    save();
    return { state, alreadyEnabled: false };
  } catch (e) {
    const msg = (e as Error).message;
    if (loaded) {
      try {
        await steps.rollback();
        state.steps.push({ name: 'rollback', status: 'done', ms: 0 });
      } catch (r) {
        state.steps.push({ name: 'rollback', status: 'failed', ms: 0, detail: (r as Error).message });
      }
    }
    state.phase = 'failed';
    state.error = msg;
    try {
      save();
    } catch {
      // Recording the failure can fail for the same reason (a full or read-only disk): the
      // original error is the one to report.
    }
    if (e instanceof HyperEnclaveError) throw e;
    const fsErr = fileSystemError(e, 'boot');
    if (fsErr) throw fsErr;
    throw new HyperEnclaveError(`boot: ${msg}`, EXIT.INTERNAL, { cause: e });
  }
}

/** The last boot flow's outcome, as `hyperenclave status` reports it (schemas/hypervisor-status.schema.json lastBoot). */
export interface LastBoot {
  phase: BootState['phase'];
  /** True when the record was written in the current boot (same boot identity). */
  thisBoot: boolean;
  /** The step that failed, and why (phase failed). */
  failedStep?: string;
  error?: string;
  image?: string;
  updatedAt: string;
}

/** Reads <stateDir>/boot-state.json; undefined when no boot flow ever ran here. */
export async function lastBootRecord(stateDir: string, bootId: () => Promise<string>): Promise<LastBoot | undefined> {
  const s = readJsonIfExists<BootState>(bootStatePath(stateDir));
  if (!s || s.schema !== 'hyperenclave/boot-state') return undefined;
  let current: string | undefined;
  try {
    current = await bootId();
  } catch {
    current = undefined;
  }
  const failed = s.steps.find((x) => x.status === 'failed');
  return {
    phase: s.phase,
    thisBoot: current !== undefined && current === s.bootId,
    ...(failed ? { failedStep: failed.name } : {}),
    ...(s.error ? { error: s.error } : {}),
    ...(s.image?.path ? { image: s.image.path } : {}),
    updatedAt: s.updatedAt,
  };
}

export function formatLastBoot(b: LastBoot): string {
  const when = b.thisBoot ? 'in this boot' : 'in an earlier boot';
  if (b.phase === 'failed') return `last boot flow: FAILED ${when} at step ${b.failedStep ?? '?'} (${b.updatedAt}): ${b.error ?? 'no reason recorded'}`;
  return `last boot flow: ${b.phase} ${when} (${b.updatedAt})`;
}
