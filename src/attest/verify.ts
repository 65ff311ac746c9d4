import { createHash, timingSafeEqual, X509Certificate } from 'node:crypto';
import { CSV_SUITE, SEV_SUITE, launchMeasurement } from '../enclave/backends/sev-firmware.js';
import { hashAlgById, hashAlgByName } from '../tpm/alg.js';
import { parseEventLog } from '../eventlog/index.js';
import { ATTR } from '../hypervisor/abi.js';
import { CLAIMS_SCHEME, qualifyingData, type ClaimsInput } from './binding.js';
import { AttestError } from './errors.js';
import { validateEkChain } from '../verifier/ek-cert.js';
import type { LoadedPolicy, BankName } from './policy.js';
import { allowedEnclaveIdentities, maxRequirement, requirementOf } from './policy.js';
import { buildResult, type AttestationResult, type CheckResult, type CheckStatus, type Requirement } from './result.js';
import { akKeyFromInput, parseQuoteAttest, verifyQuoteSignature, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE, type ParsedQuote } from './tpm-structures.js';
import { checkEventData, replayEventLogs, type LogKind } from './eventlog-check.js';
import { bootChecks } from './boot-checks.js';
import type { EnrollmentRecord } from './enroll.js';
import { DEFAULT_HAK_PCR, HYPERVISOR_EXIT_EVENT, enclaveQuoteSignatureOk, expectedReportData, hakEventData, hakFromEventData, hakPcrValue, parseEnclaveQuote, type EnclaveQuote } from './enclave-quote.js';

/** PCR values: bank -> index -> value. */
export type PcrValues = Map<BankName, Map<number, Buffer>>;

export interface QuoteInput {
  attest: Buffer;
  signature: Buffer;
  /** Values of every PCR in this quote's selection (possibly several banks for tpm2-tools quotes). */
  pcrs: PcrValues;
}

export interface EnclaveInput {
  id?: string;
  backend: string;
  /** The hypervisor's enclave quote (496 B, CONTRACT-12). */
  quote: Buffer;
  /** What the enclave bound with the nonce: REPORTDATA[0..32] = SHA-256(nonce ‖ userData). */
  userData: Buffer;
  launchMeasurement?: Buffer;
  /** Firmware launch inputs (apiMajor, apiMinor, build, policy, mnonce hex) for recomputing LAUNCH_MEASURE. */
  launch?: Record<string, string | number>;
  keySlot?: number;
}

/** What the verifier checks, whatever format it arrived in. */
export interface VerifyInput {
  source: 'bundle' | 'tpm2-tools';
  /** claims: extraData = H(nonce ‖ claimsDigest); raw: extraData = nonce (tpm2-tools' own quotes). */
  binding: 'claims' | 'raw';
  /** What the attester claims to run on (never trusted: compared with the kind the EK certificate gives). */
  platformKind?: 'real' | 'emulated';
  quotes: QuoteInput[];
  ak: { tpmtPublic?: Buffer; pem?: string };
  ekCertificates?: string[];
  eventLogs: Partial<Record<LogKind, Buffer>>;
  enclaves: EnclaveInput[];
}

/** Remembered per AK between verifications (clock check). */
export interface ClockRecord {
  clock: string;
  resetCount: number;
  restartCount: number;
  at: string;
}

export interface VerifyOptions {
  /** The challenge this verifier issued (never taken from the evidence). */
  expectedNonce: Buffer;
  policy: LoadedPolicy;
  /** Enrollment lookup by AK name (hex) or, for a PEM-only AK, SHA-256(SPKI) hex. */
  findEnrollment?: (akNameHex: string | undefined, akSpkiHash: string) => EnrollmentRecord | undefined;
  /** Clock record of the last ACCEPTED quote from this AK (by SPKI hash), and where to store a new one. */
  previousClock?: (akSpkiHash: string) => ClockRecord | undefined;
  /** Called only when the result is not contraindicated. */
  recordClock?: (akSpkiHash: string, rec: ClockRecord) => void;
  /** Checks made before verification (schema check, nonce freshness); a `requirement` on them is a floor the policy cannot lower. */
  preChecks?: CheckResult[];
  keyId?: string;
}

/** Nonce length the verifier accepts (bytes): shorter ones can be guessed, longer ones do not fit TPM2B_DATA. */
export const NONCE_MIN = 8;
export const NONCE_MAX = 64;
/** PCR the hypervisor image is measured into when neither policy nor reference values say. */
export const DEFAULT_HYPERVISOR_PCR = 12;

class Checks {
  readonly list: CheckResult[] = [];
  constructor(private readonly loaded: LoadedPolicy) {}
  add(name: string, status: CheckStatus, reason: string, details?: string[], floor?: Requirement): void {
    const requirement = maxRequirement(requirementOf(this.loaded.policy, name), floor ?? 'off');
    if (requirement === 'off') return;
    this.list.push({ name, status, requirement, reason, ...(details && details.length ? { details } : {}) });
  }
  get(name: string): CheckResult | undefined {
    return this.list.find((c) => c.name === name);
  }
  passed(name: string): boolean {
    return this.get(name)?.status === 'pass';
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const short = (b: Uint8Array | string): string => (typeof b === 'string' ? b : hex(b)).slice(0, 16) + '…';

/** The log that owns a PCR's final value. */
function logOf(pcr: number): LogKind {
  return pcr <= 7 ? 'firmware' : pcr >= 17 && pcr <= 22 ? 'drtm' : 'runtime';
}

/** True when a CA name says it is swtpm's local CA (swtpm_localca: "swtpm-localca-rootca", "swtpm-localca"). */
function isSwtpmName(name: string): boolean {
  return /swtpm/i.test(name);
}

/**
 * The platform kind an EK certificate chain shows: `emulated` when it chains to (or is issued by)
 * swtpm's local CA, `real` when it chains to another CA the policy trusts, `unknown` when it
 * does not chain to a trusted CA at all.
 */
export function platformKindOfEk(chainPem: string[], trustedPem: string[]): { kind: 'real' | 'emulated' | 'unknown'; reason: string } {
  const chain = verifyCertChain(chainPem, trustedPem);
  if (!chain.ok) return { kind: 'unknown', reason: `EK certificate: ${chain.reason}` };
  let names: string[] = [];
  try {
    const certs = chainPem.map((p) => new X509Certificate(p));
    names = [...certs.map((c) => c.issuer), ...certs.slice(1).map((c) => c.subject), chain.root ?? ''];
  } catch {
    return { kind: 'unknown', reason: 'EK certificate does not parse' };
  }
  const swtpm = names.find(isSwtpmName);
  if (swtpm) return { kind: 'emulated', reason: `EK certificate chains to swtpm's local CA (${swtpm.replace(/\n/g, ', ')})` };
  return { kind: 'real', reason: `EK certificate ${chain.reason}` };
}

/** Runs every check; never throws for bad evidence (bad evidence is a failed check). */
export function verifyEvidence(input: VerifyInput, opts: VerifyOptions): AttestationResult {
  const { policy } = opts.policy;
  const c = new Checks(opts.policy);
  for (const p of opts.preChecks ?? []) c.add(p.name, p.status, p.reason, p.details, p.requirement);

  // --- AK key ---
  let akSpkiHash = '';
  let akNameHex: string | undefined;
  let akKey: ReturnType<typeof akKeyFromInput> | undefined;
  try {
    akKey = akKeyFromInput(input.ak);
    akSpkiHash = akKey.spkiSha256;
    akNameHex = akKey.name;
  } catch (e) {
    c.add('signature', 'fail', `AK public key unusable: ${(e as Error).message}`);
  }

  // --- parse, magic/type, signature, nonce, pcr digest: per quote ---
  const parsed: (ParsedQuote | undefined)[] = [];
  const magicBad: string[] = [];
  const typeBad: string[] = [];
  const sigBad: string[] = [];
  const schemes = new Set<string>();
  const sigHashes: string[] = [];
  input.quotes.forEach((q, i) => {
    let p: ParsedQuote | undefined;
    try {
      p = parseQuoteAttest(q.attest);
    } catch (e) {
      magicBad.push(`quote ${i}: ${(e as Error).message}`);
    }
    parsed.push(p);
    if (p && p.magic !== TPM_GENERATED_VALUE) magicBad.push(`quote ${i}: magic 0x${p.magic.toString(16)} is not TPM_GENERATED_VALUE (0xff544347)`);
    if (p && p.type !== TPM_ST_ATTEST_QUOTE) typeBad.push(`quote ${i}: type 0x${p.type.toString(16)} is not TPM_ST_ATTEST_QUOTE (0x8018)`);
    if (akKey) {
      const v = verifyQuoteSignature(q.attest, q.signature, akKey);
      schemes.add(v.scheme);
      sigHashes[i] = v.hashName;
      if (!v.ok) sigBad.push(`quote ${i}: ${v.reason}`);
      else if (policy.signatureSchemes && !policy.signatureSchemes.includes(v.scheme as 'ecdsa')) sigBad.push(`quote ${i}: scheme ${v.scheme} not allowed by policy`);
    }
  });
  if (input.quotes.length === 0) magicBad.push('no quotes in the evidence');
  c.add('attest.magic', magicBad.length ? 'fail' : 'pass', magicBad[0] ?? `${input.quotes.length} quote(s), TPM_GENERATED_VALUE`, magicBad.slice(1));
  c.add('attest.type', typeBad.length || magicBad.length ? 'fail' : 'pass', typeBad[0] ?? (magicBad.length ? 'quote not parsed' : 'TPM_ST_ATTEST_QUOTE'), typeBad.slice(1));
  if (akKey) c.add('signature', sigBad.length ? 'fail' : 'pass', sigBad[0] ?? `${[...schemes].join(',')} over TPMS_ATTEST verifies with the AK (${akKey.description})`, sigBad.slice(1));
  const quotesAuthentic = !magicBad.length && !typeBad.length && !sigBad.length && !!akKey;

  // --- nonce / claims binding ---
  let expectedExtra: Buffer;
  let claims: ClaimsInput | undefined;
  if (input.binding === 'claims') {
    claims = {
      ...(input.platformKind ? { platformKind: input.platformKind } : {}),
      enclaves: input.enclaves.map((e) => ({ backend: e.backend, quote: e.quote, userData: e.userData, ...(e.launchMeasurement ? { launchMeasurement: e.launchMeasurement } : {}), ...(e.keySlot !== undefined ? { keySlot: e.keySlot } : {}) })),
    };
    expectedExtra = qualifyingData(opts.expectedNonce, claims);
  } else expectedExtra = opts.expectedNonce;
  const nonceBad: string[] = [];
  const nlen = opts.expectedNonce.length;
  if (nlen < NONCE_MIN || nlen > NONCE_MAX) nonceBad.push(`the challenge is ${nlen} byte(s); a nonce must be ${NONCE_MIN}-${NONCE_MAX} bytes (a short one can be guessed and answered in advance)`);
  parsed.forEach((p, i) => {
    if (p && !p.extraData.equals(expectedExtra))
      nonceBad.push(`quote ${i}: extraData ${short(p.extraData)} is not ${input.binding === 'claims' ? 'SHA-256(challenge ‖ claimsDigest)' : 'the challenge'} ${short(expectedExtra)} (wrong or reused nonce, or altered claims)`);
  });
  if (parsed.some((p) => !p)) nonceBad.push('a quote could not be parsed');
  c.add('nonce', nonceBad.length ? 'fail' : 'pass', nonceBad[0] ?? (input.binding === 'claims' ? `extraData = H(challenge ‖ claims) (${CLAIMS_SCHEME}), ${nlen}-byte challenge` : `extraData equals the ${nlen}-byte challenge`), nonceBad.slice(1));

  // --- PCR digest and selection ---
  const quoted: PcrValues = new Map();
  const quotedBanks = new Set<BankName>();
  const digestBad: string[] = [];
  parsed.forEach((p, i) => {
    if (!p) return;
    const q = input.quotes[i]!;
    const parts: Buffer[] = [];
    for (const sel of p.selection) {
      const alg = hashAlgById(sel.hashAlg);
      if (!alg) {
        digestBad.push(`quote ${i}: unknown bank 0x${sel.hashAlg.toString(16)}`);
        continue;
      }
      const bank = alg.name as BankName;
      if (quotedBanks.has(bank)) digestBad.push(`quote ${i}: bank ${bank} is quoted more than once`);
      quotedBanks.add(bank);
      const values = q.pcrs.get(bank);
      for (const idx of sel.pcrs) {
        const v = values?.get(idx);
        if (!v) {
          digestBad.push(`quote ${i}: ${bank} PCR ${idx} is selected but no value was supplied`);
          continue;
        }
        if (v.length !== alg.size) digestBad.push(`quote ${i}: ${bank} PCR ${idx} value has ${v.length} bytes, expected ${alg.size}`);
        parts.push(v);
        if (!quoted.has(bank)) quoted.set(bank, new Map());
        quoted.get(bank)!.set(idx, v);
      }
      for (const idx of values?.keys() ?? []) if (!sel.pcrs.includes(idx)) digestBad.push(`quote ${i}: ${bank} PCR ${idx} supplied but not in the quote's selection`);
    }
    const halg = p.pcrDigest.length === 20 ? 'sha1' : p.pcrDigest.length === 48 ? 'sha384' : p.pcrDigest.length === 64 ? 'sha512' : 'sha256';
    const sigHash = hashAlgByName(sigHashes[i] ?? '')?.nodeName ?? halg;
    const d = createHash(sigHash).update(Buffer.concat(parts)).digest();
    if (!d.equals(p.pcrDigest)) digestBad.push(`quote ${i}: pcrDigest ${short(p.pcrDigest)} != ${sigHash}(supplied PCR values) ${short(d)}`);
  });
  c.add('pcr.digest', digestBad.length || parsed.some((x) => !x) ? 'fail' : 'pass', digestBad[0] ?? (parsed.some((x) => !x) ? 'quote not parsed' : `supplied values match the quoted digest (${[...quoted].map(([b, m]) => `${b}:${[...m.keys()].join(',')}`).join(' ')})`), digestBad.slice(1));
  const pcrsTrusted = quotesAuthentic && !digestBad.length && !parsed.some((x) => !x);
  const isQuoted = (idx: number): boolean => [...quoted.values()].some((m) => m.has(idx));

  const ref = opts.policy.reference;
  const hvPcr = policy.hypervisor?.pcr ?? ref?.hypervisorPcr ?? DEFAULT_HYPERVISOR_PCR;
  const hakPcr = policy.hypervisor?.hakPcr ?? DEFAULT_HAK_PCR;

  const selBad: string[] = [];
  for (const [bank, list] of Object.entries(policy.requiredPcrs ?? {})) {
    const have = quoted.get(bank as BankName);
    if (!have) {
      selBad.push(`bank ${bank} required by policy but not quoted`);
      continue;
    }
    const missing = list.filter((i) => !have.has(i));
    if (missing.length) selBad.push(`${bank} PCR ${missing.join(',')} required by policy but not in the quote's selection`);
  }
  if (policy.drtm?.required) for (const i of [17, 18]) if (!isQuoted(i)) selBad.push(`PCR ${i} required (drtm.required) but not quoted`);
  if (input.enclaves.length && !isQuoted(hakPcr)) selBad.push(`the evidence has enclaves but the HAK PCR ${hakPcr} is not quoted`);
  if (!isQuoted(hvPcr)) selBad.push(`the hypervisor PCR ${hvPcr} is not quoted`);
  c.add('pcr.selection', selBad.length ? 'fail' : 'pass', selBad[0] ?? `the quote covers the hypervisor PCR ${hvPcr}${input.enclaves.length ? `, the HAK PCR ${hakPcr}` : ''}${policy.requiredPcrs ? ' and every PCR the policy requires' : ''}`, selBad.slice(1));

  // --- event logs: every quoted PCR with reference values must be explained by its log ---
  const needReplay = new Map<LogKind, Set<string>>();
  const need = (idx: number, bank: string): void => {
    const k = logOf(idx);
    if (!needReplay.has(k)) needReplay.set(k, new Set());
    needReplay.get(k)!.add(`${bank} PCR ${idx}`);
  };
  for (const [bank, m] of quoted) for (const idx of m.keys()) if (ref?.pcrs[bank]?.[idx] || (idx === hvPcr && ref?.hypervisorDigests[bank])) need(idx, bank);
  if (policy.drtm?.required) for (const idx of [17, 18]) for (const [bank, m] of quoted) if (m.has(idx)) need(idx, bank);
  const replay = replayEventLogs(input.eventLogs, quoted);
  for (const k of ['firmware', 'runtime', 'drtm'] as LogKind[]) {
    const name = `eventlog.${k}`;
    const needed = [...(needReplay.get(k) ?? [])];
    if (!input.eventLogs[k]) {
      if (needed.length) c.add(name, 'skip', `no ${k} log supplied: ${needed.join(', ')} ${needed.length > 1 ? 'have' : 'has'} reference values and cannot be replayed`);
      continue;
    }
    const r = replay.perLog[k];
    if (!r) continue;
    c.add(name, r.ok ? 'pass' : 'fail', r.reason, r.details);
  }
  const replayed = replay.events;
  const data = checkEventData(input.eventLogs);
  c.add('eventlog.event-data', data.status, data.reason, data.details);

  // --- reference values ---
  if (!ref) {
    c.add('reference.pcrs', 'skip', 'no reference values configured in the policy: the platform state is not judged');
  } else {
    const bad: string[] = [];
    let n = 0;
    const named = new Map<number, string[]>();
    for (const [bank, byIdx] of Object.entries(ref.pcrs)) for (const idxS of Object.keys(byIdx)) named.set(Number(idxS), [...(named.get(Number(idxS)) ?? []), bank]);
    for (const [idx, banks] of [...named].sort((a, b) => a[0] - b[0])) {
      if (!banks.some((b) => quoted.get(b as BankName)?.has(idx))) bad.push(`PCR ${idx} has reference values (${banks.join(', ')}) but is not quoted in any of those banks`);
    }
    for (const [bank, byIdx] of Object.entries(ref.pcrs)) {
      const have = quoted.get(bank as BankName);
      for (const [idxS, allowed] of Object.entries(byIdx)) {
        const idx = Number(idxS);
        if (hvPcr === idx || idx === 17 || idx === 18) continue; // judged by reference.hypervisor / reference.drtm
        const v = have?.get(idx);
        if (!v) continue;
        n++;
        if (!allowed.includes(hex(v))) bad.push(`${bank} PCR ${idx} = ${short(v)} not among ${allowed.length} reference value(s) from ${ref.source}`);
      }
    }
    c.add('reference.pcrs', bad.length ? 'fail' : 'pass', bad[0] ?? `every PCR named by the reference values is quoted${n ? `; ${n} other PCR value(s) match` : ''} (the hypervisor and DRTM PCRs are judged by reference.hypervisor and reference.drtm)`, bad.slice(1));
  }

  // hypervisor measurement in its PCR (always judged: its PCR defaults to ${DEFAULT_HYPERVISOR_PCR})
  {
    const bad: string[] = [];
    let matched = 0;
    let anyRef = false;
    for (const [bank, m] of quoted) {
      const v = m.get(hvPcr);
      if (!v) continue;
      const allowedPcr = ref?.pcrs[bank]?.[hvPcr];
      const allowedEv = ref?.hypervisorDigests[bank];
      if (allowedPcr) {
        anyRef = true;
        if (allowedPcr.includes(hex(v))) matched++;
        else bad.push(`${bank} PCR ${hvPcr} = ${short(v)} is not the reference value for the hypervisor image`);
      } else if (allowedEv) {
        anyRef = true;
        const evs = replayed.filter((e) => e.pcr === hvPcr && e.bank === bank);
        if (!evs.length) bad.push(`no replayed event log entry explains ${bank} PCR ${hvPcr}`);
        // The PCR may also hold header/signer events (pcr-policy); the image event must be one of the references.
        else if (!evs.some((e) => allowedEv.includes(e.digest))) bad.push(`${bank} PCR ${hvPcr}: none of its ${evs.length} event(s) is a reference hypervisor measurement`);
        else matched++;
      }
    }
    // A DISABLE caps the hypervisor PCR with the exit event; a reload measures the image again.
    // Between the two the host held every TPM locality: refuse what followed, whatever the image.
    for (const e of replayed.filter((x) => x.pcr === hvPcr)) {
      const alg = hashAlgByName(e.bank);
      if (alg && e.digest === createHash(alg.nodeName).update(HYPERVISOR_EXIT_EVENT).digest('hex'))
        bad.push(`${e.bank} PCR ${hvPcr}: event #${e.index} is the hypervisor-exit cap ("${HYPERVISOR_EXIT_EVENT}"): the hypervisor was disabled since boot and the host held every TPM locality`);
    }
    if (!ref) c.add('reference.hypervisor', bad.length ? 'fail' : 'skip', bad[0] ?? `no reference values: the hypervisor in PCR ${hvPcr} is not judged`, bad.slice(1));
    else if (!isQuoted(hvPcr)) c.add('reference.hypervisor', 'fail', `the hypervisor PCR ${hvPcr} is not quoted`);
    else if (!anyRef && !bad.length) c.add('reference.hypervisor', 'fail', `no reference value for the hypervisor PCR ${hvPcr} in any quoted bank (${ref.source})`);
    else c.add('reference.hypervisor', bad.length ? 'fail' : 'pass', bad[0] ?? `PCR ${hvPcr} holds a reference hypervisor measurement`, bad.slice(1));
  }

  // DRTM PCRs
  if (policy.drtm?.required || (ref && Object.values(ref.pcrs).some((m) => m && (m[17] || m[18])))) {
    const bad: string[] = [];
    let n = 0;
    for (const idx of [17, 18]) {
      for (const [bank, m] of quoted) {
        const v = m.get(idx);
        if (!v) continue;
        if (v.every((b) => b === 0xff)) {
          // 17-22 start as all 0xFF and only a locality-4 DRTM sequence resets them
          if (policy.drtm?.required) bad.push(`${bank} PCR ${idx} holds its power-on value (all FF): no dynamic launch happened`);
          continue;
        }
        const allowed = ref?.pcrs[bank]?.[idx];
        if (!allowed) continue;
        n++;
        if (!allowed.includes(hex(v))) bad.push(`${bank} PCR ${idx} = ${short(v)} not the reference DRTM value`);
      }
    }
    if (policy.drtm?.required && !n && !bad.length) bad.push('PCR17/18 not quoted or no reference values for them');
    c.add('reference.drtm', bad.length ? 'fail' : n ? 'pass' : 'skip', bad[0] ?? (n ? `PCR17/18 match reference values` : 'no DRTM reference values for the quoted PCR17/18'), bad.slice(1));
  }

  // --- UEFI boot chain: boot application, UKI sections, hypervisor after them (src/attest/boot-checks.ts) ---
  for (const b of bootChecks({ firmwareLog: input.eventLogs.firmware, runtimeLog: input.eventLogs.runtime, quoted, firmwareReplayOk: c.passed('eventlog.firmware'), ukis: opts.policy.ukis ?? [], allowStubPcrEvents: policy.boot?.allowStubPcrEvents === true, hypervisorPcr: hvPcr, hakPcr, ...(ref ? { hypervisorDigests: ref.hypervisorDigests } : {}) }))
    c.add(b.name, b.status, b.reason, b.details);

  // --- enclaves: quote format, HAK signature, HAK bound in its PCR, REPORTDATA, identity ---
  verifyEnclaves(input, opts, c, { quoted, pcrsTrusted, hakPcr });

  // --- AK provenance ---
  const prov = policy.akProvenance ?? {};
  const acceptEnrolled = prov.acceptEnrolled !== false;
  const pinned = prov.trustedAkKeys ?? [];
  const enrollment = akKey && acceptEnrolled ? opts.findEnrollment?.(akNameHex, akSpkiHash) : undefined;
  if (!akKey) c.add('ak.provenance', 'fail', 'no usable AK');
  else if (enrollment) c.add('ak.provenance', 'pass', `AK enrolled by credential activation at ${enrollment.enrolledAt} (EK cert ${short(enrollment.ekCertSha256)})`);
  else if (pinned.includes(akSpkiHash)) c.add('ak.provenance', 'pass', `AK ${short(akSpkiHash)} is pinned by the policy (akProvenance.trustedAkKeys)`);
  else if (!acceptEnrolled && !pinned.length) c.add('ak.provenance', 'fail', 'the policy accepts no enrolled AK and names no other trust anchor (akProvenance.trustedAkKeys): nothing vouches for this AK');
  else {
    const anchors = [...(acceptEnrolled ? ['enrolled with this verifier'] : []), ...(pinned.length ? ['pinned in akProvenance.trustedAkKeys'] : [])].join(' or ');
    c.add('ak.provenance', 'fail', `AK ${short(akSpkiHash)} is not ${anchors}${input.ekCertificates?.length ? ' (an EK certificate alone does not bind an AK to that TPM: enroll it by credential activation)' : ''}`);
  }
  const akVouched = c.passed('ak.provenance');

  // --- clock / reboots: a quote must be newer than the last accepted one from this AK ---
  const p0 = parsed.find((p): p is ParsedQuote => !!p);
  let clockNow: ClockRecord | undefined;
  if (!p0 || !quotesAuthentic) c.add('clock', 'skip', 'no authentic quote');
  else {
    const prev = opts.previousClock?.(akSpkiHash);
    clockNow = { clock: p0.clock.toString(), resetCount: p0.resetCount, restartCount: p0.restartCount, at: new Date().toISOString() };
    const bad: string[] = [];
    const others = parsed.filter((p): p is ParsedQuote => !!p && (p.resetCount !== p0.resetCount || p.restartCount !== p0.restartCount));
    if (others.length) bad.push('the quotes of one bundle come from different TPM boots');
    let how = '';
    if (prev) {
      const pc = BigInt(prev.clock);
      // For an AK outside the endorsement/platform hierarchy the TPM adds a per-key constant to
      // resetCount and restartCount (TPM 2.0 Part 1, "Obfuscation"; FillInAttestInfo), so the
      // counters are compared as differences modulo 2^32, which the constant does not change.
      const order = (a: number, b: number): number => {
        const d = (a - b) >>> 0;
        return d === 0 ? 0 : d < 0x80000000 ? 1 : -1;
      };
      const reset = order(p0.resetCount, prev.resetCount);
      const restart = order(p0.restartCount, prev.restartCount);
      if (reset > 0) how = `TPM reset (reboot) since the last accepted quote (resetCount ${prev.resetCount} -> ${p0.resetCount})`;
      else if (reset < 0) bad.push(`resetCount ${p0.resetCount} is older than the last accepted ${prev.resetCount} (replayed quote or cleared TPM)`);
      else if (restart > 0) how = `TPM restart/resume since the last accepted quote (restartCount ${prev.restartCount} -> ${p0.restartCount})`;
      else if (restart < 0) bad.push(`restartCount ${p0.restartCount} is older than the last accepted ${prev.restartCount} (replayed quote)`);
      else if (p0.clock > pc) how = `clock ${prev.clock} -> ${p0.clock} ms, same boot`;
      else bad.push(`clock ${p0.clock} is not newer than the last accepted quote's ${prev.clock} (same boot): a replayed quote`);
    }
    if (!p0.safe) bad.push('TPM clock not safe (clockInfo.safe = 0: no orderly shutdown since the clock was last saved)');
    c.add('clock', bad.length ? 'fail' : 'pass', bad[0] ?? (prev ? `newer than the last accepted quote: ${how}` : `first accepted quote from this AK (clock ${p0.clock}, reset ${p0.resetCount}, restart ${p0.restartCount})`), bad.slice(1));
  }

  // --- platform kind: from the EK certificate the AK's enrollment rests on, never from a claim ---
  let platformKind: 'real' | 'emulated' | undefined;
  {
    let derived: { kind: 'real' | 'emulated' | 'unknown'; reason: string } = { kind: 'unknown', reason: 'no EK certificate vouches for this AK' };
    if (enrollment?.platformKind) derived = { kind: enrollment.platformKind, reason: enrollment.platformReason ?? `recorded at enrollment (EK cert ${short(enrollment.ekCertSha256)})` };
    else if (enrollment && input.ekCertificates?.length) {
      const leafHash = (() => {
        try {
          return createHash('sha256').update(new X509Certificate(input.ekCertificates![0]!).raw).digest('hex');
        } catch {
          return '';
        }
      })();
      if (leafHash === enrollment.ekCertSha256) derived = platformKindOfEk(input.ekCertificates, opts.policy.trustedEkCas);
      else derived = { kind: 'unknown', reason: 'the EK certificate in the evidence is not the one this AK was enrolled with' };
    }
    if (!akVouched) c.add('platform.kind', policy.platform?.requireReal ? 'fail' : 'skip', `not judged: nothing vouches for the AK, so no EK certificate says what it runs on${policy.platform?.requireReal ? ' (policy requires real hardware)' : ''}`);
    else if (derived.kind === 'unknown') c.add('platform.kind', policy.platform?.requireReal ? 'fail' : 'skip', `platform kind unknown: ${derived.reason}`);
    else {
      platformKind = derived.kind;
      const claimed = input.binding === 'claims' ? input.platformKind : undefined;
      if (claimed && claimed !== derived.kind) c.add('platform.kind', 'fail', `the evidence claims ${claimed === 'real' ? 'real hardware' : 'an emulated platform'} but ${derived.reason}`);
      else if (policy.platform?.requireReal && derived.kind !== 'real') c.add('platform.kind', 'fail', `${derived.reason}: emulated; the policy requires real hardware`);
      else c.add('platform.kind', 'pass', `${derived.kind}: ${derived.reason}`);
    }
  }

  // A check that passed on values nobody vouches for is not a pass: PCR-based checks need an
  // authentic quote and matching PCR values; claim-based checks need the claims bound by the nonce.
  const claimsBound = quotesAuthentic && !nonceBad.length;
  for (const ch of c.list) {
    if (ch.status !== 'pass') continue;
    const pcrBased = ch.name.startsWith('eventlog.') || ch.name.startsWith('boot.') || ch.name === 'reference.pcrs' || ch.name === 'reference.hypervisor' || ch.name === 'reference.drtm' || ch.name === 'enclave.hak-bound';
    const claimBased = ch.name === 'reference.launch' || ch.name === 'enclave.count';
    if (pcrBased && !pcrsTrusted) Object.assign(ch, { status: 'skip', reason: `not judged: the PCR values are not authenticated (${ch.reason})` });
    if (claimBased && !claimsBound) Object.assign(ch, { status: 'skip', reason: `not judged: these claims are not bound by an authentic quote (${ch.reason})` });
  }
  // Enclave identities are vouched for only by a HAK signature whose key is bound in the HAK PCR.
  if (!(c.passed('enclave.quote-signature') && c.passed('enclave.hak-bound') && c.passed('enclave.quote-format'))) {
    for (const ch of c.list)
      if (ch.status === 'pass' && (/^enclave\.(reportdata-nonce|mrenclave|mrsigner|isvprodid|isvsvn|attributes)$/.test(ch.name) || ch.name === 'hypervisor.dma-protection'))
        Object.assign(ch, { status: 'skip', reason: `not judged: the enclave quote is not vouched for by a HAK bound in PCR ${hakPcr} (${ch.reason})` });
  }

  const result = buildResult(c.list, {
    nonce: hex(opts.expectedNonce),
    ...(akNameHex ? { akName: akNameHex } : {}),
    enrolled: !!enrollment,
    ...(platformKind ? { platformKind } : {}),
    ...(opts.policy.policy.resultTtlSeconds ? { ttlSeconds: opts.policy.policy.resultTtlSeconds } : {}),
    ...(opts.keyId ? { keyId: opts.keyId } : {}),
  });
  // Only accepted evidence moves the replay record forward.
  if (clockNow && result['ear.status'] !== 'contraindicated' && result['ear.status'] !== 'none') opts.recordClock?.(akSpkiHash, clockNow);
  return result;
}

/** Enclave quotes (CONTRACT-12) against the HAK PCR, the challenge and the policy's allowed identities. */
function verifyEnclaves(input: VerifyInput, opts: VerifyOptions, c: Checks, ctx: { quoted: PcrValues; pcrsTrusted: boolean; hakPcr: number }): void {
  const { policy } = opts.policy;
  const encPol = policy.enclaves ?? {};
  const n = input.enclaves.length;
  if (encPol.minCount) c.add('enclave.count', n >= encPol.minCount ? 'pass' : 'fail', n >= encPol.minCount ? `${n} enclave(s), policy needs ${encPol.minCount}` : `policy needs ${encPol.minCount} enclave(s), evidence has ${n}`);
  const requireDma = policy.hypervisor?.requireDmaProtection === true;
  if (requireDma && !n) c.add('hypervisor.dma-protection', 'fail', 'the policy requires DMA protection; only an enclave quote (HAK-signed) carries it and the evidence has none', undefined, 'expected');
  if (!n) return;
  const who = (e: EnclaveInput, i: number): string => `enclave ${e.id ?? i}`;

  // format
  const quotes: (EnclaveQuote | undefined)[] = [];
  const fmtBad: string[] = [];
  input.enclaves.forEach((e, i) => {
    try {
      const q = parseEnclaveQuote(e.quote);
      if (q.hakPcr !== ctx.hakPcr) fmtBad.push(`${who(e, i)}: quote names HAK PCR ${q.hakPcr}, the policy's HAK PCR is ${ctx.hakPcr}`);
      quotes.push(q);
    } catch (err) {
      fmtBad.push(`${who(e, i)}: ${(err as Error).message}`);
      quotes.push(undefined);
    }
  });
  c.add('enclave.quote-format', fmtBad.length ? 'fail' : 'pass', fmtBad[0] ?? `${n} quote(s): HEQ1 v1, Ed25519, HAK PCR ${ctx.hakPcr}`, fmtBad.slice(1));
  // DMA protection as the hypervisor signed it in each quote's flags (the signature and HAK
  // binding checks below decide whether the flags can be believed)
  if (requireDma) {
    const dmaBad = quotes.flatMap((q, i) => (!q ? [`${who(input.enclaves[i]!, i)}: quote does not parse`] : q.dmaProtected ? [] : [`${who(input.enclaves[i]!, i)}: the HAK-signed quote says DMA protection was off (flags 0x${q.flags.toString(16)})`]));
    c.add('hypervisor.dma-protection', dmaBad.length ? 'fail' : 'pass', dmaBad[0] ?? `${n} quote(s) signed with DMA protection on (the hypervisor owned the IOMMU)`, dmaBad.slice(1), 'expected');
  }

  // signature with the HAK the quote carries
  const sigBad: string[] = [];
  quotes.forEach((q, i) => {
    if (q && !enclaveQuoteSignatureOk(q)) sigBad.push(`${who(input.enclaves[i]!, i)}: Ed25519 signature does not verify with the HAK ${short(q.hakPublic)} in the quote`);
  });
  if (quotes.some((q) => !q)) sigBad.push('a quote could not be parsed');
  c.add('enclave.quote-signature', sigBad.length ? 'fail' : 'pass', sigBad[0] ?? `${n} quote(s) signed by their HAK (Ed25519, RFC 8032)`, sigBad.slice(1));

  // the HAK bound in its PCR: exactly one event naming this key
  const hakBad: string[] = [];
  const haks = [...new Set(quotes.filter((q): q is EnclaveQuote => !!q).map((q) => hex(q.hakPublic)))];
  if (haks.length > 1) hakBad.push(`the quotes carry ${haks.length} different HAKs; one hypervisor has one`);
  const hak = haks.length === 1 ? Buffer.from(haks[0]!, 'hex') : undefined;
  let banksChecked = 0;
  if (hak) {
    for (const [bank, m] of ctx.quoted) {
      const v = m.get(ctx.hakPcr);
      if (!v) continue;
      const alg = hashAlgByName(bank);
      if (!alg) continue;
      let want: Buffer;
      try {
        want = hakPcrValue(alg.nodeName, hak);
      } catch {
        hakBad.push(`${bank} PCR ${ctx.hakPcr}: this verifier cannot compute ${bank} (hash unavailable in this Node build)`);
        continue;
      }
      banksChecked++;
      if (!v.equals(want)) hakBad.push(`${bank} PCR ${ctx.hakPcr} = ${short(v)} is not exactly one extend with the HAK event for key ${short(hak)} (expected ${short(want)}): the key is not bound, or the PCR holds other events`);
    }
    if (!banksChecked) hakBad.push(`the HAK PCR ${ctx.hakPcr} is not quoted`);
    const rt = input.eventLogs.runtime;
    if (rt) {
      try {
        const evs = parseEventLog(rt).events.filter((e) => e.pcr === ctx.hakPcr);
        const keys = evs.map((e) => hakFromEventData(e.data));
        if (evs.length !== 1) hakBad.push(`the runtime log has ${evs.length} event(s) for PCR ${ctx.hakPcr}; exactly one HAK event is required`);
        else if (!keys[0] || !keys[0].equals(hak)) hakBad.push(`the runtime log's PCR ${ctx.hakPcr} event does not name the quote's HAK (data ${JSON.stringify(evs[0]!.data.toString('latin1').slice(0, 40))}…, expected ${JSON.stringify(hakEventData(hak).toString('latin1').slice(0, 40))}…)`);
      } catch (err) {
        hakBad.push(`runtime log does not parse: ${(err as Error).message}`);
      }
    }
  } else if (!haks.length) hakBad.push('no parsable quote carries a HAK');
  if (!ctx.pcrsTrusted && !hakBad.length) hakBad.push(`the PCR values are not authenticated, so PCR ${ctx.hakPcr} proves nothing`);
  c.add('enclave.hak-bound', hakBad.length ? 'fail' : 'pass', hakBad[0] ?? `PCR ${ctx.hakPcr} is exactly one event naming the HAK ${short(hak!)} (${banksChecked} bank(s))`, hakBad.slice(1));

  // REPORTDATA = SHA-256(nonce ‖ userData) ‖ 0^32
  const rdBad: string[] = [];
  quotes.forEach((q, i) => {
    if (!q) return;
    const e = input.enclaves[i]!;
    const want = expectedReportData(opts.expectedNonce, e.userData);
    if (!q.body.reportData.equals(want)) rdBad.push(`${who(e, i)}: REPORTDATA ${short(q.body.reportData)} is not SHA-256(challenge ‖ userData) ‖ 0^32 ${short(want)} (stale, or bound to other data)`);
  });
  c.add('enclave.reportdata-nonce', rdBad.length ? 'fail' : 'pass', rdBad[0] ?? `${n} REPORTDATA bound to this challenge and the enclave's userData`, rdBad.slice(1));

  // identity against the allowed list (an enclave must match one entry in every field it names)
  const entries = allowedEnclaveIdentities(policy);
  const DEBUG = ATTR.DEBUG;
  type Step = { check: string; ok: (x: NonNullable<typeof entries>[number], q: EnclaveQuote) => boolean; what: (q: EnclaveQuote) => string };
  const steps: Step[] = [
    { check: 'enclave.mrenclave', ok: (x, q) => !x.mrenclave || x.mrenclave === hex(q.body.mrenclave), what: (q) => `MRENCLAVE ${short(q.body.mrenclave)}` },
    { check: 'enclave.mrsigner', ok: (x, q) => !x.mrsigner || x.mrsigner === hex(q.body.mrsigner), what: (q) => `MRSIGNER ${short(q.body.mrsigner)}` },
    { check: 'enclave.isvprodid', ok: (x, q) => x.isvProdId === undefined || x.isvProdId === q.body.isvProdId, what: (q) => `ISVPRODID ${q.body.isvProdId}` },
    { check: 'enclave.isvsvn', ok: (x, q) => x.minIsvSvn === undefined || q.body.isvSvn >= x.minIsvSvn, what: (q) => `ISVSVN ${q.body.isvSvn}` },
    { check: 'enclave.attributes', ok: (x, q) => (q.body.attributes & DEBUG) === 0n || x.allowDebug === true, what: (q) => `ATTRIBUTES 0x${q.body.attributes.toString(16)}${q.body.attributes & DEBUG ? ' (DEBUG: the host can read its memory through the debug interface)' : ''}` },
  ];
  const results = new Map<string, { bad: string[]; notJudged: string[] }>(steps.map((s) => [s.check, { bad: [], notJudged: [] }]));
  quotes.forEach((q, i) => {
    const e = input.enclaves[i]!;
    if (!q) {
      for (const s of steps) results.get(s.check)!.notJudged.push(`${who(e, i)}: quote not parsed`);
      return;
    }
    let cand = entries ?? [{}];
    let failedAt: string | undefined;
    for (const s of steps) {
      if (failedAt) {
        results.get(s.check)!.notJudged.push(`${who(e, i)}: already refused by ${failedAt}`);
        continue;
      }
      const next = cand.filter((x) => s.ok(x, q));
      if (!next.length) {
        failedAt = s.check;
        results.get(s.check)!.bad.push(`${who(e, i)}: ${s.what(q)} ${s.check === 'enclave.attributes' ? 'not allowed (no matching policy entry sets allowDebug)' : `not allowed by the policy's enclave identities`}`);
      }
      cand = next;
    }
  });
  for (const s of steps) {
    const r = results.get(s.check)!;
    const judgedByList = s.check !== 'enclave.attributes';
    if (r.bad.length) c.add(s.check, 'fail', r.bad[0]!, r.bad.slice(1));
    else if (judgedByList && !entries) c.add(s.check, 'skip', 'the policy names no allowed enclave identities (enclaves.allowed): not judged');
    else if (r.notJudged.length === n) c.add(s.check, 'skip', `not judged: ${r.notJudged[0]}`, r.notJudged.slice(1));
    else c.add(s.check, 'pass', `${n - r.notJudged.length} enclave(s): ${s.check.slice('enclave.'.length)} allowed by the policy`, r.notJudged);
  }

  // SEV/CSV launch measurements (backends that encrypt the enclave VM's memory)
  const launched = input.enclaves.filter((e) => /^(sev|sev-es|sev-snp|csv)$/.test(e.backend));
  if (launched.length) {
    const allowed = encPol.allowedLaunchMeasurements;
    const owner = encPol.launch && opts.policy.launchTik ? { ...encPol.launch, tik: opts.policy.launchTik } : undefined;
    const lbad: string[] = [];
    for (const e of launched) {
      const w = `enclave ${e.id ?? input.enclaves.indexOf(e)} (${e.backend})`;
      if (!e.launchMeasurement) lbad.push(`${w}: no launch measurement`);
      else if (owner) {
        const r = recomputeLaunch(e, owner);
        if (!r.ok) lbad.push(`${w}: ${r.reason}`);
      } else if (!allowed) continue;
      else if (!allowed.includes(hex(e.launchMeasurement))) lbad.push(`${w}: launch measurement ${short(e.launchMeasurement)} not among ${allowed.length} expected`);
    }
    const judged = !!(allowed || owner);
    c.add('reference.launch', lbad.length ? 'fail' : judged ? 'pass' : 'skip', lbad[0] ?? (judged ? `${launched.length} SEV/CSV launch measurement(s) as expected` : 'policy lists no launch measurements'), lbad.slice(1));
  }
}

/**
 * Guest-owner check: LAUNCH_MEASURE recomputed with the TIK from the reference launch digests and
 * the firmware inputs the evidence reports (api version, build, policy, MNONCE).
 */
function recomputeLaunch(e: EnclaveInput, owner: { tik: Buffer; allowedLaunchDigests: string[]; allowedPolicies?: number[] }): { ok: boolean; reason: string } {
  const l = e.launch ?? {};
  const num = (k: string): number | undefined => (typeof l[k] === 'number' ? (l[k] as number) : undefined);
  const apiMajor = num('apiMajor');
  const apiMinor = num('apiMinor');
  const build = num('build');
  const pol = num('policy');
  const mnonce = typeof l.mnonce === 'string' && /^[0-9a-f]{32}$/.test(l.mnonce) ? Buffer.from(l.mnonce, 'hex') : undefined;
  if (apiMajor === undefined || apiMinor === undefined || build === undefined || pol === undefined || !mnonce) return { ok: false, reason: 'launch inputs (apiMajor, apiMinor, build, policy, mnonce) missing' };
  if (owner.allowedPolicies && !owner.allowedPolicies.includes(pol)) return { ok: false, reason: `guest policy 0x${pol.toString(16)} not allowed` };
  const suite = e.backend === 'csv' ? CSV_SUITE : SEV_SUITE;
  for (const ld of owner.allowedLaunchDigests) {
    const m = launchMeasurement(suite, { apiMajor, apiMinor, build, policy: pol, launchDigest: Buffer.from(ld, 'hex'), mnonce, tik: owner.tik });
    if (e.launchMeasurement && m.length === e.launchMeasurement.length && timingSafeEqual(m, e.launchMeasurement)) return { ok: true, reason: `matches reference launch digest ${ld.slice(0, 16)}…` };
  }
  return { ok: false, reason: `launch measurement ${hex(e.launchMeasurement ?? Buffer.alloc(0)).slice(0, 16)}… matches none of ${owner.allowedLaunchDigests.length} reference launch digest(s)` };
}

/**
 * Checks an EK certificate chain [leaf, ...intermediates] up to one of the trusted CAs: RFC 5280
 * path validation, the TCG EK profile, CRLs when given (src/verifier/ek-cert.ts). `root` is the
 * subject of the trust anchor that validated it.
 */
export function verifyCertChain(chainPem: string[], trustedPem: string[], at = new Date(), crls?: (string | Buffer)[]): { ok: boolean; reason: string; root?: string; anchor?: { subject: string; sha256: string } } {
  return validateEkChain(chainPem, trustedPem, { at, ...(crls?.length ? { crls } : {}) });
}

export { AttestError };
