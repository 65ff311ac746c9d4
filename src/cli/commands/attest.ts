import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { context } from '../context.js';
import { emit, UsageError } from '../output.js';
import { withTpm } from '../tpm-access.js';
import { HyperEnclaveError, EXIT } from '../../errors.js';
import {
  akEnrollAnswerFile,
  akEnrollRequestFile,
  attestToFiles,
  clientAttesterTpm,
  clientEnrollingTpm,
  exitCodeOf,
  formatResultTable,
  parseNonceHex,
  serveVerifier,
  Verifier,
  verifierEnrollFinishFile,
  verifierEnrollStartFiles,
  verifyBundleFile,
  verifyTpm2ToolsQuote,
  type VerifyOutcome,
} from '../../attest/index.js';
import { createStoredAk, loadStoredAk, readStoredAk } from '../../attest/ak-store.js';
import { drtmLogPath, FIRMWARE_EVENT_LOG, runtimeLogPath } from '../../platform/logs.js';
import { writeFileAtomic } from '../../platform/state.js';

function printOutcome(opts: { json?: boolean }, outcome: VerifyOutcome, jwtPath?: string): void {
  if (jwtPath) writeFileAtomic(jwtPath, outcome.jwt + '\n');
  emit(opts, outcome.result as never, () => formatResultTable(outcome.result));
  process.exitCode = exitCodeOf(outcome);
}

function pcrSelectionOf(spec: string): Record<string, number[]> {
  // "sha256:0-7,12+sha384:0,12"
  const out: Record<string, number[]> = {};
  for (const part of spec.split('+')) {
    const m = /^([a-z0-9_]+):([\d,\-]+)$/.exec(part.trim());
    if (!m) throw new UsageError(`--pcrs: expected bank:list[+bank:list], e.g. sha256:0-7,12; got "${spec}"`);
    const pcrs: number[] = [];
    for (const r of m[2]!.split(',')) {
      const [a, b] = r.split('-').map(Number) as [number, number | undefined];
      for (let i = a; i <= (b ?? a); i++) if (i >= 0 && i < 24) pcrs.push(i);
    }
    out[m[1]!] = pcrs;
  }
  return out;
}

export function registerAttest(program: Command): void {
  const ak = program.command('ak').description('the attestation key');
  ak.command('create')
    .description('create an AK under the SRK and keep its wrapped blob in the state directory')
    .option('--kind <kind>', 'ecc (P-256, ECDSA) or rsa (2048, RSASSA)', 'ecc')
    .action(async (o: { kind: string }, cmd: Command) => {
      const { opts, platform } = context(cmd);
      if (o.kind !== 'ecc' && o.kind !== 'rsa') throw new UsageError(`--kind: ecc or rsa, got "${o.kind}"`);
      const stored = await withTpm(platform, opts.tcti, (t) => createStoredAk(t, platform.stateDir, o.kind as 'ecc'));
      emit(opts, { schema: 'hyperenclave/ak', version: 1, kind: stored.kind, name: stored.name, pem: stored.pem }, () => `AK created (${stored.kind}), name ${stored.name}\n${stored.pem}`);
    });
  ak.command('enroll')
    .description('attester half of credential activation: --request writes EK cert + AK public; --challenge answers the verifier')
    .option('--request <file>', 'write the enrollment request (EK certificate, EK and AK public areas)')
    .option('--challenge <file>', 'the verifier\'s MakeCredential challenge to answer')
    .option('--answer <file>', 'where to write the answer (with --challenge)')
    .addHelpText('after', '\nExample:\n  hyperenclave ak enroll --request req.json\n  hyperenclave verifier enroll --request req.json --challenge ch.json\n  hyperenclave ak enroll --challenge ch.json --answer ans.json\n  hyperenclave verifier enroll --answer ans.json')
    .action(async (o: { request?: string; challenge?: string; answer?: string }, cmd: Command) => {
      const { opts, platform } = context(cmd);
      if (!o.request === !o.challenge) throw new UsageError('ak enroll: give --request FILE, or --challenge FILE --answer FILE');
      if (o.challenge && !o.answer) throw new UsageError('ak enroll --challenge: --answer FILE is required');
      await withTpm(platform, opts.tcti, async (t) => {
        const stored = readStoredAk(platform.stateDir) ?? (await createStoredAk(t, platform.stateDir));
        // The RSA EK: swtpm and most TPMs ship its certificate (0x01C00002); ECC EK certs are often P-384 only.
        const ek = await t.createEk('rsa');
        const { ak: loaded, release } = await loadStoredAk(t, stored);
        try {
          const et = clientEnrollingTpm(t, ek, loaded);
          if (o.request) await akEnrollRequestFile(et, o.request);
          else await akEnrollAnswerFile(et, o.challenge!, o.answer!);
        } finally {
          await release();
          await t.flushContext(ek);
        }
      });
      emit(opts, { schema: 'hyperenclave/ak-enroll', version: 1, wrote: o.request ?? o.answer }, () => `wrote ${o.request ?? o.answer}`);
    });

  program
    .command('attest')
    .description('quote the PCRs with the AK and export evidence (our JSON, tpm2-tools files, Keylime quote)')
    .requiredOption('--nonce <hex>', 'the verifier\'s challenge (8-64 bytes, hex)')
    .option('--out <file>', 'evidence bundle (JSON)', 'evidence.json')
    .option('--pcrs <sel>', 'PCRs to quote, bank:list[+bank:list]', 'sha256:0-7,12,17,18+sha384:0-7,12')
    .option('--tpm2-tools <dir>', 'also write message/signature/pcrs/ak.pem for tpm2_checkquote')
    .option('--keylime <file>', 'also write Keylime\'s quote string')
    .addHelpText('after', '\nExample:\n  hyperenclave attest --nonce $(openssl rand -hex 16) --out ev.json --tpm2-tools ./quote')
    .action(async (o: { nonce: string; out: string; pcrs: string; tpm2Tools?: string; keylime?: string }, cmd: Command) => {
      const { opts, platform } = context(cmd);
      const nonce = parseNonceHex(o.nonce);
      const logs: Record<string, Buffer> = {};
      for (const [kind, path] of [
        ['firmware', FIRMWARE_EVENT_LOG],
        ['runtime', runtimeLogPath(platform.stateDir)],
        ['drtm', drtmLogPath(platform.stateDir)],
      ] as const)
        if (existsSync(path)) logs[kind] = readFileSync(path);
      const res = await withTpm(platform, opts.tcti, async (t) => {
        const stored = readStoredAk(platform.stateDir);
        if (!stored) throw new HyperEnclaveError('attest: no AK yet: run "hyperenclave ak create" (and enroll it with your verifier)', EXIT.NOT_FOUND);
        const { ak: loaded, release } = await loadStoredAk(t, stored);
        try {
          return await attestToFiles(clientAttesterTpm(t, loaded), {
            nonce,
            ak: { tpmtPublic: Buffer.from(stored.public, 'base64'), pem: stored.pem, name: Buffer.from(stored.name, 'hex') },
            pcrSelection: pcrSelectionOf(o.pcrs),
            claims: { platformKind: platform.kind === 'emulated' ? 'emulated' : 'real' },
            logs,
            outJson: o.out,
            ...(o.tpm2Tools ? { tpm2ToolsDir: o.tpm2Tools } : {}),
            ...(o.keylime ? { keylimeOut: o.keylime } : {}),
          });
        } finally {
          await release();
        }
      });
      emit(opts, { schema: 'hyperenclave/attest', version: 1, files: res.files, ...(res.checkquote ? { checkquote: res.checkquote } : {}) }, () =>
        [`evidence written: ${res.files.join(', ')}`, ...(res.checkquote ? [`check with: ${res.checkquote.join(' ')}`] : [])].join('\n'),
      );
    });

  program
    .command('verify')
    .description('verify evidence against reference values and policy; prints named checks and a signed result')
    .argument('[evidence]', 'evidence bundle (JSON)')
    .option('--policy <file>', 'verifier policy (schemas/verifier-policy.schema.json)')
    .option('--nonce <hex>', 'the challenge this evidence must answer')
    .option('--tpm2-quote-message <file>', 'tpm2-tools quote message (TPMS_ATTEST)')
    .option('--tpm2-quote-signature <file>', 'tpm2-tools quote signature (TPMT_SIGNATURE)')
    .option('--tpm2-quote-pcrs <file>', 'tpm2-tools PCR file (serialized format)')
    .option('--ak-public <file>', 'AK public key (PEM or TPM2B_PUBLIC)')
    .option('--eventlog <file>', 'firmware event log (with tpm2-tools files)')
    .option('--runtime-log <file>', 'runtime measurement log (with tpm2-tools files)')
    .option('--jwt <file>', 'also write the signed attestation result (EAR, ES256 JWT)')
    .option('--state-of-verifier <dir>', 'verifier state (enrolled AKs, nonces, result key); default <state-dir>/verifier')
    .addHelpText('after', '\nExamples:\n  hyperenclave verify ev.json --policy policy.json --nonce $N\n  hyperenclave verify --tpm2-quote-message m --tpm2-quote-signature s --tpm2-quote-pcrs p --ak-public ak.pem --nonce $N')
    .action((evidence: string | undefined, o: Record<string, string | undefined>, cmd: Command) => {
      const { opts, platform } = context(cmd);
      const stateDir = o.stateOfVerifier ?? `${platform.stateDir}/verifier`;
      const tpm2 = o.tpm2QuoteMessage || o.tpm2QuoteSignature || o.tpm2QuotePcrs;
      let outcome: VerifyOutcome;
      if (tpm2) {
        if (evidence) throw new UsageError('verify: give an evidence bundle or tpm2-tools files, not both');
        for (const k of ['tpm2QuoteMessage', 'tpm2QuoteSignature', 'tpm2QuotePcrs', 'akPublic', 'nonce'] as const)
          if (!o[k]) throw new UsageError(`verify with tpm2-tools files: --${k.replace(/[A-Z0-9]/g, (c) => '-' + c.toLowerCase())} is required`);
        outcome = verifyTpm2ToolsQuote({
          stateDir,
          ...(o.policy ? { policyPath: o.policy } : {}),
          message: o.tpm2QuoteMessage!,
          signature: o.tpm2QuoteSignature!,
          pcrs: o.tpm2QuotePcrs!,
          akPem: o.akPublic!,
          nonceHex: o.nonce!,
          ...(o.eventlog ? { eventlog: o.eventlog } : {}),
          ...(o.runtimeLog ? { runtimeLog: o.runtimeLog } : {}),
        });
      } else {
        if (!evidence) throw new UsageError('verify: give an evidence bundle, or --tpm2-quote-* files');
        outcome = verifyBundleFile({ stateDir, evidencePath: evidence, ...(o.policy ? { policyPath: o.policy } : {}), ...(o.nonce ? { nonceHex: o.nonce } : {}) });
      }
      printOutcome(opts, outcome, o.jwt);
    });

  const verifier = program.command('verifier').description('the verifier side: enrollment and the HTTP service');
  verifier
    .command('enroll')
    .description('verifier half of credential activation: --request → --challenge; then --answer')
    .option('--request <file>', 'the attester\'s enrollment request')
    .option('--challenge <file>', 'where to write the MakeCredential challenge')
    .option('--answer <file>', 'the attester\'s answer: on success the AK is enrolled')
    .option('--policy <file>', 'verifier policy (trusted EK CAs)')
    .action((o: { request?: string; challenge?: string; answer?: string; policy?: string }, cmd: Command) => {
      const { opts, platform } = context(cmd);
      const v = new Verifier({ stateDir: `${platform.stateDir}/verifier`, ...(o.policy ? { policyPath: o.policy } : {}) });
      if (o.request) {
        if (!o.challenge) throw new UsageError('verifier enroll --request: --challenge FILE is required');
        verifierEnrollStartFiles(v, o.request, o.challenge);
        emit(opts, { schema: 'hyperenclave/verifier-enroll', version: 1, wrote: o.challenge }, () => `challenge written to ${o.challenge}`);
      } else if (o.answer) {
        const rec = verifierEnrollFinishFile(v, o.answer);
        emit(opts, { schema: 'hyperenclave/verifier-enroll', version: 1, enrolled: rec as unknown as Record<string, unknown> }, () => `AK enrolled: ${JSON.stringify(rec)}`);
      } else throw new UsageError('verifier enroll: give --request FILE --challenge FILE, or --answer FILE');
    });
  verifier
    .command('serve')
    .description('HTTP verifier on loopback: POST /challenge, /verify, /enroll/start, /enroll/finish')
    .option('--listen <host:port>', 'address', '127.0.0.1:8437')
    .option('--policy <file>', 'verifier policy')
    .action(async (o: { listen: string; policy?: string }, cmd: Command) => {
      const { platform } = context(cmd);
      const m = /^(.+):(\d+)$/.exec(o.listen);
      if (!m) throw new UsageError(`--listen: expected host:port, got "${o.listen}"`);
      const svc = await serveVerifier({ stateDir: `${platform.stateDir}/verifier`, host: m[1]!, port: Number(m[2]), ...(o.policy ? { policyPath: o.policy } : {}) });
      process.stderr.write(`verifier listening on ${svc.url}\n`);
      await new Promise<void>((resolve) => {
        const stop = () => void svc.close().then(resolve);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
