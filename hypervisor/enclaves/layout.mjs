// Reads a linked enclave ELF and the flat image objcopy made from it; writes the layout JSON
// the loader uses (pages with SECINFO permissions, entry, TCS, SSA) and moves the image into
// place. Both files are written atomically (temp + fsync + rename).
// usage: node layout.mjs <elf> <flat.tmp> <out-dir> <name> [heap pages]
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';

const [elfPath, flatTmp, outDir, name, heapArg] = process.argv.slice(2);
const heapPages = Number(heapArg ?? 0);
const fail = (msg) => {
  console.error(`layout: ${name}: ${msg}`);
  process.exit(1);
};
const elf = readFileSync(elfPath);
if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) fail(`${elfPath} is not an ELF64 file`);
const entry = Number(elf.readBigUInt64LE(0x18));
const phoff = Number(elf.readBigUInt64LE(0x20));
const phentsize = elf.readUInt16LE(0x36);
const phnum = elf.readUInt16LE(0x38);
const PAGE = 4096;
const segs = [];
for (let i = 0; i < phnum; i++) {
  const at = phoff + i * phentsize;
  if (elf.readUInt32LE(at) !== 1) continue; // PT_LOAD
  const flags = elf.readUInt32LE(at + 4);
  const vaddr = Number(elf.readBigUInt64LE(at + 16));
  const filesz = Number(elf.readBigUInt64LE(at + 32));
  const memsz = Number(elf.readBigUInt64LE(at + 40));
  if (memsz > 0) segs.push({ flags, vaddr, filesz, memsz });
}
if (segs.length === 0) fail('no PT_LOAD segments');
segs.sort((a, b) => a.vaddr - b.vaddr);
const base = segs[0].vaddr;
if (base % PAGE) fail(`enclave base ${base.toString(16)} is not page-aligned`);
const tcs = segs[0];
if (tcs.memsz % PAGE || tcs.flags !== 4) fail('first segment must be the read-only TCS pages (gen-link.mjs)');
if (!Number.isInteger(heapPages) || heapPages < 0) fail(`heap pages ${heapArg} is not a count`);

const pages = [];
let end = 0;
for (const s of segs) {
  if (s.vaddr % PAGE) fail(`segment at ${s.vaddr.toString(16)} is not page-aligned`);
  const perms = (s.flags & 4 ? 1 : 0) | (s.flags & 2 ? 2 : 0) | (s.flags & 1 ? 4 : 0);
  const isTcs = s === tcs;
  for (let va = s.vaddr; va < s.vaddr + s.memsz; va += PAGE) {
    const offset = va - base;
    if (pages.some((p) => p.offset === offset)) fail(`two segments share the page at offset ${offset.toString(16)}`);
    pages.push({
      offset,
      type: isTcs ? 'tcs' : 'reg',
      perms: isTcs ? '---' : `${perms & 1 ? 'r' : '-'}${perms & 2 ? 'w' : '-'}${perms & 4 ? 'x' : '-'}`,
      secinfo: isTcs ? 0x100 : 0x200 | perms,
    });
  }
  end = Math.max(end, s.vaddr + Math.ceil(s.memsz / PAGE) * PAGE - base);
}
// ELRANGE also covers the heap reserve above the image (augmented at run time, never measured).
const heapOffset = end;
let size = 2 * PAGE;
while (size < end + heapPages * PAGE) size *= 2;

const flat = readFileSync(flatTmp);
const fileEnd = Math.max(...segs.filter((s) => s.filesz > 0).map((s) => s.vaddr + s.filesz)) - base;
if (flat.length !== fileEnd) fail(`objcopy image is ${flat.length} bytes, the ELF says ${fileEnd}`);
const tcsOffsets = [];
for (let t = 0; t < tcs.memsz / PAGE; t++) {
  const at = t * PAGE;
  const oentry = Number(flat.readBigUInt64LE(at + 32));
  const ossa = Number(flat.readBigUInt64LE(at + 16));
  const ogs = Number(flat.readBigUInt64LE(at + 56));
  if (oentry !== entry - base) fail(`TCS ${t}: OENTRY ${oentry.toString(16)} differs from the ELF entry offset ${(entry - base).toString(16)}`);
  if (!pages.some((p) => p.offset === ossa && p.perms === 'rw-')) fail(`TCS ${t}: OSSA ${ossa.toString(16)} is not a writable enclave page`);
  if (ogs && !pages.some((p) => p.offset === ogs && p.perms === 'rw-')) fail(`TCS ${t}: OGSBASE ${ogs.toString(16)} is not a writable enclave page`);
  tcsOffsets.push(at);
}
const oentry = entry - base;
const ossa = Number(flat.readBigUInt64LE(16));

const layout = {
  schema: 'hyperenclave-enclave-layout',
  version: 1,
  name,
  image: `${name}.bin`,
  imageSize: flat.length,
  imageSha256: createHash('sha256').update(flat).digest('hex'),
  base,
  size,
  ssaFrameSize: 1,
  tcsOffset: 0,
  tcsOffsets,
  entryOffset: oentry,
  ssaOffset: ossa,
  heapOffset,
  heapPages,
  pages,
};

function writeAtomic(path, data) {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  writeSync(fd, data);
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, path);
}
{
  const fd = openSync(flatTmp, 'r+');
  fsyncSync(fd);
  closeSync(fd);
}
renameSync(flatTmp, join(outDir, `${name}.bin`));
writeAtomic(join(outDir, `${name}.json`), JSON.stringify(layout, null, 2) + '\n');
console.log(`enclave ${name}: ${pages.length} pages, ELRANGE ${size / 1024} KiB, image ${flat.length} bytes`);
