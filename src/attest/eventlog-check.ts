/**
 * Event logs against quoted PCRs, with src/eventlog's parser, replay and per-PCR diagnostics.
 * Logs extend in order — firmware, then the runtime (management plane) log on top of the
 * firmware values, then the DRTM log (which resets PCR17-22 at its HASH_START) — and each log
 * is judged on the PCRs it extends (the firmware log also on the quoted PCRs 0-7).
 */
import { compareReplay, parseEventLog, replay, type ReplayResult } from '../eventlog/index.js';
import { EVENT_TYPES } from '../eventlog/types.js';
import { checkHyperenclaveEvents } from '../measure/runtime-events.js';
import type { LogKind, PcrValues } from './types.js';

export type { LogKind };


export interface LogReplayOutcome {
  ok: boolean;
  reason: string;
  details?: string[];
}

export interface ReplayedEvent {
  pcr: number;
  bank: string;
  digest: string;
  log: LogKind;
  index: number;
}

type Bank = Map<string, Map<number, Buffer>>;

function touched(r: ReplayResult): Set<number> {
  const s = new Set<number>();
  for (const m of r.values()) for (const p of m.keys()) s.add(p);
  return s;
}

function restrict(quoted: Bank, pcrs: (p: number) => boolean): Bank {
  const out: Bank = new Map();
  for (const [bank, m] of quoted) {
    const sub = new Map([...m].filter(([p]) => pcrs(p)));
    if (sub.size) out.set(bank, sub);
  }
  return out;
}

export function replayEventLogs(logs: Partial<Record<LogKind, Buffer>>, quoted: PcrValues): { perLog: Partial<Record<LogKind, LogReplayOutcome>>; events: ReplayedEvent[] } {
  const perLog: Partial<Record<LogKind, LogReplayOutcome>> = {};
  const events: ReplayedEvent[] = [];
  const q = quoted as unknown as Bank;
  const order: LogKind[] = ['firmware', 'runtime', 'drtm'];
  const replays: Partial<Record<LogKind, ReplayResult>> = {};
  let carry: Bank = new Map();

  for (const kind of order) {
    const buf = logs[kind];
    if (!buf) continue;
    try {
      const log = parseEventLog(buf);
      // runtime starts from the firmware log's final values; DRTM PCRs are reset inside the DRTM log
      const r = replay(log, kind === 'runtime' ? { initialValues: carry } : {});
      replays[kind] = r;
      if (kind === 'firmware') carry = new Map([...r].map(([b, m]) => [b, new Map(m)]));
    } catch (e) {
      perLog[kind] = { ok: false, reason: `${kind} log does not parse: ${(e as Error).message}` };
    }
  }

  const runtimePcrs = replays.runtime ? touched(replays.runtime) : new Set<number>();
  const drtmPcrs = replays.drtm ? touched(replays.drtm) : new Set<number>();
  for (const kind of order) {
    const r = replays[kind];
    if (!r) continue;
    const mine = touched(r);
    // A later log that extends the same PCR owns its final value.
    const judged =
      kind === 'firmware'
        ? (p: number) => (mine.has(p) || p <= 7) && !runtimePcrs.has(p) && !drtmPcrs.has(p)
        : kind === 'runtime'
          ? (p: number) => mine.has(p) && !drtmPcrs.has(p)
          : (p: number) => mine.has(p) || p === 17 || p === 18;
    const actual = restrict(q, judged);
    const banksInLog = new Set(r.keys());
    const quotedBanks = [...actual.keys()];
    const common = quotedBanks.filter((b) => banksInLog.has(b));
    if (!common.length) {
      perLog[kind] = { ok: false, reason: `${kind} log carries none of the quoted banks for its PCRs (${quotedBanks.join(', ') || 'no quoted PCR it extends'})` };
      continue;
    }
    const cmp = compareReplay(r, new Map(common.map((b) => [b, actual.get(b)!])));
    const incomplete = common.flatMap((b) => [...(r.incomplete.get(b) ?? [])].filter(judged).map((p) => `${b} PCR ${p}`));
    if (!cmp.ok) {
      perLog[kind] = { ok: false, reason: cmp.mismatches[0]!.message, details: cmp.mismatches.slice(1).map((m) => m.message) };
      continue;
    }
    if (incomplete.length) {
      perLog[kind] = { ok: false, reason: `${kind} log has events without a digest for ${incomplete.join(', ')}` };
      continue;
    }
    perLog[kind] = { ok: true, reason: `${r.log.events.length} events replay to the quoted ${cmp.matched.map((m) => `${m.bank}:${m.pcr}`).join(' ')}` };
    for (const ev of r.log.events) for (const d of ev.digests) if (common.includes(d.bank) && judged(ev.pcr)) events.push({ pcr: ev.pcr, bank: d.bank, digest: d.digest.toString('hex'), log: kind, index: ev.index });
  }
  return { perLog, events };
}

/**
 * `eventlog.event-data`: our runtime events' data recomputed against their digests
 * (src/eventlog/runtime-events.ts). Fails when any event's data was edited (forged); events
 * whose digest covers something the log does not carry are listed as unverified.
 */
export function checkEventData(logs: Partial<Record<LogKind, Buffer>>): { status: 'pass' | 'fail' | 'skip'; reason: string; details?: string[] } {
  const forged: string[] = [];
  const unverified: string[] = [];
  let verified = 0;
  for (const kind of ['firmware', 'runtime', 'drtm'] as const) {
    const buf = logs[kind];
    if (!buf) continue;
    let log;
    try {
      log = parseEventLog(buf);
    } catch {
      continue; // eventlog.<kind> already fails with the parse error
    }
    const checked = checkHyperenclaveEvents(log);
    for (const c of checked) {
      const at = `${kind} log event #${c.index} (PCR ${c.pcr})`;
      if (c.status === 'forged') forged.push(`${at}: ${c.reason}`);
      else if (c.status === 'unverified') unverified.push(`${at}: ${c.reason}`);
      else verified++;
    }
    if (kind === 'runtime') {
      const ours = new Set(checked.map((c) => c.index));
      for (const ev of log.events) if (ev.index > 0 && ev.type !== EVENT_TYPES.EV_NO_ACTION && !ours.has(ev.index)) unverified.push(`runtime log event #${ev.index} (PCR ${ev.pcr}): not a hyperenclave event; its data is not checked`);
    }
  }
  if (forged.length) return { status: 'fail', reason: `event data does not match its digest: ${forged[0]}`, details: [...forged.slice(1), ...unverified] };
  if (!verified && !unverified.length) return { status: 'skip', reason: 'no hyperenclave events in the supplied logs' };
  return {
    status: 'pass',
    reason: `${verified} hyperenclave event${verified === 1 ? '' : 's'} carry data that matches ${verified === 1 ? 'its' : 'their'} digest${unverified.length ? `; ${unverified.length} not checkable (listed)` : ''}`,
    ...(unverified.length ? { details: unverified } : {}),
  };
}
