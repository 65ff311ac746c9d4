import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../fs/atomic.js';
import { generateRust, generateTs } from './gen.js';
import { parseEdl } from './parse.js';

/**
 * The interfaces of this repository and where their stubs go. `npm run edl:gen` regenerates them
 * all; test/edl/stale.test.ts regenerates in memory and fails when a committed file differs.
 */
export const EDL_FILES = [{ edl: 'hypervisor/enclaves/kvstore/kvstore.edl', ts: 'src/kv/kvstore.gen.ts', rust: 'hypervisor/enclaves/kvstore/src/edl.rs' }] as const;

export const repoRoot = join(fileURLToPath(new URL('.', import.meta.url)), ...(import.meta.url.endsWith('.ts') ? ['..', '..'] : ['..', '..', '..']));

/** The generated files of one interface (path relative to the repository → text). */
export function generate(root: string, e: (typeof EDL_FILES)[number]): Map<string, string> {
  const src = readFileSync(join(root, e.edl), 'utf8');
  const f = parseEdl(src, e.edl);
  return new Map([
    [e.ts, generateTs(f, e.edl)],
    [e.rust, generateRust(f, e.edl)],
  ]);
}

async function main(): Promise<void> {
  for (const e of EDL_FILES)
    for (const [path, text] of generate(repoRoot, e)) {
      writeFileAtomic(join(repoRoot, path), text);
      process.stdout.write(`${relative(process.cwd(), join(repoRoot, path)) || path}\n`);
    }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e: Error) => {
    process.stderr.write(`edl: ${e.message}\n`);
    process.exit((e as { exitCode?: number }).exitCode ?? 1);
  });
}
