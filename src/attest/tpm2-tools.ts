/**
 * tpm2-tools' serialized PCR files (`tpm2_quote -o`, `tpm2_checkquote -f`, Keylime's PCR blob),
 * by src/tpm's reader/writer, in the verifier's shape (bank name -> PCR -> value) and errors.
 */
import { hashAlgById, hashAlgByName } from '../tpm/alg.js';
import { readPcrsSerialized, writePcrsSerialized } from '../tpm/verify.js';
import { AttestError } from './errors.js';
import type { BankName } from './policy.js';
import type { PcrValues } from './types.js';

export interface SerializedPcrs {
  selection: { bank: BankName; hashAlg: number; pcrs: number[] }[];
  values: PcrValues;
}

export function parsePcrsFile(buf: Buffer, what = 'pcrs file'): SerializedPcrs {
  let parsed: ReturnType<typeof readPcrsSerialized>;
  try {
    parsed = readPcrsSerialized(buf);
  } catch (e) {
    throw new AttestError(`${what}: ${(e as Error).message}`);
  }
  const bankOf = (id: number): BankName => {
    const alg = hashAlgById(id);
    if (!alg) throw new AttestError(`${what}: unknown hash algorithm 0x${id.toString(16)} in the selection`);
    return alg.name as BankName;
  };
  const values: PcrValues = new Map();
  for (const b of parsed.banks) if (b.values.size) values.set(bankOf(b.hash), b.values);
  return { selection: parsed.selection.map((s) => ({ bank: bankOf(s.hash), hashAlg: s.hash, pcrs: s.pcrs })), values };
}

/** Writes PCR values (banks in the given order, PCRs ascending) in tpm2-tools' serialized format. */
export function writePcrsFile(banks: { bank: BankName; values: Map<number, Buffer> }[]): Buffer {
  const sel = banks.map((b) => {
    const alg = hashAlgByName(b.bank);
    if (!alg) throw new AttestError(`pcrs file: unknown bank ${b.bank}`);
    return { hash: alg.id, pcrs: [...b.values.keys()].sort((x, y) => x - y), values: b.values };
  });
  try {
    return writePcrsSerialized(
      sel.map((s) => ({ hash: s.hash, pcrs: s.pcrs })),
      sel.map((s) => ({ hash: s.hash, values: s.values })),
    );
  } catch (e) {
    throw new AttestError(`pcrs file: ${(e as Error).message}`);
  }
}
