/**
 * Boot checks on the firmware event log (UEFI measured boot of a unified kernel image), in the
 * manner of Keylime's measured-boot policy: the verifier judges log EVENTS against reference
 * values computed from the artifacts (`hyperenclave firmware uki-reference`), not final PCR
 * values, because firmware events (variables, device paths, GPT, option ROMs) vary by machine.
 * The events are only worth something when the log replays to the quoted PCRs (eventlog.firmware)
 * and the PCRs they extend are quoted: both are preconditions here.
 *
 *   boot.application        PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION: the first one is an allowed
 *                           UKI's Authenticode digest, every later one that UKI's kernel (.linux)
 *   boot.uki-sections       PCR 11: exactly the UKI's systemd-stub events (H(name), H(contents)
 *                           per section, in order), so kernel, initrd and command line are the
 *                           reference ones; the quoted PCR 11 equals the prediction
 *   boot.hypervisor-follows the firmware handed over (ExitBootServices) after the UKI events,
 *                           no boot event touched the hypervisor/HAK PCRs after that, and the
 *                           first runtime-log event in the hypervisor PCR is the hypervisor image
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseEventLog, type EventLog, type LogEvent } from '../eventlog/index.js';
import { decodeEvent } from '../eventlog/decode.js';
import { EVENT_TYPES } from '../eventlog/types.js';
import { compileSchema, schemasDir } from '../schemas.js';
import { join } from 'node:path';
import { AttestError } from './errors.js';

/** A UKI's reference values (schemas/uki-reference.schema.json) and the file they came from. */
export interface UkiRef {
  source: string;
  bootApplication: Record<string, string>;
  kernel: Record<string, string>;
  events: { section: string; what: 'name' | 'contents'; eventType: number; digests: Record<string, string> }[];
  pcr11: Record<string, string>;
  /** PCR 9 as the kernel's EFI stub extends it (command line it received, initrd), when predicted. */
  pcr9?: { events: { tag: string; eventType: number; digests: Record<string, string> }[]; pcrs: Record<string, string> };
}

export interface BootCheckResult {
  name: 'boot.application' | 'boot.uki-sections' | 'boot.hypervisor-follows';
  status: 'pass' | 'fail' | 'skip';
  reason: string;
  details?: string[];
}

export interface BootCheckInput {
  firmwareLog?: Buffer;
  runtimeLog?: Buffer;
  /** Quoted PCR values: bank -> index -> value. */
  quoted: Map<string, Map<number, Buffer>>;
  /** eventlog.firmware passed: the log's events replay to the quoted PCRs. */
  firmwareReplayOk: boolean;
  ukis: UkiRef[];
  hypervisorPcr: number;
  hakPcr: number;
  /**
   * Accept boot-time events in the hypervisor/HAK PCRs before ExitBootServices (systemd-stub's
   * command-line override or credentials in PCR 12, system extensions in PCR 13). Default: refuse,
   * since they change what the kernel runs with beyond the UKI the references judge.
   */
  allowStubPcrEvents?: boolean;
  /** bank -> allowed hypervisor image digests (reference values), when known. */
  hypervisorDigests?: Record<string, string[]>;
}

const BOOT_APP_PCR = 4;
const UKI_PCR = 11;
/** PCR the Linux EFI stub (6.1+) measures its load options and initrd into. */
const KERNEL_STUB_PCR = 9;
const EBS = 'Exit Boot Services Invocation';

let validate: ((d: unknown) => string | undefined) | undefined;

/** Reads a `firmware uki-reference` file (validated against its schema). */
export function loadUkiReference(path: string): UkiRef {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new AttestError(`UKI reference ${path}: ${code === 'ENOENT' ? 'not found' : code ? (e as Error).message : `not JSON (${(e as Error).message})`}`, code === 'ENOENT' ? 3 : 6);
  }
  if (!validate && existsSync(join(schemasDir(), 'uki-reference.schema.json'))) validate = compileSchema('uki-reference.schema.json');
  const bad = validate?.(doc);
  if (bad) throw new AttestError(`UKI reference ${path}: ${bad}`);
  const d = doc as { bootApplication: { digests: Record<string, string> }; kernel: { digests: Record<string, string> }; events: UkiRef['events']; pcrs: Record<string, Record<string, string>>; kernelEfiStub?: UkiRef['pcr9'] };
  return {
    source: path,
    bootApplication: d.bootApplication.digests,
    kernel: d.kernel.digests,
    events: d.events.map((e) => ({ section: e.section, what: e.what, eventType: e.eventType, digests: e.digests })),
    pcr11: Object.fromEntries(Object.entries(d.pcrs).map(([b, m]) => [b, m['11']!])),
    ...(d.kernelEfiStub ? { pcr9: { events: d.kernelEfiStub.events, pcrs: d.kernelEfiStub.pcrs } } : {}),
  };
}

const hexOf = (e: LogEvent, bank: string): string | undefined => e.digests.find((d) => d.bank === bank)?.digest.toString('hex');
const where = (e: LogEvent): string => {
  const dec = decodeEvent(e);
  const dp = dec && typeof dec.devicePath === 'string' ? `, ${dec.devicePath}` : '';
  const txt = dec && typeof dec.text === 'string' ? ` "${dec.text}"` : '';
  return `event #${e.index} (PCR ${e.pcr} ${e.typeName}${txt}${dp})`;
};

/** Banks a check can compare: quoted for `pcr`, carried by the log, named by every reference. */
function commonBanks(log: EventLog, quoted: BootCheckInput['quoted'], pcr: number, refs: Record<string, string>[]): string[] {
  return log.banks.filter((b) => quoted.get(b)?.has(pcr) && refs.every((r) => r[b] !== undefined));
}

export function bootChecks(input: BootCheckInput): BootCheckResult[] {
  const out: BootCheckResult[] = [];
  const all = (status: BootCheckResult['status'], reason: string): BootCheckResult[] =>
    (['boot.application', 'boot.uki-sections', 'boot.hypervisor-follows'] as const).map((name) => ({ name, status, reason }));
  if (!input.ukis.length) return [];
  if (!input.firmwareLog) return all('fail', 'no firmware event log in the evidence: what booted cannot be judged');
  let log: EventLog;
  try {
    log = parseEventLog(input.firmwareLog);
  } catch (e) {
    return all('fail', `the firmware event log does not parse: ${(e as Error).message}`);
  }
  if (!input.firmwareReplayOk) return all('fail', 'the firmware event log does not replay to the quoted PCRs (eventlog.firmware): its boot events are not vouched for');

  // --- boot.application (PCR 4) ---
  const apps = log.events.filter((e) => e.pcr === BOOT_APP_PCR && e.type === EVENT_TYPES.EV_EFI_BOOT_SERVICES_APPLICATION);
  let chosen: UkiRef | undefined;
  {
    const banks = commonBanks(log, input.quoted, BOOT_APP_PCR, input.ukis.flatMap((u) => [u.bootApplication, u.kernel]));
    const first = apps[0];
    if (!banks.length) out.push({ name: 'boot.application', status: 'fail', reason: `PCR ${BOOT_APP_PCR} is not quoted in a bank that the log and every UKI reference carry (log: ${log.banks.join(', ')})` });
    else if (!first) out.push({ name: 'boot.application', status: 'fail', reason: `the firmware log has no EV_EFI_BOOT_SERVICES_APPLICATION event in PCR ${BOOT_APP_PCR}: no boot application was measured` });
    else {
      chosen = input.ukis.find((u) => banks.every((b) => hexOf(first, b) === u.bootApplication[b]));
      const bad: string[] = [];
      if (!chosen) {
        const b = banks[0]!;
        bad.push(`${where(first)}: ${b} digest ${hexOf(first, b)} is not an allowed UKI (expected ${input.ukis.map((u) => `${u.bootApplication[b]} from ${u.source}`).join(' or ')})`);
      } else {
        for (const e of apps.slice(1)) {
          const b = banks.find((x) => hexOf(e, x) !== chosen!.kernel[x]);
          if (b) bad.push(`${where(e)}: ${b} digest ${hexOf(e, b)} is not the kernel of the allowed UKI (expected ${chosen.kernel[b]} from ${chosen.source})`);
        }
      }
      out.push(
        bad.length
          ? { name: 'boot.application', status: 'fail', reason: bad[0]!, details: bad.slice(1) }
          : { name: 'boot.application', status: 'pass', reason: `${where(first)} is the UKI of ${chosen!.source} (${banks.join(', ')} Authenticode digests)${apps.length > 1 ? `; ${apps.length - 1} later application(s) are its kernel` : ''}` },
      );
    }
  }

  // --- boot.uki-sections (PCR 11) ---
  const pcr11 = log.events.filter((e) => e.pcr === UKI_PCR);
  {
    // Without a matching boot application, compare with the reference that explains most events (for the diagnosis).
    const score = (u: UkiRef): number => u.events.filter((r, i) => pcr11[i] && Object.entries(r.digests).every(([b, d]) => hexOf(pcr11[i]!, b) === undefined || hexOf(pcr11[i]!, b) === d)).length;
    const ref = chosen ?? [...input.ukis].sort((a, b) => score(b) - score(a))[0]!;
    const banks = commonBanks(log, input.quoted, UKI_PCR, [ref.pcr11, ...ref.events.map((e) => e.digests)]);
    const bad: string[] = [];
    if (!banks.length) bad.push(`PCR ${UKI_PCR} is not quoted in a bank that the log and ${ref.source} carry: the UKI's section events are not vouched for`);
    else {
      const n = Math.max(pcr11.length, ref.events.length);
      for (let i = 0; i < n; i++) {
        const e = pcr11[i];
        const r = ref.events[i];
        if (!e) {
          bad.push(`the firmware log ends after ${pcr11.length} PCR ${UKI_PCR} event(s); ${ref.source} expects ${ref.events.length} (next: ${r!.section} ${r!.what})`);
          break;
        }
        if (!r) {
          bad.push(`${where(e)}: unexpected, ${ref.source} predicts ${ref.events.length} PCR ${UKI_PCR} event(s)`);
          continue;
        }
        if (e.type !== r.eventType) bad.push(`${where(e)}: event type 0x${e.type.toString(16)}, expected 0x${r.eventType.toString(16)} (${r.section} ${r.what})`);
        for (const b of banks) {
          const got = hexOf(e, b);
          if (got !== r.digests[b]) {
            bad.push(`${where(e)} = ${r.section} ${r.what}: ${b} expected ${r.digests[b]}, actual ${got}`);
            break;
          }
        }
      }
      for (const b of banks) {
        const q = input.quoted.get(b)!.get(UKI_PCR)!.toString('hex');
        if (q !== ref.pcr11[b]) bad.push(`quoted ${b} PCR ${UKI_PCR} ${q} is not the value predicted from ${ref.source} (${ref.pcr11[b]})`);
      }
    }
    // PCR 9, when quoted: the kernel's EFI stub got exactly the UKI's command line and initrd (an
    // override passed around the UKI's .cmdline would show here)
    let pcr9Note = '';
    if (ref.pcr9 && !bad.length) {
      const b9 = commonBanks(log, input.quoted, KERNEL_STUB_PCR, [ref.pcr9.pcrs, ...ref.pcr9.events.map((e) => e.digests)]);
      const evs = log.events.filter((e) => e.pcr === KERNEL_STUB_PCR);
      if (b9.length) {
        ref.pcr9.events.forEach((r, i) => {
          const e = evs[i];
          const b = e && b9.find((x) => hexOf(e, x) !== r.digests[x]);
          if (!e) bad.push(`PCR ${KERNEL_STUB_PCR}: the kernel's EFI stub logged ${evs.length} event(s), ${ref.source} expects "${r.tag}" as #${i + 1}`);
          else if (b) bad.push(`${where(e)} = kernel EFI stub "${r.tag}": ${b} expected ${r.digests[b]}, actual ${hexOf(e, b)}`);
        });
        if (evs.length > ref.pcr9.events.length) bad.push(`${where(evs[ref.pcr9.events.length]!)}: unexpected, ${ref.source} predicts ${ref.pcr9.events.length} PCR ${KERNEL_STUB_PCR} event(s)`);
        if (!bad.length) pcr9Note = `; PCR ${KERNEL_STUB_PCR}: the kernel received the UKI's command line and initrd`;
      } else pcr9Note = `; PCR ${KERNEL_STUB_PCR} not quoted: what the kernel received is not compared`;
    }
    out.push(
      bad.length
        ? { name: 'boot.uki-sections', status: 'fail', reason: bad[0]!, details: bad.slice(1) }
        : { name: 'boot.uki-sections', status: 'pass', reason: `PCR ${UKI_PCR}: the ${pcr11.length} systemd-stub events are ${[...new Set(ref.events.map((e) => e.section))].join(', ')} of ${ref.source}, and the quoted ${banks.join('/')} value is its prediction${pcr9Note}` },
    );
  }

  // --- boot.hypervisor-follows ---
  {
    const bad: string[] = [];
    const lastUki = Math.max(...apps.map((e) => e.index), ...pcr11.map((e) => e.index), -1);
    const ebs = log.events.find((e) => e.type === EVENT_TYPES.EV_EFI_ACTION && e.data.toString('latin1').replace(/\0+$/, '') === EBS);
    if (!ebs) bad.push(`the firmware log has no EV_EFI_ACTION "${EBS}": the firmware never handed the machine to the booted kernel`);
    else if (ebs.index < lastUki) bad.push(`${where(ebs)} comes before the last boot-application/UKI event #${lastUki}`);
    const shared = log.events.filter((e) => e.pcr === input.hypervisorPcr || e.pcr === input.hakPcr);
    for (const e of shared) {
      if (ebs && e.index > ebs.index) bad.push(`${where(e)}: the firmware log extends PCR ${e.pcr} after ExitBootServices`);
      else if (!input.allowStubPcrEvents)
        bad.push(`${where(e)}: a boot-time event in PCR ${e.pcr} (systemd-stub puts command-line overrides and credentials in PCR 12, system extensions in PCR 13): the kernel ran with more than the UKI the references judge (policy boot.allowStubPcrEvents accepts them)`);
    }
    let hvEvent: LogEvent | undefined;
    if (!input.runtimeLog) bad.push(`no runtime log: the hypervisor measurement in PCR ${input.hypervisorPcr} is not in the evidence`);
    else {
      try {
        const rt = parseEventLog(input.runtimeLog, { allowTornTail: true });
        hvEvent = rt.events.find((e) => e.pcr === input.hypervisorPcr);
        if (!hvEvent) bad.push(`the runtime log has no event in the hypervisor PCR ${input.hypervisorPcr}`);
        else if (input.hypervisorDigests && Object.keys(input.hypervisorDigests).length) {
          const b = Object.keys(input.hypervisorDigests).find((x) => hexOf(hvEvent!, x) !== undefined);
          if (b && !input.hypervisorDigests[b]!.includes(hexOf(hvEvent, b)!)) bad.push(`runtime event #${hvEvent.index}: the first event in PCR ${input.hypervisorPcr} is not the reference hypervisor image (${b} ${hexOf(hvEvent, b)})`);
        }
      } catch (e) {
        bad.push(`the runtime log does not parse: ${(e as Error).message}`);
      }
    }
    out.push(
      bad.length
        ? { name: 'boot.hypervisor-follows', status: 'fail', reason: bad[0]!, details: bad.slice(1) }
        : {
            name: 'boot.hypervisor-follows',
            status: 'pass',
            reason: `the UKI's events precede ExitBootServices (#${ebs!.index}); ${shared.length ? `${shared.length} boot event(s) in PCR ${input.hypervisorPcr}/${input.hakPcr} precede it and are replayed before the runtime log` : `no boot event touches PCR ${input.hypervisorPcr} or ${input.hakPcr}`}; the runtime log's first PCR ${input.hypervisorPcr} event (#${hvEvent!.index}) is the hypervisor image`,
          },
    );
  }
  return out;
}
