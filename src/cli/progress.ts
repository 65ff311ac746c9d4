import type { GlobalOptions } from './output.js';

/**
 * One progress line on a terminal for long operations (measuring a large image, adding many
 * enclave pages, verifying a batch). Library code only calls `onProgress(done, total)`; this
 * module decides whether anything is drawn: on stderr, only when it is a TTY and neither
 * --quiet nor --json was given. Redraws in place with a carriage return, at most once per
 * `minIntervalMs`, and blanks the line when the operation ends.
 */

/** What a progress line writes to: process.stderr, or a fake in tests. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(chunk: string): unknown;
}

export type ProgressUnit = 'bytes' | 'items';

export interface ProgressOptions {
  label: string;
  unit: ProgressUnit;
  /** What an item is called ("files"); with unit "items". */
  itemName?: string;
  /** Shortest time between two redraws (default 100 ms: at most 10 per second). */
  minIntervalMs?: number;
  now?: () => number;
}

const MiB = 1024 * 1024;

function formatAmount(n: number, unit: ProgressUnit): string {
  if (unit === 'items') return String(n);
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

export class ProgressLine {
  private readonly started: number;
  private readonly minIntervalMs: number;
  private readonly now: () => number;
  private lastDraw = Number.NEGATIVE_INFINITY;
  /** Length of the line currently on screen (0: nothing shown). */
  private shown = 0;
  /** Redraws so far (tests check the rate limit with it). */
  redraws = 0;

  constructor(
    private readonly stream: ProgressStream,
    private readonly opts: ProgressOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.minIntervalMs = opts.minIntervalMs ?? 100;
    this.started = this.now();
  }

  /** The callback library code takes; bound, so it can be passed as is. */
  readonly update = (done: number, total: number): void => {
    const t = this.now();
    if (t - this.lastDraw < this.minIntervalMs) return;
    this.lastDraw = t;
    this.draw(this.render(done, total, t));
  };

  /** Blanks the line (call once the operation is over, also on failure). */
  end(): void {
    if (this.shown === 0) return;
    this.stream.write(`\r${' '.repeat(this.shown)}\r`);
    this.shown = 0;
  }

  render(done: number, total: number, t: number): string {
    const { unit, label } = this.opts;
    const unitName = unit === 'items' ? ` ${this.opts.itemName ?? 'items'}` : '';
    const pct = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 0;
    const seconds = (t - this.started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const rateText = unit === 'bytes' ? `${(rate / MiB).toFixed(1)} MiB/s` : `${rate.toFixed(1)}${unitName}/s`;
    const width = 20;
    const filled = Math.round((pct / 100) * width);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
    return `${label} ${bar} ${String(pct).padStart(3)}%  ${formatAmount(done, unit)}/${formatAmount(total, unit)}${unitName}  ${rateText}`;
  }

  private draw(text: string): void {
    const max = this.stream.columns && this.stream.columns > 1 ? this.stream.columns - 1 : 200;
    const line = text.length > max ? text.slice(0, max) : text;
    // Pad over whatever longer line was there before.
    const pad = this.shown > line.length ? ' '.repeat(this.shown - line.length) : '';
    this.stream.write(`\r${line}${pad}`);
    this.shown = line.length;
    this.redraws++;
  }
}

/** Whether a progress line may be drawn on this stream for these options. */
export function progressWanted(opts: Pick<GlobalOptions, 'json' | 'quiet'>, stream: ProgressStream = process.stderr): boolean {
  return stream.isTTY === true && !opts.quiet && !opts.json;
}

/** A progress line for these options, or undefined when nothing should be drawn. */
export function progressFor(opts: Pick<GlobalOptions, 'json' | 'quiet'>, progress: ProgressOptions, stream: ProgressStream = process.stderr): ProgressLine | undefined {
  return progressWanted(opts, stream) ? new ProgressLine(stream, progress) : undefined;
}

/**
 * Runs `fn` with an `onProgress` callback when a line should be drawn (else undefined, so the
 * library takes its quiet path), and blanks the line afterwards whatever happens.
 */
export async function withProgress<T>(
  opts: Pick<GlobalOptions, 'json' | 'quiet'>,
  progress: ProgressOptions,
  fn: (onProgress: ((done: number, total: number) => void) | undefined) => Promise<T> | T,
  stream: ProgressStream = process.stderr,
): Promise<T> {
  const line = progressFor(opts, progress, stream);
  try {
    return await fn(line?.update);
  } finally {
    line?.end();
  }
}
