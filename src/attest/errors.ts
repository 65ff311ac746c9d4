import { EXIT, HyperEnclaveError } from '../errors.js';

/** Malformed evidence, policy or request: names the field and what is wrong. */
export class AttestError extends HyperEnclaveError {
  constructor(message: string, exitCode: number = EXIT.BAD_INPUT, options?: { cause?: unknown }) {
    super(message, exitCode, options);
  }
}

/** Verification finished and the evidence was refused: carries the first failed check. */
export class VerifyError extends HyperEnclaveError {
  readonly check: string;
  constructor(check: string, reason: string) {
    super(`verification failed: ${check}: ${reason}`, EXIT.VERIFY_FAILED);
    this.check = check;
  }
}
