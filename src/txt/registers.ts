import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { EXIT, HyperEnclaveError } from '../errors.js';

/** Intel TXT: absent, unreadable, or malformed data. One line, naming the register or offset. */
export class TxtError extends HyperEnclaveError {
  constructor(message: string, exitCode: number = EXIT.BAD_INPUT) {
    super(message, exitCode);
  }
}

/** Physical base of the TXT public configuration space (read-only to software after SENTER). */
export const TXT_PUBLIC_BASE = 0xfed30000;
export const TXT_PRIVATE_BASE = 0xfed20000;
export const TXT_CONFIG_SIZE = 0x1000;

/** Register offsets within the configuration space (Intel TXT MLE Developer's Guide, Appendix B). */
export const TXT_REG = {
  STS: 0x000,
  ESTS: 0x008,
  ERRORCODE: 0x030,
  VER_FSBIF: 0x100,
  DIDVID: 0x110,
  VER_QPIIF: 0x200,
  SINIT_BASE: 0x270,
  SINIT_SIZE: 0x278,
  MLE_JOIN: 0x290,
  HEAP_BASE: 0x300,
  HEAP_SIZE: 0x308,
  DPR: 0x330,
  PUBLIC_KEY: 0x400,
  E2STS: 0x8f0,
} as const;

export interface TxtRegisters {
  sts: bigint;
  ests: bigint;
  errorcode: bigint;
  verFsbif: bigint;
  didvid: bigint;
  sinitBase: bigint;
  sinitSize: bigint;
  mleJoin: bigint;
  heapBase: bigint;
  heapSize: bigint;
  dpr: bigint;
  e2sts: bigint;
}

export interface TxtStatus {
  /** A measured launch (GETSEC[SENTER]) completed and has not been exited. */
  measuredLaunch: boolean;
  sts: { senterDone: boolean; sexitDone: boolean; memConfigLock: boolean; privateOpen: boolean; locality1Open: boolean; locality2Open: boolean };
  ests: { txtReset: boolean };
  e2sts: { secrets: boolean };
  error: { valid: boolean; external: boolean; type: number; raw: string };
  didvid: { vendorId: number; deviceId: number; revisionId: number };
  productionFused: boolean;
  sinit: { base: string; size: string };
  heap: { base: string; size: string };
  mleJoin: string;
  dpr: { locked: boolean; sizeMiB: number; top: string };
}

const bit = (v: bigint, n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;
const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** Reads the registers out of a copy of the 4 KiB configuration space. */
export function registersFromSpace(space: Buffer): TxtRegisters {
  if (space.length < TXT_REG.E2STS + 8) throw new TxtError(`TXT: configuration space copy is ${space.length} bytes, needs ${TXT_REG.E2STS + 8}`);
  const r = (o: number): bigint => space.readBigUInt64LE(o);
  return {
    sts: r(TXT_REG.STS),
    ests: r(TXT_REG.ESTS),
    errorcode: r(TXT_REG.ERRORCODE),
    verFsbif: r(TXT_REG.VER_FSBIF),
    didvid: r(TXT_REG.DIDVID),
    sinitBase: r(TXT_REG.SINIT_BASE),
    sinitSize: r(TXT_REG.SINIT_SIZE),
    mleJoin: r(TXT_REG.MLE_JOIN),
    heapBase: r(TXT_REG.HEAP_BASE),
    heapSize: r(TXT_REG.HEAP_SIZE),
    dpr: r(TXT_REG.DPR),
    e2sts: r(TXT_REG.E2STS),
  };
}

/** Decodes the status registers as tboot's txt-stat does. */
export function decodeTxtRegisters(r: TxtRegisters): TxtStatus {
  return {
    measuredLaunch: bit(r.sts, 0) && !bit(r.sts, 1),
    sts: { senterDone: bit(r.sts, 0), sexitDone: bit(r.sts, 1), memConfigLock: bit(r.sts, 6), privateOpen: bit(r.sts, 7), locality1Open: bit(r.sts, 15), locality2Open: bit(r.sts, 16) },
    ests: { txtReset: bit(r.ests, 0) },
    e2sts: { secrets: bit(r.e2sts, 1) },
    error: { valid: bit(r.errorcode, 31), external: bit(r.errorcode, 30), type: Number(r.errorcode & 0x3fffffffn), raw: hex(r.errorcode) },
    didvid: { vendorId: Number(r.didvid & 0xffffn), deviceId: Number((r.didvid >> 16n) & 0xffffn), revisionId: Number((r.didvid >> 32n) & 0xffffn) },
    productionFused: bit(r.verFsbif, 31),
    sinit: { base: hex(r.sinitBase), size: hex(r.sinitSize) },
    heap: { base: hex(r.heapBase), size: hex(r.heapSize) },
    mleJoin: hex(r.mleJoin),
    dpr: { locked: bit(r.dpr, 0), sizeMiB: Number((r.dpr >> 4n) & 0xffn), top: hex(r.dpr & 0xfff00000n) },
  };
}

export type TxtPresence = { present: true; status: TxtStatus; registers: TxtRegisters } | { present: false; reason: string };

/** Reads `length` bytes at physical `address` through /dev/mem (or the given device). */
export function readPhysical(address: number, length: number, devMem = '/dev/mem'): Buffer {
  let fd: number;
  try {
    fd = openSync(devMem, 'r');
  } catch (e) {
    throw new TxtError(`TXT: ${devMem} not readable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, EXIT.UNSUPPORTED);
  }
  try {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, buf, done, length - done, address + done);
      if (n === 0) throw new TxtError(`TXT: ${devMem} ended at physical 0x${(address + done).toString(16)}`, EXIT.UNSUPPORTED);
      done += n;
    }
    return buf;
  } catch (e) {
    if (e instanceof TxtError) throw e;
    throw new TxtError(`TXT: ${devMem} not readable at physical 0x${address.toString(16)} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; CONFIG_STRICT_DEVMEM or lockdown may forbid it)`, EXIT.UNSUPPORTED);
  } finally {
    closeSync(fd);
  }
}

/** Whether the CPU advertises SMX (GETSEC), the instruction set TXT needs. */
export function cpuHasSmx(cpuinfo = '/proc/cpuinfo'): boolean {
  try {
    return /^flags\s*:.*\bsmx\b/m.test(readFileSync(cpuinfo, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * The platform's TXT state: absent (with why) or the decoded public registers. A chipset
 * without TXT returns all-ones (or zeros) for the space; that is reported as absent too.
 */
export function readTxtStatus(opts: { devMem?: string; cpuinfo?: string; base?: number } = {}): TxtPresence {
  const smx = cpuHasSmx(opts.cpuinfo);
  let space: Buffer;
  try {
    space = readPhysical(opts.base ?? TXT_PUBLIC_BASE, TXT_CONFIG_SIZE, opts.devMem);
  } catch (e) {
    return { present: false, reason: `${(e as Error).message}${smx ? '' : '; the CPU has no SMX (no TXT)'}` };
  }
  const regs = registersFromSpace(space);
  if (regs.didvid === 0xffffffffffffffffn || regs.didvid === 0n)
    return { present: false, reason: `TXT: DIDVID at 0x${((opts.base ?? TXT_PUBLIC_BASE) + TXT_REG.DIDVID).toString(16)} reads ${hex(regs.didvid)}: no TXT chipset${smx ? '' : ', and the CPU has no SMX'}` };
  return { present: true, status: decodeTxtRegisters(regs), registers: regs };
}
