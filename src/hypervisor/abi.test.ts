import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  HC,
  HC_STATUS,
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

  it('call numbers and status codes equal the Rust core (hypervisor/core/src/hypercall.rs, the source of truth)', () => {
    const rs = readFileSync(join(root, 'hypervisor/core/src/hypercall.rs'), 'utf8');
    const nrs = Object.fromEntries([...rs.matchAll(/pub const ([A-Z_]+): u64 = (0x[0-9A-Fa-f]+);/g)].map((m) => [m[1]!, Number(m[2])]));
    expect(nrs).toEqual({ ...HC });
    const statuses = [...rs.slice(rs.indexOf('pub enum HcStatus')).matchAll(/^\s+([A-Za-z]+) = (\d+),$/gm)].map((m) => [m[1]!.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase(), Number(m[2])]);
    expect(statuses.length).toBe(HC_STATUS.length);
    // the same name at the same code, underscores aside (KeySlotsExhausted ↔ KEYSLOTS_EXHAUSTED)
    for (const [name, code] of statuses) expect([code, HC_STATUS[code as number]!.name.replace(/_/g, '')]).toEqual([code, (name as string).replace(/_/g, '')]);
    expect(statuses.slice(36)).toEqual([['ENCLAVE_ONLY', 36], ['TRUST_NOT_ESTABLISHED', 37], ['TRUST_SEAL_FAILED', 38], ['TPM_IO', 39], ['ENCLAVE_OCALL', 40], ['SSA_INVALID', 41], ['PAGE_STATE', 42]]);
    expect(HC_STATUS.slice(36).map((s) => s.name)).toEqual(['ENCLAVE_ONLY', 'TRUST_NOT_ESTABLISHED', 'TRUST_SEAL_FAILED', 'TPM_IO', 'ENCLAVE_OCALL', 'SSA_INVALID', 'PAGE_STATE']);
  });

  it('the quoting identity is SHA-256 of its label (independent of the core)', () => {
    expect(QUOTING_TARGET_MRENCLAVE.toString('hex')).toBe(createHash('sha256').update('HyperEnclave-TS quoting identity v1').digest('hex'));
    const rs = readFileSync(join(root, 'hypervisor/core/src/trust.rs'), 'utf8');
    expect(rs).toContain('b"HyperEnclave-TS quoting identity v1"');
    expect(rs).toContain(`pub const EXIT_EVENT: &[u8] = b"${HYPERVISOR_EXIT_EVENT}";`);
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
  it.skipIf(!cc)('ioctl numbers equal the C driver header (compiled with cc)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'he-ioc-'));
    try {
      const src = join(dir, 'ioc.c');
      writeFileSync(
        src,
        `#include <stdio.h>\n#include "${join(root, 'hypervisor/driver/hyperenclave_ioctl.h')}"\nint main(void){printf("%u %u %u %u %u %u %u\\n",(unsigned)HE_IOC_VERSION,(unsigned)HE_IOC_LOAD,(unsigned)HE_IOC_ENABLE,(unsigned)HE_IOC_DISABLE,(unsigned)HE_IOC_STATUS,(unsigned)HE_IOC_HYPERCALL,(unsigned)HE_IOC_PROBE);return 0;}\n`,
      );
      execFileSync(cc!, [src, '-o', join(dir, 'ioc')]);
      const got = execFileSync(join(dir, 'ioc'), { encoding: 'utf8' }).trim().split(' ').map(Number);
      expect(got).toEqual([HE_IOC.VERSION, HE_IOC.LOAD, HE_IOC.ENABLE, HE_IOC.DISABLE, HE_IOC.STATUS, HE_IOC.HYPERCALL, HE_IOC.PROBE]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!!skipUnless('linux client without the driver', [['hardware-absent', existsSync('/dev/hyperenclave') && '/dev/hyperenclave exists here (the driver is loaded)']]))('linux client fails clearly without the kernel driver', async () => {
    await expect(LinuxHypervisorClient.open()).rejects.toThrow('/dev/hyperenclave absent: kernel driver not loaded');
  });
});
