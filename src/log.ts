import { createRequire } from 'node:module';
import type { DestinationStream, Logger } from 'pino';

const requireHere = createRequire(import.meta.url);
/** pino, loaded when the first logger is made (a run that logs nothing never loads it). */
const pinoModule = (): typeof import('pino') => requireHere('pino') as typeof import('pino');

export type { Logger };

export type LogLevel = 'silent' | 'error' | 'warn' | 'info' | 'debug';
export type LogFormat = 'json' | 'pretty';

/** Key material never reaches logs even if a caller passes it by mistake (pino redacts before formatting). */
export const REDACT_PATHS = ['key', 'secret', 'privateKey', 'password', 'tek', 'tik', '*.key', '*.secret', '*.privateKey', '*.password', '*.tek', '*.tik'];

/**
 * JSON lines when stderr is not a terminal (the systemd unit, pipes); human lines on a terminal.
 * HYPERENCLAVE_LOG_FORMAT=json|pretty overrides either way.
 */
export function logFormatFor(env: NodeJS.ProcessEnv = process.env, stderrIsTTY = process.stderr.isTTY === true): LogFormat {
  const f = env.HYPERENCLAVE_LOG_FORMAT?.trim().toLowerCase();
  if (f === 'json' || f === 'pretty') return f;
  return stderrIsTTY ? 'pretty' : 'json';
}

/** Colours only on a terminal, and never with --no-color or NO_COLOR (https://no-color.org). */
export function logColorFor(color: boolean | undefined, env: NodeJS.ProcessEnv = process.env, stderrIsTTY = process.stderr.isTTY === true): boolean {
  return color !== false && !env.NO_COLOR && stderrIsTTY;
}

export interface LoggerOptions {
  format?: LogFormat;
  color?: boolean;
  /** Prefix each JSON line with its syslog priority for journald (default: when JOURNAL_STREAM is set, i.e. under systemd). */
  journald?: boolean;
  /** Where lines go (default: stderr, written synchronously). */
  destination?: { write(line: string): unknown };
}

type PrettyModule = { prettyFactory(o: Record<string, unknown>): (line: string | object) => string };

/** Structured logs to stderr. The CLI is quiet unless --verbose; the boot unit logs at info. */
export function createLogger(level: LogLevel = 'warn', opts: LoggerOptions = {}): Logger {
  const format = opts.format ?? logFormatFor();
  const { pino } = pinoModule();
  const sink = opts.destination ?? pino.destination({ fd: 2, sync: true });
  let destination = sink;
  if (format === 'pretty') {
    // pino-pretty's formatter used in-line (no worker, no transform stream): each line is
    // written before the logging call returns, so nothing is lost when the process exits.
    // Loaded on the first line, so a quiet run does not pay for it.
    let prettify: ((line: string) => string) | undefined;
    const colorize = opts.color ?? logColorFor(undefined);
    destination = {
      write: (line: string) => {
        prettify ??= (requireHere('pino-pretty') as PrettyModule).prettyFactory({ colorize, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' });
        return sink.write(prettify(line));
      },
    };
  }
  if (format === 'json' && (opts.journald ?? underJournald())) {
    const plain = destination;
    destination = { write: (line: string) => plain.write(journaldPrefix(line) + line) };
  }
  return pino(
    {
      level,
      base: { name: 'hyperenclave' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    destination as DestinationStream,
  );
}

/** True when stderr is connected to the journal (systemd sets JOURNAL_STREAM for a unit's stdout/stderr). */
export function underJournald(env: NodeJS.ProcessEnv = process.env): boolean {
  return !!env.JOURNAL_STREAM;
}

/**
 * The sd-daemon(3) priority prefix for a pino JSON line: journald (SyslogLevelPrefix=yes, its
 * default) strips "<N>" and files the line at that priority. pino 10/20 -> debug (7),
 * 30 -> info (6), 40 -> warning (4), 50 -> err (3), 60 -> crit (2).
 */
export function journaldPrefix(line: string): string {
  const m = /"level":(\d+)/.exec(line.slice(0, 40));
  const l = m ? Number(m[1]) : 30;
  return l >= 60 ? '<2>' : l >= 50 ? '<3>' : l >= 40 ? '<4>' : l >= 30 ? '<6>' : '<7>';
}

const LEVELS: readonly string[] = ['silent', 'error', 'warn', 'info', 'debug'];

/** HYPERENCLAVE_LOG_LEVEL (the unit sets info), when it names a level. */
export function logLevelFromEnv(env: NodeJS.ProcessEnv = process.env): LogLevel | undefined {
  const l = env.HYPERENCLAVE_LOG_LEVEL?.trim().toLowerCase();
  return l && LEVELS.includes(l) ? (l as LogLevel) : undefined;
}

/** pino's numeric levels for the methods a caller may use. */
const METHOD_LEVEL: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };
const THRESHOLD: Record<LogLevel, number> = { debug: 20, info: 30, warn: 40, error: 50, silent: Infinity };
const noop = (): void => {};

/**
 * createLogger(level, opts) made on the first call at or above `level`: below it a call is a
 * no-op, so a command that logs nothing at its level never loads pino. Anything else (child,
 * bindings, flush, ...) makes the real logger.
 */
export function lazyLogger(level: LogLevel = 'warn', opts: LoggerOptions = {}): Logger {
  let real: Logger | undefined;
  const make = (): Logger => (real ??= createLogger(level, opts));
  return new Proxy({} as Logger, {
    get(_t, prop) {
      if (typeof prop === 'string') {
        if (prop === 'level' && !real) return level;
        if (prop === 'isLevelEnabled' && !real) return (l: string) => (METHOD_LEVEL[l] ?? Infinity) >= THRESHOLD[level];
        const m = METHOD_LEVEL[prop];
        if (m !== undefined && m < THRESHOLD[level]) return noop;
      }
      const r = make();
      const v = Reflect.get(r, prop, r) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(r) : v;
    },
  });
}

let current: Logger | undefined;
export function log(): Logger {
  current ??= lazyLogger(logLevelFromEnv() ?? 'warn');
  return current;
}
export function setLogger(l: Logger): void {
  current = l;
}
