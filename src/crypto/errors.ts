import { EXIT, HyperEnclaveError } from '../errors.js';

/** Bad key/signature/ciphertext input or a failed cryptographic check, with one line saying what and where. */
export class CryptoError extends HyperEnclaveError {
  constructor(message: string, exitCode: number = EXIT.BAD_INPUT, options?: { cause?: unknown }) {
    super(message, exitCode, options);
  }
}
