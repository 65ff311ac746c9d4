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
  /** Another hyperenclave process holds the state directory's lock (the message names its PID). */
  BUSY: 8,
  /** The file system refused: permission denied, read-only or full (the message names the path). */
  FILESYSTEM: 9,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Base of every domain error: a one-line message and the exit code the CLI uses for it. */
/**
 * A message as one line: line breaks and other control characters (which can come from the
 * input itself: a key or file name with a newline in it) are shown escaped.
 */
export function oneLine(message: string): string {
  return message.replace(/\r\n|[\u0000-\u001f\u007f]/g, (c) => (c === '\r\n' || c === '\n' ? '\\n' : c === '\t' ? ' ' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}

export class HyperEnclaveError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT.INTERNAL, options?: { cause?: unknown }) {
    super(oneLine(message), options);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** JSON.parse's complaint, always with the position where it stopped (V8 names none when the text just ends). */
export function jsonSyntaxProblem(e: unknown, text: string): string {
  const message = e instanceof Error ? e.message : String(e);
  return /position \d+/.test(message) ? message : `${message} at position ${text.length}`;
}
