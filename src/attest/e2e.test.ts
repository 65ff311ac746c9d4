/**
 * End to end on the emulated platform with real parts: a hypervisor image container built and
 * measured by firmware-tools/src/measure's plan, reference values from firmware-tools, PCR 12
 * extended in a real TPM (swtpm, EK certificate from a private CA) with a runtime event log
 * written by src/eventlog, the AK enrolled by credential activation, evidence collected,
 * verified against the policy -> affirming; the same with another image's reference values ->
 * contraindicated by reference.hypervisor.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, swtpmCaCertificates, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { buildImage } from '../../firmware-tools/image.js';
import { referenceValuesFor } from '../../firmware-tools/reference.js';
import { verifyContainerBytes } from '../measure/container.js';
import { BUILTIN_POLICIES } from '../measure/policy.js';
import { planMeasurement } from '../measure/plan.js';
import { writeEventLog } from '../eventlog/index.js';
import { collectEvidence } from './collect.js';
import { startEnrollment, finishEnrollment } from './enroll.js';
import { toTpm2ToolsCredentialFile } from './credential.js';
import { Tpm2ToolsAttester, activateWithTpm2Tools, readEkCertificate, tpm2ToolsAttesterTpm, tpm2ToolsAvailable } from './tpm2-tools-attester.js';
import { Verifier } from './verifier.js';
import { formatResultTable } from './result.js';
import { verifyEar } from '../verifier/ear.js';
import type { EvidenceEnclave } from './evidence.js';
import { skipUnless } from '../../test/helpers/require.js';

const skip = skipUnless('attestation end-to-end test', [['swtpm', swtpmAvailable({ ek: true })], ['tpm2-tools', tpm2ToolsAvailable()]]);

describe.skipIf(!!skip)('attestation end to end (emulated platform)', () => {
  let tpm: SwtpmInstance;
  let att: Tpm2ToolsAttester;
  let dir: string;
  beforeAll(async () => {
    tpm = await startSwtpm({ ek: true });
    att = new Tpm2ToolsAttester(tpm.tcti);
    dir = mkdtempSync(join(tmpdir(), 'attest-e2e-'));
  }, 60_000);
  afterAll(async () => {
    att?.cleanup();
    await tpm?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('measured image + enrolled AK -> affirming (platform kind emulated from the EK CA); another image -> reference.hypervisor', async () => {
    // firmware-tools: container and reference values (no TPM involved)
    const policy = BUILTIN_POLICIES['sha256-sha384']!;
    const container = buildImage(randomBytes(64 * 1024), { arch: 'amd-svm', kind: 'raw' });
    const img = verifyContainerBytes(container, { banks: ['sha256', 'sha384'] });
    const reference = referenceValuesFor(img, { policy });
    writeFileSync(join(dir, 'reference-values.json'), JSON.stringify(reference));
    const other = referenceValuesFor(verifyContainerBytes(buildImage(randomBytes(64 * 1024), { arch: 'amd-svm', kind: 'raw' }), { banks: ['sha256', 'sha384'] }), { policy });
    writeFileSync(join(dir, 'other-reference-values.json'), JSON.stringify(other));

    // measured load: extend as the plan says, and log it
    const events = planMeasurement(img, policy, ['sha256', 'sha384']);
    for (const e of events) att.run('tpm2_pcrextend', [`${e.pcr}:sha256=${e.digests.sha256!.toString('hex')},sha384=${e.digests.sha384!.toString('hex')}`]);
    const runtimeLog = writeEventLog({ specId: { banks: ['sha256', 'sha384'] }, events: events.map((e) => ({ pcr: e.pcr, type: e.eventType, data: e.data, digests: { sha256: e.digests.sha256!, sha384: e.digests.sha384! } })) });

    // AK enrollment by credential activation
    const cas = swtpmCaCertificates(tpm);
    cas.forEach((pem, i) => writeFileSync(join(dir, `ek-ca${i}.pem`), pem));
    const { ekPublic } = att.createEk('rsa');
    const ak = att.createAk('ecc256');
    const pol = {
      schema: 'hyperenclave/verifier-policy',
      version: 1,
      checks: { 'ak.provenance': 'required', 'eventlog.runtime': 'required', 'reference.hypervisor': 'required', 'platform.kind': 'required' },
      requiredPcrs: { sha256: [0, 1, 2, 3, 4, 5, 6, 7, 12], sha384: [12] },
      referenceValues: 'reference-values.json',
      hypervisor: { pcr: 12 },
      akProvenance: { trustedEkCaFiles: cas.map((_, i) => `ek-ca${i}.pem`) },
    };
    writeFileSync(join(dir, 'policy.json'), JSON.stringify(pol));
    writeFileSync(join(dir, 'policy-other.json'), JSON.stringify({ ...pol, referenceValues: 'other-reference-values.json' }));
    const verifier = new Verifier({ stateDir: join(dir, 'verifier'), policyPath: join(dir, 'policy.json') });
    const ch = startEnrollment(verifier, { ekCertificates: [readEkCertificate(att)!], ekPublic: ekPublic.toString('base64'), akPublic: ak.tpmtPublic.toString('base64') });
    const secret = activateWithTpm2Tools(att, toTpm2ToolsCredentialFile({ credentialBlob: Buffer.from(ch.credentialBlob, 'base64'), encryptedSecret: Buffer.from(ch.encryptedSecret, 'base64') }));
    finishEnrollment(verifier, { id: ch.id, secret: secret.toString('base64') });

    const nonce = randomBytes(32);
    const ev = await collectEvidence(tpm2ToolsAttesterTpm(att), {
      nonce,
      ak,
      pcrSelection: { sha256: [0, 1, 2, 3, 4, 5, 6, 7, 12], sha384: [12] },
      claims: { platformKind: 'emulated', hypervisor: { containerDigest: img.imageDigests.sha256!.toString('hex'), pcr: 12 } },
      ekCertificates: [readEkCertificate(att)!],
      logs: { runtime: runtimeLog },
    });
    const out = verifier.verifyBundle(JSON.parse(JSON.stringify(ev)), nonce);
    expect(out.result['ear.status'], formatResultTable(out.result)).toBe('affirming');
    for (const n of ['signature', 'nonce', 'pcr.digest', 'pcr.selection', 'eventlog.runtime', 'reference.hypervisor', 'ak.provenance', 'platform.kind', 'clock'])
      expect(out.result.checks.find((c) => c.name === n)?.status, n).toBe('pass');
    expect((await verifyEar(await out.ear(), verifier.state.key().publicKey)).submods.hyperenclave!['ear.status']).toBe('affirming');

    const v2 = new Verifier({ stateDir: join(dir, 'verifier'), policyPath: join(dir, 'policy-other.json') });
    const bad = v2.verifyBundle(JSON.parse(JSON.stringify(ev)), nonce).result;
    expect(bad.checks.find((c) => c.name === 'reference.hypervisor')?.status).toBe('fail');
    expect(bad['ear.status']).toBe('contraindicated');
  });
});
