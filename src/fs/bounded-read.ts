import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { fileSystemError } from './fs-errors.js';

/**
 * Size-capped file reading for every file the toolchain is given: the cap is checked before
 * reading (fstat for regular files) and while reading anything else (devices, pipes), so
 * `/dev/zero` or a multi-gigabyte file is refused at once instead of filling memory.
 * A directory, a missing file, no permission: one-line errors with their own exit codes.
 */

const MiB = 1024 * 1024;

/** A path as it goes into a one-line message: quoted when it holds control characters (a newline in a file name). */
export function showPath(path: string): string {
  return /[\u0000-\u001f\u007f]/.test(path) ? JSON.stringify(path) : path;
}

/** Default caps by kind of input (HYPERENCLAVE_MAX_INPUT_MIB raises every one of them to that many MiB). */
export const INPUT_CAPS = {
  /** Keys, certificates, PEM. */
  key: 1 * MiB,
  /** Configuration, policies, manifests, small JSON documents. */
  document: 16 * MiB,
  /** Event logs, evidence bundles (which carry event logs), memory maps, TPM structures. */
  log: 32 * MiB,
  /** Hypervisor ELF files and image containers given to firmware tools (a hypervisor is a few MiB). */
  image: 64 * MiB,
} as const;

export type InputKind = keyof typeof INPUT_CAPS;

/** The cap for a kind of input, raised (never lowered) by HYPERENCLAVE_MAX_INPUT_MIB. */
export function inputCap(kind: InputKind): number {
  const env = process.env.HYPERENCLAVE_MAX_INPUT_MIB;
  const base = INPUT_CAPS[kind];
  if (!env) return base;
  const n = Number(env);
  if (!Number.isFinite(n) || n <= 0) throw new HyperEnclaveError(`HYPERENCLAVE_MAX_INPUT_MIB: expected a positive number of MiB, got "${env}"`, EXIT.USAGE);
  return Math.max(base, Math.floor(n * MiB));
}

function tooBig(shown: string, max: number, size?: number): HyperEnclaveError {
  return new HyperEnclaveError(
    `${shown}: ${size !== undefined ? `${size} bytes` : 'larger than the limit'}, the limit is ${max} bytes (set HYPERENCLAVE_MAX_INPUT_MIB to allow more)`,
    EXIT.BAD_INPUT,
  );
}

/** Reads at most `maxBytes` (else refuses) from a file, device or pipe. */
export function readFileBounded(path: string, opts: { what?: string; maxBytes?: number; kind?: InputKind } = {}): Buffer {
  const what = opts.what ?? 'input';
  const shownPath = typeof path === 'string' ? showPath(path) : String(path);
  /** "<what> <path>", or the path alone when the caller names it otherwise (what: ''). */
  const shown = what ? `${what} ${shownPath}` : shownPath;
  const max = opts.maxBytes ?? inputCap(opts.kind ?? 'document');
  if (typeof path !== 'string' || path === '') throw new HyperEnclaveError(`${what || 'file'}: an empty file name`, EXIT.USAGE);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw Object.assign(new HyperEnclaveError(`${shown}: not found`, EXIT.NOT_FOUND, { cause: e }), { code: 'ENOENT', path });
    throw fileSystemError(e, what) ?? e;
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new HyperEnclaveError(`${shown}: a directory, expected a file`, EXIT.BAD_INPUT);
    if (st.isFile()) {
      if (st.size > max) throw tooBig(shown, max, st.size);
    }
    // Read to EOF in chunks, never past max + 1 bytes (a file can grow after fstat; devices have no size).
    const chunks: Buffer[] = [];
    let total = 0;
    const chunk = Math.min(max + 1, 1 * MiB);
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(chunk, max + 1 - total));
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'EAGAIN') {
          throw new HyperEnclaveError(`${shown}: no data to read (a non-blocking device or pipe)`, EXIT.BAD_INPUT);
        }
        if (err.code === 'EISDIR') throw new HyperEnclaveError(`${shown}: a directory, expected a file`, EXIT.BAD_INPUT);
        throw fileSystemError(Object.assign(err, { path }), what) ?? e;
      }
      if (n === 0) break;
      chunks.push(n === buf.length ? buf : buf.subarray(0, n));
      total += n;
      if (total > max) throw tooBig(shown, max);
    }
    return Buffer.concat(chunks, total);
  } finally {
    closeSync(fd);
  }
}

/** readFileBounded as UTF-8 text. */
export function readTextFile(path: string, opts: { what?: string; maxBytes?: number; kind?: InputKind } = {}): string {
  return readFileBounded(path, opts).toString('utf8');
}
