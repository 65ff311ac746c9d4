import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HyperEnclaveError, EXIT } from '../src/errors.js';

/** ACPI tables the hypervisor cares about: DMAR (Intel VT-d) and IVRS (AMD-Vi) describe the IOMMUs. */
export class AcpiError extends HyperEnclaveError {
  constructor(table: string, offset: number, what: string) {
    super(`ACPI ${table}: byte ${offset}: ${what}`, EXIT.BAD_INPUT);
  }
}

export interface AcpiHeader {
  signature: string;
  length: number;
  revision: number;
  checksumOk: boolean;
  oemId: string;
  oemTableId: string;
}

export interface Iommu {
  kind: 'vt-d' | 'amd-vi';
  registerBase: bigint;
  segment: number;
  /** DMAR: INCLUDE_PCI_ALL flag; IVRS: IVHD type. */
  detail: string;
  /** IVRS: the IOMMU's own PCI requester ID (IVHD bytes 4-5). */
  deviceId?: number;
}

/** A memory range that firmware says devices DMA into (RMRR / IVMD): the hypervisor must not reserve it. */
export interface DmaReservedRange {
  base: bigint;
  end: bigint;
  source: 'RMRR' | 'IVMD';
}

export interface IommuTable {
  header: AcpiHeader;
  iommus: Iommu[];
  reserved: DmaReservedRange[];
  /** DMAR: host address width; IVRS: virtual/physical address sizes from IVinfo. */
  addressWidth: number;
}

const HEADER = 36;

export function parseAcpiHeader(buf: Buffer, name = 'table'): AcpiHeader {
  if (buf.length < HEADER) throw new AcpiError(name, buf.length, `truncated header (${buf.length} of ${HEADER} bytes)`);
  const length = buf.readUInt32LE(4);
  if (length < HEADER || length > buf.length) throw new AcpiError(name, 4, `length field ${length} outside 36..${buf.length}`);
  let sum = 0;
  for (let i = 0; i < length; i++) sum = (sum + buf[i]!) & 0xff;
  return {
    signature: buf.toString('latin1', 0, 4),
    length,
    revision: buf[8]!,
    checksumOk: sum === 0,
    oemId: buf.toString('latin1', 10, 16).replace(/\0+$/, '').trim(),
    oemTableId: buf.toString('latin1', 16, 24).replace(/\0+$/, '').trim(),
  };
}

function need(buf: Buffer, name: string, off: number, n: number, what: string): void {
  if (off + n > buf.length) throw new AcpiError(name, off, `${what} runs past the table end (${buf.length})`);
}

export function parseDmar(buf: Buffer): IommuTable {
  const header = parseAcpiHeader(buf, 'DMAR');
  if (header.signature !== 'DMAR') throw new AcpiError('DMAR', 0, `signature "${header.signature}", expected DMAR`);
  const t = buf.subarray(0, header.length);
  need(t, 'DMAR', HEADER, 12, 'DMAR fields');
  const iommus: Iommu[] = [];
  const reserved: DmaReservedRange[] = [];
  for (let off = 48; off < t.length; ) {
    need(t, 'DMAR', off, 4, 'remapping structure header');
    const type = t.readUInt16LE(off);
    const len = t.readUInt16LE(off + 2);
    if (len < 4) throw new AcpiError('DMAR', off + 2, `structure length ${len} < 4`);
    need(t, 'DMAR', off, len, `structure type ${type}`);
    if (type === 0) {
      need(t, 'DMAR', off, 16, 'DRHD');
      iommus.push({ kind: 'vt-d', segment: t.readUInt16LE(off + 6), registerBase: t.readBigUInt64LE(off + 8), detail: t[off + 4]! & 1 ? 'INCLUDE_PCI_ALL' : 'scoped' });
    } else if (type === 1) {
      need(t, 'DMAR', off, 24, 'RMRR');
      reserved.push({ source: 'RMRR', base: t.readBigUInt64LE(off + 8), end: t.readBigUInt64LE(off + 16) });
    }
    off += len;
  }
  return { header, iommus, reserved, addressWidth: t[36]! + 1 };
}

export function parseIvrs(buf: Buffer): IommuTable {
  const header = parseAcpiHeader(buf, 'IVRS');
  if (header.signature !== 'IVRS') throw new AcpiError('IVRS', 0, `signature "${header.signature}", expected IVRS`);
  const t = buf.subarray(0, header.length);
  need(t, 'IVRS', HEADER, 12, 'IVRS fields');
  const ivinfo = t.readUInt32LE(36);
  const iommus: Iommu[] = [];
  const reserved: DmaReservedRange[] = [];
  for (let off = 48; off < t.length; ) {
    need(t, 'IVRS', off, 4, 'IVRS block header');
    const type = t[off]!;
    const len = t.readUInt16LE(off + 2);
    if (len < 4) throw new AcpiError('IVRS', off + 2, `block length ${len} < 4`);
    need(t, 'IVRS', off, len, `block type 0x${type.toString(16)}`);
    if (type === 0x10 || type === 0x11 || type === 0x40) {
      need(t, 'IVRS', off, 24, 'IVHD');
      iommus.push({ kind: 'amd-vi', registerBase: t.readBigUInt64LE(off + 8), segment: t.readUInt16LE(off + 16), detail: `IVHD type 0x${type.toString(16)}`, deviceId: t.readUInt16LE(off + 4) });
    } else if (type >= 0x20 && type <= 0x22) {
      need(t, 'IVRS', off, 32, 'IVMD');
      const base = t.readBigUInt64LE(off + 16);
      reserved.push({ source: 'IVMD', base, end: base + t.readBigUInt64LE(off + 24) - 1n });
    }
    off += len;
  }
  return { header, iommus, reserved, addressWidth: (ivinfo >> 8) & 0x7f };
}

/** Reads the IOMMU table of this machine, if any: undefined with the reason when absent. */
export function readIommuTable(dir = '/sys/firmware/acpi/tables'): { table?: IommuTable; reason?: string } {
  for (const [name, parse] of [
    ['DMAR', parseDmar],
    ['IVRS', parseIvrs],
  ] as const) {
    const p = join(dir, name);
    if (existsSync(p)) {
      try {
        return { table: parse(readFileSync(p)) };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EACCES') return { reason: `${p} not readable (run as root)` };
        throw e;
      }
    }
  }
  return { reason: `no DMAR or IVRS table in ${dir}: no IOMMU exposed (enable VT-d/AMD-Vi in firmware)` };
}
