import { createHash, createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FirmwareBackend, emulatedSlotRanges } from './backends.js';
import { emulatedPlatformFacts } from './detect.js';
import { FirmwareError, SEV_STATUS } from './errors.js';
import { MeasurementMismatchError, SevGuestOwner } from './guest-owner.js';
import { EmulatedKeySlotAllocator } from './keyslots.js';
import { CSV_SUITE, SEV_POLICY, SEV_SUITE, SevFirmware, expectedSevMeasurement, launchMeasurement, packageLaunchSecret } from './sev-firmware.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

describe('LAUNCH_MEASURE known answer', () => {
  it('matches the AMD sev-tool vector (API 0.18, build 0x0f, policy 0, empty launch digest)', () => {
    const m = launchMeasurement(SEV_SUITE, {
      apiMajor: 0,
      apiMinor: 18,
      build: 0x0f,
      policy: 0,
      launchDigest: hex('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'),
      mnonce: hex('4fbe0bedbad6c86ae8f68971d103e554'),
      tik: hex('66320db73158a35a255d051758e95ed4'),
    });
    expect(m.toString('hex')).toBe('6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea');
    // The same vector through the verifier entry point: LD is SHA-256 of the (empty) image.
    expect(expectedSevMeasurement(Buffer.alloc(0), 0, { apiMajor: 0, apiMinor: 18 }, 0x0f, hex('4fbe0bedbad6c86ae8f68971d103e554'), hex('66320db73158a35a255d051758e95ed4')).toString('hex')).toBe(
      '6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea',
    );
  });

  it('the firmware model computes exactly the spec formula (independent recomputation, SHA-256 and SM3)', () => {
    for (const suite of [SEV_SUITE, CSV_SUITE]) {
      const fw = new SevFirmware({ suite, apiMajor: 0, apiMinor: 24, build: 3, maxAsid: 4, minSevAsid: 1, esSupported: false });
      const tik = randomBytes(16);
      const policy = SEV_POLICY.NODBG | SEV_POLICY.NOKS | (0x17 << 24);
      const h = fw.launchStart(policy, 16384, { tek: randomBytes(16), tik });
      fw.activate(h, 1);
      const a = randomBytes(4096);
      const b = randomBytes(8192);
      fw.launchUpdateData(h, 0, a);
      fw.launchUpdateData(h, 8192, b);
      const mnonce = randomBytes(16);
      const got = fw.launchMeasure(h, mnonce);
      const ld = createHash(suite.hash).update(a).update(b).digest();
      expect(got.launchDigest.equals(ld)).toBe(true);
      const hdr = Buffer.from([0x04, 0, 24, 3, policy & 0xff, (policy >>> 8) & 0xff, (policy >>> 16) & 0xff, policy >>> 24]);
      const want = createHmac(suite.hash, tik).update(Buffer.concat([hdr, ld, mnonce])).digest();
      expect(got.measurement.equals(want)).toBe(true);
    }
  });
});

function sevSetup(kind: 'sev' | 'sev-es' = 'sev') {
  const allocator = new EmulatedKeySlotAllocator(emulatedSlotRanges());
  const backend = new FirmwareBackend(kind, { facts: emulatedPlatformFacts(), allocator });
  return { allocator, backend };
}

describe('SEV launch flow with the guest owner', () => {
  const image = Buffer.concat([Buffer.from('enclave kernel '), randomBytes(3 * 4096 - 15)]);

  it('owner verifies the measurement from the image alone, then the secret lands in guest memory', () => {
    const { backend } = sevSetup();
    const owner = new SevGuestOwner(SEV_SUITE);
    const policy = SEV_POLICY.NODBG | SEV_POLICY.NOKS;
    const g = backend.launchStart({ memorySize: 64 * 1024, policy, session: owner.session() });
    g.updateData(0, image);
    const launch = g.measure();
    const packet = owner.releaseSecret(launch, image, policy, Buffer.from('disk key: 0123456789abcdef0123'.padEnd(48, '.')));
    expect(packet.header.length).toBe(52);
    g.injectSecret(packet.header, packet.data, 0x8000);
    g.finish();
    expect(g.guestRead(0x8000, 48).toString()).toBe('disk key: 0123456789abcdef0123'.padEnd(48, '.'));
    expect(g.hostRead(0x8000, 48).toString()).not.toContain('disk key');
    expect(g.guestRead(0, image.length).equals(image)).toBe(true);
  });

  it('owner refuses when one byte of the launched image differs', () => {
    const { backend } = sevSetup();
    const owner = new SevGuestOwner();
    const g = backend.launchStart({ memorySize: 64 * 1024, session: owner.session() });
    const tampered = Buffer.from(image);
    tampered[100] ^= 1;
    g.updateData(0, tampered);
    const launch = g.measure();
    expect(() => owner.releaseSecret(launch, image, SEV_POLICY.NODBG | SEV_POLICY.NOKS, Buffer.alloc(16))).toThrow(MeasurementMismatchError);
    expect(() => owner.verifyLaunch(launch, image, SEV_POLICY.NODBG)).toThrow(/policy 0x3 is not the expected 0x1/);
  });

  it('LAUNCH_SECRET: a packet MAC-bound to another measurement, a flipped ciphertext bit or a wrong TIK is refused (BAD_MEASUREMENT)', () => {
    const { backend } = sevSetup();
    const owner = new SevGuestOwner();
    const g = backend.launchStart({ memorySize: 16384, session: owner.session() });
    g.updateData(0, image.subarray(0, 4096));
    const launch = g.measure();
    const api = { apiMajor: launch.apiMajor, apiMinor: launch.apiMinor };
    const wrongMeasure = packageLaunchSecret(SEV_SUITE, owner, Buffer.alloc(32, 7), randomBytes(32), api);
    const err = (() => {
      try {
        g.injectSecret(wrongMeasure.header, wrongMeasure.data, 0);
      } catch (e) {
        return e as FirmwareError;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(FirmwareError);
    expect(err!.status).toBe(SEV_STATUS.BAD_MEASUREMENT);
    const good = packageLaunchSecret(SEV_SUITE, owner, Buffer.alloc(32, 7), launch.measurement, api);
    const flipped = Buffer.from(good.data);
    flipped[0] ^= 1;
    expect(() => g.injectSecret(good.header, flipped, 0)).toThrow(/BAD_MEASUREMENT/);
    const otherTik = packageLaunchSecret(SEV_SUITE, { tek: owner.tek, tik: randomBytes(16) }, Buffer.alloc(32, 7), launch.measurement, api);
    expect(() => g.injectSecret(otherTik.header, otherTik.data, 0)).toThrow(/BAD_MEASUREMENT/);
    const compressed = Buffer.from(good.header);
    compressed.writeUInt32LE(1, 0);
    expect(() => g.injectSecret(compressed, good.data, 0)).toThrow(/INVALID_PARAM/);
    g.injectSecret(good.header, good.data, 0);
    expect(g.guestRead(0, 32).equals(Buffer.alloc(32, 7))).toBe(true);
  });

  it('state machine: no LAUNCH_SECRET before MEASURE, no UPDATE_DATA after it', () => {
    const { backend } = sevSetup();
    const g = backend.launchStart({ memorySize: 16384 });
    expect(() => g.injectSecret(Buffer.alloc(52), Buffer.alloc(16), 0)).toThrow(/INVALID_GUEST_STATE/);
    g.measure();
    expect(() => g.updateData(0, Buffer.alloc(16))).toThrow(/INVALID_GUEST_STATE/);
    expect(() => g.updateData(0, Buffer.alloc(16))).toThrow(/LSECRET/);
  });
});

describe('SEV policy enforcement', () => {
  it('NODBG refuses DBG_DECRYPT; without it the host may debug-decrypt', () => {
    const { backend } = sevSetup();
    const locked = backend.launchStart({ memorySize: 16384, policy: SEV_POLICY.NODBG });
    locked.updateData(0, Buffer.alloc(4096, 0x5a));
    expect(() => locked.debugDecrypt(0, 16)).toThrow(/POLICY_FAILURE.*NODBG/);
    const open = backend.launchStart({ memorySize: 16384, policy: 0 });
    open.updateData(0, Buffer.alloc(4096, 0x5a));
    expect(open.debugDecrypt(0, 16).equals(Buffer.alloc(16, 0x5a))).toBe(true);
  });

  it('NOKS refuses key sharing; without NOKS two guests may share a VEK', () => {
    const fw = new SevFirmware({ suite: SEV_SUITE, apiMajor: 0, apiMinor: 24, build: 1, maxAsid: 8, minSevAsid: 1, esSupported: false });
    const a = fw.launchStart(SEV_POLICY.NOKS, 4096);
    expect(() => fw.launchStart(0, 4096, undefined, a)).toThrow(/NOKS/);
    const b = fw.launchStart(0, 4096);
    const c = fw.launchStart(0, 4096, undefined, b);
    fw.activate(b, 3);
    fw.activate(c, 3); // same key on the same ASID: allowed
    fw.launchUpdateData(b, 0, Buffer.alloc(4096, 1));
    fw.memory(c).setRaw(0, fw.memory(b).raw(0, 4096));
    expect(fw.guestRead(c, 0, 4096).equals(Buffer.alloc(4096, 1))).toBe(true);
    const d = fw.launchStart(0, 4096);
    expect(() => fw.activate(d, 3)).toThrow(/ASID_OWNED/);
  });

  it('ES: needs firmware support, an ES-range ASID, and only ES guests take LAUNCH_UPDATE_VMSA', () => {
    const noEs = new SevFirmware({ suite: SEV_SUITE, apiMajor: 0, apiMinor: 24, build: 1, maxAsid: 8, minSevAsid: 1, esSupported: false });
    expect(() => noEs.launchStart(SEV_POLICY.ES, 4096)).toThrow(/POLICY_FAILURE.*SEV-ES/);
    const { backend } = sevSetup('sev-es');
    const g = backend.launchStart({ memorySize: 16384 });
    expect(g.slot).toBeLessThan(6);
    g.updateData(0, Buffer.alloc(4096, 2));
    g.updateVmsa(4096, Buffer.alloc(4096, 3));
    const m = g.measure();
    expect(m.launchDigest.equals(createHash('sha256').update(Buffer.alloc(4096, 2)).update(Buffer.alloc(4096, 3)).digest())).toBe(true);
    expect(g.hostRead(4096, 16).equals(Buffer.alloc(16, 3))).toBe(false);
    const plain = sevSetup('sev').backend.launchStart({ memorySize: 8192 });
    expect(() => plain.updateVmsa(4096, Buffer.alloc(4096))).toThrow(/no ES bit/);
    const fw = new SevFirmware({ suite: SEV_SUITE, apiMajor: 0, apiMinor: 24, build: 1, maxAsid: 8, minSevAsid: 4, esSupported: true });
    expect(() => fw.activate(fw.launchStart(SEV_POLICY.ES, 4096), 5)).toThrow(/INVALID_ASID.*below 4/);
    expect(() => fw.activate(fw.launchStart(0, 4096), 2)).toThrow(/INVALID_ASID.*≥ 4/);
  });

  it('NOSEND, DOMAIN and SEV restrict SEND_START targets', () => {
    const fw = new SevFirmware({ suite: SEV_SUITE, apiMajor: 0, apiMinor: 24, build: 1, maxAsid: 8, minSevAsid: 1, esSupported: false });
    expect(() => fw.sendStart(fw.launchStart(SEV_POLICY.NOSEND, 4096), { sameDomain: true, sevCapable: true })).toThrow(/NOSEND/);
    const dom = fw.launchStart(SEV_POLICY.DOMAIN, 4096);
    expect(() => fw.sendStart(dom, { sameDomain: false, sevCapable: true })).toThrow(/DOMAIN/);
    fw.sendStart(dom, { sameDomain: true, sevCapable: true });
    const sev = fw.launchStart(SEV_POLICY.SEV, 4096);
    expect(() => fw.sendStart(sev, { sameDomain: true, sevCapable: false })).toThrow(/policy SEV/);
    fw.sendStart(fw.launchStart(0, 4096), { sameDomain: false, sevCapable: false });
  });

  it('API version minimum in policy bits 23:16 (major) and 31:24 (minor)', () => {
    const fw = new SevFirmware({ suite: SEV_SUITE, apiMajor: 0, apiMinor: 17, build: 1, maxAsid: 8, minSevAsid: 1, esSupported: false });
    expect(() => fw.launchStart((0 << 16) | (18 << 24), 4096)).toThrow(/API ≥ 0.18, firmware is 0.17/);
    expect(() => fw.launchStart(1 << 16, 4096)).toThrow(/POLICY_FAILURE/);
    fw.launchStart(17 << 24, 4096);
  });

  it('ASIDs: DEACTIVATE then ACTIVATE on the same ASID needs DF_FLUSH first', () => {
    const fw = new SevFirmware({ suite: SEV_SUITE, apiMajor: 0, apiMinor: 24, build: 1, maxAsid: 2, minSevAsid: 1, esSupported: false });
    const a = fw.launchStart(0, 4096);
    fw.activate(a, 1);
    expect(() => fw.decommission(a)).toThrow(/ACTIVE/);
    fw.deactivate(a);
    fw.decommission(a);
    const b = fw.launchStart(0, 4096);
    expect(() => fw.activate(b, 1)).toThrow(/DFFLUSH_REQUIRED/);
    expect(() => fw.activate(b, 3)).toThrow(/INVALID_ASID/);
    expect(fw.dfFlush()).toEqual([1]);
    fw.activate(b, 1);
  });
});
