import { EXIT, HyperEnclaveError } from '../errors.js';

/** Enclave manifests, images and lifecycle: one-line messages naming the field, path or offset. */
export class EnclaveError extends HyperEnclaveError {
  constructor(message: string, exitCode: number = EXIT.BAD_INPUT) {
    super(message, exitCode);
  }
}
