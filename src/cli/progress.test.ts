import { describe, expect, it } from 'vitest';
import { ProgressLine, progressFor, withProgress, type ProgressStream } from './progress.js';

/** A stream that says it is a terminal and keeps what was written. */
function fakeTty(columns = 120): ProgressStream & { chunks: string[] } {
  const chunks: string[] = [];
  return { isTTY: true, columns, chunks, write: (s: string) => chunks.push(s) };
}

/** What a terminal would show after the writes: \r returns to column 0, later text overwrites. */
function screen(chunks: string[]): string {
  let line: string[] = [];
  let col = 0;
  for (const ch of chunks.join('')) {
    if (ch === '\r') col = 0;
    else line[col++] = ch;
  }
  return line.join('').trimEnd();
}

describe('progress line', () => {
  it('redraws at most once per interval however often it is updated', () => {
    const tty = fakeTty();
    let now = 0;
    const p = new ProgressLine(tty, { label: 'measure img', unit: 'bytes', now: () => now });
    // 10,000 updates spread over 2 s of (fake) time: 1 update every 0.2 ms.
    for (let i = 1; i <= 10_000; i++) {
      now = i * 0.2;
      p.update(i * 4096, 10_000 * 4096);
    }
    expect(p.redraws).toBeGreaterThanOrEqual(19);
    expect(p.redraws).toBeLessThanOrEqual(21); // 10 per second
    expect(tty.chunks.length).toBe(p.redraws);
    for (const c of tty.chunks) expect(c.startsWith('\r')).toBe(true);
    expect(tty.chunks.join('')).not.toContain('\n');
  });

  it('shows label, percent, amounts and throughput, then clears the line completely', () => {
    const tty = fakeTty();
    let now = 0;
    const p = new ProgressLine(tty, { label: 'measure hv.img', unit: 'bytes', now: () => now });
    now = 1000;
    p.update(64 * 1024 * 1024, 256 * 1024 * 1024);
    const shown = screen(tty.chunks);
    expect(shown).toMatch(/^measure hv\.img \[#{5}\.{15}\]  25%  64\.0 MiB\/256\.0 MiB  64\.0 MiB\/s$/);
    p.end();
    expect(screen(tty.chunks)).toBe('');
    const last = tty.chunks[tty.chunks.length - 1]!;
    expect(last).toBe(`\r${' '.repeat(shown.length)}\r`);
    // Ending twice writes nothing more.
    const n = tty.chunks.length;
    p.end();
    expect(tty.chunks.length).toBe(n);
  });

  it('pads over a longer previous line', () => {
    const tty = fakeTty(200);
    let now = 0;
    const p = new ProgressLine(tty, { label: 'verify', unit: 'items', itemName: 'files', now: () => now });
    now = 100;
    p.update(999_999, 1_000_000);
    now = 10_000;
    p.update(1, 1_000_000);
    expect(screen(tty.chunks)).toBe(p.render(1, 1_000_000, 10_000));
  });

  it('fits the terminal width', () => {
    const tty = fakeTty(40);
    let now = 0;
    const p = new ProgressLine(tty, { label: 'measure /a/rather/long/path/to/hyperenclave.img', unit: 'bytes', now: () => now });
    now = 500;
    p.update(100 * 1024 * 1024, 1000 * 1024 * 1024);
    expect(tty.chunks.length).toBe(1);
    expect(tty.chunks[0]!.length).toBe(1 + 39);
    p.end();
    expect(screen(tty.chunks)).toBe('');
  });

  it('draws nothing unless stderr is a terminal and neither --json nor --quiet was given', async () => {
    expect(progressFor({}, { label: 'x', unit: 'bytes' }, { isTTY: false, write: () => true })).toBeUndefined();
    expect(progressFor({}, { label: 'x', unit: 'bytes' }, { write: () => true })).toBeUndefined();
    expect(progressFor({ json: true }, { label: 'x', unit: 'bytes' }, fakeTty())).toBeUndefined();
    expect(progressFor({ quiet: true }, { label: 'x', unit: 'bytes' }, fakeTty())).toBeUndefined();
    expect(progressFor({}, { label: 'x', unit: 'bytes' }, fakeTty())).toBeInstanceOf(ProgressLine);
    const seen = await withProgress({ json: true }, { label: 'x', unit: 'bytes' }, (cb) => cb, fakeTty());
    expect(seen).toBeUndefined();
  });

  it('withProgress clears the line when the operation fails', async () => {
    const tty = fakeTty();
    await expect(
      withProgress(
        {},
        { label: 'add pages', unit: 'bytes' },
        (cb) => {
          cb!(4096, 8192);
          throw new Error('EADD refused');
        },
        tty,
      ),
    ).rejects.toThrow('EADD refused');
    expect(tty.chunks.length).toBe(2);
    expect(screen(tty.chunks)).toBe('');
  });
});
