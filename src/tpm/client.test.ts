import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { TPM_ALG, hashAlgById } from './alg.js';
import { TpmClient } from './client.js';
import { TPMA_SESSION, TPM_CAP, TPM_HT, TPM_PT, TPM_RH } from './constants.js';
import { objectName, makeCredential } from './crypto.js';
import { TpmError, TPM_RC } from './errors.js';
import { openTpm } from './index.js';
import { akTemplate, srkTemplate, EK_AUTH_POLICY_SHA256 } from './templates.js';
import { verifyQuote, verifySignature, publicKeyPem, TpmVerifyError } from './verify.js';
import { skipUnless } from '../../test/helpers/require.js';

const why = skipUnless('TPM client tests', [['swtpm', swtpmAvailable()]]);

describe.skipIf(!!why)('TpmClient against swtpm (tcp)', () => {
  let tpm: SwtpmInstance;
  let c: TpmClient;
  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'tcp' });
    c = await openTpm(tpm.tcti);
  });
  afterAll(async () => {
    await c?.close();
    await tpm?.stop();
  });
  // swtpm has 3 object slots and no resource manager: a failed test must not starve the next.
  afterEach(async () => {
    await c?.flushAll();
  });

  it('reads fixed properties, banks, algorithms', async () => {
    const info = await c.getTpmInfo();
    expect(info.family).toBe('2.0');
    expect(info.manufacturer).toBe('IBM');
    expect(info.banks.map((b) => b.name)).toEqual(expect.arrayContaining(['sha1', 'sha256', 'sha384', 'sha512']));
    expect(info.algorithms).toEqual(expect.arrayContaining(['rsa', 'ecc', 'sha256', 'aes']));
    expect(info.pcrCount).toBe(24);
    expect((await c.getProperty(TPM_PT.PCR_COUNT))).toBe(24);
    const { data } = await c.getCapability(TPM_CAP.COMMANDS, 0x11f, 256);
    expect('commands' in data && data.commands.length).toBeGreaterThan(50);
    expect(await c.getEccCurves()).toContain(3);
  });

  it('GetRandom returns the requested length, in several commands when large', async () => {
    const a = await c.getRandom(200);
    const b = await c.getRandom(200);
    expect(a.length).toBe(200);
    expect(a.equals(b)).toBe(false);
  });

  it('Startup on a started TPM reports already started; SelfTest passes', async () => {
    expect(await c.startup('clear')).toBe(false);
    await c.selfTest(true);
  });

  it('reads all PCRs of all banks (splitting beyond 8 per request)', async () => {
    const banks = await c.pcrReadAll();
    expect(banks.length).toBe(4);
    for (const b of banks) {
      expect(b.values.size).toBe(24);
      const size = hashAlgById(b.hash)!.size;
      expect(b.values.get(0)).toEqual(Buffer.alloc(size));
      expect(b.values.get(17)).toEqual(Buffer.alloc(size, 0xff));
    }
  });

  it('PCR_Extend / PCR_Event / PCR_Reset on PCR16 and PCR23', async () => {
    const d = createHash('sha256').update('hello').digest();
    const before = (await c.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [16] }])).banks[0]!.values.get(16)!;
    await c.pcrExtend(16, [{ hashAlg: TPM_ALG.SHA256, digest: d }]);
    const after = (await c.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [16] }])).banks[0]!.values.get(16)!;
    expect(after).toEqual(createHash('sha256').update(before).update(d).digest());

    const ev = await c.pcrEvent(23, Buffer.from('event data'));
    expect(ev.map((e) => e.hashAlg).sort((a, b) => a - b)).toEqual([TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512]);
    const p23 = (await c.pcrRead([{ hash: TPM_ALG.SHA384, pcrs: [23] }])).banks[0]!.values.get(23)!;
    const evd = createHash('sha384').update('event data').digest();
    expect(ev.find((e) => e.hashAlg === TPM_ALG.SHA384)!.digest).toEqual(evd);
    expect(p23).toEqual(createHash('sha384').update(Buffer.alloc(48)).update(evd).digest());

    await c.pcrReset(16);
    await c.pcrReset(23);
    const reset = await c.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [16, 23] }]);
    expect(reset.banks[0]!.values.get(16)).toEqual(Buffer.alloc(32));
    expect(reset.banks[0]!.values.get(23)).toEqual(Buffer.alloc(32));
  });

  it('a PCR read spanning several commands restarts when a PCR changes in between', async () => {
    const sel = [
      { hash: TPM_ALG.SHA1, pcrs: [14] },
      { hash: TPM_ALG.SHA256, pcrs: Array.from({ length: 24 }, (_, i) => i) },
    ];
    // The extend is queued behind the read's first command (SHA-1 PCR 14), before its other chunks:
    // without the restart the SHA-1 value and the counter would be from before the extend.
    // (PCR 14, not 16: PCRs 16/21-23 do not increment the PCR update counter on a PC Client TPM.)
    const reading = c.pcrRead(sel);
    const extending = c.pcrExtend(14, [{ hashAlg: TPM_ALG.SHA256, digest: Buffer.alloc(32, 7) }, { hashAlg: TPM_ALG.SHA1, digest: Buffer.alloc(20, 7) }]);
    const [got] = await Promise.all([reading, extending]);
    const fresh = await c.pcrRead(sel);
    expect(got.updateCounter).toBe(fresh.updateCounter);
    for (const [i, b] of got.banks.entries()) expect(b.values).toEqual(fresh.banks[i]!.values);
  });

  it('quoteWithPcrs takes quote and PCRs again when a PCR moves between them', async () => {
    const srk = await c.createSrk('ecc');
    const ak = await c.createAk(srk, 'ecc');
    const sel = [{ hash: TPM_ALG.SHA256, pcrs: [14, 15] }];
    const quoting = c.quoteWithPcrs(ak.object, sel, Buffer.from('x'));
    // Queued right behind the first TPM2_Quote, before the PCR read that checks it.
    const extending = c.pcrExtend(14, [{ hashAlg: TPM_ALG.SHA256, digest: Buffer.alloc(32, 9) }]);
    const [q] = await Promise.all([quoting, extending]);
    verifyQuote({ ak: ak.object.public, attest: q.attest, signature: q.signature, pcrs: q.banks });
    expect(q.banks[0]!.values.get(14)).toEqual((await c.pcrRead(sel)).banks[0]!.values.get(14));
  });

  it('PCR_Reset of PCR 0 fails with a decoded error naming the PCR', async () => {
    const err = await c.pcrReset(0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TpmError);
    expect((err as TpmError).message).toMatch(/^TPM_RC_LOCALITY: PCR 0 cannot be reset at locality 0/);
  });

  it('creates RSA and ECC EKs from the TCG default templates, an SRK, and restricted AKs; quotes verify', async () => {
    for (const kind of ['rsa', 'ecc'] as const) {
      const ek = await c.createEk(kind);
      expect(ek.public.authPolicy).toEqual(EK_AUTH_POLICY_SHA256);
      expect(ek.name).toEqual(objectName(ek.public));
      const ak = await c.createAk(ek, kind);
      const rp = await c.readPublic(ak.object.handle);
      expect(rp.name).toEqual(ak.object.name);
      const nonce = randomBytes(32);
      const sel = [{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 16] }, { hash: TPM_ALG.SHA1, pcrs: [0, 17] }];
      const q = await c.quoteWithPcrs(ak.object, sel, nonce);
      const check = verifyQuote({ ak: ak.object.public, attest: q.attest, signature: q.signatureBytes, nonce, pcrs: q.banks });
      expect(check.attest.attested.kind).toBe('quote');
      expect(publicKeyPem(ak.object.public)).toMatch(/BEGIN PUBLIC KEY/);
      // A flipped byte in the message must fail.
      const bad = Buffer.from(q.attest);
      bad[bad.length - 1]! ^= 1;
      expect(verifySignature(ak.object.public, bad, q.signature)).toBe(false);
      expect(() => verifyQuote({ ak: ak.object.public, attest: q.attest, signature: q.signature, nonce: randomBytes(32) })).toThrow(TpmVerifyError);
      // Certify: the AK attests the EK is loaded.
      const cert = await c.certify(ak.object, ak.object, nonce);
      expect(cert.parsed.attested.kind).toBe('certify');
      if (cert.parsed.attested.kind === 'certify') expect(cert.parsed.attested.name).toEqual(ak.object.name);
      expect(verifySignature(ak.object.public, cert.attest, cert.signature)).toBe(true);
      await c.flushContext(ak.object);
      await c.flushContext(ek);
    }
    const srk = await c.createSrk('rsa');
    const ak = await c.createAk(srk, 'ecc', { template: akTemplate('ecc', { hashAlg: TPM_ALG.SHA384 }) });
    const q = await c.quote(ak.object, [{ hash: TPM_ALG.SHA384, pcrs: [0] }]);
    expect(verifySignature(ak.object.public, q.attest, q.signature)).toBe(true);
    await c.flushContext(ak.object);
    await c.flushContext(srk);
    expect(await c.getHandles(TPM_HT.TRANSIENT)).toEqual([]);
  });

  it('MakeCredential in software + ActivateCredential on the TPM (RSA and ECC EK)', async () => {
    for (const kind of ['rsa', 'ecc'] as const) {
      const ek = await c.createEk(kind);
      const ak = await c.createAk(ek, 'rsa');
      const secret = randomBytes(32);
      const mc = makeCredential(ek.public, secret, ak.object.name);
      expect(await c.activateCredentialWithEk(ak.object, ek, mc.credentialBlob, mc.secret)).toEqual(secret);
      // A credential bound to another name is refused by the TPM.
      const other = makeCredential(ek.public, secret, Buffer.concat([ak.object.name.subarray(0, 2), randomBytes(32)]));
      const err = await c.activateCredentialWithEk(ak.object, ek, other.credentialBlob, other.secret).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TpmError);
      expect((err as TpmError).base).toBe(TPM_RC.INTEGRITY);
      await c.flushContext(ak.object);
      await c.flushContext(ek);
    }
    expect(await c.getHandles(TPM_HT.POLICY_SESSION)).toEqual([]);
  });

  it('HMAC sessions: unbound, salted (RSA and ECC key), bound; wrong authValue fails', async () => {
    const srk = await c.createSrk('ecc');
    const ak = await c.createAk(srk, 'rsa', { userAuth: Buffer.from('ak-pass') });
    await c.flushContext(srk);
    const sel = [{ hash: TPM_ALG.SHA256, pcrs: [0] }];
    for (const salt of [undefined, 'rsa', 'ecc'] as const) {
      for (const bind of [false, true]) {
        const tpmKey = salt ? await c.createEk(salt) : undefined;
        const s = await c.startAuthSession({
          type: 'hmac',
          ...(tpmKey ? { tpmKey } : {}),
          ...(bind ? { bind: { handle: ak.object.handle, name: ak.object.name, authValue: Buffer.from('ak-pass') } } : {}),
        });
        if (tpmKey) await c.flushContext(tpmKey);
        const q1 = await c.quote(ak.object, sel, Buffer.from('a'), { auth: { session: s } });
        const q2 = await c.quote(ak.object, sel, Buffer.from('b'), { auth: { session: s } });
        expect(verifySignature(ak.object.public, q1.attest, q1.signature) && verifySignature(ak.object.public, q2.attest, q2.signature)).toBe(true);
        await c.flushContext(s);
      }
    }
    // Password session with the wrong authValue: TPM_RC_AUTH_FAIL / BAD_AUTH, decoded with session number.
    const err = await c.quote(ak.object, sel, Buffer.alloc(0), { auth: { auth: Buffer.from('wrong') } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TpmError);
    expect((err as TpmError).decoded.session).toBe(1);
    await c.dictionaryAttackLockReset();
    // Bound session, used for another entity (owner hierarchy, empty auth).
    const s = await c.startAuthSession({ type: 'hmac', bind: { handle: ak.object.handle, name: ak.object.name, authValue: Buffer.from('ak-pass') } });
    const prim = await c.createPrimary(TPM_RH.OWNER, srkTemplate('rsa'), { hierarchyAuth: { session: s } });
    await c.flushContext(prim.object);
    await c.flushContext(s);
    await c.flushContext(ak.object);
  });

  it('RSAPSS and SM2 attestation keys: quotes verify in software', async () => {
    const srk = await c.createSrk('ecc');
    for (const t of [akTemplate('rsa', { scheme: TPM_ALG.RSAPSS }), akTemplate('ecc', { scheme: TPM_ALG.SM2, curveId: 0x20 })]) {
      const ak = await c.createAk(srk, 'rsa', { template: t });
      const q = await c.quote(ak.object, [{ hash: TPM_ALG.SHA256, pcrs: [0, 7] }], Buffer.from('n'));
      expect(q.signature.sigAlg).toBe(t.type === TPM_ALG.RSA || t.type === TPM_ALG.ECC ? t.parameters.scheme.scheme : -1);
      expect(verifySignature(ak.object.public, q.attest, q.signature)).toBe(true);
      const bad = Buffer.from(q.attest);
      bad[30]! ^= 1;
      expect(verifySignature(ak.object.public, bad, q.signature)).toBe(false);
      await c.flushContext(ak.object);
    }
  });

  it('parameter encryption (AES-128-CFB and XOR) both ways, unbound, salted and bound sessions', async () => {
    const srk = await c.createSrk('ecc');
    const ak = await c.createAk(srk, 'ecc', { userAuth: Buffer.from('ak-secret') });
    const sel = [{ hash: TPM_ALG.SHA256, pcrs: [0] }];
    for (const symmetric of [{ alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB }, { alg: TPM_ALG.XOR, keyBits: TPM_ALG.SHA256, mode: TPM_ALG.NULL }]) {
      for (const variant of ['unbound', 'salted', 'bound'] as const) {
        const s = await c.startAuthSession({
          type: 'hmac',
          symmetric,
          ...(variant === 'salted' ? { tpmKey: srk } : {}),
          ...(variant === 'bound' ? { bind: { handle: ak.object.handle, name: ak.object.name, authValue: Buffer.from('ak-secret') } } : {}),
        });
        s.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.decrypt | TPMA_SESSION.encrypt;
        const nonce = randomBytes(32);
        for (let i = 0; i < 2; i++) {
          const q = await c.quote(ak.object, sel, nonce, { auth: { session: s } });
          // decrypt: the TPM recovered our nonce; encrypt: we recovered the attestation it signed.
          expect(q.parsed.extraData, `${symmetric.alg} ${variant}`).toEqual(nonce);
          expect(verifySignature(ak.object.public, q.attest, q.signature)).toBe(true);
        }
        await c.flushContext(s);
      }
    }
    await c.flushContext(ak.object);
    await c.flushContext(srk);
  });

  it('policy sessions with PolicyAuthValue and PolicyPassword authorize a key whose authPolicy a trial session computed', async () => {
    const trial = await c.startAuthSession({ type: 'trial' });
    await c.policyAuthValue(trial);
    const policy = await c.policyGetDigest(trial);
    await c.flushContext(trial);
    const srk = await c.createSrk('ecc');
    const template = { ...akTemplate('ecc'), authPolicy: policy };
    const ak = await c.createAk(srk, 'ecc', { template, userAuth: Buffer.from('pw') });
    await c.flushContext(srk);
    const sel = [{ hash: TPM_ALG.SHA256, pcrs: [0] }];
    for (const how of ['authValue', 'password'] as const) {
      for (const encrypt of [false, true]) {
        const s = await c.startAuthSession({ type: 'policy', ...(encrypt ? { symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB } } : {}) });
        if (encrypt) s.attributes |= TPMA_SESSION.encrypt | TPMA_SESSION.decrypt;
        if (how === 'authValue') await c.policyAuthValue(s);
        else await c.policyPassword(s);
        expect(await c.policyGetDigest(s)).toEqual(policy);
        const q = await c.quote(ak.object, sel, Buffer.from('policy'), { auth: { session: s } });
        expect(q.parsed.extraData.toString()).toBe('policy');
        expect(verifySignature(ak.object.public, q.attest, q.signature)).toBe(true);
        await c.flushContext(s);
      }
      const bad = await c.startAuthSession({ type: 'policy' });
      if (how === 'authValue') await c.policyAuthValue(bad);
      else await c.policyPassword(bad);
      const err = await c.quote(ak.object, sel, Buffer.alloc(0), { auth: { session: bad, auth: Buffer.from('wrong') } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TpmError);
      expect((err as TpmError).decoded.name).toMatch(/TPM_RC_(AUTH_FAIL|BAD_AUTH)/);
      await c.flushContext(bad).catch(() => undefined);
    }
    // Failed authorizations count against dictionary-attack protection (3 tries on swtpm).
    expect(await c.getProperty(TPM_PT.LOCKOUT_COUNTER)).toBeGreaterThan(0);
    await c.dictionaryAttackLockReset();
    expect(await c.getProperty(TPM_PT.LOCKOUT_COUNTER)).toBe(0);
    await c.flushContext(ak.object);
  });

  it('policy session digest equals the EK authPolicy', async () => {
    const s = await c.ekPolicySession();
    expect(await c.policyGetDigest(s)).toEqual(EK_AUTH_POLICY_SHA256);
    await c.flushContext(s);
  });

  it('ContextSave / ContextLoad of a key and of a session', async () => {
    const srk = await c.createSrk('ecc');
    const ak = await c.createAk(srk, 'ecc');
    const ctx = await c.contextSave(ak.object);
    await c.flushContext(ak.object);
    const h = await c.contextLoad(ctx);
    const rp = await c.readPublic(h);
    expect(rp.name).toEqual(ak.object.name);
    const q = await c.quote({ ...ak.object, handle: h }, [{ hash: TPM_ALG.SHA256, pcrs: [1] }]);
    expect(verifySignature(ak.object.public, q.attest, q.signature)).toBe(true);
    const s = await c.startAuthSession({ type: 'hmac' });
    const sctx = await c.contextSave(s);
    const sh = await c.contextLoad(sctx);
    expect(sh).toBe(s.handle);
    await c.quote({ ...ak.object, handle: h }, [{ hash: TPM_ALG.SHA256, pcrs: [1] }], Buffer.alloc(0), { auth: { session: s } });
    await c.flushContext(s);
    await c.flushContext(h);
    await c.flushContext(srk);
  });

  it('hash sequence over 1.5 MiB equals node crypto, sha256 and sha384', async () => {
    const data = randomBytes(1536 * 1024 + 123);
    for (const alg of [TPM_ALG.SHA256, TPM_ALG.SHA384]) {
      const { digest, ticket } = await c.hash(data, alg);
      expect(digest).toEqual(createHash(hashAlgById(alg)!.nodeName).update(data).digest());
      expect(ticket.hierarchy).toBe(TPM_RH.NULL);
    }
    expect(await c.getHandles(TPM_HT.TRANSIENT)).toEqual([]);
  });

  it('event sequence measures 300 KiB into PCR 16 in every bank', async () => {
    await c.pcrReset(16);
    const data = randomBytes(300 * 1024);
    const out = await c.pcrEventSequence(16, data);
    expect(out.length).toBe(4);
    const banks = await c.pcrRead(out.map((d) => ({ hash: d.hashAlg, pcrs: [16] })));
    for (const d of out) {
      const h = hashAlgById(d.hashAlg)!;
      expect(d.digest).toEqual(createHash(h.nodeName).update(data).digest());
      const v = banks.banks.find((b) => b.hash === d.hashAlg)!.values.get(16);
      expect(v).toEqual(createHash(h.nodeName).update(Buffer.alloc(h.size)).update(d.digest).digest());
    }
    await c.pcrReset(16);
  });

  it('EvictControl makes an AK persistent, usable after flushing, then removes it', async () => {
    const srk = await c.createSrk('ecc');
    const ak = await c.createAk(srk, 'ecc');
    await c.flushContext(srk);
    const ph = await c.evictControl(ak.object, 0x81010010);
    await c.flushContext(ak.object);
    expect(await c.getHandles(TPM_HT.PERSISTENT)).toContain(0x81010010);
    const p = await c.objectFromHandle(ph);
    expect(p.name).toEqual(ak.object.name);
    const q = await c.quote(p, [{ hash: TPM_ALG.SHA256, pcrs: [0] }]);
    expect(verifySignature(p.public, q.attest, q.signature)).toBe(true);
    const srk2 = await c.createSrk('rsa');
    await expect(c.evictControl(srk2, 0x81010010)).rejects.toThrow(/TPM_RC_NV_DEFINED: persistent handle 0x81010010 is already in use/);
    await c.evictControl(p, 0x81010010);
    expect(await c.getHandles(TPM_HT.PERSISTENT)).not.toContain(0x81010010);
  });
});

describe.skipIf(!!skipUnless('TPM client EK certificate tests', [['swtpm', swtpmAvailable({ ek: true })]]))('TpmClient against swtpm with EK certificates (unix socket)', () => {
  let tpm: SwtpmInstance;
  let c: TpmClient;
  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'unix', ek: true });
    c = await openTpm(tpm.tcti);
  });
  afterAll(async () => {
    await c?.close();
    await tpm?.stop();
  });

  it('reads the RSA and ECC EK certificates from NV (chunked) and they certify our EKs', async () => {
    const { X509Certificate } = await import('node:crypto');
    const der = await c.readEkCertificate('rsa');
    expect(der).toBeDefined();
    const cert = new X509Certificate(der!);
    const ek = await c.createEk('rsa');
    const { publicKeyFromTpmt } = await import('./verify.js');
    expect(cert.publicKey.export({ type: 'spki', format: 'der' })).toEqual(publicKeyFromTpmt(ek.public).export({ type: 'spki', format: 'der' }));
    await c.flushContext(ek);
    // swtpm_setup writes its ECC EK certificate (P-384) at the high-range index, none at the P-256 one.
    expect(await c.readEkCertificate('ecc')).toBeUndefined();
    const ecc = new X509Certificate((await c.readEkCertificate('ecc-p384'))!);
    expect(ecc.publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    const nv = await c.nvReadPublic(0x01c00002);
    expect(nv.public.dataSize).toBeGreaterThan(500);
    expect(await c.nvRead(0x01c00002, { offset: 10, size: 20 })).toEqual((await c.readEkCertificate('rsa'))!.subarray(10, 30));
  });

  it('NV_ReadPublic of an undefined index names it', async () => {
    await expect(c.nvReadPublic(0x01c00099)).rejects.toThrow(/NV index 0x01c00099 is not defined/);
  });
});

describe('Linux TPM character device', () => {
  const dev = ['/dev/tpmrm0', '/dev/tpm0'].find((d) => existsSync(d));
  skipUnless('device transport test against a real TPM', [['tpm-device', !dev && 'no /dev/tpmrm0 or /dev/tpm0 here']]);
  it.skipIf(!dev)('reads random bytes and PCRs through the device', async () => {
    const c = await openTpm(`device:${dev}`);
    try {
      expect((await c.getRandom(16)).length).toBe(16);
      expect((await c.pcrReadAll()).length).toBeGreaterThan(0);
    } finally {
      await c.close();
    }
  });
});

describe('openTpm', () => {
  it('without a TCTI or the environment names none, refuses (the platform default is Platform.resolveTcti\'s, not the TPM layer\'s)', async () => {
    const saved = { h: process.env.HYPERENCLAVE_TCTI, t: process.env.TPM2TOOLS_TCTI };
    delete process.env.HYPERENCLAVE_TCTI;
    delete process.env.TPM2TOOLS_TCTI;
    try {
      await expect(openTpm()).rejects.toThrow(/no TPM named/);
    } finally {
      for (const [k, v] of [['HYPERENCLAVE_TCTI', saved.h], ['TPM2TOOLS_TCTI', saved.t]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
  it('takes HYPERENCLAVE_TCTI when no TCTI is given', async () => {
    const saved = process.env.HYPERENCLAVE_TCTI;
    process.env.HYPERENCLAVE_TCTI = 'device:/dev/tpm-test-none';
    try {
      const c = await openTpm();
      expect(c.transport.description).toBe('device /dev/tpm-test-none');
      await expect(c.getRandom(1)).rejects.toThrow(/device \/dev\/tpm-test-none: cannot open/);
      await c.close();
    } finally {
      if (saved === undefined) delete process.env.HYPERENCLAVE_TCTI;
      else process.env.HYPERENCLAVE_TCTI = saved;
    }
  });
});
