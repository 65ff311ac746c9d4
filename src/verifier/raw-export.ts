/**
 * Export that other verifiers accept as they are: quotes whose extraData is exactly the
 * requester's nonce (Keylime, Trustee's TPM verifier, `tpm2_checkquote -q <nonce>`), written as
 * tpm2-tools files and Keylime quote strings.
 *
 * What travels beside such a quote is not bound by extraData. With this project's evidence that
 * loses nothing the verifier relies on: the platform kind is derived from the EK certificate, and
 * enclave quotes are authenticated by the hypervisor key measured into the HAK PCR (which these
 * quotes cover when it is selected) and bound to the nonce through their own REPORTDATA. Our own
 * verifier checks these files with `hyperenclave verify --tpm2-quote-* --nonce` (binding "raw").
 */
import { join } from 'node:path';
import type { AttesterTpm, BankQuote } from '../attest/collect.js';
import { quoteBanks } from '../attest/collect.js';
import type { BankName } from '../attest/policy.js';
import { writePcrsFile } from '../attest/tpm2-tools.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { AttestError } from '../attest/errors.js';

export interface RawExport {
  nonce: Buffer;
  quotes: BankQuote[];
  akPem: string;
}

/** Quotes every selected bank with extraData = nonce (1-64 bytes, as the requester gave it). */
export async function collectRawQuotes(tpm: AttesterTpm, opts: { nonce: Buffer; pcrSelection: Partial<Record<BankName, number[]>>; akPem: string; maxAttempts?: number }): Promise<RawExport> {
  // TPM2B_DATA qualifyingData holds at most the size of the largest digest the TPM supports (64 bytes).
  if (!opts.nonce.length || opts.nonce.length > 64) throw new AttestError(`raw-nonce export: the nonce must be 1-64 bytes, got ${opts.nonce.length}`, 2);
  const quotes = await quoteBanks(tpm, opts.pcrSelection, opts.nonce, opts.maxAttempts ?? 5);
  if (!quotes.length) throw new AttestError('empty PCR selection: nothing to quote', 2);
  return { nonce: opts.nonce, quotes, akPem: opts.akPem };
}

/** Keylime's quote string: "r" + b64(TPMS_ATTEST) + ":" + b64(TPMT_SIGNATURE) + ":" + b64(tpm2-tools PCR file). */
export function keylimeQuoteString(q: BankQuote): string {
  return `r${q.attest.toString('base64')}:${q.signature.toString('base64')}:${writePcrsFile([{ bank: q.bank, values: q.values }]).toString('base64')}`;
}

/**
 * Writes quote-<bank>.{msg,sig,pcrs}, ak.pem, nonce.hex and keylime-<bank>.txt in `dir`;
 * returns the files and one `tpm2_checkquote … -q <nonce>` per bank.
 */
export function writeRawExport(dir: string, r: RawExport, akHash = 'sha256'): { files: string[]; commands: string[] } {
  const files: string[] = [];
  const put = (name: string, data: string | Buffer): void => {
    const p = join(dir, name);
    writeFileAtomic(p, data);
    files.push(p);
  };
  const nonceHex = r.nonce.toString('hex');
  put('ak.pem', r.akPem);
  put('nonce.hex', nonceHex + '\n');
  const commands: string[] = [];
  for (const q of r.quotes) {
    const base = `quote-${q.bank}`;
    put(`${base}.msg`, q.attest);
    put(`${base}.sig`, q.signature);
    put(`${base}.pcrs`, writePcrsFile([{ bank: q.bank, values: q.values }]));
    put(`keylime-${q.bank}.txt`, keylimeQuoteString(q) + '\n');
    commands.push(`tpm2_checkquote -u ak.pem -m ${base}.msg -s ${base}.sig -f ${base}.pcrs -q ${nonceHex} -g ${akHash}`);
  }
  return { files, commands };
}
