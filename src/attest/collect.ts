/**
 * Attester side: one evidence bundle per challenge. PCR values and the quote are taken so that
 * an extension in between is caught (keylime#585, tpm2-tools#2376): read the PCRs, quote, and
 * check the quote's pcrDigest against the digest of the values read; on a difference read and
 * quote again, a bounded number of times.
 */
import { createHash } from 'node:crypto';
import { hashAlgById, hashAlgByName } from '../tpm/alg.js';
import { AttestError } from './errors.js';
import { buildEvidence, qualificationFor, type BundleClaims, type Evidence } from './evidence.js';
import type { BankName } from './policy.js';
import { parseQuoteAttest, parseSignature } from './tpm-structures.js';

/** What collectEvidence needs from a TPM (our TpmClient or tpm2-tools behind an adapter). */
export interface AttesterTpm {
  /** Current values of the given PCRs of one bank. */
  readPcrs(bank: BankName, pcrs: number[]): Promise<Map<number, Buffer>>;
  /** TPM2_Quote over one bank's PCRs with the AK; returns TPMS_ATTEST and TPMT_SIGNATURE bytes. */
  quote(bank: BankName, pcrs: number[], qualifyingData: Buffer): Promise<{ attest: Buffer; signature: Buffer }>;
}

export interface CollectOptions {
  nonce: Buffer;
  ak: { tpmtPublic: Buffer; pem: string; name?: Buffer };
  /** bank -> PCRs to quote (one quote per bank). */
  pcrSelection: Partial<Record<BankName, number[]>>;
  claims: Omit<BundleClaims, 'nonce'>;
  logs?: Partial<Record<'firmware' | 'runtime' | 'drtm', Buffer>>;
  ekCertificates?: string[];
  enrollment?: Record<string, unknown>;
  /** Attempts per bank when PCRs move between read and quote (default 5). */
  maxAttempts?: number;
}

function digestOf(values: Map<number, Buffer>, pcrs: number[], hashName: string): Buffer {
  const h = createHash(hashAlgByName(hashName)?.nodeName ?? 'sha256');
  for (const i of [...pcrs].sort((a, b) => a - b)) h.update(values.get(i)!);
  return h.digest();
}

export interface BankQuote {
  bank: BankName;
  attest: Buffer;
  signature: Buffer;
  values: Map<number, Buffer>;
}

/**
 * One quote per bank over `qualifyingData`, each checked against PCR values read around it
 * (re-read and re-quoted when a PCR moved in between, `maxAttempts` times).
 */
export async function quoteBanks(tpm: AttesterTpm, pcrSelection: Partial<Record<BankName, number[]>>, qd: Buffer, maxAttempts = 5): Promise<BankQuote[]> {
  const quotes: BankQuote[] = [];
  for (const [bankName, pcrsRaw] of Object.entries(pcrSelection)) {
    const bank = bankName as BankName;
    const pcrs = [...new Set(pcrsRaw ?? [])].sort((a, b) => a - b);
    if (!pcrs.length) continue;
    let moved: number[] = [];
    let done = false;
    for (let attempt = 1; attempt <= maxAttempts && !done; attempt++) {
      const before = await tpm.readPcrs(bank, pcrs);
      const q = await tpm.quote(bank, pcrs, qd);
      const parsed = parseQuoteAttest(q.attest);
      const sel = parsed.selection.map((s) => ({ bank: hashAlgById(s.hashAlg)?.name, pcrs: s.pcrs }));
      if (sel.length !== 1 || sel[0]!.bank !== bank || sel[0]!.pcrs.join(',') !== pcrs.join(',')) throw new AttestError(`quote selection ${JSON.stringify(sel)} is not the requested ${bank}:${pcrs.join(',')}`, 7);
      if (!parsed.extraData.equals(qd)) throw new AttestError('quote extraData is not the requested qualifying data', 7);
      const sigHash = hashAlgById(parseSignature(q.signature).hashAlg)?.name ?? 'sha256';
      if (digestOf(before, pcrs, sigHash).equals(parsed.pcrDigest)) {
        quotes.push({ bank, attest: q.attest, signature: q.signature, values: before });
        done = true;
      } else {
        const after = await tpm.readPcrs(bank, pcrs);
        moved = pcrs.filter((i) => !after.get(i)!.equals(before.get(i)!));
      }
    }
    if (!done) throw new AttestError(`${bank} PCR(s) ${moved.join(',') || '?'} kept changing between PCR read and quote (${maxAttempts} attempts)`, 7);
  }
  return quotes;
}

export async function collectEvidence(tpm: AttesterTpm, opts: CollectOptions): Promise<Evidence> {
  const claims: BundleClaims = { nonce: opts.nonce, ...opts.claims };
  const qd = qualificationFor(claims);
  const quotes = await quoteBanks(tpm, opts.pcrSelection, qd, opts.maxAttempts ?? 5);
  if (!quotes.length) throw new AttestError('empty PCR selection: nothing to quote', 2);
  return buildEvidence(claims, {
    quotes,
    ak: opts.ak,
    ...(opts.ekCertificates ? { ekCertificates: opts.ekCertificates } : {}),
    ...(opts.enrollment ? { enrollment: opts.enrollment } : {}),
    ...(opts.logs ? { eventLogs: opts.logs } : {}),
  });
}
