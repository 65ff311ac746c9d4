import { existsSync, readFileSync, statSync } from 'node:fs';
import { archiveEventLogFile, EventLogAppender, readEventLogFile } from '../eventlog/appender.js';
import { replay } from '../eventlog/replay.js';
import { defaultInitialValue } from '../eventlog/replay.js';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { withStateLock } from '../platform/lock.js';
import { measureJournalPath, runtimeLogPath } from '../platform/logs.js';
import { hashAlgByName, type HashAlgName } from '../tpm/alg.js';
import type { MeasureTpm } from './measure.js';
import { extendPcr } from './plan.js';

/**
 * Write-ahead measurement: the runtime log, the TPM and this journal are kept so that a crash
 * (SIGKILL, power loss) at any instant leaves a state the next run reconciles exactly.
 *
 * Per event: (1) the journal records it as pending (fsync'd), (2) the PCR is extended,
 * (3) the event is appended to the runtime log (fsync'd), (4) the journal confirms it.
 * On the next open, a pending event is resolved against the TPM: if the log's replay already
 * equals the PCR the extension never happened (dropped, measured again); if the replay plus
 * the pending event equals the PCR it happened (the event is appended now); anything else means
 * something outside this tool extended the PCR, which is refused (the log could not be made true).
 *
 * The journal also carries the TPM boot the log belongs to (TPMS_CLOCK_INFO resetCount and
 * restartCount from TPM2_ReadClock) and how far the current image's events got in this boot, so
 * a retry continues where the killed run stopped and never extends an image twice in one boot.
 */

export const JOURNAL_SCHEMA = 'hyperenclave/measure-journal';
/** Far larger than any journal (a few events of a few hundred bytes); bounds the read. */
const MAX_JOURNAL_BYTES = 1 << 20;

export interface JournalEvent {
  pcr: number;
  type: number;
  digests: Record<string, string>;
  data: string;
}

export interface JournalState {
  schema: typeof JOURNAL_SCHEMA;
  version: 1;
  /** TPM boot identity the runtime log belongs to. */
  epoch: string;
  /** An event recorded as intended but not yet confirmed; logEvents: the log's event count before it. */
  pending?: { event: JournalEvent; logEvents: number; outsidePlan?: boolean };
  /** The image whose events are being (or were) measured in this TPM boot, and how many are done. */
  progress?: { imageId: string; policy: string; banks: string[]; done: number; total: number };
  updatedAt: string;
}

export interface Reconciliation {
  /** TPM boot identity now. */
  epoch: string;
  /** What had to be done, for logs and `boot --json` (empty when the state was clean). */
  actions: string[];
}


function readJournal(path: string): JournalState | undefined {
  if (!existsSync(path)) return undefined;
  try {
    if (statSync(path).size > MAX_JOURNAL_BYTES) return undefined;
    const j = JSON.parse(readFileSync(path, 'utf8')) as JournalState;
    if (j?.schema !== JOURNAL_SCHEMA || typeof j.epoch !== 'string') return undefined;
    return j;
  } catch {
    // Written by temp + fsync + rename, so a torn journal means someone else wrote it: start over
    // from the log and the TPM, which are what a verifier checks.
    return undefined;
  }
}

const toJournalEvent = (e: { pcr: number; type: number; digests: Record<string, Buffer>; data: Buffer }): JournalEvent => ({
  pcr: e.pcr,
  type: e.type,
  digests: Object.fromEntries(Object.entries(e.digests).map(([k, v]) => [k, v.toString('hex')])),
  data: e.data.toString('hex'),
});
const fromJournalEvent = (e: JournalEvent) => ({
  pcr: e.pcr,
  type: e.type,
  digests: Object.fromEntries(Object.entries(e.digests).map(([k, v]) => [k, Buffer.from(v, 'hex')])) as Record<string, Buffer>,
  data: Buffer.from(e.data, 'hex'),
});

/** The log's replayed value of `pcr` per bank (its start value when the log never extends it). */
async function replayedPcr(logPath: string, pcr: number, banks: readonly string[]): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const r = existsSync(logPath) ? replay(await readEventLogFile(logPath)) : undefined;
  for (const b of banks) {
    const size = hashAlgByName(b)!.size;
    out.set(b, r?.get(b)?.get(pcr) ?? defaultInitialValue(pcr, size));
  }
  return out;
}

async function tpmPcr(tpm: MeasureTpm, pcr: number, banks: readonly string[]): Promise<Map<string, Buffer>> {
  if (!tpm.pcrRead) throw new HyperEnclaveError('measure: reconciling the runtime log needs PCR reads from the TPM', EXIT.INTERNAL);
  const v = await tpm.pcrRead([pcr], banks as HashAlgName[]);
  const out = new Map<string, Buffer>();
  for (const b of banks) {
    const d = v[b as HashAlgName]?.[pcr];
    if (!d) throw new HyperEnclaveError(`measure: the TPM returned no ${b} value for PCR ${pcr}`, EXIT.TPM);
    out.set(b, d);
  }
  return out;
}

const sameValues = (a: Map<string, Buffer>, b: Map<string, Buffer>): boolean => [...a].every(([k, v]) => b.get(k)?.equals(v) ?? false);

/** Whether the log replays exactly to the TPM for every PCR it extends (banks both have). */
async function logMatchesTpm(logPath: string, tpm: MeasureTpm, banks: readonly string[]): Promise<boolean> {
  if (!existsSync(logPath)) return true;
  const log = await readEventLogFile(logPath);
  const r = replay(log);
  const pcrs = new Set<number>();
  for (const b of banks) for (const p of r.get(b)?.keys() ?? []) pcrs.add(p);
  for (const p of pcrs) if (!sameValues(await replayedPcr(logPath, p, banks), await tpmPcr(tpm, p, banks))) return false;
  return true;
}

export class MeasurementJournal {
  private constructor(
    readonly path: string,
    readonly logPath: string,
    private state: JournalState,
  ) {}

  get epoch(): string {
    return this.state.epoch;
  }

  get progress(): JournalState['progress'] {
    return this.state.progress;
  }

  private save(): void {
    this.state.updatedAt = new Date().toISOString();
    writeFileAtomic(this.path, JSON.stringify(this.state, null, 2) + '\n', 0o600);
  }

  /**
   * Reads the journal and brings the runtime log, the journal and the TPM into agreement (see
   * the module comment). Call with the state directory's lock held: one writer at a time.
   */
  static async open(args: { path: string; logPath: string; tpm: MeasureTpm; banks: readonly string[] }): Promise<{ journal: MeasurementJournal; reconciliation: Reconciliation }> {
    if (!args.tpm.epoch) throw new HyperEnclaveError('measure: the TPM client cannot read TPM2_ReadClock (needed to tell TPM boots apart)', EXIT.INTERNAL);
    const epoch = await args.tpm.epoch();
    const actions: string[] = [];
    let j = readJournal(args.path);
    const banks = args.banks;
    if (!j || j.epoch !== epoch) {
      // Another TPM boot (or no journal): the log stays only if it still replays to the PCRs
      // (a resume from suspend keeps PCRs but counts a restart); otherwise it was the previous
      // boot's log and a new one starts.
      const old = j;
      let kept = true;
      if (existsSync(args.logPath) && !(await logMatchesTpm(args.logPath, args.tpm, banks))) {
        kept = false;
        const to = await archiveEventLogFile(args.logPath);
        actions.push(old ? `the TPM was reset since the runtime log was written (${old.epoch} → ${epoch}): previous log kept as ${to}, new log started` : `the runtime log does not replay to the TPM and no journal says why: kept as ${to}, new log started`);
      }
      j = { schema: JOURNAL_SCHEMA, version: 1, epoch, ...(kept && old?.progress && existsSync(args.logPath) ? { progress: old.progress } : {}), updatedAt: '' };
      const journal = new MeasurementJournal(args.path, args.logPath, j);
      journal.save();
      return { journal, reconciliation: { epoch, actions } };
    }
    const journal = new MeasurementJournal(args.path, args.logPath, j);
    if (j.pending) {
      const { event, logEvents } = j.pending;
      const ev = fromJournalEvent(event);
      // Opening the appender cuts off a torn last record first.
      const appender = await EventLogAppender.open(args.logPath, { banks });
      try {
        const evBanks = banks.filter((b) => ev.digests[b]);
        if (appender.eventCount > logEvents) {
          actions.push(`event for PCR ${ev.pcr} was extended and logged before the interruption: confirmed`);
          if (j.progress && !j.pending.outsidePlan) j.progress.done++;
        } else {
          const before = await replayedPcr(args.logPath, ev.pcr, evBanks);
          const now = await tpmPcr(args.tpm, ev.pcr, evBanks);
          const after = new Map([...before].map(([b, v]) => [b, extendPcr(b as HashAlgName, v, ev.digests[b]!)]));
          if (sameValues(now, before)) {
            actions.push(`event for PCR ${ev.pcr} was recorded but never extended: dropped (measured again)`);
          } else if (sameValues(now, after)) {
            await appender.append(ev);
            actions.push(`event for PCR ${ev.pcr} was extended but not logged before the interruption: logged now`);
            if (j.progress && !j.pending.outsidePlan) j.progress.done++;
          } else {
            throw new HyperEnclaveError(
              `measure: PCR ${ev.pcr} holds neither the runtime log's replay nor the replay plus the interrupted event: something outside hyperenclave extended PCR ${ev.pcr}; the log cannot be made to match until the next reboot`,
              EXIT.VERIFY_FAILED,
            );
          }
        }
      } finally {
        await appender.close();
      }
      delete j.pending;
      journal.save();
    }
    return { journal, reconciliation: { epoch, actions } };
  }

  /** How many of this image's planned events are already measured in this TPM boot (0 for another image). */
  doneFor(imageId: string, policy: string, banks: readonly string[], total: number): number {
    const p = this.state.progress;
    if (!p || p.imageId !== imageId || p.policy !== policy || p.banks.join(',') !== banks.join(',') || p.total !== total) return 0;
    return p.done;
  }

  /** Starts (or continues) the measurement of an image in this boot. */
  begin(imageId: string, policy: string, banks: readonly string[], total: number, done: number): void {
    this.state.progress = { imageId, policy, banks: [...banks], done, total };
    this.save();
  }

  /** Step (1): the event about to be extended, durable before the extension. */
  intend(e: { pcr: number; type: number; digests: Record<string, Buffer>; data: Buffer }, logEvents: number, opts: { progress?: boolean } = {}): void {
    this.state.pending = { event: toJournalEvent(e), logEvents, ...(opts.progress === false ? { outsidePlan: true } : {}) };
    this.save();
  }

  /** Step (4): extended and logged (progress: false for an extension outside the image's plan). */
  confirm(opts: { progress?: boolean } = {}): void {
    delete this.state.pending;
    if (this.state.progress && opts.progress !== false) this.state.progress.done++;
    this.save();
  }
}

/**
 * Opens the state directory's runtime log with its journal reconciled against the TPM, holding
 * the state directory's lock for the whole of `fn` (one writer of the log at a time).
 */
export async function withJournaledRuntimeLog<T>(
  args: { stateDir: string; tpm: MeasureTpm; banks: readonly string[]; what?: string },
  fn: (ctx: { log: EventLogAppender; journal: MeasurementJournal; reconciliation: Reconciliation }) => Promise<T>,
): Promise<T> {
  return withStateLock(args.stateDir, args.what ?? 'measure', async () => {
    const logPath = runtimeLogPath(args.stateDir);
    const { journal, reconciliation } = await MeasurementJournal.open({ path: measureJournalPath(args.stateDir), logPath, tpm: args.tpm, banks: args.banks });
    const log = await EventLogAppender.open(logPath, { banks: args.banks });
    try {
      return await fn({ log, journal, reconciliation });
    } finally {
      await log.close();
    }
  });
}
