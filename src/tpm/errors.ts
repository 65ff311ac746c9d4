import { HyperEnclaveError, EXIT } from '../errors.js';
import { commandName } from './constants.js';

/** Format-0 (TPM 2.0, RC_VER1 = 0x100) errors: number → [name, meaning]. */
const FMT0: Record<number, [string, string]> = {
  0x000: ['TPM_RC_INITIALIZE', 'TPM not initialized by TPM2_Startup or already initialized'],
  0x001: ['TPM_RC_FAILURE', 'commands not being accepted because of a TPM failure'],
  0x003: ['TPM_RC_SEQUENCE', 'improper use of a sequence handle'],
  0x00b: ['TPM_RC_PRIVATE', 'not currently used'],
  0x019: ['TPM_RC_HMAC', 'not currently used'],
  0x020: ['TPM_RC_DISABLED', 'the command is disabled'],
  0x021: ['TPM_RC_EXCLUSIVE', 'command failed because audit sequence required exclusivity'],
  0x024: ['TPM_RC_AUTH_TYPE', 'authorization handle is not correct for command'],
  0x025: ['TPM_RC_AUTH_MISSING', 'command requires an authorization session for handle and it is not present'],
  0x026: ['TPM_RC_POLICY', 'policy failure in math operation or an invalid authPolicy value'],
  0x027: ['TPM_RC_PCR', 'PCR check fail'],
  0x028: ['TPM_RC_PCR_CHANGED', 'PCR have changed since checked'],
  0x02d: ['TPM_RC_UPGRADE', 'TPM is in field upgrade mode'],
  0x02e: ['TPM_RC_TOO_MANY_CONTEXTS', 'context ID counter is at maximum'],
  0x02f: ['TPM_RC_AUTH_UNAVAILABLE', 'authValue or authPolicy is not available for selected entity'],
  0x030: ['TPM_RC_REBOOT', 'a _TPM_Init and Startup(CLEAR) is required before the TPM can resume operation'],
  0x031: ['TPM_RC_UNBALANCED', 'the protection algorithms (hash and symmetric) are not reasonably balanced'],
  0x042: ['TPM_RC_COMMAND_SIZE', 'command commandSize value is inconsistent with contents of the command buffer'],
  0x043: ['TPM_RC_COMMAND_CODE', 'command code not supported'],
  0x044: ['TPM_RC_AUTHSIZE', 'the value of authorizationSize is out of range or the number of octets in the Authorization Area is greater than required'],
  0x045: ['TPM_RC_AUTH_CONTEXT', 'use of an authorization session with a context command or another command that cannot have an authorization session'],
  0x046: ['TPM_RC_NV_RANGE', 'NV offset+size is out of range'],
  0x047: ['TPM_RC_NV_SIZE', 'requested allocation size is larger than allowed'],
  0x048: ['TPM_RC_NV_LOCKED', 'NV access locked'],
  0x049: ['TPM_RC_NV_AUTHORIZATION', 'NV access authorization fails in command actions'],
  0x04a: ['TPM_RC_NV_UNINITIALIZED', 'an NV Index is used before being initialized or the state saved by TPM2_Shutdown(STATE) could not be restored'],
  0x04b: ['TPM_RC_NV_SPACE', 'insufficient space for NV allocation'],
  0x04c: ['TPM_RC_NV_DEFINED', 'NV Index or persistent object already defined'],
  0x050: ['TPM_RC_BAD_CONTEXT', 'context in TPM2_ContextLoad() is not valid'],
  0x051: ['TPM_RC_CPHASH', 'cpHash value already set or not correct for use'],
  0x052: ['TPM_RC_PARENT', 'handle for parent is not a valid parent'],
  0x053: ['TPM_RC_NEEDS_TEST', 'some function needs testing'],
  0x054: ['TPM_RC_NO_RESULT', 'internal function cannot process a request due to an unspecified problem'],
  0x055: ['TPM_RC_SENSITIVE', 'the sensitive area did not unmarshal correctly after decryption'],
};

/** Format-1 errors (bit 7 set): number → [name, meaning]. */
const FMT1: Record<number, [string, string]> = {
  0x001: ['TPM_RC_ASYMMETRIC', 'asymmetric algorithm not supported or not correct'],
  0x002: ['TPM_RC_ATTRIBUTES', 'inconsistent attributes'],
  0x003: ['TPM_RC_HASH', 'hash algorithm not supported or not appropriate'],
  0x004: ['TPM_RC_VALUE', 'value is out of range or is not correct for the context'],
  0x005: ['TPM_RC_HIERARCHY', 'hierarchy is not enabled or is not correct for the use'],
  0x007: ['TPM_RC_KEY_SIZE', 'key size is not supported'],
  0x008: ['TPM_RC_MGF', 'mask generation function not supported'],
  0x009: ['TPM_RC_MODE', 'mode of operation not supported'],
  0x00a: ['TPM_RC_TYPE', 'the type of the value is not appropriate for the use'],
  0x00b: ['TPM_RC_HANDLE', 'the handle is not correct for the use'],
  0x00c: ['TPM_RC_KDF', 'unsupported key derivation function or function not appropriate for use'],
  0x00d: ['TPM_RC_RANGE', 'value was out of allowed range'],
  0x00e: ['TPM_RC_AUTH_FAIL', 'the authorization HMAC check failed and DA counter incremented'],
  0x00f: ['TPM_RC_NONCE', 'invalid nonce size or nonce value mismatch'],
  0x010: ['TPM_RC_PP', 'authorization requires assertion of PP'],
  0x012: ['TPM_RC_SCHEME', 'unsupported or incompatible scheme'],
  0x015: ['TPM_RC_SIZE', 'structure is the wrong size'],
  0x016: ['TPM_RC_SYMMETRIC', 'unsupported symmetric algorithm or key size, or not appropriate for instance'],
  0x017: ['TPM_RC_TAG', 'incorrect structure tag'],
  0x018: ['TPM_RC_SELECTOR', 'union selector is incorrect'],
  0x01a: ['TPM_RC_INSUFFICIENT', 'the TPM was unable to unmarshal a value because there were not enough octets in the input buffer'],
  0x01b: ['TPM_RC_SIGNATURE', 'the signature is not valid'],
  0x01c: ['TPM_RC_KEY', 'key fields are not compatible with the selected use'],
  0x01d: ['TPM_RC_POLICY_FAIL', 'a policy check failed'],
  0x01f: ['TPM_RC_INTEGRITY', 'integrity check failed'],
  0x020: ['TPM_RC_TICKET', 'invalid ticket'],
  0x021: ['TPM_RC_RESERVED_BITS', 'reserved bits not set to zero as required'],
  0x022: ['TPM_RC_BAD_AUTH', 'authorization failure without DA implications'],
  0x023: ['TPM_RC_EXPIRED', 'the policy has expired'],
  0x024: ['TPM_RC_POLICY_CC', 'the commandCode in the policy is not the commandCode of the command or the command code in a policy command references a command that is not implemented'],
  0x025: ['TPM_RC_BINDING', 'public and sensitive portions of an object are not cryptographically bound'],
  0x026: ['TPM_RC_CURVE', 'curve not supported'],
  0x027: ['TPM_RC_ECC_POINT', 'point is not on the required curve'],
};

/** Warnings (format 0, bit 11 set). */
const WARN: Record<number, [string, string]> = {
  0x001: ['TPM_RC_CONTEXT_GAP', 'gap for context ID is too large'],
  0x002: ['TPM_RC_OBJECT_MEMORY', 'out of memory for object contexts (flush transient objects)'],
  0x003: ['TPM_RC_SESSION_MEMORY', 'out of memory for session contexts (flush sessions)'],
  0x004: ['TPM_RC_MEMORY', 'out of shared object/session memory or need space for internal operations'],
  0x005: ['TPM_RC_SESSION_HANDLES', 'out of session handles; a session must be flushed before a new session may be created'],
  0x006: ['TPM_RC_OBJECT_HANDLES', 'out of object handles; the handle space for objects is depleted and a reboot is required'],
  0x007: ['TPM_RC_LOCALITY', 'bad locality'],
  0x008: ['TPM_RC_YIELDED', 'the TPM has suspended operation on the command'],
  0x009: ['TPM_RC_CANCELED', 'the command was canceled'],
  0x00a: ['TPM_RC_TESTING', 'TPM is performing self-tests'],
  0x020: ['TPM_RC_NV_RATE', 'the TPM is rate-limiting accesses to prevent wearout of NV'],
  0x021: ['TPM_RC_LOCKOUT', 'authorizations for objects subject to DA protection are not allowed at this time because the TPM is in DA lockout mode'],
  0x022: ['TPM_RC_RETRY', 'the TPM was not able to start the command'],
  0x023: ['TPM_RC_NV_UNAVAILABLE', 'the command may require writing of NV and NV is not current accessible'],
  0x07f: ['TPM_RC_NOT_USED', 'this value is reserved and shall not be returned by the TPM'],
};
for (let i = 0; i < 7; i++) {
  WARN[0x010 + i] = [`TPM_RC_REFERENCE_H${i}`, `the ${i}th handle in the handle area references a transient object or session that is not loaded`];
  WARN[0x018 + i] = [`TPM_RC_REFERENCE_S${i}`, `the ${i}th authorization session handle references a session that is not loaded`];
}

export const TPM_RC = {
  SUCCESS: 0x000,
  INITIALIZE: 0x100,
  FAILURE: 0x101,
  COMMAND_CODE: 0x143,
  NV_DEFINED: 0x14c,
  HANDLE: 0x08b,
  AUTH_FAIL: 0x08e,
  BAD_AUTH: 0x0a2,
  POLICY_FAIL: 0x09d,
  VALUE: 0x084,
  INTEGRITY: 0x09f,
  CONTEXT_GAP: 0x901,
  OBJECT_MEMORY: 0x902,
  SESSION_MEMORY: 0x903,
  LOCALITY: 0x907,
  YIELDED: 0x908,
  TESTING: 0x90a,
  RETRY: 0x922,
} as const;

export interface DecodedRc {
  rc: number;
  /** TPM_RC_* name with its base code (parameter/handle/session bits removed). */
  name: string;
  meaning: string;
  /** Base code: rc without the parameter/handle/session number. */
  base: number;
  format: 0 | 1;
  warning: boolean;
  parameter?: number;
  handle?: number;
  session?: number;
}

/** Decodes a TPM response code (TPM 2.0 Part 2, 6.6). */
export function decodeRc(rc: number): DecodedRc {
  rc >>>= 0;
  if (rc === 0) return { rc, name: 'TPM_RC_SUCCESS', meaning: 'success', base: 0, format: 0, warning: false };
  const layer = rc >>> 16;
  const low = rc & 0xffff;
  const hex = `0x${rc.toString(16).padStart(3, '0')}`;
  if (layer !== 0) {
    return { rc, name: `TSS layer ${layer} error ${hex}`, meaning: 'error raised by a software layer, not the TPM', base: rc, format: 0, warning: false };
  }
  if (low & 0x080) {
    const num = low & 0x3f;
    const [name, meaning] = FMT1[num] ?? [`TPM_RC_FMT1_${num.toString(16)}`, 'unknown format-1 error'];
    const out: DecodedRc = { rc, name, meaning, base: 0x080 | num, format: 1, warning: false };
    const n = (low >> 8) & 0xf;
    if (low & 0x040) out.parameter = n;
    else if (low & 0x800) out.session = n & 0x7;
    else if ((n & 0x7) !== 0) out.handle = n & 0x7;
    return out;
  }
  if (!(low & 0x100)) {
    return { rc, name: `TPM 1.2 response code ${hex}`, meaning: 'not a TPM 2.0 response code', base: low, format: 0, warning: false };
  }
  if (low & 0x400) {
    return { rc, name: `TPM_RC_VENDOR ${hex}`, meaning: 'vendor-defined error', base: low, format: 0, warning: !!(low & 0x800) };
  }
  const num = low & 0x7f;
  const warning = !!(low & 0x800);
  const table = warning ? WARN : FMT0;
  const [name, meaning] = table[num] ?? [`TPM_RC_${warning ? 'WARN' : 'FMT0'}_${num.toString(16)}`, `unknown ${warning ? 'warning' : 'error'} ${hex}`];
  return { rc, name, meaning, base: low & 0xfff, format: 0, warning };
}

/** A TPM that answered with an error or warning response code. */
export class TpmError extends HyperEnclaveError {
  readonly rc: number;
  readonly decoded: DecodedRc;
  readonly commandCode: number | undefined;
  /**
   * @param context what the caller was doing, in the caller's words (replaces the generic
   *   meaning, e.g. "PCR 17 cannot be extended at locality 0").
   */
  constructor(rc: number, commandCode?: number, context?: string) {
    const d = decodeRc(rc);
    const where = d.parameter !== undefined ? `parameter ${d.parameter}` : d.handle !== undefined ? `handle ${d.handle}` : d.session !== undefined ? `session ${d.session}` : '';
    const cmd = commandCode !== undefined ? commandName(commandCode) : undefined;
    const tail = [cmd, where, `rc 0x${(rc >>> 0).toString(16)}`].filter(Boolean).join(', ');
    super(`${d.name}: ${context ?? d.meaning} (${tail})`, EXIT.TPM);
    this.rc = rc >>> 0;
    this.decoded = d;
    this.commandCode = commandCode;
  }
  /** Base code (TPM_RC_*) without parameter/handle/session bits, for comparisons with TPM_RC. */
  get base(): number {
    return this.decoded.base;
  }
}

/** Bytes from or to the TPM that do not follow the protocol (truncated, oversized, garbled), or a transport failure. */
/** Where bytes stopped making sense, as data: the structure, the field, its absolute offset, and why. */
export interface TpmParseProblem {
  /** The whole buffer, e.g. "TPM2_Quote response" or "TPMS_ATTEST". */
  what: string;
  field: string;
  offset: number;
  reason: string;
  /** Set when the bytes ended early: how many the field needed and how many were left. */
  truncated?: { need: number; left: number };
}

export class TpmProtocolError extends HyperEnclaveError {
  /** Present when a TpmReader refused the bytes: callers rephrase from this, never from the message. */
  readonly parse?: TpmParseProblem;
  constructor(message: string, options?: { cause?: unknown; parse?: TpmParseProblem }) {
    super(message, EXIT.TPM, options && 'cause' in options ? { cause: options.cause } : undefined);
    if (options?.parse) this.parse = options.parse;
  }
}

/** A request the client refuses before anything reaches the TPM (bad argument). */
export class TpmUsageError extends HyperEnclaveError {
  constructor(message: string) {
    super(message, EXIT.BAD_INPUT);
  }
}
