import { EXIT } from '../../errors.js';
import { HypervisorError, type MemRangeSpec } from '../../hypervisor/abi.js';

/** Where the emulated service puts the hypervisor's reservation and its hypercall scratch in host RAM. */

/**
 * 64 MiB hypervisor (8 MiB image + page-table pool) and 16 MiB EPC: the addon's core is built
 * with the default EPCM capacity of 4096 pages, so EPC beyond 16 MiB would be reserved but unused.
 */
export const RESERVED_DEFAULT = { hypervisor: 64n << 20n, epc: 16n << 20n, image: 8n << 20n } as const;
/** Host-RAM scratch the service stages hypercall buffers in (inside RAM of every map used here). */
export const SCRATCH_BASE = 0x20_0000n;
export const SCRATCH_SIZE = 64 * 1024;

/** The reserved region: the top of the highest RAM range, 2 MiB aligned (as a memmap= planner would). */
export function placeReservedRegion(map: readonly MemRangeSpec[], total: bigint): { base: bigint; memmap: string } {
  const align = 2n << 20n;
  const ram = map.filter((r) => r.kind === 'ram').sort((a, b) => (a.start > b.start ? -1 : 1));
  for (const r of ram) {
    const base = ((r.start + r.size - total) / align) * align;
    if (base >= r.start && base > SCRATCH_BASE + BigInt(SCRATCH_SIZE)) return { base, memmap: `memmap=${total >> 20n}M$0x${base.toString(16)}` };
  }
  throw new HypervisorError(`no RAM range of the memory map holds a ${total >> 20n} MiB reservation`, EXIT.UNSUPPORTED);
}
