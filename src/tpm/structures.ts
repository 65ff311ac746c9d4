/**
 * Typed TPM 2.0 structures (Part 2) with marshal/unmarshal. No command logic here.
 * Naming: marshalX(w, v) writes X; readX(r) reads X; unions are read by their selector.
 */
import type { TpmReader } from './marshal.js';
import { readContext, readDigestList, readDigestValues, readEccPoint, readIdObject2B, readNvPublic, readNvPublic2B, readPcrSelectionList, readPublic, readPublic2B, readSensitiveCreate2B, readSymDef, readTaggedHash, readTicket } from './struct/basic.js';
import { readAttest, readSignature } from './struct/attest.js';
import { readCapabilityData } from './struct/capability.js';

export * from './struct/basic.js';
export * from './struct/attest.js';
export * from './struct/capability.js';

/**
 * Every unmarshaler by name, for the fuzz test and for tools that decode an arbitrary
 * structure from bytes.
 */
export const UNMARSHALERS: Record<string, (r: TpmReader) => unknown> = {
  TPML_PCR_SELECTION: readPcrSelectionList,
  TPML_DIGEST: readDigestList,
  TPML_DIGEST_VALUES: readDigestValues,
  TPMT_HA: (r) => readTaggedHash(r),
  TPMT_SYM_DEF: (r) => readSymDef(r),
  TPMT_PUBLIC: readPublic,
  TPM2B_PUBLIC: readPublic2B,
  TPM2B_SENSITIVE_CREATE: readSensitiveCreate2B,
  TPMS_ATTEST: readAttest,
  TPMT_SIGNATURE: readSignature,
  TPMT_TK: (r) => readTicket(r),
  TPMS_CONTEXT: readContext,
  TPMS_NV_PUBLIC: readNvPublic,
  TPM2B_NV_PUBLIC: readNvPublic2B,
  TPM2B_ID_OBJECT: readIdObject2B,
  TPMS_CAPABILITY_DATA: readCapabilityData,
  TPMS_ECC_POINT: (r) => readEccPoint(r),
};
