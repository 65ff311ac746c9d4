import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setupWithSwtpmSetup, startSwtpm } from './swtpm.js';
import { writeFileAtomic } from '../state.js';
import { alive, canConnect, ensureDaemon } from './daemon.js';
import { log } from '../../log.js';
import { fileSystemError, fileSystemTrouble } from '../fs-errors.js';

/** The emulated platform's TPM: one long-lived swtpm per state directory, on Unix sockets. */
export interface EmulatedTpmInfo {
  tcti: string;
  ctrlPath: string;
  serverPath: string;
  stateDir: string;
  caDir: string;
  pid: number;
}

function tpmDir(stateDir: string): string {
  return join(stateDir, 'emulated', 'tpm');
}

export function emulatedTpmRecord(stateDir: string): EmulatedTpmInfo | undefined {
  const rec = join(tpmDir(stateDir), 'instance.json');
  if (!existsSync(rec)) return undefined;
  try {
    return JSON.parse(readFileSync(rec, 'utf8')) as EmulatedTpmInfo;
  } catch {
    return undefined; // written atomically: unreadable means not ours; a new TPM process is started
  }
}

/**
 * First start manufactures the TPM (four banks, EKs and EK certificates from a local CA) in a
 * staging directory that is renamed into place only when swtpm_setup finished: a run killed
 * midway leaves a staging directory (removed by the next run), never a half-made TPM state.
 */
function manufacture(dir: string, state: string): void {
  for (const f of readdirSync(dir)) {
    if (!f.startsWith('state.setup-')) continue;
    try {
      rmSync(join(dir, f), { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    } catch {
      // A killed run's swtpm_setup (its child, not killed with it) may still be writing there: the
      // directory is named after that run's pid, so it cannot be taken for ours; a later run removes it.
    }
  }
  rmSync(state, { recursive: true, force: true });
  const staging = join(dir, `state.setup-${process.pid}`);
  try {
    mkdirSync(staging, { recursive: true });
    setupWithSwtpmSetup(staging, { ek: true, banks: ['sha1', 'sha256', 'sha384', 'sha512'] });
    renameSync(staging, state);
  } catch (e) {
    rmSync(staging, { recursive: true, force: true }); // nothing half-made left behind
    // swtpm_setup's own message does not say that the disk is full or read-only.
    throw fileSystemTrouble(dir, 'emulated TPM manufacture') ?? fileSystemError(e, 'emulated TPM manufacture') ?? e;
  }
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Stops a swtpm left running on `state` by a killed caller (its pid file, checked against its command line). */
async function stopOrphanSwtpm(state: string): Promise<void> {
  const pidFile = join(state, 'swtpm.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  rmSync(pidFile, { force: true });
  if (!Number.isSafeInteger(pid) || pid <= 1 || !alive(pid)) return;
  let cmd = '';
  try {
    cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return;
  }
  if (!cmd.startsWith('swtpm\0') && !cmd.includes('/swtpm\0')) return;
  if (!cmd.includes(`dir=${state}\0`)) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
}

/** Where this state directory's emulated TPM listens (swtpm.ts names the sockets after its state directory). */
export function emulatedTpmSockets(stateDir: string): { server: string; ctrl: string } {
  const server = join(tpmDir(stateDir), 'state', 'tpm.sock');
  return { server, ctrl: `${server}.ctrl` };
}

/** Returns the running emulated TPM of this state directory, starting it (with EK certs) if needed. */
export async function ensureEmulatedTpm(stateDir: string): Promise<EmulatedTpmInfo> {
  const dir = tpmDir(stateDir);
  mkdirSync(dir, { recursive: true });
  const before = emulatedTpmRecord(stateDir);
  const info = await ensureDaemon({
    what: 'emulated TPM',
    lock: join(dir, 'start.lock'),
    current: () => emulatedTpmRecord(stateDir),
    reachable: (r) => canConnect(r.ctrlPath),
    start: async () => {
      const state = join(dir, 'state');
      if (!existsSync(join(state, 'tpm2-00.permall'))) manufacture(dir, state);
      // A caller killed after starting swtpm but before recording it leaves that swtpm running
      // on this state: stop it first (found by the pid file swtpm writes), never run two.
      await stopOrphanSwtpm(state);
      const inst = await startSwtpm({ transport: 'unix', stateDir: state, detached: true, pidFile: join(state, 'swtpm.pid') });
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
    },
  });
  if (before && before.pid !== info.pid)
    log().warn(
      { previousPid: before.pid, pid: info.pid },
      `the emulated TPM (pid ${before.pid}) had stopped without \`hyperenclave emulator stop\` and was started again: its PCRs were reset, so run \`hyperenclave boot\` to measure and enable again`,
    );
  return info;
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
