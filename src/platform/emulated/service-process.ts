/** The emulated hypervisor service as a process: its record, its start (detached, one at a time) and stop. */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT } from '../../errors.js';
import { HypervisorError } from '../../hypervisor/abi.js';
import { writeFileAtomic } from '../../fs/atomic.js';
import { serveRpc } from './rpc.js';
import { alive, canConnect, ensureDaemon } from './daemon.js';
import { HypervisorService, type ServiceOptions } from './hypervisor-service.js';

export function serviceDir(stateDir: string): string {
  return join(stateDir, 'emulated', 'hypervisor');
}

export interface ServiceRecord {
  pid: number;
  socket: string;
  startedAt: string;
  log: string;
}

export function serviceRecord(stateDir: string): ServiceRecord | undefined {
  const p = join(serviceDir(stateDir), 'instance.json');
  if (!existsSync(p)) return undefined;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as ServiceRecord;
  } catch {
    return undefined;
  }
}

/** Runs the service in this process until `stop` (called by service-main.ts). */
export async function runService(opts: ServiceOptions): Promise<Server> {
  const dir = serviceDir(opts.stateDir);
  mkdirSync(dir, { recursive: true });
  // Unix socket paths are limited to ~107 bytes; fall back to a short path in /tmp.
  let socket = join(dir, 'hv.sock');
  if (Buffer.byteLength(socket) > 100) socket = join('/tmp', `hyperenclave-hv-${createHash('sha256').update(dir).digest('hex').slice(0, 16)}.sock`);
  rmSync(socket, { force: true });
  const svc = new HypervisorService(opts);
  svc.detectLoss(join(dir, 'held.json'));
  const server = serveRpc(socket, (op, args) => svc.handle(op, args));
  await new Promise<void>((res, rej) => {
    server.once('listening', res);
    server.once('error', rej);
  });
  const rec: ServiceRecord = { pid: process.pid, socket, startedAt: svc.startedAt, log: join(dir, 'service.log') };
  writeFileAtomic(join(dir, 'instance.json'), JSON.stringify(rec, null, 2) + '\n');
  const shutdown = () => {
    server.close();
    rmSync(socket, { force: true });
    const cur = serviceRecord(opts.stateDir);
    if (cur?.pid === process.pid) rmSync(join(dir, 'instance.json'), { force: true });
    process.exit(0);
  };
  svc.onStop = shutdown;
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  return server;
}

/** The compiled service entry (dist/…/service-main.js), also when running from the TypeScript sources. */
export function serviceEntry(): string {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return join(dirname(here), 'service-main.js');
  const root = resolve(dirname(here), '..', '..', '..');
  return join(root, 'dist', 'src', 'platform', 'emulated', 'service-main.js');
}

/** The running service of this state directory, starting it detached when needed (one at a time: a lock file). */
export interface ServiceStartOptions {
  memoryMap?: 'machine' | 'synthetic';
  epcMiB?: number;
}

export async function ensureHypervisorService(stateDir: string, opts: ServiceStartOptions = {}): Promise<ServiceRecord> {
  const dir = serviceDir(stateDir);
  mkdirSync(dir, { recursive: true });
  return ensureDaemon({
    what: 'emulated hypervisor',
    lock: join(dir, 'start.lock'),
    current: () => serviceRecord(stateDir),
    reachable: (r) => canConnect(r.socket),
    start: async () => {
      const entry = serviceEntry();
      if (!existsSync(entry)) throw new HypervisorError(`emulated hypervisor: ${entry} missing (run \`npm run build\`)`, EXIT.INTERNAL);
      const log = join(dir, 'service.log');
      const fd = openSync(log, 'a');
      const args = [entry, '--state-dir', stateDir, ...(opts.memoryMap ? ['--memory-map', opts.memoryMap] : []), ...(opts.epcMiB ? ['--epc-mib', String(opts.epcMiB)] : [])];
      const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', fd, fd] });
      closeSync(fd);
      child.unref();
      for (let i = 0; i < 200; i++) {
        await new Promise((r) => setTimeout(r, 25));
        const rec = serviceRecord(stateDir);
        if (rec && rec.pid === child.pid && (await canConnect(rec.socket))) return rec;
        if (child.exitCode !== null || !alive(child.pid!)) break;
      }
      const tail = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').slice(-1)[0]!.replace(/^\S+ emulated hypervisor service failed: /, '') : '';
      // The service exits with the exit code of what stopped it (a full disk is 9, not a bug).
      const code = child.exitCode !== null && child.exitCode > 1 ? child.exitCode : EXIT.INTERNAL;
      throw new HypervisorError(`emulated hypervisor did not start${tail ? `: ${tail}` : ''} (log ${log})`, code);
    },
  });
}

/** Stops the service (its enclaves and state are gone, as after a reboot). Returns whether one was running. */
export async function stopHypervisorService(stateDir: string): Promise<boolean> {
  const rec = serviceRecord(stateDir);
  if (!rec) return false;
  rmSync(join(serviceDir(stateDir), 'instance.json'), { force: true });
  if (!alive(rec.pid)) return false;
  process.kill(rec.pid, 'SIGTERM');
  for (let i = 0; i < 100 && alive(rec.pid); i++) await new Promise((r) => setTimeout(r, 20));
  if (alive(rec.pid)) process.kill(rec.pid, 'SIGKILL');
  rmSync(rec.socket, { force: true });
  return true;
}

