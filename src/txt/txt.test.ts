import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HEAP_EXTDATA, OS_SINIT_EXT_OFFSET, findDrtmLogPointer, parseOsSinitData, parseTxtHeap, readDrtmLog } from './heap.js';
import { buildLaunchEnvironment, parseLaunchEnvironment } from './launch-env.js';
import { TXT_PUBLIC_BASE, TXT_REG, TxtError, cpuHasSmx, readTxtStatus } from './registers.js';
import { readTxtReport } from './platform.js';
import { drtmFeature } from '../platform/report.js';
import { skipUnless } from '../../test/helpers/require.js';

const dir = mkdtempSync(join(tmpdir(), 'txt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('TXT public configuration space', () => {
  it('on this machine: reported absent with the reason (no TXT in a VM)', () => {
    const r = readTxtStatus();
    if (r.present) {
      skipUnless('TXT absent-path test', [['hardware-absent', 'this machine has TXT']]);
      return;
    }
    if (!existsSync('/dev/mem')) expect(r.reason).toMatch(/^TXT: \/dev\/mem not readable \(ENOENT\)/);
    else expect(r.reason).toMatch(/^TXT: /);
    if (!cpuHasSmx()) expect(r.reason).toMatch(/the CPU has no SMX/);
  });

  it('a device without TXT (all ones) is absent; a launched platform decodes as tboot does', () => {
    const dev = join(dir, 'mem');
    writeFileSync(dev, Buffer.alloc(0x1000, 0xff));
    expect(readTxtStatus({ devMem: dev, base: 0 })).toMatchObject({ present: false, reason: expect.stringMatching(/^TXT: DIDVID at 0x110 reads 0xffffffffffffffff: no TXT chipset/) });

    const space = Buffer.alloc(0x1000);
    space.writeBigUInt64LE((1n << 0n) | (1n << 6n) | (1n << 7n) | (1n << 16n), TXT_REG.STS); // senter done, mem config lock, private open, locality 2 open
    space.writeBigUInt64LE(0n, TXT_REG.ESTS);
    space.writeBigUInt64LE(0xc0000015n, TXT_REG.ERRORCODE); // valid, external, type 0x15
    space.writeBigUInt64LE(0x0001_b002_8086n, TXT_REG.DIDVID);
    space.writeBigUInt64LE(0x80000000n, TXT_REG.VER_FSBIF);
    space.writeBigUInt64LE(0xbe000000n, TXT_REG.SINIT_BASE);
    space.writeBigUInt64LE(0x50000n, TXT_REG.SINIT_SIZE);
    space.writeBigUInt64LE(0xbe100000n, TXT_REG.HEAP_BASE);
    space.writeBigUInt64LE(0xe0000n, TXT_REG.HEAP_SIZE);
    space.writeBigUInt64LE(0xbf000000n | (3n << 4n) | 1n, TXT_REG.DPR);
    space.writeBigUInt64LE(2n, TXT_REG.E2STS);
    writeFileSync(dev, space);
    const r = readTxtStatus({ devMem: dev, base: 0 });
    expect(r.present).toBe(true);
    if (!r.present) return;
    expect(r.status).toMatchObject({
      measuredLaunch: true,
      sts: { senterDone: true, sexitDone: false, memConfigLock: true, privateOpen: true, locality1Open: false, locality2Open: true },
      ests: { txtReset: false },
      e2sts: { secrets: true },
      error: { valid: true, external: true, type: 0x15 },
      didvid: { vendorId: 0x8086, deviceId: 0xb002, revisionId: 1 },
      productionFused: true,
      sinit: { base: '0xbe000000', size: '0x50000' },
      heap: { base: '0xbe100000', size: '0xe0000' },
      dpr: { locked: true, sizeMiB: 3, top: '0xbf000000' },
    });
  });
});

/** A heap as the MLE Developer's Guide lays it out: four tables, each after its u64 size. */
function heapWith(elements: Buffer[]): Buffer {
  const table = (data: Buffer) => {
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(BigInt(data.length + 8));
    return Buffer.concat([size, data]);
  };
  const bios = Buffer.alloc(28);
  bios.writeUInt32LE(6, 0);
  const osSinit = Buffer.alloc(OS_SINIT_EXT_OFFSET);
  osSinit.writeUInt32LE(7, 0);
  osSinit.writeBigUInt64LE(0x1000000n, 16);
  const end = Buffer.alloc(8); // type 0, size 8
  end.writeUInt32LE(8, 4);
  return Buffer.concat([table(bios), table(Buffer.alloc(64)), table(Buffer.concat([osSinit, ...elements, end])), table(Buffer.alloc(16))]);
}
const element = (type: number, data: Buffer) => {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(type, 0);
  h.writeUInt32LE(8 + data.length, 4);
  return Buffer.concat([h, data]);
};
/** tboot per-algorithm record: u32 pcr, u32 type, digest, u32 size, data. */
const record = (pcr: number, type: number, digest: Buffer, data: Buffer) => {
  const a = Buffer.alloc(8);
  a.writeUInt32LE(pcr, 0);
  a.writeUInt32LE(type, 4);
  const s = Buffer.alloc(4);
  s.writeUInt32LE(data.length);
  return Buffer.concat([a, digest, s, data]);
};

describe('TXT heap and DRTM event log', () => {
  const sinit = Buffer.from('sinit acm');
  const mle = Buffer.from('mle');
  const sha1Log = Buffer.concat([Buffer.alloc(32), record(17, 0x402, createHash('sha1').update(sinit).digest(), Buffer.alloc(0)), record(17, 0x404, createHash('sha1').update(mle).digest(), Buffer.from('mle data'))]);
  const sha256Log = Buffer.concat([record(17, 0x402, createHash('sha256').update(sinit).digest(), Buffer.alloc(0)), record(18, 0x413, createHash('sha256').update('key').digest(), Buffer.alloc(3, 7))]);
  const mem = new Map<bigint, Buffer>([
    [0x9000000n, sha1Log],
    [0x9001000n, sha256Log],
  ]);
  const readPhys = (addr: bigint, len: number) => {
    const b = mem.get(addr);
    if (!b) throw new TxtError(`no memory at 0x${addr.toString(16)}`);
    return b.subarray(0, len);
  };
  const descr = (alg: number, addr: bigint, size: number, first: number, next: number) => {
    const d = Buffer.alloc(24);
    d.writeUInt16LE(alg, 0);
    d.writeBigUInt64LE(addr, 4);
    d.writeUInt32LE(size, 12);
    d.writeUInt32LE(first, 16);
    d.writeUInt32LE(next, 20);
    return d;
  };
  const count = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };

  it("tboot's per-algorithm logs (EVENT_LOG_POINTER2): every record with its digest", () => {
    const heap = heapWith([
      element(HEAP_EXTDATA.BIOS_SPEC_VER, Buffer.alloc(6)),
      element(HEAP_EXTDATA.EVENT_LOG_POINTER2, Buffer.concat([count(2), descr(0x0004, 0x9000000n, 4096, 32, sha1Log.length), descr(0x000b, 0x9001000n, 4096, 0, sha256Log.length)])),
    ]);
    const os = parseOsSinitData(parseTxtHeap(heap).osSinitData);
    expect(os.version).toBe(7);
    expect(os.mleSize).toBe(0x1000000n);
    expect(os.elements.map((e) => e.type)).toEqual([1, 7]);
    const log = readDrtmLog(heap, readPhys);
    expect(log?.kind).toBe('tboot-per-alg');
    if (log?.kind !== 'tboot-per-alg') return;
    expect(log.logs.map((l) => l.alg)).toEqual(['sha1', 'sha256']);
    expect(log.logs[0]!.events.map((e) => [e.pcr, e.type, e.data.toString()])).toEqual([[17, 0x402, ''], [17, 0x404, 'mle data']]);
    expect(log.logs[0]!.events[1]!.digest).toEqual(createHash('sha1').update(mle).digest());
    expect(log.logs[1]!.events[1]).toMatchObject({ pcr: 18, type: 0x413, data: Buffer.alloc(3, 7) });
  });

  it('the TCG crypto-agile log pointer (EVENT_LOG_POINTER2_1) gives the raw log for src/eventlog', () => {
    const p = Buffer.alloc(20);
    p.writeBigUInt64LE(0x9000000n, 0);
    p.writeUInt32LE(0x8000, 8);
    p.writeUInt32LE(0, 12);
    p.writeUInt32LE(40, 16);
    const log = readDrtmLog(heapWith([element(HEAP_EXTDATA.EVENT_LOG_POINTER2_1, p)]), readPhys);
    expect(log).toMatchObject({ kind: 'tcg-agile', pointer: { physAddr: 0x9000000n, allocatedSize: 0x8000, nextRecordOffset: 40 } });
    if (log?.kind === 'tcg-agile') expect(log.log).toEqual(sha1Log.subarray(0, 40));
    expect(readDrtmLog(heapWith([]), readPhys)).toBeUndefined();
  });

  it('broken heaps and logs: TxtError with the offset', () => {
    const heap = heapWith([element(HEAP_EXTDATA.EVENT_LOG_POINTER2, Buffer.concat([count(1), descr(0x000b, 0x9001000n, 4096, 0, sha256Log.length + 1)]))]);
    expect(() => readDrtmLog(heap, readPhys)).toThrow(/^TXT DRTM log \(sha256\): next event offset 92 beyond the 91-byte log$/);
    const bigSize = Buffer.from(heapWith([]));
    bigSize.writeBigUInt64LE(0xffffffffn, 0);
    expect(() => parseTxtHeap(bigSize)).toThrow(/^TXT heap: BIOS data size 0xffffffff at offset 0x0 does not fit the \d+-byte heap$/);
    const noEnd = heapWith([]);
    const osOff = 8 + 28 + 8 + 64 + 8;
    noEnd.writeUInt32LE(0xffff, osOff + OS_SINIT_EXT_OFFSET + 4); // END element size
    expect(() => parseOsSinitData(parseTxtHeap(noEnd).osSinitData)).toThrow(/^TXT heap: extended data element type 0 at offset 0x[0-9a-f]+ has size 65535, outside 8\.\.8$/);
    const tooMany = heapWith([element(HEAP_EXTDATA.EVENT_LOG_POINTER2, count(9))]);
    expect(() => findDrtmLogPointer(parseOsSinitData(parseTxtHeap(tooMany).osSinitData))).toThrow(/claims 9 logs, room for 0/);
  });
});

describe('launch environment blob', () => {
  it('round trip and refusals', () => {
    const b = buildLaunchEnvironment({ name: 'emulated-sinit', version: 7, arch: 'hygon', payload: Buffer.from('x') });
    expect(parseLaunchEnvironment(b)).toEqual({ name: 'emulated-sinit', version: 7, arch: 'hygon', payload: Buffer.from('x') });
    expect(() => parseLaunchEnvironment(b, 'intel-vmx')).toThrow('launch environment: built for hygon (offset 0x14), the platform is intel-vmx');
    expect(() => parseLaunchEnvironment(b.subarray(0, 64))).toThrow('launch environment: payload length 1 at offset 0xc does not match the 64-byte file');
    expect(() => parseLaunchEnvironment(Buffer.alloc(10))).toThrow('launch environment: truncated: 10 bytes, the header needs 64');
  });
});

describe('real-platform path end to end on a synthetic physical memory file', () => {
  it('registers at 0xFED30000 → heap → DRTM log, all through the /dev/mem reader', () => {
    const sinit = createHash('sha256').update('sinit').digest();
    const log = record(17, 0x402, sinit, Buffer.from('x'));
    const descr = Buffer.alloc(24);
    descr.writeUInt16LE(0x000b, 0);
    descr.writeBigUInt64LE(0x2000000n, 4);
    descr.writeUInt32LE(4096, 12);
    descr.writeUInt32LE(0, 16);
    descr.writeUInt32LE(log.length, 20);
    const cnt = Buffer.alloc(4);
    cnt.writeUInt32LE(1);
    const heap = heapWith([element(HEAP_EXTDATA.EVENT_LOG_POINTER2, Buffer.concat([cnt, descr]))]);
    const space = Buffer.alloc(0x1000);
    space.writeBigUInt64LE(1n, TXT_REG.STS);
    space.writeBigUInt64LE(0x8086n, TXT_REG.DIDVID);
    space.writeBigUInt64LE(0x1000000n, TXT_REG.HEAP_BASE);
    space.writeBigUInt64LE(BigInt(heap.length), TXT_REG.HEAP_SIZE);
    const dev = join(dir, 'physmem');
    const fd = openSync(dev, 'w');
    try {
      writeSync(fd, space, 0, space.length, TXT_PUBLIC_BASE); // sparse file: ~4 GiB apparent, a few KiB on disk
      writeSync(fd, heap, 0, heap.length, 0x1000000);
      writeSync(fd, log, 0, log.length, 0x2000000);
    } finally {
      closeSync(fd);
    }
    const r = readTxtReport({ devMem: dev });
    expect(r.txt.present && r.txt.status.measuredLaunch).toBe(true);
    expect(r.drtmLogError).toBeUndefined();
    expect(r.drtmLog).toMatchObject({ kind: 'tboot-per-alg', logs: [{ alg: 'sha256', events: [{ pcr: 17, type: 0x402, digest: sinit, data: Buffer.from('x') }] }] });

    // `hyperenclave platform` on real hardware reports it as its drtm feature
    const smx = join(dir, 'cpuinfo-smx');
    writeFileSync(smx, 'processor\t: 0\nflags\t\t: fpu vmx smx\n');
    const noSmx = join(dir, 'cpuinfo');
    writeFileSync(noSmx, 'processor\t: 0\nflags\t\t: fpu svm\n');
    expect(drtmFeature({ drtm: 'firmware' }, { devMem: dev, cpuinfo: smx })).toEqual({ name: 'drtm', available: true, detail: 'TXT measured launch, DRTM log (tboot per-algorithm: sha256 1 event(s)) in the TXT heap' });
    expect(drtmFeature({ drtm: 'firmware' }, { devMem: dev, cpuinfo: noSmx })).toMatchObject({ available: false, detail: 'the CPU has no SMX (no Intel TXT)' });
    expect(drtmFeature({ drtm: 'firmware' }, { devMem: join(dir, 'absent'), cpuinfo: smx })).toMatchObject({ available: false, detail: expect.stringMatching(/absent not readable \(ENOENT\)/) });
  });
});
