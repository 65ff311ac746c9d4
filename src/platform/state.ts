import { homedir } from 'node:os';
import { join } from 'node:path';

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
