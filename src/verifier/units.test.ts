/**
 * The verifier's and the agent's systemd units: `systemd-analyze verify` accepts them and
 * `systemd-analyze security --offline=yes` rates their sandbox (the boot unit's test does the
 * same in test/install).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const has = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { stdio: 'ignore' }).status === 0;
const root = mkdtempSync(join(tmpdir(), 'he-units-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe.skipIf(!has)('systemd units for the fleet', () => {
  for (const [unit, limit] of [['hyperenclave-verifier.service', 1.5], ['hyperenclave-agent.service', 2.5]] as const)
    it(`${unit} verifies and its exposure stays at or below ${limit}`, () => {
      mkdirSync(join(root, 'usr/bin'), { recursive: true });
      mkdirSync(join(root, 'lib/systemd/system'), { recursive: true });
      writeFileSync(join(root, 'usr/bin/hyperenclave'), '#!/bin/sh\n');
      chmodSync(join(root, 'usr/bin/hyperenclave'), 0o755);
      copyFileSync(join(import.meta.dirname, '../../systemd', unit), join(root, 'lib/systemd/system', unit));
      // the system's targets (sysinit.target, network-online.target, ...) the units order against
      for (const d of ['/lib/systemd/system', '/usr/lib/systemd/system'])
        if (existsSync(d)) for (const f of readdirSync(d)) if (f.endsWith('.target') && !existsSync(join(root, 'lib/systemd/system', f))) copyFileSync(join(d, f), join(root, 'lib/systemd/system', f));
      const v = spawnSync('systemd-analyze', ['verify', `--root=${root}`, `/lib/systemd/system/${unit}`], { encoding: 'utf8' });
      expect(v.status, v.stderr).toBe(0);
      const s = spawnSync('systemd-analyze', ['security', '--offline=yes', `--root=${root}`, unit], { encoding: 'utf8' });
      const m = new RegExp(`Overall exposure level for ${unit.replace('.', '\\.')}: ([\\d.]+)`).exec(s.stdout + s.stderr);
      expect(m, s.stdout + s.stderr).not.toBeNull();
      console.info(`systemd-analyze security exposure of ${unit}: ${m![1]}`);
      expect(Number(m![1])).toBeLessThanOrEqual(limit);
    });
});
