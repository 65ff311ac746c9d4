import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startSwtpm } from './swtpm.js';
import { writeFileAtomic } from '../state.js';
import { alive, canConnect, ensureDaemon } from './daemon.js';

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
  return JSON.parse(readFileSync(rec, 'utf8')) as EmulatedTpmInfo;
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
  return ensureDaemon({
    what: 'emulated TPM',
    lock: join(dir, 'start.lock'),
    current: () => emulatedTpmRecord(stateDir),
    reachable: (r) => canConnect(r.ctrlPath),
    start: async () => {
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
    },
  });
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
