import { HyperEnclaveError, EXIT } from '../src/errors.js';
import { FIRMWARE_MEMMAP_DIR, readFirmwareMemoryMap, type FirmwareMemoryRange } from '../src/platform/memory-map.js';

/** One firmware (e820) memory-map range, end inclusive as Linux prints it. */
export type MemoryRange = FirmwareMemoryRange;

export interface ReservationPlan {
  base: bigint;
  size: bigint;
  hypervisorBytes: bigint;
  epcBytes: bigint;
  /** Kernel command-line argument that keeps Linux off the range. */
  memmapArg: string;
  /** Line for /etc/default/grub (GRUB needs the `$` escaped three times there). */
  grubLine: string;
  chosenFrom: MemoryRange;
}

const MiB = 1024n * 1024n;

export class MemmapError extends HyperEnclaveError {
  constructor(message: string, exitCode: number = EXIT.BAD_INPUT) {
    super(message, exitCode);
  }
}

/** Reads /sys/firmware/memmap (the firmware-provided map, before any memmap= carving): the one reader, src/platform/memory-map.ts. */
export function readFirmwareMemmap(root = FIRMWARE_MEMMAP_DIR): MemoryRange[] {
  const ranges = readFirmwareMemoryMap(root);
  if (!ranges) throw new MemmapError(`memory map: ${root} not present`, EXIT.NOT_FOUND);
  return ranges;
}

/**
 * Parses lines "START END TYPE" (hex, end inclusive) or dmesg's
 * "BIOS-e820: [mem 0x..-0x..] usable" format; `source` names the input in errors.
 */
export function parseMemmapText(text: string, source = 'memory map'): MemoryRange[] {
  const out: MemoryRange[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const e820 = /\[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (.+)$/i.exec(line);
    const plain = /^(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(.+)$/i.exec(line);
    const m = e820 ?? plain;
    if (!m) throw new MemmapError(`${source}:${i + 1}: expected "START END TYPE" (hex), got "${line.slice(0, 60)}"`);
    let type = m[3]!.trim();
    if (type === 'usable') type = 'System RAM';
    const start = BigInt(m[1]!);
    const end = BigInt(m[2]!);
    if (end < start) throw new MemmapError(`${source}:${i + 1}: end 0x${end.toString(16)} before start 0x${start.toString(16)}`);
    out.push({ start, end, type });
  });
  return out.sort((a, b) => (a.start < b.start ? -1 : 1));
}

function sizeArg(bytes: bigint): string {
  if (bytes % (1024n * MiB) === 0n) return `${bytes / (1024n * MiB)}G`;
  if (bytes % MiB === 0n) return `${bytes / MiB}M`;
  return `0x${bytes.toString(16)}`;
}

/**
 * Chooses where to reserve hypervisor + EPC memory: the highest System RAM range that holds
 * the aligned block, keeping at least `keepForLinuxMiB` of RAM for Linux.
 */
export function planReservation(
  map: MemoryRange[],
  opts: { hypervisorMiB: number; epcMiB: number; alignMiB?: number; keepForLinuxMiB?: number; base?: bigint },
): ReservationPlan {
  if (!Number.isInteger(opts.hypervisorMiB) || opts.hypervisorMiB < 4) throw new MemmapError(`hypervisor size: need an integer >= 4 MiB, got ${opts.hypervisorMiB}`, EXIT.USAGE);
  if (!Number.isInteger(opts.epcMiB) || opts.epcMiB < 1) throw new MemmapError(`EPC size: need an integer >= 1 MiB, got ${opts.epcMiB}`, EXIT.USAGE);
  const hypervisorBytes = BigInt(opts.hypervisorMiB) * MiB;
  const epcBytes = BigInt(opts.epcMiB) * MiB;
  const size = hypervisorBytes + epcBytes;
  const align = BigInt(opts.alignMiB ?? 2) * MiB;
  const ram = map.filter((r) => r.type === 'System RAM');
  const totalRam = ram.reduce((s, r) => s + (r.end - r.start + 1n), 0n);
  const keep = BigInt(opts.keepForLinuxMiB ?? 1024) * MiB;
  if (totalRam - size < keep)
    throw new MemmapError(
      `memory: reserving ${sizeArg(size)} leaves ${(totalRam - size) / MiB} MiB of ${totalRam / MiB} MiB RAM for Linux; need ${keep / MiB} MiB`,
      EXIT.UNSUPPORTED,
    );
  let chosen: { base: bigint; from: MemoryRange } | undefined;
  if (opts.base !== undefined) {
    const from = ram.find((r) => r.start <= opts.base! && opts.base! + size - 1n <= r.end);
    if (!from) throw new MemmapError(`memory: 0x${opts.base.toString(16)}+${sizeArg(size)} is not inside one System RAM range`, EXIT.BAD_INPUT);
    if (opts.base % align !== 0n) throw new MemmapError(`memory: base 0x${opts.base.toString(16)} is not ${align / MiB} MiB aligned`, EXIT.BAD_INPUT);
    chosen = { base: opts.base, from };
  } else {
    for (const r of [...ram].reverse()) {
      const top = ((r.end + 1n) / align) * align;
      const base = top - size;
      if (base >= r.start && base >= 0x100000n) {
        chosen = { base, from: r };
        break;
      }
    }
  }
  if (!chosen) throw new MemmapError(`memory: no System RAM range holds ${sizeArg(size)} aligned to ${align / MiB} MiB`, EXIT.UNSUPPORTED);
  const memmapArg = `memmap=${sizeArg(size)}$0x${chosen.base.toString(16)}`;
  return {
    base: chosen.base,
    size,
    hypervisorBytes,
    epcBytes,
    memmapArg,
    grubLine: `GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT ${memmapArg.replace('$', '\\\\\\$')}"`,
    chosenFrom: chosen.from,
  };
}
