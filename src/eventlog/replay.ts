import { hashAlgByName, type HashAlg } from '../tpm/alg.js';
import type { EventLog, LogEvent } from './parse.js';
import { EVENT_TYPES } from './types.js';
import { checkPayloadDigest } from './payload-digest.js';
import { canHash, hashOf } from './hash.js';

/** PCR index → value, for one bank. */
export type PcrValues = Map<number, Buffer>;
/** Bank name (sha1, sha256, …) → PCR values. */
export type BankPcrValues = Map<string, PcrValues>;

export interface ReplayOptions {
  /** Start values overriding the platform defaults (per bank, per PCR). */
  initialValues?: BankPcrValues;
}

/** One event extended into a PCR, with the running value after it. */
export interface PcrContribution {
  eventIndex: number;
  typeName: string;
  value: Buffer;
}

const DRTM_PCRS = [17, 18, 19, 20, 21, 22];
const STARTUP_LOCALITY = Buffer.from('StartupLocality\0', 'latin1');

/** Value of a PCR before any extend: zeros, all 0xFF for PCR17-22 (no dynamic launch yet), last byte = locality for PCR0. */
export function defaultInitialValue(pcr: number, size: number, opts: { startupLocality?: number; drtmReset?: boolean } = {}): Buffer {
  if (pcr >= 17 && pcr <= 22 && !opts.drtmReset) return Buffer.alloc(size, 0xff);
  const v = Buffer.alloc(size);
  if (pcr === 0 && opts.startupLocality) v[size - 1] = opts.startupLocality;
  return v;
}

/** StartupLocality from an EV_NO_ACTION "StartupLocality\0" event, if this is one. */
export function startupLocalityOf(ev: LogEvent): number | undefined {
  if (ev.type !== EVENT_TYPES.EV_NO_ACTION || ev.pcr !== 0 || ev.data.length !== STARTUP_LOCALITY.length + 1) return undefined;
  return ev.data.subarray(0, STARTUP_LOCALITY.length).equals(STARTUP_LOCALITY) ? ev.data[STARTUP_LOCALITY.length] : undefined;
}

/**
 * PCR values a log implies, per bank (a Map<bank, Map<pcr, value>> holding the PCRs the log
 * extends), plus what a mismatch report needs: which events went into each PCR, the running
 * values, the start values used.
 */
export class ReplayResult extends Map<string, PcrValues> {
  /** Start value of every replayed PCR (after StartupLocality / H-CRTM / DRTM reset handling). */
  readonly initial: BankPcrValues = new Map();
  /** Per bank, per PCR: log indices of the events extended, in order (see runningValues). */
  readonly contributions = new Map<string, Map<number, number[]>>();
  /** Per bank: PCRs for which some event carried no digest of that bank (value cannot be trusted). */
  readonly incomplete = new Map<string, Set<number>>();
  startupLocality: number | undefined;
  /** Log index of the EV_EFI_HCRTM_EVENT that set PCR0's start value to 4. */
  hcrtmEvent: number | undefined;
  /** Log index of the last DRTM reset (TXT HASH_START) that zeroed PCR17-22. */
  drtmResetEvent: number | undefined;
  /** Banks the log carries that this Node build cannot hash (not replayed). */
  readonly skippedBanks: string[] = [];

  constructor(readonly log: EventLog) {
    super();
  }

  /** The events extended into a PCR of a bank, each with the running value after it (recomputed on demand). */
  runningValues(bank: string, pcr: number): PcrContribution[] {
    const idx = this.contributions.get(bank)?.get(pcr) ?? [];
    const alg = hashAlgByName(bank);
    let v = this.initial.get(bank)?.get(pcr);
    if (!alg || !v) return [];
    const out: PcrContribution[] = [];
    for (const i of idx) {
      const ev = this.log.events[i]!;
      const d = ev.digests.find((x) => x.bank === bank)!.digest;
      v = hashOf(alg, Buffer.concat([v, d]));
      out.push({ eventIndex: i, typeName: ev.typeName, value: v });
    }
    return out;
  }

  /** Start value a PCR of a bank has when the log has no events for it. */
  initialValueOf(bank: string, pcr: number): Buffer | undefined {
    const init = this.initial.get(bank)?.get(pcr);
    if (init) return init;
    const alg = hashAlgByName(bank);
    if (!alg) return undefined;
    return defaultInitialValue(pcr, alg.size, { startupLocality: this.startupLocality, drtmReset: this.drtmResetEvent !== undefined });
  }
}

/**
 * Replays a log: for every bank it carries, the PCR values its events imply. PCRs start at
 * zero; PCR0 at …03/…04 when a StartupLocality event says so (…04 after an H-CRTM event);
 * PCR17-22 at all 0xFF unless a TXT HASH_START (locality-4 DRTM reset) appears, which zeroes
 * them at that point. EV_NO_ACTION events are not extended.
 */
export function replay(log: EventLog, opts: ReplayOptions = {}): ReplayResult {
  const result = new ReplayResult(log);
  const banks: { name: string; alg: HashAlg; pcrs: PcrValues; init: PcrValues; contrib: Map<number, number[]>; scratch: Buffer }[] = [];
  for (const name of log.banks) {
    const alg = hashAlgByName(name);
    if (!alg || !canHash(alg)) {
      result.skippedBanks.push(name);
      continue;
    }
    const pcrs: PcrValues = new Map();
    const init: PcrValues = new Map();
    const contrib = new Map<number, number[]>();
    result.set(name, pcrs);
    result.initial.set(name, init);
    result.contributions.set(name, contrib);
    banks.push({ name, alg, pcrs, init, contrib, scratch: Buffer.alloc(alg.size * 2) });
  }

  const startOf = (b: (typeof banks)[number], pcr: number): Buffer => {
    const given = opts.initialValues?.get(b.name)?.get(pcr);
    if (given) {
      if (given.length !== b.alg.size) throw new RangeError(`initial value of PCR ${pcr} ${b.name} has ${given.length} bytes, expected ${b.alg.size}`);
      return Buffer.from(given);
    }
    return defaultInitialValue(pcr, b.alg.size, { startupLocality: result.startupLocality, drtmReset: result.drtmResetEvent !== undefined });
  };

  for (const ev of log.events) {
    if (ev.type === EVENT_TYPES.EV_NO_ACTION) {
      const loc = startupLocalityOf(ev);
      // Only meaningful before PCR0's first extend (it describes TPM2_Startup).
      if (loc !== undefined && result.hcrtmEvent === undefined && !banks.some((b) => b.pcrs.has(0))) result.startupLocality = loc;
      continue;
    }
    if (ev.index === 0 && log.format === 'crypto-agile') continue;
    if (ev.type === EVENT_TYPES.EV_EFI_HCRTM_EVENT && ev.pcr === 0 && !banks.some((b) => b.pcrs.has(0))) {
      result.hcrtmEvent = ev.index;
      result.startupLocality = 4;
    }
    if (ev.type === EVENT_TYPES.EV_TXT_HASH_START) {
      // Dynamic launch: the chipset's locality-4 HASH_START resets PCR17-22 to zero.
      result.drtmResetEvent = ev.index;
      for (const b of banks) {
        for (const p of DRTM_PCRS) {
          const given = opts.initialValues?.get(b.name)?.get(p);
          const zero = given ? Buffer.from(given) : Buffer.alloc(b.alg.size);
          b.pcrs.delete(p);
          b.contrib.delete(p);
          b.init.set(p, zero);
        }
      }
    }
    for (const b of banks) {
      let d: Buffer | undefined;
      for (const x of ev.digests) if (x.bank === b.name) d = x.digest;
      if (!d) {
        let s = result.incomplete.get(b.name);
        if (!s) result.incomplete.set(b.name, (s = new Set()));
        s.add(ev.pcr);
        continue;
      }
      let cur = b.pcrs.get(ev.pcr);
      if (!cur) {
        cur = b.init.get(ev.pcr) ?? startOf(b, ev.pcr);
        b.init.set(ev.pcr, cur);
      }
      cur.copy(b.scratch, 0);
      d.copy(b.scratch, b.alg.size);
      const next = hashOf(b.alg, b.scratch);
      b.pcrs.set(ev.pcr, next);
      let list = b.contrib.get(ev.pcr);
      if (!list) b.contrib.set(ev.pcr, (list = []));
      list.push(ev.index);
    }
  }
  return result;
}

export interface ReplayMismatch {
  pcr: number;
  bank: string;
  /** Value the log replays to (hex). */
  expected: string;
  /** Value the TPM (or quote) has (hex). */
  actual: string;
  /** Events the log extends into this PCR in this bank, and the last of them. */
  eventCount: number;
  lastEvent?: { index: number; type: string };
  /**
   * Log index of the last event up to which the log agrees with the TPM, when some prefix of the
   * PCR's events (or its start value, -1) replays to the TPM's value: the events after it were
   * logged but not extended (or extended elsewhere). Undefined when no prefix matches.
   */
  matchesThroughEvent?: number;
  /** First event the TPM does not reflect, when matchesThroughEvent is known. */
  firstDivergentEvent?: { index: number; type: string };
  /** Diagnosis: what probably happened, most likely first. */
  hints: string[];
  /** One line for humans. */
  message: string;
}

export interface ReplayComparison {
  ok: boolean;
  mismatches: ReplayMismatch[];
  /** Bank/PCR pairs compared and equal. */
  matched: { bank: string; pcr: number }[];
  /** PCRs the log extends but the actual values do not include (not checked). */
  unchecked: { bank: string; pcr: number }[];
}

const hex = (b: Buffer): string => b.toString('hex');

/**
 * Compares replayed values with actual PCR values (live or from a quote), for every bank/PCR in
 * `actual`. A PCR the log has no events for is expected at its start value.
 */
export function compareReplay(replayed: ReplayResult | BankPcrValues, actual: BankPcrValues): ReplayComparison {
  const rr = replayed instanceof ReplayResult ? replayed : undefined;
  const mismatches: ReplayMismatch[] = [];
  const matched: { bank: string; pcr: number }[] = [];
  const unchecked: { bank: string; pcr: number }[] = [];
  const matchedSet = new Set<string>();

  const pending: { bank: string; pcr: number; exp: Buffer; act: Buffer }[] = [];
  for (const [bank, pcrs] of actual) {
    const mine = replayed.get(bank);
    if (!mine && !rr) continue;
    for (const [pcr, act] of pcrs) {
      const exp = mine?.get(pcr) ?? rr?.initialValueOf(bank, pcr) ?? defaultInitialValue(pcr, act.length);
      if (rr && !rr.has(bank)) {
        unchecked.push({ bank, pcr });
        continue;
      }
      if (exp.equals(act)) {
        matched.push({ bank, pcr });
        matchedSet.add(`${bank}/${pcr}`);
      } else pending.push({ bank, pcr, exp, act });
    }
  }
  for (const [bank, pcrs] of replayed) {
    for (const pcr of pcrs.keys()) if (!actual.get(bank)?.has(pcr)) unchecked.push({ bank, pcr });
  }
  for (const p of pending) mismatches.push(diagnose(p.bank, p.pcr, p.exp, p.act, rr, matchedSet));
  mismatches.sort((a, b) => a.pcr - b.pcr || a.bank.localeCompare(b.bank));
  return { ok: mismatches.length === 0, mismatches, matched, unchecked };
}

function diagnose(bank: string, pcr: number, exp: Buffer, act: Buffer, rr: ReplayResult | undefined, matchedSet: Set<string>): ReplayMismatch {
  const contrib = rr?.runningValues(bank, pcr) ?? [];
  const log = rr?.log;
  const typeOf = (i: number): string => log?.events[i]?.typeName ?? '?';
  const last = contrib[contrib.length - 1];
  const m: ReplayMismatch = { pcr, bank, expected: hex(exp), actual: hex(act), eventCount: contrib.length, hints: [], message: '' };
  if (last) m.lastEvent = { index: last.eventIndex, type: last.typeName };
  const head = `PCR ${pcr} ${bank}: log replays to ${hex(exp)}, TPM has ${hex(act)}`;
  const counted = contrib.length === 0 ? `no events for PCR ${pcr} in the log` : `${contrib.length} event${contrib.length === 1 ? '' : 's'} for PCR ${pcr}, last at #${last!.eventIndex} (${last!.typeName})`;

  if (rr) {
    const start = rr.initial.get(bank)?.get(pcr) ?? rr.initialValueOf(bank, pcr);
    // Does a prefix of the logged events explain the TPM value? Then the rest were never extended.
    let through: number | undefined;
    if (start?.equals(act)) through = -1;
    else for (const c of contrib) if (c.value.equals(act)) through = c.eventIndex;
    if (through !== undefined) {
      const k = through === -1 ? 0 : contrib.findIndex((c) => c.eventIndex === through) + 1;
      const next = contrib[k];
      m.matchesThroughEvent = through;
      if (next) m.firstDivergentEvent = { index: next.eventIndex, type: next.typeName };
      const extra = contrib.length - k;
      m.hints.push(
        through === -1
          ? `the TPM still has PCR ${pcr}'s start value: none of the ${contrib.length} logged events reached it (first #${next?.eventIndex} ${next?.typeName})`
          : `the TPM matches the log through #${through} (${typeOf(through)}); the log has ${extra} later event${extra === 1 ? '' : 's'} the TPM did not receive, first #${next?.eventIndex} (${next?.typeName})`,
      );
    } else {
      const alg = hashAlgByName(bank);
      // Wrong start value? (StartupLocality on PCR0, DRTM reset on PCR17-22.)
      if (alg && (pcr === 0 || (pcr >= 17 && pcr <= 22))) {
        const tries = pcr === 0 ? [0, 3, 4].map((l) => ({ what: `StartupLocality ${l}`, v: defaultInitialValue(0, alg.size, { startupLocality: l }) })) : [
          { what: 'start value all zeros (DRTM reset)', v: Buffer.alloc(alg.size) },
          { what: 'start value all 0xFF (no DRTM reset)', v: Buffer.alloc(alg.size, 0xff) },
        ];
        for (const t of tries) {
          if (start?.equals(t.v)) continue;
          if (replayFrom(alg, t.v, contrib, rr.log, bank).equals(act)) m.hints.push(`the log's events give the TPM value with ${t.what}: the log's start-value information is wrong or missing`);
        }
      }
      const otherBanks = [...(rr.keys() ?? [])].filter((b) => b !== bank && matchedSet.has(`${b}/${pcr}`));
      if (otherBanks.length) m.hints.push(`the same events replay correctly in ${otherBanks.join(', ')}: a logged ${bank} digest differs from what was extended (no event is missing)`);
      if (rr.incomplete.get(bank)?.has(pcr)) m.hints.push(`some events for PCR ${pcr} carry no ${bank} digest, so this bank cannot be replayed`);
      for (const c of contrib) {
        const ev = rr.log.events[c.eventIndex];
        if (ev && checkPayloadDigest(ev)?.ok === false) m.hints.push(`event #${ev.index} (${ev.typeName})'s digest does not match its data`);
      }
      m.hints.push(
        contrib.length === 0
          ? `the TPM has extensions the log does not record`
          : `no prefix of the log's events reaches the TPM value: the TPM has extensions after #${last!.eventIndex} the log does not record (e.g. made after the log was read), or a logged digest differs from what was extended`,
      );
    }
  }
  m.message = `${head}; ${counted}${m.hints.length ? `; ${m.hints[0]}` : ''}`;
  return m;
}

function replayFrom(alg: HashAlg, start: Buffer, contrib: PcrContribution[], log: EventLog, bank: string): Buffer {
  let v = start;
  for (const c of contrib) {
    const d = log.events[c.eventIndex]?.digests.find((x) => x.bank === bank)?.digest;
    if (d) v = hashOf(alg, Buffer.concat([v, d]));
  }
  return v;
}
