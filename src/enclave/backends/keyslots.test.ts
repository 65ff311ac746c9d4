import { describe, expect, it } from 'vitest';
import { KeySlotError } from './errors.js';
import { EmulatedKeySlotAllocator } from './keyslots.js';

describe('EmulatedKeySlotAllocator (same semantics as the Rust core allocator)', () => {
  it('hands out lowest free slots per kind, refuses when exhausted, reuses only after release + flush', () => {
    const a = new EmulatedKeySlotAllocator({ 'sev-es': { first: 1, last: 2 }, sev: { first: 3, last: 4 } });
    expect([a.allocate('sev'), a.allocate('sev'), a.allocate('sev-es')]).toEqual([3, 4, 1]);
    expect(() => a.allocate('sev')).toThrow(new KeySlotError('no free SEV ASID: all 2 in 3..4 are taken'));
    a.release(3);
    expect(() => a.allocate('sev')).toThrow(/1 released, awaiting flush/);
    expect(() => a.release(3)).toThrow(/not allocated/);
    a.flush(3);
    expect(a.allocate('sev')).toBe(3);
    expect(() => a.flush(3)).toThrow(/still allocated/);
    expect(() => a.allocate('csv')).toThrow(/no CSV ASIDs on this platform/);
  });

  it('rejects overlapping ASID ranges', () => {
    expect(() => new EmulatedKeySlotAllocator({ 'sev-es': { first: 1, last: 5 }, sev: { first: 5, last: 9 } })).toThrow(/overlap/);
  });
});
