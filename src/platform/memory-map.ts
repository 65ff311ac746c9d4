/**
 * The machine's memory map, read once for everyone: /sys/firmware/memmap (the firmware's e820
 * map before any memmap= carving) for the emulated service's `machine` map and for
 * `firmware memmap` (firmware-tools/memmap.ts), and the synthetic PC map the emulated service
 * uses otherwise.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { MemRangeSpec } from '../hypervisor/abi.js';

export const FIRMWARE_MEMMAP_DIR = '/sys/firmware/memmap';

/** One firmware (e820) memory-map range, end inclusive as Linux prints it. */
export interface FirmwareMemoryRange {
  start: bigint;
  end: bigint;
  type: string;
}

/** /sys/firmware/memmap sorted by start; undefined when the directory is absent (an unreadable entry throws). */
export function readFirmwareMemoryMap(root = FIRMWARE_MEMMAP_DIR): FirmwareMemoryRange[] | undefined {
  if (!existsSync(root)) return undefined;
  return readdirSync(root)
    .map((d) => {
      const f = (n: string) => readFileSync(join(root, d, n), 'utf8').trim();
      return { start: BigInt(f('start')), end: BigInt(f('end')), type: f('type') };
    })
    .sort((a, b) => (a.start < b.start ? -1 : 1));
}

/** /sys/firmware/memmap as ranges (RAM, reserved/ACPI/firmware, the rest treated as reserved); undefined when absent or unreadable. */
export function readMachineMemoryMap(dir = FIRMWARE_MEMMAP_DIR): MemRangeSpec[] | undefined {
  let ranges: FirmwareMemoryRange[] | undefined;
  try {
    ranges = readFirmwareMemoryMap(dir);
  } catch {
    return undefined;
  }
  const out = (ranges ?? []).filter((r) => r.end >= r.start).map((r): MemRangeSpec => ({ start: r.start, size: r.end - r.start + 1n, kind: r.type === 'System RAM' ? 'ram' : 'reserved' }));
  return out.length ? out : undefined;
}

/** Synthetic PC memory map: low RAM, legacy hole, RAM to 2 GiB, IOAPIC/LAPIC MMIO, RAM 4..8 GiB. */
export const SYNTHETIC_MEMORY_MAP: readonly MemRangeSpec[] = [
  { start: 0x0n, size: 0x9fc00n, kind: 'ram' },
  { start: 0x9fc00n, size: 0x60400n, kind: 'reserved' },
  { start: 0x100000n, size: 0x7ff00000n, kind: 'ram' },
  { start: 0xfec00000n, size: 0x1400000n, kind: 'mmio' },
  { start: 0x100000000n, size: 0x100000000n, kind: 'ram' },
];
