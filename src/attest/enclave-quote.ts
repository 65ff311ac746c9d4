/**
 * Enclave quotes (CONTRACT-12): the hypervisor's QUOTE hypercall turns an enclave REPORT whose MAC
 * it checked into 496 bytes signed by the hypervisor attestation key (HAK, Ed25519):
 *
 *   off size field
 *     0    4 magic "HEQ1"
 *     4    2 version = 1
 *     6    2 signature algorithm = 1 (Ed25519, RFC 8032, pure)
 *     8    4 HAK PCR index
 *    12    4 platform flags: bit 0 = DMA protection on (an IOMMU the hypervisor owns translated
 *             every device's DMA when the quote was made); other bits 0
 *    16  384 SGX REPORT body (the MAC-checked bytes 0..384 of the REPORT)
 *   400   32 HAK public key
 *   432   64 Ed25519 signature over bytes [0, 432)
 *
 * The HAK is trusted only through the TPM: the hypervisor extends
 * H("hyperenclave-hak:ed25519:" ‖ hex(HAK)) into the HAK PCR, which the AK-signed quote covers.
 * This module parses, checks the signature with the key the quote carries (whose binding the
 * verifier checks separately), and computes the PCR value that one HAK event yields.
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { HAK_EVENT_PREFIX, HYPERVISOR_EXIT_EVENT, LAYOUT, QUOTE, QUOTE_FLAGS, QUOTE_MAGIC, QUOTE_SIZE, REPORT_SIZE, hakEventData, parseReport, readRecord } from '../hypervisor/abi.js';

export { HAK_EVENT_PREFIX, HYPERVISOR_EXIT_EVENT, hakEventData };
export const ENCLAVE_QUOTE_SIZE = QUOTE_SIZE;
export const ENCLAVE_QUOTE_MAGIC = QUOTE_MAGIC;
export const ENCLAVE_QUOTE_VERSION = QUOTE.VERSION;
export const ENCLAVE_QUOTE_SIG_ED25519 = QUOTE.SIG_ED25519;
export const QUOTE_FLAG_DMA_PROTECTED = QUOTE_FLAGS.DMA_PROTECTED;
/** The HAK PCR when the policy names none (as HyperEnclave uses PCR 13). */
export const DEFAULT_HAK_PCR = 13;

/*
 * HYPERVISOR_EXIT_EVENT (re-exported above, from the ABI): the event the hypervisor extends into
 * its PCR at DISABLE. After it the host holds every TPM locality again, so evidence whose
 * hypervisor PCR shows it is not from an uninterrupted run of the measured hypervisor.
 */

/** Fields of the SGX REPORT body (bytes 0..384 of a REPORT). */
export interface ReportBody {
  cpuSvn: Buffer;
  miscSelect: number;
  attributes: bigint;
  xfrm: bigint;
  mrenclave: Buffer;
  mrsigner: Buffer;
  isvProdId: number;
  isvSvn: number;
  reportData: Buffer;
}

export interface EnclaveQuote {
  magic: string;
  version: number;
  sigAlg: number;
  hakPcr: number;
  /** Platform flags the HAK signed (bit 0: DMA protection on). */
  flags: number;
  dmaProtected: boolean;
  body: ReportBody;
  hakPublic: Buffer;
  signature: Buffer;
  /** Bytes [0, 432): what the signature covers. */
  signed: Buffer;
}

/** The REPORT body (bytes 0..384 of a REPORT) through src/hypervisor's REPORT parser (SGX layout). */
export function parseReportBody(b: Buffer): ReportBody {
  if (b.length < 384) throw new RangeError(`REPORT body: ${b.length} bytes, need 384`);
  const r = parseReport(Buffer.concat([b.subarray(0, 384), Buffer.alloc(REPORT_SIZE - 384)]));
  return { cpuSvn: r.cpuSvn, miscSelect: r.miscSelect, attributes: r.attributes, xfrm: r.xfrm, mrenclave: r.mrenclave, mrsigner: r.mrsigner, isvProdId: r.isvProdId, isvSvn: r.isvSvn, reportData: r.reportData };
}

/** Parses the 496-byte layout (LAYOUT.he_quote); throws a one-line error naming the field and offset. */
export function parseEnclaveQuote(q: Buffer): EnclaveQuote {
  if (q.length !== ENCLAVE_QUOTE_SIZE) throw new RangeError(`enclave quote: ${q.length} bytes, expected exactly ${ENCLAVE_QUOTE_SIZE}`);
  const F = LAYOUT.he_quote.fields;
  const r = readRecord(LAYOUT.he_quote, q, 'enclave quote');
  const magic = r.magic.toString('latin1');
  if (magic !== ENCLAVE_QUOTE_MAGIC) throw new RangeError(`enclave quote: byte ${F.magic.offset}: magic ${JSON.stringify(magic)} is not "${ENCLAVE_QUOTE_MAGIC}"`);
  if (r.version !== ENCLAVE_QUOTE_VERSION) throw new RangeError(`enclave quote: byte ${F.version.offset}: version ${r.version}, expected ${ENCLAVE_QUOTE_VERSION}`);
  if (r.sig_alg !== ENCLAVE_QUOTE_SIG_ED25519)
    throw new RangeError(`enclave quote: byte ${F.sig_alg.offset}: signature algorithm ${r.sig_alg}, expected ${ENCLAVE_QUOTE_SIG_ED25519} (Ed25519)`);
  if (r.hak_pcr > 23) throw new RangeError(`enclave quote: byte ${F.hak_pcr.offset}: HAK PCR index ${r.hak_pcr} out of range 0-23`);
  if (r.flags & ~QUOTE_FLAG_DMA_PROTECTED)
    throw new RangeError(`enclave quote: byte ${F.flags.offset}: flags 0x${r.flags.toString(16)} has bits other than DMA_PROTECTED (0x${QUOTE_FLAG_DMA_PROTECTED.toString(16)})`);
  return {
    magic,
    version: r.version,
    sigAlg: r.sig_alg,
    hakPcr: r.hak_pcr,
    flags: r.flags,
    dmaProtected: (r.flags & QUOTE_FLAG_DMA_PROTECTED) !== 0,
    body: parseReportBody(r.body),
    hakPublic: r.hak,
    signature: r.signature,
    signed: Buffer.from(q.subarray(0, QUOTE.SIGNED_BYTES)),
  };
}

/** Ed25519 public key object from 32 raw bytes (RFC 8410 SPKI wrapping). */
export function ed25519PublicKey(raw: Buffer): KeyObject {
  if (raw.length !== 32) throw new RangeError(`Ed25519 public key: ${raw.length} bytes, expected 32`);
  return createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]), format: 'der', type: 'spki' });
}

/** True when the quote's signature verifies with the HAK it carries (RFC 8032 pure Ed25519). */
export function enclaveQuoteSignatureOk(q: EnclaveQuote): boolean {
  try {
    return cryptoVerify(null, q.signed, ed25519PublicKey(q.hakPublic), q.signature);
  } catch {
    return false;
  }
}

/** The value a PCR of `bank` holds after exactly one extend with H_bank(hakEventData). */
export function hakPcrValue(nodeHash: string, hakPublic: Buffer): Buffer {
  const d = createHash(nodeHash).update(hakEventData(hakPublic)).digest();
  return createHash(nodeHash).update(Buffer.concat([Buffer.alloc(d.length), d])).digest();
}

/** REPORTDATA an enclave must carry for this challenge: SHA-256(nonce ‖ userData) ‖ 32 zero bytes. */
export function expectedReportData(nonce: Buffer, userData: Buffer): Buffer {
  return Buffer.concat([createHash('sha256').update(nonce).update(userData).digest(), Buffer.alloc(32)]);
}

/** Decodes "hyperenclave-hak:ed25519:<64 hex>" event data; undefined when it is not one. */
export function hakFromEventData(data: Buffer): Buffer | undefined {
  const s = data.toString('latin1');
  const m = /^hyperenclave-hak:ed25519:([0-9a-f]{64})$/.exec(s);
  return m ? Buffer.from(m[1]!, 'hex') : undefined;
}
