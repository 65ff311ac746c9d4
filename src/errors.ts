/** Exit codes shared by every command; documented in README.md. */
export const EXIT = {
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  VERIFY_FAILED: 4,
  UNSUPPORTED: 5,
  BAD_INPUT: 6,
  TPM: 7,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Base of every domain error: a one-line message and the exit code the CLI uses for it. */
export class HyperEnclaveError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT.INTERNAL, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}
