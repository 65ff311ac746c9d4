import { spawn, spawnSync } from 'node:child_process';
import { cliPath } from '../helpers/cli.js';

/**
 * Running the built CLI under a pseudo-terminal with util-linux `script`, so that
 * process.stderr.isTTY is true in the child as on an operator's terminal.
 */

/** Why no pseudo-terminal test can run here, or undefined. */
export function scriptMissing(): string | undefined {
  const r = spawnSync('script', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return '`script` (util-linux) not found: pseudo-terminal tests skipped';
  if (!/util-linux/.test(r.stdout + r.stderr)) return '`script` is not util-linux\'s: pseudo-terminal tests skipped';
  return undefined;
}

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Runs `hyperenclave ARGS` on a pseudo-terminal; stdout goes to `stdoutFile` (when given) so
 * that `terminal` holds only what the CLI wrote to its (terminal) stderr.
 */
export function runCliOnTty(args: string[], opts: { stdoutFile?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<{ code: number; terminal: string }> {
  const cmd = [process.execPath, cliPath, ...args].map(quote).join(' ') + (opts.stdoutFile ? ` > ${quote(opts.stdoutFile)}` : '');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', cmd, '/dev/null'], {
      env: { ...process.env, HYPERENCLAVE_TCTI: '', TPM2TOOLS_TCTI: '', TERM: 'xterm', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let terminal = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (terminal += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (terminal += d));
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, terminal });
    });
  });
}

/** What a terminal shows on the last line after this output: \r returns to column 0. */
export function lastScreenLine(output: string): string {
  const lines = output.replace(/\r\n/g, '\n').split('\n');
  let last = lines.pop() ?? '';
  if (last === '' && lines.length) last = lines.pop()!;
  const cells: string[] = [];
  let col = 0;
  for (const ch of last) {
    if (ch === '\r') col = 0;
    else cells[col++] = ch;
  }
  return cells.join('').trimEnd();
}
