/**
 * The verifier's negative matrix (issue 12, item 6): real quotes from swtpm (EK certificate from
 * swtpm's local CA, AK enrolled by credential activation through tpm2-tools), the hypervisor's
 * PCR 12 measurement and a HAK event in PCR 13, and enclave quotes in the CONTRACT-12 layout
 * signed by a test Ed25519 HAK made with Node crypto (the verifier must not care who signed: the
 * key is trusted only because PCR 13 names it). A baseline affirms; each case mutates evidence
 * or policy and must be refused by the check named in the case.
 */
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, swtpmCaCertificates, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { writeEventLog, type EventInput } from '../eventlog/index.js';
import { buildEvidence, qualificationFor, type BundleClaims, type Evidence, type EvidenceEnclave } from './evidence.js';
import { qualifyingData } from './binding.js';
import { startEnrollment, finishEnrollment } from './enroll.js';
import { toTpm2ToolsCredentialFile } from './credential.js';
import { Tpm2ToolsAttester, activateWithTpm2Tools, readEkCertificate, tpm2ToolsAvailable } from './tpm2-tools-attester.js';
import { Verifier } from './verifier.js';
import type { VerifierPolicy } from './policy.js';
import { formatResultTable, type AttestationResult, type CheckResult } from './result.js';
import { startVerifierService } from './service.js';
import { parseQuoteAttest } from './tpm-structures.js';

const skip = swtpmAvailable({ ek: true }) ?? tpm2ToolsAvailable();
if (skip) console.warn(`skipping the verifier negative matrix: ${skip}`);

const sha256 = (...b: (Buffer | string)[]): Buffer => {
  const h = createHash('sha256');
  for (const x of b) h.update(x);
  return h.digest();
};
const HV_IMAGE = sha256('hypervisor image');
const HV_HEADER = sha256('hypervisor header');
const HV_SIGNER = sha256('hypervisor signer');
const MRENCLAVE = sha256('enclave code');
const MRSIGNER = sha256('enclave signer');
const EXIT_CAP = sha256('hyperenclave:hypervisor-exit v=1'); // hypervisor/core/src/trust.rs EXIT_EVENT
const ISVPRODID = 7;
const ISVSVN = 2;
const ATTR_INIT_64 = 0x5n; // INIT | MODE64BIT
const DEBUG = 0x2n;

/** Raw 32-byte Ed25519 public key (RFC 8410 SPKI minus its 12-byte prefix). */
const rawEd25519 = (k: KeyObject): Buffer => (k.export({ type: 'spki', format: 'der' }) as Buffer).subarray(12);
/** The HAK event data exactly as CONTRACT-12 writes it (independent of src/attest/enclave-quote.ts). */
const hakEvent = (pub: Buffer): Buffer => Buffer.from(`hyperenclave-hak:ed25519:${pub.toString('hex')}`, 'ascii');

interface QuoteOpts {
  mrenclave?: Buffer;
  mrsigner?: Buffer;
  isvProdId?: number;
  isvSvn?: number;
  attributes?: bigint;
  reportData?: Buffer;
  hakPcr?: number;
  /** Quote bytes 12-15 (bit 0: DMA protection on). */
  flags?: number;
  key?: { privateKey: KeyObject; publicKey: KeyObject };
}

describe.skipIf(!!skip)('verifier negative matrix (swtpm quotes, Ed25519 test HAK)', () => {
  let tpm: SwtpmInstance;
  let att: Tpm2ToolsAttester;
  let ak: { tpmtPublic: Buffer; pem: string };
  let ekCert: string;
  let dir: string;
  let enrolledState: string;
  let cas: string[];
  let pcr12: string;
  const hak = generateKeyPairSync('ed25519');
  const evil = generateKeyPairSync('ed25519');
  let hakPub: Buffer;
  let n = 0;

  beforeAll(async () => {
    tpm = await startSwtpm({ ek: true });
    att = new Tpm2ToolsAttester(tpm.tcti);
    dir = mkdtempSync(join(tmpdir(), 'attest-matrix-'));
    hakPub = rawEd25519(hak.publicKey);
    // PCR 12: the measured hypervisor (image, header, signer); PCR 13: exactly one HAK event;
    // PCR 14: the HAK event and one more; PCR 15: nothing.
    let v: Buffer<ArrayBufferLike> = Buffer.alloc(32);
    for (const d of [HV_IMAGE, HV_HEADER, HV_SIGNER]) {
      att.extend(12, 'sha256', d.toString('hex'));
      v = sha256(v, d);
    }
    pcr12 = v.toString('hex');
    att.extend(13, 'sha256', sha256(hakEvent(hakPub)).toString('hex'));
    // PCR 11: a hypervisor measured, disabled (the exit cap), and measured again (a reload)
    for (const d of [HV_IMAGE, EXIT_CAP, HV_IMAGE]) att.extend(11, 'sha256', d.toString('hex'));
    att.extend(14, 'sha256', sha256(hakEvent(hakPub)).toString('hex'));
    att.extend(14, 'sha256', sha256('something else').toString('hex'));
    // enrollment by credential activation, as `verifier enroll` does
    cas = swtpmCaCertificates(tpm).map((pem, i) => {
      writeFileSync(join(dir, `ek-ca${i}.pem`), pem);
      return `ek-ca${i}.pem`;
    });
    const { ekPublic } = att.createEk('rsa');
    ak = att.createAk('ecc256');
    ekCert = readEkCertificate(att)!;
    enrolledState = join(dir, 'enrolled');
    const v0 = verifier({}, enrolledState);
    const ch = startEnrollment(v0, { ekCertificates: [ekCert], ekPublic: ekPublic.toString('base64'), akPublic: ak.tpmtPublic.toString('base64') });
    const secret = activateWithTpm2Tools(att, toTpm2ToolsCredentialFile({ credentialBlob: Buffer.from(ch.credentialBlob, 'base64'), encryptedSecret: Buffer.from(ch.encryptedSecret, 'base64') }));
    finishEnrollment(v0, { id: ch.id, secret: secret.toString('base64') });
  }, 120_000);
  afterAll(async () => {
    att?.cleanup();
    await tpm?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const runtimeEvents = (extra: EventInput[] = []): EventInput[] => [
    { pcr: 12, type: 'EV_IPL', data: Buffer.from('hypervisor image'), digests: { sha256: HV_IMAGE } },
    { pcr: 12, type: 'EV_IPL', data: Buffer.from('hypervisor header'), digests: { sha256: HV_HEADER } },
    { pcr: 12, type: 'EV_IPL', data: Buffer.from('hypervisor signer'), digests: { sha256: HV_SIGNER } },
    { pcr: 13, type: 'EV_NONHOST_INFO', data: hakEvent(hakPub), digests: { sha256: sha256(hakEvent(hakPub)) } },
    ...extra,
  ];
  const runtimeLog = (events = runtimeEvents()): Buffer => writeEventLog({ specId: { banks: ['sha256'] }, events });

  /** An enclave quote laid out by hand from CONTRACT-12 (not by the code under test). */
  function enclaveQuote(nonce: Buffer, userData: Buffer, o: QuoteOpts = {}): Buffer {
    const body = Buffer.alloc(384);
    body.writeBigUInt64LE(o.attributes ?? ATTR_INIT_64, 48);
    body.writeBigUInt64LE(0x3n, 56); // XFRM x87|SSE
    (o.mrenclave ?? MRENCLAVE).copy(body, 64);
    (o.mrsigner ?? MRSIGNER).copy(body, 128);
    body.writeUInt16LE(o.isvProdId ?? ISVPRODID, 256);
    body.writeUInt16LE(o.isvSvn ?? ISVSVN, 258);
    (o.reportData ?? Buffer.concat([sha256(nonce, userData), Buffer.alloc(32)])).copy(body, 320);
    const head = Buffer.alloc(16);
    head.write('HEQ1', 0, 'latin1');
    head.writeUInt16LE(1, 4);
    head.writeUInt16LE(1, 6);
    head.writeUInt32LE(o.hakPcr ?? 13, 8);
    head.writeUInt32LE(o.flags ?? 0, 12);
    const key = o.key ?? hak;
    const signed = Buffer.concat([head, body, rawEd25519(key.publicKey)]);
    return Buffer.concat([signed, sign(null, signed, key.privateKey)]);
  }

  function enclave(nonce: Buffer, o: QuoteOpts & { userData?: Buffer } = {}): EvidenceEnclave {
    const userData = o.userData ?? randomBytes(32);
    return { backend: 'sgx-like', quote: enclaveQuote(nonce, userData, o).toString('base64'), userData: userData.toString('hex') };
  }

  interface BundleOpts {
    pcrs?: number[];
    runtime?: Buffer | null;
    enclaves?: (nonce: Buffer) => EvidenceEnclave[];
    platformKind?: 'real' | 'emulated';
    nonce?: Buffer;
  }
  function bundle(o: BundleOpts = {}): Evidence {
    const nonce = o.nonce ?? randomBytes(32);
    const claims: BundleClaims = { nonce, platformKind: o.platformKind ?? 'emulated', hypervisor: { pcr: 12, hakPcr: 13 }, enclaves: (o.enclaves ?? ((x) => [enclave(x)]))(nonce) };
    const q = att.quote('sha256', o.pcrs ?? [0, 1, 2, 3, 4, 5, 6, 7, 12, 13], qualificationFor(claims).toString('hex'));
    const rt = o.runtime === undefined ? runtimeLog() : o.runtime;
    return buildEvidence(claims, { quotes: [{ bank: 'sha256', attest: q.attest, signature: q.signature, values: q.values }], ak, ekCertificates: [ekCert], ...(rt ? { eventLogs: { runtime: rt } } : {}) });
  }

  const basePolicy = (): VerifierPolicy => ({
    schema: 'hyperenclave/verifier-policy',
    version: 1,
    requiredPcrs: { sha256: [0, 1, 2, 3, 4, 5, 6, 7, 12, 13] },
    referenceValues: 'reference-values.json',
    hypervisor: { pcr: 12, hakPcr: 13 },
    enclaves: { allowed: [{ name: 'test enclave', mrenclave: MRENCLAVE.toString('hex'), mrsigner: MRSIGNER.toString('hex'), isvProdId: ISVPRODID, minIsvSvn: 2 }], minCount: 1 },
    akProvenance: { trustedEkCaFiles: cas },
  });
  const refValues = (over: Record<string, unknown> = {}) => ({ schema: 'hyperenclave/reference-values', version: 1, pcrs: { sha256: { '12': pcr12 } }, hypervisor: { pcr: 12, digests: { sha256: [HV_IMAGE.toString('hex')] } }, ...over });

  /**
   * A verifier with its own policy directory (EK CA copies, reference values) and its own state:
   * the AK's enrollment record copied from the enrolling verifier, no clock record yet.
   */
  function verifier(over: Partial<VerifierPolicy> = {}, stateDir?: string, reference: object | null = refValues()): Verifier {
    const d = join(dir, `v${n++}`);
    mkdirSync(d, { recursive: true });
    for (const c of cas ?? []) writeFileSync(join(d, c), readFileSync(join(dir, c)));
    const p: VerifierPolicy = { ...basePolicy(), ...over };
    if (reference) writeFileSync(join(d, 'reference-values.json'), JSON.stringify(reference));
    else delete p.referenceValues;
    writeFileSync(join(d, 'policy.json'), JSON.stringify(p));
    const v = new Verifier({ stateDir: stateDir ?? join(d, 'state'), policyPath: join(d, 'policy.json') });
    if (!stateDir) {
      const rec = new Verifier({ stateDir: enrolledState, policy: { schema: 'hyperenclave/verifier-policy', version: 1 } }).state.findEnrollment(undefined, akSpki());
      if (!rec) throw new Error('the AK was not enrolled');
      v.state.saveEnrollment(rec);
    }
    return v;
  }
  const akSpki = (): string => createHash('sha256').update(createPublicKey(ak.pem).export({ type: 'spki', format: 'der' })).digest('hex');

  const check = (r: AttestationResult, name: string): CheckResult | undefined => r.checks.find((c) => c.name === name);
  const verify = (ev: Evidence, v = verifier(), nonce = Buffer.from(ev.nonce, 'hex')): AttestationResult => v.verifyBundle(JSON.parse(JSON.stringify(ev)), nonce).result;

  it('baseline: every check runs and passes -> affirming, platform kind emulated (from the EK CA)', () => {
    const r = verify(bundle());
    expect(r['ear.status'], formatResultTable(r)).toBe('affirming');
    for (const name of ['signature', 'nonce', 'pcr.digest', 'pcr.selection', 'eventlog.runtime', 'reference.pcrs', 'reference.hypervisor', 'ak.provenance', 'clock', 'platform.kind', 'enclave.count', 'enclave.quote-format', 'enclave.quote-signature', 'enclave.hak-bound', 'enclave.reportdata-nonce', 'enclave.mrenclave', 'enclave.mrsigner', 'enclave.isvprodid', 'enclave.isvsvn', 'enclave.attributes'])
      expect(check(r, name)?.status, `${name}\n${formatResultTable(r)}`).toBe('pass');
    expect(r.platformKind).toBe('emulated');
    expect(check(r, 'platform.kind')!.reason).toMatch(/swtpm/);
  });

  it('a policy that requires DMA protection affirms quotes the HAK signed with the DMA flag', () => {
    const r = verify(bundle({ enclaves: (x) => [enclave(x, { flags: 1 })] }), verifier({ hypervisor: { pcr: 12, hakPcr: 13, requireDmaProtection: true } }));
    expect(r['ear.status'], formatResultTable(r)).toBe('affirming');
    expect(check(r, 'hypervisor.dma-protection')).toMatchObject({ status: 'pass', reason: expect.stringMatching(/DMA protection on/) });
    expect(check(verify(bundle()), 'hypervisor.dma-protection'), 'not required: not checked').toBeUndefined();
  });

  it('an enrollment record without the platform kind: derived from the evidence\'s EK certificate only if it is the enrolled one', () => {
    const v = verifier();
    const rec = v.state.findEnrollment(undefined, akSpki())!;
    const { platformKind: _k, platformReason: _r, ...old } = rec;
    v.state.saveEnrollment(old);
    const fresh = () => new Verifier({ stateDir: v.state.dir, policy: v.loaded });
    const r = verify(bundle(), fresh());
    expect(check(r, 'platform.kind')).toMatchObject({ status: 'pass', reason: expect.stringMatching(/swtpm/) });
    expect(r['ear.status']).toBe('affirming');
    const ev = bundle();
    ev.akProvenance!.ekCertificates = [readFileSync(join(dir, cas[0]!), 'utf8')]; // a certificate, but not the enrolled EK's
    const r2 = verify(ev, fresh());
    expect(check(r2, 'platform.kind')).toMatchObject({ status: 'skip', reason: expect.stringMatching(/not the one this AK was enrolled with/) });
    expect(r2['ear.status']).toBe('warning');
  });

  it('a check that could not run gives at best warning (no reference values)', () => {
    const r = verify(bundle(), verifier({}, undefined, null));
    expect(check(r, 'reference.pcrs')?.status).toBe('skip');
    expect(r['ear.status']).toBe('warning');
  });

  it('a quoted PCR with references but no log to replay it: warning by default, contraindicated when the log is required', () => {
    const ev = bundle({ runtime: null });
    const r = verify(ev);
    expect(check(r, 'eventlog.runtime')).toMatchObject({ status: 'skip', reason: expect.stringMatching(/PCR 12 has reference values/) });
    expect(r['ear.status']).toBe('warning');
    const r2 = verify(ev, verifier({ checks: { 'eventlog.runtime': 'required' } }));
    expect(r2['ear.status']).toBe('contraindicated');
    expect(r2.firstFailure).toMatch(/^eventlog\.runtime/);
  });

  const cases: [string, () => AttestationResult, string, RegExp?][] = [
    ['enclave quote signature forged (one bit of the Ed25519 signature)', () => {
      const ev = bundle({ enclaves: (x) => {
        const e = enclave(x);
        const q = Buffer.from(e.quote, 'base64');
        q[470]! ^= 0x01;
        return [{ ...e, quote: q.toString('base64') }];
      } });
      return verify(ev);
    }, 'enclave.quote-signature'],
    ['enclave quote body altered after signing (MRENCLAVE rewritten)', () => {
      const ev = bundle({ enclaves: (x) => {
        const e = enclave(x);
        const q = Buffer.from(e.quote, 'base64');
        sha256('other').copy(q, 16 + 64);
        return [{ ...e, quote: q.toString('base64') }];
      } });
      return verify(ev);
    }, 'enclave.quote-signature'],
    ['HAK not in the PCR (quote signed by a key PCR 13 does not name)', () => verify(bundle({ enclaves: (x) => [enclave(x, { key: evil })] })), 'enclave.hak-bound'],
    ['HAK PCR with an extra event (PCR 14 = HAK event + one more)', () => {
      const ev = bundle({ pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 12, 14], enclaves: (x) => [enclave(x, { hakPcr: 14 })] });
      return verify(ev, verifier({ requiredPcrs: { sha256: [12, 14] }, hypervisor: { pcr: 12, hakPcr: 14 } }));
    }, 'enclave.hak-bound'],
    ['HAK PCR empty (PCR 15 never extended)', () => {
      const ev = bundle({ pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 12, 15], enclaves: (x) => [enclave(x, { hakPcr: 15 })] });
      return verify(ev, verifier({ requiredPcrs: { sha256: [12, 15] }, hypervisor: { pcr: 12, hakPcr: 15 } }));
    }, 'enclave.hak-bound'],
    ['runtime log with a second PCR 13 event', () => {
      const extra: EventInput = { pcr: 13, type: 'EV_NONHOST_INFO', data: hakEvent(rawEd25519(evil.publicKey)), digests: { sha256: sha256(hakEvent(rawEd25519(evil.publicKey))) } };
      return verify(bundle({ runtime: runtimeLog(runtimeEvents([extra])) }));
    }, 'enclave.hak-bound'],
    ['policy requires DMA protection, the HAK-signed quote flags say it was off', () => verify(bundle(), verifier({ hypervisor: { pcr: 12, hakPcr: 13, requireDmaProtection: true } })), 'hypervisor.dma-protection'],
    ['policy requires DMA protection, the flags were set after signing', () => {
      const ev = bundle({ enclaves: (x) => {
        const e = enclave(x);
        const q = Buffer.from(e.quote, 'base64');
        q.writeUInt32LE(1, 12);
        return [{ ...e, quote: q.toString('base64') }];
      } });
      return verify(ev, verifier({ hypervisor: { pcr: 12, hakPcr: 13, requireDmaProtection: true } }));
    }, 'enclave.quote-signature'],
    ['enclave quote names another HAK PCR than the policy', () => verify(bundle({ enclaves: (x) => [enclave(x, { hakPcr: 16 })] })), 'enclave.quote-format'],
    ['HAK PCR not quoted while enclaves are present', () => verify(bundle({ pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 12] }), verifier({ requiredPcrs: { sha256: [12] } })), 'pcr.selection'],
    ['wrong MRENCLAVE', () => verify(bundle({ enclaves: (x) => [enclave(x, { mrenclave: sha256('evil enclave') })] })), 'enclave.mrenclave'],
    ['wrong MRSIGNER', () => verify(bundle({ enclaves: (x) => [enclave(x, { mrsigner: sha256('evil signer') })] })), 'enclave.mrsigner'],
    ['wrong ISVPRODID', () => verify(bundle({ enclaves: (x) => [enclave(x, { isvProdId: 8 })] })), 'enclave.isvprodid'],
    ['ISVSVN below the policy minimum', () => verify(bundle({ enclaves: (x) => [enclave(x, { isvSvn: 1 })] })), 'enclave.isvsvn'],
    ['DEBUG enclave (policy does not allow debug)', () => verify(bundle({ enclaves: (x) => [enclave(x, { attributes: ATTR_INIT_64 | DEBUG })] })), 'enclave.attributes'],
    ['REPORTDATA not bound to the nonce (an older challenge)', () => verify(bundle({ enclaves: () => [enclave(randomBytes(32))] })), 'enclave.reportdata-nonce'],
    ['REPORTDATA with a non-zero upper half', () => {
      const ud = randomBytes(16);
      return verify(bundle({ enclaves: (x) => [enclave(x, { userData: ud, reportData: Buffer.concat([sha256(x, ud), Buffer.alloc(32, 1)]) })] }));
    }, 'enclave.reportdata-nonce'],
    ['fewer enclaves than the policy needs', () => verify(bundle({ enclaves: () => [] })), 'enclave.count'],
    ['unenrolled AK with provenance "off" (acceptEnrolled false, no other anchor)', () => verify(bundle(), verifier({ akProvenance: { acceptEnrolled: false, trustedEkCaFiles: cas } })), 'ak.provenance'],
    ['AK provenance check switched off in the policy, AK not enrolled', () => {
      const v = verifier({ checks: { 'ak.provenance': 'off' } });
      rmSync(join(v.state.dir, 'enrollments'), { recursive: true, force: true });
      return verify(bundle(), new Verifier({ stateDir: v.state.dir, policy: v.loaded }));
    }, 'ak.provenance'],
    ['AK pinned only by another key (trustedAkKeys names a different AK)', () => verify(bundle(), verifier({ akProvenance: { acceptEnrolled: false, trustedAkKeys: ['00'.repeat(32)] } })), 'ak.provenance'],
    ['reference PCR not quoted (references name PCR 9)', () => verify(bundle(), verifier({}, undefined, refValues({ pcrs: { sha256: { '12': pcr12, '9': '00'.repeat(32) } } }))), 'reference.pcrs'],
    ['hypervisor PCR missing from the quote', () => verify(bundle({ pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 13] }), verifier({ requiredPcrs: { sha256: [13] } })), 'reference.hypervisor'],
    ['hypervisor disabled and reloaded since boot (exit cap in its PCR, image measured again)', () => {
      const reload: EventInput[] = [HV_IMAGE, EXIT_CAP, HV_IMAGE].map((d, i) => ({ pcr: 11, type: 'EV_IPL', data: Buffer.from(i === 1 ? 'hyperenclave:hypervisor-exit v=1' : 'hypervisor image'), digests: { sha256: d } }));
      const ev = bundle({ pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 11, 13], runtime: runtimeLog(runtimeEvents(reload)) });
      // references that name only the image event (no final PCR value), which the reload also shows
      return verify(ev, verifier({ requiredPcrs: { sha256: [11, 13] }, hypervisor: { pcr: 11, hakPcr: 13 } }, undefined, { schema: 'hyperenclave/reference-values', version: 1, pcrs: {}, hypervisor: { pcr: 11, digests: { sha256: [HV_IMAGE.toString('hex')] } } }));
    }, 'reference.hypervisor', /hypervisor-exit cap/],
    ['hypervisor measured from another image', () => verify(bundle(), verifier({}, undefined, refValues({ pcrs: { sha256: { '12': sha256(Buffer.alloc(32), sha256('evil image')).toString('hex') } }, hypervisor: { pcr: 12, digests: { sha256: [sha256('evil image').toString('hex')] } } }))), 'reference.hypervisor'],
    ['PCR digest mismatch (a PCR value changed after quoting)', () => {
      const ev = bundle();
      ev.quotes[0]!.pcrs['7'] = 'ff'.repeat(32);
      return verify(ev);
    }, 'pcr.digest'],
    ['TPM quote signature forged', () => {
      const ev = bundle();
      const s = Buffer.from(ev.quotes[0]!.signature, 'base64');
      s[s.length - 3]! ^= 0x01;
      ev.quotes[0]!.signature = s.toString('base64');
      return verify(ev);
    }, 'signature'],
    ['log replay mismatch (an event digest altered)', () => {
      const evs = runtimeEvents();
      evs[1] = { ...evs[1]!, digests: { sha256: sha256('tampered header') } };
      return verify(bundle({ runtime: runtimeLog(evs) }));
    }, 'eventlog.runtime'],
    ['replayed quote (the same evidence verified twice: same clock)', () => {
      const ev = bundle();
      const v = verifier();
      const first = verify(ev, v);
      expect(first['ear.status'], formatResultTable(first)).toBe('affirming');
      return verify(ev, v);
    }, 'clock'],
    ['an older quote after a newer one was accepted', () => {
      const older = bundle();
      const newer = bundle();
      const v = verifier();
      expect(verify(newer, v)['ear.status']).toBe('affirming');
      return verify(older, v);
    }, 'clock'],
    ['wrong nonce (another challenge)', () => verify(bundle(), verifier(), randomBytes(32)), 'nonce'],
    ['long nonce (> 64 bytes)', () => {
      const nonce = randomBytes(65);
      const claims: BundleClaims = { nonce: randomBytes(32), platformKind: 'emulated', enclaves: [enclave(nonce)] };
      // quote bound to the 65-byte challenge, as an attester that accepted it would make
      const q = att.quote('sha256', [0, 1, 2, 3, 4, 5, 6, 7, 12, 13], qualifyingData(nonce, { platformKind: 'emulated', enclaves: claims.enclaves!.map((e) => ({ backend: e.backend, quote: Buffer.from(e.quote, 'base64'), userData: Buffer.from(e.userData, 'hex') })) }).toString('hex'));
      const ev = buildEvidence(claims, { quotes: [{ bank: 'sha256', attest: q.attest, signature: q.signature, values: q.values }], ak, eventLogs: { runtime: runtimeLog() } });
      return verify(ev, verifier(), nonce);
    }, 'nonce'],
    ['short nonce (< 8 bytes, tpm2-tools quote files)', () => {
      const nonce = randomBytes(4);
      const q = att.quote('sha256', [0, 1, 2, 3, 4, 5, 6, 7, 12], nonce.toString('hex'));
      return verifier().verifyTpm2Tools({ message: q.attest, signature: q.signature, pcrs: q.pcrsFile, akPem: ak.pem, eventLogs: { runtime: runtimeLog() } }, nonce).result;
    }, 'nonce'],
    ['platform kind claimed hardware with an swtpm EK', () => verify(bundle({ platformKind: 'real' })), 'platform.kind'],
    ['policy requires real hardware, EK chains to swtpm\'s CA', () => verify(bundle(), verifier({ platform: { requireReal: true } })), 'platform.kind'],
  ];
  for (const [what, run, name, why] of cases) {
    it(`${what} -> ${name}`, () => {
      const r = run();
      expect(check(r, name)?.status, formatResultTable(r)).toBe('fail');
      if (why) expect([check(r, name)!.reason, ...(check(r, name)!.details ?? [])].join('\n')).toMatch(why);
      expect(r['ear.status']).toBe('contraindicated');
    });
  }

  it('policy downgrading freshness: the service\'s required nonce.freshness still refuses a replayed challenge', async () => {
    const v = verifier({ checks: { 'nonce.freshness': 'off', clock: 'optional' } });
    const svc = await startVerifierService({ verifier: v, nonceTtlMs: 60_000 });
    try {
      const post = async (path: string, body: unknown) => (await (await fetch(`${svc.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json()) as { status: string; nonce: string; result: AttestationResult };
      const ch = await post('/challenge', {});
      const ev = bundle({ nonce: Buffer.from(ch.nonce, 'hex') });
      const first = await post('/verify', ev);
      expect(first.status, formatResultTable(first.result)).toBe('affirming');
      expect(check(first.result, 'nonce.freshness')).toMatchObject({ status: 'pass', requirement: 'required' });
      const again = await post('/verify', ev);
      expect(again.status).toBe('contraindicated');
      expect(check(again.result, 'nonce.freshness')).toMatchObject({ status: 'fail', requirement: 'required' });
    } finally {
      await svc.close();
    }
  });

  it('reset/restart counters (obfuscated by a per-key constant for this storage-hierarchy AK) compare modulo 2^32', () => {
    const ev = bundle();
    const q = parseQuoteAttest(Buffer.from(ev.quotes[0]!.attest, 'base64'));
    const at = (resetCount: number) => {
      const v = verifier();
      v.state.recordClock(akSpki(), { clock: '0', resetCount: resetCount >>> 0, restartCount: q.restartCount, at: new Date().toISOString() });
      return check(verify(ev, v), 'clock')!;
    };
    // numerically larger but 2^31 + 1 behind modulo 2^32: this quote is the newer one
    expect(at(q.resetCount + 0x80000001)).toMatchObject({ status: 'pass', reason: expect.stringMatching(/TPM reset/) });
    expect(at(q.resetCount - 1)).toMatchObject({ status: 'pass', reason: expect.stringMatching(/TPM reset/) });
    expect(at(q.resetCount + 1)).toMatchObject({ status: 'fail', reason: expect.stringMatching(/older than the last accepted/) });
  });

  it('only accepted evidence moves the clock record: a refused quote does not block a later one', () => {
    const v = verifier();
    const later = bundle();
    // refused (wrong MRENCLAVE) but newer than `later`'s quote
    const refused = bundle({ enclaves: (x) => [enclave(x, { mrenclave: sha256('evil') })] });
    expect(verify(refused, v)['ear.status']).toBe('contraindicated');
    const r = verify(later, v);
    expect(r['ear.status'], formatResultTable(r)).toBe('affirming');
  });
});
