import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileSchema } from '../../src/schemas.js';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cliPath = join(repoRoot, 'dist', 'src', 'cli', 'main.js');

/** Why the built CLI cannot be run, or undefined (tests skip with this reason). */
export function cliMissing(): string | undefined {
  return existsSync(cliPath) ? undefined : `built CLI ${cliPath} missing: run "make build" (make test does)`;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  json?: { schema: string; version: number } & Record<string, unknown>;
}

/** Runs the built CLI as a separate process, as an operator would. */
export function runCli(args: string[], opts: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      env: { ...process.env, HYPERENCLAVE_TCTI: '', TPM2TOOLS_TCTI: '', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      const res: CliResult = { code: code ?? -1, stdout, stderr };
      if (args.includes('--json') && code === 0) res.json = JSON.parse(stdout) as CliResult['json'];
      resolve(res);
    });
    child.stdin.end(opts.input ?? '');
  });
}

const validators = new Map<string, (d: unknown) => string | undefined>();

/** Validates a --json document against schemas/<name>.schema.json, named by its "schema" field. */
export function schemaProblems(doc: { schema: string }): string | undefined {
  const name = doc.schema.replace(/^hyperenclave\//, '');
  const file = `${name}.schema.json`;
  if (!existsSync(join(repoRoot, 'schemas', file))) return `no schema file schemas/${file} for "${doc.schema}"`;
  let v = validators.get(file);
  if (!v) validators.set(file, (v = compileSchema(file)));
  return v(doc);
}

export function readJson(path: string): unknown {
  return JSON.parse(readFileSync(path, 'utf8'));
}

/** stdout as a JSON document whatever the exit code (runCli parses it only on success). */
export function stdoutJson(r: CliResult): { schema: string; version: number } & Record<string, unknown> {
  return JSON.parse(r.stdout) as { schema: string; version: number } & Record<string, unknown>;
}

/**
 * What is wrong with a failed run's stderr as an operator sees it, or undefined when it is one
 * clear line: exactly one line, starting "hyperenclave: ", no stack trace.
 */
export function errorLineProblem(r: CliResult): string | undefined {
  if (/\n\s+at \S|node:internal|\.js:\d+:\d+/.test(r.stderr)) return `stack trace on stderr: ${r.stderr}`;
  if (!r.stderr.endsWith('\n')) return `stderr is not one terminated line: ${JSON.stringify(r.stderr)}`;
  const lines = r.stderr.slice(0, -1).split('\n');
  if (lines.length !== 1) return `${lines.length} lines on stderr, want 1: ${JSON.stringify(r.stderr)}`;
  if (!lines[0]!.startsWith('hyperenclave: ')) return `stderr does not start with "hyperenclave: ": ${lines[0]}`;
  return undefined;
}

/** A `hyperenclave verifier serve` child process listening on a port the kernel chose. */
export interface ServedVerifier {
  /** http://127.0.0.1:PORT, as the service printed it. */
  url: string;
  /** What it printed on stdout so far (with --json: its hyperenclave/verifier-serve document). */
  stdout(): string;
  /** SIGTERM, then waits for the exit (SIGKILL after 5 s). */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `hyperenclave GLOBAL… verifier serve --listen 127.0.0.1:0 ARGS…` and waits for the address it prints. */
export async function startVerifierServe(globalArgs: string[], serveArgs: string[], opts: { json?: boolean } = {}): Promise<ServedVerifier> {
  const args = [cliPath, ...globalArgs, ...(opts.json ? ['--json'] : []), 'verifier', 'serve', '--listen', '127.0.0.1:0', ...serveArgs];
  const child = spawn(process.execPath, args, { env: { ...process.env, HYPERENCLAVE_TCTI: '', TPM2TOOLS_TCTI: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let out = '';
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      const r = await exited;
      clearTimeout(t);
      return r;
    }
    return exited;
  };
  const addressIn = (text: string): string | undefined => {
    if (!opts.json) return /^verifier listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(text)?.[1];
    try {
      return (JSON.parse(text) as { url?: string }).url;
    } catch {
      return undefined; // not all of the document yet
    }
  };
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`verifier serve printed no address in 30 s: ${out} ${err}`)), 30_000);
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const u = addressIn(out);
        if (u) {
          clearTimeout(t);
          resolve(u);
        }
      });
      void exited.then(({ code }) => {
        clearTimeout(t);
        reject(new Error(`verifier serve exited ${code}: ${err}`));
      });
    });
    return { url, stdout: () => out, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** An http:// URL on loopback where nothing listens (a port the kernel just handed out and took back). */
export async function unusedLoopbackUrl(): Promise<string> {
  const { createServer } = await import('node:net');
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

/**
 * Copies the CA certificates of the emulated platform's swtpm (state dir `state`) into `dir` and
 * writes `dir/policy.json`: AK enrolled, runtime log and hypervisor reference required, PCRs 0-7
 * and 12, reference values from `dir/reference-values.json`. Returns the CA file names.
 */
export function writeEmulatedVerifierPolicy(state: string, dir: string): string[] {
  const caDir = join(state, 'emulated/tpm/state/ca');
  const cas = ['swtpm-localca-rootca-cert.pem', 'issuercert.pem'].filter((c) => existsSync(join(caDir, c)));
  if (!cas.length) throw new Error(`no swtpm CA certificates in ${caDir}`);
  cas.forEach((c) => writeFileSync(join(dir, c), readFileSync(join(caDir, c))));
  writeFileSync(
    join(dir, 'policy.json'),
    JSON.stringify({
      schema: 'hyperenclave/verifier-policy',
      version: 1,
      checks: { 'ak.provenance': 'required', 'eventlog.runtime': 'required', 'reference.hypervisor': 'required' },
      requiredPcrs: { sha256: [0, 1, 2, 3, 4, 5, 6, 7, 12] },
      referenceValues: 'reference-values.json',
      hypervisor: { pcr: 12 },
      akProvenance: { trustedEkCaFiles: cas },
    }),
  );
  return cas;
}
