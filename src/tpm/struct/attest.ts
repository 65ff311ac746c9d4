/** TPM 2.0 structures (Part 2): TPMS_ATTEST and TPMT_SIGNATURE. */
import { TPM_ALG } from '../alg.js';
import { TPM_GENERATED_VALUE, TPM_ST } from '../constants.js';
import { TpmReader, TpmWriter } from '../marshal.js';
import { MAX, PcrSelection, TaggedHash, marshalPcrSelectionList, marshalTaggedHash, readPcrSelectionList, readTaggedHash } from './basic.js';

// ---------------------------------------------------------------- attestation

export interface ClockInfo {
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
}
export function readClockInfo(r: TpmReader): ClockInfo {
  return {
    clock: r.u64('TPMS_CLOCK_INFO.clock'),
    resetCount: r.u32('TPMS_CLOCK_INFO.resetCount'),
    restartCount: r.u32('TPMS_CLOCK_INFO.restartCount'),
    safe: r.u8('TPMS_CLOCK_INFO.safe') !== 0,
  };
}
function marshalClockInfo(w: TpmWriter, c: ClockInfo): void {
  w.u64(c.clock).u32(c.resetCount).u32(c.restartCount).u8(c.safe ? 1 : 0);
}

export type Attested =
  | { kind: 'quote'; pcrSelect: PcrSelection[]; pcrDigest: Buffer }
  | { kind: 'certify'; name: Buffer; qualifiedName: Buffer }
  | { kind: 'creation'; objectName: Buffer; creationHash: Buffer }
  | { kind: 'time'; time: bigint; clockInfo: ClockInfo; firmwareVersion: bigint }
  | { kind: 'sessionAudit'; exclusiveSession: boolean; sessionDigest: Buffer }
  | { kind: 'commandAudit'; auditCounter: bigint; digestAlg: number; auditDigest: Buffer; commandDigest: Buffer }
  | { kind: 'nv'; indexName: Buffer; offset: number; nvContents: Buffer }
  | { kind: 'nvDigest'; indexName: Buffer; nvDigest: Buffer };

const ATTEST_TAG: Record<Attested['kind'], number> = {
  quote: TPM_ST.ATTEST_QUOTE,
  certify: TPM_ST.ATTEST_CERTIFY,
  creation: TPM_ST.ATTEST_CREATION,
  time: TPM_ST.ATTEST_TIME,
  sessionAudit: TPM_ST.ATTEST_SESSION_AUDIT,
  commandAudit: TPM_ST.ATTEST_COMMAND_AUDIT,
  nv: TPM_ST.ATTEST_NV,
  nvDigest: TPM_ST.ATTEST_NV_DIGEST,
};

export interface TpmsAttest {
  magic: number;
  type: number;
  qualifiedSigner: Buffer;
  extraData: Buffer;
  clockInfo: ClockInfo;
  firmwareVersion: bigint;
  attested: Attested;
}

export function marshalAttest(w: TpmWriter, a: TpmsAttest): void {
  w.u32(a.magic).u16(ATTEST_TAG[a.attested.kind]).tpm2b(a.qualifiedSigner).tpm2b(a.extraData);
  marshalClockInfo(w, a.clockInfo);
  w.u64(a.firmwareVersion);
  const t = a.attested;
  switch (t.kind) {
    case 'quote':
      marshalPcrSelectionList(w, t.pcrSelect);
      w.tpm2b(t.pcrDigest);
      return;
    case 'certify':
      w.tpm2b(t.name).tpm2b(t.qualifiedName);
      return;
    case 'creation':
      w.tpm2b(t.objectName).tpm2b(t.creationHash);
      return;
    case 'time':
      w.u64(t.time);
      marshalClockInfo(w, t.clockInfo);
      w.u64(t.firmwareVersion);
      return;
    case 'sessionAudit':
      w.u8(t.exclusiveSession ? 1 : 0).tpm2b(t.sessionDigest);
      return;
    case 'commandAudit':
      w.u64(t.auditCounter).u16(t.digestAlg).tpm2b(t.auditDigest).tpm2b(t.commandDigest);
      return;
    case 'nv':
      w.tpm2b(t.indexName).u16(t.offset).tpm2b(t.nvContents);
      return;
    case 'nvDigest':
      w.tpm2b(t.indexName).tpm2b(t.nvDigest);
      return;
  }
}

export function readAttest(r: TpmReader): TpmsAttest {
  const at = r.offset;
  const magic = r.u32('TPMS_ATTEST.magic');
  if (magic !== TPM_GENERATED_VALUE) r.fail('TPMS_ATTEST.magic', `0x${magic.toString(16)} is not TPM_GENERATED_VALUE 0xff544347`, at);
  const tat = r.offset;
  const type = r.u16('TPMS_ATTEST.type');
  const qualifiedSigner = r.tpm2b('TPMS_ATTEST.qualifiedSigner', MAX.NAME);
  const extraData = r.tpm2b('TPMS_ATTEST.extraData', MAX.DATA);
  const clockInfo = readClockInfo(r);
  const firmwareVersion = r.u64('TPMS_ATTEST.firmwareVersion');
  let attested: Attested;
  switch (type) {
    case TPM_ST.ATTEST_QUOTE:
      attested = { kind: 'quote', pcrSelect: readPcrSelectionList(r), pcrDigest: r.tpm2b('TPMS_QUOTE_INFO.pcrDigest', MAX.DIGEST) };
      break;
    case TPM_ST.ATTEST_CERTIFY:
      attested = { kind: 'certify', name: r.tpm2b('TPMS_CERTIFY_INFO.name', MAX.NAME), qualifiedName: r.tpm2b('TPMS_CERTIFY_INFO.qualifiedName', MAX.NAME) };
      break;
    case TPM_ST.ATTEST_CREATION:
      attested = { kind: 'creation', objectName: r.tpm2b('TPMS_CREATION_INFO.objectName', MAX.NAME), creationHash: r.tpm2b('TPMS_CREATION_INFO.creationHash', MAX.DIGEST) };
      break;
    case TPM_ST.ATTEST_TIME:
      attested = { kind: 'time', time: r.u64('TPMS_TIME_INFO.time'), clockInfo: readClockInfo(r), firmwareVersion: r.u64('TPMS_TIME_ATTEST_INFO.firmwareVersion') };
      break;
    case TPM_ST.ATTEST_SESSION_AUDIT:
      attested = { kind: 'sessionAudit', exclusiveSession: r.u8('TPMS_SESSION_AUDIT_INFO.exclusiveSession') !== 0, sessionDigest: r.tpm2b('TPMS_SESSION_AUDIT_INFO.sessionDigest', MAX.DIGEST) };
      break;
    case TPM_ST.ATTEST_COMMAND_AUDIT:
      attested = {
        kind: 'commandAudit',
        auditCounter: r.u64('TPMS_COMMAND_AUDIT_INFO.auditCounter'),
        digestAlg: r.u16('TPMS_COMMAND_AUDIT_INFO.digestAlg'),
        auditDigest: r.tpm2b('TPMS_COMMAND_AUDIT_INFO.auditDigest', MAX.DIGEST),
        commandDigest: r.tpm2b('TPMS_COMMAND_AUDIT_INFO.commandDigest', MAX.DIGEST),
      };
      break;
    case TPM_ST.ATTEST_NV:
      attested = { kind: 'nv', indexName: r.tpm2b('TPMS_NV_CERTIFY_INFO.indexName', MAX.NAME), offset: r.u16('TPMS_NV_CERTIFY_INFO.offset'), nvContents: r.tpm2b('TPMS_NV_CERTIFY_INFO.nvContents', MAX.NV_BUFFER) };
      break;
    case TPM_ST.ATTEST_NV_DIGEST:
      attested = { kind: 'nvDigest', indexName: r.tpm2b('TPMS_NV_DIGEST_CERTIFY_INFO.indexName', MAX.NAME), nvDigest: r.tpm2b('TPMS_NV_DIGEST_CERTIFY_INFO.nvDigest', MAX.DIGEST) };
      break;
    default:
      return r.fail('TPMS_ATTEST.type', `unknown attestation type 0x${type.toString(16)}`, tat);
  }
  return { magic, type, qualifiedSigner, extraData, clockInfo, firmwareVersion, attested };
}

/** Parses raw TPMS_ATTEST bytes (the content of TPM2B_ATTEST, what tpm2_quote -m writes). */
export function parseAttest(bytes: Uint8Array): TpmsAttest {
  const r = new TpmReader(bytes, 'TPMS_ATTEST');
  const a = readAttest(r);
  r.done('TPMS_ATTEST');
  return a;
}

// ---------------------------------------------------------------- signatures

export type TpmtSignature =
  | { kind: 'rsa'; sigAlg: number; hash: number; sig: Buffer }
  | { kind: 'ecc'; sigAlg: number; hash: number; r: Buffer; s: Buffer }
  | { kind: 'hmac'; sigAlg: number; hmac: TaggedHash }
  | { kind: 'null'; sigAlg: number };

export function marshalSignature(w: TpmWriter, s: TpmtSignature): void {
  w.u16(s.sigAlg);
  switch (s.kind) {
    case 'rsa':
      w.u16(s.hash).tpm2b(s.sig);
      return;
    case 'ecc':
      w.u16(s.hash).tpm2b(s.r).tpm2b(s.s);
      return;
    case 'hmac':
      marshalTaggedHash(w, s.hmac);
      return;
    case 'null':
      return;
  }
}

export function readSignature(r: TpmReader): TpmtSignature {
  const at = r.offset;
  const sigAlg = r.u16('TPMT_SIGNATURE.sigAlg');
  switch (sigAlg) {
    case TPM_ALG.RSASSA:
    case TPM_ALG.RSAPSS:
      return { kind: 'rsa', sigAlg, hash: r.u16('TPMS_SIGNATURE_RSA.hash'), sig: r.tpm2b('TPMS_SIGNATURE_RSA.sig', MAX.RSA_KEY) };
    case TPM_ALG.ECDSA:
    case TPM_ALG.ECDAA:
    case TPM_ALG.SM2:
    case TPM_ALG.ECSCHNORR:
      return {
        kind: 'ecc',
        sigAlg,
        hash: r.u16('TPMS_SIGNATURE_ECC.hash'),
        r: r.tpm2b('TPMS_SIGNATURE_ECC.signatureR', MAX.ECC_PARAM),
        s: r.tpm2b('TPMS_SIGNATURE_ECC.signatureS', MAX.ECC_PARAM),
      };
    case TPM_ALG.HMAC:
      return { kind: 'hmac', sigAlg, hmac: readTaggedHash(r, 'TPMT_SIGNATURE.hmac') };
    case TPM_ALG.NULL:
      return { kind: 'null', sigAlg };
    default:
      return r.fail('TPMT_SIGNATURE.sigAlg', `unknown signature algorithm 0x${sigAlg.toString(16)}`, at);
  }
}

export function parseSignature(bytes: Uint8Array): TpmtSignature {
  const r = new TpmReader(bytes, 'TPMT_SIGNATURE');
  const s = readSignature(r);
  r.done('TPMT_SIGNATURE');
  return s;
}
