import { EXIT, HyperEnclaveError } from '../errors.js';

export interface GlobalOptions {
  json?: boolean;
  verbose?: boolean;
  quiet?: boolean;
  color?: boolean;
  platform?: string;
  config?: string;
  tcti?: string;
  stateDir?: string;
}

/** Prints a JSON document (with schema + version) or the human text, per --json. */
export function emit(opts: { json?: boolean }, doc: { schema: string; version: number } & Record<string, unknown>, human: () => string): void {
  if (opts.json) process.stdout.write(JSON.stringify(doc, jsonReplacer, 2) + '\n');
  else {
    const text = human();
    if (text) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
  }
}

export function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (value && typeof value === 'object' && (value as { type?: string }).type === 'Buffer' && Array.isArray((value as { data?: unknown }).data))
    return Buffer.from((value as { data: number[] }).data).toString('hex');
  if (value instanceof Map) return Object.fromEntries(value);
  return value;
}

export class UsageError extends HyperEnclaveError {
  constructor(message: string) {
    super(message, EXIT.USAGE);
  }
}

/** Renders rows as an aligned text table. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
