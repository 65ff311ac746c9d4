import { closeSync, existsSync, fstatSync, fsyncSync, openSync, readSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../fs/atomic.js';
import { fileSystemError } from '../fs/fs-errors.js';
import { EXIT } from '../errors.js';
import { EdlError } from '../edl/parse.js';
import type { KvstoreOcalls } from './kvstore.gen.js';

/**
 * The host side of the store: one file per key in `<store>/blobs/`, named by the key's id (hex
 * of the 32 bytes the enclave sends; the host never learns the key). What the host stores is
 * opaque to it: the enclave seals and checks every blob. Writes are durable before they are
 * acknowledged: temporary file, fsync, rename, fsync of the directory (writeFileAtomic); a
 * removal is followed by an fsync of the directory. Leftover temporary files of a killed
 * process are ignored (never listed, never read).
 */

/** Largest blob the interface carries (kvstore.edl: blob_read → bytes[3300]). */
export const BLOB_FILE_MAX = 3300;
const NAME = /^[0-9a-f]{64}\.blob$/;
const PAGE = 32;

export class BlobDir implements KvstoreOcalls {
  readonly dir: string;
  constructor(store: string) {
    this.dir = join(store, 'blobs');
  }

  /**
   * Removes the temporary files of writes a killed process left behind. Called under the
   * store's lock, so no other process is writing: every temporary file is abandoned (its blob,
   * if the rename happened, is whole; if not, the previous blob is).
   */
  sweepTemporaries(): number {
    if (!existsSync(this.dir)) return 0;
    const stale = readdirSync(this.dir).filter((n) => /^[0-9a-f]{64}\.blob\.tmp-\d+$/.test(n));
    for (const n of stale) rmSync(join(this.dir, n), { force: true });
    return stale.length;
  }

  private path(id: Buffer): string {
    if (id.length !== 32) throw new EdlError(`blob id of ${id.length} bytes (expected 32)`, 'ERR_KV_BLOB_ID');
    return join(this.dir, `${id.toString('hex')}.blob`);
  }

  private syncDir(): void {
    const fd = openSync(this.dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  blobWrite(id: Buffer, blob: Buffer): boolean {
    writeFileAtomic(this.path(id), blob, 0o600);
    return true;
  }

  blobRead(id: Buffer): Uint8Array {
    const p = this.path(id);
    let fd: number;
    try {
      fd = openSync(p, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
      throw fileSystemError(e) ?? e;
    }
    try {
      const size = fstatSync(fd).size;
      // One byte more than the bound: a longer file is refused by the stubs (never cut to fit).
      const buf = Buffer.alloc(Math.min(size, BLOB_FILE_MAX + 1));
      let n = 0;
      while (n < buf.length) {
        const r = readSync(fd, buf, n, buf.length - n, n);
        if (r === 0) break;
        n += r;
      }
      return buf.subarray(0, n);
    } finally {
      closeSync(fd);
    }
  }

  blobDelete(id: Buffer): boolean {
    const p = this.path(id);
    if (!existsSync(p)) return false;
    rmSync(p);
    this.syncDir();
    return true;
  }

  blobList(start: number): Uint8Array[] {
    if (!existsSync(this.dir)) return [];
    const names = readdirSync(this.dir)
      .filter((n) => NAME.test(n))
      .sort();
    return names.slice(start, start + PAGE).map((n) => Buffer.from(n.slice(0, 64), 'hex'));
  }

  echo(data: Buffer): Uint8Array {
    return data;
  }
}

export const KV_EXIT: Record<string, number> = { not_found: EXIT.NOT_FOUND, torn_blob: EXIT.VERIFY_FAILED, swapped_blob: EXIT.VERIFY_FAILED, rolled_back: EXIT.VERIFY_FAILED, foreign_blob: EXIT.VERIFY_FAILED, empty_key: EXIT.USAGE };
