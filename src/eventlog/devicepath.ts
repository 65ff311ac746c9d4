import { guidAt, KNOWN_GUIDS } from './guid.js';

/** A malformed device path; `offset` is relative to the start of the path. */
export class DevicePathError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

const h = (n: number | bigint): string => `0x${n.toString(16)}`;
const BBS_TYPES: Record<number, string> = { 1: 'Floppy', 2: 'HD', 3: 'CDROM', 4: 'PCMCIA', 5: 'USB', 6: 'Network' };

function utf16z(b: Buffer): string {
  let end = 0;
  while (end + 1 < b.length && (b[end] !== 0 || b[end + 1] !== 0)) end += 2;
  return b.subarray(0, end).toString('utf16le');
}

function asciiz(b: Buffer): string {
  const z = b.indexOf(0);
  return b.subarray(0, z < 0 ? b.length : z).toString('latin1');
}

function eisaId(id: number): string | undefined {
  if ((id & 0xffff) !== 0x41d0) return undefined;
  return `PNP${(id >>> 16).toString(16).toUpperCase().padStart(4, '0')}`;
}

const proto = (p: number): string => (p === 6 ? 'TCP' : p === 17 ? 'UDP' : String(p));

function ipv4(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}
function ipv6(b: Buffer, at: number): string {
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(b.readUInt16BE(at + i).toString(16));
  return parts.join(':');
}

/** Text of one node's content (type, subtype) or undefined if the content is too short for its kind. */
function nodeText(type: number, sub: number, c: Buffer): string | undefined {
  const n = c.length;
  const vendor = (tag: string): string | undefined => (n < 16 ? undefined : `${tag}(${guidAt(c)}${n > 16 ? `,${c.subarray(16).toString('hex')}` : ''})`);
  switch (type) {
    case 1: // hardware
      if (sub === 1 && n >= 2) return `Pci(${h(c[1]!)},${h(c[0]!)})`;
      if (sub === 2 && n >= 1) return `PcCard(${h(c[0]!)})`;
      if (sub === 3 && n >= 20) return `MemoryMapped(${h(c.readUInt32LE(0))},${h(c.readBigUInt64LE(4))},${h(c.readBigUInt64LE(12))})`;
      if (sub === 4) return vendor('VenHw');
      if (sub === 5 && n >= 4) return `Ctrl(${h(c.readUInt32LE(0))})`;
      if (sub === 6 && n >= 9) return `BMC(${c[0]},${h(c.readBigUInt64LE(1))})`;
      return undefined;
    case 2: // ACPI
      if (sub === 1 && n >= 8) {
        const hid = c.readUInt32LE(0);
        const uid = c.readUInt32LE(4);
        const pnp = eisaId(hid);
        if (pnp === 'PNP0A03') return `PciRoot(${h(uid)})`;
        if (pnp === 'PNP0A08') return `PcieRoot(${h(uid)})`;
        if (pnp === 'PNP0604') return `Floppy(${h(uid)})`;
        return `Acpi(${pnp ?? h(hid)},${h(uid)})`;
      }
      if (sub === 2 && n >= 12) {
        const strs = c.subarray(12).toString('latin1').split('\0');
        const hid = eisaId(c.readUInt32LE(0)) ?? h(c.readUInt32LE(0));
        const cid = eisaId(c.readUInt32LE(8)) ?? h(c.readUInt32LE(8));
        return `AcpiEx(${strs[0] || hid},${strs[2] || cid},${strs[1] || h(c.readUInt32LE(4))})`;
      }
      if (sub === 3 && n >= 4) {
        const adrs: string[] = [];
        for (let i = 0; i + 4 <= n; i += 4) adrs.push(h(c.readUInt32LE(i)));
        return `AcpiAdr(${adrs.join(',')})`;
      }
      return undefined;
    case 3: // messaging
      switch (sub) {
        case 1:
          return n >= 4 ? `Ata(${c[0] ? 'Secondary' : 'Primary'},${c[1] ? 'Slave' : 'Master'},${h(c.readUInt16LE(2))})` : undefined;
        case 2:
          return n >= 4 ? `SCSI(${c.readUInt16LE(0)},${c.readUInt16LE(2)})` : undefined;
        case 3:
          return n >= 20 ? `Fibre(${h(c.readBigUInt64LE(4))},${h(c.readBigUInt64LE(12))})` : undefined;
        case 4:
          return n >= 12 ? `I1394(${c.subarray(4, 12).toString('hex').toUpperCase()})` : undefined;
        case 5:
          return n >= 2 ? `USB(${h(c[0]!)},${h(c[1]!)})` : undefined;
        case 6:
          return n >= 4 ? `I2O(${h(c.readUInt32LE(0))})` : undefined;
        case 10:
          if (n >= 16 && guidAt(c) === 'e0c14753-f9be-11d2-9a0c-0090273fc14d') return 'VenPcAnsi()';
          return vendor('VenMsg');
        case 11: {
          if (n < 33) return undefined;
          const ifType = c[32]!;
          const macLen = ifType === 0 || ifType === 1 ? 6 : 32;
          return `MAC(${c.subarray(0, macLen).toString('hex')},${ifType})`;
        }
        case 12: {
          if (n < 15) return undefined;
          const extra = n >= 23 ? `,${ipv4(c, 15)},${ipv4(c, 19)}` : '';
          return `IPv4(${ipv4(c, 4)},${proto(c.readUInt16LE(12))},${c[14] ? 'Static' : 'DHCP'},${ipv4(c, 0)}${extra})`;
        }
        case 13:
          return n >= 38 ? `IPv6(${ipv6(c, 16)},${proto(c.readUInt16LE(36))},${ipv6(c, 0)})` : undefined;
        case 14:
          return n >= 15 ? `Uart(${c.readBigUInt64LE(4)},${c[12]},${c[13]},${c[14]})` : undefined;
        case 15:
          return n >= 7 ? `UsbClass(${h(c.readUInt16LE(0))},${h(c.readUInt16LE(2))},${h(c[4]!)},${h(c[5]!)},${h(c[6]!)})` : undefined;
        case 16:
          return n >= 6 ? `UsbWwid(${h(c.readUInt16LE(2))},${h(c.readUInt16LE(4))},${h(c.readUInt16LE(0))},"${utf16z(c.subarray(6))}")` : undefined;
        case 17:
          return n >= 1 ? `Unit(${h(c[0]!)})` : undefined;
        case 18:
          return n >= 6 ? `Sata(${c.readUInt16LE(0)},${c.readUInt16LE(2)},${c.readUInt16LE(4)})` : undefined;
        case 19:
          return n >= 14 ? `iSCSI(${asciiz(c.subarray(14))},${h(c.readUInt16LE(12))},${c.subarray(4, 12).toString('hex')})` : undefined;
        case 20:
          return n >= 2 ? `Vlan(${c.readUInt16LE(0)})` : undefined;
        case 23:
          return n >= 12 ? `NVMe(${h(c.readUInt32LE(0))},${[...c.subarray(4, 12)].reverse().map((x) => x.toString(16).toUpperCase().padStart(2, '0')).join('-')})` : undefined;
        case 24:
          return `Uri(${c.toString('latin1')})`;
        case 25:
          return n >= 2 ? `UFS(${h(c[0]!)},${h(c[1]!)})` : undefined;
        case 26:
          return n >= 1 ? `SD(${c[0]})` : undefined;
        case 27:
          return n >= 6 ? `Bluetooth(${c.subarray(0, 6).toString('hex')})` : undefined;
        case 28:
          return `Wi-Fi(${asciiz(c.subarray(0, 32))})`;
        case 29:
          return n >= 1 ? `eMMC(${c[0]})` : undefined;
        default:
          return undefined;
      }
    case 4: // media
      switch (sub) {
        case 1: {
          if (n < 38) return undefined;
          const part = c.readUInt32LE(0);
          const start = h(c.readBigUInt64LE(4));
          const size = h(c.readBigUInt64LE(12));
          const fmt = c[36];
          const sigType = c[37];
          const sig = sigType === 2 ? guidAt(c, 20) : sigType === 1 ? h(c.readUInt32LE(20)) : '0';
          return `HD(${part},${fmt === 2 ? 'GPT' : fmt === 1 ? 'MBR' : h(fmt!)},${sig},${start},${size})`;
        }
        case 2:
          return n >= 20 ? `CDROM(${h(c.readUInt32LE(0))},${h(c.readBigUInt64LE(4))},${h(c.readBigUInt64LE(12))})` : undefined;
        case 3:
          return vendor('VenMedia');
        case 4:
          return utf16z(c);
        case 5:
          return n >= 16 ? `Media(${guidAt(c)})` : undefined;
        case 6:
          return n >= 16 ? `FvFile(${guidAt(c)})` : undefined;
        case 7:
          return n >= 16 ? `FvVol(${guidAt(c)})` : undefined;
        case 8:
          return n >= 20 ? `Offset(${h(c.readBigUInt64LE(4))},${h(c.readBigUInt64LE(12))})` : undefined;
        case 9:
          return n >= 34 ? `RamDisk(${h(c.readBigUInt64LE(0))},${h(c.readBigUInt64LE(8))},${c.readUInt16LE(32)},${guidAt(c, 16)})` : undefined;
        default:
          return undefined;
      }
    case 5: // BIOS boot specification
      return sub === 1 && n >= 4 ? `BBS(${BBS_TYPES[c.readUInt16LE(0)] ?? h(c.readUInt16LE(0))},${asciiz(c.subarray(4))},${h(c.readUInt16LE(2))})` : undefined;
    default:
      return undefined;
  }
}

/**
 * UEFI device path (EFI_DEVICE_PATH_PROTOCOL nodes) as text in the UEFI "device path to text"
 * style: PciRoot(0x0)/Pci(0x1,0x0)/HD(1,GPT,…)/\EFI\BOOT\BOOTX64.EFI. Multi-instance paths are
 * separated by ','. Throws DevicePathError on a node that does not fit.
 */
export function devicePathToText(b: Buffer): string {
  const instances: string[] = [];
  let nodes: string[] = [];
  let pos = 0;
  while (pos < b.length) {
    if (b.length - pos < 4) throw new DevicePathError(`device path node header needs 4 bytes, ${b.length - pos} left`, pos);
    const type = b[pos]!;
    const sub = b[pos + 1]!;
    const len = b.readUInt16LE(pos + 2);
    if (len < 4 || len > b.length - pos) throw new DevicePathError(`device path node length ${len} does not fit (${b.length - pos} bytes left)`, pos + 2);
    if (type === 0x7f) {
      instances.push(nodes.join('/'));
      nodes = [];
      pos += len;
      if (sub === 0xff) break;
      continue;
    }
    const content = b.subarray(pos + 4, pos + len);
    nodes.push(nodeText(type, sub, content) ?? `Path(${type},${sub},${content.toString('hex')})`);
    pos += len;
  }
  if (nodes.length) instances.push(nodes.join('/'));
  return instances.join(',');
}

export { KNOWN_GUIDS };
