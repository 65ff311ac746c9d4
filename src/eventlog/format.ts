import { decodeEvent, type DecodedEvent } from './decode.js';
import type { EventLog, LogEvent } from './parse.js';
import { checkPayloadDigest } from './payload-digest.js';
import type { EventDataCheck, EventDataChecker } from './data-check.js';
import type { ReplayComparison, ReplayResult } from './replay.js';

export const EVENTLOG_JSON_SCHEMA = 'hyperenclave/eventlog';
export const REPLAY_JSON_SCHEMA = 'hyperenclave/eventlog-replay';

export interface EventJson {
  index: number;
  offset: number;
  pcr: number;
  type: number;
  typeName: string;
  /** bank → digest hex, in the record's order. */
  digests: Record<string, string>;
  dataSize: number;
  /** Raw event data, hex. */
  data: string;
  decoded?: DecodedEvent;
  /** Present when the digest should be the hash of the data and is not. */
  digestMismatch?: string[];
  /** Events a data checker knows (ours: src/measure/runtime-events.ts): whether the data matches the digest. */
  dataCheck?: { status: EventDataCheck["status"]; reason: string };
}

export interface EventLogJson {
  schema: typeof EVENTLOG_JSON_SCHEMA;
  version: 1;
  format: 'crypto-agile' | 'sha1';
  banks: string[];
  specId?: DecodedEvent;
  eventCount: number;
  events: EventJson[];
  padding?: { offset: number; length: number };
  tornTail?: { offset: number; length: number; reason: string };
}

export function eventToJson(ev: LogEvent, log?: EventLog, dataChecks?: Map<number, EventDataCheck>): EventJson {
  const digests: Record<string, string> = {};
  for (const d of ev.digests) digests[d.bank] = d.digest.toString('hex');
  const out: EventJson = { index: ev.index, offset: ev.offset, pcr: ev.pcr, type: ev.type, typeName: ev.typeName, digests, dataSize: ev.data.length, data: ev.data.toString('hex') };
  const decoded = decodeEvent(ev, log);
  if (decoded) out.decoded = decoded;
  const check = checkPayloadDigest(ev);
  if (check && !check.ok) out.digestMismatch = check.badBanks;
  const dc = dataChecks?.get(ev.index);
  if (dc) out.dataCheck = { status: dc.status, reason: dc.reason };
  return out;
}

const dataChecksOf = (log: EventLog, checker?: EventDataChecker): Map<number, EventDataCheck> => new Map((checker ? checker(log) : []).map((c) => [c.index, c]));

/** JSON form of a parsed log for `--json` output; field names are stable. */
export function eventLogToJson(log: EventLog, opts: { dataChecks?: EventDataChecker } = {}): EventLogJson {
  const checks = dataChecksOf(log, opts.dataChecks);
  const out: EventLogJson = { schema: EVENTLOG_JSON_SCHEMA, version: 1, format: log.format, banks: log.banks, eventCount: log.events.length, events: log.events.map((e) => eventToJson(e, log, checks)) };
  if (log.specId && log.events[0]) {
    const d = decodeEvent(log.events[0], log);
    if (d) out.specId = d;
  }
  if (log.padding) out.padding = log.padding;
  if (log.tornTail) out.tornTail = log.tornTail;
  return out;
}

export interface ReplayJson {
  schema: typeof REPLAY_JSON_SCHEMA;
  version: 1;
  /** bank → PCR index (string key) → value hex. */
  pcrs: Record<string, Record<string, string>>;
  startupLocality?: number;
  drtmResetEvent?: number;
  incomplete?: Record<string, number[]>;
  comparison?: ReplayComparison;
}

/** JSON form of a replay (and of its comparison with actual PCRs, when given). */
export function replayToJson(r: ReplayResult, comparison?: ReplayComparison): ReplayJson {
  const pcrs: Record<string, Record<string, string>> = {};
  for (const [bank, vals] of r) {
    const o: Record<string, string> = {};
    for (const pcr of [...vals.keys()].sort((a, b) => a - b)) o[String(pcr)] = vals.get(pcr)!.toString('hex');
    pcrs[bank] = o;
  }
  const out: ReplayJson = { schema: REPLAY_JSON_SCHEMA, version: 1, pcrs };
  if (r.startupLocality !== undefined) out.startupLocality = r.startupLocality;
  if (r.drtmResetEvent !== undefined) out.drtmResetEvent = r.drtmResetEvent;
  if (r.incomplete.size) out.incomplete = Object.fromEntries([...r.incomplete].map(([b, s]) => [b, [...s].sort((x, y) => x - y)]));
  if (comparison) out.comparison = comparison;
  return out;
}

const MAX_HEX = 64;

function shortHex(hex: string): string {
  return hex.length > MAX_HEX * 2 ? `${hex.slice(0, MAX_HEX * 2)}… (${hex.length / 2} bytes)` : hex;
}

/** Decoded fields as indented "key: value" lines. */
function decodedLines(d: DecodedEvent, indent: string): string[] {
  const lines: string[] = [];
  const put = (k: string, v: unknown, ind: string): void => {
    if (v === undefined || v === '') return;
    if (Array.isArray(v)) {
      if (v.length === 0) {
        lines.push(`${ind}${k}: []`);
        return;
      }
      if (v.every((x) => typeof x !== 'object')) {
        lines.push(`${ind}${k}: ${v.join(', ')}`);
        return;
      }
      lines.push(`${ind}${k}:`);
      for (const x of v) {
        const entries = Object.entries(x as object).filter(([, vv]) => vv !== undefined);
        entries.forEach(([kk, vv], i) => {
          const p = i === 0 ? `${ind}  - ` : `${ind}    `;
          if (typeof vv === 'object' && vv !== null) put(kk, vv, p.replace('- ', '  '));
          else lines.push(`${p}${kk}: ${vv}`);
        });
      }
      return;
    }
    if (typeof v === 'object' && v !== null) {
      lines.push(`${ind}${k}:`);
      for (const [kk, vv] of Object.entries(v)) put(kk, vv, `${ind}  `);
      return;
    }
    lines.push(`${ind}${k}: ${typeof v === 'string' && k === 'hex' ? shortHex(v) : v}`);
  };
  for (const [k, v] of Object.entries(d)) if (k !== 'kind') put(k, v, indent);
  return lines;
}

/** Text form for humans: one block per event (index, PCR, type, digests, decoded data), then a summary. */
export function formatEventLogText(log: EventLog, opts: { replay?: ReplayResult; dataChecks?: EventDataChecker } = {}): string {
  const out: string[] = [];
  out.push(`format: ${log.format}${log.specId ? ` (${log.specId.signature}, spec ${log.specId.specVersionMajor}.${log.specId.specVersionMinor} errata ${log.specId.specErrata})` : ''}`);
  out.push(`banks: ${log.banks.join(', ')}`);
  out.push(`events: ${log.events.length}`);
  if (log.padding) out.push(`padding: ${log.padding.length} bytes at offset ${log.padding.offset} (ignored)`);
  if (log.tornTail) out.push(`torn tail: ${log.tornTail.length} bytes at offset ${log.tornTail.offset} ignored (${log.tornTail.reason})`);
  const bankWidth = Math.max(...log.banks.map((b) => b.length), 4);
  const checks = dataChecksOf(log, opts.dataChecks);
  for (const ev of log.events) {
    out.push('');
    out.push(`#${ev.index}  PCR ${ev.pcr}  ${ev.typeName}  (${ev.data.length} bytes at offset ${ev.offset})`);
    for (const d of ev.digests) out.push(`  ${d.bank.padEnd(bankWidth)}  ${d.digest.toString('hex')}`);
    const decoded = decodeEvent(ev, log);
    const dc = checks.get(ev.index);
    // Our own events: the text is shown as measured only when it matches the digest.
    if (dc && dc.status === 'forged') out.push(`  UNTRUSTED (event data does not match its digest: ${dc.reason})`);
    else if (dc && dc.status === 'unverified') out.push(`  unverified data (${dc.reason})`);
    if (decoded) {
      if (decoded.kind === 'String') out.push(`  ${dc && dc.status !== 'verified' ? 'claimed text' : 'text'}: ${JSON.stringify(decoded.text)}`);
      else {
        out.push(`  ${decoded.kind}:`);
        out.push(...decodedLines(decoded, '    '));
      }
    } else if (ev.data.length) out.push(`  data: ${shortHex(ev.data.toString('hex'))}`);
    const check = checkPayloadDigest(ev);
    if (check && !check.ok) out.push(`  WARNING: ${check.badBanks.join(', ')} digest does not match the event data`);
  }
  if (opts.replay) {
    out.push('');
    out.push(formatReplayText(opts.replay));
  }
  return out.join('\n') + '\n';
}

/** PCR values per bank, then the comparison (if any) with one line per mismatch and its hints. */
export function formatReplayText(r: ReplayResult, comparison?: ReplayComparison): string {
  const out: string[] = [];
  if (r.startupLocality !== undefined) out.push(`StartupLocality: ${r.startupLocality}`);
  if (r.drtmResetEvent !== undefined) out.push(`DRTM reset (HASH_START) at #${r.drtmResetEvent}: PCR17-22 start at zero`);
  for (const [bank, vals] of r) {
    out.push(`${bank}:`);
    for (const pcr of [...vals.keys()].sort((a, b) => a - b)) {
      const n = r.contributions.get(bank)?.get(pcr)?.length ?? 0;
      const inc = r.incomplete.get(bank)?.has(pcr) ? '  (incomplete: events without this bank)' : '';
      out.push(`  ${String(pcr).padStart(2)}: ${vals.get(pcr)!.toString('hex')}  (${n} event${n === 1 ? '' : 's'})${inc}`);
    }
  }
  if (r.skippedBanks.length) out.push(`not replayed (no hash implementation): ${r.skippedBanks.join(', ')}`);
  if (comparison) {
    out.push('');
    out.push(comparison.ok ? `all ${comparison.matched.length} compared PCRs match` : `${comparison.mismatches.length} PCR mismatch${comparison.mismatches.length === 1 ? '' : 'es'} (${comparison.matched.length} match):`);
    for (const m of comparison.mismatches) {
      out.push(`  ${m.message}`);
      for (const h of m.hints.slice(1)) out.push(`    - ${h}`);
    }
    if (comparison.unchecked.length) out.push(`  not compared (no actual value): ${comparison.unchecked.map((u) => `${u.bank}:${u.pcr}`).join(', ')}`);
  }
  return out.join('\n');
}
