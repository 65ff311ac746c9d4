import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { computeMrEnclave } from '../enclave/sgx.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addonUnavailable, EnclaveVmError, kvmUnavailable } from './addon.js';
import { buildSigstruct, newSigstructSigner, CoreHypervisor } from './core-hypervisor.js';
import { loadPayload, payloadPage, type EnclavePayload } from './enclave-vm.js';
import { ECALL_QUOTE_REPORT, HC, hakEventData, HypervisorError, parseReport, QUOTING_TARGET_MRENCLAVE, SECINFO, statusName } from './abi.js';
import { skipUnless } from '../../test/helpers/require.js';

/**
 * The core bound through the addon: payloads built from hypervisor/enclaves are created,
 * measured and initialized by hyperenclave-core, then run on KVM straight from the core's EPC
 * pages (so what runs is what was measured).
 */

const noAddon = addonUnavailable();
const noPayloads = (() => {
  try {
    loadPayload('sealer');
    return null;
  } catch (e) {
    return (e as Error).message;
  }
})();
const skipCore = skipUnless('core binding tests', [['addon', noAddon], ['enclave-payloads', noPayloads], ['swtpm', swtpmAvailable()]]) ?? null;
const noKvm = skipCore ?? skipUnless('enclave runs on the core', [['kvm', kvmUnavailable()]]) ?? null;

const MB = 1n << 20n;
/** One swtpm for the file: the core seals its root secret there (TRUST_INIT at locality 2). */
let tpm: SwtpmInstance;
const config = () => ({
  base: 0x1_8000_0000n,
  total: 16n * MB,
  hypervisorSize: 4n * MB,
  imageSize: 1n * MB,
  paging: 'ept' as const,
  tpm: { server: tpm.serverPath!, ctrl: tpm.ctrlPath! },
  imageDigest: createHash('sha256').update('test image').digest(),
  keySlots: { kind: 'asid' as const, min: 1, max: 15 },
  requireSignedSigstruct: true,
});

/** MRENCLAVE from src/enclave/sgx.ts (TypeScript, independent of the Rust core). */
function mrenclaveOf(p: EnclavePayload): Buffer {
  return computeMrEnclave(
    BigInt(p.layout.size),
    p.layout.ssaFrameSize,
    p.layout.pages.map((pg) => ({ offset: BigInt(pg.offset), flags: pg.secinfo, data: payloadPage(p, pg.offset) })),
  );
}

const SEALER = { SEAL: 0, UNSEAL: 1, REPORT: 2, KEY_FINGERPRINT: 3, QUOTE_REPORT: ECALL_QUOTE_REPORT } as const;

describe.skipIf(skipCore !== null)('core bindings: measured payloads', () => {
  let signer: KeyObject;
  let hv: CoreHypervisor;
  let root: Buffer;
  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'unix' });
    signer = newSigstructSigner();
    hv = new CoreHypervisor(config());
    const t = hv.trustInit();
    expect(t.created && t.blob !== undefined).toBe(true);
    root = t.blob!;
  });
  afterAll(async () => {
    hv?.close();
    await tpm?.stop();
  });

  const signed = (p: EnclavePayload) => buildSigstruct({ enclaveHash: mrenclaveOf(p), attributes: 4n, xfrm: 3n, attributeMask: 0xffff_ffff_ffff_fffdn, isvProdId: 1, isvSvn: 2 }, signer);

  it('MRENCLAVE from the core equals the independent computation; EPC is returned at destroy', () => {
    const p = loadPayload('crypto');
    const before = hv.status().epcPagesUsed;
    const id = hv.loadPayload(p, signed(p));
    const info = hv.info(id);
    expect(info.state).toBe('initialized');
    expect(info.mrenclave.toString('hex')).toBe(mrenclaveOf(p).toString('hex'));
    const spki = createPublicKey(signer).export({ type: 'pkcs1', format: 'der' });
    const modulus = spki.subarray(spki.length - 3 - 384, spki.length - 3); // RSAPublicKey: SEQUENCE { INTEGER n, INTEGER 3 (02 01 03) }
    expect(info.mrsigner.toString('hex')).toBe(createHash('sha256').update(Buffer.from(modulus).reverse()).digest('hex'));
    expect(info.epcPages).toBe(p.layout.pages.length + 1);
    expect(hv.enclavePages(id).map((pg) => Number(pg.offset))).toEqual(p.layout.pages.map((pg) => pg.offset));
    expect(hv.status().epcPagesUsed).toBe(before + p.layout.pages.length + 1);
    expect(hv.destroy(id)).toBe(p.layout.pages.length + 1);
    expect(hv.status().epcPagesUsed).toBe(before);
  });

  it('refuses bad inputs with one clear line: tampered image, overlap, add after init, oversize', () => {
    const p = loadPayload('crypto');
    const tampered = { layout: p.layout, image: Buffer.from(p.image) };
    tampered.image[0x1000] ^= 1;
    expect(() => hv.loadPayload(tampered, signed(p))).toThrow(/ENCLAVE_INIT: MEASUREMENT_MISMATCH/);
    const id = hv.createEnclave({ size: 0x4000n, base: 0x4000_0000n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n });
    hv.addPage(id, 0x1000, Buffer.alloc(4096), SECINFO.PT_REG | SECINFO.R);
    expect(() => hv.addPage(id, 0x1000, Buffer.alloc(4096), SECINFO.PT_REG | SECINFO.R)).toThrow(/ENCLAVE_ADD: PAGE_OVERLAP/);
    expect(() => hv.addPage(id, 0x4000, Buffer.alloc(4096), SECINFO.PT_REG | SECINFO.R)).toThrow(/OUTSIDE_ELRANGE/);
    expect(() => hv.run(id)).toThrow(/enclave \d+: enclave \d+ is not initialized \(EINIT first\)/);
    expect(hv.destroy(id)).toBe(2);
    const big = { layout: { ...p.layout, size: 0x4000 }, image: p.image };
    expect(() => hv.loadPayload(big, signed(p))).toThrow(HypervisorError);
    expect(() => hv.loadPayload(big, signed(p))).toThrow(/ENCLAVE_ADD: TCS_INVALID \(.*\): page 0 \(offset 0x0\): TCS\.OSSA\+NSSA\*SSAFRAMESIZE \(outside ELRANGE\)/);
    const ok = hv.loadPayload(p, signed(p));
    expect(() => hv.addPage(ok, 0x1f000, Buffer.alloc(4096), SECINFO.PT_REG | SECINFO.R)).toThrow(/ENCLAVE_ADD: ENCLAVE_STATE/);
    hv.destroy(ok);
  });

  it('before TRUST_INIT nothing derived from the root is served; the host never gets REPORT or GET_KEY', () => {
    const fresh = new CoreHypervisor(config());
    try {
      expect(() => fresh.hakPublic()).toThrow(/HAK_PUBLIC: TRUST_NOT_ESTABLISHED/);
      expect(() => fresh.quote(Buffer.alloc(432))).toThrow(/QUOTE: TRUST_NOT_ESTABLISHED/);
      const p = loadPayload('crypto');
      const id = fresh.loadPayload(p, signed(p));
      // host REPORT / GET_KEY on an initialized enclave, before and after trust: ENCLAVE_ONLY
      for (const h of [fresh, hv]) {
        expect(statusName(h.rawStatus(HC.REPORT, [BigInt(id), 0x10_0000n, 0x10_0200n, 0x10_0400n]))).toBe('ENCLAVE_ONLY');
        expect(statusName(h.rawStatus(HC.GET_KEY, [BigInt(id), 0x10_0000n, 0x10_0400n]))).toBe('ENCLAVE_ONLY');
      }
      fresh.destroy(id);
      // the same TPM, the root's blob: the same HAK, nothing new
      const t = fresh.trustInit(root);
      expect(t).toMatchObject({ created: false, pcrExtended: false, hakPcr: 13 });
      expect(fresh.hakPublic().key.equals(hv.hakPublic().key)).toBe(true);
      // a blob with one byte changed is refused, named
      const bad = Buffer.from(root);
      bad[bad.length - 5]! ^= 1;
      expect(() => new CoreHypervisor(config()).trustInit(bad)).toThrow(/TRUST_INIT: TRUST_SEAL_FAILED/);
    } finally {
      fresh.close();
    }
  });

  it('enable demotes the host: enclave and hypervisor memory refused after, allowed before; key slots', () => {
    const h2 = new CoreHypervisor(config());
    try {
      const p = loadPayload('crypto');
      const id = h2.loadPayload(p, signed(p));
      const hpa = h2.enclavePages(id)[0]!.hpa;
      expect(h2.hostAccess(hpa, 'read')).toBeNull();
      const base = 0x1_8000_0000n;
      h2.enable([
        { start: 0n, size: base, kind: 'ram' },
        { start: base, size: 16n * MB, kind: 'reserved' },
      ]);
      expect(h2.status().enabled).toBe(true);
      expect(h2.hostAccess(hpa, 'read')).toMatch(new RegExp(`host read at 0x${hpa.toString(16)} refused: memory of enclave ${id}`));
      expect(h2.hostAccess(base, 'write')).toMatch(/refused: hypervisor memory/);
      expect(h2.hostAccess(0x10_0000n, 'read')).toBeNull();
      expect(h2.status().hostFaults).toMatchObject({ enclave: 1, hypervisor: 1 });
      expect(() => h2.disable()).toThrow(/DISABLE: ENCLAVES_ALIVE/);
      const slot = h2.keySlotAlloc(id);
      expect(slot).toBe(1);
      expect(h2.destroy(id)).toBe(p.layout.pages.length + 1);
      expect(h2.status().keySlotsPendingFlush).toBe(1);
      expect(h2.keySlotFlush()).toBe(1);
      h2.disable();
      expect(h2.hostAccess(hpa, 'read')).toBeNull();
    } finally {
      h2.close();
    }
  });

  describe.skipIf(noKvm !== null)('run on KVM from the EPC', () => {
    it('answers ECALLs, seals and unseals with the MRENCLAVE-bound key, reports, and is destroyed', () => {
      const crypto = loadPayload('crypto');
      const cid = hv.loadPayload(crypto, signed(crypto));
      const cvm = hv.run(cid);
      const data = randomBytes(100);
      expect(cvm.call(2, data).toString('hex')).toBe(createHash('sha256').update(data).digest('hex'));

      const sealer = loadPayload('sealer');
      const sid = hv.loadPayload(sealer, signed(sealer));
      const svm = hv.run(sid);
      const secret = Buffer.from('the launch codes');
      const blob = svm.call(SEALER.SEAL, secret);
      expect(blob.length).toBe(secret.length + 68);
      expect(blob.includes(secret)).toBe(false);
      expect(svm.call(SEALER.UNSEAL, blob).equals(secret)).toBe(true);
      const forged = Buffer.from(blob);
      forged[forged.length - 1]! ^= 1;
      expect(svm.ecall(SEALER.UNSEAL, forged)).toMatchObject({ ok: false, errorCode: 4 });

      // a second instance (same MRENCLAVE) unseals; the core's seal key never leaves the enclave
      const sid2 = hv.loadPayload(sealer, signed(sealer));
      const svm2 = hv.run(sid2);
      expect(svm2.call(SEALER.UNSEAL, blob).equals(secret)).toBe(true);
      expect(svm2.call(SEALER.KEY_FINGERPRINT).equals(svm.call(SEALER.KEY_FINGERPRINT))).toBe(true);

      // a different enclave (one more page → another MRENCLAVE) gets another key
      const other: EnclavePayload = {
        layout: { ...sealer.layout, pages: [...sealer.layout.pages, { offset: 0x1f000, type: 'reg', perms: 'r--', secinfo: 0x201 }] },
        image: sealer.image,
      };
      const oid = hv.loadPayload(other, signed(other));
      const ovm = hv.run(oid);
      expect(hv.info(oid).mrenclave.equals(hv.info(sid).mrenclave)).toBe(false);
      expect(ovm.call(SEALER.KEY_FINGERPRINT).equals(svm.call(SEALER.KEY_FINGERPRINT))).toBe(false);
      expect(ovm.ecall(SEALER.UNSEAL, blob)).toMatchObject({ ok: false, errorCode: 4 });

      // EREPORT through the hypercall: MAC checks out for the target, fields are this enclave's
      const reportData = randomBytes(64);
      const target = Buffer.alloc(56);
      hv.info(cid).mrenclave.copy(target, 0);
      const raw = svm.call(SEALER.REPORT, Buffer.concat([reportData, target]));
      const rep = parseReport(raw);
      expect(rep.mrenclave.equals(hv.info(sid).mrenclave)).toBe(true);
      expect(rep.reportData.equals(reportData)).toBe(true);
      expect(rep.isvSvn).toBe(2);
      expect(hv.verifyReport(raw, hv.info(cid).mrenclave)).toBe(true);
      expect(hv.verifyReport(raw, hv.info(oid).mrenclave)).toBe(false);

      // destroy: the VM running it ends, pages come back, the others keep answering
      const used = hv.status().epcPagesUsed;
      expect(hv.destroy(sid)).toBe(sealer.layout.pages.length + 1);
      expect(hv.status().epcPagesUsed).toBe(used - sealer.layout.pages.length - 1);
      expect(() => svm.call(SEALER.KEY_FINGERPRINT)).toThrow(/is dead: enclave destroyed/);
      expect(svm2.call(SEALER.UNSEAL, blob).equals(secret)).toBe(true);
      expect(cvm.call(0, Buffer.from('ok')).toString()).toBe('ok');
      for (const id of [cid, sid2, oid]) hv.destroy(id);
      for (const vm of [cvm, svm, svm2, ovm]) vm.destroy();
      expect(hv.status().epcPagesUsed).toBe(0);
    });

    it('quote-report ECALL → QUOTE: Node verifies the Ed25519 signature, tpm2_pcrread shows the HAK event in PCR 13', () => {
      const sealer = loadPayload('sealer');
      const sid = hv.loadPayload(sealer, signed(sealer));
      const svm = hv.run(sid);
      const reportData = randomBytes(64);
      const report = svm.call(SEALER.QUOTE_REPORT, reportData);
      expect(report.length).toBe(432);
      const q = hv.quote(report);
      expect(q.length).toBe(496);
      expect(q.subarray(0, 4).toString()).toBe('HEQ1');
      expect([q.readUInt16LE(4), q.readUInt16LE(6), q.readUInt32LE(8), q.readUInt32LE(12)]).toEqual([1, 1, 13, 0]);
      expect(q.subarray(16, 400).equals(report.subarray(0, 384))).toBe(true);
      const body = parseReport(report);
      expect(body.mrenclave.equals(hv.info(sid).mrenclave)).toBe(true);
      expect(body.reportData.equals(reportData)).toBe(true);
      const hak = hv.hakPublic();
      expect(q.subarray(400, 432).equals(hak.key)).toBe(true);
      const spki = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), hak.key]), format: 'der', type: 'spki' });
      expect(verify(null, q.subarray(0, 432), spki, q.subarray(432))).toBe(true);
      const tampered = Buffer.from(q.subarray(0, 432));
      tampered[350]! ^= 1;
      expect(verify(null, tampered, spki, q.subarray(432))).toBe(false);
      // PCR 13 (read by tpm2-tools) = extend(0, SHA-256("hyperenclave-hak:ed25519:" ‖ hex(HAK)))
      const out = join(tpm.stateDir, 'pcr13.bin');
      execFileSync('tpm2_pcrread', ['-T', tpm.tcti, '-o', out, 'sha256:13']);
      const event = Buffer.from(`hyperenclave-hak:ed25519:${hak.key.toString('hex')}`);
      expect(hakEventData(hak.key).equals(event)).toBe(true);
      const want = createHash('sha256').update(Buffer.alloc(32)).update(createHash('sha256').update(event).digest()).digest();
      expect(readFileSync(out).equals(want)).toBe(true);
      // a report for the enclave's own identity (ECALL 2) is not quoted: its MAC is for another target
      const target = Buffer.alloc(56);
      hv.info(sid).mrenclave.copy(target, 0);
      expect(() => hv.quote(svm.call(SEALER.REPORT, Buffer.concat([reportData, target])))).toThrow(/QUOTE: REPORT_MAC_MISMATCH/);
      // the quoting identity's report via ECALL 2 with an explicit TARGETINFO is quoted too
      const qt = Buffer.alloc(56);
      QUOTING_TARGET_MRENCLAVE.copy(qt, 0);
      expect(hv.quote(svm.call(SEALER.REPORT, Buffer.concat([reportData, qt]))).subarray(400, 432).equals(hak.key)).toBe(true);
      hv.destroy(sid);
      svm.destroy();
    });

    it('data sealed under one root unseals after the hypervisor restarts on the same TPM (blob), not under another root', () => {
      const sealer = loadPayload('sealer');
      const sid = hv.loadPayload(sealer, signed(sealer));
      const svm = hv.run(sid);
      const secret = Buffer.from('survives a restart');
      const blob = svm.call(SEALER.SEAL, secret);
      hv.destroy(sid);
      svm.destroy();
      // a new core instance (a service restart) unseals the root from its blob
      const again = new CoreHypervisor(config());
      const other = new CoreHypervisor(config());
      try {
        again.trustInit(root);
        const id = again.loadPayload(sealer, signed(sealer));
        const vm = again.run(id);
        expect(vm.call(SEALER.UNSEAL, blob).equals(secret)).toBe(true);
        vm.destroy();
        again.destroy(id);
        // a new root (no blob): another seal key, the data stays sealed
        expect(other.trustInit().created).toBe(true);
        const oid = other.loadPayload(sealer, signed(sealer));
        const ovm = other.run(oid);
        expect(ovm.ecall(SEALER.UNSEAL, blob)).toMatchObject({ ok: false, errorCode: 4 });
        ovm.destroy();
        other.destroy(oid);
      } finally {
        again.close();
        other.close();
      }
    });

    it('a faulting enclave on the core is ended and its TCS released', () => {
      const bad = loadPayload('misbehave');
      const id = hv.loadPayload(bad, signed(bad));
      const vm = hv.run(id, { timeoutMs: 100 });
      expect(vm.call(0).toString()).toBe('alive');
      expect(() => vm.call(1)).toThrow(EnclaveVmError);
      expect(hv.info(id).threadsInside).toBe(0);
      expect(hv.destroy(id)).toBe(bad.layout.pages.length + 1);
    });
  });
});
