/**
 * Attestation verification: in-process throughput of full bundle verification and of ECDSA
 * P-256 quote signature checks, and a batch of 100 verifications, each against
 * `tpm2_checkquote` (one process per quote) on the same quote from a real TPM (swtpm).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hasCommand, type BenchRow } from './harness.js';
import { startSwtpm, swtpmAvailable } from '../src/platform/emulated/swtpm.js';
import { Tpm2ToolsAttester, tpm2ToolsAvailable } from '../src/attest/tpm2-tools-attester.js';
import { buildEvidence, qualificationFor, type BundleClaims } from '../src/attest/evidence.js';
import { exportTpm2Tools } from '../src/attest/export.js';
import { Verifier } from '../src/attest/verifier.js';
import { akKeyFromInput, verifyQuoteSignature } from '../src/attest/tpm-structures.js';
import { writeEventLog } from '../src/eventlog/index.js';

function ratePerSec(iterations: number, fn: () => void): number {
  fn();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn();
  return iterations / (Number(process.hrtime.bigint() - t0) / 1e9);
}

export default async function bench(): Promise<BenchRow[]> {
  const why = swtpmAvailable() ?? tpm2ToolsAvailable() ?? (hasCommand('tpm2_checkquote') ? undefined : 'tpm2_checkquote missing');
  if (why) throw new Error(`attest bench needs swtpm and tpm2-tools: ${why}`);
  const tpm = await startSwtpm({ transport: 'tcp' });
  const att = new Tpm2ToolsAttester(tpm.tcti);
  const dir = mkdtempSync(join(tmpdir(), 'attest-bench-'));
  try {
    att.createEk('rsa');
    const ak = att.createAk('ecc256');
    // a small runtime log (3 events into PCR 12), replayed on every verification
    const digests = ['ab', 'cd', 'ef'].map((b) => b.repeat(32));
    for (const d of digests) att.extend(12, 'sha256', d);
    const runtime = writeEventLog({ specId: { banks: ['sha256'] }, events: digests.map((d, i) => ({ pcr: 12, type: 'EV_IPL', data: Buffer.from(`event ${i}`), digests: { sha256: Buffer.from(d, 'hex') } })) });
    const claims: BundleClaims = { nonce: randomBytes(32), platformKind: 'emulated' };
    const q = att.quote('sha256', [0, 1, 2, 3, 4, 5, 6, 7, 12], qualificationFor(claims).toString('hex'));
    const ev = buildEvidence(claims, { quotes: [{ bank: 'sha256', attest: q.attest, signature: q.signature, values: q.values }], ak, eventLogs: { runtime } });
    const nonce = Buffer.from(ev.nonce, 'hex');
    const verifier = new Verifier({ stateDir: join(dir, 'state'), policy: { schema: 'hyperenclave/verifier-policy', version: 1, requiredPcrs: { sha256: [0, 7, 12] }, checks: { 'ak.provenance': 'optional' } } });
    const text = JSON.stringify(ev);
    const first = verifier.verifyBundle(JSON.parse(text), nonce).result;
    if (first.checks.some((c) => c.status === 'fail' && c.name !== 'ak.provenance')) throw new Error(`bench bundle does not verify: ${JSON.stringify(first.checks)}`);

    // anchor: tpm2_checkquote, one process per quote, on the exported files
    const exp = exportTpm2Tools(ev, dir);
    const cmd = exp.commands[0]!;
    const runCheckquote = (): void => {
      const r = spawnSync('sh', ['-c', `${cmd} >/dev/null`], { cwd: dir });
      if (r.status !== 0) throw new Error(`tpm2_checkquote failed: ${r.stderr}`);
    };
    runCheckquote();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 100; i++) runCheckquote();
    const checkquote100Ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const checkquoteRate = 100 / (checkquote100Ms / 1000);

    // ours: full bundle verification from JSON text (schema, decode, every check, JWT signing)
    const bundleRate = ratePerSec(2000, () => verifier.verifyBundle(JSON.parse(text), nonce));
    const t1 = process.hrtime.bigint();
    for (let i = 0; i < 100; i++) verifier.verifyBundle(JSON.parse(text), nonce);
    const ours100Ms = Number(process.hrtime.bigint() - t1) / 1e6;

    // ours: the quote signature alone (parse TPMT_SIGNATURE, ECDSA P-256 verify over TPMS_ATTEST)
    const akKey = akKeyFromInput({ tpmtPublic: ak.tpmtPublic });
    const sigRate = ratePerSec(20000, () => {
      if (!verifyQuoteSignature(q.attest, q.signature, akKey).ok) throw new Error('signature');
    });

    return [
      {
        name: 'bundle verification throughput (ECDSA P-256 AK, 9 PCRs, 3-event runtime log replayed, all checks + signed JWT result)',
        ours: { label: 'verifyBundle in one process', value: bundleRate, unit: 'bundles/s', scope: 'in-process' },
        anchor: { label: 'tpm2_checkquote (process per quote)', value: checkquoteRate, unit: 'quotes/s', scope: 'process' },
        ratio: bundleRate / checkquoteRate,
        higherIsBetter: true,
      },
      {
        name: 'ECDSA P-256 quote signature verification',
        ours: { label: 'verifyQuoteSignature', value: sigRate, unit: 'verifications/s', scope: 'in-process' },
        anchor: { label: 'tpm2_checkquote', value: checkquoteRate, unit: 'quotes/s', scope: 'process' },
        ratio: sigRate / checkquoteRate,
        higherIsBetter: true,
        target: '>= 2,000/s in process',
      },
      {
        name: 'batch of 100 verifications',
        ours: { label: '100 × verifyBundle in process', value: ours100Ms, unit: 'ms', scope: 'in-process' },
        anchor: { label: '100 × tpm2_checkquote', value: checkquote100Ms, unit: 'ms', scope: 'process' },
        ratio: checkquote100Ms / ours100Ms,
        higherIsBetter: false,
        target: '>= 10x',
        note: 'ours also replays the event log and checks PCR selection, claims binding, clock, and signs an ES256 result; tpm2_checkquote checks signature, nonce, PCR digest',
      },
    ];
  } finally {
    att.cleanup();
    await tpm.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
