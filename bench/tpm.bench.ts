/**
 * TPM client: read all PCRs of two banks and produce one quote, our client in one process
 * versus the same work with tpm2-tools commands (tpm2_pcrread + tpm2_quote + flushes), both
 * against the same swtpm.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasCommand, medianMs, speedup, type BenchRow } from './harness.js';
import { startSwtpm, swtpmAvailable } from '../src/platform/emulated/swtpm.js';
import { TPM_ALG, TpmClient, openTransport, verifyQuote } from '../src/tpm/index.js';

const OURS_RUNS = 40;
const TOOLS_RUNS = 10;

export default async function bench(): Promise<BenchRow[]> {
  const why = swtpmAvailable();
  if (why) throw new Error(`tpm bench needs swtpm: ${why}`);
  for (const t of ['tpm2_pcrread', 'tpm2_quote', 'tpm2_createak', 'tpm2_flushcontext']) if (!hasCommand(t)) throw new Error(`tpm bench needs ${t} (apt-get install tpm2-tools)`);
  const tpm = await startSwtpm({ transport: 'tcp', banks: ['sha1', 'sha256'] });
  const dir = mkdtempSync(join(tmpdir(), 'tpm-bench-'));
  try {
    // Ours: one process, one connection, AK made once.
    const c = new TpmClient(openTransport(tpm.tcti));
    const ek = await c.createEk('rsa');
    const { object: ak } = await c.createAk(ek, 'rsa');
    await c.flushContext(ek);
    const all = Array.from({ length: 24 }, (_, i) => i);
    const sel = [{ hash: TPM_ALG.SHA256, pcrs: all }];
    let checked = false;
    const ours = await medianMs(OURS_RUNS, async () => {
      const banks = await c.pcrReadAll([TPM_ALG.SHA1, TPM_ALG.SHA256]);
      const nonce = randomBytes(20);
      const q = await c.quote(ak, sel, nonce);
      if (!checked) {
        verifyQuote({ ak: ak.public!, attest: q.attest, signature: q.signature, nonce, pcrs: banks });
        checked = true;
      }
    });
    await c.flushAll();
    await c.close();

    // Anchor: the same work with tpm2-tools, one process per step, flushing between steps.
    const env = { ...process.env, TPM2TOOLS_TCTI: tpm.tcti };
    const run = (args: string[]): void => {
      const r = spawnSync(args[0]!, args.slice(1), { cwd: dir, env, encoding: 'utf8', timeout: 60_000 });
      if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
    };
    run(['tpm2_createek', '-c', 'ek.ctx', '-G', 'rsa']);
    run(['tpm2_createak', '-C', 'ek.ctx', '-c', 'ak.ctx', '-G', 'rsa', '-g', 'sha256', '-s', 'rsassa']);
    run(['tpm2_flushcontext', '-t']);
    run(['tpm2_flushcontext', '-s']);
    const tools = await medianMs(TOOLS_RUNS, () => {
      run(['tpm2_pcrread', 'sha1:all+sha256:all', '-o', 'pcrs.bin']);
      run(['tpm2_quote', '-c', 'ak.ctx', '-l', 'sha256:all', '-q', randomBytes(20).toString('hex'), '-m', 'q.msg', '-s', 'q.sig']);
      run(['tpm2_flushcontext', '-t']);
      run(['tpm2_flushcontext', '-s']);
    });
    return [
      {
        name: 'read all PCRs of 2 banks + 1 quote (swtpm, tcp)',
        ours: { label: 'TpmClient, one process', value: ours, unit: 'ms' },
        anchor: { label: 'tpm2_pcrread + tpm2_quote + flushes', value: tools, unit: 'ms' },
        ratio: speedup(ours, tools, false),
        higherIsBetter: false,
        note: `median of ${OURS_RUNS} / ${TOOLS_RUNS} iterations; RSA-2048 AK; 48 PCRs read, quote over 24 SHA-256 PCRs`,
      },
    ];
  } finally {
    await tpm.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
