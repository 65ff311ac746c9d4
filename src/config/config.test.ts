import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfig } from './index.js';
import { EXIT } from '../errors.js';

describe('configuration', () => {
  it('accepts a complete valid file', () => {
    const c = parseConfig(
      JSON.stringify({
        schema: 'hyperenclave/config',
        version: 1,
        platform: 'emulated',
        pcrPolicy: 'sha256-sha384',
        drtm: { enabled: true },
        memory: { hypervisorMiB: 64, epcMiB: 256, reservedBase: '0x100000000' },
        backends: ['sev', 'mktme'],
      }),
    );
    expect(c.memory?.epcMiB).toBe(256);
  });

  it('names the JSON path of every problem on one line', () => {
    const bad = JSON.stringify({ schema: 'hyperenclave/config', version: 1, backends: ['sev', 'tdx'], memory: { epcMiB: 0 }, colour: 1 });
    let err: unknown;
    try {
      parseConfig(bad, 'x.json');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    expect(msg).toContain('x.json:');
    expect(msg).toContain('/backends/1: must be one of');
    expect(msg).toContain('/memory/epcMiB: must be >= 1');
    expect(msg).toContain('unknown property "colour"');
    expect((err as ConfigError).exitCode).toBe(EXIT.BAD_INPUT);
  });

  it('refuses non-JSON and a missing explicit file', () => {
    expect(() => parseConfig('{', 'c.json')).toThrow(/^c\.json: not JSON/);
    const dir = mkdtempSync(join(tmpdir(), 'he-cfg-'));
    expect(() => loadConfig(join(dir, 'absent.json'))).toThrow(/no such file/);
    writeFileSync(join(dir, 'ok.json'), '{"schema":"hyperenclave/config","version":1}');
    expect(loadConfig(join(dir, 'ok.json')).version).toBe(1);
  });
});
