import { readFileSync } from 'node:fs';

/**
 * The package version, from the package.json next to dist/ (src/cli → ../../package.json in the
 * sources, dist/src/cli → ../../../package.json once built, as installed by make install).
 */
export function cliVersion(): string {
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'hyperenclave-ts' && pkg.version) return pkg.version;
    } catch {
      // not at this level
    }
  }
  return '0.0.0-unknown';
}
