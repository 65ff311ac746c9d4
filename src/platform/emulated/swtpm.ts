import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readFileSync, existsSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HyperEnclaveError, EXIT } from '../../errors.js';
import { fileSystemTrouble } from '../../fs/fs-errors.js';

/** A private swtpm (TPM 2.0 from libtpms) with its own state directory and sockets. */
export interface SwtpmInstance {
  /** TCTI string for our client and for tpm2-tools (`-T`). */
  readonly tcti: string;
  readonly transport: 'tcp' | 'unix';
  readonly host: string;
  /** Command port (tcp) or 0. */
  readonly port: number;
  /** Control port (tcp) or 0. */
  readonly ctrlPort: number;
  readonly serverPath?: string;
  readonly ctrlPath?: string;
  readonly stateDir: string;
  /** Local CA that signed the EK certificate (only with `ek: true`). */
  readonly caDir?: string;
  readonly pid: number;
  stop(): Promise<void>;
}

export interface SwtpmOptions {
  transport?: 'tcp' | 'unix';
  /** Active PCR banks; default: swtpm's default allocation (sha1, sha256, sha384, sha512). */
  banks?: string[];
  /** Create RSA + ECC EKs and EK certificates signed by a CA private to this instance. */
  ek?: boolean;
  /** Keep state here instead of a fresh temporary directory (it is not removed on stop). */
  stateDir?: string;
  /** Milliseconds to wait for swtpm to answer. */
  startTimeoutMs?: number;
  /** Outlive this process (the emulated platform's long-lived TPM); stop() still works by pid. */
  detached?: boolean;
  /** swtpm writes its PID here (--pid file=…), so a caller killed before recording it can be found. */
  pidFile?: string;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
}

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** undefined when swtpm can be started here; otherwise why not (for test skips). */
export function swtpmAvailable(opts: { ek?: boolean } = {}): string | undefined {
  if (!which('swtpm')) return 'swtpm is not installed (apt-get install swtpm swtpm-tools)';
  if ((opts.ek || false) && !which('swtpm_setup')) return 'swtpm_setup is not installed (apt-get install swtpm-tools)';
  return undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Two consecutive free ports, as swtpm users conventionally pair command and control ports. */
async function freePortPair(): Promise<[number, number]> {
  for (let i = 0; i < 20; i++) {
    const p = await freePort();
    if (p >= 65535) continue;
    const ok = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(p + 1, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (ok) return [p, p + 1];
  }
  throw new HyperEnclaveError('swtpm: no free pair of TCP ports on 127.0.0.1', EXIT.INTERNAL);
}

/**
 * swtpm_setup into `stateDir` (banks; with `ek`, EKs and EK/platform certificates from a CA private
 * to this state). Returns the CA directory (issuercert.pem, swtpm-localca-rootca-cert.pem) with `ek`.
 * Also used by the system tier for the TPM QEMU attaches to the guest.
 */
export function setupWithSwtpmSetup(stateDir: string, opts: Pick<SwtpmOptions, 'banks' | 'ek'>): string | undefined {
  const args = ['--tpm2', '--tpmstate', stateDir, '--overwrite'];
  if (opts.banks) args.push('--pcr-banks', opts.banks.join(','));
  let caDir: string | undefined;
  if (opts.ek) {
    caDir = join(stateDir, 'ca');
    mkdirSync(caDir, { recursive: true });
    const localcaConf = join(stateDir, 'swtpm-localca.conf');
    const localcaOpts = join(stateDir, 'swtpm-localca.options');
    const setupConf = join(stateDir, 'swtpm_setup.conf');
    writeFileSync(
      localcaConf,
      `statedir = ${caDir}\nsigningkey = ${caDir}/signkey.pem\nissuercert = ${caDir}/issuercert.pem\ncertserial = ${caDir}/certserial\n`,
    );
    writeFileSync(localcaOpts, '--platform-manufacturer HyperEnclave-TS\n--platform-version 2.1\n--platform-model emulated\n');
    writeFileSync(
      setupConf,
      `create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = ${localcaConf}\ncreate_certs_tool_options = ${localcaOpts}\nactive_pcr_banks = ${(opts.banks ?? ['sha1', 'sha256', 'sha384', 'sha512']).join(',')}\n`,
    );
    args.push('--config', setupConf, '--createek', '--create-ek-cert', '--create-platform-cert', '--lock-nvram');
    if (!opts.banks) args.push('--pcr-banks', 'sha1,sha256,sha384,sha512');
  }
  const r = spawnSync('swtpm_setup', args, { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) {
    const why = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n').slice(-3).join(' | ');
    throw new HyperEnclaveError(`swtpm_setup failed (exit ${r.status}): ${why}`, EXIT.INTERNAL);
  }
  return caDir;
}

function probe(connectFn: () => Socket, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connectFn();
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
    // Resolve only once the probe socket is closed: swtpm serves one control client at a
    // time, and a half-open probe would block the next client (tpm2-tools' swtpm TCTI).
    s.once('connect', () => {
      clearTimeout(t);
      s.once('close', () => resolve(true));
      s.destroy();
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

/**
 * Starts a private swtpm that is already powered on and started up (startup-clear),
 * waits until its control channel answers, and returns how to reach it.
 */
export async function startSwtpm(opts: SwtpmOptions = {}): Promise<SwtpmInstance> {
  const reason = swtpmAvailable({ ek: opts.ek ?? false });
  if (reason) throw new HyperEnclaveError(reason, EXIT.UNSUPPORTED);
  installExitHook();
  const transport = opts.transport ?? 'tcp';
  const ownsState = !opts.stateDir;
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'hyperenclave-swtpm-'));
  // swtpm writes its state (and pid file) at start; on a full or read-only disk it neither
  // starts nor says why, so that is checked first.
  const trouble = fileSystemTrouble(stateDir, 'swtpm');
  if (trouble) throw trouble;
  const caDir = opts.banks || opts.ek ? setupWithSwtpmSetup(stateDir, opts) : undefined;
  const timeoutMs = opts.startTimeoutMs ?? 10_000;

  for (let attempt = 0; attempt < 5; attempt++) {
    let port = 0;
    let ctrlPort = 0;
    const serverPath = join(stateDir, 'tpm.sock');
    // tpm2-tools' swtpm TCTI finds the control channel at <server socket>.ctrl.
    const ctrlPath = `${serverPath}.ctrl`;
    const args = ['socket', '--tpm2', '--tpmstate', `dir=${stateDir}`, '--flags', 'not-need-init,startup-clear'];
    if (transport === 'tcp') {
      [port, ctrlPort] = await freePortPair();
      args.push('--server', `type=tcp,port=${port},bindaddr=127.0.0.1`, '--ctrl', `type=tcp,port=${ctrlPort},bindaddr=127.0.0.1`);
    } else {
      rmSync(serverPath, { force: true });
      rmSync(ctrlPath, { force: true });
      args.push('--server', `type=unixio,path=${serverPath}`, '--ctrl', `type=unixio,path=${ctrlPath}`);
    }
    args.push('--log', `file=${join(stateDir, 'swtpm.log')},level=1`);
    if (opts.pidFile) args.push('--pid', `file=${opts.pidFile}`);
    const detached = opts.detached ?? false;
    const child = spawn('swtpm', args, { stdio: ['ignore', 'ignore', detached ? 'ignore' : 'pipe'], detached });
    let stderr = '';
    if (detached) child.unref();
    else {
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      running.add(child);
    }
    let exited = false;
    const exitedP = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), running.delete(child), resolve())));

    const deadline = Date.now() + timeoutMs;
    let up = false;
    while (!exited && Date.now() < deadline) {
      // Probe the control channel: the command channel serves one client at a time, leave it free.
      up = await probe(
        () => (transport === 'tcp' ? connect(ctrlPort, '127.0.0.1') : connect(ctrlPath)),
        500,
      );
      // The command socket too (unix): swtpm may still be creating it when the control channel
      // answers; the probe closes at once, leaving the one client slot free.
      if (up && transport === 'unix') up = await probe(() => connect(serverPath), 500);
      if (up) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    if (!up) {
      child.kill('SIGKILL');
      await exitedP;
      if (detached && existsSync(join(stateDir, 'swtpm.log'))) stderr = readFileSync(join(stateDir, 'swtpm.log'), 'utf8');
      if (attempt < 4 && /bind|address already in use/i.test(stderr)) continue;
      const fsTrouble = fileSystemTrouble(stateDir, 'swtpm');
      if (ownsState) rmSync(stateDir, { recursive: true, force: true });
      if (fsTrouble) throw fsTrouble;
      throw new HyperEnclaveError(`swtpm did not start: ${stderr.trim().split('\n').pop() || 'no answer within ' + timeoutMs + ' ms'}`, EXIT.INTERNAL);
    }

    const stop = async (): Promise<void> => {
      if (!exited) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exitedP;
        clearTimeout(t);
      }
      if (ownsState) rmSync(stateDir, { recursive: true, force: true });
    };
    const tcti = transport === 'tcp' ? `swtpm:host=127.0.0.1,port=${port}` : `swtpm:path=${serverPath}`;
    return {
      tcti,
      transport,
      host: '127.0.0.1',
      port,
      ctrlPort,
      ...(transport === 'unix' ? { serverPath, ctrlPath } : {}),
      stateDir,
      ...(caDir ? { caDir } : {}),
      pid: child.pid ?? 0,
      stop,
    };
  }
  throw new HyperEnclaveError('swtpm did not start after 5 attempts', EXIT.INTERNAL);
}

/** The CA certificates (PEM) that chain an EK certificate made by startSwtpm({ ek: true }). */
export function swtpmCaCertificates(inst: SwtpmInstance): string[] {
  if (!inst.caDir) return [];
  const out: string[] = [];
  for (const f of ['swtpm-localca-rootca-cert.pem', 'issuercert.pem']) {
    const p = join(inst.caDir, f);
    if (existsSync(p)) out.push(readFileSync(p, 'utf8'));
  }
  return out;
}
