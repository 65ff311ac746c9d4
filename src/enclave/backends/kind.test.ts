import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BACKEND_KINDS } from './kind.js';
import { BACKENDS, EVIDENCE_BACKEND_KINDS, describeBackend, launchCheckFor } from './registry.js';
import { EMULATED_KEY_SLOTS, emulatedSlotRanges } from './backends.js';
import { emulatedPlatformFacts } from './detect.js';
import { EmulatedKeySlotAllocator } from './keyslots.js';

const root = new URL('../../../', import.meta.url).pathname;

/** Every `enum` in a schema that names a backend kind (it lists "sev"). */
function backendEnums(schema: unknown): string[][] {
  const out: string[][] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'enum' && Array.isArray(x) && x.includes('sev')) out.push(x as string[]);
        else walk(x);
      }
    }
  };
  walk(schema);
  return out;
}

describe('backend kind names', () => {
  it('the schemas of the documents we write list exactly BACKEND_KINDS', () => {
    for (const f of ['config', 'enclave-manifest', 'enclave-run', 'hypervisor-status']) {
      const enums = backendEnums(JSON.parse(readFileSync(`${root}schemas/${f}.schema.json`, 'utf8')));
      expect(enums.length, f).toBeGreaterThan(0);
      for (const e of enums) expect(e, f).toEqual([...BACKEND_KINDS]);
    }
  });

  it('evidence accepts every kind we produce and the foreign ones the registry names, nothing else', () => {
    const enums = backendEnums(JSON.parse(readFileSync(`${root}schemas/evidence.schema.json`, 'utf8')));
    expect(enums.length).toBeGreaterThan(0);
    for (const e of enums) expect([...e].sort()).toEqual([...EVIDENCE_BACKEND_KINDS].sort());
    expect(EVIDENCE_BACKEND_KINDS).toEqual(expect.arrayContaining([...BACKEND_KINDS]));
  });

  it('the registry has one descriptor per kind, under its own name, with the key-slot kind its guests use', () => {
    expect(Object.keys(BACKENDS)).toEqual([...BACKEND_KINDS]);
    for (const k of BACKEND_KINDS) {
      expect(BACKENDS[k].kind).toBe(k);
      expect(BACKENDS[k].keySlotKind).toBe(k === 'none' ? null : k);
    }
  });

  it('the verifier recomputes the launch of the firmware-measured kinds only (SEV, SEV-ES, CSV; foreign SEV-SNP)', () => {
    expect(EVIDENCE_BACKEND_KINDS.filter((k) => launchCheckFor(k))).toEqual(['sev', 'sev-es', 'csv', 'sev-snp']);
    expect(launchCheckFor('tdx')).toBeUndefined();
  });

  it('the emulated key-slot ranges are one definition: inside the core table, and what each emulated backend reports', () => {
    const ranges = emulatedSlotRanges();
    const ctx = { facts: emulatedPlatformFacts(), allocator: new EmulatedKeySlotAllocator(ranges) };
    for (const k of BACKEND_KINDS) {
      if (k === 'none') continue;
      const r = ranges[k];
      expect(r.first, k).toBeGreaterThanOrEqual(EMULATED_KEY_SLOTS.first);
      expect(r.last, k).toBeLessThanOrEqual(EMULATED_KEY_SLOTS.last);
      expect(describeBackend(k, ctx).slots, k).toMatchObject({ first: r.first, last: r.last });
    }
    // MKTME used to be 1..63 here and 1..15 in the service's allocator: one answer now
    expect(ranges.mktme).toEqual({ first: 1, last: 15 });
  });
});
