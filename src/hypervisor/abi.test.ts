import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  HAK_EVENT_PREFIX,
  HC,
  HC_STATUS,
  LAYOUT,
  HYPERVISOR_EXIT_EVENT,
  QUOTING_TARGET_MRENCLAVE,
  HE_IOC,
  HypervisorError,
  STATUS_SIZE,
  decodeEnclaveInfo,
  decodeMemoryMap,
  decodeStatus,
  encodeMemoryMap,
  encodeSecs,
  parseReport,
  statusName,
} from './abi.js';
import { LinuxHypervisorClient } from './linux-client.js';
import * as IMAGE_ABI from '../measure/image-abi.generated.js';
import { skipUnless } from '../../test/helpers/require.js';

const root = new URL('../../', import.meta.url).pathname;

describe('hypercall ABI', () => {
  it('numbers every status code 0..42 as docs/hypercall-abi.md, each with a meaning and an exit code', () => {
    expect(HC_STATUS.map((s) => s.code)).toEqual([...Array(43).keys()]);
    const doc = readFileSync(join(root, 'docs/hypercall-abi.md'), 'utf8');
    for (const s of HC_STATUS) expect(doc).toMatch(new RegExp(`\\| ${s.code} \\| ${s.name}`));
    const e = HypervisorError.fromStatus('ENCLAVE_ADD', 15, 'enclave 3 offset 0x1000');
    expect(e.message).toBe('ENCLAVE_ADD: PAGE_OVERLAP (a page already exists at that offset): enclave 3 offset 0x1000');
    expect(e.exitCode).toBe(6);
    expect(statusName(25)).toBe('EPC_EXHAUSTED');
    expect(statusName(99)).toBe('STATUS_99');
  });

  it('the quoting identity is SHA-256 of its label, and the event labels are the documented strings (independent of the core)', () => {
    expect(QUOTING_TARGET_MRENCLAVE.toString('hex')).toBe(createHash('sha256').update('HyperEnclave-TS quoting identity v1').digest('hex'));
    expect(HYPERVISOR_EXIT_EVENT).toBe('hyperenclave:hypervisor-exit v=1');
    expect(HAK_EVENT_PREFIX).toBe('hyperenclave-hak:ed25519:');
  });

  it('decodes STATUS, ENCLAVE_INFO and REPORT records at the documented offsets', () => {
    const st = Buffer.alloc(STATUS_SIZE);
    const w = (i: number, v: bigint) => st.writeBigUInt64LE(v, i * 8);
    w(0, 0x10000n);
    w(1, 0b11011n);
    w(2, 0x1f4000000n);
    w(6, 32768n);
    w(7, 12n);
    w(12, 2n);
    w(13, 1n);
    w(14, 15n);
    w(19, 4n);
    st.fill(0xab, 208, 240);
    w(30, 7n);
    w(31, 0xfed80000n);
    const s = decodeStatus(st);
    expect(s).toMatchObject({ abiVersion: 0x10000, enabled: true, paging: 'npt', keySlotsPresent: false, signaturesRequired: true, trustEstablished: true, reservedBase: 0x1f4000000n, epcPagesTotal: 32768, epcPagesUsed: 12, keySlotKind: 'keyid', keySlotMin: 1, keySlotMax: 15 });
    expect(s.hostFaults.enclave).toBe(4);
    expect(s.imageDigest.equals(Buffer.alloc(32, 0xab))).toBe(true);
    expect(s.dma).toEqual({ protected: false, faults: 7, iommuBase: 0xfed80000n });
    w(1, 0b111011n);
    expect(decodeStatus(st).dma.protected).toBe(true);
    expect(() => decodeStatus(Buffer.alloc(100))).toThrow(/STATUS: record is 100 bytes, need 256/);

    const info = Buffer.alloc(128);
    info.writeUInt32LE(1, 0);
    info.writeUInt32LE(9, 4);
    info.writeBigUInt64LE(0x8000n, 24);
    info.fill(0x11, 40, 72);
    info.writeUInt16LE(0x1234, 124);
    const i = decodeEnclaveInfo(info);
    expect(i).toMatchObject({ state: 'initialized', epcPages: 9, size: 0x8000n, isvProdId: 0x1234 });
    expect(i.mrenclave.equals(Buffer.alloc(32, 0x11))).toBe(true);

    const rep = Buffer.alloc(432);
    rep.fill(0x22, 64, 96);
    rep.fill(0x33, 128, 160);
    rep.fill(0x44, 320, 384);
    rep.fill(0x55, 416, 432);
    const r = parseReport(rep);
    expect([r.mrenclave[0], r.mrsigner[0], r.reportData[63], r.mac[15], r.body.length]).toEqual([0x22, 0x33, 0x44, 0x55, 384]);
    expect(() => parseReport(Buffer.alloc(433))).toThrow(/433 bytes, expected exactly 432/);
  });

  it('encodes SECS and the ENABLE memory map', () => {
    const secs = encodeSecs({ size: 0x8000n, base: 0x100000n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n });
    expect([secs.readBigUInt64LE(0), secs.readBigUInt64LE(8), secs.readUInt32LE(16), secs.readBigUInt64LE(48), secs.readBigUInt64LE(56)]).toEqual([0x8000n, 0x100000n, 1, 4n, 3n]);
    const map = [
      { start: 0n, size: 0x9fc00n, kind: 'ram' as const },
      { start: 0xfec00000n, size: 0x1000n, kind: 'mmio' as const },
    ];
    expect(decodeMemoryMap(encodeMemoryMap(map))).toEqual(map);
    expect(() => encodeMemoryMap([])).toThrow(/1\.\.128/);
    const bad = encodeMemoryMap(map);
    bad.writeBigUInt64LE(7n, 40);
    expect(() => decodeMemoryMap(bad)).toThrow(/entry 1 \(byte 40\): kind 7/);
  });

  const cc = skipUnless('ioctl-number check against the C header', [['cc', spawnSync('cc', ['--version']).status === 0 ? undefined : 'cc not runnable (apt-get install gcc)']]) ? undefined : 'cc';
  it.skipIf(!cc)('the generated C headers, compiled with cc, agree with the generated TypeScript (numbers, statuses, sizes, offsets)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'he-abi-'));
    try {
      const src = join(dir, 'abi.c');
      const lines: string[] = [];
      const num = (expr: string) => lines.push(`printf("%s=%llu\\n", ${JSON.stringify(expr)}, (unsigned long long)(${expr}));`);
      for (const name of Object.keys(HC)) num(`HC_${name}`);
      for (const s of HC_STATUS) num(`HC_ST_${s.name}`);
      for (const name of Object.keys(HE_IOC)) num(`HE_IOC_${name}`);
      const layouts = { ...LAYOUT, ...IMAGE_ABI.LAYOUT };
      for (const [tag, l] of Object.entries(layouts)) {
        num(`sizeof(struct ${tag})`);
        for (const f of Object.keys(l.fields)) num(`offsetof(struct ${tag}, ${f})`);
      }
      num('HE_HANDOFF_MAGIC');
      for (const name of Object.keys(IMAGE_ABI.HEIMG)) num(`HEIMG_${name}`);
      num('sizeof(HEIMG_MAGIC) - 1');
      writeFileSync(
        src,
        ['#include <stdio.h>', '#include <stddef.h>', ...['hypercall', 'ioctl', 'handoff', 'image'].map((h) => `#include "${join(root, `hypervisor/driver/hyperenclave_${h}.h`)}"`), 'int main(void){', ...lines, 'return 0;}', ''].join('\n'),
      );
      execFileSync(cc!, ['-Wall', '-Werror', src, '-o', join(dir, 'abi')]);
      const got = Object.fromEntries(
        execFileSync(join(dir, 'abi'), { encoding: 'utf8' })
          .trim()
          .split('\n')
          .map((l) => l.split('=') as [string, string]),
      );
      const want: Record<string, string> = {};
      for (const [name, v] of Object.entries(HC)) want[`HC_${name}`] = String(v);
      for (const s of HC_STATUS) want[`HC_ST_${s.name}`] = String(s.code);
      for (const [name, v] of Object.entries(HE_IOC)) want[`HE_IOC_${name}`] = String(v);
      for (const [tag, l] of Object.entries(layouts)) {
        want[`sizeof(struct ${tag})`] = String(l.size);
        for (const [f, spec] of Object.entries(l.fields)) want[`offsetof(struct ${tag}, ${f})`] = String(spec.offset);
      }
      want.HE_HANDOFF_MAGIC = String(Buffer.from('HEHANDOF', 'ascii').readBigUInt64LE(0));
      for (const [name, v] of Object.entries(IMAGE_ABI.HEIMG)) want[`HEIMG_${name}`] = String(v);
      want['sizeof(HEIMG_MAGIC) - 1'] = String(IMAGE_ABI.HEIMG_MAGIC.length);
      expect(got).toEqual(want);
      // independent of the generator: Linux's _IOWR('H', 5, 64-byte struct) and _IOR('H', 4, 336-byte struct), the STATUS
      // record of docs/hypercall-abi.md (256 B, DMA faults at 240, IOMMU base at 248) and the quote's flags at byte 12
      expect([HE_IOC.HYPERCALL, HE_IOC.STATUS, got['sizeof(struct he_hv_status)'], got['offsetof(struct he_hv_status, dma_faults)'], got['offsetof(struct he_hv_status, iommu_base)']]).toEqual([
        0xc0404805, 0x81504804, '256', '240', '248',
      ]);
      expect([got['offsetof(struct he_quote, flags)'], HC.TRUST_INIT, HC.QUOTE, HC_STATUS[39]!.name]).toEqual(['12', 0x40, 0x42, 'TPM_IO']);
      // docs/image-container.md: per-CPU size at 0x28, image length at 0x40, SHA-256 at 0x70, header 256 B
      expect([got['offsetof(struct heimg_header, per_cpu_size)'], got['offsetof(struct heimg_header, image_length)'], got['offsetof(struct heimg_header, image_sha256)'], got.HEIMG_HEADER_SIZE]).toEqual(['40', '64', '112', '256']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!!skipUnless('linux client without the driver', [['hardware-absent', existsSync('/dev/hyperenclave') && '/dev/hyperenclave exists here (the driver is loaded)']]))('linux client fails clearly without the kernel driver', async () => {
    await expect(LinuxHypervisorClient.open()).rejects.toThrow('/dev/hyperenclave absent: kernel driver not loaded');
  });
});
