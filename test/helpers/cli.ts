import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
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
