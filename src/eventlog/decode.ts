import { X509Certificate } from 'node:crypto';
import { devicePathToText } from './devicepath.js';
import { guidAt, KNOWN_GUIDS } from './guid.js';
import type { EventLog, LogEvent } from './parse.js';
import { startupLocalityOf } from './replay.js';
import { EVENT_TYPES } from './types.js';

/** EV_EVENT_TAG ids with a known meaning: Linux's EFI stub (drivers/firmware/efi/libstub/efistub.h, PCR 9). */
const TAG_NAMES: Record<number, string> = {
  0x8f3b22ec: 'INITRD_EVENT_TAG_ID (Linux EFI stub: the initrd it loaded)',
  0x8f3b22ed: 'LOAD_OPTIONS_EVENT_TAG_ID (Linux EFI stub: its command line)',
};

/** Decoded event data: a plain JSON-able object whose `kind` says which shape it has. */
export type DecodedEvent = { kind: string; [k: string]: unknown };

const T = EVENT_TYPES;
const hx = (n: number | bigint): string => `0x${n.toString(16)}`;

/** A payload that does not fit its declared structure; caught by decodeEvent and reported as {error}. */
class Short extends Error {}

/** Bounds-checked reads over an event's data (offsets relative to it). */
class R {
  pos = 0;
  constructor(readonly b: Buffer) {}
  need(n: number, what: string): void {
    if (n > this.b.length - this.pos) throw new Short(`${what} needs ${n} bytes at data offset ${this.pos}, ${this.b.length - this.pos} left`);
  }
  u8(w: string): number {
    this.need(1, w);
    return this.b[this.pos++]!;
  }
  u32(w: string): number {
    this.need(4, w);
    const v = this.b.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(w: string): bigint {
    this.need(8, w);
    const v = this.b.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  /** A u64 length that must fit in what is left (so no allocation follows a huge value). */
  len64(w: string, unit = 1): number {
    const v = this.u64(w);
    if (v * BigInt(unit) > BigInt(this.b.length - this.pos)) throw new Short(`${w} ${v} exceeds the ${this.b.length - this.pos} bytes left`);
    return Number(v);
  }
  bytes(n: number, w: string): Buffer {
    this.need(n, w);
    const v = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  guid(w: string): string {
    this.need(16, w);
    const g = guidAt(this.b, this.pos);
    this.pos += 16;
    return g;
  }
  rest(): Buffer {
    const v = this.b.subarray(this.pos);
    this.pos = this.b.length;
    return v;
  }
}

/** Printable text (ASCII or UTF-16LE), trailing NULs dropped; undefined if the bytes are not text. */
export function textOf(b: Buffer): string | undefined {
  if (b.length === 0) return '';
  const printable = (c: number): boolean => c === 9 || c === 10 || c === 13 || (c >= 0x20 && c < 0x7f);
  // UTF-16LE: every odd byte zero (the common case for EV_S_CRTM_VERSION).
  if (b.length >= 2 && b.length % 2 === 0 && b[1] === 0) {
    let ok = true;
    for (let i = 0; i < b.length; i += 2) {
      if (b[i + 1] !== 0 || (b[i] !== 0 && !printable(b[i]!))) {
        ok = false;
        break;
      }
    }
    if (ok) return b.toString('utf16le').replace(/\0+$/, '');
  }
  let end = b.length;
  while (end > 0 && b[end - 1] === 0) end--;
  for (let i = 0; i < end; i++) if (!printable(b[i]!)) return undefined;
  return b.subarray(0, end).toString('latin1');
}

function stringOrHex(b: Buffer): DecodedEvent {
  const t = textOf(b);
  return t !== undefined ? { kind: 'String', text: t } : { kind: 'Binary', hex: b.toString('hex') };
}

function certSubject(der: Buffer): string | undefined {
  try {
    return new X509Certificate(der).subject.replace(/\n/g, ', ');
  } catch {
    return undefined;
  }
}

function signatureLists(b: Buffer): unknown[] {
  const r = new R(b);
  const lists: unknown[] = [];
  while (r.pos < b.length) {
    const type = r.guid('SignatureType');
    const listSize = r.u32('SignatureListSize');
    const headerSize = r.u32('SignatureHeaderSize');
    const sigSize = r.u32('SignatureSize');
    if (listSize < 28 || listSize - 28 > b.length - r.pos) throw new Short(`SignatureListSize ${listSize} does not fit`);
    const body = new R(r.bytes(listSize - 28, 'signature list'));
    body.bytes(headerSize, 'SignatureHeader');
    if (sigSize < 16) throw new Short(`SignatureSize ${sigSize} is too small`);
    const entries: unknown[] = [];
    while (body.pos < body.b.length) {
      const owner = body.guid('SignatureOwner');
      const data = body.bytes(sigSize - 16, 'SignatureData');
      const isX509 = KNOWN_GUIDS[type] === 'EFI_CERT_X509';
      entries.push(isX509 ? { owner, subject: certSubject(data) } : { owner, hash: data.toString('hex') });
    }
    lists.push({ type: KNOWN_GUIDS[type] ?? type, count: entries.length, entries });
  }
  return lists;
}

function loadOption(b: Buffer): Record<string, unknown> {
  const r = new R(b);
  const attributes = r.u32('Attributes');
  r.need(2, 'FilePathListLength');
  const fpLen = b.readUInt16LE(r.pos);
  r.pos += 2;
  let end = r.pos;
  while (end + 1 < b.length && (b[end] !== 0 || b[end + 1] !== 0)) end += 2;
  if (end + 1 >= b.length) throw new Short('Description is not NUL-terminated');
  const description = b.subarray(r.pos, end).toString('utf16le');
  r.pos = end + 2;
  const fp = r.bytes(fpLen, 'FilePathList');
  const opt = r.rest();
  const out: Record<string, unknown> = { attributes: hx(attributes), active: (attributes & 1) === 1, description, devicePath: safeDevicePath(fp) };
  if (opt.length) out.optionalData = opt.toString('hex');
  return out;
}

function safeDevicePath(b: Buffer): string {
  try {
    return devicePathToText(b);
  } catch (e) {
    return `<bad device path: ${(e as Error).message}> ${b.toString('hex')}`;
  }
}

function variableData(name: string, guid: string, data: Buffer, type: number): Record<string, unknown> {
  const vendor = KNOWN_GUIDS[guid];
  if (type === T.EV_EFI_VARIABLE_AUTHORITY) {
    // EFI_SIGNATURE_DATA (owner GUID + certificate) from firmware; shim logs the bare certificate.
    const bare = certSubject(data);
    if (bare) return { subject: bare };
    if (data.length > 16) {
      const subject = certSubject(data.subarray(16));
      if (subject) return { signatureOwner: guidAt(data, 0), subject };
    }
  }
  if (vendor === 'EFI_GLOBAL_VARIABLE' && name === 'BootOrder' && data.length % 2 === 0) {
    const order: string[] = [];
    for (let i = 0; i < data.length; i += 2) order.push(`Boot${data.readUInt16LE(i).toString(16).toUpperCase().padStart(4, '0')}`);
    return { bootOrder: order };
  }
  if (vendor === 'EFI_GLOBAL_VARIABLE' && /^(Boot|Driver|SysPrep|PlatformRecovery)[0-9A-Fa-f]{4}$/.test(name)) return { loadOption: loadOption(data) };
  if (['PK', 'KEK', 'db', 'dbx', 'dbt', 'dbr', 'MokList', 'MokListX', 'MokListTrusted'].includes(name) && data.length >= 28) return { signatureLists: signatureLists(data) };
  if (data.length === 1) return { value: data[0] };
  const text = data.length > 1 ? textOf(data) : undefined;
  return text ? { text } : {};
}

function uefiVariable(ev: LogEvent): DecodedEvent {
  const r = new R(ev.data);
  const guid = r.guid('VariableName');
  const nameLen = r.len64('UnicodeNameLength', 2);
  const dataLen = r.len64('VariableDataLength');
  const name = r.bytes(nameLen * 2, 'UnicodeName').toString('utf16le');
  const data = r.bytes(dataLen, 'VariableData');
  const out: DecodedEvent = { kind: 'UefiVariable', variableGuid: guid, unicodeName: name, dataLength: dataLen };
  if (KNOWN_GUIDS[guid]) out.vendor = KNOWN_GUIDS[guid];
  let decoded: Record<string, unknown> = {};
  try {
    decoded = variableData(name, guid, data, ev.type);
  } catch (e) {
    if (!(e instanceof Short)) throw e;
    decoded = { dataError: e.message };
  }
  Object.assign(out, decoded);
  return out;
}

function imageLoad(ev: LogEvent): DecodedEvent {
  const r = new R(ev.data);
  const location = r.u64('ImageLocationInMemory');
  const length = r.u64('ImageLengthInMemory');
  const link = r.u64('ImageLinkTimeAddress');
  const dpLen = r.len64('LengthOfDevicePath');
  const dp = r.bytes(dpLen, 'DevicePath');
  return { kind: 'UefiImageLoad', imageLocationInMemory: hx(location), imageLengthInMemory: Number(length), imageLinkTimeAddress: hx(link), devicePath: safeDevicePath(dp) };
}

function gpt(ev: LogEvent): DecodedEvent {
  const r = new R(ev.data);
  const sig = r.bytes(8, 'Signature').toString('latin1');
  if (sig !== 'EFI PART') throw new Short(`GPT header signature is ${JSON.stringify(sig)}, not "EFI PART"`);
  const revision = r.u32('Revision');
  const headerSize = r.u32('HeaderSize');
  if (headerSize < 92) throw new Short(`GPT HeaderSize ${headerSize} < 92`);
  r.u32('HeaderCRC32');
  r.u32('Reserved');
  r.u64('MyLBA');
  r.u64('AlternateLBA');
  const firstUsable = r.u64('FirstUsableLBA');
  const lastUsable = r.u64('LastUsableLBA');
  const diskGuid = r.guid('DiskGUID');
  r.u64('PartitionEntryLBA');
  r.u32('NumberOfPartitionEntries');
  const entrySize = r.u32('SizeOfPartitionEntry');
  r.u32('PartitionEntryArrayCRC32');
  r.bytes(headerSize - 92, 'header reserved');
  if (entrySize < 128) throw new Short(`SizeOfPartitionEntry ${entrySize} < 128`);
  const count = r.len64('NumberOfPartitions', entrySize);
  const partitions: unknown[] = [];
  for (let i = 0; i < count; i++) {
    const e = new R(r.bytes(entrySize, `Partitions[${i}]`));
    const typeGuid = e.guid('PartitionTypeGUID');
    const uniqueGuid = e.guid('UniquePartitionGUID');
    const start = e.u64('StartingLBA');
    const end = e.u64('EndingLBA');
    const attrs = e.u64('Attributes');
    const nm = e.bytes(72, 'PartitionName');
    let z = 0;
    while (z + 1 < nm.length && (nm[z] !== 0 || nm[z + 1] !== 0)) z += 2;
    partitions.push({ number: i + 1, type: KNOWN_GUIDS[typeGuid] ?? typeGuid, uniqueGuid, startingLba: Number(start), endingLba: Number(end), attributes: hx(attrs), name: nm.subarray(0, z).toString('utf16le') });
  }
  return { kind: 'UefiGpt', revision: hx(revision), diskGuid, firstUsableLba: Number(firstUsable), lastUsableLba: Number(lastUsable), partitions };
}

function handoffTables(r: R, description?: string): DecodedEvent {
  const n = r.len64('NumberOfTables', 24);
  const tables: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const guid = r.guid(`TableEntry[${i}].VendorGuid`);
    const addr = r.u64(`TableEntry[${i}].VendorTable`);
    tables.push({ guid, name: KNOWN_GUIDS[guid], address: hx(addr) });
  }
  return description === undefined ? { kind: 'HandoffTables', tables } : { kind: 'HandoffTables', description, tables };
}

function blob2Description(r: R): string {
  const n = r.u8('BlobDescriptionSize');
  const d = r.bytes(n, 'BlobDescription');
  return textOf(d) ?? d.toString('hex');
}

function noAction(ev: LogEvent, log?: EventLog): DecodedEvent {
  if (ev.index === 0 && log?.specId) {
    const s = log.specId;
    return {
      kind: 'SpecIdEvent',
      signature: s.signature,
      platformClass: s.platformClass,
      specVersion: `${s.specVersionMajor}.${s.specVersionMinor}`,
      specErrata: s.specErrata,
      uintnSize: s.uintnSize,
      algorithms: s.algorithms.map((a) => ({ algorithm: a.bank, algorithmId: hx(a.algId), digestSize: a.digestSize })),
      vendorInfo: s.vendorInfo.toString('hex'),
    };
  }
  const loc = startupLocalityOf(ev);
  if (loc !== undefined) return { kind: 'StartupLocality', locality: loc };
  // Other EV_NO_ACTION events start with a 16-byte signature ("SP800-155 Event3", "NvIndexInstance\0", …).
  if (ev.data.length >= 16) {
    const sig = textOf(ev.data.subarray(0, 16));
    if (sig) return { kind: 'NoAction', signature: sig, hex: ev.data.subarray(16).toString('hex') };
  }
  return { kind: 'NoAction', hex: ev.data.toString('hex') };
}

/**
 * Decodes an event's data for reading: UEFI variables (Boot####/BootOrder load options, signature
 * lists, authority certificates), image loads with device path text, GPT, firmware blobs,
 * hand-off tables, strings, StartupLocality and the Spec ID event. Returns undefined for types
 * without a structure; a malformed payload yields {kind, error} (never throws).
 */
export function decodeEvent(ev: LogEvent, log?: EventLog): DecodedEvent | undefined {
  try {
    switch (ev.type) {
      case T.EV_NO_ACTION:
        return noAction(ev, log);
      case T.EV_EFI_VARIABLE_DRIVER_CONFIG:
      case T.EV_EFI_VARIABLE_BOOT:
      case T.EV_EFI_VARIABLE_BOOT2:
      case T.EV_EFI_VARIABLE_AUTHORITY:
        return uefiVariable(ev);
      case T.EV_EFI_BOOT_SERVICES_APPLICATION:
      case T.EV_EFI_BOOT_SERVICES_DRIVER:
      case T.EV_EFI_RUNTIME_SERVICES_DRIVER:
        return imageLoad(ev);
      case T.EV_EFI_GPT_EVENT:
      case T.EV_EFI_GPT_EVENT2:
        return gpt(ev);
      case T.EV_EFI_PLATFORM_FIRMWARE_BLOB: {
        if (ev.data.length !== 16) return stringOrHex(ev.data);
        const r = new R(ev.data);
        return { kind: 'FirmwareBlob', base: hx(r.u64('BlobBase')), length: hx(r.u64('BlobLength')) };
      }
      case T.EV_EFI_PLATFORM_FIRMWARE_BLOB2: {
        const r = new R(ev.data);
        const description = blob2Description(r);
        return { kind: 'FirmwareBlob', description, base: hx(r.u64('BlobBase')), length: hx(r.u64('BlobLength')) };
      }
      case T.EV_EFI_HANDOFF_TABLES:
        return handoffTables(new R(ev.data));
      case T.EV_EFI_HANDOFF_TABLES2: {
        const r = new R(ev.data);
        return handoffTables(r, blob2Description(r));
      }
      case T.EV_SEPARATOR: {
        if (ev.data.length !== 4) return stringOrHex(ev.data);
        const v = ev.data.readUInt32LE(0);
        return { kind: 'Separator', value: hx(v), error: v === 0xffffffff || v === 1 };
      }
      case T.EV_EVENT_TAG: {
        const r = new R(ev.data);
        const id = r.u32('taggedEventID');
        const n = r.u32('taggedEventDataSize');
        const d = r.bytes(n, 'taggedEventData');
        const text = textOf(d);
        const tag = TAG_NAMES[id];
        return { kind: 'TaggedEvent', id: hx(id), ...(tag ? { tag } : {}), ...(text !== undefined ? { text } : { hex: d.toString('hex') }) };
      }
      case T.EV_POST_CODE:
      case T.EV_POST_CODE2:
      case T.EV_CPU_MICROCODE: {
        const t = textOf(ev.data);
        if (t !== undefined) return { kind: 'String', text: t };
        if (ev.data.length === 16) return { kind: 'FirmwareBlob', base: hx(ev.data.readBigUInt64LE(0)), length: hx(ev.data.readBigUInt64LE(8)) };
        return { kind: 'Binary', hex: ev.data.toString('hex') };
      }
      case T.EV_S_CRTM_VERSION:
      case T.EV_S_CRTM_CONTENTS:
      case T.EV_IPL:
      case T.EV_EFI_ACTION:
      case T.EV_ACTION:
      case T.EV_COMPACT_HASH:
      case T.EV_OMIT_BOOT_DEVICE_EVENTS:
      case T.EV_EFI_HCRTM_EVENT:
      case T.EV_NONHOST_INFO:
      case T.EV_PLATFORM_CONFIG_FLAGS:
        return stringOrHex(ev.data);
      default:
        return undefined;
    }
  } catch (e) {
    if (e instanceof Short || e instanceof RangeError) return { kind: 'Malformed', error: e.message };
    throw e;
  }
}
