/**
 * Key broker over HTTP: a real TPM (swtpm via tpm2-tools: EK certificate, enrollment by
 * credential activation, PCR 12 hypervisor measurement, PCR 13 HAK event) and enclave quotes in
 * the CONTRACT-12 layout made here with a test Ed25519 HAK. The enclave's P-256 public key is its
 * userData (bound with the nonce in REPORTDATA). An allowed enclave gets the secret as a JWE that
 * only its private key opens (jose); an enclave whose MRENCLAVE the resource does not allow is
 * refused with the verifier's check named; a replayed request is refused; every request is audited.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compactDecrypt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, swtpmCaCertificates, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { writeEventLog } from '../eventlog/index.js';
import { buildEvidence, qualificationFor, type BundleClaims, type Evidence } from '../attest/evidence.js';
import { toTpm2ToolsCredentialFile } from '../attest/credential.js';
import { Tpm2ToolsAttester, activateWithTpm2Tools, readEkCertificate, tpm2ToolsAvailable } from '../attest/tpm2-tools-attester.js';
import { Verifier } from '../attest/verifier.js';
import { startVerifierService, type RunningService } from '../attest/service.js';
import { loadKbsPolicy } from './kbs.js';

const skip = swtpmAvailable({ ek: true }) ?? tpm2ToolsAvailable();
if (skip) console.warn(`skipping key broker: ${skip}`);

const sha256 = (...b: (Buffer | string)[]): Buffer => {
  const h = createHash('sha256');
  for (const x of b) h.update(x);
  return h.digest();
};
const HV_IMAGE = sha256('hypervisor image');
const MRENCLAVE = sha256('the key-value store enclave');
const OTHER = sha256('some other enclave');
const MRSIGNER = sha256('enclave signer');
const rawEd25519 = (k: KeyObject): Buffer => (k.export({ type: 'spki', format: 'der' }) as Buffer).subarray(12);
const hakEvent = (pub: Buffer): Buffer => Buffer.from(`hyperenclave-hak:ed25519:${pub.toString('hex')}`, 'ascii');

describe.skipIf(!!skip)('key broker: secrets only to affirming, allowed enclaves, wrapped to their own key', () => {
  let tpm: SwtpmInstance;
  let att: Tpm2ToolsAttester;
  let ak: { tpmtPublic: Buffer; pem: string };
  let ekCert: string;
  let dir: string;
  let svc: RunningService;
  const hak = generateKeyPairSync('ed25519');
  const SECRET = randomBytes(32);

  beforeAll(async () => {
    tpm = await startSwtpm({ ek: true });
    att = new Tpm2ToolsAttester(tpm.tcti);
    dir = mkdtempSync(join(tmpdir(), 'he-kbs-'));
    att.extend(12, 'sha256', HV_IMAGE.toString('hex'));
    att.extend(13, 'sha256', sha256(hakEvent(rawEd25519(hak.publicKey))).toString('hex'));
    const cas = swtpmCaCertificates(tpm).map((pem, i) => (writeFileSync(join(dir, `ca${i}.pem`), pem), `ca${i}.pem`));
    writeFileSync(join(dir, 'reference-values.json'), JSON.stringify({ schema: 'hyperenclave/reference-values', version: 1, pcrs: { sha256: { '12': sha256(Buffer.alloc(32), HV_IMAGE).toString('hex') } }, hypervisor: { pcr: 12, digests: { sha256: [HV_IMAGE.toString('hex')] } } }));
    writeFileSync(
      join(dir, 'policy.json'),
      JSON.stringify({ schema: 'hyperenclave/verifier-policy', version: 1, referenceValues: 'reference-values.json', requiredPcrs: { sha256: [0, 7, 12, 13] }, hypervisor: { pcr: 12, hakPcr: 13 }, akProvenance: { trustedEkCaFiles: cas } }),
    );
    writeFileSync(join(dir, 'kv-master.key'), SECRET);
    writeFileSync(join(dir, 'kbs.json'), JSON.stringify({ schema: 'hyperenclave/kbs-policy', version: 1, resources: { 'kv/master-key': { secretFile: 'kv-master.key', allowed: [{ name: 'kv store', mrenclave: MRENCLAVE.toString('hex'), mrsigner: MRSIGNER.toString('hex') }] } } }));
    const v = new Verifier({ stateDir: join(dir, 'state'), policyPath: join(dir, 'policy.json') });
    svc = await startVerifierService({ verifier: v, kbs: loadKbsPolicy(join(dir, 'kbs.json')) });
    // enrollment by credential activation, over the service
    const { ekPublic } = att.createEk('rsa');
    ak = att.createAk('ecc256');
    ekCert = readEkCertificate(att)!;
    const ch = await post('/enroll/start', { ekCertificates: [ekCert], ekPublic: ekPublic.toString('base64'), akPublic: ak.tpmtPublic.toString('base64') });
    const secret = activateWithTpm2Tools(att, toTpm2ToolsCredentialFile({ credentialBlob: Buffer.from(ch.json.credentialBlob, 'base64'), encryptedSecret: Buffer.from(ch.json.encryptedSecret, 'base64') }));
    expect((await post('/enroll/finish', { id: ch.json.id, secret: secret.toString('base64') })).status).toBe(200);
  }, 120_000);
  afterAll(async () => {
    await svc?.close();
    att?.cleanup();
    await tpm?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function post(path: string, body: unknown): Promise<{ status: number; json: any }> {
    const r = await fetch(`${svc.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: r.status, json: await r.json() };
  }

  /** An enclave quote laid out by hand from CONTRACT-12, REPORTDATA = SHA-256(nonce ‖ userData) ‖ 0^32. */
  function enclaveQuote(nonce: Buffer, userData: Buffer, mrenclave: Buffer): Buffer {
    const body = Buffer.alloc(384);
    body.writeBigUInt64LE(0x5n, 48);
    body.writeBigUInt64LE(0x3n, 56);
    mrenclave.copy(body, 64);
    MRSIGNER.copy(body, 128);
    Buffer.concat([sha256(nonce, userData), Buffer.alloc(32)]).copy(body, 320);
    const head = Buffer.alloc(16);
    head.write('HEQ1', 0, 'latin1');
    head.writeUInt16LE(1, 4);
    head.writeUInt16LE(1, 6);
    head.writeUInt32LE(13, 8);
    const signed = Buffer.concat([head, body, rawEd25519(hak.publicKey)]);
    return Buffer.concat([signed, sign(null, signed, hak.privateKey)]);
  }

  async function evidence(mrenclave: Buffer, enclaveKey: KeyObject): Promise<Evidence> {
    const { json } = await post('/challenge', {});
    const nonce = Buffer.from(json.nonce, 'hex');
    const userData = enclaveKey.export({ type: 'spki', format: 'der' }) as Buffer;
    const claims: BundleClaims = { nonce, platformKind: 'emulated', hypervisor: { pcr: 12, hakPcr: 13 }, enclaves: [{ backend: 'sgx-like', quote: enclaveQuote(nonce, userData, mrenclave).toString('base64'), userData: userData.toString('hex') }] };
    const q = att.quote('sha256', [0, 7, 12, 13], qualificationFor(claims).toString('hex'));
    const runtime = writeEventLog({
      specId: { banks: ['sha256'] },
      events: [
        { pcr: 12, type: 'EV_IPL', data: Buffer.from('hypervisor image'), digests: { sha256: HV_IMAGE } },
        { pcr: 13, type: 'EV_NONHOST_INFO', data: hakEvent(rawEd25519(hak.publicKey)), digests: { sha256: sha256(hakEvent(rawEd25519(hak.publicKey))) } },
      ],
    });
    return buildEvidence(claims, { quotes: [{ bank: 'sha256', attest: q.attest, signature: q.signature, values: q.values }], ak, ekCertificates: [ekCert], eventLogs: { runtime } });
  }

  it('releases the secret to the allowed enclave, wrapped so only its key opens it; audited', async () => {
    const enclaveKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const ev = await evidence(MRENCLAVE, enclaveKey.publicKey);
    const r = await post('/kbs/resource', { resource: 'kv/master-key', evidence: ev });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(decodeProtectedHeader(r.json.jwe)).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: 'kv/master-key' });
    const { plaintext } = await compactDecrypt(r.json.jwe, enclaveKey.privateKey);
    expect(Buffer.from(plaintext).equals(SECRET)).toBe(true);
    // another key (the host's, say) cannot open it
    await expect(compactDecrypt(r.json.jwe, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)).rejects.toThrow();
    // the same evidence again: the challenge is spent
    const again = await post('/kbs/resource', { resource: 'kv/master-key', evidence: ev });
    expect(again.status).toBe(403);
    expect(again.json.failedCheck).toBe('nonce.freshness');
    const audit = await svc.store.releases('kv/master-key');
    expect(audit.map((a) => a.outcome)).toEqual(['released', 'refused']);
    expect(audit[0]).toMatchObject({ mrenclave: MRENCLAVE.toString('hex'), nonce: ev.nonce, akSpkiSha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(JSON.stringify(audit)).not.toContain(SECRET.toString('hex'));
  }, 60_000);

  it('refuses an enclave whose MRENCLAVE the resource does not allow, naming the check; unknown resources are 404', async () => {
    const ev = await evidence(OTHER, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey);
    const r = await post('/kbs/resource', { resource: 'kv/master-key', evidence: ev });
    expect(r.status).toBe(403);
    expect(r.json).toMatchObject({ failedCheck: 'enclave.mrenclave', status: 'contraindicated' });
    expect(r.json.error).toMatch(/^not released: enclave\.mrenclave: /);
    expect(r.json.jwe).toBeUndefined();
    // the EAR says why in AR4SI terms: the enclave's runtime is contraindicated (96), its identity checks are on runtime-opaque
    const { decodeJwt } = await import('jose');
    const sub = (decodeJwt(r.json.ear).submods as Record<string, Record<string, unknown>>).hyperenclave!;
    expect((sub['ear.trustworthiness-vector'] as Record<string, number>)['runtime-opaque']).toBe(96);
    expect((sub['hyperenclave.checks'] as { name: string; claim: string }[]).find((c) => c.name === 'enclave.mrenclave')).toMatchObject({ status: 'fail', claim: 'runtime-opaque' });
    expect((await svc.store.releases('kv/master-key')).at(-1)).toMatchObject({ outcome: 'refused', mrenclave: OTHER.toString('hex'), reason: expect.stringMatching(/^enclave\.mrenclave: /) });
    expect((await post('/kbs/resource', { resource: 'nope', evidence: ev })).status).toBe(404);
  }, 60_000);
});
