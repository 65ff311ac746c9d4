import { TpmProtocolError } from '../errors.js';

/** One way of reaching a TPM: raw command bytes in, raw response bytes out. */
export interface TpmTransport {
  /** Human-readable target ("swtpm tcp 127.0.0.1:2321", "device /dev/tpmrm0"). */
  readonly description: string;
  /** Sends one command and resolves with its complete response; commands are queued, one in flight. */
  send(cmd: Buffer, opts?: { timeoutMs?: number }): Promise<Buffer>;
  /** Locality for the commands that follow; absent when the transport cannot choose it. */
  setLocality?(locality: number): Promise<void>;
  close(): Promise<void>;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
/** Largest response we accept; real TPMs answer within 4 KiB, swtpm within its buffer size. */
export const MAX_RESPONSE_SIZE = 64 * 1024;
export const TPM_HEADER_SIZE = 10;

/** Runs async jobs one at a time in arrival order. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(job: () => Promise<T>): Promise<T> {
    const next = this.tail.then(job, job);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/** Checks a command before sending: header present and size field equal to its length. */
export function checkCommandFrame(cmd: Buffer): void {
  if (cmd.length < TPM_HEADER_SIZE) throw new TpmProtocolError(`command of ${cmd.length} bytes is shorter than the 10-byte TPM header`);
  const size = cmd.readUInt32BE(2);
  if (size !== cmd.length) throw new TpmProtocolError(`command header says ${size} bytes but ${cmd.length} are given`);
}

/**
 * Given the bytes received so far, the full response length they announce, or undefined
 * while the header is incomplete. Throws for an impossible size.
 */
export function responseLength(received: Buffer, where: string): number | undefined {
  if (received.length < 6) return undefined;
  const size = received.readUInt32BE(2);
  if (size < TPM_HEADER_SIZE) throw new TpmProtocolError(`${where}: response header size field ${size} at byte 2 is below the 10-byte header`);
  if (size > MAX_RESPONSE_SIZE) throw new TpmProtocolError(`${where}: response header size field ${size} at byte 2 exceeds the ${MAX_RESPONSE_SIZE}-byte limit`);
  return size;
}
