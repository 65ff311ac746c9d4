import { accessSync, constants, statfsSync } from 'node:fs';
import { HyperEnclaveError, EXIT } from '../errors.js';

/**
 * One-line messages and exit codes for the file-system errors an operator can fix: a directory
 * given for a file (bad input, 6), no permission, a read-only or full file system (9).
 * Returns undefined for anything else (the caller rethrows it).
 */
export function fileSystemError(e: unknown, what?: string): HyperEnclaveError | undefined {
  const err = e as NodeJS.ErrnoException;
  if (!err || typeof err.code !== 'string') return undefined;
  const path = err.path ?? (err as { dest?: string }).dest ?? '';
  const at = [what, path].filter(Boolean).join(': ') || 'file system';
  switch (err.code) {
    case 'EISDIR':
      return new HyperEnclaveError(`${at}: is a directory, expected a file`, EXIT.BAD_INPUT, { cause: e });
    case 'ENOTDIR':
      return new HyperEnclaveError(`${at}: a component of the path is not a directory`, EXIT.NOT_FOUND, { cause: e });
    case 'EACCES':
    case 'EPERM':
      return new HyperEnclaveError(`${at}: permission denied (${err.syscall ?? 'access'}); run as a user that may write the state directory, or choose another with --state-dir`, EXIT.FILESYSTEM, { cause: e });
    case 'EROFS':
      return new HyperEnclaveError(`${at}: read-only file system; the state directory must be writable (remount it or choose another with --state-dir)`, EXIT.FILESYSTEM, { cause: e });
    case 'ENOSPC':
    case 'EDQUOT':
      return new HyperEnclaveError(`${at}: no space left on the device${err.code === 'EDQUOT' ? ' (quota)' : ''}; free space and run the command again`, EXIT.FILESYSTEM, { cause: e });
    default:
      return undefined;
  }
}

/**
 * Why a tool writing into `dir` may have failed, when the file system is the reason: read-only,
 * or (almost) full. For child processes (swtpm_setup) whose own messages do not say so.
 */
export function fileSystemTrouble(dir: string, what: string): HyperEnclaveError | undefined {
  try {
    accessSync(dir, constants.W_OK);
  } catch (e) {
    return fileSystemError(e, what);
  }
  try {
    const st = statfsSync(dir);
    const free = Number(st.bavail) * Number(st.bsize);
    if (free < 64 * 1024) return new HyperEnclaveError(`${what}: ${dir}: no space left on the device (${Math.floor(free / 1024)} KiB free); free space and run the command again`, EXIT.FILESYSTEM);
  } catch {
    return undefined;
  }
  return undefined;
}
