import { existsSync, mkdirSync, readFileSync, rmSync, openSync, closeSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { HyperEnclaveError, EXIT } from '../../errors.js';
import { startSwtpm } from './swtpm.js';
import { writeFileAtomic } from '../state.js';

/** The emulated platform's TPM: one long-lived swtpm per state directory, on Unix sockets. */
export interface EmulatedTpmInfo {
  tcti: string;
  ctrlPath: string;
  serverPath: string;
  stateDir: string;
  caDir: string;
  pid: number;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.once('close', () => resolve(true));
      s.destroy();
    });
    s.once('error', () => resolve(false));
  });
}

function tpmDir(stateDir: string): string {
  return join(stateDir, 'emulated', 'tpm');
}

export function emulatedTpmRecord(stateDir: string): EmulatedTpmInfo | undefined {
  const rec = join(tpmDir(stateDir), 'instance.json');
  if (!existsSync(rec)) return undefined;
  return JSON.parse(readFileSync(rec, 'utf8')) as EmulatedTpmInfo;
}

/** Returns the running emulated TPM of this state directory, starting it (with EK certs) if needed. */
export async function ensureEmulatedTpm(stateDir: string): Promise<EmulatedTpmInfo> {
  const dir = tpmDir(stateDir);
  mkdirSync(dir, { recursive: true });
  const existing = emulatedTpmRecord(stateDir);
  if (existing && alive(existing.pid) && (await canConnect(existing.ctrlPath))) return existing;

  // One starter at a time: an exclusive lock file; a stale one (dead pid) is taken over.
  const lock = join(dir, 'start.lock');
  for (let i = 0; ; i++) {
    try {
      closeSync(openSync(lock, 'wx'));
      writeFileAtomic(lock + '.pid', String(process.pid));
      break;
    } catch {
      const holder = Number(existsSync(lock + '.pid') ? readFileSync(lock + '.pid', 'utf8') : 0);
      if (holder && !alive(holder)) rmSync(lock, { force: true });
      if (i > 200) throw new HyperEnclaveError(`emulated TPM: lock ${lock} held by pid ${holder}`, EXIT.INTERNAL);
      await new Promise((r) => setTimeout(r, 50));
      const again = emulatedTpmRecord(stateDir);
      if (again && alive(again.pid) && (await canConnect(again.ctrlPath))) return again;
    }
  }
  try {
    const state = join(dir, 'state');
    const fresh = !existsSync(join(state, 'tpm2-00.permall'));
    mkdirSync(state, { recursive: true });
    const inst = await startSwtpm({
      transport: 'unix',
      stateDir: state,
      detached: true,
      // First start manufactures the TPM: four banks and EK certificates from a local CA.
      ...(fresh ? { ek: true, banks: ['sha1', 'sha256', 'sha384', 'sha512'] } : {}),
    });
    const info: EmulatedTpmInfo = {
      tcti: inst.tcti,
      ctrlPath: inst.ctrlPath!,
      serverPath: inst.serverPath!,
      stateDir: state,
      caDir: join(state, 'ca'),
      pid: inst.pid,
    };
    writeFileAtomic(join(dir, 'instance.json'), JSON.stringify(info, null, 2) + '\n');
    return info;
  } finally {
    rmSync(lock, { force: true });
    rmSync(lock + '.pid', { force: true });
  }
}

/** Stops the emulated TPM (a power-off: PCRs reset on the next start). */
export async function stopEmulatedTpm(stateDir: string): Promise<boolean> {
  const rec = emulatedTpmRecord(stateDir);
  if (!rec) return false;
  rmSync(join(tpmDir(stateDir), 'instance.json'), { force: true });
  if (!alive(rec.pid)) return false;
  process.kill(rec.pid, 'SIGTERM');
  for (let i = 0; i < 100 && alive(rec.pid); i++) await new Promise((r) => setTimeout(r, 20));
  if (alive(rec.pid)) process.kill(rec.pid, 'SIGKILL');
  return true;
}
