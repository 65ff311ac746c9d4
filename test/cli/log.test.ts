import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createLogger, lazyLogger, logColorFor, logFormatFor, logLevelFromEnv, type LogFormat } from '../../src/log.js';
import { repoRoot } from '../helpers/cli.js';
import { scriptMissing } from './tty.js';
import { skipUnless } from '../helpers/require.js';

const SECRETS = {
  key: 'S3CRET-key-material',
  secret: 'S3CRET-activation-secret',
  privateKey: 'S3CRET-private-pem',
  password: 'S3CRET-password',
  tik: 'S3CRET-tik',
};
const NESTED = { ak: { privateKey: 'S3CRET-nested-private', name: '000b1234' }, enrollment: { secret: 'S3CRET-nested-secret' }, vmsa: { tek: 'S3CRET-tek' } };
const ALL_SECRETS = /S3CRET/;
const ANSI = /\x1b\[/;

function capture(format: LogFormat, color = false): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger('debug', { format, color, destination: { write: (l: string) => lines.push(l) } }) };
}

describe('the CLI\'s lazy logger: pino is made on the first line at the level, not before', () => {
  it('below the level nothing is written and nothing made; at the level the line is written, redacted', () => {
    const lines: string[] = [];
    const log = lazyLogger('warn', { format: 'json', destination: { write: (l: string) => lines.push(l) } });
    expect(log.level).toBe('warn');
    expect(log.isLevelEnabled('info')).toBe(false);
    log.info({ secret: 'S3CRET' }, 'not at this level');
    log.debug('nor this');
    expect(lines).toEqual([]);
    log.warn({ secret: 'S3CRET', step: 'boot' }, 'at the level');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, msg: 'at the level', secret: '[redacted]', step: 'boot', name: 'hyperenclave' });
  });
});

describe('logs: JSON for the unit, pretty for a terminal, secrets redacted in both', () => {
  for (const format of ['json', 'pretty'] as const) {
    it(`${format}: keys and secrets are redacted at the top level and one level down`, () => {
      const { lines, log } = capture(format);
      log.info({ ...SECRETS, ...NESTED, step: 'enroll' }, 'AK enrolled');
      log.error({ err: new Error('activation failed'), secret: 'S3CRET-in-error' }, 'enroll failed');
      const text = lines.join('');
      expect(text).toContain('AK enrolled');
      expect(text).toContain('enroll failed');
      expect(text).toContain('[redacted]');
      expect(text).toContain('000b1234'); // what is not secret stays
      expect(text).not.toMatch(ALL_SECRETS);
      expect(text).not.toMatch(ANSI);
      if (format === 'json') {
        const first = JSON.parse(lines[0]!) as Record<string, unknown>;
        expect(first).toMatchObject({ level: 30, name: 'hyperenclave', msg: 'AK enrolled', key: '[redacted]', ak: { privateKey: '[redacted]', name: '000b1234' } });
      } else {
        expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: AK enrolled\n/);
        expect(lines[0]).toMatch(/key: "\[redacted\]"/);
      }
    });
  }

  it('pretty colours only when asked', () => {
    const { lines, log } = capture('pretty', true);
    log.warn('colourful');
    expect(lines.join('')).toMatch(ANSI);
  });

  it('format: HYPERENCLAVE_LOG_FORMAT wins, else pretty only on a terminal; colour off with NO_COLOR or --no-color', () => {
    expect(logFormatFor({}, false)).toBe('json');
    expect(logFormatFor({}, true)).toBe('pretty');
    expect(logFormatFor({ HYPERENCLAVE_LOG_FORMAT: 'json' }, true)).toBe('json');
    expect(logFormatFor({ HYPERENCLAVE_LOG_FORMAT: 'pretty' }, false)).toBe('pretty');
    expect(logFormatFor({ HYPERENCLAVE_LOG_FORMAT: 'xml' }, false)).toBe('json');
    expect(logColorFor(undefined, {}, true)).toBe(true);
    expect(logColorFor(undefined, {}, false)).toBe(false);
    expect(logColorFor(false, {}, true)).toBe(false);
    expect(logColorFor(undefined, { NO_COLOR: '1' }, true)).toBe(false);
    expect(logLevelFromEnv({ HYPERENCLAVE_LOG_LEVEL: 'info' })).toBe('info');
    expect(logLevelFromEnv({ HYPERENCLAVE_LOG_LEVEL: 'loud' })).toBeUndefined();
  });
});

const logModule = join(repoRoot, 'dist', 'src', 'log.js');
const noDist = skipUnless('log process tests', [['cli', existsSync(logModule) ? undefined : `${logModule} missing: run "make build"`]]);
const noPty = noDist ?? skipUnless('log pseudo-terminal tests', [['script', scriptMissing()]]);

/** A process that logs secrets the way the CLI sets its logger up, then exits at once. */
const PROGRAM = `
import { createLogger, logColorFor, logFormatFor } from ${JSON.stringify(logModule)};
const log = createLogger('info', { format: logFormatFor(), color: logColorFor(process.argv.includes('--no-color') ? false : undefined) });
log.info(${JSON.stringify({ ...SECRETS, ...NESTED })}, 'last line before exit');
process.exit(5);
`;

function runProgram(env: Record<string, string>, opts: { pty?: boolean; noColor?: boolean } = {}): Promise<{ code: number; out: string }> {
  const node = [process.execPath, '--input-type=module', '-e', PROGRAM, ...(opts.noColor ? ['--', '--no-color'] : [])];
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const [cmd, args] = opts.pty ? ['script', ['-qec', node.map(quote).join(' '), '/dev/null']] : [node[0]!, node.slice(1)];
  return new Promise((resolve, reject) => {
    const c = spawn(cmd as string, args as string[], { env: { ...process.env, HYPERENCLAVE_LOG_FORMAT: '', NO_COLOR: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.on('error', reject);
    c.on('close', (code) => resolve({ code: code ?? -1, out }));
  });
}

describe.skipIf(!!noDist)('logs from a process that exits right after logging', () => {
  it('stderr is a pipe: one JSON line, redacted, not lost on exit', async () => {
    const r = await runProgram({});
    expect(r.code).toBe(5);
    const doc = JSON.parse(r.out.trim()) as Record<string, unknown>;
    expect(doc).toMatchObject({ msg: 'last line before exit', key: '[redacted]', tik: '[redacted]', vmsa: { tek: '[redacted]' } });
    expect(r.out).not.toMatch(ALL_SECRETS);
  });

  it('HYPERENCLAVE_LOG_FORMAT=pretty on a pipe: human lines, no colour, redacted, not lost', async () => {
    const r = await runProgram({ HYPERENCLAVE_LOG_FORMAT: 'pretty' });
    expect(r.code).toBe(5);
    expect(r.out).toMatch(/INFO: last line before exit\n/);
    expect(r.out).toContain('[redacted]');
    expect(r.out).not.toMatch(ALL_SECRETS);
    expect(r.out).not.toMatch(ANSI);
  });

  it.skipIf(!!noPty)('on a terminal: pretty and coloured by default, plain with NO_COLOR or --no-color, JSON when asked', async () => {
    const pretty = await runProgram({}, { pty: true });
    expect(pretty.code).toBe(5);
    expect(pretty.out).toMatch(/INFO.*: .*last line before exit/);
    expect(pretty.out).toMatch(ANSI);
    expect(pretty.out).not.toMatch(ALL_SECRETS);
    for (const r of [await runProgram({ NO_COLOR: '1' }, { pty: true }), await runProgram({}, { pty: true, noColor: true })]) {
      expect(r.out).toMatch(/INFO: last line before exit\r?\n/);
      expect(r.out).not.toMatch(ANSI);
      expect(r.out).not.toMatch(ALL_SECRETS);
    }
    const json = await runProgram({ HYPERENCLAVE_LOG_FORMAT: 'json' }, { pty: true });
    expect(JSON.parse(json.out.trim())).toMatchObject({ msg: 'last line before exit', secret: '[redacted]' });
  });
});
