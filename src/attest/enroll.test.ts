/**
 * AK enrollment by credential activation against a real TPM (swtpm with an EK certificate from
 * a private CA); tpm2-tools' tpm2_activatecredential answers our software MakeCredential.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, swtpmCaCertificates, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { finishEnrollment, startEnrollment, type EnrollStartRequest } from './enroll.js';
import { toTpm2ToolsCredentialFile } from './credential.js';
import { buildEvidence, qualificationFor } from './evidence.js';
import { Tpm2ToolsAttester, activateWithTpm2Tools, readEkCertificate, tpm2ToolsAvailable } from './tpm2-tools-attester.js';
import { Verifier } from './verifier.js';
import { skipUnless } from '../../test/helpers/require.js';

const skip = skipUnless('enrollment tests', [['swtpm', swtpmAvailable({ ek: true })], ['tpm2-tools', tpm2ToolsAvailable()]]);

describe.skipIf(!!skip)('AK enrollment by credential activation (swtpm with EK certificate)', () => {
  let tpmA: SwtpmInstance;
  let tpmB: SwtpmInstance;
  let a: Tpm2ToolsAttester;
  let b: Tpm2ToolsAttester;
  let dir: string;
  let verifier: Verifier;
  let reqA: EnrollStartRequest;
  let akA: { tpmtPublic: Buffer; pem: string };

  beforeAll(async () => {
    [tpmA, tpmB] = await Promise.all([startSwtpm({ ek: true }), startSwtpm({ ek: true })]);
    a = new Tpm2ToolsAttester(tpmA.tcti);
    b = new Tpm2ToolsAttester(tpmB.tcti);
    dir = mkdtempSync(join(tmpdir(), 'attest-enroll-'));
    const cas = swtpmCaCertificates(tpmA);
    cas.forEach((pem, i) => writeFileSync(join(dir, `ca${i}.pem`), pem));
    writeFileSync(join(dir, 'policy.json'), JSON.stringify({ schema: 'hyperenclave/verifier-policy', version: 1, akProvenance: { trustedEkCaFiles: cas.map((_, i) => `ca${i}.pem`) } }));
    verifier = new Verifier({ stateDir: join(dir, 'state'), policyPath: join(dir, 'policy.json') });
    const { ekPublic } = a.createEk('rsa');
    akA = a.createAk('ecc256');
    const cert = readEkCertificate(a);
    expect(cert, 'swtpm EK certificate in NV 0x01c00002').toBeDefined();
    reqA = { ekCertificates: [cert!], ekPublic: ekPublic.toString('base64'), akPublic: akA.tpmtPublic.toString('base64') };
    b.createEk('rsa');
    b.createAk('ecc256');
  }, 120_000);
  afterAll(async () => {
    a?.cleanup();
    b?.cleanup();
    await Promise.all([tpmA?.stop(), tpmB?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('EK chain checked, MakeCredential answered by the TPM, AK enrolled; then a bundle passes every check it can run', () => {
    const ch = startEnrollment(verifier, reqA);
    const file = toTpm2ToolsCredentialFile({ credentialBlob: Buffer.from(ch.credentialBlob, 'base64'), encryptedSecret: Buffer.from(ch.encryptedSecret, 'base64') });
    const secret = activateWithTpm2Tools(a, file);
    const rec = finishEnrollment(verifier, { id: ch.id, secret: secret.toString('base64') });
    expect(rec.method).toBe('credential-activation');
    expect(rec.ekCertSubject).toBeTruthy();
    // single use
    expect(() => finishEnrollment(verifier, { id: ch.id, secret: secret.toString('base64') })).toThrow(/no pending enrollment/);

    const claims = { nonce: randomBytes(32), platformKind: 'emulated' as const };
    const q = a.quote('sha256', [0, 7, 12], qualificationFor(claims).toString('hex'));
    const ev = buildEvidence(claims, { quotes: [{ bank: 'sha256', attest: q.attest, signature: q.signature, values: q.values }], ak: akA });
    const { result } = verifier.verifyBundle(ev, claims.nonce);
    expect(result.checks.find((c) => c.name === 'ak.provenance')?.status).toBe('pass');
    expect(result.checks.find((c) => c.name === 'platform.kind')).toMatchObject({ status: 'pass', reason: expect.stringMatching(/swtpm/) });
    expect(result.platformKind).toBe('emulated');
    expect(result.checks.filter((c) => c.status === 'fail'), JSON.stringify(result.checks)).toEqual([]);
    // this policy has no reference values: the platform state is not judged, so at best warning
    expect(result['ear.status']).toBe('warning');
    expect(result.ak?.enrolled).toBe(true);
  });

  it('a quote from another TPM is refused: under the enrolled AK by signature, under its own AK by ak.provenance', () => {
    const claims = { nonce: randomBytes(32), platformKind: 'emulated' as const };
    const q = b.quote('sha256', [0, 7], qualificationFor(claims).toString('hex'));
    const quotes = [{ bank: 'sha256' as const, attest: q.attest, signature: q.signature, values: q.values }];
    const asA = verifier.verifyBundle(buildEvidence(claims, { quotes, ak: akA }), claims.nonce).result;
    expect(asA.checks.find((c) => c.name === 'signature')?.status).toBe('fail');
    expect(asA['ear.status']).toBe('contraindicated');
    b.run('tpm2_readpublic', ['-c', 'ak.ctx', '-o', 'akb.pub', '-f', 'tss']);
    b.run('tpm2_readpublic', ['-c', 'ak.ctx', '-o', 'akb.pem', '-f', 'pem']);
    b.flush();
    const akB = { tpmtPublic: readFileSync(b.path('akb.pub')).subarray(2), pem: readFileSync(b.path('akb.pem'), 'utf8') };
    const asB = verifier.verifyBundle(buildEvidence(claims, { quotes, ak: akB }), claims.nonce).result;
    expect(asB.checks.find((c) => c.name === 'signature')?.status).toBe('pass');
    expect(asB.checks.find((c) => c.name === 'ak.provenance')).toMatchObject({ status: 'fail', reason: expect.stringMatching(/not enrolled/) });
    expect(asB['ear.status']).toBe('contraindicated');
  });

  it('another TPM cannot answer the challenge (the AK is not in the EK\'s TPM)', () => {
    const ch = startEnrollment(verifier, reqA);
    const file = toTpm2ToolsCredentialFile({ credentialBlob: Buffer.from(ch.credentialBlob, 'base64'), encryptedSecret: Buffer.from(ch.encryptedSecret, 'base64') });
    expect(() => activateWithTpm2Tools(b, file)).toThrow(/tpm2_activatecredential/);
    expect(() => finishEnrollment(verifier, { id: ch.id, secret: randomBytes(32).toString('base64') })).toThrow(/does not match/);
  });

  it('refuses an EK certificate from an untrusted CA and an EK public the certificate does not certify', () => {
    const other = new Verifier({ stateDir: join(dir, 'state2'), policy: { policy: { schema: 'hyperenclave/verifier-policy', version: 1 }, trustedEkCas: swtpmCaCertificates(tpmB) } });
    expect(() => startEnrollment(other, reqA)).toThrow(/EK certificate: .*no trusted issuer/);
    b.run('tpm2_readpublic', ['-c', 'ek.ctx', '-o', 'ekb.pub']);
    b.flush();
    const bad = { ...reqA, ekPublic: readFileSync(b.path('ekb.pub')).toString('base64') };
    expect(() => startEnrollment(verifier, bad)).toThrow(/not the key the EK certificate certifies/);
  });

  it('refuses an AK that is not a restricted signing key', () => {
    const ek = Buffer.from(reqA.ekPublic, 'base64');
    // the EK itself is a restricted *decryption* key: not acceptable as an AK
    expect(() => startEnrollment(verifier, { ...reqA, akPublic: ek.toString('base64') })).toThrow(/AK attributes lack sign|must not be a decryption key/);
    expect(new X509Certificate(reqA.ekCertificates[0]!).subject).toBeDefined();
  });

  it('ECC P-256 EK: MakeCredential with ECDH + KDFe is answered by the TPM', () => {
    // swtpm certifies a P-384 high-range ECC EK (NV 0x01c00016); tpm2_createek makes the P-256
    // default-template EK, so this test certifies that key with its own CA (openssl).
    const { ekPublic } = b.createEk('ecc');
    const ak = b.createAk('ecc256', 'ake');
    b.run('tpm2_readpublic', ['-c', 'ek.ctx', '-f', 'pem', '-o', 'ekecc.pem']);
    b.flush();
    const ossl = (args: string[]) => {
      const r = spawnSync('openssl', args, { cwd: b.dir, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
    };
    ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=test EK CA']);
    ossl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'dummy.key', '-out', 'ek.csr', '-subj', '/CN=ecc ek']);
    // the TCG EK profile the verifier checks: EK EKU, keyAgreement for an ECC EK, the TPM in the SAN
    writeFileSync(b.path('ek.ext'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyAgreement\nextendedKeyUsage=2.23.133.8.1\nsubjectAltName=critical,dirName:tpm_dn\n[tpm_dn]\nx.2.23.133.2.1=id:00001014\nx.2.23.133.2.2=swtpm\nx.2.23.133.2.3=id:20191023\n');
    ossl(['x509', '-req', '-in', 'ek.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-force_pubkey', 'ekecc.pem', '-extfile', 'ek.ext', '-out', 'ekcert.pem', '-days', '1']);
    const v = new Verifier({ stateDir: join(dir, 'state3'), policy: { policy: { schema: 'hyperenclave/verifier-policy', version: 1 }, trustedEkCas: [readFileSync(b.path('ca.pem'), 'utf8')] } });
    const ch = startEnrollment(v, { ekCertificates: [readFileSync(b.path('ekcert.pem'), 'utf8')], ekPublic: ekPublic.toString('base64'), akPublic: ak.tpmtPublic.toString('base64') });
    const secret = activateWithTpm2Tools(b, toTpm2ToolsCredentialFile({ credentialBlob: Buffer.from(ch.credentialBlob, 'base64'), encryptedSecret: Buffer.from(ch.encryptedSecret, 'base64') }), 'ake');
    expect(finishEnrollment(v, { id: ch.id, secret: secret.toString('base64') }).akName).toMatch(/^000b[0-9a-f]{64}$/);
  });
});

describe.skipIf(!!skip)('enrollment through the verifier service', () => {
  it('POST /enroll/start and /enroll/finish enroll an AK; a bad answer is a JSON 400', async () => {
    const { startVerifierService } = await import('./service.js');
    const tpm = await startSwtpm({ ek: true });
    const att = new Tpm2ToolsAttester(tpm.tcti);
    const d = mkdtempSync(join(tmpdir(), 'attest-enroll-svc-'));
    const v = new Verifier({ stateDir: d, policy: { policy: { schema: 'hyperenclave/verifier-policy', version: 1 }, trustedEkCas: swtpmCaCertificates(tpm) } });
    const svc = await startVerifierService({ verifier: v });
    try {
      const { ekPublic } = att.createEk('rsa');
      const ak = att.createAk('ecc256');
      const post = async (p: string, body: unknown) => {
        const r = await fetch(`${svc.url}${p}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        return { status: r.status, json: (await r.json()) as any };
      };
      const start = await post('/enroll/start', { ekCertificates: [readEkCertificate(att)!], ekPublic: ekPublic.toString('base64'), akPublic: ak.tpmtPublic.toString('base64') });
      expect(start.status, JSON.stringify(start.json)).toBe(200);
      const secret = activateWithTpm2Tools(att, toTpm2ToolsCredentialFile({ credentialBlob: Buffer.from(start.json.credentialBlob, 'base64'), encryptedSecret: Buffer.from(start.json.encryptedSecret, 'base64') }));
      const wrong = await post('/enroll/finish', { id: start.json.id, secret: randomBytes(32).toString('base64') });
      expect(wrong.status).toBe(400);
      expect(wrong.json.error).toMatch(/does not match/);
      // the failed attempt consumed the challenge: start again
      const again = await post('/enroll/start', { ekCertificates: [readEkCertificate(att)!], ekPublic: ekPublic.toString('base64'), akPublic: ak.tpmtPublic.toString('base64') });
      const secret2 = activateWithTpm2Tools(att, toTpm2ToolsCredentialFile({ credentialBlob: Buffer.from(again.json.credentialBlob, 'base64'), encryptedSecret: Buffer.from(again.json.encryptedSecret, 'base64') }));
      const fin = await post('/enroll/finish', { id: again.json.id, secret: secret2.toString('base64') });
      expect(fin.status, JSON.stringify(fin.json)).toBe(200);
      expect(fin.json.akName).toMatch(/^000b/);
      void secret;
      expect((await post('/enroll/start', { ekCertificates: 'x' })).status).toBe(400);
    } finally {
      await svc.close();
      att.cleanup();
      await tpm.stop();
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!!skip)('enrollment through files (ak enroll / verifier enroll halves)', () => {
  it('request.json -> challenge.json -> answer.json -> enrollment record', async () => {
    const { akEnrollRequestFile, akEnrollAnswerFile, verifierEnrollStartFiles, verifierEnrollFinishFile } = await import('./files.js');
    const { tpm2ToolsEnrollingTpm } = await import('./tpm2-tools-attester.js');
    const tpm = await startSwtpm({ ek: true });
    const att = new Tpm2ToolsAttester(tpm.tcti);
    const d = mkdtempSync(join(tmpdir(), 'attest-enroll-files-'));
    try {
      att.createEk('rsa');
      att.createAk('ecc256');
      const v = new Verifier({ stateDir: join(d, 'state'), policy: { policy: { schema: 'hyperenclave/verifier-policy', version: 1 }, trustedEkCas: swtpmCaCertificates(tpm) } });
      const et = tpm2ToolsEnrollingTpm(att);
      await akEnrollRequestFile(et, join(d, 'request.json'));
      verifierEnrollStartFiles(v, join(d, 'request.json'), join(d, 'challenge.json'));
      await akEnrollAnswerFile(et, join(d, 'challenge.json'), join(d, 'answer.json'));
      const rec = verifierEnrollFinishFile(v, join(d, 'answer.json'));
      expect(rec.ekCertSubject).toBeTruthy();
      expect(readFileSync(join(d, 'state', 'enrollments', `${rec.akSpkiSha256}.json`), 'utf8')).toContain(rec.akName);
      expect(() => verifierEnrollFinishFile(v, join(d, 'answer.json'))).toThrow(/no pending enrollment/);
    } finally {
      att.cleanup();
      await tpm.stop();
      rmSync(d, { recursive: true, force: true });
    }
  });
});
