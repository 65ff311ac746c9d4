import { createHash, timingSafeEqual, X509Certificate } from 'node:crypto';
import { CSV_SUITE, SEV_SUITE, launchMeasurement } from '../enclave/backends/sev-firmware.js';
import { hashAlgById, hashAlgByName } from '../tpm/alg.js';
import { CLAIMS_SCHEME, qualifyingData, publicKeyHash, type ClaimsInput } from './binding.js';
import { AttestError } from './errors.js';
import type { LoadedPolicy, BankName } from './policy.js';
import { requirementOf } from './policy.js';
import { buildResult, type AttestationResult, type CheckResult, type CheckStatus } from './result.js';
import { akKeyFromInput, parseQuoteAttest, verifyQuoteSignature, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE, type ParsedQuote } from './tpm-structures.js';
import { checkEventData, replayEventLogs, type LogKind } from './eventlog-check.js';
import type { EnrollmentRecord } from './enroll.js';
import { verifyEnclaveReport } from './enclave-report.js';

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
  report: Buffer;
  reportSignature?: Buffer;
  mrenclave?: string;
  mrsigner?: string;
  launchMeasurement?: Buffer;
  /** Firmware launch inputs (apiMajor, apiMinor, build, policy, mnonce hex) for recomputing LAUNCH_MEASURE. */
  launch?: Record<string, string | number>;
  keySlot?: number;
}

/** What the verifier checks, whatever format it arrived in. */
export interface VerifyInput {
  source: 'bundle' | 'tpm2-tools';
  /** claims-v1: extraData = H(nonce ‖ claimsDigest); raw: extraData = nonce (tpm2-tools' own quotes). */
  binding: 'claims-v1' | 'raw';
  platformKind?: 'real' | 'emulated';
  hypervisorKeyHash?: Buffer;
  hypervisorReportKey?: string;
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
  /** Previous clock record for this AK (by SPKI hash), and where to store the new one. */
  previousClock?: (akSpkiHash: string) => ClockRecord | undefined;
  recordClock?: (akSpkiHash: string, rec: ClockRecord) => void;
  /** Extra reasons a check failed before verification (e.g. the schema check of a bundle). */
  preChecks?: CheckResult[];
  keyId?: string;
}

class Checks {
  readonly list: CheckResult[] = [];
  constructor(private readonly loaded: LoadedPolicy) {}
  enabled(name: string): boolean {
    return requirementOf(this.loaded.policy, name) !== 'off';
  }
  add(name: string, status: CheckStatus, reason: string, details?: string[]): void {
    const requirement = requirementOf(this.loaded.policy, name);
    if (requirement === 'off') return;
    this.list.push({ name, status, requirement, reason, ...(details && details.length ? { details } : {}) });
  }
  failed(name: string): boolean {
    return this.list.some((c) => c.name === name && c.status === 'fail');
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Runs every check; never throws for bad evidence (bad evidence is a failed check). */
export function verifyEvidence(input: VerifyInput, opts: VerifyOptions): AttestationResult {
  const { policy } = opts.policy;
  const c = new Checks(opts.policy);
  for (const p of opts.preChecks ?? []) c.add(p.name, p.status, p.reason, p.details);

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
  if (input.binding === 'claims-v1') {
    claims = {
      platformKind: input.platformKind ?? 'emulated',
      ...(input.hypervisorKeyHash ? { hypervisorKeyHash: input.hypervisorKeyHash } : {}),
      enclaves: input.enclaves.map((e) => ({ backend: e.backend, report: e.report, ...(e.launchMeasurement ? { launchMeasurement: e.launchMeasurement } : {}), ...(e.keySlot !== undefined ? { keySlot: e.keySlot } : {}) })),
    };
    expectedExtra = qualifyingData(opts.expectedNonce, claims);
  } else expectedExtra = opts.expectedNonce;
  const nonceBad: string[] = [];
  parsed.forEach((p, i) => {
    if (p && !p.extraData.equals(expectedExtra))
      nonceBad.push(`quote ${i}: extraData ${hex(p.extraData).slice(0, 16)}… is not ${input.binding === 'claims-v1' ? 'SHA-256(challenge ‖ claimsDigest)' : 'the challenge'} ${hex(expectedExtra).slice(0, 16)}… (wrong or reused nonce, or altered claims)`);
  });
  if (parsed.some((p) => !p)) nonceBad.push('a quote could not be parsed');
  c.add('nonce', nonceBad.length ? 'fail' : 'pass', nonceBad[0] ?? (input.binding === 'claims-v1' ? `extraData = H(challenge ‖ claims) (${CLAIMS_SCHEME})` : 'extraData equals the challenge'), nonceBad.slice(1));

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
    if (!d.equals(p.pcrDigest)) digestBad.push(`quote ${i}: pcrDigest ${hex(p.pcrDigest).slice(0, 16)}… != ${sigHash}(supplied PCR values) ${hex(d).slice(0, 16)}…`);
  });
  c.add('pcr.digest', digestBad.length || parsed.some((x) => !x) ? 'fail' : 'pass', digestBad[0] ?? (parsed.some((x) => !x) ? 'quote not parsed' : `supplied values match the quoted digest (${[...quoted].map(([b, m]) => `${b}:${[...m.keys()].join(',')}`).join(' ')})`), digestBad.slice(1));
  const pcrsTrusted = quotesAuthentic && !digestBad.length;

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
  if (policy.drtm?.required) for (const i of [17, 18]) if (![...quoted.values()].some((m) => m.has(i))) selBad.push(`PCR ${i} required (drtm.required) but not quoted`);
  c.add('pcr.selection', selBad.length ? 'fail' : 'pass', selBad[0] ?? (policy.requiredPcrs ? 'every PCR the policy requires is quoted' : 'policy requires no particular PCRs'), selBad.slice(1));

  // --- event logs ---
  const logKinds: LogKind[] = ['firmware', 'runtime', 'drtm'];
  const replay = replayEventLogs(input.eventLogs, quoted);
  for (const k of logKinds) {
    const r = replay.perLog[k];
    const name = `eventlog.${k}`;
    if (!input.eventLogs[k]) {
      c.add(name, 'skip', k === 'drtm' && policy.drtm?.required ? 'DRTM required but no DRTM log supplied' : 'no log supplied');
      continue;
    }
    if (!r) continue;
    c.add(name, r.ok ? 'pass' : 'fail', r.reason, r.details);
  }
  const replayed = replay.events;
  const data = checkEventData(input.eventLogs);
  c.add('eventlog.event-data', data.status, data.reason, data.details);

  // --- reference values ---
  const ref = opts.policy.reference;
  if (!ref) {
    c.add('reference.pcrs', 'skip', 'no reference values configured in the policy');
  } else {
    const bad: string[] = [];
    let n = 0;
    for (const [bank, byIdx] of Object.entries(ref.pcrs)) {
      const have = quoted.get(bank as BankName);
      for (const [idxS, allowed] of Object.entries(byIdx)) {
        const idx = Number(idxS);
        if (ref.hypervisorPcr === idx || (idx === 17 || idx === 18)) continue; // judged by reference.hypervisor / reference.drtm
        const v = have?.get(idx);
        if (!v) continue;
        n++;
        if (!allowed.includes(hex(v))) bad.push(`${bank} PCR ${idx} = ${hex(v).slice(0, 16)}… not among ${allowed.length} reference value(s) from ${ref.source}`);
      }
    }
    c.add('reference.pcrs', bad.length ? 'fail' : n ? 'pass' : 'skip', bad[0] ?? (n ? `${n} quoted PCR(s) match reference values` : 'no quoted PCR has a reference value'), bad.slice(1));
  }

  // hypervisor measurement in its PCR
  const hvPcr = policy.hypervisor?.pcr ?? ref?.hypervisorPcr;
  if (hvPcr === undefined) c.add('reference.hypervisor', 'skip', 'no hypervisor PCR configured');
  else {
    const bad: string[] = [];
    let matched = 0;
    for (const [bank, m] of quoted) {
      const v = m.get(hvPcr);
      if (!v) continue;
      const allowedPcr = ref?.pcrs[bank]?.[hvPcr];
      const allowedEv = ref?.hypervisorDigests[bank];
      if (allowedPcr) {
        if (allowedPcr.includes(hex(v))) matched++;
        else bad.push(`${bank} PCR ${hvPcr} = ${hex(v).slice(0, 16)}… is not the reference value for the hypervisor image`);
      } else if (allowedEv) {
        const evs = replayed.filter((e) => e.pcr === hvPcr && e.bank === bank);
        if (!evs.length) bad.push(`no event log entry explains ${bank} PCR ${hvPcr}`);
        // The PCR may also hold header/signer events (pcr-policy); the image event must be one of the references.
        else if (!evs.some((e) => allowedEv.includes(e.digest))) bad.push(`${bank} PCR ${hvPcr}: none of its ${evs.length} event(s) is a reference hypervisor measurement`);
        else matched++;
      }
    }
    if (!matched && !bad.length) c.add('reference.hypervisor', policy.hypervisor?.pcr !== undefined ? 'fail' : 'skip', `PCR ${hvPcr} not quoted or no reference value for it`);
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
        if (!allowed.includes(hex(v))) bad.push(`${bank} PCR ${idx} = ${hex(v).slice(0, 16)}… not the reference DRTM value`);
      }
    }
    if (policy.drtm?.required && !n && !bad.length) bad.push('PCR17/18 not quoted or no reference values for them');
    c.add('reference.drtm', bad.length ? 'fail' : n ? 'pass' : 'skip', bad[0] ?? (n ? `PCR17/18 match reference values` : 'no DRTM reference values'), bad.slice(1));
  }

  // --- enclaves ---
  const encPol = policy.enclaves ?? {};
  if (input.enclaves.length === 0) {
    const need = encPol.minCount ?? 0;
    c.add('reference.enclaves', need > 0 ? 'fail' : 'skip', need > 0 ? `policy needs ${need} enclave(s), evidence has none` : 'no enclaves in the evidence');
  } else {
    // Report authenticity: signed by the hypervisor key whose hash the quote binds.
    const repBad: string[] = [];
    if (input.binding !== 'claims-v1' || !input.hypervisorKeyHash) repBad.push('enclave reports present but no hypervisor key hash is bound into the quote');
    else if (!input.hypervisorReportKey) repBad.push('no hypervisor report key supplied');
    else if (!publicKeyHash(input.hypervisorReportKey).equals(input.hypervisorKeyHash)) repBad.push('hypervisor report key does not match the key hash bound into the quote');
    else if (policy.hypervisor?.allowedReportKeys?.length && !policy.hypervisor.allowedReportKeys.includes(hex(input.hypervisorKeyHash))) repBad.push(`hypervisor report key ${hex(input.hypervisorKeyHash).slice(0, 16)}… not allowed by policy`);
    const identities: { mrenclave?: string; mrsigner?: string }[] = [];
    input.enclaves.forEach((e, i) => {
      const r = verifyEnclaveReport(e, input.hypervisorReportKey);
      if (!r.ok) repBad.push(`enclave ${e.id ?? i}: ${r.reason}`);
      identities.push(r.identity);
    });
    c.add('enclave.reports', repBad.length ? 'fail' : 'pass', repBad[0] ?? `${input.enclaves.length} report(s) signed by the bound hypervisor key`, repBad.slice(1));

    const bad: string[] = [];
    identities.forEach((id, i) => {
      const e = input.enclaves[i]!;
      if (encPol.allowedMrenclave && !(id.mrenclave && encPol.allowedMrenclave.includes(id.mrenclave))) bad.push(`enclave ${e.id ?? i}: MRENCLAVE ${id.mrenclave?.slice(0, 16) ?? '(none)'}… not in the allow-list`);
      if (encPol.allowedMrsigner && !(id.mrsigner && encPol.allowedMrsigner.includes(id.mrsigner))) bad.push(`enclave ${e.id ?? i}: MRSIGNER ${id.mrsigner?.slice(0, 16) ?? '(none)'}… not in the allow-list`);
    });
    if (encPol.minCount && input.enclaves.length < encPol.minCount) bad.push(`policy needs ${encPol.minCount} enclave(s), evidence has ${input.enclaves.length}`);
    const judged = !!(encPol.allowedMrenclave || encPol.allowedMrsigner);
    c.add('reference.enclaves', bad.length ? 'fail' : judged ? 'pass' : 'skip', bad[0] ?? (judged ? `${input.enclaves.length} enclave identity(ies) allowed` : 'policy has no enclave allow-list'), bad.slice(1));

    const launched = input.enclaves.filter((e) => /^(sev|sev-es|sev-snp|csv)$/.test(e.backend));
    if (launched.length) {
      const allowed = encPol.allowedLaunchMeasurements;
      const owner = encPol.launch && opts.policy.launchTik ? { ...encPol.launch, tik: opts.policy.launchTik } : undefined;
      const lbad: string[] = [];
      for (const e of launched) {
        const who = `enclave ${e.id ?? input.enclaves.indexOf(e)} (${e.backend})`;
        if (!e.launchMeasurement) lbad.push(`${who}: no launch measurement`);
        else if (owner) {
          const r = recomputeLaunch(e, owner);
          if (!r.ok) lbad.push(`${who}: ${r.reason}`);
        } else if (!allowed) continue;
        else if (!allowed.includes(hex(e.launchMeasurement))) lbad.push(`${who}: launch measurement ${hex(e.launchMeasurement).slice(0, 16)}… not among ${allowed.length} expected`);
      }
      const judged = !!(allowed || owner);
      c.add('reference.launch', lbad.length ? 'fail' : judged ? 'pass' : 'skip', lbad[0] ?? (judged ? `${launched.length} SEV/CSV launch measurement(s) as expected` : 'policy lists no launch measurements'), lbad.slice(1));
    }
  }

  // --- AK provenance ---
  const enrollment = akKey ? opts.findEnrollment?.(akNameHex, akSpkiHash) : undefined;
  if (policy.akProvenance?.acceptEnrolled === false) c.add('ak.provenance', 'skip', 'policy does not accept enrolled AKs and no other provenance is implemented');
  else if (enrollment) c.add('ak.provenance', 'pass', `AK enrolled by credential activation at ${enrollment.enrolledAt} (EK cert ${enrollment.ekCertSha256.slice(0, 16)}…)`);
  else {
    const why = input.ekCertificates?.length ? 'AK is not enrolled (an EK certificate alone does not bind the AK to that TPM)' : 'AK is not enrolled with this verifier';
    c.add('ak.provenance', 'fail', akKey ? why : 'no usable AK');
  }

  // --- clock / reboots ---
  const p0 = parsed.find((p): p is ParsedQuote => !!p);
  if (!p0 || !quotesAuthentic) c.add('clock', 'skip', 'no authentic quote');
  else {
    const prev = opts.previousClock?.(akSpkiHash);
    const now: ClockRecord = { clock: p0.clock.toString(), resetCount: p0.resetCount, restartCount: p0.restartCount, at: new Date().toISOString() };
    const bad: string[] = [];
    if (prev) {
      if (p0.resetCount !== prev.resetCount) bad.push(`resetCount ${prev.resetCount} -> ${p0.resetCount}: the TPM was reset (reboot) since the previous quote`);
      else if (p0.restartCount !== prev.restartCount) bad.push(`restartCount ${prev.restartCount} -> ${p0.restartCount}: TPM restart/resume since the previous quote`);
      else if (BigInt(prev.clock) > p0.clock) bad.push(`clock went backwards (${prev.clock} -> ${p0.clock})`);
    }
    if (!p0.safe) bad.push('TPM clock not safe (clockInfo.safe = 0: no orderly shutdown since the clock was last saved)');
    c.add('clock', bad.length ? 'fail' : prev ? 'pass' : 'skip', bad[0] ?? (prev ? `same boot as previous quote (reset ${p0.resetCount}, restart ${p0.restartCount})` : 'first quote from this AK: nothing to compare'), bad.slice(1));
    if (nonceBad.length === 0 && !digestBad.length) opts.recordClock?.(akSpkiHash, now);
  }

  // --- platform kind ---
  if (input.binding !== 'claims-v1' || !input.platformKind) {
    c.add('platform.kind', policy.platform?.requireReal ? 'fail' : 'skip', policy.platform?.requireReal ? 'policy requires real hardware but the platform kind is not bound into the quote' : 'platform kind not bound into the quote');
  } else if (nonceBad.length) {
    c.add('platform.kind', 'fail', `claim "${input.platformKind}" is not covered by the quote (nonce check failed)`);
  } else if (policy.platform?.requireReal && input.platformKind !== 'real') {
    c.add('platform.kind', 'fail', `evidence is from an ${input.platformKind} platform; policy requires real hardware`);
  } else c.add('platform.kind', 'pass', `${input.platformKind} (signed over by the quote)`);

  // A check that passed on values nobody vouches for is not a pass: PCR-based checks need an
  // authentic quote and matching PCR values; claim-based checks need the claims bound by the nonce.
  const claimsBound = quotesAuthentic && !nonceBad.length;
  for (const ch of c.list) {
    if (ch.status !== 'pass') continue;
    const pcrBased = ch.name.startsWith('eventlog.') || ch.name === 'reference.pcrs' || ch.name === 'reference.hypervisor' || ch.name === 'reference.drtm';
    const claimBased = ch.name === 'enclave.reports' || ch.name === 'reference.enclaves' || ch.name === 'reference.launch';
    if (pcrBased && !pcrsTrusted) Object.assign(ch, { status: 'skip', reason: `not judged: the PCR values are not authenticated (${ch.reason})` });
    if (claimBased && !claimsBound) Object.assign(ch, { status: 'skip', reason: `not judged: these claims are not bound by an authentic quote (${ch.reason})` });
  }
  return buildResult(c.list, {
    nonce: hex(opts.expectedNonce),
    ...(akNameHex ? { akName: akNameHex } : {}),
    enrolled: !!enrollment,
    ...(input.binding === 'claims-v1' && input.platformKind && !nonceBad.length ? { platformKind: input.platformKind } : {}),
    ...(opts.policy.policy.resultTtlSeconds ? { ttlSeconds: opts.policy.policy.resultTtlSeconds } : {}),
    ...(opts.keyId ? { keyId: opts.keyId } : {}),
  });
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

/** Checks a certificate chain [leaf, ...intermediates] up to one of the trusted CAs (signatures, validity). */
export function verifyCertChain(chainPem: string[], trustedPem: string[], at = new Date()): { ok: boolean; reason: string } {
  if (!chainPem.length) return { ok: false, reason: 'no certificate' };
  let certs: X509Certificate[];
  let roots: X509Certificate[];
  try {
    certs = chainPem.map((p) => new X509Certificate(p));
    roots = trustedPem.map((p) => new X509Certificate(p));
  } catch (e) {
    return { ok: false, reason: `certificate does not parse: ${(e as Error).message}` };
  }
  const valid = (c: X509Certificate): boolean => new Date(c.validFrom) <= at && at <= new Date(c.validTo);
  const pool = [...certs.slice(1), ...roots];
  let cur = certs[0]!;
  for (let depth = 0; depth < 8; depth++) {
    if (!valid(cur)) return { ok: false, reason: `${cur.subject.replace(/\n/g, ', ')}: not valid at ${at.toISOString()} (${cur.validFrom} – ${cur.validTo})` };
    const root = roots.find((r) => cur.checkIssued(r) && cur.verify(r.publicKey));
    if (root) {
      if (!valid(root)) return { ok: false, reason: `trusted CA ${root.subject.replace(/\n/g, ', ')} expired` };
      return { ok: true, reason: `chains to ${root.subject.replace(/\n/g, ', ')}` };
    }
    const issuer = pool.find((p) => p !== cur && cur.checkIssued(p) && cur.verify(p.publicKey));
    if (!issuer) return { ok: false, reason: `${cur.subject.replace(/\n/g, ', ')}: no trusted issuer verifies its signature` };
    if (!issuer.ca) return { ok: false, reason: `${issuer.subject.replace(/\n/g, ', ')}: issuer is not a CA` };
    cur = issuer;
  }
  return { ok: false, reason: 'chain too long' };
}

export { AttestError };
