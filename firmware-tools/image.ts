import { createHash } from 'node:crypto';
import { readFileBounded, readTextFile } from '../src/fs/bounded-read.js';
import { type ImageArch, type ImageFields, type ImageSigningKey, MAX_BUILD_ID, buildContainer, resignContainer, signingKeyFromPem } from '../src/measure/container.js';
import { ImageError } from '../src/measure/errors.js';
import { writeFileAtomic } from '../src/fs/atomic.js';
import { ElfError, flatLoadImage, parseElf64 } from './elf.js';

export interface BuildOptions {
  arch: ImageArch;
  /** flat (default): PT_LOAD segments laid out by address; raw: the input bytes as they are. */
  kind?: 'flat' | 'raw';
  perCpuSize?: number;
  /** Default: the whole load size. */
  coreSize?: number;
  featureMask?: bigint;
  /** Default: the ELF's GNU build-id note, else the first 20 bytes of SHA-256 of the input. */
  buildId?: Buffer;
  /** Entry offset for kind raw (an ELF's entry is taken from its header). */
  entryOffset?: number;
}

/** The container for an ELF (or raw image) in memory. */
export function buildImage(input: Buffer, opts: BuildOptions, signer?: ImageSigningKey): Buffer {
  const kind = opts.kind ?? 'flat';
  let fields: ImageFields;
  let image: Buffer;
  let buildId = opts.buildId;
  if (kind === 'flat') {
    const elf = parseElf64(input);
    const flat = flatLoadImage(elf, input);
    image = flat.image;
    buildId ??= elf.buildId;
    fields = {
      arch: opts.arch,
      kind,
      loadAddress: flat.loadAddress,
      entryOffset: flat.entryOffset,
      coreSize: opts.coreSize ?? flat.loadSize,
      perCpuSize: opts.perCpuSize ?? 0,
      loadSize: flat.loadSize,
      featureMask: opts.featureMask ?? 0n,
      buildId: Buffer.alloc(0),
    };
  } else {
    image = input;
    fields = {
      arch: opts.arch,
      kind,
      loadAddress: 0n,
      entryOffset: opts.entryOffset ?? 0,
      coreSize: opts.coreSize ?? input.length,
      perCpuSize: opts.perCpuSize ?? 0,
      loadSize: input.length,
      featureMask: opts.featureMask ?? 0n,
      buildId: Buffer.alloc(0),
    };
  }
  buildId ??= createHash('sha256').update(input).digest().subarray(0, 20);
  if (buildId.length > MAX_BUILD_ID) throw new ImageError(`build: build id is ${buildId.length} bytes, at most ${MAX_BUILD_ID}`);
  fields.buildId = Buffer.from(buildId);
  return buildContainer(image, fields, signer);
}

export function readSigningKey(path: string): ImageSigningKey {
  let pem: string;
  pem = readTextFile(path, { what: 'signing key', kind: 'key' });
  return signingKeyFromPem(pem, `signing key ${path}`);
}

/** `firmware build`: ELF → container file, signed when a key is given. Written atomically. */
export function buildImageFile(inputPath: string, outPath: string, opts: BuildOptions, keyPath?: string): Buffer {
  const input = readFileBounded(inputPath, { what: 'build', kind: 'image' });
  const key = keyPath ? readSigningKey(keyPath) : undefined;
  let container: Buffer;
  try {
    container = buildImage(input, opts, key);
  } catch (e) {
    if (e instanceof ElfError) e.message = e.message.replace(/^ELF: /, `ELF ${inputPath}: `);
    throw e;
  }
  writeFileAtomic(outPath, container);
  return container;
}

/** `firmware sign`: (re)signs a container file in place or to `outPath`. */
export function signImageFile(containerPath: string, keyPath: string, outPath = containerPath): Buffer {
  const key = readSigningKey(keyPath);
  let signed: Buffer;
  try {
    signed = resignContainer(readFileBounded(containerPath, { what: 'sign', kind: 'image' }), key);
  } catch (e) {
    if (e instanceof ImageError) e.message += ` (file ${containerPath})`;
    throw e;
  }
  writeFileAtomic(outPath, signed);
  return signed;
}
