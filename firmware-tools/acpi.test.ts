import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { parseAcpiHeader, parseDmar, parseIvrs, readIommuTable } from './acpi.js';
import { pathMissing, skipUnless } from '../test/helpers/require.js';

function table(sig: string, body: Buffer): Buffer {
  const t = Buffer.alloc(36 + body.length);
  t.write(sig, 0, 'latin1');
  t.writeUInt32LE(t.length, 4);
  t[8] = 1;
  t.write('HETEST', 10, 'latin1');
  t.write('SYNTH   ', 16, 'latin1');
  body.copy(t, 36);
  let sum = 0;
  for (const b of t) sum = (sum + b) & 0xff;
  t[9] = (0x100 - sum) & 0xff;
  return t;
}

// Synthetic tables laid out per the VT-d spec (section 8) and the AMD IOMMU spec (IVRS).
function dmar(): Buffer {
  const fields = Buffer.alloc(12);
  fields[0] = 38; // host address width - 1
  const drhd = Buffer.alloc(16);
  drhd.writeUInt16LE(0, 0);
  drhd.writeUInt16LE(16, 2);
  drhd[4] = 1;
  drhd.writeBigUInt64LE(0xfed90000n, 8);
  const rmrr = Buffer.alloc(24);
  rmrr.writeUInt16LE(1, 0);
  rmrr.writeUInt16LE(24, 2);
  rmrr.writeBigUInt64LE(0x7c000000n, 8);
  rmrr.writeBigUInt64LE(0x7c7fffffn, 16);
  return table('DMAR', Buffer.concat([fields, drhd, rmrr]));
}

function ivrs(): Buffer {
  const fields = Buffer.alloc(12);
  fields.writeUInt32LE(0x30 << 8, 0);
  const ivhd = Buffer.alloc(24);
  ivhd[0] = 0x11;
  ivhd.writeUInt16LE(24, 2);
  ivhd.writeBigUInt64LE(0xfd200000n, 8);
  const ivmd = Buffer.alloc(32);
  ivmd[0] = 0x20;
  ivmd.writeUInt16LE(32, 2);
  ivmd.writeBigUInt64LE(0x9d000000n, 16);
  ivmd.writeBigUInt64LE(0x100000n, 24);
  return table('IVRS', Buffer.concat([fields, ivhd, ivmd]));
}

describe('ACPI IOMMU tables', () => {
  it('decodes DRHD units and RMRR ranges from DMAR', () => {
    const t = parseDmar(dmar());
    expect(t.header.checksumOk).toBe(true);
    expect(t.addressWidth).toBe(39);
    expect(t.iommus).toEqual([{ kind: 'vt-d', segment: 0, registerBase: 0xfed90000n, detail: 'INCLUDE_PCI_ALL' }]);
    expect(t.reserved).toEqual([{ source: 'RMRR', base: 0x7c000000n, end: 0x7c7fffffn }]);
  });

  it('decodes IVHD and IVMD from IVRS', () => {
    const t = parseIvrs(ivrs());
    expect(t.addressWidth).toBe(0x30);
    expect(t.iommus[0]!.registerBase).toBe(0xfd200000n);
    expect(t.reserved[0]).toEqual({ source: 'IVMD', base: 0x9d000000n, end: 0x9d0fffffn });
  });

  it('names the byte offset of broken tables', () => {
    const d = dmar();
    expect(() => parseDmar(d.subarray(0, 20))).toThrow(/^ACPI DMAR: byte 20: truncated header/);
    const bad = Buffer.from(d);
    bad.writeUInt16LE(2, 48 + 2);
    expect(() => parseDmar(bad)).toThrow(/^ACPI DMAR: byte 50: structure length 2 < 4/);
    const long = Buffer.from(d);
    long.writeUInt32LE(9999, 4);
    expect(() => parseDmar(long)).toThrow(/byte 4: length field 9999/);
    const flipped = Buffer.from(d);
    flipped[60] ^= 1;
    expect(parseDmar(flipped).header.checksumOk).toBe(false);
    expect(() => parseIvrs(d)).toThrow(/expected IVRS/);
  });

  it.skipIf(!!skipUnless('the real APIC table header', [['acpi-tables', pathMissing('/sys/firmware/acpi/tables/APIC', 'no ACPI tables exposed here')]]))('checks this machine\'s real APIC table header', () => {
    const h = parseAcpiHeader(readFileSync('/sys/firmware/acpi/tables/APIC'));
    expect(h.signature).toBe('APIC');
    expect(h.checksumOk).toBe(true);
  });

  // The vectors hypervisor/core/src/acpi.rs also decodes (its test reads the same expected.txt).
  it('decodes the shared vectors of test/fixtures/acpi like the hypervisor core', () => {
    const dir = new URL('../test/fixtures/acpi/', import.meta.url);
    const lines = readFileSync(new URL('expected.txt', dir), 'utf8').split('\n').filter((l) => l.trim() && !l.startsWith('#'));
    expect(lines.length).toBeGreaterThanOrEqual(6);
    for (const line of lines) {
      const [file, ...want] = line.split(' ');
      const buf = readFileSync(new URL(file!, dir));
      let got: string;
      try {
        const t = file!.startsWith('ivrs') ? parseIvrs(buf) : parseDmar(buf);
        expect(t.header.checksumOk).toBe(true);
        const hex = (v: bigint | number): string => `0x${v.toString(16)}`;
        const detail = (u: (typeof t.iommus)[number]): string =>
          u.kind === 'amd-vi' ? hex(Number.parseInt(u.detail.replace('IVHD type ', ''), 16)) : u.detail === 'INCLUDE_PCI_ALL' ? '0x1' : '0x0';
        got = [
          'ok',
          `width=${t.addressWidth}`,
          ...t.iommus.map((u) => `unit=${u.kind}:${hex(u.registerBase)}:${u.segment}:${detail(u)}:${hex(u.deviceId ?? 0)}`),
          ...t.reserved.map((r) => `reserved=${hex(r.base)}-${hex(r.end)}`),
        ].join(' ');
      } catch (e) {
        got = `error=${/byte (\d+):/.exec((e as Error).message)?.[1]}`;
      }
      expect(got, file).toBe(want.join(' '));
    }
  });

  it('reports why no IOMMU is found', () => {
    const r = readIommuTable('/nonexistent');
    expect(r.table).toBeUndefined();
    expect(r.reason).toMatch(/no DMAR or IVRS/);
  });
});
