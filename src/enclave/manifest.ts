import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { EXIT, jsonSyntaxProblem } from '../errors.js';
import { compileSchema } from '../schemas.js';
import type { BackendKind } from './backends/index.js';
import { EnclaveError } from './errors.js';
import { readTextFile } from '../platform/bounded-read.js';

/** An enclave manifest (schemas/enclave-manifest.schema.json) with paths resolved and sizes parsed. */
export interface EnclaveManifest {
  name: string;
  /** Where it was read from (for messages). */
  source: string;
  payload: { image: string; layout: string | undefined };
  size: bigint;
  base: bigint | undefined;
  ssaFrameSize: number;
  threads: number;
  debug: boolean;
  /** SECS.ATTRIBUTES.EDMM (bit 8): dynamic memory at run time. */
  edmm: boolean;
  xfrm: bigint;
  miscSelect: number;
  backend: { kind: BackendKind; policy: number | undefined };
  signer: { key: string; date: number };
  isvProdId: number;
  isvSvn: number;
}

export interface RawManifest {
  schema: 'hyperenclave/enclave-manifest';
  version: 1;
  name: string;
  description?: string;
  payload: { image: string; layout?: string };
  size: number | string;
  base?: number | string;
  ssaFrameSize?: number;
  threads?: number;
  attributes?: { debug?: boolean; edmm?: boolean; xfrm?: number; miscSelect?: number };
  backend?: { kind: BackendKind; policy?: number };
  signer: { key: string; date?: string };
  isvProdId?: number;
  isvSvn?: number;
}

const validate = compileSchema<RawManifest>('enclave-manifest.schema.json');

/** "64K", "0x10000", 65536 → 65536n. */
export function parseSize(v: number | string, where: string): bigint {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw new EnclaveError(`${where}: ${v} is not a non-negative integer`, EXIT.BAD_INPUT);
    return BigInt(v);
  }
  const m = /^(?:0x([0-9a-fA-F]+)|([0-9]+)([KMG]?))$/.exec(v);
  if (!m) throw new EnclaveError(`${where}: "${v}" is not a size (hex 0x…, or decimal with optional K/M/G)`, EXIT.BAD_INPUT);
  if (m[1] !== undefined) return BigInt('0x' + m[1]);
  const mult = { '': 1n, K: 1024n, M: 1024n * 1024n, G: 1024n * 1024n * 1024n }[m[3] as '' | 'K' | 'M' | 'G'];
  return BigInt(m[2]!) * mult;
}

const isPow2 = (v: bigint): boolean => v > 0n && (v & (v - 1n)) === 0n;

/** Validates a parsed manifest document; `file` anchors relative paths. */
export function parseManifest(doc: unknown, file: string): EnclaveManifest {
  const problems = validate(doc);
  if (problems) throw new EnclaveError(`${file}: ${problems}`, EXIT.BAD_INPUT);
  const m = doc as RawManifest;
  const dir = dirname(resolve(file));
  const abs = (p: string): string => (isAbsolute(p) ? p : join(dir, p));
  const size = parseSize(m.size, `${file}: /size`);
  if (size < 8192n || !isPow2(size)) throw new EnclaveError(`${file}: /size: 0x${size.toString(16)} must be a power of two of at least 8 KiB (SGX ELRANGE)`, EXIT.BAD_INPUT);
  const base = m.base === undefined ? undefined : parseSize(m.base, `${file}: /base`);
  if (base !== undefined && base % size !== 0n) throw new EnclaveError(`${file}: /base: 0x${base.toString(16)} is not aligned to /size 0x${size.toString(16)}`, EXIT.BAD_INPUT);
  const ssa = m.ssaFrameSize ?? 1;
  if (BigInt(ssa) * 4096n > size / 2n) throw new EnclaveError(`${file}: /ssaFrameSize: ${ssa} pages is more than half of /size`, EXIT.BAD_INPUT);
  const date = m.signer.date ? parseInt(m.signer.date, 16) : 0;
  return {
    name: m.name,
    source: file,
    payload: { image: abs(m.payload.image), layout: m.payload.layout ? abs(m.payload.layout) : undefined },
    size,
    base,
    ssaFrameSize: ssa,
    threads: m.threads ?? 1,
    debug: m.attributes?.debug ?? false,
    edmm: m.attributes?.edmm ?? false,
    xfrm: BigInt(m.attributes?.xfrm ?? 3),
    miscSelect: m.attributes?.miscSelect ?? 0,
    backend: { kind: m.backend?.kind ?? 'none', policy: m.backend?.policy },
    signer: { key: abs(m.signer.key), date },
    isvProdId: m.isvProdId ?? 0,
    isvSvn: m.isvSvn ?? 0,
  };
}

export function loadManifest(file: string): EnclaveManifest {
  if (!existsSync(file)) throw new EnclaveError(`enclave manifest ${file} not found`, EXIT.NOT_FOUND);
  let doc: unknown;
  const text = readTextFile(file, { what: 'enclave manifest', kind: 'document' });
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new EnclaveError(`${file}: not JSON (${jsonSyntaxProblem(e, text)})`, EXIT.BAD_INPUT);
  }
  return parseManifest(doc, file);
}

/** With the backend overridden (e.g. `enclave run --backend sev`). */
export function withBackend(m: EnclaveManifest, kind: BackendKind | undefined, policy?: number): EnclaveManifest {
  if (!kind) return m;
  return { ...m, backend: { kind, policy: policy ?? (kind === m.backend.kind ? m.backend.policy : undefined) } };
}
