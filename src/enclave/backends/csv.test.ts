import { createHash, createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sm2GenerateKey } from '../../crypto/sm2.js';
import { FirmwareBackend, emulatedSlotRanges } from './backends.js';
import { makeCsvChip, makeCsvVendor, parseCsvCert, verifyCsvChain, CsvCertError } from './csv-certs.js';
import { parseCsvReport, verifyCsvReport } from './csv-report.js';
import { emulatedPlatformFacts } from './detect.js';
import { SevGuestOwner, verifySevMeasurement } from './guest-owner.js';
import { EmulatedKeySlotAllocator } from './keyslots.js';
import { CSV_SUITE, SEV_POLICY } from './sev-firmware.js';

describe('CSV platform certificate chain HRK → HSK → CEK → PEK (SM2, ID 1234567812345678)', () => {
  const vendor = makeCsvVendor();
  const chip = makeCsvChip(vendor);

  it('verifies, pinned to the HRK', () => {
    const pek = verifyCsvChain(chip.chain, vendor.hrk.publicKey);
    expect(pek.role).toBe('PEK');
    expect(pek.subject.equals(chip.chipId)).toBe(true);
    expect(parseCsvCert(chip.chain.cek).issuerRole).toBe('HSK');
  });

  it('rejects a foreign root, a flipped signature bit, a swapped PEK and a wrong order', () => {
    expect(() => verifyCsvChain(chip.chain, sm2GenerateKey().publicKey)).toThrow(/not the trusted root/);
    const bad = Buffer.from(chip.chain.cek);
    bad[120] ^= 1;
    expect(() => verifyCsvChain({ ...chip.chain, cek: bad })).toThrow(/CEK cert: SM2 signature at byte 91 does not verify with the HSK key/);
    const otherChip = makeCsvChip(vendor);
    expect(() => verifyCsvChain({ ...chip.chain, pek: otherChip.chain.pek })).toThrow(CsvCertError);
    expect(() => verifyCsvChain({ ...chip.chain, hsk: chip.chain.cek })).toThrow(/HSK cert: has usage CEK/);
    expect(() => parseCsvCert(chip.chain.pek.subarray(1))).toThrow(/154 bytes, expected 155/);
  });
});

describe('CSV launch, secret and attestation report', () => {
  const image = randomBytes(8 * 4096);

  function csv() {
    const allocator = new EmulatedKeySlotAllocator(emulatedSlotRanges());
    return new FirmwareBackend('csv', { facts: emulatedPlatformFacts(), allocator });
  }

  it('HMAC-SM3 measurement, SM4-CTR secret transport, SM2-signed report a verifier accepts', () => {
    const backend = csv();
    const owner = new SevGuestOwner(CSV_SUITE);
    const policy = SEV_POLICY.NODBG | SEV_POLICY.NOKS;
    const g = backend.launchStart({ memorySize: 64 * 4096, policy, session: owner.session() });
    g.updateData(0, image);
    const launch = g.measure();
    expect(launch.algorithm).toBe('hmac-sm3');
    // Spec formula recomputed here with node's SM3 directly.
    const ld = createHash('sm3').update(image).digest();
    const hdr = Buffer.from([4, launch.apiMajor, launch.apiMinor, launch.build, policy, 0, 0, 0]);
    expect(launch.measurement.equals(createHmac('sm3', owner.tik).update(Buffer.concat([hdr, ld, launch.mnonce])).digest())).toBe(true);

    const secret = Buffer.from('sm4 volume key 0123456789abcdef!');
    const pkt = owner.releaseSecret(launch, image, policy, secret);
    g.injectSecret(pkt.header, pkt.data, 0x20000);
    g.finish();
    expect(g.guestRead(0x20000, 32).equals(secret)).toBe(true);

    const nonce = randomBytes(64);
    const report = g.attest(nonce);
    const body = verifyCsvReport(report, backend.csvChip!.chain, { trustedHrk: backend.csvVendor!.hrk.publicKey, measurement: launch.measurement, userData: nonce });
    expect(body.policy).toBe(policy);
    expect(body.mnonce.equals(launch.mnonce)).toBe(true);
    // The verifier recomputes the measurement from the image alone and compares.
    verifySevMeasurement(body, image, policy, owner.tik, CSV_SUITE);
    const oneByte = Buffer.from(image);
    oneByte[4096] ^= 1;
    expect(() => verifySevMeasurement(body, oneByte, policy, owner.tik, CSV_SUITE)).toThrow(/is not the expected/);
    expect(() => verifySevMeasurement(body, image, policy, owner.tik)).toThrow(/is not the expected/); // SEV suite ≠ CSV
  });

  it('report verification fails on a modified byte, another nonce, or another measurement', () => {
    const backend = csv();
    const g = backend.launchStart({ memorySize: 16384 });
    g.updateData(0, image.subarray(0, 4096));
    const launch = g.measure();
    const nonce = randomBytes(64);
    const report = g.attest(nonce);
    const chain = backend.csvChip!.chain;
    const tampered = Buffer.from(report);
    tampered[20] ^= 1;
    expect(() => verifyCsvReport(tampered, chain)).toThrow(/signature at byte 142 does not verify with the PEK/);
    expect(() => verifyCsvReport(report, chain, { userData: randomBytes(64) })).toThrow(/user data/);
    expect(() => verifyCsvReport(report, chain, { measurement: randomBytes(32) })).toThrow(/is not the expected/);
    expect(parseCsvReport(report).measurement.equals(launch.measurement)).toBe(true);
    const otherChip = makeCsvChip(backend.csvVendor!);
    expect(() => verifyCsvReport(report, otherChip.chain)).toThrow(/does not verify with the PEK/);
  });
});
