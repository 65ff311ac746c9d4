/**
 * Raw-nonce export: quotes from a real TPM (swtpm, our TPM client) whose extraData is exactly the
 * requester's nonce, accepted as they are by `tpm2_checkquote -q <nonce>` and by a check written
 * here from Keylime's published quote verification (keylime/tpm/tpm_util.py checkquote: the quote
 * string's three parts, signature hash algorithm, AK signature, TPMS_ATTEST magic and type,
 * extraData == nonce, PCR blob selection == quoted selection, digest of the PCR values ==
 * pcrDigest). Nothing here uses this project's TPM parsers.
 */
import { spawnSync } from 'node:child_process';
import { createHash, createPublicKey, verify as nodeVerify } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { openTpm } from '../tpm/index.js';
import type { TpmClient } from '../tpm/client.js';
import { createStoredAk, loadStoredAk } from '../attest/ak-store.js';
import { clientAttesterTpm } from '../attest/index.js';
import { tpm2ToolsAvailable } from '../attest/tpm2-tools-attester.js';
import { Verifier } from '../attest/verifier.js';
import { collectRawQuotes, keylimeQuoteString, writeRawExport } from './raw-export.js';

const skip = swtpmAvailable() ?? tpm2ToolsAvailable();
if (skip) console.warn(`skipping raw-nonce export: ${skip}`);

/** Keylime's quote checks, step by step, for an ECDSA or RSASSA AK and one bank. */
function keylimeCheckQuote(akPem: string, quote: string, nonce: Buffer, hashAlg: 'sha256'): { ok: true; pcrs: Map<number, string> } | { ok: false; reason: string } {
  if (quote[0] !== 'r') return { ok: false, reason: `invalid quote type ${quote[0]}` };
  const parts = quote.slice(1).split(':');
  if (parts.length < 3) return { ok: false, reason: 'quote is not compound' };
  const [quoteblob, sigblob, pcrblob] = parts.map((p) => Buffer.from(p, 'base64')) as [Buffer, Buffer, Buffer];
  // TPMT_SIGNATURE: sigAlg, hashAlg, then the scheme's signature
  const sigAlg = sigblob.readUInt16BE(0);
  const sigHash = sigblob.readUInt16BE(2);
  if (sigHash !== 0x000b) return { ok: false, reason: `signature hash 0x${sigHash.toString(16)} is not ${hashAlg}` };
  const ak = createPublicKey(akPem);
  let sigOk: boolean;
  if (sigAlg === 0x0018) {
    const rl = sigblob.readUInt16BE(4);
    const r = sigblob.subarray(6, 6 + rl);
    const sl = sigblob.readUInt16BE(6 + rl);
    const s = sigblob.subarray(8 + rl, 8 + rl + sl);
    const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(32 - b.length), b]);
    sigOk = nodeVerify('sha256', quoteblob, { key: ak, dsaEncoding: 'ieee-p1363' }, Buffer.concat([pad(r), pad(s)]));
  } else if (sigAlg === 0x0014) {
    const l = sigblob.readUInt16BE(4);
    sigOk = nodeVerify('sha256', quoteblob, ak, sigblob.subarray(6, 6 + l));
  } else return { ok: false, reason: `unsupported signature scheme 0x${sigAlg.toString(16)}` };
  if (!sigOk) return { ok: false, reason: 'signature does not verify with the AK' };
  // TPMS_ATTEST
  let o = 0;
  if (quoteblob.readUInt32BE(o) !== 0xff544347) return { ok: false, reason: 'magic is not TPM_GENERATED_VALUE' };
  o += 4;
  if (quoteblob.readUInt16BE(o) !== 0x8018) return { ok: false, reason: 'type is not TPM_ST_ATTEST_QUOTE' };
  o += 2;
  o += 2 + quoteblob.readUInt16BE(o); // qualifiedSigner
  const edLen = quoteblob.readUInt16BE(o);
  const extraData = quoteblob.subarray(o + 2, o + 2 + edLen);
  o += 2 + edLen;
  if (!extraData.equals(nonce)) return { ok: false, reason: 'extraData is not the nonce' };
  o += 17 + 8; // clockInfo, firmwareVersion
  const selCount = quoteblob.readUInt32BE(o);
  o += 4;
  const quoted: { hash: number; pcrs: number[] }[] = [];
  for (let i = 0; i < selCount; i++) {
    const hash = quoteblob.readUInt16BE(o);
    const n = quoteblob.readUInt8(o + 2);
    const pcrs: number[] = [];
    for (let p = 0; p < n * 8; p++) if (quoteblob[o + 3 + (p >> 3)]! & (1 << (p & 7))) pcrs.push(p);
    quoted.push({ hash, pcrs });
    o += 3 + n;
  }
  const pcrDigest = quoteblob.subarray(o + 2, o + 2 + quoteblob.readUInt16BE(o));
  // tpm2-tools' serialized PCR blob: TPML_PCR_SELECTION (4 + 16 × 8, little-endian), u32 list count, TPML_DIGEST lists (4 + 8 × 66)
  const blobSel: { hash: number; pcrs: number[] }[] = [];
  for (let i = 0; i < pcrblob.readUInt32LE(0); i++) {
    const b = 4 + i * 8;
    const n = pcrblob.readUInt8(b + 2);
    const pcrs: number[] = [];
    for (let p = 0; p < n * 8; p++) if (pcrblob[b + 3 + (p >> 3)]! & (1 << (p & 7))) pcrs.push(p);
    blobSel.push({ hash: pcrblob.readUInt16LE(b), pcrs });
  }
  if (JSON.stringify(blobSel) !== JSON.stringify(quoted)) return { ok: false, reason: 'PCR blob selection differs from the quote' };
  const values: Buffer[] = [];
  for (let l = 0; l < pcrblob.readUInt32LE(132); l++) {
    const base = 136 + l * 532;
    for (let i = 0; i < pcrblob.readUInt32LE(base); i++) {
      const d = base + 4 + i * 66;
      values.push(pcrblob.subarray(d + 2, d + 2 + pcrblob.readUInt16LE(d)));
    }
  }
  if (!createHash('sha256').update(Buffer.concat(values)).digest().equals(pcrDigest)) return { ok: false, reason: 'PCR values do not match the quoted digest' };
  const pcrs = new Map<number, string>();
  quoted.flatMap((s) => s.pcrs).forEach((p, i) => pcrs.set(p, values[i]!.toString('hex')));
  return { ok: true, pcrs };
}

describe.skipIf(!!skip)('export whose extraData is exactly the requester\'s nonce', () => {
  let dev: SwtpmInstance;
  let tpm: TpmClient;
  let dir: string;
  beforeAll(async () => {
    dev = await startSwtpm();
    tpm = await openTpm(dev.tcti);
    dir = mkdtempSync(join(tmpdir(), 'he-raw-'));
  }, 60_000);
  afterAll(async () => {
    await tpm?.close();
    await dev?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('tpm2_checkquote -q <nonce>, Keylime\'s steps and our verifier (binding raw) accept it; another nonce is refused by each', async () => {
    const stored = await createStoredAk(tpm, join(dir, 'ak'), 'ecc');
    const { ak, release } = await loadStoredAk(tpm, stored);
    // a Keylime verifier's nonce is a 20-character alphanumeric string; extraData = its UTF-8 bytes
    const nonce = Buffer.from('A1b2C3d4E5f6G7h8I9j0', 'utf8');
    try {
      const exp = await collectRawQuotes(clientAttesterTpm(tpm, ak), { nonce, pcrSelection: { sha256: [0, 7, 12] }, akPem: stored.pem });
      const out = writeRawExport(join(dir, 'export'), exp);
      expect(out.commands[0]).toBe(`tpm2_checkquote -u ak.pem -m quote-sha256.msg -s quote-sha256.sig -f quote-sha256.pcrs -q ${nonce.toString('hex')} -g sha256`);
      const cq = (q: string) => spawnSync('tpm2_checkquote', ['-u', 'ak.pem', '-m', 'quote-sha256.msg', '-s', 'quote-sha256.sig', '-f', 'quote-sha256.pcrs', '-q', q, '-g', 'sha256'], { cwd: join(dir, 'export'), encoding: 'utf8' });
      const good = cq(nonce.toString('hex'));
      expect(good.status, good.stderr).toBe(0);
      expect(cq(Buffer.from('someone elses nonce!').toString('hex')).status).not.toBe(0);

      const quoteString = readFileSync(join(dir, 'export', 'keylime-sha256.txt'), 'utf8').trim();
      expect(quoteString).toBe(keylimeQuoteString(exp.quotes[0]!));
      const k = keylimeCheckQuote(stored.pem, quoteString, nonce, 'sha256');
      expect(k.ok, JSON.stringify(k)).toBe(true);
      if (k.ok) expect([...k.pcrs.keys()]).toEqual([0, 7, 12]);
      expect(keylimeCheckQuote(stored.pem, quoteString, Buffer.from('B1b2C3d4E5f6G7h8I9j0'), 'sha256')).toEqual({ ok: false, reason: 'extraData is not the nonce' });

      const v = new Verifier({ stateDir: join(dir, 'verifier') });
      const files = { message: readFileSync(join(dir, 'export', 'quote-sha256.msg')), signature: readFileSync(join(dir, 'export', 'quote-sha256.sig')), pcrs: readFileSync(join(dir, 'export', 'quote-sha256.pcrs')), akPem: stored.pem };
      const r = v.verifyTpm2Tools(files, nonce).result;
      for (const n of ['signature', 'nonce', 'pcr.digest']) expect(r.checks.find((c) => c.name === n)?.status, n).toBe('pass');
      expect(v.verifyTpm2Tools(files, Buffer.from('B1b2C3d4E5f6G7h8I9j0')).result.checks.find((c) => c.name === 'nonce')?.status).toBe('fail');
    } finally {
      await release();
    }
  }, 60_000);
});
