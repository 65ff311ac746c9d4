import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { locked } from '../locked.js';
import { emit, UsageError } from '../output.js';
import { progressFor } from '../progress.js';
import { log } from '../../log.js';
import { HyperEnclaveError, EXIT } from '../../errors.js';
import type * as AttestLib from '../../attest/index.js';
import type { VerifyOutcome } from '../../attest/index.js';
import type { VerifyLookups } from '../../attest/verifier.js';
import type { ClockRecord } from '../../attest/verify.js';
import type { EnrollmentRecord } from '../../attest/enroll.js';
import type { VerifierStore } from '../../verifier/store.js';
import type { HyperEnclaveConfig } from '../../config/index.js';
import type * as AkStore from '../../attest/ak-store.js';
import type * as Context from '../context.js';
import type * as TpmAccess from '../tpm-access.js';
import { drtmLogPath, FIRMWARE_EVENT_LOG, runtimeLogPath } from '../../platform/logs.js';
import { writeFileAtomic } from '../../platform/state.js';
import type * as HypervisorService from '../../hypervisor/service.js';
import type * as EnclaveEvidence from '../../attest/enclave-evidence.js';
import type * as EnclaveQuote from '../../attest/enclave-quote.js';
import type * as VerifyLib from '../../attest/verify.js';
import type * as FleetCommands from './fleet.js';
import type * as RawExport from '../../verifier/raw-export.js';
import type * as Kbs from '../../verifier/kbs.js';

// The attestation stack, loaded by load() when an action runs (not for --help or other commands).
let { context }: typeof Context = {} as typeof Context;
let { withTpm }: typeof TpmAccess = {} as typeof TpmAccess;
let { createStoredAk, loadStoredAk, readStoredAk }: typeof AkStore = {} as typeof AkStore;
let { akEnrollAnswerFile, akEnrollRequestFile, attestToFiles, clientAttesterTpm, clientEnrollingTpm, exitCodeOf, formatResultTable, parseNonceHex, serveVerifier, Verifier, verifierEnrollFinishFile, verifierEnrollStartFiles, verifyBundleFile, verifyTpm2ToolsQuote, VerifierClient, enrollWithVerifier }: typeof AttestLib = {} as typeof AttestLib;
let { withHypervisor }: typeof HypervisorService = {} as typeof HypervisorService;
let { quoteEnclaves }: typeof EnclaveEvidence = {} as typeof EnclaveEvidence;
let { DEFAULT_HAK_PCR }: typeof EnclaveQuote = {} as typeof EnclaveQuote;
let { NONCE_MAX, NONCE_MIN }: typeof VerifyLib = {} as typeof VerifyLib;
let { dbUrlOption, parseListen, tlsOption }: typeof FleetCommands = {} as typeof FleetCommands;
let { collectRawQuotes, writeRawExport }: typeof RawExport = {} as typeof RawExport;
let { loadKbsPolicy }: typeof Kbs = {} as typeof Kbs;
async function load(): Promise<void> {
  ({ withHypervisor } = await import('../../hypervisor/service.js'));
  ({ quoteEnclaves } = await import('../../attest/enclave-evidence.js'));
  ({ DEFAULT_HAK_PCR } = await import('../../attest/enclave-quote.js'));
  ({ NONCE_MAX, NONCE_MIN } = await import('../../attest/verify.js'));
  ({ dbUrlOption, parseListen, tlsOption } = await import('./fleet.js'));
  ({ collectRawQuotes, writeRawExport } = await import('../../verifier/raw-export.js'));
  ({ loadKbsPolicy } = await import('../../verifier/kbs.js'));
  ({ context } = await import('../context.js'));
  ({ withTpm } = await import('../tpm-access.js'));
  ({ createStoredAk, loadStoredAk, readStoredAk } = await import('../../attest/ak-store.js'));
  ({ akEnrollAnswerFile, akEnrollRequestFile, attestToFiles, clientAttesterTpm, clientEnrollingTpm, exitCodeOf, formatResultTable, parseNonceHex, serveVerifier, Verifier, verifierEnrollFinishFile, verifierEnrollStartFiles, verifyBundleFile, verifyTpm2ToolsQuote, VerifierClient, enrollWithVerifier } = await import('../../attest/index.js'));
}
import { readFileBounded } from '../../platform/bounded-read.js';

/** The verifier service's store when --db names one or its default sqlite file exists in `stateDir`. */
async function offlineStore(db: string | undefined, stateDir: string): Promise<VerifierStore | undefined> {
  const { defaultDbUrl, openVerifierStore } = await import('../../verifier/store.js');
  const url = db ?? defaultDbUrl(stateDir);
  if (!db && !existsSync(url.replace(/^sqlite:/, ''))) return undefined;
  return openVerifierStore(url);
}

/** Enrollment and clock lookups answered from `store` for the AKs of `files` (fetched first: the checks are synchronous). */
async function storeLookups(store: VerifierStore, files: string[]): Promise<{ lookups: VerifyLookups; flush(): Promise<void> }> {
  const { akSpkiOfBundle } = await import('../../verifier/engine.js');
  const enrollments = new Map<string, EnrollmentRecord>();
  const clocks = new Map<string, ClockRecord>();
  for (const f of files) {
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(f, 'utf8'));
    } catch {
      continue; // reported by the verification itself
    }
    const ak = akSpkiOfBundle(doc);
    if (!ak || enrollments.has(ak)) continue;
    const [e, c] = await Promise.all([store.findEnrollment(ak), store.getClock(ak)]);
    if (e) enrollments.set(ak, e);
    if (c) clocks.set(ak, c);
  }
  const accepted: [string, ClockRecord][] = [];
  return {
    lookups: {
      findEnrollment: (name, spki) => {
        const e = enrollments.get(spki);
        return e && (!name || e.akName === name) ? e : undefined;
      },
      previousClock: (spki) => clocks.get(spki),
      recordClock: (spki, rec) => {
        clocks.set(spki, rec);
        accepted.push([spki, rec]);
      },
    },
    flush: async () => {
      for (const [ak, rec] of accepted) await store.putClock(ak, rec);
    },
  };
}

async function printOutcome(opts: { json?: boolean }, outcome: VerifyOutcome, jwtPath?: string): Promise<void> {
  if (jwtPath) writeFileAtomic(jwtPath, (await outcome.ear()) + '\n');
  emit(opts, outcome.result as never, () => formatResultTable(outcome.result));
  process.exitCode = exitCodeOf(outcome);
}

/** One line of a batch: the file, its status, and why when it did not pass. */
interface BatchEntry {
  evidence: string;
  status: 'affirming' | 'warning' | 'contraindicated' | 'none' | 'error';
  exitCode: number;
  result?: VerifyOutcome['result'];
  error?: string;
}

/** `verify A.json B.json …`: each file on its own; one unreadable file does not stop the rest. */
function verifyBatch(opts: { json?: boolean; quiet?: boolean }, files: string[], verifyOne: (path: string) => VerifyOutcome): void {
  const line = progressFor(opts, { label: 'verify', unit: 'items', itemName: 'files' });
  const entries: BatchEntry[] = [];
  try {
    for (const [i, path] of files.entries()) {
      try {
        const outcome = verifyOne(path);
        entries.push({ evidence: path, status: outcome.result['ear.status'], exitCode: exitCodeOf(outcome), result: outcome.result });
      } catch (e) {
        const errno = e as NodeJS.ErrnoException;
        if (e instanceof HyperEnclaveError) entries.push({ evidence: path, status: 'error', exitCode: e.exitCode, error: e.message });
        else if (typeof errno?.code === 'string' && errno.path)
          entries.push({ evidence: path, status: 'error', exitCode: errno.code === 'ENOENT' ? EXIT.NOT_FOUND : EXIT.BAD_INPUT, error: errno.code === 'ENOENT' ? 'not found' : errno.message });
        else throw e;
      }
      line?.update(i + 1, files.length);
    }
  } finally {
    line?.end();
  }
  const count = (s: BatchEntry['status']) => entries.filter((e) => e.status === s).length;
  const summary = { total: entries.length, affirming: count('affirming'), warning: count('warning'), contraindicated: count('contraindicated') + count('none'), errors: count('error') };
  emit(opts, { schema: 'hyperenclave/verify-batch', version: 1, summary, results: entries as unknown as Record<string, unknown>[] }, () =>
    [
      ...entries.map((e) => {
        if (e.error) return `ERROR ${e.evidence}: ${e.error.startsWith(`${e.evidence}: `) ? e.error.slice(e.evidence.length + 2) : e.error}`;
        const why = e.result?.firstFailure;
        return `${e.exitCode === 0 ? 'PASS ' : 'FAIL '} ${e.evidence}: ${e.status}${why ? ` (${why})` : ''}`;
      }),
      `${summary.total} evidence files: ${summary.affirming} affirming, ${summary.warning} warning, ${summary.contraindicated} contraindicated, ${summary.errors} unreadable`,
    ].join('\n'),
  );
  // The first file that did not pass decides the exit code (4 verification failed, 3 not found, 6 malformed).
  process.exitCode = entries.find((e) => e.exitCode !== 0)?.exitCode ?? EXIT.OK;
}

/** --verifier URL, or --verifier alone: the config's verifier.endpoint. */
function verifierEndpoint(config: HyperEnclaveConfig, flag: string | true): string {
  if (typeof flag === 'string') {
    if (!/^https?:\/\/[^/]/.test(flag)) throw new UsageError(`--verifier: expected http://host:port or https://host:port, got "${flag}"`);
    return flag;
  }
  const endpoint = config.verifier?.endpoint;
  if (!endpoint) throw new UsageError('--verifier: no URL given and the configuration has no verifier.endpoint');
  return endpoint;
}

/** The EK (RSA: swtpm and most TPMs ship its certificate at 0x01C00002) and the stored AK (created when absent), loaded. */
async function withEnrollingTpm<T>(platform: Parameters<typeof withTpm>[0], tcti: string | undefined, fn: (et: ReturnType<typeof clientEnrollingTpm>) => Promise<T>): Promise<T> {
  return withTpm(platform, tcti, async (t) => {
    const stored = readStoredAk(platform.stateDir) ?? (await createStoredAk(t, platform.stateDir));
    const ek = await t.createEk('rsa');
    const { ak: loaded, release } = await loadStoredAk(t, stored);
    try {
      return await fn(clientEnrollingTpm(t, ek, loaded));
    } finally {
      await release();
      await t.flushContext(ek);
    }
  });
}

export function pcrSelectionOf(spec: string): Record<string, number[]> {
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
  const ak = program
    .command('ak')
    .description('the attestation key')
    .addHelpText('after', '\nExample:\n  hyperenclave ak create --kind ecc && hyperenclave ak enroll --request req.json');
  ak.command('create')
    .description('create an AK under the SRK and keep its wrapped blob in the state directory')
    .option('--kind <kind>', 'ecc (P-256, ECDSA) or rsa (2048, RSASSA)', 'ecc')
    .addHelpText('after', '\nExample:\n  hyperenclave ak create --kind rsa --json')
    .action(locked('ak create', async (o: { kind: string }, cmd: Command) => {
      await load();
      const { opts, platform } = context(cmd);
      if (o.kind !== 'ecc' && o.kind !== 'rsa') throw new UsageError(`--kind: ecc or rsa, got "${o.kind}"`);
      const stored = await withTpm(platform, opts.tcti, (t) => createStoredAk(t, platform.stateDir, o.kind as 'ecc'));
      emit(opts, { schema: 'hyperenclave/ak', version: 1, kind: stored.kind, name: stored.name, pem: stored.pem }, () => `AK created (${stored.kind}), name ${stored.name}\n${stored.pem}`);
    }));
  ak.command('enroll')
    .description('attester half of credential activation: --request writes EK cert + AK public; --challenge answers the verifier')
    .option('--request <file>', 'write the enrollment request (EK certificate, EK and AK public areas)')
    .option('--challenge <file>', 'the verifier\'s MakeCredential challenge to answer')
    .option('--answer <file>', 'where to write the answer (with --challenge)')
    .option('--verifier [url]', 'do the whole exchange with a remote verifier (`verifier serve`); default URL: config verifier.endpoint')
    .addHelpText('after', '\nExample:\n  hyperenclave ak enroll --request req.json\n  hyperenclave verifier enroll --request req.json --challenge ch.json\n  hyperenclave ak enroll --challenge ch.json --answer ans.json\n  hyperenclave verifier enroll --answer ans.json')
    .action(async (o: { request?: string; challenge?: string; answer?: string; verifier?: string | true }, cmd: Command) => {
      await load();
      const { opts, platform, config } = context(cmd);
      if (o.verifier !== undefined) {
        if (o.request || o.challenge) throw new UsageError('ak enroll --verifier: the exchange is done over HTTP, without --request/--challenge files');
        const client = new VerifierClient(verifierEndpoint(config, o.verifier));
        const enrolled = await withEnrollingTpm(platform, opts.tcti, (et) => enrollWithVerifier(et, client));
        emit(opts, { schema: 'hyperenclave/ak-enroll', version: 1, verifier: client.endpoint.href, enrolled }, () => `AK enrolled with ${client.endpoint.href}: ${JSON.stringify(enrolled)}`);
        return;
      }
      if (!o.request === !o.challenge) throw new UsageError('ak enroll: give --request FILE, or --challenge FILE --answer FILE, or --verifier URL');
      if (o.challenge && !o.answer) throw new UsageError('ak enroll --challenge: --answer FILE is required');
      await withEnrollingTpm(platform, opts.tcti, async (et) => {
        if (o.request) await akEnrollRequestFile(et, o.request);
        else await akEnrollAnswerFile(et, o.challenge!, o.answer!);
      });
      emit(opts, { schema: 'hyperenclave/ak-enroll', version: 1, wrote: o.request ?? o.answer }, () => `wrote ${o.request ?? o.answer}`);
    });

  program
    .command('attest')
    .description('quote the PCRs with the AK and export evidence (our JSON, tpm2-tools files, Keylime quote)')
    .option('--nonce <hex>', 'the verifier\'s challenge (8-64 bytes, hex); not with --verifier, which asks for one')
    .option('--verifier [url]', 'get the nonce from a remote verifier, send it the evidence and print its verdict; default URL: config verifier.endpoint')
    .option('--out <file>', 'evidence bundle (JSON)', 'evidence.json')
    .option('--pcrs <sel>', 'PCRs to quote, bank:list[+bank:list]', 'sha256:0-7,12,13,17,18+sha384:0-7,12,13')
    .option('--enclave <manifest>', 'also quote an enclave: create it from this manifest, have it report with REPORTDATA = SHA-256(nonce || user data), QUOTE it through the hypervisor, destroy it (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--user-data <hex>', 'data bound with the nonce into each enclave\'s REPORTDATA (e.g. a key it published; default empty)')
    .option('--tpm2-tools <dir>', 'also write message/signature/pcrs/ak.pem for tpm2_checkquote')
    .option('--keylime <file>', 'also write Keylime\'s quote string')
    .option('--raw-nonce', 'export for other verifiers: quote extraData = the nonce itself (tpm2_checkquote -q NONCE, Keylime); writes only --tpm2-tools DIR (with keylime-<bank>.txt), no bundle')
    .addHelpText('after', '\nExamples:\n  hyperenclave attest --nonce $(openssl rand -hex 16) --out ev.json --tpm2-tools ./quote\n  hyperenclave attest --nonce $N --enclave sealer.manifest.json --out ev.json\n  hyperenclave attest --verifier http://verifier.example:8437 --out ev.json\n  hyperenclave attest --raw-nonce --nonce $N --tpm2-tools ./quote')
    .action(async (o: { nonce?: string; verifier?: string | true; out: string; pcrs: string; enclave?: string[]; userData?: string; tpm2Tools?: string; keylime?: string; rawNonce?: boolean }, cmd: Command) => {
      await load();
      const { opts, platform, config } = context(cmd);
      if (o.rawNonce) {
        if (o.verifier !== undefined || o.keylime) throw new UsageError('attest --raw-nonce: give --nonce HEX and --tpm2-tools DIR (the Keylime strings are written there); not --verifier or --keylime');
        if (!o.nonce || !o.tpm2Tools) throw new UsageError('attest --raw-nonce: --nonce HEX and --tpm2-tools DIR are required');
        const nonce = parseNonceHex(o.nonce);
        const pcrSelection = pcrSelectionOf(o.pcrs);
        const out = await withTpm(platform, opts.tcti, async (t) => {
          const stored = readStoredAk(platform.stateDir);
          if (!stored) throw new HyperEnclaveError('attest: no AK yet: run "hyperenclave ak create" (and enroll it with your verifier)', EXIT.NOT_FOUND);
          const { ak: loaded, release } = await loadStoredAk(t, stored);
          try {
            return writeRawExport(o.tpm2Tools!, await collectRawQuotes(clientAttesterTpm(t, loaded), { nonce, pcrSelection, akPem: stored.pem }));
          } finally {
            await release();
          }
        });
        emit(opts, { schema: 'hyperenclave/attest', version: 1, files: out.files, checkquote: out.commands }, () => [`raw-nonce export written: ${out.files.join(', ')}`, `check with (in ${o.tpm2Tools}): ${out.commands.join(' ; ')}`].join('\n'));
        return;
      }
      if ((o.nonce === undefined) === (o.verifier === undefined)) throw new UsageError('attest: give --nonce HEX (the verifier\'s challenge), or --verifier [URL] to ask a verifier for it');
      const pcrSelection = pcrSelectionOf(o.pcrs);
      let userData: Buffer | undefined;
      if (o.userData !== undefined) {
        if (!/^([0-9a-fA-F]{2}){0,4096}$/.test(o.userData)) throw new UsageError(`--user-data: expected up to 4096 bytes of hex, got "${o.userData.slice(0, 40)}"`);
        if (!o.enclave?.length) throw new UsageError('--user-data goes with --enclave');
        userData = Buffer.from(o.userData, 'hex');
      }
      for (const m of o.enclave ?? []) if (!existsSync(m)) throw new HyperEnclaveError(`--enclave ${m}: not found`, EXIT.NOT_FOUND);
      const remote = o.verifier !== undefined ? new VerifierClient(verifierEndpoint(config, o.verifier)) : undefined;
      const nonce = parseNonceHex(remote ? (await remote.challenge()).nonce : o.nonce!);
      if (nonce.length < NONCE_MIN || nonce.length > NONCE_MAX) throw new UsageError(`--nonce: ${nonce.length} bytes; a challenge is ${NONCE_MIN}-${NONCE_MAX} bytes`);
      // Enclave quotes first: they are claims the TPM quote then binds (with the nonce) in its qualifying data.
      const enclaves = o.enclave?.length ? await withHypervisor(platform, (c) => quoteEnclaves(c, o.enclave!, nonce, userData ? { userData } : {})) : [];
      const logs: Record<string, Buffer> = {};
      for (const [kind, path] of [
        ['firmware', FIRMWARE_EVENT_LOG],
        ['runtime', runtimeLogPath(platform.stateDir)],
        ['drtm', drtmLogPath(platform.stateDir)],
      ] as const)
        if (existsSync(path)) logs[kind] = readFileBounded(path, { what: `${kind} event log`, kind: 'log' });
      const res = await withTpm(platform, opts.tcti, async (t) => {
        const stored = readStoredAk(platform.stateDir);
        if (!stored) throw new HyperEnclaveError('attest: no AK yet: run "hyperenclave ak create" (and enroll it with your verifier)', EXIT.NOT_FOUND);
        // The EK certificate travels along (informative: the verifier consults its enrollment
        // record, and uses this only when that record predates the platform kind it keeps).
        const ekDer = await t.readEkCertificate('rsa').catch(() => undefined);
        let ekCertificates: string[] | undefined;
        try {
          ekCertificates = ekDer ? [new X509Certificate(ekDer).toString()] : undefined;
        } catch {
          ekCertificates = undefined;
        }
        const { ak: loaded, release } = await loadStoredAk(t, stored);
        try {
          return await attestToFiles(clientAttesterTpm(t, loaded), {
            nonce,
            ...(ekCertificates ? { ekCertificates } : {}),
            ak: { tpmtPublic: Buffer.from(stored.public, 'base64'), pem: stored.pem, name: Buffer.from(stored.name, 'hex') },
            pcrSelection,
            // No platform-kind claim: the verifier derives it from the EK certificate, not from --platform.
            claims: enclaves.length ? { hypervisor: { hakPcr: DEFAULT_HAK_PCR }, enclaves: enclaves.map((e) => e.evidence) } : {},
            logs,
            outJson: o.out,
            ...(o.tpm2Tools ? { tpm2ToolsDir: o.tpm2Tools } : {}),
            ...(o.keylime ? { keylimeOut: o.keylime } : {}),
          });
        } finally {
          await release();
        }
      });
      const verdict = remote ? await remote.verify(res.evidence) : undefined;
      emit(
        opts,
        {
          schema: 'hyperenclave/attest',
          version: 1,
          files: res.files,
          ...(enclaves.length ? { enclaves: enclaves.map((e) => ({ name: e.name, mrenclave: e.mrenclave, mrsigner: e.mrsigner, debug: e.debug })) } : {}),
          ...(res.checkquote ? { checkquote: res.checkquote } : {}),
          ...(verdict && remote ? { verifier: remote.endpoint.href, verdict: { status: verdict.status, result: verdict.result, jwt: verdict.jwt } } : {}),
        },
        () =>
          [
            `evidence written: ${res.files.join(', ')}`,
            ...enclaves.map((e) => `enclave ${e.name}: MRENCLAVE ${e.mrenclave}, quoted by the hypervisor`),
            ...(res.checkquote ? [`check with: ${res.checkquote.join(' ')}`] : []),
            ...(verdict && remote ? [`verifier ${remote.endpoint.href}: ${verdict.status}`, formatResultTable(verdict.result as never)] : []),
          ].join('\n'),
      );
      if (verdict && verdict.status !== 'affirming') process.exitCode = verdict.status === 'warning' ? EXIT.OK : EXIT.VERIFY_FAILED;
    });

  program
    .command('verify')
    .description('verify evidence against reference values and policy; prints named checks and a signed result')
    .argument('[evidence...]', 'evidence bundles (JSON); with several, one result line each')
    .option('--policy <file>', 'verifier policy (schemas/verifier-policy.schema.json)')
    .option('--nonce <hex>', 'the challenge this evidence must answer')
    .option('--tpm2-quote-message <file>', 'tpm2-tools quote message (TPMS_ATTEST)')
    .option('--tpm2-quote-signature <file>', 'tpm2-tools quote signature (TPMT_SIGNATURE)')
    .option('--tpm2-quote-pcrs <file>', 'tpm2-tools PCR file (serialized format)')
    .option('--ak-public <file>', 'AK public key (PEM or TPM2B_PUBLIC)')
    .option('--eventlog <file>', 'firmware event log (with tpm2-tools files)')
    .option('--runtime-log <file>', 'runtime measurement log (with tpm2-tools files)')
    .option('--jwt <file>', 'also write the attestation result as an EAR JWT (draft-ietf-rats-ear, ES256, kid = key thumbprint)')
    .option('--state-of-verifier <dir>', 'verifier state (enrolled AKs, nonces, result key); default <state-dir>/verifier')
    .option('--db <url>', 'the verifier service\'s database (enrollments, clock records); default its sqlite file in the verifier state when it exists')
    .addHelpText(
      'after',
      '\nExamples:\n  hyperenclave verify ev.json --policy policy.json --nonce $N\n  hyperenclave verify host-*.json --policy policy.json --json   (a batch: exit 0 only if every file affirms)\n  hyperenclave verify --tpm2-quote-message m --tpm2-quote-signature s --tpm2-quote-pcrs p --ak-public ak.pem --nonce $N',
    )
    .action(async (evidenceFiles: string[], o: Record<string, string | undefined>, cmd: Command) => {
      await load();
      const { opts, platform } = context(cmd);
      const stateDir = o.stateOfVerifier ?? `${platform.stateDir}/verifier`;
      const tpm2 = o.tpm2QuoteMessage || o.tpm2QuoteSignature || o.tpm2QuotePcrs;
      let outcome: VerifyOutcome;
      if (tpm2) {
        if (evidenceFiles.length) throw new UsageError('verify: give an evidence bundle or tpm2-tools files, not both');
        for (const k of ['tpm2QuoteMessage', 'tpm2QuoteSignature', 'tpm2QuotePcrs', 'akPublic', 'nonce'] as const)
          if (!o[k]) throw new UsageError(`verify with tpm2-tools files: --${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} is required`);
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
        if (!evidenceFiles.length) throw new UsageError('verify: give an evidence bundle, or --tpm2-quote-* files');
        // An empty --nonce is a bad option, never "use the bundle's own nonce".
        if (o.nonce !== undefined) parseNonceHex(o.nonce);
        // The service keeps enrollments and clock records in its database (sqlite in this state
        // directory by default, or --db): an offline verify reads the same records, and records an
        // accepted quote's clock there, so a quote the service accepted is not accepted twice.
        const db = await offlineStore(o.db, stateDir);
        try {
          const lookups = db ? await storeLookups(db, evidenceFiles) : undefined;
          const verifyOne = (evidencePath: string) =>
            verifyBundleFile({ stateDir, evidencePath, ...(o.policy ? { policyPath: o.policy } : {}), ...(o.nonce !== undefined ? { nonceHex: o.nonce } : {}), ...(lookups ? { lookups: () => lookups.lookups } : {}) });
          if (evidenceFiles.length > 1) {
            if (o.jwt) throw new UsageError('verify: --jwt takes a single evidence file');
            verifyBatch(opts, evidenceFiles, verifyOne);
            if (db && lookups) await lookups.flush();
            return;
          }
          outcome = verifyOne(evidenceFiles[0]!);
          if (db && lookups) await lookups.flush();
        } finally {
          await db?.close();
        }
      }
      await printOutcome(opts, outcome, o.jwt);
    });

  const verifier = program
    .command('verifier')
    .description('the verifier side: enrollment and the HTTP service')
    .addHelpText('after', '\nExample:\n  hyperenclave verifier enroll --policy policy.json --request req.json --challenge ch.json\n  hyperenclave verifier serve --listen 127.0.0.1:8437 --policy policy.json');
  verifier
    .command('enroll')
    .description('verifier half of credential activation: --request → --challenge; then --answer')
    .option('--request <file>', 'the attester\'s enrollment request')
    .option('--challenge <file>', 'where to write the MakeCredential challenge')
    .option('--answer <file>', 'the attester\'s answer: on success the AK is enrolled')
    .option('--policy <file>', 'verifier policy (trusted EK CAs)')
    .addHelpText('after', '\nExample:\n  hyperenclave verifier enroll --policy policy.json --request req.json --challenge ch.json\n  (the attester answers: hyperenclave ak enroll --challenge ch.json --answer ans.json)\n  hyperenclave verifier enroll --policy policy.json --answer ans.json')
    .action(async (o: { request?: string; challenge?: string; answer?: string; policy?: string }, cmd: Command) => {
      await load();
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
    .description('HTTP(S) verifier: POST /challenge, /verify, /enroll/start, /enroll/finish; GET /hosts, /metrics, /.well-known/jwks.json; continuous attestation of enrolled hosts')
    .option('--listen <host:port>', 'address (port 0: any free port, printed on start)', '127.0.0.1:8437')
    .option('--policy <file>', 'verifier policy')
    .option('--max-body <bytes>', 'largest request body accepted (413 above)', String(4 * 1024 * 1024))
    .option('--db <url>', 'shared state: postgresql://user@host/db (several instances) or sqlite:<file>; default sqlite:<state-dir>/verifier/verifier.db')
    .option('--attest-interval <seconds>', 'attest every host in `verifier hosts` this often (0: off)', '0')
    .option('--webhook <url>', 'POST revocation events here (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--kbs-policy <file>', 'key broker: release the resources this policy names (schemas/kbs-policy.schema.json) to affirming enclaves, POST /kbs/resource')
    .option('--history-days <days>', 'keep attestation history this long (0: forever)', '7')
    .option('--revoke-on-warning', 'revoke a host whose verdict is warning too (default: contraindicated or no evidence)')
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM)')
    .option('--tls-key <file>', 'its private key (PEM)')
    .option('--tls-ca <file>', 'require client certificates chaining to this CA (mutual TLS)')
    .option('--agent-tls-cert <file>', 'client certificate presented to agents (mutual TLS)')
    .option('--agent-tls-key <file>', 'its private key')
    .option('--agent-tls-ca <file>', 'CA the agents\' certificates chain to')
    .addHelpText(
      'after',
      '\nExample:\n  hyperenclave verifier serve --listen 127.0.0.1:8437 --policy policy.json\n  hyperenclave verifier serve --db postgresql://verifier@%2Frun%2Fpostgresql/verifier --policy policy.json --attest-interval 10 --webhook https://ops.example/hooks/revoked\n  curl -s -X POST -H content-type:application/json -d {} http://127.0.0.1:8437/challenge',
    )
    .action(async (o: { listen: string; policy?: string; maxBody: string; db?: string; attestInterval: string; webhook: string[]; revokeOnWarning?: boolean; historyDays: string; kbsPolicy?: string; tlsCert?: string; tlsKey?: string; tlsCa?: string; agentTlsCert?: string; agentTlsKey?: string; agentTlsCa?: string }, cmd: Command) => {
      await load();
      const { opts, platform } = context(cmd);
      const { host, port } = parseListen(o.listen);
      const maxBodyBytes = Number(o.maxBody);
      if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes <= 0) throw new UsageError(`--max-body: expected a positive byte count, got "${o.maxBody}"`);
      const interval = Number(o.attestInterval);
      if (!Number.isFinite(interval) || interval < 0 || (interval > 0 && interval < 1)) throw new UsageError(`--attest-interval: expected 0 (off) or at least 1 second, got "${o.attestInterval}"`);
      const historyDays = Number(o.historyDays);
      if (!Number.isFinite(historyDays) || historyDays < 0) throw new UsageError(`--history-days: expected a number of days (0: forever), got "${o.historyDays}"`);
      for (const w of o.webhook) if (!/^https?:\/\/./.test(w)) throw new UsageError(`--webhook: expected http(s)://…, got "${w.slice(0, 80)}"`);
      const tls = tlsOption(o);
      const agentTls = tlsOption({ ...(o.agentTlsCert ? { tlsCert: o.agentTlsCert } : {}), ...(o.agentTlsKey ? { tlsKey: o.agentTlsKey } : {}), ...(o.agentTlsCa ? { tlsCa: o.agentTlsCa } : {}) }, '--agent-tls');
      const svc = await serveVerifier({
        stateDir: `${platform.stateDir}/verifier`,
        host,
        port,
        maxBodyBytes,
        ...(o.policy ? { policyPath: o.policy } : {}),
        dbUrl: dbUrlOption(o.db, platform.stateDir),
        logger: log(),
        ...(tls ? { tls } : {}),
        ...(o.kbsPolicy ? { kbs: loadKbsPolicy(o.kbsPolicy) } : {}),
        historyRetentionMs: historyDays * 86_400_000,
        ...(interval > 0 ? { monitor: { intervalMs: interval * 1000, webhooks: o.webhook, ...(agentTls ? { agentTls } : {}), ...(o.revokeOnWarning ? { revokeOnWarning: true } : {}) } } : {}),
      });
      emit(opts, { schema: 'hyperenclave/verifier-serve', version: 1, url: svc.url, pid: process.pid }, () => `verifier listening on ${svc.url}`);
      log().info({ url: svc.url, db: svc.store.where, instance: svc.store.instance, attestIntervalSeconds: interval }, 'verifier listening');
      // SIGINT/SIGTERM: stop accepting, close open connections, exit 0.
      const signal = await new Promise<NodeJS.Signals>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await svc.close();
      log().info({ signal }, 'verifier stopped');
    });
}
