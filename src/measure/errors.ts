import { EXIT, HyperEnclaveError } from '../errors.js';

/** A hypervisor image container that must not be measured or loaded: one line naming the field and byte offset. */
export class ImageError extends HyperEnclaveError {
  constructor(message: string, exitCode: number = EXIT.BAD_INPUT) {
    super(message, exitCode);
  }
}

/** A PCR measurement policy that is malformed or cannot be applied to this TPM. */
export class PolicyError extends HyperEnclaveError {
  constructor(message: string, exitCode: number = EXIT.BAD_INPUT) {
    super(message, exitCode);
  }
}
