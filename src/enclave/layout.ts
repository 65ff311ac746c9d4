import { existsSync, readFileSync } from 'node:fs';
import { EXIT, jsonSyntaxProblem } from '../errors.js';
import { PAGE_SIZE } from '../hypervisor/abi.js';
import { EnclaveError } from './errors.js';
import type { EnclaveManifest } from './manifest.js';
import { SECINFO_TCS, type MeasuredPage, secinfoReg } from './sgx.js';
import { readFileBounded, readTextFile } from '../platform/bounded-read.js';

/**
 * From a manifest and its payload (flat image + layout JSON) to the exact page list EADD gets:
 * image pages at offset 0 with the layout's permissions, then per thread a TCS page, its SSA
 * frames and a stack. Everything must fit in the declared ELRANGE size.
 */

export interface PayloadSegment {
  /** Offset in the enclave (and in the flat image). */
  offset: bigint;
  size: bigint;
  perms: string;
}

export interface PayloadLayout {
  /** OENTRY: entry point offset. */
  entry: bigint;
  /** Preferred ELRANGE base (linked address), if the payload is not position independent. */
  base: bigint | undefined;
  segments: PayloadSegment[];
  /** Stack pages per thread. */
  stackPages: number;
  /** SSA frames per TCS (NSSA). */
  nssa: number;
  /**
   * Full page list (format `hyperenclave-enclave-layout`, made by hypervisor/enclaves/layout.mjs):
   * the image already contains its TCS and SSA pages, linked at `base`; used as given.
   */
  pages: { offset: bigint; secinfo: number; type: 'tcs' | 'reg' }[] | undefined;
  /** ELRANGE size the payload was linked for. */
  size: bigint | undefined;
  ssaFrameSize: number | undefined;
  /** The raw JSON for whoever runs the payload (ECALL ABI details). */
  raw: Record<string, unknown>;
}

const num = (v: unknown, where: string): bigint => {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'string' && /^(0x[0-9a-fA-F]+|[0-9]+)$/.test(v)) return BigInt(v);
  throw new EnclaveError(`${where}: expected an unsigned integer, got ${JSON.stringify(v)}`, EXIT.BAD_INPUT);
};

export function parseLayout(doc: unknown, file: string): PayloadLayout {
  if (!doc || typeof doc !== 'object') throw new EnclaveError(`${file}: layout must be a JSON object`, EXIT.BAD_INPUT);
  const d = doc as Record<string, unknown>;
  if (d.schema === 'hyperenclave-enclave-layout') return parsePageLayout(d, file);
  const entry = num(d.entry ?? d.oentry ?? d.entryOffset, `${file}: /entry`);
  const segsRaw = (d.segments ?? d.pages ?? []) as unknown;
  if (!Array.isArray(segsRaw)) throw new EnclaveError(`${file}: /segments must be an array`, EXIT.BAD_INPUT);
  const segments = segsRaw.map((s, i) => {
    const o = s as Record<string, unknown>;
    const perms = String(o.perms ?? o.flags ?? 'rwx').toLowerCase();
    if (!/^r?w?x?$/.test(perms)) throw new EnclaveError(`${file}: /segments/${i}/perms "${perms}" is not a subset of "rwx"`, EXIT.BAD_INPUT);
    return { offset: num(o.offset, `${file}: /segments/${i}/offset`), size: num(o.size, `${file}: /segments/${i}/size`), perms };
  });
  return {
    entry,
    base: d.base === undefined ? undefined : num(d.base, `${file}: /base`),
    segments,
    stackPages: d.stackPages === undefined ? 4 : Number(num(d.stackPages, `${file}: /stackPages`)),
    nssa: d.nssa === undefined ? 1 : Math.max(1, Number(num(d.nssa, `${file}: /nssa`))),
    pages: undefined,
    size: undefined,
    ssaFrameSize: undefined,
    raw: d,
  };
}

function parsePageLayout(d: Record<string, unknown>, file: string): PayloadLayout {
  if (d.version !== 1) throw new EnclaveError(`${file}: /version ${JSON.stringify(d.version)} is not 1`, EXIT.BAD_INPUT);
  if (!Array.isArray(d.pages) || d.pages.length === 0) throw new EnclaveError(`${file}: /pages must be a non-empty array`, EXIT.BAD_INPUT);
  const pages = (d.pages as Record<string, unknown>[]).map((p, i) => {
    const offset = num(p.offset, `${file}: /pages/${i}/offset`);
    if (offset % BigInt(PAGE_SIZE) !== 0n) throw new EnclaveError(`${file}: /pages/${i}/offset 0x${offset.toString(16)} is not page-aligned`, EXIT.BAD_INPUT);
    const secinfo = Number(num(p.secinfo, `${file}: /pages/${i}/secinfo`));
    const type = p.type === 'tcs' ? 'tcs' : p.type === 'reg' ? 'reg' : undefined;
    if (!type) throw new EnclaveError(`${file}: /pages/${i}/type ${JSON.stringify(p.type)} is not "tcs" or "reg"`, EXIT.BAD_INPUT);
    if ((type === 'tcs') !== ((secinfo >> 8) === 1)) throw new EnclaveError(`${file}: /pages/${i}/secinfo 0x${secinfo.toString(16)} does not match type "${type}"`, EXIT.BAD_INPUT);
    return { offset, secinfo, type } as const;
  });
  return {
    entry: num(d.entryOffset, `${file}: /entryOffset`),
    base: num(d.base, `${file}: /base`),
    segments: [],
    stackPages: 0,
    nssa: 1,
    pages,
    size: num(d.size, `${file}: /size`),
    ssaFrameSize: Number(num(d.ssaFrameSize ?? 1, `${file}: /ssaFrameSize`)),
    raw: d,
  };
}

export function defaultLayoutPath(image: string): string | undefined {
  const stem = image.replace(/\.[^./]+$/, '');
  for (const c of [`${stem}.layout.json`, `${stem}.json`, `${image}.json`]) if (existsSync(c)) return c;
  return undefined;
}

export interface EnclavePlan {
  name: string;
  size: bigint;
  base: bigint;
  ssaFrameSize: number;
  attributes: bigint;
  xfrm: bigint;
  miscSelect: number;
  pages: MeasuredPage[];
  /** Offsets of the TCS pages, in thread order. */
  tcs: bigint[];
  layout: PayloadLayout;
  imageBytes: number;
}

function permsFlags(p: string): number {
  return secinfoReg(p.includes('r') || p.includes('w'), p.includes('w'), p.includes('x'));
}

/** SGX TCS page: OSSA @16, CSSA @24, NSSA @28, OENTRY @32, OFSBASE @48, OGSBASE @56, FSLIMIT/GSLIMIT @64/68. */
export function encodeTcs(t: { ossa: bigint; nssa: number; oentry: bigint; debugOptIn: boolean }): Buffer {
  const b = Buffer.alloc(PAGE_SIZE);
  b.writeBigUInt64LE(t.debugOptIn ? 1n : 0n, 8);
  b.writeBigUInt64LE(t.ossa, 16);
  b.writeUInt32LE(0, 24);
  b.writeUInt32LE(t.nssa, 28);
  b.writeBigUInt64LE(t.oentry, 32);
  b.writeUInt32LE(0xfff, 64);
  b.writeUInt32LE(0xfff, 68);
  return b;
}

/** Builds the page plan from the image bytes and layout; refuses an image larger than the declared size. */
export function planEnclave(m: EnclaveManifest, image: Buffer, layout: PayloadLayout): EnclavePlan {
  if (layout.pages) return planFromPages(m, image, layout, layout.pages);
  const imagePages = Math.ceil(image.length / PAGE_SIZE);
  const perThread = 1 + layout.nssa * m.ssaFrameSize + layout.stackPages;
  const needed = BigInt((imagePages + perThread * m.threads) * PAGE_SIZE);
  if (BigInt(image.length) > m.size)
    throw new EnclaveError(`${m.source}: payload image ${m.payload.image} is ${image.length} bytes, larger than the declared /size 0x${m.size.toString(16)}`, EXIT.BAD_INPUT);
  if (needed > m.size)
    throw new EnclaveError(
      `${m.source}: image (${imagePages} pages) + ${m.threads} thread(s) × ${perThread} pages (TCS, SSA, stack) = 0x${needed.toString(16)} bytes, larger than the declared /size 0x${m.size.toString(16)}`,
      EXIT.BAD_INPUT,
    );
  if (layout.entry >= BigInt(image.length)) throw new EnclaveError(`${m.payload.layout ?? 'layout'}: /entry 0x${layout.entry.toString(16)} is outside the ${image.length}-byte image`, EXIT.BAD_INPUT);
  const pages: MeasuredPage[] = [];
  for (let i = 0; i < imagePages; i++) {
    const off = BigInt(i * PAGE_SIZE);
    const seg = layout.segments.find((s) => off >= s.offset && off < s.offset + s.size);
    const data = Buffer.alloc(PAGE_SIZE);
    image.copy(data, 0, i * PAGE_SIZE, Math.min(image.length, (i + 1) * PAGE_SIZE));
    pages.push({ offset: off, flags: permsFlags(seg?.perms ?? 'rwx'), data });
  }
  const tcs: bigint[] = [];
  let next = BigInt(imagePages * PAGE_SIZE);
  for (let t = 0; t < m.threads; t++) {
    const tcsOff = next;
    const ossa = tcsOff + BigInt(PAGE_SIZE);
    pages.push({ offset: tcsOff, flags: SECINFO_TCS, data: encodeTcs({ ossa, nssa: layout.nssa, oentry: layout.entry, debugOptIn: m.debug }) });
    tcs.push(tcsOff);
    next = ossa;
    for (let s = 0; s < layout.nssa * m.ssaFrameSize + layout.stackPages; s++) {
      pages.push({ offset: next, flags: secinfoReg(true, true, false), data: Buffer.alloc(PAGE_SIZE) });
      next += BigInt(PAGE_SIZE);
    }
  }
  const base = m.base ?? layout.base ?? 0n;
  if (base % m.size !== 0n) throw new EnclaveError(`${m.source}: ELRANGE base 0x${base.toString(16)} (from the layout) is not aligned to /size 0x${m.size.toString(16)}`, EXIT.BAD_INPUT);
  return planOf(m, base, pages, tcs, layout, image);
}

function planFromPages(m: EnclaveManifest, image: Buffer, layout: PayloadLayout, list: NonNullable<PayloadLayout['pages']>): EnclavePlan {
  const lay = m.payload.layout ?? 'layout';
  const extent = list.reduce((e, p) => (p.offset + BigInt(PAGE_SIZE) > e ? p.offset + BigInt(PAGE_SIZE) : e), 0n);
  if (BigInt(image.length) > m.size || extent > m.size)
    throw new EnclaveError(
      `${m.source}: payload ${m.payload.image} spans 0x${(BigInt(image.length) > extent ? BigInt(image.length) : extent).toString(16)} bytes, larger than the declared /size 0x${m.size.toString(16)}`,
      EXIT.BAD_INPUT,
    );
  if (BigInt(image.length) > extent) throw new EnclaveError(`${lay}: the ${image.length}-byte image extends beyond the last page listed (0x${extent.toString(16)})`, EXIT.BAD_INPUT);
  const tcsPages = list.filter((p) => p.type === 'tcs');
  if (m.threads > tcsPages.length)
    throw new EnclaveError(`${m.source}: /threads ${m.threads} but the payload ${m.payload.image} was linked with ${tcsPages.length} TCS page(s)`, EXIT.BAD_INPUT);
  const base = m.base ?? layout.base ?? 0n;
  if (layout.base !== undefined && base !== layout.base)
    throw new EnclaveError(`${m.source}: /base 0x${base.toString(16)} differs from the address the payload is linked at (0x${layout.base.toString(16)})`, EXIT.BAD_INPUT);
  if (base % m.size !== 0n) throw new EnclaveError(`${m.source}: ELRANGE base 0x${base.toString(16)} is not aligned to /size 0x${m.size.toString(16)}`, EXIT.BAD_INPUT);
  const ssa = layout.ssaFrameSize ?? m.ssaFrameSize;
  if (ssa !== m.ssaFrameSize) throw new EnclaveError(`${m.source}: /ssaFrameSize ${m.ssaFrameSize} differs from the payload's ${ssa}`, EXIT.BAD_INPUT);
  const pages: MeasuredPage[] = list.map((p) => {
    const data = Buffer.alloc(PAGE_SIZE);
    const at = Number(p.offset);
    if (at < image.length) image.copy(data, 0, at, Math.min(image.length, at + PAGE_SIZE));
    if (p.type === 'tcs' && m.debug) data.writeBigUInt64LE(data.readBigUInt64LE(8) | 1n, 8);
    return { offset: p.offset, flags: p.secinfo, data };
  });
  return planOf(m, base, pages, tcsPages.slice(0, m.threads).map((p) => p.offset), layout, image);
}

/** The plan both layouts end in: the manifest's identity fields, the pages, the TCS offsets. */
function planOf(m: EnclaveManifest, base: bigint, pages: MeasuredPage[], tcs: bigint[], layout: PayloadLayout, image: Buffer): EnclavePlan {
  return {
    name: m.name,
    size: m.size,
    base,
    ssaFrameSize: m.ssaFrameSize,
    attributes: 4n | (m.debug ? 2n : 0n) | (m.edmm ? 0x100n : 0n),
    xfrm: m.xfrm,
    miscSelect: m.miscSelect,
    pages,
    tcs,
    layout,
    imageBytes: image.length,
  };
}

/** Reads the payload image and its layout named by a manifest. */
export function loadPayload(m: EnclaveManifest): { image: Buffer; layout: PayloadLayout; layoutPath: string } {
  if (!existsSync(m.payload.image)) throw new EnclaveError(`${m.source}: /payload/image ${m.payload.image} not found (build it with hypervisor/enclaves/build.sh)`, EXIT.NOT_FOUND);
  const layoutPath = m.payload.layout ?? defaultLayoutPath(m.payload.image);
  if (!layoutPath || !existsSync(layoutPath)) throw new EnclaveError(`${m.source}: no layout JSON for ${m.payload.image} (set /payload/layout)`, EXIT.NOT_FOUND);
  let doc: unknown;
  const text = readTextFile(layoutPath, { what: 'enclave layout', kind: 'document' });
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new EnclaveError(`${layoutPath}: not JSON (${jsonSyntaxProblem(e, text)})`, EXIT.BAD_INPUT);
  }
  return { image: readFileBounded(m.payload.image, { what: 'enclave payload', kind: 'log' }), layout: parseLayout(doc, layoutPath), layoutPath };
}
