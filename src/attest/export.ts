import { join } from 'node:path';
import { writeFileAtomic } from '../fs/atomic.js';
import { qualifyingData } from './binding.js';
import { bundleClaims, type Evidence } from './evidence.js';
import type { BankName } from './policy.js';
import { writePcrsFile } from './tpm2-tools.js';

/** The qualifyingData our quotes carry for this bundle: SHA-256(nonce ‖ claimsDigest), hex. */
export function bundleQualification(ev: Evidence): string {
  return qualifyingData(Buffer.from(ev.nonce, 'hex'), bundleClaims(ev)).toString('hex');
}

function pcrBlob(q: Evidence['quotes'][number]): Buffer {
  const values = new Map<number, Buffer>();
  for (const [k, v] of Object.entries(q.pcrs)) values.set(Number(k), Buffer.from(v, 'hex'));
  return writePcrsFile([{ bank: q.bank as BankName, values }]);
}

export interface Tpm2ToolsExport {
  files: string[];
  /** One `tpm2_checkquote …` command per quote, runnable in `dir`. */
  commands: string[];
  qualification: string;
}

/**
 * Writes each quote as tpm2-tools files: quote-<bank>.msg (TPMS_ATTEST), quote-<bank>.sig
 * (TPMT_SIGNATURE), quote-<bank>.pcrs (serialized PCRs), plus ak.pem and qualification.hex;
 * `tpm2_checkquote -u ak.pem -m quote-sha256.msg -s quote-sha256.sig -f quote-sha256.pcrs
 * -q $(cat qualification.hex) -g <AK hash>` verifies each.
 */
export function exportTpm2Tools(ev: Evidence, dir: string, akHash = 'sha256'): Tpm2ToolsExport {
  const files: string[] = [];
  const commands: string[] = [];
  const put = (name: string, data: string | Buffer): void => {
    const p = join(dir, name);
    writeFileAtomic(p, data);
    files.push(p);
  };
  const qualification = bundleQualification(ev);
  put('ak.pem', ev.ak.pem);
  put('qualification.hex', qualification + '\n');
  for (const q of ev.quotes) {
    const base = `quote-${q.bank}`;
    put(`${base}.msg`, Buffer.from(q.attest, 'base64'));
    put(`${base}.sig`, Buffer.from(q.signature, 'base64'));
    put(`${base}.pcrs`, pcrBlob(q));
    commands.push(`tpm2_checkquote -u ak.pem -m ${base}.msg -s ${base}.sig -f ${base}.pcrs -q ${qualification} -g ${akHash}`);
  }
  return { files, commands, qualification };
}

/** Keylime's quote string per quote: "r" + b64(TPMS_ATTEST) + ":" + b64(TPMT_SIGNATURE) + ":" + b64(pcr blob). */
export function keylimeQuotes(ev: Evidence): { bank: string; quote: string }[] {
  return ev.quotes.map((q) => ({
    bank: q.bank,
    quote: `r${q.attest}:${q.signature}:${pcrBlob(q).toString('base64')}`,
  }));
}
