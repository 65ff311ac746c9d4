import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync, readFileSync, existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * Where the management plane keeps its state: --state-dir, else HYPERENCLAVE_STATE_DIR,
 * else /var/lib/hyperenclave for root, else $XDG_STATE_HOME/hyperenclave.
 */
export function resolveStateDir(explicit?: string): string {
  if (explicit) return explicit;
  if (process.env.HYPERENCLAVE_STATE_DIR) return process.env.HYPERENCLAVE_STATE_DIR;
  if (process.getuid?.() === 0) return '/var/lib/hyperenclave';
  const xdg = process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state');
  return join(xdg, 'hyperenclave');
}

/** Writes a file so that readers see the old or the new content, never a mix (temp + fsync + rename). */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
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
