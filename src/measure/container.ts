import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type Hash, type KeyObject } from 'node:crypto';
import { type FileHandle, open } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import {
  type Sm2PrivateKey,
  type Sm2PublicKey,
  sm2PrivateKeyFromPem,
  sm2PublicKeyFromSpki,
  sm2PublicKeyToSpki,
  sm2Sign,
  sm2SignatureFromRaw,
  sm2SignatureToRaw,
  sm2Verify,
} from '../crypto/sm2.js';
import { type HashAlgName, hashAlgByName } from '../tpm/alg.js';
import { EXIT } from '../errors.js';
import { ImageError } from './errors.js';
import { ParallelMultiDigest } from './parallel-digest.js';
import { HDR, HEIMG, HEIMG_MAGIC } from './image-abi.generated.js';

/**
 * HEIMG v1, the hypervisor image container (docs/image-container.md):
 * a 256-byte little-endian header, the image bytes, then an optional signature block.
 * The signature covers the header, which carries the image's SHA-256 and SHA-384: verifying it
 * and the image digest binds header and image without hashing the image a second time.
 */

// The header's values and layout are defined once in hypervisor/abi (`image`), which generates
// image-abi.generated.ts and the driver's hyperenclave_image.h.
export const IMAGE_MAGIC = Buffer.from(HEIMG_MAGIC, 'latin1');
export const IMAGE_FORMAT_VERSION = HEIMG.FORMAT_VERSION;
export const IMAGE_HEADER_SIZE = HEIMG.HEADER_SIZE;
export const MAX_BUILD_ID = HEIMG.MAX_BUILD_ID;
export const MAX_SIGNATURE_BLOCK = HEIMG.MAX_SIGNATURE_BLOCK;
/** Default ceiling on the image length field: larger images are refused before reading. */
export const DEFAULT_MAX_IMAGE_LENGTH = 1024 * 1024 * 1024;
export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
/** Images at least this long are hashed one bank per core when more than one bank is asked for. */
export const PARALLEL_MIN_LENGTH = 16 * 1024 * 1024;

export type ImageArch = 'intel-vmx' | 'amd-svm' | 'hygon';
/** flat: the memory image a bare-metal loader copies to the load address; raw: opaque bytes (e.g. an ELF kept as is). */
export type ImageKind = 'flat' | 'raw';
export type SignatureAlg = 'none' | 'ecdsa-p256-sha256' | 'ecdsa-p384-sha384' | 'sm2-sm3';

export const ARCH_CODE: Record<ImageArch, number> = { 'intel-vmx': HEIMG.ARCH_INTEL_VMX, 'amd-svm': HEIMG.ARCH_AMD_SVM, hygon: HEIMG.ARCH_HYGON };
export const KIND_CODE: Record<ImageKind, number> = { flat: HEIMG.KIND_FLAT, raw: HEIMG.KIND_RAW };
export const SIG_ALG_CODE: Record<SignatureAlg, number> = { none: HEIMG.SIG_NONE, 'ecdsa-p256-sha256': HEIMG.SIG_ECDSA_P256_SHA256, 'ecdsa-p384-sha384': HEIMG.SIG_ECDSA_P384_SHA384, 'sm2-sm3': HEIMG.SIG_SM2_SM3 };
/** Raw r‖s signature length for each algorithm (fixed, so the header can state the block length before signing). */
export const SIG_RAW_LENGTH: Record<Exclude<SignatureAlg, 'none'>, number> = { 'ecdsa-p256-sha256': 64, 'ecdsa-p384-sha384': 96, 'sm2-sm3': 64 };

/** Byte offsets of the header fields. */
export { HDR };

const reverse = <T extends string>(m: Record<T, number>): Map<number, T> => new Map(Object.entries(m).map(([k, v]) => [v as number, k as T]));
const ARCH_BY_CODE = reverse(ARCH_CODE);
const KIND_BY_CODE = reverse(KIND_CODE);
const SIG_BY_CODE = reverse(SIG_ALG_CODE);

/** What the builder chooses; the rest of the header is computed. */
export interface ImageFields {
  arch: ImageArch;
  kind: ImageKind;
  loadAddress: bigint;
  entryOffset: number;
  coreSize: number;
  perCpuSize: number;
  loadSize: number;
  featureMask: bigint;
  buildId: Buffer;
}

export interface ImageHeader extends ImageFields {
  formatVersion: number;
  headerSize: number;
  imageLength: number;
  signatureAlg: SignatureAlg;
  signatureLength: number;
  imageSha256: Buffer;
  imageSha384: Buffer;
  /** SHA-256 of the signer's SubjectPublicKeyInfo DER; zeros when unsigned. */
  signerKeyId: Buffer;
}

export interface SignerInfo {
  alg: Exclude<SignatureAlg, 'none'>;
  keyId: Buffer;
  /** SubjectPublicKeyInfo DER of the key that signed. */
  spki: Buffer;
}

export interface VerifiedImage {
  header: ImageHeader;
  /** The 256 header bytes exactly as in the file (what the signature covers). */
  headerBytes: Buffer;
  /** Digest of the image bytes for every bank asked for (plus sha256 when needed to check the header). */
  imageDigests: Partial<Record<HashAlgName, Buffer>>;
  signer?: SignerInfo;
  /** Total container length in bytes. */
  containerLength: number;
  /** Stable identity: SHA-256 of the header bytes (they bind the image by its digests). */
  id: string;
}

export interface VerifyOptions {
  /** Banks whose image digest to compute in the same pass (measurement). */
  banks?: readonly HashAlgName[];
  /** The platform's architecture: a container for another one is refused. */
  expectedArch?: ImageArch;
  maxImageLength?: number;
  /** When given, the container must be signed by one of these public keys (PEM or KeyObject). */
  trustedKeys?: readonly (string | KeyObject)[];
  requireSignature?: boolean;
  chunkSize?: number;
  /** Hash each bank on its own core (default: for images of 16 MiB or more when several banks are asked for). */
  parallel?: boolean;
  /** Called after each chunk with the image bytes read so far and the image length. */
  onProgress?: (done: number, total: number) => void;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const off = (n: number): string => `0x${n.toString(16)}`;

function readSize(buf: Buffer, at: number, field: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageError(`image: ${field} at offset ${off(at)} is ${v}, beyond 2^53`);
  return Number(v);
}

/** The platform architecture matching a CPUID vendor string. */
export function archForCpuVendor(vendor: string): ImageArch | undefined {
  if (vendor === 'GenuineIntel') return 'intel-vmx';
  if (vendor === 'AuthenticAMD') return 'amd-svm';
  if (vendor === 'HygonGenuine') return 'hygon';
  return undefined;
}

export function encodeHeader(h: Omit<ImageHeader, 'formatVersion' | 'headerSize'>): Buffer {
  if (h.buildId.length > MAX_BUILD_ID) throw new ImageError(`image: build id is ${h.buildId.length} bytes, at most ${MAX_BUILD_ID}`);
  const b = Buffer.alloc(IMAGE_HEADER_SIZE);
  IMAGE_MAGIC.copy(b, HDR.magic);
  b.writeUInt16LE(IMAGE_FORMAT_VERSION, HDR.formatVersion);
  b.writeUInt16LE(IMAGE_HEADER_SIZE, HDR.headerSize);
  b[HDR.arch] = ARCH_CODE[h.arch];
  b[HDR.kind] = KIND_CODE[h.kind];
  b[HDR.signatureAlg] = SIG_ALG_CODE[h.signatureAlg];
  b[HDR.buildIdLength] = h.buildId.length;
  b.writeBigUInt64LE(BigInt.asUintN(64, h.loadAddress), HDR.loadAddress);
  b.writeBigUInt64LE(BigInt(h.entryOffset), HDR.entryOffset);
  b.writeBigUInt64LE(BigInt(h.coreSize), HDR.coreSize);
  b.writeBigUInt64LE(BigInt(h.perCpuSize), HDR.perCpuSize);
  b.writeBigUInt64LE(BigInt(h.loadSize), HDR.loadSize);
  b.writeBigUInt64LE(BigInt.asUintN(64, h.featureMask), HDR.featureMask);
  b.writeBigUInt64LE(BigInt(h.imageLength), HDR.imageLength);
  b.writeUInt32LE(h.signatureLength, HDR.signatureLength);
  h.buildId.copy(b, HDR.buildId);
  h.imageSha256.copy(b, HDR.imageSha256);
  h.imageSha384.copy(b, HDR.imageSha384);
  h.signerKeyId.copy(b, HDR.signerKeyId);
  return b;
}

function requireZero(buf: Buffer, from: number, to: number, field: string): void {
  for (let i = from; i < to; i++) if (buf[i] !== 0) throw new ImageError(`image: ${field} at offset ${off(i)} is 0x${buf[i]!.toString(16)}, must be zero`);
}

/**
 * Parses and bound-checks the header. `containerLength` (the file size) is checked against the
 * lengths the header declares; pass undefined when unknown.
 */
export function parseHeader(buf: Buffer, opts: { containerLength?: number; maxImageLength?: number; expectedArch?: ImageArch } = {}): ImageHeader {
  if (buf.length < IMAGE_HEADER_SIZE) {
    if (buf.length < IMAGE_MAGIC.length || !buf.subarray(0, IMAGE_MAGIC.length).equals(IMAGE_MAGIC)) checkMagic(buf);
    throw new ImageError(`image: truncated header: ${buf.length} bytes, the header needs ${IMAGE_HEADER_SIZE} (ends at offset ${off(IMAGE_HEADER_SIZE)})`);
  }
  checkMagic(buf);
  const formatVersion = buf.readUInt16LE(HDR.formatVersion);
  if (formatVersion !== IMAGE_FORMAT_VERSION) throw new ImageError(`image: unsupported format version ${formatVersion} at offset ${off(HDR.formatVersion)} (this reader knows ${IMAGE_FORMAT_VERSION})`);
  const headerSize = buf.readUInt16LE(HDR.headerSize);
  if (headerSize !== IMAGE_HEADER_SIZE) throw new ImageError(`image: header size ${headerSize} at offset ${off(HDR.headerSize)}, version 1 headers are ${IMAGE_HEADER_SIZE} bytes`);
  const arch = ARCH_BY_CODE.get(buf[HDR.arch]!);
  if (!arch) throw new ImageError(`image: unknown target arch code ${buf[HDR.arch]} at offset ${off(HDR.arch)} (1 intel-vmx, 2 amd-svm, 3 hygon)`);
  if (opts.expectedArch && arch !== opts.expectedArch) throw new ImageError(`image: built for ${arch} (arch at offset ${off(HDR.arch)}), this platform is ${opts.expectedArch}`);
  const kind = KIND_BY_CODE.get(buf[HDR.kind]!);
  if (!kind) throw new ImageError(`image: unknown image kind ${buf[HDR.kind]} at offset ${off(HDR.kind)} (1 flat, 2 raw)`);
  const signatureAlg = SIG_BY_CODE.get(buf[HDR.signatureAlg]!);
  if (!signatureAlg) throw new ImageError(`image: unknown signature algorithm ${buf[HDR.signatureAlg]} at offset ${off(HDR.signatureAlg)}`);
  const buildIdLength = buf[HDR.buildIdLength]!;
  if (buildIdLength > MAX_BUILD_ID) throw new ImageError(`image: build id length ${buildIdLength} at offset ${off(HDR.buildIdLength)} exceeds ${MAX_BUILD_ID}`);
  requireZero(buf, HDR.buildId + buildIdLength, HDR.buildId + MAX_BUILD_ID, 'build id padding');
  requireZero(buf, HDR.reserved1, HDR.reserved1 + 4, 'reserved field');
  requireZero(buf, HDR.reserved2, IMAGE_HEADER_SIZE, 'reserved field');

  const entryOffset = readSize(buf, HDR.entryOffset, 'entry offset');
  const coreSize = readSize(buf, HDR.coreSize, 'core size');
  const perCpuSize = readSize(buf, HDR.perCpuSize, 'per-CPU size');
  const loadSize = readSize(buf, HDR.loadSize, 'load size');
  const imageLength = readSize(buf, HDR.imageLength, 'image length');
  const signatureLength = buf.readUInt32LE(HDR.signatureLength);
  const maxImage = opts.maxImageLength ?? DEFAULT_MAX_IMAGE_LENGTH;
  if (imageLength > maxImage) throw new ImageError(`image: image length ${imageLength} at offset ${off(HDR.imageLength)} exceeds the configured maximum ${maxImage}`);
  if (imageLength === 0) throw new ImageError(`image: image length at offset ${off(HDR.imageLength)} is 0`);
  if (kind === 'flat') {
    if (loadSize < imageLength) throw new ImageError(`image: load size ${loadSize} at offset ${off(HDR.loadSize)} is smaller than the image length ${imageLength}`);
    if (entryOffset >= loadSize) throw new ImageError(`image: entry offset ${off(entryOffset)} at offset ${off(HDR.entryOffset)} is outside the load size ${loadSize}`);
    if (coreSize > loadSize) throw new ImageError(`image: core size ${coreSize} at offset ${off(HDR.coreSize)} exceeds the load size ${loadSize}`);
  }
  const signerKeyId = Buffer.from(buf.subarray(HDR.signerKeyId, HDR.signerKeyId + 32));
  if (signatureAlg === 'none') {
    if (signatureLength !== 0) throw new ImageError(`image: unsigned image with signature length ${signatureLength} at offset ${off(HDR.signatureLength)}`);
    requireZero(buf, HDR.signerKeyId, HDR.signerKeyId + 32, 'signer key id of an unsigned image');
  } else if (signatureLength < 2 + SIG_RAW_LENGTH[signatureAlg] || signatureLength > MAX_SIGNATURE_BLOCK) {
    throw new ImageError(`image: signature length ${signatureLength} at offset ${off(HDR.signatureLength)} is impossible for ${signatureAlg} (${2 + SIG_RAW_LENGTH[signatureAlg]}..${MAX_SIGNATURE_BLOCK})`);
  }
  const imageEnd = IMAGE_HEADER_SIZE + imageLength;
  const total = imageEnd + signatureLength;
  if (opts.containerLength !== undefined) {
    if (opts.containerLength < imageEnd) throw new ImageError(`image: truncated: the file is ${opts.containerLength} bytes, the image length at offset ${off(HDR.imageLength)} says the image ends at offset ${off(imageEnd)}`);
    if (opts.containerLength < total) throw new ImageError(`image: truncated: the file is ${opts.containerLength} bytes, the signature block should end at offset ${off(total)}`);
    if (opts.containerLength > total) throw new ImageError(`image: ${opts.containerLength - total} unexpected bytes after the container's end at offset ${off(total)}`);
  }
  return {
    formatVersion,
    headerSize,
    arch,
    kind,
    loadAddress: buf.readBigUInt64LE(HDR.loadAddress),
    entryOffset,
    coreSize,
    perCpuSize,
    loadSize,
    featureMask: buf.readBigUInt64LE(HDR.featureMask),
    buildId: Buffer.from(buf.subarray(HDR.buildId, HDR.buildId + buildIdLength)),
    imageLength,
    signatureAlg,
    signatureLength,
    imageSha256: Buffer.from(buf.subarray(HDR.imageSha256, HDR.imageSha256 + 32)),
    imageSha384: Buffer.from(buf.subarray(HDR.imageSha384, HDR.imageSha384 + 48)),
    signerKeyId,
  };
}

function checkMagic(buf: Buffer): void {
  const n = Math.min(buf.length, IMAGE_MAGIC.length);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== IMAGE_MAGIC[i]) throw new ImageError(`image: bad magic at offset ${off(i)}: expected "HEIMG\\0\\0\\0" (${hex(IMAGE_MAGIC)}), got ${hex(buf.subarray(0, IMAGE_MAGIC.length))}`);
  }
  if (buf.length < IMAGE_MAGIC.length) throw new ImageError(`image: truncated header: ${buf.length} bytes, the header needs ${IMAGE_HEADER_SIZE} (ends at offset ${off(IMAGE_HEADER_SIZE)})`);
}

// ---- keys and signatures ----

export type ImageSigningKey =
  | { alg: 'ecdsa-p256-sha256' | 'ecdsa-p384-sha384'; key: KeyObject; spki: Buffer }
  | { alg: 'sm2-sm3'; key: Sm2PrivateKey; spki: Buffer };

export type ImagePublicKey = { alg: 'ecdsa-p256-sha256' | 'ecdsa-p384-sha384'; key: KeyObject; spki: Buffer } | { alg: 'sm2-sm3'; key: Sm2PublicKey; spki: Buffer };

function ecAlg(curve: string | undefined, what: string): 'ecdsa-p256-sha256' | 'ecdsa-p384-sha384' | 'sm2-sm3' {
  if (curve === 'prime256v1' || curve === 'P-256') return 'ecdsa-p256-sha256';
  if (curve === 'secp384r1' || curve === 'P-384') return 'ecdsa-p384-sha384';
  if (curve === 'SM2') return 'sm2-sm3';
  throw new ImageError(`${what}: curve ${curve ?? '(none)'} is not supported (P-256, P-384, SM2)`);
}

/** A signing key from PEM (PKCS#8 or SEC1): ECDSA P-256/P-384 or SM2 (signed with the default distinguishing ID). */
export function signingKeyFromPem(pem: string, what = 'signing key'): ImageSigningKey {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new ImageError(`${what}: not a PEM private key (${(e as Error).message})`);
  }
  // OpenSSL 3 loads SM2-curve PEM keys as its own key type, which node does not name
  if (key.asymmetricKeyType === undefined || key.asymmetricKeyDetails?.namedCurve === 'SM2') {
    const sm2 = sm2FromPem(pem, what);
    return { alg: 'sm2-sm3', key: sm2, spki: sm2PublicKeyToSpki(sm2.publicKey) };
  }
  if (key.asymmetricKeyType !== 'ec') throw new ImageError(`${what}: ${key.asymmetricKeyType} keys are not supported (EC P-256, P-384, SM2)`);
  const alg = ecAlg(key.asymmetricKeyDetails?.namedCurve, what);
  if (alg === 'sm2-sm3') {
    throw new ImageError(`${what}: unreachable SM2 branch`);
  }
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  return { alg, key, spki };
}

/** A verification key from PEM (public or private) or a node KeyObject. */
export function publicKeyFrom(input: string | KeyObject, what = 'trusted key'): ImagePublicKey {
  let key: KeyObject;
  try {
    key = typeof input === 'string' ? createPublicKey(input) : input.type === 'private' ? createPublicKey(input) : input;
  } catch (e) {
    throw new ImageError(`${what}: not a PEM key (${(e as Error).message})`);
  }
  if (key.asymmetricKeyType === undefined && typeof input === 'string' && input.includes('PRIVATE KEY')) return publicKeyFromSpki(sm2PublicKeyToSpki(sm2FromPem(input, what).publicKey), what);
  const spki = key.export({ type: 'spki', format: 'der' });
  return publicKeyFromSpki(spki, what);
}

export function publicKeyFromSpki(spki: Buffer, what = 'signer key'): ImagePublicKey {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch (e) {
    throw new ImageError(`${what}: SubjectPublicKeyInfo does not parse (${(e as Error).message})`);
  }
  if (key.asymmetricKeyType === undefined || key.asymmetricKeyDetails?.namedCurve === 'SM2') {
    try {
      return { alg: 'sm2-sm3', key: sm2PublicKeyFromSpki(spki), spki };
    } catch (e) {
      throw new ImageError(`${what}: not an SM2 key (${(e as Error).message})`);
    }
  }
  if (key.asymmetricKeyType !== 'ec') throw new ImageError(`${what}: ${key.asymmetricKeyType} keys are not supported`);
  const alg = ecAlg(key.asymmetricKeyDetails?.namedCurve, what);
  if (alg === 'sm2-sm3') throw new ImageError(`${what}: unreachable SM2 branch`);
  return { alg, key, spki };
}

function sm2FromPem(pem: string, what: string): Sm2PrivateKey {
  try {
    return sm2PrivateKeyFromPem(pem);
  } catch (e) {
    throw new ImageError(`${what}: not an SM2 private key (${(e as Error).message})`);
  }
}

export const keyIdOf = (spki: Buffer): Buffer => createHash('sha256').update(spki).digest();

function signBytes(k: ImageSigningKey, msg: Buffer): Buffer {
  if (k.alg === 'sm2-sm3') return sm2SignatureToRaw(sm2Sign(k.key, msg));
  return nodeSign(k.alg === 'ecdsa-p256-sha256' ? 'sha256' : 'sha384', msg, { key: k.key, dsaEncoding: 'ieee-p1363' });
}

function verifyBytes(k: ImagePublicKey, msg: Buffer, raw: Buffer): boolean {
  if (k.alg === 'sm2-sm3') return sm2Verify(k.key, msg, sm2SignatureFromRaw(raw));
  return nodeVerify(k.alg === 'ecdsa-p256-sha256' ? 'sha256' : 'sha384', msg, { key: k.key, dsaEncoding: 'ieee-p1363' }, raw);
}

// ---- building ----

/** Builds a container around image bytes (firmware-tools). Signing is optional. */
export function buildContainer(image: Buffer, fields: ImageFields, signer?: ImageSigningKey): Buffer {
  if (image.length === 0) throw new ImageError('image: refusing to build a container around an empty image');
  const alg: SignatureAlg = signer?.alg ?? 'none';
  const signatureLength = signer ? 2 + signer.spki.length + SIG_RAW_LENGTH[signer.alg] : 0;
  const header = encodeHeader({
    ...fields,
    imageLength: image.length,
    signatureAlg: alg,
    signatureLength,
    imageSha256: createHash('sha256').update(image).digest(),
    imageSha384: createHash('sha384').update(image).digest(),
    signerKeyId: signer ? keyIdOf(signer.spki) : Buffer.alloc(32),
  });
  // validate what we produce with the same reader a loader uses
  parseHeader(header, { containerLength: IMAGE_HEADER_SIZE + image.length + signatureLength, maxImageLength: Number.MAX_SAFE_INTEGER });
  if (!signer) return Buffer.concat([header, image]);
  const len = Buffer.alloc(2);
  len.writeUInt16LE(signer.spki.length);
  return Buffer.concat([header, image, len, signer.spki, signBytes(signer, header)]);
}

/** Replaces (or adds) the signature of an existing, intact container. */
export function resignContainer(container: Buffer, signer: ImageSigningKey | undefined): Buffer {
  // the image must still match its header digests (and any old signature) before we vouch for it
  const h = verifyContainerBytes(container, { maxImageLength: Number.MAX_SAFE_INTEGER, banks: ['sha256', 'sha384'] }).header;
  const image = container.subarray(IMAGE_HEADER_SIZE, IMAGE_HEADER_SIZE + h.imageLength);
  return buildContainer(image, h, signer);
}

// ---- verifying (one pass) ----

/** Digests of the same bytes in several banks, fed once per chunk. */
export class MultiDigest {
  private readonly hashes = new Map<HashAlgName, Hash>();
  constructor(banks: Iterable<HashAlgName>) {
    for (const b of banks) {
      const alg = hashAlgByName(b);
      if (!alg) throw new ImageError(`image: unknown hash bank "${b}"`);
      if (!this.hashes.has(alg.name)) this.hashes.set(alg.name, createHash(alg.nodeName));
    }
  }
  update(chunk: Uint8Array): void {
    for (const h of this.hashes.values()) h.update(chunk);
  }
  digest(): Partial<Record<HashAlgName, Buffer>> {
    const out: Partial<Record<HashAlgName, Buffer>> = {};
    for (const [k, h] of this.hashes) out[k] = h.digest();
    return out;
  }
}

interface Prechecked {
  header: ImageHeader;
  headerBytes: Buffer;
  signer?: SignerInfo;
  /** Banks to hash: the requested ones, plus sha256 when neither header digest is among them. */
  banks: HashAlgName[];
}

function checkSignature(header: ImageHeader, headerBytes: Buffer, block: Buffer | undefined, opts: VerifyOptions): SignerInfo | undefined {
  const sigOff = IMAGE_HEADER_SIZE + header.imageLength;
  if (header.signatureAlg === 'none') {
    if (opts.requireSignature || (opts.trustedKeys && opts.trustedKeys.length > 0))
      throw new ImageError(`image: unsigned (signature algorithm at offset ${off(HDR.signatureAlg)} is none), but a signature is required`, EXIT.VERIFY_FAILED);
    return undefined;
  }
  if (!block || block.length !== header.signatureLength) throw new ImageError(`image: truncated signature block at offset ${off(sigOff)}`);
  const spkiLen = block.readUInt16LE(0);
  const rawLen = SIG_RAW_LENGTH[header.signatureAlg];
  if (2 + spkiLen + rawLen !== block.length)
    throw new ImageError(`image: signer key length ${spkiLen} at offset ${off(sigOff)} does not fit the ${block.length}-byte signature block (${header.signatureAlg} signatures are ${rawLen} bytes)`);
  const spki = Buffer.from(block.subarray(2, 2 + spkiLen));
  const raw = block.subarray(2 + spkiLen);
  const keyId = keyIdOf(spki);
  if (!keyId.equals(header.signerKeyId))
    throw new ImageError(`image: signer key at offset ${off(sigOff + 2)} has id ${hex(keyId)}, the header's signer key id at offset ${off(HDR.signerKeyId)} is ${hex(header.signerKeyId)}`);
  const pub = publicKeyFromSpki(spki, `image: signer key at offset ${off(sigOff + 2)}`);
  if (pub.alg !== header.signatureAlg) throw new ImageError(`image: signer key at offset ${off(sigOff + 2)} is ${pub.alg}, the header says ${header.signatureAlg}`);
  if (opts.trustedKeys && opts.trustedKeys.length > 0) {
    const trusted = opts.trustedKeys.map((k, i) => keyIdOf(publicKeyFrom(k, `trusted key ${i + 1}`).spki));
    if (!trusted.some((t) => t.equals(keyId))) throw new ImageError(`image: signed by key ${hex(keyId)}, which is not one of the ${trusted.length} trusted keys`, EXIT.VERIFY_FAILED);
  }
  let ok = false;
  try {
    ok = verifyBytes(pub, headerBytes, Buffer.from(raw));
  } catch {
    ok = false;
  }
  if (!ok) throw new ImageError(`image: bad ${header.signatureAlg} signature at offset ${off(sigOff + 2 + spkiLen)} over the header (bytes 0x0..${off(IMAGE_HEADER_SIZE)})`, EXIT.VERIFY_FAILED);
  return { alg: header.signatureAlg, keyId, spki };
}

function precheck(headerBytes: Buffer, containerLength: number, readSig: (h: ImageHeader) => Buffer | undefined, opts: VerifyOptions): Prechecked {
  const header = parseHeader(headerBytes, { containerLength, ...(opts.maxImageLength !== undefined ? { maxImageLength: opts.maxImageLength } : {}), ...(opts.expectedArch ? { expectedArch: opts.expectedArch } : {}) });
  // The signature only needs the header: check it before hashing a large image.
  const signer = checkSignature(header, headerBytes, header.signatureAlg === 'none' ? undefined : readSig(header), opts);
  const banks = new Set<HashAlgName>(opts.banks ?? []);
  if (!banks.has('sha256') && !banks.has('sha384')) banks.add('sha256');
  return { header, headerBytes, ...(signer ? { signer } : {}), banks: [...banks] };
}

function finish(p: Prechecked, all: Partial<Record<HashAlgName, Buffer>>, containerLength: number, opts: VerifyOptions): VerifiedImage {
  for (const [bank, field, at] of [['sha256', p.header.imageSha256, HDR.imageSha256], ['sha384', p.header.imageSha384, HDR.imageSha384]] as const) {
    const got = all[bank];
    if (got && !got.equals(field))
      throw new ImageError(`image: image bytes (offset ${off(IMAGE_HEADER_SIZE)}..${off(IMAGE_HEADER_SIZE + p.header.imageLength)}) have ${bank} ${hex(got)}, the header at offset ${off(at)} says ${hex(field)}`);
  }
  const wanted = new Set(opts.banks ?? []);
  const imageDigests: Partial<Record<HashAlgName, Buffer>> = {};
  for (const [k, v] of Object.entries(all) as [HashAlgName, Buffer][]) if (wanted.has(k) || wanted.size === 0) imageDigests[k] = v;
  return {
    header: p.header,
    headerBytes: p.headerBytes,
    imageDigests,
    ...(p.signer ? { signer: p.signer } : {}),
    containerLength,
    id: createHash('sha256').update(p.headerBytes).digest('hex'),
  };
}

/** Verifies a container held in memory (the same checks as verifyContainerFile). */
export function verifyContainerBytes(buf: Buffer, opts: VerifyOptions = {}): VerifiedImage {
  const headerBytes = Buffer.from(buf.subarray(0, IMAGE_HEADER_SIZE));
  const p = precheck(headerBytes, buf.length, (h) => buf.subarray(IMAGE_HEADER_SIZE + h.imageLength), opts);
  const d = new MultiDigest(p.banks);
  d.update(buf.subarray(IMAGE_HEADER_SIZE, IMAGE_HEADER_SIZE + p.header.imageLength));
  return finish(p, d.digest(), buf.length, opts);
}

/**
 * Verifies a container file in one pass with bounded memory: header and signature block first
 * (small reads), then the image in chunks, every bank's hash fed from the same chunk while the
 * next chunk is being read.
 */
export async function verifyContainerFile(path: string, opts: VerifyOptions = {}): Promise<VerifiedImage> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file (ENOENT)' : code === 'EACCES' || code === 'EPERM' ? `permission denied (${code})` : (code ?? (e as Error).message);
    throw new ImageError(`image: cannot open ${path}: ${why}`, 3);
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new ImageError(`image ${path}: a directory, expected a file`);
    const size = st.size;
    const headerBytes = Buffer.alloc(Math.min(IMAGE_HEADER_SIZE, size));
    await readFully(fh, headerBytes, 0);
    let sigBlock: Buffer | undefined;
    const header = parseHeader(headerBytes, { containerLength: size, ...(opts.maxImageLength !== undefined ? { maxImageLength: opts.maxImageLength } : {}), ...(opts.expectedArch ? { expectedArch: opts.expectedArch } : {}) });
    if (header.signatureLength > 0) {
      sigBlock = Buffer.alloc(header.signatureLength);
      await readFully(fh, sigBlock, IMAGE_HEADER_SIZE + header.imageLength);
    }
    const p = precheck(headerBytes, size, () => sigBlock, opts);
    const chunk = Math.max(64 * 1024, opts.chunkSize ?? DEFAULT_CHUNK_SIZE);
    const parallel = (opts.parallel ?? (p.header.imageLength >= PARALLEL_MIN_LENGTH && availableParallelism() > 1)) && p.banks.length > 1;
    const digests = parallel ? await hashParallel(fh, p.header.imageLength, p.banks, chunk, opts.onProgress) : await hashSequential(fh, p.header.imageLength, p.banks, chunk, opts.onProgress);
    return finish(p, digests, size, opts);
  } catch (e) {
    // The refusal says where in the container; this says which container.
    if (e instanceof ImageError && !e.message.includes(path)) e.message += ` (file ${path})`;
    throw e;
  } finally {
    await fh.close();
  }
}

/** One thread: the next chunk is read while the current one is hashed for every bank. */
async function hashSequential(fh: FileHandle, length: number, banks: HashAlgName[], chunk: number, onProgress?: (done: number, total: number) => void): Promise<Partial<Record<HashAlgName, Buffer>>> {
  const digests = new MultiDigest(banks);
  const bufs = [Buffer.allocUnsafe(chunk), Buffer.allocUnsafe(chunk)] as const;
  let pos = IMAGE_HEADER_SIZE;
  let remaining = length;
  let which = 0;
  let pending = fh.read(bufs[0], 0, Math.min(chunk, remaining), pos);
  while (remaining > 0) {
    const { bytesRead } = await pending;
    if (bytesRead === 0) throw new ImageError(`image: truncated while reading: file ended at offset ${off(pos)}`);
    const cur = bufs[which]!;
    pos += bytesRead;
    remaining -= bytesRead;
    which ^= 1;
    if (remaining > 0) pending = fh.read(bufs[which]!, 0, Math.min(chunk, remaining), pos);
    digests.update(cur.subarray(0, bytesRead));
    onProgress?.(length - remaining, length);
  }
  return digests.digest();
}

/** One bank per core (ParallelMultiDigest), chunks read into a shared ring. */
async function hashParallel(fh: FileHandle, length: number, banks: HashAlgName[], chunk: number, onProgress?: (done: number, total: number) => void): Promise<Partial<Record<HashAlgName, Buffer>>> {
  const pd = new ParallelMultiDigest(banks, chunk);
  try {
    let pos = IMAGE_HEADER_SIZE;
    let remaining = length;
    while (remaining > 0) {
      const { slot, view } = await pd.acquire();
      const { bytesRead } = await fh.read(view, 0, Math.min(chunk, remaining), pos);
      if (bytesRead === 0) throw new ImageError(`image: truncated while reading: file ended at offset ${off(pos)}`);
      pos += bytesRead;
      remaining -= bytesRead;
      pd.submit(slot, bytesRead);
      onProgress?.(length - remaining, length);
    }
    return await pd.digest();
  } finally {
    await pd.close();
  }
}

async function readFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw new ImageError(`image: truncated: file ended at offset ${off(position + done)}`);
    done += bytesRead;
  }
}

/** Header fields as JSON-friendly values (for `--json` output and reference values). */
export function headerToJson(h: ImageHeader): Record<string, unknown> {
  return {
    formatVersion: h.formatVersion,
    arch: h.arch,
    kind: h.kind,
    loadAddress: `0x${h.loadAddress.toString(16)}`,
    entryOffset: h.entryOffset,
    coreSize: h.coreSize,
    perCpuSize: h.perCpuSize,
    loadSize: h.loadSize,
    featureMask: `0x${h.featureMask.toString(16)}`,
    buildId: hex(h.buildId),
    imageLength: h.imageLength,
    imageSha256: hex(h.imageSha256),
    imageSha384: hex(h.imageSha384),
    signatureAlg: h.signatureAlg,
    signerKeyId: h.signatureAlg === 'none' ? null : hex(h.signerKeyId),
  };
}
