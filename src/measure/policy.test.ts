import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PolicyError } from './errors.js';
import { BUILTIN_POLICIES, banksForTpm, canonicalPolicyBytes, loadPolicy, validatePolicy } from './policy.js';

const dir = mkdtempSync(join(tmpdir(), 'pcr-policy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const good = { schema: 'hyperenclave/pcr-policy', version: 1, name: 'custom', banks: ['sha256'], events: [{ pcr: 12, measure: 'image' }, { pcr: 13, measure: 'signer', eventType: 'EV_EVENT_TAG' }] };

function err(doc: unknown): string {
  try {
    validatePolicy(doc, 'p.json');
  } catch (e) {
    expect(e).toBeInstanceOf(PolicyError);
    return (e as Error).message;
  }
  throw new Error('expected PolicyError');
}

describe('PCR policy', () => {
  it('built-ins validate; a file policy loads', () => {
    for (const p of Object.values(BUILTIN_POLICIES)) expect(validatePolicy(structuredClone(p))).toEqual(p);
    const path = join(dir, 'p.json');
    writeFileSync(path, JSON.stringify(good));
    expect(loadPolicy(path).events[1]).toEqual({ pcr: 13, measure: 'signer', eventType: 'EV_EVENT_TAG' });
    expect(loadPolicy().name).toBe('sha256-sha384');
  });

  it('errors carry the JSON path', () => {
    expect(err({ ...good, banks: ['sha256', 'md5'] })).toBe('p.json: /banks/1: must be one of "sha1", "sha256", "sha384", "sha512", "sm3_256"');
    expect(err({ ...good, events: [{ pcr: 3, measure: 'image' }] })).toBe('p.json: /events/0/pcr: must be >= 8');
    expect(err({ ...good, events: [{ pcr: 12, measure: 'kernel' }] })).toMatch(/^p\.json: \/events\/0\/measure: must be one of "image", "header", "signer"$/);
    expect(err({ ...good, events: [{ pcr: 12, measure: 'image', colour: 1 }] })).toBe('p.json: /events/0: unknown property "colour"');
    expect(err({ ...good, version: 2 })).toBe('p.json: /version: must be equal to constant');
    expect(err({ ...good, events: [{ pcr: 17, measure: 'image' }] })).toBe('p.json: /events/0/pcr: PCR 17 is reserved for the dynamic launch (localities 2-4); the TXT launch measures into it');
    const { banks: _b, ...noBanks } = good;
    expect(err(noBanks)).toBe("p.json: /: must have required property 'banks'");
  });

  it('missing file / not JSON', () => {
    expect(() => loadPolicy(join(dir, 'absent.json'))).toThrow(/not a built-in policy \(hyperenclave-sm3, sha256-sha384\) and not readable \(ENOENT\)/);
    writeFileSync(join(dir, 'bad.json'), '{');
    expect(() => loadPolicy(join(dir, 'bad.json'))).toThrow(/^pcr policy .*bad\.json: not JSON/);
  });

  it('banks: SM3 policy on a TPM without SM3 is a clear error; otherwise every active bank is extended', () => {
    const swtpmBanks = ['sha1', 'sha256', 'sha384', 'sha512'];
    expect(() => banksForTpm(loadPolicy('hyperenclave-sm3'), swtpmBanks)).toThrow(
      "pcr policy hyperenclave-sm3 needs the sm3_256 PCR bank, the TPM's active banks are sha1, sha256, sha384, sha512 (use the sha256-sha384 policy on a TPM without SM3, e.g. swtpm)",
    );
    expect(banksForTpm(loadPolicy('sha256-sha384'), swtpmBanks)).toEqual(swtpmBanks);
    expect(banksForTpm(loadPolicy('hyperenclave-sm3'), ['sha256', 'sm3_256'])).toEqual(['sha256', 'sm3_256']);
    expect(() => banksForTpm(loadPolicy('sha256-sha384'), ['sha1', 'sha256'])).toThrow(/needs the sha384 PCR bank/);
  });

  it('canonical bytes do not depend on key order', () => {
    const a = validatePolicy(structuredClone(good));
    const b = validatePolicy(JSON.parse(JSON.stringify({ events: good.events, banks: good.banks, name: good.name, version: 1, schema: good.schema })));
    expect(canonicalPolicyBytes(a)).toEqual(canonicalPolicyBytes(b));
  });
});
