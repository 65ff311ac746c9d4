import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openPlatform, type Platform } from '../platform/index.js';
import { platformReport } from '../platform/report.js';
import { stopEmulatedTpm, emulatedTpmRecord } from '../platform/emulated/tpm-daemon.js';
import { swtpmCaCertificates } from '../platform/emulated/swtpm.js';
import { readCpuFacts } from '../platform/cpu.js';
import { drtmLogPath, runtimeLogPath } from '../platform/logs.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { openTpm } from '../tpm/index.js';
import { archForCpuVendor, verifyContainerFile } from '../measure/container.js';
import { loadPolicy, DEFAULT_POLICY_NAME } from '../measure/index.js';
import { buildImage } from '../../firmware-tools/image.js';
import { referenceValuesFor } from '../../firmware-tools/reference.js';
import { buildLaunchEnvironment } from '../txt/index.js';
import { runBoot } from '../boot/flow.js';
import { bootStepsFor } from '../boot/steps.js';
import { hypervisorStatus, stopHypervisor, withHypervisor } from '../hypervisor/index.js';
import type { BackendKind } from '../enclave/backends/index.js';
import {
  attestToFiles,
  clientAttesterTpm,
  clientEnrollingTpm,
  enrollmentRequest,
  answerEnrollment,
  startEnrollment,
  finishEnrollment,
  Verifier,
  verifyBundleFile,
} from '../attest/index.js';
import { quoteEnclave, type EnclaveQuoteResult } from '../attest/enclave-evidence.js';
import { DEFAULT_HAK_PCR } from '../attest/enclave-quote.js';
import { createStoredAk, loadStoredAk } from '../attest/ak-store.js';
import { HyperEnclaveError, EXIT } from '../errors.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The package root, from src/demo (vitest) or dist/src/demo (built). */
function packageRoot(): string {
  for (let d = here, i = 0; i < 5; i++, d = dirname(d)) if (existsSync(join(d, 'package.json'))) return d;
  throw new Error('package root not found');
}

export interface DemoOptions {
  stateDir: string;
  backends: BackendKind[];
  /** Stop the emulated TPM and hypervisor service at the end (default true). */
  cleanup?: boolean;
  say?: (line: string) => void;
}

export interface DemoSummary {
  schema: 'hyperenclave/demo';
  version: 1;
  platform: 'emulated';
  image: { path: string; id: string; signer: string };
  pcrs: Record<string, Record<string, string>>;
  drtm: boolean;
  hypervisor: { enabled: boolean; hostFaults: number | null };
  enclaves: { backend: string; name: string; mrenclave: string; mrsigner: string; keySlot: number | null; launch: string | null; quoted: boolean }[];
  evidence: string;
  result: { status: string; failed: string[] };
}

/** The enclave every backend runs: the sealer payload has the quote-report ECALL. */
const MANIFEST = 'sealer';

/**
 * The whole story on the emulated platform: platform check → signed image + reference values →
 * boot (verify, measure + DRTM, load, enable) → an enclave per backend, each quoted by the
 * hypervisor's attestation key → AK enrollment → attest → verify against reference values.
 */
export async function runDemo(opts: DemoOptions): Promise<DemoSummary> {
  const say = opts.say ?? (() => undefined);
  const platform: Platform = openPlatform({ platform: 'emulated', stateDir: opts.stateDir });
  const work = join(opts.stateDir, 'demo');
  mkdirSync(work, { recursive: true });
  try {
    // 1. platform
    const report = platformReport(platform);
    const missing = report.features.filter((f) => !f.available).map((f) => f.name);
    say(`platform   emulated (${report.cpu.vendor}, ${report.cpu.cpus} CPUs); missing here: ${missing.join(', ') || 'nothing'}`);

    // 2. the image: on the emulated platform the hypervisor is the Rust core inside the addon,
    //    so that binary is what gets wrapped, signed and measured.
    const root = packageRoot();
    const addon = join(root, 'hypervisor', 'addon', 'hyperenclave-addon.node');
    if (!existsSync(addon)) throw new HyperEnclaveError(`demo: ${addon} missing: run "make build"`, EXIT.NOT_FOUND);
    const signer = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signerPem = signer.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    writeFileAtomic(join(work, 'image-signer.pub.pem'), signerPem);
    const arch = archForCpuVendor(readCpuFacts().vendor) ?? 'intel-vmx';
    const imagePath = join(work, 'hyperenclave.img');
    writeFileAtomic(imagePath, buildImage(readFileSync(addon), { arch, kind: 'raw', entryOffset: 0 }, { alg: 'ecdsa-p256-sha256', key: signer.privateKey, spki: signer.publicKey.export({ type: 'spki', format: 'der' }) }));
    const launchEnv = buildLaunchEnvironment({ name: 'hyperenclave-emulated-sinit', version: 1, arch, payload: Buffer.alloc(0) });
    writeFileAtomic(join(work, 'launch-env.bin'), launchEnv);
    const policy = loadPolicy(DEFAULT_POLICY_NAME);
    const img = await verifyContainerFile(imagePath, { banks: policy.banks, trustedKeys: [signerPem] });
    const reference = referenceValuesFor(img, { policy, launchEnvironment: launchEnv });
    writeFileAtomic(join(work, 'reference-values.json'), JSON.stringify(reference, null, 2) + '\n');
    say(`image      ${imagePath}: ${img.header.imageLength} bytes, ${arch}, signed ECDSA P-256, id ${img.id.slice(0, 16)}…`);

    // 3. boot: verify → measure (PCR 12) + DRTM (PCR 17/18) → load → enable
    const boot = await runBoot(platform.stateDir, bootStepsFor(platform, { imagePath, policy, trustedKeys: [signerPem], launchEnvironment: launchEnv }));
    const tpmInfo = emulatedTpmRecord(platform.stateDir)!;
    const tpm = await openTpm(tpmInfo.tcti);
    let pcrs: Record<string, Record<string, string>> = {};
    try {
      const read = await tpm.pcrRead([{ hash: 0x000b, pcrs: [12, 17, 18] }]);
      pcrs = { sha256: Object.fromEntries([...read.banks[0]!.values].map(([i, v]) => [String(i), v.toString('hex')])) };
    } finally {
      await tpm.close();
    }
    const predicted = reference.pcrs as Record<string, Record<string, string>>;
    const drtmPred = (reference as unknown as { drtm?: { pcrs: Record<string, Record<string, string>> } }).drtm?.pcrs;
    const pcr12ok = predicted.sha256?.['12'] === pcrs.sha256!['12'];
    const pcr17ok = drtmPred?.sha256?.['17'] === pcrs.sha256!['17'];
    say(`measure    PCR12 sha256 ${pcrs.sha256!['12']!.slice(0, 16)}… ${pcr12ok ? '= firmware-tools prediction' : '!= prediction'}; DRTM PCR17 ${pcr17ok ? '= prediction' : '!= prediction'}`);
    const st = await hypervisorStatus(platform);
    const faults = st.hv ? st.hv.hostFaults.hypervisor + st.hv.hostFaults.enclave : null;
    // The emulated platform runs the hypervisor core in a service process: Linux is not demoted.
    say(`hypervisor loaded ${st.image?.sha256?.slice(0, 16) ?? '?'}…, ${st.enabled ? 'enabled in the emulated service (nothing is demoted)' : 'NOT enabled'} (boot ${boot.alreadyEnabled ? 'was already done' : 'ran'})`);

    // 4. one enclave per backend, with real guest code on KVM: each reports (EREPORT targeted at
    //    the hypervisor's quoting identity, REPORTDATA bound to the verifier's nonce) and the
    //    hypervisor turns the report into a quote signed by its attestation key (HAK). This is
    //    `hyperenclave attest --enclave`'s code path.
    const nonce = randomBytes(32);
    const manifest = join(root, 'test', 'fixtures', 'enclave', `${MANIFEST}.manifest.json`);
    const quoted: EnclaveQuoteResult[] = [];
    await withHypervisor(platform, async (c) => {
      for (const [i, backend] of opts.backends.entries()) {
        const r = await quoteEnclave(c, manifest, nonce, { backend, id: String(i), userData: Buffer.from(`demo enclave ${i}`) });
        quoted.push(r);
        say(`enclave    ${backend.padEnd(6)} MRENCLAVE ${r.mrenclave.slice(0, 16)}…, key slot ${r.keySlot ?? '-'}, launch ${r.evidence.launchMeasurement?.slice(0, 16) ?? '-'}…, quote ${Buffer.from(r.evidence.quote, 'base64').length} B signed by the HAK`);
      }
    });

    // 5. AK enrollment (credential activation), attest, verify against reference values
    const caFiles = swtpmCaCertificates({ caDir: tpmInfo.caDir } as never).map((pem, i) => {
      const f = join(work, `ek-ca${i}.pem`);
      writeFileSync(f, pem);
      return `ek-ca${i}.pem`;
    });
    const policyPath = join(work, 'verifier-policy.json');
    const identities = [...new Map(quoted.map((q) => [`${q.mrenclave}/${q.mrsigner}`, q])).values()];
    writeFileAtomic(
      policyPath,
      JSON.stringify({
        schema: 'hyperenclave/verifier-policy',
        version: 1,
        // reference.launch optional: the emulated SEV/CSV firmware makes the launch session keys
        // itself, so no guest owner here holds the TIK to recompute LAUNCH_MEASURE (said below).
        checks: { 'ak.provenance': 'required', 'eventlog.runtime': 'required', 'reference.hypervisor': 'required', 'platform.kind': 'required', 'nonce.freshness': 'required', 'enclave.*': 'required', 'reference.launch': 'optional' },
        requiredPcrs: { sha256: [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 17, 18] },
        referenceValues: 'reference-values.json',
        hypervisor: { pcr: 12, hakPcr: DEFAULT_HAK_PCR },
        drtm: { required: true },
        enclaves: { allowed: identities.map((q) => ({ name: q.name, mrenclave: q.mrenclave, mrsigner: q.mrsigner })), minCount: quoted.length },
        akProvenance: { trustedEkCaFiles: caFiles },
      }, null, 2) + '\n',
    );
    const verifier = new Verifier({ stateDir: join(work, 'verifier'), policyPath });
    const evidencePath = join(work, 'evidence.json');
    const tpm2 = await openTpm(tpmInfo.tcti);
    try {
      const stored = await createStoredAk(tpm2, platform.stateDir, 'ecc');
      const ek = await tpm2.createEk('rsa');
      const { ak, release } = await loadStoredAk(tpm2, stored);
      try {
        const et = clientEnrollingTpm(tpm2, ek, ak);
        const challenge = startEnrollment(verifier, await enrollmentRequest(et));
        finishEnrollment(verifier, await answerEnrollment(et, challenge));
        const logs: Record<string, Buffer> = { runtime: readFileSync(runtimeLogPath(platform.stateDir)) };
        if (existsSync(drtmLogPath(platform.stateDir))) logs.drtm = readFileSync(drtmLogPath(platform.stateDir));
        await attestToFiles(clientAttesterTpm(tpm2, ak), {
          nonce,
          ak: { tpmtPublic: Buffer.from(stored.public, 'base64'), pem: stored.pem, name: Buffer.from(stored.name, 'hex') },
          pcrSelection: { sha256: [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 17, 18] },
          claims: { hypervisor: { pcr: 12, hakPcr: DEFAULT_HAK_PCR, containerDigest: img.id }, enclaves: quoted.map((q) => q.evidence) },
          logs,
          outJson: evidencePath,
          tpm2ToolsDir: join(work, 'tpm2-tools'),
        });
      } finally {
        await release();
        await tpm2.flushContext(ek);
      }
    } finally {
      await tpm2.close();
    }
    say(`attest     evidence ${evidencePath} (+ tpm2-tools files in ${join(work, 'tpm2-tools')})`);
    const outcome = verifyBundleFile({ stateDir: join(work, 'verifier'), policyPath, evidencePath, nonceHex: nonce.toString('hex') });
    const failed = outcome.result.checks.filter((c) => c.status === 'fail').map((c) => `${c.name}: ${c.reason}`);
    const enclaveChecks = outcome.result.checks.filter((c) => c.name.startsWith('enclave.'));
    say(`verify     ${enclaveChecks.filter((c) => c.status === 'pass').length}/${enclaveChecks.length} enclave checks pass (quote signature, HAK bound in PCR ${DEFAULT_HAK_PCR}, REPORTDATA bound to the nonce, identity); platform ${outcome.result.platformKind} (from the EK certificate's CA)`);
    const notJudged = outcome.result.checks.filter((c) => c.status === 'skip').map((c) => `${c.name} (${c.requirement}): ${c.reason}`);
    if (notJudged.length) say(`           not judged: ${notJudged.join('; ')}`);
    say(`verify     ${outcome.result['ear.status']}${failed.length ? ` (${failed.join('; ')})` : ''}`);
    return {
      schema: 'hyperenclave/demo',
      version: 1,
      platform: 'emulated',
      image: { path: imagePath, id: img.id, signer: 'ecdsa-p256-sha256' },
      pcrs,
      drtm: pcr17ok,
      hypervisor: { enabled: st.enabled, hostFaults: faults },
      enclaves: quoted.map((q) => ({ backend: q.backend, name: q.name, mrenclave: q.mrenclave, mrsigner: q.mrsigner, keySlot: q.keySlot, launch: q.evidence.launchMeasurement ?? null, quoted: true })),
      evidence: evidencePath,
      result: { status: outcome.result['ear.status'], failed },
    };
  } finally {
    if (opts.cleanup ?? true) {
      await stopHypervisor(platform).catch(() => false);
      await stopEmulatedTpm(platform.stateDir).catch(() => false);
    }
  }
}
