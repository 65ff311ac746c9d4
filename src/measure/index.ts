/** The hypervisor image container, its streaming verification, the PCR policy and the measure operation. */
export {
  ARCH_CODE,
  DEFAULT_MAX_IMAGE_LENGTH,
  HDR,
  IMAGE_FORMAT_VERSION,
  IMAGE_HEADER_SIZE,
  IMAGE_MAGIC,
  type ImageArch,
  type ImageFields,
  type ImageHeader,
  type ImageKind,
  type ImagePublicKey,
  type ImageSigningKey,
  MultiDigest,
  type SignatureAlg,
  type SignerInfo,
  type VerifiedImage,
  type VerifyOptions,
  archForCpuVendor,
  buildContainer,
  encodeHeader,
  headerToJson,
  keyIdOf,
  parseHeader,
  publicKeyFrom,
  resignContainer,
  signingKeyFromPem,
  verifyContainerBytes,
  verifyContainerFile,
} from './container.js';
export { ImageError, PolicyError } from './errors.js';
export { BUILTIN_POLICIES, DEFAULT_POLICY_NAME, EVENT_TYPE_CODES, type MeasureKind, type PcrPolicy, type PolicyEvent, banksForTpm, canonicalPolicyBytes, eventTypeCode, loadPolicy, validatePolicy } from './policy.js';
export { type PcrValues, type PlannedEvent, eventDataFor, eventTypeName, extendPcr, pcrValuesToJson, planMeasurement, predictPcrs } from './plan.js';
export { type MeasureResult, type MeasureTpm, type RuntimeLogAppender, measureImage } from './measure.js';
export { measureTpmFor } from './tpm-adapter.js';
