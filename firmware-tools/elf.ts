import { EXIT, HyperEnclaveError } from '../src/errors.js';

/** An ELF file that cannot become a hypervisor image: one line with the field and byte offset. */
export class ElfError extends HyperEnclaveError {
  constructor(message: string) {
    super(message, EXIT.BAD_INPUT);
  }
}

export const PT_LOAD = 1;
export const PT_NOTE = 4;
export const EM_X86_64 = 62;
export const ET_EXEC = 2;
export const ET_DYN = 3;
const NT_GNU_BUILD_ID = 3;
const MAX_PHNUM = 256;
/**
 * A flat image spanning more than this is refused (a hypervisor is a few MiB): the default
 * hypervisor reservation (config memory.hypervisorMiB, 64 MiB) holds the image and its page
 * tables, so nothing larger could be loaded. Checked before anything is allocated.
 */
export const MAX_FLAT_SPAN = 64 * 1024 * 1024;

export interface ElfSegment {
  index: number;
  type: number;
  flags: number;
  offset: number;
  vaddr: bigint;
  paddr: bigint;
  filesz: number;
  memsz: number;
}

export interface Elf64 {
  type: number;
  machine: number;
  entry: bigint;
  segments: ElfSegment[];
  /** NT_GNU_BUILD_ID note contents, when the ELF has one. */
  buildId?: Buffer;
}

const off = (n: number | bigint): string => `0x${n.toString(16)}`;

function size(v: bigint, field: string, at: number): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfError(`ELF: ${field} at offset ${off(at)} is ${off(v)}, too large`);
  return Number(v);
}

/** Parses an x86-64 little-endian ELF64 file's header and program headers, bound-checked. */
export function parseElf64(buf: Buffer): Elf64 {
  if (buf.length < 64) throw new ElfError(`ELF: truncated: ${buf.length} bytes, the ELF64 header needs 64`);
  if (buf.readUInt32BE(0) !== 0x7f454c46) throw new ElfError(`ELF: bad magic at offset 0x0: ${buf.subarray(0, 4).toString('hex')}, expected 7f454c46`);
  if (buf[4] !== 2) throw new ElfError(`ELF: class ${buf[4]} at offset 0x4 is not ELFCLASS64 (2)`);
  if (buf[5] !== 1) throw new ElfError(`ELF: data encoding ${buf[5]} at offset 0x5 is not little-endian (1)`);
  const type = buf.readUInt16LE(16);
  if (type !== ET_EXEC && type !== ET_DYN) throw new ElfError(`ELF: type ${type} at offset 0x10 is not ET_EXEC (2) or ET_DYN (3)`);
  const machine = buf.readUInt16LE(18);
  if (machine !== EM_X86_64) throw new ElfError(`ELF: machine ${machine} at offset 0x12 is not x86-64 (62)`);
  const entry = buf.readBigUInt64LE(24);
  const phoff = size(buf.readBigUInt64LE(32), 'e_phoff', 32);
  const phentsize = buf.readUInt16LE(54);
  const phnum = buf.readUInt16LE(56);
  if (phnum === 0) throw new ElfError('ELF: no program headers (e_phnum at offset 0x38 is 0)');
  if (phnum > MAX_PHNUM) throw new ElfError(`ELF: e_phnum ${phnum} at offset 0x38 exceeds ${MAX_PHNUM}`);
  if (phentsize < 56) throw new ElfError(`ELF: e_phentsize ${phentsize} at offset 0x36 is smaller than 56`);
  if (phoff + phnum * phentsize > buf.length) throw new ElfError(`ELF: program headers at ${off(phoff)} (${phnum} × ${phentsize}) run past the end of the ${buf.length}-byte file`);
  const segments: ElfSegment[] = [];
  let buildId: Buffer | undefined;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    const seg: ElfSegment = {
      index: i,
      type: buf.readUInt32LE(at),
      flags: buf.readUInt32LE(at + 4),
      offset: size(buf.readBigUInt64LE(at + 8), `program header ${i} p_offset`, at + 8),
      vaddr: buf.readBigUInt64LE(at + 16),
      paddr: buf.readBigUInt64LE(at + 24),
      filesz: size(buf.readBigUInt64LE(at + 32), `program header ${i} p_filesz`, at + 32),
      memsz: size(buf.readBigUInt64LE(at + 40), `program header ${i} p_memsz`, at + 40),
    };
    if (seg.type === PT_LOAD || seg.type === PT_NOTE) {
      if (seg.offset + seg.filesz > buf.length)
        throw new ElfError(`ELF: segment ${i} (program header at ${off(at)}) file range ${off(seg.offset)}+${off(seg.filesz)} runs past the end of the ${buf.length}-byte file`);
    }
    if (seg.type === PT_LOAD && seg.filesz > seg.memsz) throw new ElfError(`ELF: segment ${i} (program header at ${off(at)}) has p_filesz ${off(seg.filesz)} > p_memsz ${off(seg.memsz)}`);
    if (seg.type === PT_NOTE && !buildId) buildId = findBuildId(buf.subarray(seg.offset, seg.offset + seg.filesz));
    segments.push(seg);
  }
  return { type, machine, entry, segments, ...(buildId ? { buildId } : {}) };
}

/** 4-byte alignment in plain arithmetic: `(n + 3) & ~3` is 32-bit signed in JavaScript and goes negative from 0x7FFFFFFD. */
const align4 = (n: number): number => n + ((4 - (n % 4)) % 4);

export function findBuildId(notes: Buffer): Buffer | undefined {
  let p = 0;
  while (p + 12 <= notes.length) {
    const namesz = notes.readUInt32LE(p);
    const descsz = notes.readUInt32LE(p + 4);
    const ntype = notes.readUInt32LE(p + 8);
    const nameEnd = p + 12 + align4(namesz);
    const descEnd = nameEnd + align4(descsz);
    if (descEnd > notes.length || nameEnd > notes.length) return undefined;
    const name = notes.subarray(p + 12, p + 12 + namesz).toString('latin1');
    if (ntype === NT_GNU_BUILD_ID && name === 'GNU\0') return Buffer.from(notes.subarray(nameEnd, nameEnd + descsz));
    p = descEnd;
  }
  return undefined;
}

export interface FlatImage {
  /** Bytes from the lowest PT_LOAD address to the end of the last file-backed byte; gaps and inner bss zero. */
  image: Buffer;
  /** Lowest p_vaddr of the PT_LOAD segments (the link address the loader places offset 0 at). */
  loadAddress: bigint;
  /** e_entry - loadAddress. */
  entryOffset: number;
  /** Span up to the highest p_vaddr + p_memsz: the loader zero-fills [image length, load size). */
  loadSize: number;
}

/** Lays the PT_LOAD segments out as a bare-metal loader would, by p_vaddr, into one flat image. */
export function flatLoadImage(elf: Elf64, file: Buffer, maxSpan = MAX_FLAT_SPAN): FlatImage {
  const loads = elf.segments.filter((s) => s.type === PT_LOAD && s.memsz > 0);
  if (loads.length === 0) throw new ElfError('ELF: no PT_LOAD segment with a non-zero p_memsz');
  const base = loads.reduce((m, s) => (s.vaddr < m ? s.vaddr : m), loads[0]!.vaddr);
  let loadEnd = 0n;
  let fileEnd = 0n;
  for (const s of loads) {
    const end = s.vaddr - base + BigInt(s.memsz);
    if (end > loadEnd) loadEnd = end;
    const fend = s.vaddr - base + BigInt(s.filesz);
    if (s.filesz > 0 && fend > fileEnd) fileEnd = fend;
  }
  if (loadEnd > BigInt(maxSpan)) throw new ElfError(`ELF: PT_LOAD segments span ${off(loadEnd)} bytes from ${off(base)}, more than the image limit of ${off(maxSpan)} bytes`);
  const sorted = [...loads].sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (prev.vaddr + BigInt(prev.memsz) > sorted[i]!.vaddr) throw new ElfError(`ELF: PT_LOAD segments ${prev.index} and ${sorted[i]!.index} overlap at ${off(sorted[i]!.vaddr)}`);
  }
  const image = Buffer.alloc(Math.max(1, Number(fileEnd)));
  for (const s of loads) file.copy(image, Number(s.vaddr - base), s.offset, s.offset + s.filesz);
  const entryOffset = elf.entry - base;
  if (entryOffset < 0n || entryOffset >= loadEnd) throw new ElfError(`ELF: entry point ${off(elf.entry)} (e_entry at offset 0x18) lies outside the loaded range ${off(base)}..${off(base + loadEnd)}`);
  return { image, loadAddress: base, entryOffset: Number(entryOffset), loadSize: Number(loadEnd) };
}
