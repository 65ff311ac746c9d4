import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured logs to stderr. The CLI is quiet unless --verbose; the boot unit logs at info. */
export function createLogger(level: 'silent' | 'error' | 'warn' | 'info' | 'debug' = 'warn'): Logger {
  return pino(
    {
      level,
      base: { name: 'hyperenclave' },
      // Key material never reaches logs even if a caller passes it by mistake.
      redact: { paths: ['*.key', '*.secret', '*.privateKey', '*.tek', '*.tik', 'key', 'secret'], censor: '[redacted]' },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

let current: Logger | undefined;
export function log(): Logger {
  current ??= createLogger(process.env.HYPERENCLAVE_LOG_LEVEL as 'info' | undefined);
  return current;
}
export function setLogger(l: Logger): void {
  current = l;
}
