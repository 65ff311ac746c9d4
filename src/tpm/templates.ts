/** Public-area templates: TCG EK Credential Profile EKs, SRKs, attestation keys. */
import { TPM_ALG } from './alg.js';
import { TPMA_OBJECT as A, TPM_ECC_CURVE } from './constants.js';
import { SCHEME_NULL, SYM_AES128_CFB, SYM_NULL, type TpmtPublic } from './structures.js';

/** PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the EK authPolicy of the EK profile's default templates. */
export const EK_AUTH_POLICY_SHA256 = Buffer.from('837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa', 'hex');

const EK_ATTRS = A.fixedTPM | A.fixedParent | A.sensitiveDataOrigin | A.adminWithPolicy | A.restricted | A.decrypt;
const SRK_ATTRS = A.fixedTPM | A.fixedParent | A.sensitiveDataOrigin | A.userWithAuth | A.noDA | A.restricted | A.decrypt;
const AK_ATTRS = A.fixedTPM | A.fixedParent | A.sensitiveDataOrigin | A.userWithAuth | A.restricted | A.sign;

export type KeyKind = 'rsa' | 'ecc';

/** EK template L-1 (RSA 2048, AES-128-CFB, unique = 256 zero bytes). */
export function ekTemplateRsa(): TpmtPublic {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: EK_ATTRS,
    authPolicy: Buffer.from(EK_AUTH_POLICY_SHA256),
    parameters: { symmetric: { ...SYM_AES128_CFB }, scheme: { ...SCHEME_NULL }, keyBits: 2048, exponent: 0 },
    unique: Buffer.alloc(256),
  };
}

/** EK template L-2 (ECC NIST P-256, AES-128-CFB, unique = two 32-byte zero coordinates). */
export function ekTemplateEcc(): TpmtPublic {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: EK_ATTRS,
    authPolicy: Buffer.from(EK_AUTH_POLICY_SHA256),
    parameters: { symmetric: { ...SYM_AES128_CFB }, scheme: { ...SCHEME_NULL }, curveId: TPM_ECC_CURVE.NIST_P256, kdf: { ...SCHEME_NULL } },
    unique: { x: Buffer.alloc(32), y: Buffer.alloc(32) },
  };
}

export function ekTemplate(kind: KeyKind): TpmtPublic {
  return kind === 'rsa' ? ekTemplateRsa() : ekTemplateEcc();
}

/** Storage root key as the TCG provisioning guidance describes it (empty authValue, noDA). */
export function srkTemplate(kind: KeyKind): TpmtPublic {
  if (kind === 'rsa') {
    return {
      type: TPM_ALG.RSA,
      nameAlg: TPM_ALG.SHA256,
      objectAttributes: SRK_ATTRS,
      authPolicy: Buffer.alloc(0),
      parameters: { symmetric: { ...SYM_AES128_CFB }, scheme: { ...SCHEME_NULL }, keyBits: 2048, exponent: 0 },
      unique: Buffer.alloc(0),
    };
  }
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: SRK_ATTRS,
    authPolicy: Buffer.alloc(0),
    parameters: { symmetric: { ...SYM_AES128_CFB }, scheme: { ...SCHEME_NULL }, curveId: TPM_ECC_CURVE.NIST_P256, kdf: { ...SCHEME_NULL } },
    unique: { x: Buffer.alloc(0), y: Buffer.alloc(0) },
  };
}

/** Restricted signing attestation key (as tpm2_createak makes by default): RSASSA or ECDSA with SHA-256. */
export function akTemplate(kind: KeyKind, opts: { hashAlg?: number; scheme?: number; curveId?: number } = {}): TpmtPublic {
  const hashAlg = opts.hashAlg ?? TPM_ALG.SHA256;
  if (kind === 'rsa') {
    return {
      type: TPM_ALG.RSA,
      nameAlg: TPM_ALG.SHA256,
      objectAttributes: AK_ATTRS,
      authPolicy: Buffer.alloc(0),
      parameters: { symmetric: { ...SYM_NULL }, scheme: { scheme: opts.scheme ?? TPM_ALG.RSASSA, hashAlg }, keyBits: 2048, exponent: 0 },
      unique: Buffer.alloc(0),
    };
  }
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: AK_ATTRS,
    authPolicy: Buffer.alloc(0),
    parameters: { symmetric: { ...SYM_NULL }, scheme: { scheme: opts.scheme ?? TPM_ALG.ECDSA, hashAlg }, curveId: opts.curveId ?? TPM_ECC_CURVE.NIST_P256, kdf: { ...SCHEME_NULL } },
    unique: { x: Buffer.alloc(0), y: Buffer.alloc(0) },
  };
}

/**
 * A sealed data object (keyed-hash, no scheme): the data comes in TPM2_Create's sensitive area.
 * With an authPolicy only (userWithAuth clear) it unseals only through a policy session.
 */
export function sealedDataTemplate(authPolicy: Buffer, opts: { userWithAuth?: boolean; nameAlg?: number } = {}): TpmtPublic {
  return {
    type: TPM_ALG.KEYEDHASH,
    nameAlg: opts.nameAlg ?? TPM_ALG.SHA256,
    objectAttributes: A.fixedTPM | A.fixedParent | (opts.userWithAuth ? A.userWithAuth : 0),
    authPolicy: Buffer.from(authPolicy),
    parameters: { scheme: { ...SCHEME_NULL } },
    unique: Buffer.alloc(0),
  };
}
