import { spawnSync } from 'node:child_process';

/** What `tpm2_eventlog FILE` reports: per event PCR, type and digests; the final PCR values. */
export interface Tpm2EventlogOutput {
  events: { num: number; pcr: number; type: string; digests: Record<string, string> }[];
  /** bank → PCR → value hex (without 0x). */
  pcrs: Record<string, Record<number, string>>;
}

/** Why tpm2_eventlog cannot be used here, or undefined if it can. */
export function tpm2EventlogUnavailable(): string | undefined {
  const r = spawnSync('tpm2_eventlog', ['--version'], { encoding: 'utf8' });
  if (r.error) return `tpm2_eventlog not runnable: ${r.error.message} (apt-get install tpm2-tools)`;
  return undefined;
}

/**
 * Reads tpm2_eventlog's YAML: only the fields compared (EventNum, PCRIndex, EventType, Digest(s),
 * final pcrs), found by their fixed indentation, so nested event data never confuses it.
 */
export function parseTpm2EventlogYaml(yaml: string): Tpm2EventlogOutput {
  const out: Tpm2EventlogOutput = { events: [], pcrs: {} };
  let cur: Tpm2EventlogOutput['events'][number] | undefined;
  let alg: string | undefined;
  let inPcrs = false;
  let bank: string | undefined;
  const unq = (s: string): string => s.trim().replace(/^"|"$/g, '');
  for (const line of yaml.split('\n')) {
    if (line === 'pcrs:') {
      inPcrs = true;
      continue;
    }
    if (inPcrs) {
      let m = /^ {2}(\w+):\s*$/.exec(line);
      if (m) {
        bank = m[1]!;
        out.pcrs[bank] = {};
        continue;
      }
      m = /^ {4}(\d+)\s*:\s*0x([0-9a-fA-F]+)/.exec(line);
      if (m && bank) out.pcrs[bank]![Number(m[1])] = m[2]!.toLowerCase();
      continue;
    }
    let m = /^- EventNum: (\d+)/.exec(line);
    if (m) {
      cur = { num: Number(m[1]), pcr: -1, type: '', digests: {} };
      out.events.push(cur);
      alg = undefined;
      continue;
    }
    if (!cur) {
      if (!/^ {2}PCRIndex: /.test(line)) continue;
      cur = { num: 0, pcr: -1, type: '', digests: {} };
      out.events.push(cur);
    }
    if ((m = /^ {2}PCRIndex: (\d+)/.exec(line))) {
      // SHA-1-only logs are printed without EventNum lines: a second PCRIndex starts the next event.
      if (cur.pcr !== -1) {
        cur = { num: out.events.length, pcr: -1, type: '', digests: {} };
        out.events.push(cur);
        alg = undefined;
      }
      cur.pcr = Number(m[1]);
    }
    else if ((m = /^ {2}EventType: (\S+)/.exec(line))) cur.type = m[1]!;
    else if ((m = /^ {2}Digest: (.*)$/.exec(line))) cur.digests.sha1 = unq(m[1]!).toLowerCase();
    else if ((m = /^ {2}- AlgorithmId: (\S+)/.exec(line))) alg = m[1]!;
    else if ((m = /^ {4}Digest: (.*)$/.exec(line)) && alg) {
      cur.digests[alg] = unq(m[1]!).toLowerCase();
      alg = undefined;
    }
  }
  return out;
}

/** Runs `tpm2_eventlog FILE`; throws with its stderr when it fails. */
export function runTpm2Eventlog(file: string): Tpm2EventlogOutput {
  const r = spawnSync('tpm2_eventlog', [file], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`tpm2_eventlog ${file} failed (status ${r.status ?? r.signal}): ${r.stderr.trim().split('\n').slice(-2).join(' ')}`);
  return parseTpm2EventlogYaml(r.stdout);
}
