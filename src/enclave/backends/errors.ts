import { EXIT, HyperEnclaveError } from '../../errors.js';

/** A backend the platform lacks, a refused firmware command, or bad launch input. */
export class BackendError extends HyperEnclaveError {
  constructor(message: string, exitCode: number = EXIT.UNSUPPORTED, options?: { cause?: unknown }) {
    super(message, exitCode, options);
  }
}

/** No free key slot (ASID/KeyID) of the requested kind. */
export class KeySlotError extends BackendError {
  constructor(message: string) {
    super(message, EXIT.UNSUPPORTED);
  }
}

/** A SEV/CSV firmware command failed with a status code from the SEV API spec. */
export class FirmwareError extends BackendError {
  readonly status: number;
  readonly command: string;
  constructor(command: string, status: number, detail: string) {
    super(`${command} failed: ${SEV_STATUS_NAMES[status] ?? `status 0x${status.toString(16)}`} (${detail})`, EXIT.VERIFY_FAILED);
    this.status = status;
    this.command = command;
  }
}

/** SEV API status codes (AMD SEV API spec, "Status Codes"). */
export const SEV_STATUS = {
  SUCCESS: 0x00,
  INVALID_PLATFORM_STATE: 0x01,
  INVALID_GUEST_STATE: 0x02,
  INVALID_CONFIG: 0x03,
  INVALID_LENGTH: 0x04,
  ALREADY_OWNED: 0x05,
  INVALID_CERTIFICATE: 0x06,
  POLICY_FAILURE: 0x07,
  INACTIVE: 0x08,
  INVALID_ADDRESS: 0x09,
  BAD_SIGNATURE: 0x0a,
  BAD_MEASUREMENT: 0x0b,
  ASID_OWNED: 0x0c,
  INVALID_ASID: 0x0d,
  WBINVD_REQUIRED: 0x0e,
  DFFLUSH_REQUIRED: 0x0f,
  INVALID_GUEST: 0x10,
  INVALID_COMMAND: 0x11,
  ACTIVE: 0x12,
  HWERROR_PLATFORM: 0x13,
  HWERROR_UNSAFE: 0x14,
  UNSUPPORTED: 0x15,
  INVALID_PARAM: 0x16,
  RESOURCE_LIMIT: 0x17,
  SECURE_DATA_INVALID: 0x18,
} as const;

const SEV_STATUS_NAMES: Record<number, string> = Object.fromEntries(Object.entries(SEV_STATUS).map(([k, v]) => [v, k]));
