import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FirmwareGuest, MktmeGuest, emulatedSlotRanges } from './backends.js';
import { createBackend } from './registry.js';
import { emulatedPlatformFacts } from './detect.js';
import { KeySlotError } from './errors.js';
import { EmulatedKeySlotAllocator } from './keyslots.js';
import { SEV_POLICY } from './sev-firmware.js';
import type { BackendKind, EncryptedGuest, MemoryEncryptionBackend } from './types.js';

const MEM = 64 * 1024;
const image = Buffer.concat([Buffer.from('#!enclave payload: secret-bearing code and data\n'), randomBytes(5 * 4096)]);
const textAt = 0x1000;

function setup(kind: BackendKind): { backend: MemoryEncryptionBackend; allocator: EmulatedKeySlotAllocator } {
  const allocator = new EmulatedKeySlotAllocator(emulatedSlotRanges());
  return { allocator, backend: createBackend(kind, { facts: emulatedPlatformFacts(), allocator }) };
}

/** A launch with fixed transport keys and MNONCE (SEV/CSV) so measurements are comparable. */
const session = { tek: randomBytes(16), tik: randomBytes(16) };
const mnonce = randomBytes(16);
function launch(backend: MemoryEncryptionBackend, img: Buffer, policy?: number): { guest: EncryptedGuest; measurement: Buffer } {
  const guest = backend.launchStart({ memorySize: MEM, session, ...(policy !== undefined ? { policy } : {}) });
  guest.updateData(textAt, img);
  const m = guest instanceof FirmwareGuest ? guest.measure(mnonce) : guest.measure();
  guest.finish();
  return { guest, measurement: m.measurement };
}

for (const kind of ['sev', 'sev-es', 'csv', 'mktme'] as const) {
  describe(`${kind} backend`, () => {
    it('the enclave sees plaintext; the host sees ciphertext that changes with the key', () => {
      const { backend } = setup(kind);
      const a = launch(backend, image).guest;
      const b = launch(backend, image).guest;
      expect(a.guestRead(textAt, image.length).equals(image)).toBe(true);
      const hostA = a.hostRead(textAt, image.length);
      const hostB = b.hostRead(textAt, image.length);
      expect(hostA.equals(image)).toBe(false);
      expect(hostA.includes(Buffer.from('secret-bearing'))).toBe(false);
      // Same plaintext at the same address under two guests' keys: unrelated ciphertext.
      expect(hostA.subarray(0, 64).equals(hostB.subarray(0, 64))).toBe(false);
      // Same plaintext in two pages of one guest: different ciphertext (address tweak).
      a.guestWrite(0x8000, Buffer.alloc(4096, 0x11));
      a.guestWrite(0x9000, Buffer.alloc(4096, 0x11));
      expect(a.hostRead(0x8000, 4096).equals(a.hostRead(0x9000, 4096))).toBe(false);
      expect(a.guestRead(0x9000, 4096).equals(Buffer.alloc(4096, 0x11))).toBe(true);
    });

    it("another guest's key decrypts the stolen ciphertext to garbage; a moved page too", () => {
      const { backend } = setup(kind);
      const a = launch(backend, image).guest;
      const b = launch(backend, Buffer.alloc(image.length)).guest;
      b.hostWrite(textAt, a.hostRead(textAt, image.length));
      const seen = b.guestRead(textAt, image.length);
      expect(seen.equals(image)).toBe(false);
      expect(seen.includes(Buffer.from('secret-bearing'))).toBe(false);
      // Remapping inside one guest: the tweak is the address, so a moved page is garbage too.
      a.hostWrite(0xa000, a.hostRead(textAt, 4096));
      expect(a.guestRead(0xa000, 4096).equals(image.subarray(0, 4096))).toBe(false);
      // But replaying a page at its own address is NOT detected: no integrity.
      const old = a.hostRead(textAt, 4096);
      a.guestWrite(textAt, Buffer.alloc(4096, 0x22));
      a.hostWrite(textAt, old);
      expect(a.guestRead(textAt, 4096).equals(image.subarray(0, 4096))).toBe(true);
    });

    it('a measurement changes when one byte of launched memory changes', () => {
      const { backend } = setup(kind);
      const m1 = launch(backend, image).measurement;
      const m2 = launch(backend, image).measurement;
      const tampered = Buffer.from(image);
      tampered[image.length - 1] ^= 0x80;
      const m3 = launch(backend, tampered).measurement;
      expect(m1.equals(m2)).toBe(true);
      expect(m1.equals(m3)).toBe(false);
    });

    it('key slots run out at the platform limit and come back only after release and flush', () => {
      const { backend, allocator } = setup(kind);
      const caps = backend.capabilities();
      expect(caps.slots).not.toBeNull();
      const { first, last } = caps.slots!;
      const ranges = emulatedSlotRanges();
      const expected = ranges[kind];
      expect([first, last]).toEqual([expected.first, expected.last]);
      const guests: EncryptedGuest[] = [];
      for (let i = first; i <= last; i++) guests.push(backend.launchStart({ memorySize: 4096 }));
      expect(guests.map((g) => g.slot)).toEqual(Array.from({ length: last - first + 1 }, (_, i) => first + i));
      expect(() => backend.launchStart({ memorySize: 4096 })).toThrow(KeySlotError);
      expect(() => backend.launchStart({ memorySize: 4096 })).toThrow(new RegExp(`all ${last - first + 1} in ${first}\\.\\.${last} are taken`));
      const victim = guests[2]!;
      victim.updateData(0, Buffer.alloc(4096, 0x44));
      const stale = victim.hostRead(0, 4096);
      victim.release();
      expect(() => backend.launchStart({ memorySize: 4096 })).toThrow(/1 released, awaiting flush before reuse/);
      expect(allocator.pendingFlush()).toEqual([victim.slot]);
      expect(backend.flushReleased()).toEqual([victim.slot]);
      const again = backend.launchStart({ memorySize: 4096 });
      expect(again.slot).toBe(victim.slot);
      if (again instanceof MktmeGuest) expect(again.hostBase).toBe((victim as MktmeGuest).hostBase);
      // The recycled slot has a fresh key: the old guest's ciphertext (same slot, same address) is garbage now.
      again.updateData(0, Buffer.alloc(4096, 0x33));
      expect(again.guestRead(0, 4096).equals(Buffer.alloc(4096, 0x33))).toBe(true);
      again.hostWrite(0, stale);
      expect(again.guestRead(0, 4096).equals(Buffer.alloc(4096, 0x44))).toBe(false);
    });

    it('debug reads are refused under NODBG', () => {
      const { backend } = setup(kind);
      const g = launch(backend, image).guest;
      expect(() => g.debugDecrypt(textAt, 16)).toThrow(/NODBG/);
    });

    it('states its limitations, including the lack of integrity protection', () => {
      const caps = setup(kind).backend.capabilities();
      expect(caps.integrity).toBe(false);
      expect(caps.limitations).toMatch(/integrity/);
      expect(caps.limitations).toMatch(/keys live in this Node process/);
      if (kind !== 'csv') expect(caps.limitations).toMatch(/replay/);
      expect(caps.emulated).toBe(true);
    });
  });
}

describe('none backend', () => {
  it('is plaintext for everybody and still measures', () => {
    const { backend } = setup('none');
    const { guest, measurement } = launch(backend, image);
    expect(guest.hostRead(textAt, image.length).equals(image)).toBe(true);
    expect(guest.slot).toBe(0);
    expect(measurement.length).toBe(32);
  });
});

describe('backend-specific', () => {
  it('mktme: the host reading through KeyID 0 (TME key) gets garbage, and the KeyID sits in the top address bits', () => {
    const { backend } = setup('mktme');
    const g = launch(backend, image).guest as MktmeGuest;
    expect(g.hostReadKeyId0(textAt, 64).equals(image.subarray(0, 64))).toBe(false);
    expect(() => g.injectSecret()).toThrow(/no firmware secret injection/);
  });

  it('sev: policy without ES on the sev-es backend is refused; ES on the sev backend too', () => {
    expect(() => setup('sev-es').backend.launchStart({ memorySize: 4096, policy: SEV_POLICY.NODBG })).toThrow(/lacks the ES bit/);
    expect(() => setup('sev').backend.launchStart({ memorySize: 4096, policy: SEV_POLICY.ES })).toThrow(/use --backend sev-es/);
  });
});
