import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BACKEND_KINDS } from './kind.js';

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

  it('evidence accepts every kind we produce (and names foreign ones a verifier may meet)', () => {
    const enums = backendEnums(JSON.parse(readFileSync(`${root}schemas/evidence.schema.json`, 'utf8')));
    expect(enums.length).toBeGreaterThan(0);
    for (const e of enums) expect(e).toEqual(expect.arrayContaining([...BACKEND_KINDS]));
  });
});
