import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { basename, dirname, join } from 'node:path';
import { EventLogError } from './errors.js';
import { parseEventLog, type EventLog, type ParseOptions, type SpecIdAlgorithm } from './parse.js';
import { encodeEvent2, encodeSpecIdHeader, specIdAlgorithms, startupLocalityEvent, type EventInput, type SpecIdInput } from './write.js';
import { readFileBounded } from '../fs/bounded-read.js';

export interface AppenderOptions {
  /** Banks every record carries (e.g. ['sha1', 'sha256', 'sha384']); must match an existing file's. */
  banks: readonly string[];
  /** Other Spec ID fields for a new file. */
  specId?: Omit<SpecIdInput, 'banks'>;
}

export interface AppendResult {
  /** Index of the appended event in the log (the header is #0). */
  index: number;
  offset: number;
  length: number;
}

/** Reads an event log file, ignoring (and reporting in `tornTail`) an incomplete last record. */
export async function readEventLogFile(path: string, opts: ParseOptions = {}): Promise<EventLog> {
  const bytes = readFileBounded(path, { what: 'event log', kind: 'log' });
  try {
    return parseEventLog(bytes, { allowTornTail: true, ...opts });
  } catch (e) {
    if (e instanceof EventLogError) e.message = `${path}: ${e.message}`;
    throw e;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/**
 * Moves a runtime log that belongs to an earlier TPM boot aside (`<path>.prev`, replacing an
 * older one) so the next append starts a new log; the rename is made durable. Returns the new name.
 */
export async function archiveEventLogFile(path: string): Promise<string> {
  const to = `${path}.prev`;
  await rename(path, to);
  await fsyncDir(dirname(path));
  return to;
}

/**
 * The management plane's runtime measurement log: crypto-agile TCG_PCR_EVENT2 records appended
 * one at a time, each durable (fdatasync) before append() resolves.
 *
 * Crash safety by append + fsync with a length-checked reader rather than rewrite-via-rename:
 * the log grows by one record per extend for the whole uptime, so rewriting it would make n
 * appends cost O(n²) I/O. Records are self-delimiting, so a crash mid-write can only leave an
 * incomplete last record (or zero fill, on file systems that extend the size before the data);
 * readers (readEventLogFile, parseEventLog with allowTornTail) ignore and report it, and open()
 * cuts it off before appending again, so a torn record is never followed by good ones. The file
 * itself (header + first record) appears atomically via temp file + fsync + rename.
 * One writer per file: appends within a process are serialised; the file is opened O_APPEND so a
 * record is always written whole at the end.
 */
export class EventLogAppender {
  private fh: FileHandle | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private constructor(
    readonly path: string,
    private readonly algs: SpecIdAlgorithm[],
    private readonly opts: AppenderOptions,
    private size: number,
    private count: number,
    /** Bytes cut off an incomplete tail when opened (0 if the file was clean). */
    readonly repairedBytes: number,
  ) {}

  /** Opens (or prepares to create) a runtime log; checks an existing file's banks and repairs a torn tail. */
  static async open(path: string, opts: AppenderOptions): Promise<EventLogAppender> {
    const algs = specIdAlgorithms({ banks: opts.banks });
    let existing: Buffer | undefined;
    try {
      existing = readFileBounded(path, { what: 'runtime log', kind: 'log' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && !(e instanceof HyperEnclaveError && e.exitCode === EXIT.NOT_FOUND)) throw e;
    }
    if (!existing || existing.length === 0) return new EventLogAppender(path, algs, opts, 0, 0, 0);
    const log = parseEventLog(existing, { allowTornTail: true, strictDigestCount: true });
    if (log.format !== 'crypto-agile') throw new EventLogError(`${path} is a SHA-1-only log; the runtime log must be crypto-agile`, { offset: 0 });
    const have = log.banks.join(',');
    if (have !== algs.map((a) => a.bank).join(',')) throw new EventLogError(`${path} carries banks ${have}, this appender writes ${algs.map((a) => a.bank).join(',')}`, { offset: 0, field: 'SpecIdEvent.digestSizes' });
    const a = new EventLogAppender(path, algs, opts, log.byteLength, log.events.length, existing.length - log.byteLength);
    if (a.repairedBytes > 0) {
      const fh = await open(path, 'r+');
      try {
        await fh.truncate(log.byteLength);
        await fh.datasync();
      } finally {
        await fh.close();
      }
    }
    return a;
  }

  /** Events in the log, counting the header. */
  get eventCount(): number {
    return this.count;
  }

  get byteLength(): number {
    return this.size;
  }

  /** Appends one event (digests for banks not given are the hash of its data); durable when resolved. */
  append(ev: EventInput): Promise<AppendResult> {
    const run = this.queue.then(() => this.appendNow(ev));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Appends the EV_NO_ACTION StartupLocality event (only meaningful as the first event). */
  appendStartupLocality(locality: number): Promise<AppendResult> {
    return this.append(startupLocalityEvent(locality));
  }

  private async appendNow(ev: EventInput): Promise<AppendResult> {
    const record = encodeEvent2(ev, this.algs);
    if (this.count === 0) return this.create(record);
    this.fh ??= await open(this.path, 'a');
    const offset = this.size;
    try {
      let done = 0;
      while (done < record.length) done += (await this.fh.write(record, done, record.length - done)).bytesWritten;
      await this.fh.datasync();
    } catch (e) {
      // Do not leave a partial record behind (best effort; open() repairs it otherwise).
      await this.fh.truncate(offset).catch(() => undefined);
      throw e;
    }
    this.size += record.length;
    return { index: this.count++, offset, length: record.length };
  }

  /** First append: header + record written to a temp file, fsync'd, renamed into place. */
  private async create(record: Buffer): Promise<AppendResult> {
    const header = encodeSpecIdHeader({ ...this.opts.specId, banks: this.opts.banks });
    await mkdir(dirname(this.path), { recursive: true }); // a fresh machine has no state directory yet
    const tmp = join(dirname(this.path), `.${basename(this.path)}.${process.pid}.tmp`);
    try {
      const fh = await open(tmp, 'w', 0o644);
      try {
        const all = Buffer.concat([header, record]);
        for (let done = 0; done < all.length; ) done += (await fh.write(all, done, all.length - done)).bytesWritten;
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.path);
    } catch (e) {
      await rm(tmp, { force: true }); // nothing half-written left behind (a full or read-only disk)
      throw e;
    }
    await fsyncDir(dirname(this.path));
    this.size = header.length + record.length;
    this.count = 2;
    return { index: 1, offset: header.length, length: record.length };
  }

  async close(): Promise<void> {
    await this.queue;
    await this.fh?.close();
    this.fh = undefined;
  }
}
