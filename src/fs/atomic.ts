/** Files written whole or not at all, and JSON read when present: generic file code (no platform difference). */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileSystemError } from './fs-errors.js';

/**
 * Writes a file so that readers see the old or the new content, never a mix (temp + fsync +
 * rename). On any failure (a full or read-only disk, no permission) the temporary file is
 * removed and the error is one line naming the path (exit 9, src/fs/fs-errors.ts).
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(tmp, 'w', mode);
    try {
      // writeSync may write less than asked (a disk filling up): loop until all is written or
      // the next write fails (ENOSPC), never rename a short file into place.
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      for (let done = 0; done < buf.length; ) done += writeSync(fd, buf, done, buf.length - done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err === 'object' && !err.path) err.path = path; // write(2) errors name no file
    throw fileSystemError(e) ?? e;
  }
  // Persist the rename itself.
  const dfd = openSync(dirname(path), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

export function readJsonIfExists<T>(path: string): T | undefined {
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}
