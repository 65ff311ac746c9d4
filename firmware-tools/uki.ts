/**
 * Reference values for a unified kernel image (UKI: systemd-stub + .linux/.osrel/.cmdline/.initrd
 * sections), computed from the file alone:
 *  - the Authenticode digest UEFI firmware logs in PCR 4 (EV_EFI_BOOT_SERVICES_APPLICATION) when
 *    it starts the UKI, and the one it logs when the stub starts the kernel in `.linux` (a PE too);
 *  - the events systemd-stub (252) extends into PCR 11: for each measured section in the stub's
 *    order, H(section name with its NUL) then H(section contents, VirtualSize bytes), both EV_IPL;
 *  - the resulting PCR 11 value per bank (starting from zero, before any systemd-pcrphase event).
 * Authenticode is the PE image hash of the Microsoft PE/COFF spec ("Windows Authenticode Portable
 * Executable Signature Format"): headers without CheckSum and the certificate-table entry, the
 * sections by file offset, then any trailing data except the attribute certificate table.
 */
import { createHash } from 'node:crypto';
import { ImageError } from '../src/measure/errors.js';
import { inputCap, readFileBounded } from '../src/platform/bounded-read.js';
import { writeFileAtomic } from '../src/platform/state.js';
import { compileSchema } from '../src/schemas.js';
import { type HashAlgName, hashAlgByName } from '../src/tpm/alg.js';

/** PCR UEFI firmware measures boot applications into (TCG PC Client PFP: "boot manager code"). */
export const UEFI_BOOT_APP_PCR = 4;
/** PCR systemd-stub measures the UKI's sections into (systemd's TPM_PCR_INDEX_KERNEL_IMAGE). */
export const UKI_SECTIONS_PCR = 11;
/** EV_IPL: the event type systemd-stub 252 gives its PCR 11 events (data: the section name, UTF-16). */
const EV_IPL = 0x0000000d;
const EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003;
/** EV_EVENT_TAG: the Linux EFI stub's PCR 9 events. */
const EV_EVENT_TAG = 0x00000006;

/**
 * The sections systemd-stub 252 measures, in its order (`unified_sections[]` in src/fundamental/tpm-pcr.c;
 * `.pcrsig` is never measured: it holds signatures over the PCR values).
 */
export const UKI_MEASURED_SECTIONS = ['.linux', '.osrel', '.cmdline', '.initrd', '.splash', '.dtb', '.pcrpkey'] as const;

export interface PeSection {
  name: string;
  virtualSize: number;
  virtualAddress: number;
  sizeOfRawData: number;
  pointerToRawData: number;
  /** Offset of this section's header in the file. */
  headerOffset: number;
}

export interface PeImage {
  machine: number;
  pe32plus: boolean;
  sizeOfHeaders: number;
  /** File offsets of the CheckSum field and of the certificate-table data directory entry (undefined if absent). */
  checksumOffset: number;
  certDirOffset?: number;
  certTable?: { offset: number; size: number };
  sections: PeSection[];
}

const bad = (what: string, where: string): ImageError => new ImageError(`${where}: ${what}`);

/** Parses the PE/COFF headers of an EFI image; a malformed one is an ImageError naming field and offset. */
export function parsePe(b: Buffer, where = 'PE image'): PeImage {
  const need = (off: number, n: number, field: string): void => {
    if (off < 0 || off + n > b.length) throw bad(`${field} at offset 0x${off.toString(16)} lies beyond the end of the file (${b.length} bytes)`, where);
  };
  need(0, 0x40, 'DOS header');
  if (b.readUInt16LE(0) !== 0x5a4d) throw bad(`no "MZ" signature at offset 0 (found 0x${b.readUInt16LE(0).toString(16)})`, where);
  const peOff = b.readUInt32LE(0x3c);
  need(peOff, 24, 'PE header');
  if (b.readUInt32LE(peOff) !== 0x4550) throw bad(`no "PE\\0\\0" signature at offset 0x${peOff.toString(16)} (e_lfanew)`, where);
  const machine = b.readUInt16LE(peOff + 4);
  const nSections = b.readUInt16LE(peOff + 6);
  const optSize = b.readUInt16LE(peOff + 20);
  const opt = peOff + 24;
  need(opt, 2, 'optional header magic');
  const magic = b.readUInt16LE(opt);
  if (magic !== 0x10b && magic !== 0x20b) throw bad(`optional header magic 0x${magic.toString(16)} at offset 0x${opt.toString(16)} is neither PE32 (0x10b) nor PE32+ (0x20b)`, where);
  const pe32plus = magic === 0x20b;
  const numRvaOff = opt + (pe32plus ? 108 : 92);
  const dirs = opt + (pe32plus ? 112 : 96);
  need(numRvaOff, 4, 'NumberOfRvaAndSizes');
  if (numRvaOff + 4 > opt + optSize) throw bad(`SizeOfOptionalHeader ${optSize} at offset 0x${(peOff + 20).toString(16)} is too small for ${pe32plus ? 'PE32+' : 'PE32'}`, where);
  const sizeOfHeaders = b.readUInt32LE(opt + 60);
  const numRva = b.readUInt32LE(numRvaOff);
  if (dirs + Math.min(numRva, 16) * 8 > opt + optSize) throw bad(`NumberOfRvaAndSizes ${numRva} at offset 0x${numRvaOff.toString(16)} does not fit SizeOfOptionalHeader ${optSize}`, where);
  let certDirOffset: number | undefined;
  let certTable: { offset: number; size: number } | undefined;
  if (numRva > 4) {
    certDirOffset = dirs + 4 * 8;
    need(certDirOffset, 8, 'certificate table directory');
    const o = b.readUInt32LE(certDirOffset);
    const s = b.readUInt32LE(certDirOffset + 4);
    if (s) {
      if (o + s > b.length) throw bad(`certificate table [0x${o.toString(16)}, +0x${s.toString(16)}) (directory entry at offset 0x${certDirOffset.toString(16)}) lies beyond the end of the file`, where);
      certTable = { offset: o, size: s };
    }
  }
  const secOff = opt + optSize;
  need(secOff, nSections * 40, `section table (${nSections} entries)`);
  if (sizeOfHeaders > b.length || sizeOfHeaders < secOff + nSections * 40) throw bad(`SizeOfHeaders 0x${sizeOfHeaders.toString(16)} at offset 0x${(opt + 60).toString(16)} does not cover the section table or exceeds the file`, where);
  const sections: PeSection[] = [];
  for (let i = 0; i < nSections; i++) {
    const h = secOff + i * 40;
    const raw = b.subarray(h, h + 8);
    const z = raw.indexOf(0);
    const s: PeSection = {
      name: raw.subarray(0, z < 0 ? 8 : z).toString('latin1'),
      virtualSize: b.readUInt32LE(h + 8),
      virtualAddress: b.readUInt32LE(h + 12),
      sizeOfRawData: b.readUInt32LE(h + 16),
      pointerToRawData: b.readUInt32LE(h + 20),
      headerOffset: h,
    };
    if (s.sizeOfRawData && s.pointerToRawData + s.sizeOfRawData > b.length)
      throw bad(`section ${i} "${s.name}" (header at offset 0x${h.toString(16)}): raw data [0x${s.pointerToRawData.toString(16)}, +0x${s.sizeOfRawData.toString(16)}) lies beyond the end of the file (${b.length} bytes)`, where);
    sections.push(s);
  }
  return { machine, pe32plus, sizeOfHeaders, checksumOffset: opt + 64, ...(certDirOffset !== undefined ? { certDirOffset } : {}), ...(certTable ? { certTable } : {}), sections };
}

/** The Authenticode (PE image hash) digest of a PE file, as UEFI firmware measures and logs it. */
export function authenticodeDigest(b: Buffer, nodeHash: string, pe: PeImage = parsePe(b)): Buffer {
  const h = createHash(nodeHash);
  if (pe.certDirOffset !== undefined) {
    h.update(b.subarray(0, pe.checksumOffset));
    h.update(b.subarray(pe.checksumOffset + 4, pe.certDirOffset));
    h.update(b.subarray(pe.certDirOffset + 8, pe.sizeOfHeaders));
  } else {
    h.update(b.subarray(0, pe.checksumOffset));
    h.update(b.subarray(pe.checksumOffset + 4, pe.sizeOfHeaders));
  }
  let hashed = pe.sizeOfHeaders;
  const bySection = pe.sections.filter((s) => s.sizeOfRawData > 0).sort((x, y) => x.pointerToRawData - y.pointerToRawData);
  for (const s of bySection) {
    h.update(b.subarray(s.pointerToRawData, s.pointerToRawData + s.sizeOfRawData));
    hashed += s.sizeOfRawData;
  }
  const certSize = pe.certTable?.size ?? 0;
  if (b.length > hashed + certSize) h.update(b.subarray(hashed, b.length - certSize));
  return h.digest();
}

/** The bytes of a section as the loaded image holds them: VirtualSize bytes, raw data then zeros. */
export function sectionContents(b: Buffer, s: PeSection): Buffer {
  const n = Math.min(s.virtualSize, s.sizeOfRawData);
  const raw = b.subarray(s.pointerToRawData, s.pointerToRawData + n);
  return s.virtualSize > n ? Buffer.concat([raw, Buffer.alloc(s.virtualSize - n)]) : raw;
}

export interface UkiEvent {
  pcr: number;
  type: 'EV_IPL';
  eventType: number;
  section: string;
  what: 'name' | 'contents';
  digests: Record<string, string>;
  /** The event data systemd-stub logs: the section name. */
  data: string;
}

export interface UkiReferenceDoc {
  schema: 'hyperenclave/uki-reference';
  version: 1;
  generator: string;
  uki: { path: string; size: number; sha256: string; stub?: string };
  banks: HashAlgName[];
  bootApplication: { pcr: number; type: 'EV_EFI_BOOT_SERVICES_APPLICATION'; eventType: number; digests: Record<string, string> };
  kernel: { pcr: number; type: 'EV_EFI_BOOT_SERVICES_APPLICATION'; eventType: number; size: number; digests: Record<string, string> };
  sections: { name: string; size: number; digests: Record<string, string> }[];
  events: UkiEvent[];
  pcrs: Record<string, Record<string, string>>;
  /**
   * What the kernel's own EFI stub (Linux 6.1+) measures into PCR 9 when systemd-stub starts it:
   * EV_EVENT_TAG "LOADED_IMAGE::LoadOptions" = H(the command line as UTF-16LE with its NUL, which
   * is how systemd-stub passes `.cmdline`), then "Linux initrd" = H(.initrd). Absent without .cmdline.
   */
  kernelEfiStub?: { pcr: 9; events: { tag: string; eventType: number; digests: Record<string, string> }[]; pcrs: Record<string, string> };
}

function nodeHashOf(bank: HashAlgName): string {
  const a = hashAlgByName(bank);
  if (!a) throw new ImageError(`bank ${bank}: unknown hash algorithm`);
  return a.nodeName;
}

/** Reference values of a UKI from its bytes: PCR 4 application digests, PCR 11 events and value, per bank. */
export function ukiReference(b: Buffer, banks: HashAlgName[], path = 'UKI'): UkiReferenceDoc {
  const pe = parsePe(b, path);
  const byName = new Map<string, PeSection>();
  for (const s of pe.sections) if (!byName.has(s.name)) byName.set(s.name, s);
  const linux = byName.get('.linux');
  if (!linux || linux.virtualSize === 0) throw new ImageError(`${path}: no .linux section: not a unified kernel image`);
  const hash = (bank: HashAlgName, d: Buffer): Buffer => createHash(nodeHashOf(bank)).update(d).digest();
  const per = (f: (bank: HashAlgName) => Buffer): Record<string, string> => Object.fromEntries(banks.map((bank) => [bank, f(bank).toString('hex')]));

  const kernelBytes = sectionContents(b, linux);
  const kernelPe = parsePe(kernelBytes, `${path}: .linux`);
  const events: UkiEvent[] = [];
  const sections: UkiReferenceDoc['sections'] = [];
  for (const name of UKI_MEASURED_SECTIONS) {
    const s = byName.get(name);
    if (!s || s.virtualSize === 0) continue;
    const contents = sectionContents(b, s);
    const nameBytes = Buffer.from(`${name}\0`, 'latin1');
    sections.push({ name, size: contents.length, digests: per((bank) => hash(bank, contents)) });
    events.push({ pcr: UKI_SECTIONS_PCR, type: 'EV_IPL', eventType: EV_IPL, section: name, what: 'name', digests: per((bank) => hash(bank, nameBytes)), data: name });
    events.push({ pcr: UKI_SECTIONS_PCR, type: 'EV_IPL', eventType: EV_IPL, section: name, what: 'contents', digests: per((bank) => hash(bank, contents)), data: name });
  }
  const pcrs: Record<string, Record<string, string>> = {};
  for (const bank of banks) {
    let v: Buffer = Buffer.alloc(hashAlgByName(bank)!.size);
    for (const e of events) v = hash(bank, Buffer.concat([v, Buffer.from(e.digests[bank]!, 'hex')]));
    pcrs[bank] = { [String(UKI_SECTIONS_PCR)]: v.toString('hex') };
  }
  let kernelEfiStub: UkiReferenceDoc['kernelEfiStub'];
  const cmdSec = byName.get('.cmdline');
  if (cmdSec && cmdSec.virtualSize > 0) {
    const raw = sectionContents(b, cmdSec);
    const nul = raw.indexOf(0);
    const utf16 = Buffer.from(`${raw.subarray(0, nul < 0 ? raw.length : nul).toString('latin1')}\0`, 'utf16le');
    const evs = [{ tag: 'LOADED_IMAGE::LoadOptions', eventType: EV_EVENT_TAG, digests: per((bank) => hash(bank, utf16)) }];
    const initrd = byName.get('.initrd');
    if (initrd && initrd.virtualSize > 0) evs.push({ tag: 'Linux initrd', eventType: EV_EVENT_TAG, digests: sections.find((x) => x.name === '.initrd')!.digests });
    const values: Record<string, string> = {};
    for (const bank of banks) {
      let v: Buffer = Buffer.alloc(hashAlgByName(bank)!.size);
      for (const e of evs) v = hash(bank, Buffer.concat([v, Buffer.from(e.digests[bank]!, 'hex')]));
      values[bank] = v.toString('hex');
    }
    kernelEfiStub = { pcr: 9, events: evs, pcrs: values };
  }
  const sdmagic = byName.get('.sdmagic');
  const stub = sdmagic ? textOrUndefined(sectionContents(b, sdmagic)) : undefined;
  const doc: UkiReferenceDoc = {
    schema: 'hyperenclave/uki-reference',
    version: 1,
    generator: 'hyperenclave firmware uki-reference',
    uki: { path, size: b.length, sha256: createHash('sha256').update(b).digest('hex'), ...(stub ? { stub } : {}) },
    banks,
    bootApplication: { pcr: UEFI_BOOT_APP_PCR, type: 'EV_EFI_BOOT_SERVICES_APPLICATION', eventType: EV_EFI_BOOT_SERVICES_APPLICATION, digests: per((bank) => authenticodeDigest(b, nodeHashOf(bank), pe)) },
    kernel: { pcr: UEFI_BOOT_APP_PCR, type: 'EV_EFI_BOOT_SERVICES_APPLICATION', eventType: EV_EFI_BOOT_SERVICES_APPLICATION, size: kernelBytes.length, digests: per((bank) => authenticodeDigest(kernelBytes, nodeHashOf(bank), kernelPe)) },
    sections,
    events,
    pcrs,
    ...(kernelEfiStub ? { kernelEfiStub } : {}),
  };
  const problem = validateUkiReference(doc);
  if (problem) throw new ImageError(`uki reference: generated document fails its schema: ${problem}`);
  return doc;
}

function textOrUndefined(b: Buffer): string | undefined {
  const t = b.toString('latin1').replace(/\0+$/, '').trim();
  return /^[\x20-\x7e]+$/.test(t) ? t : undefined;
}

const validateUkiReference = compileSchema<UkiReferenceDoc>('uki-reference.schema.json');

/** Validates a uki-reference document (for the verifier's policy loader); undefined when it is valid. */
export function ukiReferenceProblem(doc: unknown): string | undefined {
  return validateUkiReference(doc);
}

/** Reads the UKI, computes its reference values and writes them atomically when `out` is given. */
export function ukiReferenceFile(path: string, banks: HashAlgName[], out?: string): UkiReferenceDoc {
  // A UKI carries the initrd, so it may be larger than a bare hypervisor image: 512 MiB unless
  // HYPERENCLAVE_MAX_INPUT_MIB raises the image cap beyond that.
  const b = readFileBounded(path, { what: 'UKI', maxBytes: Math.max(inputCap('image'), 512 * 1024 * 1024) });
  const doc = ukiReference(b, banks, path);
  if (out) writeFileAtomic(out, JSON.stringify(doc, null, 2) + '\n');
  return doc;
}
