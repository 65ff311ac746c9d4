import { type DrtmLog, readDrtmLog } from './heap.js';
import { type TxtPresence, TxtError, readPhysical, readTxtStatus } from './registers.js';

/** Largest TXT heap we read (real heaps are ~1 MiB). */
const MAX_HEAP = 64 * 1024 * 1024;

export interface TxtReport {
  txt: TxtPresence;
  /** The DRTM event log from the TXT heap, when a launch happened and the heap is readable. */
  drtmLog?: DrtmLog;
  /** Why the DRTM log could not be read (TXT present). */
  drtmLogError?: string;
}

/** Real platform: TXT registers through /dev/mem and, after a measured launch, the heap's DRTM log. */
export function readTxtReport(opts: { devMem?: string; cpuinfo?: string } = {}): TxtReport {
  const txt = readTxtStatus(opts);
  if (!txt.present || !txt.status.measuredLaunch) return { txt };
  try {
    const base = txt.registers.heapBase;
    const size = txt.registers.heapSize;
    if (size === 0n || size > BigInt(MAX_HEAP)) throw new TxtError(`TXT: HEAP.SIZE 0x${size.toString(16)} is not plausible`);
    const heap = readPhysical(Number(base), Number(size), opts.devMem);
    const drtmLog = readDrtmLog(heap, (addr, len) => readPhysical(Number(addr), len, opts.devMem));
    return { txt, ...(drtmLog ? { drtmLog } : {}) };
  } catch (e) {
    return { txt, drtmLogError: (e as Error).message };
  }
}
